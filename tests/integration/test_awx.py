"""The AWX pieces (issues 9 and 18 item 7): execution-environment.yml, collections/requirements.yml, the surveys
(playbooks/awx/surveys/*.json) and playbooks/awx_setup.yml.

No lab needed, and no AWX server (none runs here; the setup playbook's calls to AWX's API are not tested).
``ansible-builder create`` (offline: it only writes the build context) must succeed and produce a Containerfile with
the pinned ansible-core and the collection/Python requirements; the requirements must agree with galaxy.yml,
requirements.txt and what the tests run; ansible-lint (production profile) must accept both files and the setup
playbook and must reject a broken requirements file (so the lint really checks the schema). Every survey file must
pass AWX's survey rules, ask exactly the inputs of its playbook (derived from the playbook) except those left to the
inventory on purpose, and have the confirmation phrase as a required question. The setup playbook must pass its
syntax check and check its inputs and the surveys before it contacts AWX.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml
from jinja2 import nodes
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from ansible_collections.hanzo.kms.plugins.module_utils.awx_survey import site_questions, survey_errors
from tests.lab import kube_build

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EE_FILE = REPO_ROOT / "execution-environment.yml"
REQ_FILE = REPO_ROOT / "collections" / "requirements.yml"


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
    proc = subprocess.run(
        [
            str(BIN / "ansible-builder"),
            "create",
            "-f",
            str(EE_FILE),
            "-c",
            str(context),
            "--output-filename",
            "Containerfile",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
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
    final = containerfile[containerfile.index("FROM base AS final") :]
    version = re.search(r"^ARG HELM_VERSION=(v\S+)$", final, re.M).group(1)
    assert version == kube_build.versions()["helm"]
    for arch in ("AMD64", "ARM64"):
        assert re.search(rf"^ARG HELM_SHA256_{arch}=[0-9a-f]{{64}}$", final, re.M), arch
    steps = final[final.index("ARG HELM_VERSION") :]
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
        manifest = json.loads(
            (
                Path(sys.prefix)
                / "lib"
                / f"python{sys.version_info[0]}.{sys.version_info[1]}"
                / "site-packages"
                / "ansible_collections"
                / name.replace(".", "/")
                / "MANIFEST.json"
            ).read_text(encoding="utf-8")
        )
        assert Version(manifest["collection_info"]["version"]) in SpecifierSet(spec), (
            name,
            manifest["collection_info"]["version"],
        )
    own = [c for c in entries.values() if c.get("type") == "git"]
    assert len(own) == 1 and own[0]["name"].startswith(galaxy["repository"]), own


def test_requirements_ee_and_setup_playbook_pass_ansible_lint(tmp_path):
    lint = [str(BIN / "ansible-lint"), "--profile", "production", "--offline", "--nocolor"]
    proc = subprocess.run(
        [*lint, "collections/requirements.yml", "execution-environment.yml", "playbooks/awx_setup.yml"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # control: the same lint rejects a requirements file that breaks the schema
    (tmp_path / "collections").mkdir()
    (tmp_path / "collections" / "requirements.yml").write_text(
        "---\ncollections:\n  - nme: kubernetes.core\n", encoding="utf-8"
    )
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    bad = subprocess.run(
        [*lint, "collections/requirements.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert bad.returncode != 0 and "schema" in bad.stdout + bad.stderr, bad.stdout + bad.stderr


SETUP_PLAYBOOK = REPO_ROOT / "playbooks" / "awx_setup.yml"
SURVEY_DIR = REPO_ROOT / "playbooks" / "awx" / "surveys"
# The operations with a job template: the setup playbook's list (a survey file each).
OPERATIONS = load_yaml(SETUP_PLAYBOOK)[0]["vars"]["awx_setup_operations"]
# A playbook's own inputs carry its name as prefix; status.yml's is kms_status_.
INPUT_PREFIX = {"status": "kms_status_"}
# Inputs of a playbook its survey leaves out on purpose. A survey answer is an extra variable, which beats the
# inventory: a question on a policy or tuning setting would override the inventory's value on every run.
INVENTORY_SETTING = "a setting of the installation: inventory (group_vars), not a per-run answer"
TUNING = "a timeout or poll interval: inventory, or an extra variable on launch"
NOT_ASKED = {
    "backup": {
        **dict.fromkeys(
            [
                "backup_redis_keep_last",
                "backup_redis_keep_hourly",
                "backup_redis_keep_daily",
                "backup_redis_keep_weekly",
                "backup_redis_keep_monthly",
                "backup_redis_keep_within",
                "backup_redis_min_keep",
                "backup_redis_incomplete_grace",
                "backup_redis_purge_versions",
            ],
            "the retention policy: inventory, so every run (scheduled or not) applies the same one",
        ),
        **dict.fromkeys(["backup_cnpg_target", "backup_redis_prefix"], INVENTORY_SETTING),
        **dict.fromkeys(
            ["backup_cnpg_wait_timeout", "backup_cnpg_poll_interval", "backup_redis_probe_timeout"], TUNING
        ),
    },
    "restore_test": {
        **dict.fromkeys(
            [
                "restore_test_redis_server",
                "restore_test_redis_method",
                "restore_test_redis_prefix",
                "restore_test_cnpg_cluster",
                "restore_test_cnpg_instances",
                "restore_test_cnpg_storage_size",
                "restore_test_cnpg_storage_class",
            ],
            INVENTORY_SETTING,
        ),
        **dict.fromkeys(["restore_test_cnpg_wait_timeout", "restore_test_cnpg_poll_interval"], TUNING),
    },
    "pitr": {
        "pitr_server_name": (
            "an older archive on purpose (e.g. <cluster>, from before a failback): the runbook's -e; the default is "
            "read from the Clusters"
        ),
        **dict.fromkeys(
            ["pitr_cluster", "pitr_instances", "pitr_storage_size", "pitr_storage_class"], INVENTORY_SETTING
        ),
        **dict.fromkeys(["pitr_wait_timeout", "pitr_poll_interval"], TUNING),
    },
    "failover": {"failover_require_promoted": "set by fence.yml, which the KMS fence returned site template runs"},
}
# Keys whose strings are bare Jinja expressions (the others are templates when they contain {{ or {%).
EXPRESSION_KEYS = {"when", "that", "changed_when", "failed_when", "until"}
JINJA = jinja2.Environment()


def surveys():
    return {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(SURVEY_DIR.glob("*.json"))}


def is_template(value):
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(is_template(v) for v in value.values())
    if isinstance(value, list):
        return any(is_template(v) for v in value)
    return False


def names_read(template):
    """The variables a Jinja template reads (minus those it sets itself); parsed only, so Ansible's filters need not exist."""
    tree = JINJA.parse(template)
    found = list(tree.find_all(nodes.Name))
    return {n.name for n in found if n.ctx == "load"} - {n.name for n in found if n.ctx in ("store", "param")}


