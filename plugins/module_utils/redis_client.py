# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way the collection connects to Redis: redis-py's client built from the connection options
(``redis_connection_spec``), its errors turned into ``RedisError`` messages that name the server and the cause, and
the INFO helpers. The hand-written RESP code (``redis_resp``) reads the SYNC stream and the pipelined RESTORE replies
on the socket of a connection made here.
"""

from __future__ import annotations

import functools
import socket
import ssl
import traceback

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError:
    HAS_REDIS = False
    REDIS_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_REDIS = True
    REDIS_IMPORT_ERROR = None

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


class RedisError(Exception):
    """A Redis connection or protocol failure with a message meant for the user."""


class ReplyError(RedisError):
    """The server answered a command with an error reply (the text is the server's, error code first)."""


def redis_connection_spec():
    return {k: dict(v) for k, v in REDIS_CONNECTION_SPEC.items()}


def address(params):
    return f"{params.get('host') or '127.0.0.1'}:{int(params.get('port') or 6379)}"


def tls_context(params):
    """The TLS context of a connection: only ``tls_ca_cert`` when given (else the system trust store), the host name
    and certificate checked unless ``tls_validate_certs`` is false, the client certificate for mutual TLS."""
    try:
        ctx = ssl.create_default_context(cafile=params.get("tls_ca_cert") or None)
        if not params.get("tls_validate_certs", True):
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if params.get("tls_cert"):
            ctx.load_cert_chain(params["tls_cert"], params.get("tls_key") or None)
    except (ssl.SSLError, OSError) as exc:
        raise RedisError(f"cannot load the TLS files for Redis at {address(params)}: {exc}") from None
    return ctx


def _server_text(exc):
    """The server's error reply as it sent it: redis-py strips the code (LOADING, NOPERM, ...) into status_code."""
    code = getattr(exc, "status_code", None)
    return f"{code} {exc}" if code else str(exc)


def map_error(exc, where, connecting=False):
    """The collection's error for a redis-py exception (or an OSError / RecursionError from under it); ``connecting``:
    raised while the connection was made (a refused or timed-out connect says "cannot connect"). Needs redis-py."""
    cause = exc.__context__
    if isinstance(exc, RecursionError):
        return RedisError(f"reply from Redis at {where} is nested too deeply; not a Redis server?")
    if isinstance(exc, redis.AuthenticationError):
        if getattr(exc, "status_code", None) == "NOAUTH":
            return RedisError(f"Redis at {where} requires a password: {_server_text(exc)}")
        return RedisError(f"Redis at {where} rejected the credentials: {_server_text(exc)}")
    if isinstance(exc, (redis.ResponseError, redis.exceptions.BusyLoadingError)):
        return ReplyError(_server_text(exc))
    if isinstance(cause, ssl.SSLCertVerificationError):
        return RedisError(f"TLS verification of Redis at {where} failed: {cause.verify_message}")
    if isinstance(cause, ssl.SSLError):
        return RedisError(f"TLS handshake with Redis at {where} failed: {cause}")
    if isinstance(exc, (redis.TimeoutError, socket.timeout)):
        if connecting and "connecting" in str(exc):
            return RedisError(f"cannot connect to Redis at {where}: timed out")
        return RedisError(f"timed out waiting for Redis at {where}")
    if connecting and isinstance(cause, OSError):
        return RedisError(f"cannot connect to Redis at {where}: {cause.strerror or cause}")
    text = str(exc)
    if "closed by server" in text:
        return RedisError(f"Redis at {where} closed the connection")
    return RedisError(f"connection to Redis at {where} failed: {text}")


def _mapped(where, method):
    @functools.wraps(method)
    def call(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except (redis.RedisError, OSError, RecursionError) as exc:
            raise map_error(exc, where) from None

    return call


class Client:
    """One connection to a Redis server through redis-py. Its commands are redis-py's (``client.info('keyspace')``,
    ``client.config_set(name, value)``, ``client.execute_command(...)``) and raise ``RedisError`` / ``ReplyError``.

    redis-py retries nothing here: the callers retry where a command is idempotent (``redis_restore.Target``).
    """

    def __init__(self, params, timeout=None):
        self.where = address(params)
        if not HAS_REDIS:
            raise RedisError("the Python library redis (redis-py) is not installed")
        options = dict(
            host=params.get("host") or "127.0.0.1",
            port=int(params.get("port") or 6379),
            username=(params.get("username") or None) if params.get("password") else None,  # AUTH needs the password
            password=params.get("password") or None,
            socket_connect_timeout=float(params.get("connect_timeout") or 10.0),
            socket_timeout=timeout,
            protocol=2,  # redis-py's default RESP3 starts with HELLO, which Redis < 6 does not know
            retry=Retry(NoBackoff(), 0),
            driver_info=None,  # no CLIENT SETINFO: a user limited to SYNC or RESTORE would log a NOPERM each time
        )
        if params.get("tls"):
            options.update(connection_class=_TlsConnection, context=tls_context(params))
        pool = redis.ConnectionPool(**options)
        try:
            self.redis = redis.Redis(connection_pool=pool, single_connection_client=True)
        except (redis.RedisError, OSError, RecursionError) as exc:
            pool.disconnect()
            error = map_error(exc, self.where, connecting=True)
            if not params.get("tls") and ("closed" in str(error) or isinstance(exc.__context__, ConnectionResetError)):
                raise RedisError(
                    f"{error} (a TLS-only port drops a plain connection: set tls if it serves TLS)"
                ) from None
            raise error from None

    def __getattr__(self, name):
        if name.startswith("_") or name == "redis":
            raise AttributeError(name)
        return _mapped(self.where, getattr(self.redis, name))

    def socket(self):
        """The connected (TLS, authenticated) socket, for the RESP stream of a SYNC transfer or pipelined RESTOREs
        (``redis_resp.RespConnection.on``): nothing else may use the client meanwhile; closing the client closes it."""
        # redis-py has no public accessor for the socket; its reply buffer is empty between commands
        return self.redis.connection._sock  # pylint: disable=protected-access

    def close(self):
        self.redis.close()
        self.redis.connection_pool.disconnect()


if HAS_REDIS:

    class _TlsConnection(redis.SSLConnection):
        """redis-py's TLS connection with the collection's context (``tls_context``): redis-py's own adds the system
        trust store to a given CA, which would widen what ``tls_ca_cert`` trusts."""

        def __init__(self, context=None, **kwargs):
            super().__init__(**kwargs)
            self.context = context

        def _wrap_socket_with_ssl(self, sock):
            return self.context.wrap_socket(sock, server_hostname=self.host)


def connect(params, timeout=None):
    """A ``Client``; ``timeout`` (s) bounds each reply, None waits."""
    return Client(params, timeout=timeout)


# --------------------------------------------------------------------------------------------------------------
# INFO
# --------------------------------------------------------------------------------------------------------------
def keyspace(info):
    """{'0': {'keys': n, 'expires': n}} from the ``dbN`` fields of redis-py's INFO dict."""
    out = {}
    for key, value in info.items():
        if key.startswith("db") and key[2:].isdigit() and isinstance(value, dict):
            out[key[2:]] = {"keys": int(value.get("keys", 0)), "expires": int(value.get("expires", 0))}
    return out


def server_info(client):
    """Flavour (redis or valkey), version and keyspace of the server."""
    info = client.info("server")
    info.update(client.info("keyspace"))
    flavour = "valkey" if info.get("valkey_version") or info.get("server_name") == "valkey" else "redis"
    version = info.get("valkey_version") if flavour == "valkey" else info.get("redis_version")
    return {
        "server": flavour,
        "version": None if version is None else str(version),
        "redis_version": None if info.get("redis_version") is None else str(info["redis_version"]),
        "keyspace": keyspace(info),
    }


def config_get(client, name):
    """A config value as str, None when the server does not know ``name``."""
    return client.config_get(name).get(name)
