# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup retention in S3-compatible storage (plain Python, importable without Ansible).

Pipeline: ``list_objects`` (ListObjectsV2 or ListObjectVersions, 1000 keys per call) -> ``build_inventory``
(group keys into backups by layout; unrecognised keys are set aside and never deleted) -> ``plan_retention``
(restic ``forget`` semantics + floors) -> ``delete_backups`` (DeleteObjects, <= 1000 keys per call, manifests first).

Layout (relative to ``prefix``): ``<group_1>/.../<group_n>/<backup>/<file>`` with n = ``group_depth``
(default 1, e.g. the site of ``<prefix>/<site>/<UTC timestamp>/dump.rdb`` + ``manifest.json``). The layout is
declared, never guessed, because the bucket may be shared (CNPG's WAL archive and base backups live next to the Redis
backups): a directory is a backup only if its name matches the layout (``timestamp_format``, or ``name_pattern``) and
it holds one of the layout's data files (``data_files``). Only the data files and the manifest belong to a backup;
every other key is unrecognised and never deleted, whatever the ``time_source``. A backup is complete when its
manifest object exists (the Redis backup modules write it last). The retention policy is applied to the complete
backups of each group separately. An empty prefix (the whole bucket) is refused unless ``whole_bucket`` is set.

The complete backups of one site (what a restore or a status picks the newest of): ``s3_backup_info.complete_backups``.
"""

from __future__ import annotations

import collections
import datetime
import fnmatch
import json
import re
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from ansible_collections.hanzo.kms.plugins.module_utils import backup_layout
from ansible_collections.hanzo.kms.plugins.module_utils.backup_layout import normalize_prefix
from ansible_collections.hanzo.kms.plugins.module_utils.s3 import (
    S3Error,
    endpoint_of,
    translate_error,
    wrap_errors,
)
from ansible_collections.hanzo.kms.plugins.module_utils.times import (
    MIN_TIME,
    as_utc,
    format_time,
    human_age,
    parse_any_time,
    parse_http_date,
    parse_timestamp,
    utcnow,
)

MAX_DELETE_BATCH = 1000
# Requests in flight: deletes are latency-bound on the server side (each key is a metadata operation), so more
# parallel requests raise throughput; 32 matched s5cmd on the lab's SeaweedFS (docs/benchmarks.md).
DEFAULT_CONCURRENCY = 32

PERIODS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
TIME_SOURCES = ("key", "manifest", "last_modified")


class RetentionError(Exception):
    """Invalid input (policy, layout, duration)."""


# ---------------------------------------------------------------------------------------------------------------
# Durations (restic syntax: 1y2m3d4h) and Go's AddDate normalisation


_DURATION_RE = re.compile(r"^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)d)?(?:(\d+)h)?$")


class Duration:
    """A restic-style duration: years, months, days, hours (``2y6m``, ``30d``, ``36h``)."""

    __slots__ = ("years", "months", "days", "hours")

    def __init__(self, years=0, months=0, days=0, hours=0):
        self.years, self.months, self.days, self.hours = years, months, days, hours

    @classmethod
    def parse(cls, text):
        text = str(text).strip().replace(" ", "")
        m = _DURATION_RE.match(text)
        if not text or not m or not any(m.groups()):
            raise RetentionError(f"invalid duration {text!r}: use restic syntax like 2y6m, 30d, 36h or 1y2m3d4h")
        return cls(*[int(g or 0) for g in m.groups()])

    def is_zero(self):
        return not (self.years or self.months or self.days or self.hours)

    def subtract_from(self, when):
        """``when`` minus this duration, normalised like Go's ``time.AddDate`` (Jan 31 - 1m = Dec 31; Mar 31 - 1m = Mar 3)."""
        return add_date(when, -self.years, -self.months, -self.days) - datetime.timedelta(hours=self.hours)

    def __str__(self):
        parts = [(self.years, "y"), (self.months, "m"), (self.days, "d"), (self.hours, "h")]
        return "".join(f"{n}{u}" for n, u in parts if n) or "0h"

    def __repr__(self):
        return f"Duration({self})"


