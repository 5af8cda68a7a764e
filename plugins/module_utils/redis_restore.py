# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verified Redis restore from an RDB (S3 object, newest complete backup under a prefix, or local file).

Everything is verified before the target is touched: sha256 against the manifest, the RDB CRC64 trailer, the RDB
version against the target server's, and a full structural pass. Methods:

* ``restore``: pipelined ``RESTORE key ttl payload REPLACE ABSTTL`` (payloads sliced from the RDB, never decoded),
  optionally over several connections (forked workers, each with its own range of keys); functions through
  ``FUNCTION RESTORE``.
* ``replication``: this process acts as a replication master; the target (``REPLICAOF`` us) loads the RDB natively,
  then ``REPLICAOF NO ONE`` and its previous replication settings come back.
* ``file``: place the RDB into the data dir of a stopped server (and move the AOF aside so the RDB is loaded).
* ``auto``: ``replication`` when the target can reach our listener, else ``restore``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import json
import mmap
import os
import secrets
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import time

from ansible_collections.hanzo.kms.plugins.module_utils import (
    backup_layout,
    redis_client,
    redis_rdb,
    redis_restore_stream,
    redis_verify,
)
from ansible_collections.hanzo.kms.plugins.module_utils.backup_layout import MANIFEST_NAME, RDB_NAME
from ansible_collections.hanzo.kms.plugins.module_utils.redis_backup import rdb_loadable, rdb_version_for
from ansible_collections.hanzo.kms.plugins.module_utils.redis_client import (
    RedisError,
    ReplyError,
    config_get,
    server_info,
)
from ansible_collections.hanzo.kms.plugins.module_utils.redis_resp import RespConnection, encode_command
from ansible_collections.hanzo.kms.plugins.module_utils.times import utcnow_compact

RdbError = redis_rdb.RdbError
_U64 = struct.Struct("<Q")


class RestoreError(Exception):
    """A restore precondition or step failed; the message says what and whether the target was changed.

    ``result`` holds fields for the module's failure result (``target_state`` and counts)."""

    def __init__(self, msg, result=None):
        super().__init__(msg)
        self.result = dict(result or {})


# --------------------------------------------------------------------------------------------------------------
# Source resolution and verification
# --------------------------------------------------------------------------------------------------------------
def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(4 * 1024 * 1024)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


def _load_manifest_bytes(data, where):
    # a malformed manifest cannot vouch for the RDB: refused before anything is downloaded or changed
    try:
        return backup_layout.parse_manifest(data)
    except backup_layout.InvalidManifest as exc:
        raise RestoreError(
            f"manifest {where} is malformed: {exc}; the target was not changed", {"target_state": "unchanged"}
        ) from None


def resolve_s3_source(client, params):
    """(rdb key, manifest key) from ``key`` or the newest complete backup under ``prefix``/``site``."""
    from ansible_collections.hanzo.kms.plugins.module_utils.s3_backup_info import (  # pylint: disable=import-outside-toplevel
        BackupInfoError,
        complete_backups,
    )

    bucket = params["bucket"]
    key = params.get("key")
    if key:
        return key, backup_layout.manifest_key_for(key)
    prefix = backup_layout.backup_prefix(params.get("prefix"), params.get("site"))
    try:
        backups = complete_backups(client, bucket, params.get("prefix"), params.get("site"))
    except BackupInfoError as exc:
        raise RestoreError(str(exc)) from None
    if backups:
        return backups[0]["rdb_key"], backups[0]["manifest_key"]
    raise RestoreError(f"no complete backup (with {MANIFEST_NAME} and {RDB_NAME}) under s3://{bucket}/{prefix}")


def read_s3_manifest(client, bucket, manifest_key):
    from ansible_collections.hanzo.kms.plugins.module_utils import s3 as s3_utils  # pylint: disable=import-outside-toplevel

    with s3_utils.wrap_errors("read manifest", bucket=bucket):
        try:
            body = client.get_object(Bucket=bucket, Key=manifest_key)["Body"].read()
        except Exception as exc:  # pylint: disable=broad-exception-caught
            code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
            if code in ("NoSuchKey", "404"):
                raise RestoreError(
                    f"s3://{bucket}/{manifest_key} does not exist: the backup is incomplete and is never restored"
                ) from None
            raise
    return _load_manifest_bytes(body, f"s3://{bucket}/{manifest_key}")


def fetch_s3_source(client, params, workdir):
    """Download manifest + RDB (streaming, sha256 on the fly) into ``workdir``. Returns (path, manifest, source)."""
    from ansible_collections.hanzo.kms.plugins.module_utils import s3 as s3_utils  # pylint: disable=import-outside-toplevel

    bucket = params["bucket"]
    rdb_key, manifest_key = resolve_s3_source(client, params)
    manifest = read_s3_manifest(client, bucket, manifest_key)
    path = os.path.join(workdir, RDB_NAME)
    digest = hashlib.sha256()
    with s3_utils.wrap_errors("download RDB", bucket=bucket):
        resp = client.get_object(Bucket=bucket, Key=rdb_key)
        with open(path, "wb") as handle:
            for chunk in resp["Body"].iter_chunks(4 * 1024 * 1024):
                digest.update(chunk)
                handle.write(chunk)
    source = {"type": "s3", "bucket": bucket, "key": rdb_key, "manifest_key": manifest_key}
    return path, manifest, digest.hexdigest(), source


