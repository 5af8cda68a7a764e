"""Running ``ansible`` and ``ansible-playbook`` from tests, drills and benchmarks: one environment, one output format.

Every run uses this checkout's ansible.cfg and collection (``.venv/collections``) and the Ansible of the Python that
runs the tests. Results a test reads as data come from the JSON stdout callback (``ansible.posix.json``: one document
with each play's task results per host and the recap in ``stats``); runs a test reads as an operator would keep the
default callback, whose PLAY RECAP ``recap()`` reads. The pytest fixture ``run_ansible`` (tests/conftest.py) is
``run_ansible`` below.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv running the tests has the pinned Ansible
COLLECTIONS_PATH = REPO_ROOT / ".venv" / "collections"
LAB_INVENTORY = "inventories/lab"
JSON_CALLBACK = "ansible.posix.json"
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def local_args(python=sys.executable):
    """Inventory, connection and interpreter of a run on this machine: modules run with the tests' Python."""
    return ["-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={python}"]


def ansible_env(lab_dir=None, json_output=False, **overrides):
    """The environment of a run: this checkout's config and collection, no colour, no localhost-only warnings,
    the venv's bin first on PATH (for the commands roles and inventories run); ``lab_dir`` tells the lab
    inventory which lab to read; ``overrides`` are further variables (ANSIBLE_CALLBACKS_ENABLED, ...)."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO_ROOT / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS_PATH),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    if lab_dir is not None:
        env["HANZO_KMS_LAB_DIR"] = str(lab_dir)
    if json_output:
        # ad hoc `ansible` uses the stdout callback only when told to load callback plugins
        env.update(ANSIBLE_STDOUT_CALLBACK=JSON_CALLBACK, ANSIBLE_LOAD_CALLBACK_PLUGINS="1")
    env.update(overrides)
    return env


def ansible_argv(command, *args):
    """``command`` (ansible, ansible-playbook) of the tests' venv with ``args``."""
    return [str(BIN / command), *[str(arg) for arg in args]]


def recap(output):
    """{host: {ok, changed, unreachable, failed}} from the default callback's PLAY RECAP."""
    return {
        host: {"ok": int(ok), "changed": int(changed), "unreachable": int(unr), "failed": int(failed)}
        for host, ok, changed, unr, failed in RECAP.findall(output)
    }


@dataclass
class AnsibleRun:
    """A finished run: the process, its wall seconds and, with JSON output, the callback's document."""

    proc: subprocess.CompletedProcess
    seconds: float
    report: dict | None = None

    @property
    def returncode(self):
        return self.proc.returncode

    @property
    def stdout(self):
        return self.proc.stdout

    @property
    def stderr(self):
        return self.proc.stderr

    @property
    def output(self):
        """stdout and stderr together (warnings go to stderr)."""
        return self.proc.stdout + self.proc.stderr

    def tail(self, stdout_chars=6000, stderr_chars=2000):
        """The end of both streams, for a failure message."""
        return f"rc {self.proc.returncode}:\n{self.proc.stdout[-stdout_chars:]}\n{self.proc.stderr[-stderr_chars:]}"

    def results(self, host="localhost"):
        """[(task name, result)] of every task of every play for ``host``, in order ({} where it did not run)."""
        return [
            (task["task"]["name"], task["hosts"].get(host, {}))
            for play in self.report["plays"]
            for task in play["tasks"]
        ]

    def result(self, host="localhost"):
        """The first task's result for ``host``: the module's result of an ad hoc run."""
        try:
            return self.report["plays"][0]["tasks"][0]["hosts"][host]
        except (KeyError, IndexError) as exc:
            raise AssertionError(f"no task result for {host} ({exc!r}) in the output, {self.tail()}") from None

    def stats(self, host="localhost"):
        """The JSON recap of ``host``: ok, changed, failures, skipped, ..."""
        return self.report["stats"].get(host, {})


def run_ansible(
    command, *args, json_output=False, lab_dir=None, env=None, cwd=REPO_ROOT, timeout=900, must_succeed=False, **popen
):
    """Run ``command`` (``ansible``/``ansible-playbook``) with ``args`` from the repository root; an AnsibleRun.

    ``json_output``: parse stdout as the JSON callback's document (an AssertionError shows both streams when it is
    not one). ``must_succeed``: an AssertionError with the output's tail unless the exit code is 0. ``env``: the
    whole environment (default ``ansible_env(lab_dir, json_output)``); ``popen``: further subprocess.run options.
    """
    if env is None:
        env = ansible_env(lab_dir, json_output)
    started = time.monotonic()
    proc = subprocess.run(
        ansible_argv(command, *args),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **popen,
    )
    run = AnsibleRun(proc, time.monotonic() - started)
    if must_succeed:
        assert proc.returncode == 0, f"{command} {' '.join(map(str, args))} failed, {run.tail()}"
    if json_output:
        try:
            run.report = json.loads(proc.stdout)
        except ValueError as exc:
            raise AssertionError(f"{command} output is not the JSON callback's ({exc}), {run.tail()}") from None
    return run


def run_playbook(playbook, *args, inventory=LAB_INVENTORY, **options):
    """``ansible-playbook playbook args`` on ``inventory`` (a path or a list of them; the lab's by default)."""
    inventories = [inventory] if isinstance(inventory, (str, Path)) else inventory
    return run_ansible(
        "ansible-playbook", *[arg for path in inventories for arg in ("-i", path)], playbook, *args, **options
    )


def run_module(module, args, *more, check_mode=False, diff=False, **options):
    """``module`` ad hoc on localhost with the tests' Python, JSON output; ``run.result()`` is its result.
    ``more``: further command-line arguments (``-e`` ...); ``options`` as for run_ansible."""
    flags = (["--check"] if check_mode else []) + (["--diff"] if diff else [])
    return run_ansible(
        "ansible",
        "localhost",
        *local_args(),
        "-m",
        module,
        "-a",
        json.dumps(args),
        *more,
        *flags,
        json_output=True,
        **options,
    )


def write_play(path, tasks=(), name="Play", **play):
    """A playbook of one play on localhost without facts running ``tasks`` (``play``: roles, vars, ...)."""
    path = Path(path)
    path.write_text(
        json.dumps(
            [dict({"name": name, "hosts": "localhost", "gather_facts": False, "tasks": list(tasks)}, **play)], indent=1
        ),
        encoding="utf-8",
    )
    return path


def run_play(path, tasks=(), *more, check_mode=False, diff=False, name="Play", play=None, **options):
    """Write ``tasks`` as a one-play playbook at ``path`` (write_play) and run it on localhost with JSON output."""
    flags = (["--check"] if check_mode else []) + (["--diff"] if diff else [])
    write_play(path, tasks, name, **(play or {}))
    return run_ansible("ansible-playbook", *local_args(), path, *more, *flags, json_output=True, **options)
