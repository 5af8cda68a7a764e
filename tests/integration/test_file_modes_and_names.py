"""Issue 14 item 8 (parts): private file modes, a KMS checksum annotation that does not reveal the secrets, and site
names / prefixes validated before anything is changed and passed to the Redis backup CronJob's program as data.

Everything runs the real modules, roles and templates through ansible; the Redis backup reads the lab's real Redis.
Files are written with umask 000, the worst case: modes must not depend on the umask.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from pathlib import Path

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import backup_layout, redis_backup_job
from tests.ansible_run import run_module, run_play

REPO = Path(__file__).resolve().parents[2]
BAD_SITES = ["dc1;rm -rf /", "dc1/../x"]


def umask0():
    os.umask(0)


def adhoc(module, args):
    return run_module(module, args, timeout=300, preexec_fn=umask0).result()


def play(tmp_path, tasks, play_vars=None, vars_files=()):
    """Run one play on localhost; return [(task name, result)] in order and the recap."""
    # task vars win over vars_files (the role defaults loaded as a base)
    tasks = [dict(task, vars=dict(play_vars or {}, **task.get("vars", {}))) for task in tasks]
    run = run_play(
        tmp_path / "play.yml",
        tasks,
        play={"vars_files": [str(REPO / f) for f in vars_files]},
        timeout=300,
        preexec_fn=umask0,
    )
    return run.results(), run.stats()


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# -- file modes ----------------------------------------------------------------------------------------------------
def test_redis_backup_dest_is_private_whatever_the_umask(lab, tmp_path):
    redis = lab["sites"]["dc1"]["redis"]
    dest = tmp_path / "dump.rdb"
    manifest = tmp_path / "dump.rdb.manifest.json"
    manifest.write_text("{}")
    manifest.chmod(0o644)  # left by an earlier run: narrowed
    result = adhoc(
        "hanzo.kms.redis_rdb_backup",
        {
            "host": redis["host"],
            "port": redis["port"],
            "password": redis["password"],
            "tls": True,
            "tls_ca_cert": redis["ca_file"],
            "dest": str(dest),
        },
    )
    assert not result.get("failed"), result.get("msg")
    assert result["dest_manifest"] == str(manifest)
    assert dest.read_bytes()[:5] == b"REDIS"
    assert (mode(dest), mode(manifest)) == (0o600, 0o600)


def test_operation_report_files_are_private_by_default_and_mode_is_an_option(tmp_path):
    args = {
        "dir": str(tmp_path / "reports"),
        "name": "switchover-dc2-20261202T000000Z",
        "operation": "switchover",
        "update": {"target": "dc2"},
    }
    result = adhoc("hanzo.kms.operation_report", args)
    assert not result.get("failed"), result.get("msg")
    files = sorted((tmp_path / "reports").iterdir())
    assert [f.name for f in files] == [
        "switchover-dc2-20261202T000000Z.json",
        "switchover-dc2-20261202T000000Z.md",
        "switchover-latest.json",
        "switchover-latest.md",
    ]
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}

    shared = adhoc("hanzo.kms.operation_report", dict(args, mode="0640", step="preflight", result="ok"))
    assert not shared.get("failed"), shared.get("msg")
    assert {f.name: mode(f) for f in files} == {f.name: 0o640 for f in files}

    wrong = adhoc("hanzo.kms.operation_report", dict(args, mode="rw-r--r--"))
    assert wrong["failed"] is True and "mode must be an octal number" in wrong["msg"]


# -- the KMS Deployment's checksum/secret annotation --------------------------------------------------------------
SECRETS = {
    "ENCRYPTION_KEY": "0123456789abcdef0123456789abcdef",
    "AUTH_SECRET": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=",
    "DB_CONNECTION_URI": "postgresql://kms:db-password@kms-pg-dc1-rw.kms.svc:5432/kms",
    "REDIS_URL": "redis://default:redis-password@redis-master:6379",
    "SITE_URL": "https://kms.example.com",
}


def render_kms(tmp_path, secret_data):
    tasks = [
        {
            "name": "render",
            "ansible.builtin.set_fact": {
                "rendered": "{{ lookup('ansible.builtin.template', '"
                + str(REPO / "roles/kms/templates/kms.yml.j2")
                + "') | ansible.builtin.from_yaml }}",
                "data_json": "{{ kms_secret_data | to_json }}",
                "plain_sha256": "{{ kms_secret_data | to_json | hash('sha256') }}",
            },
        }
    ]
    results, dummy = play(
        tmp_path,
        tasks,
        {"kms_site": "dc1", "kms_active": True, "kms_secret_data": secret_data},
        vars_files=["roles/kms/defaults/main.yml"],
    )
    facts = results[0][1]["ansible_facts"]
    deployment = next(o for o in facts["rendered"] if o["kind"] == "Deployment")
    facts["deployment"] = deployment
    return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/secret"], facts


def test_kms_checksum_annotation_reveals_no_secret_and_still_rolls_the_pods(tmp_path):
    annotation, facts = render_kms(tmp_path, SECRETS)
    # not the plain SHA-256 of the secrets (which lets anyone who reads Deployments test guesses offline) ...
    assert annotation != facts["plain_sha256"]
    assert (
        annotation == hmac.new(SECRETS["AUTH_SECRET"].encode(), facts["data_json"].encode(), hashlib.sha256).hexdigest()
    )
    assert not any(value in json.dumps(facts["deployment"]) for value in ("db-password", SECRETS["ENCRYPTION_KEY"]))
    # ... stable while nothing changes (no needless roll), different whenever a secret changes (pods roll)
    assert render_kms(tmp_path, SECRETS)[0] == annotation
    for key, value in (
        ("ENCRYPTION_KEY", "fedcba9876543210fedcba9876543210"),
        ("DB_CONNECTION_URI", SECRETS["DB_CONNECTION_URI"].replace("db-password", "rotated")),
        ("REDIS_URL", SECRETS["REDIS_URL"].replace("redis-password", "rotated")),
    ):
        assert render_kms(tmp_path, dict(SECRETS, **{key: value}))[0] != annotation, key


# -- site names and prefixes ---------------------------------------------------------------------------------------
ROLE_CASES = {
    "redis": ({"redis_site": "{bad}"}, "Check the site name and backup prefix"),
    "redis_backup": (
        {"redis_backup_site": "{bad}", "redis_backup_host": "127.0.0.1", "redis_backup_bucket": "b"},
        "Check the site name and backup prefix",
    ),
    "site_status": ({"site_status_site": "{bad}"}, "Check the site name and backup prefix"),
    "kms": (
        {
            "kms_site": "{bad}",
            "kms_site_url": "https://kms.example.com",
            "kms_db_cluster_name": "kms-pg-dc1",
            "kms_ingress_enabled": False,
        },
        "Check the site name",
    ),
    "cnpg": (
        {"cnpg_site": "{bad}", "cnpg_sites": ["{bad}", "dc2"], "cnpg_primary_site": "dc2"},
        "Check the site names and object store path",
    ),
}


@pytest.mark.parametrize("bad", BAD_SITES)
@pytest.mark.parametrize("role", sorted(ROLE_CASES))
def test_roles_refuse_bad_site_names_before_changing_anything(tmp_path, role, bad):
    role_vars, check = ROLE_CASES[role]
    role_vars = json.loads(json.dumps(role_vars).replace("{bad}", bad.replace("\\", "\\\\")))
    results, recap = play(
        tmp_path, [{"name": "role", "ansible.builtin.include_role": {"name": f"hanzo.kms.{role}"}, "vars": role_vars}]
    )
    failed = [(name, result) for name, result in results if result.get("failed")]
    assert failed, f"{role} accepted the site name {bad!r}: {results}"
    name, result = failed[0]
    assert f": {check}" in name, (name, result.get("msg"))
    assert "Refusing" in result["msg"] and json.dumps(bad) in result["msg"] and "DNS label" in result["msg"]
    assert recap.get("changed", 0) == 0
    # the check is the first task that does anything: only asserts ran before it
    assert all(": Check" in n or ": Validating arguments" in n or n == "role" for n, dummy in results), [
        n for n, dummy in results
    ]


@pytest.mark.parametrize("prefix", ["redis/../../x", "redis;rm -rf /", "redis prefix"])
def test_redis_role_refuses_a_bad_prefix(tmp_path, prefix):
    results, recap = play(
        tmp_path,
        [
            {
                "name": "role",
                "ansible.builtin.include_role": {"name": "hanzo.kms.redis"},
                "vars": {"redis_site": "dc1", "redis_backup_prefix": prefix},
            }
        ],
    )
    name, result = [(n, r) for n, r in results if r.get("failed")][0]
    assert ": Check the site name and backup prefix" in name and json.dumps(prefix) in result["msg"]
    assert recap.get("changed", 0) == 0


@pytest.mark.parametrize("site", BAD_SITES)
def test_redis_backup_module_refuses_bad_names_before_contacting_anything(lab, site):
    s3 = lab["s3"]
    result = adhoc(
        "hanzo.kms.redis_rdb_backup",
        {
            "host": "127.0.0.1",
            "port": 1,
            "bucket": s3["bucket"],
            "prefix": "redis",
            "site": site,
            "endpoint_url": s3["endpoint_url"],
            "access_key": s3["access_key"],
            "secret_key": s3["secret_key"],
            "ca_bundle": s3["ca_file"],
        },
    )
    assert result["failed"] is True
    # port 1 would refuse the connection: the message shows the names were checked first
    assert f"invalid site name {site!r}" in result["msg"] and "DNS label" in result["msg"], result["msg"]


def cronjob_backup_env(tmp_path, site, prefix="redis"):
    """The backup container's env as the template renders it (without the role and its checks)."""
    tasks = [
        {
            "name": "render",
            "ansible.builtin.set_fact": {
                "rendered": "{{ lookup('ansible.builtin.template', '"
                + str(REPO / "roles/redis/templates/backup-cronjob.yml.j2")
                + "') | ansible.builtin.from_yaml }}"
            },
        }
    ]
    results, dummy = play(
        tmp_path,
        tasks,
        {"redis_site": site, "redis_backup_prefix": prefix, "redis_backup_bucket": "kms-backups"},
        vars_files=["roles/redis/defaults/main.yml"],
    )
    job = results[0][1]["ansible_facts"]["rendered"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    backup = next(c for c in job["containers"] if c["name"] == "backup")
    return {e["name"]: e["value"] for e in backup["env"] if "value" in e}


def test_cronjob_passes_names_as_data_and_the_job_refuses_a_bad_one(tmp_path):
    """Even a name that slipped past the role's checks reaches the Job as an environment value, never code (there is
    no shell script), and the Job's program refuses it before contacting anything."""
    site = 'dc1";touch /tmp/pwned;"'
    env = cronjob_backup_env(tmp_path, site)
    assert env["BACKUP_SITE"] == site and env["LOCK_OWNER"] == f"redis-backup/$(JOB_NAME)@{site}"
    with pytest.raises(redis_backup_job.SettingsError, match="BACKUP_SITE"):
        redis_backup_job.settings_from_env(env)


def test_cronjob_layout_settings_for_normal_names(tmp_path):
    env = cronjob_backup_env(tmp_path, "dc1", "backups/redis/")
    params = redis_backup_job.settings_from_env(env)
    assert (params["bucket"], params["prefix"], params["site"]) == ("kms-backups", "backups/redis/", "dc1")
    assert backup_layout.backup_keys(params["prefix"], params["site"], "20261202T000000Z")[0] == (
        "backups/redis/dc1/20261202T000000Z/dump.rdb"
    )
