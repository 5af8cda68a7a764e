"""``make drill-partition`` / ``python -m tests.drill.partition``: dc1 partitioned, not crashed (issue 16 item 5).

Steps, on the real CNPG operator (the lab's operator mode; the stand-in lab's KMS, Redis and PostgreSQL are host
processes that no link cut reaches): lab up -> install.yml -> backup.yml -> load on, through the global LB (the VIP)
and from dc1's own clients (a load client inside dc1's network namespace that writes to dc1's KMS directly, as the
data center's applications would) -> backup.yml -> **cut dc1's link** (``python -m tests.lab cut``: dc1's control
plane, node, PostgreSQL primary, Redis and KMS keep running, cut off from dc2, the object store, the LB hosts and the
control node) -> failover.yml to dc2 -> fence.yml started (it waits for dc1 to answer) -> **plug dc1 back** -> fence.yml
fences it (the failover again, which may only finish: the Cluster fenced, then its KMS to 0) -> status.yml -> load off.

The report (``<out>/partition.md``, ``partition.json``, ``timeline.png``, ``requests.jsonl``, ``dc1-local.jsonl``)
counts: acknowledged writes (through the LB) lost; requests the LB had dc1 serve after the cut (must be 0); writes
dc1 accepted from its own clients while cut off and after its return until the fence; the failover RTO (playbook
start -> first request served by dc2 through the VIP); and what status.yml says of both sites. The lab is left
running.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

# after tests.lab, which puts the collection (.venv/collections) on sys.path
from ansible_collections.hanzo.kms.plugins.module_utils import operation_decisions  # pylint: disable=wrong-import-order
from tests.ansible_run import LAB_INVENTORY, ansible_argv
from tests.drill import analysis, load, plot
from tests.drill.run import Drill, drill_from_args
from tests.lab import node
from tests.lab.core import REPO_ROOT

SITE = "dc1"
TARGET = "dc2"
FENCE_PHASE = f"fence.yml (waits for {SITE})"


class PartitionDrill(Drill):
    site_client = None

    def link(self, up):
        """Plug or unplug dc1's link, as a phase."""
        start = time.time()
        node.set_link(self.lab_dir, SITE, up)
        label = f"{'plug' if up else 'cut'} {SITE}"
        self.phases.append({"label": label, "start": start, "end": time.time(), "rc": 0})
        self.log(label)

    def start_site_client(self, rate):
        """A load client inside dc1's network namespace, writing to and reading from dc1's KMS directly (through its
        ingress, over TLS)."""
        kms = self.lab_state().state["sites"][SITE]["kms"]
        self.site_log = self.out_dir / f"{SITE}-local.jsonl"
        argv = [
            "ip",
            "netns",
            "exec",
            node.names(self.lab_dir, SITE)["netns"],
            sys.executable,
            "-m",
            "tests.drill.load",
            "--url",
            kms["url"],
            "--ca-file",
            kms["ca_file"],
            "--out",
            str(self.site_log),
            "--rate",
            str(rate),
            "--prefix",
            f"{SITE}-local",
        ]
        self.site_client = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=self.env,  # noqa: S603
            start_new_session=True,
        )
        self.log(f"{SITE}'s own clients on: {rate} writes/s + {rate} reads/s to {kms['host']}:{kms['port']}")

    def stop_site_client(self):
        if self.site_client is None:
            return []
        if self.site_client.poll() is None:
            self.site_client.send_signal(signal.SIGTERM)
            self.site_client.wait(30)
        try:
            return load.read_records(self.site_log)
        except OSError:
            return []

    def start_fence(self):
        """fence.yml, started while dc1 is still cut off: it polls dc1's API and fences dc1 once it answers."""
        label = FENCE_PHASE
        log_path = self.out_dir / f"{len(self.phases) + 1:02d}-fence.log"
        argv = ansible_argv(
            "ansible-playbook",
            "-i",
            LAB_INVENTORY,
            "playbooks/fence.yml",
            "-e",
            f"fence_site={SITE}",
            "-e",
            f"fence_active_site={TARGET}",
            "-e",
            f"fence_confirm='FENCE {SITE}'",
            "-e",
            "fence_wait_timeout=600",
        )
        self.log(f"{label}: {' '.join(argv)}")
        out = open(log_path, "w", encoding="utf-8")  # pylint: disable=consider-using-with
        proc = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=self.env,
            stdout=out,  # noqa: S603
            stderr=subprocess.STDOUT,
        )
        return {"label": label, "start": time.time(), "proc": proc, "out": out, "log": log_path}

    def finish_fence(self, fence):
        rc = fence["proc"].wait(900)
        fence["out"].close()
        self.phases.append(
            {"label": fence["label"], "start": fence["start"], "end": time.time(), "rc": rc, "log": fence["log"].name}
        )
        self.log(f"{fence['label']}: rc={rc} (log {fence['log']})")
        if rc != 0:
            raise RuntimeError(f"{fence['label']} failed (rc {rc}); see {fence['log']}")

    def failover(self, label):
        return self.playbook(
            label, "failover", "-e", f"failover_target_site={TARGET}", "-e", f"failover_confirm='FAILOVER TO {TARGET}'"
        )

    def run(self):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.phase("lab up", [sys.executable, "-m", "tests.lab", "up", "--dir", str(self.lab_dir)])
        if self.lab_state().state.get("cnpg", {}).get("mode") != "operator":
            raise RuntimeError(
                "the partition drill needs the operator-mode lab (HANZO_KMS_LAB_CNPG=operator): in the "
                "stand-in lab dc1's KMS, Redis and PostgreSQL run on the host, where no link cut reaches"
            )
        self.playbook("install", "install")
        self.playbook("backup", "backup")
        url = self.lab_state().state["lb"]["vip_url"]
        client = load.LoadClient(url, rate=self.rate, ca_file=self.lab_state().state["pki"]["ca_file"])
        client.start()
        self.start_site_client(self.rate / 2)
        self.log(f"load on: {self.rate} writes/s + {self.rate} reads/s through {url}")
        try:
            time.sleep(self.settle)  # a steady state before the partition, for the timeline
            self.playbook("backup before the partition", "backup")
            time.sleep(self.settle)
            self.link(up=False)
            self.failover(f"failover to {TARGET}")
            fence = self.start_fence()  # waits for dc1 to answer
            time.sleep(self.settle)
            self.link(up=True)
            self.finish_fence(fence)
            time.sleep(self.settle)
            self.playbook("status", "status", "-e", f"kms_status_report_dir={self.out_dir / 'status'}")
        finally:
            records = client.stop()
            site_records = self.stop_site_client()
        rows = self.surviving_rows(TARGET)
        return self.write_partition_report(records, site_records, rows)

    def status_report(self):
        """The findings and Markdown of the status run's report (what status.yml printed)."""
        found = sorted((self.out_dir / "status").glob("*.json"), key=lambda p: p.stat().st_mtime)
        if not found:
            return {}
        report = json.loads(found[-1].read_text(encoding="utf-8"))
        markdown = found[-1].with_suffix(".md")
        return {
            "findings": operation_decisions.status_findings(report.get("sites") or [], report.get("lb")),
            "markdown": markdown.read_text(encoding="utf-8") if markdown.is_file() else None,
        }

    def write_partition_report(self, records, site_records, rows):
        load.write_records(self.out_dir / "requests.jsonl", records)
        by_label = {p["label"]: p for p in self.phases}
        reports = [
            item["report"]
            for item in self.reports()
            if item["report"].get("operation") == "failover" and not item["file"].endswith("-latest.json")
        ]
        cut, plugged = by_label[f"cut {SITE}"], by_label[f"plug {SITE}"]
        failover, fence = by_label[f"failover to {TARGET}"], by_label[FENCE_PHASE]
        acked = analysis.acknowledged_writes(records)
        lost = analysis.lost_writes(acked, rows)
        bound = ((reports[0].get("data_loss") or {}).get("postgres") or {}) if reports else {}
        first = analysis.first_success_after(records, failover["start"], site=TARGET)
        status = self.status_report()
        fence_step = _step(reports[-1], "fence_old") if len(reports) > 1 else None
        # the step's end, in whole seconds (rounded down): + 1 s so that no write before it counts as after
        fenced_at = (
            analysis.iso_seconds(fence_step["finished"]) + 1.0
            if fence_step and fence_step.get("finished")
            else fence["end"]
        )
        result = {
            "lab_dir": str(self.lab_dir),
            "rate_per_second": self.rate,
            "phases": self.phases,
            "summaries": [
                analysis.phase_summary(records, p, target_site=TARGET if "failover" in p["label"] else None)
                for p in self.phases
                if p["label"] not in ("lab up", "install", "backup")
            ],
            "requests": {"total": len(records), "acknowledged_writes": len(acked)},
            "failover": {
                "rto_seconds_playbook_start_to_first_dc2_success": round(first["t1"] - failover["start"], 3)
                if first
                else None,
                "rto_seconds_cut_to_first_dc2_success": round(first["t1"] - cut["start"], 3) if first else None,
                "acknowledged_writes_lost": len(lost),
                "lost": lost[:50],
                "report_bound": bound,
                "lost_before_the_bound": (
                    analysis.lost_before(records, lost, analysis.iso_seconds(bound["since"]))
                    if bound.get("since")
                    else None
                ),
                "fence_old_step": _step(reports[0], "fence_old") if reports else None,
            },
            "fence": {
                "seconds_from_plug_to_fenced": round(fenced_at - plugged["start"], 3),
                "seconds_from_plug_to_fence_run_end": round(fence["end"] - plugged["start"], 3),
                "fence_old_step": fence_step,
            },
            "partition": analysis.partition_summary(
                records, site_records, SITE, cut["start"], plugged["start"], fenced_at
            ),
            "status_findings": status.get("findings") or [],
            "status_markdown": status.get("markdown"),
        }
        (self.out_dir / "partition.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
        plot.timeline(
            records,
            [p for p in self.phases if p["label"] not in ("lab up", "install", "backup")],
            self.out_dir / "timeline.png",
            "hanzo.kms partition drill: requests through the global LB",
        )
        (self.out_dir / "partition.md").write_text(render_markdown(result), encoding="utf-8")
        return result


def _step(report, name):
    return next((s for s in report.get("steps") or [] if s.get("name") == name), None)


def render_markdown(result):
    fail, part, fence = result["failover"], result["partition"], result["fence"]
    lines = [
        "# Partition drill report",
        "",
        f"Load: {result['rate_per_second']} writes/s + as many reads/s through the global LB (VIP); "
        f"{result['requests']['total']} requests, {result['requests']['acknowledged_writes']} acknowledged "
        f"writes. dc1's own clients: {part['site_requests']} requests to dc1's KMS directly.",
        "",
        "![timeline](timeline.png)",
        "",
        "| phase | wall time (s) | writes ok/total | reads ok/total | served by | longest outage (s) |",
        "|---|---|---|---|---|---|",
    ]
    for s in result["summaries"]:
        w, r = s["counts"]["write"], s["counts"]["read"]
        served = ", ".join(f"{k or '?'} {v}" for k, v in sorted(s["counts"]["sites"].items()))
        lines.append(
            f"| {s['label']} | {s['wall_seconds']} | {w['total'] - w['failed']}/{w['total']} | "
            f"{r['total'] - r['failed']}/{r['total']} | {served} | {s['longest_outage_seconds']} |"
        )
    lines += [
        "",
        "## Failover with dc1 partitioned",
        "",
        f"- RTO, failover playbook start to the first request served by dc2 through the VIP: "
        f"**{fail['rto_seconds_playbook_start_to_first_dc2_success']} s** (target ≤ 60 s); from the cut: "
        f"{fail['rto_seconds_cut_to_first_dc2_success']} s",
        f"- acknowledged writes (through the LB) lost: **{fail['acknowledged_writes_lost']}**; the report's "
        f"PostgreSQL bound: {fail['report_bound'].get('bound_seconds')} s (since "
        f"{fail['report_bound'].get('since')}); lost writes acknowledged before it: "
        f"**{len(fail['lost_before_the_bound'] or [])}** (target 0)",
        f"- fence_old during the failover: {(fail['fence_old_step'] or {}).get('detail', '?')}",
        f"- requests the LB had dc1 serve after the cut: **{part['served_by_site_through_lb_after_cut']}** (target 0)",
        f"- writes dc1 accepted from its own clients while cut off: **{part['site_accepted_writes_while_cut']}**"
        " (diverged: not in dc2, never acknowledged through the LB)",
        "",
        "## dc1 comes back",
        "",
        f"- fence.yml, waiting since the failover: fence_old {(fence['fence_old_step'] or {}).get('detail', '?')}"
        f"; from the plug to the end of its fence_old step: {fence['seconds_from_plug_to_fenced']} s (to the end "
        f"of the run: {fence['seconds_from_plug_to_fence_run_end']} s)",
        f"- writes dc1 accepted from its own clients after its return, before the fence: "
        f"**{part['site_accepted_writes_after_return']}**",
        "",
        "## status.yml afterwards",
        "",
    ]
    lines += [f"- {finding}" for finding in result["status_findings"]] or ["- (no status report found)"]
    if result.get("status_markdown"):
        lines += ["", "```", result["status_markdown"].strip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    drill = drill_from_args(
        argv, PartitionDrill, "python -m tests.drill.partition", __doc__.splitlines()[0], REPO_ROOT / ".lab-partition"
    )
    result = drill.run()
    print((drill.out_dir / "partition.md").read_text(encoding="utf-8"))
    return (
        0
        if (
            result["partition"]["served_by_site_through_lb_after_cut"] == 0
            and not result["failover"]["lost_before_the_bound"]
        )
        else 1
    )


if __name__ == "__main__":
    raise SystemExit(main())
