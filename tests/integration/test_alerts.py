"""The alerts and the dashboard of role hanzo.kms.monitoring, rendered for the lab inventory and checked with promtool
(issue 18 item 5).

``tests/integration/playbooks/render_alerts.yml`` renders each lab site's rule file and dashboard ConfigMap with
install.yml's variable mapping and the role's own tasks (no cluster: the lab inventory reads only the sites' roles from
the lab state, written here as the lab writes it). Then, with promtool built by ``make k8s-bins``
(tests/lab/kube_build.py, Prometheus' Go module):

- ``promtool check rules`` accepts each site's rules;
- ``promtool test rules`` runs tests/integration/promtool/*_test.yml (input series, expected alerts): every alert
  fires above its threshold and not below, and only for its own site's objects;
- every alert has such a test, firing and not firing;
- the dashboard is the JSON Grafana needs, and each panel's expression parses (promtool check rules on them as
  recording rules).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from ansible_collections.hanzo.kms.plugins.module_utils import alerts
from tests.ansible_run import REPO_ROOT, run_playbook
from tests.lab import kube_build
from tests.lab.stack import SITES

PLAYBOOK = REPO_ROOT / "tests" / "integration" / "playbooks" / "render_alerts.yml"
UNIT_TESTS = REPO_ROOT / "tests" / "integration" / "promtool"
# Panel types of Grafana's core panels that plot Prometheus queries, and the fields every dashboard and panel needs.
PANEL_TYPES = {"timeseries", "stat", "gauge", "table", "bargauge", "state-timeline"}
GRID_COLUMNS = 24


@pytest.fixture(name="promtool", scope="module")
def fixture_promtool():
    path = kube_build.cache_root() / "bin" / "promtool"
    if not path.is_file():
        pytest.fail(f"promtool is not built ({path}): run make k8s-bins")
    return path


def run_promtool(promtool, *args, cwd=None):
    proc = subprocess.run(
        [str(promtool), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(name="rendered", scope="module")
def fixture_rendered(tmp_path_factory):
    """The lab inventory's rule files and dashboard ConfigMaps: {site: {"rules": path, "dashboard": ConfigMap}}."""
    out = tmp_path_factory.mktemp("alerts")
    lab_dir = tmp_path_factory.mktemp("lab")
    # the one thing the lab inventory reads from the lab here: each site's role at lab start (tests/lab/stack.py)
    state = {"sites": {site: {"role": "active" if index == 0 else "passive"} for index, site in enumerate(SITES)}}
    (lab_dir / "state.json").write_text(json.dumps(state))
    proc = run_playbook(PLAYBOOK, "-e", f"render_dir={out}", lab_dir=lab_dir, timeout=600)
    assert proc.returncode == 0, proc.tail()
    return {
        site: {
            "rules": out / f"{site}-rules.yml",
            "dashboard": yaml.safe_load((out / f"{site}-dashboard.yml").read_text()),
        }
        for site in SITES
    }


def test_promtool_accepts_the_rules(promtool, rendered):
    for site, files in rendered.items():
        code, output = run_promtool(promtool, "check", "rules", files["rules"])
        assert code == 0, output
        expected = len(alerts.ALERTS) - (0 if site != SITES[0] else len(alerts.PASSIVE_ONLY))
        assert f"SUCCESS: {expected} rules found" in output, output


def test_thresholds_follow_the_lab_rpo(rendered):
    """kms_rpo 15m in the lab inventory: 900 s for the archive and the replay, the schedules' intervals + 900 s."""
    rules = yaml.safe_load(rendered["dc1"]["rules"].read_text())["groups"][0]["rules"]
    exprs = {rule["alert"]: rule["expr"] for rule in rules}
    assert ") > 900 and on (namespace, pod)" in exprs["KmsWalArchiveTooOld"]
    assert exprs["KmsReplayLagAboveRpo"].endswith(") > 900")
    assert exprs["KmsBaseBackupTooOld"].endswith(f") > {86400 + 900}")
    assert exprs["KmsRedisBackupTooOld"].endswith(f") > {3600 + 900}")


def test_promtool_unit_tests_pass(promtool, rendered, tmp_path):
    for files in rendered.values():
        shutil.copy(files["rules"], tmp_path)
    tests = sorted(UNIT_TESTS.glob("*_test.yml"))
    for test in tests:
        shutil.copy(test, tmp_path)
    code, output = run_promtool(promtool, "test", "rules", *[test.name for test in tests], cwd=tmp_path)
    assert code == 0, output
    assert output.count("SUCCESS") == len(tests), output


def test_promtool_unit_tests_fail_on_a_wrong_threshold(promtool, rendered, tmp_path):
    """The unit tests can fail: with the archive threshold one minute higher the alert is late and they say so."""
    rules = rendered["dc2"]["rules"].read_text()
    assert rules.count(") > 900 and on") == 1
    (tmp_path / "dc2-rules.yml").write_text(rules.replace(") > 900 and on", ") > 960 and on"))
    shutil.copy(UNIT_TESTS / "dc2_test.yml", tmp_path)
    code, output = run_promtool(promtool, "test", "rules", "dc2_test.yml", cwd=tmp_path)
    assert code != 0, output
    assert "KmsWalArchiveTooOld" in output, output


