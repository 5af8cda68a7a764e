#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: redis_rdb_backup
short_description: Consistent Redis backup over the replication protocol, streamed to S3 with a manifest
version_added: 0.1.0
description:
  - Fetches a consistent RDB snapshot from a running Redis or Valkey server over the network, the way
    C(redis-cli --rdb) does (C(REPLCONF rdb-only 1) + C(SYNC)). No access to the server's volume and no blocking
    C(SAVE) are needed; the server forks as for a replica's full sync.
  - A Valkey server is told its own version (C(REPLCONF version)), so it sends the RDB version it writes for its own
    replicas (C(VALKEY080) for Valkey 9.0 and 9.1), which holds every key, hash fields with a TTL included.
  - The RDB is streamed to S3 (multipart upload, bounded memory whatever the RDB size) and/or to a local file while its
    SHA-256 is computed and its CRC64 trailer is checked. A transfer that fails either check leaves no object behind.
  - S3 layout C(<prefix>/<site>/<UTC timestamp %Y%m%dT%H%M%SZ>/dump.rdb) plus C(manifest.json), written last. A backup
    without a manifest is incomplete and never chosen by M(hanzo.kms.redis_rdb_restore).
  - The manifest holds the server flavour and version, RDB version, size, SHA-256, CRC64, creation time, source, the
    keyspace reported by the server when the backup started and, with O(analyze=true), the exact per-db key counts
    read from the RDB.
author:
  - Hanzo KMS platform team (@hanzoai)
extends_documentation_fragment:
  - hanzo.kms.redis
  - hanzo.kms.s3
attributes:
  check_mode:
    support: full
    description: Connects to Redis (and checks the bucket) and reports where the backup would go; no snapshot is taken.
  diff_mode:
    support: none
    description: No diff is produced.
