"""Decisions and reports of the operations playbooks (plugins/module_utils/operation_decisions.py,
operation_reports.py, site_data.py): backup ages from S3 listings, site summaries, the failover/switchover preflight
(including resumed runs), the data-loss bound, the load balancer view and the Markdown/JSON report."""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import cnpg, site_data, times
from ansible_collections.hanzo.kms.plugins.module_utils import operation_decisions as decisions
from ansible_collections.hanzo.kms.plugins.module_utils import operation_reports as reports
from ansible_collections.hanzo.kms.plugins.module_utils.haproxy import parse_servers_state

NOW = datetime.datetime(2026, 11, 29, 13, 0, 0, tzinfo=datetime.timezone.utc)
HEALTHY = "Cluster in healthy state"


def ago(seconds):
    return NOW - datetime.timedelta(seconds=seconds)


def cluster(
    site, primary_site, *, reports_primary=None, phase=HEALTHY, ready="True", timeline=1, fenced=False, switching=False
):
    name = f"kms-pg-{site}"
    replica = name != f"kms-pg-{primary_site}"
    if reports_primary is None:
        reports_primary = not replica
    annotations = {"cnpg.io/fencedInstances": '["*"]'} if fenced else {}
    return {
        "metadata": {"name": name, "namespace": "kms", "annotations": annotations},
        "spec": {
            "replica": {
                "self": name,
                "primary": f"kms-pg-{primary_site}",
                "source": f"kms-pg-{'dc2' if site == 'dc1' else 'dc1'}",
            },
            "externalClusters": [{"name": "kms-pg-dc1"}, {"name": "kms-pg-dc2"}],
        },
        "status": {
            "phase": phase,
            "currentPrimary": f"{name}-1",
            "timelineID": timeline,
            "instancesReportedState": {f"{name}-1": {"isPrimary": reports_primary, "timeLineID": timeline}},
            "switchReplicaClusterStatus": {"inProgress": switching},
            "conditions": [{"type": "Ready", "status": ready}, {"type": "ContinuousArchiving", "status": "True"}],
        },
    }


def site(
    name,
    primary_site="dc1",
    *,
    reachable=True,
    kms_replicas=None,
    redis_up=True,
    wal_age=30,
    redis_backup_age=600,
    **cluster_kwargs,
):
    if kms_replicas is None:
        kms_replicas = 2 if primary_site == name else 0
    return {
        "site": name,
        "inventory_role": "active" if name == "dc1" else "passive",
        "kube_reachable": reachable,
        "kube_error": None if reachable else "connection refused",
        "cluster": cluster(name, primary_site, **cluster_kwargs) if reachable else None,
        "cluster_error": None if reachable else "connection refused",
        "kms": {"replicas": kms_replicas, "ready_replicas": kms_replicas, "available": True} if reachable else None,
        "backups": [],
        "data": {
            "cnpg": {
                "newest_wal": None
                if wal_age is None
                else {
                    "name": "000000010000000000000007",
                    "key": "cnpg/x",
                    "time": times.format_time(ago(wal_age)),
                    "age_seconds": wal_age,
                },
                "newest_base_backup": None,
            },
            "redis": {
                "server": {"role": "master", "version": "7.0.15", "keys": 3} if redis_up else None,
                "error": None if redis_up else "connection refused",
                "backups": {
                    "count": 1,
                    "newest": None
                    if redis_backup_age is None
                    else {
                        "name": "20261129T125000Z",
                        "key": f"redis/{name}/20261129T125000Z/dump.rdb",
                        "time": times.format_time(ago(redis_backup_age)),
                        "age_seconds": redis_backup_age,
                    },
                },
            },
        },
    }


