"""Benchmark: the cost of one module run on the control node, for the modules a failover runs between its steps.

Usage (no lab needed):

    .venv/bin/python tests/benchmarks/bench_module_runs.py [--runs 10]

A failover records every step in its report (hanzo.kms.operation_report) and decides with hanzo.kms.switch_preflight;
each was a module run on the control node (now an action plugin that does the same work in the controller's
process, plugins/plugin_utils/in_process.py), and the runs between dc1's loss and the LB switch are the RTO. Printed:

1. seconds per run of ``ansible.builtin.ping`` (the baseline: an AnsiballZ module that imports nothing) and of
   ``hanzo.kms.operation_report`` in one playbook, and their ratio;
2. the import time of the module_utils behind both modules (``operations``) in a fresh interpreter, against the same
   import plus the kubernetes client and boto3 (which it pulled in until 2026-12-03), best of three each.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO))

# pylint: disable=wrong-import-position
from tests.ansible_run import COLLECTIONS_PATH as COLLECTIONS  # noqa: E402
from tests.ansible_run import ansible_env, run_ansible

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  connection: local
  vars:
    ansible_python_interpreter: "{{{{ ansible_playbook_python }}}}"
  tasks:
    - name: baseline ping
      ansible.builtin.ping:
      loop: "{{{{ range({runs}) | list }}}}"
    - name: operation_report
      hanzo.kms.operation_report:
        dir: "{dir}"
        name: bench
        operation: failover
        step: "step{{{{ item }}}}"
        result: ok
        next_step: "step{{{{ item + 1 }}}}"
      loop: "{{{{ range({runs}) | list }}}}"
"""


def module_runs(runs):
    with tempfile.TemporaryDirectory() as tmp:
        playbook = Path(tmp) / "bench.yml"
        playbook.write_text(PLAYBOOK.format(runs=runs, dir=tmp))
        out = run_ansible(
            "ansible-playbook",
            playbook,
            cwd=tmp,
            must_succeed=True,
            env=ansible_env(ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks"),
        ).stdout
    seconds = {
        name: float(value) for name, value in re.findall(r"^(baseline ping|operation_report) -+ ([0-9.]+)s$", out, re.M)
    }
    return {name: value / runs for name, value in seconds.items()}


def import_seconds(statement):
    code = (
        f"import sys, time; sys.path.insert(0, {str(COLLECTIONS)!r}); t = time.perf_counter(); {statement}; "
        "print(time.perf_counter() - t)"
    )
    return min(
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        for dummy in range(3)
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    per_run = module_runs(args.runs)
    ops = "import ansible_collections.hanzo.kms.plugins.module_utils.operations"
    now = import_seconds(ops)
    before = import_seconds(f"{ops}; import kubernetes.client, boto3")
    print(
        f"load average at start: {load:.2f}, {args.runs} runs each, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print(f"ansible.builtin.ping (baseline):   {per_run['baseline ping']:.3f} s per run")
    print(
        f"hanzo.kms.operation_report:        {per_run['operation_report']:.3f} s per run "
        f"({per_run['operation_report'] / per_run['baseline ping']:.2f} x the baseline)"
    )
    print(
        f"import of module_utils.operations: {now:.3f} s; with kubernetes.client + boto3 as before: {before:.3f} s "
        f"({before / now:.1f} x)"
    )


if __name__ == "__main__":
    main()
