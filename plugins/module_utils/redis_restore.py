# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verified Redis restore from an RDB (S3 object, newest complete backup under a prefix, or local file).

Everything is verified before the target is touched: sha256 against the manifest, the RDB CRC64 trailer, the RDB
version against the target server's, and a full structural pass. Methods:

* ``restore``: pipelined ``RESTORE key ttl payload REPLACE ABSTTL`` (payloads sliced from the RDB, never decoded),
  optionally over several connections (forked workers, each with its own range of keys); functions through
  ``FUNCTION RESTORE``.
* ``replication``: this process acts as a replication master; the target (``REPLICAOF`` us) loads the RDB natively,
  then ``REPLICAOF NO ONE`` and its previous replication settings come back.
* ``file``: place the RDB into the data dir of a stopped server (and move the AOF aside so the RDB is loaded).
* ``auto``: ``replication`` when the target can reach our listener, else ``restore``.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import secrets
import shutil
import socket
import struct
import tempfile
import threading
import time

from ansible_collections.hanzo.kms.plugins.module_utils import redis_rdb, redis_restore_stream, redis_verify
from ansible_collections.hanzo.kms.plugins.module_utils.redis_backup import (
    MANIFEST_NAME, RDB_NAME, ReplyError, RespConnection, encode_command, rdb_loadable, rdb_version_for,
    server_info, parse_info,
)

RdbError = redis_rdb.RdbError
_U64 = struct.Struct('<Q')


class RestoreError(Exception):
    """A restore precondition or step failed; the message says what and whether the target was changed."""


# --------------------------------------------------------------------------------------------------------------
# Source resolution and verification
# --------------------------------------------------------------------------------------------------------------
def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        while True:
            chunk = handle.read(4 * 1024 * 1024)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


def _load_manifest_bytes(data, where):
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise RestoreError(f'manifest {where} is not valid JSON: {exc}') from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get('sha256'), str):
        raise RestoreError(f'manifest {where} has no sha256')
    return manifest


def resolve_s3_source(client, params):
    """(rdb key, manifest key) from ``key`` or the newest complete backup under ``prefix``/``site``."""
    from ansible_collections.hanzo.kms.plugins.module_utils import s3_retention  # pylint: disable=import-outside-toplevel
    bucket = params['bucket']
    key = params.get('key')
    if key:
        base = key.rsplit('/', 1)[0] + '/' if '/' in key else ''
        return key, base + MANIFEST_NAME
    prefix = '/'.join(p.strip('/') for p in (params.get('prefix') or '', params.get('site') or '') if p and p.strip('/'))
    backups = s3_retention.list_complete_backups(client, bucket, prefix)
    for backup in backups:
        rdb_key = backup['prefix'] + RDB_NAME
        if rdb_key in backup['keys']:
            return rdb_key, backup['manifest_key']
    raise RestoreError(f'no complete backup (with {MANIFEST_NAME} and {RDB_NAME}) under s3://{bucket}/{prefix}')


def read_s3_manifest(client, bucket, manifest_key):
    from ansible_collections.hanzo.kms.plugins.module_utils import s3 as s3_utils  # pylint: disable=import-outside-toplevel
    with s3_utils.wrap_errors('read manifest', bucket=bucket):
        try:
            body = client.get_object(Bucket=bucket, Key=manifest_key)['Body'].read()
        except Exception as exc:  # pylint: disable=broad-exception-caught
            code = getattr(exc, 'response', {}).get('Error', {}).get('Code') if hasattr(exc, 'response') else None
            if code in ('NoSuchKey', '404'):
                raise RestoreError(f's3://{bucket}/{manifest_key} does not exist: the backup is incomplete '
                                   'and is never restored') from None
            raise
    return _load_manifest_bytes(body, f's3://{bucket}/{manifest_key}')


