# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja tests hanzo.kms.site_name and hanzo.kms.key_prefix (documented in site_name.yml and key_prefix.yml).

The rules live in plugins/module_utils/names.py, shared with the modules that build object-store keys.
"""

from __future__ import annotations

from ansible_collections.hanzo.kms.plugins.module_utils.names import is_key_prefix, is_site_name


class TestModule:
    """hanzo.kms.site_name, hanzo.kms.key_prefix."""

    def tests(self):
        return {"site_name": is_site_name, "key_prefix": is_key_prefix}
