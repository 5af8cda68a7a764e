"""Test-wide setup: make the collection importable as ansible_collections.hanzo.kms and load the lab fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = str(Path(__file__).resolve().parents[1])
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
# Importing tests.lab puts the collection (.venv/collections) on sys.path.
import tests.lab  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import
from tests import ansible_run  # noqa: E402  pylint: disable=wrong-import-position

# The CNPG stand-in's per-step pause exists to make transitions observable by hand; tests poll, so keep it short.
os.environ.setdefault("HANZO_KMS_CNPG_STANDIN_DELAY", "0.05")

pytest_plugins = ["tests.lab.fixtures"]


@pytest.fixture(name="run_ansible")
def fixture_run_ansible():
    """tests.ansible_run.run_ansible: ``run_ansible("ansible-playbook", ..., json_output=True)``; that module also has
    run_playbook, run_module and run_play, for helpers outside a test function (drills and benchmarks use it too)."""
    return ansible_run.run_ansible