def playbook_inputs(text, prefix):
    """{variable: default} of the inputs of a playbook with that prefix: play vars with a literal default (an extra
    variable overrides them), and variables it reads but never sets (asserted, read with default(...) or
    'is defined'; default None). Play vars computed from other variables, set_fact, register, task and block vars,
    and the vars given to an imported playbook are the playbook's own, not inputs."""
    read, assigned, defaults = set(), set(), {}

    def scan(node, key=None):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "register" or k == "loop_var":
                    assigned.add(v)
                elif k in ("ansible.builtin.set_fact", "set_fact") and isinstance(v, dict):
                    assigned.update(set(v) - {"cacheable"})
                elif k == "vars" and isinstance(v, dict):
                    assigned.update(v)
                scan(v, k)
        elif isinstance(node, list):
            for item in node:
                scan(item, key)
        elif isinstance(node, str):
            if key in EXPRESSION_KEYS:
                read.update(names_read("{{ " + node + " }}"))
            elif is_template(node):
                read.update(names_read(node))

    for play in yaml.safe_load(text):
        play = dict(play)
        if "import_playbook" not in play:
            for name, value in (play.pop("vars", None) or {}).items():
                if is_template(value):
                    assigned.add(name)
                    scan(value)
                else:
                    defaults[name] = value
        scan(play)
    return {name: defaults.get(name) for name in set(defaults) | (read - assigned) if name.startswith(prefix)}


def test_input_derivation_finds_every_kind_of_input_and_nothing_else():
    """Control for the exact-variables check: each kind of input is found, each kind of own variable is not."""
    playbook = """
- name: Check
  hosts: all
  vars:
    op_literal: 3
    op_computed: "{{ op_literal + 1 }}"
  tasks:
    - name: Assert
      ansible.builtin.assert:
        that: [op_asserted is defined, op_computed > 1]
    - name: Read with a default
      ansible.builtin.debug:
        msg: "{{ op_defaulted | default(false) | bool }} {{ other_var }} {% set op_local = 1 %}{{ op_local }}"
      register: op_registered
    - name: Set
      ansible.builtin.set_fact:
        op_fact: "{{ op_registered.msg }}"
      when: op_when is defined and op_fact_reader | default(op_fact)
      vars:
        op_task_var: 1
      loop: "{{ [op_task_var] }}"
      loop_control:
        loop_var: op_item
- name: Imported
  ansible.builtin.import_playbook: other.yml
  vars:
    op_passed: "{{ op_item }}"
"""
    assert playbook_inputs(playbook, "op_") == {
        "op_literal": 3,
        "op_asserted": None,
        "op_defaulted": None,
        "op_when": None,
        "op_fact_reader": None,
    }


