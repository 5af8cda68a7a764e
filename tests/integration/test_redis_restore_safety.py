# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Safety of redis_rdb_restore against dropped connections, foreign clients and hostile peers (issue 14).

Every test runs against a real Redis 7.0 target started for it (Bitnami-like: password, AOF, FLUSHALL disabled), so a
target a test leaves broken never affects another test.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import socket
import threading
import time
import uuid

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import redis_backup, redis_client, redis_restore
from ansible_collections.hanzo.kms.plugins.module_utils.redis_restore import RestoreError
from tests import ansible_run
from tests.integration.test_redis_rdb import (  # pylint: disable=unused-import
    _make_certs,
    bitnami_like,
    client,
    conn_params,
    forget_processes,
    populate,
    snapshot,
    start_tls_redis,
)
from tests.lab import redis as lab_redis
from tests.lab.core import wait_until

redis = pytest.importorskip("redis")

BULK = 150_000  # enough keys that a restore lasts long enough to be interrupted (seconds for RESTORE)


@pytest.fixture(scope="module")
def dumps(lab_handle, lab, tmp_path_factory):  # pylint: disable=unused-argument
    """A small and a bulk RDB of a populated source, with the source's snapshot."""
    src = lab_redis.up(lab_handle, f"safety-src-{uuid.uuid4().hex[:6]}")
    out = {}
    base = tmp_path_factory.mktemp("dumps")
    for name, bulk in (("small", 0), ("bulk", BULK)):
        populate(src, bulk=bulk)
        path = base / f"{name}.rdb"
        redis_backup.run_backup(conn_params(src, dest=str(path)))
        out[name] = (str(path), snapshot(src))
    return out


@pytest.fixture
def target(lab_handle, forget_processes):  # pylint: disable=redefined-outer-name
    """A fresh Bitnami-like Redis 7.0 target (stopped after the test)."""
    entry = bitnami_like(
        lab_handle, f"safety-dst-{uuid.uuid4().hex[:6]}", lab_redis.require_binary("redis-server", "redis-server")
    )
    forget_processes.append(entry["name"])
    return entry


def role(entry):
    info = client(entry).info("replication")
    return info["role"], info.get("master_host"), info.get("master_port")


def writable(entry):
    try:
        client(entry).set("__probe__", "1")
    except redis.ResponseError as exc:
        return f"{type(exc).__name__}: {exc}"  # READONLY arrives as ReadOnlyError
    client(entry).delete("__probe__")
    return True


def kill_clients(entry, predicate):
    """CLIENT KILL every normal client (other than ours) for which predicate(fields) holds; returns how many."""
    c = client(entry)
    me = c.client_id()
    killed = 0
    for fields in c.client_list(_type="normal"):
        if int(fields["id"]) != me and predicate(fields):
            c.client_kill_filter(_id=fields["id"])
            killed += 1
    return killed


def in_thread(func, *args, **kwargs):
    """Run func in a thread; returns (thread, box) where box gets 'result' or 'error'."""
    box = {}

    def run():
        try:
            box["result"] = func(*args, **kwargs)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def slow_load(entry, delay=-10):
    """Make the target load an RDB slowly (a few seconds for the bulk RDB), answering clients while it loads, so a test
    can act while it loads from the listener. ``key-load-delay`` is a hidden debug config: a negative -N sleeps 1 us
    for one key in N."""
    client(entry).config_set("key-load-delay", delay)
    client(entry).config_set("loading-process-events-interval-bytes", 1024)


def assert_restored(entry, expected):
    assert role(entry)[0] == "master"
    assert writable(entry) is True
    assert snapshot(entry) == expected


# --------------------------------------------------------------------------------------------------------------
# 2. method replication: a dropped control connection, a killed module
# --------------------------------------------------------------------------------------------------------------
def test_replication_survives_dropped_control_connection(lab_handle, dumps, target):
    path, expected = dumps["bulk"]
    client(target).set("old", "x")
    slow_load(target)
    port = lab_handle.free_port()
    seen = {}
    thread, box = in_thread(
        redis_restore.run_restore, conn_params(target, src=path, method="replication", listen_port=port, timeout=60)
    )
    # as soon as the target follows our listener, drop the module's connection(s) to the target
    wait_until(
        lambda: client(target).info("replication").get("master_sync_in_progress") == 1 or not thread.is_alive(),
        30,
        "the target to load from the listener",
    )
    seen["sanitize"] = client(target).config_get("sanitize-dump-payload")["sanitize-dump-payload"]
    assert kill_clients(target, lambda f: f["cmd"] not in ("client|list", "client|id")) >= 1
    thread.join(120)
    assert "error" not in box, box.get("error")
    assert box["result"]["target_state"] == "restored"
    assert_restored(target, expected)
    assert seen["sanitize"] == "yes"
    assert client(target).config_get("sanitize-dump-payload")["sanitize-dump-payload"] == "no"


