# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja filter hanzo.kms.hmac_sha256 (documented in hmac_sha256.yml)."""

from __future__ import annotations

import hashlib
import hmac

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_bytes


def hmac_sha256(data, key):
    """Hex HMAC-SHA256 of ``data`` (text) keyed with ``key`` (text); a non-empty key is required."""
    if not key:
        raise AnsibleFilterError("hanzo.kms.hmac_sha256 needs a non-empty key")
    return hmac.new(to_bytes(key), to_bytes(data), hashlib.sha256).hexdigest()


class FilterModule:
    """hanzo.kms.hmac_sha256."""

    def filters(self):
        return {"hmac_sha256": hmac_sha256}
