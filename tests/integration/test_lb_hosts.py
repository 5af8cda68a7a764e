"""The global load balancer's hosts (issue 16): each HAProxy instance on a host of its own, reached over SSH, and a
keepalived VRRP pair holding the KMS's virtual IP.

A private lab without the Kubernetes clusters (the LB hosts, the KMS stand-ins behind them and the object store start
in seconds): the LB hosts are network namespaces with their own addresses on the lab network, Ansible's SSH
reaches them with the lab's key and checks their host keys, and losing the VIP holder moves the VIP to the other.
"""
# pytest injects the fixtures defined below as arguments of the same name
# pylint: disable=redefined-outer-name
from __future__ import annotations

import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.lab import lbhost, node, stack
from tests.lab.core import NETNS_RUN_DIR, Lab, wait_until


@pytest.fixture(scope="module")
def lab():
    lab_dir = Path(tempfile.mkdtemp(prefix="hanzo-kms-lab-lbhosts-"))
    this = Lab(lab_dir)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HANZO_KMS_LAB_WITHOUT_KUBE", "1")
        env.setenv("HANZO_KMS_LAB_CNPG", "standin")
        stack.up(this, log=lambda _msg: None)
    yield this
    stack.down(Lab(lab_dir), log=lambda _msg: None)
    assert node.leftovers(lab_dir) == []


def ssh(state, host, *command, known_hosts=None):
    argv = lbhost.ssh_argv(state, host, *command)
    if known_hosts:
        argv[argv.index(f"UserKnownHostsFile={state['ssh']['known_hosts']}")] = f"UserKnownHostsFile={known_hosts}"
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def netns_of(pid):
    stat = os.stat(f"/proc/{pid}/ns/net")
    return stat.st_dev, stat.st_ino


def named_netns(name):
    stat = os.stat(f"{NETNS_RUN_DIR}/{name}")
    return stat.st_dev, stat.st_ino


def status_through(url):
    """(HTTP status, site that answered) of GET /api/status, or (0, error)."""
    try:
        with urllib.request.urlopen(f"{url}/api/status", timeout=2) as resp:  # noqa: S310 (the lab's own URL)
            return resp.status, resp.headers.get("X-KMS-Served-By")
    except OSError as exc:
        return 0, str(exc)


def test_each_lb_host_is_a_host_of_its_own_reached_over_ssh(lab):
    state = lab.state
    for host in lbhost.HOSTS:
        proc = ssh(state, host, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
        assert proc.returncode == 0, proc.stderr
        assert f" {state['lb_hosts'][host]}/" in proc.stdout  # the command ran on that host, not here
        here = named_netns(state["lb_hosts"]["netns"][host])
        for service in ("sshd", "haproxy", "keepalived"):
            assert netns_of(lab.process(f"{host}-{service}")["pid"]) == here, service
        instance = next(i for i in state["lb"]["instances"] if i["name"] == host)
        assert instance["frontend_url"] == f"http://{state['lb_hosts'][host]}:80"
        assert status_through(instance["frontend_url"]) == (200, "dc1")
    assert netns_of(os.getpid()) not in {named_netns(n) for n in state["lb_hosts"]["netns"].values()}


def test_a_host_key_that_does_not_match_is_refused(lab, tmp_path):
    """Verification is on: lb1's address with lb2's host key is a man in the middle, and SSH stops."""
    state = lab.state
    lines = Path(state["ssh"]["known_hosts"]).read_text(encoding="ascii").splitlines()
    keys = {line.split()[0]: line.split(maxsplit=1)[1] for line in lines}
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"{state['lb_hosts']['lb1']} {keys[state['lb_hosts']['lb2']]}\n", encoding="ascii")
    proc = ssh(state, "lb1", "true", known_hosts=wrong)
    assert proc.returncode == 255 and "Host key verification failed" in proc.stderr, proc.stderr


def test_the_vip_moves_to_lb2_when_lb1_is_lost(lab):
    state = lab.state
    assert lbhost.vip_holders(state["lb_hosts"]) == ["lb1"]  # the higher priority holds it
    assert status_through(state["lb"]["vip_url"]) == (200, "dc1")
    started = time.monotonic()
    lbhost.lose_host(lab.dir, "lb1")
    wait_until(lambda: status_through(state["lb"]["vip_url"]) == (200, "dc1"), 30,
               "the VIP to answer again after lb1 was lost")
    print(f"\nVIP answered through lb2 {time.monotonic() - started:.1f} s after lb1 was powered off")
    # lb1's dead interface still carries the address, unplugged: only lb2 holds it on the network
    assert "lb2" in lbhost.vip_holders(state["lb_hosts"])
    assert status_through(next(i for i in state["lb"]["instances"] if i["name"] == "lb1")["frontend_url"])[0] == 0
