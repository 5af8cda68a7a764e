"""hanzo.kms.switch_preflight, the module (its action plugin is tested in tests/unit/plugins/action): argument
handling, checked before the decision is made."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import operations
from ansible_collections.hanzo.kms.plugins.module_utils.module_run import ModuleFailure
from ansible_collections.hanzo.kms.plugins.modules import switch_preflight as module

SITES = [{"site": "dc1", "role": "primary"}, {"site": "dc2", "role": "replica"}]
ARGS = {"mode": "switchover", "target_site": "dc2", "sites": SITES}
DECISION = {"changed": False, "ok": True, "refusals": [], "warnings_found": []}


@pytest.fixture
def run_preflight(monkeypatch):
    mock = MagicMock(return_value=dict(DECISION))
    monkeypatch.setattr(module, "run_preflight", mock)
    return mock


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(mode=None), "missing required arguments: mode"),
        (dict(mode="takeover"), "value of mode must be one of: failover, switchover, got: takeover"),
        (dict(target_site=None), "missing required arguments: target_site"),
        (dict(sites=None), "missing required arguments: sites"),
        (
            dict(sites=["dc1", "dc2"]),
            "Elements value for option 'sites' is of type str and we were unable to convert to dict",
        ),
        (
            dict(require_promoted="perhaps"),
            "argument 'require_promoted' is of type str and we were unable to convert to bool",
        ),
        (
            dict(fail_on_refusal="perhaps"),
            "argument 'fail_on_refusal' is of type str and we were unable to convert to bool",
        ),
        (dict(force=True), "Unsupported parameters for (hanzo.kms.switch_preflight) module: force."),
    ],
)
def test_bad_arguments_fail_naming_the_problem_before_the_decision(
    run_module, args_with, run_preflight, changes, message
):
    run_module.refused(module, args_with(**changes), message)
    run_preflight.assert_not_called()


def test_the_module_validates_with_the_spec_its_action_plugin_uses(module_kwargs):
    kwargs = module_kwargs(module)
    assert kwargs["argument_spec"] is operations.PREFLIGHT_ARGUMENT_SPEC
    assert set(kwargs) == {"argument_spec", "supports_check_mode"}


def test_defaults_reach_the_decision(run_module, run_preflight):
    failed, result = run_module(module, ARGS)
    assert not failed and result == DECISION, result
    params, check_mode = run_preflight.call_args.args
    assert check_mode is False
    assert params == {
        "mode": "switchover",
        "target_site": "dc2",
        "sites": SITES,
        "require_promoted": False,
        "fail_on_refusal": True,
    }


def test_types_are_converted_and_check_mode_is_passed_on(run_module, args_with, run_preflight):
    failed, dummy = run_module(
        module, args_with(require_promoted="yes", fail_on_refusal="0", target_site=2), check_mode=True
    )
    assert not failed
    params, check_mode = run_preflight.call_args.args
    assert check_mode is True
    assert (params["require_promoted"], params["fail_on_refusal"], params["target_site"]) == (True, False, "2")


def test_a_refusal_fails_with_the_decision(run_module, run_preflight):
    run_preflight.side_effect = ModuleFailure(
        "refusing the switchover to dc2: dc1 is unreachable",
        ok=False,
        refusals=["dc1 is unreachable"],
        warnings_found=["lag unknown"],
    )
    failed, result = run_module(module, ARGS)
    assert failed and result["msg"] == "refusing the switchover to dc2: dc1 is unreachable", result
    assert result["ok"] is False and result["refusals"] == ["dc1 is unreachable"]


def test_no_secret_options(module_kwargs, unprotected_secrets):
    assert not unprotected_secrets(module_kwargs(module)["argument_spec"])
