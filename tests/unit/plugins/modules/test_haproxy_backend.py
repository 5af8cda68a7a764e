"""hanzo.kms.haproxy_backend: argument handling, checked before any HAProxy instance is contacted."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import haproxy
from ansible_collections.hanzo.kms.plugins.modules import haproxy_backend as module

SOCKET = "/run/haproxy/admin.sock"
ARGS = {"backend": "kms", "instances": [{"socket": SOCKET}], "servers": [{"name": "dc1", "state": "ready"}]}
SITES = {"dc1": ["kms-dc1"], "dc2": ["kms-dc2a", "kms-dc2b"]}


@pytest.fixture
def work(collaborators, monkeypatch):
    """The module's collaborators, recorded: the instance handles, the TLS context and the switch itself."""
    mocks = collaborators(
        module,
        Instance=MagicMock(side_effect=lambda name, address, **kwargs: f"instance-{name}"),
        switch=MagicMock(return_value={"changed": True, "instances": [], "unreachable_instances": []}),
    )
    mocks.tls_context = MagicMock(return_value="tls-context")
    monkeypatch.setattr(haproxy, "tls_context", mocks.tls_context)  # called by haproxy.instance_connection
    return mocks


def instance(**options):
    """The changes to ARGS that make its one instance ``options``."""
    return {"instances": [options]}


def server(**options):
    """The changes to ARGS that make its one server ``options``."""
    return {"servers": [options]}


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(backend=None), "missing required arguments: backend"),
        (dict(instances=None), "missing required arguments: instances"),
        (
            instance(socket=SOCKET, address="10.0.0.1:9999"),
            "parameters are mutually exclusive: socket|address found in instances",
        ),
        (instance(name="lb1"), "one of the following is required: socket, address found in instances"),
        (
            instance(socket=SOCKET, ca_file="/etc/ca.crt"),
            "parameters are mutually exclusive: socket|ca_file found in instances",
        ),
        (
            instance(address="lb1:9999", ca_file="/ca.crt", client_cert="/c.crt"),
            "parameters are required together: client_cert, client_key found in instances",
        ),
        (
            instance(address="lb1:9999", client_cert="/c.crt", client_key="/c.key"),
            "missing parameter(s) required by 'client_cert': ca_file found in instances",
        ),
        (
            instance(socket=SOCKET, port=9999),
            "Unsupported parameters for (hanzo.kms.haproxy_backend) module: instances.port.",
        ),
        (dict(active_site="dc1", sites=SITES), "parameters are mutually exclusive: active_site|servers"),
        (dict(servers=None, active_site="dc1"), "parameters are required together: active_site, sites"),
        (dict(servers=None, sites=SITES), "parameters are required together: active_site, sites"),
        (
            dict(servers=None, active_site="dc1", sites=SITES, inactive_state="down"),
            "value of inactive_state must be one of: drain, maint, got: down",
        ),
        (
            server(name="dc1", state="up"),
            "value of state must be one of: ready, drain, maint, got: up found in servers",
        ),
        (server(name="dc1"), "one of the following is required: state, weight found in servers"),
        (server(state="ready"), "missing required arguments: name found in servers"),
        (
            server(name="dc1", weight="heavy"),
            "argument 'weight' is of type str found in 'servers'. and we were unable to convert to int",
        ),
        (dict(min_instances="all"), "argument 'min_instances' is of type str and we were unable to convert to int"),
        (dict(drain="sometimes"), "argument 'drain' is of type str and we were unable to convert to bool"),
        (dict(timeout="5s"), "argument 'timeout' is of type str and we were unable to convert to float"),
    ],
)
def test_bad_arguments_fail_naming_the_problem_before_haproxy_is_contacted(
    run_module, args_with, work, changes, message
):
    run_module.refused(module, args_with(**changes), message)
    work.assert_untouched()


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(min_instances=2), "min_instances must be between 0 and the number of instances (1)"),
        (dict(min_instances=-1), "min_instances must be between 0 and the number of instances (1)"),
        (dict(backend="kms;shutdown"), "invalid HAProxy backend name 'kms;shutdown' (';' not allowed)"),
        (server(name="dc 1", state="ready"), "invalid HAProxy server name 'dc 1' (' ' not allowed)"),
        (server(name="dc1", weight=300), "server 'dc1': weight must be between 0 and 256, not 300"),
        (
            dict(servers=[{"name": "dc1", "state": "ready"}, {"name": "dc1", "weight": 5}]),
            "server 'dc1' is listed twice",
        ),
        (dict(servers=None, active_site="dc3", sites=SITES), "active_site 'dc3' is not one of the sites: dc1, dc2"),
        (
            dict(servers=None, active_site="dc1", sites={"dc1": ["kms-a"], "dc2": ["kms-a"]}),
            "server 'kms-a' is listed under both sites 'dc1' and 'dc2'",
        ),
        (dict(timeout=0), "timeout must be greater than 0, got 0; nothing was sent to HAProxy"),
        (dict(drain_timeout=-1), "drain_timeout must be greater than 0, got -1; nothing was sent to HAProxy"),
        (dict(healthy_timeout=0), "healthy_timeout must be greater than 0, got 0; nothing was sent to HAProxy"),
    ],
)
def test_values_the_spec_cannot_express_are_refused_before_haproxy_is_contacted(
    run_module, args_with, work, changes, message
):
    run_module.refused(module, args_with(**changes), message)
    work.assert_untouched("Instance", "switch")


