# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Recovering a CNPG Cluster from the object store (restore test, point-in-time recovery). No Ansible import.

- ``recovery_window``: what the object store can recover, from what CNPG and the Barman Cloud plugin publish: the
  ObjectStore's ``status.serverRecoveryWindow[<serverName>]`` (``firstRecoverabilityPoint``: the end of the oldest
  base backup still in the store) and the completed ``Backup`` objects of that server (``backupId``, ``stoppedAt``,
  ``endLSN``).
- ``recovery_target``: a target time, LSN or named restore point checked against that window *before* anything is
  created, as the Cluster's ``bootstrap.recovery.recoveryTarget``. CNPG 1.30's webhook rejects a ``targetName`` (and
  ``targetXID``/``targetImmediate``) without a ``backupID`` when recovering from a backup catalog
  (``internal/webhook/v1/cluster_webhook.go``, "BackupID is missing"): only a time or an LSN lets it choose the base
  backup itself.
- ``recovered_cluster``: the manifest of a Cluster bootstrapped from the object store through the plugin (or from a
  volume-snapshot Backup's VolumeSnapshots, with the archive's WAL), with no WAL archiving of its own (it must never
  write into a site's archive).
- ``timeline_history``: the recovered instance's timeline history file, read as where the recovery ended.
- ``render_report``: the Markdown of a point-in-time recovery report.
"""

from __future__ import annotations

import datetime
import re

from ansible_collections.hanzo.kms.plugins.module_utils.cnpg_backup import BackupConfigError
from ansible_collections.hanzo.kms.plugins.module_utils.operation_reports import markdown_table
from ansible_collections.hanzo.kms.plugins.module_utils.times import format_time, parse_time

PLUGIN_NAME = "barman-cloud.cloudnative-pg.io"
LSN_PATTERN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
# PostgreSQL's MAXFNAMELEN: recovery_target_name and pg_create_restore_point names are shorter than 64 bytes.
MAX_NAME_BYTES = 63
TIME_MICRO_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# A zone at the end of a time: Z, or an offset +HH, +HHMM, +HH:MM.
ZONE_PATTERN = re.compile(r"(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$")


class RecoveryTargetError(ValueError):
    """Why a recovery target cannot be used, one line."""


def parse_lsn(text):
    """The byte position of an LSN ``X/Y`` (hex), or RecoveryTargetError."""
    match = LSN_PATTERN.match(str(text or "").strip())
    if not match:
        raise RecoveryTargetError(f"target LSN {text!r} is not of the form X/Y (hexadecimal, e.g. 0/3000060)")
    return (int(match.group(1), 16) << 32) + int(match.group(2), 16)


def parse_target_time(text):
    """An aware UTC datetime of ISO 8601 text that names its zone, or RecoveryTargetError."""
    raw = str(text or "").strip()
    if not ZONE_PATTERN.search(raw):
        raise RecoveryTargetError(
            f"target time {text!r} has no time zone: give one (e.g. 2026-12-04T15:30:00Z or +01:00), so that the "
            "recovery does not depend on a server's zone"
        )
    normalized = raw[:-1] + "+00:00" if raw[-1] in "Zz" else raw
    try:
        when = datetime.datetime.fromisoformat(normalized)
    except ValueError:
        raise RecoveryTargetError(f"target time {text!r} is not an ISO 8601 time (e.g. 2026-12-04T15:30:00Z)") from None
    return when.astimezone(datetime.timezone.utc)


def _backup_view(backup):
    status = backup.get("status") or {}
    return {
        "name": (backup.get("metadata") or {}).get("name", ""),
        "backup_id": status.get("backupId") or "",
        "started": parse_time(status.get("startedAt")),
        "stopped": parse_time(status.get("stoppedAt")),
        "begin_lsn": status.get("beginLSN") or "",
        "end_lsn": status.get("endLSN") or "",
    }


def _lsn_or_none(text):
    try:
        return parse_lsn(text)
    except RecoveryTargetError:
        return None


def recovery_window(object_store, backups, server_name, cluster_name=None):
    """What can be recovered of ``server_name``: ``first_recoverability_point`` (the ObjectStore's, else the end of
    the oldest completed Backup), ``last_successful_backup`` and ``backups`` (completed Backups of that server or of
    ``cluster_name``, oldest first, with ``backup_id``, ``stopped`` and ``end_lsn``)."""
    windows = ((object_store or {}).get("status") or {}).get("serverRecoveryWindow") or {}
    window = windows.get(server_name) or {}
    mine = []
    for backup in backups or []:
        status = backup.get("status") or {}
        server = status.get("serverName") or ""
        cluster = ((backup.get("spec") or {}).get("cluster") or {}).get("name", "")
        if status.get("phase") != "completed" or not status.get("backupId"):
            continue
        if server == server_name or (not server and cluster in (server_name, cluster_name)):
            mine.append(_backup_view(backup))
    mine.sort(key=lambda b: b["stopped"] or datetime.datetime.max.replace(tzinfo=datetime.timezone.utc))
    first = parse_time(window.get("firstRecoverabilityPoint"))
    if first is None and mine and mine[0]["stopped"] is not None:
        first = mine[0]["stopped"]
    return {
        "server_name": server_name,
        "first_recoverability_point": first,
        "first_recoverability_point_from": "ObjectStore"
        if window.get("firstRecoverabilityPoint")
        else ("Backups" if first else ""),
        "last_successful_backup": parse_time(window.get("lastSuccessfulBackupTime"))
        or (mine[-1]["stopped"] if mine else None),
        "backups": mine,
    }


def _named_backup(window, backup_id):
    for backup in window["backups"]:
        if backup["backup_id"] == backup_id:
            return backup
    known = ", ".join(b["backup_id"] for b in window["backups"]) or "none"
    raise RecoveryTargetError(
        f"backup ID {backup_id!r} is not a completed Backup of server {window['server_name']} (completed: {known})"
    )


def recovery_target(
    window, target_time=None, target_lsn=None, target_name=None, backup_id=None, exclusive=False, now=None
):
    """``{"recovery_target": <CNPG recoveryTarget>, "kind", "backup": <the base backup it starts from or None>}``
    for exactly one of ``target_time`` (ISO 8601 with a zone, not in the future, not before the first recoverability
    point), ``target_lsn`` (``X/Y``, not before the oldest backup's end) and ``target_name`` (a restore point; its
    ``backupID`` is ``backup_id`` or the newest completed Backup). Raises RecoveryTargetError."""
    given = {k: v for k, v in (("time", target_time), ("lsn", target_lsn), ("name", target_name)) if v}
    if len(given) != 1:
        raise RecoveryTargetError(
            "give exactly one recovery target: a time, an LSN or a restore point name "
            f"(got {', '.join(sorted(given)) or 'none'})"
        )
    kind = next(iter(given))
    if not window["backups"] and window["first_recoverability_point"] is None:
        raise RecoveryTargetError(
            f"server {window['server_name']} has no completed base backup to recover from (no Backup in phase "
            "completed and no recovery window in its ObjectStore's status)"
        )
    chosen = _named_backup(window, backup_id) if backup_id else None
    target = {}
    if kind == "time":
        when = parse_target_time(target_time)
        now = now or datetime.datetime.now(datetime.timezone.utc)
        if when > now:
            raise RecoveryTargetError(f"target time {format_time(when)} is in the future (now {format_time(now)})")
        first = window["first_recoverability_point"]
        if first is not None and when < first:
            raise RecoveryTargetError(
                f"target time {format_time(when)} is before the earliest recoverable point {format_time(first)} "
                f"(the end of the oldest base backup of {window['server_name']}, from its "
                f"{window['first_recoverability_point_from']})"
            )
        if chosen and chosen["stopped"] and chosen["stopped"] > when:
            raise RecoveryTargetError(
                f"backup {chosen['backup_id']} ended at {format_time(chosen['stopped'])}, after the target time "
                f"{format_time(when)}"
            )
        target["targetTime"] = when.strftime(TIME_MICRO_FORMAT)
        basis = chosen or _newest(window, lambda b: b["stopped"] is not None and b["stopped"] <= when)
    elif kind == "lsn":
        position = parse_lsn(target_lsn)
        ends = [(b, _lsn_or_none(b["end_lsn"])) for b in window["backups"]]
        known = [(b, end) for b, end in ends if end is not None]
        if known and position < min(end for _b, end in known):
            oldest = min(known, key=lambda pair: pair[1])[0]
            raise RecoveryTargetError(
                f"target LSN {target_lsn} is before the end of the oldest base backup ({oldest['backup_id']} ended at "
                f"{oldest['end_lsn']})"
            )
        if chosen and _lsn_or_none(chosen["end_lsn"]) is not None and _lsn_or_none(chosen["end_lsn"]) > position:
            raise RecoveryTargetError(
                f"backup {chosen['backup_id']} ended at LSN {chosen['end_lsn']}, after the target LSN {target_lsn}"
            )
        target["targetLSN"] = str(target_lsn).strip().upper()
        basis = chosen or _newest(window, lambda b: (_lsn_or_none(b["end_lsn"]) or 0) <= position)
    else:
        name = str(target_name)
        if len(name.encode()) > MAX_NAME_BYTES:
            raise RecoveryTargetError(f"restore point name {name!r} is longer than {MAX_NAME_BYTES} bytes")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
            raise RecoveryTargetError(f"restore point name {name!r} contains control characters")
        target["targetName"] = name
        basis = chosen or _newest(window, lambda b: True)
        if basis is None:
            raise RecoveryTargetError(
                f"a restore point needs a base backup ID (CNPG requires backupID with targetName) and server "
                f"{window['server_name']} has no completed Backup object: give the backup ID"
            )
    if chosen or kind == "name":
        target["backupID"] = basis["backup_id"]
    if exclusive:
        target["exclusive"] = True
    return {"recovery_target": target, "kind": kind, "backup": _public_backup(basis)}


def _newest(window, accept):
    accepted = [b for b in window["backups"] if accept(b)]
    return accepted[-1] if accepted else None


def _public_backup(backup):
    if backup is None:
        return None
    return {
        "name": backup["name"],
        "backup_id": backup["backup_id"],
        "started": format_time(backup["started"]),
        "stopped": format_time(backup["stopped"]),
        "begin_lsn": backup["begin_lsn"],
        "end_lsn": backup["end_lsn"],
    }


def public_window(window):
    """``recovery_window``'s result as text (times RFC 3339), for a module's return value and a report."""
    return {
        "server_name": window["server_name"],
        "first_recoverability_point": format_time(window["first_recoverability_point"]),
        "first_recoverability_point_from": window["first_recoverability_point_from"],
        "last_successful_backup": format_time(window["last_successful_backup"]),
        "backups": [_public_backup(b) for b in window["backups"]],
    }


def recovered_cluster(
    name,
    namespace,
    source_cluster,
    labels,
    instances=1,
    storage=None,
    image_name="",
    recovery_target_spec=None,
    object_store=None,
    server_name=None,
    volume_snapshots=None,
    wal_storage=None,
):
    """The manifest of Cluster ``name`` bootstrapped from ``source_cluster``'s archive (ObjectStore ``object_store``,
    default ``<source_cluster>-store``; ``serverName`` default ``source_cluster``) through the Barman Cloud plugin, to
    ``recovery_target_spec`` (a CNPG recoveryTarget) or the end of the archive. No ``plugins``: no WAL archiving of
    its own. Superuser access on: its generated ``postgres`` login reads every table of the recovered database.

    ``volume_snapshots``: the base backup is a volume-snapshot Backup's VolumeSnapshots instead
    (``cnpg_backup.snapshot_sources``); the archive still supplies the WAL from the snapshot on. CNPG refuses a
    ``backupID`` with them (the snapshot is the base backup), so the target's is left out. A snapshot of a WAL volume
    needs a WAL volume: ``wal_storage`` (``size``, ``storageClass``)."""
    recovery = {"source": source_cluster}
    if recovery_target_spec:
        recovery["recoveryTarget"] = dict(recovery_target_spec)
    wal_storage = {k: v for k, v in (wal_storage or {}).items() if v}
    if volume_snapshots:
        recovery["volumeSnapshots"] = dict(volume_snapshots)
        recovery.get("recoveryTarget", {}).pop("backupID", None)
        if "walStorage" in volume_snapshots and not wal_storage.get("size"):
            raise BackupConfigError(
                f"the base backup has a WAL volume snapshot ({volume_snapshots['walStorage'].get('name')}): the "
                "recovered Cluster needs a WAL volume size (the source Cluster's spec.walStorage.size)"
            )
    spec = {
        "instances": int(instances),
        "enableSuperuserAccess": True,
        "bootstrap": {"recovery": recovery},
        "externalClusters": [
            {
                "name": source_cluster,
                "plugin": {
                    "name": PLUGIN_NAME,
                    "parameters": {
                        "barmanObjectName": object_store or f"{source_cluster}-store",
                        "serverName": server_name or source_cluster,
                    },
                },
            }
        ],
    }
    storage = {k: v for k, v in (storage or {}).items() if v}
    if storage:
        spec["storage"] = storage
    if volume_snapshots and "walStorage" in volume_snapshots:
        spec["walStorage"] = wal_storage
    if image_name:
        spec["imageName"] = image_name
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(
                {"app.kubernetes.io/part-of": "hanzo-kms", "app.kubernetes.io/managed-by": "hanzo.kms"}, **labels
            ),
        },
        "spec": spec,
    }


def timeline_history(text):
    """Entries of a PostgreSQL timeline history file (``<parent tli>\\t<switch LSN>\\t<reason>``): the last one says
    where the recovery that created the current timeline stopped (e.g. ``before 2026-12-04 15:30:00.1+00``, ``at
    restore point "x"``, ``at location 0/3000060``, ``no recovery target specified``)."""
    entries = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t", 2) if "\t" in line else line.split(None, 2)
        if len(parts) < 2:
            continue
        entries.append({"parent_timeline": int(parts[0]), "switch_lsn": parts[1], "reason": (parts[2:] or [""])[0]})
    return entries


HEALTHY_PHASE = "Cluster in healthy state"
# Phases after which waiting longer does not help.
FATAL_PHASES = ("Cluster is unrecoverable and needs manual intervention", "Invalid cluster definition")


def is_healthy(status):
    """A Cluster status in the healthy phase with Ready=True."""
    status = status or {}
    ready = [c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return status.get("phase") == HEALTHY_PHASE and ready[:1] == ["True"]


def recovery_record(
    recovered, identity=None, source=None, sql=None, check_mode=False, wait_timeout=0, requested=None, now=None
):
    """The record of a recovered Cluster (the role hanzo.kms.cnpg_recovery's ``cnpg_recovery_result``): ``identity``
    (cluster, source_cluster, object_store, ... as given) plus ``ok`` (healthy and its tables read), ``tested``,
    ``healthy``, ``message``, ``phase``, ``timeline``, ``system_id``, ``source_system_id`` (the same system when the
    archive is the source's), ``database``, ``tables``, ``recovery_end`` (cnpg_sql.recovery_end) and
    ``seconds_to_healthy``. ``recovered``/``source``: the Cluster objects; ``sql``: cnpg_query_info's result."""
    status = (recovered or {}).get("status") or {}
    sql = sql or {}
    healthy = is_healthy(status)
    read = "tables" in sql
    if check_mode:
        message = "check mode: the recovered Cluster passed a server-side dry run"
    elif healthy and read:
        message = "recovered and healthy"
    elif healthy:
        message = (
            f"recovered and healthy, but its tables could not be read in database {(identity or {}).get('database', '')}: "
            f"{sql.get('msg', '')}"
        ).rstrip(": ")
    else:
        phase = status.get("phase") or "none (is the CNPG operator running?)"
        reason = f" ({status['phaseReason']})" if status.get("phaseReason") else ""
        message = f"not healthy after {wait_timeout} s: phase {phase}{reason}"
    started, now = parse_time(requested), now or datetime.datetime.now(datetime.timezone.utc)
    record = dict(identity or {})
    record.update(
        ok=bool(check_mode or (healthy and read)),
        tested=not check_mode,
        healthy=healthy,
        message=message,
        phase=status.get("phase", ""),
        timeline=status.get("timelineID", ""),
        system_id=status.get("systemID", ""),
        source_system_id=((source or {}).get("status") or {}).get("systemID", ""),
        tables=sql.get("tables") or {},
        recovery_end=sql.get("recovery") or {},
        seconds_to_healthy=int((now - started).total_seconds()) if healthy and started else "",
    )
    return record


def _recovery_end_text(ended):
    if not ended:
        return "unknown"
    if "switch_lsn" not in ended and ended.get("history_error"):
        return f"timeline {ended.get('timeline', '')} (its history file was not read: {ended['history_error']})"
    return f"timeline {ended.get('timeline', '')}, switched at LSN {ended.get('switch_lsn', '')}: {ended.get('reason', '')}"


def render_report(report):
    """Markdown of a point-in-time recovery report (playbooks/pitr.yml)."""
    target = report.get("target") or {}
    backup = report.get("backup") or {}
    ended = report.get("recovery_end") or {}
    rows = [
        ("result", f"{'ok' if report.get('ok') else 'FAILED'}: {report.get('message', '')}"),
        ("mode", report.get("mode", "")),
        ("target", ", ".join(f"{k} `{v}`" for k, v in target.items()) or "end of the archive"),
        (
            "recovered Cluster",
            f"`{report.get('cluster', '')}` in site {report.get('site', '')}"
            f" ({'kept' if report.get('kept') else 'removed'})",
        ),
        ("recovered from", f"ObjectStore `{report.get('object_store', '')}`, server `{report.get('server_name', '')}`"),
        (
            "base backup",
            f"`{backup.get('backup_id', '')}` (ended {backup.get('stopped', '')}, LSN {backup.get('end_lsn', '')})"
            if backup
            else "chosen by the plugin",
        ),
        ("earliest recoverable point", report.get("first_recoverability_point", "")),
        ("recovery ended", _recovery_end_text(ended)),
        ("phase", report.get("phase", "")),
        ("seconds until healthy", report.get("seconds_to_healthy", "")),
    ]
    if report.get("mode") == "replace":
        rows[3] = ("replaced Cluster", f"`{report.get('cluster', '')}` in site {report.get('site', '')}")
        rows += [
            ("new archive (serverName)", f"`{report.get('new_server_name', '')}`"),
            ("old archive, untouched", f"`{report.get('old_server_name', '')}`"),
            (
                "old data kept aside (PersistentVolumes, Retain)",
                ", ".join(report.get("retained_volumes") or []) or "none",
            ),
            ("KMS replicas started again", report.get("kms_replicas", "")),
            (
                "next",
                "the passive site still follows the old archive, on the old history: rebuild it with rejoin.yml "
                + " ".join(f"-e rejoin_site={site}" for site in report.get("passive_sites") or [])
                + " before any failover",
            ),
        ]
    lines = [
        f"# Point-in-time recovery of {report.get('source_cluster', '')}: {'OK' if report.get('ok') else 'FAILED'}",
        "",
        f"Started {report.get('time', '')}, finished {report.get('finished', '')}.",
        "",
        markdown_table(["", ""], [(k, str(v).replace("|", "\\|")) for k, v in rows]),
        "",
    ]
    tables = report.get("tables") or {}
    if tables:
        lines += [f"## Tables of database {report.get('database', '')}", ""]
        lines += [markdown_table(["table", "rows"], sorted(tables.items())), ""]
    return "\n".join(lines)
