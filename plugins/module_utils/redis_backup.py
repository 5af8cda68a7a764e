# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Consistent Redis backups over the replication protocol (what ``redis-cli --rdb`` does), streamed to a local
file and/or S3 (multipart, bounded memory) while computing SHA-256 and checking the RDB CRC64.

Plain Python (redis-py, boto3 for S3): the connection is ``redis_client``'s, the SYNC stream is read by ``redis_resp``,
the multipart upload is ``s3_upload``.
"""

from __future__ import annotations

import os
import time

from ansible_collections.hanzo.kms.plugins.module_utils import (
    backup_layout,
    names,
    redis_client,
    redis_rdb,
    redis_verify,
)
from ansible_collections.hanzo.kms.plugins.module_utils.redis_client import RedisError, ReplyError, server_info
from ansible_collections.hanzo.kms.plugins.module_utils.redis_resp import RespConnection
from ansible_collections.hanzo.kms.plugins.module_utils.times import utcnow

CHUNK = 256 * 1024  # RDB transfer reads


def version_tuple(text):
    parts = []
    for piece in (text or "0").split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts)


def rdb_version_for(server, version):
    """Highest RDB version a server loads (from its flavour and version).

    Valkey: 7.2-8.x write and load RDB 11 (the last open-source Redis format); 9.0 and 9.1 write ``VALKEY080``,
    9.2 ``VALKEY081`` (Valkey's ``RDB_VERSION_MAP``). Redis: see ``redis_rdb.describe_rdb_version``.
    """
    ver = version_tuple(version)
    if server == "valkey":
        if ver >= (9, 2, 0):
            return 81
        if ver >= (9, 0, 0):
            return 80
        return 11 if ver >= (7, 2, 0) else 10
    table = [
        ((8, 8, 0), 14),
        ((8, 6, 0), 13),
        ((7, 4, 0), 12),
        ((7, 2, 0), 11),
        ((7, 0, 0), 10),
        ((5, 0, 0), 9),
        ((4, 0, 0), 8),
        ((3, 2, 0), 7),
        ((2, 6, 0), 6),
    ]
    for minimum, rdb in table:
        if ver >= minimum:
            return rdb
    return 5


def rdb_loadable(rdb_version, server, version):
    """Whether a server of that flavour and version loads an RDB of ``rdb_version``.

    Valkey loads the Redis versions up to 11 and its own (80+) up to its own; it refuses Redis 7.4+'s 12-79 ("foreign",
    ``rdb-version-check strict``, the default). Redis never loads Valkey's 80+ (nor its ``VALKEY`` magic).
    """
    target = rdb_version_for(server, version)
    if server == "valkey":
        if rdb_version >= redis_rdb.VALKEY_MAGIC_MIN_VERSION:
            return rdb_version <= target
        return rdb_version <= min(target, 11)
    return rdb_version <= target and rdb_version < redis_rdb.VALKEY_MAGIC_MIN_VERSION


# --------------------------------------------------------------------------------------------------------------
# Replication-protocol fetch
# --------------------------------------------------------------------------------------------------------------
def fetch_rdb(params, sink, timeout=3600.0):
    """Connect, ask for an RDB-only full sync and pass every chunk of the RDB to ``sink(chunk)``.

    Returns (bytes transferred, server info dict). Raises RedisError.
    """
    client = redis_client.connect(params, timeout=60.0)
    info = {}
    announced = None
    try:
        info = server_info(client)
        try:
            client.execute_command("REPLCONF", "capa", "eof")
        except ReplyError:
            pass
        announced = announce_replica_version(client, info)
        rdb_only = True
        try:
            client.execute_command("REPLCONF", "rdb-only", "1")
        except ReplyError:
            rdb_only = False  # Redis < 7.0: the command stream follows; the connection is closed after the RDB
        conn = RespConnection.on(client)  # redis-py has no reader for the SYNC stream
        conn.settimeout(timeout)
        conn.send(b"SYNC\r\n")
        while True:
            line = conn.readline()
            if line:
                break  # bare newlines are keep-alives while the server prepares the snapshot
        if line.startswith(b"-"):
            raise RedisError(
                f"Redis at {conn.where} refused SYNC: {line[1:].decode('utf-8', 'replace')} "
                "(the user needs the SYNC/REPLCONF permissions)"
            )
        if not line.startswith(b"$"):
            raise RedisError(f"unexpected reply to SYNC from Redis at {conn.where}: {line[:60]!r}")
        # The RDB is received into one reused buffer and passed to ``sink`` as memoryviews (no per-chunk copies).
        buf = bytearray(CHUNK + 40)
        view = memoryview(buf)
        total = 0
        if line.startswith(b"$EOF:"):
            mark = bytes(line[5:])
            if len(mark) != 40:
                raise RedisError(f"bad EOF mark in the SYNC reply from {conn.where}")
            # the last 40 bytes seen are held back: they may be the EOF mark
            initial = conn.take_buffered()
            if len(initial) > 40:
                sink(initial[:-40])
                total += len(initial) - 40
                initial = initial[-40:]
            kept = len(initial)
            buf[:kept] = initial
            while kept < 40 or buf[kept - 40 : kept] != mark:
                filled = kept + conn.recv_into(view[kept:], " during the RDB transfer")
                if filled > 40:
                    sink(view[: filled - 40])
                    total += filled - 40
                    buf[:40] = buf[filled - 40 : filled]
                    kept = 40
                else:
                    kept = filled
        else:
            try:
                size = int(line[1:])
            except ValueError:
                raise RedisError(f"unexpected reply to SYNC from Redis at {conn.where}: {line[:60]!r}") from None
            initial = conn.take_buffered(size)
            if initial:
                sink(initial)
                total += len(initial)
            while total < size:
                got = conn.recv_into(view[: min(CHUNK, size - total)], f" after {total} of {size} RDB bytes")
                sink(view[:got])
                total += got
        info["rdb_only"] = rdb_only
        info["announced_version"] = announced
        return total, info
    except RedisError as exc:
        if info.get("server") == "valkey" and announced is None and "closed the connection" in str(exc):
            raise RedisError(
                f"{exc}; {info['server']} {info['version']} refused REPLCONF version, so it wrote the "
                "RDB version of an old replica (11), which cannot hold every key (e.g. hash fields with "
                'a TTL need RDB 80): see its log for "Can\'t store key"'
            ) from None
        raise
    finally:
        client.close()


def announce_replica_version(client, info):
    """Tell a Valkey primary our "replica version" (its own) so it writes its native RDB version.

    Valkey 9 picks the RDB version for a replica from the version the replica announces with ``REPLCONF version``:
    no announcement means an old replica, RDB 11, and a key that RDB 11 cannot hold (a hash field with a TTL) aborts
    the transfer ("Can't store key (db 0) in RDB version 11"). Announcing the server's own version makes it send the
    RDB it writes for its own replicas. Redis has no such option and always writes its own version. Returns the
    version announced, or None.
    """
    if info.get("server") != "valkey" or not info.get("version"):
        return None
    try:
        client.execute_command("REPLCONF", "version", info["version"])
    except ReplyError:
        return None
    return info["version"]


def _bound_malloc():
    """Make glibc return freed large buffers to the OS at once.

    glibc raises its mmap threshold after a large block is freed, so later 1-8 MiB buffers (received chunks, upload
    parts) come from heap arenas that do not shrink: RSS creeps up with the RDB size. A fixed threshold keeps every
    block >= 256 KiB in its own mapping, released on free, so memory stays bounded by the parts in flight. The heap
    left free after loading boto3's models is handed back too (about 1 MiB), which keeps the module under 64 MiB.
    """
    try:
        import ctypes  # pylint: disable=import-outside-toplevel

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)  # hand back what loading boto3's models left free in the heap
    except (OSError, AttributeError):
        pass


# --------------------------------------------------------------------------------------------------------------
# The whole backup
# --------------------------------------------------------------------------------------------------------------
PRIVATE_MODE = 0o600


def open_private(path):
    """Open ``path`` for writing (truncated) with mode 0600 whatever the umask: a dump holds every secret Redis has.

    The mode is set on the open descriptor too, so a file left by an earlier run with wider permissions is narrowed
    before any byte is written.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def run_backup(params, s3_client_factory=None, check_mode=False, now=None, before_manifest=None):
    """Run a backup from module-style ``params``. Returns the result dict. Raises RedisError / RdbError / S3Error.

    ``before_manifest()`` runs once the RDB is stored and verified, before the manifest marks the backup complete:
    an exception from it leaves the backup incomplete (the redis role's CronJob checks its operation lock there).

    params: Redis connection keys, ``dest`` (local path), ``bucket``, ``prefix``, ``site``, ``part_size`` (MiB), ``upload_concurrency``,
    ``verify_structure`` (default true: the RDB structure pass runs on the stream and the manifest records it, so a
    restore can skip it), ``analyze`` (the same pass; kept for compatibility), ``timeout`` (s).
    """
    # the site and prefix become key components: refuse anything but the collection's safe names before any I/O
    names.check_prefix(params.get("prefix") or "", "prefix")
    if params.get("site") is not None:
        names.check_site(params["site"], "site name")
    started = time.monotonic()
    now = now or utcnow()
    bucket = params.get("bucket")
    dest = params.get("dest")
    result = {"changed": not check_mode}
    if bucket:
        rdb_key, manifest_key = backup_layout.backup_keys(params.get("prefix"), params.get("site"), now)
        result.update(bucket=bucket, key=rdb_key, manifest_key=manifest_key)
    if dest:
        result["dest"] = dest
    client = None
    if bucket:
        client = s3_client_factory()
    if check_mode:
        conn = redis_client.connect(params, timeout=30.0)
        try:
            info = server_info(conn)
        finally:
            conn.close()
        if client is not None:
            from ansible_collections.hanzo.kms.plugins.module_utils import s3 as s3_utils  # pylint: disable=import-outside-toplevel

            s3_utils.check_bucket(client, bucket)
        result.update(server=info["server"], server_version=info["version"], keyspace=info["keyspace"])
        return result

    _bound_malloc()
    structure = bool(params.get("analyze")) or params.get("verify_structure", True) is not False
    validator = redis_rdb.StreamValidator(structure=structure)
    upload = None
    local = None
    local_tmp = None
    if client is not None:
        # pylint: disable=import-outside-toplevel
        from ansible_collections.hanzo.kms.plugins.module_utils import s3 as s3_utils
        from ansible_collections.hanzo.kms.plugins.module_utils.s3_upload import S3StreamUpload

        s3_utils.check_bucket(client, bucket)
        upload = S3StreamUpload(
            client,
            bucket,
            result["key"],
            part_size=int(params.get("part_size") or 5) * 1024 * 1024,
            concurrency=int(params.get("upload_concurrency") or 1),
        )
    if dest:
        local_tmp = f"{dest}.part"
        parent = os.path.dirname(os.path.abspath(dest))
        if not os.path.isdir(parent):
            raise RedisError(f"destination directory {parent} does not exist")
        local = open_private(local_tmp)

    def sink(chunk):
        validator.feed(chunk)
        if upload is not None:
            upload.write(chunk)
        if local is not None:
            local.write(chunk)

    try:
        size, info = fetch_rdb(params, sink, timeout=float(params.get("timeout") or 3600))
        summary = validator.finish()
        if local is not None:
            local.flush()
            os.fsync(local.fileno())
            local.close()
            local = None
        if upload is not None:
            upload.close()
            upload = None
    except BaseException:
        if upload is not None:
            upload.abort()
        if local is not None:
            local.close()
        if local_tmp and os.path.exists(local_tmp):
            os.unlink(local_tmp)
        raise
    if local_tmp:
        os.replace(local_tmp, dest)
    manifest = build_manifest(params, info, summary, validator, size, now, structure)
    body = backup_layout.encode_manifest(manifest)
    if before_manifest is not None:
        before_manifest()
    if client is not None:
        from ansible_collections.hanzo.kms.plugins.module_utils import s3 as s3_utils  # pylint: disable=import-outside-toplevel

        with s3_utils.wrap_errors("write manifest", bucket=bucket):
            client.put_object(Bucket=bucket, Key=result["manifest_key"], Body=body, ContentType="application/json")
    if dest:
        with open_private(dest + ".manifest.json") as handle:
            handle.write(body)
        result["dest_manifest"] = dest + ".manifest.json"
    result.update(
        manifest=manifest,
        size=size,
        sha256=manifest["sha256"],
        crc64=manifest["crc64"],
        rdb_version=manifest["rdb_version"],
        server_version=manifest["source"]["server_version"],
        keys_per_db=manifest["keys_per_db"],
        verified=manifest["verified"],
        duration=round(time.monotonic() - started, 3),
    )
    return result


def build_manifest(params, info, summary, validator, size, now, analyzed):
    """The backup's manifest (``backup_layout.build_manifest``) from the streamed RDB's summary and validator."""
    aux = summary.aux
    parsed = analyzed and validator.structure_complete
    return backup_layout.build_manifest(
        timestamp=now,
        created_at=utcnow(),
        size=size,
        sha256=validator.hexdigest(),
        crc64=None if summary.checksum_stored is None else f"{summary.checksum_stored:016x}",
        rdb_version=summary.version,
        keys_per_db={str(k): v for k, v in sorted(summary.keys_per_db.items())} if parsed else None,
        keyspace_at_start=info["keyspace"],
        functions=len(summary.functions) if parsed else None,
        verified=redis_verify.record_check(summary, validator) if analyzed else None,
        source={
            "host": params.get("host"),
            "port": params.get("port"),
            "site": params.get("site"),
            "server": info["server"],
            "server_version": info["version"],
            "rdb_redis_ver": aux.get("redis-ver") or aux.get("valkey-ver"),
            "method": "replication",
        },
    )
