"""The in-process action plugins (plugins/plugin_utils/in_process.py): on the control node they do the module's work
in the controller's process with the module's argument spec; elsewhere, or with become, the module runs."""

from __future__ import annotations

import json
from unittest.mock import MagicMock

import pytest

from ansible_collections.hanzo.kms.plugins.action.operation_report import ActionModule as ReportAction
from ansible_collections.hanzo.kms.plugins.action.switch_preflight import ActionModule as PreflightAction


def action(cls, args, transport="local", become=False, check_mode=False):
    task = MagicMock(args=args, async_val=0, check_mode=check_mode)
    connection = MagicMock(transport=transport)
    connection._shell.tmpdir = None  # pylint: disable=protected-access
    play_context = MagicMock(become=become, check_mode=check_mode)
    plugin = cls(task, connection, play_context, loader=MagicMock(), templar=MagicMock(), shared_loader_obj=MagicMock())
    plugin._execute_module = MagicMock(return_value={"changed": False, "ran": "module"})  # pylint: disable=protected-access
    return plugin


def report_args(tmp_path, **extra):
    return dict(
        {
            "dir": str(tmp_path),
            "name": "run1",
            "operation": "failover",
            "step": "preflight",
            "result": "ok",
            "detail": "go",
        },
        **extra,
    )


def test_on_the_control_node_the_report_is_written_in_process(tmp_path):
    plugin = action(ReportAction, report_args(tmp_path))
    result = plugin.run(task_vars={})
    assert not result.get("failed"), result
    plugin._execute_module.assert_not_called()  # pylint: disable=protected-access
    assert result["written"] == [str(tmp_path / "run1.json"), str(tmp_path / "run1.md")]
    report = json.loads((tmp_path / "run1.json").read_text())
    assert [(s["name"], s["result"], s["detail"]) for s in report["steps"]] == [("preflight", "ok", "go")]
    assert (tmp_path / "failover-latest.md").read_text() == result["markdown"]
    assert (tmp_path / "run1.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("transport, become", [("ssh", False), ("local", True)])
def test_on_another_host_or_with_become_the_module_runs(tmp_path, transport, become):
    args = report_args(tmp_path)
    plugin = action(ReportAction, args, transport=transport, become=become)
    result = plugin.run(task_vars={"x": 1})
    assert result["ran"] == "module"
    plugin._execute_module.assert_called_once_with(  # pylint: disable=protected-access
        module_name="hanzo.kms.operation_report", module_args=args, task_vars={"x": 1}
    )
    assert not list(tmp_path.iterdir())


def test_check_mode_renders_and_writes_nothing(tmp_path):
    result = action(ReportAction, report_args(tmp_path), check_mode=True).run(task_vars={})
    assert not result.get("failed") and "written" not in result and "preflight" in result["markdown"]
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"bogus": 1}, "Unsupported parameters for (hanzo.kms.operation_report) module: bogus"),
        ({"name": None}, "missing parameter(s) required by 'dir': name"),
        ({"result": "great"}, "value of result must be one of"),
        ({"mode": "0999"}, "mode must be an octal number such as '0600', not '0999'"),
    ],
)
def test_bad_arguments_fail_with_the_modules_words_and_write_nothing(tmp_path, extra, message):
    args = {k: v for k, v in report_args(tmp_path, **extra).items() if v is not None}
    result = action(ReportAction, args).run(task_vars={})
    assert result["failed"] and message in result["msg"], result
    assert not list(tmp_path.iterdir())


def test_the_preflight_refusal_fails_with_the_decision_and_its_warnings():
    args = {"mode": "failover", "target_site": "dc2", "sites": []}
    result = action(PreflightAction, args).run(task_vars={})
    assert result["failed"] and result["msg"].startswith("refusing the failover to dc2: 'dc2' is not a site")
    assert result["ok"] is False and result["refusals"] and result["warnings"] == result["warnings_found"]
    relaxed = action(PreflightAction, dict(args, fail_on_refusal=False)).run(task_vars={})
    assert not relaxed.get("failed") and relaxed["ok"] is False and relaxed["changed"] is False


def test_the_preflight_warnings_are_shown_as_ansible_warnings(monkeypatch):
    decision = {"ok": True, "refusals": [], "warnings_found": ["the old site dc1 is unreachable"], "changed": False}
    monkeypatch.setattr(
        "ansible_collections.hanzo.kms.plugins.action.switch_preflight.run_preflight",
        lambda params, check_mode: dict(decision),
    )
    result = action(PreflightAction, {"mode": "failover", "target_site": "dc2", "sites": []}).run(task_vars={})
    assert not result.get("failed") and result["warnings"] == ["the old site dc1 is unreachable"]
