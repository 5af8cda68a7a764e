"""hanzo.kms.s3_retention: argument handling, checked before the bucket is listed or anything deleted."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

from ansible_collections.hanzo.kms.plugins.modules import s3_retention as module

ARGS = {
    "bucket": "kms-backups",
    "prefix": "redis",
    "keep_daily": 7,
    "endpoint_url": "https://s3.example.com",
    "access_key": "AKIAEXAMPLE",
    "secret_key": "s3-secret",
}
RESULT = {"changed": False, "failed": False, "backups": [], "summary": {}, "diff": {"before": "", "after": ""}}


@pytest.fixture
def s3_client(fake_s3_client):
    return fake_s3_client(module)


@pytest.fixture
def run_retention(monkeypatch, s3_client):
    mock = MagicMock(side_effect=lambda client, params, check_mode: dict(RESULT))
    monkeypatch.setattr(module, "run_retention", mock)
    return mock


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(bucket=None), "missing required arguments: bucket"),
        (
            dict(keep_daily=None),
            "one of the following is required: keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, keep_within",
        ),
        (dict(time_source="mtime"), "value of time_source must be one of: key, manifest, last_modified, got: mtime"),
        (dict(keep_daily="seven"), "argument 'keep_daily' is of type str and we were unable to convert to int"),
        (dict(whole_bucket="perhaps"), "argument 'whole_bucket' is of type str and we were unable to convert to bool"),
        (
            dict(data_files={"rdb": "dump.rdb"}),
            "argument 'data_files' is of type dict and we were unable to convert to list",
        ),
        (dict(concurrency="lots"), "argument 'concurrency' is of type str and we were unable to convert to int"),
        (dict(addressing_style="dns"), "value of addressing_style must be one of: auto, path, virtual, got: dns"),
        (dict(keep=3), "Unsupported parameters for (hanzo.kms.s3_retention) module: keep."),
        (dict(concurrency=0), "concurrency must be at least 1, got 0"),
    ],
)
def test_bad_arguments_fail_naming_the_problem_before_any_s3_client(
    run_module, args_with, s3_client, run_retention, changes, message
):
    run_module.refused(module, args_with(**changes), message)
    s3_client.assert_not_called()
    run_retention.assert_not_called()


def test_without_boto3_the_module_fails_before_any_s3_client(run_module, s3_client, run_retention, monkeypatch):
    monkeypatch.setattr(module, "HAS_BOTO3", False)
    failed, result = run_module(module, ARGS)
    assert failed and result["msg"].startswith("Failed to import the required Python library (boto3)"), result
    s3_client.assert_not_called()
    run_retention.assert_not_called()


def test_defaults_reach_the_retention(run_module, s3_client, run_retention):
    failed, result = run_module(module, ARGS)
    assert not failed and "diff" not in result and "failed" not in result, result
    client, params = run_retention.call_args.args
    assert client is s3_client.return_value and run_retention.call_args.kwargs == {"check_mode": False}
    s3_client.assert_called_once_with(params, max_pool_connections=32)
    assert {
        key: params[key]
        for key in (
            "bucket",
            "prefix",
            "whole_bucket",
            "group_depth",
            "name_pattern",
            "data_files",
            "time_source",
            "timestamp_format",
            "manifest_name",
            "manifest_time_field",
            "keep_last",
            "keep_daily",
            "keep_within",
            "min_keep",
            "delete_incomplete",
            "incomplete_grace",
            "purge_versions",
            "concurrency",
            "region",
            "validate_certs",
        )
    } == {
        "bucket": "kms-backups",
        "prefix": "redis",
        "whole_bucket": False,
        "group_depth": 1,
        "name_pattern": None,
        "data_files": ["dump.rdb"],
        "time_source": "key",
        "timestamp_format": "%Y%m%dT%H%M%SZ",
        "manifest_name": "manifest.json",
        "manifest_time_field": "timestamp",
        "keep_last": None,
        "keep_daily": 7,
        "keep_within": None,
        "min_keep": 1,
        "delete_incomplete": True,
        "incomplete_grace": "1d",
        "purge_versions": False,
        "concurrency": 32,
        "region": "us-east-1",
        "validate_certs": True,
    }


def test_types_small_concurrency_check_mode_and_diff(run_module, args_with, s3_client, run_retention):
    args = args_with(
        keep_daily=None, keep_within="30d", keep_last="3", concurrency="4", data_files="dump.rdb,appendonly.aof"
    )
    failed, result = run_module(module, args, check_mode=True, diff=True)
    assert not failed and result["diff"] == RESULT["diff"], result
    client, params = run_retention.call_args.args
    assert run_retention.call_args.kwargs == {"check_mode": True}
    s3_client.assert_called_once_with(params, max_pool_connections=10)
    assert (params["keep_last"], params["keep_within"], params["concurrency"]) == (3, "30d", 4)
    assert params["data_files"] == ["dump.rdb", "appendonly.aof"]


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(prefix=None), "prefix '' selects the whole bucket"),
        (dict(whole_bucket=True), "whole_bucket=true applies to an empty prefix only, but prefix is 'redis'"),
        (dict(keep_daily=-2), "keep_daily must be -1 (unlimited), 0 (off) or a positive number, got -2"),
        (dict(min_keep=-1), "min_keep must be >= 0"),
        (dict(keep_within="2weeks"), "invalid duration '2weeks': use restic syntax"),
        (dict(incomplete_grace="soon"), "invalid duration 'soon'"),
        (dict(group_depth=-1), "group_depth must be >= 0"),
        (dict(name_pattern="("), "name_pattern '(' is not a valid regular expression"),
        (dict(manifest_name="meta/manifest.json"), 'manifest_name must be a file name without "/"'),
        (dict(data_files=["db/dump.rdb"]), "data_files entries must be file names without \"/\", got 'db/dump.rdb'"),
        (dict(data_files=[]), "data_files must name at least one data file"),
    ],
)
def test_values_the_spec_cannot_express_fail_before_the_bucket_is_read(
    run_module, args_with, s3_client, changes, message
):
    # the real run_retention: these checks come before its first S3 request
    run_module.refused(module, args_with(**changes), message)
    assert s3_client.return_value.mock_calls == []


def test_credentials_are_no_log(module_kwargs, unprotected_secrets):
    spec = module_kwargs(module)["argument_spec"]
    assert not unprotected_secrets(spec)
    assert all(spec[name]["no_log"] for name in ("access_key", "secret_key", "session_token"))


def test_secret_values_are_masked(run_module, args_with, run_retention):
    failed, dummy = run_module(
        module,
        args_with(
            access_key=None,
            secret_key=None,
            aws_access_key_id="AKIA2",
            aws_secret_access_key="s3-secret-2",
            session_token="s3-session",
        ),
    )
    assert not failed
    assert {"AKIA2", "s3-secret-2", "s3-session"} <= run_module.instance.no_log_values
