"""What hanzo.kms.s3_backup_copy copies (module_utils/s3_backup_copy.py): the source's newest complete backup, once."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import backup_layout
from ansible_collections.hanzo.kms.plugins.module_utils import s3_backup_copy as copy


def backup(name):
    return {"name": name, "rdb_key": f"redis/dc1/{name}/dump.rdb", "manifest_key": f"redis/dc1/{name}/manifest.json"}


def test_the_newest_backup_is_copied_once():
    newest, older = backup("20261205T021500Z"), backup("20261205T011500Z")
    assert copy.plan([newest, older], []) == (newest, True)
    assert copy.plan([newest, older], [older]) == (newest, True), "an older copy does not stand for the newest"
    assert copy.plan([newest, older], [newest]) == (newest, False)
    assert copy.plan([], [older]) == (None, False), "nothing to copy: the destination keeps what it has"


def test_a_manifest_that_does_not_describe_the_rdb_is_not_copied():
    with pytest.raises(copy.CopyError, match=r"s3://b/m: not valid JSON"):
        copy._check_manifest(b"{", 5, "s3://b/m")  # pylint: disable=protected-access
    when = datetime.datetime(2026, 12, 5, 2, 15, tzinfo=datetime.timezone.utc)
    data = backup_layout.encode_manifest(backup_layout.build_manifest(when, 5, "0" * 64, 10, created_at=when))
    assert copy._check_manifest(data, 5, "s3://b/m")["size"] == 5  # pylint: disable=protected-access
    with pytest.raises(copy.CopyError, match=r"s3://b/m gives size 5, the RDB has 6 bytes; not copied"):
        copy._check_manifest(data, 6, "s3://b/m")  # pylint: disable=protected-access