# -- object storage ------------------------------------------------------------------------------------------------
def test_cnpg_archive_finds_newest_wal_and_base_backup():
    prefix = "cnpg/dc1/"
    objects = [
        (prefix + "kms-pg-dc1/wals/0000000100000000/000000010000000000000001.gz", ago(300), 10),
        (prefix + "kms-pg-dc1/wals/0000000100000000/000000010000000000000002.gz", ago(60), 10),
        (prefix + "kms-pg-dc1/wals/00000002.history.gz", ago(120), 1),
        (prefix + "kms-pg-dc1/base/20261129T100000/backup.info", ago(3 * 3600), 1),
        (prefix + "kms-pg-dc1/base/20261129T100000/data.tar.gz", ago(3 * 3600), 1000),
        (prefix + "kms-pg-dc1/base/20261128T100000/backup.info", ago(27 * 3600), 1),
        (prefix + "unrelated.txt", ago(1), 1),
        ("cnpg/dc2/kms-pg-dc2/wals/0000000100000000/000000010000000000000009.gz", ago(1), 1),
    ]
    out = decisions.analyze_cnpg_archive(objects, prefix, NOW)
    assert out["wal_count"] == 3
    assert out["servers"] == ["kms-pg-dc1"]
    assert out["newest_wal"]["name"] == "000000010000000000000002"
    assert out["newest_wal"]["age_seconds"] == 60
    assert out["newest_base_backup"]["backup_id"] == "20261129T100000"
    assert out["newest_base_backup"]["age_seconds"] == 3 * 3600


def test_cnpg_archive_partial_wal_and_server_filter():
    prefix = "cnpg/dc1/"
    objects = [
        (prefix + "old-server/wals/0000000100000000/000000010000000000000005.partial", ago(5), 1),
        (prefix + "kms-pg-dc1/wals/0000000200000000/000000020000000000000001.zst", ago(50), 1),
    ]
    assert decisions.analyze_cnpg_archive(objects, prefix, NOW)["newest_wal"]["name"].endswith(".partial")
    only = decisions.analyze_cnpg_archive(objects, prefix, NOW, server="kms-pg-dc1")
    assert only["newest_wal"]["age_seconds"] == 50 and only["servers"] == ["kms-pg-dc1"]
    assert decisions.analyze_cnpg_archive([], prefix, NOW)["newest_wal"] is None


def test_redis_backup_summary_takes_the_newest_complete():
    backups = [
        {
            "name": "20261129T125000Z",
            "prefix": "redis/dc1/20261129T125000Z/",
            "time": ago(600),
            "manifest_key": "redis/dc1/20261129T125000Z/manifest.json",
            "size": 123,
            "keys": ["redis/dc1/20261129T125000Z/dump.rdb", "redis/dc1/20261129T125000Z/manifest.json"],
        },
        {
            "name": "20261129T115000Z",
            "prefix": "redis/dc1/20261129T115000Z/",
            "time": ago(4200),
            "manifest_key": "x",
            "size": 1,
            "keys": [],
        },
    ]
    out = decisions.summarize_redis_backups(backups, NOW)
    assert out["count"] == 2
    assert out["newest"]["key"] == "redis/dc1/20261129T125000Z/dump.rdb"
    assert out["newest"]["age_seconds"] == 600
    assert decisions.summarize_redis_backups([], NOW) == {"count": 0, "newest": None}


@pytest.mark.parametrize(
    "url,expected",
    [
        ("s3://kms-backups/cnpg/dc1/", ("kms-backups", "cnpg/dc1/")),
        ("s3://b/cnpg/dc1", ("b", "cnpg/dc1/")),
        ("s3://b", ("b", "")),
    ],
)
def test_split_s3_url(url, expected):
    assert decisions.split_s3_url(url) == expected


def test_split_s3_url_rejects_other_schemes():
    with pytest.raises(ValueError):
        decisions.split_s3_url("https://example.com/x")


# -- summaries -----------------------------------------------------------------------------------------------------
def test_site_summary_of_a_primary_and_a_replica():
    primary = decisions.site_summary(site("dc1"), NOW)
    replica = decisions.site_summary(site("dc2"), NOW)
    assert primary["cluster"]["role"] == "primary" and primary["cluster"]["is_primary"]
    assert primary["replication"] == "primary, timeline 1"
    assert replica["cluster"]["role"] == "replica" and replica["cluster"]["healthy"]
    assert "replica of kms-pg-dc1" in replica["replication"] and "in recovery" in replica["replication"]
    assert primary["kms_serving"] and not replica["kms_serving"]
    assert replica["redis_backup"]["age_seconds"] == 600


