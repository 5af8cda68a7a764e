# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The decisions of the operations playbooks (status, failover, switchover), as pure functions: what a site's
backups in the object store say (barman-cloud WAL and base backups, Redis backups), the normalized view of one site,
the go/no-go of a failover or switchover with its data-loss bound, and the findings of the status report.

A *site status* is the dict the ``hanzo.kms.site_status`` role gathers for one site (tolerating an unreachable one):

    {"site": "dc1", "kube_reachable": bool, "kube_error": str|None,
     "cluster": <Cluster object or None>, "cluster_error": str|None,
     "kms": {"replicas": int, "ready_replicas": int, "available": bool}|None,
     "backups": [<Backup objects of the Cluster>], "data": <hanzo.kms.site_data_info result>|None,
     "inventory_role": "active"|"passive"}

The *active* site is discovered from the Clusters (the one whose Cluster is a primary), never from the inventory's
``site_role``, which a failover makes stale. No I/O and no Ansible import: rendering is in operation_reports.py, the
reads in site_data.py.
"""

from __future__ import annotations

import datetime
import re

from ansible_collections.hanzo.kms.plugins.module_utils import backup_layout
from ansible_collections.hanzo.kms.plugins.module_utils.cnpg import (
    PHASE_HEALTHY,
    condition_true,
    get_condition,
    is_replica,
    reports_primary,
    summarize,
)
from ansible_collections.hanzo.kms.plugins.module_utils.times import (
    UTC,
    age_seconds,
    format_time,
    human_age,
    parse_time,
    utcnow,
)

# barman-cloud layout under an ObjectStore's destinationPath: <server>/wals/<16 hex>/<24 hex WAL>[.partial][.gz...],
# history files directly in wals/, base backups as <server>/base/<backup id>/backup.info (+ data).
WAL_RE = re.compile(
    r"^(?P<server>[^/]+)/wals/(?:[0-9A-F]{16}/)?(?P<name>[0-9A-F]{24}(?:\.partial)?|[0-9A-F]{8}\.history"
    r"|[0-9A-F]{24}\.[0-9A-F]{8}\.backup)(?:\.(?:gz|bz2|xz|snappy|zst|lz4))?$"
)

BASE_RE = re.compile(r"^(?P<server>[^/]+)/base/(?P<id>[^/]+)/backup\.info$")

MODES = ("failover", "switchover")


def split_s3_url(url):
    """``s3://bucket/path/`` -> (bucket, ``path/``)."""
    match = re.match(r"^s3://([^/]+)/?(.*)$", url or "")
    if not match:
        raise ValueError(f"not an s3:// URL: {url!r}")
    path = match.group(2)
    return match.group(1), (path.rstrip("/") + "/") if path else ""


def analyze_cnpg_archive(objects, prefix, now, server=None):
    """Newest archived WAL and newest base backup under an ObjectStore's ``prefix`` (barman-cloud layout).

    ``objects``: iterable of (key, last_modified, size). ``server``: only this serverName (default: every server
    found, the newest wins). Times are the objects' LastModified: when the WAL file reached the object store.
    """
    newest_wal, newest_base, wal_count, servers = None, None, 0, set()
    for key, modified, size in objects:
        if not key.startswith(prefix):
            continue
        rel = key[len(prefix) :]
        modified = parse_time(modified)
        match = WAL_RE.match(rel)
        if match and (server is None or match.group("server") == server):
            servers.add(match.group("server"))
            wal_count += 1
            if newest_wal is None or modified > newest_wal["time"]:
                newest_wal = {
                    "key": key,
                    "name": match.group("name"),
                    "server": match.group("server"),
                    "time": modified,
                    "size": size,
                }
            continue
        match = BASE_RE.match(rel)
        if match and (server is None or match.group("server") == server):
            servers.add(match.group("server"))
            if newest_base is None or modified > newest_base["time"]:
                newest_base = {
                    "key": key,
                    "backup_id": match.group("id"),
                    "server": match.group("server"),
                    "time": modified,
                }
    for entry in (newest_wal, newest_base):
        if entry:
            entry["age_seconds"] = age_seconds(entry["time"], now)
            entry["time"] = format_time(entry["time"])
    return {
        "prefix": prefix,
        "servers": sorted(servers),
        "wal_count": wal_count,
        "newest_wal": newest_wal,
        "newest_base_backup": newest_base,
    }


