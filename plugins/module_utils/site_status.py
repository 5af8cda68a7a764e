# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One site's status in one pass (``hanzo.kms.site_data_info`` with ``cluster_name``, the ``site_status`` role),
tolerating a site whose Kubernetes API does not answer. No Ansible import.

``gather`` reads, in order: the CNPG Cluster (its answer decides whether the site is reachable), the instance's
replication state over SQL (cnpg_sql.py: pg_stat_archiver, replay LSN and lag, and the commit time of the newest
replayed transaction: the failover's data-loss bound), the KMS Deployment,
the Cluster's Backups, the site's ObjectStore (its destinationPath), the Redis password from its Secret, then the
object store and Redis (``site_data.collect_site_data``). Meanwhile a TCP connection to Redis is tried: a site cut off
by a partition drops packets, so its API server and its Redis each cost their whole connect timeout, once in parallel.
It returns the *site status* documented in ``operation_decisions`` plus the *access* (how to reach the site, with the Redis
password: never print it).

The Kubernetes reads go through ``KubeReader`` (the kubernetes client); tests give ``gather`` a fake reader.
"""

from __future__ import annotations

import base64
import socket
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.hanzo.kms.plugins.module_utils.cnpg_sql import SqlError
from ansible_collections.hanzo.kms.plugins.module_utils.kube import request_timeout

CNPG_GROUP, CNPG_VERSION = "postgresql.cnpg.io", "v1"
BARMAN_GROUP, BARMAN_VERSION = "barmancloud.cnpg.io", "v1"
# The commit time of the newest transaction the server has replayed (UTC, whole seconds); empty on a server that
# replayed nothing since it started. Read as the postgres user over the instance's local socket.


class NotFound(Exception):
    """The object does not exist (HTTP 404)."""


class KubeReader:
    """The reads ``gather`` needs, over a kubernetes ApiClient. Every method raises the client's exceptions, except
    a 404, which is ``NotFound``."""

    def __init__(self, api, request_timeout=10):
        # pylint: disable=import-outside-toplevel
        import kubernetes as k8s

        self.api = api
        self.timeout = request_timeout
        self.custom = k8s.client.CustomObjectsApi(api)
        self.apps = k8s.client.AppsV1Api(api)
        self.core = k8s.client.CoreV1Api(api)
        self.api_exception = k8s.client.exceptions.ApiException

    def _call(self, func, *args, **kwargs):
        try:
            result = func(*args, _request_timeout=request_timeout(self.timeout), **kwargs)
        except self.api_exception as exc:
            if exc.status == 404:
                raise NotFound(str(exc.reason)) from None
            raise
        return result if isinstance(result, dict) else self.api.sanitize_for_serialization(result)

    def cluster(self, namespace, name):
        return self._call(
            self.custom.get_namespaced_custom_object, CNPG_GROUP, CNPG_VERSION, namespace, "clusters", name
        )

    def backups(self, namespace):
        return self._call(
            self.custom.list_namespaced_custom_object, CNPG_GROUP, CNPG_VERSION, namespace, "backups"
        ).get("items", [])

    def object_store(self, namespace, name):
        return self._call(
            self.custom.get_namespaced_custom_object, BARMAN_GROUP, BARMAN_VERSION, namespace, "objectstores", name
        )

    def deployment(self, namespace, name):
        return self._call(self.apps.read_namespaced_deployment, name, namespace)

    def pod(self, namespace, name):
        return self._call(self.core.read_namespaced_pod, name, namespace)

    def secret_data(self, namespace, name):
        return self._call(self.core.read_namespaced_secret, name, namespace).get("data") or {}

    def replication_state(self, namespace, cluster):
        """cnpg_sql.REPLICATION_QUERY's row from the Cluster's primary instance, as its application owner (the
        statistics need no privilege); raises cnpg_sql.SqlError."""
        # pylint: disable=import-outside-toplevel
        from ansible_collections.hanzo.kms.plugins.module_utils.cnpg_sql import Instance, replication_state

        with Instance(
            self.api, self, cluster, namespace, credentials="app", timeout=self.timeout, statement_timeout=self.timeout
        ) as conn:
            return replication_state(conn)


def describe_error(exc):
    """One line for a failed read: the API's status and reason, or the innermost connection error (urllib3 wraps
    it as ``HTTPSConnectionPool(...): Max retries exceeded ... (Caused by NewConnectionError("...: [Errno 111] ..."))``)."""
    status = getattr(exc, "status", None)
    if status:
        return f"{status} {getattr(exc, 'reason', '') or ''}".strip()
    reason = getattr(exc, "reason", None)
    if isinstance(reason, Exception):
        pool = getattr(exc, "pool", None)
        where = f"{pool.host}:{pool.port}" if pool is not None else "the API server"
        return f"cannot connect to {where}: {str(reason).rsplit(': ', 1)[-1]}"
    return str(exc) or exc.__class__.__name__


def kms_view(deployment):
    """Replicas wanted and ready of the KMS Deployment, and its Available condition."""
    status = deployment.get("status") or {}
    available = [c.get("status") for c in status.get("conditions") or [] if c.get("type") == "Available"]
    return {
        "replicas": int((deployment.get("spec") or {}).get("replicas", 1)),
        "ready_replicas": int(status.get("readyReplicas") or 0),
        "available": bool(available) and available[0] == "True",
    }


def read_sql(reader, namespace, cluster):
    """``{"error": None, "state": <replication state>}`` of the Cluster's primary instance, or ``{"error": why}``:
    a site whose SQL cannot be reached shows why, its status does not fail."""
    try:
        return {"error": None, "state": reader.replication_state(namespace, cluster)}
    except SqlError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # pylint: disable=broad-exception-caught
        return {"error": describe_error(exc)}


def redis_connect_error(host, port, timeout):
    """None when a TCP connection to Redis is made within ``timeout`` seconds, else why not."""
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        return f"cannot connect to Redis at {host}:{port}: {exc or exc.__class__.__name__}"
    return None


def gather(params, reader, collect_data, connect_check=redis_connect_error):
    """(status, access) of one site. ``reader`` is a KubeReader (or None when the client could not even be
    configured: ``reader_error`` says why); ``collect_data(params_with_redis)`` lists the object store and probes
    Redis. params: site, inventory_role, namespace, cluster_name, object_store_name, kms_name, read_sql,
    redis_secret_name, redis_secret_key, probe_redis, host, port, password (Redis; empty = from the Secret),
    kubeconfig, context, reader_error, connect_timeout. ``connect_check(host, port, timeout)`` tries Redis while the
    Kubernetes reads run; when it fails, Redis is not probed and its error is the finding."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        probe_redis = bool(params.get("probe_redis", True) and params.get("host"))
        redis_check = (
            pool.submit(
                connect_check,
                params.get("host"),
                params.get("port") or 6379,
                float(params.get("connect_timeout") or 10.0),
            )
            if probe_redis
            else None
        )
        status, destination, password = _read_kube(params, reader, probe_redis)
        redis_error = redis_check.result() if redis_check else None
    data_params = dict(
        params,
        password=password or None,
        cnpg_destination_path=destination or None,
        probe_redis=probe_redis and not redis_error,
        redis_error=redis_error,
    )
    status["data"] = collect_data(data_params)
    # Not the kubeconfig: a no_log option (it may be given inline), which the caller has.
    access = {
        "site": params["site"],
        "context": params.get("context") or "",
        "namespace": params["namespace"],
        "cluster_name": params["cluster_name"],
        "kms_name": params["kms_name"],
        "redis_host": params.get("host") or "",
        "redis_port": int(params.get("port") or 6379),
        "redis_password": password,
        "redis_tls": bool(params.get("tls")),
        "redis_tls_ca_cert": params.get("tls_ca_cert") or "",
    }
    return status, access


