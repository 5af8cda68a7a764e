# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CNPG backups by method: the Barman Cloud plugin (object store) or volume snapshots (CSI). No Ansible import.

- ``volume_snapshot_config``: the Cluster's ``spec.backup.volumeSnapshot`` (CNPG 1.30 ``VolumeSnapshotConfiguration``:
  ``className``, ``walClassName``, ``online``, ``onlineConfiguration``, ``snapshotOwnerReference``), the defaults a
  ``Backup`` of method ``volumeSnapshot`` takes.
- ``backup_spec``: the method part of a ``Backup`` or ``ScheduledBackup`` spec (``cluster``, ``method`` and either
  ``pluginConfiguration`` or the snapshot's ``online``); CNPG's webhook refuses ``online`` with another method and a
  plugin backup without ``pluginConfiguration``.
- ``snapshot_sources``: the ``bootstrap.recovery.volumeSnapshots`` of a Cluster recovered from a completed
  ``volumeSnapshot`` Backup, from the VolumeSnapshots its ``status.snapshotBackupStatus.elements`` name.
"""

from __future__ import annotations

PLUGIN_NAME = "barman-cloud.cloudnative-pg.io"
METHOD_PLUGIN = "plugin"
METHOD_SNAPSHOT = "volumeSnapshot"
METHODS = (METHOD_PLUGIN, METHOD_SNAPSHOT)
SNAPSHOT_OWNER_REFERENCES = ("none", "cluster", "backup")
SNAPSHOT_API_GROUP = "snapshot.storage.k8s.io"
# status.snapshotBackupStatus.elements[].type -> the volumeSnapshots key it recovers
ELEMENT_KEYS = {"PG_DATA": "storage", "PG_WAL": "walStorage"}
ELEMENT_TABLESPACE = "PG_TABLESPACE"


class BackupConfigError(ValueError):
    """Why a backup setting cannot be used, one line."""


def volume_snapshot_config(
    class_name,
    wal_class_name="",
    online=True,
    immediate_checkpoint=False,
    wait_for_archive=True,
    owner_reference="none",
):
    """The Cluster's ``spec.backup.volumeSnapshot``, or None without ``class_name`` (no snapshot backups)."""
    if not class_name:
        if wal_class_name:
            raise BackupConfigError(
                f"a VolumeSnapshotClass for the WAL volume ({wal_class_name}) needs one for the data volume too"
            )
        return None
    if owner_reference not in SNAPSHOT_OWNER_REFERENCES:
        raise BackupConfigError(
            f"snapshot owner reference {owner_reference!r} is not one of {', '.join(SNAPSHOT_OWNER_REFERENCES)}"
        )
    config = {
        "className": class_name,
        "online": bool(online),
        "snapshotOwnerReference": owner_reference,
    }
    if wal_class_name:
        config["walClassName"] = wal_class_name
    if online:
        config["onlineConfiguration"] = {
            "immediateCheckpoint": bool(immediate_checkpoint),
            "waitForArchive": bool(wait_for_archive),
        }
    return config


def backup_spec(cluster, method=METHOD_PLUGIN, plugin_name=PLUGIN_NAME, target="", online=None, snapshots=None):
    """The spec of a ``Backup`` (or the method part of a ``ScheduledBackup``) of Cluster ``cluster``.

    ``online``: a snapshot backup's hot/cold choice (None: the Cluster's ``volumeSnapshot.online``); refused with
    the plugin. ``snapshots``: the Cluster's ``spec.backup.volumeSnapshot`` when known (None: not checked), since a
    snapshot backup of a Cluster without one fails in CNPG only once it runs."""
    if not cluster:
        raise BackupConfigError("a Backup needs the name of its Cluster")
    if method not in METHODS:
        raise BackupConfigError(f"backup method {method!r} is not one of {', '.join(METHODS)}")
    spec = {"cluster": {"name": cluster}, "method": method}
    if method == METHOD_PLUGIN:
        if online is not None:
            raise BackupConfigError("online/offline is a choice of volumeSnapshot backups only (method plugin)")
        spec["pluginConfiguration"] = {"name": plugin_name or PLUGIN_NAME}
    else:
        if snapshots is not None and not (snapshots or {}).get("className"):
            raise BackupConfigError(
                f"Cluster {cluster} has no spec.backup.volumeSnapshot.className: a volumeSnapshot backup needs the "
                "Cluster's VolumeSnapshotClass (the cnpg role's cnpg_volume_snapshot_class)"
            )
        if online is not None:
            spec["online"] = bool(online)
    if target:
        spec["target"] = target
    return spec


def snapshot_sources(backup):
    """``bootstrap.recovery.volumeSnapshots`` (``storage``, ``walStorage`` when the Cluster had a WAL volume,
    ``tablespaceStorage``) of completed ``volumeSnapshot`` Backup ``backup`` (the object as read); raises
    BackupConfigError naming what is missing."""
    meta = (backup or {}).get("metadata") or {}
    name = meta.get("name") or "?"
    spec = (backup or {}).get("spec") or {}
    status = (backup or {}).get("status") or {}
    method = status.get("method") or spec.get("method") or ""
    if method != METHOD_SNAPSHOT:
        raise BackupConfigError(f"Backup {name} is of method {method or 'barmanObjectStore'}, not {METHOD_SNAPSHOT}")
    if status.get("phase") != "completed":
        raise BackupConfigError(f"Backup {name} is not completed (phase {status.get('phase') or 'none'})")
    sources = {}
    for element in (status.get("snapshotBackupStatus") or {}).get("elements") or []:
        ref = {"name": element.get("name"), "kind": "VolumeSnapshot", "apiGroup": SNAPSHOT_API_GROUP}
        kind = element.get("type")
        if kind in ELEMENT_KEYS:
            sources[ELEMENT_KEYS[kind]] = ref
        elif kind == ELEMENT_TABLESPACE:
            sources.setdefault("tablespaceStorage", {})[element.get("tablespaceName")] = ref
    if "storage" not in sources:
        raise BackupConfigError(f"Backup {name} lists no PG_DATA VolumeSnapshot in status.snapshotBackupStatus")
    return sources
