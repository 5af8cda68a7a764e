"""``python -m tests.drill``: see tests/drill/run.py."""

import sys

from tests.drill.run import main

sys.exit(main())
