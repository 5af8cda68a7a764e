"""Benchmark: the hand-written RESP paths (redis_resp) against redis-py, on a real redis-server, in one process.

Usage (no lab needed: it starts its own redis-server):

    .venv/bin/python tests/benchmarks/bench_redis_protocol.py [--keys 200000] [--big 4] [--repeat 3]

* pipelined RESTORE: the RDB of ``--keys`` small keys of mixed types (bench_redis_rdb's fill) plus ``--big`` large
  ones (8 MiB strings and a 100,000-field hash each) is restored into an empty server by
  ``redis_restore._restore_range`` (payloads sliced from the RDB, 1 MiB batches written while the previous batch's
  replies are read, replies counted without building objects), then by redis-py's ``pipeline(transaction=False)``
  with the same payloads and the same 1 MiB batches (``execute(raise_on_error=False)``). Both on a connection of
  ``redis_client``; the target is flushed between runs; ``--repeat`` rounds in alternating order, medians, the
  process's CPU seconds next to the wall time.
* SYNC: ``redis_backup.fetch_rdb`` (a streamed RDB, bounded memory) against redis-py sending the same REPLCONFs and
  reading the reply to ``SYNC`` with ``read_response()``, with the source's disk-based full sync (``$<size>``
  framing) and its diskless one (an EOF mark); each in a forked child, whose peak RSS is reported.

Figures are ratios against the hand-written path in the same run; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".venv" / "collections"))
sys.path.insert(0, str(REPO))

# pylint: disable=wrong-import-position
from ansible_collections.hanzo.kms.plugins.module_utils import (  # noqa: E402
    redis_backup,
    redis_client,
    redis_rdb,
    redis_restore,
)
from ansible_collections.hanzo.kms.plugins.module_utils.redis_resp import RespConnection  # noqa: E402
from tests.benchmarks.bench_redis_rdb import Server, fill  # noqa: E402

BATCH_BYTES = 1 << 20  # _restore_range's default batch


def fill_large(server, count):
    """``count`` 8 MiB strings and ``count`` hashes of 100,000 fields."""
    script = (
        "for i = 1, tonumber(ARGV[1]) do "
        "redis.call('SET', 'large:str:' .. i, string.rep('v', 8 * 1048576)) "
        "for j = 1, 100000, 1000 do local args = {} "
        "for k = j, j + 999 do args[#args + 1] = 'f' .. k; args[#args + 1] = 'value-' .. k end "
        "redis.call('HSET', 'large:hash:' .. i, unpack(args)) end end"
    )
    server.command("EVAL", script, 0, count)


def restore_hand_written(params, rdb, now_ms):
    client = redis_client.connect(params, timeout=600)
    try:
        stats = redis_restore._restore_range(RespConnection.on(client), rdb, redis_rdb.HEADER_LEN, None, 0, now_ms)  # pylint: disable=protected-access
    finally:
        client.close()
    return sum(stats["restored"].values()), len(stats["errors"])


def restore_redis_py(params, rdb, now_ms):
    """The same RESTOREs through redis-py's pipeline, batched by the same payload bytes."""
    client = redis_client.connect(params, timeout=600)
    pipe = client.redis.pipeline(transaction=False)
    version_bytes = rdb.version.to_bytes(2, "little")
    crc = redis_rdb.crc64_function()
    restored = errors = size = 0
    current_db = None

    def flush():
        return sum(1 for reply in pipe.execute(raise_on_error=False) if isinstance(reply, Exception))

    try:
        for rec in rdb.records_between(redis_rdb.HEADER_LEN, None, 0):
            expire = rec.expire_ms
            if expire is not None and 0 < expire <= now_ms:
                continue
            if rec.db != current_db:
                pipe.execute_command("SELECT", rec.db)
                current_db = rec.db
            payload = redis_restore.dump_payload(rdb.buf, rec, version_bytes, crc)
            ttl = expire if expire is not None and expire > 0 else 0
            pipe.execute_command("RESTORE", rec.key, ttl, payload, "REPLACE", "ABSTTL")
            restored += 1
            size += len(payload) + len(rec.key)
            if size >= BATCH_BYTES:
                errors += flush()
                size = 0
        errors += flush()
    finally:
        client.close()
    return restored, errors


def measured(func, *args):
    cpu = time.process_time()
    start = time.monotonic()
    value = func(*args)
    return time.monotonic() - start, time.process_time() - cpu, value


