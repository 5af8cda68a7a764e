#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: redis_rdb_restore
short_description: Verified Redis restore from an RDB in S3 or a local file
version_added: 0.1.0
description:
  - Restores a Redis or Valkey server from an RDB made by M(hanzo.kms.redis_rdb_backup) (or any RDB).
  - "Source: an S3 object (O(key)), the newest complete backup under O(prefix)/O(site) (a backup is complete when its
    C(manifest.json) exists), or a local file (O(src))."
  - "Everything is verified before the target loads anything: the SHA-256 and size against the manifest, the RDB
    CRC64 trailer, a full structural pass over the RDB that validates every value as Redis's own loader does with
    C(sanitize-dump-payload yes) (LZF checked in place, listpack/ziplist/intset/zipmap/quicklist integrity, duplicate
    members, NaN scores, empty keys, stream consumer-group consistency), and the RDB version against what the target
    server can load. A bad file fails with a clear message naming the key and the problem, and the target is
    unchanged."
  - "The structural pass is skipped for O(method=replication) and O(method=file) when the manifest records the same
    check made by C(hanzo.kms.redis_rdb_backup) (its C(verified) entry covering framing, values and CRC64, by the same
    or a newer validator): the SHA-256, size and CRC64 matching that manifest tie the bytes to it. The result's
    RV(verification) says which."
  - "With O(method=replication) from S3 (O(overlap_transfer)), the RDB is served to the target while it downloads
    and is checked; the target (C(repl-diskless-load disabled), set for the duration when needed) keeps its data
    until the whole payload arrived, and the last bytes are held back until every check passed. On a mismatch the
    link is dropped, the target discards the partial copy and keeps its data."
  - "O(method=restore): pipelined C(RESTORE key ttl payload REPLACE ABSTTL) with payloads sliced from the RDB without
    decoding values, over O(connections) connections; functions with C(FUNCTION RESTORE). Works through any tunnel or
    port-forward. Keys whose absolute expiry already passed are counted as expired and not restored."
  - "O(method=replication): the module listens on O(listen_host):O(listen_port) and makes the target its replica; it
    answers the target's C(PSYNC) with a full resync and the RDB, so the target loads it at native speed; then
    C(REPLICAOF NO ONE) and the target's previous replication settings are put back. The target must reach the
    listener (O(announce_host))."
  - "The listener serves the target only: it accepts connections from the target's address (O(listen_allow_from)),
    requires a one-time password that the module sets on the target as C(masterauth) for the duration of the restore
    (the previous value is put back), closes every other connection, and bounds every read with a timeout. When the
    target replicates over TLS (C(tls-replication yes)) the listener speaks TLS with O(listen_tls_cert)."
  - "The one-time C(masterauth) also records the target's previous C(masterauth), master and C(sanitize-dump-payload),
    so a run that finds the target still following the listener of an interrupted run (a killed controller) puts
    those back before restoring (reported in RV(repaired)). Cleanup after the load runs on fresh connections with
    retries; when the target cannot be brought back to its previous role the module fails and says so in
    RV(target_state)."
  - "Both online methods turn on C(sanitize-dump-payload yes) on the target for the duration of the restore (deep checks
    of every payload it loads) and put the previous value back, also on failure."
  - "With O(method=restore), a connection that drops part way fails with the number of keys confirmed restored, what
    the target holds and what a re-run does; a re-run with O(mode=replace) makes the target equal to the backup."
  - "O(method=file): writes the RDB into O(data_dir) of a stopped server, moves its AOF aside and (O(aof)) writes a new
    AOF whose base is the RDB, so the next start loads it even with C(appendonly yes)."
  - "O(method=auto): V(replication) when the target can reach the listener (a target on loopback, or O(announce_host)
    set) and O(mode=replace), else V(restore)."
  - "O(mode=replace) makes the target equal to the backup: every other key is deleted first (C(FLUSHALL) when allowed,
    otherwise C(SCAN) + C(UNLINK), so it works with FLUSHALL/FLUSHDB disabled as in the Bitnami chart); functions are
    replaced. O(mode=merge) only adds and overwrites the backup's keys."
author:
  - Hanzo KMS platform team (@hanzoai)
extends_documentation_fragment:
  - hanzo.kms.redis
  - hanzo.kms.s3
attributes:
  check_mode:
    support: full
    description: Downloads and verifies the source, checks the target, and reports what would be restored.
  diff_mode:
    support: none
    description: No diff is produced.
