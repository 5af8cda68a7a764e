"""Benchmark: the RDB structure pass with and without value validation, on an existing RDB file.

Usage:

    .venv/bin/python tests/benchmarks/bench_rdb_structure_pass.py DUMP.RDB [--repeat 3]

Prints the median CPU seconds (``time.process_time``, less sensitive to other load than wall time) of:

* ``RdbFile.scan(validate=False)``: framing only (what the pass did before it validated values);
* ``RdbFile.scan()``: the restore's verification pass (framing + every value validated);
* ``StreamValidator`` fed 256 KiB chunks: the backup's streaming validation with ``analyze: true`` (CRC64 + SHA-256
  included).

The figures in docs/benchmarks.md use the 1M-mixed-key RDB of ``bench_redis_rdb.py`` (its ``FILL`` Lua script run
into a scratch redis-server in batches of 100,000, then ``SAVE``); ``redis-cli --rdb`` makes one from any server.
"""

from __future__ import annotations

import argparse
import mmap
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".venv" / "collections"))
sys.path.insert(0, str(REPO))

# pylint: disable=wrong-import-position
from ansible_collections.hanzo.kms.plugins.module_utils import redis_rdb  # noqa: E402


def stream(buf):
    val = redis_rdb.StreamValidator(structure=True)
    for i in range(0, len(buf), 262144):
        val.feed(buf[i : i + 262144])
    return val.finish()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rdb")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with open(args.rdb, "rb") as handle:
        buf = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        cases = (
            ("scan(validate=False), framing only", lambda: redis_rdb.RdbFile(buf).scan(validate=False)),
            ("scan(), values validated", lambda: redis_rdb.RdbFile(buf).scan()),
            ("StreamValidator, values validated", lambda: stream(buf)),
        )
        for label, func in cases:
            times = []
            summary = None
            for _unused in range(args.repeat):
                started = time.process_time()
                summary = func()
                times.append(time.process_time() - started)
            keys = sum(summary.keys_per_db.values())
            print(
                f"{label:40s} {statistics.median(times):6.3f} s CPU  {keys} keys  "
                f"({keys / statistics.median(times) / 1000:.0f}k keys/s; rounds {', '.join(f'{t:.3f}' for t in times)})"
            )
        buf.close()


if __name__ == "__main__":
    main()
