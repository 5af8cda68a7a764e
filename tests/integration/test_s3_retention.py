"""hanzo.kms.s3_retention against the lab's real S3 server (SeaweedFS).

Each test works in its own fresh bucket. SeaweedFS 4.48 was verified to support what is tested here:
DeleteObjects with per-key errors in a 200 response (AccessDenied), its 1000-key limit, bucket versioning
(ListObjectVersions, delete markers, delete by VersionId) and Object Lock (legal hold / COMPLIANCE retention
-> AccessDenied per key). Most cases call module_utils directly; ``test_module_*`` run the real module through
``ansible localhost -m hanzo.kms.s3_retention``.
"""

from __future__ import annotations

import datetime
import json
import random
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".venv" / "collections"))

# pylint: disable=wrong-import-position
from ansible_collections.hanzo.kms.plugins.module_utils.backup_layout import TIMESTAMP_FORMAT  # noqa: E402
from ansible_collections.hanzo.kms.plugins.module_utils.s3 import S3Error, check_bucket, s3_client  # noqa: E402
from ansible_collections.hanzo.kms.plugins.module_utils.s3_backup_info import complete_backups  # noqa: E402
from ansible_collections.hanzo.kms.plugins.module_utils.s3_retention import (  # noqa: E402
    Policy,
    RetentionError,
    apply_policy,
    run_retention,
)
from tests import ansible_run  # noqa: E402

UTC = datetime.timezone.utc
FLOORS = {"newest complete backup", "most recently written complete backup"}


# ------------------------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def conn(lab):
    s3 = lab["s3"]
    return dict(
        endpoint_url=s3["endpoint_url"],
        region=s3["region"],
        access_key=s3["access_key"],
        secret_key=s3["secret_key"],
        addressing_style="path",
        ca_bundle=s3["ca_file"],
    )


@pytest.fixture(scope="module")
def client(conn):
    return s3_client(conn, max_pool_connections=16)


@pytest.fixture
def bucket(client):
    name = f"ret-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield name
    # SeaweedFS gives every bucket its own volumes; a lab reused across runs runs out of them unless buckets go.
    drop_bucket(client, name)


def drop_bucket(client, name):
    for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
        entries = page.get("Versions", []) + page.get("DeleteMarkers", [])
        if entries:
            client.delete_objects(
                Bucket=name,
                Delete=dict(Quiet=True, Objects=[dict(Key=e["Key"], VersionId=e["VersionId"]) for e in entries]),
            )
    client.delete_bucket(Bucket=name)


def ts(when):
    return when.strftime(TIMESTAMP_FORMAT)


def put_many(client, bucket, keys, body=b"x"):
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=body), keys))


def write_backups(client, bucket, prefix, site, times, complete=True):
    """Backups as the Redis modules write them: dump.rdb first, manifest.json last. The newest backup's manifest is
    written after every other one, so it is also the most recently written (LastModified has one-second resolution
    and a concurrent write of an older manifest could land a second later, making that backup a kept floor)."""
    folder = "/".join(p for p in (prefix, site) if p)
    put_many(client, bucket, [f"{folder}/{ts(t)}/dump.rdb" for t in times], b"REDIS0011")
    if complete:
        newest = max(times)
        manifest = json.dumps({"timestamp": "x"}).encode()
        put_many(client, bucket, [f"{folder}/{ts(t)}/manifest.json" for t in times if t != newest], manifest)
        client.put_object(Bucket=bucket, Key=f"{folder}/{ts(newest)}/manifest.json", Body=manifest)


