"""Lab component: cluster DNS for a site (operator mode), CoreDNS built from the Go proxy (tools/kube/coredns-promtool).

CNPG needs it: the operator dials a CNPG-I plugin at ``<service>.<namespace>.svc:<port>`` (internal/controller/
plugin_controller.go), so without DNS every Cluster that uses the Barman Cloud plugin stays in "Cluster cannot proceed
to reconciliation due to an error while interacting with plugins" (``lookup barman-cloud.cnpg-system.svc on
127.0.0.1:53``). CoreDNS runs as a lab process in the site's network namespace, on the node IP, port 53, serving
``cluster.local`` (and reverse zones) from the site's apiserver with the kubernetes plugin, as kube-dns does; kubelet's
``clusterDNS`` points pods there (pods reach the node IP through the CNI bridge). Nothing outside the cluster domain is
answered: the lab has no upstream resolver, and pods reach S3 by IP.

    dns = dns.start(lab, site, net, kubeconfig, coredns_binary, spawn)   # before kubelet starts
    dns.wait_ready(lab, site, dns_entry)                                 # once the apiserver serves Services
"""

from __future__ import annotations

import os
import random
import socket
import struct

from tests.lab.core import LabError

CLUSTER_DOMAIN = "cluster.local"
START_TIMEOUT = float(os.environ.get("HANZO_KMS_DNS_START_TIMEOUT", "60"))


def corefile(node_ip, kubeconfig, context):
    return (
        f".:53 {{\n"
        f"    bind {node_ip}\n"
        f"    errors\n"
        f"    ready 127.0.0.1:8181\n"
        f"    health 127.0.0.1:8080\n"
        f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n"
        f"        kubeconfig {kubeconfig} {context}\n"
        f"        pods insecure\n"
        f"        fallthrough in-addr.arpa ip6.arpa\n"
        f"    }}\n"
        f"    cache 5\n"
        f"}}\n"
    )


def start(lab, site, net, kubeconfig, context, binary, spawn):
    """Write the Corefile and start CoreDNS in the site's namespace; return the site's ``dns`` state entry."""
    # pylint: disable=too-many-arguments,too-many-positional-arguments
    directory = lab.path(site, "dns", "x").parent
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "Corefile"
    path.write_text(corefile(net["node_ip"], kubeconfig, context), encoding="utf-8")
    name = spawn("coredns", [binary, "-conf", str(path)], cwd=str(directory))
    return {"process": name, "server": net["node_ip"], "port": 53, "corefile": str(path), "domain": CLUSTER_DOMAIN}


def query_a(server, name, port=53, timeout=2.0):
    """Addresses of an A query for ``name`` (a plain UDP query; [] for NXDOMAIN or no answer). OSError when the
    server does not answer."""
    # pylint: disable=too-many-locals
    ident = random.randrange(1 << 16)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split(".")) + b"\0"
    packet = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (server, port))
        data = sock.recv(4096)
    answer_id, flags, _qd, answers = struct.unpack(">HHHH", data[:8])
    if answer_id != ident or flags & 0x000F:
        return []
    offset = 12 + len(question) + 4
    found = []
    for _answer in range(answers):
        offset = _skip_name(data, offset)
        rtype, _rclass, _ttl, length = struct.unpack(">HHIH", data[offset : offset + 10])
        offset += 10
        if rtype == 1 and length == 4:
            found.append(socket.inet_ntoa(data[offset : offset + 4]))
        offset += length
    return found


def _skip_name(data, offset):
    """Offset after the (possibly compressed) domain name at ``offset``."""
    while True:
        length = data[offset]
        if length == 0:
            return offset + 1
        if length >= 0xC0:  # a pointer ends the name
            return offset + 2
        offset += length + 1


def wait_ready(lab, site, entry, service_ip):
    """Wait until CoreDNS answers ``kubernetes.default.svc.<domain>`` with the apiserver's Service IP."""
    name = f"kubernetes.default.svc.{entry['domain']}"

    def answers():
        try:
            return service_ip in query_a(entry["server"], name, entry["port"])
        except OSError:
            return False

    lab.wait_process(
        entry["process"],
        answers,
        START_TIMEOUT,
        f"{site} CoreDNS at {entry['server']}:53 to resolve {name} to {service_ip}",
    )
    if service_ip not in query_a(entry["server"], name, entry["port"]):
        raise LabError(f"{site} CoreDNS does not resolve {name}")
