"""Pytest fixtures for the lab's two Kubernetes clusters (contexts ``dc1`` and ``dc2``).

Built on the lead's session fixture ``lab`` (the state dict). Register with
``pytest_plugins = ["tests.lab.fixtures", "tests.lab.kube_fixtures"]`` (tests/conftest.py) or import in a test module.

- ``kube_sites``: {"dc1": entry, "dc2": entry} (state["sites"][site]["kube"]: kubeconfig, context, server, token, ...)
- ``kubeconfig``: path of the merged kubeconfig (contexts dc1 and dc2)
- ``kube_clients``: {"dc1": kubernetes.client.ApiClient, "dc2": ...}
- ``kube_dc1`` / ``kube_dc2``: ApiClient of one site
- ``kube_namespace``: a fresh namespace (same name) in both clusters, deleted afterwards
- ``kubectl``: a function running the built kubectl against the merged kubeconfig
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

SITES = ("dc1", "dc2")


@pytest.fixture(scope="session")
def kube_sites(lab):
    missing = [s for s in SITES if "kube" not in lab.get("sites", {}).get(s, {})]
    if missing:
        pytest.fail(
            f"the lab has no Kubernetes cluster for {', '.join(missing)} (was it started with "
            "HANZO_KMS_LAB_WITHOUT_KUBE=1, or is make k8s-bins missing?)"
        )
    return {s: lab["sites"][s]["kube"] for s in SITES}


@pytest.fixture(scope="session")
def kubeconfig(lab, kube_sites):
    from tests.lab import kube  # pylint: disable=import-outside-toplevel
    from tests.lab.core import Lab  # pylint: disable=import-outside-toplevel

    path = lab.get("kubeconfig")
    if not path:
        # the lead's stack may not have written it; derive it from the per-site entries next to the state file
        lab_dir = Path(next(iter(kube_sites.values()))["dir"]).parents[1]
        path = kube.write_merged_kubeconfig(Lab(lab_dir), kube_sites)
    return str(path)


@pytest.fixture(scope="session")
def kube_clients(kube_sites):
    from kubernetes import config  # pylint: disable=import-outside-toplevel

    return {
        site: config.new_client_from_config(config_file=entry["kubeconfig"], context=entry["context"])
        for site, entry in kube_sites.items()
    }


@pytest.fixture(scope="session")
def kube_dc1(kube_clients):
    return kube_clients["dc1"]


@pytest.fixture(scope="session")
def kube_dc2(kube_clients):
    return kube_clients["dc2"]


@pytest.fixture
def kube_namespace(kube_clients):
    from kubernetes import client  # pylint: disable=import-outside-toplevel

    name = f"t-{uuid.uuid4().hex[:8]}"
    for api_client in kube_clients.values():
        client.CoreV1Api(api_client).create_namespace({"metadata": {"name": name}})
    yield name
    for api_client in kube_clients.values():
        client.CoreV1Api(api_client).delete_namespace(name)


@pytest.fixture(scope="session")
def kubectl(kubeconfig):
    from tests.lab import kube  # pylint: disable=import-outside-toplevel

    binary = str(kube.ensure_binaries()["kubectl"])

    def run(*args, check=True, input_text=None):
        proc = subprocess.run(
            [binary, "--kubeconfig", kubeconfig, *args],
            capture_output=True,
            text=True,
            input=input_text,
            check=False,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    return run