options:
  src:
    description:
      - Local RDB file. A C(<src>.manifest.json) next to it (or O(manifest)) is used for the SHA-256 check.
    type: path
  manifest:
    description:
      - Local manifest for O(src).
    type: path
  sha256:
    description:
      - Expected SHA-256 of O(src).
    type: str
  bucket:
    description:
      - S3 bucket holding the backups.
    type: str
  key:
    description:
      - Object key of the C(dump.rdb) to restore; its C(manifest.json) must exist next to it.
    type: str
  prefix:
    description:
      - Key prefix of the backups; the newest complete backup under O(prefix)/O(site) is restored.
    type: str
  site:
    description:
      - Site whose backups are searched (a path component after O(prefix)).
    type: str
  method:
    description:
      - How the data reaches the target.
    type: str
    choices: [auto, replication, restore, file]
    default: auto
  mode:
    description:
      - V(replace) makes the target equal to the backup, V(merge) keeps keys the backup does not have.
      - O(method=replication) always replaces.
    type: str
    choices: [replace, merge]
    default: replace
  connections:
    description:
      - Parallel connections (worker processes) for O(method=restore).
    type: int
    default: 1
  listen_host:
    description:
      - Address the replication listener binds to (O(method=replication)).
    type: str
    default: 127.0.0.1
  listen_port:
    description:
      - Port of the replication listener; V(0) picks a free one.
    type: int
    default: 0
  announce_host:
    description:
      - Address the target uses to reach the listener. Defaults to O(listen_host).
    type: str
  listen_allow_from:
    description:
      - Addresses the listener accepts connections from (the target's address as the listener sees it, e.g. its pod
        IP when O(host) is a Service name). Connections from any other address are closed unanswered.
      - Defaults to the addresses O(host) resolves to.
    type: list
    elements: str
  listen_tls_cert:
    description:
      - Certificate (PEM, with its chain) of the replication listener; required when the target replicates over TLS
        (C(tls-replication yes)). The target verifies it against its C(tls-ca-cert-file).
    type: path
  listen_tls_key:
    description:
      - Private key of O(listen_tls_cert) (when not in the same file).
    type: path
  listen_tls_ca_cert:
    description:
      - CA the target's client certificate must be signed by; when set the listener requires one (mutual TLS). The
        target presents its C(tls-client-cert-file), or its C(tls-cert-file).
    type: path
  data_dir:
    description:
      - Data directory of the stopped server (O(method=file)).
    type: path
  dbfilename:
    description:
      - RDB file name the server loads (its C(dbfilename)).
    type: str
    default: dump.rdb
  appenddirname:
    description:
      - AOF directory name (its C(appenddirname)), moved aside by O(method=file).
    type: str
    default: appendonlydir
  appendfilename:
    description:
      - AOF base file name (its C(appendfilename)).
    type: str
    default: appendonly.aof
  aof:
    description:
      - With O(method=file), whether to write an AOF whose base is the RDB (a multi-part AOF manifest on Redis 7+, an
        RDB-preamble C(appendonly.aof) on older servers), so a server started with C(appendonly yes) loads the RDB.
      - V(auto) does so when the data dir had an AOF (which is moved aside either way).
    type: str
    choices: [auto, 'yes', 'no']
    default: auto
  check_stopped:
    description:
      - With O(method=file), fail if something still answers on O(host):O(port).
    type: bool
    default: true
  tmp_dir:
    description:
      - Directory for the downloaded RDB (needs room for one copy).
    type: path
  timeout:
    description:
      - Seconds the target may take to load the RDB (O(method=replication)).
    type: float
    default: 3600
  overlap_transfer:
    description:
      - With O(method=replication) (or V(auto) resolving to it) and an S3 source, verify while the RDB streams to
        the target and hold back its last bytes until the checks passed, instead of downloading and verifying it
        first.
      - The target's C(repl-diskless-load) is set to V(disabled) for the duration and put back afterwards (also on
        failure). When the target has no C(repl-diskless-load) setting (before Redis 6.0) or it cannot be set, or the
        manifest has no size, the RDB is downloaded and verified first. When the link drops during the transfer, or
        the streamed structure pass meets a record above 32 MiB, the target keeps its data and a downloaded,
        verified copy is served instead.
    type: bool
    default: true
notes:
  - The restore target must run the same or a newer Redis than the source (RDB versions are not backward compatible).
    Valkey 9 RDBs (C(VALKEY080)) load only into Valkey 9+; Redis never loads them, and Valkey refuses Redis 7.4+ RDBs
    (version 12 and up). The error names the RDB version of the file and the highest one the target reads.
  - RDBs holding module data are refused.
  - After O(method=file), start the server; it loads the RDB (from C(dump.rdb), or from the new AOF base with
    C(appendonly yes)).
  - With O(method=replication), a target that was itself a replica is re-attached to its master afterwards, which
    makes it resynchronise from that master.
  - The restore user needs C(CONFIG GET) and C(CONFIG SET) on the target (C(sanitize-dump-payload); with
    O(method=replication) also C(masterauth), C(tls-replication) and C(REPLICAOF)).
  - If the target uses C(masteruser) (ACL users for replication), it stays as it is; the target then sends
    C(AUTH <masteruser> <one-time password>) and the listener checks the password only.
