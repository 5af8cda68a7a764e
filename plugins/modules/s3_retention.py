#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: s3_retention
short_description: Prune backup sets in S3-compatible storage with restic-style retention rules
version_added: 0.1.0
description:
  - Lists the backups under O(prefix) in O(bucket), decides which to keep with restic C(forget) semantics (rules are
    ORed, one backup per calendar hour/day/ISO week/month/year, empty periods do not count) and deletes the others.
  - The layout is declared, never guessed, because the bucket is usually shared with other data such as CNPG's WAL
    archive and base backups. A backup is a directory C(<prefix>/<group...>/<backup>/) whose name parses with
    O(timestamp_format) (or matches O(name_pattern)) and which holds a data file named in O(data_files), for example
    C(redis/dc1/20261122T041500Z/dump.rdb) and C(redis/dc1/20261122T041500Z/manifest.json), the collection's Redis
    layout and the defaults. It is complete when its manifest (O(manifest_name)) exists, and incomplete when it has
    a data file but no manifest. Rules are applied to the complete backups of each group separately.
  - Everything else is returned in RV(unrecognised) and never deleted, whatever O(time_source) is. That includes keys
    outside the layout, directories whose name is not a backup name, a manifest without a data file, and files of a
    backup directory that are neither its manifest nor a data file (they stay when the backup is deleted).
  - An empty prefix (the whole bucket) is refused unless O(whole_bucket=true).
  - Safety floors on top of the rules, per group. The newest complete backup is never deleted, and neither is the
    complete backup whose manifest the server wrote last, which protects against skewed or future timestamps.
    At least O(min_keep) complete backups are kept.
  - The plan is computed first and returned in RV(backups), with the rules that keep each backup. In check mode
    nothing is deleted and the plan is exactly what a real run would do.
  - Deletion uses C(DeleteObjects) with up to 1000 keys per request. A backup's manifest is deleted before its
    other objects, so a half-deleted backup never looks complete. Per-key errors in a successful response fail the
    task and are listed in RV(errors).
author:
  - Hanzo KMS platform team (@hanzoai)
extends_documentation_fragment:
  - hanzo.kms.s3
attributes:
  check_mode:
    support: full
    description: Returns the plan and deletes nothing.
  diff_mode:
    support: full
    description: Shows the backups before and after retention.
