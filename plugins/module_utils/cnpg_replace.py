# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replacing the active site's Cluster with a point-in-time recovery of itself (``pitr.yml -e pitr_mode=replace``,
issue 18 item 3): after logical damage (an accidental DELETE) the primary Cluster is re-created from its own archive
to a target before the damage. Plain Python (no Ansible import), used by the filters in
``plugins/filter/cnpg_replace.py``:

- the confirmation the operator types (:func:`confirmation`), naming the Cluster and the target;
- the plan (:func:`plan`): what is refused, the new ``serverName`` the replacement archives under (the recovery starts
  a new timeline; the plugin refuses to archive into a non-empty path, and the damaged history stays readable under
  the old name), what an interrupted run left and what is still to do.
"""

from __future__ import annotations

from ansible_collections.hanzo.kms.plugins.module_utils.cnpg import is_replica, reports_primary
from ansible_collections.hanzo.kms.plugins.module_utils.cnpg_rejoin import new_server_name, own_server_name

# Written in the active site before its Cluster is deleted: a re-run after an interruption reads its plan there.
RECORD_SUFFIX = "-replace"


class ReplaceRefused(ValueError):
    """The replacement is refused before anything is changed; the message says why and what to do."""


def confirmation(cluster_name, target_text):
    """What ``pitr_confirm`` must be: ``REPLACE <cluster> WITH <target as given>``."""
    return f"REPLACE {cluster_name} WITH {target_text}"


def plan(cluster_name, cluster, recovery_target, target_text, confirm, record=None):
    """What replacing Cluster ``cluster_name`` (``cluster``: the active site's Cluster now, None when absent) with its
    recovery to ``recovery_target`` (cnpg_recovery_target's checked CNPG ``recoveryTarget``; ``target_text``: the
    target as the operator gave it) does now. ``record``: the plan an earlier run wrote (None: none; a finished one
    is ignored). Raises :class:`ReplaceRefused`.

    Returns ``{"action", "cluster", "server_name", "old_server_name", "timeline", "recovery_target"}``: ``rebuild``
    (keep the volumes aside, delete the Cluster, create it recovering from ``old_server_name`` and archiving under
    ``server_name``), ``create`` (an earlier run deleted it), ``wait`` (an earlier run created the replacement)."""
    wanted = confirmation(cluster_name, target_text)
    if confirm != wanted:
        raise ReplaceRefused(
            f"pitr_confirm must be exactly {wanted!r} (the Cluster replaced and the target), got {confirm!r}; "
            "nothing was changed"
        )
    if record and record.get("finished"):
        if (
            record.get("recovery_target") == recovery_target
            and cluster is not None
            and own_server_name(cluster) == record.get("server_name")
        ):
            raise ReplaceRefused(
                f"{cluster_name} was already replaced by its recovery to {recovery_target} (finished "
                f"{record['finished']}, archiving as {record.get('server_name')}): running it again would lose every "
                f"write since. To replace it again to the same target, delete ConfigMap {cluster_name}{RECORD_SUFFIX} "
                "first; nothing was changed"
            )
        record = None
    if record:
        if record.get("recovery_target") != recovery_target:
            raise ReplaceRefused(
                f"an earlier, unfinished replacement of {cluster_name} recovers to {record.get('recovery_target')}, "
                f"not {recovery_target}: re-run it with its target (ConfigMap {cluster_name}{RECORD_SUFFIX}); "
                "nothing was changed"
            )
        if cluster is None or cluster["metadata"].get("deletionTimestamp"):
            action = "create"
        elif own_server_name(cluster) == record["server_name"]:
            action = "wait"
        else:
            action = "rebuild"  # the earlier run stopped before deleting the Cluster
        return dict(record, action=action)
    if cluster is None:
        raise ReplaceRefused(f"Cluster {cluster_name} does not exist: nothing to replace; nothing was changed")
    if is_replica(cluster) or not reports_primary(cluster):
        raise ReplaceRefused(
            f"Cluster {cluster_name} is not the primary: replace mode replaces the active site's Cluster only; "
            "nothing was changed"
        )
    timeline = int((cluster.get("status") or {}).get("timelineID") or 0)
    if not timeline:
        raise ReplaceRefused(f"Cluster {cluster_name} reports no timeline yet; nothing was changed")
    old_server_name = own_server_name(cluster)
    return {
        "action": "rebuild",
        "cluster": cluster_name,
        # the recovery ends on the next timeline: the archive is named after it, as a rejoin names its archive
        "server_name": new_server_name(cluster_name, timeline + 1, old_server_name),
        "old_server_name": old_server_name,
        "timeline": timeline,
        "recovery_target": recovery_target,
    }


def recovery_source(record, server_name):
    """The archive a replacement recovers from: the ``old_server_name`` an unfinished earlier run recorded (its
    Cluster may be gone, or already the new one archiving under the new name), else ``server_name``, the archive the
    Cluster writes now. ``record``: the recorded plan (dict), or None/{}."""
    if record and not record.get("finished") and record.get("old_server_name"):
        return record["old_server_name"]
    return server_name
