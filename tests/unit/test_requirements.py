"""requirements.txt lists exactly the libraries the plugins import (the host that runs the modules needs them and
nothing else); tests/integration/test_requirements.py shows they are enough."""

from __future__ import annotations

import ast
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
NOT_THIRD_PARTY = {"__future__", "ansible", "ansible_collections"}  # ansible-core ships what AnsiballZ needs


def third_party_imports(root):
    """{top-level module name: [files]} of the absolute imports under ``root`` outside the standard library."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in NOT_THIRD_PARTY:
                    found.setdefault(top, []).append(str(path.relative_to(root)))
    return found


def requirement_names(path):
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(canonicalize_name(Requirement(line).name))
    return names


def test_third_party_imports_are_found_in_every_import_form(tmp_path):
    (tmp_path / "a.py").write_text(
        "import os\nimport boto3.session\nfrom botocore import exceptions\n"
        "from . import sibling\nfrom ansible.module_utils.basic import AnsibleModule\n"
        "def late():\n    import anycrc\n"
    )
    assert third_party_imports(tmp_path) == {"boto3": ["a.py"], "botocore": ["a.py"], "anycrc": ["a.py"]}


def test_requirements_txt_lists_exactly_what_the_plugins_import():
    # What runs on the host of a module; doc fragments, filters and action plugins run in ansible-core's controller.
    imports = {}
    for part in ("modules", "module_utils"):
        for name, files in third_party_imports(REPO_ROOT / "plugins" / part).items():
            imports.setdefault(name, []).extend(files)
    distributions = packages_distributions()
    unknown = sorted(name for name in imports if name not in distributions)
    assert not unknown, f"imported by the plugins but not installed in the test venv: {unknown}"
    imported = {canonicalize_name(dist) for name in imports for dist in distributions[name]}
    listed = requirement_names(REPO_ROOT / "requirements.txt")
    assert sorted(imported - listed) == [], f"imported by the plugins, missing from requirements.txt: {imports}"
    assert sorted(listed - imported) == [], "listed in requirements.txt, imported by no plugin"