def test_site_summary_of_an_unreachable_site_keeps_the_object_store_view():
    summary = decisions.site_summary(site("dc1", reachable=False), NOW)
    assert not summary["kube_reachable"] and summary["cluster"] is None
    assert summary["replication"] == "unknown"
    assert summary["wal_archive"]["age_seconds"] == 30


def test_base_backup_from_backup_objects_when_the_archive_has_none():
    status = site("dc1")
    status["backups"] = [
        {"metadata": {"name": "b1"}, "status": {"phase": "completed", "stoppedAt": times.format_time(ago(7200))}},
        {"metadata": {"name": "b2"}, "status": {"phase": "completed", "stoppedAt": times.format_time(ago(100))}},
        {"metadata": {"name": "b3"}, "status": {"phase": "failed", "stoppedAt": times.format_time(ago(10))}},
    ]
    summary = decisions.site_summary(status, NOW)
    assert summary["base_backup"]["name"] == "b2" and summary["base_backup"]["age_seconds"] == 100
    assert summary["k8s_backups"]["failed"] == 1


# -- preflight -----------------------------------------------------------------------------------------------------
def test_failover_with_the_old_site_lost():
    decision = decisions.preflight("failover", "dc2", [site("dc1", reachable=False), site("dc2")], NOW)
    assert decision["ok"], decision["refusals"]
    assert decision["old_site"] == "dc1" and decision["state"] == "fresh"
    assert decision["phrase"] == "FAILOVER TO dc2"
    assert any("unreachable" in w for w in decision["warnings"])
    assert decision["data_loss"]["postgres"]["bound_seconds"] == 30
    assert decision["data_loss"]["redis"]["bound_seconds"] == 600
    site_dc1 = next(s for s in decision["sites"] if s["site"] == "dc1")
    assert decision["data_loss"]["postgres"]["since"] == site_dc1["wal_archive"]["time"]
    assert decision["data_loss"]["redis"]["since"] == site_dc1["redis_backup"]["time"]


def test_failover_bound_is_the_targets_newest_replayed_commit():
    target = dict(site("dc2"), replayed_commit_time="2026-11-29T12:59:15Z")  # 45 s before NOW
    decision = decisions.preflight("failover", "dc2", [site("dc1", reachable=False, wal_age=30), target], NOW)
    bound = decision["data_loss"]["postgres"]
    # the WAL reached the store 30 s ago, but its segment was closed earlier: the replayed commit is the true bound
    assert (bound["bound_seconds"], bound["since"], bound["approximate"]) == (45, "2026-11-29T12:59:15Z", False)
    assert bound["basis"].startswith("dc2 has replayed every transaction committed up to 2026-11-29T12:59:15Z")
    assert "000000010000000000000007" in bound["basis"]


def test_failover_bound_from_the_archive_alone_is_marked_approximate():
    decision = decisions.preflight(
        "failover", "dc2", [site("dc1", reachable=False, wal_age=30), dict(site("dc2"), replayed_commit_time="")], NOW
    )
    bound = decision["data_loss"]["postgres"]
    assert (bound["bound_seconds"], bound["approximate"]) == (30, True)
    assert bound["basis"].startswith("APPROXIMATE")


def test_failover_data_loss_unknown_without_archive():
    decision = decisions.preflight(
        "failover", "dc2", [site("dc1", reachable=False, wal_age=None, redis_backup_age=None), site("dc2")], NOW
    )
    assert decision["ok"]
    assert decision["data_loss"]["postgres"]["bound_seconds"] is None
    assert decision["data_loss"]["postgres"]["since"] is None
    assert "unknown" in decision["data_loss"]["postgres"]["basis"]
    assert decision["data_loss"]["redis"]["bound_seconds"] is None


def test_failover_warns_that_a_reachable_primary_will_be_fenced():
    decision = decisions.preflight("failover", "dc2", [site("dc1"), site("dc2")], NOW)
    assert decision["ok"]
    assert any("will be fenced" in w for w in decision["warnings"])


