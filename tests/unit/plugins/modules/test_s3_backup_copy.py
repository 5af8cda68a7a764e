"""hanzo.kms.s3_backup_copy: argument handling, checked before any S3 client; the copy's result as the module's."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

from ansible_collections.hanzo.kms.plugins.modules import s3_backup_copy as module

ARGS = {
    "bucket": "kms-backups-dc2",
    "endpoint_url": "https://s3.dc2.example.com",
    "access_key": "AK2",
    "secret_key": "SK2",
    "site": "dc1",
    "source": {"bucket": "kms-backups-dc1", "endpoint_url": "https://s3.dc1.example.com", "secret_key": "SK1"},
}
RESULT = {"changed": True, "backup": "20261205T021500Z", "rdb_key": "redis/dc1/20261205T021500Z/dump.rdb"}


@pytest.fixture
def s3_client(fake_s3_client):
    return fake_s3_client(module)


@pytest.fixture
def copy_newest(monkeypatch, s3_client):
    mock = MagicMock(return_value=dict(RESULT, size=5, reason=None))
    monkeypatch.setattr(module, "copy_newest", mock)
    return mock


def args_with(**changes):
    args = dict(ARGS, **changes)
    return {key: value for key, value in args.items() if value is not None}


@pytest.mark.parametrize(
    "args, message",
    [
        (args_with(bucket=None), "missing required arguments: bucket"),
        (args_with(source={"endpoint_url": "https://s3.dc1"}), "missing required arguments: bucket found in source"),
        (args_with(site="DC1"), "invalid site in sites 'DC1'"),
        (args_with(prefix="redis/../other"), "invalid prefix 'redis/../other'"),
    ],
)
def test_bad_arguments_fail_naming_the_problem_before_any_s3_client(run_module, s3_client, copy_newest, args, message):
    failed, result = run_module(module, args)
    assert failed and message in result["msg"], result
    s3_client.assert_not_called()
    copy_newest.assert_not_called()


def test_each_store_gets_its_own_connection_and_the_result_is_the_copys(run_module, s3_client, copy_newest):
    failed, result = run_module(module, ARGS)
    assert not failed and result["changed"] and result["backup"] == RESULT["backup"], result
    source_params, destination_params = (call.args[0] for call in s3_client.call_args_list)
    assert source_params["endpoint_url"] == "https://s3.dc1.example.com" and source_params["secret_key"] == "SK1"
    assert source_params["region"] == "us-east-1"
    assert destination_params["endpoint_url"] == "https://s3.dc2.example.com"
    args = copy_newest.call_args.args
    assert args[1] == "kms-backups-dc1" and args[3:] == ("kms-backups-dc2", "redis", "dc1")
    assert copy_newest.call_args.kwargs == {"check_mode": False}
