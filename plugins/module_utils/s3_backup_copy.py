# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Copy a site's newest complete Redis backup from one object store to another (one store per data center): what
``hanzo.kms.s3_backup_copy`` runs, so every store holds every site's newest Redis backup and a failover restores from
the store of the data center that survived.

The copy keeps the layout (``<prefix>/<site>/<UTC timestamp>/dump.rdb`` + ``manifest.json``) and its rule: the RDB is
streamed first, its size checked against the manifest, and the manifest written last, so an interrupted copy is an
incomplete backup that restores never pick and retention removes. Plain Python (boto3 clients passed in).
"""

from __future__ import annotations

from ansible_collections.hanzo.kms.plugins.module_utils import backup_layout
from ansible_collections.hanzo.kms.plugins.module_utils.s3 import S3Error, endpoint_of, wrap_errors
from ansible_collections.hanzo.kms.plugins.module_utils.s3_backup_info import complete_backups


class CopyError(ValueError):
    """The source's backup cannot be copied as it is (a manifest that does not describe its RDB)."""


def plan(source_backups, destination_backups):
    """The backup to copy: the source's newest complete one unless the destination has it complete. Both lists as
    ``complete_backups`` returns them (newest first). Returns (newest or None, whether to copy)."""
    if not source_backups:
        return None, False
    newest = source_backups[0]
    return newest, newest["name"] not in {b["name"] for b in destination_backups}


def _check_manifest(data, rdb_size, where):
    try:
        manifest = backup_layout.parse_manifest(data)
    except backup_layout.InvalidManifest as exc:
        raise CopyError(f"{where}: {exc}; not copied") from None
    if manifest.get("size") != rdb_size:
        raise CopyError(f"{where} gives size {manifest.get('size')}, the RDB has {rdb_size} bytes; not copied")
    return manifest


def copy_newest(source, source_bucket, destination, destination_bucket, prefix, site, check_mode=False):
    """Copy ``site``'s newest complete backup from (``source`` client, bucket) to (``destination``, bucket) unless
    the destination has it. Returns ``changed``, ``backup`` (its name, None without one), ``rdb_key``, ``size`` and
    ``reason`` (why nothing was copied, None when copied)."""
    newest, needed = plan(
        complete_backups(source, source_bucket, prefix, site),
        complete_backups(destination, destination_bucket, prefix, site),
    )
    result = {"changed": False, "backup": None, "rdb_key": None, "size": None, "reason": None}
    if newest is None:
        result["reason"] = f"no complete backup of {site} in the source s3://{source_bucket}"
        return result
    result.update(backup=newest["name"], rdb_key=newest["rdb_key"])
    if not needed:
        result["reason"] = "the destination has it"
        return result
    rdb_key, manifest_key = newest["rdb_key"], newest["manifest_key"]
    src_where, dst_where = endpoint_of(source), endpoint_of(destination)
    with wrap_errors("read the manifest", bucket=source_bucket, endpoint_url=src_where):
        manifest_data = source.get_object(Bucket=source_bucket, Key=manifest_key)["Body"].read()
        rdb_size = source.head_object(Bucket=source_bucket, Key=rdb_key)["ContentLength"]
    _check_manifest(manifest_data, rdb_size, f"s3://{source_bucket}/{manifest_key}")
    result.update(changed=True, size=rdb_size)
    if check_mode:
        return result
    with wrap_errors("copy the RDB", bucket=destination_bucket, endpoint_url=dst_where):
        body = source.get_object(Bucket=source_bucket, Key=rdb_key)["Body"]
        destination.upload_fileobj(body, destination_bucket, rdb_key)
        copied = destination.head_object(Bucket=destination_bucket, Key=rdb_key)["ContentLength"]
    if copied != rdb_size:
        raise S3Error(
            f"s3://{destination_bucket}/{rdb_key} has {copied} bytes after the copy, the source {rdb_size}: "
            "the manifest is not written, the copy stays incomplete"
        )
    with wrap_errors("write the manifest", bucket=destination_bucket, endpoint_url=dst_where):
        destination.put_object(
            Bucket=destination_bucket, Key=manifest_key, Body=manifest_data, ContentType="application/json"
        )
    return result
