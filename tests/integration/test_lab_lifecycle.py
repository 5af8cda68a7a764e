"""The lab's own lifecycle: a run killed midway is recovered, down is idempotent and frees every port.

This uses a second, private lab without the Kubernetes clusters (their lifecycle is covered in test_kube.py),
so that it can kill processes without disturbing the session's lab.
"""

from __future__ import annotations

import os
import signal
import tempfile

import pytest

from tests.lab import stack
from tests.lab.core import Lab, LabError, pid_alive, port_is_free


@pytest.fixture
def private_lab(monkeypatch):
    monkeypatch.setenv("HANZO_KMS_LAB_WITHOUT_KUBE", "1")
    lab = Lab(tempfile.mkdtemp(prefix="hanzo-kms-lab-lifecycle-"))
    stack.up(lab, log=lambda _msg: None)
    yield lab
    stack.down(Lab(lab.dir), log=lambda _msg: None)


def test_a_killed_service_is_reported_then_recovered_by_up(private_lab):
    redis_proc = private_lab.process("dc1-redis")
    os.kill(redis_proc["pid"], signal.SIGKILL)
    rows = {row[0]: row for row in stack.status(private_lab)}
    assert rows["dc1 redis"][1] is False and "PING failed" in rows["dc1 redis"][2]
    assert rows["process dc1-redis"][1] is False

    messages = []
    recovered = Lab(private_lab.dir)
    stack.up(recovered, log=messages.append)
    assert "interrupted or broken run (dead: dc1-redis)" in messages[0]
    assert all(row[1] for row in stack.status(recovered))
    assert all(not pid_alive(p["pid"]) for p in private_lab.state["processes"])


def test_down_stops_every_process_frees_every_port_and_is_idempotent(private_lab):
    state = private_lab.state
    pids = [p["pid"] for p in state["processes"]]
    ports = stack._ports(state)  # pylint: disable=protected-access
    assert stack.down(Lab(private_lab.dir), log=lambda _msg: None)
    assert not any(pid_alive(pid) for pid in pids)
    assert all(port_is_free(port) for port in ports)
    assert not private_lab.dir.exists()
    assert stack.down(Lab(private_lab.dir), log=lambda _msg: None) == []


def test_down_refuses_to_remove_a_folder_the_lab_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(LabError, match="not a lab dir"):
        stack.down(Lab(tmp_path), log=lambda _msg: None)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