def add_date(when, years, months, days):
    """Go's ``time.AddDate``: add to the calendar fields, then normalise overflowing days into the next month."""
    month0 = when.month - 1 + months
    year = when.year + years + month0 // 12
    month = month0 % 12 + 1
    first = when.replace(year=year, month=month, day=1)
    return first + datetime.timedelta(days=when.day - 1 + days)


# ---------------------------------------------------------------------------------------------------------------
# Policy (restic forget semantics)


class Policy:
    """``keep_*`` counts: 0 = rule off, -1 = unlimited. ``within`` a ``Duration`` or None."""

    def __init__(self, last=0, hourly=0, daily=0, weekly=0, monthly=0, yearly=0, within=None, min_keep=1):
        self.counts = dict(last=last, hourly=hourly, daily=daily, weekly=weekly, monthly=monthly, yearly=yearly)
        for name, value in self.counts.items():
            if value is None:
                self.counts[name] = 0
            elif int(value) < -1:
                raise RetentionError(f"keep_{name} must be -1 (unlimited), 0 (off) or a positive number, got {value}")
        if isinstance(within, str):
            within = Duration.parse(within)
        self.within = within if within is not None and not within.is_zero() else None
        self.min_keep = int(min_keep or 0)
        if self.min_keep < 0:
            raise RetentionError("min_keep must be >= 0")

    def is_empty(self):
        return not any(self.counts.values()) and self.within is None


def _bucket_key(period, when, nr):
    if period == "last":
        return nr
    if period == "hourly":
        return (when.year, when.month, when.day, when.hour)
    if period == "daily":
        return (when.year, when.month, when.day)
    if period == "weekly":
        return tuple(when.isocalendar()[:2])
    if period == "monthly":
        return (when.year, when.month)
    return when.year


def apply_policy(times, policy, now):
    """restic's ``ApplyPolicy`` on a list of aware UTC datetimes sorted newest first.

    Returns one list of keep reasons per entry (empty list = remove). ``within`` is relative to the newest entry
    that is not in the future (``now``); if every entry is in the future, every entry is within (as restic).
    """
    reasons = [[] for _time in times]
    if not times:
        return reasons
    latest = None
    for t in times:
        if t < now and (latest is None or t > latest):
            latest = t
    within_from = None
    if policy.within is not None and latest is not None:
        within_from = policy.within.subtract_from(latest)
    counts = dict(policy.counts)
    last_val = dict((p, None) for p in PERIODS)
    oldest = len(times) - 1
    for nr, cur in enumerate(times):
        if policy.within is not None and (within_from is None or cur > within_from):
            reasons[nr].append(f"within {policy.within}")
        for period in PERIODS:
            count = counts[period]
            if count > 0 or count == -1:
                val = _bucket_key(period, cur, nr)
                if val != last_val[period] or nr == oldest:
                    label = f"{period} backup"
                    if val == last_val[period] and nr == oldest:
                        label = f"oldest {label}"
                    last_val[period] = val
                    if count > 0:
                        counts[period] = count - 1
                    reasons[nr].append(label)
    return reasons


# ---------------------------------------------------------------------------------------------------------------
# Objects, layout, inventory


class S3Object:
    """One listed object (version). ``versions``: every (version_id, is_delete_marker) of the key when listed
    version-aware, used to purge; ``current`` False for keys whose latest entry is a delete marker."""

    __slots__ = ("key", "size", "last_modified", "versions", "current")

    def __init__(self, key, size, last_modified, versions=None, current=True):
        self.key = key
        self.size = size
        self.last_modified = last_modified
        self.versions = versions
        self.current = current


class Backup:
    __slots__ = ("group", "name", "prefix", "objects", "manifest", "time", "time_error", "written", "action", "reasons")

    def __init__(self, group, name, prefix):
        self.group = group
        self.name = name
        self.prefix = prefix
        self.objects = []
        self.manifest = None
        self.time = None
        self.time_error = None
        self.written = None
        self.action = "keep"
        self.reasons = []

    @property
    def complete(self):
        return self.manifest is not None

    @property
    def size(self):
        return sum(o.size or 0 for o in self.objects)

    def to_dict(self, include_keys=False):
        d = dict(
            group=self.group,
            name=self.name,
            prefix=self.prefix,
            complete=self.complete,
            time=format_time(self.time),
            written=format_time(self.written),
            objects=len(self.objects),
            size=self.size,
            action=self.action,
            reasons=list(self.reasons),
        )
        if self.time_error:
            d["time_error"] = self.time_error
        if include_keys:
            d["keys"] = sorted(o.key for o in self.objects)
        return d


