# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only listing of the Redis backups in a bucket (``hanzo.kms.s3_backup_info``), plain Python.

The layout, the manifest and "is this a complete backup" are ``backup_layout``'s; this file only groups a listing
into backups, reads their manifests and describes them: per backup its prefix, time, completeness (and why not), age,
size and manifest; per site the newest complete backup.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ansible_collections.hanzo.kms.plugins.module_utils import backup_layout, names
from ansible_collections.hanzo.kms.plugins.module_utils.s3 import S3Error, endpoint_of, wrap_errors
from ansible_collections.hanzo.kms.plugins.module_utils.s3_retention import list_objects
from ansible_collections.hanzo.kms.plugins.module_utils.times import age_seconds, format_time, utcnow

DEFAULT_CONCURRENCY = 8


class BackupInfoError(ValueError):
    """Bad options, found before any request; the message names the option and what is allowed."""


def check_options(prefix, sites, concurrency):
    """The prefix without surrounding "/" after checking the options; BackupInfoError naming the first bad one."""
    prefix = (prefix or "").strip("/")
    try:
        names.check_prefix(prefix, "prefix")
        for site in sites or ():
            names.check_site(site, "site in sites")
    except names.InvalidName as exc:
        raise BackupInfoError(str(exc)) from None
    if concurrency < 1:
        raise BackupInfoError(f"concurrency must be at least 1, got {concurrency}")
    return prefix


def group_objects(objects, prefix):
    """({(site, timestamp name): {key: (size, last_modified)}}, sorted keys outside the layout) of listed objects,
    each ``(key, size, last_modified)``, under ``prefix``."""
    directories, unrecognised = {}, []
    for key, size, last_modified in objects:
        try:
            parsed = backup_layout.parse_key(key, prefix)
        except backup_layout.InvalidKey:
            unrecognised.append(key)
            continue
        name = backup_layout.timestamp_name(parsed.timestamp)
        directories.setdefault((parsed.site, name), {})[key] = (size, last_modified)
    return directories, sorted(unrecognised)


def describe_backup(prefix, site, name, objects, now, manifest=None):
    """One backup directory as the module returns it.

    ``objects``: {key: (size, last_modified)} of the directory. ``manifest``: the manifest object's bytes when they
    were read, or None (then completeness is what the listing shows). A complete backup's ``manifest`` is the parsed
    manifest, else null.
    """
    base = backup_layout.backup_prefix(prefix, site, name)
    rdb_key, manifest_key = backup_layout.backup_keys(prefix, site, name)
    sizes = {key: size for key, (size, dummy) in objects.items()}
    reason, fields = None, None
    try:
        backup_layout.check_complete_backup(sizes, manifest)
        if manifest is not None:
            fields = backup_layout.parse_manifest(manifest)
    except backup_layout.IncompleteBackup as exc:
        reason = str(exc)
    when = backup_layout.parse_timestamp_name(name)
    written = max((modified for dummy, modified in objects.values() if modified is not None), default=None)
    return {
        "site": site,
        "name": name,
        "prefix": base,
        "time": format_time(when),
        "age_seconds": age_seconds(when, now),
        "complete": reason is None,
        "incomplete_reason": reason,
        "objects": len(objects),
        "size": sum(size or 0 for size in sizes.values()),
        "rdb_key": rdb_key if rdb_key in objects else None,
        "rdb_size": sizes.get(rdb_key),
        "manifest_key": manifest_key if manifest_key in objects else None,
        "written": format_time(written),
        "manifest": fields,
    }


def summarize_sites(backups, sites=()):
    """{site: counts and the newest complete backup (null when none)} of ``backups`` (newest first per site); every
    site of ``sites`` is there even without backups."""
    summary = {site: {"backups": 0, "complete": 0, "incomplete": 0, "newest": None} for site in sites}
    for backup in backups:
        entry = summary.setdefault(backup["site"], {"backups": 0, "complete": 0, "incomplete": 0, "newest": None})
        entry["backups"] += 1
        entry["complete" if backup["complete"] else "incomplete"] += 1
        if backup["complete"] and entry["newest"] is None:
            entry["newest"] = backup
    return summary


