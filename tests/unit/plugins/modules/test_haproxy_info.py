"""hanzo.kms.haproxy_info: argument handling, checked before any HAProxy instance is read."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

from ansible_collections.hanzo.kms.plugins.modules import haproxy_info as module

SOCKET = "/run/haproxy/admin.sock"
ARGS = {"instances": [{"socket": SOCKET}, {"name": "lb2", "address": "10.0.0.2:9999"}]}


def view(instance, backend, timeout):
    name = instance["name"] or instance["socket"] or instance["address"]
    reachable = instance["address"] is None
    return {
        "name": name,
        "reachable": reachable,
        "backend": backend,
        "serving": ["kms-b", "kms-a"] if reachable else [],
    }


@pytest.fixture
def read_lb(monkeypatch):
    mock = MagicMock(side_effect=view)
    monkeypatch.setattr(module, "read_lb", mock)
    return mock


@pytest.mark.parametrize(
    "args, message",
    [
        ({}, "missing required arguments: instances"),
        (
            {"instances": [{"socket": SOCKET, "address": "lb1:9999"}]},
            "parameters are mutually exclusive: socket|address found in instances",
        ),
        ({"instances": [{"name": "lb1"}]}, "one of the following is required: socket, address found in instances"),
        (
            {"instances": [{"address": "lb1:9443", "client_cert": "/c.crt", "client_key": "/c.key"}]},
            "missing parameter(s) required by 'client_cert': ca_file found in instances",
        ),
        (
            {"instances": [{"address": "lb1:9443", "ca_file": "/ca.crt", "client_cert": "/c.crt"}]},
            "parameters are required together: client_cert, client_key found in instances",
        ),
        (
            {"instances": [{"socket": SOCKET, "ca_file": "/ca.crt"}]},
            "parameters are mutually exclusive: socket|ca_file found in instances",
        ),
        (dict(ARGS, timeout=0), "timeout must be greater than 0, got 0"),
        (
            {"instances": [{"socket": SOCKET, "state_file": "/x"}]},
            "Unsupported parameters for (hanzo.kms.haproxy_info) module: instances.state_file.",
        ),
        (dict(ARGS, timeout="5s"), "argument 'timeout' is of type str and we were unable to convert to float"),
        (dict(ARGS, backend="kms backend"), "invalid HAProxy backend name 'kms backend' (' ' not allowed)"),
        (dict(ARGS, backend=""), "invalid HAProxy backend name ''"),
    ],
)
def test_bad_arguments_fail_naming_the_problem_before_any_instance_is_read(run_module, read_lb, args, message):
    run_module.refused(module, args, message)
    read_lb.assert_not_called()


def test_defaults_reach_the_reads_and_the_views_are_summed_up(run_module, read_lb):
    failed, result = run_module(module, ARGS)
    assert not failed, result
    no_tls = {"ca_file": None, "client_cert": None, "client_key": None}
    assert [call.args for call in read_lb.call_args_list] == [
        ({"name": None, "socket": SOCKET, "address": None, **no_tls}, "kms", 5.0),
        ({"name": "lb2", "socket": None, "address": "10.0.0.2:9999", **no_tls}, "kms", 5.0),
    ]
    assert result["changed"] is False
    assert result["serving"] == ["kms-a", "kms-b"] and result["unreachable_instances"] == ["lb2"]
    assert [inst["name"] for inst in result["instances"]] == [SOCKET, "lb2"]


def test_the_tls_files_of_an_instance_reach_its_read(run_module, read_lb):
    tls = {"ca_file": "/ca.crt", "client_cert": "/c.crt", "client_key": "/c.key"}
    failed, result = run_module(module, {"instances": [{"name": "lb1", "address": "10.0.0.1:9443", **tls}]})
    assert not failed, result
    assert read_lb.call_args.args[0] == {"name": "lb1", "socket": None, "address": "10.0.0.1:9443", **tls}


def test_backend_and_timeout_are_passed_on_in_check_mode(run_module, read_lb):
    failed, dummy = run_module(module, dict(ARGS, backend="kms_v2", timeout=1), check_mode=True)
    assert not failed
    assert all(call.args[1:] == ("kms_v2", 1.0) for call in read_lb.call_args_list)


def test_no_secret_options(module_kwargs, unprotected_secrets):
    assert not unprotected_secrets(module_kwargs(module)["argument_spec"])
