"""Test-wide setup: make the collection importable as ansible_collections.hanzo.kms and load the lab fixtures."""
from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
COLLECTIONS = REPO_ROOT / ".venv" / "collections"
for path in (str(REPO_ROOT), str(COLLECTIONS)):
    if path not in sys.path:
        sys.path.insert(0, path)

pytest_plugins = ["tests.lab.fixtures"]
