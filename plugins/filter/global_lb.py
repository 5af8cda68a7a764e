# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja filters hanzo.kms.global_lb_site_server and hanzo.kms.global_lb_servers (documented in their .yml files).

The rules live in plugins/module_utils/global_lb.py.
"""
from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.hanzo.kms.plugins.module_utils.global_lb import ServerError, servers, site_server


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


class FilterModule:
    """hanzo.kms.global_lb_site_server, hanzo.kms.global_lb_servers."""

    def filters(self):
        return {"global_lb_site_server": global_lb_site_server, "global_lb_servers": global_lb_servers}