def check_scope(prefix, whole_bucket=False):
    """Refuse an empty (or ``/``-only) prefix unless ``whole_bucket`` says every object of the bucket is a backup:
    the bucket is usually shared with CNPG's WAL archive, and retention must not even consider those objects."""
    if not normalize_prefix(prefix) and not whole_bucket:
        raise RetentionError(
            "prefix %r selects the whole bucket, which is usually shared with other data (CNPG WAL "
            "archive and base backups): set prefix to the directory of the backups, for example "
            '"redis", or set whole_bucket=true if every object in the bucket is a backup of this '
            "layout" % (prefix or "")
        )
    if whole_bucket and normalize_prefix(prefix):
        raise RetentionError(
            f"whole_bucket=true applies to an empty prefix only, but prefix is {prefix!r}: remove "
            "whole_bucket or the prefix"
        )


class Layout:
    """How keys map to backups; see the module docstring. The defaults are the collection's Redis layout
    (backup_layout); other layouts are declared by the caller."""

    def __init__(
        self,
        prefix="",
        group_depth=1,
        time_source="key",
        timestamp_format=backup_layout.TIMESTAMP_FORMAT,
        manifest_name=backup_layout.MANIFEST_NAME,
        manifest_time_field="timestamp",
        data_files=(backup_layout.RDB_NAME,),
        name_pattern=None,
    ):
        if time_source not in TIME_SOURCES:
            raise RetentionError("time_source must be one of {}".format(", ".join(TIME_SOURCES)))
        if group_depth is None or int(group_depth) < 0:
            raise RetentionError("group_depth must be >= 0")
        if not manifest_name or "/" in manifest_name:
            raise RetentionError('manifest_name must be a file name without "/"')
        data_files = tuple(data_files or ())
        if not data_files:
            raise RetentionError(
                "data_files must name at least one data file of a backup (dump.rdb for the Redis "
                "layout): without it any directory could be taken for an incomplete backup"
            )
        for name in data_files:
            if not name or "/" in name:
                raise RetentionError(f'data_files entries must be file names without "/", got {name!r}')
            if name == manifest_name:
                raise RetentionError(f"data_files must not contain the manifest name {manifest_name!r}")
        self.name_re = None
        if name_pattern:
            try:
                self.name_re = re.compile(name_pattern)
            except re.error as exc:
                raise RetentionError(
                    f"name_pattern {name_pattern!r} is not a valid regular expression: {exc}"
                ) from None
        self.prefix = normalize_prefix(prefix)
        self.group_depth = int(group_depth)
        self.time_source = time_source
        self.timestamp_format = timestamp_format or backup_layout.TIMESTAMP_FORMAT
        self.manifest_name = manifest_name
        self.manifest_time_field = manifest_time_field
        self.data_files = data_files

    def split(self, key):
        """(group, backup name, name inside the backup) or None for keys outside the layout."""
        if not key.startswith(self.prefix):
            return None
        parts = key[len(self.prefix) :].split("/", self.group_depth + 1)
        if len(parts) != self.group_depth + 2 or not all(parts[:-1]) or not parts[-1]:
            return None
        return "/".join(parts[:-2]), parts[-2], parts[-1]

    def parse_name(self, name):
        """(whether ``name`` is a backup name of the layout, its time from the key or None).

        Without ``name_pattern`` the name must parse with ``timestamp_format`` in every time source, so that
        directories such as CNPG's ``wals``/``base`` never look like backups. With ``name_pattern`` the name must
        match it in full, and also parse for ``time_source=key`` (the time comes from the name)."""
        when = parse_timestamp(name, self.timestamp_format)
        if self.name_re is not None and not self.name_re.fullmatch(name):
            return False, None
        if (self.name_re is None or self.time_source == "key") and when is None:
            return False, None
        return True, when

    def file_kind(self, rest):
        """'manifest', 'data' or None (not a file of the layout, including anything nested deeper)."""
        if "/" in rest:
            return None
        if rest == self.manifest_name:
            return "manifest"
        if any(fnmatch.fnmatchcase(rest, pattern) for pattern in self.data_files):
            return "data"
        return None


