#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r'''
---
module: site_data_info
short_description: Backups of one Hanzo KMS site in object storage, and its Redis server
version_added: 0.1.0
description:
  - Read-only. Reports what the object store holds for one site and whether the site's Redis answers, for the
    status, failover and switchover playbooks.
  - "PostgreSQL: lists the Barman Cloud layout under the site's ObjectStore C(destinationPath)
    (C(<server>/wals/...) and C(<server>/base/<backup id>/backup.info)) and returns the newest archived WAL file and
    the newest base backup with their age (from the objects' C(LastModified): when they reached the object store)."
  - "Redis: the newest complete backup (one with C(manifest.json)) under O(redis_prefix)/O(site) in the layout of
    M(hanzo.kms.redis_rdb_backup), and, with O(probe_redis), the server's role, version and key count."
  - Every part reports its own error instead of failing the task, so an unreachable Redis or a missing bucket still
    gives a result. The task fails only on invalid options.
author:
  - Hanzo KMS platform team (@hanzoai)
extends_documentation_fragment:
  - hanzo.kms.redis
  - hanzo.kms.s3
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: No diff is produced.
options:
  site:
    description:
      - Site name, the path component after O(redis_prefix) and, without O(cnpg_destination_path), after
        O(cnpg_prefix).
    type: str
    required: true
  bucket:
    description:
      - Bucket of the Redis backups, and of the WAL archive when O(cnpg_destination_path) is not given.
    type: str
    required: true
  cnpg_destination_path:
    description:
      - The site's ObjectStore C(spec.configuration.destinationPath), for example V(s3://kms-backups/cnpg/dc1/).
      - Without it, V(s3://<bucket>/<cnpg_prefix>/<site>/) is listed.
    type: str
  cnpg_prefix:
    description:
      - Key prefix of the WAL archives when O(cnpg_destination_path) is not given.
    type: str
    default: cnpg
  cnpg_server_name:
    description:
      - Only consider this Barman C(serverName) (default every server found under the path; the newest wins).
    type: str
  redis_prefix:
    description:
      - Key prefix of the Redis backups.
    type: str
    default: redis
  probe_redis:
    description:
      - Probe the site's Redis at O(host):O(port).
    type: bool
    default: true
notes:
  - The listing costs one C(ListObjectsV2) request per 1000 objects under the site's WAL archive path.
requirements:
  - boto3
seealso:
  - module: hanzo.kms.redis_rdb_backup
  - module: hanzo.kms.switch_preflight
'''

EXAMPLES = r'''
- name: Backups and Redis of dc1
  hanzo.kms.site_data_info:
    site: dc1
    bucket: kms-backups
    cnpg_destination_path: s3://kms-backups/cnpg/dc1/
    endpoint_url: https://s3.example.com
    access_key: "{{ s3_access_key }}"
    secret_key: "{{ s3_secret_key }}"
    addressing_style: path
    host: 10.10.0.11
    port: 6379
    password: "{{ redis_password }}"
  register: dc1_data

- name: Show the age of the newest archived WAL
  ansible.builtin.debug:
    msg: "{{ dc1_data.cnpg.newest_wal.age_seconds | default('no WAL archived') }}"
'''

RETURN = r'''
site:
  description: The site.
  returned: always
  type: str
  sample: dc1
now:
  description: When the listing was made (UTC, RFC 3339).
  returned: always
  type: str
  sample: "2026-11-29T13:00:00Z"
cnpg:
  description: The WAL archive and base backups of the site.
  returned: always
  type: dict
  contains:
    bucket:
      description: Bucket listed.
      type: str
    prefix:
      description: Key prefix listed.
      type: str
    servers:
      description: Barman server names found.
      type: list
      elements: str
    wal_count:
      description: Number of WAL (and history/backup label) files found.
      type: int
    newest_wal:
      description: C(key), C(name), C(server), C(time), C(age_seconds), C(size) of the newest archived WAL; null when none.
      type: dict
    newest_base_backup:
      description: C(key), C(backup_id), C(server), C(time), C(age_seconds) of the newest base backup; null when none.
      type: dict
    error:
      description: Why the listing failed.
      type: str
      returned: when the listing failed
redis:
  description: The Redis backups of the site and its server.
  returned: always
  type: dict
  contains:
    backups:
      description: C(prefix), C(count) of complete backups and C(newest) (C(name), C(key), C(manifest_key), C(time),
        C(age_seconds), C(size)); C(error) when the listing failed.
      type: dict
    server:
      description: C(role), C(server), C(version), C(keys), C(keyspace), C(address); null when not probed or down.
      type: dict
    error:
      description: Why the server could not be probed.
      type: str
'''

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.hanzo.kms.plugins.module_utils.operations import collect_site_data
from ansible_collections.hanzo.kms.plugins.module_utils.redis_backup import redis_connection_spec
from ansible_collections.hanzo.kms.plugins.module_utils.s3 import (
    BOTO3_IMPORT_ERROR,
    HAS_BOTO3,
    S3Error,
    s3_argument_spec,
    s3_client,
)


def main():
    argument_spec = redis_connection_spec()
    argument_spec.update(s3_argument_spec())
    argument_spec.update(
        site=dict(type='str', required=True),
        bucket=dict(type='str', required=True),
        cnpg_destination_path=dict(type='str'),
        cnpg_prefix=dict(type='str', default='cnpg'),
        cnpg_server_name=dict(type='str'),
        redis_prefix=dict(type='str', default='redis'),
        probe_redis=dict(type='bool', default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib('boto3'), exception=BOTO3_IMPORT_ERROR)
    try:
        result = collect_site_data(module.params, s3_client(module.params))
    except (S3Error, ValueError) as exc:
        module.fail_json(msg='site_data_info: %s' % exc)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        module.fail_json(msg='site_data_info failed: %s' % exc, exception=traceback.format_exc())
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
