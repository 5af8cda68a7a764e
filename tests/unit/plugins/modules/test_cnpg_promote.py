"""hanzo.kms.cnpg_promote: argument handling, checked before any Kubernetes client is built or any Cluster read."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

from ansible_collections.hanzo.kms.plugins.modules import cnpg_promote as module

ARGS = {
    "mode": "switchover",
    "old_cluster": {"name": "kms-pg-dc1", "context": "dc1"},
    "new_cluster": {"name": "kms-pg-dc2", "namespace": "kms", "context": "dc2"},
    "kubeconfig": "/etc/kms/kubeconfig",
}


@pytest.fixture
def work(collaborators):
    """The module's collaborators, recorded: the library check, the client factory, the Cluster handles and the
    Promoter that does the work."""
    mocks = collaborators(
        module,
        missing=MagicMock(return_value=None),
        api_client=MagicMock(side_effect=lambda params, side: f"client-{side['name']}"),
        KubeCluster=MagicMock(side_effect=lambda client, name, *args, **kwargs: f"cluster-{name}"),
        Promoter=MagicMock(),
    )
    mocks.Promoter.return_value.run.return_value = {
        "changed": True,
        "mode": "switchover",
        "steps": ["demote"],
        "warnings": [],
        "diff": {"before": {}, "after": {}},
    }
    return mocks


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(mode=None), "missing required arguments: mode"),
        (dict(mode="takeover"), "value of mode must be one of: switchover, failover, got: takeover"),
        (dict(old_cluster=None), "missing required arguments: old_cluster"),
        (dict(new_cluster={"namespace": "kms"}), "missing required arguments: name found in new_cluster"),
        (
            dict(old_cluster_fencing="shoot"),
            "value of old_cluster_fencing must be one of: none, fence, hibernate, got: shoot",
        ),
        (
            dict(demotion_timeout="soon"),
            "argument 'demotion_timeout' is of type str and we were unable to convert to int",
        ),
        (
            dict(promotion_timeout=1.5),
            "argument 'promotion_timeout' is of type float and we were unable to convert to int",
        ),
        (dict(request_timeout="10s"), "argument 'request_timeout' is of type str and we were unable to convert to int"),
        (dict(poll_interval="fast"), "argument 'poll_interval' is of type str and we were unable to convert to float"),
        (
            dict(old_cluster={"name": "kms-pg-dc1", "validate_certs": "maybe"}),
            "argument 'validate_certs' is of type str found in 'old_cluster'. and we were unable to convert to bool",
        ),
        # namespace is per side only: at the top level it is an unknown option, not silently ignored
        (dict(namespace="kms"), "Unsupported parameters for (hanzo.kms.cnpg_promote) module: namespace."),
        (
            dict(new_cluster={"name": "kms-pg-dc2", "cluster": "x"}),
            "Unsupported parameters for (hanzo.kms.cnpg_promote) module: new_cluster.cluster.",
        ),
    ],
)
def test_bad_arguments_fail_naming_the_problem_before_any_client_is_built(
    run_module, args_with, work, changes, message
):
    run_module.refused(module, args_with(**changes), message)
    work.assert_untouched()


def test_defaults_reach_the_promoter(run_module, work):
    failed, result = run_module(module, ARGS)
    assert not failed, result
    assert result["changed"] and result["steps"] == ["demote"] and "diff" not in result
    work.missing.assert_called_once_with()
    old_side, new_side = (call.args[1] for call in work.api_client.call_args_list)
    assert (old_side["name"], old_side["namespace"], old_side["context"]) == ("kms-pg-dc1", "default", "dc1")
    assert (new_side["name"], new_side["namespace"], new_side["context"]) == ("kms-pg-dc2", "kms", "dc2")
    assert work.api_client.call_args_list[0].args[0]["kubeconfig"] == "/etc/kms/kubeconfig"
    assert [call.args for call in work.KubeCluster.call_args_list] == [
        ("client-kms-pg-dc1", "kms-pg-dc1", "default", "old"),
        ("client-kms-pg-dc2", "kms-pg-dc2", "kms", "new"),
    ]
    assert all(call.kwargs == {"request_timeout": 10} for call in work.KubeCluster.call_args_list)
    work.Promoter.assert_called_once_with(
        "cluster-kms-pg-dc1",
        "cluster-kms-pg-dc2",
        "switchover",
        check_mode=False,
        fencing="none",
        demotion_timeout=300,
        promotion_timeout=600,
        poll_interval=0.5,
    )


def test_types_check_mode_diff_and_fencing_are_passed_on(run_module, work):
    args = dict(
        ARGS,
        mode="failover",
        old_cluster_fencing="hibernate",
        request_timeout="3",
        demotion_timeout="30",
        promotion_timeout=60.0,
        poll_interval=2,
    )
    failed, result = run_module(module, args, check_mode=True, diff=True)
    assert not failed and result["diff"] == {"before": {}, "after": {}}, result
    assert work.Promoter.call_args.args[2] == "failover"
    assert work.Promoter.call_args.kwargs == {
        "check_mode": True,
        "fencing": "hibernate",
        "demotion_timeout": 30,
        "promotion_timeout": 60,
        "poll_interval": 2.0,
    }
    assert isinstance(work.Promoter.call_args.kwargs["poll_interval"], float)
    assert all(call.kwargs == {"request_timeout": 3} for call in work.KubeCluster.call_args_list)


def test_side_options_and_aliases_are_validated_per_side(run_module, work):
    args = dict(
        ARGS,
        old_cluster={
            "name": "kms-pg-dc1",
            "host": "https://dc1:6443",
            "verify_ssl": "no",
            "ssl_ca_cert": "/etc/kms/dc1-ca.crt",
        },
    )
    failed, result = run_module(module, args)
    assert not failed, result
    old_side = work.api_client.call_args_list[0].args[1]
    assert (old_side["validate_certs"], old_side["ca_cert"]) == (False, "/etc/kms/dc1-ca.crt")


def test_a_missing_kubernetes_library_fails_before_any_client(run_module, work):
    work.missing.return_value = ("Failed to import the required Python library (kubernetes)", "Traceback ...")
    failed, result = run_module(module, ARGS)
    assert failed and result["msg"].startswith("Failed to import the required Python library (kubernetes)")
    work.assert_untouched("api_client", "Promoter")


def test_an_unusable_client_configuration_names_the_side_and_runs_nothing(run_module, work):
    def api_client(params, side):
        if side["name"] == "kms-pg-dc2":
            raise ValueError("no such context: dc9")
        return "client"

    work.api_client.side_effect = api_client
    failed, result = run_module(module, ARGS)
    assert failed and result["msg"] == "cannot configure the Kubernetes client for new_cluster: no such context: dc9"
    work.Promoter.assert_not_called()


def test_credentials_are_no_log(module_kwargs, unprotected_secrets):
    spec = module_kwargs(module)["argument_spec"]
    assert not unprotected_secrets(spec)
    for path in (spec, spec["old_cluster"]["options"], spec["new_cluster"]["options"]):
        assert path["api_key"]["no_log"] and path["password"]["no_log"] and path["kubeconfig"]["no_log"]


def test_secret_values_given_per_side_are_masked(run_module, work):
    args = dict(
        ARGS,
        api_key="top-token",
        old_cluster={"name": "kms-pg-dc1", "api_key": "dc1-token"},
        new_cluster={"name": "kms-pg-dc2", "password": "dc2-password"},
    )
    failed, dummy = run_module(module, args)
    assert not failed
    assert {"top-token", "dc1-token", "dc2-password"} <= run_module.instance.no_log_values


@pytest.mark.parametrize(
    "option, value",
    [
        ("poll_interval", -1),
        ("poll_interval", 0),
        ("request_timeout", 0),
        ("promotion_timeout", -5),
        ("demotion_timeout", 0),
    ],
)
def test_a_non_positive_timeout_or_interval_is_refused_before_anything_is_patched(run_module, work, option, value):
    failed, result = run_module(module, dict(ARGS, **{option: value}))
    assert failed and result["msg"] == f"{option} must be greater than 0, got {value}", result
    work.Promoter.assert_not_called()
