"""The hanzo.kms lab: real servers on 127.0.0.1 for tests, demos and benchmarks.

``python -m tests.lab up|down|status [--dir DIR]``; pytest fixtures in ``tests.lab.fixtures``.
"""

import sys
from pathlib import Path

# The lab uses the collection's own clients (e.g. the HAProxy Runtime API) as ansible_collections.hanzo.kms, reached
# through the link `make setup` puts in .venv/collections.
_COLLECTIONS = str(Path(__file__).resolve().parents[2] / ".venv" / "collections")
if _COLLECTIONS not in sys.path:
    sys.path.append(_COLLECTIONS)
