"""Benchmark: redis_rdb_backup / redis_rdb_restore on 1M keys of mixed types, against Redis's own figures.

Usage (needs the lab's S3: ``make lab-up``, or pass --lab-dir of a running lab):

    .venv/bin/python tests/benchmarks/bench_redis_rdb.py [--lab-dir DIR] [--keys 1000000] [--big-mb 1024]

Everything is measured in one run on the same machine:

* a source Redis (``save ""``, no AOF, ``repl-diskless-sync-delay 0``) is filled server-side (Lua) with ``--keys``
  keys: 70 % strings, 10 % hashes, 10 % lists, 5 % sorted sets, 5 % sets, 1 % of them with a TTL;
* backup: ``run_backup`` streaming to S3 vs ``redis-cli --rdb`` to disk followed by a boto3 ``upload_file`` of that
  file (the baseline), and the peak RSS of a child process doing the streaming backup of a ``--big-mb`` RDB;
* restore: the time ``redis-server`` takes to load the same ``dump.rdb`` at startup (its own "DB loaded from disk"
  figure and the wall time from spawn to ``loading:0``), next to each method of ``run_restore`` into a fresh empty
  server of the same version: ``replication``, ``restore`` with 1 and 2 connections, ``file`` (+ start);
* restore from S3 with ``method: replication`` (download and verification included), ``--repeat`` rounds, medians:
  the backup's manifest with its recorded check (overlapped transfer, no structure pass), the same object with a
  manifest that records no check (overlapped, structure pass on the stream), and verify-then-send
  (``overlap_transfer: false``); each against the native load measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".venv" / "collections"))
sys.path.insert(0, str(REPO))

# pylint: disable=wrong-import-position
from ansible_collections.hanzo.kms.plugins.module_utils import redis_backup, redis_client, redis_rdb, redis_restore  # noqa: E402
from ansible_collections.hanzo.kms.plugins.module_utils.s3 import s3_client  # noqa: E402
from tests.ansible_run import local_args, run_ansible  # noqa: E402
from tests.lab.core import free_port  # noqa: E402

REDIS_SERVER = shutil.which("redis-server", path="/usr/bin:/usr/local/bin") or "redis-server"
REDIS_CLI = shutil.which("redis-cli", path="/usr/bin:/usr/local/bin") or "redis-cli"

FILL = """
local n = tonumber(ARGV[1])
local start = tonumber(ARGV[2])
for i = start, start + n - 1 do
  local r = i % 100
  if r < 70 then
    redis.call('SET', 'str:' .. i, 'value-' .. i .. '-' .. string.rep('x', 40))
  elseif r < 80 then
    redis.call('HSET', 'hash:' .. i, 'name', 'n' .. i, 'count', i, 'flag', 'yes')
  elseif r < 90 then
    redis.call('RPUSH', 'list:' .. i, 'a' .. i, 'b', 'c', 'd')
  elseif r < 95 then
    redis.call('ZADD', 'zset:' .. i, 1, 'a', 2, 'b', 3.5, 'c' .. i)
  else
    redis.call('SADD', 'set:' .. i, 'x', 'y', 'z' .. i)
  end
  if i % 100 == 7 then
    redis.call('PEXPIRE', 'str:' .. i, 86400000)
  end
