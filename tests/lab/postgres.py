"""PostgreSQL 15 per site: dc1 a primary, dc2 a streaming standby made with ``pg_basebackup -R``.

PostgreSQL refuses to run as root, so when the lab runs as root the server runs as the ``postgres`` user that
Debian's package creates, and the lab dir of each site is handed to that user.

Role changes (used by the CNPG operator stand-in, tests/lab/cnpg_standin.py, and by tests): ``demote`` (clean
shutdown, restart as a standby of the other site), ``promote`` (``pg_promote``), ``reclone`` (fresh
``pg_basebackup`` from the other site, the only way back for a primary that diverged after a failover). A server
restarted this way is started with ``pg_ctl`` (detached); its new postmaster pid replaces the old one in the lab
state (``processes[<site>-postgres]``, under ``state.lock``), so ``down`` still stops it: re-read the state
(``Lab.load()``) before using that pid. ``sites.<site>.postgres.role`` / ``upstream`` follow the changes.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from tests.lab.core import Lab, LabError, pid_exe, wait_until

PG_MAJOR = "15"


def bindir():
    path = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
    if not (path / "postgres").exists():
        raise LabError(
            f"PostgreSQL {PG_MAJOR} server not found in {path}: install the Debian package "
            f"'postgresql-{PG_MAJOR}' (make setup does this)"
        )
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
        os.chown(path, entry.pw_uid, entry.pw_gid)
        for root, dirs, files in os.walk(path):
            for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                os.chown(name, entry.pw_uid, entry.pw_gid)


def _exec(argv, user, env=None):
    kwargs = {}
    if user:
        entry = pwd.getpwnam(user)
        kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, env=full_env, check=False, cwd="/", **kwargs
    )


def _run(argv, user, env=None):
    result = _exec(argv, user, env)
    if result.returncode != 0:
        raise LabError(
            f"{' '.join(str(a) for a in argv[:2])} failed ({result.returncode}): "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout


def connect(entry, superuser=False, dbname=None):
    import psycopg2  # pylint: disable=import-outside-toplevel

    user = entry["superuser"] if superuser else entry["user"]
    password = entry["superuser_password"] if superuser else entry["password"]
    return psycopg2.connect(
        host=entry["host"],
        port=entry["port"],
        user=user,
        password=password,
        dbname=dbname or entry["database"],
        connect_timeout=3,
    )


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
    lab.spawn(
        name, [bindir() / "postgres", "-D", data_dir, "-p", port, "-k", sock_dir], user=user, stop_signal="SIGINT"
    )  # SIGINT = fast shutdown: clean, without waiting for clients
    return name


def up_primary(lab, site):
    user = _server_user()
    site_dir = lab.path("postgres", site)
    site_dir.mkdir(parents=True, exist_ok=True)
    data_dir, sock_dir = site_dir / "data", site_dir / "sock"
    sock_dir.mkdir(exist_ok=True)
    entry = {
        "host": "127.0.0.1",
        "port": lab.free_port(),
        "database": "kms",
        "user": "kms",
        "password": secrets.token_hex(16),
        "superuser": "postgres",
        "superuser_password": secrets.token_hex(16),
        "data_dir": str(data_dir),
        "socket_dir": str(sock_dir),
        "role": "primary",
    }
    pwfile = site_dir / "pwfile"
    pwfile.write_text(entry["superuser_password"] + "\n", encoding="utf-8")
    _own(site_dir, user)
    _run(
        [
            bindir() / "initdb",
            "-D",
            data_dir,
            "-U",
            "postgres",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--locale=C",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ],
        user,
    )
    pwfile.unlink()
    with open(data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write(
            "\n# hanzo.kms lab\nlisten_addresses = '127.0.0.1'\nwal_level = replica\nmax_wal_senders = 10\n"
            "max_replication_slots = 10\nwal_keep_size = '256MB'\nhot_standby = on\n"
            "shared_buffers = '64MB'\nlog_min_messages = warning\n"
            # a standby whose upstream was promoted reconnects and follows the new timeline quickly
            "wal_retrieve_retry_interval = '200ms'\nrecovery_target_timeline = 'latest'\n"
            # lets pg_rewind resynchronise a diverged old primary
            "wal_log_hints = on\n"
        )
    with open(data_dir / "pg_hba.conf", "a", encoding="utf-8") as hba:
        hba.write("host replication postgres 127.0.0.1/32 scram-sha-256\n")
    name = _start(lab, site, data_dir, sock_dir, entry["port"], user)
    lab.wait_process(
        name,
        lambda: query(entry, "SELECT 1", superuser=True, dbname="postgres"),
        30,
        f"{name} to accept connections on port {entry['port']}",
    )
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
    _run(
        [
            bindir() / "pg_basebackup",
            "-h",
            primary["host"],
            "-p",
            primary["port"],
            "-U",
            primary["superuser"],
            "-D",
            data_dir,
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-password",
        ],
        user,
        env={"PGPASSWORD": primary["superuser_password"]},
    )
    name = _start(lab, site, data_dir, sock_dir, entry["port"], user)

    def streaming():
        rows = query(
            entry,
            "SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver)",
            superuser=True,
            dbname="postgres",
        )
        return rows[0] == (True, "streaming")

    lab.wait_process(name, streaming, 30, f"{name} to stream from the primary on port {primary['port']}")
    return entry


def check(entry):
    try:
        in_recovery = query(entry, "SELECT pg_is_in_recovery()", superuser=True, dbname="postgres")[0][0]
    except Exception as exc:  # pylint: disable=broad-exception-caught
        return False, f"{entry['host']}:{entry['port']} SELECT failed: {exc}"
    return True, f"{entry['host']}:{entry['port']} {'standby (in recovery)' if in_recovery else 'primary'}"


# -- role changes --------------------------------------------------------------------------------------------------
CLEAN_STATES = ("shut down", "shut down in recovery")
START_ATTEMPTS_SECONDS = 30


@contextlib.contextmanager
def locked_state(lab_dir):
    """The lab state, loaded and saved under the lab's exclusive lock (the stand-ins of both sites update it)."""
    lab = Lab(lab_dir)
    with lab.locked():
        if lab.load() is None:
            raise LabError(f"no lab state in {lab.dir}")
        yield lab
        lab.save()


