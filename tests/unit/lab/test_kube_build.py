"""Setup errors of make k8s-bins (tests/lab/kube_build.py) and the lab's check for built binaries."""
from __future__ import annotations

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
        kube_build._run([go, "mod", "download", "sigs.k8s.io/kwok@v0.7.0"], tmp_path, env,  # pylint: disable=protected-access
                        "module download")


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