options:
  bucket:
    description:
      - S3 bucket to upload to. Without it nothing is uploaded and O(dest) is required.
    type: str
  prefix:
    description:
      - Key prefix of the backups in O(bucket).
      - C(/)-separated segments of letters, digits, C(.), C(_) and C(-), each starting with a letter or digit (no
        C(..), spaces or shell characters); anything else fails the task before Redis or S3 is contacted.
    type: str
    default: ''
  site:
    description:
      - Site (data center) name, a path component after O(prefix).
      - A DNS label (lower-case letters, digits and C(-), starting and ending with a letter or digit); anything else
        fails the task before Redis or S3 is contacted.
    type: str
  dest:
    description:
      - Local path to also (or only) write the RDB to. A C(<dest>.manifest.json) is written next to it.
      - The file is written as C(<dest>.part) and renamed when complete and verified.
      - The dump and its manifest are created with mode C(0600) whatever the umask (a dump holds every secret
        Redis has); an existing file is narrowed to C(0600).
    type: path
  part_size:
    description:
      - Multipart upload part size in MiB (at least 5, the S3 minimum). S3 allows 10000 parts, so the largest RDB
        this can store is O(part_size) x 10000 MiB (48.8 GiB with the default); a larger one fails with a message
        saying so.
      - Memory held for the upload is at most O(part_size) x (O(upload_concurrency) + 1) MiB (one part being filled,
        the others uploading), whatever the size of the RDB.
    type: int
    default: 5
  upload_concurrency:
    description:
      - Parts uploaded at the same time. The default keeps the whole backup process under 64 MiB; raise it (and
        O(part_size)) for object storage with a high latency, at the cost of memory.
    type: int
    default: 1
  verify_structure:
    description:
      - Run the RDB structure pass while the RDB streams (every record's framing, the EOF opcode, nothing after the
        CRC64 trailer, and every value validated as Redis's loader does with C(sanitize-dump-payload yes), so a
        malformed value fails the backup, naming the key), and record it in the manifest's C(verified) entry with the
        exact per-db key counts and the number of functions.
      - A restore with O(hanzo.kms.redis_rdb_restore#module:method=replication) or
        O(hanzo.kms.redis_rdb_restore#module:method=file) whose bytes match that manifest (SHA-256, size, CRC64) skips
        its own structure pass. Memory stays bounded (a record larger than 32 MiB ends the pass; nothing is recorded
        then). Costs CPU while streaming (see docs/benchmarks.md for the measured backup time with and without it);
        the CRC64 and SHA-256 checks happen either way.
    type: bool
    default: true
  analyze:
    description:
      - Kept for compatibility; the same pass as O(verify_structure), which now runs by default. V(true) runs it even
        with O(verify_structure=false).
    type: bool
    default: false
  timeout:
    description:
      - Seconds the whole transfer may take, including the time the server needs to produce the snapshot.
    type: float
    default: 3600
notes:
  - The user needs permission for C(SYNC), C(REPLCONF), C(INFO) (for ACL users, for example C(+sync +replconf +info)).
  - With C(repl-diskless-sync yes) (the Redis 7 default) the server waits C(repl-diskless-sync-delay) seconds
    (default 5) before it starts the transfer.
requirements:
  - redis (redis-py, the Redis client)
  - boto3 (for S3)
  - anycrc (optional, a fast C CRC64; without it the CRC check is much slower)
seealso:
  - module: hanzo.kms.redis_rdb_restore
  - module: hanzo.kms.s3_retention
"""

EXAMPLES = r"""
- name: Back up the dc1 Redis to S3
  hanzo.kms.redis_rdb_backup:
    host: redis-master.kms.svc
    password: "{{ redis_password }}"
    endpoint_url: https://s3.example.com
    access_key: "{{ s3_access_key }}"
    secret_key: "{{ s3_secret_key }}"
    addressing_style: path
    bucket: kms-backups
    prefix: redis
    site: dc1
  register: backup

- name: Back up to a local file with exact key counts
  hanzo.kms.redis_rdb_backup:
    port: 6380
    password: "{{ redis_password }}"
    dest: /var/backups/redis/dump.rdb
    analyze: true
"""

RETURN = r"""
bucket:
  description: Bucket the backup went to.
  returned: when O(bucket) is set
  type: str
  sample: kms-backups
key:
  description: Object key of the RDB.
  returned: when O(bucket) is set
  type: str
  sample: redis/dc1/20261122T041500Z/dump.rdb
manifest_key:
  description: Object key of the manifest.
  returned: when O(bucket) is set
  type: str
  sample: redis/dc1/20261122T041500Z/manifest.json
dest:
  description: Local path of the RDB.
  returned: when O(dest) is set
  type: str
dest_manifest:
  description: Local path of the manifest written next to O(dest).
  returned: when O(dest) is set and not in check mode
  type: str
manifest:
  description: The manifest written.
  returned: success, not in check mode
  type: dict
size:
  description: Size of the RDB in bytes.
  returned: success, not in check mode
  type: int
sha256:
  description: SHA-256 of the RDB.
  returned: success, not in check mode
  type: str
crc64:
  description: CRC64 trailer of the RDB (hex; all zeros when the server has C(rdbchecksum no)).
  returned: success, not in check mode
  type: str
rdb_version:
  description: RDB format version.
  returned: success, not in check mode
  type: int
  sample: 10
server:
  description: Server flavour (V(redis) or V(valkey)).
  returned: in check mode
  type: str
server_version:
  description: Server version.
  returned: success
  type: str
  sample: 7.0.15
keyspace:
  description: Keys and expires per db reported by the server.
  returned: in check mode
  type: dict
keys_per_db:
  description: Exact keys per db read from the RDB (structure pass run), else null.
  returned: success, not in check mode
  type: dict
verified:
  description:
    - The structure check recorded in the manifest, or null when it did not run (O(verify_structure=false)) or did not
      cover the whole RDB (a single record above 32 MiB).
    - A restore skips its own pass when this entry covers the checks it would run, by the same or a newer validator.
  returned: success, not in check mode
  type: dict
  contains:
    validator:
      description: Name of the validator.
      type: str
      sample: hanzo.kms.redis_rdb
    validator_version:
      description: Version of the validator; raised whenever the pass checks more.
      type: int
      sample: 1
    checks:
      description: What was checked (V(framing), V(crc64)).
      type: list
      elements: str
      sample: [crc64, framing]
    keys:
      description: Keys in the RDB.
      type: int
    keys_per_db:
      description: Keys per db.
      type: dict
    functions:
      description: Function libraries in the RDB.
      type: int
duration:
  description: Seconds the backup took.
  returned: success, not in check mode
  type: float
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.hanzo.kms.plugins.module_utils.module_run import not_positive
from ansible_collections.hanzo.kms.plugins.module_utils.names import InvalidName
from ansible_collections.hanzo.kms.plugins.module_utils.redis_backup import run_backup
from ansible_collections.hanzo.kms.plugins.module_utils.redis_client import (
    HAS_REDIS,
    REDIS_IMPORT_ERROR,
    RedisError,
    redis_connection_spec,
)
from ansible_collections.hanzo.kms.plugins.module_utils.redis_rdb import RdbError, crc64_is_fast
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
        bucket=dict(type="str"),
        prefix=dict(type="str", default=""),
        site=dict(type="str"),
        dest=dict(type="path"),
        part_size=dict(type="int", default=5),
        upload_concurrency=dict(type="int", default=1),
        verify_structure=dict(type="bool", default=True),
        analyze=dict(type="bool", default=False),
        timeout=dict(type="float", default=3600),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_one_of=[["bucket", "dest"]],
        supports_check_mode=True,
    )
    params = module.params
    if not HAS_REDIS:
        module.fail_json(msg=missing_required_lib("redis"), exception=REDIS_IMPORT_ERROR)
    if params["bucket"] and not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=BOTO3_IMPORT_ERROR)
    if params["part_size"] < 5:
        module.fail_json(msg="part_size must be at least 5 (MiB), the S3 minimum")
    if params["upload_concurrency"] < 1:
        module.fail_json(msg="upload_concurrency must be at least 1")
    problem = not_positive(params, ("timeout", "connect_timeout"))
    if problem:
        module.fail_json(msg=problem)
    if not crc64_is_fast():
        module.warn("anycrc is not installed: CRC64 is computed in pure Python (about 10 MB/s)")
    try:
        result = run_backup(params, s3_client_factory=lambda: s3_client(params), check_mode=module.check_mode)
    except (RedisError, RdbError, S3Error, InvalidName) as exc:
        module.fail_json(msg=f"Redis backup failed: {exc}")
    except Exception as exc:  # pylint: disable=broad-exception-caught
        module.fail_json(msg=f"Redis backup failed: {exc}", exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
