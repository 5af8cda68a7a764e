"""Pure logic of the lab plumbing: waiting, ports, state-file handling."""

from __future__ import annotations

import json
import socket

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils.haproxy import ServerState
from tests.lab import haproxy
from tests.lab.core import Lab, LabError, merge_state, port_is_free, require_binary, wait_until


def test_wait_until_returns_the_first_truthy_value():
    calls = iter([0, None, "ready"])
    assert wait_until(lambda: next(calls), 5, "a value", interval=0) == "ready"


def test_wait_until_names_what_timed_out_and_the_last_error():
    def failing():
        raise ConnectionRefusedError("refused")

    with pytest.raises(LabError, match=r"waiting for the probe: last error: refused"):
        wait_until(failing, 0.05, "the probe", interval=0.01)


def test_wait_until_stops_at_once_on_a_lab_error():
    calls = []

    def fatal():
        calls.append(1)
        raise LabError("process exited")

    with pytest.raises(LabError, match="process exited"):
        wait_until(fatal, 30, "never")
    assert len(calls) == 1


def test_free_port_never_hands_out_the_same_port_twice(tmp_path):
    lab = Lab(tmp_path)
    ports = [lab.free_port() for unused_attempt in range(50)]
    assert len(set(ports)) == 50
    assert all(port_is_free(p) for p in ports)


def test_port_is_free_sees_a_listener():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_is_free(sock.getsockname()[1])


def test_a_state_file_of_another_version_is_refused_with_advice(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(LabError, match="make lab-down"):
        Lab(tmp_path).load()


def test_an_unreadable_state_file_is_refused_with_advice(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(LabError, match="unreadable"):
        Lab(tmp_path).load()


@pytest.mark.parametrize(
    "admin_state, op_state, expected",
    [
        (0, 2, "UP"),
        (0, 0, "DOWN"),
        (0x01, 2, "MAINT"),
        (0x05, 0, "MAINT"),
        (0x04, 2, "UP"),
        (0x08, 2, "DRAIN"),
        (0x20, 2, "MAINT"),
    ],
)
def test_haproxy_server_state_words(admin_state, op_state, expected):
    row = ServerState("kms", "dc1", op_state, admin_state, 1, 1, 0)
    assert haproxy.describe(row) == expected


def test_a_missing_server_binary_names_the_debian_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LabError, match="install the Debian package 'haproxy'"):
        require_binary("haproxy", "haproxy")


def test_save_keeps_what_another_process_changed_since_this_one_read_the_state(tmp_path):
    first = Lab(tmp_path)
    first.state = {
        "version": 1,
        "processes": [{"name": "dc1-postgres", "pid": 10}, {"name": "s3", "pid": 11}],
        "sites": {"dc1": {"postgres": {"role": "primary"}}},
    }
    first.save()
    stale = Lab(tmp_path)
    stale.load()
    # Another process (the CNPG stand-in) restarts PostgreSQL: new pid, new role.
    other = Lab(tmp_path)
    other.load()
    other.state["processes"][0]["pid"] = 20
    other.state["sites"]["dc1"]["postgres"]["role"] = "standby"
    other.save()
    # The stale object records a process of its own and saves.
    stale.state["processes"].append({"name": "scratch-redis", "pid": 30})
    stale.save()
    again = Lab(tmp_path)
    again.load()
    assert [(p["name"], p["pid"]) for p in again.state["processes"]] == [
        ("dc1-postgres", 20),
        ("s3", 11),
        ("scratch-redis", 30),
    ]
    assert again.state["sites"]["dc1"]["postgres"]["role"] == "standby"
    assert stale.state == again.state


def test_merge_state_lets_this_process_change_and_delete_its_own_values():
    base = {"a": 1, "b": {"c": 2}, "gone": 3, "processes": [{"name": "x", "pid": 1}, {"name": "y", "pid": 2}]}
    ours = {"a": 5, "b": {"c": 2}, "processes": [{"name": "x", "pid": 1}]}
    theirs = {
        "a": 1,
        "b": {"c": 7},
        "gone": 3,
        "new": 8,
        "processes": [{"name": "x", "pid": 9}, {"name": "y", "pid": 2}, {"name": "z", "pid": 4}],
    }
    merged = merge_state(base, ours, theirs)
    assert merged == {"a": 5, "b": {"c": 7}, "new": 8, "processes": [{"name": "x", "pid": 9}, {"name": "z", "pid": 4}]}