@pytest.mark.parametrize(
    "kwargs,reason",
    [
        ({"phase": "Setting up primary", "ready": "False"}, "not a healthy replica"),
        ({"reachable": False}, "unreachable"),
        ({"redis_up": False}, "Redis does not answer"),
    ],
)
def test_failover_refusals(kwargs, reason):
    decision = decisions.preflight("failover", "dc2", [site("dc1", reachable=False), site("dc2", **kwargs)], NOW)
    assert not decision["ok"]
    assert any(reason in r for r in decision["refusals"]), decision["refusals"]


def test_unknown_target_is_refused():
    decision = decisions.preflight("failover", "dc9", [site("dc1"), site("dc2")], NOW)
    assert not decision["ok"] and "not a site" in decision["refusals"][0]


def test_failover_rerun_after_promotion_is_done():
    sites = [site("dc1", "dc1", reachable=False), site("dc2", "dc2", timeline=2, kms_replicas=2)]
    decision = decisions.preflight("failover", "dc2", sites, NOW)
    assert decision["ok"] and decision["state"] == "done" and decision["old_site"] == "dc1"
    assert decision["cnpg_state"] == "promoted"


def test_a_run_that_may_only_finish_a_failover_refuses_to_promote():
    fresh = decisions.preflight(
        "failover", "dc2", [site("dc1", reachable=False), site("dc2", "dc1")], NOW, require_promoted=True
    )
    assert not fresh["ok"] and "not the promoted primary (replica)" in fresh["refusals"][0]
    done = decisions.preflight(
        "failover", "dc2", [site("dc1", "dc1"), site("dc2", "dc2", timeline=2)], NOW, require_promoted=True
    )
    assert done["ok"] and done["state"] == "done" and done["old_site"] == "dc1"
    assert any("will be fenced" in w for w in done["warnings"])


def test_failover_rerun_while_promoting_resumes():
    sites = [
        site("dc1", reachable=False),
        site("dc2", "dc2", reports_primary=False, phase="Promoting to primary cluster", ready="False"),
    ]
    decision = decisions.preflight("failover", "dc2", sites, NOW)
    assert decision["ok"] and decision["state"] == "resume" and decision["cnpg_state"] == "promoting"


def test_switchover_fresh():
    decision = decisions.preflight("switchover", "dc2", [site("dc1"), site("dc2")], NOW)
    assert decision["ok"], decision["refusals"]
    assert decision["state"] == "fresh" and decision["old_site"] == "dc1"
    assert decision["phrase"] == "SWITCHOVER TO dc2"
    assert decision["data_loss"]["postgres"]["bound_seconds"] == 0
    assert decision["data_loss"]["redis"]["bound_seconds"] == 0


def test_switchover_back_discovers_the_primary_from_the_clusters_not_the_inventory():
    # after a switchover to dc2 the inventory still says dc1 is active; the Clusters say dc2
    sites = [site("dc1", "dc2", kms_replicas=0), site("dc2", "dc2", timeline=2, kms_replicas=2)]
    decision = decisions.preflight("switchover", "dc1", sites, NOW)
    assert decision["ok"], decision["refusals"]
    assert decision["old_site"] == "dc2" and decision["state"] == "fresh"


def test_switchover_refused_when_the_old_site_is_unreachable():
    decision = decisions.preflight("switchover", "dc2", [site("dc1", reachable=False), site("dc2")], NOW)
    assert not decision["ok"]
    assert any("failover" in r for r in decision["refusals"])


def test_switchover_refused_when_the_old_redis_is_down():
    decision = decisions.preflight("switchover", "dc2", [site("dc1", redis_up=False), site("dc2")], NOW)
    assert not decision["ok"] and any("fresh" in r for r in decision["refusals"])


def test_switchover_resume_after_demotion():
    sites = [site("dc1", "dc2", kms_replicas=0), site("dc2", "dc1")]  # old demoted, new not yet promoted
    decision = decisions.preflight("switchover", "dc2", sites, NOW)
    assert decision["ok"], decision["refusals"]
    assert decision["state"] == "resume" and decision["old_site"] == "dc1"