def fetch_s3_source(client, params, workdir):
    """Download manifest + RDB (streaming, sha256 on the fly) into ``workdir``. Returns (path, manifest, source)."""
    from ansible_collections.hanzo.kms.plugins.module_utils import s3 as s3_utils  # pylint: disable=import-outside-toplevel
    bucket = params['bucket']
    rdb_key, manifest_key = resolve_s3_source(client, params)
    manifest = read_s3_manifest(client, bucket, manifest_key)
    path = os.path.join(workdir, RDB_NAME)
    digest = hashlib.sha256()
    with s3_utils.wrap_errors('download RDB', bucket=bucket):
        resp = client.get_object(Bucket=bucket, Key=rdb_key)
        with open(path, 'wb') as handle:
            for chunk in resp['Body'].iter_chunks(4 * 1024 * 1024):
                digest.update(chunk)
                handle.write(chunk)
    source = {'type': 's3', 'bucket': bucket, 'key': rdb_key, 'manifest_key': manifest_key}
    return path, manifest, digest.hexdigest(), source


def verify_source(path, manifest, sha256, recorded_check_ok=False):
    """sha256/size against the manifest, then a full structural + CRC64 pass. Returns (RdbFile, mmap, handle).

    With ``recorded_check_ok`` (a method that does not parse the RDB itself) and a manifest whose recorded structure
    check replaces the pass (``redis_verify.manifest_replaces_pass``), only the header and CRC64 are checked against
    it: returns (RecordedRdb, None, None).
    """
    size = os.path.getsize(path)
    if manifest is not None:
        if manifest.get('sha256') != sha256:
            raise RestoreError(f'sha256 of the RDB ({sha256}) does not match the manifest ({manifest.get("sha256")}); '
                               'the target was not changed')
        if manifest.get('size') is not None and int(manifest['size']) != size:
            raise RestoreError(f'RDB size {size} does not match the manifest ({manifest["size"]}); the target was not changed')
    if size == 0:
        raise RestoreError('the RDB file is empty; the target was not changed')
    replaces, reason = redis_verify.manifest_replaces_pass(manifest) if manifest is not None else (False, 'no manifest')
    if recorded_check_ok and replaces:
        try:
            recorded = redis_verify.check_file_against_record(path, manifest, reason)
        except RdbError as exc:
            raise RestoreError(f'the RDB is unusable: {exc}; the target was not changed') from None
        if recorded.summary.module_aux or recorded.summary.module_keys:
            raise RestoreError(f'the RDB holds module data ({recorded.summary.module_keys} module keys, '
                               f'{recorded.summary.module_aux} module aux sections); restoring module data is not '
                               'supported; the target was not changed')
        return recorded, None, None
    handle = open(path, 'rb')  # pylint: disable=consider-using-with
    try:
        buf = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        handle.close()
        raise RestoreError(f'cannot map {path}: {exc}') from None
    try:
        rdb = redis_rdb.RdbFile(buf, check_crc=True)
        summary = rdb.scan(checkpoint_every=5000)
        rdb.verification = 'full'
        rdb.verification_reason = reason
    except RdbError as exc:
        buf.close()
        handle.close()
        raise RestoreError(f'the RDB is unusable: {exc}; the target was not changed') from None
    if manifest is not None and manifest.get('crc64') and summary.checksum_stored is not None \
            and manifest['crc64'] != f'{summary.checksum_stored:016x}':
        buf.close()
        handle.close()
        raise RestoreError('the RDB CRC64 does not match the manifest; the target was not changed')
    if summary.module_aux or summary.module_keys:
        buf.close()
        handle.close()
        raise RestoreError(f'the RDB holds module data ({summary.module_keys} module keys, {summary.module_aux} module aux '
                           'sections); restoring module data is not supported; the target was not changed')
    return rdb, buf, handle


# --------------------------------------------------------------------------------------------------------------
# Target helpers
# --------------------------------------------------------------------------------------------------------------
def _target_dbs(conn):
    info = parse_info(conn.command('INFO', 'keyspace'))
    return sorted(int(k[2:]) for k in info if k.startswith('db') and k[2:].isdigit())


