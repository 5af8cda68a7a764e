"""pytest fixtures on top of the lab: one lab per test session, torn down at the end.

Set HANZO_KMS_TEST_LAB_DIR to run the tests against a lab that is already up (it is then left running).
"""

from __future__ import annotations

import os
import tempfile
import time

import pytest

from tests.lab import stack
from tests.lab.core import Lab


@pytest.fixture(scope="session")
def lab_handle():
    """The session's Lab object (state in ``.state``)."""
    reuse = os.environ.get("HANZO_KMS_TEST_LAB_DIR")
    # Not pytest's tmp_path: its base dir is mode 0700 and PostgreSQL runs as the 'postgres' user.
    lab = Lab(reuse or tempfile.mkdtemp(prefix="hanzo-kms-lab-"))
    stack.up(lab, log=lambda _msg: None)
    yield lab
    if not reuse:
        stack.down(lab, log=lambda _msg: None)


@pytest.fixture(scope="session")
def lab(lab_handle):  # pylint: disable=redefined-outer-name
    """The lab's state: endpoints, ports, credentials (see tests/lab/core.py and README)."""
    return lab_handle.state


@pytest.fixture(scope="session")
def lab_dir(lab_handle):  # pylint: disable=redefined-outer-name
    return lab_handle.dir


def up_with(lab, **env):
    """``stack.up(lab)`` with the environment variables ``env`` (the lab's modes: HANZO_KMS_LAB_CNPG, ...) set for its
    duration only; the seconds it took. For the modules and drills that bring up a lab of their own."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        started = time.monotonic()
        stack.up(lab, log=lambda _msg: None)
        return round(time.monotonic() - started, 1)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
