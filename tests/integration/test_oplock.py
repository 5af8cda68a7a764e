"""Integration tests of the operation lock (issue 14, item 5) against the lab's real kube-apiservers.

- the defect first: two backup.yml runs started together both ran to the end before the lock (exactly one may now);
- hanzo.kms.operation_lock through Ansible: refusal naming the holder and since when, expiry, break, release by a
  non-owner, a failover with dc1's kube-apiserver stopped (SIGSTOP: it accepts connections and never answers, like a
  lost site) still takes dc2's Lease, while a backup is refused;
- racers on the real API: of many acquirers started at once exactly one wins;
- the CronJob's kubectl script (roles/redis/templates/operation-lock.sh.j2, rendered by Ansible) run on the control
  node with the lab's kubectl: refused while a playbook holds the lock, takes it otherwise, and the module and the
  script see each other's Lease the same way;
- a run with ``wait`` waits for a Redis backup Job holding the lock (holding nothing meanwhile) and then takes it;
- backup.yml while a "failover" holds the lock fails at once with the holder in the message and changes nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import operation_lock as ol
from tests import ansible_run
from tests.ansible_run import run_playbook
from tests.lab import kube as lab_kube
from tests.lab import s3 as lab_s3
from tests.lab.core import wait_until
from tests.lab.kube_fixtures import kube_clients, kube_namespace, kube_sites  # noqa: F401  pylint: disable=unused-import

try:
    from kubernetes import client, config
except ImportError:  # pragma: no cover
    client = config = None

# pylint: disable=redefined-outer-name

SITES = ("dc1", "dc2")


# -- helpers -------------------------------------------------------------------------------------------------------
def run_module(args, lab_dir, check=False):
    """hanzo.kms.operation_lock through ansible (ad hoc); returns (rc, result dict with the whole output in 'output',
    warnings included)."""
    run = ansible_run.run_module("hanzo.kms.operation_lock", args, check_mode=check, lab_dir=lab_dir, timeout=300)
    return run.returncode, dict(run.result(), output=run.output)


def sites_arg(kube_sites, namespace, **overrides):
    return [
        dict(
            {
                "name": s,
                "namespace": namespace,
                "kubeconfig": kube_sites[s]["kubeconfig"],
                "context": kube_sites[s]["context"],
            },
            **overrides.get(s, {}),
        )
        for s in SITES
    ]


def lease(kube_clients, site, namespace):
    try:
        return client.CoordinationV1Api(kube_clients[site]).read_namespaced_lease(ol.LEASE_NAME, namespace)
    except client.exceptions.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def holder(kube_clients, site, namespace):
    obj = lease(kube_clients, site, namespace)
    return None if obj is None else obj.spec.holder_identity


def put_lease(kube_clients, site, namespace, owner, operation, renewed, ttl):
    """A Lease as another run left it (replacing whatever an earlier test left)."""
    api = client.CoordinationV1Api(kube_clients[site])
    try:
        api.delete_namespaced_lease(ol.LEASE_NAME, namespace)
    except client.exceptions.ApiException as exc:
        if exc.status != 404:
            raise
    api.create_namespaced_lease(
        namespace, ol.lease_body(ol.LEASE_NAME, namespace, None, owner, operation, ttl, renewed)
    )


@pytest.fixture(scope="module")
def lock_script(lab_dir, tmp_path_factory):
    """The CronJob's lock script as the redis role renders it (role defaults, ansible's template module)."""
    dest = tmp_path_factory.mktemp("oplock") / "operation-lock.sh"
    ansible_run.run_module(
        "ansible.builtin.template",
        {"src": "roles/redis/templates/operation-lock.sh.j2", "dest": str(dest), "mode": "0755"},
        "-e",
        "@roles/redis/defaults/main.yml",
        "-e",
        "redis_site=dc1",
        lab_dir=lab_dir,
        timeout=120,
        must_succeed=True,
    )
    return dest


@pytest.fixture(scope="module")
def run_script(lock_script, kube_sites):
    kubectl = str(lab_kube.ensure_binaries()["kubectl"])

    def run(command, namespace, owner, site="dc1"):
        env = dict(
            os.environ,
            KUBECONFIG=kube_sites[site]["kubeconfig"],
            KUBECTL=kubectl,
            KUBECTL_CONTEXT=kube_sites[site]["context"],
            LOCK_NAMESPACE=namespace,
            LOCK_OWNER=owner,
            LOCK_TTL="1800",
        )
        return subprocess.run(
            ["/bin/sh", str(lock_script), command], env=env, capture_output=True, text=True, timeout=120, check=False
        )

    return run


def namespace_gone(kube_clients, site, name):
    try:
        client.CoreV1Api(kube_clients[site]).read_namespace(name)
    except client.exceptions.ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


@pytest.fixture(scope="module")
def kms_namespace(kube_clients):
    """The installation's namespace 'kms' in both sites (created when the lab is not installed, and then removed
    again, waiting until it is gone so that a later install can create it), the lock cleared."""
    created = []
    for site in SITES:
        core = client.CoreV1Api(kube_clients[site])
        try:
            core.read_namespace("kms")
        except client.exceptions.ApiException:
            core.create_namespace({"metadata": {"name": "kms"}})
            created.append(site)
    yield "kms"
    for site in SITES:
        try:
            client.CoordinationV1Api(kube_clients[site]).delete_namespaced_lease(ol.LEASE_NAME, "kms")
        except client.exceptions.ApiException:
            pass
    for site in created:
        client.CoreV1Api(kube_clients[site]).delete_namespace("kms")
    for site in created:
        wait_until(
            lambda site=site: namespace_gone(kube_clients, site, "kms"),
            120,
            f"namespace kms of {site} deleted",
            interval=0.5,
        )


# -- the defect: two operations at once both ran ------------------------------------------------------------------
def test_two_backups_started_together_only_one_runs(lab, lab_dir, kms_namespace, kube_clients):
    """Before the lock both runs passed every check and backed up (two backups, two retention runs at once); now the
    second is refused naming the first, and the first releases the lock at its end."""
    s3 = lab_s3.client(lab["s3"])

    def backups():
        listing = s3.list_objects_v2(Bucket=lab["s3"]["bucket"], Prefix="redis/")
        return {o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith("/manifest.json")}

    before = backups()
    results = [None, None]

    def backup(index):
        results[index] = run_playbook("playbooks/backup.yml", "-e", "backup_cnpg_enabled=false", lab_dir=lab_dir)

    threads = [threading.Thread(target=backup, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(proc.returncode for proc in results)
    assert codes[0] == 0 and codes[1] != 0, [p.stdout[-3000:] for p in results]
    loser = next(p for p in results if p.returncode != 0)
    assert "The operation lock is held by 'backup/" in loser.stdout and " since 20" in loser.stdout, loser.stdout[
        -3000:
    ]
    new = backups() - before
    assert {key.split("/")[1] for key in new} == {"dc1", "dc2"} and len(new) == 2, new  # one backup per site
    assert all(holder(kube_clients, site, kms_namespace) is None for site in SITES)  # released at the end


# -- the module on the real API servers ----------------------------------------------------------------------------
def test_second_run_is_refused_with_holder_and_since(lab_dir, kube_sites, kube_clients, kube_namespace):
    sites = sites_arg(kube_sites, kube_namespace)
    rc, first = run_module({"operation": "failover", "run_id": "r1", "sites": sites}, lab_dir)
    assert rc == 0 and first["changed"] and first["acquired_sites"] == ["dc1", "dc2"], first
    owner = first["owner"]
    assert owner.startswith("failover/r1@")
    assert [holder(kube_clients, s, kube_namespace) for s in SITES] == [owner, owner]
    since = lease(kube_clients, "dc1", kube_namespace).spec.acquire_time.strftime("%Y-%m-%dT%H:%M:%SZ")

    rc, second = run_module({"operation": "backup", "sites": sites}, lab_dir)
    assert rc != 0
    assert f"The operation lock is held by '{owner}' (failover) since {since} in site dc1" in second["msg"]
    assert second["holder"] == owner and second["since"] == since
    # check mode shows the same refusal and writes nothing
    version = lease(kube_clients, "dc1", kube_namespace).metadata.resource_version
    rc, checked = run_module({"operation": "backup", "sites": sites}, lab_dir, check=True)
    assert rc != 0 and f"held by '{owner}'" in checked["msg"]
    assert lease(kube_clients, "dc1", kube_namespace).metadata.resource_version == version

    # the owner renews (same start) and releases
    rc, renewed = run_module({"owner": owner, "sites": sites}, lab_dir)
    assert rc == 0 and [s["action"] for s in renewed["sites"]] == ["renewed", "renewed"]
    assert lease(kube_clients, "dc1", kube_namespace).spec.acquire_time.strftime("%Y-%m-%dT%H:%M:%SZ") == since
    rc, released = run_module({"state": "released", "owner": owner, "sites": sites}, lab_dir)
    assert rc == 0 and [s["action"] for s in released["sites"]] == ["released", "released"]
    assert [holder(kube_clients, s, kube_namespace) for s in SITES] == [None, None]
    rc, third = run_module({"operation": "backup", "sites": sites}, lab_dir)
    assert rc == 0 and [s["action"] for s in third["sites"]] == ["taken", "taken"]


def test_expired_lease_is_taken_over(lab_dir, kube_sites, kube_clients, kube_namespace):
    for site in SITES:
        put_lease(kube_clients, site, kube_namespace, "failover/crashed@gone", "failover", time.time() - 7300, 7200)
    rc, result = run_module(
        {"operation": "backup", "run_id": "r2", "sites": sites_arg(kube_sites, kube_namespace)}, lab_dir
    )
    assert rc == 0, result
    assert [(s["action"], s["holder"]) for s in result["sites"]] == [("taken_expired", "failover/crashed@gone")] * 2
    assert holder(kube_clients, "dc2", kube_namespace) == result["owner"]
    assert lease(kube_clients, "dc2", kube_namespace).spec.lease_transitions == 1


def test_break_needs_the_exact_confirmation(lab_dir, kube_sites, kube_clients, kube_namespace):
    for site in SITES:
        put_lease(kube_clients, site, kube_namespace, "switchover/dead@ops1", "switchover", time.time() - 60, 7200)
    sites = sites_arg(kube_sites, kube_namespace)
    rc, wrong = run_module({"operation": "failover", "sites": sites, "break_lock": "BREAK LOCK switchover"}, lab_dir)
    assert rc != 0 and "must be exactly 'BREAK LOCK switchover/dead@ops1'" in wrong["msg"]
    assert holder(kube_clients, "dc1", kube_namespace) == "switchover/dead@ops1"
    rc, broke = run_module(
        {"operation": "failover", "sites": sites, "break_lock": "BREAK LOCK switchover/dead@ops1"}, lab_dir
    )
    assert rc == 0 and [s["action"] for s in broke["sites"]] == ["broken", "broken"], broke
    assert [holder(kube_clients, s, kube_namespace) for s in SITES] == [broke["owner"]] * 2


def test_release_by_a_non_owner_is_refused(lab_dir, kube_sites, kube_clients, kube_namespace):
    sites = sites_arg(kube_sites, kube_namespace)
    rc, taken = run_module({"operation": "switchover", "sites": sites}, lab_dir)
    assert rc == 0
    rc, refused = run_module({"state": "released", "owner": "backup/someone@else", "sites": sites}, lab_dir)
    assert rc != 0 and "refusing to release the operation lock of another run" in refused["msg"]
    assert f"held by '{taken['owner']}'" in refused["msg"]
    assert [holder(kube_clients, s, kube_namespace) for s in SITES] == [taken["owner"]] * 2


def test_failover_with_dc1_apiserver_stopped_takes_dc2(lab, lab_dir, kube_sites, kube_clients, kube_namespace):
    apiserver = next(p for p in lab["processes"] if p["name"] == "dc1-kube-apiserver")
    sites = sites_arg(kube_sites, kube_namespace)
    put_lease(kube_clients, "dc1", kube_namespace, "backup/old@ops", "backup", time.time(), 7200)  # dc1's, now lost
    os.kill(apiserver["pid"], signal.SIGSTOP)
    try:
        rc, backup = run_module({"operation": "backup", "sites": sites, "request_timeout": 2}, lab_dir)
        assert rc != 0 and "dc1 (" in backup["msg"] and "did not answer" in backup["msg"], backup
        assert holder(kube_clients, "dc2", kube_namespace) is None  # nothing kept in dc2
        rc, failover = run_module(
            {"operation": "failover", "sites": sites, "allow_unreachable": True, "request_timeout": 2}, lab_dir
        )
        assert rc == 0, failover
        assert failover["acquired_sites"] == ["dc2"] and failover["unreachable_sites"] == ["dc1"]
        assert "site dc1: the Kubernetes API did not answer" in " ".join(failover["output"].split())
        assert holder(kube_clients, "dc2", kube_namespace) == failover["owner"]
        # a second failover is refused by dc2's Lease although dc1 cannot be read
        rc, second = run_module(
            {"operation": "failover", "sites": sites, "allow_unreachable": True, "request_timeout": 2}, lab_dir
        )
        assert rc != 0 and f"held by '{failover['owner']}' (failover)" in second["msg"] and "site dc2" in second["msg"]
    finally:
        os.kill(apiserver["pid"], signal.SIGCONT)
    assert holder(kube_clients, "dc1", kube_namespace) == "backup/old@ops"  # untouched while it was gone


def test_racing_acquirers_exactly_one_wins(kube_sites, kube_namespace):
    """Twelve acquirers released at once against both real API servers (their own clients and connections)."""
    count = 12
    barrier = threading.Barrier(count)
    outcomes = [None] * count

    def racer(index):
        stores = {
            site: ol.KubeLease(
                config.new_client_from_config(
                    config_file=kube_sites[site]["kubeconfig"], context=kube_sites[site]["context"]
                ),
                kube_namespace,
            )
            for site in SITES
        }
        lock = ol.OperationLock(stores, f"racer/{index}@test", operation="racer", ttl=600)
        barrier.wait()
        try:
            outcomes[index] = ("won", lock.acquire())
        except ol.LockError as exc:
            outcomes[index] = ("refused", exc)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, outcome in enumerate(outcomes) if outcome[0] == "won"]
    assert len(winners) == 1, outcomes
    winner = f"racer/{winners[0]}@test"
    for outcome in outcomes:
        if outcome[0] == "refused":
            assert f"held by '{winner}' (racer) since " in outcome[1].msg, outcome[1].msg


# -- the CronJob's kubectl script ----------------------------------------------------------------------------------
def test_cronjob_script_refused_while_a_playbook_holds_the_lock(
    lab_dir, kube_sites, kube_clients, kube_namespace, run_script
):
    sites = sites_arg(kube_sites, kube_namespace)
    job = f"redis-backup/redis-backup-{uuid.uuid4().hex[:6]}@dc1"
    rc, held = run_module({"operation": "failover", "run_id": "r3", "sites": sites}, lab_dir)
    assert rc == 0
    refused = run_script("acquire", kube_namespace, job)
    assert refused.returncode == 3, refused.stderr
    assert f"held by '{held['owner']}' (failover) since " in refused.stderr
    assert holder(kube_clients, "dc1", kube_namespace) == held["owner"]

    rc, dummy = run_module({"state": "released", "owner": held["owner"], "sites": sites}, lab_dir)
    assert rc == 0
    taken = run_script("acquire", kube_namespace, job)
    assert taken.returncode == 0 and "take by" in taken.stdout, taken.stderr
    assert holder(kube_clients, "dc1", kube_namespace) == job
    obj = lease(kube_clients, "dc1", kube_namespace)
    assert obj.metadata.labels == ol.LABELS and obj.metadata.annotations == {ol.OPERATION_ANNOTATION: "redis-backup"}
    assert obj.spec.lease_duration_seconds == 1800
    # a Job retry (same owner) renews; the module sees the script's lock like its own kind
    assert run_script("acquire", kube_namespace, job).returncode == 0
    assert run_script("check", kube_namespace, job).returncode == 0
    rc, backup = run_module({"operation": "backup", "sites": sites}, lab_dir)
    assert rc != 0 and f"held by '{job}' (redis-backup)" in backup["msg"]
    # another Job may neither take nor release it; its check fails (no manifest)
    other = "redis-backup/redis-backup-other@dc1"
    assert run_script("acquire", kube_namespace, other).returncode == 3
    assert run_script("release", kube_namespace, other).returncode == 3
    assert run_script("check", kube_namespace, other).returncode == 3
    released = run_script("release", kube_namespace, job)
    assert released.returncode == 0, released.stderr
    assert holder(kube_clients, "dc1", kube_namespace) is None
    assert run_script("check", kube_namespace, job).returncode == 3
    rc, after = run_module({"operation": "backup", "sites": sites}, lab_dir)
    assert rc == 0 and after["sites"][0]["action"] == "taken"


def test_a_run_waits_for_a_backup_job_and_takes_the_lock_when_the_job_releases_it(
    lab_dir, kube_sites, kube_clients, kube_namespace, run_script
):
    """The Job holds dc2's Lease (the script, as in the CronJob); a failover with ``wait`` gives dc1 back while it
    waits (the Job's check keeps passing) and takes both sites once the Job releases."""
    sites = sites_arg(kube_sites, kube_namespace)
    for site in SITES:
        put_lease(kube_clients, site, kube_namespace, "", "", time.time(), 60)  # free, transitions 0
    job = f"redis-backup/redis-backup-{uuid.uuid4().hex[:6]}@dc2"
    assert run_script("acquire", kube_namespace, job, site="dc2").returncode == 0
    outcome = {}
    waiter = threading.Thread(
        target=lambda: outcome.update(
            zip(("rc", "result"), run_module({"operation": "failover", "wait": 120, "sites": sites}, lab_dir))
        )
    )
    waiter.start()
    try:
        # The module took dc1, was refused at dc2 and gave dc1 back: it is waiting, holding nothing.
        wait_until(
            lambda: (
                (lease(kube_clients, "dc1", kube_namespace).spec.lease_transitions or 0) >= 1
                and holder(kube_clients, "dc1", kube_namespace) is None
            ),
            120,
            "the waiting run to give dc1's Lease back",
        )
        assert run_script("check", kube_namespace, job, site="dc2").returncode == 0
        assert "rc" not in outcome
        released = run_script("release", kube_namespace, job, site="dc2")
        assert released.returncode == 0, released.stderr
    finally:
        waiter.join(180)
    assert outcome["rc"] == 0, outcome
    result = outcome["result"]
    assert result["acquired_sites"] == ["dc1", "dc2"] and result["waited_for"] == [job], result
    assert result["waited"] > 0 and "to give the operation lock back" in result["output"]
    assert [holder(kube_clients, s, kube_namespace) for s in SITES] == [result["owner"]] * 2
    run_module({"state": "released", "owner": result["owner"], "sites": sites}, lab_dir)


def test_cronjob_script_takes_an_expired_lock_and_loses_a_broken_one(
    lab_dir, kube_sites, kube_clients, kube_namespace, run_script
):
    put_lease(kube_clients, "dc1", kube_namespace, "failover/crashed@gone", "failover", time.time() - 7300, 7200)
    job = "redis-backup/redis-backup-29000000@dc1"
    taken = run_script("acquire", kube_namespace, job)
    assert taken.returncode == 0 and "take_expired by" in taken.stdout, taken.stderr
    # a failover breaks the Job's lock (e.g. the Job hangs): the Job must not mark its backup complete
    rc, broke = run_module(
        {"operation": "failover", "sites": sites_arg(kube_sites, kube_namespace), "break_lock": f"BREAK LOCK {job}"},
        lab_dir,
    )
    assert rc == 0 and broke["sites"][0]["action"] == "broken"
    lost = run_script("check", kube_namespace, job)
    assert lost.returncode == 3 and "refusing to mark the backup complete" in lost.stderr


# -- playbook level ------------------------------------------------------------------------------------------------
def test_backup_playbook_refused_while_a_failover_holds_the_lock(lab, lab_dir, kube_clients, kms_namespace):
    s3 = lab_s3.client(lab["s3"])

    def objects():
        listing = s3.list_objects_v2(Bucket=lab["s3"]["bucket"])
        return {(o["Key"], o["ETag"]) for o in listing.get("Contents", [])}

    owner = "failover/20261202T050000Z-ab12@ops1"
    for site in SITES:
        put_lease(kube_clients, site, kms_namespace, owner, "failover", time.time(), 7200)
    versions = [lease(kube_clients, s, kms_namespace).metadata.resource_version for s in SITES]
    before = objects()
    proc = run_playbook("playbooks/backup.yml", lab_dir=lab_dir)
    took = proc.seconds
    assert proc.returncode != 0
    assert f"The operation lock is held by '{owner}' (failover) since 20" in proc.stdout, proc.stdout[-4000:]
    assert "kms_lock_break='BREAK LOCK " + owner in proc.stdout
    # refused at the lock: nothing after it ran, nothing changed
    assert "Read the site's CNPG Cluster" not in proc.stdout and "Release the operation lock" not in proc.stdout
    assert objects() == before
    assert [lease(kube_clients, s, kms_namespace).metadata.resource_version for s in SITES] == versions
    print(f"\nbackup.yml refused in {took:.1f}s")
