# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only SQL from the control node on a CloudNativePG instance, through the Kubernetes API (no route to the pod
network needed). No Ansible import.

The path: a port-forward to the instance pod's 5432 (``kubernetes.stream.portforward``, what ``kubectl
port-forward`` does) bridged to a loopback listener, and psycopg2 connecting to that listener. psycopg2 cannot be
handed the port-forward's socket (libpq opens its own connections, and a Unix socket would get no TLS), hence the
listener; each connection libpq makes gets its own port-forward. TLS is verified against the Cluster's CA
(``<cluster>-ca``'s ``ca.crt``) with ``sslmode=verify-full`` and ``host=<cluster>-rw.<namespace>.svc`` (a name in
the server certificate CNPG issues) while ``hostaddr`` is the loopback. The credentials are the ones CNPG uses: the
superuser Secret when ``spec.enableSuperuserAccess`` is set, else the application owner's Secret of the bootstrap.
The session is read-only (``default_transaction_read_only``); passwords are never part of a message.
"""

from __future__ import annotations

import base64
import os
import select
import socket
import tempfile
import threading

from ansible_collections.hanzo.kms.plugins.module_utils.kube import request_timeout

PG_PORT = 5432
BOOTSTRAP_METHODS = ("initdb", "recovery", "pg_basebackup")
CREDENTIAL_CHOICES = ("auto", "superuser", "app")

# Every table's row count as one JSON object {"schema.table": rows}, in one statement (query_to_xml runs the count of
# each table found in the catalog).
ROW_COUNTS_QUERY = (
    "SELECT coalesce(json_object_agg(format('%I.%I', table_schema, table_name), (xpath('/row/n/text()', "
    "query_to_xml(format('SELECT count(*) AS n FROM %I.%I', table_schema, table_name), false, true, '')))[1]::text"
    "::bigint), '{}') AS tables FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema NOT IN "
    "('pg_catalog', 'information_schema')"
)

# Replication state of an instance: the archiver (meaningful on the primary) and the replay (on a replica). Any role
# may read these; pg_current_wal_lsn() fails during recovery, hence the CASE.
REPLICATION_QUERY = """
SELECT pg_is_in_recovery() AS in_recovery,
       to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS now,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current_lsn,
       pg_last_wal_receive_lsn()::text AS receive_lsn,
       pg_last_wal_replay_lsn()::text AS replay_lsn,
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint AS replay_gap_bytes,
       to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS replay_time,
       extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS replay_lag_seconds,
       a.archived_count, a.last_archived_wal,
       to_char(a.last_archived_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS last_archived_time,
       extract(epoch FROM now() - a.last_archived_time)::float8 AS last_archived_age_seconds,
       a.failed_count, a.last_failed_wal,
       to_char(a.last_failed_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS last_failed_time,
       extract(epoch FROM now() - a.last_failed_time)::float8 AS last_failed_age_seconds
FROM pg_stat_archiver a
"""

# Where the recovery that made the instance's timeline ended: its timeline (a primary's from its WAL file name, a
# replica's from the last checkpoint) and that timeline's history file (pg_read_file: a superuser's read).
TIMELINE_QUERY = """
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN (SELECT timeline_id FROM pg_control_checkpoint())
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END AS timeline
"""


class SqlError(Exception):
    """Why SQL could not be run on an instance, one line, never a password."""


# -- pure decisions ------------------------------------------------------------------------------------------------
def credentials_secret(cluster, credentials="auto"):
    """(Secret name, which) CNPG keeps the login of ``credentials`` in: ``superuser`` (``spec.superuserSecret`` or
    ``<cluster>-superuser``, which CNPG fills only with ``enableSuperuserAccess``) or ``app`` (the bootstrap's
    ``secret`` or ``<cluster>-app``). ``auto``: the superuser when enabled (it reads every table), else the app
    owner."""
    if credentials not in CREDENTIAL_CHOICES:
        raise ValueError(f"credentials must be one of {', '.join(CREDENTIAL_CHOICES)}, got {credentials!r}")
    spec = cluster.get("spec") or {}
    name = cluster["metadata"]["name"]
    if credentials == "superuser" or (credentials == "auto" and spec.get("enableSuperuserAccess")):
        if not spec.get("enableSuperuserAccess"):
            raise SqlError(f"Cluster {name} does not enable superuser access (spec.enableSuperuserAccess)")
        return (spec.get("superuserSecret") or {}).get("name") or f"{name}-superuser", "superuser"
    bootstrap = spec.get("bootstrap") or {}
    for method in BOOTSTRAP_METHODS:
        secret = ((bootstrap.get(method) or {}).get("secret") or {}).get("name")
        if secret:
            return secret, "app"
    return f"{name}-app", "app"


def connection_target(cluster, namespace):
    """Where to connect: the Cluster's current primary pod (a replica Cluster's designated primary), the name its
    server certificate carries, and the Secret of the CA that signed it."""
    name = cluster["metadata"]["name"]
    pod = (cluster.get("status") or {}).get("currentPrimary")
    if not pod:
        raise SqlError(f"Cluster {namespace}/{name} has no current primary instance (status.currentPrimary)")
    certificates = (cluster.get("spec") or {}).get("certificates") or {}
    return {
        "pod": pod,
        "tls_name": f"{name}-rw.{namespace}.svc",
        "ca_secret": certificates.get("serverCASecret") or f"{name}-ca",
    }


def describe_connect_error(exc, where):
    """One line for a failed psycopg2.connect: which of TLS, authentication or the connection failed (libpq's first
    line, which never holds the password)."""
    text = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
    lower = text.lower()
    if "certificate" in lower or "ssl" in lower or "tls" in lower:
        kind = "TLS verification failed"
    elif "authentication failed" in lower or "password" in lower or "no pg_hba.conf entry" in lower:
        kind = "authentication failed"
    else:
        kind = "connection failed"
    return f"{kind} at {where}: {text}"


def secret_value(data, key, secret):
    """A Secret's ``key`` decoded, or SqlError naming what is missing."""
    encoded = (data or {}).get(key)
    if not encoded:
        raise SqlError(f"Secret {secret} has no {key}")
    return base64.b64decode(encoded).decode()


# -- the port-forward ----------------------------------------------------------------------------------------------
def _pump(one, other):
    """Copy bytes both ways until either side closes (the caller closes both)."""
    sockets = [one, other]
    try:
        while True:
            readable, _w, _x = select.select(sockets, [], [])
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                (other if sock is one else one).sendall(data)
    except OSError:
        return


def _close(*sockets):
    for sock in sockets:
        try:
            sock.close()
        except OSError:
            pass


class PortForwardListener:
    """A loopback TCP listener whose every accepted connection is bridged to a new port-forward to ``pod``:port.
    ``errors`` collects what the API or the kubelet said when a port-forward failed."""

    def __init__(self, api, namespace, pod, port=PG_PORT, timeout=10):
        self.api, self.namespace, self.pod, self.port, self.timeout = api, namespace, pod, port, timeout
        self.errors = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.address = self.listener.getsockname()
        self._thread = threading.Thread(target=self._serve, name=f"port-forward {pod}:{port}", daemon=True)
        self._thread.start()

    def _forward(self):
        # pylint: disable=import-outside-toplevel
        import kubernetes as k8s
        from kubernetes.stream import portforward

        core = k8s.client.CoreV1Api(self.api)
        return portforward(
            core.connect_get_namespaced_pod_portforward,
            self.pod,
            self.namespace,
            ports=str(self.port),
            _request_timeout=request_timeout(self.timeout),
        )

    def _serve(self):
        while True:
            try:
                conn, _peer = self.listener.accept()
            except OSError:
                return  # closed
            try:
                forward = self._forward()
            except Exception as exc:  # pylint: disable=broad-exception-caught
                self.errors.append(f"port-forward to {self.namespace}/{self.pod}:{self.port} refused: {exc}")
                _close(conn)
                continue
            remote = forward.socket(self.port)
            threading.Thread(target=self._bridge, args=(conn, remote, forward), daemon=True).start()

    def _bridge(self, conn, remote, forward):
        _pump(conn, remote)
        # kubernetes' proxy sets the port's error before it closes the port: recorded here before libpq sees the
        # connection closed, so the caller finds it
        error = forward.error(self.port)
        if error:
            self.errors.append(f"port-forward to {self.namespace}/{self.pod}:{self.port}: {error.strip()}")
        _close(conn, remote)

    def close(self):
        _close(self.listener)


# -- the connection ------------------------------------------------------------------------------------------------
class Instance:
    """A read-only psycopg2 session on a Cluster's primary instance (``with Instance(...) as conn``).

    ``reader`` provides ``pod(namespace, name)`` and ``secret_data(namespace, name)`` (site_status.KubeReader);
    ``timeout`` bounds each API request and the connection, ``statement_timeout`` (seconds) each statement;
    ``ca_cert`` (PEM) replaces the Cluster's CA (a test of the verification); ``password`` the Secret's."""

    def __init__(self, api, reader, cluster, namespace, database=None, credentials="auto", timeout=10, **overrides):
        self.api, self.reader, self.cluster, self.namespace = api, reader, cluster, namespace
        self.database, self.credentials, self.timeout = database, credentials, timeout
        self.statement_timeout = overrides.pop("statement_timeout", None)
        self.overrides = overrides
        self.listener, self.conn, self.user, self._ca_dir = None, None, None, None
        self.target = connection_target(cluster, namespace)

    def _read(self, what, func, *args):
        try:
            return func(self.namespace, *args)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            from ansible_collections.hanzo.kms.plugins.module_utils.site_status import NotFound, describe_error  # pylint: disable=import-outside-toplevel

            if isinstance(exc, NotFound):
                raise SqlError(f"{what} {self.namespace}/{args[0]} not found") from None
            raise SqlError(f"cannot read {what} {self.namespace}/{args[0]}: {describe_error(exc)}") from None

    def __enter__(self):
        try:
            import psycopg2  # pylint: disable=import-outside-toplevel
        except ImportError:
            raise SqlError("the psycopg2 Python library (psycopg2-binary) is required for SQL") from None

        self._read("pod", self.reader.pod, self.target["pod"])
        secret, _which = credentials_secret(self.cluster, self.credentials)
        login = self._read("Secret", self.reader.secret_data, secret)
        self.user = secret_value(login, "username", secret)
        password = self.overrides.get("password") or secret_value(login, "password", secret)
        ca_cert = self.overrides.get("ca_cert") or secret_value(
            self._read("Secret", self.reader.secret_data, self.target["ca_secret"]), "ca.crt", self.target["ca_secret"]
        )
        self._ca_dir = tempfile.TemporaryDirectory(prefix="hanzo-kms-pg-")  # pylint: disable=consider-using-with
        ca_file = os.path.join(self._ca_dir.name, "ca.crt")
        with open(ca_file, "w", encoding="utf-8") as handle:
            handle.write(ca_cert)
        self.listener = PortForwardListener(self.api, self.namespace, self.target["pod"], timeout=self.timeout)
        where = f"{self.namespace}/{self.target['pod']} ({self.target['tls_name']}) as {self.user}"
        try:
            self.conn = psycopg2.connect(
                host=self.target["tls_name"],
                hostaddr=self.listener.address[0],
                port=self.listener.address[1],
                dbname=self.database or "postgres",
                user=self.user,
                password=password,
                sslmode="verify-full",
                sslrootcert=ca_file,
                gssencmode="disable",
                connect_timeout=max(2, int(self.timeout)),
                application_name="hanzo.kms",
                options=f"-c statement_timeout={int(self.statement_timeout * 1000)}"
                if self.statement_timeout
                else None,
            )
        except psycopg2.Error as exc:
            self._cleanup()
            # a refused port-forward shows in libpq only as a closed connection: the API's word is clearer
            errors = self.listener.errors if self.listener else []
            raise SqlError(errors[0] if errors else describe_connect_error(exc, where)) from None
        self.conn.set_session(readonly=True, autocommit=True)
        return self.conn

    def _cleanup(self):
        if self.listener:
            self.listener.close()
        if self._ca_dir:
            self._ca_dir.cleanup()
            self._ca_dir = None

    def __exit__(self, *exc_info):
        if self.conn is not None:
            self.conn.close()
        self._cleanup()
        return False


def fetch(conn, sql, params=None):
    """Rows of ``sql`` as dicts."""
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def replication_state(conn):
    """The instance's REPLICATION_QUERY row."""
    return fetch(conn, REPLICATION_QUERY)[0]


def row_counts(conn):
    """{"schema.table": rows} of the connected database."""
    return fetch(conn, ROW_COUNTS_QUERY)[0]["tables"]


def recovery_end(conn):
    """``timeline`` of the instance and, after a recovery (timeline > 1), ``history`` (the entries of its history
    file, hanzo.kms's cnpg_recovery.timeline_history) and ``switch_lsn``/``reason`` of the newest entry: where the
    recovery that created the timeline ended. ``history_error`` when the file cannot be read."""
    # pylint: disable=import-outside-toplevel
    import psycopg2

    from ansible_collections.hanzo.kms.plugins.module_utils.cnpg_recovery import timeline_history

    out = fetch(conn, TIMELINE_QUERY)[0]
    if out["timeline"] and out["timeline"] > 1:
        try:
            text = fetch(conn, "SELECT pg_read_file(%s) AS history", (f"pg_wal/{out['timeline']:08X}.history",))[0]
        except psycopg2.Error as exc:
            out["history_error"] = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        else:
            out["history"] = timeline_history(text["history"])
            if out["history"]:
                out.update(switch_lsn=out["history"][-1]["switch_lsn"], reason=out["history"][-1]["reason"])
    return out


READS = ("row_counts", "replication", "recovery")


def query_info(api, reader, params):
    """What hanzo.kms.cnpg_query_info returns: ``params``: namespace, cluster_name, database, credentials, read
    (READS), request_timeout. Raises SqlError."""
    from ansible_collections.hanzo.kms.plugins.module_utils.site_status import NotFound, describe_error  # pylint: disable=import-outside-toplevel

    namespace, name = params["namespace"], params["cluster_name"]
    try:
        cluster = reader.cluster(namespace, name)
    except NotFound:
        raise SqlError(f"Cluster {namespace}/{name} not found") from None
    except Exception as exc:  # pylint: disable=broad-exception-caught
        raise SqlError(f"cannot read Cluster {namespace}/{name}: {describe_error(exc)}") from None
    instance = Instance(
        api,
        reader,
        cluster,
        namespace,
        database=params["database"],
        credentials=params["credentials"],
        timeout=params["request_timeout"],
    )
    with instance as conn:
        out = {
            "pod": instance.target["pod"],
            "tls_name": instance.target["tls_name"],
            "user": instance.user,
            "database": params["database"],
        }
        if "row_counts" in params["read"]:
            out["tables"] = row_counts(conn)
        if "replication" in params["read"]:
            out["replication"] = replication_state(conn)
        if "recovery" in params["read"]:
            out["recovery"] = recovery_end(conn)
    return out
