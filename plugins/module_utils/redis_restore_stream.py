# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``method: replication`` from S3 with the verification overlapping the transfer.

A replica whose ``repl-diskless-load`` is ``disabled`` (Redis's default) writes a full-sync payload to a temporary
file and only flushes its dataset and loads once every announced byte has arrived; when the link drops before that,
it discards the temporary file and keeps its data (``readSyncBulkPayload`` / ``replicationAbortSyncTransfer`` in
``replication.c``). So the RDB is served while it downloads from S3: each chunk is sent on, then hashed (SHA-256,
CRC64) and, when the manifest records no usable structure check, parsed by ``StreamValidator``; the last bytes are
held back until every check passed (SHA-256 and size against the manifest, the CRC64 trailer against the data and
the manifest, the structure pass when it runs). On a mismatch the link is dropped and the target never loads anything.

The target's ``repl-diskless-load`` is read first and set to ``disabled`` for the duration (put back afterwards, also
on failure); when it cannot be read or set, the RDB is downloaded and verified completely before it is served
(verify-then-send). Plain Python (boto3 for S3).
"""

from __future__ import annotations

import queue
import socket
import threading

from ansible_collections.hanzo.kms.plugins.module_utils import redis_client, redis_rdb, redis_verify
from ansible_collections.hanzo.kms.plugins.module_utils.redis_client import RedisError, ReplyError, config_get

CHUNK = 1024 * 1024  # S3 read size
PREFETCH = 8  # chunks read ahead of the sender (bounded memory: PREFETCH x CHUNK)
HOLD_BACK = 64 * 1024  # bytes kept from the replica until every check passed
STREAM_MAX_RECORD = 32 * 1024 * 1024  # larger records: the streamed pass gives up and a downloaded copy is checked
NOT_CHANGED = "the target was not changed"


class VerificationFailed(Exception):
    """The bytes failed a check during the transfer; the link was dropped before the last bytes."""


class NeedsFilePass(Exception):
    """The structure pass could not run on the stream (a record above its bound); verify a downloaded copy instead."""


def wants_stream(params, method, mode, check_mode, can_reach_listener):
    """Whether this restore takes the overlapped path (S3 source, replication, not check mode, not disabled)."""
    if check_mode or params.get("src") or not params.get("overlap_transfer", True) or mode != "replace":
        return False
    return method == "replication" or (method == "auto" and can_reach_listener(params))


class S3RdbStream:
    """The RDB object of a backup, read ahead by a thread, checked chunk by chunk as it is consumed."""

    def __init__(self, client, bucket, key, manifest, source):
        self.manifest = manifest
        self.source = source
        self.bucket = bucket
        self.key = key
        replaces, reason = redis_verify.manifest_replaces_pass(manifest)
        self.verification = "manifest" if replaces else "full"
        self.verification_reason = reason
        self.size = manifest.get("size")
        self.validator = redis_rdb.StreamValidator(structure=not replaces, max_record=STREAM_MAX_RECORD)
        self.summary = redis_verify.summary_from_manifest(manifest) if replaces else None
        self.version = manifest.get("rdb_version")
        self.sent = 0
        self.received = 0
        self._queue = queue.Queue(PREFETCH)
        self._stop = threading.Event()
        self._body = None
        self._first = None
        self._sending = False
        from ansible_collections.hanzo.kms.plugins.module_utils import s3 as s3_utils  # pylint: disable=import-outside-toplevel

        with s3_utils.wrap_errors("download RDB", bucket=bucket):
            resp = client.get_object(Bucket=bucket, Key=key)
        self._body = resp["Body"]
        length = resp.get("ContentLength")
        if isinstance(self.size, int) and length is not None and int(length) != self.size:
            self.close()
            raise VerificationFailed(
                f"s3://{bucket}/{key} has {length} bytes but the manifest says {self.size}; {NOT_CHANGED}"
            )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        # the header gives the RDB version before the target is touched (checked against the manifest at the end)
        self._first = self._next()
        if self._first:
            try:
                self.version = redis_rdb.parse_header(self._first[: redis_rdb.HEADER_LEN])
            except redis_rdb.RdbError as exc:
                self.close()
                raise VerificationFailed(f"the RDB is unusable: {exc}; {NOT_CHANGED}") from None

    # ---- reading ------------------------------------------------------------------------------------------------
    def _read(self):
        try:
            for chunk in self._body.iter_chunks(CHUNK):
                while not self._stop.is_set():
                    try:
                        self._queue.put(chunk, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._queue.put(None)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            self._queue.put(exc)

    def _next(self):
        item = self._queue.get()
        if isinstance(item, Exception):
            raise VerificationFailed(f"reading s3://{self.bucket}/{self.key} failed: {item}; {NOT_CHANGED}")
        return item

    def chunks(self):
        """Every chunk of the object once; the checks see each one right after the caller used it."""
        first, self._first = self._first, None
        chunk = first if first is not None else self._next()
        while chunk is not None:
            self.received += len(chunk)
            if isinstance(self.size, int) and self.received > self.size:
                raise VerificationFailed(
                    f"the object is longer than the {self.size} bytes the manifest says; {NOT_CHANGED}"
                )
            yield chunk
            try:
                self.validator.feed(chunk)
            except redis_rdb.RdbError as exc:
                raise VerificationFailed(f"the RDB is unusable: {exc}; {NOT_CHANGED}") from None
            chunk = self._next()

    def close(self):
        self._stop.set()
        if self._body is not None:
            try:
                self._body.close()
            except Exception:  # pylint: disable=broad-exception-caught
                pass

    # ---- checks ---------------------------------------------------------------------------------------------------
    def finish(self):
        """Every check on the whole stream; VerificationFailed, or NeedsFilePass when the structure pass gave up."""
        manifest = self.manifest
        if self.received != manifest.get("size"):
            raise VerificationFailed(
                f"RDB size {self.received} does not match the manifest ({manifest.get('size')}); {NOT_CHANGED}"
            )
        sha256 = self.validator.hexdigest()
        if sha256 != manifest.get("sha256"):
            raise VerificationFailed(
                f"sha256 of the RDB ({sha256}) does not match the manifest ({manifest.get('sha256')}); {NOT_CHANGED}"
            )
        try:
            summary = self.validator.finish()
        except redis_rdb.RdbError as exc:
            raise VerificationFailed(f"the RDB is unusable: {exc}; {NOT_CHANGED}") from None
        stored = summary.checksum_stored
        if manifest.get("crc64") and stored is not None and manifest["crc64"] != f"{stored:016x}":
            raise VerificationFailed(f"the RDB CRC64 does not match the manifest; {NOT_CHANGED}")
        if manifest.get("rdb_version") is not None and manifest["rdb_version"] != summary.version:
            raise VerificationFailed(
                f"the RDB has version {summary.version} but the manifest says {manifest['rdb_version']}; {NOT_CHANGED}"
            )
        if self.verification == "full":
            if not self.validator.structure_complete:
                raise NeedsFilePass("a record is larger than the streamed structure pass holds")
            self.summary = summary
        if self.summary.module_aux or self.summary.module_keys:
            raise VerificationFailed(
                f"the RDB holds module data ({self.summary.module_keys} module keys, "
                f"{self.summary.module_aux} module aux sections); restoring module data is not "
                f"supported; {NOT_CHANGED}"
            )
        self.summary.size = self.received

    # ---- the two ways to serve -------------------------------------------------------------------------------------
    def send(self, sock):
        """Overlapped: send while checking, hold back the last bytes until ``finish`` passed. Returns bytes sent.

        On any failure the link is dropped (the replica discards its partial copy) and the exception propagates.
        """
        if self._sending:
            # the target reconnected after a dropped link: the stream is partly consumed, serve a checked copy instead
            _drop(sock)
            raise NeedsFilePass("the link to the target dropped during the streamed transfer")
        self._sending = True
        limit = self.size - min(HOLD_BACK, self.size)
        held = []
        sent = 0
        try:
            for chunk in self.chunks():
                view = memoryview(chunk)
                if sent < limit:
                    take = min(len(view), limit - sent)
                    sock.sendall(view[:take])
                    sent += take
                    view = view[take:]
                if len(view):
                    held.append(bytes(view))
                self.sent = sent
            self.finish()
            for part in held:
                sock.sendall(part)
                sent += len(part)
            self.sent = sent
            return sent
        except BaseException:
            _drop(sock)
            raise

    def to_file(self, path):
        """Verify-then-send: write the whole object to ``path`` and run every check."""
        with open(path, "wb") as handle:
            for chunk in self.chunks():
                handle.write(chunk)
        self.finish()


def _drop(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def open_s3_stream(client, params, resolve_s3_source, load_manifest):
    """Resolve the backup, read its manifest and start the RDB download; None when the manifest has no size (the
    replica needs it for the framing), in which case the caller downloads and verifies first."""
    bucket = params["bucket"]
    rdb_key, manifest_key = resolve_s3_source(client, params)
    manifest = load_manifest(client, bucket, manifest_key)
    if not isinstance(manifest.get("size"), int) or manifest["size"] <= 0:
        return None
    source = {"type": "s3", "bucket": bucket, "key": rdb_key, "manifest_key": manifest_key}
    return S3RdbStream(client, bucket, rdb_key, manifest, source)


# --------------------------------------------------------------------------------------------------------------
# The target's repl-diskless-load
# --------------------------------------------------------------------------------------------------------------
def prepare_disk_load(params):
    """Make the target load a full sync from disk. Returns (previous value, whether it was changed); previous is None
    when CONFIG GET/SET is unavailable (renamed or denied): then the overlapped transfer is not safe."""
    client = redis_client.connect(params, timeout=60.0)
    try:
        try:
            before = config_get(client, "repl-diskless-load")
        except ReplyError:
            return None, False
        if before is None:
            return None, False
        if before == "disabled":
            return before, False
        try:
            client.config_set("repl-diskless-load", "disabled")
        except ReplyError:
            return None, False
        return before, True
    finally:
        client.close()


def put_back_disk_load(params, before):
    """Restore ``repl-diskless-load`` on a fresh connection (the one used during the restore may be broken)."""
    last = None
    for _attempt in range(3):
        try:
            client = redis_client.connect(params, timeout=60.0)
        except RedisError as exc:
            last = exc
            continue
        try:
            client.config_set("repl-diskless-load", before)
            return
        except RedisError as exc:
            last = exc
        finally:
            client.close()
    raise RedisError(f"could not put repl-diskless-load back to {before!r}: {last}")


def replicate(params, stream, timeout, serve, verify_file, workdir, refetch):
    """Serve ``stream`` to the target over replication, verification overlapping the transfer when it is safe.

    ``serve(payload=None, path=None, disk_load=None)`` runs the replication restore (the listener and the target's settings);
    ``verify_file(path)`` verifies a local copy (returns an object with ``summary`` and ``verification``); ``refetch()`` downloads the object again into
    a local file and returns its path. Returns the replication result with ``transfer`` and ``repl_diskless_load``.
    """
    before, changed = prepare_disk_load(params)
    info = {"repl_diskless_load": before, "repl_diskless_load_set": changed}
    if before is None:
        # cannot make sure the target keeps its data on a dropped link: download and verify everything first
        import os  # pylint: disable=import-outside-toplevel

        path = os.path.join(workdir, "dump.rdb")
        try:
            stream.to_file(path)
        except NeedsFilePass:
            checked = verify_file(path)
            stream.summary, stream.verification = checked.summary, checked.verification
        finally:
            stream.close()
        result = serve(path=path)
        result.update(info, transfer="verify_then_send")
        return result
    error = None
    try:
        try:
            # the previous setting travels in the restore's crash record, so a re-run puts it back too
            result = serve(payload=stream, disk_load=before if changed else None)
            result.update(info, transfer="overlapped")
        except NeedsFilePass as exc:
            stream.close()
            path = refetch()
            checked = verify_file(path)
            stream.summary, stream.verification = checked.summary, checked.verification
            stream.verification_reason += f"; {exc}, so a downloaded copy was checked"
            result = serve(path=path, disk_load=before if changed else None)
            result.update(info, transfer="verify_then_send")
        return result
    except BaseException as exc:
        error = exc
        raise
    finally:
        stream.close()
        if changed:
            try:
                put_back_disk_load(params, before)
            except RedisError as exc:
                if error is None:
                    raise
                if error.args and isinstance(error.args[0], str):
                    error.args = (f"{error.args[0]}; also {exc}",) + error.args[1:]