class Inventory:
    def __init__(self):
        self.groups = collections.OrderedDict()  # group -> list of Backup (newest first after sort)
        self.unrecognised = []  # keys
        self.leftovers = []  # Backup whose keys all have no current version (versioned listing)
        self.server_time = None


def build_inventory(objects, layout):
    """Group listed objects into backups. Unrecognised (never deleted), in every time source: keys outside the
    layout, in a directory whose name is not a backup name (``Layout.parse_name``), files that are neither the
    manifest nor a data file, and every key of a directory without a current data file (a manifest alone is not a
    backup, nor a directory of other files). Sorted, current keys only."""
    inv = Inventory()
    by_prefix = collections.OrderedDict()
    names = {}
    unrecognised = []
    for obj in objects:
        parts = layout.split(obj.key)
        if parts is None:
            unrecognised.append(obj)
            continue
        group, name, rest = parts
        if name not in names:
            names[name] = layout.parse_name(name)
        if not names[name][0] or layout.file_kind(rest) is None:
            unrecognised.append(obj)
            continue
        bprefix = layout.prefix + (group + "/" if group else "") + name + "/"
        backup = by_prefix.get(bprefix)
        if backup is None:
            backup = by_prefix[bprefix] = Backup(group, name, bprefix)
        backup.objects.append(obj)
    for backup in by_prefix.values():
        current = [o for o in backup.objects if o.current]
        data = [o for o in backup.objects if layout.file_kind(o.key[len(backup.prefix) :]) == "data"]
        if not current:
            if data:
                backup.action = "purge"
                backup.reasons = ["no current version (removed earlier)"]
                inv.leftovers.append(backup)
            continue
        if not any(o.current for o in data):
            unrecognised.extend(current)
            continue
        for obj in current:
            if obj.key == backup.prefix + layout.manifest_name:
                backup.manifest = obj
        backup.written = max(o.last_modified for o in current)
        if layout.time_source == "key":
            backup.time = names[backup.name][1]
        elif layout.time_source == "last_modified":
            backup.time = backup.manifest.last_modified if backup.manifest is not None else backup.written
        inv.groups.setdefault(backup.group, []).append(backup)
    inv.unrecognised = sorted(o.key for o in unrecognised if o.current)
    return inv


def _sort_key(backup):
    return (backup.time or MIN_TIME, backup.name)


# ---------------------------------------------------------------------------------------------------------------
# Planner


def plan_retention(inventory, policy, now, incomplete_grace=None, delete_incomplete=True):
    """Decide keep/delete for every backup (sets ``action`` and ``reasons``) and return the list of backups, per
    group newest first. Floors, applied after the restic rules: the newest complete backup (by time) and the most
    recently written complete backup (by the server's LastModified of its manifest, which survives a skewed
    client clock) are never deleted, and at least ``min_keep`` complete backups are kept (newest first).
    Complete backups without a usable time are kept. Incomplete backups are deleted when ``delete_incomplete``
    and their newest object is older than ``incomplete_grace`` (a ``Duration``) on the server clock."""
    if policy.is_empty():
        raise RetentionError(
            "the retention policy is empty: set at least one of keep_last, keep_hourly, keep_daily, "
            "keep_weekly, keep_monthly, keep_yearly or keep_within (refusing to delete everything)"
        )
    ordered = []
    for group in sorted(inventory.groups):
        backups = sorted(inventory.groups[group], key=_sort_key, reverse=True)
        complete = [b for b in backups if b.complete and b.time is not None]
        for b in backups:
            b.reasons = []
            if b.complete and b.time is None:
                b.reasons.append("time unknown (%s)" % (b.time_error or "no time"))
        rule_reasons = apply_policy([b.time for b in complete], policy, now)
        for b, reasons in zip(complete, rule_reasons):
            b.reasons.extend(reasons)
        if complete:
            complete[0].reasons.append("newest complete backup")
            last_written = max(complete, key=lambda b: (b.manifest.last_modified, b.time, b.name))
            if last_written is not complete[0]:
                last_written.reasons.append("most recently written complete backup")
            kept = sum(1 for b in complete if b.reasons)
            for b in complete:
                if kept >= policy.min_keep:
                    break
                if not b.reasons:
                    b.reasons.append(f"min_keep {policy.min_keep}")
                    kept += 1
        for b in backups:
            if b.complete:
                b.action = "keep" if b.reasons else "delete"
                continue
            age = human_age((now - b.written).total_seconds())
            if not delete_incomplete:
                b.reasons.append("incomplete (delete_incomplete is off)")
            elif incomplete_grace is not None and b.written > incomplete_grace.subtract_from(now):
                b.reasons.append(f"incomplete, written {age} ago, within incomplete_grace {incomplete_grace}")
            b.action = "keep" if b.reasons else "delete"
            if b.action == "delete":
                b.reasons.append("incomplete (no {}), written {} ago".format("manifest", age))
        ordered.extend(backups)
    return ordered


