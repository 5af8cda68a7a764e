"""AWX survey specs (plugins/module_utils/awx_survey.py, the hanzo.kms.awx_survey filter): AWX's validation rules
accept the specs AWX accepts and refuse, naming the problem, each kind of spec AWX refuses or whose default AWX would
drop at launch (issue 18 item 7)."""

from __future__ import annotations

import copy

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.hanzo.kms.plugins.filter.awx_survey import FilterModule, awx_survey
from ansible_collections.hanzo.kms.plugins.module_utils.awx_survey import (
    InvalidSurvey,
    check_survey,
    site_questions,
    survey_errors,
    with_sites,
)

VALID = {
    "name": "KMS example",
    "description": "one question of each type",
    "spec": [
        {
            "type": "multiplechoice",
            "question_name": "Site",
            "variable": "example_target_site",
            "choices": "dc1\ndc2",
            "required": True,
        },
        {
            "type": "multiplechoice",
            "question_name": "Flag",
            "variable": "example_flag",
            "choices": "true\nfalse",
            "default": "false",
            "required": True,
        },
        {
            "type": "multiselect",
            "question_name": "Parts",
            "variable": "example_parts",
            "choices": ["a", "b", "c"],
            "required": False,
        },
        {
            "type": "text",
            "question_name": "Confirm",
            "variable": "example_confirm",
            "min": 0,
            "max": 16,
            "required": True,
        },
        {
            "type": "textarea",
            "question_name": "Notes",
            "variable": "example_notes",
            "default": "",
            "required": False,
            "min": None,
            "max": None,
        },
        {"type": "password", "question_name": "Password", "variable": "example_password", "required": False},
        {
            "type": "integer",
            "question_name": "Port",
            "variable": "example_port",
            "min": 1,
            "max": 65535,
            "default": 6379,
            "required": False,
        },
        {
            "type": "float",
            "question_name": "Ratio",
            "variable": "example_ratio",
            "min": 0,
            "max": 1,
            "default": 0.5,
            "required": False,
        },
    ],
}


def changed(path, value):
    """A copy of VALID with one field changed (value None: removed); path is ('spec', index, key) or (key,)."""
    spec = copy.deepcopy(VALID)
    target = spec
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return spec


def test_a_spec_with_every_question_type_is_valid():
    assert survey_errors(VALID) == []
    assert check_survey(VALID) is VALID
    assert site_questions(VALID) == ["example_target_site"]


BAD = [
    ("not an object", [], "is a JSON object"),
    ("name missing", changed(("name",), None), "name is missing"),
    ("description not a string", changed(("description",), 1), "description must be a string"),
    ("spec not a list", changed(("spec",), {}), "spec must be a list"),
    ("no questions", changed(("spec",), []), "spec has no questions"),
    ("question not an object", changed(("spec", 0), "x"), "question 0 is not a JSON object"),
    ("type missing", changed(("spec", 0, "type"), None), "type is missing"),
    ("unknown type", changed(("spec", 0, "type"), "choice"), "type 'choice' is not one of"),
    ("question_name missing", changed(("spec", 0, "question_name"), None), "question_name is missing"),
    ("blank question_name", changed(("spec", 0, "question_name"), " "), "question_name is empty"),
    ("required a string", changed(("spec", 0, "required"), "true"), "required must be a boolean"),
    ("variable missing", changed(("spec", 0, "variable"), None), "variable is missing"),
    (
        "variable not a name",
        changed(("spec", 0, "variable"), "target-site"),
        "'target-site' is not a valid Ansible variable",
    ),
    ("variable a keyword", changed(("spec", 0, "variable"), "not"), "'not' is not a valid Ansible variable"),
    ("variable twice", changed(("spec", 1, "variable"), "example_target_site"), "'example_target_site' is asked twice"),
    ("choices missing", changed(("spec", 0, "choices"), None), "needs choices"),
    ("choices empty", changed(("spec", 0, "choices"), "\n"), "choices must be a non-empty"),
    ("default not a choice", changed(("spec", 1, "default"), "yes"), "default ['yes'] not among the choices"),
    ("boolean default", changed(("spec", 1, "default"), False), "default False must be str"),
    ("two defaults of a single choice", changed(("spec", 1, "default"), "true\nfalse"), "has one default"),
    ("multiselect default", changed(("spec", 2, "default"), "a\nc"), "drops the default of a multiselect question"),
    ("min not an integer", changed(("spec", 3, "min"), "0"), "min must be an integer"),
    ("max a float", changed(("spec", 6, "max"), 65535.0), "max must be an integer"),
    ("text default too long", changed(("spec", 3, "default"), "x" * 17), "length of the default 17 is above max 16"),
    ("integer default a string", changed(("spec", 6, "default"), "6379"), "default '6379' must be int"),
    ("integer default below min", changed(("spec", 6, "default"), 0), "default 0 is below min 1"),
    ("integer default above max", changed(("spec", 6, "default"), 65536), "default 65536 is above max 65535"),
    ("float default above max", changed(("spec", 7, "default"), 1.5), "default 1.5 is above max 1"),
    ("float default a string", changed(("spec", 7, "default"), "half"), "default 'half' must be a number"),
    ("encrypted default outside a password", changed(("spec", 3, "default"), "$encrypted$"), "reserved for password"),
]


@pytest.mark.parametrize("spec,message", [pytest.param(spec, message, id=case) for case, spec, message in BAD])
def test_a_spec_awx_refuses_is_refused_naming_the_problem(spec, message):
    errors = survey_errors(spec)
    assert any(message in error for error in errors), errors
    with pytest.raises(InvalidSurvey, match="the.json is not a valid AWX survey spec"):
        check_survey(spec, "the.json")


def test_every_problem_is_named_at_once():
    spec = changed(("spec", 6, "default"), 0)
    spec["spec"][3]["min"] = "x"
    assert len(survey_errors(spec)) == 2


def test_site_questions_get_the_inventory_sites():
    survey = with_sites(VALID, ["east", "west", "north"])
    assert survey["spec"][0]["choices"] == "east\nwest\nnorth"
    assert survey["spec"][1:] == VALID["spec"][1:]  # only the site question changes
    assert VALID["spec"][0]["choices"] == "dc1\ndc2"  # the input is left alone


def test_a_site_default_must_be_one_of_the_sites():
    spec = changed(("spec", 0, "default"), "dc2")
    assert with_sites(spec, ["dc1", "dc2"])["spec"][0]["default"] == "dc2"
    with pytest.raises(InvalidSurvey, match=r"default \['dc2'\] not among the choices"):
        with_sites(spec, ["east", "west"])


@pytest.mark.parametrize("sites", [[], None, ["dc1", "dc1"], ["dc1", ""], ["dc1", 2]])
def test_bad_site_lists_are_refused(sites):
    with pytest.raises(InvalidSurvey, match="the sites must be distinct non-empty names"):
        with_sites(VALID, sites)


def test_the_filter_fails_with_the_problems():
    assert FilterModule().filters()["awx_survey"] is awx_survey
    assert awx_survey(VALID, ["a", "b"])["spec"][0]["choices"] == "a\nb"
    with pytest.raises(AnsibleFilterError, match="failover.json is not a valid AWX survey spec: .*asked twice"):
        awx_survey(changed(("spec", 1, "variable"), "example_target_site"), ["a", "b"], "failover.json")
