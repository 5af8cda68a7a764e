"""Every module has its argument-handling tests here, and the shared checks of conftest.py can fail."""

from __future__ import annotations

import ast
import types
from pathlib import Path
from unittest.mock import MagicMock

import pytest
import yaml

HERE = Path(__file__).resolve().parent
MODULES = HERE.parents[3] / "plugins" / "modules"


def test_every_module_has_its_test_file():
    modules = sorted(path.stem for path in MODULES.glob("*.py") if path.stem != "__init__")
    assert modules, MODULES
    assert [name for name in modules if not (HERE / f"test_{name}.py").is_file()] == []


def test_the_secret_check_finds_unprotected_secrets_also_in_suboptions_and_aliases(unprotected_secrets):
    spec = {
        "password": {"type": "str"},
        "api_token": {"type": "str", "no_log": False},
        "login": {"type": "str", "aliases": ["aws_secret_access_key"]},
        "client_key": {"type": "str"},
        "key_file": {"type": "path"},
        "sites": {
            "type": "list",
            "elements": "dict",
            "options": {"secret_key": {"type": "str"}, "name": {"type": "str"}},
        },
        "session_token": {"type": "str", "no_log": True},
        "bucket": {"type": "str"},
    }
    assert unprotected_secrets(spec) == ["password", "api_token", "login", "client_key", "sites.secret_key"]
    assert unprotected_secrets(spec, not_secret={"client_key": "an object key"}) == [
        "password",
        "api_token",
        "login",
        "sites.secret_key",
    ]


@pytest.mark.parametrize(
    "not_secret, message",
    [
        ({"bucket": "not secret-like at all"}, "stale not-secret exemptions"),
        ({"session_token": "but it is no_log"}, "session_token is exempted as not secret but is no_log"),
    ],
)
def test_the_secret_check_refuses_stale_exemptions(unprotected_secrets, not_secret, message):
    with pytest.raises(AssertionError, match=message):
        unprotected_secrets({"bucket": {"type": "str"}, "session_token": {"type": "str", "no_log": True}}, not_secret)


def test_run_module_reports_a_module_that_returns_without_exiting(run_module):
    silent = types.ModuleType("ansible_collections.hanzo.kms.plugins.modules.silent")
    silent.main = lambda: None
    with pytest.raises(
        pytest.fail.Exception, match=r"silent\.main\(\) returned without calling exit_json or fail_json"
    ):
        run_module(silent, {})


def _named_module():
    """A module that requires ``name`` and returns it."""
    from ansible.module_utils.basic import AnsibleModule  # pylint: disable=import-outside-toplevel

    def main():
        module = AnsibleModule(argument_spec={"name": {"type": "str", "required": True}})
        module.exit_json(changed=False, name=module.params["name"])

    named = types.ModuleType("ansible_collections.hanzo.kms.plugins.modules.named")
    named.main = main
    return named


def test_refused_passes_only_a_failure_naming_the_problem(run_module):
    named = _named_module()
    assert run_module.refused(named, {}, "missing required arguments: name")["failed"] is True
    with pytest.raises(AssertionError, match="missing required arguments: name"):
        run_module.refused(named, {}, "name must be short")
    with pytest.raises(AssertionError, match="'name': 'dc1'"):
        run_module.refused(named, {"name": "dc1"}, "missing required arguments: name")


ARGS = {"name": "dc1", "state": "acquired"}  # what args_with changes here


def test_args_with_changes_the_files_args_and_leaves_out_options_set_to_none(args_with):
    assert args_with(state=None, ttl=5) == {"name": "dc1", "ttl": 5}
    assert args_with() == ARGS == {"name": "dc1", "state": "acquired"}


def test_collaborators_are_replaced_for_the_test_and_untouched_ones_checked(collaborators):
    named = _named_module()
    named.helper = str
    work = collaborators(named, main=MagicMock(), helper=MagicMock())
    assert (named.main, named.helper) == (work.main, work.helper)
    work.assert_untouched()
    named.helper("x")
    work.assert_untouched("main")
    with pytest.raises(AssertionError, match="to not have been called"):
        work.assert_untouched()
    with pytest.raises(AttributeError, match="has no attribute 'helpr'"):  # a misspelt name replaces nothing
        collaborators(named, helpr=MagicMock())


def _action_groups():
    runtime = yaml.safe_load((MODULES.parents[1] / "meta" / "runtime.yml").read_text())
    return runtime["action_groups"]


def _doc_fragments(name):
    tree = ast.parse((MODULES / f"{name}.py").read_text())
    text = next(
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and [target.id for target in node.targets] == ["DOCUMENTATION"]
    )
    documentation = yaml.safe_load(text)
    return documentation.get("extends_documentation_fragment", [])


def test_the_kms_action_group_lists_every_module():
    modules = sorted(path.stem for path in MODULES.glob("*.py") if path.stem != "__init__")
    assert sorted(_action_groups()["kms"]) == modules


def test_the_s3_action_group_lists_exactly_the_modules_with_the_s3_options():
    modules = sorted(path.stem for path in MODULES.glob("*.py") if path.stem != "__init__")
    with_s3_options = [name for name in modules if "hanzo.kms.s3" in _doc_fragments(name)]
    assert with_s3_options, "no module extends hanzo.kms.s3"
    assert sorted(_action_groups()["s3"]) == with_s3_options
