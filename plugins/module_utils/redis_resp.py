# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small blocking RESP2 client (TLS, AUTH, pipelined replies) and the INFO helpers, shared by the backup, the
restore and the site probes. Plain Python (standard library only).
"""

from __future__ import annotations

import socket
import ssl

REDIS_CONNECTION_SPEC = dict(
    host=dict(type="str", default="127.0.0.1"),
    port=dict(type="int", default=6379),
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    tls=dict(type="bool", default=False),
    tls_ca_cert=dict(type="path"),
    tls_cert=dict(type="path"),
    tls_key=dict(type="path", no_log=False),
    tls_validate_certs=dict(type="bool", default=True),
    connect_timeout=dict(type="float", default=10.0),
)

REPLY_CHUNK = 64 * 1024  # command reply reads


class RedisError(Exception):
    """A Redis connection or protocol failure with a message meant for the user."""


class ReplyError(RedisError):
    """The server answered a command with an error reply."""


def redis_connection_spec():
    return {k: dict(v) for k, v in REDIS_CONNECTION_SPEC.items()}


# --------------------------------------------------------------------------------------------------------------
# RESP client
# --------------------------------------------------------------------------------------------------------------
MAX_REPLY_DEPTH = 32  # Redis replies nest a few levels (e.g. XINFO, CLIENT TRACKINGINFO); anything deeper is hostile


class _ArrayHeader:  # pylint: disable=too-few-public-methods
    __slots__ = ("size",)

    def __init__(self, size):
        self.size = size


def encode_command(args):
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class RespConnection:
    """One blocking connection speaking RESP2, with optional TLS and AUTH."""

    def __init__(self, params, timeout=None):
        self.host = params.get("host") or "127.0.0.1"
        self.port = int(params.get("port") or 6379)
        self.where = f"{self.host}:{self.port}"
        self._buf = bytearray()
        self._chunk = None
        connect_timeout = float(params.get("connect_timeout") or 10.0)
        try:
            sock = socket.create_connection((self.host, self.port), timeout=connect_timeout)
        except OSError as exc:
            raise RedisError(f"cannot connect to Redis at {self.where}: {exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if params.get("tls"):
            try:
                ctx = ssl.create_default_context(cafile=params.get("tls_ca_cert") or None)
                if not params.get("tls_validate_certs", True):
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                if params.get("tls_cert"):
                    ctx.load_cert_chain(params["tls_cert"], params.get("tls_key") or None)
                sock = ctx.wrap_socket(sock, server_hostname=self.host)
            except (ssl.SSLError, OSError) as exc:
                sock.close()
                raise RedisError(f"TLS handshake with Redis at {self.where} failed: {exc}") from None
        sock.settimeout(timeout)
        self.sock = sock
        password = params.get("password")
        if password:
            args = ["AUTH", params["username"], password] if params.get("username") else ["AUTH", password]
            try:
                self.command(*args)
            except ReplyError as exc:
                self.close()
                raise RedisError(f"Redis at {self.where} rejected the credentials: {exc}") from None

    @classmethod
    def over(cls, sock, where):
        """A connection on a socket that is already connected (no TLS handshake, no AUTH), e.g. one end of a pair."""
        conn = cls.__new__(cls)
        conn.host = conn.port = None
        conn.where = where
        conn._buf = bytearray()
        conn._chunk = None
        conn.sock = sock
        return conn

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def settimeout(self, timeout):
        self.sock.settimeout(timeout)

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise RedisError(f"connection to Redis at {self.where} failed while sending: {exc}") from None

    def recv_into(self, target, during=""):
        """Receive at least one byte into ``target`` (a writable buffer); returns the count.

        ``during`` (e.g. ``' during the RDB transfer'``) completes the error messages. Raises RedisError on a timeout,
        an error or the server closing the connection.
        """
        try:
            got = self.sock.recv_into(target)
        except socket.timeout:
            raise RedisError(f"timed out waiting for Redis at {self.where}{during}") from None
        except OSError as exc:
            raise RedisError(f"connection to Redis at {self.where} failed{during}: {exc}") from None
        if not got:
            raise RedisError(f"Redis at {self.where} closed the connection{during}")
        return got

    def _fill(self):
        if self._chunk is None:
            self._chunk = bytearray(REPLY_CHUNK)
        got = self.recv_into(self._chunk)
        self._buf += memoryview(self._chunk)[:got]

    def take_buffered(self, limit=None):
        """Remove and return the bytes received but not read yet (at most ``limit``): the start of a payload that the
        caller goes on reading with ``recv_into``."""
        buf = self._buf
        if limit is None or limit >= len(buf):
            self._buf = bytearray()
            return bytes(buf)
        data = bytes(buf[:limit])
        del buf[:limit]
        return data

    def read_status_replies(self, count, errors):
        """Read ``count`` single-line replies (+OK / -ERR) of pipelined commands without building reply objects; the
        text of the first 20 error replies is appended to ``errors``, None for each further one."""
        buf = self._buf
        while count:
            lines = buf.count(b"\n")
            if not lines:
                self._fill()
                continue
            take = min(lines, count)
            idx = -1
            chunk_start = 0
            for _unused in range(take):
                idx = buf.index(b"\n", idx + 1)
                if buf[chunk_start] == 0x2D:  # '-'
                    if len(errors) < 20:
                        errors.append(bytes(buf[chunk_start + 1 : idx]).decode("utf-8", "replace").strip())
                    else:
                        errors.append(None)
                chunk_start = idx + 1
            del buf[: idx + 1]
            count -= take

    def readline(self):
        while True:
            idx = self._buf.find(b"\n")
            if idx >= 0:
                line = bytes(self._buf[:idx])
                del self._buf[: idx + 1]
                return line[:-1] if line.endswith(b"\r") else line
            self._fill()

    def read_exact(self, size):
        while len(self._buf) < size:
            self._fill()
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def read_reply(self):
        """One reply. Iterative (an explicit stack), so a hostile server's deeply nested arrays give a RedisError past
        MAX_REPLY_DEPTH levels instead of a RecursionError."""
        stack = []  # [items, expected count] per open array
        while True:
            value = self._read_element()
            if isinstance(value, _ArrayHeader):
                if value.size > 0:
                    if len(stack) >= MAX_REPLY_DEPTH:
                        raise RedisError(
                            f"reply from Redis at {self.where} is nested more than {MAX_REPLY_DEPTH} "
                            "arrays deep; not a Redis server?"
                        )
                    stack.append(([], value.size))
                    continue
                value = []
            while stack:
                items, size = stack[-1]
                items.append(value)
                if len(items) < size:
                    break
                stack.pop()
                value = items
            else:
                return value

    def _read_element(self):
        """A scalar reply, or an _ArrayHeader for an array of size >= 0 (None for a null array)."""
        line = self.readline()
        if not line:
            raise RedisError(f"empty reply line from Redis at {self.where}")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            return ReplyError(rest.decode("utf-8", "replace"))
        try:
            if kind == b":":
                return int(rest)
            if kind == b"$":
                size = int(rest)
                if size < 0:
                    return None
                return self.read_exact(size + 2)[:-2]
            if kind == b"*":
                size = int(rest)
                return None if size < 0 else _ArrayHeader(size)
        except ValueError:
            pass
        raise RedisError(f"unexpected reply {line[:60]!r} from Redis at {self.where}")

    def command(self, *args):
        self.send(encode_command(args))
        reply = self.read_reply()
        if isinstance(reply, ReplyError):
            raise reply
        return reply


def parse_info(text):
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    info = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        info[key] = value
    return info


def parse_keyspace(info):
    """{'0': {'keys': n, 'expires': n}} from INFO keyspace fields."""
    out = {}
    for key, value in info.items():
        if key.startswith("db") and key[2:].isdigit():
            fields = dict(p.split("=", 1) for p in value.split(",") if "=" in p)
            out[key[2:]] = {"keys": int(fields.get("keys", 0)), "expires": int(fields.get("expires", 0))}
    return out


def server_info(conn):
    info = parse_info(conn.command("INFO", "server"))
    info.update(parse_info(conn.command("INFO", "keyspace")))
    flavour = "valkey" if info.get("valkey_version") or info.get("server_name") == "valkey" else "redis"
    version = info.get("valkey_version") if flavour == "valkey" else info.get("redis_version")
    return {
        "server": flavour,
        "version": version,
        "redis_version": info.get("redis_version"),
        "keyspace": parse_keyspace(info),
        "info": info,
    }