def target_keyspace(conn):
    info = parse_info(conn.command('INFO', 'keyspace'))
    out = {}
    for key, value in info.items():
        if key.startswith('db') and key[2:].isdigit():
            fields = dict(p.split('=', 1) for p in value.split(',') if '=' in p)
            out[key[2:]] = int(fields.get('keys', 0))
    return out


def clear_target(conn, batch=1000):
    """Delete every key of every db: FLUSHALL when allowed, else SCAN + UNLINK (FLUSHALL disabled, as Bitnami does)."""
    try:
        conn.command('FLUSHALL')
        return 'flushall'
    except ReplyError:
        pass
    for db in _target_dbs(conn):
        conn.command('SELECT', db)
        cursor = b'0'
        while True:
            cursor, keys = conn.command('SCAN', cursor, 'COUNT', batch)
            if keys:
                conn.command('UNLINK', *keys)
            if cursor in (b'0', 0, '0'):
                break
        # keys written between SCAN passes (or missed by rehashing) are swept until the db is empty
        while conn.command('DBSIZE'):
            cursor, keys = conn.command('SCAN', 0, 'COUNT', batch)
            if keys:
                conn.command('UNLINK', *keys)
    conn.command('SELECT', 0)
    return 'scan_unlink'


def _functions_supported(conn):
    try:
        conn.command('FUNCTION', 'LIST')
        return True
    except ReplyError:
        return False


# --------------------------------------------------------------------------------------------------------------
# Method: restore (pipelined RESTORE)
# --------------------------------------------------------------------------------------------------------------
_RESTORE_HEAD = b'*6\r\n$7\r\nRESTORE\r\n$'
_RESTORE_TAIL = b'$7\r\nREPLACE\r\n$6\r\nABSTTL\r\n'


def _restore_range(conn, rdb, start, stop, db, now_ms, batch_bytes=1 << 20):
    """RESTORE every key in [start, stop) of the RDB (stop None = to EOF). Returns a stats dict."""
    buf = rdb.buf
    version_bytes = struct.pack('<H', rdb.version)
    crc = redis_rdb.crc64_function()
    parser = redis_rdb._Parser(redis_rdb.RdbSummary())  # pylint: disable=protected-access
    parser.db = db
    end = len(buf) if stop is None else stop
    restored = {}
    expired = {}
    errors = []
    current_db = None
    out = []
    out_size = 0
    pending = 0          # replies not read yet
    sent_batches = []    # reply counts per batch in flight
    for rec in parser.parse(buf, start, end, True):
        rdb_db = rec.db
        expire = rec.expire_ms
        if expire is not None and 0 < expire <= now_ms:
            expired[rdb_db] = expired.get(rdb_db, 0) + 1
            continue
        if rdb_db != current_db:
            cmd = encode_command(('SELECT', rdb_db))
            out.append(cmd)
            out_size += len(cmd)
            pending += 1
            current_db = rdb_db
        body = buf[rec.start:rec.start + 1] + buf[rec.vpos:rec.end] + version_bytes
        payload = body + _U64.pack(crc(body))
        key = rec.key
        ttl = b'%d' % (expire if expire is not None and expire > 0 else 0)
        cmd = b'%s%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n%s' % (
            _RESTORE_HEAD, len(key), key, len(ttl), ttl, len(payload), payload, _RESTORE_TAIL)
        out.append(cmd)
        out_size += len(cmd)
        pending += 1
        restored[rdb_db] = restored.get(rdb_db, 0) + 1
        if out_size >= batch_bytes:
            conn.send(b''.join(out))
            out = []
            out_size = 0
            sent_batches.append(pending)
            pending = 0
            if len(sent_batches) > 1:
                _read_simple_replies(conn, sent_batches.pop(0), errors)
    if out:
        conn.send(b''.join(out))
        sent_batches.append(pending)
    for count in sent_batches:
        _read_simple_replies(conn, count, errors)
    return {'restored': restored, 'expired': expired, 'errors': errors}


