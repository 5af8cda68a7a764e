"""Setup errors of make k8s-bins (tests/lab/kube_build.py) and the lab's check for built binaries."""

from __future__ import annotations

import json
import shutil
from unittest import mock

import pytest

from tests.lab import kube, kube_build
from tests.lab.core import LabError


def test_missing_go_is_a_clear_setup_error(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with mock.patch("os.access", return_value=False), pytest.raises(LabError, match="'go' is not on PATH"):
        kube_build.check_go()


def test_unreachable_module_proxy_is_a_clear_setup_error(monkeypatch, tmp_path):
    go = shutil.which("go") or "/usr/local/go/bin/go"
    monkeypatch.setenv("GOMODCACHE", str(tmp_path / "mod"))
    monkeypatch.setenv("GOPROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("GOSUMDB", "off")
    env = kube_build._go_env(1)  # pylint: disable=protected-access
    with pytest.raises(LabError, match="module proxy .* looks unreachable"):
        kube_build._run(
            [go, "mod", "download", "sigs.k8s.io/kwok@v0.7.0"],
            tmp_path,
            env,  # pylint: disable=protected-access
            "module download",
        )


def test_lab_refuses_to_start_without_a_build(monkeypatch, tmp_path):
    monkeypatch.setenv("HANZO_KMS_K8S_CACHE", str(tmp_path))
    with pytest.raises(LabError, match="run make k8s-bins"):
        kube.ensure_binaries()


def test_versions_are_pinned_in_the_wrapper_modules():
    versions = kube_build.versions()
    assert versions["kubernetes"].startswith("v1.34.")
    major, minor, _patch = (int(x) for x in versions["etcd"].lstrip("v").split("."))
    assert (major, minor) >= (3, 6) or (major, minor) == (3, 5)
    assert kube_build.kube_ldflags("v1.34.2").count("gitVersion=v1.34.2") == 2


# -- the per-module cache ---------------------------------------------------------------------------------------------
BINS = {
    "kubernetes": {"kubectl": "k8s.io/kubernetes/cmd/kubectl", "kubelet": "k8s.io/kubernetes/cmd/kubelet"},
    "cnpg": {"cnpg-manager": "github.com/cloudnative-pg/cloudnative-pg/cmd/manager"},
}


def test_a_current_module_is_reused_and_only_a_changed_one_is_rebuilt():
    current = {"kubernetes": "k1", "cnpg": "c2"}
    existing = {"kubectl", "kubelet", "cnpg-manager"}
    assert not kube_build.stale_modules({"kubernetes": "k1", "cnpg": "c2"}, current, BINS, existing)
    assert kube_build.stale_modules({"kubernetes": "k1", "cnpg": "c1"}, current, BINS, existing) == ["cnpg"]


def test_a_new_module_is_built_without_rebuilding_the_others():
    assert kube_build.stale_modules(
        {"kubernetes": "k1"}, {"kubernetes": "k1", "cnpg": "c1"}, BINS, {"kubectl", "kubelet"}
    ) == ["cnpg"]


def test_a_missing_binary_rebuilds_its_module():
    assert kube_build.stale_modules(
        {"kubernetes": "k1", "cnpg": "c1"}, {"kubernetes": "k1", "cnpg": "c1"}, BINS, {"kubectl", "cnpg-manager"}
    ) == ["kubernetes"]


def test_module_fingerprints_follow_their_own_inputs_only():
    ver = kube_build.versions()
    prints = kube_build.fingerprints(ver)["modules"]
    assert set(prints) == set(kube_build.BUILDS)
    assert len(set(prints.values())) == len(prints)
    assert prints["cnpg"] == kube_build.module_fingerprint("cnpg", ver)
    # the CNPG pin enters the CNPG module's recipe (ldflags), not Kubernetes'
    moved = dict(ver, **{"cloudnative-pg": "v1.30.1"})
    assert kube_build.module_fingerprint("cnpg", moved) != prints["cnpg"]
    assert kube_build.module_fingerprint("kubernetes", moved) == prints["kubernetes"]


def _fake_cache(root, manifest):
    """A cache dir whose files exist (empty) as a build leaves them; ``manifest`` as manifest.json."""
    assets = kube_build._asset_paths(root)  # pylint: disable=protected-access
    for path in [root / "bin" / name for name in kube_build.BINARIES] + assets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_cached_accepts_a_complete_current_cache_and_names_nothing_else(monkeypatch, tmp_path):
    monkeypatch.setenv("HANZO_KMS_K8S_CACHE", str(tmp_path))
    root = kube_build.cache_root()
    prints = kube_build.fingerprints()
    manifest = {
        "modules": {m: {"fingerprint": fp} for m, fp in prints["modules"].items()},
        "assets": {"fingerprint": prints["assets"]},
    }
    _fake_cache(root, manifest)
    assert kube_build.cached(root) == manifest
    assert kube.ensure_binaries()["manifests"] == root / "manifests"

    (root / "bin" / "cnpg-manager").unlink()
    assert kube_build.cached(root) is None
    with pytest.raises(LabError, match="missing cnpg-manager"):
        kube.ensure_binaries()

    _fake_cache(root, dict(manifest, assets={"fingerprint": "rendered by other code"}))
    assert kube_build.cached(root) is None


def test_cnpg_reports_its_release_version_commit_and_date(tmp_path):
    info = tmp_path / "v1.30.0.info"
    info.write_text(
        json.dumps(
            {
                "Version": "v1.30.0",
                "Time": "2026-06-29T16:35:18Z",
                "Origin": {"Hash": "4b5e244a7d031f67e025c83c1555e7726ecbbfa1"},
            }
        ),
        encoding="utf-8",
    )
    origin = kube_build.module_origin({"Info": str(info)})
    assert origin == {"commit": "4b5e244", "date": "2026-06-29"}
    flags = kube_build.ldflags("cnpg", kube_build.versions(), origin)
    assert "pkg/versions.buildVersion=1.30.0 " in flags and "buildCommit=4b5e244" in flags
    assert kube_build.module_origin({"Info": str(tmp_path / "absent.info")}) == {"commit": "none", "date": "unknown"}


def test_a_cnpg_pin_that_differs_from_its_wrapper_module_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(kube_build, "CNPG_VERSION", "v1.29.9")
    with pytest.raises(LabError, match=r"tools/kube/cnpg/go.mod requires .* v1.30.0 but .* pins v1.29.9"):
        kube_build.versions()


def test_prometheus_release_of_its_go_module_version():
    assert kube_build.prometheus_release("v0.316.0") == "3.16.0"
    assert kube_build.prometheus_release("v0.300.1") == "3.0.1"
    assert kube_build.versions()["prometheus"] == "v0.316.0"
    assert "version.Version=3.16.0" in kube_build.ldflags("coredns-promtool", kube_build.versions())


# -- make snapshot-bins: the CSI snapshot machinery, outside the default build ----------------------------------------
def test_the_snapshot_machinery_is_not_part_of_the_default_build():
    assert "csi-snapshots" not in kube_build.BUILDS
    assert not set(kube_build.SNAPSHOT_BUILDS["csi-snapshots"]) & set(kube_build.BINARIES)
    assert "csi-snapshots" not in kube_build.fingerprints()["modules"]


def test_the_snapshot_binaries_report_their_own_modules_releases():
    ver = kube_build.snapshot_versions()
    assert ver["external-snapshotter"] == ver["external-snapshotter-client"]  # the snapshotter's own client tree
    assert kube_build.ldflags("csi-snapshots", ver, binary="csi-provisioner").endswith(
        f"-X main.version={ver['external-provisioner']}"
    )
    assert kube_build.ldflags("csi-snapshots", ver, binary="snapshot-controller").endswith(
        f"-X main.version={ver['external-snapshotter']}"
    )


def test_a_snapshot_build_is_current_only_with_every_binary_and_asset(monkeypatch, tmp_path):
    monkeypatch.setenv("HANZO_KMS_K8S_CACHE", str(tmp_path))
    root = kube_build.cache_root()
    current = kube_build.snapshot_fingerprints()
    manifest = {
        "modules": {m: {"fingerprint": fp} for m, fp in current["modules"].items()},
        "assets": current["assets"],
    }
    (root / "bin").mkdir(parents=True)
    (root / kube_build.SNAPSHOTS_MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    for name in kube_build.SNAPSHOT_BUILDS["csi-snapshots"]:
        (root / "bin" / name).write_text("", encoding="utf-8")
    assert kube_build.snapshots_cached(root) is None  # no CRDs and RBAC yet
    for paths in kube_build.snapshot_asset_paths(root).values():
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("", encoding="utf-8")
    assert kube_build.snapshots_cached(root) == manifest
    (root / "bin" / "csi-snapshotter").unlink()
    assert kube_build.snapshots_cached(root) is None
