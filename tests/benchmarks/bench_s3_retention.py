"""Benchmark: hanzo.kms.s3_retention plan + delete on 100k objects vs ``s5cmd rm`` of the same keys.

Usage (the lab must be up: ``make lab-up``, or pass --lab-dir of a running lab):

    .venv/bin/python tests/benchmarks/bench_s3_retention.py [--lab-dir DIR] [--backups 10000] [--objects 10]

Two identical buckets are seeded (with s5cmd, not timed against anything) with ``--backups`` hourly backups of
``--objects`` objects each (``part-N.bin`` + ``manifest.json``) under ``redis/dc1/<UTC timestamp>/``. In bucket A the
retention engine lists, plans (keep_daily 7, keep_weekly 4, keep_monthly 12) and deletes; in bucket B ``s5cmd run``
removes exactly the keys the plan deleted, as ``rm`` commands of 1000 keys each (s5cmd sends one DeleteObjects per
command and runs the commands in parallel). Both buckets must end with the same keys. Figures are printed,
including the ratio of the delete phases measured in this run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".venv" / "collections"))

# pylint: disable=wrong-import-position
from ansible_collections.hanzo.kms.plugins.module_utils.backup_layout import TIMESTAMP_FORMAT  # noqa: E402
from ansible_collections.hanzo.kms.plugins.module_utils.s3 import s3_client  # noqa: E402
from ansible_collections.hanzo.kms.plugins.module_utils.s3_retention import (  # noqa: E402
    DEFAULT_CONCURRENCY,
    Layout,
    Policy,
    Stats,
    build_inventory,
    delete_backups,
    list_objects,
    plan_retention,
)

S5CMD = REPO / ".venv" / "bin" / "s5cmd"


def load_s3(lab_dir):
    state_file = Path(lab_dir) / "state.json"
    if not state_file.exists():
        sys.exit(f"no lab state at {state_file}: run `make lab-up` (or pass --lab-dir of a running lab)")
    return json.loads(state_file.read_text(encoding="utf-8"))["s3"]


def s5(s3, *args, stdin=None):
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=s3["access_key"],
        AWS_SECRET_ACCESS_KEY=s3["secret_key"],
        AWS_REGION=s3["region"],
        SSL_CERT_FILE=s3["ca_file"],  # s5cmd is Go: its CA file variable
        AWS_CA_BUNDLE=s3["ca_file"],  # ... unless the AWS SDK's own is set, which it prefers
    )
    argv = [str(S5CMD), "--endpoint-url", s3["endpoint_url"], *args]
    return subprocess.run(argv, env=env, check=True, capture_output=True, text=True, input=stdin)


def make_tree(root, backups, objects):
    start = datetime(2025, 6, 1, tzinfo=timezone.utc)
    for i in range(backups):
        d = root / "redis" / "dc1" / (start + timedelta(hours=i)).strftime(TIMESTAMP_FORMAT)
        d.mkdir(parents=True)
        for n in range(objects - 1):
            (d / f"part-{n}.bin").write_bytes(b"x")
        (d / "manifest.json").write_text(f'{{"timestamp": "{d.name}"}}', encoding="utf-8")


def all_keys(client, bucket):
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.extend(o["Key"] for o in page.get("Contents", ()))
    return sorted(keys)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab-dir", default=os.environ.get("HANZO_KMS_LAB_DIR", str(REPO / ".lab")))
    parser.add_argument("--backups", type=int, default=10000)
    parser.add_argument("--objects", type=int, default=10, help="objects per backup (incl. the manifest)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help="parallel DeleteObjects requests of the engine (default: the module's)",
    )
    parser.add_argument(
        "--baseline-first",
        action="store_true",
        help="run s5cmd before the engine's delete phase (to check for an ordering bias)",
    )
    args = parser.parse_args()
    s3 = load_s3(args.lab_dir)
    conn = dict(
        endpoint_url=s3["endpoint_url"],
        region=s3["region"],
        access_key=s3["access_key"],
        secret_key=s3["secret_key"],
        addressing_style="path",
        ca_bundle=s3["ca_file"],
    )
    client = s3_client(conn, max_pool_connections=max(10, args.concurrency))
    run_id = uuid.uuid4().hex[:8]
    bucket_a, bucket_b = f"bench-ret-{run_id}-a", f"bench-ret-{run_id}-b"
    total = args.backups * args.objects
    tmp = Path(tempfile.mkdtemp(prefix="bench-s3-retention-"))
    try:
        print(f"seeding 2 buckets with {args.backups} backups x {args.objects} objects = {total} objects each ...")
        t = time.monotonic()
        make_tree(tmp / "tree", args.backups, args.objects)
        for b in (bucket_a, bucket_b):
            client.create_bucket(Bucket=b)
            s5(s3, "--numworkers", "64", "cp", str(tmp / "tree") + "/*", f"s3://{b}/")
        print("  seeded in %.1fs" % (time.monotonic() - t))

        # --- the engine: list + plan, then delete
        stats = Stats()
        layout = Layout(prefix="redis", group_depth=1, data_files=("part-*.bin",))  # the seeded layout, not dump.rdb
        policy = Policy(daily=7, weekly=4, monthly=12)
        t0 = time.monotonic()
        objects, server_now = list_objects(client, bucket_a, layout.prefix, stats=stats)
        t_list = time.monotonic() - t0
        inv = build_inventory(objects, layout)
        plan = plan_retention(inv, policy, server_now or datetime.now(timezone.utc), incomplete_grace=None)
        t_plan = time.monotonic() - t0
        doomed = [b for b in plan if b.action == "delete"]
        deleted_keys = sorted(o.key for b in doomed for o in b.objects)
        lines = [
            "rm " + " ".join(f"s3://{bucket_b}/{k}" for k in deleted_keys[i : i + 1000])
            for i in range(0, len(deleted_keys), 1000)
        ]
        cmd_file = tmp / "rm.txt"
        cmd_file.write_text("\n".join(lines) + "\n", encoding="utf-8")

        def baseline():
            # s5cmd rm of the same keys, 1000 keys per rm command, run in parallel by s5cmd
            start = time.monotonic()
            s5(s3, "run", str(cmd_file))
            return time.monotonic() - start

        t_s5 = baseline() if args.baseline_first else None
        t1 = time.monotonic()
        result = delete_backups(client, bucket_a, doomed, concurrency=args.concurrency, stats=stats)
        t_delete = time.monotonic() - t1
        if result.errors or result.failed_requests:
            sys.exit(f"engine delete failed: {result.errors[:5]} {result.failed_requests}")
        calls = stats.as_dict()
        if t_s5 is None:
            t_s5 = baseline()

        left_a, left_b = all_keys(client, bucket_a), all_keys(client, bucket_b)
        assert left_a == left_b, "the two buckets differ after deletion"
        assert len(left_a) == total - len(deleted_keys)

        lower_list = math.ceil(total / 1000)
        lower_delete = math.ceil(len(deleted_keys) / 1000)
        figures = {
            "objects": total,
            "backups": args.backups,
            "backups_deleted": len(doomed),
            "objects_deleted": len(deleted_keys),
            "list_calls": calls.get("ListObjectsV2", 0),
            "list_calls_lower_bound": lower_list,
            "delete_calls": calls.get("DeleteObjects", 0),
            "delete_calls_lower_bound": lower_delete,
            "list_s": round(t_list, 2),
            "plan_s": round(t_plan, 2),
            "delete_s": round(t_delete, 2),
            "plan_plus_delete_s": round(t_plan + t_delete, 2),
            "s5cmd_rm_s": round(t_s5, 2),
            "delete_vs_s5cmd": round(t_delete / t_s5, 2) if t_s5 else None,
            "concurrency": args.concurrency,
            "order": "s5cmd first" if args.baseline_first else "engine first",
        }
        print(json.dumps(figures, indent=1))
        print(
            f"list calls {figures['list_calls']} (lower bound {lower_list}), "
            f"delete calls {figures['delete_calls']} (lower bound {lower_delete})"
        )
        print(
            f"engine: list {t_list:.2f}s, list+plan {t_plan:.2f}s, delete {t_delete:.2f}s; "
            f"s5cmd rm of the same keys {t_s5:.2f}s; delete ratio {t_delete / t_s5:.2f}"
        )
    finally:
        for b in (bucket_a, bucket_b):
            try:
                s5(s3, "--numworkers", "64", "rm", f"s3://{b}/*")
            except subprocess.CalledProcessError:
                pass
            try:
                client.delete_bucket(Bucket=b)
            except Exception:  # pylint: disable=broad-exception-caught
                pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