def test_there_is_a_valid_awx_survey_per_operation():
    found = surveys()
    assert sorted(found) == sorted(OPERATIONS)
    example_sites = sorted(
        load_yaml(REPO_ROOT / "inventories" / "example" / "group_vars" / f"{group}.yml")["site_name"]
        for group in load_yaml(REPO_ROOT / "inventories" / "example" / "hosts.yml")["all"]["children"]["kms_sites"][
            "children"
        ]
    )
    for name, survey in found.items():
        assert survey_errors(survey) == [], name
        assert survey["name"] and survey["description"], name
        for question in survey["spec"]:
            # the shipped choices are the example inventory's sites (awx_setup.yml puts the real inventory's there)
            if question["variable"] in site_questions(survey):
                assert sorted(question["choices"].split("\n")) == example_sites, (name, question)
            # a question ending in _site that is not a site question would keep the example's sites
            assert question["type"] == "multiplechoice" or not question["variable"].endswith("_site"), question


@pytest.mark.parametrize("operation", sorted(surveys()))
def test_survey_asks_exactly_the_inputs_of_its_playbook(operation):
    survey = surveys()[operation]
    asked = {question["variable"]: question for question in survey["spec"]}
    inputs = playbook_inputs(
        (REPO_ROOT / "playbooks" / f"{operation}.yml").read_text(encoding="utf-8"),
        INPUT_PREFIX.get(operation, f"{operation}_"),
    )
    not_asked = NOT_ASKED.get(operation, {})
    assert not set(asked) & set(not_asked), f"asked although listed as not asked: {set(asked) & set(not_asked)}"
    assert not set(asked) - set(inputs), f"{operation}.yml has no input {sorted(set(asked) - set(inputs))}"
    missing = set(inputs) - set(asked) - set(not_asked)
    assert not missing, f"inputs of {operation}.yml neither asked nor listed in NOT_ASKED: {sorted(missing)}"
    assert not set(not_asked) - set(inputs), (
        f"NOT_ASKED lists what {operation}.yml no longer has: {set(not_asked) - set(inputs)}"
    )
    # the question's type fits the playbook's default (booleans as "true"/"false" choices, read with | bool)
    for variable, question in asked.items():
        default = inputs[variable]
        if isinstance(default, bool):
            assert question["type"] == "multiplechoice" and sorted(question["choices"].split("\n")) == [
                "false",
                "true",
            ], question
        elif isinstance(default, int):
            assert question["type"] == "integer", question
        elif isinstance(default, str):
            assert question["type"] in ("text", "textarea", "password", "multiplechoice"), question


CONFIRMED_OPERATIONS = [
    ("failover", "FAILOVER TO", "failover_target_site"),
    ("switchover", "SWITCHOVER TO", "switchover_target_site"),
    ("fence", "FENCE", "fence_site"),
]


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


def test_awx_doc_links_every_survey_and_holds_none_itself():
    doc = (REPO_ROOT / "docs" / "awx.md").read_text(encoding="utf-8")
    for operation in OPERATIONS:
        assert f"../playbooks/awx/surveys/{operation}.json" in doc, operation
    assert '"question_name"' not in doc  # one place for each survey: its file
    assert "ansible-playbook -i" in doc and "hanzo.kms.awx_setup" in doc


SETUP_INPUTS = {
    "awx_setup_controller_host": "https://127.0.0.1:9",  # nothing listens: the first call to AWX is refused
    "awx_setup_controller_oauthtoken": "not-a-token",
    "awx_setup_organization": "Hanzo",
    "awx_setup_inventory": "kms",
    "awx_setup_execution_environment": "kms-ee",
    "awx_setup_project_scm_url": "https://git.example.net/hanzo/kms-ansible.git",
    "awx_setup_credentials": [],
}


def run_setup(tmp_path, extra, *options):
    extra_file = tmp_path / "extra.json"
    extra_file.write_text(json.dumps(extra), encoding="utf-8")
    return subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            "inventories/example",
            "playbooks/awx_setup.yml",
            "-e",
            f"@{extra_file}",
            *options,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**__import__("os").environ, "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
    )


def test_setup_playbook_passes_the_syntax_check(tmp_path):
    proc = run_setup(tmp_path, {}, "--syntax-check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_setup_playbook_checks_inputs_and_surveys_before_it_contacts_awx(tmp_path):
    proc = run_setup(tmp_path, SETUP_INPUTS)
    out = proc.stdout + proc.stderr
    # the inputs and all seven surveys pass; the first AWX call (the project) is the one that fails: nothing listens
    assert proc.returncode != 0 and "TASK [Create the project]" in out, out
    assert "Connection refused" in out and "ok=2 " in out, out
    for operation in OPERATIONS:
        assert f"(item={operation})" in out, operation


@pytest.mark.parametrize(
    "change,message",
    [
        ({"awx_setup_organization": ""}, "Set awx_setup_controller_host"),
        (
            {"awx_setup_controller_oauthtoken": "", "awx_setup_controller_username": "admin"},
            "awx_setup_controller_password",
        ),
        ({"awx_setup_sites": ["dc1"]}, 'got ["dc1"]'),
        ({"awx_setup_sites": ["dc1", "dc1", "dc2"]}, "the sites must be distinct non-empty names"),
    ],
)
def test_setup_playbook_refuses_bad_inputs_before_anything_changes(tmp_path, change, message):
    proc = run_setup(tmp_path, {**SETUP_INPUTS, **change})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in out, out
    assert "TASK [Create the project]" not in out, out
