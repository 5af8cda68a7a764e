# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A throw-away redis-server on 127.0.0.1 of this machine, in a directory of its own (the restore test's scratch
Redis): start it, stop it and remove its directory, and find the ones an interrupted run left behind.

The directory is the server's identity: it holds the configuration, the pid file, the log, and it is the server's
working directory (Redis changes into its ``dir``). A pid is only signalled when /proc says that process works in
that directory, so a stale pid file whose pid now belongs to another process is never acted on.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import tempfile
import time

from ansible_collections.hanzo.kms.plugins.module_utils import redis_client
from ansible_collections.hanzo.kms.plugins.module_utils.processes import pid_alive

DIR_PREFIX = "hanzo-kms-restore-test-"
CONFIG_NAME = "redis.conf"
PID_NAME = "redis.pid"
LOG_NAME = "redis.log"
HOST = "127.0.0.1"
POLL_INTERVAL = 0.05
LOG_TAIL = 2000


class ScratchRedisError(Exception):
    """The scratch Redis could not be started or stopped; the message says why."""


def config_text(path, port, password):
    """redis.conf of a scratch Redis in ``path``: loopback only, a password, no persistence, daemonized."""
    return "\n".join(
        [
            f"bind {HOST}",
            f"port {port}",
            f"requirepass {password}",
            f"dir {path}",
            "daemonize yes",
            f"pidfile {os.path.join(path, PID_NAME)}",
            f"logfile {os.path.join(path, LOG_NAME)}",
            'save ""',
            "appendonly no",
            "protected-mode yes",
            "",
        ]
    )


def free_port():
    """A loopback port nothing listens on now, chosen by the kernel."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_in_use(port):
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def server_pid(path):
    """The pid of the redis-server running in ``path`` (its pid file, and /proc confirms it works there), or None."""
    try:
        with open(os.path.join(path, PID_NAME), encoding="ascii") as handle:
            pid = int(handle.read().strip())
    except (OSError, ValueError):
        return None
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None  # gone, or not ours to inspect
    return pid if os.path.realpath(cwd) == os.path.realpath(path) else None


def _wait_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_INTERVAL)
    return True


def stop(path, timeout=10.0):
    """Stop the scratch Redis of ``path`` (SIGTERM, SIGKILL when it has not exited after ``timeout`` seconds) and
    remove the directory. Returns ``{'pid': pid or None, 'removed': bool}``."""
    pid = server_pid(path)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, timeout):
            os.kill(pid, signal.SIGKILL)
            if not _wait_gone(pid, timeout):
                raise ScratchRedisError(f"the scratch Redis (pid {pid}) in {path} did not exit after SIGKILL")
    removed = os.path.isdir(path)
    shutil.rmtree(path, ignore_errors=True)
    if os.path.exists(path):
        raise ScratchRedisError(f"could not remove the scratch Redis directory {path}")
    return {"pid": pid, "removed": removed}


def leftovers(tmpdir):
    """The scratch Redis directories in ``tmpdir``: ours by name, owner and configuration file."""
    found = []
    try:
        names = sorted(os.listdir(tmpdir))
    except FileNotFoundError:
        return found
    for name in names:
        path = os.path.join(tmpdir, name)
        if not name.startswith(DIR_PREFIX) or os.path.islink(path) or not os.path.isdir(path):
            continue
        if os.stat(path).st_uid == os.getuid() and os.path.isfile(os.path.join(path, CONFIG_NAME)):
            found.append(path)
    return found


def stop_leftovers(tmpdir, timeout=10.0):
    """Stop and remove every scratch Redis in ``tmpdir``; ``[{'path', 'pid', 'removed'}]`` of those found."""
    return [dict(stop(path, timeout), path=path) for path in leftovers(tmpdir)]


def log_tail(path):
    try:
        with open(os.path.join(path, LOG_NAME), encoding="utf-8", errors="replace") as handle:
            return handle.read()[-LOG_TAIL:].strip()
    except OSError:
        return ""


def _answers(port, password):
    try:
        client = redis_client.connect(
            {"host": HOST, "port": port, "password": password, "connect_timeout": 1}, timeout=5
        )
    except redis_client.RedisError:
        return False
    try:
        return client.ping() is True
    except redis_client.RedisError:
        return False
    finally:
        client.close()


def start(server, password, port=0, tmpdir=None, timeout=30.0, run=None):
    """Start ``server`` (redis-server) in a new scratch directory under ``tmpdir`` on ``port`` (0: a free one) and
    wait until it answers PING with ``password``. ``run(argv)`` returns ``(rc, stdout, stderr)`` (the module's
    run_command). Returns ``{'path', 'host', 'port', 'pid'}``; on failure the directory is removed again."""
    if not password:
        raise ScratchRedisError("the scratch Redis needs a password")
    if port and port_in_use(port):
        raise ScratchRedisError(f"port {port} on {HOST} is in use: choose another port, or 0 for a free one")
    tmpdir = tmpdir or tempfile.gettempdir()
    os.makedirs(tmpdir, mode=0o700, exist_ok=True)
    path = tempfile.mkdtemp(prefix=DIR_PREFIX, dir=tmpdir)  # 0700
    try:
        port = port or free_port()
        config = os.path.join(path, CONFIG_NAME)
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(config_text(path, port, password))
        rc, out, err = run([server, config])
        if rc != 0:
            raise ScratchRedisError(f"{server} {config} exited with {rc}: {(err or out).strip()} {log_tail(path)}")
        deadline = time.monotonic() + timeout
        while not _answers(port, password):
            if time.monotonic() > deadline:
                raise ScratchRedisError(
                    f"the scratch Redis on {HOST}:{port} did not answer within {timeout:g} s; its log: {log_tail(path)}"
                )
            time.sleep(POLL_INTERVAL)
        return {"path": path, "host": HOST, "port": port, "pid": server_pid(path)}
    except BaseException:
        stop(path)
        raise
