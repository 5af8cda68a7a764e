"""The global load balancer: an HAProxy pair in front of both sites' KMS.

Each instance has an admin Runtime API socket (unix and TCP), a server-state-file loaded at start, the KMS
frontend and a Prometheus endpoint. dc1 is active; dc2's server starts in maintenance, because failover between
data centers is a human decision, never HAProxy's (a ``backup`` server would fail over by itself).
"""
from __future__ import annotations

import subprocess

from ansible_collections.hanzo.kms.plugins.module_utils.haproxy import HAProxyError, RuntimeClient

from tests.lab.core import LabError, require_binary
from tests.lab.haproxy_render import lab_values, render as render_role_template

INSTANCES = ("lb1", "lb2")
BACKEND = "kms"


def servers_state(address):
    """{server name: ServerState} of the KMS backend, read through the collection's own Runtime API client."""
    return {key[1]: row for key, row in RuntimeClient(address).servers_state(BACKEND).items()}  # key: (backend, server)


def describe(row):
    """MAINT, DRAIN, or for a ready server UP/DOWN from its health."""
    if row.state != "ready":
        return row.state.upper()
    return "UP" if row.op_state == 2 else "DOWN"


def render(instance, sites):
    """haproxy.cfg for one instance, rendered from the global_lb role's template (dc1 active, dc2 in maint).
    ``sites``: {site: (host, port) of its KMS}."""
    return render_role_template(lab_values(instance, sites, active_site="dc1"))


def up(lab, sites, wait_for_site="dc1"):
    """Start the pair in front of ``sites`` ({site: (host, port) of its KMS}); wait until both see ``wait_for_site``'s
    KMS healthy, or (None: nothing serves yet) until their Runtime API answers."""
    binary = require_binary("haproxy", "haproxy")
    instances = []
    for name in INSTANCES:
        cfg_dir = lab.path("lb", name, "x").parent
        instance = {"name": name, "socket": str(cfg_dir / "admin.sock"), "admin_port": lab.free_port(),
                    "frontend_port": lab.free_port(), "stats_port": lab.free_port(),
                    "state_file": str(cfg_dir / "server-state"), "config": str(cfg_dir / "haproxy.cfg")}
        with open(instance["config"], "w", encoding="utf-8") as cfg:
            cfg.write(render(instance, sites))
        check = subprocess.run([binary, "-c", "-q", "-f", instance["config"]], capture_output=True, text=True,
                               check=False)
        if check.returncode != 0:
            raise LabError(f"haproxy -c rejected {instance['config']}: {check.stderr.strip() or check.stdout.strip()}")
        # -W: master-worker, so a reload (SIGUSR2 to the master) keeps the pid the lab recorded; -db: foreground.
        lab.spawn(f"{name}-haproxy", [binary, "-W", "-db", "-f", instance["config"]])
        instance["admin_address"] = f"127.0.0.1:{instance['admin_port']}"
        instance["frontend_url"] = f"http://127.0.0.1:{instance['frontend_port']}"
        instance["metrics_url"] = f"http://127.0.0.1:{instance['stats_port']}/metrics"
        instances.append(instance)
    for instance in instances:
        if wait_for_site is None:
            lab.wait_process(f"{instance['name']}-haproxy", lambda inst=instance: _answers(inst["socket"]), 30,
                             f"{instance['name']}'s Runtime API to answer")
        else:
            lab.wait_process(f"{instance['name']}-haproxy",
                             lambda inst=instance: describe(servers_state(inst["socket"])[wait_for_site]) == "UP",
                             30, f"{instance['name']} to see {wait_for_site}'s KMS healthy")
    return {"backend": BACKEND, "servers": {site: site for site in sites}, "instances": instances}


def _answers(socket_path):
    try:
        servers_state(socket_path)
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
