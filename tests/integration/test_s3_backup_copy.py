"""hanzo.kms.s3_backup_copy against the lab's real S3 server (SeaweedFS) and real Redis servers: one object store per
data center (docs/install.md, "Object storage"), each stood for by a bucket of its own.

dc1's newest Redis backup (a real one, taken by the code of hanzo.kms.redis_rdb_backup) is copied into dc2's store:
only the newest (an older one stays behind), once (a second run changes nothing), nothing in check mode. Then dc1's
store is lost (its endpoint: a port nothing listens on): the copy fails naming it and dc2's store keeps its copy, from
which alone a restore into another Redis gives back every key.
"""

from __future__ import annotations

import datetime
import uuid

import pytest

# pylint: disable=redefined-outer-name
from tests.ansible_run import run_module
from tests.integration.test_s3_backup_info import put_backup, take_backup, utcnow
from tests.integration.test_s3_retention import all_keys, client, conn, drop_bucket  # noqa: F401  pylint: disable=unused-import
from tests.lab import redis as lab_redis
from tests.lab.core import free_port

KEYS = 25


@pytest.fixture
def stores(client):
    """dc1's and dc2's stores: a bucket each on the lab's S3 server."""
    names = {site: f"copy-{site}-{uuid.uuid4().hex[:10]}" for site in ("dc1", "dc2")}
    for name in names.values():
        client.create_bucket(Bucket=name)
    yield names
    for name in names.values():
        drop_bucket(client, name)


@pytest.fixture(scope="module")
def redis_pair(lab_handle):
    tag = uuid.uuid4().hex[:6]
    source, target = (lab_redis.up(lab_handle, f"copy-{name}-{tag}") for name in ("dc1", "dc2"))
    lab_redis.client(source).mset({f"copy:{i}": str(i) for i in range(KEYS)})
    return source, target


def copy(conn, stores, check=False, source=None):
    args = dict(conn, bucket=stores["dc2"], site="dc1", source=dict(source or conn, bucket=stores["dc1"]))
    return run_module("hanzo.kms.s3_backup_copy", args, check_mode=check, timeout=300).result()


def test_the_newest_backup_reaches_the_other_store_which_alone_restores_it(conn, client, stores, redis_pair):
    source, target = redis_pair
    put_backup(client, stores["dc1"], "dc1", utcnow() - datetime.timedelta(days=1))
    taken = take_backup(conn, stores["dc1"], source, "dc1")
    newest = taken["key"].split("/")[2]

    checked = copy(conn, stores, check=True)
    assert checked["changed"] is True and checked["backup"] == newest, checked
    assert all_keys(client, stores["dc2"]) == [], "check mode copies nothing"

    copied = copy(conn, stores)
    assert copied["changed"] is True and copied["rdb_key"] == taken["key"] and copied["reason"] is None, copied
    assert all_keys(client, stores["dc2"]) == [taken["key"], taken["key"].replace("dump.rdb", "manifest.json")]
    assert copied["size"] == client.head_object(Bucket=stores["dc1"], Key=taken["key"])["ContentLength"]

    again = copy(conn, stores)
    assert again["changed"] is False and again["reason"] == "the destination has it", again

    # dc1's data center is lost with its store: nothing to copy from, and dc2's store keeps what it has
    lost = copy(conn, stores, source=dict(conn, endpoint_url=f"https://127.0.0.1:{free_port()}"))
    assert lost.get("failed") and "cannot reach the S3 endpoint https://127.0.0.1:" in lost["msg"], lost
    assert len(all_keys(client, stores["dc2"])) == 2

    restored = run_module(
        "hanzo.kms.redis_rdb_restore",
        dict(
            conn,
            bucket=stores["dc2"],
            prefix="redis",
            site="dc1",
            method="restore",
            host=target["host"],
            port=target["port"],
            password=target["password"],
        ),
        timeout=300,
    ).result()
    assert restored["source"]["key"] == taken["key"] and restored["keys_restored"] == {"0": KEYS}, restored
    assert lab_redis.client(target).get("copy:7") == b"7"