def in_child(func):
    """``func()``'s JSON-able result in a forked child, with the child's peak RSS (MiB)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            data = json.dumps(func())
        except Exception as exc:  # pylint: disable=broad-exception-caught
            data = json.dumps({"error": f"{exc.__class__.__name__}: {exc}"})
        with os.fdopen(write_fd, "w") as handle:
            handle.write(data)
        os._exit(0)  # pylint: disable=protected-access
    os.close(write_fd)
    with os.fdopen(read_fd) as handle:
        data = handle.read()
    _pid, _status, usage = os.wait4(pid, 0)
    result = json.loads(data)
    result["peak_rss_mib"] = round(usage.ru_maxrss / 1024, 1)
    return result


def sync_hand_written(params):
    total = [0]

    def sink(chunk):
        total[0] += len(chunk)

    start = time.monotonic()
    size, _info = redis_backup.fetch_rdb(params, sink)
    return {"seconds": round(time.monotonic() - start, 3), "bytes": size}


def sync_redis_py(params, replconf):
    """redis-py has no SYNC reader: the reply is read as one RESP value (the whole RDB in memory), after fetch_rdb's
    REPLCONFs (``replconf``) or without them; the diskless transfer's EOF-mark framing is no RESP value at all."""
    client = redis_client.connect(params, timeout=600)
    try:
        start = time.monotonic()
        if replconf:
            client.execute_command("REPLCONF", "capa", "eof")
            client.execute_command("REPLCONF", "rdb-only", "1")
        connection = client.redis.connection
        connection.send_command("SYNC")
        reply = connection.read_response()
        return {"seconds": round(time.monotonic() - start, 3), "bytes": len(reply)}
    finally:
        client.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--big", type=int, default=4, help="large keys of each kind (8 MiB string, 100k-field hash)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-redis-protocol-")
    source = Server(workdir, "source").start()
    target = Server(workdir, "target").start()
    try:
        source.wait_loaded()
        target.wait_loaded()
        fill(source, args.keys)
        fill_large(source, args.big)
        dump = Path(workdir, "dump.rdb")
        backup = redis_backup.run_backup(dict(source.params(), dest=str(dump), verify_structure=False))
        rdb, buf, handle = redis_restore.verify_source(str(dump), None, backup["sha256"])
        keys = sum(rdb.summary.keys_per_db.values())
        print(f"RDB: {keys} keys, {dump.stat().st_size / 1048576:.1f} MiB, redis-server {backup['server_version']}")
        now_ms = int(time.time() * 1000)
        paths = {"hand-written (redis_resp)": restore_hand_written, "redis-py pipeline": restore_redis_py}
        runs = {name: [] for name in paths}
        for round_no in range(args.repeat):
            order = list(paths) if round_no % 2 == 0 else list(reversed(paths))
            for name in order:
                target.command("FLUSHALL")
                wall, cpu, (restored, errors) = measured(paths[name], target.params(), rdb, now_ms)
                assert restored == keys and errors == 0 and int(target.command("DBSIZE")) == keys, (restored, errors)
                runs[name].append((wall, cpu))
        base_wall = statistics.median(w for w, _c in runs["hand-written (redis_resp)"])
        base_cpu = statistics.median(c for _w, c in runs["hand-written (redis_resp)"])
        print(f"\nRESTORE of {keys} keys, median of {args.repeat} (wall s, client CPU s, ratios to hand-written):")
        for name, values in runs.items():
            wall = statistics.median(w for w, _c in values)
            cpu = statistics.median(c for _w, c in values)
            print(
                f"  {name:28s} {wall:7.2f} s  {cpu:7.2f} s CPU   x{wall / base_wall:.2f} wall  x{cpu / base_cpu:.2f} CPU"
            )
        buf.close()
        handle.close()

        print("\nSYNC (RDB fetch), each in a child process:")
        for mode in ("no", "yes"):
            source.command("CONFIG", "SET", "repl-diskless-sync", mode)
            print(f"  repl-diskless-sync {mode}:")
            print(
                f"    hand-written (fetch_rdb)          {json.dumps(in_child(lambda: sync_hand_written(source.params())))}"
            )
            for replconf in (True, False):
                label = "redis-py, fetch_rdb's REPLCONFs" if replconf else "redis-py, plain SYNC"
                result = in_child(lambda: sync_redis_py(source.params(), replconf))  # noqa: B023
                print(f"    {label:33s} {json.dumps(result)}")
        print(f"\nthis process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    finally:
        source.stop()
        target.stop()


if __name__ == "__main__":
    main()
