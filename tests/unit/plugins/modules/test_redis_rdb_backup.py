"""hanzo.kms.redis_rdb_backup: argument handling, checked before Redis or S3 is contacted."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

from ansible_collections.hanzo.kms.plugins.modules import redis_rdb_backup as module

ARGS = {
    "host": "10.0.0.11",
    "password": "redis-secret",
    "bucket": "kms-backups",
    "site": "dc1",
    "endpoint_url": "https://s3.example.com",
    "access_key": "AKIAEXAMPLE",
    "secret_key": "s3-secret",
}


@pytest.fixture
def work(collaborators, monkeypatch):
    """The backup (run_backup) and the S3 client factory, recorded; boto3 present; CRC64 fast (no warning)."""
    mocks = collaborators(
        module,
        run_backup=MagicMock(return_value={"changed": True, "sha256": "00"}),
        s3_client=MagicMock(return_value="s3-client"),
    )
    monkeypatch.setattr(module, "HAS_BOTO3", True)
    monkeypatch.setattr(module, "crc64_is_fast", lambda: True)
    return mocks


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(bucket=None), "one of the following is required: bucket, dest"),
        (dict(port="redis"), "argument 'port' is of type str and we were unable to convert to int"),
        (dict(tls="maybe"), "argument 'tls' is of type str and we were unable to convert to bool"),
        (
            dict(connect_timeout="10s"),
            "argument 'connect_timeout' is of type str and we were unable to convert to float",
        ),
        (dict(part_size="big"), "argument 'part_size' is of type str and we were unable to convert to int"),
        (dict(addressing_style="dns"), "value of addressing_style must be one of: auto, path, virtual, got: dns"),
        (
            dict(validate_certs="perhaps"),
            "argument 'validate_certs' is of type str and we were unable to convert to bool",
        ),
        (dict(key="dump.rdb"), "Unsupported parameters for (hanzo.kms.redis_rdb_backup) module: key."),
        (dict(part_size=4), "part_size must be at least 5 (MiB), the S3 minimum"),
        (dict(upload_concurrency=0), "upload_concurrency must be at least 1"),
        (dict(timeout=0), "timeout must be greater than 0, got 0"),
        (dict(connect_timeout=-1), "connect_timeout must be greater than 0, got -1"),
    ],
)
def test_bad_arguments_fail_naming_the_problem_before_redis_or_s3_is_contacted(
    run_module, args_with, work, changes, message
):
    run_module.refused(module, args_with(**changes), message)
    work.assert_untouched()


def test_without_boto3_an_s3_backup_fails_before_anything_is_contacted(run_module, work, monkeypatch):
    monkeypatch.setattr(module, "HAS_BOTO3", False)
    failed, result = run_module(module, ARGS)
    assert failed and result["msg"].startswith("Failed to import the required Python library (boto3)"), result
    work.run_backup.assert_not_called()


def test_without_boto3_a_local_backup_runs(run_module, args_with, work, monkeypatch):
    monkeypatch.setattr(module, "HAS_BOTO3", False)
    failed, dummy = run_module(module, args_with(bucket=None, dest="/var/backups/redis"))
    assert not failed
    assert work.run_backup.call_args.args[0]["dest"] == "/var/backups/redis"


def test_defaults_reach_the_backup(run_module, work):
    failed, result = run_module(module, ARGS)
    assert not failed and result == {"changed": True, "sha256": "00"}, result
    (params,), kwargs = work.run_backup.call_args
    assert kwargs["check_mode"] is False
    assert {
        key: params[key]
        for key in (
            "host",
            "port",
            "password",
            "tls",
            "tls_validate_certs",
            "connect_timeout",
            "bucket",
            "prefix",
            "site",
            "dest",
            "part_size",
            "upload_concurrency",
            "verify_structure",
            "analyze",
            "timeout",
        )
    } == {
        "host": "10.0.0.11",
        "port": 6379,
        "password": "redis-secret",
        "tls": False,
        "tls_validate_certs": True,
        "connect_timeout": 10.0,
        "bucket": "kms-backups",
        "prefix": "",
        "site": "dc1",
        "dest": None,
        "part_size": 5,
        "upload_concurrency": 1,
        "verify_structure": True,
        "analyze": False,
        "timeout": 3600.0,
    }
    assert {
        key: params[key] for key in ("region", "validate_certs", "addressing_style", "access_key", "secret_key")
    } == {
        "region": "us-east-1",
        "validate_certs": True,
        "addressing_style": "auto",
        "access_key": "AKIAEXAMPLE",
        "secret_key": "s3-secret",
    }
    # the S3 client is built only when the backup asks for it, from the same validated parameters
    work.s3_client.assert_not_called()
    assert kwargs["s3_client_factory"]() == "s3-client"
    work.s3_client.assert_called_once_with(params)


def test_aliases_types_and_check_mode(run_module, args_with, work):
    args = args_with(
        access_key=None,
        secret_key=None,
        aws_access_key_id="AKIA2",
        aws_secret_access_key="s3-secret-2",
        port="6380",
        part_size="8",
        analyze="yes",
        timeout=60,
    )
    failed, dummy = run_module(module, args, check_mode=True)
    assert not failed
    (params,), kwargs = work.run_backup.call_args
    assert kwargs["check_mode"] is True
    assert (params["access_key"], params["secret_key"]) == ("AKIA2", "s3-secret-2")
    assert (params["port"], params["part_size"], params["analyze"], params["timeout"]) == (6380, 8, True, 60.0)


def test_credentials_are_no_log(module_kwargs, unprotected_secrets):
    spec = module_kwargs(module)["argument_spec"]
    assert not unprotected_secrets(spec)
    assert all(spec[name]["no_log"] for name in ("password", "access_key", "secret_key", "session_token"))


def test_secret_values_are_masked(run_module, args_with, work):
    failed, dummy = run_module(module, args_with(session_token="s3-session"))
    assert not failed
    assert {"redis-secret", "AKIAEXAMPLE", "s3-secret", "s3-session"} <= run_module.instance.no_log_values


def test_without_redis_py_the_module_fails_before_anything_is_contacted(run_module, args_with, work, monkeypatch):
    monkeypatch.setattr(module, "HAS_REDIS", False)
    for args in (ARGS, args_with(bucket=None, dest="/var/backups/redis")):
        failed, result = run_module(module, args)
        assert failed and result["msg"].startswith("Failed to import the required Python library (redis)"), result
    work.assert_untouched()
