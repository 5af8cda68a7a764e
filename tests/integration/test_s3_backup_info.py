"""hanzo.kms.s3_backup_info against the lab's real S3 server (SeaweedFS) and a real Redis.

A fresh bucket per test holds a backup taken by redis_backup (the code of hanzo.kms.redis_rdb_backup) from a lab
Redis, older ones written with the backup_layout functions, incomplete ones (no manifest; a manifest whose size is not
the RDB's) and a key outside the layout. The listing must say which are complete and why the others are not, read the
manifests, and name each site's newest complete backup; an empty prefix lists nothing; the real module runs through
``ansible localhost``.
"""

from __future__ import annotations

import datetime
import hashlib
import uuid

import pytest

# pylint: disable=wrong-import-position,redefined-outer-name
from ansible_collections.hanzo.kms.plugins.module_utils import backup_layout as bl  # noqa: E402
from ansible_collections.hanzo.kms.plugins.module_utils import redis_backup
from ansible_collections.hanzo.kms.plugins.module_utils.s3 import S3Error, s3_client  # noqa: E402
from ansible_collections.hanzo.kms.plugins.module_utils.s3_backup_info import list_backups  # noqa: E402
from tests.integration.test_s3_retention import bucket, client, conn, run_module  # noqa: F401  pylint: disable=unused-import
from tests.lab import redis as lab_redis

UTC = datetime.timezone.utc
RDB = b"REDIS0011" + b"\xff" + b"\x00" * 8  # the bytes only: the listing never parses an RDB


@pytest.fixture(scope="module")
def redis_entry(lab_handle):
    entry = lab_redis.up(lab_handle, f"backup-info-{uuid.uuid4().hex[:6]}")
    lab_redis.client(entry).mset({f"info:{i}": str(i) for i in range(25)})
    return entry


def put_backup(s3, bucket_name, site, when, rdb=RDB, manifest=True, manifest_size=None):
    """A backup written with the layout's functions; ``manifest_size`` records a wrong size in the manifest."""
    rdb_key, manifest_key = bl.backup_keys("redis", site, when)
    s3.put_object(Bucket=bucket_name, Key=rdb_key, Body=rdb)
    if manifest:
        body = bl.encode_manifest(
            bl.build_manifest(
                timestamp=when,
                size=len(rdb) if manifest_size is None else manifest_size,
                sha256=hashlib.sha256(rdb).hexdigest(),
                rdb_version=11,
                keys_per_db=None,
                source={"site": site},
            )
        )
        s3.put_object(Bucket=bucket_name, Key=manifest_key, Body=body)
    return bl.backup_prefix("redis", site, when)


def take_backup(conn, bucket_name, entry, site):
    """A real backup of the lab Redis ``entry`` under redis/<site>/ (the code of hanzo.kms.redis_rdb_backup)."""
    params = dict(conn, host=entry["host"], port=entry["port"], password=entry["password"], bucket=bucket_name)
    return redis_backup.run_backup(dict(params, prefix="redis", site=site), s3_client_factory=lambda: s3_client(conn))


def utcnow():
    return datetime.datetime.now(UTC).replace(microsecond=0)


def test_complete_incomplete_and_newest_per_site(conn, client, bucket, redis_entry):
    start = utcnow()
    taken = take_backup(conn, bucket, redis_entry, "dc1")
    taken_prefix = taken["key"].rsplit("/", 1)[0] + "/"
    older = put_backup(client, bucket, "dc1", start - datetime.timedelta(days=1))
    # newer than the real backup but without its manifest: in progress or abandoned
    unfinished = put_backup(client, bucket, "dc1", start + datetime.timedelta(hours=1), manifest=False)
    wrong_size = put_backup(client, bucket, "dc2", start - datetime.timedelta(hours=2), manifest_size=len(RDB) + 1)
    client.put_object(Bucket=bucket, Key="redis/dc1/README.txt", Body=b"not a backup")

    result = list_backups(client, bucket, "redis", now=start + datetime.timedelta(hours=2))
    by_prefix = {b["prefix"]: b for b in result["backups"]}
    assert [b["prefix"] for b in result["backups"]] == [unfinished, taken_prefix, older, wrong_size]
    assert result["unrecognised"] == ["redis/dc1/README.txt"]

    real = by_prefix[taken_prefix]
    assert real["complete"] and real["incomplete_reason"] is None and real["objects"] == 2
    assert real["manifest"]["keys_per_db"] == {"0": 25} and real["manifest"]["source"]["site"] == "dc1"
    assert real["rdb_size"] == taken["size"] == real["manifest"]["size"]
    assert real["size"] > real["rdb_size"] and real["rdb_key"] == taken["key"]
    assert 7200 - 300 <= real["age_seconds"] <= 7200
    assert by_prefix[older]["complete"] and by_prefix[older]["manifest"]["keys"] is None
    assert by_prefix[older]["age_seconds"] == 26 * 3600
    assert by_prefix[unfinished]["incomplete_reason"] == f"{unfinished} has no manifest.json"
    assert (by_prefix[unfinished]["manifest_key"], by_prefix[unfinished]["manifest"]) == (None, None)
    assert by_prefix[wrong_size]["incomplete_reason"] == (
        f"{wrong_size}dump.rdb has {len(RDB)} bytes but its manifest says {len(RDB) + 1}"
    )

    assert result["sites"]["dc1"] == {"backups": 3, "complete": 2, "incomplete": 1, "newest": real}
    assert result["sites"]["dc2"] == {"backups": 1, "complete": 0, "incomplete": 1, "newest": None}

    # without reading the manifests the listing decides: the wrong size goes unnoticed, and no manifest is returned
    listed = list_backups(client, bucket, "/redis/", sites=["dc2"], read_manifests=False)
    assert [(b["prefix"], b["complete"], b["manifest"]) for b in listed["backups"]] == [(wrong_size, True, None)]
    assert list(listed["sites"]) == ["dc2"] and listed["unrecognised"] == []


def test_an_empty_prefix_lists_nothing(client, bucket):
    put_backup(client, bucket, "dc1", utcnow())
    assert list_backups(client, bucket, "redis-elsewhere")["backups"] == []
    result = list_backups(client, bucket, "redis-elsewhere", sites=["dc1", "dc2"])
    assert result["backups"] == [] and result["unrecognised"] == []
    assert result["sites"] == {
        site: {"backups": 0, "complete": 0, "incomplete": 0, "newest": None} for site in ("dc1", "dc2")
    }


def test_the_module_lists_in_check_mode_and_fails_clearly(conn, client, bucket):
    now = utcnow()
    newest = put_backup(client, bucket, "dc1", now - datetime.timedelta(minutes=5))
    put_backup(client, bucket, "dc1", now - datetime.timedelta(minutes=10))
    for check in (False, True):
        result = run_module(
            dict(conn, bucket=bucket, sites=["dc1", "dc3"]), check=check, module="hanzo.kms.s3_backup_info"
        )
        assert result["changed"] is False and not result.get("failed"), result
        assert result["sites"]["dc1"]["newest"]["prefix"] == newest and result["sites"]["dc1"]["complete"] == 2
        assert result["sites"]["dc3"]["newest"] is None
        assert conn["secret_key"] not in str(result)
    missing = run_module(dict(conn, bucket=f"missing-{uuid.uuid4().hex[:8]}"), module="hanzo.kms.s3_backup_info")
    assert missing.get("failed") and "does not exist" in missing["msg"], missing
    with pytest.raises(S3Error, match="does not exist"):
        list_backups(client, f"missing-{uuid.uuid4().hex[:8]}", "redis")
