# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What hanzo.kms.site_data_info and hanzo.kms.haproxy_info read: one site's backups in the object store and its
Redis server, and where each HAProxy instance sends the traffic of a backend. Every part reports its own error; the
analysis of what is read is in operation_decisions.py.
"""

from __future__ import annotations

from ansible_collections.hanzo.kms.plugins.module_utils import backup_layout
from ansible_collections.hanzo.kms.plugins.module_utils.operation_decisions import (
    analyze_cnpg_archive,
    split_s3_url,
    summarize_redis_backups,
)
from ansible_collections.hanzo.kms.plugins.module_utils.times import format_time, utcnow


def redis_probe(params):
    """Role, version and key count of a Redis server, or raise ``RedisError``."""
    from ansible_collections.hanzo.kms.plugins.module_utils import redis_client  # pylint: disable=import-outside-toplevel

    client = redis_client.connect(params, timeout=float(params.get("connect_timeout") or 10.0))
    try:
        info = redis_client.server_info(client)
        replication = client.info("replication")
    finally:
        client.close()
    return {
        "role": replication.get("role"),
        "server": info["server"],
        "version": info["version"],
        "keys": sum(db["keys"] for db in info["keyspace"].values()),
        "keyspace": info["keyspace"],
        "address": f"{params.get('host')}:{params.get('port')}",
    }


def collect_site_data(params, s3_client, now=None):
    """Backups of one site in the object store and its Redis server; every part reports its own error."""
    # pylint: disable=import-outside-toplevel
    # Here, not at the top: hanzo.kms.haproxy_info imports this file and needs neither boto3 nor redis-py.
    from ansible_collections.hanzo.kms.plugins.module_utils import s3_retention
    from ansible_collections.hanzo.kms.plugins.module_utils.redis_client import RedisError
    from ansible_collections.hanzo.kms.plugins.module_utils.s3 import S3Error
    from ansible_collections.hanzo.kms.plugins.module_utils.s3_backup_info import complete_backups

    now = now or utcnow()
    site = params["site"]
    out = {"site": site, "now": format_time(now)}
    if params.get("cnpg_destination_path"):
        bucket, prefix = split_s3_url(params["cnpg_destination_path"])
    else:
        parts = [p.strip("/") for p in (params.get("cnpg_prefix") or "cnpg", site) if p.strip("/")]
        bucket, prefix = params["bucket"], "/".join(parts) + "/"
    cnpg = {"bucket": bucket, "prefix": prefix}
    try:
        objects, dummy_server_time = s3_retention.list_objects(s3_client, bucket, prefix)
        cnpg.update(
            analyze_cnpg_archive(
                ((o.key, o.last_modified, o.size) for o in objects),
                prefix,
                now,
                server=params.get("cnpg_server_name") or None,
            )
        )
    except S3Error as exc:
        cnpg["error"] = str(exc)
    out["cnpg"] = cnpg

    redis = {"server": None, "error": None}
    redis_prefix = backup_layout.backup_prefix(params.get("redis_prefix"), site)
    try:
        listing = complete_backups(s3_client, params["bucket"], params.get("redis_prefix"), site)
        redis["backups"] = summarize_redis_backups(listing, now)
    except S3Error as exc:
        redis["backups"] = {"count": 0, "newest": None, "error": str(exc)}
    redis["backups"]["prefix"] = redis_prefix
    if params.get("redis_error"):  # known before (site_status.gather tried to connect): not probed again
        redis["error"] = params["redis_error"]
    elif params.get("probe_redis", True) and params.get("host"):
        try:
            redis["server"] = redis_probe(params)
        except (RedisError, OSError) as exc:
            redis["error"] = str(exc)
    out["redis"] = redis
    return out


def lb_view(name, states, stats, backend):
    """Which servers of ``backend`` an HAProxy instance sends traffic to.

    ``states``: {(backend, server): ServerState} (``show servers state``); ``stats``: {server: row} (``show stat``).
    A server serves when it is administratively ``ready`` with a weight above 0 and its health check passes (or it
    has none).
    """
    servers, serving = {}, []
    for (be_name, server), state in sorted(states.items()):
        if be_name != backend:
            continue
        row = stats.get(server) or {}
        status = (row.get("status") or "").strip() or "unknown"
        servers[server] = {
            "state": state.state,
            "weight": state.uweight,
            "status": status,
            "check": (row.get("check_status") or "").replace("*", "").strip() or None,
        }
        healthy = status == "no check" or status.split()[0] == "UP"
        if state.state == "ready" and state.uweight > 0 and healthy:
            serving.append(server)
    return {"name": name, "reachable": True, "error": None, "backend": backend, "servers": servers, "serving": serving}


def read_lb(instance, backend, timeout=5.0):
    """``lb_view`` of one instance (an item of haproxy.runtime_instance_spec); an unreachable instance, or one whose
    TLS files cannot be loaded, is reported, not raised."""
    # pylint: disable=import-outside-toplevel
    from ansible_collections.hanzo.kms.plugins.module_utils.haproxy import (
        HAProxyError,
        RuntimeClient,
        check_names,
        instance_connection,
    )

    check_names(backend)  # an invalid name is the caller's error, not an unreachable instance
    name = instance.get("name") or instance.get("socket") or instance.get("address")
    try:
        name, address, tls = instance_connection(instance)
        client = RuntimeClient(address, name=name, timeout=timeout, tls=tls)
        return lb_view(name, client.servers_state(backend), client.server_stats(backend), backend)
    except HAProxyError as exc:
        return {"name": name, "reachable": False, "error": str(exc), "backend": backend, "servers": {}, "serving": []}
