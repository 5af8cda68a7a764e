"""hanzo.kms.site_data_info: argument handling, checked before the object store, Redis or Kubernetes is read."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

from ansible_collections.hanzo.kms.plugins.modules import site_data_info as module

ARGS = {
    "site": "dc1",
    "bucket": "kms-backups",
    "host": "10.0.0.11",
    "password": "redis-secret",
    "access_key": "AKIAEXAMPLE",
    "secret_key": "s3-secret",
}
DATA = {"site": "dc1", "now": "2025-01-01T00:00:00Z", "cnpg": {}, "redis": {}}


@pytest.fixture
def work(collaborators, monkeypatch):
    """The module's collaborators, recorded: the S3 client, the data collection, the library check, the Kubernetes
    client and reader, and the status gathering. boto3 present."""
    mocks = collaborators(
        module,
        s3_client=MagicMock(return_value="s3-client"),
        collect_site_data=MagicMock(return_value=dict(DATA)),
        missing=MagicMock(return_value=None),
        api_client=MagicMock(return_value="kube-client"),
        KubeReader=MagicMock(return_value="kube-reader"),
        gather=MagicMock(return_value=({"site": "dc1", "data": dict(DATA)}, {"site": "dc1", "redis_password": "x"})),
    )
    monkeypatch.setattr(module, "HAS_BOTO3", True)
    return mocks


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(site=None), "missing required arguments: site"),
        (dict(bucket=None), "missing required arguments: bucket"),
        (dict(port="redis"), "argument 'port' is of type str and we were unable to convert to int"),
        (dict(probe_redis="perhaps"), "argument 'probe_redis' is of type str and we were unable to convert to bool"),
        (dict(read_sql="perhaps"), "argument 'read_sql' is of type str and we were unable to convert to bool"),
        (dict(request_timeout="10s"), "argument 'request_timeout' is of type str and we were unable to convert to int"),
        (dict(request_timeout=0), "request_timeout must be greater than 0, got 0"),
        (dict(connect_timeout=0), "connect_timeout must be greater than 0, got 0"),
        (dict(addressing_style="dns"), "value of addressing_style must be one of: auto, path, virtual, got: dns"),
        # only kubeconfig and context select the cluster: kubernetes.core's other auth options are not options here
        (dict(api_key="token"), "Unsupported parameters for (hanzo.kms.site_data_info) module: api_key."),
    ],
)
def test_bad_arguments_fail_naming_the_problem_before_anything_is_read(run_module, args_with, work, changes, message):
    run_module.refused(module, args_with(**changes), message)
    work.assert_untouched()


def test_without_boto3_the_module_fails_before_anything_is_read(run_module, work, monkeypatch):
    monkeypatch.setattr(module, "HAS_BOTO3", False)
    failed, result = run_module(module, ARGS)
    assert failed and result["msg"].startswith("Failed to import the required Python library (boto3)"), result
    work.assert_untouched()


def test_a_missing_kubernetes_library_fails_only_when_the_cluster_is_read(run_module, work):
    work.missing.return_value = ("Failed to import the required Python library (kubernetes)", "Traceback ...")
    failed, result = run_module(module, dict(ARGS, cluster_name="kms-pg-dc1"))
    assert failed and result["msg"].startswith("Failed to import the required Python library (kubernetes)"), result
    work.assert_untouched("s3_client", "gather")
    failed, dummy = run_module(module, ARGS)
    assert not failed, "without cluster_name the kubernetes library is not needed"


def test_without_cluster_name_only_the_data_is_collected_with_the_defaults(run_module, work):
    failed, result = run_module(module, ARGS)
    assert not failed and result == dict(DATA, changed=False), result
    work.s3_client.assert_called_once_with(work.collect_site_data.call_args.args[0])
    params, client = work.collect_site_data.call_args.args
    assert client == "s3-client"
    assert {
        key: params[key]
        for key in (
            "site",
            "bucket",
            "host",
            "port",
            "password",
            "cnpg_prefix",
            "redis_prefix",
            "cnpg_destination_path",
            "cnpg_server_name",
            "probe_redis",
            "region",
        )
    } == {
        "site": "dc1",
        "bucket": "kms-backups",
        "host": "10.0.0.11",
        "port": 6379,
        "password": "redis-secret",
        "cnpg_prefix": "cnpg",
        "redis_prefix": "redis",
        "cnpg_destination_path": None,
        "cnpg_server_name": None,
        "probe_redis": True,
        "region": "us-east-1",
    }
    work.assert_untouched("missing", "api_client", "KubeReader", "gather")


def test_with_cluster_name_the_status_is_gathered_with_the_defaults(run_module, work):
    args = dict(ARGS, cluster_name="kms-pg-dc1", kubeconfig="/etc/kms/dc1.kubeconfig", context="dc1")
    failed, result = run_module(module, args)
    assert not failed, result
    assert result["status"] == {"site": "dc1", "data": DATA} and result["access"]["site"] == "dc1"
    assert result["cnpg"] == {} and result["changed"] is False
    work.missing.assert_called_once_with()
    work.api_client.assert_called_once_with({}, {"kubeconfig": "/etc/kms/dc1.kubeconfig", "context": "dc1"})
    work.KubeReader.assert_called_once_with("kube-client", 10)
    params, reader, collect = work.gather.call_args.args
    assert reader == "kube-reader"
    assert {
        key: params[key]
        for key in (
            "cluster_name",
            "object_store_name",
            "reader_error",
            "namespace",
            "kms_name",
            "read_sql",
            "redis_secret_name",
            "redis_secret_key",
            "inventory_role",
        )
    } == {
        "cluster_name": "kms-pg-dc1",
        "object_store_name": "kms-pg-dc1-store",
        "reader_error": None,
        "namespace": "kms",
        "kms_name": "kms",
        "read_sql": True,
        "redis_secret_name": "redis-auth",
        "redis_secret_key": "redis-password",
        "inventory_role": "",
    }
    work.collect_site_data.assert_not_called()
    collect({"site": "dc1"})
    work.collect_site_data.assert_called_once_with({"site": "dc1"}, "s3-client")


def test_a_kubeconfig_given_inline_reaches_the_client_and_is_never_echoed(run_module, work):
    inline = {"apiVersion": "v1", "users": [{"name": "admin", "user": {"token": "kube-token-dc1"}}]}
    failed, result = run_module(module, dict(ARGS, cluster_name="kms-pg-dc1", kubeconfig=inline))
    assert not failed, result
    work.api_client.assert_called_once_with({}, {"kubeconfig": inline, "context": None})
    assert "kube-token-dc1" in run_module.instance.no_log_values  # masked wherever Ansible prints or logs


def test_an_unusable_kubeconfig_is_a_finding_not_a_failure(run_module, work):
    work.api_client.side_effect = FileNotFoundError("/etc/kms/dc9.kubeconfig")
    failed, dummy = run_module(module, dict(ARGS, cluster_name="kms-pg-dc1", object_store_name="store-dc1"))
    assert not failed
    params, reader, dummy_collect = work.gather.call_args.args
    assert reader is None and params["object_store_name"] == "store-dc1"
    assert params["reader_error"] == "Kubernetes client not configured: /etc/kms/dc9.kubeconfig"


NOT_SECRET = {
    "redis_secret_name": "the name of the Kubernetes Secret holding the Redis password, not the password",
    "redis_secret_key": "the key of that Secret's data, not the password",
}


def test_credentials_are_no_log_and_secret_names_are_not(module_kwargs, unprotected_secrets):
    spec = module_kwargs(module)["argument_spec"]
    assert not unprotected_secrets(spec, not_secret=NOT_SECRET)
    assert all(spec[name]["no_log"] for name in ("password", "access_key", "secret_key", "session_token"))


def test_secret_values_are_masked(run_module, args_with, work):
    failed, dummy = run_module(module, args_with(session_token="s3-session", redis_secret_name="redis-auth-dc1"))
    assert not failed
    masked = run_module.instance.no_log_values
    assert {"redis-secret", "AKIAEXAMPLE", "s3-secret", "s3-session"} <= masked and "redis-auth-dc1" not in masked


def test_without_redis_py_only_a_redis_probe_fails(run_module, args_with, work, monkeypatch):
    monkeypatch.setattr(module, "HAS_REDIS", False)
    failed, result = run_module(module, ARGS)
    assert failed and result["msg"].startswith("Failed to import the required Python library (redis)"), result
    work.assert_untouched()
    failed, dummy = run_module(module, args_with(probe_redis=False))
    assert not failed, "without probe_redis redis-py is not needed"
