# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the bounded multipart buffering of S3StreamUpload (part cutting, concurrency bound, part limit).

The client here only records what it is given: S3 itself is exercised by tests/integration/test_redis_rdb.py against
the lab's SeaweedFS. What these tests pin is our own bookkeeping.
"""

from __future__ import annotations

import os
import threading

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import s3_upload
from ansible_collections.hanzo.kms.plugins.module_utils.s3 import S3Error

MIB = 1024 * 1024


class RecordingClient:
    """Keeps every part body it is given; counts the uploads running at the same time."""

    def __init__(self):
        self.parts = {}
        self.lock = threading.Lock()
        self.running = 0
        self.most_running = 0
        self.completed = None
        self.aborted = False
        self.put = None

    def create_multipart_upload(self, **_kwargs):
        return {"UploadId": "u1"}

    def upload_part(self, PartNumber, Body, **_kwargs):  # noqa: N803 pylint: disable=invalid-name
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            self.parts[PartNumber] = bytes(Body)
            return {"ETag": f"e{PartNumber}"}
        finally:
            with self.lock:
                self.running -= 1

    def complete_multipart_upload(self, MultipartUpload, **_kwargs):  # noqa: N803 pylint: disable=invalid-name
        self.completed = MultipartUpload["Parts"]

    def abort_multipart_upload(self, **_kwargs):
        self.aborted = True

    def put_object(self, Body, **_kwargs):  # noqa: N803 pylint: disable=invalid-name
        self.put = bytes(Body)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_parts_are_cut_at_part_size_and_reassemble(concurrency):
    data = os.urandom(17 * MIB + 123)
    client = RecordingClient()
    upload = s3_upload.S3StreamUpload(client, "b", "k", part_size=5 * MIB, concurrency=concurrency)
    view = memoryview(data)
    for offset in range(0, len(data), 700_001):  # chunks that straddle part boundaries
        upload.write(view[offset : offset + 700_001])
    upload.close()
    assert [len(client.parts[n]) for n in sorted(client.parts)] == [5 * MIB, 5 * MIB, 5 * MIB, 2 * MIB + 123]
    assert b"".join(client.parts[n] for n in sorted(client.parts)) == data
    assert [p["PartNumber"] for p in client.completed] == [1, 2, 3, 4]
    assert client.most_running <= concurrency
    assert upload.size == len(data)


def test_small_object_is_one_put():
    client = RecordingClient()
    upload = s3_upload.S3StreamUpload(client, "b", "k", part_size=5 * MIB)
    upload.write(b"REDIS0011tiny")
    upload.close()
    assert client.put == b"REDIS0011tiny" and not client.parts


def test_writer_waits_for_a_free_upload_slot():
    """With one upload slot, a second full part is not handed over while the first is still uploading."""
    release = threading.Event()
    started = threading.Event()

    class SlowClient(RecordingClient):
        def upload_part(self, PartNumber, Body, **kwargs):  # noqa: N803 pylint: disable=invalid-name
            started.set()
            release.wait(30)
            return super().upload_part(PartNumber=PartNumber, Body=Body, **kwargs)

    client = SlowClient()
    upload = s3_upload.S3StreamUpload(client, "b", "k", part_size=5 * MIB, concurrency=1)
    writer = threading.Thread(target=lambda: upload.write(bytes(15 * MIB)))
    writer.start()
    assert started.wait(30)
    # part 1 is uploading; wait until the writer has filled part 2 (it then asks for the one slot, which is taken)
    for _unused in range(30_000):
        if upload.filled == upload.part_size:
            break
        writer.join(0.001)
    assert upload.filled == upload.part_size and upload.number == 1 and writer.is_alive()
    release.set()
    writer.join(30)
    upload.close()
    assert sorted(client.parts) == [1, 2, 3]


def test_more_parts_than_s3_allows_fails_with_a_clear_message(monkeypatch):
    monkeypatch.setattr(s3_upload, "MAX_PARTS", 2)
    client = RecordingClient()
    upload = s3_upload.S3StreamUpload(client, "b", "k", part_size=5 * MIB)
    with pytest.raises(S3Error, match="larger than 2 parts of 5 MiB.*raise part_size"):
        upload.write(bytes(15 * MIB))
    upload.abort()
    assert client.aborted
