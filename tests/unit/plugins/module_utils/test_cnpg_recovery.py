"""module_utils/cnpg_recovery.py: the recovery window from the ObjectStore and Backups, the target checks done before
anything is created (time, LSN, restore point with the backupID CNPG requires), the recovered Cluster's manifest,
the timeline history, the record and the report."""

from __future__ import annotations

import datetime
import re

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import cnpg_recovery as cr

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 12, 4, 16, 0, tzinfo=UTC)


def backup(name, backup_id, stopped, end_lsn, server="kms-pg-dc1", phase="completed"):
    return {
        "metadata": {"name": name},
        "spec": {"cluster": {"name": server}},
        "status": {
            "phase": phase,
            "backupId": backup_id,
            "serverName": server,
            "startedAt": stopped.replace(":00Z", ":00Z"),
            "stoppedAt": stopped,
            "beginLSN": "0/2000028",
            "endLSN": end_lsn,
        },
    }


BACKUPS = [
    backup("b-new", "20261204T150000", "2026-12-04T15:00:00Z", "0/9000100"),
    backup("b-old", "20261203T150000", "2026-12-03T15:00:00Z", "0/5000100"),
    backup("b-failed", "20261204T153000", "2026-12-04T15:30:00Z", "0/A000100", phase="failed"),
    backup("b-dc2", "20261204T151000", "2026-12-04T15:10:00Z", "0/9000200", server="kms-pg-dc2"),
]
STORE = {
    "spec": {"configuration": {"destinationPath": "s3://kms-backups/cnpg/dc1/"}},
    "status": {
        "serverRecoveryWindow": {
            "kms-pg-dc1": {
                "firstRecoverabilityPoint": "2026-12-03T15:00:05Z",
                "lastSuccessfulBackupTime": "2026-12-04T15:00:00Z",
            }
        }
    },
}


@pytest.fixture
def window():
    return cr.recovery_window(STORE, BACKUPS, "kms-pg-dc1")


def test_the_window_is_the_object_stores_and_the_completed_backups_of_that_server_oldest_first(window):
    assert [b["backup_id"] for b in window["backups"]] == ["20261203T150000", "20261204T150000"]
    assert window["first_recoverability_point"] == datetime.datetime(2026, 12, 3, 15, 0, 5, tzinfo=UTC)
    assert window["first_recoverability_point_from"] == "ObjectStore"
    public = cr.public_window(window)
    assert public["first_recoverability_point"] == "2026-12-03T15:00:05Z"
    assert public["last_successful_backup"] == "2026-12-04T15:00:00Z"


def test_without_the_plugins_window_the_oldest_completed_backup_bounds_it():
    window = cr.recovery_window({}, BACKUPS, "kms-pg-dc1")
    assert window["first_recoverability_point"] == datetime.datetime(2026, 12, 3, 15, 0, tzinfo=UTC)
    assert window["first_recoverability_point_from"] == "Backups"


def target(window, **kwargs):
    return cr.recovery_target(window, now=NOW, **kwargs)


@pytest.mark.parametrize(
    "given, wanted",
    [
        ("2026-12-04T15:30:00Z", "2026-12-04T15:30:00.000000Z"),
        ("2026-12-04T16:30:00.25+01:00", "2026-12-04T15:30:00.250000Z"),
        ("2026-12-04 15:30:00+00", "2026-12-04T15:30:00.000000Z"),
    ],
)
def test_a_time_with_a_zone_in_the_window_becomes_a_utc_target_time(window, given, wanted):
    result = target(window, target_time=given)
    assert result["recovery_target"] == {"targetTime": wanted}
    assert result["kind"] == "time"
    # the base backup CNPG will pick: the newest completed one that ended before the target
    assert result["backup"]["backup_id"] == "20261204T150000"


@pytest.mark.parametrize(
    "given, problem",
    [
        ("2026-12-04T15:30:00", "has no time zone"),
        ("yesterday Z", "is not an ISO 8601 time"),
        ("2026-12-04T16:00:01Z", "is in the future (now 2026-12-04T16:00:00Z)"),
        ("2026-12-03T15:00:04Z", "is before the earliest recoverable point 2026-12-03T15:00:05Z"),
    ],
)
def test_a_time_without_zone_in_the_future_or_before_the_window_is_refused(window, given, problem):
    with pytest.raises(cr.RecoveryTargetError, match=re.escape(problem)):
        target(window, target_time=given)


