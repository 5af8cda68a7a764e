"""The global load balancer: an HAProxy pair in front of both sites' KMS.

Each instance has an admin Runtime API socket (unix and TCP), a server-state-file loaded at start, the KMS
frontend and a Prometheus endpoint. dc1 is active; dc2's server starts in maintenance, because failover between
data centers is a human decision, never HAProxy's (a ``backup`` server would fail over by itself).
"""
from __future__ import annotations

import socket
import subprocess

from tests.lab.core import LabError, require_binary

INSTANCES = ("lb1", "lb2")
BACKEND = "kms"

CONFIG = """\
# Rendered by the hanzo.kms lab for instance {name}.
global
    log stdout format raw local0 warning
    stats socket {socket} mode 600 level admin
    stats socket ipv4@127.0.0.1:{admin_port} level admin
    stats timeout 30s
    server-state-file {state_file}

defaults
    mode http
    log global
    option httplog
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    load-server-state-from-file global

frontend kms
    bind 127.0.0.1:{frontend_port}
    default_backend {backend}

backend {backend}
    option httpchk GET /api/status
    http-check expect status 200
    default-server inter 1s fall 2 rise 1
{servers}

frontend monitoring
    bind 127.0.0.1:{stats_port}
    http-request use-service prometheus-exporter if {{ path /metrics }}
    stats enable
    stats uri /stats
"""


def runtime_command(address, command, timeout=3.0):
    """Send one Runtime API command to a unix socket path or a host:port; return the reply text."""
    if address.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = address
    else:
        host, port = address.rsplit(":", 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (host, int(port))
    with sock:
        sock.settimeout(timeout)
        sock.connect(target)
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def servers_state(address):
    """{server name: operational state} from ``show servers state`` (2 = running, 0 = stopped/maint)."""
    lines = [ln for ln in runtime_command(address, f"show servers state {BACKEND}").splitlines()
             if ln and not ln.startswith("#") and not ln.startswith("1")]
    states = {}
    for line in lines:
        fields = line.split()
        # be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ...
        states[fields[3]] = {"op_state": int(fields[5]), "admin_state": int(fields[6])}
    return states


def render(instance, kms_ports):
    servers = []
    for site, port in kms_ports.items():
        disabled = "" if site == "dc1" else " disabled"
        servers.append(f"    server {site} 127.0.0.1:{port} check{disabled}")
    return CONFIG.format(backend=BACKEND, servers="\n".join(servers), **instance)


def up(lab, kms_ports):
    binary = require_binary("haproxy", "haproxy")
    instances = []
    for name in INSTANCES:
        cfg_dir = lab.path("lb", name, "x").parent
        instance = {"name": name, "socket": str(cfg_dir / "admin.sock"), "admin_port": lab.free_port(),
                    "frontend_port": lab.free_port(), "stats_port": lab.free_port(),
                    "state_file": str(cfg_dir / "server-state"), "config": str(cfg_dir / "haproxy.cfg")}
        with open(instance["config"], "w", encoding="utf-8") as cfg:
            cfg.write(render(instance, kms_ports))
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
        lab.wait_process(f"{instance['name']}-haproxy",
                         lambda inst=instance: servers_state(inst["socket"]).get("dc1", {}).get("op_state") == 2,
                         30, f"{instance['name']} to see dc1's KMS healthy")
    return {"backend": BACKEND, "servers": {site: site for site in kms_ports}, "instances": instances}


def describe(state):
    if state["admin_state"] & 0x67:  # FMAINT, IMAINT, CMAINT, RMAINT, HMAINT
        return "MAINT"
    if state["admin_state"] & 0x18:  # FDRAIN, IDRAIN
        return "DRAIN"
    return "UP" if state["op_state"] == 2 else "DOWN"


def check_instance(instance):
    """Up means the admin socket answers and some server takes traffic; the detail says which."""
    try:
        states = servers_state(instance["socket"])
    except OSError as exc:
        return False, f"runtime socket {instance['socket']}: {exc}"
    detail = ", ".join(f"{server} {describe(state)}" for server, state in sorted(states.items()))
    serving = [server for server, state in states.items() if describe(state) == "UP"]
    return bool(serving), f"{instance['frontend_url']} -> {detail}"
