"""``python -m tests.drill.crash``: crash tests of switchover.yml and failover.yml (issue 10).

For every step of a playbook, the playbook is started and killed (SIGKILL to its process group, as a crashed
control node or a cancelled AWX job) shortly after the report shows that step running; then the same command is
run again and must complete. The end state is compared with the state an uninterrupted run left:
which Cluster is primary and which PostgreSQL accepts writes, the KMS replicas per site, every HAProxy server's
admin state, which site answers through the LB, and a marker secret written before the crash.

Switchover crashes alternate direction on one lab (dc1 -> dc2 killed at step 1, re-run; dc2 -> dc1 killed at step 2,
re-run; ...). Every failover crash needs a lab where dc1 has just been lost: a fresh lab per step
(lab up, install, backup, kill dc1). Results go to ``<out>/crash.json`` and ``crash.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.ansible_run import LAB_INVENTORY, ansible_argv, ansible_env
from tests.drill.load import LoadClient
from tests.drill.run import DC1_KILLED, kill_processes
from tests.lab import haproxy as lab_haproxy
from tests.lab.core import REPO_ROOT, Lab

SWITCHOVER_STEPS = [
    "preflight",
    "confirm",
    "stop_old_kms",
    "backup_redis",
    "promote",
    "restore_redis",
    "wait_promotion",
    "start_kms",
    "switch_lb",
    "check_lb",
]
FAILOVER_STEPS = [
    "preflight",
    "confirm",
    "fence_old",
    "promote",
    "restore_redis",
    "wait_promotion",
    "start_kms",
    "switch_lb",
    "check_lb",
]


class Runner:
    def __init__(self, lab_dir, out_dir, kill_delay):
        self.lab_dir = Path(lab_dir).resolve()
        self.out_dir = Path(out_dir).resolve()
        self.kill_delay = kill_delay
        self.env = ansible_env(self.lab_dir, PYTHONUNBUFFERED="1")
        self.env.setdefault("HANZO_KMS_CNPG_STANDIN_DELAY", "0.05")
        self.counter = 0

    def log(self, message):
        print(f"[crash {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def command(self, label, argv, kill_at_step=None):
        """Run argv; with kill_at_step, SIGKILL its process group once the newest report shows that step running
        (plus kill_delay seconds). Returns (rc, killed, seconds)."""
        self.counter += 1
        log_path = self.out_dir / f"{self.counter:03d}-{label.replace(' ', '-')}.log"
        reports = self.lab_dir / "reports"
        before = {p: p.stat().st_mtime for p in reports.glob("*.json")} if reports.exists() else {}
        start = time.time()
        with open(log_path, "w", encoding="utf-8") as out:
            proc = subprocess.Popen(
                argv, cwd=REPO_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
            killed = False
            while proc.poll() is None:
                if kill_at_step and step_running(reports, before, kill_at_step):
                    time.sleep(self.kill_delay)  # into the step, not at its first line
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed = True
                    proc.wait()
                    break
                time.sleep(0.1)
        seconds = round(time.time() - start, 1)
        self.log(f"{label}: rc={proc.returncode}{' (killed at ' + kill_at_step + ')' if killed else ''} in {seconds} s")
        return proc.returncode, killed, seconds, log_path.name

    def playbook(self, label, name, *extra, kill_at_step=None):
        return self.command(
            label,
            ansible_argv("ansible-playbook", "-i", LAB_INVENTORY, f"playbooks/{name}.yml", *extra),
            kill_at_step=kill_at_step,
        )

    def lab(self):
        lab = Lab(self.lab_dir)
        lab.load()
        return lab

    def fresh_lab(self):
        subprocess.run(
            [sys.executable, "-m", "tests.lab", "down", "--dir", str(self.lab_dir)],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            check=False,
        )
        for label, argv in (("lab up", [sys.executable, "-m", "tests.lab", "up", "--dir", str(self.lab_dir)]),):
            rc = self.command(label, argv)[0]
            if rc:
                raise RuntimeError(f"{label} failed")
        for name in ("install", "backup"):
            if self.playbook(name, name)[0]:
                raise RuntimeError(f"{name}.yml failed on a fresh lab")

    def write_marker(self, name):
        """A secret written through the LB (PostgreSQL + the serving site's Redis cache) before the crash."""
        url = self.lab().state["lb"]["vip_url"]
        client = LoadClient(url, ca_file=self.lab().state["pki"]["ca_file"])
        status, site, body = client.request("POST", f"/api/v3/secrets/raw/{name}", {"secretValue": name})
        if status != 200:
            raise RuntimeError(f"could not write the marker {name} through {url}: {status} {body}")
        return site

    def snapshot(self, target, markers):
        """The state that matters after a switch to ``target`` (no timestamps, tokens or pids)."""
        lab = self.lab()
        state = lab.state
        import psycopg2  # pylint: disable=import-outside-toplevel
        from kubernetes import client as kube_client  # pylint: disable=import-outside-toplevel
        from kubernetes import config as kube_config

        result = {"sites": {}, "lb": {}, "through_lb": {}}
        for site, entry in state["sites"].items():
            view = {}
            try:
                api = kube_config.new_client_from_config(entry["kube"]["kubeconfig"], context=entry["kube"]["context"])
                custom = kube_client.CustomObjectsApi(api)
                cluster = custom.get_namespaced_custom_object(
                    "postgresql.cnpg.io", "v1", "kms", "clusters", f"kms-pg-{site}", _request_timeout=5
                )
                view["replica_primary"] = cluster["spec"].get("replica", {}).get("primary")
                view["phase"] = cluster.get("status", {}).get("phase")
                deployment = kube_client.AppsV1Api(api).read_namespaced_deployment("kms", "kms", _request_timeout=5)
                view["kms_replicas"] = deployment.spec.replicas
            except Exception as exc:  # pylint: disable=broad-exception-caught
                view["kube"] = f"unreachable ({type(exc).__name__})"
            pg = entry["postgres"]
            try:
                conn = psycopg2.connect(
                    host=pg["host"],
                    port=pg["port"],
                    user=pg["user"],
                    password=pg["password"],
                    dbname=pg["database"],
                    connect_timeout=3,
                )
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_is_in_recovery()")
                    view["postgres"] = "standby" if cur.fetchone()[0] else "primary"
                    if site == target:
                        cur.execute("SELECT name FROM kms_secrets WHERE name = ANY(%s)", (markers,))
                        view["markers_in_postgres"] = sorted(r[0] for r in cur.fetchall())
                conn.close()
            except psycopg2.Error:
                view["postgres"] = "unreachable"
            result["sites"][site] = view
        for instance in state["lb"]["instances"]:
            rows = lab_haproxy.servers_state(instance["socket"])
            result["lb"][instance["name"]] = {name: row.state for name, row in sorted(rows.items())}
            client = LoadClient(instance["frontend_url"], ca_file=state["pki"]["ca_file"])
            status, site, body = client.request("GET", f"/api/v3/secrets/raw/{markers[-1]}")
            result["through_lb"][instance["name"]] = {
                "status": status,
                "site": site,
                "marker": body.get("secret", {}).get("secretValue") if isinstance(body, dict) else None,
            }
        return result


def step_running(reports, before, step):
    """True when a report written by this run (new or changed since ``before``) shows ``step`` running."""
    if not reports.exists():
        return False
    for path in reports.glob("*.json"):
        if path.name.endswith("-latest.json") or before.get(path) == path.stat().st_mtime:
            continue
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # being written
        if any(s.get("name") == step and s.get("result") == "running" for s in report.get("steps", [])):
            return True
    return False


def switch_args(kind, target):
    verb = "FAILOVER" if kind == "failover" else "SWITCHOVER"
    return ("-e", f"{kind}_target_site={target}", "-e", f"{kind}_confirm='{verb} TO {target}'")


def crash_switchover(runner, steps, results):
    runner.fresh_lab()
    markers = []
    reference = {}
    for target in ("dc2", "dc1"):  # uninterrupted runs: the reference states
        markers.append(f"crash-ref-{target}")
        runner.write_marker(markers[-1])
        rc = runner.playbook(f"reference switchover to {target}", "switchover", *switch_args("switchover", target))[0]
        if rc:
            raise RuntimeError(f"the uninterrupted switchover to {target} failed")
        reference[target] = runner.snapshot(target, markers)
    target = "dc2"
    for step in steps:
        markers.append(f"crash-{step}-{target}")
        runner.write_marker(markers[-1])
        crash = runner.playbook(
            f"switchover to {target} killed at {step}",
            "switchover",
            *switch_args("switchover", target),
            kill_at_step=step,
        )
        rerun = runner.playbook(
            f"switchover to {target} re-run after {step}", "switchover", *switch_args("switchover", target)
        )
        got = runner.snapshot(target, markers)
        missing = list(markers)
        want = json.loads(json.dumps(reference[target]))
        for site_view in want["sites"].values():
            site_view.pop("markers_in_postgres", None)
        for site_view in got["sites"].values():
            found = site_view.pop("markers_in_postgres", None)
            if found is not None:
                missing = sorted(set(markers) - set(found))
        for view in want["through_lb"].values():
            view.pop("marker", None)
        marker_through_lb = all(v.pop("marker") == markers[-1] for v in got["through_lb"].values())
        same = got == want and not missing and marker_through_lb
        results.append(
            {
                "playbook": "switchover",
                "step": step,
                "target": target,
                "killed": crash[1],
                "crash_rc": crash[0],
                "rerun_rc": rerun[0],
                "rerun_seconds": rerun[2],
                "same_state": same,
                "missing_markers": missing,
                "marker_through_lb": marker_through_lb,
                **({} if same else {"got": got, "want": want}),
            }
        )
        runner.log(f"switchover {step}: {'OK' if same and rerun[0] == 0 else 'DIFFERENT'}")
        target = "dc1" if target == "dc2" else "dc2"


def crash_failover(runner, steps, results):
    reference = None
    for step in [None] + list(steps):  # None: the uninterrupted reference run
        runner.fresh_lab()
        marker = f"crash-failover-{step or 'reference'}"
        runner.write_marker(marker)
        if runner.playbook("backup with the marker", "backup")[0]:
            raise RuntimeError("backup.yml failed")
        kill_processes(runner.lab(), DC1_KILLED)
        args = switch_args("failover", "dc2")
        crash = runner.playbook(f"failover killed at {step}", "failover", *args, kill_at_step=step) if step else None
        rerun = runner.playbook("failover" + (f" re-run after {step}" if step else " (reference)"), "failover", *args)
        got = runner.snapshot("dc2", [marker])
        missing = sorted({marker} - set(got["sites"]["dc2"].pop("markers_in_postgres", [])))
        marker_through_lb = all(v.pop("marker") == marker for v in got["through_lb"].values())
        if step is None:
            if rerun[0] or missing or not marker_through_lb:
                raise RuntimeError(f"the uninterrupted failover failed or lost the marker: {got}")
            reference = got
            continue
        same = got == reference and not missing and marker_through_lb
        results.append(
            {
                "playbook": "failover",
                "step": step,
                "target": "dc2",
                "killed": crash[1],
                "crash_rc": crash[0],
                "rerun_rc": rerun[0],
                "rerun_seconds": rerun[2],
                "same_state": same,
                "missing_markers": missing,
                "marker_through_lb": marker_through_lb,
                **({} if same else {"got": got, "want": reference}),
            }
        )
        runner.log(f"failover {step}: {'OK' if same and rerun[0] == 0 else 'DIFFERENT'}")


def render(results):
    lines = [
        "# Crash tests: killed at each step, then re-run",
        "",
        "| playbook | killed at step | target | killed mid-run | re-run rc | re-run (s) | same state as an uninterrupted run |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['playbook']} | {r['step']} | {r['target']} | {'yes' if r['killed'] else 'no (finished first)'} "
            f"| {r['rerun_rc']} | {r['rerun_seconds']} | {'yes' if r['same_state'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tests.drill.crash", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=str(REPO_ROOT / ".lab-crash"), help="lab directory (rebuilt)")
    parser.add_argument("--out", help="report directory (default <lab dir>-report)")
    parser.add_argument("--playbook", choices=("switchover", "failover", "both"), default="both")
    parser.add_argument("--steps", help="comma-separated steps (default: all)")
    parser.add_argument("--kill-delay", type=float, default=1.0, help="seconds into the step before the kill")
    args = parser.parse_args(argv)
    out = Path(args.out or f"{Path(args.dir).resolve()}-report")
    out.mkdir(parents=True, exist_ok=True)
    runner = Runner(args.dir, out, args.kill_delay)
    chosen = set(args.steps.split(",")) if args.steps else None
    results = []
    try:
        if args.playbook in ("switchover", "both"):
            crash_switchover(runner, [s for s in SWITCHOVER_STEPS if not chosen or s in chosen], results)
        if args.playbook in ("failover", "both"):
            crash_failover(runner, [s for s in FAILOVER_STEPS if not chosen or s in chosen], results)
    finally:
        (out / "crash.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
        (out / "crash.md").write_text(render(results), encoding="utf-8")
        print(render(results))
    ok = all(r["same_state"] and r["rerun_rc"] == 0 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