def recorded(token_timeline=1, origin="kms-pg-dc1"):
    content = {
        "latestCheckpointTimelineID": str(token_timeline),
        "redoWalFile": "000000010000000000000007",
        "databaseSystemIdentifier": "7420000000000000001",
        "latestCheckpointREDOLocation": "0/7000028",
        "timeOfLatestCheckpoint": "Sun Nov 29 12:59:58 2026",
        "operatorVersion": "1.30.0",
    }
    token = base64.b64encode(json.dumps(content).encode()).decode()
    return {cnpg.TOKEN_ANNOTATION: json.dumps({"token": token, "from": origin, "recorded": "2026-11-29T13:00:00Z"})}


def test_switchover_resumes_with_the_recorded_token_when_the_old_site_is_lost():
    target = site("dc2", "dc1")
    target["cluster"]["metadata"]["annotations"].update(recorded())
    decision = decisions.preflight("switchover", "dc2", [site("dc1", reachable=False), target], NOW)
    assert decision["ok"], decision["refusals"]
    assert decision["token_recorded"] is True and decision["state"] == "resume" and decision["old_site"] == "dc1"
    assert any("recorded kms-pg-dc1's demotion token" in w for w in decision["warnings"])
    assert decision["data_loss"]["postgres"]["bound_seconds"] == 0
    assert (
        decision["data_loss"]["redis"]["bound_seconds"] == 0
        and "interrupted" in decision["data_loss"]["redis"]["basis"]
    )


@pytest.mark.parametrize(
    "annotations, reason",
    [
        (recorded(token_timeline=1), "already on timeline 2"),
        (recorded(origin="kms-pg-dc9", token_timeline=2), "published by 'kms-pg-dc9'"),
        ({}, "no demotion token is recorded"),
    ],
)
def test_switchover_without_the_old_site_refuses_an_unusable_token(annotations, reason):
    target = site("dc2", "dc1", timeline=2)
    target["cluster"]["metadata"]["annotations"].update(annotations)
    decision = decisions.preflight("switchover", "dc2", [site("dc1", reachable=False), target], NOW)
    assert not decision["ok"] and "token_recorded" not in decision
    assert reason in decision["refusals"][0] and "failover" in decision["refusals"][0]


def test_switchover_without_the_old_site_after_a_token_promotion_goes_on():
    target = site("dc2", "dc2", timeline=2)
    target["cluster"]["spec"]["replica"]["promotionToken"] = "dG9rZW4="
    decision = decisions.preflight("switchover", "dc2", [site("dc1", reachable=False), target], NOW)
    assert decision["ok"], decision["refusals"]
    assert decision["state"] == "done"


def test_target_being_demoted_is_refused():
    decision = decisions.preflight("switchover", "dc2", [site("dc1"), site("dc2", switching=True)], NOW)
    assert not decision["ok"] and "demoted" in decision["refusals"][0]


def test_preflight_rejects_unknown_mode():
    with pytest.raises(ValueError):
        decisions.preflight("teleport", "dc2", [], NOW)


# -- load balancer -------------------------------------------------------------------------------------------------
HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
    "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
    "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port "
    "srv_check_addr srv_agent_addr srv_agent_port"
)
STATE = "\n".join(
    [
        "1",
        HEADER,
        "3 kms 1 dc1 127.0.0.1 2 0 1 1 5 6 3 4 6 0 0 0 - 8001 - 0 0 - - 0",
        "3 kms 2 dc2 127.0.0.1 0 1 1 1 5 6 3 4 6 0 0 0 - 8002 - 0 0 - - 0",
        "",
    ]
)


def test_lb_view_serving_server():
    states = parse_servers_state(STATE)
    stats = {"dc1": {"status": "UP", "check_status": "L7OK"}, "dc2": {"status": "MAINT", "check_status": "L7STS"}}
    view = site_data.lb_view("lb1", states, stats, "kms")
    assert view["serving"] == ["dc1"]
    assert view["servers"]["dc2"]["state"] == "maint"
    down = site_data.lb_view("lb1", states, {"dc1": {"status": "DOWN"}}, "kms")
    assert down["serving"] == []


