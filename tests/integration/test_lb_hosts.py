"""The global load balancer's hosts (issue 16): each HAProxy instance on a host of its own, reached over SSH, and a
keepalived VRRP pair holding the KMS's virtual IP.

A private lab without the Kubernetes clusters (the LB hosts, the KMS stand-ins behind them and the object store start
in seconds): the LB hosts are network namespaces with their own addresses on the lab network, Ansible's SSH
reaches them with the lab's key and checks their host keys, and losing the VIP holder moves the VIP to the other.
"""

# pytest injects the fixtures defined below as arguments of the same name
# pylint: disable=redefined-outer-name
from __future__ import annotations

import http.client
import os
import ssl
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils.haproxy import RuntimeClient
from tests.lab import haproxy, lbhost, node, stack
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


def status_through(state, url):
    """(HTTP status, site that answered) of GET /api/status over verified TLS, or (0, error)."""
    try:
        with urllib.request.urlopen(
            f"{url}/api/status",
            timeout=2,  # noqa: S310 (the lab's own URL)
            context=haproxy.frontend_context(state),
        ) as resp:
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
        assert instance["frontend_url"] == f"https://{state['lb_hosts'][host]}:443"
        assert status_through(state, instance["frontend_url"]) == (200, "dc1")
    assert netns_of(os.getpid()) not in {named_netns(n) for n in state["lb_hosts"]["netns"].values()}


def test_the_frontends_serve_tls_of_the_lab_ca_and_redirect_plain_http(lab):
    """As in production: TLS terminated on the VIP and each host's address with a certificate clients verify (one the
    system's trust store does not know is refused), and plain HTTP answered with a redirect, never served."""
    state = lab.state
    vip = state["lb"]["vip_url"]
    assert vip.startswith("https://") and status_through(state, vip) == (200, "dc1")
    stranger = urllib.parse.urlsplit(vip)
    with pytest.raises(ssl.SSLCertVerificationError):
        http.client.HTTPSConnection(
            stranger.hostname, stranger.port, timeout=5, context=ssl.create_default_context()
        ).request("GET", "/api/status")
    for instance in state["lb"]["instances"]:
        conn = http.client.HTTPConnection(instance["host"], haproxy.REDIRECT_PORT, timeout=5)
        conn.request("GET", "/api/status")
        resp = conn.getresponse()
        assert resp.status == 301 and resp.getheader("Location") == f"https://{instance['host']}/api/status"
        assert resp.getheader("X-KMS-Site") is None  # not forwarded to a site
        conn.close()


def test_the_lbs_verify_each_site_s_certificate_against_the_public_host(lab):
    """TLS to the sites as in production: each server verified with the lab CA against the public host name. A
    server that presents a certificate of the same CA for another name (lb1's own frontend) is failed by its health
    check and never sent a request."""
    state = lab.state
    lb1, lb2 = (next(i for i in state["lb"]["instances"] if i["name"] == name) for name in ("lb1", "lb2"))
    config = Path(lb2["config"]).read_text(encoding="utf-8")
    ca_file = state["sites"]["dc1"]["kms"]["ca_file"]
    assert config.count(f"verify required ca-file {ca_file}") == 2, config
    assert config.count(f"verifyhost {haproxy.PUBLIC_HOST}") == 2 and "verify none" not in config
    runtime = RuntimeClient(lb2["socket"])
    assert haproxy.describe(haproxy.servers_state(lb2["socket"])["dc1"]) == "UP"  # a verified handshake, every second
    dc2 = state["sites"]["dc2"]["kms"]
    assert "changed" in runtime.execute(f"set server kms/dc2 addr {lb1['host']} port {haproxy.FRONTEND_PORT}")
    runtime.setter("set server kms/dc2 state ready")
    try:
        wait_until(
            lambda: runtime.server_stats("kms")["dc2"]["check_status"].startswith("L6"),
            15,
            "lb2's check of a server with a certificate for another name to fail its TLS handshake",
        )
        stats = runtime.server_stats("kms")["dc2"]
        assert stats["status"] == "DOWN" and int(stats["stot"]) == 0, stats
        assert {status_through(state, lb2["frontend_url"]) for _request in range(5)} == {(200, "dc1")}
    finally:
        runtime.setter("set server kms/dc2 state maint")
        runtime.execute(f"set server kms/dc2 addr {dc2['host']} port {dc2['port']}")  # replies what it changed


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
    assert status_through(state, state["lb"]["vip_url"]) == (200, "dc1")
    started = time.monotonic()
    lbhost.lose_host(lab.dir, "lb1")
    wait_until(
        lambda: status_through(state, state["lb"]["vip_url"]) == (200, "dc1"),
        30,
        "the VIP to answer again after lb1 was lost",
    )
    print(f"\nVIP answered through lb2 {time.monotonic() - started:.1f} s after lb1 was powered off")
    # lb1's dead interface still carries the address, unplugged: only lb2 holds it on the network
    assert "lb2" in lbhost.vip_holders(state["lb_hosts"])
    assert (
        status_through(state, next(i for i in state["lb"]["instances"] if i["name"] == "lb1")["frontend_url"])[0] == 0
    )