def _restore_in_child(params):
    try:
        redis_restore.run_restore(params)
    finally:
        os._exit(0)  # pylint: disable=protected-access


def restore_killed_while_following(lab_handle, target, path):
    """A replication restore of ``path`` into ``target`` (loading slowly) SIGKILLed once the target follows its
    listener: the module dies without any cleanup. Returns the dead listener's port."""
    slow_load(target)
    port = lab_handle.free_port()
    params = conn_params(target, src=path, method="replication", listen_port=port, timeout=60)
    proc = multiprocessing.get_context("fork").Process(target=_restore_in_child, args=(params,))
    proc.start()
    try:
        wait_until(lambda: role(target)[2] == port or not proc.is_alive(), 30, "the target to follow the listener")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.join(10)
    return port


def test_rerun_repairs_target_left_following_a_dead_listener(lab_handle, dumps, target):
    path, expected = dumps["bulk"]
    client(target).config_set("masterauth", "previous-masterauth")
    port = restore_killed_while_following(lab_handle, target, path)
    # the reproduction: the target now follows a dead listener and rejects writes
    assert role(target)[:3] == ("slave", "127.0.0.1", port)
    assert "ReadOnly" in writable(target)
    slow_load(target, 0)

    rerun = redis_restore.run_restore(conn_params(target, src=path, method="replication", timeout=60))
    assert rerun["target_state"] == "restored"
    assert rerun["repaired"] and rerun["repaired"]["listener"] == f"127.0.0.1:{port}"
    previous = rerun["replication"]["previous_replication"]
    assert previous["role"] == "master" and not previous.get("master_host")
    assert_restored(target, expected)
    # the masterauth the killed run replaced is back
    assert client(target).config_get("masterauth")["masterauth"] == "previous-masterauth"


def test_replication_check_mode_reports_repair_without_changing(lab_handle, dumps, target):
    path, _expected = dumps["bulk"]
    port = restore_killed_while_following(lab_handle, target, path)
    assert role(target)[2] == port
    checked = redis_restore.run_restore(conn_params(target, src=path, method="replication"), check_mode=True)
    assert checked["repaired"] and checked["repaired"]["would_repair"]
    assert role(target)[2] == port  # check mode changed nothing


def test_replication_previous_master_is_put_back(lab_handle, dumps, target):
    """A target that was a replica of a real master is re-attached to it (never to the listener)."""
    path, _expected = dumps["small"]
    other = bitnami_like(
        lab_handle, f"safety-master-{uuid.uuid4().hex[:6]}", lab_redis.require_binary("redis-server", "redis-server")
    )
    try:
        client(target).config_set("masterauth", other["password"])
        client(target).replicaof("127.0.0.1", other["port"])
        wait_until(lambda: client(target).info("replication").get("master_link_status") == "up", 20, "the link")
        result = redis_restore.run_restore(conn_params(target, src=path, method="replication", timeout=60))
        assert result["target_state"] == "restored_replica"
        assert role(target) == ("slave", "127.0.0.1", other["port"])
        assert client(target).config_get("masterauth")["masterauth"] == other["password"]
    finally:
        lab_handle.stop_process(lab_handle.process(other["name"]))
        lab_handle.state["processes"] = [p for p in lab_handle.state["processes"] if p["name"] != other["name"]]
        lab_handle.save()


# --------------------------------------------------------------------------------------------------------------
# 3. the listener serves only the target
# --------------------------------------------------------------------------------------------------------------
def _connect_when_listening(port, source=None, deadline=20.0):
    end = time.monotonic() + deadline
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source:
            sock.bind((source, 0))
        try:
            sock.connect(("127.0.0.1", port))
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > end:
                raise
            time.sleep(0.002)  # the listener starts a few round trips after run_restore begins


def _drain(sock, limit=1 << 20, timeout=30.0):
    sock.settimeout(timeout)
    got = bytearray()
    try:
        while len(got) < limit:
            data = sock.recv(65536)
            if not data:
                break
            got += data
    except OSError:
        pass
    return bytes(got)


