# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""backup_summary: the backup playbook's summary, problems, skipped sites and printed lines from what the run
recorded (the playbook's end-to-end runs are in tests/integration/test_cnpg_operator_real.py)."""

from __future__ import annotations

import copy
import datetime

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils.backup_summary import summarize_backup

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 22, 5, 15, 0, tzinfo=UTC)
CNPG_RESULT = {
    "name": "kms-pg-dc1-ondemand-1",
    "phase": "completed",
    "reused": False,
    "backup_id": "20261122T051000",
    "begin_wal": "000000010000000000000004",
    "end_wal": "000000010000000000000005",
}


def cnpg_backup(name, cluster, phase="completed", stopped="2026-11-22T05:10:00Z"):
    status = {"phase": phase}
    if stopped:
        status["stoppedAt"] = stopped
    return {"metadata": {"name": name}, "spec": {"cluster": {"name": cluster}}, "status": status}


def site(name, **changes):
    cluster = f"kms-pg-{name}"
    record = {
        "site": name,
        "cluster": cluster,
        "cluster_exists": True,
        "kube_reachable": True,
        "kube_error": "",
        "cnpg_backups": [
            cnpg_backup(f"{cluster}-old", cluster, stopped="2026-11-21T05:10:00Z"),
            cnpg_backup(f"{cluster}-ondemand-1", cluster),
            cnpg_backup("kms-pg-restore-test-x", "kms-pg-restore-test", stopped="2026-11-22T05:14:00Z"),
            cnpg_backup(f"{cluster}-running", cluster, phase="running", stopped=None),
            cnpg_backup(f"{cluster}-failed", cluster, phase="failed", stopped="2026-11-22T05:12:00Z"),
        ],
        "cnpg_result": dict(CNPG_RESULT, name=f"{cluster}-ondemand-1"),
        "cnpg_error": None,
        "redis_host": "127.0.0.1",
        "redis_port": 6379,
        "redis_probe": {"changed": False, "elapsed": 0},
        "redis_result": {
            "key": f"redis/{name}/20261122T051400Z/dump.rdb",
            "size": 4096,
            "duration": 0.5,
            "server_version": "7.2.4",
            "manifest": {"keys": 150},
            "keyspace": {"0": {"keys": 149}},
        },
        "redis_error": None,
    }
    record.update(changes)
    return record


def newest(name, stamp="20261122T051400Z", age=60):
    return {
        "site": name,
        "prefix": f"redis/{name}/{stamp}/",
        "time": "2026-11-22T05:14:00Z",
        "size": 4500,
        "age_seconds": age,
        "complete": True,
        "manifest": {"keys": 150},
    }


LISTING = {
    "sites": {
        "dc1": {"backups": 2, "complete": 2, "incomplete": 0, "newest": newest("dc1")},
        "dc2": {"backups": 1, "complete": 1, "incomplete": 0, "newest": newest("dc2", age=7384)},
    },
    "backups": [newest("dc1"), newest("dc1", "20261122T041400Z"), newest("dc2")],
    "unrecognised": [],
}
RETENTION = {
    "summary": {"kept": 3, "deleted": 1, "incomplete": 0, "unrecognised": 2},
    "backups": [
        {"prefix": "redis/dc1/20261101T000000Z/", "action": "delete"},
        {"prefix": "redis/dc1/20261122T051400Z/", "action": "keep"},
    ],
}


def params(**changes):
    out = {
        "sites": [site("dc1"), site("dc2")],
        "primary_cluster": "kms-pg-dc1",
        "cnpg_enabled": True,
        "redis_enabled": True,
        "retention": copy.deepcopy(RETENTION),
        "listing": copy.deepcopy(LISTING),
        "redis_error": None,
    }
    out.update(changes)
    return out


