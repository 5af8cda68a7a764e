# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja filters hanzo.kms.cnpg_recovered_cluster, cnpg_recovery_result and cnpg_recovery_report (documented in their .yml
files); the logic is module_utils/cnpg_recovery.py."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.hanzo.kms.plugins.module_utils.cnpg_backup import BackupConfigError
from ansible_collections.hanzo.kms.plugins.module_utils.cnpg_recovery import (
    recovered_cluster,
    recovery_record,
    render_report,
)


def cnpg_recovered_cluster(
    name,
    namespace,
    source_cluster,
    labels=None,
    instances=1,
    storage=None,
    image_name="",
    recovery_target=None,
    object_store="",
    server_name="",
    volume_snapshots=None,
    wal_storage=None,
):
    """The manifest of Cluster ``name`` recovered from ``source_cluster``'s archive (and a snapshot Backup's
    VolumeSnapshots)."""
    if not name or not namespace or not source_cluster:
        raise AnsibleFilterError("hanzo.kms.cnpg_recovered_cluster needs a name, a namespace and a source Cluster")
    if name == source_cluster:
        raise AnsibleFilterError(f"the recovered Cluster may not be its source ({name})")
    try:
        return recovered_cluster(
            name,
            namespace,
            source_cluster,
            labels or {},
            instances=instances,
            storage=storage,
            image_name=image_name or "",
            recovery_target_spec=recovery_target or None,
            object_store=object_store or None,
            server_name=server_name or None,
            volume_snapshots=volume_snapshots or None,
            wal_storage=wal_storage or None,
        )
    except BackupConfigError as exc:
        raise AnsibleFilterError(str(exc)) from None


def cnpg_recovery_result(
    recovered, identity=None, source=None, sql=None, check_mode=False, wait_timeout=0, requested=None
):
    """The record of a recovered Cluster."""
    if recovered is not None and not isinstance(recovered, dict):
        raise AnsibleFilterError("hanzo.kms.cnpg_recovery_result needs the recovered Cluster as a dict")
    return recovery_record(recovered, identity, source, sql, check_mode, wait_timeout, requested)


def cnpg_recovery_report(report):
    """Markdown of a point-in-time recovery report."""
    if not isinstance(report, dict):
        raise AnsibleFilterError("hanzo.kms.cnpg_recovery_report needs the report as a dict")
    return render_report(report)


class FilterModule:
    """hanzo.kms.cnpg_recovered_cluster, hanzo.kms.cnpg_recovery_result, hanzo.kms.cnpg_recovery_report."""

    def filters(self):
        return {
            "cnpg_recovered_cluster": cnpg_recovered_cluster,
            "cnpg_recovery_result": cnpg_recovery_result,
            "cnpg_recovery_report": cnpg_recovery_report,
        }
