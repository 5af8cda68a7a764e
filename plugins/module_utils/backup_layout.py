# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one definition of the Redis backup layout in object storage: key names and the manifest.

A backup is two objects in ``<prefix>/<site>/<UTC timestamp>/``: ``dump.rdb`` and ``manifest.json``. The manifest is
written after the RDB and deleted before it, so a listing that shows both is a complete backup; the manifest's
content (size, SHA-256) ties it to the RDB bytes.

Writer: ``redis_backup`` (``hanzo.kms.redis_rdb_backup``, and the redis role's backup CronJob through
``redis_backup_job``).
Readers: ``redis_restore``, ``s3_retention`` (its default layout) and ``operations``. Plain Python, no Ansible import.
"""

from __future__ import annotations

import collections
import datetime
import json
import re

from ansible_collections.hanzo.kms.plugins.module_utils import names
from ansible_collections.hanzo.kms.plugins.module_utils.times import (
    COMPACT_FORMAT,
    RFC3339_FORMAT,
    format_time,
    parse_timestamp,
    utcnow,
)

RDB_NAME = "dump.rdb"
MANIFEST_NAME = "manifest.json"
OBJECT_NAMES = (RDB_NAME, MANIFEST_NAME)
MANIFEST_FORMAT = 1
# The backup's directory name (a key component); the manifest's times are RFC3339_FORMAT (times).
TIMESTAMP_FORMAT = COMPACT_FORMAT

# Manifest format 1. Every writer writes every field, null when it does not know the value (no structure pass).
# Fields in MANIFEST_FIELDS are in every manifest ever written; a reader takes an absent LATER_FIELDS entry as null,
# because older backups (and the CronJob's before it ran this code) lack them.
MANIFEST_FIELDS = (
    "format",
    "object",
    "timestamp",
    "created_at",
    "size",
    "sha256",
    "crc64",
    "rdb_version",
    "keys_per_db",
    "keys",
    "source",
)
LATER_FIELDS = ("keyspace_at_start", "functions", "verified")
SOURCE_FIELDS = ("host", "port", "site", "method")
LATER_SOURCE_FIELDS = ("server", "server_version", "rdb_redis_ver")

_TIMESTAMP_RE = re.compile(r"\d{8}T\d{6}Z")
_MANIFEST_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_CRC64_RE = re.compile(r"[0-9a-f]{16}")
_DB_RE = re.compile(r"[0-9]+")


class InvalidKey(ValueError):
    """A key or timestamp that is not part of the layout; the message says which and why."""


class InvalidManifest(ValueError):
    """A manifest that is not format 1; the message names the problem (field, expected type or shape)."""


class IncompleteBackup(ValueError):
    """The objects of one backup directory are not a complete backup; the message says what is missing or differs."""


BackupKey = collections.namedtuple("BackupKey", "prefix site timestamp object")
BackupKey.__doc__ = (
    'A parsed key: ``prefix`` without leading or trailing "/" ("" for none), ``site``, ``timestamp`` '
    "(aware UTC datetime) and ``object`` (dump.rdb or manifest.json)."
)


# --------------------------------------------------------------------------------------------------------------
# Key names
# --------------------------------------------------------------------------------------------------------------
def normalize_prefix(prefix):
    """A listing prefix for a directory: no leading "/", one trailing "/" ("" stays "", the whole bucket)."""
    prefix = (prefix or "").lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return prefix


def timestamp_name(when):
    """The backup directory name for ``when`` (aware, or naive meaning UTC)."""
    return format_time(when, TIMESTAMP_FORMAT)


def parse_timestamp_name(name):
    """The aware UTC datetime of a backup directory name; InvalidKey when ``name`` is not one."""
    if not isinstance(name, str) or not _TIMESTAMP_RE.fullmatch(name):
        raise InvalidKey(f"{name!r} is not a backup timestamp (UTC, {TIMESTAMP_FORMAT}, e.g. 20261122T041500Z)")
    when = parse_timestamp(name, TIMESTAMP_FORMAT)
    if when is None:
        raise InvalidKey(f"{name!r} is not a backup timestamp: no such date or time")
    return when


def backup_prefix(prefix, site, timestamp=None):
    """The key prefix (ending in "/") of a site's backups, or of one backup with ``timestamp`` (a datetime or a
    directory name). Empty components are left out and "/" around them is stripped: (``/backups/redis/``, ``dc1``) ->
    ``backups/redis/dc1/``; no prefix and no site -> "" (the bucket's top level)."""
    parts = [p.strip("/") for p in (prefix or "", site or "") if p and p.strip("/")]
    if timestamp is not None:
        if isinstance(timestamp, datetime.datetime):
            timestamp = timestamp_name(timestamp)
        else:
            parse_timestamp_name(timestamp)
        parts.append(timestamp)
    return "/".join(parts) + "/" if parts else ""


def backup_keys(prefix, site, timestamp):
    """(RDB key, manifest key) of one backup."""
    base = backup_prefix(prefix, site, timestamp)
    return base + RDB_NAME, base + MANIFEST_NAME


def manifest_key_for(rdb_key):
    """The key of the manifest next to an RDB object (any key: a restore may name an object outside the layout)."""
    base = rdb_key.rsplit("/", 1)[0] + "/" if "/" in rdb_key else ""
    return base + MANIFEST_NAME


def parse_key(key, prefix=None):
    """A ``BackupKey`` from an object key of the layout; InvalidKey for anything else.

    Without ``prefix`` the last three components are the site, the timestamp and the object, and whatever precedes
    them is the prefix. With ``prefix`` (as given to ``backup_prefix``), the key must be under it and exactly three
    components deeper.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"{key!r} is not an object key")
    if prefix is None:
        parts = key.rsplit("/", 3)
        if len(parts) < 3:
            raise InvalidKey(f"{key!r} is not a backup key: expected <prefix>/<site>/<timestamp>/<object>")
        key_prefix = parts[0] if len(parts) == 4 else ""
        rest = parts[-3:]
        if len(parts) == 4 and "" in key_prefix.split("/"):
            raise InvalidKey(f"{key!r} is not a backup key: its prefix has an empty component")
    else:
        base = backup_prefix(prefix, None)
        if not key.startswith(base):
            raise InvalidKey(f"{key!r} is not under the prefix {base!r}")
        rest = key[len(base) :].split("/")
        key_prefix = base
        if len(rest) != 3:
            raise InvalidKey(
                f"{key!r} is not a backup key under {base!r}: expected <site>/<timestamp>/<object> after it"
            )
    site, stamp, name = rest
    if not names.is_site_name(site):
        raise InvalidKey(f"{key!r} is not a backup key: site {site!r} is not {names.SITE_RULE}")
    try:
        when = parse_timestamp_name(stamp)
    except InvalidKey as exc:
        raise InvalidKey(f"{key!r} is not a backup key: {exc}") from None
    if name not in OBJECT_NAMES:
        raise InvalidKey(f"{key!r} is not a backup key: the object {name!r} is neither {RDB_NAME} nor {MANIFEST_NAME}")
    return BackupKey(key_prefix.strip("/"), site, when, name)


# --------------------------------------------------------------------------------------------------------------
# The manifest
# --------------------------------------------------------------------------------------------------------------
def build_manifest(
    timestamp,
    size,
    sha256,
    rdb_version,
    crc64=None,
    keys_per_db=None,
    keyspace_at_start=None,
    functions=None,
    verified=None,
    source=None,
    created_at=None,
):
    """A format 1 manifest (every field, null where unknown), validated.

    ``timestamp``: the backup's time (its directory name); ``created_at``: when the manifest was made (default now).
    ``keys_per_db``: {db: count} as the RDB holds it, or None when the RDB was not parsed; ``keys`` is its sum.
    ``source``: where the RDB came from (``SOURCE_FIELDS`` and ``LATER_SOURCE_FIELDS``; method ``replication``).
    """
    if keys_per_db is not None:
        keys_per_db = {str(db): count for db, count in keys_per_db.items()}
    origin = dict.fromkeys(SOURCE_FIELDS + LATER_SOURCE_FIELDS)
    origin["method"] = "replication"
    origin.update(source or {})
    manifest = {
        "format": MANIFEST_FORMAT,
        "object": RDB_NAME,
        "timestamp": format_time(timestamp),
        "created_at": format_time(created_at or utcnow()),
        "size": size,
        "sha256": sha256,
        "crc64": crc64,
        "rdb_version": rdb_version,
        "keys_per_db": keys_per_db,
        "keys": None if keys_per_db is None else sum(keys_per_db.values()),
        "keyspace_at_start": keyspace_at_start,
        "functions": functions,
        "verified": verified,
        "source": origin,
    }
    return validate_manifest(manifest)


def encode_manifest(manifest):
    """The manifest object's bytes: stable JSON (sorted keys, 2-space indent), validated first."""
    return json.dumps(validate_manifest(manifest), indent=2, sort_keys=True).encode()


def parse_manifest(data):
    """The manifest (a dict) from the bytes or text of a manifest object; InvalidManifest naming the problem."""
    try:
        manifest = json.loads(data)
    except ValueError as exc:  # UnicodeDecodeError included
        raise InvalidManifest(f"not valid JSON: {exc}") from None
    return validate_manifest(manifest)


def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _expect(where, value, ok, expected):
    if not ok:
        raise InvalidManifest(f"{where} must be {expected}, not {_json_type(value)} ({value!r:.80})")


def validate_manifest(manifest):
    """Return ``manifest`` if it is a format 1 manifest, else raise InvalidManifest naming the first problem.

    Checks the presence and JSON type of every field and the shape of the values a restore relies on (size, SHA-256,
    CRC64, RDB version, key counts). Unknown extra fields are allowed. The ``verified`` entry's content is
    ``redis_verify``'s business (it decides whether the recorded check can be relied on).
    """
    if not isinstance(manifest, dict):
        raise InvalidManifest(f"the manifest must be a JSON object, not {_json_type(manifest)}")
    if "format" not in manifest:
        raise InvalidManifest("field 'format' is missing")
    version = manifest["format"]
    _expect("field 'format'", version, _count(version), "an integer")
    if version != MANIFEST_FORMAT:
        raise InvalidManifest(f"unknown format version {version} (this collection reads format {MANIFEST_FORMAT})")
    for name in MANIFEST_FIELDS:
        if name not in manifest:
            raise InvalidManifest(f"field {name!r} is missing")
    value = manifest["object"]
    _expect("field 'object'", value, isinstance(value, str) and value and "/" not in value, "an object name")
    for name in ("timestamp", "created_at"):
        value = manifest[name]
        _expect(f"field {name!r}", value, isinstance(value, str), f"a string ({RFC3339_FORMAT})")
        if not _valid_time(value):
            raise InvalidManifest(f"field {name!r} must be a UTC time as {RFC3339_FORMAT}, not {value!r:.80}")
    _expect("field 'size'", manifest["size"], _count(manifest["size"]), "an integer >= 0 (bytes)")
    value = manifest["sha256"]
    _expect("field 'sha256'", value, isinstance(value, str), "a string")
    if not _SHA256_RE.fullmatch(value):
        raise InvalidManifest(f"field 'sha256' must be 64 lower-case hex digits, not {value!r:.80}")
    value = manifest["crc64"]
    _expect("field 'crc64'", value, value is None or isinstance(value, str), "null or a string")
    if value is not None and not _CRC64_RE.fullmatch(value):
        raise InvalidManifest(f"field 'crc64' must be null or 16 lower-case hex digits, not {value!r:.80}")
    value = manifest["rdb_version"]
    _expect("field 'rdb_version'", value, _count(value) and value >= 1, "an integer >= 1")
    per_db, keys = manifest["keys_per_db"], manifest["keys"]
    _expect("field 'keys_per_db'", per_db, per_db is None or isinstance(per_db, dict), "null or an object")
    for db, count in (per_db or {}).items():
        if not (isinstance(db, str) and _DB_RE.fullmatch(db)):
            raise InvalidManifest(f"field 'keys_per_db' must be keyed by database number, not {db!r:.80}")
        _expect(f"field 'keys_per_db' entry {db!r}", count, _count(count), "an integer >= 0")
    _expect("field 'keys'", keys, keys is None or _count(keys), "null or an integer >= 0")
    if (per_db is None) != (keys is None):
        raise InvalidManifest("fields 'keys' and 'keys_per_db' must be both null or both set")
    if per_db is not None and keys != sum(per_db.values()):
        raise InvalidManifest(f"field 'keys' ({keys}) is not the sum of 'keys_per_db' ({sum(per_db.values())})")
    for name in ("keyspace_at_start", "verified"):
        value = manifest.get(name)
        _expect(f"field {name!r}", value, value is None or isinstance(value, dict), "null or an object")
    value = manifest.get("functions")
    _expect("field 'functions'", value, value is None or _count(value), "null or an integer >= 0")
    _validate_source(manifest["source"])
    return manifest


def _valid_time(text):
    if not _MANIFEST_TIME_RE.fullmatch(text):
        return False
    return parse_timestamp(text, RFC3339_FORMAT) is not None


def _validate_source(source):
    _expect("field 'source'", source, isinstance(source, dict), "an object")
    for name in SOURCE_FIELDS:
        if name not in source:
            raise InvalidManifest(f"field 'source.{name}' is missing")
    value = source["method"]
    _expect("field 'source.method'", value, isinstance(value, str), "a string")
    value = source["port"]
    _expect("field 'source.port'", value, value is None or _count(value), "null or an integer")
    for name in ("host", "site") + LATER_SOURCE_FIELDS:
        value = source.get(name)
        _expect(f"field 'source.{name}'", value, value is None or isinstance(value, str), "null or a string")


# --------------------------------------------------------------------------------------------------------------
# Complete backups
# --------------------------------------------------------------------------------------------------------------
def check_complete_backup(objects, manifest=None):
    """Raise IncompleteBackup unless ``objects`` are one complete backup.

    ``objects``: the keys of one backup directory (``<...>/<timestamp>/``), or a mapping key -> size in bytes (None
    when unknown), as a listing gives them. Without ``manifest`` only what a listing shows is checked: the directory
    is a backup timestamp and holds both the RDB and the manifest. With ``manifest`` (its bytes or parsed dict) it
    must also be valid and match: it describes ``dump.rdb``, its time is the directory's, and its size is the RDB
    object's (when known).
    """
    sizes = dict(objects) if isinstance(objects, dict) else dict.fromkeys(objects)
    directories = {key.rsplit("/", 1)[0] if "/" in key else "" for key in sizes}
    if len(directories) > 1:
        raise IncompleteBackup(f"the objects are in more than one directory: {', '.join(sorted(directories))}")
    if not directories:
        raise IncompleteBackup("no objects")
    directory = directories.pop()
    stamp = directory.rsplit("/", 1)[-1]
    try:
        when = parse_timestamp_name(stamp)
    except InvalidKey as exc:
        raise IncompleteBackup(f"{directory}/ is not a backup directory: {exc}") from None
    base = directory + "/"
    for name in (RDB_NAME, MANIFEST_NAME):
        if base + name not in sizes:
            raise IncompleteBackup(f"{base} has no {name}")
    if manifest is None:
        return
    try:
        manifest = validate_manifest(manifest) if isinstance(manifest, dict) else parse_manifest(manifest)
    except InvalidManifest as exc:
        raise IncompleteBackup(f"the manifest of {base} is invalid: {exc}") from None
    if manifest["object"] != RDB_NAME:
        raise IncompleteBackup(f"the manifest of {base} describes {manifest['object']!r}, not {RDB_NAME}")
    if manifest["timestamp"] != format_time(when):
        raise IncompleteBackup(f"the manifest of {base} is for {manifest['timestamp']}, not {format_time(when)}")
    size = sizes[base + RDB_NAME]
    if size is not None and size != manifest["size"]:
        raise IncompleteBackup(f"{base}{RDB_NAME} has {size} bytes but its manifest says {manifest['size']}")


def is_complete_backup(objects, manifest=None):
    """Whether ``check_complete_backup`` accepts ``objects`` (and ``manifest``)."""
    try:
        check_complete_backup(objects, manifest)
    except IncompleteBackup:
        return False
    return True