def verify_source(path, manifest, sha256, recorded_check_ok=False):
    """sha256/size against the manifest, then a full structural + CRC64 pass. Returns (RdbFile, mmap, handle).

    With ``recorded_check_ok`` (a method that does not parse the RDB itself) and a manifest whose recorded structure
    check replaces the pass (``redis_verify.manifest_replaces_pass``), only the header and CRC64 are checked against
    it: returns (RecordedRdb, None, None).
    """
    size = os.path.getsize(path)
    if manifest is not None:
        if manifest.get("sha256") != sha256:
            raise RestoreError(
                f"sha256 of the RDB ({sha256}) does not match the manifest ({manifest.get('sha256')}); "
                "the target was not changed"
            )
        if manifest.get("size") is not None and int(manifest["size"]) != size:
            raise RestoreError(
                f"RDB size {size} does not match the manifest ({manifest['size']}); the target was not changed"
            )
    if size == 0:
        raise RestoreError("the RDB file is empty; the target was not changed")
    replaces, reason = redis_verify.manifest_replaces_pass(manifest) if manifest is not None else (False, "no manifest")
    if recorded_check_ok and replaces:
        try:
            recorded = redis_verify.check_file_against_record(path, manifest, reason)
        except RdbError as exc:
            raise RestoreError(f"the RDB is unusable: {exc}; the target was not changed") from None
        if recorded.summary.module_aux or recorded.summary.module_keys:
            raise RestoreError(
                f"the RDB holds module data ({recorded.summary.module_keys} module keys, "
                f"{recorded.summary.module_aux} module aux sections); restoring module data is not "
                "supported; the target was not changed"
            )
        return recorded, None, None
    handle = open(path, "rb")  # pylint: disable=consider-using-with
    try:
        buf = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        handle.close()
        raise RestoreError(f"cannot map {path}: {exc}") from None
    try:
        rdb = redis_rdb.RdbFile(buf, check_crc=True)
        summary = rdb.scan(checkpoint_every=5000)
        rdb.verification = "full"
        rdb.verification_reason = reason
    except RdbError as exc:
        buf.close()
        handle.close()
        raise RestoreError(f"the RDB is unusable: {exc}; the target was not changed") from None
    if (
        manifest is not None
        and manifest.get("crc64")
        and summary.checksum_stored is not None
        and manifest["crc64"] != f"{summary.checksum_stored:016x}"
    ):
        buf.close()
        handle.close()
        raise RestoreError("the RDB CRC64 does not match the manifest; the target was not changed")
    if summary.module_aux or summary.module_keys:
        buf.close()
        handle.close()
        raise RestoreError(
            f"the RDB holds module data ({summary.module_keys} module keys, {summary.module_aux} module aux "
            "sections); restoring module data is not supported; the target was not changed"
        )
    return rdb, buf, handle


# --------------------------------------------------------------------------------------------------------------
# Target helpers
# --------------------------------------------------------------------------------------------------------------
def target_keyspace(conn):
    """{db: key count} of the target (``conn``: a redis_client.Client or a Target)."""
    return {db: counts["keys"] for db, counts in redis_client.keyspace(conn.info("keyspace")).items()}


def clear_target(conn, batch=1000):
    """Delete every key of every db: FLUSHALL when allowed, else SCAN + UNLINK (FLUSHALL disabled, as Bitnami does)."""
    try:
        conn.flushall()
        return "flushall"
    except ReplyError:
        pass
    for db in sorted(int(name) for name in target_keyspace(conn)):
        conn.execute_command("SELECT", db)  # one connection (redis-py retries nothing here): the db stays selected
        cursor = 0
        while True:
            cursor, keys = conn.scan(cursor, count=batch)
            if keys:
                conn.unlink(*keys)
            if not cursor:
                break
        # keys written between SCAN passes (or missed by rehashing) are swept until the db is empty
        while conn.dbsize():
            cursor, keys = conn.scan(0, count=batch)
            if keys:
                conn.unlink(*keys)
    conn.execute_command("SELECT", 0)
    return "scan_unlink"


def _functions_supported(conn):
    try:
        conn.function_list()
        return True
    except ReplyError:
        return False


class Target:
    """Commands to the target that survive a dropped connection: on a connection failure (or ``-LOADING`` while the
    target loads an RDB) the command is retried on a fresh connection until ``retry_for`` seconds have passed. Only
    for idempotent commands (INFO, CONFIG, REPLICAOF). Its methods are redis_client.Client's (redis-py's):
    ``target.info("replication")``, ``target.config_set(name, value)``; ``run`` takes another ``retry_for``."""

    def __init__(self, params, conn=None, retry_for=60.0):
        self.params = params
        self.conn = conn
        self.retry_for = retry_for

    def __getattr__(self, name):
        if name.startswith("_") or name in ("params", "conn", "retry_for"):
            raise AttributeError(name)
        return functools.partial(self.run, name)

    def run(self, method, *args, retry_for=None):
        deadline = time.monotonic() + (self.retry_for if retry_for is None else retry_for)
        delay = 0.05
        while True:
            try:
                if self.conn is None:
                    self.conn = redis_client.connect(self.params, timeout=60.0)
                return getattr(self.conn, method)(*args)
            except ReplyError as exc:
                if not str(exc).startswith("LOADING") or time.monotonic() + delay > deadline:
                    raise
            except RedisError:
                self.close()
                if time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)  # back off before the next attempt; the target is restarting or loading
            delay = min(delay * 2, 1.0)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def enable_sanitize(conn):
    """``CONFIG SET sanitize-dump-payload yes`` (deep checks of every payload the target loads). Returns the previous
    value (None: the server has no such setting, Redis < 6.2)."""
    try:
        previous = config_get(conn, "sanitize-dump-payload")
        if previous is not None and previous != "yes":
            conn.config_set("sanitize-dump-payload", "yes")
    except ReplyError as exc:
        raise RestoreError(
            f"cannot turn on sanitize-dump-payload on the target ({exc}); the restore user needs "
            "CONFIG GET/SET; the target was not changed",
            {"target_state": "unchanged"},
        ) from None
    return previous


def put_back_config(target, name, value, failures):
    """CONFIG SET name value through ``target`` (a Target: fresh connections on failure); failures are collected."""
    try:
        target.config_set(name, value)
    except RedisError as exc:
        failures.append(f"CONFIG SET {name} back failed: {exc}")


# --------------------------------------------------------------------------------------------------------------
# Method: restore (pipelined RESTORE)
# --------------------------------------------------------------------------------------------------------------
_RESTORE_HEAD = b"*6\r\n$7\r\nRESTORE\r\n$"
_RESTORE_TAIL = b"$7\r\nREPLACE\r\n$6\r\nABSTTL\r\n"


def dump_payload(buf, rec, version_bytes, crc):
    """The RESTORE payload of a record (what DUMP returns): type byte, value, RDB version, CRC64 of those."""
    body = buf[rec.start : rec.start + 1] + buf[rec.vpos : rec.end] + version_bytes
    return body + _U64.pack(crc(body))


