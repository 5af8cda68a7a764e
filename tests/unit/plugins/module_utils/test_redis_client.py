# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""redis_client's pure parts: redis-py's exceptions as the collection's messages, the INFO keyspace, the TLS files.
What a real server does (refused, bad password, TLS verification, a timeout) is in tests/integration/test_redis_rdb.py.
"""

from __future__ import annotations

import ssl
import subprocess

import pytest
import redis

from ansible_collections.hanzo.kms.plugins.module_utils import redis_client

WHERE = "10.0.0.7:6380"


def raised_from(cause, exc):
    """``exc`` as redis-py raises it inside ``except cause`` (its ``__context__``)."""
    try:
        try:
            raise cause
        except type(cause):
            raise exc  # noqa: B904
    except type(exc) as caught:
        return caught


@pytest.mark.parametrize(
    "exc, connecting, kind, message",
    [
        (
            raised_from(ConnectionRefusedError(111, "Connection refused"), redis.ConnectionError("Error 111")),
            True,
            redis_client.RedisError,
            f"cannot connect to Redis at {WHERE}: Connection refused",
        ),
        (
            redis.TimeoutError("Timeout connecting to server"),
            True,
            redis_client.RedisError,
            f"cannot connect to Redis at {WHERE}: timed out",
        ),
        (
            redis.TimeoutError("Timeout reading from socket"),
            False,
            redis_client.RedisError,
            f"timed out waiting for Redis at {WHERE}",
        ),
        (
            redis.AuthenticationError("invalid username-password pair", status_code="WRONGPASS"),
            True,
            redis_client.RedisError,
            f"Redis at {WHERE} rejected the credentials: WRONGPASS invalid username-password pair",
        ),
        (
            redis.AuthenticationError("Authentication required.", status_code="NOAUTH"),
            False,
            redis_client.RedisError,
            f"Redis at {WHERE} requires a password: NOAUTH Authentication required.",
        ),
        (
            redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory", status_code="LOADING"),
            False,
            redis_client.ReplyError,
            "LOADING Redis is loading the dataset in memory",
        ),
        (
            redis.exceptions.NoPermissionError("this user has no permissions", status_code="NOPERM"),
            False,
            redis_client.ReplyError,
            "NOPERM this user has no permissions",
        ),
        (redis.ResponseError("unknown command 'FUNCTION'"), False, redis_client.ReplyError, "unknown command"),
        (
            redis.ConnectionError("Connection closed by server."),
            False,
            redis_client.RedisError,
            f"Redis at {WHERE} closed the connection",
        ),
        (
            redis.ConnectionError("Error while reading from socket: (104, 'Connection reset by peer')"),
            False,
            redis_client.RedisError,
            f"connection to Redis at {WHERE} failed: Error while reading",
        ),
        (
            raised_from(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), redis.ConnectionError()),
            True,
            redis_client.RedisError,
            f"TLS handshake with Redis at {WHERE} failed: ",
        ),
        (RecursionError(), False, redis_client.RedisError, f"reply from Redis at {WHERE} is nested too deeply"),
    ],
)
def test_redis_py_errors_become_messages_naming_the_server_and_the_cause(exc, connecting, kind, message):
    mapped = redis_client.map_error(exc, WHERE, connecting=connecting)
    assert mapped.__class__ is kind and str(mapped).startswith(message), mapped


def test_a_certificate_verification_failure_says_why():
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cause.verify_message = "self-signed certificate in certificate chain"
    mapped = redis_client.map_error(raised_from(cause, redis.ConnectionError("Error 1")), WHERE, connecting=True)
    assert str(mapped) == f"TLS verification of Redis at {WHERE} failed: self-signed certificate in certificate chain"


def test_keyspace_from_redis_pys_info():
    info = {
        "db0": {"keys": 3, "expires": 1, "avg_ttl": 0},
        "db2": {"keys": 1, "expires": 0, "avg_ttl": 0},
        "dbx": {"keys": 9},
        "db5": "not a dict",
    }
    assert redis_client.keyspace(info) == {"0": {"keys": 3, "expires": 1}, "2": {"keys": 1, "expires": 0}}


def test_unreadable_tls_files_are_named_before_connecting(tmp_path):
    params = {"host": "h", "port": 1, "tls": True, "tls_cert": str(tmp_path / "missing.pem")}
    with pytest.raises(redis_client.RedisError, match=r"cannot load the TLS files for Redis at h:1: .*No such file"):
        redis_client.connect(params)


def test_tls_validate_certs_false_turns_off_both_checks_and_a_ca_replaces_the_system_store(tmp_path):
    assert redis_client.tls_context({"tls_validate_certs": False}).verify_mode == ssl.CERT_NONE
    strict = redis_client.tls_context({})
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=only-ca"]
        + ["-keyout", str(tmp_path / "ca.key"), "-out", str(tmp_path / "ca.pem")],
        check=True,
        capture_output=True,
    )
    # the system store (which holds more than one CA here) is not added to the given CA, as redis-py's own would
    assert len(ssl.create_default_context().get_ca_certs()) > 1
    trusted = redis_client.tls_context({"tls_ca_cert": str(tmp_path / "ca.pem")}).get_ca_certs()
    assert [dict(cert["subject"][0])["commonName"] for cert in trusted] == ["only-ca"]


def test_without_redis_py_the_client_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(redis_client, "HAS_REDIS", False)
    with pytest.raises(redis_client.RedisError, match=r"redis \(redis-py\) is not installed"):
        redis_client.connect({})