def test_an_lsn_target_is_checked_for_form_and_against_the_oldest_backups_end(window):
    assert target(window, target_lsn="0/9abcdef")["recovery_target"] == {"targetLSN": "0/9ABCDEF"}
    assert target(window, target_lsn="0/9abcdef")["backup"]["backup_id"] == "20261204T150000"
    assert target(window, target_lsn="0/6000000")["backup"]["backup_id"] == "20261203T150000"
    with pytest.raises(cr.RecoveryTargetError, match="is not of the form X/Y"):
        target(window, target_lsn="9ABCDEF")
    with pytest.raises(cr.RecoveryTargetError, match=r"before the end of the oldest base backup \(20261203T150000"):
        target(window, target_lsn="0/5000000")


def test_a_restore_point_gets_the_backup_id_cnpg_requires(window):
    result = target(window, target_name="before-migration")
    assert result["recovery_target"] == {"targetName": "before-migration", "backupID": "20261204T150000"}
    chosen = target(window, target_name="before-migration", backup_id="20261203T150000", exclusive=True)
    assert chosen["recovery_target"] == {
        "targetName": "before-migration",
        "backupID": "20261203T150000",
        "exclusive": True,
    }
    with pytest.raises(cr.RecoveryTargetError, match="is not a completed Backup of server kms-pg-dc1"):
        target(window, target_name="x", backup_id="20261204T153000")  # the failed one
    with pytest.raises(cr.RecoveryTargetError, match="longer than 63 bytes"):
        target(window, target_name="x" * 64)
    with pytest.raises(cr.RecoveryTargetError, match="control characters"):
        target(window, target_name="a\nb")


def test_a_restore_point_without_any_backup_object_asks_for_the_backup_id():
    window = cr.recovery_window(STORE, [], "kms-pg-dc1")
    with pytest.raises(cr.RecoveryTargetError, match="CNPG requires backupID with targetName"):
        target(window, target_name="x")


def test_a_given_backup_must_end_before_a_time_or_lsn_target(window):
    with pytest.raises(cr.RecoveryTargetError, match="ended at 2026-12-04T15:00:00Z, after the target time"):
        target(window, target_time="2026-12-04T14:00:00Z", backup_id="20261204T150000")
    assert target(window, target_lsn="0/9000200", backup_id="20261204T150000")["recovery_target"] == {
        "targetLSN": "0/9000200",
        "backupID": "20261204T150000",
    }


@pytest.mark.parametrize(
    "kwargs, got",
    [({}, "none"), ({"target_time": "2026-12-04T15:30:00Z", "target_lsn": "0/1"}, "lsn, time")],
)
def test_exactly_one_target(window, kwargs, got):
    with pytest.raises(cr.RecoveryTargetError, match=f"give exactly one recovery target.*got {got}"):
        target(window, **kwargs)


def test_nothing_to_recover_from_is_refused():
    with pytest.raises(cr.RecoveryTargetError, match="has no completed base backup"):
        target(cr.recovery_window({}, [], "kms-pg-dc1"), target_time="2026-12-04T15:30:00Z")


def test_the_recovered_cluster_reads_the_source_archive_through_the_plugin_and_archives_nothing():
    manifest = cr.recovered_cluster(
        "kms-pg-pitr",
        "kms",
        "kms-pg-dc1",
        {"hanzo.kms/pitr": "true"},
        storage={"size": "2Gi", "storageClass": ""},
        image_name="ghcr.io/cloudnative-pg/postgresql:15",
        recovery_target_spec={"targetName": "x", "backupID": "b"},
    )
    assert manifest["metadata"] == {
        "name": "kms-pg-pitr",
        "namespace": "kms",
        "labels": {
            "app.kubernetes.io/part-of": "hanzo-kms",
            "app.kubernetes.io/managed-by": "hanzo.kms",
            "hanzo.kms/pitr": "true",
        },
    }
    spec = manifest["spec"]
    assert "plugins" not in spec and "backup" not in spec
    assert spec["bootstrap"] == {
        "recovery": {"source": "kms-pg-dc1", "recoveryTarget": {"targetName": "x", "backupID": "b"}}
    }
    assert spec["externalClusters"] == [
        {
            "name": "kms-pg-dc1",
            "plugin": {
                "name": "barman-cloud.cloudnative-pg.io",
                "parameters": {"barmanObjectName": "kms-pg-dc1-store", "serverName": "kms-pg-dc1"},
            },
        }
    ]
    assert spec["storage"] == {"size": "2Gi"} and spec["enableSuperuserAccess"] is True
    assert spec["imageName"] == "ghcr.io/cloudnative-pg/postgresql:15" and spec["instances"] == 1
    plain = cr.recovered_cluster("r", "kms", "kms-pg-dc2", {}, object_store="other", server_name="kms-pg-dc2-b")
    assert "recoveryTarget" not in plain["spec"]["bootstrap"]["recovery"]
    assert "storage" not in plain["spec"] and "imageName" not in plain["spec"]
    assert plain["spec"]["externalClusters"][0]["plugin"]["parameters"] == {
        "barmanObjectName": "other",
        "serverName": "kms-pg-dc2-b",
    }


