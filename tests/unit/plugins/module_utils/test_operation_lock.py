"""The operation lock's decisions and state machine (plugins/module_utils/operation_lock.py), without a server.

In-memory Leases that behave like the API server's optimistic concurrency (create of an existing object and replace
with a stale resourceVersion fail with a conflict); the real servers are in tests/integration/test_oplock.py. Also
checks that the CronJob's kubectl script and the redis role use the same Lease constants as the module.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from ansible_collections.hanzo.kms.plugins.module_utils import operation_lock as ol
from ansible_collections.hanzo.kms.plugins.module_utils.times import (
    MICROTIME_FORMAT,
    epoch_text,
    format_epoch,
    parse_epoch,
)

REPO_ROOT = Path(__file__).resolve().parents[4]
NOW = 1_796_000_000.0


def micro(epoch):
    """A Lease MicroTime as the lock writes it."""
    return format_epoch(epoch, MICROTIME_FORMAT)


class MemLease:
    """One site's Lease with the API server's conflict rules; ``before_write`` lets a test race another writer."""

    def __init__(self, namespace="kms", lease=None, reachable=True):
        self.namespace = namespace
        self.obj = copy.deepcopy(lease)
        self.version = 1
        self.reachable = reachable
        self.before_write = None
        self.writes = 0

    def get(self):
        if not self.reachable:
            raise ol.Unreachable("connection refused")
        return copy.deepcopy(self.obj)

    def _hook(self):
        if self.before_write:
            hook, self.before_write = self.before_write, None
            hook()

    def create(self, body):
        self._hook()
        if self.obj is not None:
            raise ol.Conflict("AlreadyExists")
        self._store(body)

    def replace(self, body):
        self._hook()
        if self.obj is None or body["metadata"].get("resourceVersion") != self.obj["metadata"]["resourceVersion"]:
            raise ol.Conflict("the object has been modified")
        self._store(body)

    def _store(self, body):
        self.version += 1
        self.writes += 1
        self.obj = copy.deepcopy(body)
        self.obj["metadata"]["resourceVersion"] = str(self.version)


def held(holder, since=NOW - 60, ttl=3600, operation="failover", version="7"):
    return {
        "metadata": {
            "name": ol.LEASE_NAME,
            "namespace": "kms",
            "resourceVersion": version,
            "annotations": {ol.OPERATION_ANNOTATION: operation},
        },
        "spec": {
            "holderIdentity": holder,
            "acquireTime": micro(since),
            "renewTime": micro(since),
            "leaseDurationSeconds": ttl,
            "leaseTransitions": 2,
        },
    }


def lock(sites, owner="backup/run1@ops", **kwargs):
    kwargs.setdefault("clock", lambda: NOW)
    return ol.OperationLock(sites, owner, operation=owner.split("/")[0], ttl=600, **kwargs)


# -- decide --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "lease, owner, breaking, expected",
    [
        (None, "me", "", "create"),
        (held(""), "me", "", "take"),
        (held("me"), "me", "", "renew"),
        (held("other", since=NOW - 7200, ttl=3600), "me", "", "take_expired"),
        (held("other", since=NOW - 3600, ttl=3600), "me", "", "take_expired"),  # expiry is inclusive
        (held("other"), "me", "", "refuse"),
        (held("other"), "me", "BREAK LOCK other", "break"),
        (held("other"), "me", "BREAK LOCK someone", "refuse_break"),
        (held("other"), "me", "break lock other", "refuse_break"),
        (held("other", ttl=None), "me", "", "refuse"),  # no duration: never expires by itself
    ],
)
def test_decide(lease, owner, breaking, expected):
    assert ol.decide(ol.lease_view(lease), owner, NOW, breaking) == expected


def test_decide_release():
    assert ol.decide_release(None, "me") == "none"
    assert ol.decide_release(ol.lease_view(held("")), "me") == "none"
    assert ol.decide_release(ol.lease_view(held("me")), "me") == "release"
    assert ol.decide_release(ol.lease_view(held("other")), "me") == "refuse"


def test_lease_times_round_trip():
    assert micro(NOW) == "2026-11-30T00:53:20.000000Z" and parse_epoch(micro(NOW)) == NOW
    assert parse_epoch("2026-12-02T04:41:01Z") == parse_epoch("2026-12-02T04:41:01.000000Z")
    assert parse_epoch(None) is None and parse_epoch("") is None


def test_lease_body_keeps_the_start_on_renewal_and_counts_transitions():
    view = ol.lease_view(held("me", since=NOW - 100))
    body = ol.lease_body("l", "kms", view, "me", "backup", 600, NOW)
    assert body["spec"]["acquireTime"] == micro(NOW - 100)
    assert body["spec"]["renewTime"] == micro(NOW) == "2026-11-30T00:53:20.000000Z"
    assert body["spec"]["leaseTransitions"] == 2 and body["metadata"]["resourceVersion"] == "7"
    taken = ol.lease_body("l", "kms", ol.lease_view(held("other")), "me", "backup", 600, NOW)
    assert taken["spec"]["acquireTime"] == micro(NOW) and taken["spec"]["leaseTransitions"] == 3
    created = ol.lease_body("l", "kms", None, "me", "backup", 600, NOW)
    assert "resourceVersion" not in created["metadata"] and created["metadata"]["labels"] == ol.LABELS


# -- the state machine ---------------------------------------------------------------------------------------------
def test_acquire_takes_every_site_in_name_order():
    order = []
    sites = {}
    for name in ("dc2", "dc1"):
        store = MemLease()
        store.before_write = lambda n=name: order.append(n)
        sites[name] = store
    result = lock(sites).acquire()
    assert order == ["dc1", "dc2"]
    assert result["acquired_sites"] == ["dc1", "dc2"] and result["changed"]
    assert sites["dc1"].obj["spec"]["holderIdentity"] == "backup/run1@ops"
    assert sites["dc1"].obj["metadata"]["annotations"] == {ol.OPERATION_ANNOTATION: "backup"}


def test_second_acquirer_is_refused_with_holder_and_since_and_gives_back_nothing_it_did_not_take():
    sites = {"dc1": MemLease(), "dc2": MemLease()}
    lock(sites, owner="failover/a@ops").acquire()
    with pytest.raises(ol.LockError) as exc:
        lock(sites, owner="backup/b@ops").acquire()
    assert "held by 'failover/a@ops' (failover) since " + epoch_text(NOW) in exc.value.msg
    assert "BREAK LOCK failover/a@ops" in exc.value.msg
    assert exc.value.details["holder"] == "failover/a@ops" and exc.value.details["site"] == "dc1"
    assert all(s.obj["spec"]["holderIdentity"] == "failover/a@ops" for s in sites.values())


def test_refusal_in_a_later_site_rolls_back_the_earlier_ones():
    sites = {"dc1": MemLease(), "dc2": MemLease(lease=held("failover/a@ops"))}
    with pytest.raises(ol.LockError):
        lock(sites).acquire()
    assert sites["dc1"].obj["spec"].get("holderIdentity") is None  # taken, then given back
    assert sites["dc2"].obj["spec"]["holderIdentity"] == "failover/a@ops"


def test_racer_writing_between_read_and_write_wins_and_the_loser_is_refused():
    """Both read a free Lease; the other writes first: our write conflicts, we read again and are refused."""
    dc1 = MemLease()

    def other_wins():
        dc1.create(ol.lease_body(ol.LEASE_NAME, "kms", None, "switchover/x@ops2", "switchover", 600, NOW))

    dc1.before_write = other_wins
    with pytest.raises(ol.LockError) as exc:
        lock({"dc1": dc1}).acquire()
    assert "held by 'switchover/x@ops2'" in exc.value.msg
    assert dc1.obj["spec"]["holderIdentity"] == "switchover/x@ops2"


class Clock:
    """A clock that only ``sleep`` moves, and that runs ``at`` hooks once their time has come."""

    def __init__(self):
        self.now = NOW
        self.hooks = []
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds
        for when, hook in [h for h in self.hooks if h[0] <= self.now]:
            self.hooks.remove((when, hook))
            hook()


def backup_job_lease(site):
    """A Redis backup Job holding the lock in ``site`` (what the CronJob's script writes)."""
    return MemLease(lease=held(f"redis-backup/job-1@{site}", operation=ol.REDIS_BACKUP_OPERATION))


def test_a_run_waits_for_a_backup_job_holding_nothing_meanwhile_and_takes_the_lock_once_it_ends():
    clock = Clock()
    sites = {"dc1": MemLease(), "dc2": backup_job_lease("dc2")}
    seen_while_waiting = []

    def job_ends():
        seen_while_waiting.append(sites["dc1"].obj["spec"].get("holderIdentity"))
        sites["dc2"].replace(ol.released_body(ol.LEASE_NAME, "kms", ol.lease_view(sites["dc2"].obj)))

    clock.hooks.append((NOW + 7, job_ends))
    result = lock(
        sites, owner="failover/a@ops", wait=60, wait_for=[ol.REDIS_BACKUP_OPERATION], clock=clock, sleep=clock.sleep
    ).acquire()
    assert seen_while_waiting == [None]  # dc1 was given back while waiting: the Job is never blocked by the waiter
    assert result["acquired_sites"] == ["dc1", "dc2"] and result["waited_for"] == ["redis-backup/job-1@dc2"]
    assert result["waited"] == 8 and clock.slept == [2.0] * 4
    assert all(s.obj["spec"]["holderIdentity"] == "failover/a@ops" for s in sites.values())


def test_the_wait_is_bounded_and_the_refusal_says_how_long_it_waited():
    clock = Clock()
    sites = {"dc1": backup_job_lease("dc1")}
    with pytest.raises(ol.LockError) as exc:
        lock(sites, wait=5, wait_for=[ol.REDIS_BACKUP_OPERATION], clock=clock, sleep=clock.sleep).acquire()
    assert exc.value.msg.startswith("After waiting 5 s of at most 5 s: The operation lock is held by 'redis-backup/")
    assert exc.value.details["waited_for"] == ["redis-backup/job-1@dc1"] and clock.slept == [2.0, 2.0, 1.0]


@pytest.mark.parametrize(
    "holder_operation, kwargs",
    [
        ("failover", {"wait": 60, "wait_for": [ol.REDIS_BACKUP_OPERATION]}),  # another operator's run: never waited for
        (ol.REDIS_BACKUP_OPERATION, {}),  # no wait asked
        (ol.REDIS_BACKUP_OPERATION, {"wait": 60, "wait_for": [ol.REDIS_BACKUP_OPERATION], "break_confirmation": "x"}),
    ],
)
def test_no_wait_for_other_operations_without_a_wait_or_when_breaking(holder_operation, kwargs):
    clock = Clock()
    sites = {"dc1": MemLease(lease=held("someone/1@x", operation=holder_operation))}
    with pytest.raises(ol.LockError) as exc:
        lock(sites, clock=clock, sleep=clock.sleep, **kwargs).acquire()
    assert clock.slept == [] and not exc.value.msg.startswith("After waiting")


def test_expired_lock_is_taken_over():
    dc1 = MemLease(lease=held("failover/dead@ops", since=NOW - 7201, ttl=7200))
    result = lock({"dc1": dc1}).acquire()
    assert result["sites"][0]["action"] == "taken_expired" and result["sites"][0]["holder"] == "failover/dead@ops"
    assert dc1.obj["spec"]["holderIdentity"] == "backup/run1@ops"


def test_break_needs_the_exact_phrase():
    dc1 = MemLease(lease=held("failover/dead@ops"))
    with pytest.raises(ol.LockError) as exc:
        lock({"dc1": dc1}, break_confirmation="BREAK LOCK failover").acquire()
    assert "must be exactly 'BREAK LOCK failover/dead@ops'" in exc.value.msg
    assert dc1.writes == 0
    result = lock({"dc1": dc1}, break_confirmation="BREAK LOCK failover/dead@ops").acquire()
    assert result["sites"][0]["action"] == "broken"
    assert dc1.obj["spec"]["holderIdentity"] == "backup/run1@ops"


def test_unreachable_site_fails_unless_allowed_and_one_site_must_answer():
    sites = {"dc1": MemLease(reachable=False), "dc2": MemLease()}
    with pytest.raises(ol.LockError) as exc:
        lock(sites).acquire()
    assert "dc1 (connection refused) did not answer" in exc.value.msg
    assert sites["dc2"].obj["spec"].get("holderIdentity") is None  # rolled back
    result = lock(sites, allow_unreachable=True).acquire()
    assert result["acquired_sites"] == ["dc2"] and result["unreachable_sites"] == ["dc1"]
    with pytest.raises(ol.LockError, match="no site's Kubernetes API answered"):
        lock({"dc1": MemLease(reachable=False)}, allow_unreachable=True).acquire()


def test_unreachable_allowed_never_skips_a_site_held_by_someone_else():
    sites = {"dc1": MemLease(reachable=False), "dc2": MemLease(lease=held("backup/b@ops", operation="backup"))}
    with pytest.raises(ol.LockError, match="held by 'backup/b@ops'"):
        lock(sites, owner="failover/f@ops", allow_unreachable=True).acquire()


def test_renewal_by_the_owner_keeps_the_start():
    dc1 = MemLease()
    clock = {"now": NOW}
    lock({"dc1": dc1}, clock=lambda: clock["now"]).acquire()
    clock["now"] = NOW + 300
    result = lock({"dc1": dc1}, clock=lambda: clock["now"]).acquire()
    assert result["sites"][0]["action"] == "renewed"
    assert dc1.obj["spec"]["acquireTime"] == micro(NOW)
    assert dc1.obj["spec"]["renewTime"] == micro(NOW + 300)


def test_release_by_the_owner_and_refusal_for_another():
    sites = {"dc1": MemLease(), "dc2": MemLease()}
    lock(sites).acquire()
    with pytest.raises(ol.LockError) as exc:
        lock(sites, owner="backup/other@ops").release()
    assert "refusing to release the operation lock of another run" in exc.value.msg
    assert "held by 'backup/run1@ops'" in exc.value.msg
    assert all(s.obj["spec"]["holderIdentity"] == "backup/run1@ops" for s in sites.values())
    result = lock(sites).release()
    assert [s["action"] for s in result["sites"]] == ["released", "released"]
    assert all("holderIdentity" not in s.obj["spec"] for s in sites.values())
    again = lock(sites).release()
    assert not again["changed"] and [s["action"] for s in again["sites"]] == ["unchanged", "unchanged"]


def test_check_mode_reads_and_writes_nothing():
    sites = {"dc1": MemLease(), "dc2": MemLease(lease=held(""))}
    result = lock(sites, check_mode=True).acquire()
    assert [s["action"] for s in result["sites"]] == ["would_create", "would_take"]
    assert sites["dc1"].obj is None and sites["dc2"].writes == 0
    with pytest.raises(ol.LockError):
        lock({"dc1": MemLease(lease=held("x/y@z"))}, check_mode=True).acquire()


# -- one definition of the Lease for the module, the role and the CronJob's script --------------------------------
def test_redis_role_and_script_use_the_modules_lease_constants():
    defaults = yaml.safe_load((REPO_ROOT / "roles/redis/defaults/main.yml").read_text())
    assert defaults["redis_backup_lock_name"] == ol.LEASE_NAME
    script = (REPO_ROOT / "roles/redis/templates/operation-lock.sh.j2").read_text()
    labels = dict(re.findall(r'\\"(app\.kubernetes\.io/[a-z-]+)\\":\\"([a-z.-]+)\\"', script))
    assert labels == ol.LABELS
    assert f'"{ol.OPERATION_ANNOTATION}":"%s"' in script
    assert ol.OPERATION_ANNOTATION.replace(".", "\\.") in script  # the jsonpath reading it back
    assert f"\noperation={ol.REDIS_BACKUP_OPERATION}\n" in script  # what the playbooks wait for


def test_doc_fragment_matches_kubernetes_core_auth_spec():
    args_common = pytest.importorskip("ansible_collections.kubernetes.core.plugins.module_utils.args_common")
    k8s_fragment = pytest.importorskip("ansible_collections.kubernetes.core.plugins.doc_fragments.k8s_auth_options")
    from ansible_collections.hanzo.kms.plugins.doc_fragments.kube_sites import ModuleDocFragment  # pylint: disable=import-outside-toplevel

    sub = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]["sites"]["suboptions"]
    theirs = yaml.safe_load(k8s_fragment.ModuleDocFragment.DOCUMENTATION)["options"]
    assert set(sub) == set(args_common.AUTH_ARG_SPEC) | {"name", "namespace"}
    for key, doc in theirs.items():
        assert sub[key].get("type") == doc.get("type") and sub[key].get("aliases") == doc.get("aliases"), key
