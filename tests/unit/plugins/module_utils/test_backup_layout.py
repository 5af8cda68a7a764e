# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Redis backup layout (backup_layout): key names, the manifest and complete backups, and its users: the backup's
manifest and the restore's refusal of a malformed one (the backup CronJob runs the same backup code:
test_redis_backup_job.py)."""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from ansible_collections.hanzo.kms.plugins.module_utils import (
    backup_layout as bl,
)
from ansible_collections.hanzo.kms.plugins.module_utils import (
    redis_backup,
    redis_rdb,
    redis_restore,
    s3_retention,
)

UTC = datetime.timezone.utc
WHEN = datetime.datetime(2026, 11, 22, 4, 15, 0, tzinfo=UTC)
STAMP = "20261122T041500Z"
FIXTURES = Path(__file__).parent / "fixtures"


def manifest(**changes):
    out = bl.build_manifest(
        timestamp=WHEN,
        created_at=WHEN + datetime.timedelta(seconds=7),
        size=1234,
        sha256="ab" * 32,
        crc64="0123456789abcdef",
        rdb_version=12,
        keys_per_db={"0": 3, "2": 1},
        keyspace_at_start={"0": {"keys": 3, "expires": 0}},
        functions=0,
        source={"host": "10.0.0.5", "port": 6379, "site": "dc1"},
    )
    out.update(changes)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Keys


def test_constants_are_the_layout_everyone_uses():
    assert (bl.RDB_NAME, bl.MANIFEST_NAME, bl.MANIFEST_FORMAT, bl.TIMESTAMP_FORMAT) == (
        "dump.rdb",
        "manifest.json",
        1,
        "%Y%m%dT%H%M%SZ",
    )
    # s3_retention's defaults are these objects, not copies
    layout = s3_retention.Layout()
    assert layout.data_files == (bl.RDB_NAME,) and layout.manifest_name is bl.MANIFEST_NAME
    assert layout.timestamp_format is bl.TIMESTAMP_FORMAT and s3_retention.normalize_prefix is bl.normalize_prefix


@pytest.mark.parametrize(
    "prefix,expected",
    [("", ""), (None, ""), ("/", ""), ("redis", "redis/"), ("/redis", "redis/"), ("redis/", "redis/"), ("a/b", "a/b/")],
)
def test_normalize_prefix(prefix, expected):
    assert bl.normalize_prefix(prefix) == expected


@pytest.mark.parametrize(
    "prefix,site,expected",
    [
        ("redis", "dc1", "redis/dc1/"),
        ("/backups/redis/", "dc1", "backups/redis/dc1/"),
        ("", "dc1", "dc1/"),
        (None, None, ""),
        ("redis", None, "redis/"),
        ("redis", "", "redis/"),
    ],
)
def test_backup_prefix_of_a_site(prefix, site, expected):
    assert bl.backup_prefix(prefix, site) == expected


def test_backup_prefix_and_keys_of_one_backup():
    assert bl.backup_prefix("redis", "dc1", WHEN) == bl.backup_prefix("redis", "dc1", STAMP) == f"redis/dc1/{STAMP}/"
    # naive means UTC; another zone is converted
    assert bl.backup_prefix("redis", "dc1", WHEN.replace(tzinfo=None)) == f"redis/dc1/{STAMP}/"
    east = datetime.timezone(datetime.timedelta(hours=2))
    assert bl.backup_prefix("redis", "dc1", WHEN.astimezone(east)) == f"redis/dc1/{STAMP}/"
    assert bl.backup_keys("/redis/", "dc1", WHEN) == (f"redis/dc1/{STAMP}/dump.rdb", f"redis/dc1/{STAMP}/manifest.json")


@pytest.mark.parametrize(
    "stamp",
    ["T", "2026-11-22T04:15:00Z", "20261122T041500", "20261322T041500Z", "20261122T041500Z/", " 20261122T041500Z"],
)
def test_backup_prefix_refuses_what_is_not_a_timestamp(stamp):
    with pytest.raises(bl.InvalidKey, match="not a backup timestamp"):
        bl.backup_prefix("redis", "dc1", stamp)


def test_manifest_key_next_to_any_rdb_key():
    assert bl.manifest_key_for(f"redis/dc1/{STAMP}/dump.rdb") == f"redis/dc1/{STAMP}/manifest.json"
    assert bl.manifest_key_for("elsewhere/copy.rdb") == "elsewhere/manifest.json"
    assert bl.manifest_key_for("dump.rdb") == "manifest.json"


@pytest.mark.parametrize("prefix", ["", "redis", "backups/redis"])
@pytest.mark.parametrize("name", ["dump.rdb", "manifest.json"])
def test_key_round_trip(prefix, name):
    rdb_key, manifest_key = bl.backup_keys(prefix, "dc1", WHEN)
    key = rdb_key if name == "dump.rdb" else manifest_key
    parsed = bl.parse_key(key)
    assert parsed == bl.BackupKey(prefix, "dc1", WHEN, name)
    assert parsed == bl.parse_key(key, prefix=prefix) == bl.parse_key(key, prefix=f"/{prefix}/" if prefix else "")
    assert key in bl.backup_keys(parsed.prefix, parsed.site, parsed.timestamp)


@pytest.mark.parametrize(
    "key,problem",
    [
        ("", "not an object key"),
        (None, "not an object key"),
        (f"{STAMP}/dump.rdb", "expected <prefix>/<site>/<timestamp>/<object>"),
        (f"redis/dc1/{STAMP}/notes.txt", "object 'notes.txt' is neither dump.rdb nor manifest.json"),
        (f"redis/dc1/{STAMP}/", "object '' is neither"),
        ("redis/dc1/2026-11-22/dump.rdb", "'2026-11-22' is not a backup timestamp"),
        (f"redis/DC_1/{STAMP}/dump.rdb", "site 'DC_1' is not a DNS label"),
        (f"redis//dc1/{STAMP}/dump.rdb", "empty component"),
        (f"/dc1/{STAMP}/dump.rdb", "empty component"),
        (f"redis/dc1/{STAMP}/dump.rdb/x", f"site '{STAMP}' is not a DNS label"),
    ],
)
def test_parse_key_refuses_keys_outside_the_layout(key, problem):
    with pytest.raises(bl.InvalidKey, match=problem):
        bl.parse_key(key)


@pytest.mark.parametrize(
    "key,prefix,problem",
    [
        (f"cnpg/dc1/{STAMP}/dump.rdb", "redis", "not under the prefix 'redis/'"),
        (f"redis/{STAMP}/dump.rdb", "redis", "expected <site>/<timestamp>/<object> after it"),
        (f"redis/x/dc1/{STAMP}/dump.rdb", "redis", "expected <site>"),
    ],
)
def test_parse_key_under_a_prefix(key, prefix, problem):
    with pytest.raises(bl.InvalidKey, match=problem):
        bl.parse_key(key, prefix=prefix)


# ---------------------------------------------------------------------------------------------------------------
# Manifest


def test_built_manifest_has_every_field():
    built = bl.build_manifest(timestamp=WHEN, size=0, sha256="0" * 64, rdb_version=11)
    assert set(built) == set(bl.MANIFEST_FIELDS + bl.LATER_FIELDS)
    assert set(built["source"]) == set(bl.SOURCE_FIELDS + bl.LATER_SOURCE_FIELDS)
    assert built["source"]["method"] == "replication" and built["timestamp"] == "2026-11-22T04:15:00Z"
    assert built["keys"] is None and built["keys_per_db"] is None and built["crc64"] is None
    assert manifest()["keys"] == 4 and manifest()["keys_per_db"] == {"0": 3, "2": 1}
    # manifest times: naive means UTC, another zone is converted
    east = datetime.timezone(datetime.timedelta(hours=5))
    naive = bl.build_manifest(
        timestamp=WHEN.replace(tzinfo=None), created_at=WHEN.astimezone(east), size=0, sha256="0" * 64, rdb_version=11
    )
    assert naive["timestamp"] == naive["created_at"] == "2026-11-22T04:15:00Z"


def test_manifest_round_trip_and_stable_encoding():
    original = manifest()
    data = bl.encode_manifest(original)
    assert bl.parse_manifest(data) == original
    assert bl.parse_manifest(data.decode()) == original
    # sorted keys, 2-space indent: the same manifest always gives the same bytes (the backup's former encoding)
    shuffled = dict(reversed(list(original.items())))
    assert bl.encode_manifest(shuffled) == data == json.dumps(original, indent=2, sort_keys=True).encode()


def test_manifest_reader_accepts_older_manifests_and_extra_fields():
    old = manifest()
    for name in bl.LATER_FIELDS:
        del old[name]
    for name in bl.LATER_SOURCE_FIELDS:
        del old["source"][name]
    assert bl.validate_manifest(old) is old
    assert bl.validate_manifest(dict(manifest(), comment="copied by hand"))
    assert bl.validate_manifest(manifest(crc64=None, keys_per_db=None, keys=None, verified={"format": 1}))


def _without(name):
    out = manifest()
    if name.startswith("source."):
        del out["source"][name[len("source.") :]]
    else:
        del out[name]
    return out


def _source(**changes):
    out = manifest()
    out["source"] = dict(out["source"], **changes)
    return out


BAD_MANIFESTS = (
    [
        ([1, 2], "must be a JSON object, not an array"),
        (_without("format"), "field 'format' is missing"),
        (manifest(format=2), "unknown format version 2 .this collection reads format 1."),
        (manifest(format="1"), "field 'format' must be an integer, not a string"),
        (manifest(format=True), "field 'format' must be an integer, not a boolean"),
        (manifest(object="a/b"), "field 'object' must be an object name"),
        (manifest(timestamp=STAMP), "field 'timestamp' must be a UTC time as"),
        (manifest(created_at="2026-11-22 04:15:07"), "field 'created_at' must be a UTC time"),
        (manifest(created_at="2026-13-22T04:15:07Z"), "field 'created_at' must be a UTC time"),
        (manifest(size=-1), "field 'size' must be an integer >= 0 .bytes., not an integer"),
        (manifest(size="1234"), "field 'size' must be an integer >= 0 .bytes., not a string"),
        (manifest(size=12.5), "field 'size' must be .*, not a number"),
        (manifest(sha256="ab" * 31), "field 'sha256' must be 64 lower-case hex digits"),
        (manifest(sha256="AB" * 32), "field 'sha256' must be 64 lower-case hex digits"),
        (manifest(sha256=None), "field 'sha256' must be a string, not null"),
        (manifest(crc64="12345"), "field 'crc64' must be null or 16 lower-case hex digits"),
        (manifest(crc64=12345), "field 'crc64' must be null or a string, not an integer"),
        (manifest(rdb_version=0), "field 'rdb_version' must be an integer >= 1"),
        (manifest(rdb_version="Y080"), "field 'rdb_version' must be an integer >= 1, not a string .'Y080'."),
        (manifest(keys_per_db={"db0": 3}, keys=3), "field 'keys_per_db' must be keyed by database number, not 'db0'"),
        (manifest(keys_per_db={"0": -3}, keys=-3), "field 'keys_per_db' entry '0' must be an integer >= 0"),
        (manifest(keys_per_db=[3]), "field 'keys_per_db' must be null or an object, not an array"),
        (manifest(keys=5), r"field 'keys' \(5\) is not the sum of 'keys_per_db' \(4\)"),
        (manifest(keys=None), "fields 'keys' and 'keys_per_db' must be both null or both set"),
        (manifest(keyspace_at_start="db0"), "field 'keyspace_at_start' must be null or an object"),
        (manifest(functions=-1), "field 'functions' must be null or an integer >= 0"),
        (manifest(verified=[]), "field 'verified' must be null or an object, not an array"),
        (manifest(source=None), "field 'source' must be an object, not null"),
        (_without("source.method"), "field 'source.method' is missing"),
        (_source(port="6379"), "field 'source.port' must be null or an integer, not a string"),
        (_source(server=7), "field 'source.server' must be null or a string, not an integer"),
    ]
    + [(_without(name), f"field {name!r} is missing") for name in bl.MANIFEST_FIELDS if name != "format"]
    + [(_without(f"source.{name}"), f"field 'source.{name}' is missing") for name in bl.SOURCE_FIELDS]
)


@pytest.mark.parametrize("bad,problem", BAD_MANIFESTS)
def test_invalid_manifest_names_the_problem(bad, problem):
    with pytest.raises(bl.InvalidManifest, match=problem):
        bl.validate_manifest(bad)
    with pytest.raises(bl.InvalidManifest, match=problem):
        bl.parse_manifest(json.dumps(bad).encode())
    with pytest.raises(bl.InvalidManifest, match=problem):
        bl.encode_manifest(bad)  # never written either


@pytest.mark.parametrize("data", [b"", b'{"format": 1,', b"\xff\xfe\x00", b'{"format": 1} trailing'])
def test_manifest_that_is_not_json(data):
    with pytest.raises(bl.InvalidManifest, match="not valid JSON"):
        bl.parse_manifest(data)


# ---------------------------------------------------------------------------------------------------------------
# Complete backups


def backup_objects(prefix="redis", site="dc1", when=WHEN, size=1234):
    rdb_key, manifest_key = bl.backup_keys(prefix, site, when)
    return {rdb_key: size, manifest_key: 700}


def test_complete_backup_from_a_listing_and_with_its_manifest():
    objects = backup_objects()
    assert bl.is_complete_backup(objects) and bl.is_complete_backup(list(objects))
    assert bl.is_complete_backup(objects, manifest()) and bl.is_complete_backup(objects, bl.encode_manifest(manifest()))
    assert bl.is_complete_backup(backup_objects(prefix=""), manifest())
    # a size the listing did not give is not compared
    assert bl.is_complete_backup(dict.fromkeys(objects), manifest(size=1))


@pytest.mark.parametrize(
    "objects,problem",
    [
        ({}, "no objects"),
        ({f"redis/dc1/{STAMP}/dump.rdb": 1}, f"redis/dc1/{STAMP}/ has no manifest.json"),
        ({f"redis/dc1/{STAMP}/manifest.json": 1}, f"redis/dc1/{STAMP}/ has no dump.rdb"),
        ({f"redis/dc1/{STAMP}/dump.rdb": 1, "redis/dc1/20261122T041501Z/manifest.json": 1}, "more than one directory"),
        ({"redis/dc1/latest/dump.rdb": 1, "redis/dc1/latest/manifest.json": 1}, "not a backup directory"),
    ],
)
def test_incomplete_backup_from_a_listing(objects, problem):
    with pytest.raises(bl.IncompleteBackup, match=problem):
        bl.check_complete_backup(objects)
    assert not bl.is_complete_backup(objects)


@pytest.mark.parametrize(
    "bad,problem",
    [
        (manifest(size=999), "dump.rdb has 1234 bytes but its manifest says 999"),
        (manifest(timestamp="2026-11-22T04:15:01Z"), "is for 2026-11-22T04:15:01Z, not 2026-11-22T04:15:00Z"),
        (manifest(object="other.rdb"), "describes 'other.rdb', not dump.rdb"),
        (manifest(sha256="x"), "is invalid: field 'sha256' must be 64 lower-case hex digits"),
        (b"{", "is invalid: not valid JSON"),
    ],
)
def test_backup_whose_manifest_does_not_match(bad, problem):
    with pytest.raises(bl.IncompleteBackup, match=problem):
        bl.check_complete_backup(backup_objects(), bad)
    assert not bl.is_complete_backup(backup_objects(), bad)


# ---------------------------------------------------------------------------------------------------------------
# The backup writes the format, the restore refuses anything else


class Validated:  # pylint: disable=too-few-public-methods
    """The summary and validator of a streamed fixture RDB, as run_backup has them."""

    def __init__(self, name):
        self.data = (FIXTURES / f"{name}.rdb").read_bytes()
        self.validator = redis_rdb.StreamValidator(structure=True)
        self.validator.feed(self.data)
        self.summary = self.validator.finish()


@pytest.mark.parametrize("fixture", ["redis_rdb_redis70", "redis_rdb_valkey91"])
def test_backup_manifest_is_the_format(fixture):
    rdb = Validated(fixture)
    params = {"host": "127.0.0.1", "port": 6379, "site": "dc1"}
    info = {"server": "redis", "version": "7.0.15", "keyspace": {"0": {"keys": 17, "expires": 1}}}
    built = redis_backup.build_manifest(params, info, rdb.summary, rdb.validator, len(rdb.data), WHEN, True)
    assert bl.parse_manifest(bl.encode_manifest(built)) == built
    assert set(built) == set(bl.MANIFEST_FIELDS + bl.LATER_FIELDS)
    assert built["sha256"] == hashlib.sha256(rdb.data).hexdigest() and built["size"] == len(rdb.data)
    assert built["rdb_version"] == redis_rdb.parse_header(rdb.data) and built["timestamp"] == "2026-11-22T04:15:00Z"
    assert built["keys"] == sum(rdb.summary.keys_per_db.values()) and built["verified"]["checks"]
    assert built["source"] == dict(
        params,
        server="redis",
        server_version="7.0.15",
        method="replication",
        rdb_redis_ver=rdb.summary.aux.get("redis-ver") or rdb.summary.aux.get("valkey-ver"),
    )
    unparsed = redis_backup.build_manifest(params, info, rdb.summary, rdb.validator, len(rdb.data), WHEN, False)
    assert unparsed["keys_per_db"] is None and unparsed["verified"] is None and unparsed["functions"] is None


def test_restore_refuses_a_malformed_manifest_before_anything(tmp_path):
    data = (FIXTURES / "redis_rdb_redis70.rdb").read_bytes()
    src = tmp_path / "dump.rdb"
    src.write_bytes(data)
    bad = manifest(size="big", sha256=hashlib.sha256(data).hexdigest())
    (tmp_path / "dump.rdb.manifest.json").write_text(json.dumps(bad))
    # nothing listens on port 1: the manifest is refused before the target is contacted
    with pytest.raises(
        redis_restore.RestoreError,
        match="manifest .*dump.rdb.manifest.json is malformed: field 'size' "
        "must be an integer >= 0 .bytes., not a string .'big'.; the target was not changed",
    ) as err:
        redis_restore.run_restore({"src": str(src), "host": "127.0.0.1", "port": 1, "method": "restore"})
    assert err.value.result == {"target_state": "unchanged"}


def listing_client(keys, prefixes):
    """A botocore S3 client whose ListObjectsV2 answers, once per prefix in ``prefixes`` (in call order), with the
    ``keys`` under it: the pagination and error handling are botocore's own."""
    client = boto3.client(
        "s3",
        endpoint_url="http://s3.invalid",
        region_name="us-east-1",
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key="s3-secret",
    )
    stubber = Stubber(client)
    for prefix in prefixes:
        contents = [{"Key": k, "Size": 1, "LastModified": WHEN} for k in sorted(keys) if k.startswith(prefix)]
        stubber.add_response(
            "list_objects_v2",
            {"Contents": contents, "IsTruncated": False},
            {"Bucket": "b", "Prefix": prefix, "MaxKeys": 1000},
        )
    stubber.activate()
    return client


def test_restore_picks_the_newest_complete_backup_of_the_site():
    newer = WHEN + datetime.timedelta(hours=1)
    keys = list(backup_objects()) + [bl.backup_keys("redis", "dc1", newer)[0]]  # the newer one has no manifest
    keys += list(backup_objects(site="dc2", when=newer))
    client = listing_client(keys, ["redis/dc1/", "redis/dc3/"])
    assert redis_restore.resolve_s3_source(
        client, {"bucket": "b", "prefix": "/redis/", "site": "dc1"}
    ) == bl.backup_keys("redis", "dc1", WHEN)
    explicit = {"bucket": "b", "key": "x/copy.rdb"}
    assert redis_restore.resolve_s3_source(client, explicit) == ("x/copy.rdb", "x/manifest.json")
    with pytest.raises(redis_restore.RestoreError, match="no complete backup .* under s3://b/redis/dc3/"):
        redis_restore.resolve_s3_source(client, {"bucket": "b", "prefix": "redis", "site": "dc3"})
