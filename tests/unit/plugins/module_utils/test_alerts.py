# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

import json

import pytest

from ansible_collections.hanzo.kms.plugins.filter import monitoring
from ansible_collections.hanzo.kms.plugins.module_utils import alerts, cron, times

DAILY = "0 0 2 * * *"
HOURLY = "17 * * * *"


def site(name="dc2", role="passive", active="dc1", **more):
    return alerts.Site(name, role, active, "kms", f"kms-pg-{name}", **more)


# -- durations -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, seconds",
    [(900, 900), ("900", 900), ("15m", 900), ("5min", 300), ("1h30m", 5400), ("1d", 86400), ("1w2d", 777600)],
)
def test_parse_duration(value, seconds):
    assert times.parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "15 minutes", "m15", "1.5h", "-5m", "5mm", True, None])
def test_parse_duration_refuses(value):
    with pytest.raises(ValueError):
        times.parse_duration(value)


def test_prometheus_duration():
    assert [times.prometheus_duration(s) for s in (0, 59, 900, 4500, 87300, 694861)] == [
        "0s",
        "59s",
        "15m",
        "1h15m",
        "1d15m",
        "1w1d1h1m1s",
    ]


# -- cron ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "schedule, seconds",
    [
        (HOURLY, 3600),
        (DAILY, 86400),
        ("*/15 * * * *", 900),
        ("0,10 * * * *", 3000),  # 00 and 10 past: the longest gap is 50 min
        ("0 0 * * 1-5", 3 * 86400),  # Friday to Monday
        ("0 0 * * sat,SUN", 6 * 86400),
        ("0 0 1 * *", 31 * 86400),
        ("0 0 29 2 *", 1461 * 86400),  # leap days
        ("0 0 1,15 * 1", 7 * 86400),  # day of month OR day of week when both are restricted
        ("*/30 * * * * *", 30),
        ("@hourly", 3600),
        ("@daily", 86400),
        ("@every 90m", 5400),
        ("0 0 * * 7", 7 * 86400),  # 7 is Sunday too
    ],
)
def test_longest_interval(schedule, seconds):
    assert cron.longest_interval(schedule) == seconds


@pytest.mark.parametrize(
    "schedule, reason",
    [
        ("* * * *", "expected five fields"),
        ("61 * * * *", "outside 0-59"),
        ("0 0 31 2 *", "less than twice"),
        ("*/0 * * * *", "bad step"),
        ("x * * * *", "not a number"),
        ("@every soon", "invalid duration"),
    ],
)
def test_longest_interval_refuses(schedule, reason):
    with pytest.raises(cron.CronError, match=reason):
        cron.longest_interval(schedule)


# -- thresholds ----------------------------------------------------------------------------------------------------
def test_thresholds_derive_from_the_rpo():
    assert alerts.alert_thresholds("15m", DAILY, HOURLY) == {
        "rpo": 900,
        "base_backup_interval": 86400,
        "redis_backup_interval": 3600,
        "wal_archive_age": 900,
        "replay_lag": 900,
        "base_backup_age": 87300,
        "redis_backup_age": 4500,
    }
    longer = alerts.alert_thresholds(3600, "0 0 */6 * * *", "*/30 * * * *")
    assert (longer["wal_archive_age"], longer["base_backup_age"], longer["redis_backup_age"]) == (3600, 25200, 5400)


def test_thresholds_overrides():
    got = alerts.alert_thresholds("15m", DAILY, HOURLY, overrides={"replay_lag": "30m", "base_backup_age": ""})
    assert got["replay_lag"] == 1800 and got["base_backup_age"] == 87300 and got["wal_archive_age"] == 900
    with pytest.raises(alerts.AlertError, match="unknown threshold 'lag'"):
        alerts.alert_thresholds("15m", DAILY, HOURLY, overrides={"lag": "30m"})
    with pytest.raises(alerts.AlertError, match="monitoring_replay_lag_threshold"):
        alerts.alert_thresholds("15m", DAILY, HOURLY, overrides={"replay_lag": "soon"})


@pytest.mark.parametrize(
    "rpo, base, redis, archive_timeout, reason",
    [
        ("", DAILY, HOURLY, "5min", r"RPO \(kms_rpo\) is required"),
        ("fast", DAILY, HOURLY, "5min", r"RPO \(kms_rpo\): invalid duration"),
        (0, DAILY, HOURLY, "5min", "longer than 0 seconds"),
        ("4m", DAILY, HOURLY, "5min", "shorter than PostgreSQL's archive_timeout 5m"),
        ("15m", DAILY, HOURLY, "30min", "shorter than PostgreSQL's archive_timeout 30m"),
        ("15m", "0 2 * * *", "* * *", "5min", r"Redis backup schedule \(redis_backup_schedule\)"),
        ("15m", "0 0 31 2 * *", HOURLY, "5min", r"base backup schedule \(cnpg_backup_schedule\)"),
    ],
)
def test_thresholds_refuse(rpo, base, redis, archive_timeout, reason):
    with pytest.raises(alerts.AlertError, match=reason):
        alerts.alert_thresholds(rpo, base, redis, archive_timeout)


def test_a_shorter_archive_timeout_allows_a_shorter_rpo():
    assert alerts.alert_thresholds("2m", DAILY, HOURLY, "60s")["wal_archive_age"] == 120


# -- the PrometheusRule --------------------------------------------------------------------------------------------
THRESHOLDS = alerts.alert_thresholds("15m", DAILY, HOURLY)


def rules_of(site_):
    return {rule["alert"]: rule for rule in alerts.prometheus_rule(site_, THRESHOLDS)["spec"]["groups"][0]["rules"]}


