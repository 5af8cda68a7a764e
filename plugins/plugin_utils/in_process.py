# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a pure-logic module in the controller's process when its task runs on the control node.

A module run costs about a second on a loaded control node (a Python process, the AnsiballZ payload), and a failover
writes its report and decides its preflight between dc1's loss and the LB switch: that is RTO. The work is the same
function the module calls (``work``), with the same argument spec; on any other host, or with become, the module
runs there as usual.
"""

from __future__ import annotations

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.errors import UnsupportedError
from ansible.plugins.action import ActionBase

from ansible_collections.hanzo.kms.plugins.module_utils.module_run import ModuleFailure


class InProcessAction(ActionBase):
    """Subclasses set MODULE (the module's FQCN), ARGUMENT_SPEC, VALIDATION (keyword arguments of
    ArgumentSpecValidator, e.g. required_by) and ``work(params, check_mode)`` returning the module's result."""

    MODULE = ""
    ARGUMENT_SPEC = {}
    VALIDATION = {}
    TRANSFERS_FILES = False

    def work(self, params, check_mode):
        raise NotImplementedError

    def in_process(self):
        """The task runs on the control node as the controller's user: the module would do the same here."""
        return self._connection.transport == "local" and not self._play_context.become

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        if not self.in_process():
            result.update(
                self._execute_module(module_name=self.MODULE, module_args=self._task.args, task_vars=task_vars)
            )
            return result
        validation = ArgumentSpecValidator(self.ARGUMENT_SPEC, **self.VALIDATION).validate(self._task.args)
        if validation.error_messages:
            msg = validation.errors.msg  # the first error, worded as AnsibleModule words it
            if isinstance(validation.errors[0], UnsupportedError):
                msg = f"Unsupported parameters for ({self.MODULE}) module: {msg}"
            result.update(failed=True, msg=msg)
            return result
        try:
            result.update(self.work(validation.validated_parameters, bool(self._play_context.check_mode)))
        except ModuleFailure as exc:
            result.update(exc.result, failed=True, msg=exc.msg)
        return result
