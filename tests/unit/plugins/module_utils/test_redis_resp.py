# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The RESP client (redis_resp: command encoding, reply parsing, pipelined status replies, buffered bytes, INFO) and
the replication listener's command parser, fed over a socket pair: nesting, malformed input, bounds."""

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
    return redis_resp.RespConnection.over(ours, "test")


def test_encode_command():
    assert redis_resp.encode_command(("SET", b"k", 5)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n"


def test_parse_keyspace():
    info = redis_resp.parse_info("# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\ndb2:keys=1,expires=0,avg_ttl=0\r\n")
    assert redis_resp.parse_keyspace(info) == {"0": {"keys": 3, "expires": 1}, "2": {"keys": 1, "expires": 0}}


def test_status_replies_are_counted_across_reads():
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    conn = redis_resp.RespConnection.over(ours, "test")
    errors = []
    theirs.sendall(b"+OK\r\n+O")
    conn.read_status_replies(1, errors)  # the half reply stays buffered
    _feed(theirs, b"K\r\n-ERR Bad data format\r\n+OK\r\n+OK\r\n:7\r\n")
    conn.read_status_replies(4, errors)
    assert errors == ["ERR Bad data format"]
    assert conn.read_reply() == 7


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


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"+OK\r\n", "OK"),
        (b":42\r\n", 42),
        (b"$3\r\nabc\r\n", b"abc"),
        (b"$-1\r\n", None),
        (b"*-1\r\n", None),
        (b"*0\r\n", []),
        (b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n*0\r\n+OK\r\n", [1, [b"a", []], "OK"]),
        (b"*2\r\n*1\r\n*1\r\n:5\r\n$-1\r\n", [[[5]], None]),
    ],
)
def test_read_reply(data, expected):
    assert _conn_with(data).read_reply() == expected


def test_error_reply_inside_array_is_returned():
    reply = _conn_with(b"*2\r\n-ERR x\r\n:1\r\n").read_reply()
    assert isinstance(reply[0], redis_resp.ReplyError) and reply[1] == 1


def test_nested_32_levels_is_fine():
    data = b"*1\r\n" * redis_resp.MAX_REPLY_DEPTH + b":1\r\n"
    reply = _conn_with(data).read_reply()
    for _unused in range(redis_resp.MAX_REPLY_DEPTH):
        reply = reply[0]
    assert reply == 1


def test_deep_nesting_is_a_clean_error():
    with pytest.raises(redis_resp.RedisError, match="nested more than"):
        _conn_with(b"*1\r\n" * 200_000 + b":1\r\n").read_reply()


@pytest.mark.parametrize("data", [b":x\r\n", b"$zz\r\n", b"*?\r\n", b"!1\r\n"])
def test_malformed_reply_is_a_clean_error(data):
    with pytest.raises(redis_resp.RedisError, match="unexpected reply"):
        _conn_with(data).read_reply()


def test_truncated_reply_is_a_clean_error():
    with pytest.raises(redis_resp.RedisError, match="closed"):
        _conn_with(b"*2\r\n:1\r\n").read_reply()


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
