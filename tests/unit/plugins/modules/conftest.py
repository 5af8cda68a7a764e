"""Fixtures for the modules' unit tests: run a module's main() on given arguments without a process, capture what it
gives AnsibleModule, and check that its secret options are no_log.

``run_module(module, args)`` feeds ``args`` to the module through ansible-core's own helper
(ansible.module_utils.testing.patch_module_args) and returns ``(failed, result)`` from the module's exit_json or
fail_json, which raise instead of printing and exiting; ``run_module.instance`` is the AnsibleModule of the last run
(its ``params`` and ``no_log_values``); ``run_module.refused(module, args, message)`` asserts a failure naming the
problem. ``args_with(**changes)`` is the test file's ``ARGS`` changed; ``collaborators(module, name=mock, ...)`` puts
stand-ins for what the module calls in its namespace and can assert that none was called.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args


class ModuleReturned(SystemExit):
    """Raised by the patched exit_json / fail_json, with what the module returned. A SystemExit, like the real ones'
    sys.exit(), so that a module's ``except Exception`` around its exit_json does not catch it."""

    def __init__(self, failed, result, instance):
        super().__init__(result.get("msg", ""))
        self.failed = failed
        self.result = result
        self.instance = instance


class ModuleRunner:
    """Runs a module's main() on arguments; see the file's docstring."""

    def __init__(self):
        self.instance = None

    def __call__(self, module, args, check_mode=False, diff=False):
        name = module.__name__.rsplit(".", maxsplit=1)[-1]
        internal = {
            "_ansible_module_name": f"hanzo.kms.{name}",
            "_ansible_check_mode": check_mode,
            "_ansible_diff": diff,
        }
        self.instance = None
        with patch_module_args(dict(args, **internal)):
            try:
                module.main()
            except ModuleReturned as returned:
                self.instance = returned.instance
                return returned.failed, returned.result
        pytest.fail(f"{name}.main() returned without calling exit_json or fail_json")
        return None  # not reached: pytest.fail raises

    def refused(self, module, args, message):
        """Run ``module`` on ``args``; it must fail with ``message`` in its msg. Returns the result."""
        failed, result = self(module, args)
        assert failed and message in result["msg"], result
        return result


@pytest.fixture
def run_module(monkeypatch):
    def exit_json(self, **kwargs):
        raise ModuleReturned(False, kwargs, self)

    def fail_json(self, msg, **kwargs):
        raise ModuleReturned(True, dict(kwargs, msg=msg, failed=True), self)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    return ModuleRunner()


@pytest.fixture
def fake_s3_client(monkeypatch):
    """``fake_s3_client(module)``: the module's S3 client factory replaced by a recording mock whose client records
    every call made on it (no request is sent), with boto3 reported present. Returns the factory mock."""

    def install(module):
        mock = MagicMock(return_value=MagicMock(name="s3-client"))
        monkeypatch.setattr(module, "s3_client", mock)
        monkeypatch.setattr(module, "HAS_BOTO3", True)
        return mock

    return install


@pytest.fixture
def args_with(request):
    """``args_with(**changes)``: the test file's ``ARGS`` (valid arguments of its module) with ``changes``; an option
    changed to None is left out."""

    def change(**changes):
        args = dict(request.module.ARGS, **changes)
        return {key: value for key, value in args.items() if value is not None}

    return change


class Collaborators(SimpleNamespace):
    """The stand-ins a test put in place of what a module calls, by the names the module calls them."""

    def assert_untouched(self, *names):
        """None of ``names`` (default: all) was called: the module refused before doing anything."""
        for name in names or vars(self):
            getattr(self, name).assert_not_called()


@pytest.fixture
def collaborators(monkeypatch):
    """``collaborators(module, name=mock, ...)``: each ``name`` in the module's namespace replaced by its mock for
    the test; returns them as a Collaborators."""

    def replace(module, **mocks):
        for name, mock in mocks.items():
            monkeypatch.setattr(module, name, mock)
        return Collaborators(**mocks)

    return replace


class _Constructed(Exception):
    pass


@pytest.fixture
def module_kwargs():
    """``module_kwargs(module)``: the keyword arguments the module's main() gives AnsibleModule (argument_spec,
    mutually_exclusive, required_if, ...), captured before any validation or work."""

    def capture(module):
        seen = {}

        def fake_module(**kwargs):
            seen.update(kwargs)
            raise _Constructed()

        with pytest.MonkeyPatch.context() as patch, pytest.raises(_Constructed):
            patch.setattr(module, "AnsibleModule", fake_module)
            module.main()
        return seen

    return capture


# Option names that smell of a secret (ansible-core's own heuristic only looks for "pass").
SECRET_LIKE = re.compile(r"pass|secret|token|auth|credential|private|api_?key|access_?key|(^|_)key$", re.IGNORECASE)


def _walk(spec, path=""):
    for name, option in spec.items():
        dotted = f"{path}{name}"
        yield dotted, name, option
        if option.get("options"):
            yield from _walk(option["options"], f"{dotted}.")


@pytest.fixture
def unprotected_secrets():
    """``unprotected_secrets(spec, not_secret)``: the options (dotted paths into suboptions) whose name or alias looks
    like a secret but are not no_log=True. Paths to files (type=path: a key file's name, not the key) pass, and so do
    the options of ``not_secret`` (dotted path -> why it is not a secret); every one of those must exist in the spec
    and look like a secret, so that the exemptions cannot go stale."""

    def check(spec, not_secret=None):
        not_secret = dict(not_secret or {})
        offenders = []
        for dotted, name, option in _walk(spec):
            names = [name] + list(option.get("aliases") or [])
            if not any(SECRET_LIKE.search(n) for n in names):
                continue
            if dotted in not_secret:
                assert option.get("no_log") is not True, f"{dotted} is exempted as not secret but is no_log"
                not_secret.pop(dotted)
                continue
            if option.get("no_log") is True or option.get("type") == "path":
                continue
            offenders.append(dotted)
        assert not not_secret, f"stale not-secret exemptions (no such secret-like option): {sorted(not_secret)}"
        return offenders

    return check
