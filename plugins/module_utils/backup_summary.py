# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the backup playbook (``playbooks/backup.yml``) reports, as plain Python (``hanzo.kms.backup_summary``).

From what each site's part of the run recorded (``SITE_OPTIONS``), the retention run and the listing of the Redis
backups, it builds the summary (the JSON report and the ``set_stats`` artifact), the problems that fail the job, what
was skipped (an unreachable passive site) and the lines printed at the end.
"""

from __future__ import annotations

from ansible_collections.hanzo.kms.plugins.module_utils.operation_decisions import newest_k8s_backup
from ansible_collections.hanzo.kms.plugins.module_utils.times import format_time, human_age, utcnow

# One site's part of the run, as the playbook recorded it (module option ``sites``).
SITE_OPTIONS = dict(
    site=dict(type="str", required=True),
    cluster=dict(type="str", required=True),
    cluster_exists=dict(type="bool", default=False),
    kube_reachable=dict(type="bool", default=False),
    kube_error=dict(type="str", default=""),
    cnpg_backups=dict(type="list", elements="dict", default=[]),
    cnpg_result=dict(type="dict"),
    cnpg_error=dict(type="str"),
    redis_host=dict(type="str", default=""),
    redis_port=dict(type="int", default=6379),
    redis_probe=dict(type="dict", default={}),
    redis_result=dict(type="dict"),
    redis_error=dict(type="str"),
)
CNPG_DEFAULTS = {"name": "", "phase": "", "reused": False, "backup_id": ""}


def cnpg_outcome(record):
    """The CNPG Backup of a site: the cnpg_backup role's result with ``ok`` and ``message``; {} when none was
    requested."""
    if record.get("cnpg_error") is not None:
        return {
            **CNPG_DEFAULTS,
            **(record.get("cnpg_result") or {}),
            "ok": False,
            "message": record["cnpg_error"] or "failed",
        }
    if record.get("cnpg_result"):
        return {**record["cnpg_result"], "ok": True, "message": ""}
    return {}


def redis_outcome(record):
    """The Redis backup of a site from the redis_backup role's result; {} when none was taken."""
    if record.get("redis_error") is not None:
        return {"ok": False, "message": record["redis_error"] or "failed"}
    result = record.get("redis_result")
    if not result:
        return {}
    manifest = result.get("manifest")
    if manifest:
        key_count = manifest.get("keys")
    else:  # check mode: the keys the server has now
        key_count = sum(db.get("keys", 0) for db in (result.get("keyspace") or {}).values())
    return {
        "ok": True,
        "message": "",
        "key": result.get("key") or "",
        "key_count": key_count,
        "size": result.get("size") or 0,
        "duration": result.get("duration") or 0,
        "server_version": result.get("server_version") or "",
    }


def retention_outcome(retention, listing, error, redis_enabled):
    """The retention run (its summary and what it deleted, when it ran) and each site's newest complete Redis backup
    (from the listing after it); {} when Redis backups are off."""
    if not redis_enabled:
        return {}
    if error is not None:
        return {"ok": False, "message": error or "failed", "newest": {}}
    ran = (retention or {}).get("summary") is not None  # a skipped task (retention off) is registered too
    outcome = {
        "ok": True,
        "message": "",
        "enabled": ran,
        "newest": {
            site: entry["newest"] for site, entry in ((listing or {}).get("sites") or {}).items() if entry.get("newest")
        },
    }
    if ran:
        outcome["summary"] = retention["summary"]
        outcome["deleted"] = [b["prefix"] for b in retention.get("backups") or () if b.get("action") == "delete"]
    else:
        outcome["listed"] = {
            "backups": len((listing or {}).get("backups") or ()),
            "incomplete": sum(1 for b in (listing or {}).get("backups") or () if not b["complete"]),
            "unrecognised": len((listing or {}).get("unrecognised") or ()),
        }
    return outcome


def site_summary(record, primary_cluster, newest_redis, now):
    """One site's entry of the summary."""
    done = [
        b
        for b in record.get("cnpg_backups") or ()
        if ((b.get("spec") or {}).get("cluster") or {}).get("name") == record["cluster"]
        and (b.get("status") or {}).get("stoppedAt")
    ]
    newest_pg = newest_k8s_backup(done, now)["newest"]
    probe = record.get("redis_probe") or {}
    return {
        "site": record["site"],
        "kube_reachable": bool(record.get("kube_reachable")),
        "kube_error": record.get("kube_error") or "",
        "cluster": record["cluster"],
        "cluster_exists": bool(record.get("cluster_exists")),
        "cluster_role": "primary" if record["cluster"] == primary_cluster else "replica",
        "cnpg_backup": cnpg_outcome(record),
        "cnpg_newest": {
            "name": newest_pg["name"],
            "stopped_at": newest_pg["time"],
            "age_seconds": newest_pg["age_seconds"],
        }
        if newest_pg
        else {},
        "redis_endpoint": f"{record.get('redis_host') or ''}:{record.get('redis_port') or 6379}",
        "redis_reachable": "msg" not in probe and not probe.get("skipped", False),
        "redis_backup": redis_outcome(record),
        "redis_newest": {
            "prefix": newest_redis["prefix"],
            "time": newest_redis["time"],
            "size": newest_redis["size"],
            "age_seconds": newest_redis["age_seconds"],
        }
        if newest_redis
        else {},
    }


