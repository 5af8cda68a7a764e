"""Integration tests of playbooks/backup.yml and playbooks/restore_test.yml (issue 9) on the lab.

The session's lab is installed (install.yml), dc1's Redis gets known keys, then: backup.yml in check mode takes and
deletes nothing; a real run backs up both sites (CNPG Backups completed in both Clusters, a complete Redis backup per
site whose manifest counts equal the live Redis); with dc2 unreachable the job still succeeds and says dc2 was
skipped; with the primary's Kubernetes API unreachable it fails naming it; restore_test.yml restores into a scratch
Redis, leaves none behind and reports (its scratch Cluster runs on the real operator: test_cnpg_operator_real.py); in
external mode it refuses a site's Redis.
Molecule's `molecule/backup` covers the same path as a scenario; these run in `make test`.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.ansible_run import run_playbook
from tests.lab import redis as lab_redis
from tests.lab.core import free_port
from tests.lab.kube_fixtures import kube_clients, kube_sites  # noqa: F401  pylint: disable=unused-import

try:
    import boto3
    from botocore.config import Config
    from kubernetes import client
except ImportError:  # pragma: no cover
    boto3 = client = None

SITES = ("dc1", "dc2")
SEEDED = {f"itest:key:{i}": str(i) for i in range(150)}


def s3_client(lab):
    s3 = lab["s3"]
    return boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        region_name=s3["region"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        verify=s3["ca_file"],
        config=Config(s3={"addressing_style": "path"}),
    )


def redis_backups(lab, site):
    """{timestamp: set of object names} under redis/<site>/."""
    out = {}
    paginator = s3_client(lab).get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=lab["s3"]["bucket"], Prefix=f"redis/{site}/"):
        for item in page.get("Contents", []):
            stamp, name = item["Key"].split("/")[2:4]
            out.setdefault(stamp, set()).add(name)
    return out


def cnpg_backups(kube_clients, site):  # pylint: disable=redefined-outer-name
    api = client.CustomObjectsApi(kube_clients[site])
    return api.list_namespaced_custom_object("postgresql.cnpg.io", "v1", "kms", "backups")["items"]


@pytest.fixture(scope="module")
def installed(lab, lab_dir):
    run_playbook("playbooks/install.yml", lab_dir=lab_dir, must_succeed=True)
    lab_redis.client(lab["sites"]["dc1"]["redis"]).mset(SEEDED)
    return lab


@pytest.fixture
def unreachable_inventory(tmp_path, lab_dir):
    """An extra inventory whose host vars (they beat the lab's group_vars) make one site unreachable."""

    def make(site):
        path = tmp_path / f"unreachable-{site}.yml"
        path.write_text(
            json.dumps(
                {
                    "all": {
                        "hosts": {
                            f"{site}-kube": {
                                "site_kubeconfig": str(tmp_path / "missing-kubeconfig"),
                                "site_redis_port": free_port(),
                            }
                        }
                    }
                }
            ),
            encoding="utf-8",
        )
        return str(path)

    return make


def test_check_mode_takes_and_deletes_nothing(installed, lab_dir, kube_clients):  # pylint: disable=redefined-outer-name
    before = (
        {site: redis_backups(installed, site) for site in SITES},
        {site: len(cnpg_backups(kube_clients, site)) for site in SITES},
    )
    proc = run_playbook("playbooks/backup.yml", "--check", lab_dir=lab_dir)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "CHECK MODE" in proc.stdout and "would back up to redis/dc1/" in proc.stdout
    after = (
        {site: redis_backups(installed, site) for site in SITES},
        {site: len(cnpg_backups(kube_clients, site)) for site in SITES},
    )
    assert after == before


def test_backup_backs_up_both_sites(installed, lab_dir, kube_clients):  # pylint: disable=redefined-outer-name
    before = {site: {b["metadata"]["name"] for b in cnpg_backups(kube_clients, site)} for site in SITES}
    proc = run_playbook("playbooks/backup.yml", "-e", f"kms_report_dir={lab_dir}/reports", lab_dir=lab_dir)
    assert proc.returncode == 0, proc.stdout[-6000:]
    s3 = s3_client(installed)
    for site in SITES:
        # a new on-demand Backup of the site's Cluster, completed
        new = [b for b in cnpg_backups(kube_clients, site) if b["metadata"]["name"] not in before[site]]
        assert [b["spec"]["cluster"]["name"] for b in new] == [f"kms-pg-{site}"], new
        assert (
            new[0]["status"]["phase"] == "completed" and new[0]["metadata"]["labels"]["hanzo.kms/backup"] == "on-demand"
        )
        # the newest Redis backup is complete and holds exactly the keys of the site's Redis
        backups = redis_backups(installed, site)
        newest = max(backups)
        assert backups[newest] == {"dump.rdb", "manifest.json"}
        manifest = json.loads(
            s3.get_object(Bucket=installed["s3"]["bucket"], Key=f"redis/{site}/{newest}/manifest.json")["Body"].read()
        )
        live = lab_redis.client(installed["sites"][site]["redis"]).info("keyspace")
        assert manifest["keys_per_db"] == {name[2:]: db["keys"] for name, db in live.items()}
        assert manifest["source"]["site"] == site
    assert "newest complete RDB backup: redis/dc1/" in proc.stdout and "SKIPPED" not in proc.stdout


def test_unreachable_passive_site_is_skipped(installed, lab_dir, unreachable_inventory):
    proc = run_playbook(
        "playbooks/backup.yml", inventory=["inventories/lab", unreachable_inventory("dc2")], lab_dir=lab_dir
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "SKIPPED dc2: Kubernetes API unreachable" in proc.stdout
    assert "SKIPPED dc2: Redis at 127.0.0.1:" in proc.stdout
    assert "Backup kms-pg-dc1-ondemand-" in proc.stdout and " completed" in proc.stdout


def test_unreachable_primary_fails_the_job(installed, lab_dir, unreachable_inventory):
    proc = run_playbook(
        "playbooks/backup.yml", inventory=["inventories/lab", unreachable_inventory("dc1")], lab_dir=lab_dir
    )
    assert proc.returncode != 0
    assert "dc1: the primary site's Kubernetes API did not answer" in proc.stdout
    assert "dc1: the active site's Redis at 127.0.0.1:" in proc.stdout
    # the passive site was still backed up
    assert "Backup kms-pg-dc2-ondemand-" in proc.stdout


def test_restore_test_restores_redis_into_a_scratch_redis_and_reports(installed, lab_dir):
    """The Redis part (the scratch Cluster needs the real operator: test_cnpg_operator_real.py runs the whole test,
    recovered rows included; the stand-in neither restores data nor runs pods)."""
    proc = run_playbook(
        "playbooks/restore_test.yml",
        "-e",
        f"kms_report_dir={lab_dir}/reports",
        "-e",
        "restore_test_cnpg_enabled=false",
        lab_dir=lab_dir,
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    reports = sorted(Path(lab_dir, "reports").glob("restore-test-*.json"))
    report = json.loads(reports[-1].read_text(encoding="utf-8"))
    assert reports[-1].with_suffix(".md").exists()
    assert report["ok"] is True and report["site"] == "dc1"
    counts = {c["db"]: c for c in report["redis"]["counts"]}
    assert counts["0"]["match"] and counts["0"]["manifest"] >= len(SEEDED)
    assert report["redis"]["counts_from"] == "manifest"
    assert report["cnpg"] == {"skipped": True}
    # nothing left behind: the scratch Redis no longer listens
    port = int(report["redis"]["target"].rsplit(":", 1)[1])
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_restore_test_refuses_a_live_redis(installed, lab_dir):
    target = installed["sites"]["dc1"]["redis"]
    keys_before = lab_redis.client(target).dbsize()
    proc = run_playbook(
        "playbooks/restore_test.yml",
        "-e",
        "restore_test_redis_mode=external",
        "-e",
        f"restore_test_redis_host={target['host']}",
        "-e",
        f"restore_test_redis_port={target['port']}",
        "-e",
        "restore_test_cnpg_enabled=false",
        lab_dir=lab_dir,
    )
    assert proc.returncode != 0
    assert "not a site's" in proc.stdout
    assert lab_redis.client(target).dbsize() == keys_before
