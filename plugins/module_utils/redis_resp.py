# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hand-written RESP code, for what redis-py cannot do or does slower (docs/benchmarks.md): reading the SYNC
stream of a backup (keep-alive newlines, an RDB of any size framed by ``$<size>`` or an EOF mark, never held in memory)
and the replies of pipelined RESTOREs. It runs on the socket of a connection made by ``redis_client`` (one way to
connect: TLS, AUTH, timeouts and the error messages live there). Plain Python (standard library only).
"""

from __future__ import annotations

import socket

from ansible_collections.hanzo.kms.plugins.module_utils.redis_client import RedisError

REPLY_CHUNK = 64 * 1024  # command reply reads


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
    """RESP2 on a connected socket: raw sends, buffered reads, single-line replies of pipelined commands."""

    def __init__(self, sock, where):
        self.sock = sock
        self.where = where
        self._buf = bytearray()
        self._chunk = None

    @classmethod
    def on(cls, client):
        """The stream on the socket of a ``redis_client.Client`` (which stays its owner: close the client)."""
        return cls(client.socket(), client.where)

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