def wait_for_next_server_second(client, bucket, versions=False):
    """LastModified has one-second resolution: poll until an object written now is strictly newer than every
    object already in the bucket (every version, with ``versions``)."""
    if versions:
        newest = max(v["LastModified"] for v in client.list_object_versions(Bucket=bucket).get("Versions", ()))
    else:
        newest = max(o["LastModified"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", ()))
    while True:
        stamp = client.put_object(Bucket=bucket, Key=".probe", Body=b"")
        del stamp
        if client.head_object(Bucket=bucket, Key=".probe")["LastModified"] > newest:
            client.delete_object(Bucket=bucket, Key=".probe")
            return


def all_keys(client, bucket, prefix=""):
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", ()))
    return sorted(keys)


def all_versions(client, bucket, prefix=""):
    out = []
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        out.extend((v["Key"], v["VersionId"], False) for v in page.get("Versions", ()))
        out.extend((m["Key"], m["VersionId"], True) for m in page.get("DeleteMarkers", ()))
    return out


def params(bucket, **kw):
    p = dict(
        bucket=bucket,
        prefix="redis",
        group_depth=1,
        time_source="key",
        min_keep=1,
        incomplete_grace="1d",
        delete_incomplete=True,
        purge_versions=False,
        concurrency=8,
    )
    p.update(kw)
    return p


def kept_names(result, group=None):
    return sorted(
        b["name"] for b in result["backups"] if b["action"] == "keep" and (group is None or b["group"] == group)
    )


# ------------------------------------------------------------------------------------------------ semantics


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_history_matches_policy_and_check_mode_is_exact(client, bucket, seed):
    rng = random.Random(seed)
    end = datetime.datetime(2026, 11, 20, tzinfo=UTC)
    histories = {}
    for site in ("dc1", "dc2"):
        times = set()
        while len(times) < 60:
            times.add(end - datetime.timedelta(minutes=rng.randrange(0, 200 * 24 * 60)))
        histories[site] = sorted(times, reverse=True)
        write_backups(client, bucket, "redis", site, histories[site])
    policy = dict(
        keep_last=rng.randint(0, 3),
        keep_daily=rng.randint(0, 7),
        keep_weekly=rng.randint(1, 5),
        keep_monthly=rng.choice([-1, 0, 3]),
        keep_within=rng.choice([None, "10d", "1m"]),
    )
    p = params(bucket, **policy)
    before = all_keys(client, bucket)
    plan = run_retention(client, p, check_mode=True)
    assert all_keys(client, bucket) == before, "check mode deleted something"
    assert plan["api_calls"] == {"ListObjectsV2": 1}
    for site, times in histories.items():
        reasons = apply_policy(
            times,
            Policy(
                last=policy["keep_last"],
                daily=policy["keep_daily"],
                weekly=policy["keep_weekly"],
                monthly=policy["keep_monthly"],
                within=policy["keep_within"],
            ),
            datetime.datetime.now(UTC),
        )
        want = sorted(ts(t) for t, r in zip(times, reasons) if r)
        by_rules = sorted(
            b["name"]
            for b in plan["backups"]
            if b["group"] == site
            and set(b["reasons"]) - FLOORS
            and not any(r.startswith("min_keep") for r in b["reasons"])
        )
        assert by_rules == want
        floors_only = set(kept_names(plan, site)) - set(want)
        assert len(floors_only) <= 1  # at most the most recently written one (all were written within seconds)
    done = run_retention(client, p)
    assert done["backups"] == plan["backups"], "the real run differs from the check-mode plan"
    assert not done["errors"] and done["changed"]
    remaining = sorted(set(k.split("/")[1] + "/" + k.split("/")[2] for k in all_keys(client, bucket)))
    assert remaining == sorted(b["group"] + "/" + b["name"] for b in plan["backups"] if b["action"] == "keep")
    again = run_retention(client, p)
    assert not again["changed"] and again["summary"]["deleted"] == 0


def test_floors_hold_under_clock_skew_and_future_timestamps(client, bucket):
    now = datetime.datetime.now(UTC)
    normal = [now - datetime.timedelta(days=d) for d in range(1, 8)]
    write_backups(client, bucket, "redis", "dc1", normal)
    future = now + datetime.timedelta(days=400)  # a host clock far ahead
    write_backups(client, bucket, "redis", "dc1", [future])
    behind = now - datetime.timedelta(days=3 * 365)  # the last backup written, by a host clock years behind
    wait_for_next_server_second(client, bucket)
    write_backups(client, bucket, "redis", "dc1", [behind])
    result = run_retention(client, params(bucket, keep_within="2d", min_keep=3))
    by_name = dict((b["name"], b) for b in result["backups"])
    assert by_name[ts(future)]["action"] == "keep" and "newest complete backup" in by_name[ts(future)]["reasons"]
    assert by_name[ts(behind)]["action"] == "keep"
    assert "most recently written complete backup" in by_name[ts(behind)]["reasons"]
    # keep_within ignores the future backup: the window is 2 days before the newest non-future backup
    assert "within 2d" in by_name[ts(normal[0])]["reasons"] and "within 2d" in by_name[ts(normal[1])]["reasons"]
    assert sum(1 for b in result["backups"] if b["action"] == "keep") >= 3
    remaining = set(k.split("/")[2] for k in all_keys(client, bucket))
    assert remaining == set(kept_names(result))


def test_min_keep_floor_when_rules_keep_little(client, bucket):
    now = datetime.datetime.now(UTC)
    times = [now - datetime.timedelta(hours=h) for h in range(10)]
    write_backups(client, bucket, "redis", "dc1", times)
    result = run_retention(client, params(bucket, keep_last=1, min_keep=4))
    assert kept_names(result) == sorted(ts(t) for t in times[:4])
    assert any(r.startswith("min_keep") for b in result["backups"] for r in b["reasons"])


def test_unrecognised_keys_are_never_deleted_and_incomplete_respect_grace(client, bucket):
    now = datetime.datetime.now(UTC)
    old = [now - datetime.timedelta(days=d) for d in range(2, 6)]
    write_backups(client, bucket, "redis", "dc1", old)
    stray = ["redis/README.md", "redis/dc1/latest/dump.rdb", "redis/dc1/notes.txt", f"other/dc1/{ts(old[-1])}/dump.rdb"]
    put_many(client, bucket, stray)
    # in progress (written now, no manifest yet): kept by the grace period although its name is old
    write_backups(client, bucket, "redis", "dc1", [now - datetime.timedelta(days=30)], complete=False)
    result = run_retention(client, params(bucket, keep_last=1))
    assert sorted(result["unrecognised"]) == sorted(k for k in stray if k.startswith("redis/"))
    for key in stray:
        assert key in all_keys(client, bucket)
    incomplete = [b for b in result["backups"] if not b["complete"]]
    assert len(incomplete) == 1 and incomplete[0]["action"] == "keep"
    # with no grace the abandoned incomplete backup goes
    result = run_retention(client, params(bucket, keep_last=1, incomplete_grace=""))
    assert [b["action"] for b in result["backups"] if not b["complete"]] == ["delete"]
    assert sorted(all_keys(client, bucket)) == sorted(
        stray + [f"redis/dc1/{ts(old[0])}/{n}" for n in ("dump.rdb", "manifest.json")]
    )


def test_empty_bucket_and_explicit_whole_bucket(client, bucket):
    result = run_retention(client, params(bucket, keep_last=1))
    assert not result["changed"] and result["backups"] == [] and result["unrecognised"] == []
    now = datetime.datetime.now(UTC)
    write_backups(client, bucket, "", "dc1", [now - datetime.timedelta(days=d) for d in range(3)])
    result = run_retention(client, params(bucket, prefix="", whole_bucket=True, keep_last=2))
    assert result["summary"]["deleted"] == 1 and len(all_keys(client, bucket)) == 4


# ------------------------------------------------------------------------------------------------ shared bucket (issue 14)

CNPG_KEYS = [
    "cnpg/dc1/wals/0000000100000000/000000010000000000000001.gz",
    "cnpg/dc1/wals/0000000100000000/000000010000000000000002.gz",
    "cnpg/dc1/wals/0000000100000000/000000010000000000000003.partial",
    "cnpg/dc1/base/20261201T000000/data.tar",
    "cnpg/dc1/base/20261201T000000/backup.info",
    "cnpg/dc10/wals/0000000100000000/000000010000000000000001.gz",
    "cnpg/dc10/base/20261201T000000/data.tar",
]


def seed_shared_bucket(client, bucket):
    """A bucket shared with CNPG's WAL archive, as the architecture lays it out, plus Redis backups of dc1 and dc10.

    Returns (every key, the keys of the Redis backups, the keys a keep_last=1 run with no grace deletes). Per site: an old
    and a new complete backup, an abandoned incomplete one (dump.rdb, no manifest); stray objects that are not backups
    of the layout: a manifest without its data, a timestamp directory without a dump.rdb, a non-timestamp directory
    holding a dump.rdb, a file inside the old backup's directory and a dump.rdb nested one level too deep.
    """
    old, new = datetime.datetime(2026, 10, 1, tzinfo=UTC), datetime.datetime(2026, 11, 1, tzinfo=UTC)
    incomplete, orphan = datetime.datetime(2026, 10, 15, tzinfo=UTC), datetime.datetime(2026, 9, 1, tzinfo=UTC)
    put_many(client, bucket, CNPG_KEYS)
    recognised, obsolete, stray = [], [], ["redis/README.md", "README.md", "redis-old/dc1/dump.rdb"]
    for site in ("dc1", "dc10"):
        for when in (old, new):  # written oldest first: LastModified and manifest times agree with the names
            base = f"redis/{site}/{ts(when)}/"
            client.put_object(Bucket=bucket, Key=base + "dump.rdb", Body=b"REDIS0011")
            client.put_object(
                Bucket=bucket,
                Key=base + "manifest.json",
                Body=json.dumps({"timestamp": when.isoformat(), "object": "dump.rdb"}).encode(),
            )
        recognised += [f"redis/{site}/{ts(when)}/{n}" for when in (old, new) for n in ("dump.rdb", "manifest.json")]
        obsolete += [f"redis/{site}/{ts(old)}/{n}" for n in ("dump.rdb", "manifest.json")]
        client.put_object(Bucket=bucket, Key=f"redis/{site}/{ts(incomplete)}/dump.rdb", Body=b"REDIS0011")
        recognised.append(f"redis/{site}/{ts(incomplete)}/dump.rdb")
        obsolete.append(f"redis/{site}/{ts(incomplete)}/dump.rdb")
        stray += [
            f"redis/{site}/{ts(orphan)}/manifest.json",
            f"redis/{site}/{ts(orphan - datetime.timedelta(days=1))}/notes.txt",
            f"redis/{site}/latest/dump.rdb",
            f"redis/{site}/{ts(old)}/notes.txt",
            f"redis/{site}/{ts(old)}/copy/dump.rdb",
        ]
    put_many(client, bucket, stray[:3])
    for key in stray[3:]:
        body = json.dumps({"timestamp": orphan.isoformat()}).encode() if key.endswith("manifest.json") else b"x"
        client.put_object(Bucket=bucket, Key=key, Body=body)
    return all_keys(client, bucket), sorted(recognised), sorted(obsolete)


# (prefix, whole_bucket, group_depth, whether the Redis backups match that layout): the reproduction (whole
# bucket, depth 1: no Redis backup matches), the whole bucket at the Redis depth, and the playbook's layout.
SHARED_LAYOUTS = [("", True, 1, False), ("", True, 2, True), ("redis", False, 1, True)]


@pytest.mark.parametrize("check", [True, False], ids=["check", "real"])
@pytest.mark.parametrize("time_source", ["key", "manifest", "last_modified"])
@pytest.mark.parametrize("layout", SHARED_LAYOUTS, ids=["whole-depth1", "whole-depth2", "redis-depth1"])
def test_shared_bucket_only_recognised_backups_are_deleted(client, bucket, layout, time_source, check):
    prefix, whole_bucket, depth, redis_matches = layout
    before, recognised, obsolete = seed_shared_bucket(client, bucket)
    expected_deleted = obsolete if redis_matches else []
    p = params(
        bucket,
        prefix=prefix,
        whole_bucket=whole_bucket,
        group_depth=depth,
        time_source=time_source,
        keep_last=1,
        incomplete_grace="",
    )
    result = run_retention(client, p, check_mode=check)
    assert not result["failed"] and not result["errors"]
    planned = sorted(b["prefix"] for b in result["backups"] if b["action"] == "delete")
    assert planned == sorted(set(k.rsplit("/", 1)[0] + "/" for k in expected_deleted)), result["backups"]
    assert result["changed"] == bool(expected_deleted)
    # every key under the prefix that is not in a recognised backup is reported, in check mode too
    in_backups = recognised if redis_matches else []
    listed = [k for k in before if k.startswith(prefix + "/" if prefix else "")]
    assert sorted(result["unrecognised"]) == sorted(k for k in listed if k not in in_backups)
    assert result["summary"]["unrecognised"] == len(result["unrecognised"])
    after = all_keys(client, bucket)
    if check:
        assert after == before, "check mode deleted something"
        assert result["summary"]["objects_deleted"] == len(expected_deleted)
    else:
        assert sorted(set(before) - set(after)) == expected_deleted
        assert result["summary"]["objects_deleted"] == len(expected_deleted)
        again = run_retention(client, p)
        assert not again["changed"] and all_keys(client, bucket) == after


@pytest.mark.parametrize("time_source", ["key", "manifest", "last_modified"])
@pytest.mark.parametrize("prefix", ["redis/dc1", "redis/dc1/"])
def test_site_prefix_never_matches_a_longer_site_name(client, bucket, time_source, prefix):
    """``redis/dc1`` is a directory boundary: the backups of ``dc10`` are neither listed nor deleted."""
    before, _recognised, obsolete = seed_shared_bucket(client, bucket)
    result = run_retention(
        client, params(bucket, prefix=prefix, group_depth=0, time_source=time_source, keep_last=1, incomplete_grace="")
    )
    assert all(b["prefix"].startswith("redis/dc1/") for b in result["backups"])
    assert all(k.startswith("redis/dc1/") for k in result["unrecognised"])
    after = all_keys(client, bucket)
    assert sorted(set(before) - set(after)) == [k for k in obsolete if k.startswith("redis/dc1/")]


@pytest.mark.parametrize("prefix", ["", "/", "//"])
def test_whole_bucket_prefix_needs_the_explicit_option(client, bucket, prefix):
    put_many(client, bucket, CNPG_KEYS)
    with pytest.raises(RetentionError, match="whole_bucket"):
        run_retention(client, params(bucket, prefix=prefix, keep_last=1))
    with pytest.raises(RetentionError, match="whole_bucket"):
        run_retention(client, params(bucket, prefix="redis", whole_bucket=True, keep_last=1))
    assert all_keys(client, bucket) == sorted(CNPG_KEYS)


def test_manifest_and_last_modified_time_sources(client, bucket):
    """Backup names that are not timestamps are declared with name_pattern (and data_files for other data)."""
    now = datetime.datetime.now(UTC)
    for i, name in reversed(list(enumerate(["alpha", "beta", "gamma"]))):
        if name == "alpha":  # written last, in a later server second: its LastModified is the newest for certain
            wait_for_next_server_second(client, bucket)
        client.put_object(Bucket=bucket, Key=f"redis/dc1/{name}/data.bin", Body=b"x")
        body = json.dumps({"timestamp": (now - datetime.timedelta(days=10 * i)).isoformat()}).encode()
        client.put_object(Bucket=bucket, Key=f"redis/dc1/{name}/manifest.json", Body=body)
    client.put_object(Bucket=bucket, Key="redis/dc1/delta/data.bin", Body=b"x")  # not a name of the layout
    layout = dict(name_pattern="alpha|beta|gamma", data_files=["*.bin"])
    plan = run_retention(client, params(bucket, time_source="manifest", keep_last=2, **layout), check_mode=True)
    assert kept_names(plan) == ["alpha", "beta"] and plan["api_calls"]["GetObject"] == 3
    assert plan["unrecognised"] == ["redis/dc1/delta/data.bin"]
    plan = run_retention(client, params(bucket, time_source="last_modified", keep_last=1, **layout), check_mode=True)
    assert kept_names(plan) == ["alpha"]  # written last
    # the default layout (timestamp names holding dump.rdb) recognises none of them
    plan = run_retention(client, params(bucket, time_source="last_modified", keep_last=1), check_mode=True)
    assert plan["backups"] == [] and len(plan["unrecognised"]) == 7


def test_complete_backups_of_a_site_for_restore(client, bucket):
    now = datetime.datetime.now(UTC).replace(microsecond=0)
    times = [now - datetime.timedelta(hours=h) for h in range(3)]
    write_backups(client, bucket, "redis", "dc1", times[1:])
    write_backups(client, bucket, "redis", "dc1", times[:1], complete=False)
    write_backups(client, bucket, "redis", "dc2", times)
    found = complete_backups(client, bucket, "redis", "dc1")
    assert [b["time"] for b in found] == times[1:]
    assert found[0]["prefix"] == f"redis/dc1/{ts(times[1])}/"
    assert found[0]["keys"] == [found[0]["prefix"] + "dump.rdb", found[0]["prefix"] + "manifest.json"]
    assert (found[0]["rdb_key"], found[0]["manifest_key"]) == tuple(found[0]["keys"])
    assert complete_backups(client, bucket, "redis/dc1") == found  # the site as the prefix's last component
    assert complete_backups(client, bucket, "redis", "dc3") == []


# ------------------------------------------------------------------------------------------------ errors


def test_missing_bucket_and_bad_credentials_give_clear_errors(conn, client):
    with pytest.raises(S3Error, match="bucket 'no-such-bucket-here' does not exist") as err:
        run_retention(client, params("no-such-bucket-here", keep_last=1))
    assert err.value.kind == "missing_bucket"
    wrong_secret = s3_client(dict(conn, secret_key="not-the-secret"))
    with pytest.raises(S3Error, match="secret_key") as err:
        run_retention(wrong_secret, params("kms-backups", keep_last=1))
    assert err.value.kind == "credentials"
    unknown_key = s3_client(dict(conn, access_key="AKIDUNKNOWN", secret_key="x"))
    with pytest.raises(S3Error, match="access_key") as err:
        run_retention(unknown_key, params("kms-backups", keep_last=1))
    assert err.value.kind == "credentials"
    with pytest.raises(S3Error) as err:
        check_bucket(unknown_key, "kms-backups")
    assert err.value.kind in ("credentials", "access_denied")
    unreachable = s3_client(dict(conn, endpoint_url="http://127.0.0.1:9"), retries={"max_attempts": 1})
    with pytest.raises(S3Error, match="cannot reach the S3 endpoint") as err:
        run_retention(unreachable, params("kms-backups", keep_last=1))
    assert err.value.kind == "unreachable"


def test_empty_policy_is_refused(client, bucket):
    with pytest.raises(RetentionError, match="empty"):
        run_retention(client, params(bucket, keep_last=0))


# ------------------------------------------------------------------------------------------------ batches


def test_batches_of_1000_and_manifest_first(client, bucket):
    """1500 backups x 2 objects: ceil(3000/1000) lists; ceil(2998/1000) deletes; every data key is sent only in a
    request after the one that deleted its manifest."""
    start = datetime.datetime(2025, 1, 1, tzinfo=UTC)
    times = [start + datetime.timedelta(hours=h) for h in range(1500)]
    write_backups(client, bucket, "redis", "dc1", times)
    requests = []

    def record(params, **_kw):
        requests.append([o["Key"] for o in params["Delete"]["Objects"]])

    client.meta.events.register("provide-client-params.s3.DeleteObjects", record)
    try:
        result = run_retention(client, params(bucket, keep_last=1, concurrency=4))
    finally:
        client.meta.events.unregister("provide-client-params.s3.DeleteObjects", record)
    assert result["api_calls"] == {"ListObjectsV2": 3, "DeleteObjects": 3}
    assert all(len(r) <= 1000 for r in requests) and sum(len(r) for r in requests) == 2998
    first_request = {}
    for i, keys in enumerate(requests):
        for key in keys:
            first_request[key] = i
    for key, i in first_request.items():
        if key.endswith("/dump.rdb"):
            assert first_request[key.rsplit("/", 1)[0] + "/manifest.json"] < i
    assert all_keys(client, bucket) == [f"redis/dc1/{ts(times[-1])}/{n}" for n in ("dump.rdb", "manifest.json")]


# ------------------------------------------------------------------------------------------------ versioning, lock


def test_versioned_bucket_purge(client, bucket):
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    now = datetime.datetime.now(UTC)
    times = [now - datetime.timedelta(days=d) for d in range(6)]
    write_backups(client, bucket, "redis", "dc1", times)
    write_backups(client, bucket, "redis", "dc1", times)  # rewritten: two versions of every key
    # Without purge: only delete markers are added, the data stays as noncurrent versions.
    plain = run_retention(client, params(bucket, keep_last=4))
    assert plain["summary"]["deleted"] == 2 and plain["summary"]["versioned"] is False
    old_prefixes = [f"redis/dc1/{ts(t)}/" for t in times[4:]]
    leftover = [v for v in all_versions(client, bucket) if any(v[0].startswith(p) for p in old_prefixes)]
    assert len(leftover) == 2 * 2 * 2 + 2 * 2  # 2 backups x 2 keys x 2 versions + 1 marker per key
    # With purge: old leftovers are purged too, and removed backups lose every version and marker.
    purged = run_retention(client, params(bucket, keep_last=2, purge_versions=True))
    assert purged["summary"]["versioned"] is True and not purged["errors"]
    assert sorted(b["prefix"] for b in purged["purged"]) == sorted(old_prefixes)
    assert purged["summary"]["deleted"] == 2 and purged["api_calls"]["ListObjectVersions"] == 1
    keep_prefixes = [f"redis/dc1/{ts(t)}/" for t in times[:2]]
    versions = all_versions(client, bucket)
    assert versions and all(any(v[0].startswith(p) for p in keep_prefixes) for v in versions)
    assert len(versions) == 2 * 2 * 2  # kept backups keep their noncurrent versions


def bucket_with_held_manifest(client, days):
    """A new Object Lock bucket with ``days`` daily redis/dc1 backups, the oldest one's manifest under a legal hold;
    returns (bucket, backup times newest first, the held manifest's key)."""
    name = f"lock-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    now = datetime.datetime.now(UTC)
    times = [now - datetime.timedelta(days=d) for d in range(days)]
    write_backups(client, name, "redis", "dc1", times)
    held = f"redis/dc1/{ts(times[-1])}/manifest.json"
    client.put_object_legal_hold(Bucket=name, Key=held, LegalHold={"Status": "ON"})
    return name, times, held


def test_per_key_error_fails_and_keeps_data_of_locked_manifest(client):
    name, times, locked_manifest = bucket_with_held_manifest(client, 5)
    try:
        result = run_retention(client, params(name, keep_last=2, purge_versions=True))
        assert result["failed"] and "per-key error" in result["msg"] and "object-locked" in result["msg"]
        assert [(e["key"], e["code"], e.get("locked")) for e in result["errors"]] == [
            (locked_manifest, "AccessDenied", "legal hold")
        ]
        by_name = dict((b["name"], b["action"]) for b in result["backups"])
        assert by_name[ts(times[-1])] == "delete_failed"
        assert [by_name[ts(t)] for t in times[2:4]] == ["delete", "delete"]
        # the locked backup is untouched (its data was never sent), the others are gone
        assert all_keys(client, name) == sorted(
            [f"redis/dc1/{ts(t)}/{n}" for t in times[:2] + times[-1:] for n in ("dump.rdb", "manifest.json")]
        )
    finally:
        client.put_object_legal_hold(Bucket=name, Key=locked_manifest, LegalHold={"Status": "OFF"})
    # SeaweedFS bumps the LastModified that ListObjectVersions reports when a legal hold changes, so the released
    # manifest can look like the most recently written complete backup, which is protected. A backup written after
    # the release takes that role; with keep_last=3 the formerly locked backup is then the one to go.
    wait_for_next_server_second(client, name, versions=True)
    write_backups(client, name, "redis", "dc1", [datetime.datetime.now(UTC)])
    result = run_retention(client, params(name, keep_last=3, purge_versions=True))
    assert not result["failed"] and result["summary"]["deleted"] == 1
    assert [b["name"] for b in result["backups"] if b["action"] == "delete"] == [ts(times[-1])]
    drop_bucket(client, name)


# ------------------------------------------------------------------------------------------------ the real module


def run_module(args, check=False, diff=False, module="hanzo.kms.s3_retention"):
    return ansible_run.run_module(module, args, check_mode=check, diff=diff, timeout=300).result()


def test_module_check_diff_then_apply(conn, client, bucket):
    now = datetime.datetime.now(UTC)
    times = [now - datetime.timedelta(days=d) for d in range(4)]
    write_backups(client, bucket, "redis", "dc1", times)
    args = dict(conn, bucket=bucket, prefix="redis", keep_last=2)
    before = all_keys(client, bucket)
    res = run_module(args, check=True, diff=True)
    assert res["changed"] and not res.get("failed"), res
    assert all_keys(client, bucket) == before
    assert res["diff"]["before"].count("\n") == 4 and res["diff"]["after"].count("\n") == 2
    assert conn["secret_key"] not in json.dumps(res)
    res = run_module(args)
    assert res["changed"] and res["summary"]["deleted"] == 2 and "diff" not in res
    res = run_module(args)
    assert not res["changed"]


def test_module_fails_on_per_key_errors(conn, client):
    name, dummy, held = bucket_with_held_manifest(client, 3)
    try:
        res = run_module(dict(conn, bucket=name, prefix="redis", keep_last=1, purge_versions=True))
        assert res["failed"] and "1 per-key error(s), 1 on object-locked versions" in res["msg"], res
        assert [(e["key"], e["code"], e["locked"]) for e in res["errors"]] == [(held, "AccessDenied", "legal hold")]
        assert [b["action"] for b in res["backups"]] == ["keep", "delete", "delete_failed"]
    finally:
        client.put_object_legal_hold(Bucket=name, Key=held, LegalHold={"Status": "OFF"})
    drop_bucket(client, name)


def test_module_errors(conn, client, bucket):
    res = run_module(dict(conn, bucket="no-such-bucket-here", prefix="redis", keep_last=1))
    assert res["failed"] and "does not exist" in res["msg"]
    res = run_module(dict(conn, bucket=bucket, prefix="redis", secret_key="wrong", keep_daily=1))
    assert res["failed"] and "rejected the credentials" in res["msg"]
    res = run_module(dict(conn, bucket=bucket, prefix="redis"))
    assert res["failed"] and "one of the following is required" in res["msg"]
    # layout and scope errors come before any request: nothing is listed or deleted
    put_many(client, bucket, CNPG_KEYS)
    for args, problem in [
        (dict(), "selects the whole bucket"),
        (dict(prefix="/"), "selects the whole bucket"),
        (dict(prefix="redis", whole_bucket=True), "applies to an empty prefix only"),
        (dict(prefix="redis", data_files=[]), "data_files must name at least one"),
        (dict(prefix="redis", name_pattern="("), "not a valid regular expression"),
    ]:
        res = run_module(dict(conn, bucket=bucket, keep_last=1, **args))
        assert res["failed"] and problem in res["msg"] and "api_calls" not in res, res
    assert all_keys(client, bucket) == sorted(CNPG_KEYS)