def test_passive_site_rule_has_every_alert():
    rule = alerts.prometheus_rule(site(), THRESHOLDS, labels={"release": "kube-prometheus-stack"})
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["namespace"] == "kms" and rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"]["groups"][0]["name"] == "hanzo-kms-dc2"
    assert list(rules_of(site())) == list(alerts.ALERT_NAMES)


def test_active_site_rule_has_no_passive_alert():
    assert "KmsPassiveSiteServes" not in rules_of(site("dc1", "active"))


def test_rules_select_this_site_and_carry_its_label():
    rules = rules_of(site())
    assert 'pod=~"kms-pg-dc2-[0-9]+"' in rules["KmsWalArchiveTooOld"]["expr"]
    assert 'cronjob="redis-backup"' in rules["KmsRedisBackupFailed"]["expr"]
    assert 'server!="dc1"' in rules["KmsLbServesPassiveSite"]["expr"]
    assert rules["KmsReplayLagAboveRpo"]["labels"] == {"severity": "critical", "site": "dc2"}
    # the LB alert is the same in every site (no site label): Alertmanager merges the copies
    assert rules["KmsLbServesPassiveSite"]["labels"] == {"severity": "critical"}
    assert rules_of(site("dc1", "active"))["KmsLbServesPassiveSite"] == rules["KmsLbServesPassiveSite"]


def test_rules_compare_with_the_thresholds():
    rules = rules_of(site())
    assert (
        ") > 900 and on (namespace, pod) (cnpg_collector_pg_wal_archive_status" in rules["KmsWalArchiveTooOld"]["expr"]
    )
    assert rules["KmsBaseBackupTooOld"]["expr"].endswith(") > 87300")
    assert "1d15m" in rules["KmsBaseBackupTooOld"]["annotations"]["description"]
    assert rules["KmsRedisBackupTooOld"]["expr"].endswith(") > 4500")
    assert "{{ $labels.pod }}" in rules["KmsWalArchiveTooOld"]["annotations"]["description"]
    assert all(rule["annotations"]["exporter"] for rule in rules.values())


@pytest.mark.parametrize(
    "args, reason",
    [
        (("dc2", "leader", "dc1", "kms", "kms-pg-dc2"), "active or passive"),
        (("dc2", "active", "dc1", "kms", "kms-pg-dc2"), "dc2 is active but the active site is dc1"),
        (("dc1", "passive", "dc1", "kms", "kms-pg-dc1"), "dc1 is passive but the active site is dc1"),
        (("DC2", "passive", "dc1", "kms", "kms-pg-dc2"), "the site name 'DC2' is not a Kubernetes name"),
        (("dc2", "passive", "dc1", "kms", 'x"} or vector(1)'), "the CNPG Cluster"),
    ],
)
def test_site_refuses(args, reason):
    with pytest.raises(alerts.AlertError, match=reason):
        alerts.Site(*args)


def test_rule_labels_must_be_labels():
    with pytest.raises(alerts.AlertError, match="monitoring_prometheus_rule_labels"):
        alerts.prometheus_rule(site(), THRESHOLDS, labels={"bad-name": "x"})


# -- the dashboard -------------------------------------------------------------------------------------------------
def test_dashboard_panels_show_the_alerts_figures():
    configmap = alerts.dashboard_configmap(site(), THRESHOLDS, labels={"grafana_dashboard": "1"})
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(configmap["data"]["hanzo-kms-dc2.json"])
    assert dashboard["uid"] == "hanzo-kms-dc2" and dashboard["title"] == "Hanzo KMS: dc2 (passive)"
    panels = {panel["title"]: panel for panel in dashboard["panels"]}
    rules = rules_of(site())
    wal = panels["WAL archive age"]
    assert wal["targets"][0]["expr"] == alerts.wal_archive_age(site())
    assert rules["KmsWalArchiveTooOld"]["expr"].startswith(f"({wal['targets'][0]['expr']}) > 900")
    assert wal["fieldConfig"]["defaults"]["thresholds"]["steps"][-1] == {"color": "red", "value": 900}
    assert len(panels["Global LB: sites receiving traffic (1)"]["fieldConfig"]["defaults"]["thresholds"]["steps"]) == 1
    grid = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in dashboard["panels"]]
    assert len(set(grid)) == len(grid) and all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in dashboard["panels"])


# -- the filters ---------------------------------------------------------------------------------------------------
SITE = {"site": "dc1", "site_role": "active", "active_site": "dc1", "namespace": "kms", "cnpg_cluster": "kms-pg-dc1"}


def test_filters():
    thresholds = monitoring.alert_thresholds("15m", DAILY, HOURLY, "", {"replay_lag": ""})
    assert thresholds == THRESHOLDS
    assert monitoring.prometheus_rule(SITE, thresholds) == alerts.prometheus_rule(alerts.Site(**SITE), thresholds)
    assert monitoring.grafana_dashboard_configmap(SITE, thresholds)["kind"] == "ConfigMap"


@pytest.mark.parametrize(
    "call, reason",
    [
        (lambda: monitoring.alert_thresholds("1m", DAILY, HOURLY), "archive_timeout"),
        (lambda: monitoring.prometheus_rule({**SITE, "zone": "a"}, THRESHOLDS), "unknown site keys zone"),
        (lambda: monitoring.prometheus_rule({"site": "dc1"}, THRESHOLDS), "the site needs"),
        (lambda: monitoring.prometheus_rule("dc1", THRESHOLDS), "must be a dict"),
        (lambda: monitoring.grafana_dashboard_configmap({**SITE, "site_role": "passive"}, THRESHOLDS), "passive"),
    ],
)
def test_filters_refuse(call, reason):
    with pytest.raises(monitoring.AnsibleFilterError, match=reason):
        call()
