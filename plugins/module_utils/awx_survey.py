# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""AWX survey specs (the surveys of the operations playbooks, playbooks/awx/surveys/*.json): AWX's own validation
rules, and the site questions filled in with an inventory's site names.

The rules are those of AWX's survey_spec endpoint (``JobTemplateSurveySpec._validate_spec_data`` in
awx/api/views/__init__.py), plus the checks AWX applies to a default before it uses it at launch
(``SurveyJobTemplateMixin._survey_element_validation`` in awx/main/models/mixins.py: a default outside min/max or
the choices is silently dropped there, so it is an error here), plus three AWX does not make and a usable survey
needs: a variable is an Ansible variable name, a question has a non-blank text, a choice question at least one
choice. Used by the ``hanzo.kms.awx_survey`` filter (awx_setup.yml validates every survey before it changes anything
in AWX) and by the tests. No Ansible import.
"""

from __future__ import annotations

import keyword
import re

# awx/main/constants.py SURVEY_TYPE_MAPPING: question type -> type of its default
DEFAULT_TYPES = {
    "text": str,
    "textarea": str,
    "password": str,
    "multiplechoice": str,
    "multiselect": str,
    "integer": int,
    "float": (float, int),
}
TEXT_TYPES = ("text", "textarea", "password")
CHOICE_TYPES = ("multiplechoice", "multiselect")
# The keys AWX requires, with their types
SURVEY_FIELDS = (("name", str, "a string"), ("description", str, "a string"), ("spec", list, "a list"))
QUESTION_FIELDS = (
    ("type", str, "a string"),
    ("question_name", str, "a string"),
    ("variable", str, "a string"),
    ("required", bool, "a boolean"),
)
VARIABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A multiplechoice question whose variable ends so asks for one of the inventory's sites (site_name of kms_sites).
SITE_SUFFIX = "_site"


class InvalidSurvey(ValueError):
    """A survey spec AWX would refuse (or whose default AWX would drop); the message lists every problem."""


def choice_list(choices):
    """The choices of a question as AWX reads them: a newline-separated string (blank lines dropped) or a list."""
    if isinstance(choices, str):
        return [choice for choice in choices.splitlines() if choice.strip() != ""]
    return list(choices)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _bound_errors(where, question):
    """min/max: AWX accepts an integer or null (any type of question carries them)."""
    errors = []
    for key in ("min", "max"):
        if question.get(key) is not None and (not isinstance(question[key], int) or isinstance(question[key], bool)):
            errors.append(f"{where}: {key} must be an integer, got {question[key]!r}")
    return errors


def _default_errors(where, question):
    """The default as AWX checks it on save (type, choices) and on launch (length or value within min/max)."""
    qtype, default = question["type"], question["default"]
    expected = DEFAULT_TYPES[qtype]
    if default == "":
        return []  # AWX stores an empty default as "no default"
    if not isinstance(default, expected) or isinstance(default, bool):
        return [f"{where}: default {default!r} must be {'a number' if qtype == 'float' else expected.__name__}"]
    low, high = question.get("min"), question.get("max")
    if qtype in TEXT_TYPES:
        measure, what = len(default), "length of the default"
    elif qtype in ("integer", "float"):
        measure, what = default, "default"
    else:
        chosen = choice_list(default)
        if qtype == "multiselect":
            # the launch-time check wants a list, and the endpoint only takes a string: AWX never applies it
            return [f"{where}: AWX drops the default of a multiselect question at launch (schedules, API launches)"]
        if len(chosen) > 1:
            return [f"{where}: a multiplechoice question has one default, got {chosen}"]
        missing = [item for item in chosen if item not in choice_list(question.get("choices", ""))]
        return [f"{where}: default {missing} not among the choices"] if missing else []
    errors = []
    if isinstance(low, int) and measure < low:
        errors.append(f"{where}: {what} {measure} is below min {low}")
    if isinstance(high, int) and measure > high:
        errors.append(f"{where}: {what} {measure} is above max {high}")
    return errors


def _field_errors(where, obj, fields):
    """The keys of ``fields`` ((key, type, label), ...) that ``obj`` lacks or has of another type."""
    errors = []
    for key, expected, label in fields:
        if key not in obj:
            errors.append(f"{where}{key} is missing")
        elif not isinstance(obj[key], expected):
            errors.append(f"{where}{key} must be {label}, got {obj[key]!r}")
    return errors


def _question_errors(where, question):
    errors = _field_errors(f"{where}: ", question, QUESTION_FIELDS)
    if errors:
        return errors
    if question["type"] not in DEFAULT_TYPES:
        return [f"{where}: type {question['type']!r} is not one of {', '.join(DEFAULT_TYPES)}"]
    if not VARIABLE_RE.fullmatch(question["variable"]) or keyword.iskeyword(question["variable"]):
        errors.append(f"{where}: variable {question['variable']!r} is not a valid Ansible variable name")
    if not question["question_name"].strip():
        errors.append(f"{where}: question_name is empty")
    errors += _bound_errors(where, question)
    if question["type"] in CHOICE_TYPES:
        if "choices" not in question:
            errors.append(f"{where}: a {question['type']} question needs choices")
        elif not isinstance(question["choices"], (str, list)) or not choice_list(question["choices"]):
            errors.append(f"{where}: choices must be a non-empty newline-separated string or list")
    if "default" in question and not errors:
        errors += _default_errors(where, question)
    if question["type"] != "password" and str(question.get("default", "")).startswith("$encrypted$"):
        errors.append(f"{where}: $encrypted$ is reserved for password defaults")
    return errors


def survey_errors(survey):
    """Every reason AWX would refuse ``survey`` (a survey spec dict) or drop one of its defaults; empty when valid."""
    if not isinstance(survey, dict):
        return [f"a survey spec is a JSON object, got {type(survey).__name__}"]
    errors = _field_errors("", survey, SURVEY_FIELDS)
    if errors:
        return errors
    if not survey["spec"]:
        return ["spec has no questions"]
    seen = set()
    for index, question in enumerate(survey["spec"]):
        if not isinstance(question, dict):
            errors.append(f"question {index} is not a JSON object")
            continue
        where = f"question {index} ({question.get('variable', '?')})"
        errors += _question_errors(where, question)
        variable = question.get("variable")
        if variable in seen:
            errors.append(f"{where}: variable {variable!r} is asked twice")
        seen.add(variable)
    return errors


def check_survey(survey, name="survey"):
    """``survey`` unchanged when AWX accepts it; InvalidSurvey naming every problem otherwise."""
    errors = survey_errors(survey)
    if errors:
        raise InvalidSurvey(f"{name} is not a valid AWX survey spec: " + "; ".join(errors))
    return survey


def site_questions(survey):
    """The variables of the questions that ask for a site (multiplechoice, variable ending in _site)."""
    return [
        q["variable"] for q in survey["spec"] if q["type"] == "multiplechoice" and q["variable"].endswith(SITE_SUFFIX)
    ]


def with_sites(survey, sites, name="survey"):
    """A copy of the valid ``survey`` whose site questions offer exactly ``sites`` (in that order); a site question's
    default must be one of them."""
    sites = list(sites or [])
    if not sites or not all(isinstance(site, str) and site for site in sites) or len(set(sites)) != len(sites):
        raise InvalidSurvey(f"{name}: the sites must be distinct non-empty names, got {sites!r}")
    check_survey(survey, name)
    wanted = set(site_questions(survey))
    spec = [dict(q, choices="\n".join(sites)) if q["variable"] in wanted else dict(q) for q in survey["spec"]]
    return check_survey(dict(survey, spec=spec), name)
