"""PostgreSQL 15 per site: dc1 a primary, dc2 a streaming standby made with ``pg_basebackup -R``.

PostgreSQL refuses to run as root, so when the lab runs as root the server runs as the ``postgres`` user that
Debian's package creates, and the lab dir of each site is handed to that user.
"""
from __future__ import annotations

import os
import pwd
import secrets
import subprocess
from pathlib import Path

from tests.lab.core import LabError

PG_MAJOR = "15"


def bindir():
    path = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
    if not (path / "postgres").exists():
        raise LabError(f"PostgreSQL {PG_MAJOR} server not found in {path}: install the Debian package "
                       f"'postgresql-{PG_MAJOR}' (make setup does this)")
    return path


def _server_user():
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise LabError("running as root needs the 'postgres' user (Debian package 'postgresql-common')") from exc
    return "postgres"


def _own(path, user):
    if user:
        entry = pwd.getpwnam(user)
        for root, dirs, files in os.walk(path):
            for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                os.chown(name, entry.pw_uid, entry.pw_gid)


def _run(argv, user, env=None):
    kwargs = {}
    if user:
        entry = pwd.getpwnam(user)
        kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
    full_env = dict(os.environ, **(env or {}))
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=full_env, check=False,
                            cwd="/", **kwargs)
    if result.returncode != 0:
        raise LabError(f"{' '.join(str(a) for a in argv[:2])} failed ({result.returncode}): "
                       f"{result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def connect(entry, superuser=False, dbname=None):
    import psycopg2  # pylint: disable=import-outside-toplevel

    user = entry["superuser"] if superuser else entry["user"]
    password = entry["superuser_password"] if superuser else entry["password"]
    return psycopg2.connect(host=entry["host"], port=entry["port"], user=user, password=password,
                            dbname=dbname or entry["database"], connect_timeout=3)


def query(entry, sql, superuser=False, dbname=None):
    conn = connect(entry, superuser=superuser, dbname=dbname)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def _start(lab, site, data_dir, sock_dir, port, user):
    name = f"{site}-postgres"
    lab.spawn(name, [bindir() / "postgres", "-D", data_dir, "-p", port, "-k", sock_dir], user=user,
              stop_signal="SIGINT")  # SIGINT = fast shutdown: clean, without waiting for clients
    return name


def up_primary(lab, site):
    user = _server_user()
    site_dir = lab.path("postgres", site)
    site_dir.mkdir(parents=True, exist_ok=True)
    data_dir, sock_dir = site_dir / "data", site_dir / "sock"
    sock_dir.mkdir(exist_ok=True)
    entry = {"host": "127.0.0.1", "port": lab.free_port(), "database": "kms", "user": "kms",
             "password": secrets.token_hex(16), "superuser": "postgres", "superuser_password": secrets.token_hex(16),
             "data_dir": str(data_dir), "socket_dir": str(sock_dir), "role": "primary"}
    pwfile = site_dir / "pwfile"
    pwfile.write_text(entry["superuser_password"] + "\n", encoding="utf-8")
    _own(site_dir, user)
    _run([bindir() / "initdb", "-D", data_dir, "-U", "postgres", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C",
          "--auth-local=trust", "--auth-host=scram-sha-256"], user)
    pwfile.unlink()
    with open(data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write("\n# hanzo.kms lab\nlisten_addresses = '127.0.0.1'\nwal_level = replica\nmax_wal_senders = 10\n"
                   "max_replication_slots = 10\nwal_keep_size = '256MB'\nhot_standby = on\n"
                   "shared_buffers = '64MB'\nlog_min_messages = warning\n")
    with open(data_dir / "pg_hba.conf", "a", encoding="utf-8") as hba:
        hba.write("host replication postgres 127.0.0.1/32 scram-sha-256\n")
    name = _start(lab, site, data_dir, sock_dir, entry["port"], user)
    lab.wait_process(name, lambda: query(entry, "SELECT 1", superuser=True, dbname="postgres"), 30,
                     f"{name} to accept connections on port {entry['port']}")
    query(entry, f"CREATE ROLE kms LOGIN PASSWORD '{entry['password']}'", superuser=True, dbname="postgres")
    query(entry, "CREATE DATABASE kms OWNER kms", superuser=True, dbname="postgres")
    return entry


def up_standby(lab, site, primary):
    user = _server_user()
    site_dir = lab.path("postgres", site)
    site_dir.mkdir(parents=True, exist_ok=True)
    data_dir, sock_dir = site_dir / "data", site_dir / "sock"
    sock_dir.mkdir(exist_ok=True)
    _own(site_dir, user)
    entry = dict(primary, port=lab.free_port(), data_dir=str(data_dir), socket_dir=str(sock_dir), role="standby")
    _run([bindir() / "pg_basebackup", "-h", primary["host"], "-p", primary["port"], "-U", primary["superuser"],
          "-D", data_dir, "-R", "-X", "stream", "-c", "fast", "--no-password"], user,
         env={"PGPASSWORD": primary["superuser_password"]})
    name = _start(lab, site, data_dir, sock_dir, entry["port"], user)

    def streaming():
        rows = query(entry, "SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver)",
                     superuser=True, dbname="postgres")
        return rows[0] == (True, "streaming")

    lab.wait_process(name, streaming, 30, f"{name} to stream from the primary on port {primary['port']}")
    return entry


def check(entry):
    try:
        in_recovery = query(entry, "SELECT pg_is_in_recovery()", superuser=True, dbname="postgres")[0][0]
    except Exception as exc:  # pylint: disable=broad-exception-caught
        return False, f"{entry['host']}:{entry['port']} SELECT failed: {exc}"
    return True, f"{entry['host']}:{entry['port']} {'standby (in recovery)' if in_recovery else 'primary'}"