@pytest.mark.parametrize(
    "source, commands",
    [
        ("127.0.0.2", b"PING\r\nREPLCONF capa eof\r\nSYNC\r\n"),
        ("127.0.0.1", b"AUTH wrong\r\nREPLCONF capa eof\r\nPSYNC ? -1\r\nSYNC\r\n"),
        ("127.0.0.1", b"SYNC\r\n"),
    ],
)
def test_listener_serves_nothing_to_foreign_clients(lab_handle, dumps, target, source, commands):
    path, expected = dumps["small"]
    port = lab_handle.free_port()
    thread, box = in_thread(
        redis_restore.run_restore, conn_params(target, src=path, method="replication", listen_port=port, timeout=60)
    )
    foreign = _connect_when_listening(port, source)
    foreign.sendall(commands)
    received = _drain(foreign)
    foreign.close()
    thread.join(120)
    assert b"REDIS00" not in received and b"FULLRESYNC" not in received
    assert "error" not in box, box.get("error")
    assert_restored(target, expected)


def test_listener_refusing_the_target_says_which_address(dumps, target):
    path, _expected = dumps["small"]
    with pytest.raises(
        RestoreError, match=r"refused connections from 127\.0\.0\.1 \(not in listen_allow_from\)"
    ) as info:
        redis_restore.run_restore(
            conn_params(target, src=path, method="replication", timeout=5, listen_allow_from=["10.255.255.1"])
        )
    assert info.value.result["target_state"] == "not_restored"
    assert role(target)[0] == "master" and writable(target) is True
    assert client(target).config_get("masterauth")["masterauth"] == ""


@pytest.mark.parametrize("jam", ["partial_then_close", "partial_then_stall", "huge_count"])
def test_listener_is_not_jammed(lab_handle, dumps, target, jam):
    path, expected = dumps["small"]
    port = lab_handle.free_port()
    cpu_before = time.process_time()
    wall_before = time.monotonic()
    thread, box = in_thread(
        redis_restore.run_restore, conn_params(target, src=path, method="replication", listen_port=port, timeout=30)
    )
    jammer = _connect_when_listening(port)
    jammer.sendall(b"*1000000000\r\n" if jam == "huge_count" else b"*2\r\n$4\r\nSY")
    if jam == "partial_then_close":
        jammer.close()
    thread.join(60)
    cpu = time.process_time() - cpu_before
    wall = time.monotonic() - wall_before
    jammer.close()
    assert "error" not in box, box.get("error")
    assert_restored(target, expected)
    # a spinning listener burns a whole core for the whole run
    assert cpu < 0.5 * wall + 1.0, (cpu, wall)


def test_listener_stalled_and_closed_peers_cost_no_cpu():
    """Direct: a listener with peers that stall or close mid-command closes them and stays idle (thread CPU time)."""
    listener = redis_restore.ReplicationListener(
        os.devnull, "127.0.0.1", 0, allowed={"127.0.0.1"}, password="pw", handshake_timeout=1.0
    )
    try:
        closed = socket.create_connection(("127.0.0.1", listener.port))
        closed.sendall(b"*2\r\n$4\r\nSY")
        closed.close()
        stalled = socket.create_connection(("127.0.0.1", listener.port))
        stalled.sendall(b"*2\r\n$4\r\nSY")
        # the stalled peer is closed by the listener once its read times out
        assert _drain(stalled, timeout=10.0) == b""
        stalled.close()
        wait_until(lambda: listener.rejected >= 2, 10, "the listener to drop both peers")
        cpu = listener.cpu_time()
        assert cpu < 0.3, cpu
        assert listener.thread.is_alive()
    finally:
        listener.close()


