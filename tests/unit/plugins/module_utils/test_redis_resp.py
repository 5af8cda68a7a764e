# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hand-written RESP code (redis_resp: command encoding, pipelined status replies, the lines and buffered bytes of
the SYNC stream) and the replication listener's command parser, fed over a socket pair: malformed input, bounds."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import redis_resp, redis_restore


def _feed(sock, data, close=True):
    """Send ``data`` from a thread (more than a socket buffer holds would block the test)."""

    def send():
        try:
            sock.sendall(data)
        except OSError:
            pass  # the reader gave up early, as it should on bad input
        if close:
            sock.close()

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def _conn_with(data):
    """A RespConnection reading ``data`` (then EOF) from a socket pair."""
    ours, theirs = socket.socketpair()
    _feed(theirs, data)
    ours.settimeout(5)
    return redis_resp.RespConnection(ours, "test")


def test_encode_command():
    assert redis_resp.encode_command(("SET", b"k", 5)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n"


def test_status_replies_are_counted_across_reads():
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    conn = redis_resp.RespConnection(ours, "test")
    errors = []
    theirs.sendall(b"+OK\r\n+O")
    conn.read_status_replies(1, errors)  # the half reply stays buffered
    _feed(theirs, b"K\r\n-ERR Bad data format\r\n+OK\r\n+OK\r\n:7\r\n")
    conn.read_status_replies(4, errors)
    assert errors == ["ERR Bad data format"]
    assert conn.readline() == b":7"


def test_errors_past_the_first_20_are_counted_not_kept():
    errors = []
    _conn_with(b"-ERR one\r\n" * 22).read_status_replies(22, errors)
    assert errors == ["ERR one"] * 20 + [None, None]


def test_take_buffered_hands_over_what_was_read_past_a_line():
    conn = _conn_with(b"$EOF:mark\r\nrdb-bytes-")
    assert conn.readline() == b"$EOF:mark"
    rest = conn.take_buffered(3) + conn.take_buffered()
    buf = bytearray(64)
    while not rest.endswith(b"rdb-bytes-"):
        rest += bytes(buf[: conn.recv_into(buf)])
    assert rest == b"rdb-bytes-"
    assert conn.take_buffered() == b""


def test_a_closed_stream_is_a_clean_error():
    with pytest.raises(redis_resp.RedisError, match="closed the connection"):
        _conn_with(b"+OK\r\n").read_status_replies(2, [])


# ---- the listener's command parser
def _read_command(data, close=True, timeout=5.0):
    ours, theirs = socket.socketpair()
    _feed(theirs, data, close)
    ours.settimeout(timeout)
    try:
        return redis_restore._read_command(ours, bytearray(), time.monotonic() + 30)  # pylint: disable=protected-access
    finally:
        ours.close()
        if not close:
            theirs.close()


def test_listener_parses_resp_and_inline():
    assert _read_command(b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n") == [b"AUTH", b"pw"]
    assert _read_command(b"PSYNC ? -1\r\n") == [b"PSYNC", b"?", b"-1"]


@pytest.mark.parametrize(
    "data",
    [
        b"*2\r\n$4\r\nSY",  # half a command, then the peer closes
        b"*1000000000\r\n",  # absurd argument count
        b"*1\r\n$999999999\r\n",  # absurd argument size
        b"*1\r\n:1\r\n",  # not a bulk string
        b"x" * (70 * 1024),  # endless line
    ],
)
def test_listener_parser_rejects_bad_or_truncated_input(data):
    with pytest.raises(redis_restore._PeerGone):  # pylint: disable=protected-access
        _read_command(data)


def test_listener_parser_read_times_out_on_a_stalled_peer():
    with pytest.raises(socket.timeout):
        _read_command(b"*2\r\n$4\r\nSY", close=False, timeout=0.2)
