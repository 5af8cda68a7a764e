# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja filter hanzo.kms.object_stores (documented in object_stores.yml); the decision is in
module_utils/object_stores.py."""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.hanzo.kms.plugins.module_utils import object_stores as layout_rules


def object_stores(
    sites, layout="shared", secret_name="kms-object-store", ca_secret_name="kms-object-store-ca", keys=False
):
    """Each site's object store and the names of its Secrets; fails on a layout the inventory contradicts."""
    if not isinstance(sites, list) or not all(isinstance(s, Mapping) for s in sites):
        raise AnsibleFilterError(f"hanzo.kms.object_stores needs a list of the sites' variables, got {sites!r}")
    try:
        return layout_rules.object_stores(sites, layout, secret_name, ca_secret_name, bool(keys))
    except layout_rules.LayoutError as exc:
        raise AnsibleFilterError(f"object storage: {exc}") from None


class FilterModule:
    """hanzo.kms.object_stores."""

    def filters(self):
        return {"object_stores": object_stores}
