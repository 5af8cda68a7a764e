# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 14 "Speed": the backup records its structure check, the restore relies on it, and ``method: replication``
from S3 verifies while it streams (real redis-server 7.0 targets, the lab's SeaweedFS).

Every corrupted-object case asserts that the target kept every key (values, types, expiries, functions), that its
replication settings and ``repl-diskless-load`` are back, and that it accepts writes.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import uuid

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import (
    redis_backup,
    redis_restore,
    redis_restore_stream,
    redis_verify,
)
from ansible_collections.hanzo.kms.plugins.module_utils.redis_restore import RestoreError
from ansible_collections.hanzo.kms.plugins.module_utils.s3 import s3_client
from tests.integration import test_redis_rdb as base
from tests.lab.core import wait_until

servers = base.servers
s3 = base.s3
client = base.client
snapshot = base.snapshot


def _backup(entry, s3params, **extra):
    prefix = f"speed-{uuid.uuid4().hex[:8]}"
    result = base.backup_to_s3(entry, s3params, prefix, **extra)
    return prefix, result


def _objects(s3params, result):
    params, bucket = s3params
    s3c = s3_client(params)
    data = s3c.get_object(Bucket=bucket, Key=result["key"])["Body"].read()
    manifest = json.loads(s3c.get_object(Bucket=bucket, Key=result["manifest_key"])["Body"].read())
    return s3c, bucket, data, manifest


def _prepare_target(dst, diskless_load="swapdb"):
    """A target with data of its own in several dbs, a function, and a repl-diskless-load that is not disabled."""
    base.wipe(dst)
    client(dst).set("keep", "me")
    client(dst).hset("keephash", mapping={"a": "1", "b": "2"})
    client(dst).set("keepttl", "v", px=3_600_000)
    client(dst, 2).rpush("keep2", "x", "y")
    client(dst).function_load(
        "#!lua name=targetlib\nredis.register_function('t1', function() return 1 end)", replace=True
    )
    client(dst).config_set("repl-diskless-load", diskless_load)
    return snapshot(dst)


def _assert_target_untouched(dst, before, diskless_load="swapdb"):
    assert snapshot(dst) == before
    info = client(dst).info("replication")
    assert info["role"] == "master"
    assert client(dst).config_get("repl-diskless-load")["repl-diskless-load"] == diskless_load
    assert client(dst).set("writable-after", "1")
    client(dst).delete("writable-after")


def test_backup_records_the_check_and_the_restore_relies_on_it(servers, s3):
    src, dst = servers["src"], servers["dst"]
    base.populate(src, bulk=12_000)
    expected = snapshot(src)
    prefix, backup = _backup(src, s3)
    verified = backup["manifest"]["verified"]
    assert verified["validator"] == redis_verify.VALIDATOR_NAME
    assert set(verified["checks"]) >= set(redis_verify.pass_checks())
    assert verified["keys_per_db"] == {"0": 17, "1": 1, "3": 1, "5": 12_000}
    assert backup["keys_per_db"] == verified["keys_per_db"] and backup["verified"] == verified
    _prepare_target(dst)
    result = base.restore_from_s3(dst, s3, prefix, method="replication")
    assert result["verification"] == "manifest"
    assert result["replication"]["transfer"] == "overlapped"
    assert result["replication"]["repl_diskless_load"] == "swapdb"
    assert result["replication"]["repl_diskless_load_set"] is True
    assert result["replication"]["sent"] == backup["size"]
    assert result["backup_keys_per_db"] == verified["keys_per_db"]
    assert result["keys_restored"] == {"0": 17, "1": 1, "3": 1, "5": 12_000}
    assert snapshot(dst) == expected
    assert client(dst).config_get("repl-diskless-load")["repl-diskless-load"] == "swapdb"
    assert client(dst).info("replication")["role"] == "master"


@pytest.mark.parametrize("how", ["verify_structure_false", "manifest_without_verified", "older_validator"])
def test_manifest_without_the_recorded_check_gets_the_full_pass(servers, s3, how):
    src, dst = servers["src"], servers["dst"]
    base.populate(src, bulk=3_000)
    expected = snapshot(src)
    prefix, backup = _backup(src, s3, verify_structure=(how != "verify_structure_false"))
    s3c, bucket, _data, manifest = _objects(s3, backup)
    if how == "verify_structure_false":
        assert manifest["verified"] is None and manifest["keys_per_db"] is None
    elif how == "manifest_without_verified":
        del manifest["verified"]
    else:
        manifest["verified"]["validator_version"] = 0
    s3c.put_object(Bucket=bucket, Key=backup["manifest_key"], Body=json.dumps(manifest).encode())
    _prepare_target(dst, "disabled")
    result = base.restore_from_s3(dst, s3, prefix, method="replication")
    assert result["verification"] == "full"
    assert result["replication"]["transfer"] == "overlapped"
    assert result["replication"]["repl_diskless_load_set"] is False
    assert result["backup_keys_per_db"] == {"0": 17, "1": 1, "3": 1, "5": 3_000}
    assert snapshot(dst) == expected


def _flip_middle(data):
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x5A
    return bytes(bad)


def _rewrite_manifest(manifest, data):
    """A manifest that matches ``data`` (as if written for it) but records no structure check."""
    out = dict(manifest, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    out.pop("verified", None)
    return out


CORRUPTIONS = {
    # object changed in S3, manifest left as the backup wrote it: SHA-256 mismatch found at the end of the stream
    "flipped-byte": (lambda d, m: (_flip_middle(d), m), "does not match the manifest"),
    # object truncated, manifest left: the size differs before anything is sent
    "truncated": (lambda d, m: (d[: len(d) // 2], m), "but the manifest says"),
    # the manifest's sha256 is wrong: found at the end of the stream
    "wrong-manifest-sha256": (lambda d, m: (d, dict(m, sha256="0" * 64)), "does not match the manifest"),
    # flipped byte with a manifest rewritten to match it: no recorded check, the streamed structure pass / CRC64
    "flipped-byte-matching-manifest": (
        lambda d, m: (_flip_middle(d), _rewrite_manifest(m, _flip_middle(d))),
        "the RDB is unusable",
    ),
    # truncated with a manifest rewritten to match it: the streamed structure pass finds no EOF / trailer
    "truncated-matching-manifest": (
        lambda d, m: (d[: len(d) // 2], _rewrite_manifest(m, d[: len(d) // 2])),
        "the RDB is unusable",
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupted_object_refused_in_the_overlapped_path(servers, s3, case, monkeypatch):
    # small S3 reads: the RDB goes out in many chunks, each checked after it was sent
    monkeypatch.setattr(redis_restore_stream, "CHUNK", 16 * 1024)
    src, dst = servers["src"], servers["dst"]
    base.populate(src, bulk=12_000)
    prefix, backup = _backup(src, s3)
    s3c, bucket, data, manifest = _objects(s3, backup)
    assert len(data) > 4 * 65536  # much more than the held-back tail: most of it reaches the target first
    change, message = CORRUPTIONS[case]
    bad_data, bad_manifest = change(data, manifest)
    s3c.put_object(Bucket=bucket, Key=backup["key"], Body=bad_data)
    s3c.put_object(Bucket=bucket, Key=backup["manifest_key"], Body=json.dumps(bad_manifest).encode())
    before = _prepare_target(dst)
    with pytest.raises(RestoreError, match=message) as err:
        base.restore_from_s3(dst, s3, prefix, method="replication")
    assert "the target was not changed" in str(err.value)
    if case != "truncated":
        assert "refused during the transfer" in str(err.value)
    _assert_target_untouched(dst, before)


def test_corrupted_object_on_a_replica_target_puts_its_master_back(servers, s3):
    src, dst = servers["src"], servers["dst"]
    base.populate(src, bulk=2_000)
    prefix, backup = _backup(src, s3)
    s3c, bucket, data, _manifest = _objects(s3, backup)
    s3c.put_object(Bucket=bucket, Key=backup["key"], Body=_flip_middle(data))
    before = _prepare_target(dst, "disabled")
    # a replica of an unreachable master: it keeps its data, and must be a replica of it again afterwards
    client(dst).config_set("repl-diskless-load", "disabled")
    client(dst).execute_command("REPLICAOF", "127.0.0.1", "1")
    try:
        with pytest.raises(RestoreError, match="does not match the manifest"):
            base.restore_from_s3(dst, s3, prefix, method="replication")
        info = client(dst).info("replication")
        assert info["role"] == "slave" and info["master_port"] == 1
    finally:
        client(dst).execute_command("REPLICAOF", "NO", "ONE")
    assert snapshot(dst) == before


def test_oversized_record_for_the_streamed_pass_falls_back_to_a_checked_copy(servers, s3, monkeypatch):
    src, dst = servers["src"], servers["dst"]
    base.populate(src, bulk=1_000)
    expected = snapshot(src)
    prefix, backup = _backup(src, s3, verify_structure=False)
    assert backup["verified"] is None
    monkeypatch.setattr(redis_restore_stream, "STREAM_MAX_RECORD", 16)
    monkeypatch.setattr(redis_restore_stream, "CHUNK", 1024)
    before = _prepare_target(dst)
    result = base.restore_from_s3(dst, s3, prefix, method="replication")
    assert result["verification"] == "full"
    assert result["replication"]["transfer"] == "verify_then_send"
    assert "downloaded copy" in result["verification_reason"]
    assert snapshot(dst) == expected != before
    assert client(dst).config_get("repl-diskless-load")["repl-diskless-load"] == "swapdb"


def test_target_without_repl_diskless_load_verifies_before_sending(servers, s3, monkeypatch):
    """A target where repl-diskless-load cannot be read (no such setting before Redis 6.0): verify-then-send."""
    src, dst = servers["src"], servers["dst"]
    base.populate(src, bulk=1_000)
    expected = snapshot(src)
    prefix, _backup_result = _backup(src, s3)
    _prepare_target(dst, "swapdb")
    real = redis_restore_stream.config_get

    def config_get(conn, name):
        return None if name == "repl-diskless-load" else real(conn, name)

    monkeypatch.setattr(redis_restore_stream, "config_get", config_get)
    result = base.restore_from_s3(dst, s3, prefix, method="replication")
    assert result["replication"]["transfer"] == "verify_then_send"
    assert result["replication"]["repl_diskless_load"] is None
    assert result["verification"] == "manifest"
    assert snapshot(dst) == expected
    assert client(dst).config_get("repl-diskless-load")["repl-diskless-load"] == "swapdb"


def test_local_file_with_recorded_check_skips_the_pass(servers, tmp_path):
    src, dst = servers["src"], servers["dst"]
    base.populate(src)
    expected = snapshot(src)
    dest = tmp_path / "dump.rdb"
    backup = redis_backup.run_backup(base.conn_params(src, dest=str(dest)))
    assert backup["verified"] is not None
    _prepare_target(dst, "disabled")
    result = redis_restore.run_restore(base.conn_params(dst, src=str(dest), method="replication"))
    assert result["verification"] == "manifest"
    assert snapshot(dst) == expected
    # method restore parses the RDB itself: always the full pass
    result = redis_restore.run_restore(base.conn_params(dst, src=str(dest), method="restore"))
    assert result["verification"] == "full"


def _restore_from_s3_in_child(dst, s3params, prefix, extra):
    try:
        base.restore_from_s3(dst, s3params, prefix, **extra)
    finally:
        os._exit(0)  # pylint: disable=protected-access


def test_rerun_after_a_killed_streamed_restore_puts_repl_diskless_load_back(lab_handle, servers, s3):
    """The streamed transfer sets repl-diskless-load to disabled; a module killed mid-restore leaves it so, and the
    re-run's repair (which reads the crash record from the target's one-time masterauth) puts the old value back."""
    src, dst = servers["src"], servers["dst"]
    base.populate(src, bulk=20_000)
    expected = snapshot(src)
    prefix, _backup_result = _backup(src, s3)
    _prepare_target(dst, "swapdb")
    # slow the target's load so the module is still waiting for it when it is killed
    client(dst).config_set("key-load-delay", -10)
    client(dst).config_set("loading-process-events-interval-bytes", 1024)
    port = lab_handle.free_port()
    proc = multiprocessing.get_context("fork").Process(
        target=_restore_from_s3_in_child,
        args=(dst, s3, prefix, {"method": "replication", "listen_port": port, "timeout": 60}),
    )
    proc.start()
    try:
        wait_until(
            lambda: client(dst).info("replication").get("master_port") == port or not proc.is_alive(),
            30,
            "the target to follow the listener",
        )
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup at all
    finally:
        proc.join(10)
    assert client(dst).info("replication").get("master_port") == port
    assert client(dst).config_get("repl-diskless-load")["repl-diskless-load"] == "disabled"
    client(dst).config_set("key-load-delay", 0)

    rerun = base.restore_from_s3(dst, s3, prefix, method="replication", timeout=60)
    assert rerun["repaired"] and rerun["repaired"]["listener"] == f"127.0.0.1:{port}"
    assert rerun["target_state"] == "restored"
    assert snapshot(dst) == expected
    assert client(dst).config_get("repl-diskless-load")["repl-diskless-load"] == "swapdb"
    assert client(dst).info("replication")["role"] == "master"
