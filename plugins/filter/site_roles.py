# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja filter hanzo.kms.site_roles (documented in site_roles.yml); the decision is in module_utils/site_roles.py."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.hanzo.kms.plugins.module_utils import site_roles as decision


def site_roles(sites):
    """The sites' roles now, from their Clusters (the inventory's where none exists); fails on contradictions."""
    if not isinstance(sites, list) or not all(isinstance(s, dict) for s in sites):
        raise AnsibleFilterError(f"hanzo.kms.site_roles needs a list of site reads (dicts), got {sites!r}")
    try:
        return decision.decide(sites)
    except decision.SiteRoleError as exc:
        raise AnsibleFilterError(f"cannot decide the active site: {exc}") from None


class FilterModule:
    """hanzo.kms.site_roles."""

    def filters(self):
        return {"site_roles": site_roles}
