# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja filters hanzo.kms.cnpg_archive_server_name, cnpg_server_names, cnpg_rejoin_plan, cnpg_retained_volumes and cnpg_rejoin_report
(documented in their .yml files); the logic is module_utils/cnpg_rejoin.py."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.hanzo.kms.plugins.module_utils.cnpg_rejoin import (
    RejoinRefused,
    archive_server_name,
    plan,
    render_report,
    retained_volumes,
    server_names,
)


def cnpg_archive_server_name(cluster_name, reads):
    """The serverName Cluster ``cluster_name`` archives under now, from every site's Clusters."""
    if not isinstance(reads, (list, tuple)):
        raise AnsibleFilterError("hanzo.kms.cnpg_archive_server_name needs a list of Clusters or k8s_info results")
    return archive_server_name(cluster_name, list(reads))


def cnpg_server_names(existing, prefix, site, sites, overrides=None, own_source=None):
    """The archive names of site ``site``'s Cluster: its own and each site's."""
    if existing is not None and not isinstance(existing, dict):
        raise AnsibleFilterError("hanzo.kms.cnpg_server_names needs the existing Cluster as a dict (or None)")
    return server_names(existing or None, prefix, site, list(sites), overrides or {}, own_source or None)


def cnpg_rejoin_plan(site, active_site, cluster_name, old=None, active_cluster=None, record=None):
    """The plan of a rejoin of ``site``; a refusal fails the task with its reason."""
    try:
        return plan(site, active_site, cluster_name, old or None, active_cluster or None, record or None)
    except RejoinRefused as exc:
        raise AnsibleFilterError(f"Refusing to rejoin {site}: {exc}") from exc


def cnpg_retained_volumes(claims, cluster_name):
    """The PersistentVolumes behind the Cluster's claims."""
    return retained_volumes(claims or [], cluster_name)


def cnpg_rejoin_report(report):
    """Markdown of a rejoin report."""
    if not isinstance(report, dict):
        raise AnsibleFilterError("hanzo.kms.cnpg_rejoin_report needs the report as a dict")
    return render_report(report)


class FilterModule:
    """hanzo.kms.cnpg_archive_server_name, cnpg_server_names, cnpg_rejoin_plan, cnpg_retained_volumes, cnpg_rejoin_report."""

    def filters(self):
        return {
            "cnpg_archive_server_name": cnpg_archive_server_name,
            "cnpg_server_names": cnpg_server_names,
            "cnpg_rejoin_plan": cnpg_rejoin_plan,
            "cnpg_retained_volumes": cnpg_retained_volumes,
            "cnpg_rejoin_report": cnpg_rejoin_report,
        }
