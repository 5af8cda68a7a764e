"""hanzo.kms.operation_report, the module (its action plugin is tested in tests/unit/plugins/action): argument
handling, checked before the report is read or written."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import operations
from ansible_collections.hanzo.kms.plugins.module_utils.module_run import ModuleFailure
from ansible_collections.hanzo.kms.plugins.modules import operation_report as module

ARGS = {"dir": "/var/lib/kms/reports", "name": "run1", "operation": "failover", "step": "preflight"}


@pytest.fixture
def run_report(monkeypatch):
    mock = MagicMock(return_value={"changed": True, "report": {"operation": "failover"}, "markdown": "# failover"})
    monkeypatch.setattr(module, "run_report", mock)
    return mock


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(operation=None), "missing required arguments: operation"),
        (dict(operation="restore"), "value of operation must be one of: failover, switchover, status, got: restore"),
        (dict(result="great"), "value of result must be one of: running, ok, changed, skipped, failed, got: great"),
        (dict(snapshot="during"), "value of snapshot must be one of: before, after, current, got: during"),
        (dict(finish="done"), "value of finish must be one of: succeeded, failed, got: done"),
        (dict(name=None), "missing parameter(s) required by 'dir': name"),
        (dict(data="[1, 2]"), "argument 'data' is of type str and we were unable to convert to dict"),
        (dict(sites=["dc1"]), "Elements value for option 'sites' is of type str and we were unable to convert to dict"),
        (dict(latest="maybe"), "argument 'latest' is of type str and we were unable to convert to bool"),
        (dict(path="/tmp/x"), "Unsupported parameters for (hanzo.kms.operation_report) module: path."),
    ],
)
def test_bad_arguments_fail_naming_the_problem_before_the_report_is_touched(
    run_module, args_with, run_report, changes, message
):
    run_module.refused(module, args_with(**changes), message)
    run_report.assert_not_called()


def test_the_module_validates_with_the_spec_its_action_plugin_uses(module_kwargs):
    kwargs = module_kwargs(module)
    assert kwargs["argument_spec"] is operations.REPORT_ARGUMENT_SPEC
    assert kwargs["required_by"] == operations.REPORT_VALIDATION["required_by"] == {"dir": ["name"]}


def test_defaults_reach_the_report(run_module, run_report):
    failed, result = run_module(module, ARGS)
    assert not failed and result["report"] == {"operation": "failover"}, result
    params, check_mode = run_report.call_args.args
    assert check_mode is False
    assert {
        key: params[key] for key in ("dir", "name", "operation", "step", "result", "snapshot", "latest", "mode")
    } == {
        "dir": "/var/lib/kms/reports",
        "name": "run1",
        "operation": "failover",
        "step": "preflight",
        "result": "running",
        "snapshot": "current",
        "latest": True,
        "mode": "0600",
    }
    assert all(params[key] is None for key in ("next_step", "detail", "data", "update", "sites", "lb", "finish"))


def test_no_dir_is_a_report_rendered_only_and_check_mode_is_passed_on(run_module, run_report):
    args = {"operation": "status", "sites": [{"site": "dc1"}], "latest": "no", "mode": 416}
    failed, dummy = run_module(module, args, check_mode=True)
    assert not failed
    params, check_mode = run_report.call_args.args
    assert check_mode is True
    assert (params["dir"], params["sites"], params["latest"], params["mode"]) == (None, [{"site": "dc1"}], False, 416)


def test_a_report_failure_fails_the_module_with_its_details(run_module, run_report):
    run_report.side_effect = ModuleFailure("cannot read the report /x/run1.json: bad JSON", path="/x/run1.json")
    failed, result = run_module(module, ARGS)
    assert (
        failed and result["msg"] == "cannot read the report /x/run1.json: bad JSON" and result["path"] == "/x/run1.json"
    )


@pytest.mark.parametrize(
    "mode, message",
    [
        ("0999", "mode must be an octal number such as '0600', not '0999'"),
        ("rw-------", "mode must be an octal number such as '0600', not 'rw-------'"),
        (True, "mode must be an octal number such as '0600', not True"),
        (0o1777, "mode must be between 0000 and 0777, not 0o1777"),
    ],
)
def test_a_bad_file_mode_fails_before_anything_is_written(run_module, args_with, tmp_path, mode, message):
    # the real run_report: the mode (type raw) is parsed before the report is read or written
    report_dir = tmp_path / "reports"
    failed, result = run_module(module, args_with(dir=str(report_dir), mode=mode))
    assert failed and result["msg"] == message, result
    assert not report_dir.exists()


def test_no_secret_options(module_kwargs, unprotected_secrets):
    assert not unprotected_secrets(module_kwargs(module)["argument_spec"])