def _restore_range(conn, rdb, start, stop, db, now_ms, batch_bytes=1 << 20, progress=None):
    """RESTORE every key in [start, stop) of the RDB (stop None = to EOF). Returns a stats dict.

    ``progress['confirmed']`` counts the RESTOREs the target has answered, so a dropped connection can say how far
    the restore got."""
    progress = {} if progress is None else progress
    progress.setdefault("confirmed", 0)
    buf = rdb.buf
    version_bytes = struct.pack("<H", rdb.version)
    crc = redis_rdb.crc64_function()
    restored = {}
    expired = {}
    errors = []
    current_db = None
    out = []
    out_size = 0
    pending = 0  # replies not read yet
    pending_keys = 0  # RESTOREs among them
    sent_batches = []  # (reply count, RESTORE count) per batch in flight
    for rec in rdb.records_between(start, stop, db):
        rdb_db = rec.db
        expire = rec.expire_ms
        if expire is not None and 0 < expire <= now_ms:
            expired[rdb_db] = expired.get(rdb_db, 0) + 1
            continue
        if rdb_db != current_db:
            cmd = encode_command(("SELECT", rdb_db))
            out.append(cmd)
            out_size += len(cmd)
            pending += 1
            current_db = rdb_db
        payload = dump_payload(buf, rec, version_bytes, crc)
        key = rec.key
        ttl = b"%d" % (expire if expire is not None and expire > 0 else 0)
        cmd = b"%s%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n%s" % (
            _RESTORE_HEAD,
            len(key),
            key,
            len(ttl),
            ttl,
            len(payload),
            payload,
            _RESTORE_TAIL,
        )
        out.append(cmd)
        out_size += len(cmd)
        pending += 1
        pending_keys += 1
        restored[rdb_db] = restored.get(rdb_db, 0) + 1
        if out_size >= batch_bytes:
            conn.send(b"".join(out))
            out = []
            out_size = 0
            sent_batches.append((pending, pending_keys))
            pending = pending_keys = 0
            if len(sent_batches) > 1:
                count, keys = sent_batches.pop(0)
                conn.read_status_replies(count, errors)
                progress["confirmed"] += keys
    if out:
        conn.send(b"".join(out))
        sent_batches.append((pending, pending_keys))
    for count, keys in sent_batches:
        conn.read_status_replies(count, errors)
        progress["confirmed"] += keys
    return {"restored": restored, "expired": expired, "errors": errors}


def _merge_counts(total, part):
    for name in ("restored", "expired"):
        for db, count in part[name].items():
            total[name][db] = total[name].get(db, 0) + count
    total["errors"].extend(part["errors"])


def _ranges(rdb, workers):
    """Split the key stream into ``workers`` contiguous ranges at recorded checkpoints: [(start, stop, db)]."""
    points = [(redis_rdb.HEADER_LEN, 0)] + list(getattr(rdb, "checkpoints", []))
    if workers <= 1 or len(points) < 2:
        return [(redis_rdb.HEADER_LEN, None, 0)]
    step = len(points) / workers
    chosen = [points[int(i * step)] for i in range(workers)]
    chosen = [c for i, c in enumerate(chosen) if i == 0 or c != chosen[i - 1]]
    out = []
    for i, (pos, db) in enumerate(chosen):
        stop = chosen[i + 1][0] if i + 1 < len(chosen) else None
        out.append((pos, stop, db))
    return out


class PartialRestore(Exception):
    """The key stream stopped part way (a connection dropped, a worker died): ``confirmed`` RESTOREs were answered."""

    def __init__(self, cause, confirmed):
        super().__init__(cause)
        self.confirmed = confirmed


def method_restore(params, rdb, now_ms):
    """Run RESTORE over ``connections`` connections (forked workers when > 1). Returns stats; raises PartialRestore
    (with the count of answered RESTOREs) when a connection or worker fails part way."""
    workers = max(1, int(params.get("connections") or 1))
    ranges = _ranges(rdb, workers)
    total = {"restored": {}, "expired": {}, "errors": []}
    if len(ranges) == 1:
        progress = {"confirmed": 0}
        client = None
        try:
            client = redis_client.connect(params, timeout=600.0)
            conn = RespConnection.on(client)
            _merge_counts(
                total, _restore_range(conn, rdb, ranges[0][0], ranges[0][1], ranges[0][2], now_ms, progress=progress)
            )
        except (RedisError, OSError) as exc:
            raise PartialRestore(str(exc), progress["confirmed"]) from None
        finally:
            if client is not None:
                client.close()
        return total
    children = []
    for start, stop, db in ranges:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            status = 0
            progress = {"confirmed": 0}
            try:
                os.close(read_fd)
                client = redis_client.connect(params, timeout=600.0)
                part = _restore_range(RespConnection.on(client), rdb, start, stop, db, now_ms, progress=progress)
                client.close()
                data = json.dumps(
                    {
                        "restored": part["restored"],
                        "expired": part["expired"],
                        "errors": part["errors"],
                        "confirmed": progress["confirmed"],
                    }
                ).encode()
            except Exception as exc:  # pylint: disable=broad-exception-caught
                data = json.dumps(
                    {"fatal": f"{exc.__class__.__name__}: {exc}", "confirmed": progress["confirmed"]}
                ).encode()
                status = 1
            with os.fdopen(write_fd, "wb") as handle:
                handle.write(data)
            os._exit(status)  # pylint: disable=protected-access
        os.close(write_fd)
        children.append((pid, read_fd))
    fatal = []
    confirmed = 0
    for pid, read_fd in children:
        with os.fdopen(read_fd, "rb") as handle:
            data = handle.read()
        os.waitpid(pid, 0)
        try:
            part = json.loads(data or b"{}")
        except ValueError:
            part = {"fatal": "worker died without a result"}
        confirmed += int(part.get("confirmed") or 0)
        if "fatal" in part or "restored" not in part:
            fatal.append(part.get("fatal", "worker died without a result"))
            continue
        part["restored"] = {int(k): v for k, v in part["restored"].items()}
        part["expired"] = {int(k): v for k, v in part["expired"].items()}
        _merge_counts(total, part)
    if fatal:
        raise PartialRestore(f"restore worker failed: {fatal[0]}", confirmed)
    return total


def restore_functions(conn, rdb, mode):
    payload = rdb.function_payload()
    if payload is None:
        if mode == "replace":
            try:
                if conn.function_list():
                    conn.function_flush()
            except ReplyError:
                pass
        return 0
    conn.function_restore(payload, "FLUSH" if mode == "replace" else "REPLACE")
    return len(rdb.summary.functions)


# --------------------------------------------------------------------------------------------------------------
# Method: replication (we act as the master)
# --------------------------------------------------------------------------------------------------------------
MARKER_PREFIX = "hanzo-kms-restore:"
MAX_COMMAND_ARGS = 8  # the replica handshake sends at most 5 arguments (REPLCONF capa eof capa psync2)
MAX_ARG_BYTES = 64 * 1024  # AUTH carries the one-time password (which embeds the previous masterauth)
MAX_PEERS = 8  # concurrent handshakes; more connections are closed at once


class _PeerGone(Exception):
    """The peer closed, stalled past the deadline or sent something that is not a replica handshake."""


