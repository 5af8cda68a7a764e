# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja filters hanzo.kms.alert_thresholds, hanzo.kms.prometheus_rule and hanzo.kms.grafana_dashboard_configmap
(documented in their .yml files).

The rules live in plugins/module_utils/alerts.py.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.hanzo.kms.plugins.module_utils import alerts

SITE_KEYS = (
    "site",
    "site_role",
    "active_site",
    "namespace",
    "cnpg_cluster",
    "redis_backup_cronjob",
    "kms_deployment",
    "lb_backend",
)


def _site(site):
    if not isinstance(site, dict):
        raise AnsibleFilterError(f"the site must be a dict with keys {', '.join(SITE_KEYS)}, got {site!r}")
    unknown = sorted(set(site) - set(SITE_KEYS))
    if unknown:
        raise AnsibleFilterError(f"unknown site keys {', '.join(unknown)}: the keys are {', '.join(SITE_KEYS)}")
    try:
        return alerts.Site(**site)
    except TypeError as exc:
        raise AnsibleFilterError(
            f"the site needs site, site_role, active_site, namespace, cnpg_cluster: {exc}"
        ) from None


def alert_thresholds(rpo, base_backup_schedule, redis_backup_schedule, archive_timeout="", overrides=None):
    """Alert thresholds in seconds derived from the RPO and the backup schedules."""
    try:
        return alerts.alert_thresholds(
            rpo,
            base_backup_schedule,
            redis_backup_schedule,
            archive_timeout or alerts.CNPG_ARCHIVE_TIMEOUT,
            overrides,
        )
    except alerts.AlertError as exc:
        raise AnsibleFilterError(str(exc)) from None


def prometheus_rule(site, thresholds, name="hanzo-kms", labels=None):
    """The site's PrometheusRule."""
    try:
        return alerts.prometheus_rule(_site(site), thresholds, name, labels)
    except alerts.AlertError as exc:
        raise AnsibleFilterError(str(exc)) from None


def grafana_dashboard_configmap(site, thresholds, name="hanzo-kms-dashboard", labels=None):
    """The site's Grafana dashboard in a ConfigMap for Grafana's dashboard sidecar."""
    try:
        return alerts.dashboard_configmap(_site(site), thresholds, name, labels)
    except alerts.AlertError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    """hanzo.kms.alert_thresholds, prometheus_rule, grafana_dashboard_configmap."""

    def filters(self):
        return {
            "alert_thresholds": alert_thresholds,
            "prometheus_rule": prometheus_rule,
            "grafana_dashboard_configmap": grafana_dashboard_configmap,
        }