def _read_manifest(client, bucket, key):
    """The manifest's bytes, or None when it vanished since the listing (a retention run deleting the backup)."""
    try:
        with wrap_errors("get manifest", bucket=bucket, endpoint_url=endpoint_of(client)):
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "404"):
            return None
        raise


def complete_backups(client, bucket, prefix, site=None):
    """The complete backups of one site from one listing of ``<prefix>/<site>/`` (no manifest read), newest first:
    what a restore and a site's status pick the newest of. Without ``site`` the last component of ``prefix`` is the
    site. Each: ``name``, ``prefix`` (ending in "/"), ``time`` (aware UTC), ``rdb_key``, ``manifest_key``, ``keys``
    (sorted), ``size`` (bytes) and ``written`` (the manifest's LastModified)."""
    if site is None:
        prefix, dummy, site = (prefix or "").strip("/").rpartition("/")
    prefix = check_options(prefix, [site], 1)
    objects, dummy_server_time = list_objects(client, bucket, backup_layout.backup_prefix(prefix, site))
    directories, dummy_unrecognised = group_objects(((o.key, o.size, o.last_modified) for o in objects), prefix)
    backups = []
    for (dir_site, name), entries in sorted(directories.items(), key=lambda item: item[0][1], reverse=True):
        sizes = {key: size for key, (size, dummy) in entries.items()}
        if not backup_layout.is_complete_backup(sizes):
            continue
        rdb_key, manifest_key = backup_layout.backup_keys(prefix, dir_site, name)
        backups.append(
            {
                "name": name,
                "prefix": backup_layout.backup_prefix(prefix, dir_site, name),
                "time": backup_layout.parse_timestamp_name(name),
                "rdb_key": rdb_key,
                "manifest_key": manifest_key,
                "keys": sorted(entries),
                "size": sum(sizes.values()),
                "written": entries[manifest_key][1],
            }
        )
    return backups


def list_backups(client, bucket, prefix, sites=None, read_manifests=True, concurrency=DEFAULT_CONCURRENCY, now=None):
    """The module's result: ``backups`` (per site, newest first), ``sites``, ``unrecognised`` keys and ``now``.

    With ``sites`` each ``<prefix>/<site>/`` is listed on its own, else the whole ``<prefix>/``. With
    ``read_manifests`` every backup whose listing looks complete has its manifest read (``concurrency`` requests in
    flight) and checked against the RDB object; a manifest deleted since the listing makes the backup incomplete.
    """
    prefix = check_options(prefix, sites, concurrency)
    now = now or utcnow()
    listed = []
    for listing_prefix in (
        [backup_layout.backup_prefix(prefix, site) for site in sites]
        if sites
        else [backup_layout.normalize_prefix(prefix)]
    ):
        objects, dummy_server_time = list_objects(client, bucket, listing_prefix)
        listed.extend((o.key, o.size, o.last_modified) for o in objects)
    directories, unrecognised = group_objects(listed, prefix)
    # per site, newest first
    order = sorted(sorted(directories, key=lambda entry: entry[1], reverse=True), key=lambda entry: entry[0])
    manifests = dict.fromkeys(order)
    if read_manifests:
        todo = [
            entry
            for entry in order
            if backup_layout.is_complete_backup({key: size for key, (size, dummy) in directories[entry].items()})
        ]
        if todo:
            with ThreadPoolExecutor(max_workers=min(concurrency, len(todo))) as pool:
                keys = [backup_layout.backup_keys(prefix, site, name)[1] for site, name in todo]
                for entry, key, data in zip(
                    todo, keys, pool.map(lambda key: _read_manifest(client, bucket, key), keys)
                ):
                    manifests[entry] = data
                    if data is None:  # gone since the listing: the backup is incomplete now
                        del directories[entry][key]
    backups = [
        describe_backup(prefix, site, name, directories[(site, name)], now, manifests[(site, name)])
        for site, name in order
    ]
    return {
        "backups": backups,
        "sites": summarize_sites(backups, sites or ()),
        "unrecognised": unrecognised,
        "now": format_time(now),
    }
