"""Test-wide setup: make the collection importable as ansible_collections.hanzo.kms and load the lab fixtures."""
from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = str(Path(__file__).resolve().parents[1])
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
import tests.lab  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import  (puts the collection on sys.path)

pytest_plugins = ["tests.lab.fixtures"]
