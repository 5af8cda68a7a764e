"""``make drill`` / ``python -m tests.drill``: the DR drill on the lab, under load, with the real data path.

Steps: lab up -> install.yml -> backup.yml -> load on (writes + reads of secrets through the global LB) ->
switchover.yml to dc2 -> switchover.yml back to dc1 -> backup.yml (a fresh Redis backup, as the schedule would take)
-> lose dc1 -> failover.yml to dc2 -> load off. Then every acknowledged write is looked up in the surviving database
(dc2's) and the report is written: ``<out>/drill.md`` (default out: ``<lab dir>-report``), ``drill.json``,
``timeline.png``, ``requests.jsonl``.

The lab's mode decides what runs and how dc1 is lost (``make drill`` uses operator mode): with the real CNPG operator
(``HANZO_KMS_LAB_CNPG=operator``) every process of dc1's node stops at once (``node.lose_site``: control plane,
PostgreSQL, Redis, the KMS stand-in's pods) and dc2's replica is fed through the object store only; in stand-in mode
dc1's kube-apiserver, PostgreSQL, Redis and KMS stand-in processes are killed and dc2's PostgreSQL streams from dc1.

The lab is left running (``make lab-down`` or ``python -m tests.lab down --dir DIR`` stops it); dc1 stays dead.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.ansible_run import LAB_INVENTORY, ansible_argv, ansible_env
from tests.drill import analysis, load, plot
from tests.lab import node, site_db
from tests.lab.core import REPO_ROOT, Lab, pid_alive, wait_until

DC1_KILLED = ("dc1-kube-apiserver", "dc1-postgres", "dc1-redis", "dc1-kms")


def kill_processes(lab, names):
    """SIGKILL the named lab processes (their whole sessions) at once, as a lost data center: no clean shutdown,
    no final checkpoint. Waits until they are gone; returns the names that were running."""
    procs = [proc for proc in (lab.process(name) for name in names) if lab.process_alive(proc)]
    for proc in procs:
        try:
            os.killpg(proc["pid"], signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            os.kill(proc["pid"], signal.SIGKILL)
    wait_until(lambda: not any(pid_alive(proc["pid"]) for proc in procs), 10, "the killed processes to be gone")
    return [proc["name"] for proc in procs]


class ReplicationSampler:
    """Every ``interval`` s: how far the replica site's PostgreSQL is behind the primary's (bytes of WAL not yet
    replayed), as the application user of each site's database (tests/lab/site_db.py).

    A lab-only view of the PostgreSQL data-loss window beside the failover report's bound (the archived-WAL age): in
    operator mode the replica replays only what reached the object store; in stand-in mode it streams.
    """

    def __init__(self, lab_dir, interval=0.5):
        self.lab_dir = lab_dir
        self.interval = interval
        self.samples = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def sample(self):
        state = Lab(self.lab_dir).load()
        taken = time.time()
        positions = {}
        for site in ("dc1", "dc2"):
            recovery, position = site_db.query(
                state,
                site,
                "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() "
                "THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END",
            )[0]
            positions[site] = (recovery, site_db.lsn_bytes(position))
        primary = next(site for site, (recovery, _lsn) in positions.items() if not recovery)
        standby = "dc2" if primary == "dc1" else "dc1"
        return {
            "t": taken,
            "primary": primary,
            "lag_bytes": max(0, positions[primary][1] - (positions[standby][1] or 0)),
        }

    def loop(self):
        while not self.stopping.wait(self.interval):
            try:
                self.samples.append(self.sample())
            except Exception:  # pylint: disable=broad-exception-caught
                continue  # a switch or the kill in progress: no sample this round

    def start(self):
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.thread.join(10)
        return self.samples


class Drill:
    def __init__(self, lab_dir, out_dir, rate, settle):
        self.lab_dir = Path(lab_dir).resolve()
        self.out_dir = Path(out_dir).resolve()
        self.rate = rate
        self.settle = settle
        self.phases = []
        self.replication = []
        # each task's start time and duration in the phase logs: where a playbook's time goes
        self.env = ansible_env(self.lab_dir, ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks")
        self.env.setdefault("HANZO_KMS_CNPG_STANDIN_DELAY", "0.05")

    def log(self, message):
        print(f"[drill {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def phase(self, label, argv, check=True):
        """Run one command as a phase of the drill; its output goes to <out>/<n>-<label>.log."""
        log_path = self.out_dir / f"{len(self.phases) + 1:02d}-{label.replace(' ', '-')}.log"
        self.log(f"{label}: {' '.join(argv)}")
        start = time.time()
        with open(log_path, "w", encoding="utf-8") as out:
            result = subprocess.run(
                argv, cwd=REPO_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, check=False
            )
        end = time.time()
        self.phases.append({"label": label, "start": start, "end": end, "rc": result.returncode, "log": log_path.name})
        self.log(f"{label}: rc={result.returncode} in {end - start:.1f} s (log {log_path})")
        if check and result.returncode != 0:
            raise RuntimeError(f"{label} failed (rc {result.returncode}); see {log_path}")
        return result.returncode

    def playbook(self, label, name, *extra):
        return self.phase(label, ansible_argv("ansible-playbook", "-i", LAB_INVENTORY, f"playbooks/{name}.yml", *extra))

    def lab_state(self):
        lab = Lab(self.lab_dir)
        if lab.load() is None:
            raise RuntimeError(f"no lab in {self.lab_dir}")
        return lab

    def kill_dc1(self):
        lab = self.lab_state()
        start = time.time()
        if lab.state.get("cnpg", {}).get("mode") == "operator":
            stopped = [f"every process of dc1's node ({node.lose_site(lab.dir, 'dc1')})"]
        else:
            stopped = kill_processes(lab, DC1_KILLED)
        self.phases.append({"label": "kill dc1", "start": start, "end": time.time(), "rc": 0, "stopped": stopped})
        self.log(f"killed {', '.join(stopped)}")

    def surviving_rows(self, site):
        return site_db.secret_values(self.lab_state().state, site, "drill-")

    def reports(self):
        """The operation reports (JSON) the playbooks wrote into the lab's report dir, oldest first."""
        found = []
        for path in sorted((self.lab_dir / "reports").glob("**/*.json"), key=lambda p: p.stat().st_mtime):
            try:
                found.append({"file": str(path), "report": json.loads(path.read_text(encoding="utf-8"))})
            except (OSError, ValueError):
                continue
        return found

    def run(self):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.phase("lab up", [sys.executable, "-m", "tests.lab", "up", "--dir", str(self.lab_dir)])
        self.playbook("install", "install")
        self.playbook("backup", "backup")
        url = self.lab_state().state["lb"]["vip_url"]
        client = load.LoadClient(url, rate=self.rate, ca_file=self.lab_state().state["pki"]["ca_file"])
        client.start()
        sampler = ReplicationSampler(self.lab_dir)
        sampler.start()
        self.log(f"load on: {self.rate} writes/s + {self.rate} reads/s through {url}")
        try:
            time.sleep(self.settle)  # a steady state before the first switch, for the timeline
            self.playbook(
                "switchover to dc2",
                "switchover",
                "-e",
                "switchover_target_site=dc2",
                "-e",
                "switchover_confirm='SWITCHOVER TO dc2'",
            )
            time.sleep(self.settle)
            self.playbook(
                "switchover to dc1",
                "switchover",
                "-e",
                "switchover_target_site=dc1",
                "-e",
                "switchover_confirm='SWITCHOVER TO dc1'",
            )
            time.sleep(self.settle)
            self.playbook("backup before loss", "backup")
            time.sleep(self.settle)
            acked_before_loss = len(client.acked)
            self.kill_dc1()
            self.playbook(
                "failover to dc2",
                "failover",
                "-e",
                "failover_target_site=dc2",
                "-e",
                "failover_confirm='FAILOVER TO dc2'",
            )
            time.sleep(self.settle)
        finally:
            records = client.stop()
            self.replication = sampler.stop()
        rows = self.surviving_rows("dc2")
        return self.write_report(records, rows, acked_before_loss)

    def replication_before(self, when):
        """The standby's lag at the last sample before ``when``, and the largest lag of the run (bytes)."""
        before = [x for x in self.replication if x["t"] <= when]
        return {
            "samples": len(self.replication),
            "last_before_kill": before[-1] if before else None,
            "max_lag_bytes": max((x["lag_bytes"] for x in self.replication), default=None),
        }

    def write_report(self, records, rows, acked_before_loss):
        load.write_records(self.out_dir / "requests.jsonl", records)
        acked = analysis.acknowledged_writes(records)
        by_label = {p["label"]: p for p in self.phases}
        kill_time = by_label["kill dc1"]["start"]
        switch_phases = [by_label["switchover to dc2"], by_label["switchover to dc1"]]
        failover = by_label["failover to dc2"]
        acked_until_switch_end = {
            n: v
            for n, v in acked.items()
            if any(r["name"] == n and r["t1"] <= switch_phases[1]["end"] for r in records)
        }
        lost = analysis.lost_writes(acked, rows)
        lost_before_kill = [item for item in lost if item[0] in acked_until_switch_end]
        loss_window = [r for r in records if r["op"] == "write" and r["ok"] and r["t1"] <= kill_time]
        first_dc2 = analysis.first_success_after(records, failover["start"], site="dc2")
        bound = next(
            (
                item["report"]["data_loss"]["postgres"]
                for item in reversed(self.reports())
                if item["report"].get("operation") == "failover"
            ),
            {},
        )
        beyond = (
            analysis.lost_before(records, lost, analysis.iso_seconds(bound["since"])) if bound.get("since") else None
        )
        result = {
            "lab_dir": str(self.lab_dir),
            "rate_per_second": self.rate,
            "phases": self.phases,
            "summaries": [
                analysis.phase_summary(
                    records,
                    p,
                    target_site=p["label"].rsplit(" ", 1)[-1]
                    if p["label"].startswith(("switchover", "failover"))
                    else None,
                )
                for p in self.phases
                if p["label"] not in ("lab up", "install", "backup")
            ],
            "requests": {
                "total": len(records),
                "acknowledged_writes": len(acked),
                "acknowledged_before_dc1_was_killed": acked_before_loss,
            },
            "switchover": {"acknowledged_writes_lost": len(lost_before_kill), "lost": lost_before_kill[:50]},
            "replication_before_kill": self.replication_before(kill_time),
            "failover": {
                "acknowledged_writes_lost": len(lost),
                "lost": lost[:50],
                "rto_seconds_playbook_start_to_first_dc2_success": round(first_dc2["t1"] - failover["start"], 3)
                if first_dc2
                else None,
                "rto_seconds_kill_to_first_dc2_success": round(first_dc2["t1"] - kill_time, 3) if first_dc2 else None,
                "last_acknowledged_write_before_kill": max((r["t1"] for r in loss_window), default=None),
                "report_bound_seconds": bound.get("bound_seconds"),
                "report_bound_since": bound.get("since"),
                "report_bound_approximate": bound.get("approximate"),
                "lost_before_the_bound": beyond,
            },
            "lab_mode": self.lab_state().state.get("cnpg", {}).get("mode", "standin"),
            "operation_reports": self.reports(),
        }
        (self.out_dir / "drill.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
        plot.timeline(
            records,
            [p for p in self.phases if p["label"] not in ("lab up", "install", "backup")],
            self.out_dir / "timeline.png",
            "hanzo.kms DR drill: requests through the global LB",
        )
        (self.out_dir / "drill.md").write_text(render_markdown(result), encoding="utf-8")
        return result


def render_markdown(result):
    fail = result["failover"]
    lines = [
        "# DR drill report",
        "",
        f"Load: {result['rate_per_second']} writes/s + {result['rate_per_second']} reads/s through the global LB; "
        f"{result['requests']['total']} requests, {result['requests']['acknowledged_writes']} acknowledged writes.",
        "",
        "![timeline](timeline.png)",
        "",
        "| phase | wall time (s) | writes ok/total | reads ok/total | longest outage (s) | first success on target (s) |",
        "|---|---|---|---|---|---|",
    ]
    for s in result["summaries"]:
        w, r = s["counts"]["write"], s["counts"]["read"]
        first = s.get("first_success_on_target_seconds")
        lines.append(
            f"| {s['label']} | {s['wall_seconds']} | {w['total'] - w['failed']}/{w['total']} | "
            f"{r['total'] - r['failed']}/{r['total']} | {s['longest_outage_seconds']} | "
            f"{'' if first is None else first} |"
        )
    lines += [
        "",
        "## Switchover (planned, both sites up)",
        "",
        f"Acknowledged writes lost: **{result['switchover']['acknowledged_writes_lost']}** (target 0).",
        "",
        f"## Failover (dc1 lost: {LOSS[result.get('lab_mode', 'standin')]})",
        "",
        f"- RTO, failover playbook start to the first request served by dc2: "
        f"**{fail['rto_seconds_playbook_start_to_first_dc2_success']} s** (target ≤ 60 s)",
        f"- from the kill to the first request served by dc2: {fail['rto_seconds_kill_to_first_dc2_success']} s",
        f"- acknowledged writes lost (RPO): **{fail['acknowledged_writes_lost']}**",
        f"- the failover report's PostgreSQL bound: {bound_text(fail)}",
        f"- PostgreSQL standby lag at the last sample before the kill (every 0.5 s): "
        f"{lag_text(result['replication_before_kill'])}",
        "",
    ]
    for item in result["operation_reports"]:
        report = item["report"]
        if report.get("operation") == "failover":
            lines += [
                f"Failover report `{item['file']}`:",
                "",
                "```json",
                json.dumps(
                    {k: report[k] for k in report if k in ("data_loss", "data_loss_bound", "redis", "steps")},
                    indent=1,
                    default=str,
                )[:4000],
                "```",
                "",
            ]
    return "\n".join(lines) + "\n"


LOSS = {
    "operator": "every process of its node at once: control plane, and the pods of the CNPG operator, PostgreSQL, "
    "Redis and the KMS stand-in",
    "standin": "kube-apiserver, PostgreSQL, Redis, KMS stand-in processes killed",
}


def bound_text(fail):
    if fail.get("report_bound_seconds") is None:
        return "unknown (no archived WAL of dc1 found)"
    beyond = fail.get("lost_before_the_bound") or []
    basis = (
        "approximate: the old site's newest archived WAL"
        if fail.get("report_bound_approximate")
        else "dc2's newest replayed transaction"
    )
    return (
        f"{fail['report_bound_seconds']} s (since {fail['report_bound_since']}, {basis}); lost writes "
        f"acknowledged before it: **{len(beyond)}** (target 0)"
    )


def lag_text(replication):
    last = replication.get("last_before_kill")
    if not last:
        return "no sample"
    return (
        f"{last['lag_bytes']} bytes of WAL not yet replayed by the standby "
        f"(largest during the drill: {replication['max_lag_bytes']} bytes, {replication['samples']} samples)"
    )


def drill_from_args(argv, drill_class, prog, description, default_dir):
    """The drill a command line asks for: ``--dir`` (default $HANZO_KMS_LAB_DIR, else ``default_dir``), ``--out``,
    ``--rate``, ``--settle``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--dir",
        default=os.environ.get("HANZO_KMS_LAB_DIR", str(default_dir)),
        help="lab directory (a fresh one is best: the drill loses dc1)",
    )
    parser.add_argument("--out", help="report directory (default <lab dir>-report)")
    parser.add_argument("--rate", type=float, default=10.0, help="writes per second through the LB (and as many reads)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of steady load between phases")
    args = parser.parse_args(argv)
    return drill_class(args.dir, args.out or f"{Path(args.dir).resolve()}-report", args.rate, args.settle)


def main(argv=None):
    drill = drill_from_args(argv, Drill, "python -m tests.drill", __doc__.splitlines()[0], REPO_ROOT / ".lab-drill")
    result = drill.run()
    print((drill.out_dir / "drill.md").read_text(encoding="utf-8"))
    return (
        0
        if result["switchover"]["acknowledged_writes_lost"] == 0 and not result["failover"]["lost_before_the_bound"]
        else 1
    )
