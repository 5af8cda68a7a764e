"""The global load balancer: an HAProxy pair in front of both sites' KMS.

Each instance has an admin Runtime API socket (unix) and the Runtime API over TLS with client certificates (the lab
CA; ``admin_address``, what the site switch uses from the control node), a server-state-file loaded at start, the KMS
frontend on HTTPS (port 443, TLS terminated with a certificate of the lab CA naming the host's address and the VIP;
port 80 redirects to it, as the example inventory's production frontend does) and a Prometheus endpoint. dc1 is
active; dc2's server starts in maintenance, because failover between data centers is a human decision, never
HAProxy's (a ``backup`` server would fail over by itself).
"""

from __future__ import annotations

import ssl
import subprocess

from ansible_collections.hanzo.kms.plugins.module_utils.haproxy import HAProxyError, RuntimeClient, tls_context
from tests.lab import pki
from tests.lab.core import LabError, require_binary
from tests.lab.haproxy_render import lab_values
from tests.lab.haproxy_render import render as render_role_template

INSTANCES = ("lb1", "lb2")
BACKEND = "kms"
# Each instance has its LB host (a network namespace) to itself, so its ports are fixed, as on a dedicated machine.
FRONTEND_PORT = 443
REDIRECT_PORT = 80
# The KMS's public host name (the lab inventory's kms_public_host): the Host header and TLS name the LBs send to the
# sites, the name the sites' certificates are verified against.
PUBLIC_HOST = "kms.lab.internal"
ADMIN_PORT = 9999
STATS_PORT = 8405


def servers_state(address, tls=None):
    """{server name: ServerState} of the KMS backend, read through the collection's own Runtime API client (``tls``:
    :func:`client_tls` for an ``admin_address``)."""
    client = RuntimeClient(address, tls=tls)
    return {key[1]: row for key, row in client.servers_state(BACKEND).items()}  # key: (backend, server)


def client_tls(lb):
    """The control node's TLS context for the instances' ``admin_address`` (``lb``: the state's ``lb`` entry)."""
    files = lb["admin_tls"]
    return tls_context(files["ca_file"], files["cert_file"], files["key_file"])


def frontend_context(state):
    """A client's TLS context for the frontends and the VIP (``state``: the lab state): the lab CA, verification on."""
    return ssl.create_default_context(cafile=state["pki"]["ca_file"])


def _admin_tls(lab, ca, hosts):
    """Each instance's Runtime API certificate and its frontend's (for its address, the frontend's for the VIP too;
    HAProxy wants certificate and key in one file) and the control node's client certificate, all from the lab CA."""
    directory = lab.path("pki", "x").parent
    vip = hosts["vip"].split("/")[0]
    for name in INSTANCES:
        cert, key = ca.leaf(f"{name}-runtime-api", server=True, dns=(name,), ips=(hosts[name],))
        pki.write(directory, {f"{name}-runtime-api.pem": cert + key})
        cert, key = ca.leaf(f"{name}-frontend", server=True, dns=(name,), ips=(hosts[name], vip))
        pki.write(directory, {f"{name}-frontend.pem": cert + key})
    cert, key = ca.leaf("hanzo-kms-control-node")
    paths = pki.write(directory, {"control-node.crt": cert, "control-node.key": key})
    return {
        "ca_file": lab.state["pki"]["ca_file"],
        "cert_file": str(paths["control-node.crt"]),
        "key_file": str(paths["control-node.key"]),
    }


def describe(row):
    """MAINT, DRAIN, or for a ready server UP/DOWN from its health."""
    if row.state != "ready":
        return row.state.upper()
    return "UP" if row.op_state == 2 else "DOWN"


def render(instance, sites, public_host):
    """haproxy.cfg for one instance, rendered from the global_lb role's template (dc1 active, dc2 in maint).
    ``sites``: {site: (host, port) of its KMS, or (host, port, CA file) for TLS to it}."""
    return render_role_template(lab_values(instance, sites, active_site="dc1", public_host=public_host))