def _peer_host(addr):
    """The peer's IP address as text, IPv4-mapped IPv6 addresses as plain IPv4."""
    host = addr[0]
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def target_addresses(params):
    """Addresses the target may connect from: O(listen_allow_from), else what O(host) resolves to."""
    if params.get("listen_allow_from"):
        return {_peer_host((a,)) for a in params["listen_allow_from"]}
    host = params.get("host") or "127.0.0.1"
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise RestoreError(
            f"cannot resolve the target host {host} ({exc}) to restrict the replication listener; "
            "set listen_allow_from; the target was not changed",
            {"target_state": "unchanged"},
        ) from None
    return {_peer_host(info[4]) for info in infos}


class ReplicationListener:
    """Serve a full resync of ``path`` to the target only.

    A connection is served only when it comes from an address in ``allowed`` and authenticates with ``password`` (the
    one-time ``masterauth`` set on the target); everything else is closed. Every read has a deadline and every
    handshake runs in its own thread, so a peer that stalls or closes part way ends its own connection, never the
    accept loop. With ``tls_context`` every connection is TLS.
    """

    def __init__(
        self,
        path,
        listen_host,
        listen_port,
        allowed,
        password,
        tls_context=None,
        handshake_timeout=10.0,
        send_timeout=60.0,
        payload=None,
    ):
        self.path = path
        self.payload = payload or _FilePayload(path)
        self.allowed = set(allowed)
        self.password = password.encode() if isinstance(password, str) else password
        self.tls_context = tls_context
        self.handshake_timeout = handshake_timeout
        self.send_timeout = send_timeout
        family = socket.AF_INET6 if ":" in listen_host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((listen_host, int(listen_port or 0)))
            self.sock.listen(16)
        except OSError as exc:
            self.sock.close()
            raise RestoreError(
                f"cannot listen on {listen_host}:{listen_port}: {exc}; the target was not changed",
                {"target_state": "unchanged"},
            ) from None
        self.port = self.sock.getsockname()[1]
        self.replid = secrets.token_hex(20)
        self.error = None
        self.sent = 0
        self.rejected = 0
        self.refused_from = set()  # addresses not allowed (reported when the target never gets through)
        self.done = threading.Event()
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._serve_lock = threading.Lock()
        self._peers = []
        self._served = []
        self._open = set()  # sockets of handshakes in progress, closed by close()
        self._cpu_finished = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True, name="redis-restore-listener")
        self.thread.start()

    # ---- accept loop
    def _run(self):
        try:
            self._accept_loop()
        except Exception as exc:  # pylint: disable=broad-exception-caught
            self.error = exc

    def _accept_loop(self):
        self.sock.settimeout(0.2)  # wakes up to notice close()
        while not self.stop.is_set():
            try:
                client, addr = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                if self.stop.is_set():
                    return
                raise
            host = _peer_host(addr)
            with self._lock:
                self._peers = [t for t in self._peers if t.is_alive()]
                busy = len(self._peers) >= MAX_PEERS
            if host not in self.allowed or busy:
                if host not in self.allowed and len(self.refused_from) < 10:
                    self.refused_from.add(host)
                self._reject(client)
                continue
            thread = threading.Thread(target=self._peer, args=(client,), daemon=True)
            with self._lock:
                self._peers.append(thread)
            thread.start()

    def _reject(self, client):
        with self._lock:
            self.rejected += 1
        try:
            client.close()
        except OSError:
            pass

    # ---- one peer
    def _peer(self, client):
        served = False
        with self._lock:
            self._open.add(client)
        try:
            served = self._handshake(client)
        except (_PeerGone, OSError, ValueError):
            pass
        except Exception as exc:  # pylint: disable=broad-exception-caught
            # the first failure is the verdict: the target's reconnect after a refused transfer must not replace it
            if self.error is None:
                self.error = exc
        finally:
            with self._lock:
                self._cpu_finished += time.thread_time()
                current = [s for s in self._open if s is client or getattr(s, "raw_peer", None) is client]
                self._open.difference_update(current)
            if not served:
                for sock in current or [client]:
                    self._reject(sock)

    def _handshake(self, client):
        deadline = time.monotonic() + 3 * self.handshake_timeout  # a peer trickling bytes is cut off too
        client.settimeout(self.handshake_timeout)
        # the target pipelines AUTH and REPLCONFs and reads one reply at a time: Nagle would hold each small reply
        # until the delayed ACK of the previous one (40 ms each)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls_context is not None:
            raw = client
            client = self.tls_context.wrap_socket(client, server_side=True)  # detaches ``raw``
            client.raw_peer = raw
            with self._lock:
                self._open.discard(raw)
                self._open.add(client)
        buf = bytearray()
        authed = False
        while True:
            args = _read_command(client, buf, deadline)
            if not args:
                continue
            name = args[0].upper()
            if name == b"PING":
                client.sendall(b"+PONG\r\n" if authed else b"-NOAUTH Authentication required.\r\n")
            elif name == b"AUTH" and len(args) in (2, 3):
                # with masteruser set the target sends AUTH <user> <password>: the one-time password authenticates
                if not hmac.compare_digest(args[-1], self.password):
                    client.sendall(b"-WRONGPASS invalid username-password pair\r\n")
                    return False
                authed = True
                client.sendall(b"+OK\r\n")
            elif not authed:
                client.sendall(b"-NOAUTH Authentication required.\r\n")
                return False
            elif name == b"REPLCONF":
                client.sendall(b"+OK\r\n")
            elif name in (b"PSYNC", b"SYNC"):
                if self.stop.is_set():
                    return False  # closed: the RDB's directory is being removed
                self._send_rdb(client, name)
                return True
            else:
                client.sendall(b"-ERR not a replica handshake\r\n")
                return False

    def _send_rdb(self, client, name):
        with self._serve_lock:  # one transfer at a time (the target reconnects after a failed one)
            client.settimeout(self.send_timeout)
            size = self.payload.size
            head = b"+FULLRESYNC %s 0\r\n" % self.replid.encode() if name == b"PSYNC" else b""
            client.sendall(head + b"$%d\r\n" % size)
            sent = self.payload.send(client)
            with self._lock:
                self._served.append(client)  # kept open: a closed link makes the target resync
                self.sent = sent
            if sent == size:
                self.done.set()

    def cpu_time(self):
        """CPU seconds used by the accept loop and by finished peer threads."""
        total = self._cpu_finished
        if self.thread.is_alive():
            try:
                total += time.clock_gettime(time.pthread_getcpuclockid(self.thread.ident))
            except (OSError, AttributeError):
                pass
        return total

    def close(self):
        self.stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept loop now rather than at its next timeout
        except OSError:
            pass
        self.thread.join(timeout=5)
        with self._lock:
            socks = list(self._served) + list(self._open) + [self.sock]
        for sock in socks:
            try:
                sock.close()
            except OSError:
                pass