# ---------------------------------------------------------------------------------------------------------------
# S3 access


class Stats:
    def __init__(self):
        self.calls = collections.Counter()

    def add(self, name, n=1):
        self.calls[name] += n

    def as_dict(self):
        return dict(self.calls)


def _server_time(response):
    return parse_http_date(response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date"))


def _pages(client, operation, what, bucket, prefix, stats):
    """The response pages of a listing (boto3's paginator, 1000 keys a page), each counted in ``stats``."""
    pages = client.get_paginator(operation).paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": 1000})
    pages = iter(pages)
    endpoint = endpoint_of(client)
    while True:
        with wrap_errors(what, bucket=bucket, endpoint_url=endpoint):
            page = next(pages, None)
        if page is None:
            return
        stats.add(STAT_NAMES[operation])
        yield page


STAT_NAMES = {"list_objects_v2": "ListObjectsV2", "list_object_versions": "ListObjectVersions"}


def _versioned(by_key, key):
    if key not in by_key:
        by_key[key] = S3Object(key, 0, None, versions=[], current=False)
    return by_key[key]


def list_objects(client, bucket, prefix, versions=False, stats=None):
    """List every object under ``prefix``: (list of ``S3Object``, server time from the Date header of the first
    response that has one, or None). ``versions=True`` uses ListObjectVersions and records every version and delete marker."""
    stats = stats or Stats()
    server_time = None
    if not versions:
        objects = []
        for page in _pages(client, "list_objects_v2", "list objects", bucket, prefix, stats):
            server_time = server_time or _server_time(page)
            for item in page.get("Contents", ()):
                objects.append(S3Object(item["Key"], item.get("Size", 0), as_utc(item["LastModified"])))
        return objects, server_time
    by_key = collections.OrderedDict()
    for page in _pages(client, "list_object_versions", "list object versions", bucket, prefix, stats):
        server_time = server_time or _server_time(page)
        for item in page.get("Versions", ()):
            obj = _versioned(by_key, item["Key"])
            obj.versions.append((item.get("VersionId") or "null", False))
            if item.get("IsLatest"):
                obj.current = True
                obj.size = item.get("Size", 0)
                obj.last_modified = as_utc(item["LastModified"])
        for item in page.get("DeleteMarkers", ()):
            obj = _versioned(by_key, item["Key"])
            obj.versions.append((item.get("VersionId") or "null", True))
            if obj.last_modified is None or not obj.current:
                obj.last_modified = as_utc(item.get("LastModified"))
    return list(by_key.values()), server_time


def bucket_versioning(client, bucket, stats=None):
    """'Enabled', 'Suspended' or None (never enabled)."""
    with wrap_errors("get bucket versioning", bucket=bucket, endpoint_url=endpoint_of(client)):
        resp = client.get_bucket_versioning(Bucket=bucket)
    if stats is not None:
        stats.add("GetBucketVersioning")
    return resp.get("Status")


def read_manifest_times(client, bucket, backups, layout, stats=None, concurrency=DEFAULT_CONCURRENCY):
    """For ``time_source=manifest``: GET each complete backup's manifest and set ``backup.time`` from
    ``layout.manifest_time_field`` (or ``time_error``)."""
    stats = stats or Stats()
    todo = [b for b in backups if b.complete]

    def fetch(backup):
        try:
            resp = client.get_object(Bucket=bucket, Key=backup.manifest.key)
            body = resp["Body"].read()
        except Exception as exc:  # pylint: disable=broad-exception-caught
            return (
                backup,
                None,
                "cannot read manifest: {}".format(translate_error(exc, bucket, endpoint_of(client), "get manifest")),
            )
        try:
            value = json.loads(body.decode("utf-8")).get(layout.manifest_time_field)
        except (ValueError, AttributeError, UnicodeDecodeError) as exc:
            return backup, None, f"manifest is not a JSON object: {exc}"
        when = parse_any_time(value, layout.timestamp_format)
        if when is None:
            return backup, None, f"manifest field {layout.manifest_time_field!r} is missing or not a time: {value!r}"
        return backup, when, None

    if not todo:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(todo)))) as pool:
        for backup, when, error in pool.map(fetch, todo):
            stats.add("GetObject")
            backup.time, backup.time_error = when, error


