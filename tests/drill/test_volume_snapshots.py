"""Volume-snapshot backups on the lab (issue 18 item 4): CNPG's ``volumeSnapshot`` method on real CSI snapshots.

Not in ``make test`` (its own operator lab, ≈ 10 min): ``make snapshot-lab-test``, which builds ``make snapshot-bins``
first. On a lab started with HANZO_KMS_LAB_CNPG=operator and HANZO_KMS_LAB_SNAPSHOTS=1 (tests/lab/snapshots.py: the
lab's CSI driver ``lab-csi-hostpath`` registered with each site's kubelet, csi-provisioner, csi-snapshotter,
snapshot-controller, the snapshot CRDs, a CSIDriver, StorageClass and VolumeSnapshotClass), through the collection's
roles (tests/integration/playbooks/volume_snapshots.yml), in dc1:

1. roles/cnpg: a Cluster on the CSI StorageClass with ``cnpg_volume_snapshot_class`` (its volume provisioned by the
   driver, published to the pod by kubelet), archiving WAL to the lab's object store;
2. marker rows, then roles/cnpg_backup with ``cnpg_backup_method: volumeSnapshot``: an online Backup whose
   VolumeSnapshot the driver took (a copy of the volume);
3. roles/cnpg_recovery with ``cnpg_recovery_snapshot_backup``: a new Cluster whose volume the provisioner made from
   that snapshot, the WAL from the archive, holding exactly the marker rows;
4. ``lab down`` leaves no process, mount or namespace (``node.leftovers``).

Skipped only when the snapshot binaries are not built (``make snapshot-bins``). ``HANZO_KMS_TEST_LAB_DIR`` may name a
lab already up in that mode (it is reused and left running). Figures are printed with ``pytest -s``
(docs/benchmarks.md).
"""

# pylint: disable=redefined-outer-name
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.test_cnpg_operator_real import get, kubectl
from tests.integration.test_cnpg_operator_real import playbook as run_lab_playbook
from tests.lab import kube_build, node, snapshots, stack
from tests.lab.core import Lab
from tests.lab.fixtures import up_with

NAMESPACE = "kms"
PLAYBOOK = "tests/integration/playbooks/volume_snapshots.yml"
SOURCE = "kms-snap-dc1"
BACKUP = "kms-snap-dc1-snapshot"
RECOVERED = "kms-snap-restored"
MARKERS = 23
FIGURES = {}

pytestmark = pytest.mark.skipif(
    kube_build.snapshots_cached() is None,
    reason="the CSI snapshot binaries, CRDs and RBAC are not built: run make snapshot-bins (make snapshot-lab-test does)",
)


@pytest.fixture(scope="module")
def snapshot_lab():
    reuse = os.environ.get("HANZO_KMS_TEST_LAB_DIR")
    # a short dir: the driver's sockets live under it (a Unix socket path has at most 107 bytes)
    lab = Lab(reuse or tempfile.mkdtemp(prefix="hanzo-kms-snap-"))
    FIGURES["lab up, operator mode with CSI snapshots (s)"] = up_with(
        lab, **{"HANZO_KMS_LAB_CNPG": "operator", snapshots.ENV: "1"}
    )
    yield lab
    print("\nvolume snapshots: " + ", ".join(f"{k} {v}" for k, v in FIGURES.items()))
    if not reuse:
        started = time.monotonic()
        stack.down(lab, log=lambda _msg: None)
        FIGURES["lab down (s)"] = round(time.monotonic() - started, 1)
        print(f"volume snapshots: lab down (s) {FIGURES['lab down (s)']}")
        assert node.leftovers(lab.dir) == []


def step(lab, name, tmp_path, timeout=1200):
    """One step of the playbook; the role's record (backup, recover) as a dict."""
    result = tmp_path / f"{name}.json"
    _run, FIGURES[f"{name} step (s)"] = run_lab_playbook(
        lab,
        PLAYBOOK,
        "-e",
        f"volume_snapshots_step={name}",
        "-e",
        f"volume_snapshots_result_file={result}",
        timeout=timeout,
    )
    return json.loads(result.read_text(encoding="utf-8")) if result.exists() else None


def sql(lab, pod, query, database="kms"):
    proc = kubectl(
        lab, "dc1", "-n", NAMESPACE, "exec", pod, "-c", "postgres", "--", "psql", "-d", database, "-Atc", query
    )
    assert proc.returncode == 0, f"psql in {pod}: {proc.stderr}"
    return proc.stdout.strip()