requirements:
  - redis (redis-py, the Redis client)
  - boto3 (for S3)
  - anycrc (optional, a fast C CRC64; without it verification is much slower)
seealso:
  - module: hanzo.kms.redis_rdb_backup
"""

EXAMPLES = r"""
- name: Restore the newest complete dc1 backup into the dc2 Redis
  hanzo.kms.redis_rdb_restore:
    host: 127.0.0.1
    port: 6379
    password: "{{ redis_password }}"
    endpoint_url: https://s3.example.com
    access_key: "{{ s3_access_key }}"
    secret_key: "{{ s3_secret_key }}"
    addressing_style: path
    bucket: kms-backups
    prefix: redis
    site: dc1
    method: restore
  register: restored

- name: Merge a local dump into a running server
  hanzo.kms.redis_rdb_restore:
    password: "{{ redis_password }}"
    src: /var/backups/redis/dump.rdb
    method: restore
    mode: merge

- name: Place a dump into the data dir of a stopped server
  hanzo.kms.redis_rdb_restore:
    src: /var/backups/redis/dump.rdb
    method: file
    data_dir: /data
"""

RETURN = r"""
method:
  description: Method used (V(auto) resolved).
  returned: always
  type: str
  sample: restore
mode:
  description: Mode used.
  returned: always
  type: str
source:
  description: Where the RDB came from (type, bucket/key/manifest_key or path).
  returned: always
  type: dict
sha256:
  description: SHA-256 of the RDB.
  returned: always
  type: str
rdb_version:
  description: RDB format version.
  returned: always
  type: int
bytes:
  description: Size of the RDB.
  returned: always
  type: int
backup_keys_per_db:
  description: Keys per db in the backup.
  returned: always
  type: dict
  sample: {"0": 1000, "2": 3}
functions:
  description: Function libraries in the backup.
  returned: always
  type: int
target_server:
  description: Target server flavour.
  returned: unless O(method=file)
  type: str
target_version:
  description: Target server version.
  returned: unless O(method=file)
  type: str
target_keys_before:
  description: Keys per db on the target before the restore.
  returned: unless O(method=file)
  type: dict
target_keys_after:
  description: Keys per db on the target after the restore.
  returned: success, unless O(method=file) or check mode
  type: dict
would_restore_per_db:
  description: Keys per db that would be restored.
  returned: check mode, unless O(method=file)
  type: dict
keys_restored:
  description: Keys restored per db (for V(replication), the keys the target holds after loading).
  returned: success, unless O(method=file) or check mode
  type: dict
keys_expired:
  description: Keys per db whose expiry had passed, not restored.
  returned: success, unless O(method=file) or check mode
  type: dict
keys_skipped:
  description: Keys per db neither restored nor expired.
  returned: success, unless O(method=file) or check mode
  type: dict
cleared_with:
  description: How the target was emptied for O(mode=replace) (V(flushall) or V(scan_unlink)).
  returned: O(method=restore) and O(mode=replace)
  type: str
functions_restored:
  description: Function libraries restored.
  returned: O(method=restore)
  type: int
replication:
  description: Bytes sent, the listener address, whether it used TLS, how many foreign connections it closed, and the
    target's replication settings before the restore.
  returned: O(method=replication)
  type: dict
  contains:
    sent:
      description: Bytes of the RDB sent to the target.
      type: int
    listener:
      description: Address of the listener the target replicated from.
      type: str
    tls:
      description: Whether the listener used TLS.
      type: bool
    rejected_connections:
      description: Foreign connections the listener closed.
      type: int
    previous_replication:
      description: The target's role and master before the restore (put back afterwards).
      type: dict
    transfer:
      description:
        - V(overlapped) (checked while streaming, last bytes held back) or V(verify_then_send).
        - Absent for a local O(src), which is always verified first.
      type: str
      sample: overlapped
    repl_diskless_load:
      description: The target's C(repl-diskless-load) before the restore (null when it could not be read).
      type: str
      sample: disabled
    repl_diskless_load_set:
      description: Whether it was set to V(disabled) for the duration (and put back).
      type: bool
verification:
  description:
    - V(full) when the restore ran the structure pass itself, V(manifest) when the manifest's recorded check replaced
      it (the SHA-256, size and CRC64 of the bytes matched that manifest).
  returned: always
  type: str
  sample: manifest
verification_reason:
  description: Why the manifest's recorded check could or could not replace the pass.
  returned: always
  type: str
