"""files.replace_file: the old content or the new one, never a part, and no temporary file left behind."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils.files import replace_file


@pytest.mark.parametrize("sync", [False, True])
def test_the_file_is_replaced_with_the_given_mode(tmp_path, sync):
    path = tmp_path / "report.md"
    path.write_text("old\n")
    os.chmod(path, 0o644)
    replace_file(str(path), "new\n", 0o600, prefix=".report-", sync=sync)
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]


def test_a_failed_write_keeps_the_old_content_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "state"
    path.write_text("old\n")
    with pytest.raises(TypeError):
        replace_file(str(path), b"bytes are refused", 0o644, prefix=".state-")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def test_a_relative_path_is_written_in_its_own_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    replace_file("new.json", "{}\n", 0o640)
    assert (tmp_path / "new.json").read_text() == "{}\n"
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o640
