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


# `make integration` runs two pytest-xdist workers: the "own-labs" group on one (the real-operator module, which brings
# up a lab of its own, then the killed `lab up` test, whose lab has Kubernetes too and starts after that module's lab
# is down), every other test on the other: the session lab's, and the private labs without Kubernetes of
# test_lab_lifecycle.py and test_lb_hosts.py (a few processes each). A third lab with Kubernetes beside two makes a
# 2-core machine miss the tests' timeouts. (xdist's own --dist loadgroup does not group under pytest 9: it renames
# item._nodeid, which pytest 9's Item.nodeid no longer reads.)
OWN_LAB_TESTS = (
    "tests/integration/test_cnpg_operator_real.py::",
    "tests/integration/test_real_nodes.py::test_a_killed_up_is_recovered_and_down_leaves_nothing",
)


def lab_group(nodeid):
    return "own-labs" if nodeid.startswith(OWN_LAB_TESTS) else "session-lab"


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling  # pylint: disable=import-outside-toplevel

    class LabGroupScheduling(LoadScopeScheduling):
        """One work unit per lab group, its tests in collection order."""

        def _split_scope(self, nodeid):
            return lab_group(nodeid)

    return LabGroupScheduling(config, log)