def test_the_timeline_history_says_where_each_recovery_ended():
    text = '1\t0/9000190\tbefore 2026-12-04 15:30:00.25+00\n\n2\t0/A0000A0\tat restore point "x"\n'
    assert cr.timeline_history(text) == [
        {"parent_timeline": 1, "switch_lsn": "0/9000190", "reason": "before 2026-12-04 15:30:00.25+00"},
        {"parent_timeline": 2, "switch_lsn": "0/A0000A0", "reason": 'at restore point "x"'},
    ]
    assert cr.timeline_history("") == []


HEALTHY = {
    "status": {
        "phase": "Cluster in healthy state",
        "conditions": [{"type": "Ready", "status": "True"}],
        "timelineID": 2,
        "systemID": "7",
    }
}


def test_the_record_passes_a_healthy_cluster_whose_tables_were_read():
    sql = {"tables": {"public.t": 3}, "recovery": {"timeline": 2, "reason": "before x"}}
    record = cr.recovery_record(
        HEALTHY,
        {"cluster": "kms-pg-pitr"},
        source={"status": {"systemID": "7"}},
        sql=sql,
        wait_timeout=60,
        requested="2026-12-04T15:59:00Z",
        now=NOW,
    )
    assert record["ok"] and record["healthy"] and record["tested"] and record["cluster"] == "kms-pg-pitr"
    assert record["message"] == "recovered and healthy" and record["seconds_to_healthy"] == 60
    assert record["tables"] == {"public.t": 3} and record["recovery_end"]["reason"] == "before x"
    assert record["system_id"] == record["source_system_id"] == "7" and record["timeline"] == 2


def test_the_record_fails_an_unhealthy_or_unread_cluster_and_says_why():
    stuck = {"status": {"phase": "Setting up primary", "phaseReason": "recovering"}}
    record = cr.recovery_record(stuck, {"database": "kms"}, wait_timeout=60, now=NOW)
    assert not record["ok"] and record["message"] == "not healthy after 60 s: phase Setting up primary (recovering)"
    assert cr.recovery_record(None, wait_timeout=5)["message"].startswith("not healthy after 5 s: phase none")
    unread = cr.recovery_record(HEALTHY, {"database": "kms"}, sql={"failed": True, "msg": "no such database"})
    assert not unread["ok"]
    assert (
        unread["message"] == "recovered and healthy, but its tables could not be read in database kms: no such database"
    )
    assert cr.recovery_record(None, check_mode=True)["ok"] is True


def test_the_report_says_the_target_the_backup_and_where_the_recovery_ended():
    report = cr.recovery_record(
        HEALTHY,
        {"cluster": "kms-pg-pitr", "source_cluster": "kms-pg-dc1"},
        sql={
            "tables": {"public.t": 3},
            "recovery": {"timeline": 2, "switch_lsn": "0/9000190", "reason": "before 2026-12-04 15:30:00+00"},
        },
    )
    report.update(
        target={"targetTime": "2026-12-04T15:30:00.000000Z"},
        backup={"backup_id": "B", "stopped": "s"},
        site="dc1",
        database="kms",
    )
    text = cr.render_report(report)
    assert text.startswith("# Point-in-time recovery of kms-pg-dc1: OK\n")
    assert "| target | targetTime `2026-12-04T15:30:00.000000Z` |" in text
    assert "| recovery ended | timeline 2, switched at LSN 0/9000190: before 2026-12-04 15:30:00+00 |" in text
    assert "| base backup | `B` (ended s, LSN ) |" in text
    assert "| public.t | 3 |" in text