end
return n
"""


class Server:
    def __init__(self, workdir, name, extra=(), dbfilename="dump.rdb"):
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = self.dir / "server.log"
        self.argv = [
            REDIS_SERVER,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dbfilename",
            dbfilename,
            "--logfile",
            str(self.log),
            "--repl-diskless-sync-delay",
            "0",
            *extra,
        ]
        self.proc = None

    def start(self):
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # pylint: disable=consider-using-with
        return self

    def params(self):
        return {"host": "127.0.0.1", "port": self.port}

    def wait_loaded(self, timeout=600):
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = redis_client.connect(self.params(), timeout=5)
                try:
                    info = conn.info("persistence")
                finally:
                    conn.close()
                if info.get("loading") == 0:
                    return time.monotonic() - self.started
            except (redis_client.RedisError, OSError):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not finish loading")
            time.sleep(0.005)

    def command(self, *args):
        conn = redis_client.connect(self.params(), timeout=600)
        try:
            return conn.execute_command(*args)
        finally:
            conn.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120)


def fill(server, keys, batch=100_000):
    done = 0
    while done < keys:
        n = min(batch, keys - done)
        server.command("EVAL", FILL, 0, n, done)
        done += n


def fill_big(server, megabytes):
    script = "for i = 1, tonumber(ARGV[1]) do redis.call('SET', 'big:' .. i, string.rep(string.char(65 + i % 26), 1048576 - 64) .. i) end"
    server.command("EVAL", script, 0, megabytes)


def timed(func):
    start = time.monotonic()
    value = func()
    return time.monotonic() - start, value


def native_load_seconds(log_path):
    match = re.findall(r"DB loaded from disk: ([0-9.]+) seconds", Path(log_path).read_text(errors="replace"))
    return float(match[-1]) if match else None


def lab_s3(lab_dir):
    state = json.loads((Path(lab_dir) / "state.json").read_text())
    entry = state["s3"]
    params = {k: entry[k] for k in ("endpoint_url", "region", "access_key", "secret_key")}
    params.update(addressing_style="path", ca_bundle=entry["ca_file"])
    return params, entry["bucket"]


def module_backup_rss(params, workdir):
    """Run ``hanzo.kms.redis_rdb_backup`` through ``ansible`` (AnsiballZ wrapper included); return (seconds, peak RSS MiB).

    The module's interpreter is a small wrapper that runs the real Python as its child and records the child's peak
    RSS (``RUSAGE_CHILDREN``); the wrapper itself is smaller than the module, so the figure is the module's.
    """
    out = Path(workdir) / "module-rss.txt"
    wrapper = Path(workdir) / "python-rss"
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import resource, subprocess, sys\n"
        "rc = subprocess.call([sys.executable] + sys.argv[1:])\n"
        f"open({str(out)!r}, 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
        "sys.exit(rc)\n"
    )
    wrapper.chmod(0o755)
    run = run_ansible(
        "ansible",
        "localhost",
        *local_args(wrapper),
        "-m",
        "hanzo.kms.redis_rdb_backup",
        "-a",
        json.dumps(params),
        must_succeed=True,
    )
    return run.seconds, int(out.read_text()) / 1024


def child_backup_rss(params_json):
    """Run one streaming backup in a child process; return (seconds, peak RSS MiB, RSS MiB before the backup).

    The peak is the child's VmHWM: ``ru_maxrss`` would report the parent's RSS, since Linux carries the high-water
    mark across the fork+exec that starts the child.
    """
    code = (
        "import json,sys,time;sys.path.insert(0,{!r});"
        "from ansible_collections.hanzo.kms.plugins.module_utils import redis_backup;"
        "from ansible_collections.hanzo.kms.plugins.module_utils.s3 import s3_client;"
        "p=json.loads(sys.argv[1]);c=s3_client(p);c.list_buckets();"
        "base=int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])/1024;"
        "t=time.monotonic();"
        "redis_backup.run_backup(p, s3_client_factory=lambda: c);"
        "hwm=int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])/1024;"
        "print(json.dumps([time.monotonic()-t, hwm, base]))".format(str(REPO / ".venv" / "collections"))
    )
    out = subprocess.run([sys.executable, "-c", code, params_json], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lab-dir", default=os.environ.get("HANZO_KMS_LAB_DIR", str(REPO / ".lab")))
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the backup comparison (medians reported)")
    parser.add_argument(
        "--restore-rounds",
        type=int,
        default=0,
        help="rounds of the S3 replication restores (medians reported; default: --repeat)",
    )
    parser.add_argument(
        "--big-mb", type=int, default=1024, help="size in MiB of the RDB for the peak-memory check (0: skip)"
    )
    args = parser.parse_args()
    s3params, bucket = lab_s3(args.lab_dir)
    s3c = s3_client(s3params)
    work = Path(tempfile.mkdtemp(prefix="bench-redis-rdb-"))
    servers = []
    rows = []

    def row(what, seconds, note=""):
        rows.append((what, seconds, note))
        print(f"{what:<70} {seconds:8.2f} s  {note}", flush=True)

    print(f"load average at the start: {os.getloadavg()}", flush=True)
    try:
        src = Server(work, "src").start()
        servers.append(src)
        src.wait_loaded()
        fill(src, args.keys)
        keys = int(src.command("DBSIZE"))
        print(f"source: {keys} keys, redis-server {src.command('INFO', 'server')['redis_version']}")

        # ---- backup -------------------------------------------------------------------------------------------
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        params = dict(src.params(), bucket=bucket, prefix=prefix, site="dc1", **s3params)
        params_an = dict(params, analyze=True)
        cli_file = work / "cli.rdb"
        cli_argv = [REDIS_CLI, "-p", str(src.port), "--rdb", str(cli_file)]
        # --repeat rounds, the order alternating, medians reported: single runs move by +-20 % on 2 shared cores
        times = {"cli": [], "upload": [], "base": [], "stream": [], "analyze": [], "fetch": [], "nostructure": []}
        for round_no in range(args.repeat):

            def run_baseline():
                t_cli, _unused = timed(lambda: subprocess.run(cli_argv, check=True, capture_output=True))
                t_upload, _unused = timed(lambda: s3c.upload_file(str(cli_file), bucket, f"{prefix}/baseline/dump.rdb"))
                times["cli"].append(t_cli)
                times["upload"].append(t_upload)
                times["base"].append(t_cli + t_upload)

            if round_no % 2:
                run_baseline()
            t_backup, result = timed(
                lambda: redis_backup.run_backup(params, s3_client_factory=lambda: s3_client(s3params))
            )
            times["stream"].append(t_backup)
            if not round_no % 2:
                run_baseline()
            t_an, _unused = timed(
                lambda: redis_backup.run_backup(params_an, s3_client_factory=lambda: s3_client(s3params))
            )
            times["analyze"].append(t_an)
            # the previous default: CRC64 + SHA-256 only, nothing recorded for the restore
            t_nos, _unused = timed(
                lambda: redis_backup.run_backup(
                    dict(params, verify_structure=False), s3_client_factory=lambda: s3_client(s3params)
                )
            )
            times["nostructure"].append(t_nos)
            # the transfer alone (received and validated, not stored): what streaming adds on top of it is the upload
            validator = redis_rdb.StreamValidator(structure=False)
            t_fetch, _unused = timed(lambda v=validator: redis_backup.fetch_rdb(src.params(), v.feed))
            times["fetch"].append(t_fetch)
        size = result["size"]
        med = {k: statistics.median(v) for k, v in times.items()}
        base = med["base"]
        print(f"RDB: {size / 1e6:.1f} MB; medians of {args.repeat} rounds")
        row("backup: redis-cli --rdb to disk", med["cli"])
        row(
            "backup: redis_rdb_backup's transfer alone (validated, not stored)",
            med["fetch"],
            f"{med['fetch'] / med['cli']:.2f}x redis-cli --rdb",
        )
        row("backup: boto3 upload_file of that file", med["upload"])
        row(
            "backup baseline: redis-cli --rdb + upload",
            base,
            "1.00x; rounds: " + ", ".join(f"{t:.2f}" for t in times["base"]),
        )
        row(
            "backup: redis_rdb_backup streaming to S3, verify_structure=false (CRC64 + sha256; the old default)",
            med["nostructure"],
            f"{med['nostructure'] / base:.2f}x baseline; rounds: "
            + ", ".join(f"{t:.2f}" for t in times["nostructure"]),
        )
        row(
            "backup: redis_rdb_backup streaming to S3, defaults (+ structure pass recorded in the manifest)",
            med["stream"],
            f"{med['stream'] / base:.2f}x baseline, {med['stream'] / med['nostructure']:.2f}x verify_structure=false; "
            "rounds: " + ", ".join(f"{t:.2f}" for t in times["stream"]),
        )
        row("backup: same with analyze=true", med["analyze"], f"{med['analyze'] / base:.2f}x baseline")
        assert result["manifest"]["verified"], "the default backup recorded no structure check"

        dump = work / "dump.rdb"
        shutil.copyfile(cli_file, dump)

        # ---- native load ---------------------------------------------------------------------------------------
        native = Server(work, "native")
        shutil.copyfile(dump, native.dir / "dump.rdb")
        native.start()
        servers.append(native)
        t_native_wall = native.wait_loaded()
        t_native = native_load_seconds(native.log) or t_native_wall
        native.stop()
        row("native: redis-server loads dump.rdb at startup (its log figure)", t_native, "1.00x")
        row("native: spawn to loading:0 (wall)", t_native_wall, f"{t_native_wall / t_native:.2f}x")

        # ---- replication restore from S3 -------------------------------------------------------------------------
        # the last default backup (manifest with its recorded check) and a copy whose manifest records none
        manifest = json.loads(s3c.get_object(Bucket=bucket, Key=result["manifest_key"])["Body"].read())
        plain_prefix = f"{prefix}/no-record/"
        s3c.copy_object(
            Bucket=bucket, Key=plain_prefix + "dump.rdb", CopySource={"Bucket": bucket, "Key": result["key"]}
        )
        s3c.put_object(
            Bucket=bucket,
            Key=plain_prefix + "manifest.json",
            Body=json.dumps({k: v for k, v in manifest.items() if k != "verified"}).encode(),
        )
        s3_cases = (
            ("S3, manifest with recorded check, overlapped", {"key": result["key"]}),
            ("S3, manifest without recorded check, overlapped", {"key": plain_prefix + "dump.rdb"}),
            ("S3, manifest with recorded check, verify-then-send", {"key": result["key"], "overlap_transfer": False}),
            (
                "S3, manifest without recorded check, verify-then-send (before)",
                {"key": plain_prefix + "dump.rdb", "overlap_transfer": False},
            ),
        )
        s3_times = {label: [] for label, _unused in s3_cases}
        s3_natives = []
        s3_results = {}
        for round_no in range(args.restore_rounds or args.repeat):
            # the native load is measured in every round, next to the restores it is compared with
            native_r = Server(work, f"native-s3-{round_no}")
            shutil.copyfile(dump, native_r.dir / "dump.rdb")
            native_r.start()
            servers.append(native_r)
            wall = native_r.wait_loaded()
            s3_natives.append(native_load_seconds(native_r.log) or wall)
            native_r.stop()
            for label, extra in s3_cases if not round_no % 2 else tuple(reversed(s3_cases)):
                target = Server(work, f"t-s3-{round_no}-{len(s3_times[label])}-{uuid.uuid4().hex[:4]}").start()
                servers.append(target)
                target.wait_loaded()
                rparams = dict(target.params(), bucket=bucket, method="replication", **s3params, **extra)
                t_total, res = timed(
                    lambda p=rparams: redis_restore.run_restore(p, s3_client_factory=lambda: s3_client(s3params))
                )
                got = int(target.command("DBSIZE"))
                if got != keys:
                    raise RuntimeError(f"{label}: {got} keys restored, expected {keys}")
                s3_times[label].append(t_total)
                s3_results[label] = res
                target.stop()
                shutil.rmtree(target.dir, ignore_errors=True)
        t_native_s3 = statistics.median(s3_natives)
        row(
            "native (S3 block): redis-server loads dump.rdb at startup, median",
            t_native_s3,
            "1.00x; rounds: " + ", ".join(f"{t:.2f}" for t in s3_natives),
        )
        for label, _unused in s3_cases:
            med_t = statistics.median(s3_times[label])
            res = s3_results[label]
            row(
                f"restore replication from {label}: total",
                med_t,
                f"{med_t / t_native_s3:.2f}x native (goal <= 1.3x for the recorded check, overlapped); "
                f"verification={res['verification']}, transfer={res['replication'].get('transfer')}; rounds: "
                + ", ".join(f"{t:.2f}" for t in s3_times[label]),
            )

        # ---- restore methods -----------------------------------------------------------------------------------
        for label, extra in (
            ("replication", {"method": "replication"}),
            ("restore, 1 connection", {"method": "restore", "connections": 1}),
            ("restore, 2 connections", {"method": "restore", "connections": 2}),
        ):
            target = Server(work, f"t-{label.split(',', maxsplit=1)[0]}-{extra.get('connections', 0)}").start()
            servers.append(target)
            target.wait_loaded()
            rparams = dict(target.params(), src=str(dump), **extra)
            t_total, res = timed(lambda p=rparams: redis_restore.run_restore(p))
            got = int(target.command("DBSIZE"))
            # verification (sha256, structure + CRC pass) happens before the target is touched; report both
            t_verify, _unused = timed(
                lambda: redis_restore.verify_source(str(dump), None, redis_restore.sha256_file(str(dump)))
            )
            t_apply = t_total - t_verify
            rate = keys / t_total
            row(
                f"restore method {label}: total",
                t_total,
                f"{t_total / t_native:.2f}x native, {rate / 1000:.0f}k keys/s, {got} keys, {sum(res['keys_expired'].values())} expired",
            )
            row(
                f"restore method {label}: after verification",
                t_apply,
                f"{t_apply / t_native:.2f}x native, {keys / t_apply / 1000:.0f}k keys/s",
            )
            target.stop()
        ftarget = Server(work, "t-file")
        fparams = {
            "src": str(dump),
            "method": "file",
            "data_dir": str(ftarget.dir),
            "port": ftarget.port,
            "check_stopped": True,
        }
        t_file, _unused = timed(lambda: redis_restore.run_restore(fparams))
        ftarget.start()
        servers.append(ftarget)
        t_file_load = ftarget.wait_loaded()
        row("restore method file: verify + place", t_file, "")
        row(
            "restore method file: + server start to loading:0",
            t_file + t_file_load,
            f"{(t_file + t_file_load) / t_native:.2f}x native",
        )
        ftarget.stop()

        # ---- bounded memory --------------------------------------------------------------------------------------
        if args.big_mb:
            # rdbcompression off: the strings are repetitive, and LZF would shrink the "1 GiB" RDB to ~12 MB
            big = Server(work, "big", extra=("--rdbcompression", "no")).start()
            servers.append(big)
            big.wait_loaded()
            fill_big(big, args.big_mb)
            big_file = work / "big.rdb"
            t_cli, _unused = timed(
                lambda: subprocess.run(
                    [REDIS_CLI, "-p", str(big.port), "--rdb", str(big_file)], check=True, capture_output=True
                )
            )
            t_upload, _unused = timed(lambda: s3c.upload_file(str(big_file), bucket, f"{prefix}/baseline/big.rdb"))
            big_size = big_file.stat().st_size
            big_file.unlink()
            row(f"big RDB ({big_size / 2**20:.0f} MiB): redis-cli --rdb + upload baseline", t_cli + t_upload, "1.00x")
            for label, extra in (
                ("defaults (part_size 5, upload_concurrency 1)", {}),
                ("part_size 8, upload_concurrency 2", {"part_size": 8, "upload_concurrency": 2}),
            ):
                bparams = dict(big.params(), bucket=bucket, prefix=prefix, site="big", **s3params, **extra)
                seconds, rss, base_rss = child_backup_rss(json.dumps(bparams))
                row(
                    f"big RDB streaming to S3, {label}",
                    seconds,
                    f"{seconds / (t_cli + t_upload):.2f}x baseline; backup process peak RSS (VmHWM) {rss:.0f} MiB "
                    f"(goal <= 64 MiB), {base_rss:.0f} MiB before the backup (Python + boto3), growth {rss - base_rss:.0f} MiB",
                )
            seconds, rss = module_backup_rss(
                dict(big.params(), bucket=bucket, prefix=prefix, site="big", **s3params), work
            )
            row(
                "big RDB streaming to S3, the module through `ansible`, defaults",
                seconds,
                f"module process peak RSS {rss:.0f} MiB (goal <= 64 MiB; includes Ansible's module wrapper)",
            )
            big.stop()
        print(f"load average at the end: {os.getloadavg()}")
        print("\nJSON " + json.dumps([{"what": w, "seconds": round(s, 3), "note": n} for w, s, n in rows]))
        print(f"self peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    finally:
        for server in servers:
            try:
                server.stop()
            except Exception:  # pylint: disable=broad-exception-caught
                pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
