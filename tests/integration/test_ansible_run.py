"""tests/ansible_run.py, the one way tests, drills and benchmarks run Ansible: the result, the recap and the failure
messages come from real ansible and ansible-playbook runs on localhost (no lab needed)."""

from __future__ import annotations

import pytest

from tests.ansible_run import JSON_CALLBACK, ansible_env, recap, run_module, run_play, run_playbook, write_play


def test_a_module_result_comes_from_the_json_callback_with_the_seconds_it_took():
    run = run_module("ansible.builtin.ping", {"data": "hello"})
    assert run.returncode == 0 and run.report["plays"] and run.result() == dict(run.result(), ping="hello")
    assert 0 < run.seconds < 120


def test_a_failed_module_is_a_result_not_an_exception_unless_it_must_succeed():
    run = run_module("ansible.builtin.fail", {"msg": "refused: wrong site"})
    assert run.returncode == 2 and run.result()["failed"] and run.result()["msg"] == "refused: wrong site"
    with pytest.raises(AssertionError, match=r"(?s)ansible localhost .* failed, rc 2:.*refused: wrong site"):
        run_module("ansible.builtin.fail", {"msg": "refused: wrong site"}, must_succeed=True)


def test_output_that_is_not_the_json_document_names_the_problem_with_both_streams(run_ansible, tmp_path):
    with pytest.raises(AssertionError, match=r"(?s)output is not the JSON callback's .*rc [1-9].*missing\.yml"):
        run_ansible("ansible-playbook", tmp_path / "missing.yml", json_output=True)


def test_a_play_gives_each_task_result_in_order_and_the_stats(tmp_path):
    run = run_play(
        tmp_path / "play.yml",
        [
            {"name": "first", "ansible.builtin.debug": {"msg": "one"}},
            {"name": "second", "ansible.builtin.set_fact": {"x": 2}, "changed_when": True},
        ],
        check_mode=True,
    )
    assert [(name, result.get("msg")) for name, result in run.results()] == [("first", "one"), ("second", None)]
    assert (run.stats()["ok"], run.stats()["changed"]) == (2, 1)


def test_the_default_output_recap_is_read_per_host(run_ansible, tmp_path):
    play = write_play(tmp_path / "play.yml", [{"name": "fail", "ansible.builtin.fail": {"msg": "no"}}])
    run = run_playbook(play, "-c", "local", inventory="localhost,")
    assert run.returncode == 2 and "fatal: [localhost]" in run.stdout
    assert recap(run.stdout) == {"localhost": {"ok": 0, "changed": 0, "unreachable": 0, "failed": 1}}
    as_json = run_ansible("ansible-playbook", "-i", "localhost,", "-c", "local", play, json_output=True)
    assert as_json.stats() == dict(as_json.stats(), ok=0, changed=0, failures=1)


def test_the_environment_is_this_checkouts():
    env = ansible_env("/tmp/lab", json_output=True, ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks")
    assert env["ANSIBLE_CONFIG"].endswith("/ansible.cfg") and env["ANSIBLE_COLLECTIONS_PATH"].endswith(
        "/.venv/collections"
    )
    assert (env["HANZO_KMS_LAB_DIR"], env["ANSIBLE_STDOUT_CALLBACK"]) == ("/tmp/lab", JSON_CALLBACK)
    assert env["ANSIBLE_CALLBACKS_ENABLED"] == "ansible.posix.profile_tasks"
    assert ansible_env().get("ANSIBLE_STDOUT_CALLBACK") != JSON_CALLBACK  # operators' output unless asked