options:
  bucket:
    description:
      - Name of the bucket holding the backups.
    type: str
    required: true
  prefix:
    description:
      - Key prefix under which the backups are stored, for example V(redis) or V(redis/dc1). It is a directory, a
        trailing V(/) is added if missing, so V(redis/dc1) never matches C(redis/dc10/).
      - Required unless O(whole_bucket=true). An empty or V(/) prefix is refused unless O(whole_bucket=true).
    type: str
  whole_bucket:
    description:
      - Declare that every object in O(bucket) is a backup of this layout, and apply retention to the whole bucket
        (with O(prefix) omitted or empty).
      - Never set this on a bucket shared with other data, such as CNPG's WAL archive and base backups; use O(prefix)
        instead. Even then only directories of the declared layout are considered.
    type: bool
    default: false
  group_depth:
    description:
      - Number of key components between O(prefix) and the backup component. They name the group that the rules
        apply to separately, for example the site in C(<prefix>/<site>/<timestamp>/).
      - V(0) means the backups are directly under O(prefix).
    type: int
    default: 1
  name_pattern:
    description:
      - Python regular expression the backup component must match in full, for layouts whose backup names are not
        timestamps.
      - When omitted, the backup component must parse with O(timestamp_format), whatever O(time_source) is. With
        O(time_source=key) the name must also parse with O(timestamp_format), because the time comes from it.
    type: str
  data_files:
    description:
      - Names of the data files of a backup (C(fnmatch) patterns allowed, no V(/)). A directory is a backup only if it
        holds at least one of them; a backup consists of its data files and its manifest.
      - The default is the collection's Redis layout (C(redis_rdb_backup) and the C(redis) role's backup CronJob).
    type: list
    elements: str
    default: [dump.rdb]
  time_source:
    description:
      - Where a backup's time comes from.
      - V(key) parses the backup key component with O(timestamp_format).
      - V(manifest) reads O(manifest_time_field) from the JSON manifest, which costs one C(GetObject) per complete
        backup. The field may hold O(timestamp_format), ISO 8601 or epoch seconds.
      - V(last_modified) uses the LastModified of the manifest, or of the newest object for incomplete backups.
    type: str
    choices: [key, manifest, last_modified]
    default: key
  timestamp_format:
    description:
      - C(strptime) format of the backup key component, in UTC unless the format has C(%z).
    type: str
    default: '%Y%m%dT%H%M%SZ'
  manifest_name:
    description:
      - Name of the object that marks a backup complete. It is written last by the backup job and deleted first.
      - A directory with a manifest but no data file (O(data_files)) is not a backup, it is unrecognised.
    type: str
    default: manifest.json
  manifest_time_field:
    description:
      - JSON field of the manifest holding the backup time, used with O(time_source=manifest).
    type: str
    default: timestamp
  keep_last:
    description:
      - Keep the N newest backups. V(-1) keeps all.
    type: int
  keep_hourly:
    description:
      - For the last N hours that have backups, keep the newest backup of each hour. V(-1) means unlimited.
    type: int
  keep_daily:
    description:
      - For the last N days that have backups, keep the newest backup of each day (UTC). V(-1) means unlimited.
    type: int
  keep_weekly:
    description:
      - For the last N ISO weeks that have backups, keep the newest backup of each week. V(-1) means unlimited.
    type: int
  keep_monthly:
    description:
      - For the last N months that have backups, keep the newest backup of each month. V(-1) means unlimited.
    type: int
  keep_yearly:
    description:
      - For the last N years that have backups, keep the newest backup of each year. V(-1) means unlimited.
    type: int
  keep_within:
    description:
      - Keep every backup within this duration of the newest backup that is not in the future, for example
        V(30d), V(2y6m) or V(1y2m3d4h) (restic syntax, C(m) is months).
    type: str
  min_keep:
    description:
      - Keep at least this many complete backups per group, newest first, whatever the rules say.
    type: int
    default: 1
  delete_incomplete:
    description:
      - Delete incomplete backups (a data file of O(data_files) but no manifest) whose newest object is older than
        O(incomplete_grace) by the server's clock. Directories without a data file are never deleted.
    type: bool
    default: true
  incomplete_grace:
    description:
      - How long an incomplete backup may still be in progress (restic duration syntax). Empty means no grace.
    type: str
    default: 1d
  purge_versions:
    description:
      - On a versioned bucket, delete every version and delete marker of the removed backups by version ID, and
        purge the leftover versions of backups that were deleted earlier. Without this, deleting in a versioned
        bucket only adds delete markers and the data keeps using storage.
      - Versions under Object Lock retention or legal hold cannot be deleted. They are reported in RV(errors)
        with C(locked) set, and the task fails. Nothing is retried.
    type: bool
    default: false
  concurrency:
    description:
      - Number of parallel requests for deletion and for reading manifests. Deletion is bound by the server's
        per-key work, so parallel requests shorten it; lower this for a server that throttles.
    type: int
    default: 32
notes:
  - The policy is refused when no C(keep_*) option is set (as restic does), rather than deleting everything.
  - Options are checked (policy, durations, prefix, O(data_files), O(name_pattern)) before any request is sent.
  - Rules use UTC calendar periods. O(keep_within) ignores backups with a future time when finding the newest.
  - The number of list requests is ceil(objects/1000). Delete requests are ceil(deleted objects/1000) when at
    least 1000 backups are deleted, otherwise at most one more, because manifests go first.
