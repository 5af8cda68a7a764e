"""module_utils/cnpg_sql.py: which login and CA a Cluster's SQL uses, how a failed connection is described, and the
loopback bridge to a port-forward (tests/integration/test_cnpg_operator_real.py runs it on the real operator)."""

from __future__ import annotations

import base64
import socket

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import cnpg_sql


def cluster(name="kms-pg-dc1", spec=None, status=None):
    return {
        "metadata": {"name": name},
        "spec": spec or {},
        "status": {"currentPrimary": f"{name}-1"} if status is None else status,
    }


@pytest.mark.parametrize(
    "spec, credentials, want",
    [
        ({}, "auto", ("kms-pg-dc1-app", "app")),
        ({"bootstrap": {"initdb": {"secret": {"name": "kms-pg-app"}}}}, "auto", ("kms-pg-app", "app")),
        ({"bootstrap": {"recovery": {"source": "x", "secret": {"name": "shared"}}}}, "app", ("shared", "app")),
        ({"bootstrap": {"pg_basebackup": {"source": "x"}}}, "auto", ("kms-pg-dc1-app", "app")),
        ({"enableSuperuserAccess": True}, "auto", ("kms-pg-dc1-superuser", "superuser")),
        (
            {"enableSuperuserAccess": True, "superuserSecret": {"name": "pg-root"}},
            "superuser",
            ("pg-root", "superuser"),
        ),
        # the app owner when asked for, even where the superuser could log in
        (
            {"enableSuperuserAccess": True, "bootstrap": {"initdb": {"secret": {"name": "kms-pg-app"}}}},
            "app",
            ("kms-pg-app", "app"),
        ),
    ],
)
def test_the_login_is_the_secret_cnpg_keeps_it_in(spec, credentials, want):
    assert cnpg_sql.credentials_secret(cluster(spec=spec), credentials) == want


def test_the_superuser_is_refused_where_cnpg_sets_no_password_for_it():
    with pytest.raises(cnpg_sql.SqlError, match=r"Cluster kms-pg-dc1 does not enable superuser access"):
        cnpg_sql.credentials_secret(cluster(spec={"enableSuperuserAccess": False}), "superuser")


def test_an_unknown_kind_of_login_is_a_value_error():
    with pytest.raises(ValueError, match="credentials must be one of auto, superuser, app, got 'root'"):
        cnpg_sql.credentials_secret(cluster(), "root")


def test_the_target_is_the_current_primary_verified_by_the_rw_service_name_and_the_cluster_ca():
    assert cnpg_sql.connection_target(cluster(), "kms") == {
        "pod": "kms-pg-dc1-1",
        "tls_name": "kms-pg-dc1-rw.kms.svc",
        "ca_secret": "kms-pg-dc1-ca",
    }
    own_ca = cluster(spec={"certificates": {"serverCASecret": "my-ca", "serverTLSSecret": "my-tls"}})
    assert cnpg_sql.connection_target(own_ca, "db")["ca_secret"] == "my-ca"


def test_a_cluster_without_a_primary_instance_names_the_problem():
    with pytest.raises(cnpg_sql.SqlError, match=r"Cluster kms/kms-pg-dc1 has no current primary instance"):
        cnpg_sql.connection_target(cluster(status={}), "kms")


@pytest.mark.parametrize(
    "message, kind",
    [
        (
            'connection to server at "127.0.0.1", port 4242 failed: SSL error: certificate verify failed\n',
            "TLS verification failed",
        ),
        (
            'connection to server at "127.0.0.1", port 4242 failed: server certificate for "x" does not match host '
            'name "kms-pg-dc1-rw.kms.svc"',
            "TLS verification failed",
        ),
        (
            'connection to server at "127.0.0.1", port 4242 failed: FATAL:  password authentication failed for user '
            '"kms"\n',
            "authentication failed",
        ),
        ('connection to server at "127.0.0.1", port 4242 failed: server closed the connection', "connection failed"),
    ],
)
def test_a_failed_connection_says_whether_tls_authentication_or_the_connection_failed(message, kind):
    text = cnpg_sql.describe_connect_error(Exception(message), "kms/kms-pg-dc1-1")
    assert text.startswith(f"{kind} at kms/kms-pg-dc1-1: connection to server")
    assert "\n" not in text


