"""STAND-IN for each site's ingress controller, operator mode: HAProxy on the site's real node terminating TLS.

In production the global load balancer reaches a site through its ingress controller, over TLS with a certificate
for the public host name that the load balancer verifies (``site_ingress_tls``, ``site_ingress_ca_file``). No
ingress controller can be built here within CI's budget (Traefik v3.6 is on the Go module proxy but pulls about 400
modules: every ACME DNS provider and cloud SDK), so the lab stands one in: Debian's HAProxy, started by the lab in
the site's network namespace (it is lost and cut off with the site), serving a certificate of the lab CA for the
public host name on the node's address and forwarding to the KMS Service's node port. Like an ingress controller it
answers 503 while the KMS has no ready pod. It routes every Host (a real ingress matches the Ingress's hosts) and
reads no Ingress object: the kms role's Ingress stays unused in operator mode.
"""

from __future__ import annotations

import subprocess

from tests.lab import pki
from tests.lab.core import LabError, require_binary
from tests.lab.kms import http_status

PORT = 8443  # on the node's address

CONFIG = """\
global
    log stdout format raw local0 warning
    ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
    mode http
    log global
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 0  # no Service endpoint: 503 at once, as an ingress controller answers (a retry waits 1 s)

frontend ingress
    bind {address}:{port} ssl crt {pem}
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    default_backend kms

backend kms
    server kms {address}:{node_port}
"""


def up(lab, site, node_ip, netns, ca, public_host, node_port):
    """Start ``site``'s ingress stand-in in ``netns`` on ``node_ip``; the lab state's ``kms`` entry for the site."""
    binary = require_binary("haproxy", "haproxy")
    cert, key = ca.leaf(f"ingress-{site}", server=True, dns=(public_host,), ips=(node_ip,))
    directory = lab.path("ingress", site, "x").parent
    pem = pki.write(directory, {"ingress.pem": cert + key})["ingress.pem"]
    config = directory / "haproxy.cfg"
    config.write_text(CONFIG.format(address=node_ip, port=PORT, pem=pem, node_port=node_port), encoding="utf-8")
    check = subprocess.run([binary, "-c", "-q", "-f", str(config)], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise LabError(f"haproxy -c rejected {config}: {check.stderr.strip() or check.stdout.strip()}")
    name = f"{site}-ingress"
    lab.spawn(name, [binary, "-W", "-db", "-f", str(config)], netns=netns)
    ca_file = lab.state["pki"]["ca_file"]
    entry = {
        "host": node_ip,
        "port": PORT,
        "url": f"https://{node_ip}:{PORT}",
        "ca_file": ca_file,
        "node_port": node_port,
        "stand_in": True,
        "in_pod": True,
        "ingress": "stand-in",
    }
    # any answer over verified TLS: 503 until install.yml's KMS pods are ready behind it
    lab.wait_process(
        name,
        lambda: http_status(entry["url"] + "/api/status", ca_file=ca_file)[0] != 0,
        20,
        f"{name} to answer HTTPS on {node_ip}:{PORT}",
    )
    return entry
