"""Lab component: the global load balancer's hosts (issue 16). Each LB instance is a host of its own, as in production:

- a network namespace ``hkms-<h>-<lb>`` with its own address on the lab network (tests/lab/node.py: ``lb1`` ``.10``,
  ``lb2`` ``.11``, beside the sites' nodes and the control node), so it reaches a site's node like any other host,
  and a test can cut its link;
- an OpenSSH server on port 22 of its address: Ansible reaches it with the lab's key (``root``, key only), and checks
  its host key against the lab's ``known_hosts`` (never ``StrictHostKeyChecking=no``);
- HAProxy (tests/lab/haproxy.py) started inside the namespace;
- keepalived (Debian) with the global_lb role's VRRP configuration: the KMS's virtual IP (``.20``) is held by lb1
  (priority 150) while its HAProxy runs, else by lb2 (100). Clients use the VIP (the lab's ``kms_public_url``).

``<h>`` and ``slot`` are the lab's (tests/lab/node.py), so two labs on one machine never share a name or an address.
The namespaces share the machine's file system and pids (a network namespace only), so the lab's paths and recorded
pids mean the same thing on an LB host as on the control node.
"""

from __future__ import annotations

import os
import socket
import subprocess

from tests.lab import haproxy, node, pki
from tests.lab.core import LabError, require_binary, wait_until
from tests.lab.haproxy_render import lab_keepalived_values, render

HOSTS = node.LB_HOSTS
VIP_HOST = 20  # the VIP: .20 of the lab network
VRRP_PRIORITIES = {"lb1": 150, "lb2": 100}
SSH_PORT = 22
SSHD = "/usr/sbin/sshd"
SSHD_PRIVSEP_DIR = "/run/sshd"  # sshd refuses to start without it (Debian's unit creates it)


def network_up(lab):
    """One namespace per LB host on the lab network. Returns ``state["lb_hosts"]``: {host: address, "netns": {host:
    namespace}, "gateway": the host's address there}."""
    slot, _bridge = node.bridge_up(lab)
    link = node.lab_network(slot)
    hosts = {"gateway": str(link[1]), "netns": {}, "vip": f"{link[VIP_HOST]}/{link.prefixlen}"}
    for index, host in enumerate(HOSTS):
        net = node.host_up(lab, host, str(link[node.FIRST_LB_HOST + index]))
        hosts[host], hosts["netns"][host] = net["address"], net["netns"]
    return hosts


# -- SSH ------------------------------------------------------------------------------------------------------------
def _openssh_keypair():
    """(private key in OpenSSH format, public key line) of a new Ed25519 key."""
    from cryptography.hazmat.primitives import serialization  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import ed25519  # pylint: disable=import-outside-toplevel

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode("ascii")


def ssh_up(lab, net):
    """The lab's client key, a host key per LB host, ``known_hosts`` naming each host by its address, and an sshd per
    host in its namespace. Returns ``state["ssh"]``."""
    require_binary(SSHD, "openssh-server")
    require_binary("ssh", "openssh-client")
    directory = lab.path("ssh", "x").parent
    directory.chmod(0o700)
    client_key, client_public = _openssh_keypair()
    pki.write(directory, {"id_ed25519": client_key})
    pki.write(directory, {"authorized_keys": client_public.encode() + b" hanzo-kms-lab\n"}, mode=0o600)
    os.makedirs(SSHD_PRIVSEP_DIR, mode=0o755, exist_ok=True)
    known_hosts = []
    for host in HOSTS:
        host_key, host_public = _openssh_keypair()
        pki.write(directory, {f"{host}_host_ed25519_key": host_key})
        known_hosts.append(f"{net[host]} {host_public}\n")
        config = directory / f"{host}_sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {net[host]}:{SSH_PORT}",
                    f"HostKey {directory / f'{host}_host_ed25519_key'}",
                    f"AuthorizedKeysFile {directory / 'authorized_keys'}",
                    f"PidFile {directory / f'{host}_sshd.pid'}",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    # the key files are 0600 in a 0700 dir, but a lab dir may sit under /tmp, whose mode StrictModes refuses
                    "StrictModes no",
                    "Subsystem sftp internal-sftp",
                    "LogLevel INFO",
                    "",
                ]
            ),
            encoding="ascii",
        )
        lab.spawn(f"{host}-sshd", [SSHD, "-D", "-e", "-f", config], netns=net["netns"][host])
    (directory / "known_hosts").write_text("".join(known_hosts), encoding="ascii")
    for host in HOSTS:
        address = (net[host], SSH_PORT)
        lab.wait_process(f"{host}-sshd", lambda a=address: _banner(a), 15, f"{host}'s sshd to answer on {address}")
    return {
        "user": "root",
        "private_key": str(directory / "id_ed25519"),
        "known_hosts": str(directory / "known_hosts"),
        "port": SSH_PORT,
    }


