"""The verdict of a Redis restore test (module_utils/redis_restore_test.py) and the filter that hands it to the role."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.hanzo.kms.plugins.filter.redis_restore_test import redis_restore_test_result
from ansible_collections.hanzo.kms.plugins.module_utils.redis_restore_test import (
    COUNTS_FROM_MANIFEST,
    COUNTS_FROM_RDB,
    compare_counts,
    failed_record,
    restore_test_record,
)

BACKUP = {
    "prefix": "redis/dc1/20261204T050000Z/",
    "time": "2026-12-04T05:00:00Z",
    "age_seconds": 120,
    "rdb_key": "redis/dc1/20261204T050000Z/dump.rdb",
    "manifest": {"keys_per_db": {"0": 150, "2": 3}, "keys": 153},
}
RESTORED = {
    "target_keys_after": {"0": 148, "2": 3},
    "keys_expired": {"0": 2},
    "backup_keys_per_db": {"0": 150, "2": 3},
    "target_version": "8.2.1",
    "rdb_version": 12,
    "sha256": "ab" * 32,
    "duration": 0.4,
}
TARGET = {"host": "127.0.0.1", "port": 41873, "password": "not reported"}


def test_restored_plus_expired_keys_must_equal_the_manifest_per_db_in_numeric_order():
    rows = compare_counts({"10": 1, "2": 5, 0: 7}, {"0": 7, "2": 4, "10": 1, "3": 1}, {2: 1})
    assert [row["db"] for row in rows] == ["0", "2", "3", "10"]
    assert [row["match"] for row in rows] == [True, True, False, True]
    assert rows[2] == {
        "db": "3",
        "manifest": 0,
        "restored": 1,
        "expired": 0,
        "match": False,
        "text": "db3: manifest 0, restored 1, expired 0",
    }


def test_a_restore_matching_the_manifest_passes_and_reports_what_was_restored_where():
    record = restore_test_record(BACKUP, RESTORED, "local", TARGET)
    assert record["ok"] is True and record["tested"] is True
    assert record["message"] == "key counts match the manifest"
    assert record["counts_from"] == COUNTS_FROM_MANIFEST and record["manifest_keys"] == 153
    assert record["target"] == "local 127.0.0.1:41873" and "not reported" not in str(record)
    assert (record["backup"], record["backup_time"], record["backup_age_seconds"]) == (
        BACKUP["prefix"],
        BACKUP["time"],
        120,
    )
    assert (record["target_version"], record["rdb_version"], record["duration"]) == ("8.2.1", 12, 0.4)
    assert [row["expired"] for row in record["counts"]] == [2, 0]


def test_a_missing_key_fails_naming_the_db_and_its_counts():
    record = restore_test_record(BACKUP, dict(RESTORED, target_keys_after={"0": 147, "2": 3}), "external", TARGET)
    assert record["ok"] is False
    assert record["message"] == "key counts differ from the manifest: db0: manifest 150, restored 147, expired 2"
    assert record["target"] == "external 127.0.0.1:41873"


def test_a_manifest_without_counts_is_compared_with_the_counts_read_from_the_rdb():
    backup = dict(BACKUP, manifest={"keys_per_db": None, "keys": None})
    record = restore_test_record(backup, dict(RESTORED, backup_keys_per_db={"0": 151, "2": 3}), "local", TARGET)
    assert record["counts_from"] == COUNTS_FROM_RDB
    assert record["ok"] is False and "db0: manifest 151, restored 148, expired 2" in record["message"]


def test_check_mode_passes_without_counts_and_says_what_would_be_restored():
    record = restore_test_record(BACKUP, {}, "local", {}, check_mode=True)
    assert record["ok"] is True and record["tested"] is False and record["counts"] == []
    assert record["message"] == f"check mode: would restore {BACKUP['prefix']}"
    assert record["target"] == "local"


def test_a_stopped_test_is_a_failure_with_its_message():
    assert failed_record("No complete Redis backup", None, "local", None) == {
        "ok": False,
        "tested": True,
        "message": "No complete Redis backup",
        "backup": "",
        "target": "local",
    }
    assert failed_record("", BACKUP, "external", TARGET)["message"] == "failed"
    assert failed_record("x", BACKUP, "external", TARGET)["backup"] == BACKUP["prefix"]


def test_the_filter_records_an_error_as_a_failure_and_refuses_a_record_without_a_backup():
    assert redis_restore_test_result({}, error="restore failed", mode="local")["ok"] is False
    assert redis_restore_test_result(BACKUP, RESTORED, "local", TARGET)["ok"] is True
    with pytest.raises(AnsibleFilterError, match="needs a backup of hanzo.kms.s3_backup_info"):
        redis_restore_test_result({}, RESTORED)
