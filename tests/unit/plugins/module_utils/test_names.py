"""Site names and key prefixes (plugins/module_utils/names.py), the one rule behind the roles' checks (the
hanzo.kms.site_name / hanzo.kms.key_prefix tests) and the modules that build object-store keys (issue 14 item 8)."""

from __future__ import annotations

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import names
from ansible_collections.hanzo.kms.plugins.module_utils.redis_backup import run_backup
from ansible_collections.hanzo.kms.plugins.test import names as name_tests


@pytest.mark.parametrize("value", ["dc1", "dc2", "a", "eu-west-1", "x" * 63, "1dc"])
def test_valid_site_names(value):
    assert names.is_site_name(value) and names.check_site(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "dc1;rm -rf /",
        "dc1/../x",
        "DC1",
        "dc_1",
        "-dc1",
        "dc1-",
        "x" * 64,
        "dc 1",
        "dc1\n",
        "dc1'",
        "$(id)",
        "dc1.example",
        None,
        1,
        ["dc1"],
    ],
)
def test_invalid_site_names(value):
    assert not names.is_site_name(value)
    with pytest.raises(names.InvalidName) as err:
        names.check_site(value, "redis_site")
    assert "invalid redis_site" in str(err.value) and "DNS label" in str(err.value)


@pytest.mark.parametrize("value", ["", "redis", "cnpg", "backups/redis", "a/b.c/d_e-f", "redis/", "r" * 256])
def test_valid_prefixes(value):
    assert names.is_key_prefix(value) and names.check_prefix(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "/redis",
        "../x",
        "redis/../x",
        "redis/./x",
        "redis//x",
        "re dis",
        "redis;rm -rf /",
        "redis$(id)",
        "redis'",
        "redis\n",
        ".hidden",
        "r" * 257,
        None,
        3,
    ],
)
def test_invalid_prefixes(value):
    assert not names.is_key_prefix(value)
    with pytest.raises(names.InvalidName, match="invalid prefix"):
        names.check_prefix(value)


def test_empty_prefix_can_be_refused():
    with pytest.raises(names.InvalidName):
        names.check_prefix("", allow_empty=False)


def test_jinja_tests_use_the_same_rules():
    tests = name_tests.TestModule().tests()
    assert tests["site_name"] is names.is_site_name and tests["key_prefix"] is names.is_key_prefix


@pytest.mark.parametrize(
    "params, message",
    [
        ({"site": "dc1;rm -rf /", "prefix": "redis"}, "invalid site name 'dc1;rm -rf /'"),
        ({"site": "dc1/../x", "prefix": "redis"}, "invalid site name 'dc1/../x'"),
        ({"site": "dc1", "prefix": "redis/../../etc"}, "invalid prefix"),
    ],
)
def test_backup_refuses_bad_names_before_any_io(params, message):
    def no_s3():
        raise AssertionError("S3 must not be contacted")

    with pytest.raises(names.InvalidName, match=message.replace("(", r"\(")):
        run_backup(dict(params, bucket="b", host="127.0.0.1", port=1), s3_client_factory=no_s3)