def site_entry(lab_dir, site):
    state = Lab(lab_dir).load() or {}
    try:
        return state["sites"][site]["postgres"]
    except KeyError:
        raise LabError(f"the lab in {lab_dir} has no PostgreSQL for site {site!r}") from None


def controldata_text(entry):
    """``pg_controldata`` of the site's data dir (C locale: English labels, as CNPG parses them)."""
    return _run([bindir() / "pg_controldata", "-D", entry["data_dir"]], _server_user(), env={"LC_ALL": "C"})


def cluster_state(text):
    match = re.search(r"^Database cluster state:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else ""


def is_running(entry):
    """True when a postmaster runs on the data dir (``pg_ctl status``)."""
    return _exec([bindir() / "pg_ctl", "status", "-D", entry["data_dir"]], _server_user()).returncode == 0


def stop(entry, mode="fast", timeout=60):
    """Shut down (fast = clean: the shutdown checkpoint is written and sent to the standbys); no-op when stopped."""
    if is_running(entry):
        _run(
            [bindir() / "pg_ctl", "stop", "-D", entry["data_dir"], "-m", mode, "-w", "-t", str(timeout)], _server_user()
        )


def start(lab_dir, site, timeout=60):
    """Start the site's server with ``pg_ctl`` (detached, logging to the lab's log) and record its pid."""
    entry = site_entry(lab_dir, site)
    user = _server_user()
    name = f"{site}-postgres"
    log = Lab(lab_dir).path("logs", f"{name}.log")
    log.touch()
    _own(log, user)
    argv = [
        bindir() / "pg_ctl",
        "start",
        "-D",
        entry["data_dir"],
        "-w",
        "-t",
        str(timeout),
        "-l",
        log,
        "-o",
        f"-p {entry['port']} -k {entry['socket_dir']}",
    ]
    deadline = time.monotonic() + START_ATTEMPTS_SECONDS
    while True:  # after a SIGKILL of the postmaster its children may hold the shared memory for a moment
        result = _exec(argv, user)
        if result.returncode == 0:
            break
        if time.monotonic() > deadline:
            tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-10:])
            raise LabError(
                f"pg_ctl start of {name} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}\n{tail}"
            )
        time.sleep(0.5)
    pid = int((Path(entry["data_dir"]) / "postmaster.pid").read_text(encoding="utf-8").split()[0])
    standby = (Path(entry["data_dir"]) / "standby.signal").exists()
    with locked_state(lab_dir) as lab:
        try:
            proc = lab.process(name)
            proc.update(pid=pid, exe=pid_exe(pid) or proc["exe"])
        except LabError:
            lab.state.setdefault("processes", []).append(
                {
                    "name": name,
                    "pid": pid,
                    "exe": pid_exe(pid) or str(bindir() / "postgres"),
                    "stop_signal": "SIGINT",
                    "log": str(log),
                }
            )
        lab.state["sites"][site]["postgres"]["role"] = "standby" if standby else "primary"
    return pid


def _conninfo_port(entry):
    auto = Path(entry["data_dir"]) / "postgresql.auto.conf"
    match = re.search(r"^primary_conninfo\s*=.*\bport=(\d+)", auto.read_text(encoding="utf-8"), re.MULTILINE)
    return int(match.group(1)) if match else None