def _read_simple_replies(conn, count, errors):
    """Read ``count`` single-line replies (+OK / -ERR); collect errors."""
    buf = conn.buf
    while count:
        lines = buf.count(b'\n')
        if not lines:
            conn._fill()  # pylint: disable=protected-access
            buf = conn.buf
            continue
        take = min(lines, count)
        idx = -1
        chunk_start = 0
        for _unused in range(take):
            idx = buf.index(b'\n', idx + 1)
            if buf[chunk_start] == 0x2D:  # '-'
                if len(errors) < 20:
                    errors.append(bytes(buf[chunk_start + 1:idx]).decode('utf-8', 'replace').strip())
                else:
                    errors.append(None)
            chunk_start = idx + 1
        del buf[:idx + 1]
        count -= take


def _merge_counts(total, part):
    for name in ('restored', 'expired'):
        for db, count in part[name].items():
            total[name][db] = total[name].get(db, 0) + count
    total['errors'].extend(part['errors'])


def _ranges(rdb, workers):
    """Split the key stream into ``workers`` contiguous ranges at recorded checkpoints: [(start, stop, db)]."""
    points = [(redis_rdb.HEADER_LEN, 0)] + list(getattr(rdb, 'checkpoints', []))
    if workers <= 1 or len(points) < 2:
        return [(redis_rdb.HEADER_LEN, None, 0)]
    step = len(points) / workers
    chosen = [points[int(i * step)] for i in range(workers)]
    chosen = [c for i, c in enumerate(chosen) if i == 0 or c != chosen[i - 1]]
    out = []
    for i, (pos, db) in enumerate(chosen):
        stop = chosen[i + 1][0] if i + 1 < len(chosen) else None
        out.append((pos, stop, db))
    return out


def method_restore(params, rdb, now_ms):
    """Run RESTORE over ``connections`` connections (forked workers when > 1). Returns stats."""
    workers = max(1, int(params.get('connections') or 1))
    ranges = _ranges(rdb, workers)
    total = {'restored': {}, 'expired': {}, 'errors': []}
    if len(ranges) == 1:
        conn = RespConnection(params, timeout=600.0)
        try:
            _merge_counts(total, _restore_range(conn, rdb, ranges[0][0], ranges[0][1], ranges[0][2], now_ms))
        finally:
            conn.close()
        return total
    children = []
    for start, stop, db in ranges:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            status = 0
            try:
                os.close(read_fd)
                conn = RespConnection(params, timeout=600.0)
                part = _restore_range(conn, rdb, start, stop, db, now_ms)
                conn.close()
                data = json.dumps({'restored': part['restored'], 'expired': part['expired'],
                                   'errors': part['errors']}).encode()
            except Exception as exc:  # pylint: disable=broad-exception-caught
                data = json.dumps({'fatal': f'{exc.__class__.__name__}: {exc}'}).encode()
                status = 1
            with os.fdopen(write_fd, 'wb') as handle:
                handle.write(data)
            os._exit(status)  # pylint: disable=protected-access
        os.close(write_fd)
        children.append((pid, read_fd))
    fatal = []
    for pid, read_fd in children:
        with os.fdopen(read_fd, 'rb') as handle:
            data = handle.read()
        os.waitpid(pid, 0)
        try:
            part = json.loads(data or b'{}')
        except ValueError:
            part = {'fatal': 'worker died without a result'}
        if 'fatal' in part or 'restored' not in part:
            fatal.append(part.get('fatal', 'worker died without a result'))
            continue
        part['restored'] = {int(k): v for k, v in part['restored'].items()}
        part['expired'] = {int(k): v for k, v in part['expired'].items()}
        _merge_counts(total, part)
    if fatal:
        raise RestoreError(f'restore worker failed (the target may be partially restored): {fatal[0]}')
    return total