def summarize_redis_backups(backups, now):
    """Newest complete Redis backup from ``s3_backup_info.complete_backups`` output (newest first)."""
    if not backups:
        return {"count": 0, "newest": None}
    newest = backups[0]
    when = parse_time(newest["time"])
    rdb_key = newest["prefix"] + backup_layout.RDB_NAME
    return {
        "count": len(backups),
        "newest": {
            "name": newest["name"],
            "prefix": newest["prefix"],
            "key": rdb_key if rdb_key in newest["keys"] else None,
            "manifest_key": newest["manifest_key"],
            "size": newest["size"],
            "time": format_time(when),
            "age_seconds": age_seconds(when, now),
        },
    }


def _cluster_summary(obj):
    if not obj:
        return None
    summary = summarize(obj)
    replica = (obj.get("spec") or {}).get("replica") or {}
    archiving = get_condition(obj, "ContinuousArchiving")
    summary.update(
        source=replica.get("source"),
        healthy=summary["phase"] == PHASE_HEALTHY and condition_true(obj, "Ready"),
        is_primary=not is_replica(obj) and reports_primary(obj),
        archiving=(archiving or {}).get("status"),
        archiving_message=(archiving or {}).get("message"),
    )
    return summary


def _replication(cluster):
    if cluster is None:
        return "unknown"
    if cluster["role"] == "primary":
        state = "primary" if cluster["current_primary_is_primary"] else "promoting"
        return f"{state}, timeline {cluster['timeline']}"
    if cluster["role"] == "demoting":
        return "demoting (replica cluster switch in progress)"
    return (
        f"replica of {cluster['spec_primary'] or cluster['source']} (designated primary "
        f"{cluster['current_primary'] or '?'}{', in recovery' if not cluster['current_primary_is_primary'] else ''}"
        f"), timeline {cluster['timeline']}"
    )


def newest_k8s_backup(backups, now):
    """Counts of the completed and failed CNPG Backups and the newest completed one (name, time, age, backupId)."""
    done = [b for b in backups or [] if (b.get("status") or {}).get("phase") == "completed"]
    failed = [b for b in backups or [] if (b.get("status") or {}).get("phase") == "failed"]
    newest = max(
        done,
        key=lambda b: parse_time(b["status"].get("stoppedAt")) or datetime.datetime.min.replace(tzinfo=UTC),
        default=None,
    )
    out = {"completed": len(done), "failed": len(failed), "newest": None}
    if newest:
        stopped = parse_time(newest["status"].get("stoppedAt"))
        out["newest"] = {
            "name": newest["metadata"]["name"],
            "time": format_time(stopped),
            "age_seconds": age_seconds(stopped, now),
            "backup_id": newest["status"].get("backupId"),
        }
    return out


def _whole(seconds):
    return None if seconds is None else max(0, int(seconds))


def sql_view(sql):
    """What an instance's SQL says (``status["sql"]``: ``{"error"}`` or ``{"state": <cnpg_sql.REPLICATION_QUERY
    row>}``), normalized: the archiver (pg_stat_archiver; ``failing`` when the newest attempt failed) and the replay
    (a replica's LSNs and the age of its newest replayed commit). None when not read. Ages are the server's own
    ``now()`` minus its times: no clock of the control node involved."""
    if not sql:
        return None
    if sql.get("error"):
        return {"error": sql["error"]}
    state = sql.get("state") or {}
    failed_count = int(state.get("failed_count") or 0)
    last_failed = _whole(state.get("last_failed_age_seconds"))
    last_archived = _whole(state.get("last_archived_age_seconds"))
    return {
        "error": None,
        "in_recovery": bool(state.get("in_recovery")),
        "archiver": {
            "last_wal": state.get("last_archived_wal"),
            "time": state.get("last_archived_time"),
            "age_seconds": last_archived,
            "archived_count": int(state.get("archived_count") or 0),
            "failed_count": failed_count,
            "last_failed_wal": state.get("last_failed_wal"),
            "last_failed_time": state.get("last_failed_time"),
            "last_failed_age_seconds": last_failed,
            "failing": last_failed is not None and (last_archived is None or last_failed < last_archived),
        },
        "replay": {
            "current_lsn": state.get("current_lsn"),
            "receive_lsn": state.get("receive_lsn"),
            "replay_lsn": state.get("replay_lsn"),
            "gap_bytes": state.get("replay_gap_bytes"),
            "commit_time": state.get("replay_time"),
            "lag_seconds": _whole(state.get("replay_lag_seconds")),
        },
    }