def _read_kube(params, reader, probe_redis):
    """(status without data, ObjectStore destinationPath, Redis password) from the site's Kubernetes API."""
    namespace, cluster_name = params["namespace"], params["cluster_name"]
    status = {
        "site": params["site"],
        "inventory_role": params.get("inventory_role") or "",
        "kube_reachable": False,
        "kube_error": None,
        "cluster": None,
        "cluster_error": None,
        "kms": None,
        "replayed_commit_time": "",
        "sql": None,
        "backups": [],
        "data": None,
    }
    cluster = None
    if reader is None:
        status["kube_error"] = params.get("reader_error") or "no Kubernetes client"
    else:
        try:
            cluster = reader.cluster(namespace, cluster_name)
            status["kube_reachable"] = True
        except NotFound:
            status["kube_reachable"] = True
            status["cluster_error"] = f"Cluster {namespace}/{cluster_name} not found"
        except Exception as exc:  # pylint: disable=broad-exception-caught
            status["kube_error"] = describe_error(exc)
    if status["kube_error"]:
        status["cluster_error"] = status["kube_error"]
    status["cluster"] = cluster

    destination, password = "", params.get("password") or ""
    if status["kube_reachable"]:
        if cluster and params.get("read_sql", True):
            status["sql"] = read_sql(reader, namespace, cluster)
            # the failover's data-loss bound; empty when not in recovery, nothing replayed since the start, or no SQL
            status["replayed_commit_time"] = (status["sql"].get("state") or {}).get("replay_time") or ""
        try:
            status["kms"] = kms_view(reader.deployment(namespace, params["kms_name"]))
        except Exception:  # pylint: disable=broad-exception-caught
            status["kms"] = None  # no Deployment (not installed) or not readable: "unknown" in the status
        try:
            status["backups"] = [
                b
                for b in reader.backups(namespace)
                if ((b.get("spec") or {}).get("cluster") or {}).get("name") == cluster_name
            ]
        except Exception:  # pylint: disable=broad-exception-caught
            status["backups"] = []
        try:
            store = reader.object_store(namespace, params["object_store_name"])
            destination = ((store.get("spec") or {}).get("configuration") or {}).get("destinationPath") or ""
        except Exception:  # pylint: disable=broad-exception-caught
            destination = ""
        if not password and probe_redis:
            try:
                encoded = reader.secret_data(namespace, params["redis_secret_name"]).get(params["redis_secret_key"])
                password = base64.b64decode(encoded).decode() if encoded else ""
            except Exception:  # pylint: disable=broad-exception-caught
                password = ""  # the Redis probe then reports the AUTH error
    return status, destination, password
