# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Failback after a failover: what ``playbooks/rejoin.yml`` does to an old site (issue 18, item 2).

A failover promotes the passive site's Cluster to a new timeline without a demotion token: the old primary, once it
answers again (and is fenced by ``fence.yml``), holds WAL the new primary never saw and cannot follow it. Its Cluster
is re-created as a replica of the new primary, bootstrapped from the new primary's object store. Plain Python (no
Ansible import), used by the filters in ``plugins/filter/cnpg_rejoin.py``:

- the archive names (``serverName``) of each Cluster: its own and the ones its ``externalClusters`` read
  (:func:`server_names`); the cnpg role keeps what the Clusters say, so install.yml never reverts a rejoin;
- the plan of a rejoin (:func:`plan`): what is refused, which new ``serverName`` the rebuilt Cluster archives under
  (``<cluster>-tl<timeline of the new primary>``, never the old one: the old archive stays untouched and the plugin
  refuses to archive into a non-empty path), what an interrupted run left and what is still to do;
- the archive a recovery reads (:func:`archive_server_name`), which a rejoin renamed;
- the report (:func:`render_report`).
"""

from __future__ import annotations

import re

from ansible_collections.hanzo.kms.plugins.module_utils.cnpg import (
    PHASE_HEALTHY,
    any_instance_primary,
    fencing_state,
    is_replica,
    reports_primary,
)

BARMAN_PLUGIN = "barman-cloud.cloudnative-pg.io"
# Written in the rejoining site before its Cluster is deleted: a re-run after an interruption reads its plan there.
RECORD_SUFFIX = "-rejoin"
RETAINED_LABEL = "hanzo.kms/retained-from"


class RejoinRefused(ValueError):
    """The rejoin is refused before anything is changed; the message says why and what to do."""


def _plugin_server_name(parameters, default):
    return (parameters or {}).get("serverName") or default


def own_server_name(cluster):
    """The ``serverName`` the Cluster archives under (its WAL archiver plugin's), default its name."""
    name = cluster["metadata"]["name"]
    for plugin in (cluster.get("spec") or {}).get("plugins") or []:
        if plugin.get("name") == BARMAN_PLUGIN:
            return _plugin_server_name(plugin.get("parameters"), name)
    return name


def external_server_names(cluster):
    """``{external cluster name: serverName}`` of the Cluster's ``spec.externalClusters`` read through the plugin."""
    names = {}
    for entry in (cluster.get("spec") or {}).get("externalClusters") or []:
        plugin = entry.get("plugin") or {}
        if plugin.get("name") == BARMAN_PLUGIN:
            names[entry["name"]] = _plugin_server_name(plugin.get("parameters"), entry["name"])
    return names


def _clusters(reads):
    """Cluster objects from ``reads``: Clusters, or ``k8s_info`` results (their ``resources``), skipped ones too."""
    for read in reads or []:
        if not isinstance(read, dict):
            continue
        if read.get("metadata"):
            yield read
        else:
            yield from (r for r in read.get("resources") or [] if isinstance(r, dict) and r.get("metadata"))


def archive_server_name(cluster_name, reads):
    """The ``serverName`` Cluster ``cluster_name``'s archive is under now, for a recovery from it (restore_test.yml,
    pitr.yml). After a rejoin it is not the Cluster's name (:func:`new_server_name`): reading ``<cluster>`` then
    recovers the history before the failover. ``reads`` are every site's Clusters (or their ``k8s_info`` results):
    the Cluster itself says it; failing that (its site does not answer), another Cluster's externalClusters entry
    for it; failing that, ``cluster_name``."""
    clusters = list(_clusters(reads))
    for obj in clusters:
        if obj["metadata"].get("name") == cluster_name:
            return own_server_name(obj)
    for obj in clusters:
        known = external_server_names(obj)
        if cluster_name in known:
            return known[cluster_name]
    return cluster_name


def server_names(existing, prefix, site, sites, overrides=None, own_source=None):
    """The archive names the cnpg role renders into site ``site``'s Cluster: ``{"self": its own, "sites": {site:
    the serverName its externalCluster <prefix>-<site> reads}}``. ``overrides`` ({site: serverName}) first, then what
    the existing Cluster says (a rejoin changed them), then the default ``<prefix>-<site>``. ``own_source``: what
    its own entry reads instead of its own archive (a replacement recovering from its old archive, pitr.yml)."""
    overrides = overrides or {}
    cluster_name = f"{prefix}-{site}"
    known = external_server_names(existing) if existing else {}
    own = overrides.get(site) or (own_server_name(existing) if existing else "") or cluster_name
    names = {s: overrides.get(s) or known.get(f"{prefix}-{s}") or f"{prefix}-{s}" for s in sites}
    names[site] = own_source or own
    return {"self": own, "sites": names}


def new_server_name(cluster_name, timeline, old_server_name):
    """``<cluster>-tl<timeline>``: named after the new primary's timeline, so a later rejoin (always on a later
    timeline) gets another name; a second rebuild on the same timeline gets ``-r2``, ``-r3``..."""
    base = f"{cluster_name}-tl{int(timeline)}"
    if old_server_name == base:
        return f"{base}-r2"
    match = re.fullmatch(re.escape(base) + r"-r(\d+)", old_server_name or "")
    if match:
        return f"{base}-r{int(match.group(1)) + 1}"
    return base


def _phase(cluster):
    return (cluster.get("status") or {}).get("phase") or ""


def _active_checks(active_site, active_cluster):
    if active_cluster is None:
        raise RejoinRefused(
            f"the active site {active_site} has no Cluster (or did not answer): nothing to rejoin to; nothing was changed"
        )
    name = active_cluster["metadata"]["name"]
    if is_replica(active_cluster) or not reports_primary(active_cluster) or _phase(active_cluster) != PHASE_HEALTHY:
        raise RejoinRefused(
            f"the active site's Cluster {name} is not a healthy primary (phase {_phase(active_cluster)!r}, replica: "
            f"{is_replica(active_cluster)}): finish the failover first (failover.yml); nothing was changed"
        )
    timeline = (active_cluster.get("status") or {}).get("timelineID")
    if not timeline:
        raise RejoinRefused(f"the active Cluster {name} reports no timeline yet; nothing was changed")
    return name, int(timeline)


def _old_checks(site, cluster_name, old, primary_name, primary_archive, record):
    """Refuse an old Cluster that may still take writes, or one that needs no rejoin: a healthy replica of the
    primary that reads the archive the primary writes now (after pitr.yml replaced the primary, the replica still
    reads the old archive, on the old history: it is rebuilt)."""
    fencing = fencing_state(old)
    writable = not is_replica(old) or any_instance_primary(old)
    if writable and fencing not in ("fenced", "hibernated"):
        raise RejoinRefused(
            f"{site}'s Cluster {cluster_name} is still a writable primary and is not fenced (fencing: {fencing}): "
            f"two primaries would take writes. Fence it first (fence.yml -e fence_site={site}), then rejoin; "
            "nothing was changed"
        )
    replica_of_active = (((old.get("spec") or {}).get("replica") or {}).get("primary") or "") == primary_name
    replica_of_active = (
        replica_of_active and external_server_names(old).get(primary_name, primary_name) == primary_archive
    )
    if record is None and replica_of_active and not writable and fencing == "none" and _phase(old) == PHASE_HEALTHY:
        raise RejoinRefused(
            f"{site}'s Cluster {cluster_name} is already a healthy replica of {primary_name}: nothing to rejoin "
            "(switchover.yml moves the primary back); nothing was changed"
        )


def plan(site, active_site, cluster_name, old, active_cluster, record=None):
    """What a rejoin of ``site`` does now. ``old``: its Cluster (None: absent); ``active_cluster``: the active site's;
    ``record``: the plan an earlier run wrote in the site (None: none). Raises :class:`RejoinRefused`.

    Returns ``{"action", "server_name", "server_name_overrides", "old_server_name", "primary", "timeline",
    "active_external_clusters"}`` (the overrides: the cnpg role's ``cnpg_server_name_overrides``):
    ``rebuild`` (keep the old volumes aside, delete the old Cluster, create the replica), ``create`` (no Cluster:
    create the replica), ``wait`` (the replica of an earlier run exists: wait until it is healthy);
    ``active_external_clusters`` is the active Cluster's new ``spec.externalClusters`` when its entry for this site
    must read the new archive name, else None."""
    if record and record.get("finished"):
        record = None  # the plan of a rejoin that finished: this is a new one (after another failover)
    if site == active_site:
        raise RejoinRefused(
            f"{site} is the active site (its Cluster is the primary): a rejoin rebuilds a passive site; nothing was "
            "changed"
        )
    primary_name, timeline = _active_checks(active_site, active_cluster)
    if record and record.get("primary") not in (None, primary_name):
        raise RejoinRefused(
            f"an earlier rejoin of {site} followed {record.get('primary')}, the primary is {primary_name} now: remove "
            f"the ConfigMap {cluster_name}{RECORD_SUFFIX} in {site} after checking its retained volumes; nothing was "
            "changed"
        )
    if old is not None and old["metadata"].get("deletionTimestamp"):
        action = "rebuild"  # deleted by an interrupted run: wait until it is gone, then create
    elif old is None:
        action = "create"
    elif record and own_server_name(old) == record["server_name"]:
        action = "wait"
    else:
        _old_checks(site, cluster_name, old, primary_name, own_server_name(active_cluster), record)
        action = "rebuild"
    if record:
        server_name, old_server_name = record["server_name"], record.get("old_server_name") or cluster_name
    else:
        old_server_name = own_server_name(old) if old is not None else cluster_name
        server_name = new_server_name(cluster_name, timeline, old_server_name)
    return {
        "action": action,
        "server_name": server_name,
        # what the rebuilt Cluster writes and reads: its new archive, and the archive the active Cluster writes
        "server_name_overrides": {site: server_name, active_site: own_server_name(active_cluster)},
        "old_server_name": old_server_name,
        "primary": primary_name,
        "timeline": timeline,
        "active_external_clusters": active_external_clusters(active_cluster, cluster_name, server_name),
    }


def active_external_clusters(active_cluster, cluster_name, server_name):
    """The active Cluster's ``spec.externalClusters`` with the entry of ``cluster_name`` reading ``server_name``
    (what it follows after a switchover back), or None when it already does (or has no such entry)."""
    entries = (active_cluster.get("spec") or {}).get("externalClusters") or []
    changed = False
    updated = []
    for entry in entries:
        plugin = entry.get("plugin") or {}
        if entry.get("name") == cluster_name and plugin.get("name") == BARMAN_PLUGIN:
            parameters = dict(plugin.get("parameters") or {})
            if parameters.get("serverName") != server_name:
                parameters["serverName"] = server_name
                entry = dict(entry, plugin=dict(plugin, parameters=parameters))
                changed = True
        updated.append(entry)
    return updated if changed else None


def retained_volumes(claims, cluster_name):
    """The PersistentVolume names behind the Cluster's claims (``cnpg.io/cluster`` = ``cluster_name``), sorted."""
    return sorted(
        claim["spec"]["volumeName"]
        for claim in claims
        if (claim["metadata"].get("labels") or {}).get("cnpg.io/cluster") == cluster_name
        and (claim.get("spec") or {}).get("volumeName")
    )


def render_report(report):
    """Markdown of a rejoin report (``report``: the dict rejoin.yml writes as JSON)."""
    lines = [
        f"# Rejoin of {report['site']} as a replica of {report['primary']}",
        "",
        f"- result: **{report['result']}**"
        + (" (check mode: nothing was changed)" if report.get("check_mode") else ""),
        f"- started: {report.get('started', '')}, finished: {report.get('finished', '')}",
        f"- action: {report['action']}",
        f"- new archive name (serverName): `{report['server_name']}` (timeline {report['timeline']} of "
        f"{report['primary']})",
        f"- old archive, untouched: `{report['old_server_name']}` in the site's ObjectStore",
        "- old data kept aside (PersistentVolumes, reclaim policy Retain, label "
        f"`{RETAINED_LABEL}`): {', '.join(report.get('retained_volumes') or []) or 'none'}",
        f"- plan recorded in ConfigMap `{report['record']}` of {report['site']}",
        f"- seconds until the replica was healthy: {report.get('seconds_to_healthy', '?')}",
        f"- Redis: {report.get('redis', '?')}",
        "",
        "Next: switchover.yml back when wanted; delete the retained volumes (and the ConfigMap) once the old data is "
        "no longer needed (docs/operations.md, Failback).",
    ]
    return "\n".join(lines) + "\n"
