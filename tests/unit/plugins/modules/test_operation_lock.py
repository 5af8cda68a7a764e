"""hanzo.kms.operation_lock: argument handling, checked before any Kubernetes client is built or any Lease read."""

from __future__ import annotations

import re
from unittest.mock import MagicMock

import pytest

from ansible_collections.hanzo.kms.plugins.modules import operation_lock as module

ARGS = {"operation": "switchover", "sites": [{"name": "dc1", "context": "dc1"}, {"name": "dc2", "context": "dc2"}]}
RESULT = {"changed": True, "state": "acquired", "sites": [{"site": "dc1", "action": "created"}]}


@pytest.fixture
def work(collaborators):
    """The module's collaborators, recorded: the library check, the client factory, the Lease handles and the lock."""
    mocks = collaborators(
        module,
        missing=MagicMock(return_value=None),
        api_client=MagicMock(side_effect=lambda params, site: f"client-{site['name']}"),
        KubeLease=MagicMock(side_effect=lambda client, namespace, **kwargs: f"lease-{client}"),
        OperationLock=MagicMock(),
    )
    mocks.OperationLock.return_value.acquire.return_value = dict(RESULT)
    mocks.OperationLock.return_value.release.return_value = dict(RESULT, state="released")
    return mocks


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(sites=None), "missing required arguments: sites"),
        (dict(operation=None), "one of the following is required: owner, operation"),
        (dict(state="locked"), "value of state must be one of: acquired, released, got: locked"),
        (dict(sites=[{"namespace": "kms"}]), "missing required arguments: name found in sites"),
        (
            dict(sites=[{"name": "dc1", "site": "dc1"}]),
            "Unsupported parameters for (hanzo.kms.operation_lock) module: sites.site.",
        ),
        (dict(ttl="2h"), "argument 'ttl' is of type str and we were unable to convert to int"),
        (
            dict(allow_unreachable="perhaps"),
            "argument 'allow_unreachable' is of type str and we were unable to convert to bool",
        ),
        (dict(request_timeout="ten"), "argument 'request_timeout' is of type str and we were unable to convert to int"),
    ],
)
def test_bad_arguments_fail_naming_the_problem_before_any_client_is_built(
    run_module, args_with, work, changes, message
):
    run_module.refused(module, args_with(**changes), message)
    work.assert_untouched()


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(ttl=0), "ttl must be greater than 0, got 0"),
        (dict(ttl=-60), "ttl must be greater than 0, got -60"),
        (dict(request_timeout=0), "request_timeout must be greater than 0, got 0"),
        (dict(wait=-1), "wait must be 0 (do not wait) or more seconds, got -1"),
        (
            dict(sites=[{"name": "dc1"}, {"name": "dc1", "namespace": "other"}]),
            "sites must name each site once, got ['dc1', 'dc1']",
        ),
        (dict(sites=[]), "sites must name each site once, got []"),
    ],
)
def test_values_the_spec_cannot_express_are_refused_before_any_client_is_built(
    run_module, args_with, work, changes, message
):
    failed, result = run_module(module, args_with(**changes))
    assert failed and result["msg"] == message, result
    work.assert_untouched("api_client", "OperationLock")


def test_defaults_reach_the_lock(run_module, work):
    failed, result = run_module(module, dict(ARGS, run_id="run-7"))
    assert not failed and result == RESULT, result
    assert [call.args[1]["name"] for call in work.api_client.call_args_list] == ["dc1", "dc2"]
    assert all(call.args[1]["namespace"] == "kms" for call in work.api_client.call_args_list)
    assert [call.args for call in work.KubeLease.call_args_list] == [("client-dc1", "kms"), ("client-dc2", "kms")]
    assert all(
        call.kwargs == {"name": "hanzo-kms-operation-lock", "request_timeout": 10}
        for call in work.KubeLease.call_args_list
    )
    stores, owner = work.OperationLock.call_args.args
    assert stores == {"dc1": "lease-client-dc1", "dc2": "lease-client-dc2"}
    assert re.fullmatch(r"switchover/run-7@\S+", owner), owner
    assert work.OperationLock.call_args.kwargs == {
        "operation": "switchover",
        "ttl": 7200,
        "name": "hanzo-kms-operation-lock",
        "break_confirmation": "",
        "allow_unreachable": False,
        "check_mode": False,
        "wait": 0,
        "wait_for": ["redis-backup"],
    }
    work.OperationLock.return_value.acquire.assert_called_once_with()
    work.OperationLock.return_value.release.assert_not_called()


def test_a_given_owner_names_the_operation_and_released_releases(run_module, work):
    args = {
        "owner": "failover/20250101T000000Z-ab12@ctl",
        "state": "released",
        "ttl": "600",
        "lease_name": "lock2",
        "sites": [{"name": "dc1", "namespace": "kms2"}],
        "allow_unreachable": "yes",
    }
    failed, result = run_module(module, args, check_mode=True)
    assert not failed and result["state"] == "released", result
    assert work.OperationLock.call_args.args[1] == "failover/20250101T000000Z-ab12@ctl"
    assert work.OperationLock.call_args.kwargs == {
        "operation": "failover",
        "ttl": 600,
        "name": "lock2",
        "break_confirmation": "",
        "allow_unreachable": True,
        "check_mode": True,
        "wait": 0,
        "wait_for": ["redis-backup"],
    }
    assert work.KubeLease.call_args.args == ("client-dc1", "kms2")
    work.OperationLock.return_value.release.assert_called_once_with()
    work.OperationLock.return_value.acquire.assert_not_called()


def test_a_site_without_a_usable_client_is_an_unreachable_site_not_a_failure(run_module, work):
    def api_client(params, site):
        if site["name"] == "dc2":
            raise FileNotFoundError("/etc/kms/dc2.kubeconfig")
        return "client"

    work.api_client.side_effect = api_client
    failed, dummy = run_module(module, ARGS)
    assert not failed
    store = work.OperationLock.call_args.args[0]["dc2"]
    assert isinstance(store, module.UnconfiguredLease) and store.namespace == "kms"
    with pytest.raises(module.Unreachable, match="cannot configure the Kubernetes client: /etc/kms/dc2.kubeconfig"):
        store.get()


def test_a_missing_kubernetes_library_fails_before_any_client(run_module, work):
    work.missing.return_value = ("Failed to import the required Python library (kubernetes)", "Traceback ...")
    failed, result = run_module(module, ARGS)
    assert failed and result["msg"].startswith("Failed to import the required Python library (kubernetes)")
    work.api_client.assert_not_called()


def test_credentials_are_no_log(module_kwargs, unprotected_secrets):
    spec = module_kwargs(module)["argument_spec"]
    assert not unprotected_secrets(spec)
    for options in (spec, spec["sites"]["options"]):
        assert options["api_key"]["no_log"] and options["password"]["no_log"] and options["kubeconfig"]["no_log"]


def test_secret_values_given_per_site_are_masked(run_module, work):
    args = dict(ARGS, password="top-password", sites=[{"name": "dc1", "api_key": "dc1-token"}])
    failed, dummy = run_module(module, args)
    assert not failed
    assert {"top-password", "dc1-token"} <= run_module.instance.no_log_values