class _FilePayload:
    """The full-sync payload of a verified local RDB (``redis_restore_stream.S3RdbStream`` is the streamed one)."""

    def __init__(self, path):
        self.path = path

    @property
    def size(self):
        return os.path.getsize(self.path)

    def send(self, sock):
        with open(self.path, "rb") as handle:
            return sock.sendfile(handle)


def _recv_some(client, buf, deadline):
    if time.monotonic() > deadline:
        raise _PeerGone("handshake deadline passed")
    data = client.recv(65536)  # the socket timeout bounds every read
    if not data:
        raise _PeerGone("peer closed")
    buf += data


def _read_line(client, buf, deadline):
    while True:
        idx = buf.find(b"\n")
        if idx >= 0:
            line = bytes(buf[:idx]).rstrip(b"\r")
            del buf[: idx + 1]
            return line
        if len(buf) > MAX_ARG_BYTES:
            raise _PeerGone("line too long")
        _recv_some(client, buf, deadline)


def _read_command(client, buf, deadline):
    """One command (RESP multibulk or inline) as a list of bytes; bounded in argument count and size."""
    line = _read_line(client, buf, deadline)
    if not line.startswith(b"*"):
        return line.split()
    count = int(line[1:])
    if not 0 < count <= MAX_COMMAND_ARGS:
        raise _PeerGone("bad argument count")
    args = []
    for _unused in range(count):
        head = _read_line(client, buf, deadline)
        if not head.startswith(b"$"):
            raise _PeerGone("bad bulk header")
        size = int(head[1:])
        if not 0 <= size <= MAX_ARG_BYTES:
            raise _PeerGone("bad bulk size")
        while len(buf) < size + 2:
            _recv_some(client, buf, deadline)
        args.append(bytes(buf[:size]))
        del buf[: size + 2]
    return args


def _replication_state(conn):
    info = conn.info("replication")
    return {
        "role": info.get("role"),
        "master_host": info.get("master_host"),
        "master_port": info.get("master_port"),
        "master_link_status": info.get("master_link_status"),
    }


# ---- the marker: our one-time masterauth, which also records what to put back
def _encode_marker(token, record):
    blob = base64.urlsafe_b64encode(json.dumps(record, separators=(",", ":")).encode()).decode().rstrip("=")
    return f"{MARKER_PREFIX}{token}.{blob}"


def _decode_marker(value):
    """The record in a masterauth set by this module, or None."""
    if not value or not value.startswith(MARKER_PREFIX):
        return None
    try:
        blob = value[len(MARKER_PREFIX) :].split(".", 1)[1]
        record = json.loads(base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4)))
    except (IndexError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _follows(state, address):
    return (
        bool(address)
        and state.get("role") == "slave"
        and f"{state.get('master_host')}:{state.get('master_port')}" == address
    )


def _put_back_settings(target, record, failures):
    """The settings a replication restore changed besides masterauth (which goes last: it is the marker)."""
    if record.get("sanitize") is not None:
        put_back_config(target, "sanitize-dump-payload", record["sanitize"], failures)
    if record.get("disk_load") is not None:
        put_back_config(target, "repl-diskless-load", record["disk_load"], failures)


def leftover_state(conn):
    """What an interrupted replication restore left on the target: (record, replication state) or (None, state).

    The record is read from the target's ``masterauth``, which this module sets to a one-time password carrying
    the settings to put back (see method_replication)."""
    state = _replication_state(conn)
    try:
        masterauth = config_get(conn, "masterauth")
    except ReplyError:
        return None, state
    return _decode_marker(masterauth), state


def repair_leftover(params, conn, check_mode):
    """Undo what an interrupted run left: stop following its (dead) listener, put back masterauth, sanitize and the
    previous master. Returns a report dict, or None when there is nothing to repair."""
    record, state = leftover_state(conn)
    if record is None:
        return None
    listener = record.get("listener")
    report = {
        "listener": listener,
        "following_listener": _follows(state, listener),
        "previous_master": record.get("master"),
    }
    if check_mode:
        report["would_repair"] = True
        return report
    target = Target(params, conn)
    failures = []
    if report["following_listener"]:
        target.run("replicaof", "NO", "ONE", retry_for=float(params.get("timeout") or 3600))
    _put_back_settings(target, record, failures)
    put_back_config(target, "masterauth", record.get("masterauth") or "", failures)
    if report["following_listener"] and record.get("master"):
        host, port = record["master"]
        target.replicaof(host, port)
    if failures:
        raise RestoreError(
            "could not repair what an interrupted restore left on the target: " + "; ".join(failures),
            {"target_state": "unknown", "repaired": report},
        )
    report["repaired"] = True
    return report


def listener_tls_context(params):
    cert = params.get("listen_tls_cert")
    if not cert:
        raise RestoreError(
            "the target replicates over TLS (tls-replication yes): set listen_tls_cert and "
            "listen_tls_key to a certificate the target trusts (its tls-ca-cert-file); "
            "the target was not changed",
            {"target_state": "unchanged"},
        )
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, params.get("listen_tls_key") or None)
        if params.get("listen_tls_ca_cert"):
            # mutual TLS: the target presents its client certificate (tls-client-cert-file or tls-cert-file)
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=params["listen_tls_ca_cert"])
    except (ssl.SSLError, OSError) as exc:
        raise RestoreError(
            f"cannot load the listener certificate: {exc}; the target was not changed", {"target_state": "unchanged"}
        ) from None
    return ctx