seealso:
  - name: restic forget
    description: The retention semantics this module copies.
    link: https://restic.readthedocs.io/en/stable/060_forget.html
"""

EXAMPLES = r"""
- name: Keep 7 daily, 5 weekly and 12 monthly Redis backups per site
  hanzo.kms.s3_retention:
    endpoint_url: https://s3.example.com
    access_key: "{{ s3_access_key }}"
    secret_key: "{{ s3_secret_key }}"
    addressing_style: path
    bucket: kms-backups
    prefix: redis
    keep_daily: 7
    keep_weekly: 5
    keep_monthly: 12

- name: Show what would be deleted
  hanzo.kms.s3_retention:
    endpoint_url: https://s3.example.com
    bucket: kms-backups
    prefix: redis
    keep_last: 10
  check_mode: true
  diff: true
  register: plan

- name: A bucket that holds nothing but Redis backups, per site at its root
  hanzo.kms.s3_retention:
    endpoint_url: https://s3.example.com
    bucket: kms-redis-backups
    whole_bucket: true
    keep_daily: 7

- name: Another layout, <prefix>/<name>/part-N.bin + done.json, names like nightly-2026-11-22
  hanzo.kms.s3_retention:
    endpoint_url: https://s3.example.com
    bucket: kms-backups
    prefix: exports
    group_depth: 0
    name_pattern: 'nightly-\d{4}-\d{2}-\d{2}'
    data_files: ['part-*.bin']
    manifest_name: done.json
    time_source: last_modified
    keep_last: 7

- name: Prune a versioned bucket for real (versions and delete markers too)
  hanzo.kms.s3_retention:
    endpoint_url: https://s3.example.com
    bucket: kms-backups
    prefix: redis
    keep_within: 14d
    min_keep: 3
    purge_versions: true
"""

RETURN = r"""
backups:
  description: Every backup found, per group newest first, with the decision and the rules that keep it.
  returned: always
  type: list
  elements: dict
  contains:
    group:
      description: The group components joined by C(/), for example the site.
      type: str
      sample: dc1
    name:
      description: The backup key component.
      type: str
      sample: 20261122T041500Z
    prefix:
      description: Key prefix of the backup's objects.
      type: str
      sample: redis/dc1/20261122T041500Z/
    complete:
      description: Whether the manifest exists.
      type: bool
      sample: true
    time:
      description: The backup time used by the rules (UTC), or null when unknown.
      type: str
      sample: '2026-11-22T04:15:00Z'
    written:
      description: LastModified of the backup's newest object (server clock).
      type: str
      sample: '2026-11-22T04:15:07Z'
    objects:
      description: Number of objects.
      type: int
      sample: 2
    size:
      description: Total size in bytes.
      type: int
      sample: 104857600
    action:
      description:
        - V(keep) or V(delete) (planned, or done outside check mode).
        - V(delete_failed) if its manifest could not be deleted, in which case its data was left alone.
      type: str
      sample: keep
    reasons:
      description: Why the backup is kept (rules and floors), or why an incomplete backup is deleted.
      type: list
      elements: str
      sample: [daily backup, weekly backup, newest complete backup]
    time_error:
      description: Why the time could not be read from the manifest.
      type: str
      returned: when the time is unknown
purged:
  description: Backups without any current object whose old versions and delete markers were purged
    (O(purge_versions=true) only). Each entry has the same fields as RV(backups).
  returned: always
  type: list
  elements: dict
