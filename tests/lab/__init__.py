"""The hanzo.kms lab: real servers on 127.0.0.1 for tests, demos and benchmarks.

``python -m tests.lab up|down|status [--dir DIR]``; pytest fixtures in ``tests.lab.fixtures``.
"""