def find_problems(sites, retention, cnpg_enabled, redis_enabled):
    """(problems that fail the job, what was skipped): a primary that could not be backed up fails, an unreachable
    passive site is skipped."""
    problems, skipped = [], []
    for s in sites:
        primary = s["cluster_role"] == "primary"
        if cnpg_enabled:
            if primary and not s["kube_reachable"]:
                problems.append(
                    f"{s['site']}: the primary site's Kubernetes API did not answer ({s['kube_error']}); no CNPG Backup"
                )
            elif primary and not s["cluster_exists"]:
                problems.append(f"{s['site']}: Cluster {s['cluster']} does not exist")
            elif s["cnpg_backup"] and not s["cnpg_backup"]["ok"]:
                problems.append(f"{s['site']}: {s['cnpg_backup']['message']}")
        if redis_enabled:
            if s["redis_backup"] and not s["redis_backup"]["ok"]:
                problems.append(f"{s['site']}: {s['redis_backup']['message']}")
            elif primary and not s["redis_reachable"]:
                problems.append(f"{s['site']}: the active site's Redis at {s['redis_endpoint']} did not answer")
        if not primary and not s["kube_reachable"]:
            skipped.append(f"{s['site']}: Kubernetes API unreachable, no CNPG Backup ({s['kube_error']})")
        elif not primary and not s["cluster_exists"]:
            skipped.append(f"{s['site']}: no Cluster {s['cluster']}")
        if redis_enabled and not primary and not s["redis_reachable"]:
            skipped.append(f"{s['site']}: Redis at {s['redis_endpoint']} unreachable, not backed up")
    if redis_enabled and not retention.get("ok", True):
        problems.append(f"Redis backup retention failed: {retention['message']}")
    return problems, skipped


def _cnpg_line(s):
    b = s["cnpg_backup"]
    if not b:
        done = "not backed up"
    else:
        done = f"Backup {b['name']} {b['phase']}"
        if b.get("reused"):
            done += " (waited for the one in progress)"
        if b.get("backup_id"):
            done += f", backupId {b['backup_id']}, WAL {b.get('begin_wal')}..{b.get('end_wal')}"
        if not b["ok"]:
            done += f": {b['message']}"
    return f"{s['site']} CNPG {s['cluster']} ({s['cluster_role']}): {done}"


def _redis_line(s, check_mode):
    r = s["redis_backup"]
    if not r:
        done = "unreachable" if not s["redis_reachable"] else "not backed up"
    elif not r["ok"]:
        done = f"FAILED: {r['message']}"
    elif check_mode:
        done = f"would back up to {r['key']}, {r['key_count']} keys now"
    else:
        done = f"{r['key']}, {r['size']} bytes, {r['key_count']} keys, {r['duration']} s"
    return f"{s['site']} Redis {s['redis_endpoint']}: {done}"


def _newest_line(what, entry, name_key, time_key):
    if not entry:
        return f"    {what}: none"
    return f"    {what}: {entry[name_key]} at {entry[time_key]}, age {human_age(entry['age_seconds'])}"


def _retention_line(retention, check_mode):
    if not retention:
        return None
    if not retention["ok"]:
        return f"Redis retention FAILED: {retention['message']}"
    if "listed" in retention:
        listed = retention["listed"]
        line = f"Redis retention off: {listed['backups']} backups listed, {listed['incomplete']} incomplete"
        unrecognised = listed["unrecognised"]
    else:
        summary = retention["summary"]
        line = (
            f"Redis retention: {summary.get('kept')} kept, {summary.get('deleted')}"
            f"{' to delete' if check_mode else ' deleted'}, {summary.get('incomplete')} incomplete"
        )
        unrecognised = summary.get("unrecognised") or 0
    return line + (f", {unrecognised} unrecognised keys left alone" if unrecognised else "")


def render_lines(summary, problems, skipped):
    """The lines printed at the end of the run."""
    check_mode = summary["check_mode"]
    lines = [
        f"Backup of Hanzo KMS at {summary['time']}{' (CHECK MODE: nothing taken or deleted)' if check_mode else ''}"
        f", primary Cluster {summary['primary_cluster']}"
    ]
    for s in summary["sites"]:
        lines.append(_cnpg_line(s))
        lines.append(_newest_line("newest completed base backup", s["cnpg_newest"], "name", "stopped_at"))
        lines.append(_redis_line(s, check_mode))
        lines.append(_newest_line("newest complete RDB backup", s["redis_newest"], "prefix", "time"))
    retention = _retention_line(summary["retention"], check_mode)
    if retention:
        lines.append(retention)
    lines.extend(f"SKIPPED {w}" for w in skipped)
    lines.extend(f"FAILED {p}" for p in problems)
    return lines


def summarize_backup(params, check_mode=False, now=None):
    """The module's result: ``report`` (the summary with ``problems`` and ``skipped``: the JSON report and the
    artifact), ``problems``, ``skipped``, ``lines`` and ``message`` (the problems, or what was done)."""
    now = now or utcnow()
    retention = retention_outcome(
        params.get("retention"), params.get("listing"), params.get("redis_error"), params["redis_enabled"]
    )
    newest = retention.get("newest") or {}
    sites = [
        site_summary(record, params["primary_cluster"], newest.get(record["site"]), now) for record in params["sites"]
    ]
    summary = {
        "time": format_time(now),
        "check_mode": check_mode,
        "primary_cluster": params["primary_cluster"],
        "sites": sites,
        "retention": retention,
    }
    problems, skipped = find_problems(sites, retention, params["cnpg_enabled"], params["redis_enabled"])
    if problems:
        message = "; ".join(problems)
    else:
        message = f"Backups done{f' ({len(skipped)} skipped: ' + '; '.join(skipped) + ')' if skipped else ''}."
    return {
        "report": dict(summary, problems=problems, skipped=skipped),
        "problems": problems,
        "skipped": skipped,
        "lines": render_lines(summary, problems, skipped),
        "message": message,
    }