def restore_functions(conn, rdb, mode):
    payload = rdb.function_payload()
    if payload is None:
        if mode == 'replace':
            try:
                if conn.command('FUNCTION', 'LIST'):
                    conn.command('FUNCTION', 'FLUSH')
            except ReplyError:
                pass
        return 0
    conn.command('FUNCTION', 'RESTORE', payload, 'FLUSH' if mode == 'replace' else 'REPLACE')
    return len(rdb.summary.functions)


# --------------------------------------------------------------------------------------------------------------
# Method: replication (we act as the master)
# --------------------------------------------------------------------------------------------------------------
class _FakeMaster:
    """Serve one full resync of ``path`` to the first replica that connects."""

    def __init__(self, path, listen_host, listen_port, payload=None):
        self.path = path
        self.payload = payload or _FilePayload(path)
        self.sock = socket.socket(socket.AF_INET6 if ':' in listen_host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((listen_host, int(listen_port or 0)))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.replid = secrets.token_hex(20)
        self.error = None
        self.sent = 0
        self.done = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self._serve()
        except Exception as exc:  # pylint: disable=broad-exception-caught
            self.error = exc
        finally:
            self.done.set()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                client, _addr = self.sock.accept()
            except socket.timeout:
                continue
            client.settimeout(60)
            if self._handle(client):
                self.client = client
                return

    def _handle(self, client):
        buf = bytearray()
        while True:
            while b'\n' not in buf:
                data = client.recv(65536)
                if not data:
                    client.close()
                    return False
                buf += data
            idx = buf.index(b'\n')
            line = bytes(buf[:idx]).strip()
            del buf[:idx + 1]
            args = _parse_inline_or_resp(line, buf, client)
            if not args:
                continue
            name = args[0].upper()
            if name in (b'PSYNC', b'SYNC'):
                if name == b'PSYNC':
                    client.sendall(b'+FULLRESYNC %s 0\r\n' % self.replid.encode())
                client.sendall(b'$%d\r\n' % self.payload.size)
                self.sent = self.payload.send(client)
                return True
            if name == b'PING':
                client.sendall(b'+PONG\r\n')
            else:  # AUTH, REPLCONF ...
                client.sendall(b'+OK\r\n')

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        for sock in (getattr(self, 'client', None), self.sock):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass


class _FilePayload:
    """The full-sync payload of a verified local RDB (``redis_restore_stream.S3RdbStream`` is the streamed one)."""

    def __init__(self, path):
        self.path = path

    @property
    def size(self):
        return os.path.getsize(self.path)

    def send(self, sock):
        with open(self.path, 'rb') as handle:
            return sock.sendfile(handle)


def _parse_inline_or_resp(line, buf, client):
    """Parse one command whose first line is ``line`` (RESP multibulk or inline)."""
    if not line.startswith(b'*'):
        return line.split()
    count = int(line[1:])
    args = []
    for _unused in range(count):
        while b'\n' not in buf:
            buf += client.recv(65536)
        idx = buf.index(b'\n')
        size = int(bytes(buf[1:idx]).strip())
        del buf[:idx + 1]
        while len(buf) < size + 2:
            buf += client.recv(65536)
        args.append(bytes(buf[:size]))
        del buf[:size + 2]
    return args


def _replication_state(conn):
    info = parse_info(conn.command('INFO', 'replication'))
    return {'role': info.get('role'), 'master_host': info.get('master_host'), 'master_port': info.get('master_port')}


def method_replication(params, rdb_path, timeout, payload=None):
    """Make the target a replica of our listener, serve the RDB, wait for the load, detach, restore its settings.

    ``payload`` (``size``, ``send(sock)``) replaces the file at ``rdb_path``: the streamed, overlapped transfer."""
    listen_host = params.get('listen_host') or '127.0.0.1'
    announce = params.get('announce_host') or listen_host
    master = _FakeMaster(rdb_path, listen_host, params.get('listen_port') or 0, payload=payload)
    conn = RespConnection(params, timeout=60.0)
    previous = None
    try:
        previous = _replication_state(conn)
        conn.command('REPLICAOF', announce, master.port)
        deadline = time.monotonic() + timeout
        while True:
            info = parse_info(conn.command('INFO', 'replication'))
            persistence = parse_info(conn.command('INFO', 'persistence'))
            if master.error is not None:
                _raise_listener_error(master.error)
            if info.get('master_link_status') == 'up' and persistence.get('loading') == '0' \
                    and info.get('master_sync_in_progress') == '0' and master.done.is_set():
                break
            if time.monotonic() > deadline:
                raise RestoreError(f'the target did not finish loading the RDB from {announce}:{master.port} '
                                   f'within {timeout:.0f}s (can it reach the listener?)')
            time.sleep(0.02)
    finally:
        try:
            conn.command('REPLICAOF', 'NO', 'ONE')
            if previous and previous.get('role') == 'slave' and previous.get('master_host'):
                conn.command('REPLICAOF', previous['master_host'], previous['master_port'])
        finally:
            conn.close()
            master.close()
    return {'sent': master.sent, 'previous_replication': previous}


def _raise_listener_error(error):
    if isinstance(error, redis_restore_stream.VerificationFailed):
        raise RestoreError(f'refused during the transfer, the link was dropped before the last bytes: {error}') from None
    if isinstance(error, redis_restore_stream.NeedsFilePass):
        raise error
    raise RestoreError(f'replication listener failed: {error}')


def can_reach_listener(params):
    """True when the target can connect back to our listener (MIGRATE-free check: a short REPLICAOF is not used)."""
    listen_host = params.get('listen_host') or '127.0.0.1'
    announce = params.get('announce_host') or listen_host
    target_host = params.get('host') or '127.0.0.1'
    # without an explicit announce address we only claim reachability for a target on loopback
    return bool(params.get('announce_host')) or target_host in ('127.0.0.1', 'localhost', '::1') and announce == listen_host


# --------------------------------------------------------------------------------------------------------------
# Method: file
# --------------------------------------------------------------------------------------------------------------
def _server_running(params):
    try:
        sock = socket.create_connection((params.get('host') or '127.0.0.1', int(params.get('port') or 6379)), timeout=1)
    except OSError:
        return False
    sock.close()
    return True


def method_file(params, rdb_path, stamp):
    """Write the RDB as ``dbfilename`` into ``data_dir``; if the server uses an AOF, move it aside and put in its place
    an AOF whose base is this RDB (Redis 7 multi-part AOF manifest; a single RDB-preamble file before 7.0), so the next
    start loads the RDB whether or not ``appendonly`` is on."""
    data_dir = params['data_dir']
    if not os.path.isdir(data_dir):
        raise RestoreError(f'data_dir {data_dir} does not exist')
    if params.get('check_stopped', True) and _server_running(params):
        raise RestoreError(f'a server still answers on {params.get("host")}:{params.get("port")}; method file needs it '
                           'stopped (set check_stopped=false if that address belongs to another server); '
                           'the target was not changed')
    target = os.path.join(data_dir, params.get('dbfilename') or RDB_NAME)
    _copy_atomic(rdb_path, target)
    aof_dir_name = params.get('appenddirname') or 'appendonlydir'
    aof_name = params.get('appendfilename') or 'appendonly.aof'
    aof_dir = os.path.join(data_dir, aof_dir_name)
    aof_single = os.path.join(data_dir, aof_name)
    moved = []
    for path in (aof_dir, aof_single):
        if os.path.exists(path):
            aside = f'{path}.before-restore-{stamp}'
            os.rename(path, aside)
            moved.append(aside)
    aof_mode = params.get('aof') or 'auto'
    written = []
    if aof_mode == 'yes' or (aof_mode == 'auto' and moved):
        if any(m.startswith(aof_dir + '.') for m in moved) or not moved:
            os.mkdir(aof_dir)
            base = f'{aof_name}.1.base.rdb'
            _copy_atomic(rdb_path, os.path.join(aof_dir, base))
            manifest = os.path.join(aof_dir, f'{aof_name}.manifest')
            with open(manifest + '.tmp', 'w', encoding='ascii') as handle:
                handle.write(f'file {base} seq 1 type b\n')
            os.replace(manifest + '.tmp', manifest)
            written = [os.path.join(aof_dir, base), manifest]
        else:
            # Redis < 7: one AOF file; an RDB is a valid AOF "preamble"
            _copy_atomic(rdb_path, aof_single)
            written = [aof_single]
    return {'path': target, 'aof_moved_aside': moved, 'aof_written': written}


def _copy_atomic(src, dest):
    tmp = dest + '.restore-tmp'
    shutil.copyfile(src, tmp)
    with open(tmp, 'rb') as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, dest)


