"""hanzo.kms.redis_rdb_restore: argument handling, checked before Redis, S3 or the data directory is touched."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

from ansible_collections.hanzo.kms.plugins.modules import redis_rdb_restore as module

ARGS = {"host": "10.0.0.12", "password": "redis-secret", "src": "/var/backups/redis/dump.rdb"}
S3 = {"bucket": "kms-backups", "access_key": "AKIAEXAMPLE", "secret_key": "s3-secret"}


@pytest.fixture
def work(collaborators, monkeypatch):
    """The restore (run_restore) and the S3 client factory, recorded; boto3 present; CRC64 fast (no warning)."""
    mocks = collaborators(
        module,
        run_restore=MagicMock(return_value={"changed": True, "method": "replication"}),
        s3_client=MagicMock(return_value="s3-client"),
    )
    monkeypatch.setattr(module, "HAS_BOTO3", True)
    monkeypatch.setattr(module, "crc64_is_fast", lambda: True)
    return mocks


def from_s3(**changes):
    """The changes to ARGS for a restore from S3 instead of a local file."""
    return dict(S3, src=None, **changes)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(src=None), "one of the following is required: src, bucket"),
        (dict(**S3), "parameters are mutually exclusive: src|bucket"),
        (
            from_s3(key="redis/dc1/20250101T000000Z/dump.rdb", prefix="redis"),
            "parameters are mutually exclusive: key|prefix",
        ),
        (from_s3(key="redis/dc1/20250101T000000Z/dump.rdb", site="dc1"), "parameters are mutually exclusive: key|site"),
        (dict(key="redis/dc1/20250101T000000Z/dump.rdb"), "missing parameter(s) required by 'key': bucket"),
        (from_s3(manifest="/var/backups/redis/manifest.json"), "missing parameter(s) required by 'manifest': src"),
        (from_s3(sha256="ab" * 32), "missing parameter(s) required by 'sha256': src"),
        (dict(method="file"), "method is file but all of the following are missing: data_dir"),
        (dict(method="copy"), "value of method must be one of: auto, replication, restore, file, got: copy"),
        (dict(mode="append"), "value of mode must be one of: replace, merge, got: append"),
        (dict(aof="maybe"), "value of aof must be one of: auto, yes, no, got: maybe"),
        (dict(connections="many"), "argument 'connections' is of type str and we were unable to convert to int"),
        (dict(listen_port="any"), "argument 'listen_port' is of type str and we were unable to convert to int"),
        (
            dict(check_stopped="perhaps"),
            "argument 'check_stopped' is of type str and we were unable to convert to bool",
        ),
        (dict(timeout="1h"), "argument 'timeout' is of type str and we were unable to convert to float"),
        (dict(dest="/tmp/x"), "Unsupported parameters for (hanzo.kms.redis_rdb_restore) module: dest."),
        (dict(connections=0), "connections must be at least 1"),
        (dict(timeout=-5), "timeout must be greater than 0, got -5"),
        (dict(connect_timeout=0), "connect_timeout must be greater than 0, got 0"),
    ],
)
def test_bad_arguments_fail_naming_the_problem_before_anything_is_touched(
    run_module, args_with, work, changes, message
):
    run_module.refused(module, args_with(**changes), message)
    work.assert_untouched()


def test_without_boto3_a_restore_from_s3_fails_before_anything_is_touched(run_module, args_with, work, monkeypatch):
    monkeypatch.setattr(module, "HAS_BOTO3", False)
    failed, result = run_module(module, args_with(**from_s3(site="dc1")))
    assert failed and result["msg"].startswith("Failed to import the required Python library (boto3)"), result
    work.run_restore.assert_not_called()
    failed, dummy = run_module(module, ARGS)
    assert not failed, "a restore from a local file does not need boto3"


def test_defaults_reach_the_restore(run_module, work):
    failed, result = run_module(module, ARGS)
    assert not failed and result == {"changed": True, "method": "replication"}, result
    (params,), kwargs = work.run_restore.call_args
    assert kwargs["check_mode"] is False
    assert {
        key: params[key]
        for key in (
            "host",
            "port",
            "password",
            "src",
            "bucket",
            "method",
            "mode",
            "connections",
            "listen_host",
            "listen_port",
            "dbfilename",
            "appenddirname",
            "appendfilename",
            "aof",
            "check_stopped",
            "timeout",
            "overlap_transfer",
            "data_dir",
            "listen_allow_from",
        )
    } == {
        "host": "10.0.0.12",
        "port": 6379,
        "password": "redis-secret",
        "src": "/var/backups/redis/dump.rdb",
        "bucket": None,
        "method": "auto",
        "mode": "replace",
        "connections": 1,
        "listen_host": "127.0.0.1",
        "listen_port": 0,
        "dbfilename": "dump.rdb",
        "appenddirname": "appendonlydir",
        "appendfilename": "appendonly.aof",
        "aof": "auto",
        "check_stopped": True,
        "timeout": 3600.0,
        "overlap_transfer": True,
        "data_dir": None,
        "listen_allow_from": None,
    }
    work.s3_client.assert_not_called()
    assert kwargs["s3_client_factory"]() == "s3-client"
    work.s3_client.assert_called_once_with(params)


def test_s3_source_types_and_check_mode(run_module, args_with, work):
    args = args_with(
        **from_s3(
            key="redis/dc1/20250101T000000Z/dump.rdb",
            method="file",
            data_dir="/var/lib/redis",
            listen_allow_from="10.0.0.0/8,192.168.0.0/16",
            connections="4",
            mode="merge",
        )
    )
    failed, dummy = run_module(module, args, check_mode=True)
    assert not failed
    (params,), kwargs = work.run_restore.call_args
    assert kwargs["check_mode"] is True
    assert (params["bucket"], params["key"], params["src"]) == (
        "kms-backups",
        "redis/dc1/20250101T000000Z/dump.rdb",
        None,
    )
    assert (params["method"], params["data_dir"], params["mode"], params["connections"]) == (
        "file",
        "/var/lib/redis",
        "merge",
        4,
    )
    assert params["listen_allow_from"] == ["10.0.0.0/8", "192.168.0.0/16"]


def test_credentials_are_no_log_and_file_and_object_names_are_not(module_kwargs, unprotected_secrets):
    spec = module_kwargs(module)["argument_spec"]
    assert not unprotected_secrets(spec, not_secret={"key": "the S3 object key of the backup, not a secret"})
    assert all(spec[name]["no_log"] for name in ("password", "access_key", "secret_key", "session_token"))


def test_secret_values_are_masked_and_the_object_key_is_not(run_module, args_with, work):
    failed, dummy = run_module(module, args_with(**from_s3(key="redis/dc1/dump.rdb", session_token="s3-session")))
    assert not failed
    masked = run_module.instance.no_log_values
    assert {"redis-secret", "AKIAEXAMPLE", "s3-secret", "s3-session"} <= masked
    assert "redis/dc1/dump.rdb" not in masked


def test_without_redis_py_the_module_fails_before_anything_is_touched(run_module, work, monkeypatch):
    monkeypatch.setattr(module, "HAS_REDIS", False)
    failed, result = run_module(module, ARGS)
    assert failed and result["msg"].startswith("Failed to import the required Python library (redis)"), result
    work.assert_untouched()
