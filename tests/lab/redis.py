"""Redis per site, configured like the Bitnami chart's standalone Redis.

Bitnami defaults reproduced on purpose: a password, AOF on, no RDB snapshots (``save ""``), ``noeviction``, and
FLUSHALL/FLUSHDB disabled. The backup and restore modules must work against exactly that.
"""
from __future__ import annotations

import secrets

from tests.lab.core import require_binary


def client(entry, **kwargs):
    import redis  # pylint: disable=import-outside-toplevel

    return redis.Redis(host=entry["host"], port=entry["port"], password=entry["password"],
                       socket_timeout=5, socket_connect_timeout=2, **kwargs)


def up(lab, site):
    data_dir = lab.path("redis", site, "data")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = lab.free_port()
    entry = {"host": "127.0.0.1", "port": port, "password": secrets.token_hex(16), "data_dir": str(data_dir)}
    argv = [require_binary("redis-server", "redis-server"), "--bind", "127.0.0.1", "--port", port,
            "--requirepass", entry["password"], "--dir", data_dir, "--daemonize", "no",
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--maxmemory-policy", "noeviction", "--protected-mode", "yes",
            "--rename-command", "FLUSHALL", "", "--rename-command", "FLUSHDB", ""]
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
