# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Redis backup CronJob's program: ``hanzo.kms.redis_rdb_backup``'s ``run_backup`` with settings from the
environment, so the Job and the playbooks write the same backups (key layout, manifest, RDB verification).

    python3 -m ansible_collections.hanzo.kms.plugins.module_utils.redis_backup_job

The role's template (roles/redis/templates/backup-cronjob.yml.j2) sets the environment; ``ENVIRONMENT`` lists it.
Prints the result as one JSON line; on failure a message on stderr and exit status 1 (2 for bad settings, before
anything is contacted). With ``LOCK_SCRIPT`` (the operation lock's script, which an init container ran with
``acquire``) the lock is checked before the manifest marks the backup complete and released at the end.
Plain Python: needs redis-py and boto3 (and anycrc for a fast CRC64), not Ansible.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from ansible_collections.hanzo.kms.plugins.module_utils import names
from ansible_collections.hanzo.kms.plugins.module_utils.redis_backup import RedisError, run_backup
from ansible_collections.hanzo.kms.plugins.module_utils.redis_rdb import RdbError
from ansible_collections.hanzo.kms.plugins.module_utils.s3 import S3_ARGUMENT_SPEC, S3Error, s3_client

# variable -> what it sets; the S3 ones are what the object store Secret (roles/object_storage) holds
ENVIRONMENT = {
    "REDIS_HOST": "Redis host (required)",
    "REDIS_PORT": "Redis port (default 6379)",
    "REDIS_USERNAME": "ACL user (default: none, AUTH with the password alone)",
    "REDIS_PASSWORD": "password (from the redis role's auth Secret)",
    "REDIS_TLS": "true: connect with TLS (default false)",
    "REDIS_TLS_CA_CERT": "file with the CA that signed the Redis certificate (default: the system trust store)",
    "BACKUP_BUCKET": "S3 bucket (required)",
    "BACKUP_PREFIX": "key prefix (default none)",
    "BACKUP_SITE": "site name, the key component after the prefix (required)",
    "BACKUP_TIMEOUT": "seconds the whole transfer may take (default 3600)",
    "AWS_ENDPOINT_URL": "S3 endpoint (default AWS)",
    "AWS_DEFAULT_REGION": "S3 region (or AWS_REGION; default us-east-1)",
    "AWS_ACCESS_KEY_ID": "S3 access key",
    "AWS_SECRET_ACCESS_KEY": "S3 secret key",
    "AWS_SESSION_TOKEN": "S3 session token",
    "AWS_CA_BUNDLE": "file with the S3 endpoint's CA (default: the system trust store)",
    "S3_ADDRESSING_STYLE": "auto, path or virtual (default auto)",
    "LOCK_SCRIPT": "the operation lock script (operation-lock.sh): check before the manifest, release at the end",
}
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


class SettingsError(ValueError):
    """A missing or invalid variable; the message names it."""


class LockLost(RuntimeError):
    """The operation lock is no longer this Job's: the backup is not marked complete."""


def _text(environ, name, default=None):
    value = environ.get(name, "").strip()
    return value or default


def _required(environ, name):
    value = _text(environ, name)
    if value is None:
        raise SettingsError(f"{name} is required ({ENVIRONMENT[name]})")
    return value


def _number(environ, name, default, kind, low, high=None):
    text = _text(environ, name)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or math.isnan(value) or value < low or (high is not None and value > high):
        bounds = f"{low}-{high}" if high is not None else f"greater than {low}"
        raise SettingsError(f"{name} must be a number {bounds}, got {text!r}")
    return value


def _flag(environ, name):
    text = (_text(environ, name) or "false").lower()
    if text not in TRUE_WORDS + FALSE_WORDS:
        raise SettingsError(f"{name} must be true or false, got {text!r}")
    return text in TRUE_WORDS


def _file(environ, name):
    path = _text(environ, name)
    if path is not None and not os.path.isfile(path):
        raise SettingsError(f"{name} names {path}, which is not a file")
    return path


def settings_from_env(environ):
    """``run_backup``'s params (with the S3 connection options of ``s3_client``) from ``environ``; raises
    ``SettingsError`` naming the first bad variable."""
    site = _required(environ, "BACKUP_SITE")
    prefix = _text(environ, "BACKUP_PREFIX", "")
    try:
        names.check_site(site, "BACKUP_SITE")
        names.check_prefix(prefix, "BACKUP_PREFIX")
    except names.InvalidName as exc:
        raise SettingsError(str(exc)) from exc
    style = _text(environ, "S3_ADDRESSING_STYLE", "auto")
    if style not in S3_ARGUMENT_SPEC["addressing_style"]["choices"]:
        raise SettingsError(f"S3_ADDRESSING_STYLE must be one of auto, path, virtual, got {style!r}")
    return {
        "host": _required(environ, "REDIS_HOST"),
        "port": _number(environ, "REDIS_PORT", 6379, int, 1, 65535),
        "username": _text(environ, "REDIS_USERNAME"),
        "password": _text(environ, "REDIS_PASSWORD"),
        "tls": _flag(environ, "REDIS_TLS"),
        "tls_ca_cert": _file(environ, "REDIS_TLS_CA_CERT"),
        "bucket": _required(environ, "BACKUP_BUCKET"),
        "prefix": prefix,
        "site": site,
        "timeout": _number(environ, "BACKUP_TIMEOUT", 3600.0, float, 0.001),
        "endpoint_url": _text(environ, "AWS_ENDPOINT_URL"),
        "region": _text(environ, "AWS_DEFAULT_REGION") or _text(environ, "AWS_REGION", "us-east-1"),
        "access_key": _text(environ, "AWS_ACCESS_KEY_ID"),
        "secret_key": _text(environ, "AWS_SECRET_ACCESS_KEY"),
        "session_token": _text(environ, "AWS_SESSION_TOKEN"),
        "ca_bundle": _file(environ, "AWS_CA_BUNDLE"),
        "addressing_style": style,
        "lock_script": _text(environ, "LOCK_SCRIPT"),
    }


def lock_step(script, step):
    """Run ``<script> check|release``; True when it exited 0. Its messages go to stderr: stdout is the result's."""
    proc = subprocess.run([script, step], capture_output=True, text=True, check=False)
    sys.stderr.write(proc.stdout + proc.stderr)
    return proc.returncode == 0


def main(environ=None):
    """Run one backup; the exit status."""
    try:
        params = settings_from_env(os.environ if environ is None else environ)
    except SettingsError as exc:
        sys.stderr.write(f"redis backup: invalid settings, nothing was contacted: {exc}\n")
        return 2
    script = params.pop("lock_script")

    def lock_still_ours():
        if not lock_step(script, "check"):
            raise LockLost(
                "the operation lock is no longer held by this Job (released or broken): the RDB was "
                "uploaded, but no manifest was written, so the backup stays incomplete"
            )

    try:
        result = run_backup(
            params, s3_client_factory=lambda: s3_client(params), before_manifest=lock_still_ours if script else None
        )
    except (RedisError, RdbError, S3Error, LockLost, OSError) as exc:
        sys.stderr.write(f"redis backup failed: {exc}\n")
        return 1
    finally:
        if script:
            lock_step(script, "release")
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
