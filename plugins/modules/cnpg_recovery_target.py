#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: cnpg_recovery_target
short_description: Check a point-in-time recovery target against what a CNPG Cluster's object store can recover
version_added: 0.1.0
description:
  - Reads the Barman Cloud plugin's ObjectStore O(object_store) (C(status.serverRecoveryWindow)) and the completed
    CNPG Backups of the server O(server_name) in O(namespace), and checks exactly one recovery target against them,
    before anything is created.
  - "O(target_time): ISO 8601 with a time zone (C(Z) or an offset), not in the future, not before the earliest
    recoverable point (the ObjectStore's C(firstRecoverabilityPoint), else the end of the oldest completed Backup)."
  - "O(target_lsn): C(X/Y) in hexadecimal, not before the end LSN of the oldest completed Backup."
  - "O(target_name): a restore point made with C(pg_create_restore_point()). CNPG 1.30 rejects a C(targetName)
    without a C(backupID) when it recovers from a backup catalog, so the result carries one: O(backup_id), or the
    newest completed Backup (the restore point must have been created after that backup ended)."
  - Returns the C(bootstrap.recovery.recoveryTarget) of a Cluster recovering to that target.
author:
  - Hanzo KMS platform team (@hanzoai)
extends_documentation_fragment:
  - hanzo.kms.info_module
  - kubernetes.core.k8s_auth_options
options:
  namespace:
    description:
      - Namespace of the ObjectStore and the Backups.
    type: str
    default: kms
  object_store:
    description:
      - The Barman Cloud plugin ObjectStore holding the archive.
    type: str
    required: true
  server_name:
    description:
      - The archive's server name (the C(serverName) plugin parameter of the Cluster that wrote it, by default the
        Cluster's name).
    type: str
    required: true
  target_time:
    description:
      - Recover up to this time, e.g. C(2026-12-04T15:30:00Z) or C(2026-12-04T16:30:00.5+01:00).
    type: str
  target_lsn:
    description:
      - Recover up to this write-ahead log location, e.g. C(0/3000060).
    type: str
  target_name:
    description:
      - Recover up to this named restore point.
    type: str
  backup_id:
    description:
      - The base backup (a Backup's C(status.backupId)) to start from. Default for O(target_name) the newest
        completed Backup; for a time or an LSN, CNPG picks the newest backup before the target.
    type: str
  exclusive:
    description:
      - Stop just before the target instead of just after it (C(recovery_target_inclusive=false)).
    type: bool
    default: false
  request_timeout:
    description:
      - Seconds to wait for each Kubernetes API request.
    type: int
    default: 10
notes:
  - Needs C(get) on the ObjectStore and C(list) on Backups in O(namespace).
  - A missing ObjectStore is an error; a store whose status shows no recovery window and no completed Backup is one
    too (there is nothing to recover from).
requirements:
  - kubernetes >= 24.2.0 (Python library)
  - the kubernetes.core collection
seealso:
  - module: hanzo.kms.cnpg_query_info
"""

EXAMPLES = r"""
- name: Check the target of a recovery of kms-pg-dc1's archive
  hanzo.kms.cnpg_recovery_target:
    context: dc1
    namespace: kms
    object_store: kms-pg-dc1-store
    server_name: kms-pg-dc1
    target_time: "2026-12-04T15:30:00Z"
  register: pitr_target

- name: A named restore point, from the newest completed base backup
  hanzo.kms.cnpg_recovery_target:
    context: dc1
    object_store: kms-pg-dc1-store
    server_name: kms-pg-dc1
    target_name: before-migration-42
"""

RETURN = r"""
recovery_target:
  description: The Cluster's C(spec.bootstrap.recovery.recoveryTarget) (CNPG's field names).
  returned: success
  type: dict
  sample: {"targetTime": "2026-12-04T15:30:00.000000Z"}
kind:
  description: Which target was given, V(time), V(lsn) or V(name).
  returned: success
  type: str
backup:
  description:
    - The base backup the recovery starts from (C(name), C(backup_id), C(started), C(stopped), C(begin_lsn),
      C(end_lsn)); for a time or an LSN without O(backup_id) the one CNPG is expected to pick. Null when no
      Backup object names one.
  returned: success
  type: dict
window:
  description:
    - C(server_name), C(first_recoverability_point) (RFC 3339) and where it was read
      (C(first_recoverability_point_from), V(ObjectStore) or V(Backups)), C(last_successful_backup), C(backups)
      (the completed Backups of the server, oldest first).
  returned: success
  type: dict
destination_path:
  description: The ObjectStore's C(spec.configuration.destinationPath).
  returned: success
  type: str
"""

import copy

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hanzo.kms.plugins.module_utils.cnpg_recovery import (
    RecoveryTargetError,
    public_window,
    recovery_target,
    recovery_window,
)
from ansible_collections.hanzo.kms.plugins.module_utils.kube import AUTH_ARG_SPEC, api_client, missing
from ansible_collections.hanzo.kms.plugins.module_utils.module_run import not_positive
from ansible_collections.hanzo.kms.plugins.module_utils.site_status import KubeReader, NotFound, describe_error


def argument_spec():
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(
        namespace=dict(type="str", default="kms"),
        object_store=dict(type="str", required=True),
        server_name=dict(type="str", required=True),
        target_time=dict(type="str"),
        target_lsn=dict(type="str"),
        target_name=dict(type="str"),
        backup_id=dict(type="str"),
        exclusive=dict(type="bool", default=False),
        request_timeout=dict(type="int", default=10),
    )
    return spec


def check_target(reader, params):
    """The module's result from a KubeReader-like ``reader``; raises RecoveryTargetError."""
    namespace = params["namespace"]
    try:
        store = reader.object_store(namespace, params["object_store"])
    except NotFound:
        raise RecoveryTargetError(f"ObjectStore {namespace}/{params['object_store']} not found") from None
    except Exception as exc:  # pylint: disable=broad-exception-caught
        raise RecoveryTargetError(
            f"cannot read ObjectStore {namespace}/{params['object_store']}: {describe_error(exc)}"
        ) from None
    try:
        backups = reader.backups(namespace)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        raise RecoveryTargetError(f"cannot list the Backups in {namespace}: {describe_error(exc)}") from None
    window = recovery_window(store, backups, params["server_name"])
    result = recovery_target(
        window,
        target_time=params["target_time"],
        target_lsn=params["target_lsn"],
        target_name=params["target_name"],
        backup_id=params["backup_id"],
        exclusive=params["exclusive"],
    )
    result["window"] = public_window(window)
    result["destination_path"] = ((store.get("spec") or {}).get("configuration") or {}).get("destinationPath", "")
    return result


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[("target_time", "target_lsn", "target_name")],
        required_one_of=[("target_time", "target_lsn", "target_name")],
        supports_check_mode=True,
    )
    problem = not_positive(module.params, ("request_timeout",))
    if problem:
        module.fail_json(msg=problem)
    problem = missing()
    if problem:
        module.fail_json(msg=problem[0], exception=problem[1])
    try:
        api = api_client(module.params)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        module.fail_json(msg=f"Kubernetes client not configured: {exc}")
    try:
        result = check_target(KubeReader(api, module.params["request_timeout"]), module.params)
    except RecoveryTargetError as exc:
        module.fail_json(msg=f"cnpg_recovery_target: {exc}")
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