def test_every_alert_is_tested_firing_and_silent():
    """Each alert has a promtool case where it fires and one where it does not."""
    firing, silent = set(), set()
    for path in UNIT_TESTS.glob("*_test.yml"):
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    assert firing == set(alerts.ALERT_NAMES), firing
    assert silent == set(alerts.ALERT_NAMES), silent


def check_grafana_dashboard(dashboard):
    """The fields Grafana needs to import a dashboard and draw its Prometheus panels; a list of problems."""
    problems = []
    for key, kind in (("title", str), ("uid", str), ("schemaVersion", int), ("panels", list), ("time", dict)):
        if not isinstance(dashboard.get(key), kind):
            problems.append(f"dashboard {key} missing or not a {kind.__name__}")
    if isinstance(dashboard.get("uid"), str) and not 0 < len(dashboard["uid"]) <= 40:
        problems.append("uid must have 1 to 40 characters")
    variables = {v.get("name") for v in (dashboard.get("templating") or {}).get("list", [])}
    ids = [panel.get("id") for panel in dashboard.get("panels", [])]
    if len(set(ids)) != len(ids) or not all(isinstance(i, int) for i in ids):
        problems.append(f"panel ids must be unique integers: {ids}")
    for panel in dashboard.get("panels", []):
        name = panel.get("title") or panel.get("id")
        if panel.get("type") not in PANEL_TYPES or not panel.get("title"):
            problems.append(f"panel {name}: type {panel.get('type')!r} or title missing")
        grid = panel.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in "hwxy") or grid.get("x", 0) + grid.get("w", 0) > GRID_COLUMNS:
            problems.append(f"panel {name}: gridPos {grid} must hold integer h, w, x, y within {GRID_COLUMNS} columns")
        targets = panel.get("targets") or []
        if not targets or not all(t.get("expr") and t.get("refId") for t in targets):
            problems.append(f"panel {name}: every target needs expr and refId")
        for source in [panel.get("datasource")] + [t.get("datasource") for t in targets]:
            if not isinstance(source, dict) or source.get("type") != "prometheus":
                problems.append(f"panel {name}: data source {source!r} is not a Prometheus one")
            elif source.get("uid", "").startswith("$") and source["uid"].strip("${}") not in variables:
                problems.append(f"panel {name}: data source variable {source['uid']} is not defined")
    return problems


def test_dashboard_is_grafana_json(rendered):
    for site, files in rendered.items():
        configmap = files["dashboard"]
        assert configmap["kind"] == "ConfigMap" and configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        (key, text), *others = configmap["data"].items()
        assert not others and key == f"hanzo-kms-{site}.json"
        dashboard = json.loads(text)
        assert check_grafana_dashboard(dashboard) == []
        assert dashboard["uid"] == f"hanzo-kms-{site}" and len(dashboard["panels"]) == len(alerts.PANELS)
        # a panel that plots an alert's figure draws its threshold: the base backup panel at 1d15m
        base = next(p for p in dashboard["panels"] if p["title"].startswith("Newest base backup"))
        assert base["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] == 86400 + 900


def test_dashboard_checker_rejects_what_grafana_rejects(rendered):
    dashboard = json.loads(next(iter(rendered["dc1"]["dashboard"]["data"].values())))
    broken = json.loads(json.dumps(dashboard))
    del broken["schemaVersion"]
    broken["panels"][0]["gridPos"]["x"] = 20
    broken["panels"][1]["targets"][0].pop("expr")
    broken["panels"][2]["id"] = broken["panels"][3]["id"]
    problems = check_grafana_dashboard(broken)
    assert len(problems) == 4, problems


def test_dashboard_expressions_parse(promtool, rendered, tmp_path):
    """Each panel's query as a recording rule: promtool parses every one."""
    for site, files in rendered.items():
        dashboard = json.loads(next(iter(files["dashboard"]["data"].values())))
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        rules = {
            "groups": [
                {
                    "name": "panels",
                    "rules": [{"record": f"hanzo_kms:panel_{i}", "expr": e} for i, e in enumerate(exprs)],
                }
            ]
        }
        path = tmp_path / f"{site}-panels.yml"
        path.write_text(yaml.safe_dump(rules))
        code, output = run_promtool(promtool, "check", "rules", path)
        assert code == 0 and f"SUCCESS: {len(exprs)} rules found" in output, output
        # and a broken one does not
        rules["groups"][0]["rules"][0]["expr"] = exprs[0] + " >"
        path.write_text(yaml.safe_dump(rules))
        code, output = run_promtool(promtool, "check", "rules", path)
        assert code != 0, output


def test_example_inventory_rules(promtool, tmp_path):
    """inventories/example (production-shaped, rules and dashboard enabled, RPO 15m) renders rules promtool accepts."""
    run = run_playbook(PLAYBOOK, "-e", f"render_dir={tmp_path}", inventory="inventories/example", timeout=600)
    assert run.returncode == 0, run.tail()
    for site in SITES:
        code, output = run_promtool(promtool, "check", "rules", tmp_path / f"{site}-rules.yml")
        assert code == 0, output
        rules = yaml.safe_load((tmp_path / f"{site}-rules.yml").read_text())["groups"][0]["rules"]
        assert rules[0]["expr"].endswith('value="ready"} > 0)') and ") > 900 and on" in rules[0]["expr"]