def configure_standby(entry, upstream, application_name):
    """standby.signal + primary_conninfo to ``upstream``, following its newest timeline (the server is stopped)."""
    user = _server_user()
    data = Path(entry["data_dir"])
    conninfo = (
        f"host={upstream['host']} port={upstream['port']} user={upstream['superuser']} "
        f"password={upstream['superuser_password']} application_name={application_name}"
    )
    auto = data / "postgresql.auto.conf"
    replaced = ("primary_conninfo", "primary_slot_name", "recovery_target_timeline")
    keep = [
        line for line in auto.read_text(encoding="utf-8").splitlines() if line.split("=", 1)[0].strip() not in replaced
    ]
    keep += ["primary_conninfo = '" + conninfo.replace("'", "''") + "'", "recovery_target_timeline = 'latest'"]
    auto.write_text("\n".join(keep) + "\n", encoding="utf-8")
    (data / "standby.signal").touch()
    for path in (auto, data / "standby.signal"):
        _own(path, user)


def demote(lab_dir, site, upstream_site, timeout=60):
    """Clean shutdown of the site's primary, then restart as a standby streaming from ``upstream_site``.

    Returns the ``pg_controldata`` output taken right after the shutdown (the shutdown checkpoint: what CNPG puts in
    the demotion token). Idempotent: a server already streaming from that upstream is left alone. A server that
    crashed (not shut down cleanly) first completes crash recovery and is shut down cleanly.
    """
    entry, upstream = site_entry(lab_dir, site), site_entry(lab_dir, upstream_site)
    if is_running(entry):
        try:
            in_recovery = query(entry, "SELECT pg_is_in_recovery()", superuser=True, dbname="postgres")[0][0]
        except Exception:  # pylint: disable=broad-exception-caught
            in_recovery = False
        if in_recovery and _conninfo_port(entry) == upstream["port"]:
            return controldata_text(entry)
        stop(entry, timeout=timeout)
    text = controldata_text(entry)
    if cluster_state(text) not in CLEAN_STATES:
        start(lab_dir, site, timeout)
        stop(entry, timeout=timeout)
        text = controldata_text(entry)
    configure_standby(entry, upstream, site)
    start(lab_dir, site, timeout)
    with locked_state(lab_dir) as lab:
        lab.state["sites"][site]["postgres"]["upstream"] = upstream_site
    return text


def promote(lab_dir, site, timeout=60):
    """``pg_promote()`` the site's standby and wait until it accepts writes; no-op on a primary."""
    entry = site_entry(lab_dir, site)

    def in_recovery():
        return query(entry, "SELECT pg_is_in_recovery()", superuser=True, dbname="postgres")[0][0]

    if in_recovery():
        query(entry, f"SELECT pg_promote(true, {int(timeout)})", superuser=True, dbname="postgres")
        wait_until(lambda: not in_recovery(), timeout, f"{site} PostgreSQL to leave recovery after pg_promote")
    with locked_state(lab_dir) as lab:
        lab.state["sites"][site]["postgres"]["role"] = "primary"
        lab.state["sites"][site]["postgres"].pop("upstream", None)


def reclone(lab_dir, site, upstream_site, timeout=60):
    """Replace the site's data with a fresh ``pg_basebackup`` of ``upstream_site`` and run it as its standby (what
    CNPG requires for an old primary after a failover)."""
    entry, upstream = site_entry(lab_dir, site), site_entry(lab_dir, upstream_site)
    user = _server_user()
    query(upstream, "SELECT 1", superuser=True, dbname="postgres")  # unreachable: fail before wiping anything
    try:
        stop(entry, timeout=timeout)
    except LabError:
        stop(entry, mode="immediate", timeout=timeout)
    data = Path(entry["data_dir"])
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(mode=0o700)
    _own(data, user)
    _run(
        [
            bindir() / "pg_basebackup",
            "-h",
            upstream["host"],
            "-p",
            upstream["port"],
            "-U",
            upstream["superuser"],
            "-D",
            data,
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-password",
        ],
        user,
        env={"PGPASSWORD": upstream["superuser_password"]},
    )
    configure_standby(entry, upstream, site)
    start(lab_dir, site, timeout)
    with locked_state(lab_dir) as lab:
        lab.state["sites"][site]["postgres"]["upstream"] = upstream_site


def ensure_standby(lab_dir, site, upstream_site, timeout=60):
    """Keep the site's server when it already runs as a standby of ``upstream_site``, else re-clone it from there.
    Returns True when it re-cloned."""
    entry, upstream = site_entry(lab_dir, site), site_entry(lab_dir, upstream_site)
    if is_running(entry) and _conninfo_port(entry) == upstream["port"]:
        try:
            if query(entry, "SELECT pg_is_in_recovery()", superuser=True, dbname="postgres")[0][0]:
                return False
        except Exception:  # pylint: disable=broad-exception-caught
            pass
    reclone(lab_dir, site, upstream_site, timeout)
    return True