unrecognised:
  description:
    - Keys under O(prefix) that are not part of a backup of the declared layout, sorted. They are never deleted.
    - Includes other data sharing the bucket (for example CNPG's C(wals/) and C(base/)), a manifest without a data
      file, and files of a backup directory that are neither its manifest nor a data file.
  returned: always
  type: list
  elements: str
  sample: [redis/README.txt]
summary:
  description: Counts.
  returned: always
  type: dict
  contains:
    backups:
      description: Backups found.
      type: int
    complete:
      description: Complete backups.
      type: int
    incomplete:
      description: Incomplete backups.
      type: int
    kept:
      description: Backups kept.
      type: int
    deleted:
      description: Backups deleted (or to delete in check mode).
      type: int
    objects:
      description: Objects in recognised backups.
      type: int
    objects_deleted:
      description: Keys or versions deleted (or to delete in check mode).
      type: int
    leftovers_purged:
      description: Number of RV(purged) backups.
      type: int
    unrecognised:
      description: Number of unrecognised keys.
      type: int
    groups:
      description: Number of groups.
      type: int
    versioned:
      description: Whether versions were listed (O(purge_versions=true) on a versioned bucket).
      type: bool
    server_time:
      description: The server's clock (Date header of the first list response).
      type: str
    now:
      description: The time used for O(incomplete_grace) and future-time checks.
      type: str
  sample:
    backups: 30
    complete: 29
    incomplete: 1
    kept: 12
    deleted: 18
    objects: 59
    objects_deleted: 36
    leftovers_purged: 0
    unrecognised: 0
    groups: 2
    versioned: false
    server_time: '2026-11-22T05:00:00Z'
    now: '2026-11-22T05:00:00Z'
api_calls:
  description: Number of S3 requests by operation.
  returned: always
  type: dict
  sample: {ListObjectsV2: 1, DeleteObjects: 1}
errors:
  description: Per-key errors from DeleteObjects. When not empty, the task fails.
  returned: always
  type: list
  elements: dict
  contains:
    key:
      description: Object key.
      type: str
    version_id:
      description: Version ID, for version deletes.
      type: str
    code:
      description: S3 error code, for example C(AccessDenied).
      type: str
    message:
      description: S3 error message.
      type: str
    locked:
      description: Object Lock retention or legal hold found on the version.
      type: str
      returned: when the version is locked
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
from ansible_collections.hanzo.kms.plugins.module_utils.s3_retention import (
    RetentionError,
    run_retention,
)

KEEP_OPTIONS = ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_within"]


def main():
    argument_spec = s3_argument_spec()
    argument_spec.update(
        bucket=dict(type="str", required=True),
        prefix=dict(type="str"),
        whole_bucket=dict(type="bool", default=False),
        group_depth=dict(type="int", default=1),
        name_pattern=dict(type="str"),
        data_files=dict(type="list", elements="str", default=["dump.rdb"]),
        time_source=dict(type="str", choices=["key", "manifest", "last_modified"], default="key"),
        timestamp_format=dict(type="str", default="%Y%m%dT%H%M%SZ"),
        manifest_name=dict(type="str", default="manifest.json"),
        manifest_time_field=dict(type="str", default="timestamp"),
        keep_last=dict(type="int"),
        keep_hourly=dict(type="int"),
        keep_daily=dict(type="int"),
        keep_weekly=dict(type="int"),
        keep_monthly=dict(type="int"),
        keep_yearly=dict(type="int"),
        keep_within=dict(type="str"),
        min_keep=dict(type="int", default=1),
        delete_incomplete=dict(type="bool", default=True),
        incomplete_grace=dict(type="str", default="1d"),
        purge_versions=dict(type="bool", default=False),
        concurrency=dict(type="int", default=32),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_one_of=[KEEP_OPTIONS],
        supports_check_mode=True,
    )
    if not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=BOTO3_IMPORT_ERROR)
    if module.params["concurrency"] < 1:
        module.fail_json(msg=f"concurrency must be at least 1, got {module.params['concurrency']}")

    try:
        client = s3_client(module.params, max_pool_connections=max(10, module.params["concurrency"]))
        result = run_retention(client, module.params, check_mode=module.check_mode)
    except (S3Error, RetentionError) as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # pylint: disable=broad-exception-caught
        module.fail_json(msg=f"s3_retention failed: {exc}", exception=traceback.format_exc())

    if not module._diff:
        result.pop("diff", None)
    if result.pop("failed"):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
