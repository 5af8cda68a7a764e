# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The alerts and the dashboard of one site (plain Python, no Ansible import): thresholds derived from the RPO the
inventory states, the PrometheusRule (monitoring.coreos.com/v1) and the Grafana dashboard, both built from one list
of figures so that a panel shows exactly what its alert compares. Role hanzo.kms.monitoring applies them; docs/
operations.md ("Alerts") explains each alert.

Exporters: CloudNativePG's instance exporter (port ``metrics`` of every instance, the cnpg role's PodMonitor) with the
Barman Cloud plugin's metrics it serves, kube-state-metrics (CronJob and Deployment status), and HAProxy's built-in
Prometheus exporter on every global LB host (``global_lb_prometheus_bind``)."""

from __future__ import annotations

import json
import re

from ansible_collections.hanzo.kms.plugins.module_utils import cron
from ansible_collections.hanzo.kms.plugins.module_utils.times import parse_duration, prometheus_duration

# CloudNativePG's default archive_timeout (PostgreSQL parameter): a WAL segment with data waits at most this long to be
# closed and archived, so no alert on the archive's age can promise a shorter RPO.
CNPG_ARCHIVE_TIMEOUT = "5min"
# The thresholds an inventory may override (role variables monitoring_<name>_threshold).
THRESHOLDS = ("wal_archive_age", "replay_lag", "base_backup_age", "redis_backup_age")
# The Barman Cloud plugin's metric prefix: its name barman-cloud.cloudnative-pg.io with '.' and '-' as '_'.
BARMAN_METRICS = "barman_cloud_cloudnative_pg_io"
# HAProxy server states in which it sends a site traffic (its exporter's state label; DOWN and MAINT send none).
LB_SERVING_STATES = "UP|DRAIN|NOLB"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class AlertError(ValueError):
    """Input the alerts cannot be built from, with the reason."""


def _seconds(value, what):
    if value in (None, ""):
        raise AlertError(f"{what} is required: seconds or a duration such as 15m")
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise AlertError(f"{what}: {exc}") from None
    if seconds <= 0:
        raise AlertError(f"{what} must be longer than 0 seconds, got {value!r}")
    return seconds


def _interval(schedule, what):
    try:
        return cron.longest_interval(schedule)
    except cron.CronError as exc:
        raise AlertError(f"{what}: {exc}") from None


def alert_thresholds(
    rpo, base_backup_schedule, redis_backup_schedule, archive_timeout=CNPG_ARCHIVE_TIMEOUT, overrides=None
):
    """Thresholds in seconds derived from the RPO (seconds or ``15m``-style text):

    - wal_archive_age = RPO: WAL not in the object store is what losing the primary's data center loses;
    - replay_lag = RPO: a failover keeps what the passive site replayed (the failover report's data-loss bound);
    - base_backup_age = the base backup schedule's longest interval + RPO: a scheduled run late by more than the RPO;
    - redis_backup_age = the Redis backup schedule's longest interval + RPO: likewise.

    ``overrides``: {threshold: duration} for any of THRESHOLDS (empty values are ignored). Also returns ``rpo`` and
    both schedules' ``*_interval``. AlertError when the RPO is shorter than PostgreSQL's ``archive_timeout`` (the
    archive cannot meet it) or an input cannot be read."""
    rpo_seconds = _seconds(rpo, "the RPO (kms_rpo)")
    archive_seconds = _seconds(archive_timeout, "archive_timeout")
    if rpo_seconds < archive_seconds:
        raise AlertError(
            f"the RPO {prometheus_duration(rpo_seconds)} is shorter than PostgreSQL's archive_timeout "
            f"{prometheus_duration(archive_seconds)}: a WAL segment waits up to archive_timeout before it is archived, "
            "so the object store cannot hold that RPO. Raise kms_rpo or lower archive_timeout "
            "(cnpg_postgresql_parameters)."
        )
    base = _interval(base_backup_schedule, "the base backup schedule (cnpg_backup_schedule)")
    redis = _interval(redis_backup_schedule, "the Redis backup schedule (redis_backup_schedule)")
    thresholds = {
        "rpo": rpo_seconds,
        "base_backup_interval": base,
        "redis_backup_interval": redis,
        "wal_archive_age": rpo_seconds,
        "replay_lag": rpo_seconds,
        "base_backup_age": base + rpo_seconds,
        "redis_backup_age": redis + rpo_seconds,
    }
    for name, value in (overrides or {}).items():
        if name not in THRESHOLDS:
            raise AlertError(f"unknown threshold {name!r}: the thresholds are {', '.join(THRESHOLDS)}")
        if value not in (None, ""):
            thresholds[name] = _seconds(value, f"monitoring_{name}_threshold")
    return thresholds


def _name(value, what):
    if not isinstance(value, str) or not _NAME.match(value) or len(value) > 63:
        raise AlertError(
            f"{what} {value!r} is not a Kubernetes name (lower-case letters, digits and '-', starting and ending "
            "with a letter or digit)"
        )
    return value


class Site:
    """What the expressions select in one site: its name and role, the active site's name, and its objects."""

    def __init__(
        self,
        site,
        site_role,
        active_site,
        namespace,
        cnpg_cluster,
        redis_backup_cronjob="redis-backup",
        kms_deployment="kms",
        lb_backend="kms",
    ):
        if site_role not in ("active", "passive"):
            raise AlertError(f"the site role must be active or passive, got {site_role!r}")
        self.site = _name(site, "the site name")
        self.site_role = site_role
        self.active_site = _name(active_site, "the active site")
        if (site_role == "active") != (site == active_site):
            raise AlertError(f"site {site} is {site_role} but the active site is {active_site}")
        self.namespace = _name(namespace, "the namespace")
        self.cnpg_cluster = _name(cnpg_cluster, "the CNPG Cluster")
        self.redis_backup_cronjob = _name(redis_backup_cronjob, "the Redis backup CronJob")
        self.kms_deployment = _name(kms_deployment, "the KMS Deployment")
        if not isinstance(lb_backend, str) or not re.match(r"^[A-Za-z0-9_.:-]+$", lb_backend):
            raise AlertError(f"the global LB backend {lb_backend!r} is not an HAProxy proxy name")
        self.lb_backend = lb_backend

    def instances(self):
        """Selector of the Cluster's instances (pods <cluster>-<n>) in this site's namespace."""
        return f'namespace="{self.namespace}", pod=~"{self.cnpg_cluster}-[0-9]+"'

    def cronjob(self):
        return f'namespace="{self.namespace}", cronjob="{self.redis_backup_cronjob}"'


# -- figures: what a panel shows and an alert compares -------------------------------------------------------------
def wal_archive_age(site):
    return f"cnpg_pg_stat_archiver_seconds_since_last_archival{{{site.instances()}}}"


def replay_lag(site):
    return f"cnpg_pg_replication_lag{{{site.instances()}}}"


def base_backup_age(site):
    # every instance reports the ObjectStore's newest backup; 0 (no backup yet) reads as a very old one
    return f"time() - max by (namespace) ({BARMAN_METRICS}_last_available_backup_timestamp{{{site.instances()}}})"


def redis_backup_age(site):
    # a CronJob that never succeeded is as old as the CronJob itself
    selector = site.cronjob()
    return (
        f"(time() - max by (namespace, cronjob) (kube_cronjob_status_last_successful_time{{{selector}}}))"
        f" or on (namespace, cronjob) ((time() - max by (namespace, cronjob) (kube_cronjob_created{{{selector}}}))"
        f" unless on (namespace, cronjob) kube_cronjob_status_last_successful_time{{{selector}}})"
    )


def redis_backup_failed(site):
    # 1 when the newest scheduled run ended without success (scheduled after the last success, none running now)
    selector = site.cronjob()
    return (
        f"(kube_cronjob_status_last_schedule_time{{{selector}}}"
        f" > bool on (namespace, cronjob) kube_cronjob_status_last_successful_time{{{selector}}}"
        f" or on (namespace, cronjob) kube_cronjob_status_last_schedule_time{{{selector}}} > bool 0)"
        f" * on (namespace, cronjob) (kube_cronjob_status_active{{{selector}}} == bool 0)"
    )


def lb_serving(site, server_matcher=""):
    """1 per LB host (instance) and site (server) that HAProxy sends traffic to."""
    matchers = f'proxy="{site.lb_backend}", state=~"{LB_SERVING_STATES}"' + (
        f", {server_matcher}" if server_matcher else ""
    )
    return f"max by (instance, proxy, server) (haproxy_server_status{{{matchers}}})"


def kms_available(site):
    return (
        f'kube_deployment_status_replicas_available{{namespace="{site.namespace}", deployment="{site.kms_deployment}"}}'
    )


class Alert:
    """One alert: its figure and comparison with a threshold key (or a fixed value), an optional gate (a condition on
    the same instance that must hold too), how long it must hold, severity, which exporter it needs and its text."""

    def __init__(self, name, figure, compare, threshold, hold, severity, exporter, summary, description, gate=None):
        self.name, self.figure, self.compare, self.threshold = name, figure, compare, threshold
        self.hold, self.severity, self.exporter = hold, severity, exporter
        self.summary, self.description, self.gate = summary, description, gate

    def expr(self, site, thresholds):
        expr = f"({self.figure(site)}) {self.compare} {_threshold(self, thresholds)}"
        return f"{expr} and on (namespace, pod) ({self.gate(site)})" if self.gate else expr


def wal_waiting(site):
    """Completed WAL segments not archived yet (``.ready`` files): an idle database has none and its archive's age
    grows without anything to lose."""
    return f'cnpg_collector_pg_wal_archive_status{{{site.instances()}, value="ready"}} > 0'


# The alerts, in the order of docs/operations.md. Text: {site}, {threshold} (a duration) and Prometheus' $labels.
ALERTS = (
    Alert(
        "KmsWalArchiveTooOld",
        wal_archive_age,
        ">",
        "wal_archive_age",
        "1m",
        "critical",
        "CloudNativePG",
        "WAL of {site} not archived for longer than the RPO",
        "{{{{ $labels.pod }}}} has WAL waiting and archived none for more than {threshold} (the RPO): losing {site} "
        "now loses more than the RPO.",
        gate=wal_waiting,
    ),
    Alert(
        "KmsReplayLagAboveRpo",
        replay_lag,
        ">",
        "replay_lag",
        "1m",
        "critical",
        "CloudNativePG",
        "PostgreSQL replay of {site} lags more than the RPO",
        "{{{{ $labels.pod }}}} replayed no transaction for more than {threshold} (the RPO): a failover to it would "
        "lose more than the RPO (an idle primary also makes this grow).",
    ),
    Alert(
        "KmsBaseBackupTooOld",
        base_backup_age,
        ">",
        "base_backup_age",
        "1m",
        "warning",
        "CloudNativePG with the Barman Cloud plugin",
        "Newest base backup of {site} older than its schedule allows",
        "The newest base backup in the object store of {site} is older than {threshold} (longest interval of "
        "cnpg_backup_schedule + RPO).",
    ),
    Alert(
        "KmsRedisBackupTooOld",
        redis_backup_age,
        ">",
        "redis_backup_age",
        "1m",
        "warning",
        "kube-state-metrics",
        "Newest Redis backup of {site} older than its schedule allows",
        "CronJob {{{{ $labels.cronjob }}}} of {site} last succeeded more than {threshold} ago (longest interval of "
        "redis_backup_schedule + RPO).",
    ),
    Alert(
        "KmsRedisBackupFailed",
        redis_backup_failed,
        "==",
        1,
        "1m",
        "warning",
        "kube-state-metrics",
        "Redis backup of {site} failed",
        "The newest run of CronJob {{{{ $labels.cronjob }}}} of {site} ended without success (kubectl -n "
        "{{{{ $labels.namespace }}}} get jobs).",
    ),
    Alert(
        "KmsLbServesPassiveSite",
        lambda site: lb_serving(site, f'server!="{site.active_site}"'),
        "==",
        1,
        "5m",
        "critical",
        "HAProxy (global_lb_prometheus_bind)",
        "Global LB sends traffic to a site other than the active one",
        "LB {{{{ $labels.instance }}}} sends traffic to site {{{{ $labels.server }}}}; the active site is "
        "{active_site}. Switch with the failover playbooks (which also update these rules).",
    ),
    Alert(
        "KmsPassiveSiteServes",
        kms_available,
        ">",
        0,
        "5m",
        "critical",
        "kube-state-metrics",
        "The KMS of passive site {site} is serving",
        "Deployment {{{{ $labels.deployment }}}} of passive site {site} has available replicas that its Service and "
        "Ingress send requests to. Scale it to 0 (fence.yml), or give the sites the objects of their roles "
        "(site_objects.yml) if it is the active site now.",
    ),
)
ALERT_NAMES = tuple(alert.name for alert in ALERTS)
# Alerts about the global LB are the same in every site's rule, without a site label, so that Alertmanager merges
# them when several sites' Prometheus scrape the LB hosts.
GLOBAL_ALERTS = ("KmsLbServesPassiveSite",)
PASSIVE_ONLY = ("KmsPassiveSiteServes",)


def _alerts_of(site):
    return [a for a in ALERTS if a.name not in PASSIVE_ONLY or site.site_role == "passive"]


def _threshold(alert, thresholds):
    return thresholds[alert.threshold] if isinstance(alert.threshold, str) else alert.threshold


def _text(template, site, alert, thresholds):
    value = _threshold(alert, thresholds)
    return template.format(site=site.site, active_site=site.active_site, threshold=prometheus_duration(value))


def _labels(labels, what):
    labels = dict(labels or {})
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_NAME.match(key) or not isinstance(value, str):
            raise AlertError(f"{what}: {key!r}: {value!r} is not a label name with a text value")
    return labels


def rule_groups(site, thresholds):
    """The ``groups`` of a Prometheus rule file: group hanzo-kms-<site> with this site's alerts."""
    rules = []
    for alert in _alerts_of(site):
        labels = {"severity": alert.severity}
        if alert.name not in GLOBAL_ALERTS:
            labels["site"] = site.site
        rules.append(
            {
                "alert": alert.name,
                "expr": alert.expr(site, thresholds),
                "for": alert.hold,
                "labels": labels,
                "annotations": {
                    "summary": _text(alert.summary, site, alert, thresholds),
                    "description": _text(alert.description, site, alert, thresholds),
                    "exporter": alert.exporter,
                },
            }
        )
    return [{"name": f"hanzo-kms-{site.site}", "rules": rules}]


def prometheus_rule(site, thresholds, name="hanzo-kms", labels=None):
    """The PrometheusRule of one site (monitoring.coreos.com/v1), in the site's namespace; ``labels`` are added to its
    metadata (e.g. what the Prometheus' ruleSelector matches)."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": _name(name, "the PrometheusRule name"),
            "namespace": site.namespace,
            "labels": {
                "app.kubernetes.io/part-of": "hanzo-kms",
                "app.kubernetes.io/managed-by": "hanzo.kms",
                **_labels(labels, "monitoring_prometheus_rule_labels"),
            },
        },
        "spec": {"groups": rule_groups(site, thresholds)},
    }


# -- Grafana -------------------------------------------------------------------------------------------------------
# (title, figure, unit, the alert whose threshold the panel draws or None, legend); two panels per row.
PANELS = (
    ("WAL archive age", wal_archive_age, "s", "KmsWalArchiveTooOld", "{{pod}}"),
    ("Replay lag", replay_lag, "s", "KmsReplayLagAboveRpo", "{{pod}}"),
    ("Newest base backup age", base_backup_age, "s", "KmsBaseBackupTooOld", "{{namespace}}"),
    ("Newest Redis backup age", redis_backup_age, "s", "KmsRedisBackupTooOld", "{{cronjob}}"),
    ("Redis backup: newest run failed (1)", redis_backup_failed, "none", None, "{{cronjob}}"),
    ("Global LB: sites receiving traffic (1)", lb_serving, "none", None, "{{instance}} -> {{server}}"),
    ("KMS replicas available", kms_available, "short", None, "{{deployment}}"),
)
DASHBOARD_SCHEMA_VERSION = 39
PANEL_WIDTH, PANEL_HEIGHT = 12, 8


def dashboard(site, thresholds):
    """The Grafana dashboard of one site (uid hanzo-kms-<site>): one time series panel per figure, the alert's
    threshold drawn in red; the Prometheus data source is a dashboard variable."""
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    panels = []
    alerts = {alert.name: alert for alert in ALERTS}
    for index, (title, figure, unit, alert, legend) in enumerate(PANELS):
        steps = [{"color": "green", "value": None}]
        if alert:
            steps.append({"color": "red", "value": _threshold(alerts[alert], thresholds)})
        panels.append(
            {
                "id": index + 1,
                "type": "timeseries",
                "title": title,
                "datasource": datasource,
                "gridPos": {
                    "h": PANEL_HEIGHT,
                    "w": PANEL_WIDTH,
                    "x": (index % 2) * PANEL_WIDTH,
                    "y": (index // 2) * PANEL_HEIGHT,
                },
                "fieldConfig": {
                    "defaults": {
                        "unit": unit,
                        "thresholds": {"mode": "absolute", "steps": steps},
                        "custom": {"thresholdsStyle": {"mode": "line"}},
                    },
                    "overrides": [],
                },
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [{"refId": "A", "datasource": datasource, "expr": figure(site), "legendFormat": legend}],
            }
        )
    return {
        "uid": f"hanzo-kms-{site.site}",
        "title": f"Hanzo KMS: {site.site} ({site.site_role})",
        "tags": ["hanzo-kms"],
        "timezone": "utc",
        "schemaVersion": DASHBOARD_SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "refresh": "1m",
        "time": {"from": "now-24h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def dashboard_configmap(site, thresholds, name="hanzo-kms-dashboard", labels=None):
    """The dashboard as a ConfigMap for Grafana's dashboard sidecar (key hanzo-kms-<site>.json); ``labels`` must hold
    the label the sidecar watches (kube-prometheus-stack: grafana_dashboard: "1")."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": _name(name, "the dashboard ConfigMap name"),
            "namespace": site.namespace,
            "labels": {
                "app.kubernetes.io/part-of": "hanzo-kms",
                "app.kubernetes.io/managed-by": "hanzo.kms",
                **_labels(labels, "monitoring_grafana_dashboard_labels"),
            },
        },
        "data": {f"hanzo-kms-{site.site}.json": json.dumps(dashboard(site, thresholds), indent=2, sort_keys=True)},
    }