def up(lab, sites, hosts, ca, wait_for_site="dc1"):
    """Start the pair in front of ``sites`` ({site: (host, port) of its KMS, with the CA file for TLS to it: the
    public host name is verified, :data:`PUBLIC_HOST`}), each instance in its LB host's network
    namespace (``hosts``: tests/lab/lbhost.network_up's entry), on fixed ports of the host's own address as on a
    dedicated machine; wait until both see ``wait_for_site``'s KMS healthy, or (None: nothing serves yet) until their
    Runtime API answers. ``ca``: the lab CA (the Runtime API's TLS certificates)."""
    binary = require_binary("haproxy", "haproxy")
    admin_tls = _admin_tls(lab, ca, hosts)
    instances = []
    for name in INSTANCES:
        cfg_dir = lab.path("lb", name, "x").parent
        address = hosts[name]
        # the frontend on every address of the host: its own and the VIP when it holds it (tests/lab/lbhost.py)
        instance = {
            "name": name,
            "host": address,
            "bind": f"*:{FRONTEND_PORT}",
            "redirect_bind": f"*:{REDIRECT_PORT}",
            "frontend_tls_certificate": str(lab.path("pki", f"{name}-frontend.pem")),
            "socket": str(cfg_dir / "admin.sock"),
            "admin_port": ADMIN_PORT,
            "frontend_port": FRONTEND_PORT,
            "stats_port": STATS_PORT,
            "state_file": str(cfg_dir / "server-state"),
            "config": str(cfg_dir / "haproxy.cfg"),
            "admin_tls_socket": str(cfg_dir / "admin-tls.sock"),
            "admin_tls_certificate": str(lab.path("pki", f"{name}-runtime-api.pem")),
            "admin_tls_client_ca_file": admin_tls["ca_file"],
        }
        with open(instance["config"], "w", encoding="utf-8") as cfg:
            cfg.write(render(instance, sites, PUBLIC_HOST))
        check = subprocess.run(
            [binary, "-c", "-q", "-f", instance["config"]], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise LabError(f"haproxy -c rejected {instance['config']}: {check.stderr.strip() or check.stdout.strip()}")
        # -W: master-worker, so a reload (SIGUSR2 to the master) keeps the pid the lab recorded; -db: foreground.
        lab.spawn(f"{name}-haproxy", [binary, "-W", "-db", "-f", instance["config"]], netns=hosts["netns"][name])
        instance["admin_address"] = f"{address}:{ADMIN_PORT}"
        instance["frontend_url"] = f"https://{address}:{FRONTEND_PORT}"
        instance["metrics_url"] = f"http://{address}:{STATS_PORT}/metrics"
        instances.append(instance)
    for instance in instances:
        if wait_for_site is None:
            lab.wait_process(
                f"{instance['name']}-haproxy",
                lambda inst=instance: _answers(inst["socket"]),
                30,
                f"{instance['name']}'s Runtime API to answer",
            )
        else:
            lab.wait_process(
                f"{instance['name']}-haproxy",
                lambda inst=instance: describe(servers_state(inst["socket"])[wait_for_site]) == "UP",
                30,
                f"{instance['name']} to see {wait_for_site}'s KMS healthy",
            )
    tls = client_tls({"admin_tls": admin_tls})
    for instance in instances:  # the control node's way in, as the site switch takes it
        lab.wait_process(
            f"{instance['name']}-haproxy",
            lambda inst=instance: _answers(inst["admin_address"], tls),
            30,
            f"{instance['name']}'s Runtime API to answer over TLS",
        )
    return {
        "backend": BACKEND,
        "servers": {site: site for site in sites},
        "instances": instances,
        "public_host": PUBLIC_HOST,
        "admin_tls": admin_tls,
    }


def _answers(address, tls=None):
    try:
        servers_state(address, tls)
    except HAProxyError:
        return False
    return True


def check_instance(instance, require_serving=True):
    """Up means the admin socket answers and (``require_serving``) some server takes traffic; the detail says
    which."""
    try:
        states = servers_state(instance["socket"])
    except HAProxyError as exc:
        return False, str(exc)
    detail = ", ".join(f"{server} {describe(state)}" for server, state in sorted(states.items()))
    serving = [server for server, state in states.items() if describe(state) == "UP"]
    if not require_serving:
        return True, f"{instance['frontend_url']} -> {detail}{'' if serving else ' (nothing serves yet)'}"
    return bool(serving), f"{instance['frontend_url']} -> {detail}"