# ---------------------------------------------------------------------------------------------------------------
# Deleter


class DeleteResult:
    def __init__(self):
        self.deleted = 0  # keys/versions reported deleted
        self.errors = []  # dicts: key, version_id, code, message
        self.skipped = set()  # backup prefixes whose data was not deleted because the manifest was not
        self.failed_requests = []  # messages of requests that failed as a whole


def _entries(obj, purge_versions):
    if purge_versions and obj.versions:
        return [(obj.key, vid) for vid, _marker in obj.versions]
    return [(obj.key, None)]


def delete_backups(
    client,
    bucket,
    backups,
    manifest_name=backup_layout.MANIFEST_NAME,
    purge_versions=False,
    concurrency=DEFAULT_CONCURRENCY,
    stats=None,
    batch_size=MAX_DELETE_BATCH,
):
    """Delete every object of ``backups`` with DeleteObjects (Quiet, <= ``batch_size`` keys per request).

    A backup's data objects are only sent after a response confirmed its manifest deleted, so a failure never
    leaves data-less backups that look complete. Up to ``concurrency`` requests run at once; a partial batch is held
    back while requests in flight may unlock more data, so the number of requests is ceil(keys/1000) whenever >= 1000
    manifests are deleted (otherwise at most one more). After a request fails as a whole, no new request is sent.
    ``purge_versions`` deletes every version and delete marker (by VersionId) instead of adding delete markers.
    """
    stats = stats or Stats()
    batch_size = max(1, min(int(batch_size), MAX_DELETE_BATCH))
    result = DeleteResult()
    endpoint = endpoint_of(client)
    manifests = collections.deque()  # (key, vid, backup prefix)
    ready = collections.deque()  # (key, vid, None)
    waiting = {}  # backup prefix -> list of entries (blocked on its manifest)
    manifest_left = {}  # backup prefix -> number of manifest entries not yet confirmed
    for backup in backups:
        mkey = backup.prefix + manifest_name
        data = []
        mentries = []
        for obj in backup.objects:
            entries = _entries(obj, purge_versions)
            if obj.key == mkey:
                mentries.extend(entries)
            else:
                data.extend(entries)
        if mentries:
            manifests.extend((k, v, backup.prefix) for k, v in mentries)
            manifest_left[backup.prefix] = len(mentries)
            waiting[backup.prefix] = data
        else:
            ready.extend((k, v, None) for k, v in data)

    def send(batch):
        objs = [dict(Key=k, VersionId=v) if v else dict(Key=k) for k, v, _p in batch]
        try:
            resp = client.delete_objects(Bucket=bucket, Delete=dict(Objects=objs, Quiet=True))
        except Exception as exc:  # pylint: disable=broad-exception-caught
            return batch, None, translate_error(exc, bucket, endpoint, "delete objects")
        return batch, resp.get("Errors") or [], None

    def take():
        batch = []
        while len(batch) < batch_size and manifests:
            batch.append(manifests.popleft())
        while len(batch) < batch_size and ready:
            batch.append(ready.popleft())
        return batch

    def settle(batch, errors, exc):
        """Account for one response; returns False when the request itself failed (nothing more is sent)."""
        stats.add("DeleteObjects")
        if exc is not None:
            result.failed_requests.append(str(exc))
            for _k, _v, bprefix in batch:
                if bprefix:
                    result.skipped.add(bprefix)
                    waiting.pop(bprefix, None)
            return False
        failed = set()
        for err in errors:
            result.errors.append(
                dict(
                    key=err.get("Key"),
                    version_id=err.get("VersionId"),
                    code=err.get("Code"),
                    message=err.get("Message"),
                )
            )
            failed.add((err.get("Key"), err.get("VersionId") or None))
        result.deleted += len(batch) - len(errors)
        for key, vid, bprefix in batch:
            if not bprefix:
                continue
            if (key, vid) in failed or (key, None) in failed:
                result.skipped.add(bprefix)
                waiting.pop(bprefix, None)
                continue
            manifest_left[bprefix] -= 1
            if manifest_left[bprefix] == 0 and bprefix in waiting:
                ready.extend((k, v, None) for k, v in waiting.pop(bprefix))
        return True

    # Requests stream: up to ``concurrency`` in flight, a new one sent as soon as one returns. Only full batches are
    # sent while a request in flight may still unlock data; a partial batch goes when nothing else is pending.
    in_flight = set()
    healthy = True
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        while True:
            while healthy and len(in_flight) < max(1, concurrency) and (manifests or ready):
                if len(manifests) + len(ready) < batch_size and in_flight and waiting:
                    break
                in_flight.add(pool.submit(send, take()))
            if not in_flight:
                break
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                healthy = settle(*future.result()) and healthy
    return result


