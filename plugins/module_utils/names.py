# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one definition of a valid site name and object-store key prefix.

Site names and prefixes become S3 key and path components (``<prefix>/<site>/<timestamp>/dump.rdb``,
``s3://<bucket>/<path>/<site>/``), Kubernetes label values and words of the Redis backup CronJob's shell script, so
they are restricted to characters that are inert in all of these. Used by the ``hanzo.kms.site_name`` and
``hanzo.kms.key_prefix`` tests (the roles' early checks) and by the modules that build keys. No Ansible import.
"""

from __future__ import annotations

import re

# A DNS label (RFC 1123, as Kubernetes names): lower-case letters, digits and '-', 1 to 63 characters, starting and
# ending with a letter or digit.
SITE_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# One or more '/'-separated segments of letters, digits, '.', '_', '-', each starting with a letter or digit (so no
# '.' or '..' segment, no empty segment), at most 256 characters; an optional trailing '/'.
SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]*"
PREFIX_RE = re.compile(rf"{SEGMENT}(/{SEGMENT})*/?")
PREFIX_MAX = 256
SITE_RULE = "a DNS label: 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit"
PREFIX_RULE = (
    "'/'-separated segments of letters, digits, '.', '_' and '-', each starting with a letter or digit "
    f"(no '..', no spaces or shell characters), at most {PREFIX_MAX} characters"
)


class InvalidName(ValueError):
    """An invalid site name or prefix; the message says which value and what is allowed."""


def is_site_name(value):
    return isinstance(value, str) and SITE_RE.fullmatch(value) is not None


def is_key_prefix(value, allow_empty=True):
    if not isinstance(value, str):
        return False
    if value == "":
        return allow_empty
    return len(value) <= PREFIX_MAX and PREFIX_RE.fullmatch(value) is not None


def check_site(value, what="site name"):
    """Return ``value`` if it is a valid site name, else raise InvalidName."""
    if not is_site_name(value):
        raise InvalidName(f"invalid {what} {value!r}: it must be {SITE_RULE}")
    return value


def check_prefix(value, what="prefix", allow_empty=True):
    """Return ``value`` if it is a valid key prefix (empty allowed unless ``allow_empty`` is false), else raise."""
    if not is_key_prefix(value, allow_empty):
        raise InvalidName(f"invalid {what} {value!r}: it must be {PREFIX_RULE}")
    return value
