# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""s3_backup_info's plain part: a listing grouped into backups, each described (complete or why not, age, size,
manifest), and the newest complete backup per site. The S3 part runs against SeaweedFS in
tests/integration/test_s3_backup_info.py."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import backup_layout as bl
from ansible_collections.hanzo.kms.plugins.module_utils.s3_backup_info import (
    BackupInfoError,
    check_options,
    describe_backup,
    group_objects,
    summarize_sites,
)

UTC = datetime.timezone.utc
WHEN = datetime.datetime(2026, 11, 22, 4, 15, 0, tzinfo=UTC)
STAMP = "20261122T041500Z"
NOW = WHEN + datetime.timedelta(hours=1, seconds=5)


def manifest_bytes(size=1234, when=WHEN):
    return bl.encode_manifest(
        bl.build_manifest(
            timestamp=when, size=size, sha256="ab" * 32, rdb_version=12, keys_per_db={"0": 3}, source={"site": "dc1"}
        )
    )


def objects(rdb=1234, manifest=400, stamp=STAMP, site="dc1", prefix="redis"):
    rdb_key, manifest_key = bl.backup_keys(prefix, site, stamp)
    out = {}
    if rdb is not None:
        out[rdb_key] = (rdb, WHEN + datetime.timedelta(seconds=3))
    if manifest is not None:
        out[manifest_key] = (manifest, WHEN + datetime.timedelta(seconds=7))
    return out


@pytest.mark.parametrize(
    "prefix, sites, concurrency, message",
    [
        ("redis/../x", None, 8, "invalid prefix 'redis/../x'"),
        ("redis", ["DC1"], 8, "invalid site in sites 'DC1': it must be a DNS label"),
        ("redis", ["dc1", "dc 2"], 8, "invalid site in sites 'dc 2'"),
        ("redis", None, 0, "concurrency must be at least 1, got 0"),
    ],
)
def test_bad_options_are_named(prefix, sites, concurrency, message):
    with pytest.raises(BackupInfoError, match=message.replace("(", r"\(").replace(".", r"\.")):
        check_options(prefix, sites, concurrency)


@pytest.mark.parametrize(
    "prefix, expected", [("/redis/", "redis"), ("backups/redis", "backups/redis"), ("", ""), (None, "")]
)
def test_the_prefix_loses_its_surrounding_slashes(prefix, expected):
    assert check_options(prefix, ["dc1"], 1) == expected


def test_a_listing_is_grouped_by_backup_directory_and_the_rest_is_unrecognised():
    listed = [(key, size, modified) for key, (size, modified) in objects().items()]
    listed += [(key, size, modified) for key, (size, modified) in objects(site="dc2", manifest=None).items()]
    listed += [
        ("redis/README.txt", 5, WHEN),
        ("redis/dc1/not-a-time/dump.rdb", 1, WHEN),
        ("redis/dc1/20261122T041500Z/extra.bin", 1, WHEN),
        ("redis/dc1/20261122T041500Z/sub/dump.rdb", 1, WHEN),
    ]
    directories, unrecognised = group_objects(listed, "redis")
    assert directories == {("dc1", STAMP): objects(), ("dc2", STAMP): objects(site="dc2", manifest=None)}
    assert unrecognised == [
        "redis/README.txt",
        "redis/dc1/20261122T041500Z/extra.bin",
        "redis/dc1/20261122T041500Z/sub/dump.rdb",
        "redis/dc1/not-a-time/dump.rdb",
    ]


def test_a_complete_backup_with_its_manifest():
    backup = describe_backup("redis", "dc1", STAMP, objects(), NOW, manifest_bytes())
    assert backup == {
        "site": "dc1",
        "name": STAMP,
        "prefix": f"redis/dc1/{STAMP}/",
        "time": "2026-11-22T04:15:00Z",
        "age_seconds": 3605,
        "complete": True,
        "incomplete_reason": None,
        "objects": 2,
        "size": 1634,
        "rdb_key": f"redis/dc1/{STAMP}/dump.rdb",
        "rdb_size": 1234,
        "manifest_key": f"redis/dc1/{STAMP}/manifest.json",
        "written": "2026-11-22T04:15:07Z",
        "manifest": bl.parse_manifest(manifest_bytes()),
    }
    assert backup["manifest"]["keys_per_db"] == {"0": 3}


def test_without_the_manifest_read_the_listing_decides():
    backup = describe_backup("redis", "dc1", STAMP, objects(), NOW)
    assert backup["complete"] and backup["manifest"] is None


@pytest.mark.parametrize(
    "listing, manifest, reason",
    [
        (objects(manifest=None), None, f"redis/dc1/{STAMP}/ has no manifest.json"),
        (objects(rdb=None), None, f"redis/dc1/{STAMP}/ has no dump.rdb"),
        (objects(), manifest_bytes(size=99), f"redis/dc1/{STAMP}/dump.rdb has 1234 bytes but its manifest says 99"),
        (objects(), b'{"format": 1', f"the manifest of redis/dc1/{STAMP}/ is invalid: not valid JSON"),
        (
            objects(),
            manifest_bytes(when=WHEN + datetime.timedelta(hours=1)),
            f"the manifest of redis/dc1/{STAMP}/ is for 2026-11-22T05:15:00Z, not 2026-11-22T04:15:00Z",
        ),
    ],
)
def test_an_incomplete_backup_says_why(listing, manifest, reason):
    backup = describe_backup("redis", "dc1", STAMP, listing, NOW, manifest)
    assert not backup["complete"] and backup["manifest"] is None
    assert backup["incomplete_reason"].startswith(reason), backup["incomplete_reason"]


def test_an_rdb_without_manifest_has_no_manifest_key_and_its_own_size():
    backup = describe_backup("", "dc1", STAMP, objects(prefix="", manifest=None), NOW)
    assert (backup["prefix"], backup["manifest_key"], backup["rdb_size"], backup["size"], backup["objects"]) == (
        f"dc1/{STAMP}/",
        None,
        1234,
        1234,
        1,
    )
    assert backup["written"] == "2026-11-22T04:15:03Z"


def test_an_age_never_goes_negative():
    assert describe_backup("redis", "dc1", STAMP, objects(), WHEN - datetime.timedelta(minutes=1))["age_seconds"] == 0


def test_per_site_the_first_complete_backup_is_the_newest_and_asked_sites_are_there_without_backups():
    newer = describe_backup("redis", "dc1", "20261122T051500Z", objects(stamp="20261122T051500Z", manifest=None), NOW)
    older = describe_backup("redis", "dc1", STAMP, objects(), NOW)
    oldest = describe_backup("redis", "dc1", "20261121T041500Z", objects(stamp="20261121T041500Z"), NOW)
    sites = summarize_sites([newer, older, oldest], ["dc1", "dc2"])
    assert sites == {
        "dc1": {"backups": 3, "complete": 2, "incomplete": 1, "newest": older},
        "dc2": {"backups": 0, "complete": 0, "incomplete": 0, "newest": None},
    }
    assert summarize_sites([newer]) == {"dc1": {"backups": 1, "complete": 0, "incomplete": 1, "newest": None}}
