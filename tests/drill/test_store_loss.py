"""Drill (issue 18 item 1): one object store per data center, and the loss of a data center with its store.

Not in ``make test`` (about 15 min): ``make drill-store-loss``. On a lab started with HANZO_KMS_LAB_CNPG=operator and
HANZO_KMS_LAB_OBJECT_STORES=per-site (one SeaweedFS per site besides the shared one; the lab inventory then uses
``object_storage_layout: per_site``, each site its own store):

1. ``install.yml``: dc1's Cluster archives to dc1's store only, dc2's replica bootstraps from dc1's store (the CNPG
   distributed topology), each site holds the Secrets of both stores;
2. keys written to dc1's Redis, then ``backup.yml``: dc1's Redis backup in dc1's store and, copied, in dc2's store;
3. dc1 powered off (``node.lose_site``: its node, pods and its store);
4. ``failover.yml`` to dc2: dc2 promoted, the newest Redis backup restored from dc2's store (the report says so), the
   keys in dc2's Redis.

``HANZO_KMS_TEST_LAB_DIR`` may name a lab already up in that mode (it is reused and left running, without dc1).
Figures are printed with ``pytest -s`` (docs/benchmarks.md).
"""

# pylint: disable=redefined-outer-name
from __future__ import annotations

import os
import tempfile
import time

import pytest

from tests.integration.test_cnpg_operator_real import get, psql, report, site_redis
from tests.integration.test_cnpg_operator_real import playbook as run_lab_playbook
from tests.lab import node, stack
from tests.lab import s3 as lab_s3
from tests.lab.core import Lab
from tests.lab.fixtures import up_with

NAMESPACE = "kms"
FIGURES = {}
KEYS = 40


@pytest.fixture(scope="module")
def per_site_lab():
    reuse = os.environ.get("HANZO_KMS_TEST_LAB_DIR")
    lab = Lab(reuse or tempfile.mkdtemp(prefix="hanzo-kms-lab-stores-"))
    FIGURES["lab up, operator mode, a store per site (s)"] = up_with(
        lab, HANZO_KMS_LAB_CNPG="operator", HANZO_KMS_LAB_OBJECT_STORES="per-site"
    )
    yield lab
    print("\nstore-loss drill: " + ", ".join(f"{k} {v}" for k, v in FIGURES.items()))
    if not reuse:
        stack.down(lab, log=lambda _msg: None)


def playbook(lab, path, *args, timeout=1800):
    """``run_lab_playbook``, its output kept in the lab's reports directory (<playbook>-drill.log)."""
    run, seconds = run_lab_playbook(lab, path, *args, timeout=timeout)
    out = lab.dir / "reports" / f"{os.path.basename(path)}-drill.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(run.stdout, encoding="utf-8")
    return run, seconds


def store_keys(lab, site, prefix):
    entry = lab.state["sites"][site]["s3"]
    pages = lab_s3.client(entry).get_paginator("list_objects_v2").paginate(Bucket=entry["bucket"], Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))


@pytest.mark.timeout(3600)  # lab up, install, backup and failover on the operator lab: far beyond pytest.ini's 900 s
def test_failover_after_losing_dc1_and_its_store_restores_from_dc2s_store(per_site_lab):
    lab = per_site_lab
    _run, FIGURES["install.yml (s)"] = playbook(lab, "playbooks/install.yml", timeout=1800)

    # the distributed topology: each site's ObjectStore is its own store, with its own Secrets in both sites
    for site in ("dc1", "dc2"):
        stores = {o["metadata"]["name"]: o for o in get(lab, site, "-n", NAMESPACE, "objectstores")["items"]}
        for store_site in ("dc1", "dc2"):
            config = stores[f"kms-pg-{store_site}-store"]["spec"]["configuration"]
            own = lab.state["sites"][store_site]["s3"]
            assert config["destinationPath"] == f"s3://{own['bucket']}/cnpg/{store_site}/"
            assert config["endpointURL"] == own["pod_endpoint_url"]
            assert config["s3Credentials"]["accessKeyId"]["name"] == f"kms-object-store-{store_site}"
            get(lab, site, "-n", NAMESPACE, "secret", f"kms-object-store-{store_site}")
    assert store_keys(lab, "dc1", "cnpg/dc1/"), "dc1 archives to its own store"
    assert store_keys(lab, "dc2", "cnpg/dc1/") == [], "and not to dc2's"
    assert psql(lab, "dc2", "select pg_is_in_recovery()") == "t", "dc2's replica bootstrapped from dc1's store"

    dc1_redis = site_redis(lab, "dc1")
    dc1_redis.mset({f"drill:store:{i}": str(i) for i in range(KEYS)})
    _run, FIGURES["backup.yml (s)"] = playbook(lab, "playbooks/backup.yml", timeout=1800)
    in_dc1 = [k for k in store_keys(lab, "dc1", "redis/dc1/") if k.endswith("/manifest.json")]
    in_dc2 = [k for k in store_keys(lab, "dc2", "redis/dc1/") if k.endswith("/manifest.json")]
    assert in_dc1 and in_dc2 and in_dc1[-1] == in_dc2[-1], (in_dc1, in_dc2)
    newest = in_dc1[-1].rsplit("/", 1)[0]

    killed = node.lose_site(lab.dir, "dc1")
    lost_at = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017 - any S3 client error: the store is gone
        store_keys(lab, "dc1", "redis/")
    _run, FIGURES["failover.yml after dc1 and its store lost (s)"] = playbook(
        lab,
        "playbooks/failover.yml",
        "-e",
        "failover_target_site=dc2",
        "-e",
        "failover_confirm='FAILOVER TO dc2'",
        timeout=1800,
    )
    FIGURES["dc1 lost -> failover done (s)"] = round(time.monotonic() - lost_at, 1)
    assert killed > 10
    done = report(lab, "failover")
    assert done["result"] == "succeeded", done
    restore = {step["name"]: step for step in done["steps"]}["restore_redis"]
    dc2_store = lab.state["sites"]["dc2"]["s3"]
    assert restore["detail"].startswith(
        f"restored s3://{dc2_store['bucket']}/{newest}/dump.rdb from dc2's store {dc2_store['pod_endpoint_url']} "
    ), restore
    assert psql(lab, "dc2", "select pg_is_in_recovery()") == "f"
    dc2_redis = site_redis(lab, "dc2")
    assert dc2_redis.mget([f"drill:store:{i}" for i in range(KEYS)]) == [str(i).encode() for i in range(KEYS)]
