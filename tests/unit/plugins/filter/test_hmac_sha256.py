"""hanzo.kms.hmac_sha256: the KMS Deployment's checksum/secret annotation (issue 14 item 8)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.hanzo.kms.plugins.filter.hmac_sha256 import FilterModule, hmac_sha256


def test_hmac_matches_the_standard_library_and_is_no_plain_hash():
    digest = hmac_sha256('{"ENCRYPTION_KEY": "k"}', "secret")
    assert digest == hmac.new(b"secret", b'{"ENCRYPTION_KEY": "k"}', hashlib.sha256).hexdigest()
    assert digest != hashlib.sha256(b'{"ENCRYPTION_KEY": "k"}').hexdigest()
    assert hmac_sha256("x", "other key") != hmac_sha256("x", "secret")
    assert FilterModule().filters()["hmac_sha256"] is hmac_sha256


@pytest.mark.parametrize("key", ["", None])
def test_empty_key_is_refused(key):
    with pytest.raises(AnsibleFilterError, match="non-empty key"):
        hmac_sha256("x", key)
