"""Integration tests of the operations playbooks (issue 9) on the session's lab (CNPG stand-in) after install.yml:
status.yml, and the refusals of switchover.yml (a wrong confirmation changes nothing) and failover.yml (an unknown
site); plus site_data_info against the lab's real S3 and Redis.

switchover.yml there and back (both sites' objects, the Redis restore, the re-run, install.yml after the switch) and
failover.yml run on the real CNPG operator: tests/integration/test_cnpg_operator_real.py.
Each playbook's wall time is printed (pytest -s).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.ansible_run import run_module, run_playbook
from tests.lab import s3 as lab_s3
from tests.lab.kube_fixtures import kube_clients, kube_sites  # noqa: F401  pylint: disable=unused-import

try:
    from kubernetes import client
except ImportError:  # pragma: no cover
    client = None


def run(args, lab_dir, what):
    proc = run_playbook(*args, lab_dir=lab_dir)
    print(f"\n{what}: {proc.seconds:.1f}s")
    return proc


@pytest.fixture(scope="module")
def installed(lab, lab_dir):
    proc = run(["playbooks/install.yml"], lab_dir, "install.yml")
    assert proc.returncode == 0, proc.stdout[-6000:]
    return lab


def cluster(kube_clients, site):  # noqa: F811  pylint: disable=redefined-outer-name
    return client.CustomObjectsApi(kube_clients[site]).get_namespaced_custom_object(
        "postgresql.cnpg.io", "v1", "kms", "clusters", f"kms-pg-{site}"
    )


def replicas(kube_clients, site):  # noqa: F811  pylint: disable=redefined-outer-name
    return client.AppsV1Api(kube_clients[site]).read_namespaced_deployment("kms", "kms").spec.replicas


def test_status_shows_both_sites_and_the_lb(installed, lab_dir):
    proc = run(["playbooks/status.yml"], lab_dir, "status.yml")
    assert proc.returncode == 0, proc.stdout[-6000:]
    out = proc.stdout
    assert '"|  | dc1 | dc2 |"' in out
    assert "| CNPG role | primary | replica |" in out
    assert "Active site (from the Clusters): dc1." in out
    assert "| LB lb1 | SERVING (ready, UP) | not serving (maint, MAINT) |" in out
    assert "Load balancers send traffic to: dc1." in out


def test_wrong_confirmation_changes_nothing(installed, lab_dir, kube_clients):  # noqa: F811  pylint: disable=redefined-outer-name
    proc = run(
        [
            "playbooks/switchover.yml",
            "-e",
            "switchover_target_site=dc2",
            "-e",
            "switchover_confirm='SWITCHOVER TO DC2'",
        ],
        lab_dir,
        "switchover.yml, wrong phrase",
    )
    assert proc.returncode != 0
    assert "the confirmation must be exactly 'SWITCHOVER TO dc2'" in proc.stdout
    assert cluster(kube_clients, "dc1")["spec"]["replica"]["primary"] == "kms-pg-dc1"
    assert replicas(kube_clients, "dc1") != 0
    report = json.loads((Path(lab_dir) / "reports" / "switchover-latest.json").read_text())
    assert report["result"] == "failed"
    assert [(s["name"], s["result"]) for s in report["steps"]] == [("preflight", "ok"), ("confirm", "failed")]


def test_unknown_target_site_is_refused(installed, lab_dir):
    proc = run(
        ["playbooks/failover.yml", "-e", "failover_target_site=dc9", "-e", "failover_confirm=x"],
        lab_dir,
        "failover.yml, unknown site",
    )
    assert proc.returncode != 0 and "Set failover_target_site" in proc.stdout


def test_site_data_info_reads_the_barman_layout(installed, lab_dir):
    s3 = lab_s3.client(installed["s3"])
    bucket = installed["s3"]["bucket"]
    prefix = "cnpg/itest-site/kms-pg-itest-site/"
    keys = [prefix + "wals/0000000100000000/000000010000000000000003.gz", prefix + "base/20261129T100000/backup.info"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    redis_entry = installed["sites"]["dc1"]["redis"]
    try:
        proc = run_module(
            "hanzo.kms.site_data_info",
            {
                "site": "itest-site",
                "bucket": bucket,
                "endpoint_url": installed["s3"]["endpoint_url"],
                "access_key": installed["s3"]["access_key"],
                "secret_key": installed["s3"]["secret_key"],
                "addressing_style": "path",
                "ca_bundle": installed["s3"]["ca_file"],
                "host": redis_entry["host"],
                "port": redis_entry["port"],
                "password": redis_entry["password"],
                "tls": True,
                "tls_ca_cert": redis_entry["ca_file"],
            },
            lab_dir=lab_dir,
            timeout=300,
        )
    finally:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in keys]})
    assert proc.returncode == 0, proc.tail()
    result = json.dumps(proc.result())
    assert '"name": "000000010000000000000003"' in result
    assert '"backup_id": "20261129T100000"' in result
    assert '"role": "master"' in result
