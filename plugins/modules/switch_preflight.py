#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: switch_preflight
short_description: Decide whether a Hanzo KMS failover or switchover to a site may proceed
version_added: 0.1.0
description:
  - Pure decision on the control node, no I/O. Takes the status of every site (as gathered by the
    C(hanzo.kms.site_status) role) and decides whether moving the active site to O(target_site) may proceed.
  - The current primary (the old site) is discovered from the CNPG Clusters, never from the inventory's C(site_role),
    which a failover makes stale. When the old site is unreachable it is the site the target replicates from.
  - "Refuses (fails, naming every reason) when: the target is unknown or unreachable, has no Cluster, or its Cluster
    is not a healthy replica of another site (unless it is already promoted: a re-run); its Redis does not answer
    while a restore is still due; for O(mode=switchover) also when the old site is unreachable or its primary is not
    healthy, or its Redis does not answer (the fresh backup is impossible)."
  - "Reports the state: V(fresh) (nothing done), V(resume) (an earlier run stopped midway) or V(done) (CNPG already
    promoted; the remaining steps only check), and the data-loss bound: for a failover the age of the old site's
    newest archived WAL and of its newest complete Redis backup; zero for a switchover."
author:
  - Hanzo KMS platform team (@hanzoai)
attributes:
  check_mode:
    support: full
    description: Pure computation; runs the same in check mode.
  diff_mode:
    support: none
    description: No diff is produced.
options:
  mode:
    description:
      - V(failover) (the old site is lost or is fenced) or V(switchover) (planned, both sites healthy).
    type: str
    required: true
    choices: [failover, switchover]
  target_site:
    description:
      - The site that becomes active.
    type: str
    required: true
  sites:
    description:
      - The status of every site, as set by the C(hanzo.kms.site_status) role in C(site_status_result).
    type: list
    elements: dict
    required: true
  require_promoted:
    description:
      - Refuse unless the target's Cluster is already the promoted primary (state V(done)). For a run that may only
        finish an earlier failover, such as fencing an old site that came back (C(hanzo.kms.fence)); it never promotes.
    type: bool
    default: false
  fail_on_refusal:
    description:
      - Fail the task when the operation is refused. With V(false) the decision is only returned.
    type: bool
    default: true
seealso:
  - module: hanzo.kms.cnpg_promote
  - module: hanzo.kms.operation_report
"""

EXAMPLES = r"""
- name: May we fail over to dc2?
  hanzo.kms.switch_preflight:
    mode: failover
    target_site: dc2
    sites: "{{ groups['kms_sites'] | map('extract', hostvars, 'site_status_result') | list }}"
  register: preflight
"""

RETURN = r"""
ok:
  description: Whether the operation may proceed.
  returned: always
  type: bool
refusals:
  description: Why it may not.
  returned: always
  type: list
  elements: str
warnings_found:
  description: Things the operator should know (old site unreachable and not fenced, it will be fenced, split brain).
  returned: always
  type: list
  elements: str
old_site:
  description: The current (or former) primary site.
  returned: always
  type: str
  sample: dc1
state:
  description: V(fresh), V(resume) or V(done).
  returned: always
  type: str
cnpg_state:
  description: The target Cluster as found, V(replica), V(promoting) or V(promoted).
  returned: always
  type: str
phrase:
  description: The confirmation phrase for this operation, for example C(FAILOVER TO dc2).
  returned: always
  type: str
data_loss:
  description: C(postgres) and C(redis), each with C(bound_seconds) (null when unknown), C(basis) and, for a
    failover, C(since) (the time of the newest archived WAL or Redis backup of the old site; writes acknowledged
    before it are kept).
  returned: always
  type: dict
sites:
  description: The normalized summary of every site.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hanzo.kms.plugins.module_utils.module_run import ModuleFailure
from ansible_collections.hanzo.kms.plugins.module_utils.operations import PREFLIGHT_ARGUMENT_SPEC, run_preflight


def main():
    # On the control node the action plugin (plugins/action/switch_preflight.py) runs the same work in-process.
    module = AnsibleModule(argument_spec=PREFLIGHT_ARGUMENT_SPEC, supports_check_mode=True)
    try:
        decision = run_preflight(module.params, module.check_mode)
    except ModuleFailure as exc:
        for warning in exc.result.get("warnings_found", []):
            module.warn(warning)
        module.fail_json(msg=exc.msg, **exc.result)
    for warning in decision["warnings_found"]:
        module.warn(warning)
    module.exit_json(**decision)


if __name__ == "__main__":
    main()
