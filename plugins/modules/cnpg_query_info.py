#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: cnpg_query_info
short_description: Read-only SQL on a CloudNativePG Cluster's primary instance, from the control node
version_added: 0.1.0
description:
  - Connects with psycopg2 to the current primary instance of the CNPG Cluster O(cluster_name) (the designated
    primary of a replica Cluster) through a Kubernetes port-forward to the pod's port 5432, bridged to a loopback
    listener on the host that runs the module, so no route to the pod network is needed.
  - TLS is verified (C(sslmode=verify-full)) against the CA in the Secret C(<cluster_name>-ca) (or
    C(spec.certificates.serverCASecret)), with C(<cluster_name>-rw.<namespace>.svc) as the server's name.
  - The login is one CNPG keeps in a Secret, see O(credentials). The session is read-only
    (C(default_transaction_read_only)); the password is never logged nor returned.
  - "O(read): C(row_counts), the row count of every table of O(database) (what the restore test checks of a
    recovered Cluster); C(replication), the instance's C(pg_stat_archiver) figures, LSNs and replay lag."
author:
  - Hanzo KMS platform team (@hanzoai)
extends_documentation_fragment:
  - hanzo.kms.info_module
  - kubernetes.core.k8s_auth_options
options:
  cluster_name:
    description:
      - The CNPG Cluster.
    type: str
    required: true
  namespace:
    description:
      - Namespace of the Cluster, its pods and Secrets.
    type: str
    default: kms
  database:
    description:
      - Database to connect to.
    type: str
    default: postgres
  credentials:
    description:
      - Whose login to use. V(superuser), the Secret C(spec.superuserSecret) or C(<cluster_name>-superuser) (CNPG
        sets the C(postgres) password only with C(spec.enableSuperuserAccess)); V(app), the application owner's
        Secret of the Cluster's bootstrap (C(initdb), C(recovery) or C(pg_basebackup) C(secret)) or
        C(<cluster_name>-app); V(auto), the superuser when enabled (it can read every table), else the application
        owner.
    type: str
    choices: [auto, superuser, app]
    default: auto
  read:
    description:
      - What to read.
    type: list
    elements: str
    choices: [row_counts, replication, recovery]
    default: [row_counts]
  request_timeout:
    description:
      - Seconds to wait for each Kubernetes API request and for the PostgreSQL connection.
    type: int
    default: 10
notes:
  - Needs C(get) on the Cluster, the instance pod and the Secrets, and C(create) on C(pods/portforward) in
    O(namespace).
  - Fails with a message naming the problem when the Cluster or its pod is missing, the port-forward is refused, the
    TLS verification or the authentication fails.
requirements:
  - kubernetes >= 24.2.0 (Python library)
  - psycopg2 (Python library, psycopg2-binary)
  - the kubernetes.core collection
seealso:
  - module: hanzo.kms.site_data_info
"""

EXAMPLES = r"""
- name: Count the rows of every table of the recovered database
  hanzo.kms.cnpg_query_info:
    kubeconfig: /etc/hanzo-kms/dc1.kubeconfig
    namespace: kms
    cluster_name: kms-pg-restore-test
    database: kms
  register: restored

- name: Show the replication state of dc2's designated primary
  hanzo.kms.cnpg_query_info:
    context: dc2
    cluster_name: kms-pg-dc2
    read: [replication]
  register: dc2_sql
"""

RETURN = r"""
pod:
  description: The instance connected to.
  returned: success
  type: str
  sample: kms-pg-dc1-1
tls_name:
  description: The server name verified in its certificate.
  returned: success
  type: str
  sample: kms-pg-dc1-rw.kms.svc
user:
  description: The PostgreSQL role connected as.
  returned: success
  type: str
  sample: postgres
database:
  description: The database connected to.
  returned: success
  type: str
  sample: kms
tables:
  description: Rows per table, keyed C(schema.table), of O(database) (system schemas excluded).
  returned: when O(read) has C(row_counts)
  type: dict
  sample: {"public.secrets": 1200}
replication:
  description:
    - C(in_recovery), C(current_lsn) (a primary's), C(receive_lsn), C(replay_lsn), C(replay_gap_bytes),
      C(replay_time) and C(replay_lag_seconds) (C(now()) minus the newest replayed commit), and from
      C(pg_stat_archiver) C(archived_count), C(last_archived_wal), C(last_archived_time),
      C(last_archived_age_seconds), C(failed_count), C(last_failed_wal), C(last_failed_time),
      C(last_failed_age_seconds). Times are UTC (RFC 3339), ages the server's.
  returned: when O(read) has C(replication)
  type: dict
recovery:
  description:
    - C(in_recovery), C(timeline); when the timeline is above 1, C(history) (the entries of its history file, each
      with C(parent_timeline), C(switch_lsn), C(reason)) and the newest entry's C(switch_lsn) and C(reason) (e.g.
      C(before 2026-12-04 15:30:00.123456+00), C(at restore point "x")), or C(history_error) when the file cannot be
      read (it needs O(credentials=superuser)).
  returned: when O(read) has C(recovery)
  type: dict
  sample: {"in_recovery": false, "timeline": 2, "switch_lsn": "0/5000190", "reason": "before 2026-12-04 15:30:00+00"}
"""

import copy

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hanzo.kms.plugins.module_utils.cnpg_sql import CREDENTIAL_CHOICES, READS, SqlError, query_info
from ansible_collections.hanzo.kms.plugins.module_utils.kube import AUTH_ARG_SPEC, api_client, missing
from ansible_collections.hanzo.kms.plugins.module_utils.module_run import not_positive
from ansible_collections.hanzo.kms.plugins.module_utils.site_status import KubeReader


def argument_spec():
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(
        cluster_name=dict(type="str", required=True),
        namespace=dict(type="str", default="kms"),
        database=dict(type="str", default="postgres"),
        credentials=dict(type="str", choices=list(CREDENTIAL_CHOICES), default="auto", no_log=False),
        read=dict(type="list", elements="str", choices=list(READS), default=["row_counts"]),
        request_timeout=dict(type="int", default=10),
    )
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    problem = not_positive(params, ("request_timeout",))
    if problem:
        module.fail_json(msg=problem)
    if not params["read"]:
        module.fail_json(msg=f"read must name at least one of {', '.join(READS)}")
    problem = missing()
    if problem:
        module.fail_json(msg=problem[0], exception=problem[1])
    try:
        api = api_client(params)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        module.fail_json(msg=f"Kubernetes client not configured: {exc}")
    try:
        result = query_info(api, KubeReader(api, params["request_timeout"]), params)
    except SqlError as exc:
        module.fail_json(msg=f"cnpg_query_info: {exc}")
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
