# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Redis backup CronJob's program (redis_backup_job): its settings from the environment, its exit statuses and
lock handling, and the redis role's CronJob template, whose container runs it with exactly those settings.
The Job itself runs on the real cluster: tests/integration/test_cnpg_operator_real.py; the image:
tests/integration/test_lab_images.py."""

from __future__ import annotations

import socket
from pathlib import Path

import jinja2
import pytest
import yaml
from ansible.plugins.filter.core import to_bool, to_json

from ansible_collections.hanzo.kms.plugins.module_utils import redis_backup_job as job

REPO = Path(__file__).resolve().parents[4]
ROLE = REPO / "roles" / "redis"
MODULE = "ansible_collections.hanzo.kms.plugins.module_utils.redis_backup_job"


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def minimal(**changes):
    env = {"REDIS_HOST": "redis-master", "BACKUP_BUCKET": "kms-backups", "BACKUP_SITE": "dc1"}
    env.update(changes)
    return {k: v for k, v in env.items() if v is not None}


def test_settings_defaults():
    params = job.settings_from_env(minimal())
    assert params == {
        "host": "redis-master",
        "port": 6379,
        "username": None,
        "password": None,
        "tls": False,
        "tls_ca_cert": None,
        "bucket": "kms-backups",
        "prefix": "",
        "site": "dc1",
        "timeout": 3600.0,
        "endpoint_url": None,
        "region": "us-east-1",
        "access_key": None,
        "secret_key": None,
        "session_token": None,
        "ca_bundle": None,
        "addressing_style": "auto",
        "lock_script": None,
    }


def test_settings_every_variable(tmp_path):
    redis_ca, s3_ca = tmp_path / "redis-ca.crt", tmp_path / "s3-ca.crt"
    redis_ca.write_text("x")
    s3_ca.write_text("y")
    params = job.settings_from_env(
        minimal(
            REDIS_PORT="6380",
            REDIS_USERNAME="backup",
            REDIS_PASSWORD="pw",
            REDIS_TLS="True",
            REDIS_TLS_CA_CERT=str(redis_ca),
            BACKUP_PREFIX="backups/redis",
            BACKUP_TIMEOUT="90.5",
            AWS_ENDPOINT_URL="https://s3.example.net",
            AWS_REGION="eu-west-1",
            AWS_ACCESS_KEY_ID="ak",
            AWS_SECRET_ACCESS_KEY="sk",
            AWS_SESSION_TOKEN="tok",
            AWS_CA_BUNDLE=str(s3_ca),
            S3_ADDRESSING_STYLE="path",
            LOCK_SCRIPT="/lock-script/operation-lock.sh",
        )
    )
    assert params == {
        "host": "redis-master",
        "port": 6380,
        "username": "backup",
        "password": "pw",
        "tls": True,
        "tls_ca_cert": str(redis_ca),
        "bucket": "kms-backups",
        "prefix": "backups/redis",
        "site": "dc1",
        "timeout": 90.5,
        "endpoint_url": "https://s3.example.net",
        "region": "eu-west-1",
        "access_key": "ak",
        "secret_key": "sk",
        "session_token": "tok",
        "ca_bundle": str(s3_ca),
        "addressing_style": "path",
        "lock_script": "/lock-script/operation-lock.sh",
    }
    # AWS_DEFAULT_REGION (the object store Secret's) before AWS_REGION; blank values are unset
    assert job.settings_from_env(minimal(AWS_DEFAULT_REGION="r1", AWS_REGION="r2"))["region"] == "r1"
    assert job.settings_from_env(minimal(REDIS_PASSWORD="  ", REDIS_TLS=""))["password"] is None


@pytest.mark.parametrize(
    "changes,problem",
    [
        ({"REDIS_HOST": None}, r"REDIS_HOST is required \(Redis host"),
        ({"BACKUP_BUCKET": ""}, "BACKUP_BUCKET is required"),
        ({"BACKUP_SITE": None}, "BACKUP_SITE is required"),
        ({"BACKUP_SITE": "DC_1"}, "BACKUP_SITE 'DC_1'.* DNS label"),
        ({"BACKUP_PREFIX": "redis/../x"}, "BACKUP_PREFIX"),
        ({"BACKUP_PREFIX": "a;rm -rf"}, "BACKUP_PREFIX"),
        ({"REDIS_PORT": "0"}, "REDIS_PORT must be a number 1-65535, got '0'"),
        ({"REDIS_PORT": "65536"}, "REDIS_PORT must be a number 1-65535"),
        ({"REDIS_PORT": "63.5"}, "REDIS_PORT must be a number"),
        ({"BACKUP_TIMEOUT": "0"}, "BACKUP_TIMEOUT must be a number greater than"),
        ({"BACKUP_TIMEOUT": "nan"}, "BACKUP_TIMEOUT must be a number"),
        ({"BACKUP_TIMEOUT": "soon"}, "BACKUP_TIMEOUT must be a number"),
        ({"REDIS_TLS": "maybe"}, "REDIS_TLS must be true or false, got 'maybe'"),
        ({"S3_ADDRESSING_STYLE": "dns"}, "S3_ADDRESSING_STYLE must be one of auto, path, virtual"),
        (
            {"REDIS_TLS_CA_CERT": "/nonexistent/ca.crt"},
            "REDIS_TLS_CA_CERT names /nonexistent/ca.crt, which is not a file",
        ),
        ({"AWS_CA_BUNDLE": "/nonexistent/s3.crt"}, "AWS_CA_BUNDLE names /nonexistent/s3.crt"),
    ],
)
def test_settings_refuse_naming_the_variable(changes, problem):
    with pytest.raises(job.SettingsError, match=problem):
        job.settings_from_env(minimal(**changes))


def lock_script(tmp_path, check_status=0):
    """A stand-in for operation-lock.sh that records its calls (the real script needs a cluster's Lease)."""
    calls = tmp_path / "calls"
    script = tmp_path / "lock.sh"
    script.write_text(f'#!/bin/sh\necho "$1" >> {calls}\n[ "$1" != check ] || exit {check_status}\n')
    script.chmod(0o755)
    return str(script), calls


def test_bad_settings_exit_2_before_anything_is_contacted(tmp_path, capsys):
    script, calls = lock_script(tmp_path)
    assert job.main(minimal(REDIS_PORT="x", LOCK_SCRIPT=script)) == 2
    out = capsys.readouterr()
    assert out.out == "" and "invalid settings, nothing was contacted: REDIS_PORT must be a number" in out.err
    assert not calls.exists()


def test_a_failed_backup_exits_1_with_the_reason_and_releases_the_lock(tmp_path, capsys):
    script, calls = lock_script(tmp_path)
    # a real S3 endpoint that refuses connections: the bucket check fails before Redis is asked for anything
    env = minimal(
        REDIS_PORT=str(closed_port()),
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{closed_port()}",
        AWS_ACCESS_KEY_ID="ak",
        AWS_SECRET_ACCESS_KEY="sk",
        LOCK_SCRIPT=script,
    )
    assert job.main(env) == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err.startswith("redis backup failed: ") and "cannot reach the S3 endpoint" in out.err
    assert calls.read_text().split() == ["release"]  # never checked: no manifest was about to be written


# ---------------------------------------------------------------------------------------------------------------
# The role's CronJob runs this program with these settings


def render_cronjob(**overrides):
    variables = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text(encoding="utf-8"))
    variables.update(
        redis_site="dc1", redis_namespace="kms", redis_backup_collection_image="registry.example.net/kms-ee:1"
    )
    variables.update(overrides)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, loader=jinja2.FileSystemLoader(ROLE / "templates"))
    env.filters.update(to_json=to_json, bool=to_bool)
    return yaml.safe_load(env.get_template("backup-cronjob.yml.j2").render(**variables))


