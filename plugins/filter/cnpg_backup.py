# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja filters hanzo.kms.cnpg_backup_spec, cnpg_volume_snapshot_config and cnpg_snapshot_sources (documented in
their .yml files); the logic is module_utils/cnpg_backup.py."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.hanzo.kms.plugins.module_utils.cnpg_backup import (
    BackupConfigError,
    backup_spec,
    snapshot_sources,
    volume_snapshot_config,
)


def _filter_error(call):
    try:
        return call()
    except BackupConfigError as exc:
        raise AnsibleFilterError(str(exc)) from None


def cnpg_backup_spec(cluster, *args, **kwargs):
    """The spec of a Backup (or the method part of a ScheduledBackup) of Cluster ``cluster``: backup_spec's
    arguments (method, plugin_name, target, online, snapshots)."""
    return _filter_error(lambda: backup_spec(cluster, *args, **kwargs))


def cnpg_volume_snapshot_config(class_name, *args, **kwargs):
    """The Cluster's spec.backup.volumeSnapshot, or None without a VolumeSnapshotClass: volume_snapshot_config's
    arguments (wal_class_name, online, immediate_checkpoint, wait_for_archive, owner_reference)."""
    return _filter_error(lambda: volume_snapshot_config(class_name, *args, **kwargs))


def cnpg_snapshot_sources(backup):
    """bootstrap.recovery.volumeSnapshots of a completed volumeSnapshot Backup."""
    if not isinstance(backup, dict):
        raise AnsibleFilterError("hanzo.kms.cnpg_snapshot_sources needs the Backup object as a dict")
    return _filter_error(lambda: snapshot_sources(backup))


class FilterModule:
    def filters(self):
        return {
            "cnpg_backup_spec": cnpg_backup_spec,
            "cnpg_volume_snapshot_config": cnpg_volume_snapshot_config,
            "cnpg_snapshot_sources": cnpg_snapshot_sources,
        }
