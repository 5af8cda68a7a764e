"""Unit tests of the lab's opt-in CSI volume snapshots (tests/lab/snapshots.py): the switch, its objects, the errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lab import snapshots, stack
from tests.lab.core import LabError


def test_snapshots_are_off_by_default_and_on_with_1(monkeypatch):
    monkeypatch.delenv(snapshots.ENV, raising=False)
    assert snapshots.enabled() is False
    monkeypatch.setenv(snapshots.ENV, "1")
    assert snapshots.enabled() is True
    monkeypatch.setenv(snapshots.ENV, "yes")
    with pytest.raises(LabError, match="HANZO_KMS_LAB_SNAPSHOTS='yes'"):
        snapshots.enabled()


def test_snapshots_need_the_real_operator(monkeypatch):
    monkeypatch.setenv(snapshots.ENV, "1")
    assert stack.snapshots_mode("operator") is True
    with pytest.raises(LabError, match="needs HANZO_KMS_LAB_CNPG=operator"):
        stack.snapshots_mode("standin")
    monkeypatch.setenv(snapshots.ENV, "0")
    assert stack.snapshots_mode("standin") is False


def test_unbuilt_binaries_name_make_snapshot_bins(tmp_path):
    with pytest.raises(LabError, match="missing lab-csi-hostpath, csi-provisioner.*: run make snapshot-bins"):
        snapshots.ensure_binaries(tmp_path)


def test_the_classes_name_the_labs_driver():
    by_kind = {obj["kind"]: obj for obj in snapshots.objects()}
    assert by_kind["CSIDriver"]["metadata"]["name"] == snapshots.DRIVER
    # no VolumeAttachment; kubelet gives the volume to the pod's fsGroup (CNPG's 26), as hostPath volumes cannot
    assert by_kind["CSIDriver"]["spec"]["attachRequired"] is False
    assert by_kind["CSIDriver"]["spec"]["fsGroupPolicy"] == "File"
    assert by_kind["StorageClass"]["provisioner"] == snapshots.DRIVER
    assert by_kind["StorageClass"]["volumeBindingMode"] == "WaitForFirstConsumer"
    assert by_kind["VolumeSnapshotClass"]["driver"] == snapshots.DRIVER


def test_the_sockets_live_under_kubelets_root_dir_and_too_long_a_path_is_refused():
    tmp_path = Path("/lab")  # nothing is created
    endpoint, registration = snapshots.sockets(tmp_path / "node")
    assert endpoint == tmp_path / "node" / "kubelet" / "plugins" / snapshots.DRIVER / "csi.sock"
    assert registration == tmp_path / "node" / "kubelet" / "plugins_registry"
    with pytest.raises(LabError, match="over a Unix socket's 107: use a shorter lab dir"):
        snapshots.sockets(tmp_path / ("x" * 60) / "node")


def test_start_runs_the_driver_the_sidecars_and_the_controller_on_one_socket():
    tmp_path = Path("/lab")  # nothing is created
    started = {}
    paths = {name: f"/bin/{name}" for name in snapshots.BINARIES}
    entry = snapshots.start(
        "dc1",
        "dc1-real",
        tmp_path / "dc1",
        tmp_path / "dc1" / "node",
        "/kc",
        paths,
        lambda n, a: started.update({n: a}),
    )
    assert list(started) == list(snapshots.BINARIES)
    socket = f"--csi-address={entry['endpoint']}"
    assert socket in started["csi-provisioner"] and socket in started["csi-snapshotter"]
    assert f"--endpoint={entry['endpoint']}" in started["lab-csi-hostpath"]
    assert f"--state-dir={tmp_path / 'dc1' / 'csi'}" in started["lab-csi-hostpath"]
    assert all("--kubeconfig=/kc" in started[n] for n in ("csi-provisioner", "csi-snapshotter", "snapshot-controller"))