def pod_spec(cronjob):
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def env_values(container):
    """{name: value} of a container's env, a stand-in ``from:<source>`` for a value from a Secret or a field."""
    return {item["name"]: item.get("value", f"from:{item.get('valueFrom')}") for item in container["env"]}


def container_environ(container, tmp_path):
    """The environment the container gets: its env, and the object store Secret's keys (roles/object_storage)
    through envFrom; mounted files named by a variable exist (as tmp files)."""
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    environ = {
        "AWS_ACCESS_KEY_ID": "ak",
        "AWS_SECRET_ACCESS_KEY": "sk",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "https://s3.example.net",
    }
    files = {}
    for name, value in env_values(container).items():
        if value.startswith("/etc/hanzo-kms/"):
            assert any(value.startswith(f"{mount}/") for mount in mounts), f"{name}: {value} is not mounted"
            files[value] = tmp_path / value.replace("/", "_")
            files[value].write_text("pem")
            value = str(files[value])
        environ[name] = value
    return environ, files


def test_cronjob_runs_the_backup_job_with_its_settings(tmp_path):
    cronjob = render_cronjob(
        redis_tls_enabled=True,
        redis_backup_s3_ca_secret_name="kms-s3-ca",
        redis_backup_prefix="backups/redis",
        redis_backup_s3_addressing_style="path",
    )
    spec = pod_spec(cronjob)
    [backup] = spec["containers"]
    assert [c["name"] for c in spec["initContainers"]] == ["take-lock"]
    assert backup["image"] == "registry.example.net/kms-ee:1"
    assert backup["command"] == ["/usr/bin/python3.11", "-m", MODULE] and job.__name__ == MODULE
    assert "args" not in backup and [e["secretRef"]["name"] for e in backup["envFrom"]] == ["kms-object-store"]
    environ, files = container_environ(backup, tmp_path)
    assert environ["PYTHONPATH"] == "/usr/share/ansible/collections"
    # every variable the container gets is one the program reads, the lock's, or the interpreter's
    assert set(environ) - set(job.ENVIRONMENT) == {"PYTHONPATH", "JOB_NAME", "LOCK_NAMESPACE", "LOCK_OWNER", "KUBECTL"}
    params = job.settings_from_env(environ)
    assert params == {
        "host": "redis-master",
        "port": 6379,
        "username": None,
        "password": "from:{'secretKeyRef': {'name': 'redis-auth', 'key': 'redis-password'}}",
        "tls": True,
        "tls_ca_cert": str(files["/etc/hanzo-kms/redis-ca/ca.crt"]),
        "bucket": "kms-backups",
        "prefix": "backups/redis",
        "site": "dc1",
        "timeout": 3600.0,
        "endpoint_url": "https://s3.example.net",
        "region": "eu-west-1",
        "access_key": "ak",
        "secret_key": "sk",
        "session_token": None,
        "ca_bundle": str(files["/etc/hanzo-kms/s3-ca/ca.crt"]),
        "addressing_style": "path",
        "lock_script": "/lock-script/operation-lock.sh",
    }
    # the lock: the script the take-lock container ran, with the same owner, and the kubectl it copied
    [take_lock] = spec["initContainers"]
    lock_env = env_values(take_lock)
    assert {name: environ[name] for name in lock_env} == lock_env
    assert "/lock/kubectl" in take_lock["args"][0] and "/lock-script/operation-lock.sh acquire" in take_lock["args"][0]
    assert {m["mountPath"] for m in backup["volumeMounts"]} >= {"/lock", "/lock-script"}


def test_cronjob_security_context_and_no_volume_of_redis():
    spec = pod_spec(render_cronjob())
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1001, "fsGroup": 1001}
    assert spec["restartPolicy"] == "Never"
    assert all(set(volume) & {"emptyDir", "configMap", "secret"} for volume in spec["volumes"])
    assert [v["name"] for v in spec["volumes"]] == ["lock", "lock-script"]  # no TLS, no S3 CA: nothing else
    [backup] = spec["containers"]
    environ = {e["name"]: e.get("value") for e in backup["env"]}
    assert environ["REDIS_TLS"] == "false" and "REDIS_TLS_CA_CERT" not in environ and "AWS_CA_BUNDLE" not in environ


def test_role_defaults_name_the_collection_image():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text(encoding="utf-8"))
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))
    options = specs["argument_specs"]["main"]["options"]
    for name in (
        "redis_backup_collection_image",
        "redis_backup_collection_python",
        "redis_backup_collection_path",
        "redis_backup_s3_addressing_style",
    ):
        assert options[name]["default"] == defaults[name]
    assert not {"redis_backup_image", "redis_backup_uploader_image"} & (set(defaults) | set(options))
