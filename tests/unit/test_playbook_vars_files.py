"""The playbooks' shared vars files (playbooks/vars/) use each other's variables: a play that loads one must load the
files it reads before it. Otherwise the play fails with an undefined variable only when a task first reads it, which
for pitr.yml's replace mode was after the Cluster had been deleted."""

import re
from pathlib import Path

import pytest
import yaml

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
VARS = PLAYBOOKS / "vars"
NAME = re.compile(r"\b[a-z_][a-z0-9_]*\b")


def defined():
    """{vars file relative to playbooks/: the variables it defines}."""
    return {f"vars/{path.name}": set(yaml.safe_load(path.read_text()) or {}) for path in sorted(VARS.glob("*.yml"))}


def reads(path, others):
    """The variables of ``others`` that vars file ``path`` reads in its templates (and does not define itself)."""
    text = (PLAYBOOKS / path).read_text()
    names = {name for expression in re.findall(r"\{\{(.*?)\}\}", text, re.S) for name in NAME.findall(expression)}
    return names & others - defined()[path]


def plays():
    for playbook in sorted(PLAYBOOKS.glob("*.yml")):
        for index, play in enumerate(yaml.safe_load(playbook.read_text()) or []):
            if isinstance(play, dict) and play.get("vars_files"):
                yield pytest.param(play["vars_files"], id=f"{playbook.name}[{index}]")


def test_the_vars_files_read_each_other():
    """The rule below is not empty: install_sites.yml reads object_stores.yml's variables."""
    assert "kms_object_storage_layout" in reads("vars/install_sites.yml", defined()["vars/object_stores.yml"])


@pytest.mark.parametrize("vars_files", list(plays()))
def test_a_play_loads_the_vars_files_a_vars_file_reads_before_it(vars_files):
    files = defined()
    for position, path in enumerate(vars_files):
        if path not in files:
            continue
        for other, names in files.items():
            needed = reads(path, names) if other != path else set()
            if needed:
                assert other in vars_files[:position], f"{path} reads {sorted(needed)} of {other}, not loaded before it"
