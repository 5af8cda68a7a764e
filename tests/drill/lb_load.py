"""A steady write load through the lab's global LB (the VIP, over TLS) that runs beside playbooks (Molecule's failback
scenario), every acknowledged write recorded. The client is tests/drill/load.py's, run by its own CLI in the
background:

    python -m tests.drill.lb_load start --dir LAB --out FILE [--prefix failback] [--rate 5]
    python -m tests.drill.lb_load stop --out FILE
    python -m tests.drill.lb_load check --dir LAB --out FILE --site dc1 [--prefix failback]

``start`` returns once the client's threads run (pid in ``FILE.pid``, output in ``FILE.log``; it stops by itself after
``--max-seconds``); ``stop`` has it write every request to FILE (JSON lines) and exit; ``check`` compares the
acknowledged writes with what the site's database holds. ``stop`` and ``check`` print a summary (JSON): requests,
failed requests, acknowledged writes, the sites that served, and for ``check`` the acknowledged writes lost
``[name, value acknowledged, value found]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.drill import analysis, load
from tests.lab import site_db
from tests.lab.core import REPO_ROOT, Lab, LabError, pid_alive, wait_until

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0  # the client finishes its requests in flight (2 s timeout each) and writes its records


def paths(out):
    """(records, pid file, log) of the load whose records go to ``out``."""
    out = Path(out)
    return out, out.with_name(out.name + ".pid"), out.with_name(out.name + ".log")


def _running(pid_file):
    """The pid of the load client recorded in ``pid_file`` while it still runs, else None."""
    try:
        pid = int(pid_file.read_text(encoding="ascii"))
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            ours = b"tests.drill.load" in cmdline.read()
    except (OSError, ValueError):
        return None
    return pid if ours and pid_alive(pid) else None


def start(lab, out, prefix, rate, max_seconds):
    """Start the load client in its own session; return its pid once its threads run."""
    out, pid_file, log_file = paths(out)
    if _running(pid_file):
        raise LabError(f"a load client already runs (pid file {pid_file}): stop it first")
    out.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "tests.drill.load",
        "--url",
        lab.state["lb"]["vip_url"],
        "--ca-file",
        lab.state["pki"]["ca_file"],
        "--out",
        str(out),
        "--rate",
        str(rate),
        "--prefix",
        prefix,
        "--max-seconds",
        str(max_seconds),
    ]
    with open(log_file, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(  # pylint: disable=consider-using-with
            argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    pid_file.write_text(str(proc.pid), encoding="ascii")

    def ready():
        if proc.poll() is not None:
            raise LabError(
                f"the load client exited ({proc.returncode}): {log_file.read_text(encoding='utf-8')[-2000:]}"
            )
        return load.READY_LINE in log_file.read_text(encoding="utf-8")

    wait_until(ready, START_TIMEOUT, "the load client to start", 0.1)
    return proc.pid


def stop(out):
    """Stop the load client (SIGTERM: it writes its records and exits) and return its records."""
    out, pid_file, log_file = paths(out)
    pid = _running(pid_file)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(pid), STOP_TIMEOUT, "the load client to write its records and exit")
    if not out.exists():
        raise LabError(f"the load client wrote no records to {out} (log {log_file})")
    pid_file.unlink(missing_ok=True)
    return load.read_records(out)


def summary(records, rows=None):
    """What the load saw; with ``rows`` ({name: value} in the surviving database) the acknowledged writes lost."""
    counts = analysis.counts(records)
    acked = analysis.acknowledged_writes(records)
    result = {
        "requests": len(records),
        "failed": counts["write"]["failed"] + counts["read"]["failed"],
        "acknowledged": len(acked),
        "served_by": sorted(counts["sites"]),
    }
    if rows is not None:
        result["lost"] = analysis.lost_writes(acked, rows)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.drill.lb_load", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("start", "stop", "check"))
    parser.add_argument("--dir", help="the lab directory (start, check)")
    parser.add_argument("--out", required=True, help="the records' file (JSON lines)")
    parser.add_argument("--prefix", default="failback", help="the secrets' name prefix")
    parser.add_argument("--rate", type=float, default=5.0, help="writes (and reads) per second")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    parser.add_argument("--site", help="check: the site whose database must hold every acknowledged write")
    args = parser.parse_args(argv)
    try:
        if args.command == "stop":
            print(json.dumps(summary(stop(args.out))))
            return 0
        lab = Lab(args.dir)
        if lab.load() is None or (args.command == "check" and not args.site):
            print(f"{args.command} needs a lab in {lab.dir}" + (" and --site" if args.command == "check" else ""))
            return 1
        if args.command == "start":
            print(f"load client started, pid {start(lab, args.out, args.prefix, args.rate, args.max_seconds)}")
        else:
            rows = site_db.secret_values(lab.state, args.site, f"{args.prefix}-")
            print(json.dumps(summary(load.read_records(args.out), rows)))
    except (LabError, OSError) as exc:
        print(f"load error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