def test_defaults_reach_the_switch(run_module, args_with, work):
    args = args_with(servers=[{"name": "dc1", "state": "ready"}, {"name": "dc2", "weight": "0"}])
    failed, result = run_module(module, args)
    assert not failed and result["changed"] and "diff" not in result, result
    work.Instance.assert_called_once_with(SOCKET, SOCKET, state_file=None, timeout=5.0, tls=None)
    work.tls_context.assert_not_called()
    work.switch.assert_called_once_with(
        [f"instance-{SOCKET}"],
        "kms",
        {"dc1": {"state": "ready"}, "dc2": {"weight": 0}},
        min_instances=None,
        check_mode=False,
        drain=False,
        drain_timeout=30.0,
        shutdown_sessions=False,
        wait_healthy=True,
        healthy_timeout=10.0,
    )


def test_sites_tls_instances_and_check_mode_reach_the_switch(run_module, work):
    args = {
        "backend": "kms",
        "active_site": "dc2",
        "sites": SITES,
        "inactive_state": "drain",
        "min_instances": "1",
        "drain": "yes",
        "timeout": 2,
        "instances": [
            {
                "name": "lb1",
                "address": "lb1:9443",
                "ca_file": "/ca.crt",
                "client_cert": "/c.crt",
                "client_key": "/c.key",
                "state_file": "/var/lib/haproxy/state",
            },
            {"socket": SOCKET},
        ],
    }
    failed, dummy = run_module(module, args, check_mode=True)
    assert not failed
    work.tls_context.assert_called_once_with("/ca.crt", "/c.crt", "/c.key")
    assert [call.args for call in work.Instance.call_args_list] == [("lb1", "lb1:9443"), (SOCKET, SOCKET)]
    assert [call.kwargs for call in work.Instance.call_args_list] == [
        {"state_file": "/var/lib/haproxy/state", "timeout": 2.0, "tls": "tls-context"},
        {"state_file": None, "timeout": 2.0, "tls": None},
    ]
    assert work.switch.call_args.args[2] == {
        "kms-dc1": {"state": "drain"},
        "kms-dc2a": {"state": "ready"},
        "kms-dc2b": {"state": "ready"},
    }
    kwargs = work.switch.call_args.kwargs
    assert (kwargs["min_instances"], kwargs["check_mode"], kwargs["drain"]) == (1, True, True)


def test_unreadable_tls_files_fail_before_the_switch(run_module, args_with, work):
    work.tls_context.side_effect = module.HAProxyError("cannot load the Runtime API TLS files")
    failed, result = run_module(module, args_with(**instance(address="lb1:9443", ca_file="/missing.crt")))
    assert failed and result["msg"] == "cannot load the Runtime API TLS files; nothing was sent to HAProxy"
    work.switch.assert_not_called()


def test_no_secret_options(module_kwargs, unprotected_secrets):
    spec = module_kwargs(module)["argument_spec"]
    assert not unprotected_secrets(spec)
    assert spec["instances"]["options"]["client_key"]["type"] == "path"  # a key file's name, not the key
