"""The AWX pieces (issue 9): execution-environment.yml, collections/requirements.yml and the surveys of docs/awx.md.

No lab needed. ``ansible-builder create`` (offline: it only writes the build context) must succeed and produce a
Containerfile with the pinned ansible-core and the collection/Python requirements; the requirements must agree with
galaxy.yml, requirements.txt and what the tests run; ansible-lint (production profile) must accept both files and must
reject a broken requirements file (so the lint really checks the schema); every survey in docs/awx.md must be a valid
survey spec whose variables the playbook uses, with the confirmation phrase as a required question.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EE_FILE = REPO_ROOT / "execution-environment.yml"
REQ_FILE = REPO_ROOT / "collections" / "requirements.yml"
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
OPERATIONS = ("backup", "status", "restore_test", "switchover", "failover", "fence")


def load_yaml(path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def pins(lines):
    """{normalised name: specifier string} of requirement lines (comments and blanks ignored)."""
    out = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            out[req.name.lower().replace("_", "-")] = str(req.specifier)
    return out


@pytest.fixture(scope="module")
def build_context(tmp_path_factory):
    context = tmp_path_factory.mktemp("ee") / "context"
    proc = subprocess.run([str(BIN / "ansible-builder"), "create", "-f", str(EE_FILE), "-c", str(context),
                           "--output-filename", "Containerfile"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"ansible-builder create failed:\n{proc.stdout}\n{proc.stderr}"
    return context


def test_builder_writes_a_containerfile_with_the_pinned_toolchain(build_context):
    import ansible.release  # pylint: disable=import-outside-toplevel

    containerfile = (build_context / "Containerfile").read_text(encoding="utf-8")
    ee = load_yaml(EE_FILE)
    assert ee["version"] == 3
    assert f'ARG EE_BASE_IMAGE="{ee["images"]["base_image"]["name"]}"' in containerfile
    assert 'ARG PYCMD="/usr/bin/python3.11"' in containerfile
    # the ansible-core of the EE is the one the collection is tested with here
    refs = re.search(r'^ARG ANSIBLE_INSTALL_REFS="([^"]*)"', containerfile, re.M).group(1).split()
    assert f"ansible-core=={ansible.release.__version__}" in refs, refs
    assert any(ref.startswith("ansible-runner") for ref in refs), refs
    # collections are installed from the project's requirements file, then the introspected Python deps
    assert "ansible-galaxy collection install" in containerfile and "-r requirements.yml" in containerfile
    assert "introspect.py introspect" in containerfile
    assert "$PKGMGR install -y git-core" in containerfile  # hanzo.kms comes from git


def test_final_image_gets_the_pinned_helm_checked_against_its_checksum(build_context):
    """install.yml's redis role runs helm (kubernetes.core.helm): the EE has the official release of the version
    the lab tests with, verified before it is unpacked."""
    containerfile = (build_context / "Containerfile").read_text(encoding="utf-8")
    final = containerfile[containerfile.index("FROM base AS final"):]
    version = re.search(r"^ARG HELM_VERSION=(v\S+)$", final, re.M).group(1)
    lab_pin = re.search(r"^require helm.sh/helm/v3 (v\S+)$", (REPO_ROOT / "tools/kube/helm/go.mod").read_text(), re.M)
    assert lab_pin and version == lab_pin.group(1)
    for arch in ("AMD64", "ARM64"):
        assert re.search(rf"^ARG HELM_SHA256_{arch}=[0-9a-f]{{64}}$", final, re.M), arch
    steps = final[final.index("ARG HELM_VERSION"):]
    fetch = steps.index("https://get.helm.sh/helm-${HELM_VERSION}-linux-${arch}.tar.gz")
    assert fetch < steps.index("sha256sum -c") < steps.index("tar -xzf") < steps.index("/usr/local/bin/helm")


def test_build_context_carries_the_requirements(build_context):
    assert load_yaml(build_context / "_build" / "requirements.yml") == load_yaml(REQ_FILE)
    context_pins = pins((build_context / "_build" / "requirements.txt").read_text(encoding="utf-8").splitlines())
    assert context_pins == pins(load_yaml(EE_FILE)["dependencies"]["python"])


def test_ee_python_pins_match_requirements_txt():
    runtime = pins((REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines())
    ee = pins(load_yaml(EE_FILE)["dependencies"]["python"])
    assert set(runtime) <= set(ee), f"requirements.txt packages missing from the EE: {set(runtime) - set(ee)}"
    assert {name: ee[name] for name in runtime} == runtime


def test_collection_requirements_match_galaxy_and_the_tested_collections():
    galaxy = load_yaml(REPO_ROOT / "galaxy.yml")
    entries = {c["name"]: c for c in load_yaml(REQ_FILE)["collections"]}
    for name, spec in galaxy["dependencies"].items():
        assert entries[name]["version"] == spec, f"{name}: requirements.yml and galaxy.yml disagree"
        # the collection bundled in the venv (what the tests run) satisfies the range
        manifest = json.loads((REPO_ROOT / ".venv" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
                               / "site-packages" / "ansible_collections" / name.replace(".", "/")
                               / "MANIFEST.json").read_text(encoding="utf-8"))
        assert Version(manifest["collection_info"]["version"]) in SpecifierSet(spec), (name, manifest["collection_info"]["version"])
    own = [c for c in entries.values() if c.get("type") == "git"]
    assert len(own) == 1 and own[0]["name"].startswith(galaxy["repository"]), own


def test_requirements_and_ee_pass_ansible_lint(tmp_path):
    lint = [str(BIN / "ansible-lint"), "--profile", "production", "--offline", "--nocolor"]
    proc = subprocess.run([*lint, "collections/requirements.yml", "execution-environment.yml"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # control: the same lint rejects a requirements file that breaks the schema
    (tmp_path / "collections").mkdir()
    (tmp_path / "collections" / "requirements.yml").write_text(
        "---\ncollections:\n  - nme: kubernetes.core\n", encoding="utf-8")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    bad = subprocess.run([*lint, "collections/requirements.yml"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, check=False)
    assert bad.returncode != 0 and "schema" in bad.stdout + bad.stderr, bad.stdout + bad.stderr


def surveys():
    text = (REPO_ROOT / "docs" / "awx.md").read_text(encoding="utf-8")
    found = {}
    for name, body in re.findall(r"<!-- survey: (\w+) -->\s*```json\n(.*?)```", text, re.S):
        found[name] = json.loads(body)
    return found


def test_awx_doc_has_a_valid_survey_per_operation():
    found = surveys()
    assert sorted(found) == sorted(OPERATIONS)
    for name, spec in found.items():
        assert spec["name"] and spec["description"] and spec["spec"], name
        for question in spec["spec"]:
            assert question["type"] in SURVEY_TYPES, (name, question)
            assert question["question_name"] and re.fullmatch(r"[a-z_][a-z0-9_]*", question["variable"]), question
            assert isinstance(question["required"], bool), question
            if question["type"] in ("multiplechoice", "multiselect"):
                choices = question["choices"].split("\n")
                assert "default" not in question or question["default"] in choices, question
        # every variable is one the playbook (or the vars files it loads) reads
        sources = (REPO_ROOT / "playbooks" / f"{name}.yml").read_text(encoding="utf-8")
        for question in spec["spec"]:
            assert re.search(rf"\b{question['variable']}\b", sources), f"{name}.yml does not use {question['variable']}"


CONFIRMED_OPERATIONS = [("failover", "FAILOVER TO", "failover_target_site"),
                        ("switchover", "SWITCHOVER TO", "switchover_target_site"),
                        ("fence", "FENCE", "fence_site")]


@pytest.mark.parametrize("operation,phrase,site_variable", CONFIRMED_OPERATIONS)
def test_confirmation_phrase_is_a_required_survey_question(operation, phrase, site_variable):
    spec = surveys()[operation]["spec"]
    by_var = {q["variable"]: q for q in spec}
    confirm, target = by_var[f"{operation}_confirm"], by_var[site_variable]
    assert confirm["required"] and confirm["type"] == "text" and phrase in confirm["question_name"]
    assert target["required"] and target["type"] == "multiplechoice"
    # the playbook documents and passes on that phrase; no prompt can stand in for it
    playbook = (REPO_ROOT / "playbooks" / f"{operation}.yml").read_text(encoding="utf-8")
    assert phrase in playbook and "vars_prompt" not in playbook and "ansible.builtin.pause" not in playbook
