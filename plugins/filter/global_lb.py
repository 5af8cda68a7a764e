# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja filters hanzo.kms.global_lb_site_server, hanzo.kms.global_lb_servers, hanzo.kms.global_lb_runtime_api and
hanzo.kms.global_lb_switch_quorum (documented in their .yml files).

The rules live in plugins/module_utils/global_lb.py.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.hanzo.kms.plugins.module_utils.global_lb import (
    ServerError,
    runtime_api_instance,
    servers,
    site_server,
    switch_quorum,
)


def global_lb_site_server(site):
    """The global load balancer's server entry for a site, from the site's variables."""
    try:
        return site_server(site)
    except ServerError as exc:
        raise AnsibleFilterError(str(exc)) from None


def global_lb_servers(entries, public_host=""):
    """The checked, complete server entries of global_lb_sites."""
    try:
        return servers(entries, public_host)
    except ServerError as exc:
        raise AnsibleFilterError(str(exc)) from None


def global_lb_runtime_api(host, ca_file="", client_cert="", client_key=""):
    """The haproxy_backend instance of an LB host for the site switch from the control node."""
    try:
        return runtime_api_instance(host, ca_file, client_cert, client_key)
    except ServerError as exc:
        raise AnsibleFilterError(str(exc)) from None


def global_lb_switch_quorum(instances, mode, failover_quorum=1):
    """How many LB instances a switch in ``mode`` must reach and switch."""
    try:
        return switch_quorum(instances, mode, failover_quorum)
    except ServerError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    """hanzo.kms.global_lb_site_server, global_lb_servers, global_lb_runtime_api, global_lb_switch_quorum."""

    def filters(self):
        return {
            "global_lb_site_server": global_lb_site_server,
            "global_lb_servers": global_lb_servers,
            "global_lb_runtime_api": global_lb_runtime_api,
            "global_lb_switch_quorum": global_lb_switch_quorum,
        }
