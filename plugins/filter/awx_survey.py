# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja filter hanzo.kms.awx_survey (documented in awx_survey.yml)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.hanzo.kms.plugins.module_utils.awx_survey import InvalidSurvey, with_sites


def awx_survey(survey, sites, name="survey"):
    """``survey`` with its site questions offering ``sites``, after AWX's validation rules."""
    try:
        return with_sites(survey, sites, name)
    except InvalidSurvey as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    """hanzo.kms.awx_survey."""

    def filters(self):
        return {"awx_survey": awx_survey}