def classify_locked(client, bucket, errors, stats=None, limit=50):
    """Mark AccessDenied errors on versions that carry Object Lock retention or a legal hold (``locked`` key with
    the mode/until or ``legal hold``); checks at most ``limit`` errors (two requests each)."""
    stats = stats or Stats()
    checked = 0
    for err in errors:
        if err.get("code") != "AccessDenied" or checked >= limit:
            continue
        checked += 1
        extra = dict(VersionId=err["version_id"]) if err.get("version_id") else {}
        try:
            stats.add("GetObjectRetention")
            ret = client.get_object_retention(Bucket=bucket, Key=err["key"], **extra).get("Retention") or {}
            until = ret.get("RetainUntilDate")
            if ret.get("Mode") and until is not None and as_utc(until) > utcnow():
                err["locked"] = "{} retention until {}".format(ret["Mode"], format_time(as_utc(until)))
                continue
        except Exception:  # pylint: disable=broad-exception-caught
            pass
        try:
            stats.add("GetObjectLegalHold")
            hold = client.get_object_legal_hold(Bucket=bucket, Key=err["key"], **extra).get("LegalHold") or {}
            if hold.get("Status") == "ON":
                err["locked"] = "legal hold"
        except Exception:  # pylint: disable=broad-exception-caught
            pass
    return errors


# ---------------------------------------------------------------------------------------------------------------
# The whole run (what the module calls)


def _diff(backups):
    def line(b):
        return "{} {}{}\n".format(
            b.prefix,
            "complete" if b.complete else "incomplete",
            f" ({backup_layout.timestamp_name(b.time)})" if b.time else "",
        )

    before = "".join(line(b) for b in backups)
    after = "".join(line(b) for b in backups if b.action == "keep")
    return dict(before=before, after=after, before_header="backups before retention", after_header="backups kept")


def _key_error(error):
    version = f" (version {error['version_id']})" if error.get("version_id") else ""
    return f"{error['key']}{version}: {error['code']} {error.get('locked') or error.get('message') or ''}"


def _failure_message(dres):
    parts = []
    if dres.errors:
        locked = sum(1 for e in dres.errors if e.get("locked"))
        first = "; ".join(_key_error(e) for e in dres.errors[:5])
        on_locked = f", {locked} on object-locked versions (not retried)" if locked else ""
        parts.append(f"deletion incomplete: {len(dres.errors)} per-key error(s){on_locked}; first: {first}")
    if dres.failed_requests:
        parts.append(
            f"{len(dres.failed_requests)} DeleteObjects request(s) failed, deletion stopped: {dres.failed_requests[0]}"
        )
    return ". ".join(parts) + ". Backups whose manifest could not be deleted keep their data (action delete_failed)."