target_state:
  description:
    - State the target was left in. V(restored) (a writable master holding the backup), V(restored_replica) (restored,
      then re-attached to its previous master), V(partially_restored) (see RV(keys_confirmed)), V(not_restored)
      (the load failed; the target is writable with its previous data), V(unchanged), V(replica_of_listener) or
      V(read_only) (still following the module's closed listener; a re-run repairs it), V(restored_not_reattached),
      V(unknown).
    - Also in the failure result.
  returned: unless O(method=file) or check mode
  type: str
  sample: restored
repaired:
  description: What an interrupted earlier run had left on the target (its listener address, whether the target still
    followed it, the previous master) and was put back; in check mode only reported (C(would_repair)).
  returned: when such a leftover was found
  type: dict
sanitize_dump_payload:
  description: C(sanitize-dump-payload) during the restore and the previous value put back afterwards.
  returned: unless O(method=file) or check mode
  type: dict
  sample: {"during": "yes", "previous": "no"}
keys_confirmed:
  description: Keys whose RESTORE the target had answered when the restore stopped part way.
  returned: failure of a partial restore
  type: int
keys_total:
  description: Keys in the backup.
  returned: failure of a partial restore
  type: int
errors:
  description: First error replies from the target.
  returned: success, unless O(method=file) or check mode
  type: list
  elements: str
error_count:
  description: Number of error replies.
  returned: success, unless O(method=file) or check mode
  type: int
path:
  description: Where the RDB was written (O(method=file)).
  returned: O(method=file), not in check mode
  type: str
aof_moved_aside:
  description: AOF paths moved aside (O(method=file)).
  returned: O(method=file), not in check mode
  type: list
  elements: str
aof_written:
  description: AOF files written with the RDB as their base (O(method=file)).
  returned: O(method=file), not in check mode
  type: list
  elements: str
duration:
  description: Seconds the restore took.
  returned: always
  type: float
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.hanzo.kms.plugins.module_utils.module_run import not_positive
from ansible_collections.hanzo.kms.plugins.module_utils.redis_client import (
    HAS_REDIS,
    REDIS_IMPORT_ERROR,
    RedisError,
    redis_connection_spec,
)
from ansible_collections.hanzo.kms.plugins.module_utils.redis_rdb import RdbError, crc64_is_fast
from ansible_collections.hanzo.kms.plugins.module_utils.redis_restore import RestoreError, run_restore
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
        src=dict(type="path"),
        manifest=dict(type="path"),
        sha256=dict(type="str"),
        bucket=dict(type="str"),
        key=dict(type="str", no_log=False),
        prefix=dict(type="str"),
        site=dict(type="str"),
        method=dict(type="str", choices=["auto", "replication", "restore", "file"], default="auto"),
        mode=dict(type="str", choices=["replace", "merge"], default="replace"),
        connections=dict(type="int", default=1),
        listen_host=dict(type="str", default="127.0.0.1"),
        listen_port=dict(type="int", default=0),
        announce_host=dict(type="str"),
        listen_allow_from=dict(type="list", elements="str"),
        listen_tls_cert=dict(type="path"),
        listen_tls_key=dict(type="path", no_log=False),
        listen_tls_ca_cert=dict(type="path"),
        data_dir=dict(type="path"),
        dbfilename=dict(type="str", default="dump.rdb"),
        appenddirname=dict(type="str", default="appendonlydir"),
        appendfilename=dict(type="str", default="appendonly.aof"),
        aof=dict(type="str", choices=["auto", "yes", "no"], default="auto"),
        check_stopped=dict(type="bool", default=True),
        tmp_dir=dict(type="path"),
        timeout=dict(type="float", default=3600),
        overlap_transfer=dict(type="bool", default=True),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_one_of=[["src", "bucket"]],
        mutually_exclusive=[["src", "bucket"], ["key", "prefix"], ["key", "site"]],
        required_if=[["method", "file", ["data_dir"]]],
        required_by={"manifest": "src", "sha256": "src", "key": "bucket"},
        supports_check_mode=True,
    )
    params = module.params
    if not HAS_REDIS:
        module.fail_json(msg=missing_required_lib("redis"), exception=REDIS_IMPORT_ERROR)
    if params["bucket"] and not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=BOTO3_IMPORT_ERROR)
    if params["connections"] < 1:
        module.fail_json(msg="connections must be at least 1")
    problem = not_positive(params, ("timeout", "connect_timeout"))
    if problem:
        module.fail_json(msg=problem)
    if not crc64_is_fast():
        module.warn("anycrc is not installed: CRC64 is computed in pure Python (about 10 MB/s)")
    try:
        result = run_restore(params, s3_client_factory=lambda: s3_client(params), check_mode=module.check_mode)
    except RestoreError as exc:
        module.fail_json(msg=f"Redis restore failed: {exc}", **exc.result)
    except (RedisError, RdbError, S3Error) as exc:
        module.fail_json(msg=f"Redis restore failed: {exc}")
    except Exception as exc:  # pylint: disable=broad-exception-caught
        module.fail_json(msg=f"Redis restore failed: {exc}", exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
