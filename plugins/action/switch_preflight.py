# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""hanzo.kms.switch_preflight in the controller's process on the control node (it decides before the failover's
first change); the module elsewhere."""

from __future__ import annotations

from ansible_collections.hanzo.kms.plugins.module_utils.module_run import ModuleFailure
from ansible_collections.hanzo.kms.plugins.module_utils.operations import PREFLIGHT_ARGUMENT_SPEC, run_preflight
from ansible_collections.hanzo.kms.plugins.plugin_utils.in_process import InProcessAction


class ActionModule(InProcessAction):
    MODULE = "hanzo.kms.switch_preflight"
    ARGUMENT_SPEC = PREFLIGHT_ARGUMENT_SPEC

    def work(self, params, check_mode):
        try:
            decision = run_preflight(params, check_mode)
        except ModuleFailure as exc:
            exc.result["warnings"] = list(exc.result.get("warnings_found", []))
            raise
        return dict(decision, warnings=list(decision["warnings_found"]))