def run_retention(client, params, check_mode=False, now=None):
    """Plan and (unless ``check_mode``) apply retention. ``params``: the module parameters. Returns the module
    result (``changed``, ``backups``, ``unrecognised``, ``summary``, ``api_calls``, ``errors``, ``diff``, ``failed``,
    ``msg``). Raises ``S3Error`` / ``RetentionError`` for problems before anything is deleted."""
    stats = Stats()
    bucket = params["bucket"]
    check_scope(params.get("prefix"), bool(params.get("whole_bucket")))
    layout = Layout(
        prefix=params.get("prefix") or "",
        group_depth=params.get("group_depth", 1),
        time_source=params.get("time_source") or "key",
        timestamp_format=params.get("timestamp_format") or backup_layout.TIMESTAMP_FORMAT,
        manifest_name=params.get("manifest_name") or backup_layout.MANIFEST_NAME,
        manifest_time_field=params.get("manifest_time_field") or "timestamp",
        data_files=(backup_layout.RDB_NAME,) if params.get("data_files") is None else params["data_files"],
        name_pattern=params.get("name_pattern") or None,
    )
    policy = Policy(
        last=params.get("keep_last"),
        hourly=params.get("keep_hourly"),
        daily=params.get("keep_daily"),
        weekly=params.get("keep_weekly"),
        monthly=params.get("keep_monthly"),
        yearly=params.get("keep_yearly"),
        within=params.get("keep_within") or None,
        min_keep=1 if params.get("min_keep") is None else params["min_keep"],
    )
    grace = Duration.parse(params["incomplete_grace"]) if params.get("incomplete_grace") else None
    if policy.is_empty():
        plan_retention(Inventory(), policy, now)  # raises the empty-policy error
    purge = bool(params.get("purge_versions"))
    versioned = False
    if purge:
        versioned = bucket_versioning(client, bucket, stats) is not None
    objects, server_time = list_objects(client, bucket, layout.prefix, versions=versioned, stats=stats)
    if now is None:
        now = server_time or utcnow()
    inv = build_inventory(objects, layout)
    if layout.time_source == "manifest":
        read_manifest_times(
            client,
            bucket,
            [b for g in inv.groups.values() for b in g],
            layout,
            stats,
            concurrency=params.get("concurrency") or DEFAULT_CONCURRENCY,
        )
    backups = plan_retention(
        inv, policy, now, incomplete_grace=grace, delete_incomplete=params.get("delete_incomplete", True)
    )
    to_delete = [b for b in backups if b.action == "delete"]
    leftovers = inv.leftovers if purge else []
    summary = dict(
        backups=len(backups),
        complete=sum(1 for b in backups if b.complete),
        incomplete=sum(1 for b in backups if not b.complete),
        kept=sum(1 for b in backups if b.action == "keep"),
        deleted=len(to_delete),
        objects=sum(len(b.objects) for b in backups),
        leftovers_purged=len(leftovers),
        objects_deleted=sum(len(_entries(o, purge)) for b in to_delete + leftovers for o in b.objects),
        unrecognised=len(inv.unrecognised),
        groups=len(inv.groups),
        versioned=versioned,
        server_time=format_time(server_time),
        now=format_time(now),
    )
    result = dict(changed=bool(to_delete or leftovers), errors=[], failed=False)
    if to_delete or leftovers:
        if not check_mode:
            dres = delete_backups(
                client,
                bucket,
                to_delete + leftovers,
                manifest_name=layout.manifest_name,
                purge_versions=purge,
                stats=stats,
                concurrency=params.get("concurrency") or DEFAULT_CONCURRENCY,
            )
            if dres.errors:
                classify_locked(client, bucket, dres.errors, stats)
            for b in to_delete + leftovers:
                if b.prefix in dres.skipped:
                    b.action = "delete_failed"
            result["errors"] = dres.errors
            summary["objects_deleted"] = dres.deleted
            if dres.errors or dres.failed_requests:
                result["failed"] = True
                result["msg"] = _failure_message(dres)
    result["backups"] = [b.to_dict() for b in backups]
    result["purged"] = [b.to_dict() for b in leftovers]
    result["unrecognised"] = inv.unrecognised
    result["summary"] = summary
    result["api_calls"] = stats.as_dict()
    result["diff"] = _diff(backups)
    return result


__all__ = [
    "S3Error",
    "RetentionError",
    "Duration",
    "Policy",
    "Layout",
    "apply_policy",
    "build_inventory",
    "check_scope",
    "plan_retention",
    "list_objects",
    "delete_backups",
    "run_retention",
]