def csi_volume(lab, claim):
    """The PersistentVolume of ``claim`` in dc1 and the driver's directory of it."""
    pv = get(lab, "dc1", "pv", get(lab, "dc1", "-n", NAMESPACE, "pvc", claim)["spec"]["volumeName"])
    state_dir = Path(lab.state["sites"]["dc1"]["kube"]["snapshots"]["state_dir"])
    return pv, state_dir / "volumes" / pv["spec"]["csi"]["volumeHandle"]


def test_the_lab_registers_the_csi_driver_in_each_site(snapshot_lab):
    lab = snapshot_lab
    assert lab.state["snapshots"] is True
    assert all(row[1] for row in stack.status(lab)), [row for row in stack.status(lab) if not row[1]]
    for site in ("dc1", "dc2"):
        entry = lab.state["sites"][site]["kube"]
        csinode = get(lab, site, "csinode", entry["node"]["name"])
        assert [d["name"] for d in csinode["spec"]["drivers"]] == [snapshots.DRIVER]
        assert get(lab, site, "volumesnapshotclass", snapshots.SNAPSHOT_CLASS)["driver"] == snapshots.DRIVER
        assert get(lab, site, "storageclass", snapshots.STORAGE_CLASS)["provisioner"] == snapshots.DRIVER
        for name in snapshots.BINARIES:
            assert lab.process_alive(lab.process(f"{site}-{name}")), name


@pytest.mark.timeout(3600)  # lab up, a Cluster, a snapshot backup and a recovery on the operator lab
def test_a_volume_snapshot_backup_recovers_a_cluster_with_the_marker_rows(snapshot_lab, tmp_path):
    lab = snapshot_lab
    step(lab, "cluster", tmp_path)
    pv, directory = csi_volume(lab, f"{SOURCE}-1")
    assert pv["spec"]["csi"]["driver"] == snapshots.DRIVER and pv["spec"]["storageClassName"] == snapshots.STORAGE_CLASS
    assert (directory / "pgdata" / "PG_VERSION").is_file(), "PGDATA lives in the driver's volume directory"
    cluster = get(lab, "dc1", "-n", NAMESPACE, "cluster", SOURCE)
    assert cluster["spec"]["backup"]["volumeSnapshot"]["className"] == snapshots.SNAPSHOT_CLASS

    table = f"snapshot_probe_{time.time_ns() % 10**9}"
    sql(
        lab,
        f"{SOURCE}-1",
        f"create table {table} (n int primary key); insert into {table} select generate_series(1, {MARKERS})",
    )

    backup = step(lab, "backup", tmp_path)
    assert backup["phase"] == "completed" and backup["method"] == "volumeSnapshot", backup
    assert backup["snapshots"], backup
    for name in backup["snapshots"]:
        snap = get(lab, "dc1", "-n", NAMESPACE, "volumesnapshot", name)
        assert snap["status"]["readyToUse"] is True, snap["status"]
        content = get(lab, "dc1", "volumesnapshotcontent", snap["status"]["boundVolumeSnapshotContentName"])
        handle = content["status"]["snapshotHandle"]
        assert (directory.parent.parent / "snapshots" / handle / "pgdata" / "PG_VERSION").is_file()

    recovered = step(lab, "recover", tmp_path)
    assert recovered["ok"] is True, recovered
    assert recovered["snapshot_backup"] == BACKUP and recovered["tables"][f"public.{table}"] == MARKERS, recovered
    assert recovered["system_id"] == recovered["source_system_id"], recovered
    claim = get(lab, "dc1", "-n", NAMESPACE, "pvc", f"{RECOVERED}-1")
    assert claim["spec"]["dataSource"]["kind"] == "VolumeSnapshot", claim["spec"]
    assert claim["spec"]["dataSource"]["name"] in backup["snapshots"]
    _pv, restored_dir = csi_volume(lab, f"{RECOVERED}-1")
    assert restored_dir != directory and (restored_dir / "pgdata").is_dir()
    rows = sql(lab, f"{RECOVERED}-1", f"select string_agg(n::text, ',' order by n) from {table}")
    assert rows == ",".join(str(n) for n in range(1, MARKERS + 1))
