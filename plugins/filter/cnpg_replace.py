# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja filters hanzo.kms.cnpg_replace_plan, cnpg_replace_source and cnpg_own_archive_entries (documented in their .yml files); the
logic is module_utils/cnpg_replace.py and module_utils/cnpg_rejoin.py."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.hanzo.kms.plugins.module_utils.cnpg_rejoin import active_external_clusters
from ansible_collections.hanzo.kms.plugins.module_utils.cnpg_replace import ReplaceRefused, plan, recovery_source


def cnpg_replace_plan(cluster_name, cluster, recovery_target, target_text, confirm, record=None):
    """The plan of replacing ``cluster_name`` with its recovery; a refusal fails the task with its reason."""
    try:
        return plan(cluster_name, cluster or None, recovery_target, str(target_text), str(confirm), record or None)
    except ReplaceRefused as exc:
        raise AnsibleFilterError(f"Refusing to replace {cluster_name}: {exc}") from exc


def cnpg_replace_source(record, server_name):
    """The archive the replacement recovers from: an unfinished recorded run's old archive, else ``server_name``."""
    if record is not None and not isinstance(record, dict):
        raise AnsibleFilterError("hanzo.kms.cnpg_replace_source needs the recorded plan as a dict (or none)")
    return recovery_source(record or None, str(server_name))


def cnpg_own_archive_entries(cluster, server_name):
    """The Cluster's ``spec.externalClusters`` with its own entry reading ``server_name`` (what install.yml renders)."""
    if not isinstance(cluster, dict) or not cluster.get("metadata"):
        raise AnsibleFilterError("hanzo.kms.cnpg_own_archive_entries needs the Cluster as a dict")
    entries = active_external_clusters(cluster, cluster["metadata"]["name"], server_name)
    return entries if entries is not None else (cluster.get("spec") or {}).get("externalClusters") or []


class FilterModule:
    """hanzo.kms.cnpg_replace_plan, cnpg_replace_source, cnpg_own_archive_entries."""

    def filters(self):
        return {
            "cnpg_replace_plan": cnpg_replace_plan,
            "cnpg_replace_source": cnpg_replace_source,
            "cnpg_own_archive_entries": cnpg_own_archive_entries,
        }
