"""Redis per site, configured like the Bitnami chart's standalone Redis.

Bitnami defaults reproduced on purpose: a password, AOF on, no RDB snapshots (``save ""``), ``noeviction``, and
FLUSHALL/FLUSHDB disabled. The backup and restore modules must work against exactly that. A site's Redis serves TLS
only (``up(..., tls=...)``, as the chart's ``tls.enabled``), with a certificate of the lab CA: clients verify it with
``entry["ca_file"]``.
"""

from __future__ import annotations

import secrets

from tests.lab.core import require_binary


def client(entry, **kwargs):
    import redis  # pylint: disable=import-outside-toplevel

    if entry.get("ca_file"):
        kwargs.update(ssl=True, ssl_ca_certs=entry["ca_file"])
    return redis.Redis(
        host=entry["host"],
        port=entry["port"],
        password=entry.get("password"),
        socket_timeout=5,
        socket_connect_timeout=2,
        **kwargs,
    )


# What the Bitnami chart configures: AOF fsynced every second, no RDB snapshots, no eviction, FLUSHALL/FLUSHDB disabled
BITNAMI_SETTINGS = [
    "--daemonize",
    "no",
    "--appendonly",
    "yes",
    "--appendfsync",
    "everysec",
    "--save",
    "",
    "--maxmemory-policy",
    "noeviction",
    "--protected-mode",
    "yes",
    "--rename-command",
    "FLUSHALL",
    "",
    "--rename-command",
    "FLUSHDB",
    "",
]


def server_argv(exe, data_dir, password, listen):
    """A loopback redis-server (or valkey-server) ``exe`` with the Bitnami settings; ``listen``: its port options."""
    return [exe, "--bind", "127.0.0.1", *listen, "--requirepass", password, "--dir", data_dir, *BITNAMI_SETTINGS]


def up(lab, site, tls=None):
    """``tls``: ``{"cert_file", "key_file", "ca_file"}`` to serve TLS only on the port (no plain-text listener)."""
    data_dir = lab.path("redis", site, "data")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = lab.free_port()
    entry = {"host": "127.0.0.1", "port": port, "password": secrets.token_hex(16), "data_dir": str(data_dir)}
    listen = ["--port", port]
    if tls:
        listen = [
            "--port",
            "0",
            "--tls-port",
            port,
            "--tls-cert-file",
            tls["cert_file"],
            "--tls-key-file",
            tls["key_file"],
            "--tls-ca-cert-file",
            tls["ca_file"],
            "--tls-auth-clients",
            "no",
        ]
        entry["ca_file"] = tls["ca_file"]
    argv = server_argv(require_binary("redis-server", "redis-server"), data_dir, entry["password"], listen)
    name = f"{site}-redis"
    lab.spawn(name, argv)
    lab.wait_process(name, lambda: client(entry).ping(), 20, f"{name} to answer PING on port {port}")
    return entry


def check(entry):
    try:
        keys = client(entry).dbsize()
    except Exception as exc:  # pylint: disable=broad-exception-caught
        return False, f"{entry['host']}:{entry['port']} PING failed: {exc}"
    return True, f"{entry['host']}:{entry['port']} PONG, {keys} keys in db0"
