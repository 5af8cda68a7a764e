# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The global load balancer's backend servers, one per site (roles/global_lb).

:func:`site_server` builds a server entry from a site's inventory variables (``site_*``); :func:`servers` checks the
entries of ``global_lb_sites`` (built so, or written in the inventory) before haproxy.cfg is rendered. TLS to a site is
always verified: against ``ca_file`` and the public host name, which HAProxy sends as SNI and Host header and which the
sites' Ingresses match, so an entry with TLS and no CA, or TLS without a public host name, is refused. Used by the
filters hanzo.kms.global_lb_site_server and hanzo.kms.global_lb_servers; no Ansible import.
"""

from __future__ import annotations

import re

from ansible_collections.hanzo.kms.plugins.module_utils.haproxy import HAProxyNameError, check_name

SERVER_KEYS = ("name", "address", "port", "tls", "ca_file", "backup", "initial_state")
INITIAL_STATES = ("ready", "maint")
# Keys of earlier versions, refused with what replaces them rather than ignored.
REMOVED_KEYS = {
    "sni": "the SNI (and the Host header) HAProxy sends to every site is global_lb_public_host",
    "verify": "TLS to a site is always verified: give ca_file",
}
# A DNS name (RFC 1123 labels separated by dots): what HAProxy sends as SNI and Host and what an Ingress rule matches
# (Kubernetes refuses an IP address as an Ingress host, so the first label may not be all digits).
DNS_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DNS_NAME_RE = re.compile(rf"(?=.{{1,253}}$)(?![0-9.]+$){DNS_LABEL}(\.{DNS_LABEL})*")
TRUE = ("true", "yes", "on", "1", "y", "t")
FALSE = ("false", "no", "off", "0", "n", "f", "")


class ServerError(ValueError):
    """A server entry (or the site variables it comes from) the load balancer cannot use; the message names them."""


def _bool(value, what):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ServerError(f"{what} must be true or false, got {value!r}")


def _port(value, what):
    try:
        port = int(str(value).strip())
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise ServerError(f"{what} must be a TCP port (1-65535), got {value!r}")
    return port


def site_server(site):
    """The server entry of one site from its variables (a mapping with ``site_name``, ``site_role`` (or the
    decided ``site_role_now``), ``site_ingress_host`` and optional ``site_ingress_address``, ``site_ingress_port``,
    ``site_ingress_tls`` (default true) and ``site_ingress_ca_file``). The passive sites' servers start in
    maintenance."""
    name = site.get("site_name") or ""
    where = f"site {name or '(no site_name)'}"
    if not name:
        raise ServerError(f"{where}: site_name is required")
    address = site.get("site_ingress_address") or site.get("site_ingress_host") or ""
    if not address:
        raise ServerError(
            f"{where}: site_ingress_host (or site_ingress_address) is required: where the load balancer "
            "reaches the site"
        )
    tls = _bool(site.get("site_ingress_tls", True), f"{where}: site_ingress_tls")
    ca_file = site.get("site_ingress_ca_file") or ""
    if tls and not ca_file:
        raise ServerError(
            f"{where}: site_ingress_tls is true but site_ingress_ca_file is not set. Set it to the path, on the load "
            f"balancer hosts, of the CA certificate(s) that verify {name}'s ingress certificate (HAProxy verifies the "
            "sites' certificates and has no default CA), or set site_ingress_tls: false for plain HTTP to the site. "
            "Nothing was changed."
        )
    return {
        "name": name,
        "address": address,
        "port": _port(site.get("site_ingress_port", 443 if tls else 80), f"{where}: site_ingress_port"),
        "tls": tls,
        "ca_file": ca_file if tls else "",
        # site_role_now (install.yml's decision from the Clusters) wins over a site_role a failover made stale
        "initial_state": "ready" if (site.get("site_role_now") or site.get("site_role")) == "active" else "maint",
    }


def servers(entries, public_host=""):
    """Check the ``global_lb_sites`` entries and return them complete (every key of SERVER_KEYS, typed)."""
    if not isinstance(entries, (list, tuple)):
        raise ServerError(f"global_lb_sites must be a list of server entries, got {type(entries).__name__}")
    if public_host and not DNS_NAME_RE.fullmatch(str(public_host)):
        raise ServerError(
            f"global_lb_public_host {public_host!r} is not a DNS name: it is the SNI and Host header "
            "HAProxy sends to the sites and the host their Ingresses match"
        )
    out = []
    for index, entry in enumerate(entries):
        where = f"global_lb_sites[{index}]"
        if not isinstance(entry, dict):
            raise ServerError(f"{where} must be a dict, got {type(entry).__name__}")
        where = f"{where} ({entry.get('name', 'no name')})"
        for key in entry:
            if key in REMOVED_KEYS:
                raise ServerError(f"{where}: the key {key!r} is no longer supported: {REMOVED_KEYS[key]}")
            if key not in SERVER_KEYS:
                raise ServerError(f"{where}: unknown key {key!r} (known: {', '.join(SERVER_KEYS)})")
        try:
            name = check_name(entry.get("name"), "server")
        except HAProxyNameError as exc:
            raise ServerError(f"{where}: {exc}") from None
        address = str(entry.get("address") or "")
        if not address or any(c.isspace() for c in address):
            raise ServerError(f"{where}: address must be a host name or IP address, got {entry.get('address')!r}")
        tls = _bool(entry.get("tls", False), f"{where}: tls")
        ca_file = str(entry.get("ca_file") or "")
        if tls and not ca_file:
            raise ServerError(
                f"{where}: tls is true but ca_file is empty: TLS to a site is verified with the CA that "
                "signed its ingress certificate (install.yml: site_ingress_ca_file). Nothing was changed."
            )
        if tls and not public_host:
            raise ServerError(
                f"{where}: tls is true but global_lb_public_host is empty: the site's certificate is "
                "verified against that name (install.yml: kms_public_host). Nothing was changed."
            )
        state = entry.get("initial_state", "ready")
        if state not in INITIAL_STATES:
            raise ServerError(f"{where}: initial_state must be one of {', '.join(INITIAL_STATES)}, got {state!r}")
        out.append(
            {
                "name": name,
                "address": address,
                "port": _port(entry.get("port"), f"{where}: port"),
                "tls": tls,
                "ca_file": ca_file if tls else "",
                "backup": _bool(entry.get("backup", False), f"{where}: backup"),
                "initial_state": state,
            }
        )
    names = [server["name"] for server in out]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ServerError(f"global_lb_sites: server names must be unique, repeated: {', '.join(duplicates)}")
    return out


# --------------------------------------------------------------------------------------------------------------
# The site switch across every LB host (roles/site_switch, step switch_lb)
# --------------------------------------------------------------------------------------------------------------
SWITCH_MODES = ("switchover", "failover")


def runtime_api_instance(host, ca_file, client_cert="", client_key=""):
    """The hanzo.kms.haproxy_backend instance of one LB host for the site switch run from the control node: its
    Runtime API over TLS (``global_lb_admin_tls_address`` of ``host``, a mapping of its variables with
    ``inventory_hostname``) with the control node's client certificate."""
    name = host.get("inventory_hostname") or "(unnamed LB host)"
    address = host.get("global_lb_admin_tls_address") or ""
    if not address:
        raise ServerError(
            f"LB host {name}: global_lb_admin_tls_address is not set. The site switch reaches every LB host's Runtime "
            "API from the control node in one call, over TLS with a client certificate: set it (and "
            "global_lb_admin_tls_bind, global_lb_admin_tls_certificate, global_lb_admin_tls_client_ca_file) for every "
            "host of kms_lb and run install.yml. Nothing was changed."
        )
    if not ca_file or not client_cert or not client_key:
        raise ServerError(
            "kms_lb_runtime_api_ca_file, kms_lb_runtime_api_client_cert and kms_lb_runtime_api_client_key must all be "
            "set (files on the control node): the CA that verifies the LB hosts' Runtime API certificates and the "
            "control node's client certificate and key. Nothing was changed."
        )
    return {"name": name, "address": address, "ca_file": ca_file, "client_cert": client_cert, "client_key": client_key}


def switch_quorum(instances, mode, failover_quorum=1):
    """How many LB instances must be switched (hanzo.kms.haproxy_backend's ``min_instances``). A switchover needs
    every one: both data centers are up, so an unreachable load balancer is a fault to fix first. A failover needs
    ``failover_quorum`` (default 1): the lost data center's load balancer may be unreachable, and the check through
    the public URL (the VIP) then proves that the instance clients reach is one that was switched."""
    count = len(instances)
    if mode not in SWITCH_MODES:
        raise ServerError(f"mode must be one of {', '.join(SWITCH_MODES)}, got {mode!r}")
    if mode == "switchover" or count == 0:
        return count
    try:
        quorum = int(failover_quorum)
    except (TypeError, ValueError):
        quorum = 0
    if not 1 <= quorum <= count:
        raise ServerError(
            f"site_switch_lb_quorum must be between 1 and the number of LB hosts ({count}), got {failover_quorum!r}"
        )
    return quorum
