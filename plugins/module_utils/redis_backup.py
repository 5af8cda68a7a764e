# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Consistent Redis backups over the replication protocol (what ``redis-cli --rdb`` does), streamed to a local
file and/or S3 (multipart, bounded memory) while computing SHA-256 and checking the RDB CRC64.

Also holds the small RESP client used by the restore code. Plain Python (standard library + boto3 for S3).
"""
from __future__ import annotations

import os
import queue
import socket
import ssl
import threading
import time

from ansible_collections.hanzo.kms.plugins.module_utils import backup_layout, names, redis_rdb, redis_verify
from ansible_collections.hanzo.kms.plugins.module_utils.times import utcnow

REDIS_CONNECTION_SPEC = dict(
    host=dict(type='str', default='127.0.0.1'),
    port=dict(type='int', default=6379),
    username=dict(type='str'),
    password=dict(type='str', no_log=True),
    tls=dict(type='bool', default=False),
    tls_ca_cert=dict(type='path'),
    tls_cert=dict(type='path'),
    tls_key=dict(type='path', no_log=False),
    tls_validate_certs=dict(type='bool', default=True),
    connect_timeout=dict(type='float', default=10.0),
)

CHUNK = 256 * 1024           # RDB transfer reads
REPLY_CHUNK = 64 * 1024      # command reply reads
MAX_PARTS = 10000  # S3's limit of parts in one multipart upload


class RedisError(Exception):
    """A Redis connection or protocol failure with a message meant for the user."""


class ReplyError(RedisError):
    """The server answered a command with an error reply."""


def redis_connection_spec():
    return {k: dict(v) for k, v in REDIS_CONNECTION_SPEC.items()}


# --------------------------------------------------------------------------------------------------------------
# RESP client
# --------------------------------------------------------------------------------------------------------------
MAX_REPLY_DEPTH = 32  # Redis replies nest a few levels (e.g. XINFO, CLIENT TRACKINGINFO); anything deeper is hostile


class _ArrayHeader:  # pylint: disable=too-few-public-methods
    __slots__ = ('size',)

    def __init__(self, size):
        self.size = size


def encode_command(args):
    out = [b'*%d\r\n' % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b'%d' % arg
        out.append(b'$%d\r\n%s\r\n' % (len(arg), arg))
    return b''.join(out)


class RespConnection:
    """One blocking connection speaking RESP2, with optional TLS and AUTH."""

    def __init__(self, params, timeout=None):
        self.host = params.get('host') or '127.0.0.1'
        self.port = int(params.get('port') or 6379)
        self.where = f'{self.host}:{self.port}'
        self.buf = bytearray()
        self._chunk = None
        connect_timeout = float(params.get('connect_timeout') or 10.0)
        try:
            sock = socket.create_connection((self.host, self.port), timeout=connect_timeout)
        except OSError as exc:
            raise RedisError(f'cannot connect to Redis at {self.where}: {exc}') from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if params.get('tls'):
            try:
                ctx = ssl.create_default_context(cafile=params.get('tls_ca_cert') or None)
                if not params.get('tls_validate_certs', True):
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                if params.get('tls_cert'):
                    ctx.load_cert_chain(params['tls_cert'], params.get('tls_key') or None)
                sock = ctx.wrap_socket(sock, server_hostname=self.host)
            except (ssl.SSLError, OSError) as exc:
                sock.close()
                raise RedisError(f'TLS handshake with Redis at {self.where} failed: {exc}') from None
        sock.settimeout(timeout)
        self.sock = sock
        password = params.get('password')
        if password:
            args = ['AUTH', params['username'], password] if params.get('username') else ['AUTH', password]
            try:
                self.command(*args)
            except ReplyError as exc:
                self.close()
                raise RedisError(f'Redis at {self.where} rejected the credentials: {exc}') from None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def settimeout(self, timeout):
        self.sock.settimeout(timeout)

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise RedisError(f'connection to Redis at {self.where} failed while sending: {exc}') from None

    def recv_into(self, target, during=''):
        """Receive at least one byte into ``target`` (a writable buffer); returns the count.

        ``during`` (e.g. ``' during the RDB transfer'``) completes the error messages. Raises RedisError on a timeout,
        an error or the server closing the connection.
        """
        try:
            got = self.sock.recv_into(target)
        except socket.timeout:
            raise RedisError(f'timed out waiting for Redis at {self.where}{during}') from None
        except OSError as exc:
            raise RedisError(f'connection to Redis at {self.where} failed{during}: {exc}') from None
        if not got:
            raise RedisError(f'Redis at {self.where} closed the connection{during}')
        return got

    def _fill(self):
        if self._chunk is None:
            self._chunk = bytearray(REPLY_CHUNK)
        got = self.recv_into(self._chunk)
        self.buf += memoryview(self._chunk)[:got]

    def readline(self):
        while True:
            idx = self.buf.find(b'\n')
            if idx >= 0:
                line = bytes(self.buf[:idx])
                del self.buf[:idx + 1]
                return line[:-1] if line.endswith(b'\r') else line
            self._fill()

    def read_exact(self, size):
        while len(self.buf) < size:
            self._fill()
        data = bytes(self.buf[:size])
        del self.buf[:size]
        return data

    def read_reply(self):
        """One reply. Iterative (an explicit stack), so a hostile server's deeply nested arrays give a RedisError past
        MAX_REPLY_DEPTH levels instead of a RecursionError."""
        stack = []  # [items, expected count] per open array
        while True:
            value = self._read_element()
            if isinstance(value, _ArrayHeader):
                if value.size > 0:
                    if len(stack) >= MAX_REPLY_DEPTH:
                        raise RedisError(f'reply from Redis at {self.where} is nested more than {MAX_REPLY_DEPTH} '
                                         'arrays deep; not a Redis server?')
                    stack.append(([], value.size))
                    continue
                value = []
            while stack:
                items, size = stack[-1]
                items.append(value)
                if len(items) < size:
                    break
                stack.pop()
                value = items
            else:
                return value

    def _read_element(self):
        """A scalar reply, or an _ArrayHeader for an array of size >= 0 (None for a null array)."""
        line = self.readline()
        if not line:
            raise RedisError(f'empty reply line from Redis at {self.where}')
        kind, rest = line[:1], line[1:]
        if kind == b'+':
            return rest.decode('utf-8', 'replace')
        if kind == b'-':
            return ReplyError(rest.decode('utf-8', 'replace'))
        try:
            if kind == b':':
                return int(rest)
            if kind == b'$':
                size = int(rest)
                if size < 0:
                    return None
                return self.read_exact(size + 2)[:-2]
            if kind == b'*':
                size = int(rest)
                return None if size < 0 else _ArrayHeader(size)
        except ValueError:
            pass
        raise RedisError(f'unexpected reply {line[:60]!r} from Redis at {self.where}')

    def command(self, *args):
        self.send(encode_command(args))
        reply = self.read_reply()
        if isinstance(reply, ReplyError):
            raise reply
        return reply


def parse_info(text):
    if isinstance(text, bytes):
        text = text.decode('utf-8', 'replace')
    info = {}
    for line in text.splitlines():
        if not line or line.startswith('#') or ':' not in line:
            continue
        key, value = line.split(':', 1)
        info[key] = value
    return info


def parse_keyspace(info):
    """{'0': {'keys': n, 'expires': n}} from INFO keyspace fields."""
    out = {}
    for key, value in info.items():
        if key.startswith('db') and key[2:].isdigit():
            fields = dict(p.split('=', 1) for p in value.split(',') if '=' in p)
            out[key[2:]] = {'keys': int(fields.get('keys', 0)), 'expires': int(fields.get('expires', 0))}
    return out


def server_info(conn):
    info = parse_info(conn.command('INFO', 'server'))
    info.update(parse_info(conn.command('INFO', 'keyspace')))
    flavour = 'valkey' if info.get('valkey_version') or info.get('server_name') == 'valkey' else 'redis'
    version = info.get('valkey_version') if flavour == 'valkey' else info.get('redis_version')
    return {'server': flavour, 'version': version, 'redis_version': info.get('redis_version'),
            'keyspace': parse_keyspace(info), 'info': info}


def version_tuple(text):
    parts = []
    for piece in (text or '0').split('.')[:3]:
        digits = ''.join(ch for ch in piece if ch.isdigit())
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
    if server == 'valkey':
        if ver >= (9, 2, 0):
            return 81
        if ver >= (9, 0, 0):
            return 80
        return 11 if ver >= (7, 2, 0) else 10
    table = [((8, 8, 0), 14), ((8, 6, 0), 13), ((7, 4, 0), 12), ((7, 2, 0), 11), ((7, 0, 0), 10), ((5, 0, 0), 9),
             ((4, 0, 0), 8), ((3, 2, 0), 7), ((2, 6, 0), 6)]
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
    if server == 'valkey':
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
    conn = RespConnection(params, timeout=60.0)
    info = {}
    announced = None
    try:
        info = server_info(conn)
        try:
            conn.command('REPLCONF', 'capa', 'eof')
        except ReplyError:
            pass
        announced = announce_replica_version(conn, info)
        rdb_only = True
        try:
            conn.command('REPLCONF', 'rdb-only', '1')
        except ReplyError:
            rdb_only = False  # Redis < 7.0: the command stream follows; the connection is closed after the RDB
        conn.settimeout(timeout)
        conn.send(b'SYNC\r\n')
        while True:
            line = conn.readline()
            if line:
                break  # bare newlines are keep-alives while the server prepares the snapshot
        if line.startswith(b'-'):
            raise RedisError(f'Redis at {conn.where} refused SYNC: {line[1:].decode("utf-8", "replace")} '
                             '(the user needs the SYNC/REPLCONF permissions)')
        if not line.startswith(b'$'):
            raise RedisError(f'unexpected reply to SYNC from Redis at {conn.where}: {line[:60]!r}')
        # The RDB is received into one reused buffer and passed to ``sink`` as memoryviews (no per-chunk copies).
        buf = bytearray(CHUNK + 40)
        view = memoryview(buf)
        total = 0
        if line.startswith(b'$EOF:'):
            mark = bytes(line[5:])
            if len(mark) != 40:
                raise RedisError(f'bad EOF mark in the SYNC reply from {conn.where}')
            # the last 40 bytes seen are held back: they may be the EOF mark
            initial = bytes(conn.buf)
            conn.buf = bytearray()
            if len(initial) > 40:
                sink(initial[:-40])
                total += len(initial) - 40
                initial = initial[-40:]
            kept = len(initial)
            buf[:kept] = initial
            while kept < 40 or buf[kept - 40:kept] != mark:
                filled = kept + conn.recv_into(view[kept:], ' during the RDB transfer')
                if filled > 40:
                    sink(view[:filled - 40])
                    total += filled - 40
                    buf[:40] = buf[filled - 40:filled]
                    kept = 40
                else:
                    kept = filled
        else:
            try:
                size = int(line[1:])
            except ValueError:
                raise RedisError(f'unexpected reply to SYNC from Redis at {conn.where}: {line[:60]!r}') from None
            initial = bytes(conn.buf[:size])
            del conn.buf[:size]
            if initial:
                sink(initial)
                total += len(initial)
            while total < size:
                got = conn.recv_into(view[:min(CHUNK, size - total)], f' after {total} of {size} RDB bytes')
                sink(view[:got])
                total += got
        info['rdb_only'] = rdb_only
        info['announced_version'] = announced
        return total, info
    except RedisError as exc:
        if info.get('server') == 'valkey' and announced is None and 'closed the connection' in str(exc):
            raise RedisError(f'{exc}; {info["server"]} {info["version"]} refused REPLCONF version, so it wrote the '
                             'RDB version of an old replica (11), which cannot hold every key (e.g. hash fields with '
                             'a TTL need RDB 80): see its log for "Can\'t store key"') from None
        raise
    finally:
        conn.close()


def announce_replica_version(conn, info):
    """Tell a Valkey primary our "replica version" (its own) so it writes its native RDB version.

    Valkey 9 picks the RDB version for a replica from the version the replica announces with ``REPLCONF version``:
    no announcement means an old replica, RDB 11, and a key that RDB 11 cannot hold (a hash field with a TTL) aborts
    the transfer ("Can't store key (db 0) in RDB version 11"). Announcing the server's own version makes it send the
    RDB it writes for its own replicas. Redis has no such option and always writes its own version. Returns the
    version announced, or None.
    """
    if info.get('server') != 'valkey' or not info.get('version'):
        return None
    try:
        conn.command('REPLCONF', 'version', info['version'])
    except ReplyError:
        return None
    return info['version']


# --------------------------------------------------------------------------------------------------------------
# S3 multipart streaming
# --------------------------------------------------------------------------------------------------------------
class S3StreamUpload:
    """Multipart upload fed by ``write``; full parts are uploaded by ``concurrency`` background threads.

    Memory: at most ``concurrency + 1`` part buffers exist (one being filled, the others uploading). A full part waits
    for a free upload slot, so memory stays bounded whatever the object size. Parts are handed to boto3 without a copy.
    """

    def __init__(self, client, bucket, key, part_size=5 * 1024 * 1024, concurrency=1, content_type=None):
        self.client = client
        self.bucket = bucket
        self.key = key
        self.part_size = max(int(part_size), 5 * 1024 * 1024)
        self.concurrency = max(int(concurrency), 1)
        self.part = bytearray(self.part_size)
        self.filled = 0
        self.parts = {}
        self.number = 0
        self.upload_id = None
        self.error = None
        self.content_type = content_type or 'application/octet-stream'
        self.slots = threading.Semaphore(self.concurrency)
        self.queue = queue.Queue()
        self.threads = []
        self.size = 0

    def _start(self):
        resp = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key, ContentType=self.content_type)
        self.upload_id = resp['UploadId']
        for _unused in range(self.concurrency):
            thread = threading.Thread(target=self._worker, daemon=True)
            thread.start()
            self.threads.append(thread)

    def _worker(self):
        while True:
            item = self.queue.get()
            if item is None:
                return
            number, body = item
            try:
                if self.error is None:
                    resp = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                                   PartNumber=number, Body=body)
                    self.parts[number] = resp['ETag']
            except Exception as exc:  # pylint: disable=broad-exception-caught
                self.error = exc
            finally:
                del item, body
                self.slots.release()

    def _submit(self):
        """Hand the current part to an upload thread (waiting for a free slot) and start a new part."""
        if self.upload_id is None:
            self._start()
        if self.number >= MAX_PARTS:
            raise RedisError(f'the RDB is larger than {MAX_PARTS} parts of {self.part_size // 2**20} MiB, the most '
                             'S3 allows in one object; raise part_size')
        self.slots.acquire()  # pylint: disable=consider-using-with
        if self.error is not None:
            self.slots.release()
            raise self.error
        body = self.part
        if self.filled < len(body):
            del body[self.filled:]
        self.number += 1
        self.queue.put((self.number, body))
        self.part = None
        self.filled = 0

    def write(self, chunk):
        """Copy ``chunk`` (bytes-like; not kept after the call) into the current part."""
        view = memoryview(chunk)
        size = len(view)
        self.size += size
        offset = 0
        while offset < size:
            if self.part is None:
                self.part = bytearray(self.part_size)
            take = min(size - offset, self.part_size - self.filled)
            self.part[self.filled:self.filled + take] = view[offset:offset + take]
            self.filled += take
            offset += take
            if self.filled == self.part_size:
                self._submit()

    def _join(self):
        for _unused in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join()
        self.threads = []

    def close(self):
        if self.upload_id is None:
            body = bytes(self.part[:self.filled]) if self.part is not None else b''
            self.part = None
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, ContentType=self.content_type)
            return
        if self.filled:
            self._submit()
        self.part = None
        self._join()
        if self.error is not None:
            raise self.error
        self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
            MultipartUpload={'Parts': [{'PartNumber': n, 'ETag': self.parts[n]} for n in sorted(self.parts)]})

    def abort(self):
        self.error = self.error or RuntimeError('aborted')
        self.part = None
        self._join()
        if self.upload_id is not None:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            except Exception:  # pylint: disable=broad-exception-caught
                pass


def _bound_malloc():
    """Make glibc return freed large buffers to the OS at once.

    glibc raises its mmap threshold after a large block is freed, so later 1-8 MiB buffers (received chunks, upload
    parts) come from heap arenas that do not shrink: RSS creeps up with the RDB size. A fixed threshold keeps every
    block >= 256 KiB in its own mapping, released on free, so memory stays bounded by the parts in flight. The heap
    left free after loading boto3's models is handed back too (about 1 MiB), which keeps the module under 64 MiB.
    """
    try:
        import ctypes  # pylint: disable=import-outside-toplevel
        libc = ctypes.CDLL('libc.so.6')
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
        return os.fdopen(fd, 'wb')
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
    names.check_prefix(params.get('prefix') or '', 'prefix')
    if params.get('site') is not None:
        names.check_site(params['site'], 'site name')
    started = time.monotonic()
    now = now or utcnow()
    bucket = params.get('bucket')
    dest = params.get('dest')
    result = {'changed': not check_mode}
    if bucket:
        rdb_key, manifest_key = backup_layout.backup_keys(params.get('prefix'), params.get('site'), now)
        result.update(bucket=bucket, key=rdb_key, manifest_key=manifest_key)
    if dest:
        result['dest'] = dest
    client = None
    if bucket:
        client = s3_client_factory()
    if check_mode:
        conn = RespConnection(params, timeout=30.0)
        try:
            info = server_info(conn)
        finally:
            conn.close()
        if client is not None:
            from ansible_collections.hanzo.kms.plugins.module_utils import s3 as s3_utils  # pylint: disable=import-outside-toplevel
            s3_utils.check_bucket(client, bucket)
        result.update(server=info['server'], server_version=info['version'], keyspace=info['keyspace'])
        return result

    _bound_malloc()
    structure = bool(params.get('analyze')) or params.get('verify_structure', True) is not False
    validator = redis_rdb.StreamValidator(structure=structure)
    upload = None
    local = None
    local_tmp = None
    if client is not None:
        from ansible_collections.hanzo.kms.plugins.module_utils import s3 as s3_utils  # pylint: disable=import-outside-toplevel
        s3_utils.check_bucket(client, bucket)
        upload = S3StreamUpload(client, bucket, result['key'], part_size=int(params.get('part_size') or 5) * 1024 * 1024,
                                concurrency=int(params.get('upload_concurrency') or 1))
    if dest:
        local_tmp = f'{dest}.part'
        parent = os.path.dirname(os.path.abspath(dest))
        if not os.path.isdir(parent):
            raise RedisError(f'destination directory {parent} does not exist')
        local = open_private(local_tmp)

    def sink(chunk):
        validator.feed(chunk)
        if upload is not None:
            upload.write(chunk)
        if local is not None:
            local.write(chunk)

    try:
        size, info = fetch_rdb(params, sink, timeout=float(params.get('timeout') or 3600))
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
        with s3_utils.wrap_errors('write manifest', bucket=bucket):
            client.put_object(Bucket=bucket, Key=result['manifest_key'], Body=body, ContentType='application/json')
    if dest:
        with open_private(dest + '.manifest.json') as handle:
            handle.write(body)
        result['dest_manifest'] = dest + '.manifest.json'
    result.update(manifest=manifest, size=size, sha256=manifest['sha256'], crc64=manifest['crc64'],
                  rdb_version=manifest['rdb_version'], server_version=manifest['source']['server_version'],
                  keys_per_db=manifest['keys_per_db'], verified=manifest['verified'], duration=round(time.monotonic() - started, 3))
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
        crc64=None if summary.checksum_stored is None else f'{summary.checksum_stored:016x}',
        rdb_version=summary.version,
        keys_per_db={str(k): v for k, v in sorted(summary.keys_per_db.items())} if parsed else None,
        keyspace_at_start=info['keyspace'],
        functions=len(summary.functions) if parsed else None,
        verified=redis_verify.record_check(summary, validator) if analyzed else None,
        source={
            'host': params.get('host'), 'port': params.get('port'), 'site': params.get('site'),
            'server': info['server'], 'server_version': info['version'],
            'rdb_redis_ver': aux.get('redis-ver') or aux.get('valkey-ver'),
            'method': 'replication',
        },
    )