def site_summary(status, now=None):
    """The normalized view of one site status (see the module docstring) used by preflight and reports."""
    now = now or utcnow()
    status = status or {}
    cluster = _cluster_summary(status.get("cluster"))
    data = status.get("data") or {}
    cnpg_archive = data.get("cnpg") or {}
    k8s_backups = newest_k8s_backup(status.get("backups"), now)
    base_candidates = [b for b in (k8s_backups["newest"], cnpg_archive.get("newest_base_backup")) if b]
    base = min(
        base_candidates, key=lambda b: b["age_seconds"] if b["age_seconds"] is not None else 1 << 62, default=None
    )
    redis = data.get("redis") or {}
    kms = status.get("kms")
    replayed = parse_time(status.get("replayed_commit_time"))
    return {
        "site": status.get("site"),
        "inventory_role": status.get("inventory_role"),
        "kube_reachable": bool(status.get("kube_reachable")),
        "kube_error": status.get("kube_error"),
        "cluster": cluster,
        "cluster_error": status.get("cluster_error"),
        "replication": _replication(cluster),
        "kms": kms,
        "kms_serving": bool(kms and kms.get("replicas", 0) > 0),
        "replayed_commit": {"time": format_time(replayed), "age_seconds": age_seconds(replayed, now)}
        if replayed
        else None,
        "wal_archive": cnpg_archive.get("newest_wal"),
        "wal_archive_error": cnpg_archive.get("error"),
        "base_backup": base,
        "k8s_backups": k8s_backups,
        "redis": redis.get("server"),
        "redis_backup": (redis.get("backups") or {}).get("newest"),
        "redis_backup_count": (redis.get("backups") or {}).get("count", 0),
        "redis_error": redis.get("error"),
        "redis_backup_error": (redis.get("backups") or {}).get("error"),
        "sql": sql_view(status.get("sql")),
    }


def primaries(summaries):
    """Sites whose Cluster is a primary (spec), in order; more than one means split brain."""
    return [s["site"] for s in summaries if s["cluster"] and s["cluster"]["role"] == "primary"]


def site_of_cluster(summaries, cluster_name):
    for summary in summaries:
        if summary["cluster"] and cluster_name in (summary["cluster"]["name"], summary["cluster"]["self"]):
            return summary["site"]
    return None


def _postgres_failover_bound(old, target):
    """What a failover to ``target`` can lose of the old site's transactions.

    The target keeps every transaction up to the newest one its instance has replayed (and those in WAL already in
    the object store, which the promotion replays first), so that commit's time is a true bound. The archived WAL's
    own time is not: the object store receives a segment some seconds after PostgreSQL closed it (measured: a
    transaction acknowledged 3.5 s before the newest segment's upload time was lost, docs/drill.md), so it is only
    the fallback, marked approximate, when the target's instance cannot be asked."""
    replayed = (target or {}).get("replayed_commit")
    wal = (old or {}).get("wal_archive")
    archived = (
        (f"; the newest archived WAL of {old['site']}, {wal['name']}, reached the object store at {wal['time']}")
        if wal
        else ""
    )
    if replayed:
        return {
            "bound_seconds": replayed["age_seconds"],
            "since": replayed["time"],
            "approximate": False,
            "basis": f"{target['site']} has replayed every transaction committed up to {replayed['time']}; "
            f"later ones may be lost (less if their WAL reached the object store){archived}",
        }
    if wal:
        return {
            "bound_seconds": wal["age_seconds"],
            "since": wal["time"],
            "approximate": True,
            "basis": f"APPROXIMATE: the newest transaction {(target or {}).get('site', 'the target')} replayed "
            f"is unknown{archived}; transactions committed after it, and in the seconds before it "
            "(while that segment was being uploaded), may be lost",
        }
    return {
        "bound_seconds": None,
        "since": None,
        "approximate": True,
        "basis": "neither the target's newest replayed transaction nor an archived WAL of the old site is "
        "known: the bound is unknown",
    }


