"""module_utils/processes.py: a running process is alive; a zombie (exited, not reaped) and a reaped one are not."""

from __future__ import annotations

import subprocess

from ansible_collections.hanzo.kms.plugins.module_utils.processes import pid_alive


def state(pid):
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def test_running_zombie_and_reaped_processes():
    with subprocess.Popen(["sleep", "60"]) as sleeper:
        assert pid_alive(sleeper.pid)
        sleeper.kill()
        # not waited for yet: a zombie until reaped; poll /proc until the kernel has made it one
        while state(sleeper.pid) != "Z":
            pass
        assert not pid_alive(sleeper.pid)
        sleeper.wait()
        assert not pid_alive(sleeper.pid)