def test_a_good_run_reports_every_site_and_no_problem():
    result = summarize_backup(params(), now=NOW)
    report = result["report"]
    assert (result["problems"], result["skipped"], result["message"]) == ([], [], "Backups done.")
    assert report["problems"] == [] and report["skipped"] == [] and report["time"] == "2026-11-22T05:15:00Z"
    dc1, dc2 = report["sites"]
    assert dc1 == {
        "site": "dc1",
        "kube_reachable": True,
        "kube_error": "",
        "cluster": "kms-pg-dc1",
        "cluster_exists": True,
        "cluster_role": "primary",
        "cnpg_backup": dict(CNPG_RESULT, ok=True, message=""),
        "cnpg_newest": {"name": "kms-pg-dc1-ondemand-1", "stopped_at": "2026-11-22T05:10:00Z", "age_seconds": 300},
        "redis_endpoint": "127.0.0.1:6379",
        "redis_reachable": True,
        "redis_backup": {
            "ok": True,
            "message": "",
            "key": "redis/dc1/20261122T051400Z/dump.rdb",
            "key_count": 150,
            "size": 4096,
            "duration": 0.5,
            "server_version": "7.2.4",
        },
        "redis_newest": {
            "prefix": "redis/dc1/20261122T051400Z/",
            "time": "2026-11-22T05:14:00Z",
            "size": 4500,
            "age_seconds": 60,
        },
    }
    assert dc2["cluster_role"] == "replica" and dc2["cnpg_newest"]["name"] == "kms-pg-dc2-ondemand-1"
    assert report["retention"] == {
        "ok": True,
        "message": "",
        "enabled": True,
        "summary": RETENTION["summary"],
        "deleted": ["redis/dc1/20261101T000000Z/"],
        "newest": {"dc1": newest("dc1"), "dc2": newest("dc2", age=7384)},
    }
    assert result["lines"] == [
        "Backup of Hanzo KMS at 2026-11-22T05:15:00Z, primary Cluster kms-pg-dc1",
        "dc1 CNPG kms-pg-dc1 (primary): Backup kms-pg-dc1-ondemand-1 completed, backupId 20261122T051000, "
        "WAL 000000010000000000000004..000000010000000000000005",
        "    newest completed base backup: kms-pg-dc1-ondemand-1 at 2026-11-22T05:10:00Z, age 5m 00s",
        "dc1 Redis 127.0.0.1:6379: redis/dc1/20261122T051400Z/dump.rdb, 4096 bytes, 150 keys, 0.5 s",
        "    newest complete RDB backup: redis/dc1/20261122T051400Z/ at 2026-11-22T05:14:00Z, age 1m 00s",
        "dc2 CNPG kms-pg-dc2 (replica): Backup kms-pg-dc2-ondemand-1 completed, backupId 20261122T051000, "
        "WAL 000000010000000000000004..000000010000000000000005",
        "    newest completed base backup: kms-pg-dc2-ondemand-1 at 2026-11-22T05:10:00Z, age 5m 00s",
        "dc2 Redis 127.0.0.1:6379: redis/dc2/20261122T051400Z/dump.rdb, 4096 bytes, 150 keys, 0.5 s",
        "    newest complete RDB backup: redis/dc2/20261122T051400Z/ at 2026-11-22T05:14:00Z, age 2h 03m",
        "Redis retention: 3 kept, 1 deleted, 0 incomplete, 2 unrecognised keys left alone",
    ]


def test_check_mode_says_what_would_be_taken_and_deleted():
    keyspace = {"0": {"keys": 149}, "1": {"keys": 1}}
    dc1 = site(
        "dc1",
        redis_result={"key": "redis/dc1/20261122T051500Z/dump.rdb", "keyspace": keyspace},
        cnpg_result=dict(CNPG_RESULT, reused=True, backup_id=""),
    )
    result = summarize_backup(params(sites=[dc1]), check_mode=True, now=NOW)
    assert result["report"]["check_mode"] is True
    assert result["lines"][0] == (
        "Backup of Hanzo KMS at 2026-11-22T05:15:00Z (CHECK MODE: nothing taken or deleted), primary Cluster kms-pg-dc1"
    )
    assert (
        result["lines"][1]
        == "dc1 CNPG kms-pg-dc1 (primary): Backup kms-pg-dc1-ondemand-1 completed (waited for the one in progress)"
    )
    assert (
        result["lines"][3]
        == "dc1 Redis 127.0.0.1:6379: would back up to redis/dc1/20261122T051500Z/dump.rdb, 150 keys now"
    )
    assert result["lines"][-1].startswith("Redis retention: 3 kept, 1 to delete, 0 incomplete")


def test_an_unreachable_passive_site_is_skipped_not_a_problem():
    dc2 = site(
        "dc2",
        kube_reachable=False,
        kube_error="connection refused",
        cluster_exists=False,
        cnpg_backups=[],
        cnpg_result=None,
        redis_port=1,
        redis_probe={"failed": False, "msg": "Timeout when waiting"},
        redis_result=None,
    )
    result = summarize_backup(params(sites=[site("dc1"), dc2]), now=NOW)
    assert result["problems"] == []
    assert result["skipped"] == [
        "dc2: Kubernetes API unreachable, no CNPG Backup (connection refused)",
        "dc2: Redis at 127.0.0.1:1 unreachable, not backed up",
    ]
    assert result["message"] == (
        "Backups done (2 skipped: dc2: Kubernetes API unreachable, no CNPG Backup (connection "
        "refused); dc2: Redis at 127.0.0.1:1 unreachable, not backed up)."
    )
    assert result["lines"][5:9] == [
        "dc2 CNPG kms-pg-dc2 (replica): not backed up",
        "    newest completed base backup: none",
        "dc2 Redis 127.0.0.1:1: unreachable",
        "    newest complete RDB backup: redis/dc2/20261122T051400Z/ at 2026-11-22T05:14:00Z, age 2h 03m",
    ]
    assert result["lines"][-2:] == ["SKIPPED " + result["skipped"][0], "SKIPPED " + result["skipped"][1]]
    # a passive site that answers but has no Cluster
    result = summarize_backup(params(sites=[site("dc1"), site("dc2", cluster_exists=False, cnpg_result=None)]), now=NOW)
    assert result["skipped"] == ["dc2: no Cluster kms-pg-dc2"] and result["problems"] == []


