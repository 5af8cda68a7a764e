#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: operation_report
short_description: Record the steps of a Hanzo KMS operation and write its Markdown and JSON report
version_added: 0.1.0
description:
  - Keeps the report of one failover, switchover or status run as C(<dir>/<name>.json) and renders
    C(<dir>/<name>.md) from it after every call, so the report on disk is current even when the run stops midway.
    With O(latest) it also writes C(<dir>/<operation>-latest.json) and C(.md).
  - The report is the playbooks' output, not managed state, so the task never reports C(changed); a re-run of a
    playbook that changes nothing on the sites then shows 0 changed.
  - Each call can record one step (O(step) with O(result); the first call of a step sets its start time, a final
    result its end time and duration), merge top-level fields (O(update)), store a snapshot of the sites and load
    balancers (O(sites), O(lb), O(snapshot)) and close the report (O(finish)).
  - Without O(dir) nothing is written and the rendered Markdown is only returned (the status playbook).
author:
  - Hanzo KMS platform team (@hanzoai)
attributes:
  check_mode:
    support: full
    description: Renders the report and writes nothing.
  diff_mode:
    support: none
    description: No diff is produced.
options:
  dir:
    description:
      - Directory of the report files (created when missing).
    type: path
  name:
    description:
      - Base name of this run's files, for example V(failover-dc2-20261129T130000Z).
      - Required with O(dir).
    type: str
  operation:
    description:
      - What the report is about.
    type: str
    required: true
    choices: [failover, switchover, status]
  step:
    description:
      - Name of the step to record.
    type: str
  result:
    description:
      - Result of O(step). V(running) marks its start.
    type: str
    choices: [running, ok, changed, skipped, failed]
    default: running
  next_step:
    description:
      - Name of the step that starts now, recorded as V(running) in the same write as O(step)'s result (or as the
        first step of a report being opened). One report write between two steps instead of two.
    type: str
  detail:
    description:
      - One line about what the step found or did.
    type: str
  data:
    description:
      - Structured details of the step, kept in the JSON report.
    type: dict
  update:
    description:
      - Top-level fields merged into the report, for example C(target), C(old_site), C(preflight), C(data_loss),
        C(error).
    type: dict
  sites:
    description:
      - Site statuses (as set by the C(hanzo.kms.site_status) role) to summarize into the report.
    type: list
    elements: dict
  lb:
    description:
      - Load balancer views (RV(hanzo.kms.haproxy_info#module:instances)).
    type: list
    elements: dict
  snapshot:
    description:
      - Whether O(sites) and O(lb) describe the state before or after the operation, or the current state (status).
    type: str
    choices: [before, after, current]
    default: current
  finish:
    description:
      - Close the report with this result; steps still running are marked failed.
    type: str
    choices: [succeeded, failed]
  latest:
    description:
      - Also write C(<operation>-latest.json) and C(<operation>-latest.md) in O(dir).
    type: bool
    default: true
  mode:
    description:
      - Permissions of the report files, as an octal number (V('0640')). Reports hold site states, the confirmation,
        who ran the operation and error texts, so by default only the owner can read them.
      - Applied to every file the call writes, and to unchanged files of this run, whatever the umask.
    type: raw
    default: '0600'
seealso:
  - module: hanzo.kms.switch_preflight
"""

EXAMPLES = r"""
- name: Record the start of the promotion step
  hanzo.kms.operation_report:
    dir: /var/log/hanzo-kms
    name: failover-dc2-20261129T130000Z
    operation: failover
    step: promote
    result: running

- name: Record its end
  hanzo.kms.operation_report:
    dir: /var/log/hanzo-kms
    name: failover-dc2-20261129T130000Z
    operation: failover
    step: promote
    result: changed
    detail: kms-pg-dc2 promoted without a token, timeline 2
"""

RETURN = r"""
report:
  description: The whole report (what the JSON file holds).
  returned: always
  type: dict
markdown:
  description: The rendered Markdown.
  returned: always
  type: str
json_path:
  description: Path of the JSON report.
  returned: when O(dir) is set
  type: str
markdown_path:
  description: Path of the Markdown report.
  returned: when O(dir) is set
  type: str
written:
  description: The run's report files whose content changed in this call.
  returned: when O(dir) is set, not in check mode
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hanzo.kms.plugins.module_utils.module_run import ModuleFailure
from ansible_collections.hanzo.kms.plugins.module_utils.operations import (
    REPORT_ARGUMENT_SPEC,
    REPORT_VALIDATION,
    run_report,
)


def main():
    # On the control node the action plugin (plugins/action/operation_report.py) runs the same work in-process.
    module = AnsibleModule(argument_spec=REPORT_ARGUMENT_SPEC, supports_check_mode=True, **REPORT_VALIDATION)
    try:
        module.exit_json(**run_report(module.params, module.check_mode))
    except ModuleFailure as exc:
        module.fail_json(msg=exc.msg, **exc.result)


if __name__ == "__main__":
    main()