# --------------------------------------------------------------------------------------------------------------
# 3. TLS replication
# --------------------------------------------------------------------------------------------------------------
def test_replication_over_tls(lab_handle, dumps, tmp_path, forget_processes):  # pylint: disable=redefined-outer-name
    path, expected = dumps["small"]
    certs = _make_certs(tmp_path)
    port, password, tls_client = start_tls_redis(
        lab_handle, forget_processes, certs, "safety-tls", "--tls-replication", "yes"
    )
    params = {
        "host": "127.0.0.1",
        "port": port,
        "password": password,
        "tls": True,
        "tls_ca_cert": certs["ca.crt"],
        "src": path,
        "method": "replication",
        "timeout": 30,
    }
    with pytest.raises(RestoreError, match="listen_tls_cert"):
        redis_restore.run_restore(params)
    assert tls_client().config_get("sanitize-dump-payload")["sanitize-dump-payload"] == "no"  # nothing left changed
    assert tls_client().config_get("masterauth")["masterauth"] == ""
    # mutual TLS: the target presents its own certificate (tls-cert-file), signed by the same lab CA
    result = redis_restore.run_restore(
        dict(
            params,
            listen_tls_cert=certs["server.crt"],
            listen_tls_key=certs["server.key"],
            listen_tls_ca_cert=certs["ca.crt"],
        )
    )
    assert result["target_state"] == "restored" and result["replication"]["tls"] is True
    assert tls_client().info("replication")["role"] == "master"
    assert tls_client().dbsize() == sum(1 for (db, _k) in expected[0] if db == 0)
    # the target verifies the listener: a certificate from another CA gets it nothing, and it is left writable
    (tmp_path / "other").mkdir()
    other = _make_certs(tmp_path / "other")
    tls_client().set("kept", "1")
    with pytest.raises(RestoreError, match="did not finish") as info:
        redis_restore.run_restore(
            dict(params, timeout=5, listen_tls_cert=other["server.crt"], listen_tls_key=other["server.key"])
        )
    assert info.value.result["target_state"] == "not_restored"
    assert tls_client().info("replication")["role"] == "master" and tls_client().get("kept") == b"1"


# --------------------------------------------------------------------------------------------------------------
# 4. method restore: a dropped connection is reported as a partial restore, and a re-run repairs it
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("connections", [1, 2])
def test_restore_drop_reports_partial_and_rerun_repairs(dumps, target, connections):
    path, expected = dumps["bulk"]
    total = sum(1 for _k in expected[0])
    client(target).config_set("sanitize-dump-payload", "clients")
    params = conn_params(target, src=path, method="restore", connections=connections)
    thread, box = in_thread(redis_restore.run_restore, params)
    wait_until(lambda: client(target, 5).dbsize() > 1000 or not thread.is_alive(), 60, "keys to arrive")
    seen = client(target).config_get("sanitize-dump-payload")["sanitize-dump-payload"]
    assert kill_clients(target, lambda f: f["cmd"] in ("restore", "select", "NULL")) >= 1
    thread.join(120)
    error = box.get("error")
    assert isinstance(error, RestoreError), box
    assert "partially restored" in str(error) and f"of {total} keys" in str(error)
    assert "re-run" in str(error)
    assert error.result["target_state"] == "partially_restored"
    # confirmed = RESTOREs answered (replies are read a batch behind); the target may hold a few batches more
    held = sum(error.result["target_keys_after"].values())
    assert 0 <= error.result["keys_confirmed"] <= held < total
    assert seen == "yes"
    assert client(target).config_get("sanitize-dump-payload")["sanitize-dump-payload"] == "clients"
    result = redis_restore.run_restore(params)
    assert result["target_state"] == "restored"
    assert snapshot(target) == expected


def test_sanitize_dump_payload_is_put_back(dumps, target):
    path, expected = dumps["small"]
    client(target).config_set("sanitize-dump-payload", "clients")
    result = redis_restore.run_restore(conn_params(target, src=path, method="restore"))
    assert result["sanitize_dump_payload"] == {"during": "yes", "previous": "clients"}
    assert client(target).config_get("sanitize-dump-payload")["sanitize-dump-payload"] == "clients"
    assert snapshot(target) == expected


# --------------------------------------------------------------------------------------------------------------
# 8. a hostile server: deeply nested replies give a clean error
# --------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def hostile_server():
    """A server on a loopback port (yielded) that answers any request with a reply nested 200,000 levels deep."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def serve():
        while True:
            try:
                peer, _addr = server.accept()
            except OSError:
                return
            try:
                peer.recv(65536)
                peer.sendall(b"*1\r\n" * 200_000 + b":1\r\n")
            except OSError:
                pass
            finally:
                peer.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


def test_nested_reply_from_hostile_server_is_a_clean_error(dumps):
    path, _expected = dumps["small"]
    with hostile_server() as port, pytest.raises((RestoreError, redis_client.RedisError), match="nested"):
        redis_restore.run_restore({"host": "127.0.0.1", "port": port, "src": path, "method": "restore"})


def test_nested_reply_through_ansible_fails_cleanly(dumps):
    """Through the module: a clean failure message, no traceback of a RecursionError."""
    path, _expected = dumps["small"]
    with hostile_server() as port:
        out = ansible_run.run_module(
            "hanzo.kms.redis_rdb_restore", {"host": "127.0.0.1", "port": port, "src": path, "method": "restore"}
        ).result()
    assert out.get("failed") and "nested" in out["msg"], out
    assert "RecursionError" not in json.dumps(out)