def test_an_unreachable_primary_fails_naming_what_was_not_backed_up():
    dc1 = site(
        "dc1",
        kube_reachable=False,
        kube_error="connection refused",
        cnpg_result=None,
        cnpg_backups=[],
        redis_probe={"msg": "Timeout"},
        redis_result=None,
        redis_port=1,
    )
    result = summarize_backup(params(sites=[dc1, site("dc2")]), now=NOW)
    assert result["problems"] == [
        "dc1: the primary site's Kubernetes API did not answer (connection refused); no CNPG Backup",
        "dc1: the active site's Redis at 127.0.0.1:1 did not answer",
    ]
    assert result["message"] == "; ".join(result["problems"])
    assert result["lines"][-2:] == ["FAILED " + p for p in result["problems"]]
    assert result["report"]["problems"] == result["problems"]


@pytest.mark.parametrize(
    "changes, problems",
    [
        ({"sites": [site("dc1", cluster_exists=False, cnpg_result=None)]}, ["dc1: Cluster kms-pg-dc1 does not exist"]),
        (
            {
                "sites": [
                    site("dc1", cnpg_error="Backup kms-pg-dc1-ondemand-2 failed: barman-cloud error", cnpg_result=None)
                ]
            },
            ["dc1: Backup kms-pg-dc1-ondemand-2 failed: barman-cloud error"],
        ),
        ({"sites": [site("dc1", redis_error="", redis_result=None)]}, ["dc1: failed"]),
        ({"sites": [site("dc2", redis_error="MASTERAUTH refused")]}, ["dc2: MASTERAUTH refused"]),
        (
            {"redis_error": "bucket does not exist", "retention": {}, "listing": {}},
            ["Redis backup retention failed: bucket does not exist"],
        ),
        # what is off is not a problem
        ({"cnpg_enabled": False, "sites": [site("dc1", cluster_exists=False, cnpg_result=None)]}, []),
        (
            {
                "redis_enabled": False,
                "redis_error": "ignored",
                "sites": [site("dc1", redis_probe={"skipped": True}, redis_result=None)],
            },
            [],
        ),
    ],
)
def test_problems(changes, problems):
    assert summarize_backup(params(**changes), now=NOW)["problems"] == problems


def test_a_failed_cnpg_backup_keeps_what_the_role_found():
    dc1 = site("dc1", cnpg_result={"name": "kms-pg-dc1-ondemand-2", "phase": "failed"}, cnpg_error="it failed")
    result = summarize_backup(params(sites=[dc1]), now=NOW)
    assert result["report"]["sites"][0]["cnpg_backup"] == {
        "name": "kms-pg-dc1-ondemand-2",
        "phase": "failed",
        "reused": False,
        "backup_id": "",
        "ok": False,
        "message": "it failed",
    }
    assert result["lines"][1] == "dc1 CNPG kms-pg-dc1 (primary): Backup kms-pg-dc1-ondemand-2 failed: it failed"


def test_retention_off_lists_only_and_a_failure_is_printed():
    skipped_task = {"changed": False, "skipped": True, "skip_reason": "Conditional result was False"}
    listing = dict(
        LISTING,
        backups=LISTING["backups"] + [dict(newest("dc1", "20261122T051500Z"), complete=False)],
        unrecognised=["redis/README"],
    )
    result = summarize_backup(params(retention=skipped_task, listing=listing), now=NOW)
    retention = result["report"]["retention"]
    assert retention["enabled"] is False and "summary" not in retention and retention["newest"]["dc1"] == newest("dc1")
    assert result["lines"][-1] == "Redis retention off: 4 backups listed, 1 incomplete, 1 unrecognised keys left alone"
    failed = summarize_backup(params(redis_error="access denied", retention={}, listing={}), now=NOW)
    assert failed["report"]["retention"] == {"ok": False, "message": "access denied", "newest": {}}
    assert failed["lines"][-2:] == [
        "Redis retention FAILED: access denied",
        "FAILED Redis backup retention failed: access denied",
    ]
    assert failed["report"]["sites"][0]["redis_newest"] == {}
    # Redis backups off: no retention line, no newest Redis backup
    off = summarize_backup(params(redis_enabled=False), now=NOW)
    assert off["report"]["retention"] == {} and not any(line.startswith("Redis retention") for line in off["lines"])
