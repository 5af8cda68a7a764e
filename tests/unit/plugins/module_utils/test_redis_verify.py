# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the recorded structure check: what a backup writes, and the pure decision whether it can replace
the restore's own pass (no server needed)."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import redis_rdb, redis_verify

FIXTURES = Path(__file__).parent / "fixtures"


def recorded_manifest(name="redis_rdb_redis70", chunk=4096):
    data = (FIXTURES / f"{name}.rdb").read_bytes()
    validator = redis_rdb.StreamValidator(structure=True)
    for i in range(0, len(data), chunk):
        validator.feed(data[i : i + chunk])
    summary = validator.finish()
    manifest = {
        "format": 1,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "crc64": f"{summary.checksum_stored:016x}",
        "rdb_version": summary.version,
        "verified": redis_verify.record_check(summary, validator),
    }
    return data, summary, manifest


def test_record_matches_a_full_pass():
    data, _summary, manifest = recorded_manifest()
    full = redis_rdb.scan_bytes(data)
    verified = manifest["verified"]
    assert verified["validator"] == redis_verify.VALIDATOR_NAME
    assert verified["validator_version"] == redis_verify.VALIDATOR_VERSION
    assert set(verified["checks"]) >= set(redis_verify.pass_checks())
    assert verified["keys_per_db"] == {str(k): v for k, v in sorted(full.keys_per_db.items())}
    assert verified["keys"] == sum(full.keys_per_db.values())
    assert verified["functions"] == len(full.functions)
    assert verified["crc64"] == manifest["crc64"] and verified["size"] == manifest["size"]


def test_no_record_when_the_pass_did_not_run_or_gave_up():
    data = (FIXTURES / "redis_rdb_redis70.rdb").read_bytes()
    header_only = redis_rdb.StreamValidator(structure=False)
    header_only.feed(data)
    assert redis_verify.record_check(header_only.finish(), header_only) is None
    bounded = redis_rdb.StreamValidator(structure=True, max_record=16)
    for i in range(0, len(data), 8):
        bounded.feed(data[i : i + 8])
    assert redis_verify.record_check(bounded.finish(), bounded) is None


def test_recorded_check_replaces_the_pass():
    _data, _summary, manifest = recorded_manifest()
    ok, reason = redis_verify.manifest_replaces_pass(manifest)
    assert ok, reason
    assert "SHA-256" in reason


def _without(manifest, *path):
    out = copy.deepcopy(manifest)
    target = out
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return out


def _with(manifest, value, *path):
    out = copy.deepcopy(manifest)
    target = out
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return out


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: _without(m, "verified"), "records no structure check"),
        (lambda m: _with(m, None, "verified"), "records no structure check"),
        (lambda m: _with(m, "yes", "verified"), "not an object"),
        (lambda m: _with(m, 2, "verified", "format"), "unknown format"),
        (lambda m: _with(m, "someone.else", "verified", "validator"), "made by"),
        (lambda m: _with(m, 0, "verified", "validator_version"), "older than this one"),
        (lambda m: _with(m, "1", "verified", "validator_version"), "older than this one"),
        (lambda m: _with(m, ["crc64", "values"], "verified", "checks"), "does not cover framing"),
        (lambda m: _with(m, ["framing", "values"], "verified", "checks"), "does not cover crc64"),
        (lambda m: _with(m, ["crc64", "framing"], "verified", "checks"), "does not cover values"),
        (lambda m: _with(m, "framing", "verified", "checks"), "lists no checks"),
        (lambda m: _without(m, "sha256"), "no SHA-256"),
        (lambda m: _without(m, "size"), "size"),
        (lambda m: _with(m, 12, "size"), "size"),
        (lambda m: _with(m, "ffffffffffffffff", "crc64"), "crc64 differs"),
        (lambda m: _with(m, "zz", "crc64"), "not 16 hex digits"),
        (lambda m: _with(m, 9, "rdb_version"), "rdb_version"),
        (lambda m: _without(m, "verified", "keys"), "no keys count"),
        (lambda m: _without(m, "verified", "module_keys"), "no module_keys count"),
        (lambda m: _with(m, {"0": 1}, "verified", "keys_per_db"), "keys_per_db"),
        (lambda m: "not a manifest", "no manifest"),
    ],
)
def test_weaker_older_or_inconsistent_record_needs_the_full_pass(change, message):
    _data, _summary, manifest = recorded_manifest()
    ok, reason = redis_verify.manifest_replaces_pass(change(manifest))
    assert not ok
    assert message in reason


def test_newer_restore_requirements_need_the_full_pass():
    """A restore whose pass checks more (e.g. values) or is a newer validator does not rely on an older record."""
    _data, _summary, manifest = recorded_manifest()
    ok, reason = redis_verify.manifest_replaces_pass(manifest, required=("framing", "crc64", "values", "more"))
    assert not ok and "does not cover more" in reason
    ok, reason = redis_verify.manifest_replaces_pass(manifest, validator_version=redis_verify.VALIDATOR_VERSION + 1)
    assert not ok and "older" in reason
    # a newer validator that records at least the same checks is accepted
    newer = _with(manifest, redis_verify.VALIDATOR_VERSION + 1, "verified", "validator_version")
    assert redis_verify.manifest_replaces_pass(newer)[0]


def test_no_checksum_rdb_needs_no_crc_check():
    _data, _summary, manifest = recorded_manifest()
    manifest = _with(manifest, "0" * 16, "crc64")
    manifest = _with(manifest, "0" * 16, "verified", "crc64")
    manifest = _with(manifest, ["framing", "values"], "verified", "checks")
    assert redis_verify.manifest_replaces_pass(manifest)[0]


def test_summary_from_manifest_and_file_check(tmp_path):
    data, summary, manifest = recorded_manifest()
    recorded = redis_verify.summary_from_manifest(manifest)
    assert recorded.keys_per_db == summary.keys_per_db
    assert len(recorded.functions) == len(summary.functions)
    assert recorded.version == summary.version
    path = tmp_path / "dump.rdb"
    path.write_bytes(data)
    rdb = redis_verify.check_file_against_record(str(path), manifest, "why")
    assert rdb.verification == "manifest" and rdb.summary.checksum_computed == summary.checksum_stored
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(flipped))
    with pytest.raises(redis_rdb.RdbError, match="checksum mismatch"):
        redis_verify.check_file_against_record(str(path), manifest, "why")