def _data_loss(mode, old, target=None):
    if mode == "switchover":
        return {
            "postgres": {
                "bound_seconds": 0,
                "basis": "switchover with the demotion token: the new primary replays up to the old "
                "primary's shutdown checkpoint",
            },
            "redis": {"bound_seconds": 0, "basis": "fresh backup taken after the old site's KMS was stopped"},
        }
    backup = (old or {}).get("redis_backup")
    return {
        "postgres": _postgres_failover_bound(old, target),
        "redis": {
            "bound_seconds": backup["age_seconds"] if backup else None,
            "since": backup["time"] if backup else None,
            "basis": f"newest complete Redis backup of {old['site']} taken at {backup['time']}"
            if backup
            else "no complete Redis backup of the old site: Redis starts empty",
        },
    }


def preflight(mode, target, statuses, now=None, require_promoted=False):
    """Go/no-go for a failover or switchover to ``target``; ``require_promoted``: refuse unless the target is
    already promoted (``done``), for a run that may only finish an earlier one.

    Returns ``{ok, refusals, warnings, target, old_site, state, cnpg_state, phrase, data_loss, sites}`` where
    ``state`` is ``fresh`` (nothing done yet), ``resume`` (an earlier run stopped midway) or ``done`` (CNPG already
    promoted; the remaining steps only check).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    now = now or utcnow()
    sums = [site_summary(s, now) for s in statuses]
    by_site = {s["site"]: s for s in sums}
    refusals, warnings = [], []
    result = {
        "mode": mode,
        "target": target,
        "old_site": None,
        "state": None,
        "cnpg_state": None,
        "phrase": f"{mode.upper()} TO {target}",
        "refusals": refusals,
        "warnings": warnings,
        "sites": sums,
        "checked_at": format_time(now),
    }
    tgt = by_site.get(target)
    if tgt is None:
        refusals.append(f"{target!r} is not a site of the inventory (sites: {', '.join(by_site) or 'none'})")
        return _finish(result, mode, None)
    if not tgt["kube_reachable"]:
        refusals.append(
            f"the target site {target} is unreachable ({tgt['kube_error'] or 'no answer'}): nothing "
            "can be promoted there"
        )
        return _finish(result, mode, None)
    cluster = tgt["cluster"]
    if cluster is None:
        refusals.append(f"the target site {target} has no CNPG Cluster ({tgt['cluster_error'] or 'not found'})")
        return _finish(result, mode, None)

    others = [s for s in sums if s["site"] != target]
    if cluster["role"] == "replica":
        old_site = site_of_cluster(sums, cluster["spec_primary"])
        if old_site is None and others:
            old_site = others[0]["site"] if len(others) == 1 else None
        if old_site is None or old_site == target:
            refusals.append(
                f"the target Cluster {cluster['name']} replicates from {cluster['spec_primary']!r}, "
                "which is no site of the inventory"
            )
        result["old_site"] = old_site
        result["cnpg_state"] = "replica"
        if not cluster["healthy"]:
            refusals.append(
                f"the target Cluster {cluster['name']} is not a healthy replica: phase "
                f"{cluster['phase']!r}, Ready={cluster['ready']}"
            )
    elif cluster["role"] == "primary":
        # promoted already (done) or being promoted (resume): the old site is whichever other site was primary
        old_candidates = [
            s["site"]
            for s in others
            if s["cluster"] and s["cluster"]["spec_primary"] in (cluster["name"], cluster["self"])
        ] or [s["site"] for s in others]
        result["old_site"] = old_candidates[0] if old_candidates else None
        result["cnpg_state"] = "promoted" if cluster["is_primary"] and cluster["healthy"] else "promoting"
        if cluster["phase"] and "unrecoverable" in cluster["phase"]:
            refusals.append(f"the target Cluster {cluster['name']} is unrecoverable: {cluster['phase_reason']}")
    else:
        refusals.append(
            f"the target Cluster {cluster['name']} is itself being demoted ({cluster['phase']}); wait "
            "for the replica cluster switch to finish"
        )
        return _finish(result, mode, None)

    old = by_site.get(result["old_site"]) if result["old_site"] else None
    old_cluster = old["cluster"] if old else None
    if mode == "switchover":
        if old is None or not old["kube_reachable"]:
            without_old = _switchover_without_old(cluster, result["cnpg_state"])
            if without_old["ok"]:
                # an interrupted switchover demoted the old primary and recorded its token: finish it with the token
                result["token_recorded"] = True
                warnings.append(
                    f"the old site {result['old_site'] or '?'} is unreachable "
                    f"({(old or {}).get('kube_error') or 'unknown'}): {without_old['detail']}"
                )
            else:
                refusals.append(
                    f"a switchover needs both sites; the old site {result['old_site'] or '?'} is "
                    f"unreachable ({(old or {}).get('kube_error') or 'unknown'}) and "
                    f"{without_old['detail']}. Use the failover playbook if it is lost"
                )
        elif old_cluster is None:
            refusals.append(f"the old site {old['site']} has no CNPG Cluster ({old['cluster_error'] or 'not found'})")
        elif result["cnpg_state"] == "replica":
            if old_cluster["role"] == "primary" and not old_cluster["healthy"]:
                refusals.append(
                    f"the old primary {old_cluster['name']} is not healthy (phase {old_cluster['phase']!r}); "
                    "a switchover needs its clean shutdown. Repair it, or fail over"
                )
            if old_cluster["role"] in ("replica", "demoting") and old_cluster["spec_primary"] not in (
                cluster["name"],
                cluster["self"],
            ):
                refusals.append(f"neither {old_cluster['name']} nor {cluster['name']} is the primary")
        if result["cnpg_state"] == "replica" and old and old["kube_reachable"] and not old["redis"]:
            refusals.append(
                f"the old site's Redis does not answer ({old['redis_error'] or 'unknown'}): the fresh "
                "Redis backup a switchover takes is impossible"
            )
    else:
        if old is None or not old["kube_reachable"]:
            warnings.append(
                f"the old site {result['old_site'] or '?'} is unreachable: it cannot be fenced; make sure "
                "it stays down (or is fenced) before it comes back"
            )
        elif (
            old_cluster and old_cluster["role"] == "primary" and old_cluster["fencing"] not in ("fenced", "hibernated")
        ):
            warnings.append(
                f"the old site {old['site']} still answers and its Cluster is a primary: it will be fenced "
                "(KMS scaled to 0, Cluster fenced). A switchover would lose no data"
            )
    if not tgt["kms_serving"] and not tgt["redis"]:
        refusals.append(
            f"the target site's Redis does not answer ({tgt['redis_error'] or 'unknown'}): the Redis "
            "backup cannot be restored"
        )
    split = primaries(sums)
    if len(split) > 1 and not (old_cluster and old_cluster["fencing"] in ("fenced", "hibernated")):
        warnings.append(f"more than one Cluster is primary: {', '.join(split)} (split brain)")
    if result["cnpg_state"] == "replica":
        demoted = mode == "switchover" and (
            old_cluster and old_cluster["role"] in ("replica", "demoting") or result.get("token_recorded")
        )
        result["state"] = "resume" if (demoted or tgt["kms_serving"]) else "fresh"
    else:
        result["state"] = "done" if result["cnpg_state"] == "promoted" else "resume"
    if require_promoted and result["state"] != "done":
        refusals.append(
            f"the target Cluster {cluster['name']} is not the promoted primary ({result['cnpg_state']}): "
            f"this run may only finish a {mode} that promoted it; run the {mode} itself"
        )
    return _finish(result, mode, old, tgt)


def _switchover_without_old(cluster, cnpg_state):
    """Whether a switchover can go on with the old site unreachable: only with the demotion token an interrupted run
    recorded on the target Cluster (hanzo.kms.cnpg_promote), or after the promotion with a token was requested."""
    recorded = cluster.get("recorded_token") or {}
    if cnpg_state == "replica" and recorded.get("usable"):
        return {
            "ok": True,
            "detail": (
                f"the interrupted switchover recorded {recorded.get('from')}'s demotion token on {cluster['name']} at "
                f"{recorded.get('recorded')}; the promotion uses it (CloudNativePG promotes once its LSN is replayed: no "
                "data loss). The steps on the old site (stop its KMS, fresh Redis backup) were done before the demotion "
                "and are skipped; the newest Redis backup of the old site is restored"
            ),
        }
    if cnpg_state in ("promoted", "promoting") and cluster.get("promotion_token"):
        return {
            "ok": True,
            "detail": f"{cluster['name']} was promoted with the demotion token; the remaining steps "
            "run without the old site",
        }
    if cnpg_state == "replica" and recorded:
        return {
            "ok": False,
            "detail": f"the demotion token recorded on {cluster['name']} cannot be used: {recorded.get('problem')}",
        }
    return {
        "ok": False,
        "detail": f"no demotion token is recorded on {cluster['name']} (the old primary was not "
        "demoted, or its token was never read)",
    }


def _finish(result, mode, old, target=None):
    result["ok"] = not result["refusals"]
    result["data_loss"] = _data_loss(mode, old, target)
    if result.get("token_recorded"):
        backup = (old or {}).get("redis_backup")
        result["data_loss"]["redis"] = {
            "bound_seconds": 0 if backup else None,
            "basis": (
                f"newest complete Redis backup of {old['site']}, taken at {backup['time']}: the fresh backup the "
                "interrupted switchover took after stopping the old site's KMS (or a later one)"
            )
            if backup
            else "no complete Redis backup of the old site: Redis starts empty",
        }
    return result


def status_findings(summaries, lb=None):
    """Plain-language findings: the discovered primary, stale inventory roles, unreachable parts, LB disagreement."""
    found = []
    by_site = {s["site"]: s for s in summaries}
    fenced = [site for site in primaries(summaries) if by_site[site]["cluster"]["fencing"] in ("fenced", "hibernated")]
    prim = [site for site in primaries(summaries) if site not in fenced]
    serving = {i["name"]: sorted(i.get("serving") or []) for i in lb or [] if i.get("reachable", True)}
    lb_targets = sorted({site for sites in serving.values() for site in sites})
    if len(prim) == 1:
        found.append(f"Active site (from the Clusters): {prim[0]}.")
        stale = [
            s["site"]
            for s in summaries
            if s["inventory_role"] and (s["inventory_role"] == "active") != (s["site"] == prim[0])
        ]
        if stale:
            found.append(
                f"The inventory's site_role is stale for {', '.join(stale)}: set site_role: active on "
                f"{prim[0]} (passive elsewhere) before the next install run."
            )
    elif len(prim) > 1:
        timelines = ", ".join(f"{site} on timeline {_timeline(by_site[site])}" for site in prim)
        advice = (
            f" The load balancers send traffic to {', '.join(lb_targets)}: fence the other one now (the "
            f"failover to {lb_targets[0]}, run again, fences a reachable old primary)."
            if len(lb_targets) == 1 and lb_targets[0] in prim
            else ""
        )
        found.append(f"SPLIT BRAIN: more than one Cluster is an unfenced primary: {timelines}.{advice}")
    else:
        found.append("No reachable Cluster is an unfenced primary (a site is down or a promotion is in progress).")
    for site in fenced:
        diverged = (
            f"; {prim[0]} was promoted on timeline {_timeline(by_site[prim[0]])}: what {site} wrote after "
            f"that promotion diverged and is not in {prim[0]}. Re-create {site}'s Cluster as a replica of "
            f"{prim[0]} before it serves again"
            if len(prim) == 1
            else ""
        )
        found.append(
            f"{site} is an old primary, FENCED (its Cluster is still a primary, timeline "
            f"{_timeline(by_site[site])}, its instances stopped){diverged}."
        )
    for s in summaries:
        if not s["kube_reachable"]:
            found.append(
                f"Site {s['site']} is UNREACHABLE ({s['kube_error'] or 'no answer'}); its column shows what "
                "the object store knows."
            )
        archiver = ((s.get("sql") or {}).get("archiver")) or {}
        if archiver.get("failing"):
            found.append(
                f"WAL archiving FAILS in {s['site']}: the newest attempt, {archiver['last_failed_wal']} "
                f"{human_age(archiver['last_failed_age_seconds'])} ago, failed ({archiver['failed_count']} failures "
                "since the statistics were reset); the WAL written since is not in the object store."
            )
    if len({tuple(v) for v in serving.values()}) > 1:
        routes = "; ".join(f"{k} -> {', '.join(v) or 'nothing'}" for k, v in serving.items())
        found.append(f"The load balancers disagree: {routes}.")
    elif serving:
        target = next(iter(serving.values()))
        found.append(f"Load balancers send traffic to: {', '.join(target) or 'NOTHING'}.")
        if len(prim) == 1 and target and target != [prim[0]]:
            found.append(f"The load balancers do not point at the primary site {prim[0]}.")
    return found


def _timeline(summary):
    timeline = (summary.get("cluster") or {}).get("timeline")
    return "?" if timeline is None else timeline