# --------------------------------------------------------------------------------------------------------------
# The whole restore
# --------------------------------------------------------------------------------------------------------------
def _db_dict(counts):
    return {str(k): v for k, v in sorted(counts.items())}


def run_restore(params, s3_client_factory=None, check_mode=False):
    started = time.monotonic()
    method = params.get('method') or 'auto'
    mode = params.get('mode') or 'replace'
    if method == 'replication' and mode != 'replace':
        raise RestoreError('method replication replaces the whole dataset; use mode=replace or method=restore')
    workdir = tempfile.mkdtemp(prefix='redis-rdb-restore-', dir=params.get('tmp_dir') or None)
    buf = handle = stream = None
    # methods that never parse the RDB themselves may rely on a structure check recorded in the manifest
    recorded_check_ok = method in ('replication', 'file') or (method == 'auto' and mode == 'replace'
                                                              and can_reach_listener(params))
    try:
        if params.get('src'):
            path = params['src']
            if not os.path.isfile(path):
                raise RestoreError(f'src {path} does not exist')
            manifest = None
            manifest_path = params.get('manifest') or (path + '.manifest.json')
            if os.path.isfile(manifest_path):
                with open(manifest_path, 'rb') as mhandle:
                    manifest = _load_manifest_bytes(mhandle.read(), manifest_path)
            sha256 = sha256_file(path)
            if params.get('sha256') and params['sha256'] != sha256:
                raise RestoreError(f'sha256 of {path} ({sha256}) is not the expected {params["sha256"]}; '
                                   'the target was not changed')
            source = {'type': 'file', 'path': path, 'manifest': manifest_path if manifest else None}
        else:
            client = s3_client_factory()
            stream = _open_stream(client, params, method, mode, check_mode)
            if stream is None:
                path, manifest, sha256, source = fetch_s3_source(client, params, workdir)
        if stream is not None:
            rdb, source, sha256 = stream, stream.source, stream.manifest['sha256']
        else:
            rdb, buf, handle = verify_source(path, manifest, sha256, recorded_check_ok)
        summary = rdb.summary  # None until the end of the transfer for a streamed full pass
        result = {'changed': False, 'method': method, 'mode': mode, 'source': source, 'sha256': sha256,
                  'rdb_version': rdb.version, 'verification': rdb.verification,
                  'verification_reason': rdb.verification_reason}
        if summary is not None:
            result.update(_summary_fields(summary))
        if method == 'file':
            result['changed'] = True
            if not check_mode:
                result.update(method_file(params, path, time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())))
            result['duration'] = round(time.monotonic() - started, 3)
            return result

        conn = RespConnection(params, timeout=600.0)
        try:
            info = server_info(conn)
            if not rdb_loadable(rdb.version, info['server'], info['version']):
                raise RestoreError(f'the RDB has version {rdb.version} but the target {info["server"]} {info["version"]} '
                                   f'loads RDB versions up to {rdb_version_for(info["server"], info["version"])}; '
                                   'restore onto the same or a newer server; the target was not changed')
            if summary is not None and summary.functions and not _functions_supported(conn):
                raise RestoreError('the RDB holds functions but the target has no FUNCTION command; the target was not changed')
            before = target_keyspace(conn)
            result.update(target_server=info['server'], target_version=info['version'], target_keys_before=before)
            if method == 'auto':
                method = 'replication' if mode == 'replace' and can_reach_listener(params) else 'restore'
                result['method'] = method
            now_ms = int(time.time() * 1000)
            result['changed'] = summary is None or bool(summary.keys_per_db or summary.functions
                                                        or (mode == 'replace' and any(before.values())))
            if check_mode:
                result['would_restore_per_db'] = _db_dict(summary.keys_per_db)
                result['duration'] = round(time.monotonic() - started, 3)
                return result
            if method == 'replication':
                timeout = float(params.get('timeout') or 3600)
                if stream is not None:
                    result['replication'] = _replicate_stream(params, stream, timeout, client, workdir)
                    summary = stream.summary
                    result.update(_summary_fields(summary), verification_reason=stream.verification_reason)
                else:
                    result['replication'] = method_replication(params, path, timeout)
                expired = {}
                restored = {int(k): v for k, v in target_keyspace(conn).items()}
                errors = []
            else:
                if mode == 'replace':
                    result['cleared_with'] = clear_target(conn)
                stats = method_restore(params, rdb, now_ms)
                result['functions_restored'] = restore_functions(conn, rdb, mode) if (summary.functions or mode == 'replace') \
                    and _functions_supported(conn) else 0
                restored, expired, errors = stats['restored'], stats['expired'], stats['errors']
            after = target_keyspace(conn)
        finally:
            conn.close()
        skipped = {}
        for db, count in summary.keys_per_db.items():
            rest = count - restored.get(db, 0) - expired.get(db, 0)
            if rest > 0 and method != 'replication':
                skipped[db] = rest
        result.update(changed=True, keys_restored=_db_dict(restored), keys_expired=_db_dict(expired),
                      keys_skipped=_db_dict(skipped), target_keys_after=after,
                      errors=[e for e in errors if e][:20], error_count=len(errors),
                      duration=round(time.monotonic() - started, 3))
        if errors and not params.get('ignore_errors'):
            raise RestoreError(f'{len(errors)} commands failed during the restore (first: '
                               f'{next((e for e in errors if e), "?")}); the target is partially restored')
        return result
    finally:
        if stream is not None:
            stream.close()
        if buf is not None:
            buf.close()
        if handle is not None:
            handle.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _summary_fields(summary):
    return {'bytes': summary.size, 'backup_keys_per_db': _db_dict(summary.keys_per_db), 'functions': len(summary.functions)}


def _open_stream(client, params, method, mode, check_mode):
    """The S3 object as a stream checked during the transfer (``redis_restore_stream``), or None for download-first."""
    if not redis_restore_stream.wants_stream(params, method, mode, check_mode, can_reach_listener):
        return None
    try:
        return redis_restore_stream.open_s3_stream(client, params, resolve_s3_source, read_s3_manifest)
    except redis_restore_stream.VerificationFailed as exc:
        raise RestoreError(str(exc)) from None


def _replicate_stream(params, stream, timeout, client, workdir):
    def serve(payload=None, path=None):
        return method_replication(params, path, timeout, payload=payload)

    def verify_file(path):
        rdb, buf, handle = verify_source(path, stream.manifest, sha256_file(path))
        buf.close()
        handle.close()
        return rdb.summary

    def refetch():
        return fetch_s3_source(client, dict(params, key=stream.key), workdir)[0]

    try:
        return redis_restore_stream.replicate(params, stream, timeout, serve, verify_file, workdir, refetch)
    except redis_restore_stream.VerificationFailed as exc:
        raise RestoreError(str(exc)) from None
