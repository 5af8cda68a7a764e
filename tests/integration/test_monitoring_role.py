"""Role hanzo.kms.monitoring against a real kube-apiserver without the Prometheus Operator (issue 18 item 5).

Not the lab: one etcd and one kube-apiserver from ``make k8s-bins`` on loopback, started for this module (about 10 s)
and stopped after it. No CRD of monitoring.coreos.com is installed, as in a cluster without the Prometheus Operator:

- the role with monitoring_prometheus_rules fails naming the CRD prometheusrules.monitoring.coreos.com, and nothing
  was created;
- a bad RPO fails before the cluster is asked, with the reason;
- the dashboard alone (no CRD needed) is applied as a ConfigMap, changes nothing on a second run, and check mode
  changes nothing either.
"""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import urllib.request

import pytest
import yaml

from tests.ansible_run import run_play
from tests.lab import kube_build
from tests.lab.core import free_port, wait_until

NAMESPACE = "kms"
ROLE_VARS = {
    "monitoring_site": "dc2",
    "monitoring_site_role": "passive",
    "monitoring_active_site": "dc1",
    "monitoring_namespace": NAMESPACE,
    "monitoring_rpo": "15m",
    "monitoring_cnpg_cluster": "kms-pg-dc2",
}


@pytest.fixture(name="apiserver", scope="module")
def fixture_apiserver(tmp_path_factory):
    """A kubeconfig (path) of a fresh kube-apiserver (token auth, system:masters) with the namespace kms."""
    bins = kube_build.cache_root() / "bin"
    if not (bins / "kube-apiserver").is_file():
        pytest.fail(f"kube-apiserver is not built ({bins}): run make k8s-bins")
    work = tmp_path_factory.mktemp("apiserver")
    token = secrets.token_hex(16)
    (work / "tokens.csv").write_text(f'{token},admin,admin,"system:masters"\n')
    subprocess.run(["openssl", "genrsa", "-out", str(work / "sa.key"), "2048"], check=True, capture_output=True)
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    procs = []
    with (
        open(work / "etcd.log", "w", encoding="utf-8") as etcd_log,
        open(work / "api.log", "w", encoding="utf-8") as log,
    ):
        procs.append(
            subprocess.Popen(  # pylint: disable=consider-using-with
                [
                    str(bins / "etcd"),
                    f"--data-dir={work / 'etcd'}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                ],
                stdout=etcd_log,
                stderr=subprocess.STDOUT,
            )
        )
        procs.append(
            subprocess.Popen(  # pylint: disable=consider-using-with
                [
                    str(bins / "kube-apiserver"),
                    f"--etcd-servers={etcd_url}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={api_port}",
                    f"--cert-dir={work / 'pki'}",
                    f"--token-auth-file={work / 'tokens.csv'}",
                    "--authorization-mode=RBAC",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    f"--service-account-key-file={work / 'sa.key'}",
                    f"--service-account-signing-key-file={work / 'sa.key'}",
                    "--service-cluster-ip-range=10.96.0.0/24",
                    "--profiling=false",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the apiserver's self-signed certificate of this test

        def ready():
            request = urllib.request.Request(
                f"https://127.0.0.1:{api_port}/readyz", headers={"Authorization": f"Bearer {token}"}
            )
            with urllib.request.urlopen(request, context=context, timeout=2) as response:
                return response.status == 200

        wait_until(ready, 120, "kube-apiserver /readyz", interval=0.5)
        kubeconfig = work / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "test",
                            "cluster": {"server": f"https://127.0.0.1:{api_port}", "insecure-skip-tls-verify": True},
                        }
                    ],
                    "users": [{"name": "admin", "user": {"token": token}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
                    "current-context": "test",
                }
            )
        )
        subprocess.run(
            [str(bins / "kubectl"), "--kubeconfig", str(kubeconfig), "create", "namespace", NAMESPACE],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield kubeconfig
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=30)


def kubectl(kubeconfig, *args):
    return subprocess.run(
        [str(kube_build.cache_root() / "bin" / "kubectl"), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_role(tmp_path, kubeconfig, check_mode=False, **role_vars):
    play = {"roles": [{"role": "hanzo.kms.monitoring"}], "vars": {**ROLE_VARS, **role_vars}}
    play["vars"]["monitoring_kubeconfig"] = str(kubeconfig)
    return run_play(tmp_path / "play.yml", play=play, check_mode=check_mode, name="Monitoring")


def failure(run):
    return json.dumps([result for name, result in run.results() if name and result.get("failed")])


def test_rules_without_the_crd_fail_naming_it(apiserver, tmp_path):
    run = run_role(tmp_path, apiserver, monitoring_prometheus_rules=True, monitoring_grafana_dashboard=True)
    assert run.returncode != 0
    assert "the CRD prometheusrules.monitoring.coreos.com (Prometheus Operator) is not installed" in failure(run)
    # refused before anything was applied: not even the dashboard
    assert "hanzo-kms-dashboard" not in kubectl(apiserver, "-n", NAMESPACE, "get", "configmaps").stdout


def test_a_bad_rpo_fails_before_the_cluster_is_asked(apiserver, tmp_path):
    run = run_role(tmp_path, apiserver, monitoring_prometheus_rules=True, monitoring_rpo="1m")
    assert run.returncode != 0
    assert "shorter than PostgreSQL's archive_timeout" in failure(run)
    assert not any(name == "Look for the PrometheusRule CRD" and result for name, result in run.results())


def test_dashboard_alone_is_applied_once(apiserver, tmp_path):
    check = run_role(tmp_path, apiserver, check_mode=True, monitoring_grafana_dashboard=True)
    assert check.returncode == 0, check.tail()
    assert kubectl(apiserver, "-n", NAMESPACE, "get", "configmap", "hanzo-kms-dashboard").returncode != 0
    first = run_role(tmp_path, apiserver, monitoring_grafana_dashboard=True)
    assert first.returncode == 0, first.tail()
    assert first.stats("localhost")["changed"] == 1
    configmap = json.loads(
        kubectl(apiserver, "-n", NAMESPACE, "get", "configmap", "hanzo-kms-dashboard", "-o", "json").stdout
    )
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["hanzo-kms-dc2.json"])["uid"] == "hanzo-kms-dc2"
    second = run_role(tmp_path, apiserver, monitoring_grafana_dashboard=True)
    assert second.returncode == 0 and second.stats("localhost")["changed"] == 0, second.tail()