def method_replication(params, conn, rdb_path, timeout, previous, sanitize_previous, payload=None, disk_load=None):
    """Make the target a replica of our listener, serve the RDB, wait for the load, detach, put its settings back.

    ``previous`` is the target's replication state before the restore (never our listener: the caller repairs
    leftovers first). Before REPLICAOF the target's ``masterauth`` is set to a one-time password the listener
    requires; the password also records the previous masterauth, master and sanitize setting, so a re-run after a
    crash recognises the target's master as our dead listener and puts everything back (repair_leftover). It lives
    on the target itself (any controller re-running sees it), is set before and cleared after the replication
    change it guards, and disappears with a target restart, which also drops the REPLICAOF.

    Cleanup runs on fresh connections with retries. Returns (replication dict, target_state); raises RestoreError
    (with ``target_state``) when the target could not be brought back.

    ``payload`` (``size``, ``send(sock)``) replaces the file at ``rdb_path``: the streamed transfer whose checks
    overlap it (``redis_restore_stream``); when it refuses the bytes, the target never got the last ones.
    ``disk_load`` is the target's ``repl-diskless-load`` before the streamed transfer changed it (None: unchanged);
    it goes into the record so that a crash leaves nothing a re-run cannot put back.
    """
    listen_host = params.get("listen_host") or "127.0.0.1"
    announce = params.get("announce_host") or listen_host
    master = None
    if previous.get("role") == "slave" and previous.get("master_host"):
        master = [previous["master_host"], int(previous["master_port"])]
    token = secrets.token_urlsafe(24)
    try:
        allowed = target_addresses(params)
        tls_context = listener_tls_context(params) if config_get(conn, "tls-replication") == "yes" else None
        previous_auth = config_get(conn, "masterauth")
        listener = ReplicationListener(
            rdb_path,
            listen_host,
            params.get("listen_port") or 0,
            allowed,
            token,
            tls_context=tls_context,
            payload=payload,
        )
    except (RestoreError, RedisError):
        # nothing but sanitize-dump-payload was changed yet
        if sanitize_previous not in (None, "yes"):
            put_back_config(Target(params, conn), "sanitize-dump-payload", sanitize_previous, [])
        raise
    address = f"{announce}:{listener.port}"
    record = {
        "listener": address,
        "masterauth": previous_auth,
        "master": master,
        "sanitize": sanitize_previous,
        "disk_load": disk_load,
    }
    listener.password = _encode_marker(token, record).encode()
    target = Target(params, conn, retry_for=300.0)
    failure = None
    attached = False  # REPLICAOF sent (its reply may be lost with the connection, so "sent" counts)
    try:
        target.config_set("masterauth", listener.password)
        attached = True
        target.replicaof(announce, listener.port)
        deadline = time.monotonic() + timeout
        while True:
            info = target.info("replication")
            persistence = target.info("persistence")
            if listener.error is not None:
                _raise_listener_error(listener.error)
            if (
                info.get("master_link_status") == "up"
                and persistence.get("loading") == 0
                and info.get("master_sync_in_progress") == 0
                and listener.done.is_set()
            ):
                break
            if time.monotonic() > deadline:
                refused = (
                    f"; it refused connections from {', '.join(sorted(listener.refused_from))} "
                    "(not in listen_allow_from)"
                    if listener.refused_from
                    else ""
                )
                raise RestoreError(
                    f"the target did not finish loading the RDB from {address} within {timeout:.0f}s "
                    f"(can it reach the listener?){refused}"
                )
            time.sleep(0.02)  # INFO polling interval while the target loads
    except (RedisError, RestoreError, redis_restore_stream.NeedsFilePass) as exc:
        failure = exc
    finally:
        listener.close()
    state, problems = _detach(target, record, attached)
    target.close()
    result = {
        "sent": listener.sent,
        "listener": address,
        "tls": tls_context is not None,
        "rejected_connections": listener.rejected,
        "previous_replication": {k: previous.get(k) for k in ("role", "master_host", "master_port")},
    }
    if problems:
        raise RestoreError(
            f"{'the restore failed (' + str(failure) + ') and ' if failure else ''}the target could not be put back: "
            + "; ".join(problems)
            + f". Its state: {state}; a re-run of this module repairs it (it recognises the "
            "one-time masterauth it set), or run REPLICAOF NO ONE and CONFIG SET masterauth by hand",
            {"target_state": state, "replication": result},
        )
    if isinstance(failure, redis_restore_stream.NeedsFilePass):
        raise failure  # the target is back and never got the last bytes: serve a verified copy instead
    if isinstance(failure, _RefusedInTransfer):
        raise RestoreError(
            f"{failure}; the target was detached from the listener, is writable again and kept its "
            "data (it never received the last bytes)",
            {"target_state": "unchanged", "replication": result},
        )
    if failure is not None and not attached:
        raise RestoreError(
            f"{failure}; the target was not changed", {"target_state": "unchanged", "replication": result}
        )
    if failure is not None:
        raise RestoreError(
            f"{failure}; the target was detached from the listener and is writable again "
            "(it holds its previous data unless the load had completed)",
            {"target_state": "not_restored", "replication": result},
        )
    return result, state


class _RefusedInTransfer(RestoreError):
    """The streamed RDB failed a check; the link was dropped before its last bytes."""


def _raise_listener_error(error):
    if isinstance(error, redis_restore_stream.VerificationFailed):
        raise _RefusedInTransfer(f"refused during the transfer, the link was dropped before the last bytes: {error}")
    if isinstance(error, redis_restore_stream.NeedsFilePass):
        raise error
    raise RestoreError(f"replication listener failed: {error}")


def _detach(target, record, attached=True):
    """REPLICAOF NO ONE, put back sanitize, masterauth (last but one: it is the marker a re-run looks for) and the
    previous master; each on a fresh connection when needed. Without ``attached`` (REPLICAOF never sent) only the
    settings are put back. Returns (target_state, problems)."""
    problems = []
    try:
        if attached:
            target.replicaof("NO", "ONE")
    except RedisError as exc:
        problems.append(f"REPLICAOF NO ONE failed: {exc}")
    _put_back_settings(target, record, problems)
    if not problems:
        put_back_config(target, "masterauth", record.get("masterauth") or "", problems)
    if not problems and record.get("master") and attached:
        try:
            target.replicaof(*record["master"])
        except RedisError as exc:
            problems.append(f"REPLICAOF {record['master'][0]} {record['master'][1]} failed: {exc}")
    try:
        state = _replication_state(target)
    except RedisError as exc:
        problems.append(f"cannot read its replication state: {exc}")
        return "unknown", problems
    if _follows(state, record["listener"]):
        return "replica_of_listener", problems
    if record.get("master"):
        expected = f"{record['master'][0]}:{record['master'][1]}"
        if not _follows(state, expected):
            problems.append(f"it is not a replica of its previous master {expected} again")
            return "restored_not_reattached" if state.get("role") == "master" else "unknown", problems
        return "restored_replica", problems
    if state.get("role") != "master":
        problems.append(f"it is still a replica of {state.get('master_host')}:{state.get('master_port')}")
        return "read_only", problems
    return "restored", problems


def can_reach_listener(params):
    """True when the target can connect back to our listener (MIGRATE-free check: a short REPLICAOF is not used)."""
    listen_host = params.get("listen_host") or "127.0.0.1"
    announce = params.get("announce_host") or listen_host
    target_host = params.get("host") or "127.0.0.1"
    # without an explicit announce address we only claim reachability for a target on loopback
    return (
        bool(params.get("announce_host"))
        or target_host in ("127.0.0.1", "localhost", "::1")
        and announce == listen_host
    )


# --------------------------------------------------------------------------------------------------------------
# Method: file
# --------------------------------------------------------------------------------------------------------------
def _server_running(params):
    try:
        sock = socket.create_connection((params.get("host") or "127.0.0.1", int(params.get("port") or 6379)), timeout=1)
    except OSError:
        return False
    sock.close()
    return True