def test_a_secret_without_the_key_names_both():
    encoded = {"username": base64.b64encode(b"kms").decode()}
    assert cnpg_sql.secret_value(encoded, "username", "kms-pg-app") == "kms"
    with pytest.raises(cnpg_sql.SqlError, match="Secret kms-pg-app has no password"):
        cnpg_sql.secret_value(encoded, "password", "kms-pg-app")


class SocketPairForward:
    """What kubernetes.stream.portforward returns, over a local socket pair: ``far`` is the pod's end."""

    def __init__(self, error=None):
        self.near, self.far = socket.socketpair()
        self._error = error

    def socket(self, port):
        assert port == cnpg_sql.PG_PORT
        return self.near

    def error(self, port):
        return self._error


class Listener(cnpg_sql.PortForwardListener):
    def __init__(self, forwards):
        self.forwards = forwards
        super().__init__(api=None, namespace="kms", pod="kms-pg-dc1-1")

    def _forward(self):
        forward = self.forwards.pop(0)
        if isinstance(forward, Exception):
            raise forward
        return forward


def test_every_loopback_connection_is_bridged_to_its_own_port_forward():
    forwards = [SocketPairForward(), SocketPairForward()]
    pods = [f.far for f in forwards]
    listener = Listener(list(forwards))
    try:
        for pod in pods:
            with socket.create_connection(listener.address, timeout=5) as client:
                client.sendall(b"startup")
                pod.settimeout(5)
                assert pod.recv(100) == b"startup"
                pod.sendall(b"S")
                assert client.recv(10) == b"S"
            pod.close()
    finally:
        listener.close()
    assert listener.address[0] == "127.0.0.1"


def test_a_refused_port_forward_is_recorded_and_the_connection_closed():
    listener = Listener([RuntimeError("Handshake status 404 Not Found")])
    try:
        with socket.create_connection(listener.address, timeout=5) as client:
            assert client.recv(10) == b""  # closed: libpq sees "server closed the connection"
    finally:
        listener.close()
    assert listener.errors == ["port-forward to kms/kms-pg-dc1-1:5432 refused: Handshake status 404 Not Found"]


def test_the_kubelet_s_error_is_recorded_before_the_client_sees_the_connection_closed():
    forward = SocketPairForward(error="failed to connect to localhost:5432 inside namespace: connection refused\n")
    listener = Listener([forward])
    try:
        with socket.create_connection(listener.address, timeout=5) as client:
            forward.far.close()  # what kubernetes' proxy does after it set the port's error
            assert client.recv(10) == b""
            assert listener.errors == [
                "port-forward to kms/kms-pg-dc1-1:5432: failed to connect to localhost:5432 inside namespace: "
                "connection refused"
            ]
    finally:
        listener.close()


def test_recovery_end_reads_the_timelines_history_file(monkeypatch):
    asked = []

    def fetch(_conn, sql, params=None):
        asked.append(params)
        if params is None:
            return [{"in_recovery": False, "timeline": 10}]
        return [
            {"history": "1\t0/3000090\tno recovery target specified\n9\t0/9000190\tbefore 2026-12-04 15:30:00+00\n"}
        ]

    monkeypatch.setattr(cnpg_sql, "fetch", fetch)
    out = cnpg_sql.recovery_end("conn")
    assert asked == [None, ("pg_wal/0000000A.history",)]
    assert out["timeline"] == 10 and out["switch_lsn"] == "0/9000190"
    assert out["reason"] == "before 2026-12-04 15:30:00+00" and len(out["history"]) == 2


def test_recovery_end_of_the_first_timeline_reads_no_history(monkeypatch):
    monkeypatch.setattr(cnpg_sql, "fetch", lambda *_args: [{"in_recovery": False, "timeline": 1}])
    assert cnpg_sql.recovery_end("conn") == {"in_recovery": False, "timeline": 1}
