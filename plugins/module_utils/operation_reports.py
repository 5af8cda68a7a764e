# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reports of the operations playbooks: the side-by-side status table, the failover/switchover report (JSON
and Markdown, steps with timings, the data-loss bound) and writing them as private files. Decisions come from
operation_decisions.py; no Ansible import.
"""

from __future__ import annotations

import json
import os
import re

from ansible_collections.hanzo.kms.plugins.module_utils.files import replace_file
from ansible_collections.hanzo.kms.plugins.module_utils.operation_decisions import site_summary, status_findings
from ansible_collections.hanzo.kms.plugins.module_utils.times import format_time, human_age, parse_time, utcnow

STEP_RESULTS = ("running", "ok", "changed", "skipped", "failed")


def _cell(value, limit=200):
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _age_cell(entry, label_key=None):
    if not entry:
        return "none found"
    label = f" ({entry[label_key]})" if label_key and entry.get(label_key) else ""
    return f"{human_age(entry.get('age_seconds'))} ago{label}"


def status_rows(summaries, lb=None):
    """Rows (label, value per site) of the side-by-side status table."""
    rows = []

    def row(label, func):
        rows.append([label] + [_cell(func(s)) for s in summaries])

    row("Kubernetes API", lambda s: "reachable" if s["kube_reachable"] else f"UNREACHABLE: {s['kube_error'] or '?'}")
    row("Inventory site_role", lambda s: s["inventory_role"] or "-")
    row(
        "CNPG Cluster",
        lambda s: (
            s["cluster"]["name"]
            if s["cluster"]
            else ("unknown" if not s["kube_reachable"] else f"MISSING: {s['cluster_error'] or '?'}")
        ),
    )
    row("CNPG role", lambda s: s["cluster"]["role"] if s["cluster"] else "unknown")
    row(
        "CNPG phase",
        lambda s: (
            (s["cluster"]["phase"] or "-") + (f" (Ready={s['cluster']['ready']})" if s["cluster"] else "")
            if s["cluster"]
            else "unknown"
        ),
    )
    row("CNPG primary instance", lambda s: (s["cluster"]["current_primary"] or "-") if s["cluster"] else "unknown")
    # CNPG reports no timeline for a replica Cluster until it is promoted
    row(
        "Timeline",
        lambda s: (
            ("-" if s["cluster"]["timeline"] is None else s["cluster"]["timeline"]) if s["cluster"] else "unknown"
        ),
    )
    row("Replication", lambda s: s["replication"])
    row("Newest replayed transaction", _replayed_cell)
    row("Replay (SQL)", _sql_replay_cell)
    row("Fencing", lambda s: s["cluster"]["fencing"] if s["cluster"] else "unknown")
    row("WAL archiving (condition)", lambda s: (s["cluster"]["archiving"] or "-") if s["cluster"] else "unknown")
    row("Newest archived WAL", lambda s: _age_cell(s["wal_archive"], "name"))
    row("WAL archiver (SQL)", _sql_archiver_cell)
    row(
        "Newest base backup",
        lambda s: (
            _age_cell(s["base_backup"], "name")
            if s["base_backup"] and s["base_backup"].get("name")
            else _age_cell(s["base_backup"], "backup_id")
        ),
    )
    row(
        "Newest Redis backup",
        lambda s: (
            _age_cell(s["redis_backup"], "name")
            + (f", {s['redis_backup_count']} complete" if s["redis_backup"] else "")
        ),
    )
    row(
        "Redis",
        lambda s: (
            (f"{s['redis'].get('role', '?')} {s['redis'].get('version', '')}, {s['redis'].get('keys', 0)} keys")
            if s["redis"]
            else f"DOWN: {s['redis_error'] or '?'}"
        ),
    )
    row(
        "KMS replicas ready",
        lambda s: f"{s['kms'].get('ready_replicas', 0)}/{s['kms'].get('replicas', 0)}" if s["kms"] else "unknown",
    )
    for inst in lb or []:
        rows.append([f"LB {inst['name']}"] + [_cell(_lb_cell(inst, s["site"])) for s in summaries])
    return rows


def _replayed_cell(summary):
    """What a failover to this site keeps for certain: commits up to this one (a replica's; site_status reads it)."""
    if summary["cluster"] and summary["cluster"]["role"] == "primary":
        return "- (primary)"
    if summary["replayed_commit"]:
        return f"{human_age(summary['replayed_commit']['age_seconds'])} ago ({summary['replayed_commit']['time']})"
    return "none read (not read, or nothing replayed since the instance started)"


def _sql_unread(summary):
    """The cell of a site whose SQL was not read, or None when it was."""
    sql = summary.get("sql")
    if sql is None:
        return "not read"
    return f"UNREADABLE: {sql['error']}" if sql["error"] else None


def _sql_replay_cell(summary):
    """A replica's replay position and how old its newest replayed commit is (pg_last_xact_replay_timestamp)."""
    unread = _sql_unread(summary)
    if unread:
        return unread
    sql, replay = summary["sql"], summary["sql"]["replay"]
    if not sql["in_recovery"]:
        return f"- (not in recovery, WAL at {replay['current_lsn']})"
    lag = f"lag {human_age(replay['lag_seconds'])}" if replay["lag_seconds"] is not None else "nothing replayed yet"
    received = f", received {replay['receive_lsn']}" if replay["receive_lsn"] else ""
    return f"in recovery, replayed {replay['replay_lsn'] or '-'}{received}, {lag}"


def _sql_archiver_cell(summary):
    """pg_stat_archiver: the newest archived WAL, its age and the failures."""
    unread = _sql_unread(summary)
    if unread:
        return unread
    archiver = summary["sql"]["archiver"]
    newest = (
        f"{archiver['last_wal']} {human_age(archiver['age_seconds'])} ago" if archiver["last_wal"] else "none archived"
    )
    failures = f"{archiver['failed_count']} failed"
    if archiver["last_failed_wal"]:
        failures += f", last {archiver['last_failed_wal']} {human_age(archiver['last_failed_age_seconds'])} ago"
    return f"{newest}; {failures}{' (FAILING)' if archiver['failing'] else ''}"


def _lb_cell(inst, site):
    if not inst.get("reachable", True):
        return f"UNREACHABLE: {inst.get('error') or '?'}"
    server = (inst.get("servers") or {}).get(site)
    if not server:
        return "no server"
    tag = "SERVING" if site in (inst.get("serving") or []) else "not serving"
    return f"{tag} ({server.get('state')}, {server.get('status')})"


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for dummy in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_status(summaries, lb=None, generated=None):
    header = ["", *[s["site"] for s in summaries]]
    lines = [
        f"# Hanzo KMS status ({generated or format_time(utcnow())})",
        "",
        markdown_table(header, status_rows(summaries, lb)),
        "",
    ]
    lines += [f"- {f}" for f in status_findings(summaries, lb)]
    return "\n".join(lines) + "\n"


def step_update(report, name, result, detail=None, data=None, now=None):
    """Record ``result`` (running|ok|changed|skipped|failed) of step ``name`` in ``report['steps']``."""
    if result not in STEP_RESULTS:
        raise ValueError(f"step result must be one of {', '.join(STEP_RESULTS)}")
    now = now or utcnow()
    steps = report.setdefault("steps", [])
    step = next((s for s in steps if s["name"] == name and s["result"] == "running"), None)
    if step is None:
        step = {
            "name": name,
            "started": format_time(now),
            "finished": None,
            "seconds": None,
            "result": "running",
            "detail": None,
        }
        steps.append(step)
    if result != "running":
        step["finished"] = format_time(now)
        step["seconds"] = round((now - parse_time(step["started"])).total_seconds(), 1)
    step["result"] = result
    if detail is not None:
        step["detail"] = detail
    if data:
        step["data"] = data
    return step


def _loss_line(entry):
    if entry["bound_seconds"] is None:
        return f"unknown — {entry['basis']}"
    if entry["bound_seconds"] == 0:
        return f"none — {entry['basis']}"
    if entry.get("approximate"):
        return f"about {human_age(entry['bound_seconds'])}, not a guarantee — {entry['basis']}"
    return f"at most {human_age(entry['bound_seconds'])} — {entry['basis']}"


def render_report(report):
    """Markdown of a failover/switchover report (see ``operation_report``)."""
    op = report.get("operation", "operation")
    lines = [
        f"# Hanzo KMS {op}: {report.get('old_site') or '?'} -> {report.get('target') or '?'}",
        "",
        f"- Result: **{(report.get('result') or 'running').upper()}**",
        f"- Started: {report.get('started')}; finished: {report.get('finished') or '-'}",
        f"- Run by: {report.get('run_by') or '-'}; confirmation: `{report.get('confirmation') or '-'}`",
    ]
    pre = report.get("preflight") or {}
    if pre:
        lines.append(
            f"- Preflight: {'go' if pre.get('ok') else 'REFUSED'} (state {pre.get('state')}, CNPG "
            f"{pre.get('cnpg_state')})"
        )
        lines += [f"  - refused: {r}" for r in pre.get("refusals") or []]
        lines += [f"  - warning: {w}" for w in pre.get("warnings") or []]
    loss = report.get("data_loss") or pre.get("data_loss")
    if loss:
        lines += [
            "",
            "## Data-loss bound",
            "",
            f"- PostgreSQL: {_loss_line(loss['postgres'])}",
            f"- Redis: {_loss_line(loss['redis'])}",
        ]
    lines += ["", "## Steps", ""]
    rows = [
        [
            s["name"],
            s["result"],
            s.get("started") or "",
            s.get("finished") or "",
            "" if s.get("seconds") is None else f"{s['seconds']:.1f}",
            _cell(s.get("detail") or ""),
        ]
        for s in report.get("steps") or []
    ]
    lines.append(markdown_table(["step", "result", "start", "end", "seconds", "detail"], rows))
    for title, key in (("Before", "sites_before"), ("After", "sites_after")):
        sums = report.get(key)
        if sums:
            lines += [
                "",
                f"## {title}",
                "",
                markdown_table(
                    ["", *[s["site"] for s in sums]], status_rows(sums, report.get(key.replace("sites", "lb")))
                ),
            ]
    if report.get("error"):
        lines += [
            "",
            "## Error",
            "",
            "```",
            str(report["error"]),
            "```",
            "",
            "Re-run the same command after fixing the cause: every step checks the state first.",
        ]
    return "\n".join(lines) + "\n"


def dumps(report):
    return json.dumps(report, indent=2, sort_keys=True, default=str) + "\n"


REPORT_MODE = 0o600


def parse_mode(mode):
    """File mode from an int (YAML 0640 arrives as 416) or an octal string (``"0640"``, ``"640"``); 0 to 0o777."""
    if isinstance(mode, bool):
        raise ValueError(f"mode must be an octal number such as '0600', not {mode!r}")
    if isinstance(mode, int):
        value = mode
    else:
        text = str(mode).strip()
        if not re.fullmatch(r"0?o?[0-7]{1,4}", text):
            raise ValueError(f"mode must be an octal number such as '0600', not {mode!r}")
        value = int(text.replace("o", ""), 8)
    if not 0 <= value <= 0o777:
        raise ValueError(f"mode must be between 0000 and 0777, not {oct(value)}")
    return value


def write_report_file(path, text, mode=REPORT_MODE):
    """Write ``text`` to ``path`` through a temporary file with ``mode``; return True when the content changed.

    Reports hold site states, the confirmation, the operator's name and error texts: by default only the owner reads
    them. An unchanged file gets ``mode`` too, so a report written by an older version (0644) is narrowed.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == text:
                if os.stat(path).st_mode & 0o777 != mode:
                    os.chmod(path, mode)
                return False
    except OSError:
        pass
    replace_file(path, text, mode, prefix=".report-")
    return True


def update_report(report, params, now=None):
    """Apply one ``hanzo.kms.operation_report`` call to ``report`` (a dict, changed in place) and return it."""
    now = now or utcnow()
    report.setdefault("operation", params["operation"])
    report.setdefault("started", format_time(now))
    report.setdefault("result", "running")
    report.setdefault("steps", [])
    for key, value in (params.get("update") or {}).items():
        report[key] = value
    if params.get("sites") is not None:
        summaries = [site_summary(s, now) for s in params["sites"]]
        report["sites" if params.get("snapshot", "current") == "current" else f"sites_{params['snapshot']}"] = summaries
    if params.get("lb") is not None:
        report["lb" if params.get("snapshot", "current") == "current" else f"lb_{params['snapshot']}"] = params["lb"]
    if params.get("step"):
        step_update(
            report, params["step"], params.get("result") or "running", params.get("detail"), params.get("data"), now
        )
    if params.get("next_step"):
        step_update(report, params["next_step"], "running", now=now)
    if params.get("finish"):
        report["result"] = params["finish"]
        report["finished"] = format_time(now)
        for step in report["steps"]:
            if step["result"] == "running":  # interrupted by the failure being recorded
                step_update(report, step["name"], "failed", step.get("detail") or "interrupted", now=now)
    return report


def render(report):
    if report.get("operation") == "status":
        return render_status(report.get("sites") or [], report.get("lb"), report.get("started"))
    return render_report(report)