def method_file(params, rdb_path, stamp):
    """Write the RDB as ``dbfilename`` into ``data_dir``; if the server uses an AOF, move it aside and put in its place
    an AOF whose base is this RDB (Redis 7 multi-part AOF manifest; a single RDB-preamble file before 7.0), so the next
    start loads the RDB whether or not ``appendonly`` is on."""
    data_dir = params["data_dir"]
    if not os.path.isdir(data_dir):
        raise RestoreError(f"data_dir {data_dir} does not exist")
    if params.get("check_stopped", True) and _server_running(params):
        raise RestoreError(
            f"a server still answers on {params.get('host')}:{params.get('port')}; method file needs it "
            "stopped (set check_stopped=false if that address belongs to another server); "
            "the target was not changed"
        )
    target = os.path.join(data_dir, params.get("dbfilename") or RDB_NAME)
    _copy_atomic(rdb_path, target)
    aof_dir_name = params.get("appenddirname") or "appendonlydir"
    aof_name = params.get("appendfilename") or "appendonly.aof"
    aof_dir = os.path.join(data_dir, aof_dir_name)
    aof_single = os.path.join(data_dir, aof_name)
    moved = []
    for path in (aof_dir, aof_single):
        if os.path.exists(path):
            aside = f"{path}.before-restore-{stamp}"
            os.rename(path, aside)
            moved.append(aside)
    aof_mode = params.get("aof") or "auto"
    written = []
    if aof_mode == "yes" or (aof_mode == "auto" and moved):
        if any(m.startswith(aof_dir + ".") for m in moved) or not moved:
            os.mkdir(aof_dir)
            base = f"{aof_name}.1.base.rdb"
            _copy_atomic(rdb_path, os.path.join(aof_dir, base))
            manifest = os.path.join(aof_dir, f"{aof_name}.manifest")
            with open(manifest + ".tmp", "w", encoding="ascii") as handle:
                handle.write(f"file {base} seq 1 type b\n")
            os.replace(manifest + ".tmp", manifest)
            written = [os.path.join(aof_dir, base), manifest]
        else:
            # Redis < 7: one AOF file; an RDB is a valid AOF "preamble"
            _copy_atomic(rdb_path, aof_single)
            written = [aof_single]
    return {"path": target, "aof_moved_aside": moved, "aof_written": written}


def _copy_atomic(src, dest):
    tmp = dest + ".restore-tmp"
    shutil.copyfile(src, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, dest)


# --------------------------------------------------------------------------------------------------------------
# The whole restore
# --------------------------------------------------------------------------------------------------------------
def _wait_loaded(conn, timeout):
    """Wait while the target loads an RDB (it refuses most commands with -LOADING meanwhile)."""
    deadline = time.monotonic() + timeout
    while conn.info("persistence").get("loading") == 1:
        if time.monotonic() > deadline:
            raise RestoreError(
                f"the target is still loading a dataset after {timeout:.0f}s; the target was not changed",
                {"target_state": "unchanged"},
            )
        time.sleep(0.1)  # polling interval while the target loads


def _restore_keys(params, target, rdb, mode, now_ms, summary, sanitize_previous, result):
    """Method restore: clear (replace), RESTORE every key, functions; sanitize-dump-payload is put back in any case.
    A failure part way is reported as a partial restore with counts and what a re-run does."""
    total = sum(summary.keys_per_db.values())
    failures = []
    try:
        confirmed = 0
        try:
            if mode == "replace":
                result["cleared_with"] = clear_target(target.conn)
            stats = method_restore(params, rdb, now_ms)
            confirmed = total
            result["functions_restored"] = (
                restore_functions(target.conn, rdb, mode)
                if (summary.functions or mode == "replace") and _functions_supported(target.conn)
                else 0
            )
        except PartialRestore as exc:
            raise _partial(params, target, mode, exc.confirmed, total, str(exc), result) from None
        except (RedisError, OSError) as exc:
            raise _partial(params, target, mode, confirmed, total, str(exc), result) from None
    finally:
        if sanitize_previous not in (None, "yes"):
            put_back_config(target, "sanitize-dump-payload", sanitize_previous, failures)
    if failures:
        raise RestoreError("the restore completed but " + "; ".join(failures), dict(result, target_state="restored"))
    return stats


def _partial(params, target, mode, confirmed, total, cause, result):
    """The RestoreError for a restore that stopped part way: N of M keys, what the target holds, what a re-run does."""
    target.close()  # the connection that failed; the next command opens a fresh one
    try:
        held = target_keyspace(Target(params, retry_for=10.0))
        holds = f"; the target now holds {sum(held.values())} keys"
    except RedisError:
        held, holds = None, ""
    rerun = (
        f"a re-run (mode=replace) clears the target and restores all {total} keys again"
        if mode == "replace"
        else f"a re-run (mode=merge) restores all {total} keys of the backup again (RESTORE ... REPLACE) and "
        "keeps the keys the backup does not have"
    )
    return RestoreError(
        f"the target is partially restored: {confirmed} of {total} keys confirmed restored{holds} ({cause}); {rerun}",
        dict(
            result,
            target_state="partially_restored",
            keys_confirmed=confirmed,
            keys_total=total,
            target_keys_after=held,
        ),
    )


def _db_dict(counts):
    return {str(k): v for k, v in sorted(counts.items())}


