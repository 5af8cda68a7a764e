# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""hanzo.kms.operation_report in the controller's process on the control node (a failover writes its report at
every step, before the LB switch); the module elsewhere."""

from __future__ import annotations

from ansible_collections.hanzo.kms.plugins.module_utils.operations import (
    REPORT_ARGUMENT_SPEC,
    REPORT_VALIDATION,
    run_report,
)
from ansible_collections.hanzo.kms.plugins.plugin_utils.in_process import InProcessAction


class ActionModule(InProcessAction):
    MODULE = "hanzo.kms.operation_report"
    ARGUMENT_SPEC = REPORT_ARGUMENT_SPEC
    VALIDATION = REPORT_VALIDATION

    def work(self, params, check_mode):
        return run_report(params, check_mode)