# -- reports -------------------------------------------------------------------------------------------------------
def test_status_rendering_side_by_side_and_findings():
    sums = [
        decisions.site_summary(site("dc1", "dc2", kms_replicas=0), NOW),
        decisions.site_summary(site("dc2", "dc2"), NOW),
    ]
    servers = {"dc1": {"state": "maint", "status": "MAINT"}, "dc2": {"state": "ready", "status": "UP"}}
    lb = [
        {"name": "lb1", "reachable": True, "servers": servers, "serving": ["dc2"]},
        {"name": "lb2", "reachable": False, "error": "connection refused", "servers": {}, "serving": []},
    ]
    text = reports.render_status(sums, lb, "2026-11-29T13:00:00Z")
    assert "| | dc1 | dc2 |" in text.replace("|  |", "| |")
    assert "SERVING (ready, UP)" in text and "UNREACHABLE: connection refused" in text
    assert "Active site (from the Clusters): dc2." in text
    assert "site_role is stale for dc1, dc2" in text
    assert "Load balancers send traffic to: dc2." in text


def test_status_shows_the_replica_s_newest_replayed_commit_and_no_timeline_yet():
    replica = dict(site("dc2", timeline=None), replayed_commit_time=times.format_time(ago(12)))
    rows = {
        row[0]: row[1:]
        for row in reports.status_rows([decisions.site_summary(site("dc1"), NOW), decisions.site_summary(replica, NOW)])
    }
    assert rows["Newest replayed transaction"][0] == "- (primary)"
    assert rows["Newest replayed transaction"][1].startswith("12s ago (")
    assert rows["Timeline"][1] == "-"
    unread = reports.status_rows([decisions.site_summary(site("dc2"), NOW)])
    assert dict((row[0], row[1]) for row in unread)["Newest replayed transaction"].startswith("none read")


PRIMARY_SQL = {
    "in_recovery": False,
    "now": "2026-11-29T13:00:00Z",
    "current_lsn": "0/7000110",
    "receive_lsn": None,
    "replay_lsn": None,
    "replay_gap_bytes": None,
    "replay_time": None,
    "replay_lag_seconds": None,
    "archived_count": 6,
    "last_archived_wal": "000000010000000000000006",
    "last_archived_time": "2026-11-29T12:59:18Z",
    "last_archived_age_seconds": 42.3,
    "failed_count": 0,
    "last_failed_wal": None,
    "last_failed_time": None,
    "last_failed_age_seconds": None,
}
REPLICA_SQL = dict(
    PRIMARY_SQL,
    in_recovery=True,
    current_lsn=None,
    receive_lsn="0/7000000",
    replay_lsn="0/6000060",
    replay_gap_bytes=16777120,
    replay_time="2026-11-29T12:59:55Z",
    replay_lag_seconds=5.9,
)


def sql_rows(*statuses):
    return {row[0]: row[1:] for row in reports.status_rows([decisions.site_summary(s, NOW) for s in statuses])}


def test_status_shows_the_archiver_and_the_replay_read_over_sql():
    rows = sql_rows(
        dict(site("dc1"), sql={"error": None, "state": PRIMARY_SQL}),
        dict(site("dc2"), sql={"error": None, "state": REPLICA_SQL}),
    )
    assert rows["WAL archiver (SQL)"] == [
        "000000010000000000000006 42s ago; 0 failed",
        "000000010000000000000006 42s ago; 0 failed",
    ]
    assert rows["Replay (SQL)"] == [
        "- (not in recovery, WAL at 0/7000110)",
        "in recovery, replayed 0/6000060, received 0/7000000, lag 5s",
    ]


def test_a_replica_that_replayed_nothing_and_sql_unread_or_unreadable():
    idle = dict(
        REPLICA_SQL,
        replay_time=None,
        replay_lag_seconds=None,
        receive_lsn=None,
        last_archived_wal=None,
        last_archived_age_seconds=None,
    )
    rows = sql_rows(
        dict(site("dc2"), sql={"error": None, "state": idle}),
        dict(site("dc2"), sql={"error": "TLS verification failed at kms/kms-pg-dc2-1: ..."}),
        site("dc2"),
    )
    assert rows["Replay (SQL)"] == [
        "in recovery, replayed 0/6000060, nothing replayed yet",
        "UNREADABLE: TLS verification failed at kms/kms-pg-dc2-1: ...",
        "not read",
    ]
    assert rows["WAL archiver (SQL)"][0] == "none archived; 0 failed"


