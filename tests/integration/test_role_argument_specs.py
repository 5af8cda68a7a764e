"""Every role's argument_specs rejects a wrong type before any task runs (no lab needed).

install.yml itself and what it lays out on both sites run on the real CloudNativePG operator:
tests/integration/test_cnpg_operator_real.py (through Molecule's default scenario, its idempotence included).
"""

from __future__ import annotations

import re

import pytest

from tests.ansible_run import run_playbook

BAD_TYPES = {
    "object_storage": ("object_storage_manage_bucket", "maybe-not"),
    "cnpg": ("cnpg_instances", "three"),
    "redis": ("redis_backup_enabled", "sometimes"),
    "kms": ("kms_replicas", "two"),
}


@pytest.mark.parametrize("role", sorted(BAD_TYPES))
def test_argument_specs_reject_wrong_types(role, tmp_path):
    """No lab needed: argument validation runs before any task of the role."""
    var, value = BAD_TYPES[role]
    play = tmp_path / "play.yml"
    play.write_text(
        f"- name: Wrong type\n  hosts: localhost\n  gather_facts: false\n"
        f"  roles:\n    - role: hanzo.kms.{role}\n      vars:\n        {var}: {value}\n",
        encoding="utf-8",
    )
    proc = run_playbook(play, "-c", "local", inventory="localhost,")
    assert proc.returncode != 0
    assert "Validating arguments against arg spec 'main'" in proc.stdout
    assert "Validation of arguments failed" in proc.stdout
    assert re.search(rf"argument '{var}' is of type str and we were unable to convert to (int|bool)", proc.stdout), (
        proc.stdout[-3000:]
    )
