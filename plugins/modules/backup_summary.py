#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: backup_summary
short_description: Summarise a backup run of Hanzo KMS, find what failed and what was skipped
version_added: 0.1.0
description:
  - Builds the report of the C(hanzo.kms.backup) playbook from what each site's part of the run recorded, the Redis
    retention run and the listing of the Redis backups after it.
  - Returns the summary (the JSON report and the job's artifact), the problems that fail the job, what was skipped,
    and the lines to print, with the age of the newest backup of each kind.
  - The primary Cluster's site must be backed up. A passive site whose Kubernetes API or Redis does not answer is
    skipped.
  - Computes only. It reads and changes nothing, so it runs in check mode too and never reports C(changed).
author:
  - Hanzo KMS platform team (@hanzoai)
attributes:
  check_mode:
    support: full
    description: The summary says the run was in check mode, and the Redis line says what would be backed up.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
options:
  sites:
    description:
      - One entry per site, as the playbook recorded it.
    type: list
    elements: dict
    required: true
    suboptions:
      site:
        description: The site's name.
        type: str
        required: true
      cluster:
        description: Name of the site's CNPG Cluster.
        type: str
        required: true
      cluster_exists:
        description: Whether the Cluster exists.
        type: bool
        default: false
      kube_reachable:
        description: Whether the site's Kubernetes API answered.
        type: bool
        default: false
      kube_error:
        description: Why the Kubernetes API did not answer.
        type: str
        default: ''
      cnpg_backups:
        description: The site's CNPG Backup objects (the newest completed one of O(sites[].cluster) is reported).
        type: list
        elements: dict
        default: []
      cnpg_result:
        description: The C(cnpg_backup_result) of the C(hanzo.kms.cnpg_backup) role, when it ran.
        type: dict
      cnpg_error:
        description: Why the CNPG Backup failed, when it did.
        type: str
      redis_host:
        description: Where the site's Redis was reached.
        type: str
        default: ''
      redis_port:
        description: Port of the site's Redis.
        type: int
        default: 6379
      redis_probe:
        description: The registered result of the probe of the site's Redis port (C(ansible.builtin.wait_for)).
        type: dict
        default: {}
      redis_result:
        description: The C(redis_backup_result) of the C(hanzo.kms.redis_backup) role, when it ran.
        type: dict
      redis_error:
        description: Why the Redis backup failed, when it did.
        type: str
  primary_cluster:
    description:
      - Name of the primary CNPG Cluster.
    type: str
    required: true
  cnpg_enabled:
    description:
      - Whether the run backs up PostgreSQL. A primary without a CNPG Backup is a problem only then.
    type: bool
    default: true
  redis_enabled:
    description:
      - Whether the run backs up Redis. A primary without a Redis backup, and a failed retention, are problems only
        then.
    type: bool
    default: true
  retention:
    description:
      - The registered result of M(hanzo.kms.s3_retention). Empty when retention is off.
    type: dict
    default: {}
  listing:
    description:
      - The registered result of M(hanzo.kms.s3_backup_info) for every site, after the retention run.
    type: dict
    default: {}
  redis_error:
    description:
      - Why the retention run or the listing failed, when it did.
    type: str
seealso:
  - module: hanzo.kms.s3_backup_info
  - module: hanzo.kms.s3_retention
"""

EXAMPLES = r"""
- name: Summarise the backups
  hanzo.kms.backup_summary:
    sites: "{{ ansible_play_hosts | map('extract', hostvars, 'backup_site') | list }}"
    primary_cluster: kms-pg-dc1
    retention: "{{ backup_retention }}"
    listing: "{{ backup_redis_listing }}"
  register: backup_summary

- name: Print it
  ansible.builtin.debug:
    msg: "{{ backup_summary.lines }}"
"""

RETURN = r"""
report:
  description:
    - The summary of the run with its problems and what was skipped, as the JSON report holds it.
    - C(sites[]) has per site its Cluster and role, the CNPG Backup taken and the newest completed one with its age,
      the Redis endpoint, the Redis backup taken and the newest complete one with its age.
  returned: always
  type: dict
  contains:
    time:
      description: When the summary was made (UTC).
      type: str
    check_mode:
      description: Whether the run was in check mode.
      type: bool
    primary_cluster:
      description: The primary CNPG Cluster.
      type: str
    sites:
      description: One entry per site.
      type: list
      elements: dict
    retention:
      description: The retention run (C(summary), C(deleted)) and each site's newest complete Redis backup
        (C(newest)); C(ok) false and C(message) when it failed.
      type: dict
    problems:
      description: Same as RV(problems).
      type: list
      elements: str
    skipped:
      description: Same as RV(skipped).
      type: list
      elements: str
problems:
  description: What failed; the job fails when there is any.
  returned: always
  type: list
  elements: str
  sample: ["dc1: the active site's Redis at 10.0.0.5:6379 did not answer"]
skipped:
  description: What was skipped because a passive site did not answer.
  returned: always
  type: list
  elements: str
  sample: ['dc2: Kubernetes API unreachable, no CNPG Backup (connection refused)']
lines:
  description: The lines to print.
  returned: always
  type: list
  elements: str
message:
  description: The problems joined by C(; ), or a line saying the backups are done (and what was skipped).
  returned: always
  type: str
  sample: Backups done.
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hanzo.kms.plugins.module_utils.backup_summary import SITE_OPTIONS, summarize_backup


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sites=dict(type="list", elements="dict", required=True, options=SITE_OPTIONS),
            primary_cluster=dict(type="str", required=True),
            cnpg_enabled=dict(type="bool", default=True),
            redis_enabled=dict(type="bool", default=True),
            retention=dict(type="dict", default={}),
            listing=dict(type="dict", default={}),
            redis_error=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    module.exit_json(changed=False, **summarize_backup(module.params, check_mode=module.check_mode))


if __name__ == "__main__":
    main()
