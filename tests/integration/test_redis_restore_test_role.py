"""The role hanzo.kms.redis_restore_test on its own, against the lab's S3 server (SeaweedFS) and real Redis servers.

A fresh bucket holds a real backup (redis_backup's code) of a lab Redis with known keys. The role restores it into a
local scratch Redis and reports matching counts; a scratch Redis a killed run left in the same temporary directory is
stopped first. A backup that fails the restore is recorded as a failed test, and still no scratch redis-server runs
and no scratch directory remains. An external scratch Redis that is a site's is refused before anything is done.
playbooks/restore_test.yml through the role: tests/integration/test_cnpg_operator_real.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

# pylint: disable=redefined-outer-name
from ansible_collections.hanzo.kms.plugins.module_utils import scratch_redis
from ansible_collections.hanzo.kms.plugins.module_utils.processes import pid_alive
from tests.ansible_run import run_play
from tests.integration.test_s3_backup_info import put_backup, take_backup, utcnow
from tests.integration.test_s3_retention import bucket, client, conn  # noqa: F401  pylint: disable=unused-import
from tests.lab import redis as lab_redis
from tests.lab.core import free_port

SEEDED = {f"role:key:{i}": str(i) for i in range(40)}


@pytest.fixture(scope="module")
def redis_entry(lab_handle):
    entry = lab_redis.up(lab_handle, f"restore-role-{uuid.uuid4().hex[:6]}")
    lab_redis.client(entry).mset(SEEDED)
    return entry


def run_command(argv):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def scratch_processes(tmp_dir):
    """Pids of the processes working in ``tmp_dir`` or below (a scratch redis-server works in its directory)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if (cwd == str(tmp_dir) or cwd.startswith(f"{tmp_dir}/")) and pid_alive(int(pid)):
            found.append(int(pid))
    return found


def run_role(tmp_path, conn, bucket_name, site, **settings):
    role_vars = {
        "redis_restore_test_site": site,
        "redis_restore_test_bucket": bucket_name,
        "redis_restore_test_server": shutil.which("redis-server"),
        "redis_restore_test_tmpdir": str(tmp_path / "scratch"),
        "redis_restore_test_s3_endpoint_url": conn["endpoint_url"],
        "redis_restore_test_s3_region": conn["region"],
        "redis_restore_test_s3_access_key": conn["access_key"],
        "redis_restore_test_s3_secret_key": conn["secret_key"],
        "redis_restore_test_s3_ca_bundle": conn["ca_bundle"],
        **{f"redis_restore_test_{name}": value for name, value in settings.items()},
    }
    tasks = [
        {"name": "Run the role", "ansible.builtin.include_role": {"name": "hanzo.kms.redis_restore_test"}},
        {"name": "Show the result", "ansible.builtin.debug": {"var": "redis_restore_test_result"}},
    ]
    return run_play(tmp_path / "play.json", tasks, play={"vars": role_vars}, timeout=600)


def role_result(run):
    shown = [result for name, result in run.results() if name == "Show the result"]
    assert shown, run.tail()
    return shown[0]["redis_restore_test_result"]


def test_the_role_restores_into_a_scratch_redis_after_stopping_a_leftover(tmp_path, conn, bucket, redis_entry):
    taken = take_backup(conn, bucket, redis_entry, "dc1")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    # what a run killed between start and cleanup leaves: a running scratch Redis and its directory
    leftover = scratch_redis.start(shutil.which("redis-server"), "left-behind", tmpdir=str(scratch), run=run_command)
    assert scratch_processes(scratch) == [leftover["pid"]]
    run = run_role(tmp_path, conn, bucket, "dc1")
    assert run.returncode == 0, run.tail()
    result = role_result(run)
    assert result["ok"] is True and result["tested"] is True, result
    assert result["backup"] == taken["key"].rsplit("/", 1)[0] + "/"
    assert result["counts_from"] == "manifest" and result["message"] == "key counts match the manifest"
    assert [(row["db"], row["manifest"], row["restored"], row["match"]) for row in result["counts"]] == [
        ("0", len(SEEDED), len(SEEDED), True)
    ]
    assert result["target"].startswith("local 127.0.0.1:") and "left-behind" not in run.stdout
    # the leftover was stopped first, and the run's own scratch Redis afterwards
    assert not pid_alive(leftover["pid"])
    assert scratch_processes(scratch) == [] and os.listdir(scratch) == []


def test_a_failed_restore_is_recorded_and_leaves_no_scratch_redis(tmp_path, conn, client, bucket):
    # complete (the manifest has the object's size and SHA-256), but its dump.rdb is not an RDB
    put_backup(client, bucket, "dc2", utcnow(), rdb=b"NOT AN RDB" * 10)
    run = run_role(tmp_path, conn, bucket, "dc2")
    assert run.returncode == 0, run.tail()
    result = role_result(run)
    assert result["ok"] is False and result["tested"] is True and result["backup"].startswith("redis/dc2/"), result
    assert "RDB" in result["message"], result
    assert result["target"].startswith("local 127.0.0.1:"), result  # it failed after the scratch Redis started
    assert [name.rsplit(" : ", 1)[-1] for name, task in run.results() if task.get("changed")] == [
        "Start the scratch Redis",
        "Stop the scratch Redis and remove its directory",
    ]
    scratch = tmp_path / "scratch"
    assert scratch_processes(scratch) == [] and os.listdir(scratch) == []


def test_a_site_redis_as_external_scratch_redis_is_refused_before_anything_is_done(tmp_path, conn, bucket, redis_entry):
    before = lab_redis.client(redis_entry).dbsize()
    live = f"{redis_entry['host']}:{redis_entry['port']}"
    run = run_role(
        tmp_path,
        conn,
        bucket,
        "dc1",
        mode="external",
        host=redis_entry["host"],
        port=redis_entry["port"],
        password=redis_entry["password"],
        refused=[live, f"127.0.0.1:{free_port()}"],
    )
    assert run.returncode != 0
    failed = [task for name, task in run.results() if task.get("failed")]
    assert len(failed) == 1 and "not a site's" in failed[0]["msg"] and live in failed[0]["msg"], run.tail()
    assert lab_redis.client(redis_entry).dbsize() == before
