#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: site_data_info
short_description: One Hanzo KMS site's status - its Kubernetes objects, its backups in object storage, its Redis
version_added: 0.1.0
description:
  - Read-only. Reports what the object store holds for one site and whether the site's Redis answers, for the
    status, failover and switchover playbooks; with O(cluster_name), also the site's Kubernetes objects, all in one
    pass (the C(hanzo.kms.site_status) role, where its speed is part of a failover's time).
  - "PostgreSQL: lists the Barman Cloud layout under the site's ObjectStore C(destinationPath)
    (C(<server>/wals/...) and C(<server>/base/<backup id>/backup.info)) and returns the newest archived WAL file and
    the newest base backup with their age (from the objects' C(LastModified): when they reached the object store)."
  - "Redis: the newest complete backup (one with C(manifest.json)) under O(redis_prefix)/O(site) in the layout of
    M(hanzo.kms.redis_rdb_backup), and, with O(probe_redis), the server's role, version and key count."
  - "Kubernetes (with O(cluster_name)): the CNPG Cluster (its answer decides whether the site's API is reachable), with
    O(read_sql) its instance's replication state, among it the commit time of the newest transaction it has replayed
    (the failover's data-loss bound), the KMS Deployment, the Cluster's
    Backups, the ObjectStore O(object_store_name) (its C(destinationPath) is listed), and the Redis password from the
    Secret O(redis_secret_name) when O(password) is empty. Returned as RV(status) and RV(access)."
  - Every part reports its own error instead of failing the task, so an unreachable API server or Redis, or a missing
    bucket, still gives a result. The task fails only on invalid options.
author:
  - Hanzo KMS platform team (@hanzoai)
extends_documentation_fragment:
  - hanzo.kms.info_module
  - hanzo.kms.redis
  - hanzo.kms.s3
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
  cluster_name:
    description:
      - The site's CNPG Cluster. Given, the module also reads the site's Kubernetes objects (see the description)
        and returns RV(status) and RV(access); without it, only the object store and Redis are read.
    type: str
  kubeconfig:
    description:
      - The site's kubeconfig, a path or a kubeconfig given inline as a dict (as in kubernetes.core's modules;
        K8S_AUTH_* variables and C(~/.kube/config) apply when it is not set). Only O(kubeconfig) and O(context)
        select the cluster here, since O(host), O(username), O(password) and O(validate_certs) are the Redis and S3
        settings.
      - Never logged nor returned (a kubeconfig holds credentials); RV(access) leaves it to the caller.
    type: raw
  context:
    description:
      - The context of O(kubeconfig) to use.
    type: str
  namespace:
    description:
      - Namespace of the Cluster, the KMS Deployment, the ObjectStore and the Redis Secret.
    type: str
    default: kms
  object_store_name:
    description:
      - The site's Barman Cloud ObjectStore. Default C(<cluster_name>-store).
    type: str
  kms_name:
    description:
      - The KMS Deployment.
    type: str
    default: kms
  read_sql:
    description:
      - Read the replication state of the Cluster's primary instance over SQL (with O(cluster_name)), with psycopg2
        through a Kubernetes port-forward to the instance pod, TLS verified against the Cluster's CA
        (C(<cluster_name>-ca)) with the name C(<cluster_name>-rw.<namespace>.svc), as the application owner of the
        Cluster's bootstrap Secret, in a read-only session. Returned in RV(status) as C(sql); its replayed commit
        time also as C(replayed_commit_time).
      - A site whose SQL cannot be reached reports the error there; the task does not fail. Set V(false) where the
        instance pods do not really run.
    type: bool
    default: true
  redis_secret_name:
    description:
      - Secret holding the Redis password, read when O(password) is empty and O(host) is given.
    type: str
    default: redis-auth
  redis_secret_key:
    description:
      - Key of the password in O(redis_secret_name).
    type: str
    default: redis-password
  inventory_role:
    description:
      - The inventory's C(site_role), reported in RV(status) next to the role discovered from the Clusters.
    type: str
    default: ''
  request_timeout:
    description:
      - Seconds to wait for each Kubernetes API request and SQL statement.
    type: int
    default: 10
notes:
  - The listing costs one C(ListObjectsV2) request per 1000 objects under the site's WAL archive path.
  - The Kubernetes part needs C(get) on the Cluster, ObjectStore, Deployment and Secret, C(list) on Backups in
    O(namespace); O(read_sql) needs C(get) on the instance pod and C(create) on
    C(pods/portforward).
requirements:
  - boto3
  - redis (redis-py), with O(probe_redis)
  - kubernetes >= 24.2.0 (Python library), with O(cluster_name)
  - psycopg2 (Python library), with O(read_sql)
seealso:
  - module: hanzo.kms.redis_rdb_backup
  - module: hanzo.kms.switch_preflight
"""

EXAMPLES = r"""
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

- name: The whole status of dc1, Kubernetes objects included (the access holds the Redis password)
  hanzo.kms.site_data_info:
    site: dc1
    bucket: kms-backups
    endpoint_url: https://s3.example.com
    access_key: "{{ s3_access_key }}"
    secret_key: "{{ s3_secret_key }}"
    kubeconfig: /etc/hanzo-kms/dc1.kubeconfig
    namespace: kms
    cluster_name: kms-pg-dc1
    host: 10.10.0.11
  register: dc1_status
  no_log: true
"""

RETURN = r"""
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
status:
  description:
    - 'The site status the operations playbooks use (plugins/module_utils/operation_decisions.py): C(site),
      C(inventory_role), C(kube_reachable), C(kube_error), C(cluster) (the Cluster object or null), C(cluster_error),
      C(kms) (C(replicas), C(ready_replicas), C(available); null when unknown), C(replayed_commit_time) (UTC, empty
      when not read), C(sql) (null when not read, else C(error) or C(state), the instance''s C(pg_stat_archiver) and
      replay figures: C(in_recovery), C(current_lsn), C(receive_lsn), C(replay_lsn), C(replay_gap_bytes),
      C(replay_time), C(replay_lag_seconds), C(archived_count), C(last_archived_wal), C(last_archived_time),
      C(last_archived_age_seconds), C(failed_count), C(last_failed_wal), C(last_failed_time),
      C(last_failed_age_seconds)), C(backups) (the Cluster''s Backup objects) and C(data) (the object store and Redis
      part above).'
  returned: with O(cluster_name)
  type: dict
access:
  description:
    - How to reach the site (C(site), C(context), C(namespace), C(cluster_name), C(kms_name), C(redis_host),
      C(redis_port), C(redis_password), C(redis_tls), C(redis_tls_ca_cert)). Holds the Redis password - register it
      with C(no_log). Not the kubeconfig, which the caller has (the hanzo.kms.site_status role adds it).
  returned: with O(cluster_name)
  type: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.hanzo.kms.plugins.module_utils.kube import api_client, missing
from ansible_collections.hanzo.kms.plugins.module_utils.module_run import not_positive
from ansible_collections.hanzo.kms.plugins.module_utils.redis_client import (
    HAS_REDIS,
    REDIS_IMPORT_ERROR,
    redis_connection_spec,
)
from ansible_collections.hanzo.kms.plugins.module_utils.s3 import (
    BOTO3_IMPORT_ERROR,
    HAS_BOTO3,
    S3Error,
    s3_argument_spec,
    s3_client,
)
from ansible_collections.hanzo.kms.plugins.module_utils.site_data import collect_site_data
from ansible_collections.hanzo.kms.plugins.module_utils.site_status import KubeReader, gather


def argument_spec():
    spec = redis_connection_spec()
    spec.update(s3_argument_spec())
    spec.update(
        site=dict(type="str", required=True),
        bucket=dict(type="str", required=True),
        cnpg_destination_path=dict(type="str"),
        cnpg_prefix=dict(type="str", default="cnpg"),
        cnpg_server_name=dict(type="str"),
        redis_prefix=dict(type="str", default="redis"),
        probe_redis=dict(type="bool", default=True),
        cluster_name=dict(type="str"),
        kubeconfig=dict(type="raw", no_log=True),  # as kubernetes.core's: a kubeconfig given inline holds credentials
        context=dict(type="str"),
        namespace=dict(type="str", default="kms"),
        object_store_name=dict(type="str"),
        kms_name=dict(type="str", default="kms"),
        read_sql=dict(type="bool", default=True),
        redis_secret_name=dict(type="str", default="redis-auth"),
        redis_secret_key=dict(type="str", default="redis-password", no_log=False),
        inventory_role=dict(type="str", default=""),
        request_timeout=dict(type="int", default=10),
    )
    return spec


def kube_reader(params):
    """(KubeReader, None), or (None, why) when the client cannot be configured (a missing kubeconfig)."""
    try:
        cluster = {key: params[key] for key in ("kubeconfig", "context")}
        return KubeReader(api_client({}, cluster), params["request_timeout"]), None
    except Exception as exc:  # pylint: disable=broad-exception-caught
        return None, f"Kubernetes client not configured: {exc}"


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    problem = not_positive(params, ("request_timeout", "connect_timeout"))
    if problem:
        module.fail_json(msg=problem)
    if not HAS_BOTO3:
        module.fail_json(msg=missing_required_lib("boto3"), exception=BOTO3_IMPORT_ERROR)
    if params["probe_redis"] and not HAS_REDIS:
        module.fail_json(msg=missing_required_lib("redis"), exception=REDIS_IMPORT_ERROR)
    problem = missing() if params["cluster_name"] else None
    if problem:
        module.fail_json(msg=problem[0], exception=problem[1])
    try:
        client = s3_client(params)
        if not params["cluster_name"]:
            module.exit_json(changed=False, **collect_site_data(params, client))
        reader, reader_error = kube_reader(params)
        status, access = gather(
            dict(
                params,
                object_store_name=params["object_store_name"] or params["cluster_name"] + "-store",
                reader_error=reader_error,
            ),
            reader,
            lambda data_params: collect_site_data(data_params, client),
        )
    except (S3Error, ValueError) as exc:
        module.fail_json(msg=f"site_data_info: {exc}")
    except Exception as exc:  # pylint: disable=broad-exception-caught
        module.fail_json(msg=f"site_data_info failed: {exc}", exception=traceback.format_exc())
    module.exit_json(changed=False, status=status, access=access, **status["data"])


if __name__ == "__main__":
    main()