def _banner(address):
    try:
        with socket.create_connection(address, timeout=1) as conn:
            return conn.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def check_ssh(state, host):
    """(ok, detail): the host's sshd answers on its address."""
    address = (state["lb_hosts"][host], state["ssh"]["port"])
    if _banner(address):
        return True, f"sshd at {address[0]}:{address[1]} in {state['lb_hosts']['netns'][host]}"
    return False, f"sshd at {address[0]}:{address[1]} does not answer"


def ssh_argv(state, host, *command):
    """An ``ssh`` command line that runs ``command`` on an LB host as Ansible reaches it (key, verified host key)."""
    ssh = state["ssh"]
    return [
        "ssh",
        "-i",
        ssh["private_key"],
        "-o",
        f"UserKnownHostsFile={ssh['known_hosts']}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-p",
        str(ssh["port"]),
        f"{ssh['user']}@{state['lb_hosts'][host]}",
        *command,
    ]


# -- the VIP ----------------------------------------------------------------------------------------------------------
def vip_up(lab, hosts, lb):
    """keepalived on every LB host (config from the global_lb role's template, checked with ``--config-test``), each
    tracking its own HAProxy master; waits until exactly one host holds the VIP. Returns {host: keepalived entry}."""
    binary = require_binary("keepalived", "keepalived")
    entries = {}
    for instance in lb["instances"]:
        host = instance["name"]
        directory = lab.path("lb", host, "x").parent
        haproxy_pid = lab.process(f"{host}-haproxy")["pid"]
        config = directory / "keepalived.conf"
        config.write_text(
            render(
                lab_keepalived_values(hosts["vip"], VRRP_PRIORITIES[host], haproxy_pid), template="keepalived.conf.j2"
            ),
            encoding="utf-8",
        )
        check = subprocess.run(
            [binary, "--config-test", f"--use-file={config}"], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise LabError(f"keepalived --config-test rejected {config}: {check.stderr.strip()}")
        # -n: the parent stays in the foreground (its pid is the one recorded, SIGHUP reloads); -P: VRRP only
        lab.spawn(
            f"{host}-keepalived",
            [
                binary,
                "-n",
                "-l",
                "-D",
                "-G",
                "-P",
                f"--use-file={config}",
                f"--pid={directory / 'keepalived.pid'}",
                f"--vrrp_pid={directory / 'vrrp.pid'}",
            ],
            netns=hosts["netns"][host],
        )
        entries[host] = {"config": str(config), "priority": VRRP_PRIORITIES[host]}
    wait_until(lambda: len(vip_holders(hosts)) == 1, 20, "one LB host to hold the VIP")
    return entries


def vip_holders(hosts):
    """The LB hosts whose eth0 carries the VIP now."""
    address = hosts["vip"].split("/")[0]
    holders = []
    for host in HOSTS:
        proc = subprocess.run(
            ["ip", "-n", hosts["netns"][host], "-4", "-o", "addr", "show", "dev", "eth0"],
            capture_output=True,
            text=True,
            check=False,
        )
        if f" {address}/" in proc.stdout:
            holders.append(host)
    return holders


def lose_host(lab_dir, host):
    """Power an LB host off: every process of its namespace (sshd, HAProxy, keepalived) killed at once, its link
    unplugged (its addresses, the VIP among them, stop answering). ``lab down`` removes what is left."""
    killed = node.lose_site(lab_dir, host)
    node.set_link(lab_dir, host, up=False)
    return killed


def wait_back(state, host, timeout=60.0):
    """An LB host powered on again (node.power_on): wait until its sshd and its HAProxy's admin socket answer and one
    LB host holds the VIP (keepalived on the returned host may take it back)."""
    instance = next(i for i in state["lb"]["instances"] if i["name"] == host)
    wait_until(
        lambda: (
            check_ssh(state, host)[0]
            and haproxy.check_instance(instance, require_serving=False)[0]
            and len(vip_holders(state["lb_hosts"])) == 1
        ),
        timeout,
        f"{host}'s sshd, HAProxy and the VIP",
        0.5,
    )