@pytest.mark.parametrize(
    "failed_age, failing",
    [(10.0, True), (90.0, False)],  # the newest attempt failed / a failure before the newest success
)
def test_wal_archiving_fails_when_its_newest_attempt_failed(failed_age, failing):
    state = dict(
        PRIMARY_SQL, failed_count=3, last_failed_wal="000000010000000000000007", last_failed_age_seconds=failed_age
    )
    summary = decisions.site_summary(dict(site("dc1"), sql={"error": None, "state": state}), NOW)
    assert summary["sql"]["archiver"]["failing"] is failing
    cell = sql_rows(dict(site("dc1"), sql={"error": None, "state": state}))["WAL archiver (SQL)"][0]
    assert cell.startswith("000000010000000000000006 42s ago; 3 failed, last 000000010000000000000007 ")
    assert cell.endswith(" (FAILING)") is failing
    found = " ".join(decisions.status_findings([summary]))
    assert ("WAL archiving FAILS in dc1: the newest attempt, 000000010000000000000007" in found) is failing


def test_status_findings_split_brain_and_unreachable():
    sums = [
        decisions.site_summary(site("dc1", "dc1"), NOW),
        decisions.site_summary(site("dc2", "dc2"), NOW),
        decisions.site_summary(site("dc3", reachable=False), NOW),
    ]
    found = " ".join(decisions.status_findings(sums))
    assert "SPLIT BRAIN" in found and "dc3 is UNREACHABLE" in found


def test_one_write_records_a_step_s_end_and_the_next_step_s_start():
    report = {}
    reports.update_report(report, {"operation": "failover", "next_step": "preflight"}, NOW)
    later = NOW + datetime.timedelta(seconds=3)
    reports.update_report(
        report, {"operation": "failover", "step": "preflight", "result": "ok", "next_step": "confirm"}, later
    )
    assert [(s["name"], s["result"], s["started"]) for s in report["steps"]] == [
        ("preflight", "ok", "2026-11-29T13:00:00Z"),
        ("confirm", "running", "2026-11-29T13:00:03Z"),
    ]
    assert report["steps"][0]["seconds"] == 3.0


def test_status_findings_split_brain_names_the_timelines_and_the_lb_s_site():
    sums = [
        decisions.site_summary(site("dc1", "dc1", timeline=1), NOW),
        decisions.site_summary(site("dc2", "dc2", timeline=2), NOW),
    ]
    lb = [{"name": "lb1", "reachable": True, "servers": {}, "serving": ["dc2"]}]
    found = " ".join(decisions.status_findings(sums, lb))
    assert "SPLIT BRAIN" in found and "dc1 on timeline 1, dc2 on timeline 2" in found
    assert "fence the other one now (the failover to dc2, run again" in found
    assert "Active site" not in found


def test_status_findings_a_fenced_old_primary_is_reported_diverged_not_split_brain():
    sums = [
        decisions.site_summary(site("dc1", "dc1", timeline=1, fenced=True, kms_replicas=0), NOW),
        decisions.site_summary(site("dc2", "dc2", timeline=2), NOW),
    ]
    found = decisions.status_findings(sums, [{"name": "lb1", "reachable": True, "servers": {}, "serving": ["dc2"]}])
    text = " ".join(found)
    assert "SPLIT BRAIN" not in text
    assert "Active site (from the Clusters): dc2." in found
    assert (
        "dc1 is an old primary, FENCED (its Cluster is still a primary, timeline 1, its instances stopped); dc2 "
        "was promoted on timeline 2"
    ) in text
    assert "Re-create dc1's Cluster as a replica of dc2" in text
    assert "Load balancers send traffic to: dc2." in found


