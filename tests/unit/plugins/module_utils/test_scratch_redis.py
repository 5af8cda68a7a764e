"""The restore test's scratch Redis (module_utils/scratch_redis.py) with a real redis-server: started on a free port
with its password, stopped and removed, leftovers of an interrupted run found and stopped, and never a process that
is not the scratch Redis, whatever its pid file says."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import redis_client, scratch_redis
from ansible_collections.hanzo.kms.plugins.module_utils.processes import pid_alive

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed (make setup installs it)")
PASSWORD = "scratch-password-0123456789"


def run(argv):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def listening(port):
    with socket.socket() as sock:
        return sock.connect_ex((scratch_redis.HOST, port)) == 0


@pytest.fixture
def started(tmp_path):
    servers = []

    def start(**options):
        server = scratch_redis.start(REDIS_SERVER, PASSWORD, tmpdir=str(tmp_path), run=run, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        scratch_redis.stop(server["path"])


def test_a_started_scratch_redis_answers_only_with_its_password_and_stops_without_a_trace(tmp_path, started):
    server = started()
    assert os.path.dirname(server["path"]) == str(tmp_path)
    assert os.path.basename(server["path"]).startswith(scratch_redis.DIR_PREFIX)
    assert os.stat(server["path"]).st_mode & 0o777 == 0o700
    client = redis_client.connect({"host": server["host"], "port": server["port"], "password": PASSWORD})
    try:
        assert redis_client.config_get(client, "save") == ""
        assert redis_client.config_get(client, "bind") == "127.0.0.1"
    finally:
        client.close()
    with pytest.raises(redis_client.RedisError, match="rejected the credentials"):
        redis_client.connect({"host": server["host"], "port": server["port"], "password": "wrong"})
    assert scratch_redis.stop(server["path"]) == {"pid": server["pid"], "removed": True}
    assert not os.path.exists(server["path"]) and not listening(server["port"])
    assert not pid_alive(server["pid"])
    # stopping again is a no-op
    assert scratch_redis.stop(server["path"]) == {"pid": None, "removed": False}


def test_the_leftovers_of_an_interrupted_run_are_found_and_stopped(tmp_path, started):
    first, second = started(), started()
    other = tmp_path / "other-dir"
    other.mkdir()
    (tmp_path / f"{scratch_redis.DIR_PREFIX}no-config").mkdir()  # not a scratch Redis directory: no redis.conf
    assert scratch_redis.leftovers(str(tmp_path)) == sorted([first["path"], second["path"]])
    stopped = scratch_redis.stop_leftovers(str(tmp_path))
    assert sorted((entry["path"], entry["pid"]) for entry in stopped) == sorted(
        [(first["path"], first["pid"]), (second["path"], second["pid"])]
    )
    assert not listening(first["port"]) and not listening(second["port"])
    assert sorted(os.listdir(tmp_path)) == sorted(["other-dir", f"{scratch_redis.DIR_PREFIX}no-config"])
    assert scratch_redis.leftovers(str(tmp_path / "missing")) == []


def test_a_pid_file_naming_another_process_is_not_acted_on(tmp_path):
    path = tmp_path / f"{scratch_redis.DIR_PREFIX}stale"
    path.mkdir()
    (path / scratch_redis.CONFIG_NAME).write_text("port 1\n", encoding="utf-8")
    with subprocess.Popen(["sleep", "60"], cwd=tmp_path) as bystander:  # works elsewhere: not the scratch Redis
        try:
            (path / scratch_redis.PID_NAME).write_text(f"{bystander.pid}\n", encoding="ascii")
            assert scratch_redis.server_pid(str(path)) is None
            assert scratch_redis.stop(str(path)) == {"pid": None, "removed": True}
            assert bystander.poll() is None and not path.exists()
        finally:
            bystander.kill()


def test_a_fixed_port_in_use_is_refused_before_anything_is_created(tmp_path):
    with socket.socket() as busy:
        busy.bind((scratch_redis.HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(scratch_redis.ScratchRedisError, match=f"port {port} on 127.0.0.1 is in use"):
            scratch_redis.start(REDIS_SERVER, PASSWORD, port=port, tmpdir=str(tmp_path), run=run)
    assert os.listdir(tmp_path) == []


def test_a_fixed_free_port_is_used(started):
    port = scratch_redis.free_port()
    assert started(port=port)["port"] == port and listening(port)


def test_a_missing_tmpdir_is_created(tmp_path):
    server = scratch_redis.start(REDIS_SERVER, PASSWORD, tmpdir=str(tmp_path / "new" / "tmp"), run=run)
    try:
        assert os.path.dirname(server["path"]) == str(tmp_path / "new" / "tmp") and listening(server["port"])
    finally:
        scratch_redis.stop(server["path"])


@pytest.mark.parametrize(
    "server, message",
    [
        ("false", r"false .*redis\.conf exited with 1"),  # the server refuses to start
        ("true", r"did not answer within 0\.5 s"),  # it exits 0 and nothing listens
    ],
)
def test_a_server_that_does_not_start_leaves_no_directory(tmp_path, server, message):
    with pytest.raises(scratch_redis.ScratchRedisError, match=message):
        scratch_redis.start(shutil.which(server), PASSWORD, tmpdir=str(tmp_path), timeout=0.5, run=run)
    assert os.listdir(tmp_path) == []


def test_a_password_is_required(tmp_path):
    with pytest.raises(scratch_redis.ScratchRedisError, match="needs a password"):
        scratch_redis.start(REDIS_SERVER, "", tmpdir=str(tmp_path), run=run)