def run_restore(params, s3_client_factory=None, check_mode=False):
    started = time.monotonic()
    method = params.get("method") or "auto"
    mode = params.get("mode") or "replace"
    if method == "replication" and mode != "replace":
        raise RestoreError("method replication replaces the whole dataset; use mode=replace or method=restore")
    workdir = tempfile.mkdtemp(prefix="redis-rdb-restore-", dir=params.get("tmp_dir") or None)
    buf = handle = stream = None
    # methods that never parse the RDB themselves may rely on a structure check recorded in the manifest
    recorded_check_ok = method in ("replication", "file") or (
        method == "auto" and mode == "replace" and can_reach_listener(params)
    )
    try:
        if params.get("src"):
            path = params["src"]
            if not os.path.isfile(path):
                raise RestoreError(f"src {path} does not exist")
            manifest = None
            manifest_path = params.get("manifest") or (path + ".manifest.json")
            if os.path.isfile(manifest_path):
                with open(manifest_path, "rb") as mhandle:
                    manifest = _load_manifest_bytes(mhandle.read(), manifest_path)
            sha256 = sha256_file(path)
            if params.get("sha256") and params["sha256"] != sha256:
                raise RestoreError(
                    f"sha256 of {path} ({sha256}) is not the expected {params['sha256']}; the target was not changed"
                )
            source = {"type": "file", "path": path, "manifest": manifest_path if manifest else None}
        else:
            client = s3_client_factory()
            stream = _open_stream(client, params, method, mode, check_mode)
            if stream is None:
                path, manifest, sha256, source = fetch_s3_source(client, params, workdir)
        if stream is not None:
            rdb, source, sha256 = stream, stream.source, stream.manifest["sha256"]
        else:
            rdb, buf, handle = verify_source(path, manifest, sha256, recorded_check_ok)
        summary = rdb.summary  # None until the end of the transfer for a streamed full pass
        result = {
            "changed": False,
            "method": method,
            "mode": mode,
            "source": source,
            "sha256": sha256,
            "rdb_version": rdb.version,
            "verification": rdb.verification,
            "verification_reason": rdb.verification_reason,
        }
        if summary is not None:
            result.update(_summary_fields(summary))
        if method == "file":
            result["changed"] = True
            if not check_mode:
                result.update(method_file(params, path, utcnow_compact()))
            result["duration"] = round(time.monotonic() - started, 3)
            return result

        conn = redis_client.connect(params, timeout=600.0)
        try:
            _wait_loaded(conn, float(params.get("timeout") or 3600))
            info = server_info(conn)
            if not rdb_loadable(rdb.version, info["server"], info["version"]):
                raise RestoreError(
                    f"the RDB has version {rdb.version} but the target {info['server']} {info['version']} "
                    f"loads RDB versions up to {rdb_version_for(info['server'], info['version'])}; "
                    "restore onto the same or a newer server; the target was not changed"
                )
            repaired = repair_leftover(params, conn, check_mode)
            if repaired:
                result["repaired"] = repaired
            if summary is not None and summary.functions and not _functions_supported(conn):
                raise RestoreError(
                    "the RDB holds functions but the target has no FUNCTION command; the target was not changed"
                )
            before = target_keyspace(conn)
            result.update(target_server=info["server"], target_version=info["version"], target_keys_before=before)
            if method == "auto":
                method = "replication" if mode == "replace" and can_reach_listener(params) else "restore"
                result["method"] = method
            now_ms = int(time.time() * 1000)
            result["changed"] = summary is None or bool(
                summary.keys_per_db
                or summary.functions
                or (mode == "replace" and any(before.values()))
                or (repaired and not check_mode)
            )
            if check_mode:
                result["would_restore_per_db"] = _db_dict(summary.keys_per_db)
                result["duration"] = round(time.monotonic() - started, 3)
                return result
            previous = _replication_state(conn)
            sanitize_previous = enable_sanitize(conn)
            result["sanitize_dump_payload"] = {
                "during": "yes" if sanitize_previous is not None else None,
                "previous": sanitize_previous,
            }
            if method == "replication":
                timeout = float(params.get("timeout") or 3600)
                if stream is not None:
                    result["replication"], result["target_state"] = _replicate_stream(
                        params, conn, stream, timeout, previous, sanitize_previous, client, workdir
                    )
                    summary = stream.summary
                    result.update(_summary_fields(summary), verification_reason=stream.verification_reason)
                else:
                    result["replication"], result["target_state"] = method_replication(
                        params, conn, path, timeout, previous, sanitize_previous
                    )
                conn = Target(params)  # method_replication's connection may have been replaced (and is closed)
                expired = {}
                restored = {int(k): v for k, v in target_keyspace(conn).items()}
                errors = []
            else:
                conn = Target(params, conn)
                stats = _restore_keys(params, conn, rdb, mode, now_ms, summary, sanitize_previous, result)
                restored, expired, errors = stats["restored"], stats["expired"], stats["errors"]
                result["target_state"] = "restored"
            after = target_keyspace(conn)
        finally:
            conn.close()
        skipped = {}
        for db, count in summary.keys_per_db.items():
            rest = count - restored.get(db, 0) - expired.get(db, 0)
            if rest > 0 and method != "replication":
                skipped[db] = rest
        result.update(
            changed=True,
            keys_restored=_db_dict(restored),
            keys_expired=_db_dict(expired),
            keys_skipped=_db_dict(skipped),
            target_keys_after=after,
            errors=[e for e in errors if e][:20],
            error_count=len(errors),
            duration=round(time.monotonic() - started, 3),
        )
        if errors:
            result["target_state"] = "partially_restored"
            raise RestoreError(
                f"{len(errors)} commands failed during the restore (first: "
                f"{next((e for e in errors if e), '?')}); the target is partially restored",
                result,
            )
        return result
    finally:
        if stream is not None:
            stream.close()
        if buf is not None:
            buf.close()
        if handle is not None:
            handle.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _summary_fields(summary):
    return {
        "bytes": summary.size,
        "backup_keys_per_db": _db_dict(summary.keys_per_db),
        "functions": len(summary.functions),
    }


def _open_stream(client, params, method, mode, check_mode):
    """The S3 object as a stream checked during the transfer (``redis_restore_stream``), or None for download-first."""
    if not redis_restore_stream.wants_stream(params, method, mode, check_mode, can_reach_listener):
        return None
    try:
        return redis_restore_stream.open_s3_stream(client, params, resolve_s3_source, read_s3_manifest)
    except redis_restore_stream.VerificationFailed as exc:
        raise RestoreError(str(exc), {"target_state": "unchanged"}) from None


def _replicate_stream(params, conn, stream, timeout, previous, sanitize_previous, client, workdir):
    """method_replication with the streamed payload (or a verified local copy when it cannot be used)."""
    state = {}

    def serve(payload=None, path=None, disk_load=None):
        # method_replication closes the connection it was given: a second attempt gets a fresh one
        target = redis_client.connect(params, timeout=60.0) if state.get("served") else conn
        state["served"] = True
        result, state["target_state"] = method_replication(
            params, target, path, timeout, previous, sanitize_previous, payload=payload, disk_load=disk_load
        )
        return result

    def verify_file(path):
        # the recorded check still applies to a copy of the same bytes; a streamed pass that gave up needs the full one
        rdb, buf, handle = verify_source(path, stream.manifest, sha256_file(path), stream.verification == "manifest")
        if buf is not None:
            buf.close()
            handle.close()
        return rdb

    def refetch():
        return fetch_s3_source(client, dict(params, key=stream.key), workdir)[0]

    try:
        result = redis_restore_stream.replicate(params, stream, timeout, serve, verify_file, workdir, refetch)
    except redis_restore_stream.VerificationFailed as exc:
        raise RestoreError(str(exc), {"target_state": "unchanged"}) from None
    return result, state["target_state"]