def test_report_steps_timings_and_failure():
    report = {}
    t0 = NOW
    reports.update_report(
        report,
        {
            "operation": "failover",
            "update": {"target": "dc2", "old_site": "dc1"},
            "sites": [site("dc1"), site("dc2")],
            "snapshot": "before",
        },
        t0,
    )
    reports.update_report(report, {"operation": "failover", "step": "preflight", "result": "running"}, t0)
    reports.update_report(
        report,
        {"operation": "failover", "step": "preflight", "result": "ok", "detail": "go"},
        t0 + datetime.timedelta(seconds=2),
    )
    reports.update_report(
        report, {"operation": "failover", "step": "promote", "result": "running"}, t0 + datetime.timedelta(seconds=3)
    )
    reports.update_report(
        report,
        {"operation": "failover", "finish": "failed", "update": {"error": "boom"}},
        t0 + datetime.timedelta(seconds=10),
    )
    assert [s["result"] for s in report["steps"]] == ["ok", "failed"]
    assert report["steps"][0]["seconds"] == 2.0 and report["steps"][1]["seconds"] == 7.0
    assert report["result"] == "failed" and report["finished"] == "2026-11-29T13:00:10Z"
    assert [s["site"] for s in report["sites_before"]] == ["dc1", "dc2"]
    text = reports.render(report)
    assert text.startswith("# Hanzo KMS failover: dc1 -> dc2")
    assert "**FAILED**" in text and "| promote | failed |" in text and "boom" in text
    assert json.loads(reports.dumps(report))["steps"][0]["detail"] == "go"


def test_report_data_loss_lines():
    report = {
        "operation": "failover",
        "target": "dc2",
        "old_site": "dc1",
        "steps": [],
        "data_loss": decisions.preflight("failover", "dc2", [site("dc1", reachable=False), site("dc2")], NOW)[
            "data_loss"
        ],
    }
    text = reports.render_report(report)
    assert "PostgreSQL: about 30s, not a guarantee — APPROXIMATE" in text and "Redis: at most 10m 00s" in text
    report["data_loss"] = decisions.preflight(
        "failover",
        "dc2",
        [site("dc1", reachable=False), dict(site("dc2"), replayed_commit_time=times.format_time(ago(40)))],
        NOW,
    )["data_loss"]
    assert "PostgreSQL: at most 40s — dc2 has replayed every transaction" in reports.render_report(report)


def test_a_step_rerun_gets_a_new_entry():
    report = {}
    for result in ("running", "failed", "running", "ok"):
        reports.update_report(report, {"operation": "switchover", "step": "promote", "result": result}, NOW)
    assert [s["result"] for s in report["steps"]] == ["failed", "ok"]


def test_step_result_is_validated():
    with pytest.raises(ValueError):
        reports.step_update({}, "x", "exploded")


# -- report files (issue 14 item 8) ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "mode, expected", [("0600", 0o600), ("0640", 0o640), ("640", 0o640), (0o644, 0o644), (416, 0o640), ("0o600", 0o600)]
)
def test_parse_mode(mode, expected):
    assert reports.parse_mode(mode) == expected


@pytest.mark.parametrize("mode", ["rw-r-----", "0999", "", True, 0o1777, "u=rw"])
def test_parse_mode_rejects(mode):
    with pytest.raises(ValueError, match="mode"):
        reports.parse_mode(mode)


def test_report_files_get_the_mode_whatever_the_umask(tmp_path):
    path = tmp_path / "switchover-dc2.json"
    old = os.umask(0)
    try:
        assert reports.write_report_file(str(path), "one\n") is True
        assert path.stat().st_mode & 0o777 == 0o600
        assert reports.write_report_file(str(path), "two\n", 0o640) is True
        assert path.stat().st_mode & 0o777 == 0o640
        # an unchanged report left 0644 by an older version is narrowed
        path.chmod(0o644)
        assert reports.write_report_file(str(path), "two\n") is False
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report-")]


def test_the_report_and_the_preflight_import_neither_kubernetes_nor_boto3():
    """Every step of a failover writes its report through this file: the kubernetes client and boto3 cost about a
    second per module run on a loaded control node (tests/benchmarks/bench_module_runs.py), so only the site-data
    reads import them, when called."""
    code = (
        "import sys; import ansible_collections.hanzo.kms.plugins.module_utils.operations; "
        "print(sorted({'kubernetes', 'boto3', 'botocore'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    ).stdout
    assert out.strip() == "[]"
