#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: s3_backup_info
short_description: List the Redis backups of each site in S3-compatible storage
version_added: 0.1.0
description:
  - Lists the Redis backups under C(<prefix>/<site>/) in O(bucket), the layout written by M(hanzo.kms.redis_rdb_backup)
    and the C(redis) role's backup CronJob, C(<prefix>/<site>/<UTC timestamp>/dump.rdb) and C(manifest.json).
  - Returns every backup with its key prefix, time, age, size, manifest and whether it is complete (and why not), and
    per site the newest complete backup.
  - A backup is complete when its directory holds both objects and, with O(read_manifests), its manifest is valid, is
    for C(dump.rdb) at the directory's time and gives the RDB object's size.
  - Read-only. It never changes anything, so it runs in check mode too and never reports C(changed).
author:
  - Hanzo KMS platform team (@hanzoai)
extends_documentation_fragment:
  - hanzo.kms.s3
attributes:
  check_mode:
    support: full
    description: Lists the backups, as outside check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
options:
  bucket:
    description:
      - Name of the bucket holding the backups.
    type: str
    required: true
  prefix:
    description:
      - Key prefix of the Redis backups, above the site directories. Surrounding V(/) are ignored.
      - An empty prefix means the sites are directories at the bucket's top level.
    type: str
    default: redis
  sites:
    description:
      - The sites to list. Each C(<prefix>/<site>/) is listed on its own, and each site is in RV(sites) even without
        backups.
      - When omitted, the whole C(<prefix>/) is listed and every site found there is reported.
    type: list
    elements: str
  read_manifests:
    description:
      - Read the manifest of every backup whose listing looks complete (one C(GetObject) each) and check it. Its
        fields are returned in RV(backups[].manifest).
      - With V(false) a backup is complete when both objects are listed, and RV(backups[].manifest) is null.
    type: bool
    default: true
  concurrency:
    description:
      - Number of manifests read in parallel.
    type: int
    default: 8
notes:
  - The ages are computed from the control node's clock.
  - Keys under the listed prefixes that are not part of the layout are returned in RV(unrecognised).
seealso:
  - module: hanzo.kms.s3_retention
  - module: hanzo.kms.redis_rdb_backup
"""

EXAMPLES = r"""
- name: List the Redis backups of every site
  hanzo.kms.s3_backup_info:
    endpoint_url: https://s3.example.com
    access_key: "{{ s3_access_key }}"
    secret_key: "{{ s3_secret_key }}"
    addressing_style: path
    bucket: kms-backups
    prefix: redis
  register: redis_backups

- name: Show the age of each site's newest complete backup
  ansible.builtin.debug:
    msg: "{{ item.key }}: {{ item.value.newest.age_seconds | default('no complete backup') }}"
  loop: "{{ redis_backups.sites | dict2items }}"

- name: The newest complete backup of dc1, without reading manifests
  hanzo.kms.s3_backup_info:
    endpoint_url: https://s3.example.com
    bucket: kms-backups
    sites: [dc1]
    read_manifests: false
  register: dc1_backups
"""

RETURN = r"""
backups:
  description: Every backup found, per site (sorted) newest first.
  returned: always
  type: list
  elements: dict
  contains:
    site:
      description: The site.
      type: str
      sample: dc1
    name:
      description: The backup's directory name, its UTC time.
      type: str
      sample: 20261122T041500Z
    prefix:
      description: Key prefix of the backup's objects.
      type: str
      sample: redis/dc1/20261122T041500Z/
    time:
      description: The backup's time (UTC), from its key.
      type: str
      sample: '2026-11-22T04:15:00Z'
    age_seconds:
      description: Seconds from the backup's time to now.
      type: int
      sample: 3600
    complete:
      description: Whether the backup is complete and can be restored.
      type: bool
      sample: true
    incomplete_reason:
      description: Why the backup is not complete, null when it is.
      type: str
      sample: redis/dc1/20261122T041500Z/ has no manifest.json
    objects:
      description: Number of objects of the backup.
      type: int
      sample: 2
    size:
      description: Total size of its objects in bytes.
      type: int
      sample: 104858000
    rdb_key:
      description: Key of the RDB object, null when there is none.
      type: str
      sample: redis/dc1/20261122T041500Z/dump.rdb
    rdb_size:
      description: Size of the RDB object in bytes, null when there is none.
      type: int
      sample: 104857600
    manifest_key:
      description: Key of the manifest, null when there is none.
      type: str
      sample: redis/dc1/20261122T041500Z/manifest.json
    written:
      description: LastModified of the backup's newest object (server clock).
      type: str
      sample: '2026-11-22T04:15:07Z'
    manifest:
      description: The manifest's fields (format 1) of a complete backup when O(read_manifests), else null.
      type: dict
      sample: {format: 1, keys: 1500, keys_per_db: {'0': 1500}, size: 104857600, sha256: 9f86d08...}
sites:
  description: Per site, the number of backups and the newest complete one.
  returned: always
  type: dict
  contains:
    backups:
      description: Number of backups.
      type: int
    complete:
      description: Number of complete backups.
      type: int
    incomplete:
      description: Number of incomplete backups.
      type: int
    newest:
      description: The newest complete backup (an entry of RV(backups), with its C(age_seconds)), null when none.
      type: dict
  sample: {dc1: {backups: 3, complete: 2, incomplete: 1, newest: {prefix: redis/dc1/20261122T041500Z/,
          age_seconds: 3600}}}
unrecognised:
  description: Keys under the listed prefixes that are not part of the layout, sorted.
  returned: always
  type: list
  elements: str
  sample: [redis/README.txt]
now:
  description: The time the ages are computed from (control node clock, UTC).
  returned: always
  type: str
  sample: '2026-11-22T05:15:00Z'
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.hanzo.kms.plugins.module_utils.s3 import (
    BOTO3_IMPORT_ERROR,
    HAS_BOTO3,
    S3Error,
    s3_argument_spec,
    s3_client,
)
from ansible_collections.hanzo.kms.plugins.module_utils.s3_backup_info import (
    DEFAULT_CONCURRENCY,
    BackupInfoError,
    check_options,
    list_backups,
)


def main():
    argument_spec = s3_argument_spec()
    argument_spec.update(
        bucket=dict(type="str", required=True),
        prefix=dict(type="str", default="redis"),
        sites=dict(type="list", elements="str"),
        read_manifests=dict(type="bool", default=True),
        concurrency=dict(type="int", default=DEFAULT_CONCURRENCY),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    try:
        check_options(params["prefix"], params["sites"], params["concurrency"])
    except BackupInfoError as exc:
        module.fail_json(msg=str(exc))
    if not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=BOTO3_IMPORT_ERROR)

    try:
        client = s3_client(params, max_pool_connections=max(10, params["concurrency"]))
        result = list_backups(
            client,
            params["bucket"],
            params["prefix"],
            sites=params["sites"],
            read_manifests=params["read_manifests"],
            concurrency=params["concurrency"],
        )
    except S3Error as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # pylint: disable=broad-exception-caught
        module.fail_json(msg=f"s3_backup_info failed: {exc}", exception=traceback.format_exc())
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
