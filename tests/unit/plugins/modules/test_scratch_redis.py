"""hanzo.kms.scratch_redis: argument handling, checked before any server is started or stopped; check mode."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

from ansible_collections.hanzo.kms.plugins.modules import scratch_redis as module

ARGS = {"password": "scratch-password"}


@pytest.fixture
def work(collaborators):
    """The scratch Redis functions the module calls, recorded."""
    mocks = collaborators(
        module.scratch_redis,
        start=MagicMock(return_value={"path": "/tmp/s", "host": "127.0.0.1", "port": 41873, "pid": 7}),
        stop=MagicMock(return_value={"pid": 7, "removed": True}),
        leftovers=MagicMock(return_value=["/tmp/hanzo-kms-restore-test-a"]),
    )
    return mocks


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(password=None), "state is started but all of the following are missing: password"),
        (dict(state="absent"), "state=absent needs path (the scratch directory to remove) or leftovers=true"),
        (dict(leftovers=True), "path and leftovers go with state=absent"),
        (dict(port=65536), "port must be 0 (a free one) or 1-65535, got 65536"),
        (dict(port=-1), "port must be 0 (a free one) or 1-65535, got -1"),
        (dict(timeout=0), "timeout must be greater than 0, got 0"),
        (dict(state="stopped"), "value of state must be one of: started, absent, got: stopped"),
    ],
)
def test_bad_arguments_fail_naming_the_problem_before_anything_is_done(run_module, args_with, work, changes, message):
    run_module.refused(module, args_with(**changes), message)
    work.assert_untouched()


def test_the_password_is_no_log(run_module, work, unprotected_secrets):
    failed, result = run_module(module, ARGS)
    assert not failed and result["port"] == 41873 and result["changed"]
    assert unprotected_secrets(run_module.instance.argument_spec) == []
    assert "scratch-password" in run_module.instance.no_log_values
    assert work.start.call_args.args == ("redis-server", "scratch-password")


def test_check_mode_starts_and_stops_nothing(run_module, work):
    failed, result = run_module(module, ARGS, check_mode=True)
    assert not failed and result == {"changed": True, "host": "127.0.0.1"}
    failed, result = run_module(module, {"state": "absent", "leftovers": True}, check_mode=True)
    assert (
        not failed
        and result["changed"]
        and [entry["path"] for entry in result["removed"]] == ["/tmp/hanzo-kms-restore-test-a"]
    )
    work.assert_untouched("start", "stop")


def test_absent_removes_the_leftovers_and_the_given_directory_once(run_module, work, tmp_path):
    work.leftovers.return_value = [str(tmp_path)]
    failed, result = run_module(module, {"state": "absent", "leftovers": True, "path": str(tmp_path)})
    assert (
        not failed and result["changed"] and result["removed"] == [{"pid": 7, "removed": True, "path": str(tmp_path)}]
    )
    assert work.stop.call_count == 1


def test_absent_on_a_missing_directory_changes_nothing(run_module, work, tmp_path):
    failed, result = run_module(module, {"state": "absent", "path": str(tmp_path / "gone")})
    assert not failed and result == {"changed": False, "removed": []}
    work.assert_untouched("stop")


def test_a_server_that_does_not_start_fails_the_module_with_the_reason(run_module, work):
    work.start.side_effect = module.scratch_redis.ScratchRedisError("the scratch Redis did not answer; its log: boom")
    run_module.refused(module, ARGS, "the scratch Redis did not answer; its log: boom")
