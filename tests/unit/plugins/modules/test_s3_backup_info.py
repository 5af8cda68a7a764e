"""hanzo.kms.s3_backup_info: argument handling, checked before any S3 client; read-only, never changed."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

from ansible_collections.hanzo.kms.plugins.modules import s3_backup_info as module

ARGS = {
    "bucket": "kms-backups",
    "endpoint_url": "https://s3.example.com",
    "access_key": "AKIAEXAMPLE",
    "secret_key": "s3-secret",
}
RESULT = {"backups": [], "sites": {}, "unrecognised": [], "now": "2026-11-22T05:15:00Z"}


@pytest.fixture
def s3_client(fake_s3_client):
    return fake_s3_client(module)


@pytest.fixture
def list_backups(monkeypatch, s3_client):
    mock = MagicMock(side_effect=lambda client, bucket, prefix, **kwargs: dict(RESULT))
    monkeypatch.setattr(module, "list_backups", mock)
    return mock


def args_with(**changes):
    args = dict(ARGS, **changes)
    return {key: value for key, value in args.items() if value is not None}


@pytest.mark.parametrize(
    "args, message",
    [
        (args_with(bucket=None), "missing required arguments: bucket"),
        (args_with(sites="dc1,DC2"), "invalid site in sites 'DC2'"),
        (args_with(prefix="redis/../other"), "invalid prefix 'redis/../other'"),
        (
            args_with(read_manifests="perhaps"),
            "argument 'read_manifests' is of type str and we were unable to convert to bool",
        ),
        (args_with(concurrency=0), "concurrency must be at least 1, got 0"),
        (args_with(addressing_style="dns"), "value of addressing_style must be one of: auto, path, virtual, got: dns"),
        (args_with(keep_last=-1), "Unsupported parameters for (hanzo.kms.s3_backup_info) module: keep_last."),
    ],
)
def test_bad_arguments_fail_naming_the_problem_before_any_s3_client(run_module, s3_client, list_backups, args, message):
    failed, result = run_module(module, args)
    assert failed and message in result["msg"], result
    s3_client.assert_not_called()
    list_backups.assert_not_called()


def test_without_boto3_the_module_fails_before_any_s3_client(run_module, s3_client, list_backups, monkeypatch):
    monkeypatch.setattr(module, "HAS_BOTO3", False)
    failed, result = run_module(module, ARGS)
    assert failed and result["msg"].startswith("Failed to import the required Python library (boto3)"), result
    s3_client.assert_not_called()


@pytest.mark.parametrize("check_mode", [False, True])
def test_defaults_reach_the_listing_and_nothing_changes(run_module, s3_client, list_backups, check_mode):
    failed, result = run_module(module, ARGS, check_mode=check_mode)
    assert not failed and result == dict(RESULT, changed=False), result
    params = s3_client.call_args.args[0]
    s3_client.assert_called_once_with(params, max_pool_connections=10)
    list_backups.assert_called_once_with(
        s3_client.return_value, "kms-backups", "redis", sites=None, read_manifests=True, concurrency=8
    )
    assert (params["region"], params["addressing_style"], params["validate_certs"]) == ("us-east-1", "auto", True)


def test_sites_as_text_and_options(run_module, s3_client, list_backups):
    failed, dummy = run_module(
        module, args_with(sites="dc1,dc2", prefix="/backups/redis/", read_manifests="no", concurrency="16")
    )
    assert not failed
    list_backups.assert_called_once_with(
        s3_client.return_value,
        "kms-backups",
        "/backups/redis/",
        sites=["dc1", "dc2"],
        read_manifests=False,
        concurrency=16,
    )
    assert s3_client.call_args.kwargs == {"max_pool_connections": 16}


def test_an_s3_error_fails_with_its_message(run_module, s3_client, monkeypatch):
    monkeypatch.setattr(
        module, "list_backups", MagicMock(side_effect=module.S3Error("bucket 'kms-backups' does not exist"))
    )
    failed, result = run_module(module, ARGS)
    assert failed and result["msg"] == "bucket 'kms-backups' does not exist", result


def test_credentials_are_no_log(module_kwargs, unprotected_secrets):
    spec = module_kwargs(module)["argument_spec"]
    assert not unprotected_secrets(spec)
    assert all(spec[name]["no_log"] for name in ("access_key", "secret_key", "session_token"))
