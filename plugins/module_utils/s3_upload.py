# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Streaming an object of unknown size into S3: a multipart upload fed chunk by chunk, parts uploaded by background
threads, memory bounded by the parts in flight. Plain Python; the client is a boto3 S3 client (``s3.s3_client``).
"""

from __future__ import annotations

import queue
import threading

from ansible_collections.hanzo.kms.plugins.module_utils.s3 import S3Error

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's smallest part (all but the last)
MAX_PARTS = 10000  # S3's limit of parts in one multipart upload


class S3StreamUpload:
    """Multipart upload fed by ``write``; full parts are uploaded by ``concurrency`` background threads.

    Memory: at most ``concurrency + 1`` part buffers exist (one being filled, the others uploading). A full part waits
    for a free upload slot, so memory stays bounded whatever the object size. Parts are handed to boto3 without a copy.
    """

    def __init__(self, client, bucket, key, part_size=MIN_PART_SIZE, concurrency=1, content_type=None):
        self.client = client
        self.bucket = bucket
        self.key = key
        self.part_size = max(int(part_size), MIN_PART_SIZE)
        self.concurrency = max(int(concurrency), 1)
        self.part = bytearray(self.part_size)
        self.filled = 0
        self.parts = {}
        self.number = 0
        self.upload_id = None
        self.error = None
        self.content_type = content_type or "application/octet-stream"
        self.slots = threading.Semaphore(self.concurrency)
        self.queue = queue.Queue()
        self.threads = []
        self.size = 0

    def _start(self):
        resp = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key, ContentType=self.content_type)
        self.upload_id = resp["UploadId"]
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
                    resp = self.client.upload_part(
                        Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
                    )
                    self.parts[number] = resp["ETag"]
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
            raise S3Error(
                f"{self.key} is larger than {MAX_PARTS} parts of {self.part_size // 2**20} MiB, the most S3 "
                "allows in one object; raise part_size",
                code="TooManyParts",
            )
        self.slots.acquire()  # pylint: disable=consider-using-with
        if self.error is not None:
            self.slots.release()
            raise self.error
        body = self.part
        if self.filled < len(body):
            del body[self.filled :]
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
            self.part[self.filled : self.filled + take] = view[offset : offset + take]
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
            body = bytes(self.part[: self.filled]) if self.part is not None else b""
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
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": self.parts[n]} for n in sorted(self.parts)]},
        )

    def abort(self):
        self.error = self.error or RuntimeError("aborted")
        self.part = None
        self._join()
        if self.upload_id is not None:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            except Exception:  # pylint: disable=broad-exception-caught
                pass
