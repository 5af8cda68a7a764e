#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: s3_backup_copy
short_description: Copy a site's newest Redis backup from one object store to another
version_added: 0.1.0
description:
  - With one object store per data center (docs/install.md, "Object storage"), copies the newest complete Redis
    backup of O(site) from the O(source) store into O(bucket) of the store this module connects to, unless that store
    already has it complete. The failover then restores the newest backup from the store of the data center that
    survived.
  - Keeps the layout of M(hanzo.kms.redis_rdb_backup), C(<prefix>/<site>/<UTC timestamp>/dump.rdb) and
    C(manifest.json). The RDB is streamed first and its size checked against the manifest; the manifest is written
    last, so an interrupted copy is an incomplete backup that restores never pick and M(hanzo.kms.s3_retention)
    removes.
author:
  - Hanzo KMS platform team (@hanzoai)
extends_documentation_fragment:
  - hanzo.kms.s3
attributes:
  check_mode:
    support: full
    description: Reads both stores and reports whether a copy would be made, copying nothing.
  diff_mode:
    support: none
    description: No diff.
options:
  bucket:
    description:
      - The destination bucket, in the store of the module's connection options.
    type: str
    required: true
  prefix:
    description:
      - Key prefix of the Redis backups, above the site directories. Surrounding V(/) are ignored.
    type: str
    default: redis
  site:
    description:
      - The site whose newest backup is copied.
    type: str
    required: true
  source:
    description:
      - The store to copy from, with the connection options of the module's own (the destination's), which it does
        not inherit.
    type: dict
    required: true
    suboptions:
      bucket:
        description: The source bucket.
        type: str
        required: true
      endpoint_url:
        description: URL of the source's S3-compatible endpoint; omitted, the AWS S3 endpoint of O(source.region).
        type: str
      region:
        description: Region used to sign requests to the source.
        type: str
        default: us-east-1
      access_key:
        description: The source's S3 access key ID; omitted, boto3's environment and config files.
        type: str
        aliases: [aws_access_key_id]
      secret_key:
        description: The source's S3 secret access key.
        type: str
        aliases: [aws_secret_access_key]
      session_token:
        description: Session token for temporary credentials of the source.
        type: str
      ca_bundle:
        description: PEM file of the CA that signed the source endpoint's certificate; omitted, the system's.
        type: path
      validate_certs:
        description: Whether to verify the source endpoint's TLS certificate.
        type: bool
        default: true
      addressing_style:
        description: How the bucket is put into request URLs of the source (see O(addressing_style)).
        type: str
        choices: [auto, path, virtual]
        default: auto
"""

EXAMPLES = r"""
- name: Copy dc1's newest Redis backup from dc1's store into dc2's
  hanzo.kms.s3_backup_copy:
    endpoint_url: https://s3.dc2.example.net
    access_key: "{{ vault_dc2_access_key }}"
    secret_key: "{{ vault_dc2_secret_key }}"
    bucket: kms-backups-dc2
    site: dc1
    source:
      endpoint_url: https://s3.dc1.example.net
      access_key: "{{ vault_dc1_access_key }}"
      secret_key: "{{ vault_dc1_secret_key }}"
      bucket: kms-backups-dc1
"""

RETURN = r"""
backup:
  description: The name (UTC time) of the source's newest complete backup, null when it has none.
  returned: always
  type: str
  sample: 20261205T021500Z
rdb_key:
  description: Key of its RDB (the same in both stores), null without a backup.
  returned: always
  type: str
  sample: redis/dc1/20261205T021500Z/dump.rdb
size:
  description: Size of the RDB copied in bytes, null when nothing was copied.
  returned: always
  type: int
reason:
  description: Why nothing was copied (no backup in the source, the destination has it), null when copied.
  returned: always
  type: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.hanzo.kms.plugins.module_utils.s3 import (
    BOTO3_IMPORT_ERROR,
    HAS_BOTO3,
    S3_ARGUMENT_SPEC,
    S3Error,
    s3_argument_spec,
    s3_client,
)
from ansible_collections.hanzo.kms.plugins.module_utils.s3_backup_copy import CopyError, copy_newest
from ansible_collections.hanzo.kms.plugins.module_utils.s3_backup_info import BackupInfoError, check_options


def main():
    argument_spec = s3_argument_spec()
    source_spec = s3_argument_spec()
    source_spec["bucket"] = dict(type="str", required=True)
    argument_spec.update(
        bucket=dict(type="str", required=True),
        prefix=dict(type="str", default="redis"),
        site=dict(type="str", required=True),
        source=dict(type="dict", required=True, options=source_spec),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    try:
        check_options(params["prefix"], [params["site"]], 1)
    except BackupInfoError as exc:
        module.fail_json(msg=str(exc))
    if not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=BOTO3_IMPORT_ERROR)
    source_params = {key: params["source"][key] for key in S3_ARGUMENT_SPEC}
    try:
        result = copy_newest(
            s3_client(source_params),
            params["source"]["bucket"],
            s3_client(params),
            params["bucket"],
            params["prefix"],
            params["site"],
            check_mode=module.check_mode,
        )
    except (S3Error, CopyError, BackupInfoError) as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # pylint: disable=broad-exception-caught
        module.fail_json(msg=f"s3_backup_copy failed: {exc}", exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
