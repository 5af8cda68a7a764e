"""Unit tests of the CNPG operator stand-in's pure state machine (tests/lab/cnpg_state.py)."""

from __future__ import annotations

import base64
import copy
import json

import pytest

from tests.lab import cnpg_state as cs

ZERO = cs.Delays(step=0.0, replay=0.0, backup=0.0)
SLOW = cs.Delays(step=10.0, replay=30.0, backup=5.0)
EXTERNAL = [{"name": "kms-pg-dc1"}, {"name": "kms-pg-dc2"}]


def cluster(name, primary, source, **replica):
    return {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": name, "namespace": "kms", "uid": f"uid-{name}", "generation": 1},
        "spec": {
            "instances": 3,
            "externalClusters": copy.deepcopy(EXTERNAL),
            "replica": dict(primary=primary, source=source, **replica),
        },
    }


class World:
    """Drives one Cluster through reconciles like the controller does (status and annotations applied); with an
    ``instance``, the instance manager's facts and actions of a real PostgreSQL."""

    def __init__(self, obj, delays=ZERO, now=1_800_000_000.0, instance=None):
        self.obj = obj
        self.mem = {}
        self.delays = delays
        self.now = now
        self.instance = instance

    def step(self, advance=0.0):
        self.now += advance
        result = cs.reconcile_cluster(copy.deepcopy(self.obj), self.mem, self.now, self.delays, self.instance)
        self.obj["status"] = result.status
        annotations = self.obj["metadata"].setdefault("annotations", {})
        for key, value in result.annotations.items():
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        return result

    def settle(self, limit=20):
        advance = 0.0
        for _step in range(limit):
            result = self.step(advance)
            if result.requeue is None:
                return result
            advance = result.requeue
        raise AssertionError(f"no steady state after {limit} steps: {self.obj['status']}")

    @property
    def status(self):
        return self.obj["status"]

    def cond(self, ctype):
        return cs.get_condition(self.status, ctype)

    def patch_replica(self, **changes):
        for key, value in changes.items():
            if value is None:
                self.obj["spec"]["replica"].pop(key, None)
            else:
                self.obj["spec"]["replica"][key] = value
        self.obj["metadata"]["generation"] += 1


def test_is_replica_follows_cnpg():
    assert not cs.is_replica({}, "a")
    assert cs.is_replica({"replica": {"source": "b"}}, "a")
    assert not cs.is_replica({"replica": {"source": "b", "primary": "a"}}, "a")
    assert cs.is_replica({"replica": {"source": "b", "primary": "b"}}, "a")
    assert not cs.is_replica({"replica": {"source": "b", "primary": "x", "self": "x"}}, "a")
    assert cs.is_replica({"replica": {"source": "b", "enabled": True, "primary": "a"}}, "a")
    assert not cs.is_replica({"replica": {"source": "b", "enabled": False}}, "a")


def test_token_round_trip_has_six_keys():
    token = cs.make_token("7123", 2, 0x3000028, 1_800_000_000.0)
    content = json.loads(base64.b64decode(token))
    assert sorted(content) == sorted(cs.TOKEN_KEYS)
    assert all(isinstance(v, str) and v for v in content.values())
    assert content["latestCheckpointREDOLocation"] == "0/3000028"
    assert content["redoWalFile"] == "000000020000000000000003"
    assert cs.parse_token(token) == content


@pytest.mark.parametrize(
    "token",
    [
        "not base64!",
        base64.b64encode(b"[1]").decode(),
        base64.b64encode(json.dumps({"operatorVersion": "1.30.0"}).encode()).decode(),
    ],
)
def test_parse_token_rejects_bad_tokens(token):
    with pytest.raises(cs.TokenError):
        cs.parse_token(token)


def test_bootstrap_primary_then_healthy():
    world = World(cluster("kms-pg-dc1", "kms-pg-dc1", "kms-pg-dc2"), delays=SLOW)
    first = world.step()
    assert world.status["phase"] == cs.PHASE_SETTING_UP
    assert world.cond("Ready")["status"] == "False"
    assert first.requeue == pytest.approx(10.0)
    world.step(advance=10.0)
    assert world.status["phase"] == cs.PHASE_CREATING_REPLICA
    world.step(advance=10.0)
    status = world.status
    assert status["phase"] == cs.PHASE_HEALTHY and "phaseReason" not in status
    assert world.cond("Ready")["reason"] == "ClusterIsReady" and world.cond("Ready")["status"] == "True"
    assert status["currentPrimary"] == "kms-pg-dc1-1"
    assert status["instancesReportedState"]["kms-pg-dc1-1"]["isPrimary"] is True
    assert status["instancesReportedState"]["kms-pg-dc1-2"]["isPrimary"] is False
    assert status["readyInstances"] == 3 and status["instances"] == 3
    assert status["timelineID"] == 1 and "demotionToken" not in status


def test_replica_designated_primary_is_not_primary_and_shares_system_id():
    dc1 = World(cluster("kms-pg-dc1", "kms-pg-dc1", "kms-pg-dc2"))
    dc2 = World(cluster("kms-pg-dc2", "kms-pg-dc1", "kms-pg-dc1"))
    dc1.settle()
    dc2.settle()
    assert dc2.status["phase"] == cs.PHASE_HEALTHY
    assert dc2.status["instancesReportedState"]["kms-pg-dc2-1"]["isPrimary"] is False
    assert dc1.status["systemID"] == dc2.status["systemID"]


def _switchover(delays=ZERO):
    dc1 = World(cluster("kms-pg-dc1", "kms-pg-dc1", "kms-pg-dc2"), delays=delays)
    dc2 = World(cluster("kms-pg-dc2", "kms-pg-dc1", "kms-pg-dc1"), delays=delays)
    dc1.settle()
    dc2.settle()
    return dc1, dc2


def test_demotion_fences_then_writes_token():
    dc1 = _switchover()[0]
    dc1.patch_replica(primary="kms-pg-dc2")
    dc1.step()
    assert dc1.status["switchReplicaClusterStatus"]["inProgress"] is True
    assert dc1.obj["metadata"]["annotations"][cs.FENCE_ANNOTATION] == '["*"]'
    assert dc1.cond(cs.COND_SWITCH)["status"] == "False"
    assert dc1.cond(cs.COND_SWITCH)["message"] == "Starting the Replica cluster transition"
    assert dc1.cond(cs.COND_FENCING)["status"] == "True"
    assert dc1.cond(cs.COND_DESIGNATED)["status"] == "False"
    assert "demotionToken" not in dc1.status
    dc1.step()
    assert dc1.cond(cs.COND_DESIGNATED)["status"] == "True"
    assert dc1.cond(cs.COND_DESIGNATED)["reason"] == "TransitionCompleted"
    assert dc1.status["instancesReportedState"]["kms-pg-dc1-1"]["isPrimary"] is False
    result = dc1.step()
    assert result.requeue is None
    assert dc1.status["switchReplicaClusterStatus"]["inProgress"] is False
    assert cs.FENCE_ANNOTATION not in dc1.obj["metadata"]["annotations"]
    assert dc1.cond(cs.COND_SWITCH)["status"] == "True"
    assert dc1.cond(cs.COND_SWITCH)["message"] == "Completed the Replica cluster transition"
    token = cs.parse_token(dc1.status["demotionToken"])
    assert token["databaseSystemIdentifier"] == dc1.status["systemID"]
    assert token["operatorVersion"] == cs.OPERATOR_VERSION
    # steady afterwards: the token stays while the cluster is a replica
    dc1.settle()
    assert dc1.status["demotionToken"]


def test_demotion_waits_for_the_configured_delay():
    dc1 = _switchover(delays=SLOW)[0]
    dc1.patch_replica(primary="kms-pg-dc2")
    dc1.step()
    result = dc1.step(advance=1.0)
    assert result.requeue == pytest.approx(10.0)  # step timer starts now
    assert dc1.cond(cs.COND_DESIGNATED)["status"] == "False"
    dc1.step(advance=10.0)
    assert dc1.cond(cs.COND_DESIGNATED)["status"] == "True"


def test_promotion_with_token():
    dc1, dc2 = _switchover()
    dc1.patch_replica(primary="kms-pg-dc2")
    dc1.settle()
    token = dc1.status["demotionToken"]
    dc2.patch_replica(primary="kms-pg-dc2", promotionToken=token)
    dc2.settle()
    status = dc2.status
    assert status["phase"] == cs.PHASE_HEALTHY
    assert status["lastPromotionToken"] == token
    assert status["instancesReportedState"][status["currentPrimary"]]["isPrimary"] is True
    assert status["timelineID"] == 2
    assert dc2.cond("Ready")["status"] == "True"
    assert "demotionToken" not in status
    # dropping the token from the spec clears lastPromotionToken
    dc2.patch_replica(promotionToken=None)
    dc2.settle()
    assert "lastPromotionToken" not in dc2.status


def test_promotion_waits_until_the_lsn_is_replayed():
    dc1, dc2 = _switchover(delays=cs.Delays(step=0.0, replay=30.0, backup=0.0))
    dc1.patch_replica(primary="kms-pg-dc2")
    dc1.settle()
    token = dc1.status["demotionToken"]
    dc2.patch_replica(primary="kms-pg-dc2", promotionToken=token)
    result = dc2.step()
    assert dc2.status["phase"] == cs.PHASE_PROMOTING
    assert "waiting for promotion token LSN" in dc2.status["phaseReason"]
    assert dc2.cond("Ready")["status"] == "False"
    assert result.requeue == pytest.approx(30.0)
    dc2.step(advance=30.0)
    assert dc2.status["phase"] == cs.PHASE_HEALTHY
    assert dc2.status["lastPromotionToken"] == token


def test_promotion_pinned_replay_lsn_behind_waits_ahead_is_fatal():
    dc1, dc2 = _switchover()
    dc1.patch_replica(primary="kms-pg-dc2")
    dc1.settle()
    token = dc1.status["demotionToken"]
    lsn = cs.parse_lsn(cs.parse_token(token)["latestCheckpointREDOLocation"])
    dc2.obj["metadata"]["annotations"] = {cs.REPLAYED_LSN_ANNOTATION: cs.format_lsn(lsn - 8)}
    dc2.patch_replica(primary="kms-pg-dc2", promotionToken=token)
    dc2.step()
    assert dc2.status["phase"] == cs.PHASE_PROMOTING
    dc2.obj["metadata"]["annotations"] = {cs.REPLAYED_LSN_ANNOTATION: cs.format_lsn(lsn + 8)}
    dc2.step()
    assert dc2.status["phase"] == cs.PHASE_UNRECOVERABLE
    assert dc2.status["phaseReason"] == cs.TOKEN_MISMATCH_REASON
    dc2.obj["metadata"]["annotations"] = {}
    dc2.settle()
    assert dc2.status["phase"] == cs.PHASE_HEALTHY


def test_promotion_with_foreign_token_is_unrecoverable_then_recovers():
    dc1, dc2 = _switchover()
    dc1.patch_replica(primary="kms-pg-dc2")
    dc1.settle()
    good = dc1.status["demotionToken"]
    bad = cs.make_token("1234567890", 1, 0x3000028, dc1.now)
    dc2.patch_replica(primary="kms-pg-dc2", promotionToken=bad)
    dc2.settle()
    assert dc2.status["phase"] == cs.PHASE_UNRECOVERABLE
    assert dc2.status["phaseReason"] == cs.TOKEN_MISMATCH_REASON
    assert dc2.status["instancesReportedState"]["kms-pg-dc2-1"]["isPrimary"] is False
    assert "lastPromotionToken" not in dc2.status
    dc2.patch_replica(promotionToken=good)
    dc2.settle()
    assert dc2.status["phase"] == cs.PHASE_HEALTHY
    assert dc2.status["lastPromotionToken"] == good


def test_older_timeline_token_is_fatal():
    dc1, dc2 = _switchover()
    dc2.status["timelineID"] = 3
    token = cs.make_token(dc1.status["systemID"], 2, 0x3000028, dc1.now)
    dc2.patch_replica(primary="kms-pg-dc2", promotionToken=token)
    dc2.settle()
    assert dc2.status["phase"] == cs.PHASE_UNRECOVERABLE


def test_failover_without_token_promotes_at_once():
    dc2 = _switchover()[1]
    dc2.patch_replica(primary="kms-pg-dc2")
    result = dc2.step()
    assert result.requeue is None
    assert dc2.status["instancesReportedState"]["kms-pg-dc2-1"]["isPrimary"] is True
    assert dc2.status["timelineID"] == 2
    assert "lastPromotionToken" not in dc2.status


def test_switch_back_and_forth():
    dc1, dc2 = _switchover()
    for old, new, new_name in ((dc1, dc2, "kms-pg-dc2"), (dc2, dc1, "kms-pg-dc1"), (dc1, dc2, "kms-pg-dc2")):
        old.patch_replica(primary=new_name, promotionToken=None)
        old.settle()
        token = old.status["demotionToken"]
        new.patch_replica(primary=new_name, promotionToken=token)
        new.settle()
        assert new.status["lastPromotionToken"] == token
        assert new.status["instancesReportedState"][new.status["currentPrimary"]]["isPrimary"]
        assert not old.status["instancesReportedState"][old.status["currentPrimary"]]["isPrimary"]
    assert dc2.status["timelineID"] > dc1.status["timelineID"] - 1


def test_backup_running_then_completed():
    dc1 = _switchover()[0]
    backup = {
        "metadata": {"name": "b1", "namespace": "kms"},
        "spec": {
            "cluster": {"name": "kms-pg-dc1"},
            "method": "plugin",
            "pluginConfiguration": {"name": cs.BARMAN_PLUGIN},
        },
    }
    mem = {}
    result = cs.reconcile_backup(backup, dc1.obj, mem, 1000.0, SLOW)
    assert result.status["phase"] == "running"
    assert result.status["method"] == "plugin"
    assert result.status["instanceID"] == {"podName": "kms-pg-dc1-1"}
    backup["status"] = result.status
    result = cs.reconcile_backup(backup, dc1.obj, mem, 1002.0, SLOW)
    assert result.status["phase"] == "running" and result.requeue == pytest.approx(3.0)
    result = cs.reconcile_backup(backup, dc1.obj, mem, 1005.0, SLOW)
    assert result.status["phase"] == "completed"
    assert result.status["backupId"] and result.status["stoppedAt"] and result.status["endLSN"]
    backup["status"] = result.status
    assert cs.reconcile_backup(backup, dc1.obj, mem, 1006.0, SLOW).status == result.status


def test_backup_of_unknown_cluster_fails():
    backup = {"metadata": {"name": "b1", "namespace": "kms"}, "spec": {"cluster": {"name": "nope"}}}
    result = cs.reconcile_backup(backup, None, {}, 1000.0, ZERO)
    assert result.status["phase"] == "failed" and "nope" in result.status["error"]


def test_merge_patch():
    assert cs.merge_patch({"a": 1}, {"a": 1}) is None
    assert cs.merge_patch({"a": 1, "b": {"c": 1, "d": 2}}, {"b": {"c": 1}, "e": [1]}) == {
        "a": None,
        "b": {"d": None},
        "e": [1],
    }


def test_delays_from_env():
    assert cs.Delays.from_env({"HANZO_KMS_CNPG_STANDIN_DELAY": "0"}) == cs.Delays(0.0, 0.0, 0.0)
    assert cs.Delays.from_env(
        {"HANZO_KMS_CNPG_STANDIN_DELAY": "2", "HANZO_KMS_CNPG_STANDIN_BACKUP_DELAY": "5"}
    ) == cs.Delays(2.0, 2.0, 5.0)


# -- the real instance path (the lab's own Clusters): pg_controldata, token checks, a fake Instance ----------------
CONTROLDATA = """pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7713577261947878576
Database cluster state:               shut down
pg_control last modified:             Sun Nov 29 13:00:02 2026
Latest checkpoint location:           0/303DED8
Latest checkpoint's REDO location:    0/303DED8
Latest checkpoint's REDO WAL file:    000000010000000000000003
Latest checkpoint's TimeLineID:       1
Latest checkpoint's PrevTimeLineID:   1
Latest checkpoint's NextXID:          0:745
Time of latest checkpoint:            Sun Nov 29 13:00:02 2026
Minimum recovery ending location:     0/0
"""


def controldata(system="7713577261947878576", timeline=1, redo="0/303DED8"):
    parsed = cs.parse_controldata(CONTROLDATA)
    parsed.update(
        {
            cs.CD_SYSTEM_ID: system,
            cs.CD_TIMELINE: str(timeline),
            cs.CD_REDO: redo,
            "Latest checkpoint's REDO WAL file": cs.wal_file(timeline, cs.parse_lsn(redo)),
        }
    )
    return parsed


def test_parse_controldata_keeps_colons_in_values():
    parsed = cs.parse_controldata(CONTROLDATA)
    assert parsed["Database system identifier"] == "7713577261947878576"
    assert parsed["Latest checkpoint's REDO location"] == "0/303DED8"
    assert parsed["Latest checkpoint's NextXID"] == "0:745"
    assert parsed["Time of latest checkpoint"] == "Sun Nov 29 13:00:02 2026"
    assert parsed["Database cluster state"] == "shut down"


def test_token_from_controldata_has_cnpg_keys_and_real_values():
    token = cs.token_from_controldata(cs.parse_controldata(CONTROLDATA))
    content = json.loads(base64.b64decode(token))
    assert list(content) == list(cs.TOKEN_KEYS)
    assert content == {
        "latestCheckpointTimelineID": "1",
        "redoWalFile": "000000010000000000000003",
        "databaseSystemIdentifier": "7713577261947878576",
        "latestCheckpointREDOLocation": "0/303DED8",
        "timeOfLatestCheckpoint": "Sun Nov 29 13:00:02 2026",
        "operatorVersion": cs.OPERATOR_VERSION,
    }
    assert cs.parse_token(token) == content


def test_token_from_incomplete_controldata_is_refused():
    with pytest.raises(cs.TokenError, match="REDO location"):
        cs.token_from_controldata(cs.parse_controldata(CONTROLDATA.replace("REDO location", "REDO place")))


@pytest.mark.parametrize(
    "instance, retryable, words",
    [
        (controldata(), None, None),
        (controldata(system="1"), False, "mismatching system identifiers"),
        (controldata(timeline=0), True, "requested timeline not reached"),
        (controldata(timeline=2), False, "requested timeline is older"),
        (controldata(redo="0/3000000"), True, "waiting for promotion token LSN (0/303DED8)"),
        (controldata(redo="0/4000000"), False, "is older than the last replay LSN"),
    ],
)
def test_check_token_follows_cnpg(instance, retryable, words):
    content = cs.parse_token(cs.token_from_controldata(cs.parse_controldata(CONTROLDATA)))
    problem = cs.check_token(content, instance)
    if retryable is None:
        assert problem is None
    else:
        assert problem.retryable is retryable and words in problem.message


class FakeInstance(cs.Instance):
    """Our Instance interface over an in-memory server: enough to test the state machine's decisions."""

    def __init__(self, primary, timeline=1, system="7713577261947878576"):
        self.primary, self.timeline, self.system = primary, timeline, system
        self.redo = 0x303DED8
        self.replayed = None  # standby restartpoint REDO; None = in step with the token
        self.calls = []
        self.down = False
        self.fail = None

    def observe(self):
        if self.down:
            return None
        return cs.Observation(in_recovery=not self.primary, system_id=self.system, timeline=self.timeline)

    def demote(self, source):
        self.calls.append(("demote", source))
        if self.fail:
            raise cs.InstanceError(self.fail)
        self.primary = False
        return controldata(self.system, self.timeline, cs.format_lsn(self.redo))

    def controldata(self, checkpoint=False):
        self.calls.append(("controldata", checkpoint))
        redo = self.redo if self.replayed is None else self.replayed
        return controldata(self.system, self.timeline, cs.format_lsn(redo))

    def promote(self):
        self.calls.append(("promote",))
        self.primary = True
        self.timeline += 1

    def bootstrap_replica(self, source):
        if self.primary:  # a primary where a replica is wanted: re-cloned
            self.calls.append(("reclone", source))
            self.primary = False

    def bootstrap_primary(self):
        if not self.primary:
            self.calls.append(("promote",))
            self.primary = True

    def stop(self):
        self.calls.append(("stop",))
        self.down = True

    def start(self):
        self.calls.append(("start",))
        self.down = False


class InstanceWorld(World):
    def __init__(self, obj, instance):
        super().__init__(obj, instance=instance)

    def settle(self, limit=20):
        for dummy in range(limit):
            result = self.step()
            if result.requeue in (None, cs.OBSERVE_INTERVAL):
                return result
        raise AssertionError(f"no steady state after {limit} steps: {self.obj['status']}")


def _real_pair():
    dc1 = InstanceWorld(cluster("kms-pg-dc1", "kms-pg-dc1", "kms-pg-dc2"), FakeInstance(primary=True))
    dc2 = InstanceWorld(cluster("kms-pg-dc2", "kms-pg-dc1", "kms-pg-dc1"), FakeInstance(primary=False))
    dc1.settle()
    dc2.settle()
    return dc1, dc2


def test_instance_facts_feed_the_status_and_are_refreshed():
    dc1, dc2 = _real_pair()
    assert dc1.status["systemID"] == "7713577261947878576" == dc2.status["systemID"]
    assert dc1.status["instancesReportedState"]["kms-pg-dc1-1"]["isPrimary"] is True
    dc2.instance.timeline = 5  # the standby followed a new timeline
    assert dc2.step().requeue == cs.OBSERVE_INTERVAL
    assert dc2.status["timelineID"] == 5
    dc2.instance.down = True  # unreachable: the last known facts stay
    dc2.step()
    assert dc2.status["timelineID"] == 5


def test_real_demotion_builds_the_token_from_the_instance():
    dc1 = _real_pair()[0]
    dc1.patch_replica(primary="kms-pg-dc2")
    dc1.settle()
    assert dc1.instance.calls == [("demote", "kms-pg-dc2")]
    content = cs.parse_token(dc1.status["demotionToken"])
    assert content["latestCheckpointREDOLocation"] == "0/303DED8"
    assert content["redoWalFile"] == "000000010000000000000003"
    assert dc1.cond(cs.COND_SWITCH)["status"] == "True"
    assert dc1.status["instancesReportedState"]["kms-pg-dc1-1"]["isPrimary"] is False


def test_real_demotion_failure_is_reported_and_retried():
    dc1 = _real_pair()[0]
    dc1.instance.fail = "pg_ctl stop failed"
    dc1.patch_replica(primary="kms-pg-dc2")
    dc1.step()
    result = dc1.step()
    assert result.requeue == 1.0 and "pg_ctl stop failed" in dc1.status["phaseReason"]
    assert "demotionToken" not in dc1.status
    dc1.instance.fail = None
    dc1.settle()
    assert dc1.status["demotionToken"]


def test_real_promotion_waits_for_the_replay_then_promotes():
    dc1, dc2 = _real_pair()
    dc1.patch_replica(primary="kms-pg-dc2")
    dc1.settle()
    token = dc1.status["demotionToken"]
    dc2.instance.replayed = 0x3000000  # the standby's restartpoint is still behind the shutdown checkpoint
    dc2.patch_replica(primary="kms-pg-dc2", promotionToken=token)
    result = dc2.step()
    assert dc2.status["phase"] == cs.PHASE_PROMOTING and "waiting for promotion token LSN" in dc2.status["phaseReason"]
    assert result.requeue == pytest.approx(0.2)
    assert ("controldata", True) in dc2.instance.calls and ("promote",) not in dc2.instance.calls
    dc2.instance.replayed = None
    dc2.settle()
    assert dc2.instance.calls[-1] == ("promote",)
    assert dc2.status["phase"] == cs.PHASE_HEALTHY and dc2.status["lastPromotionToken"] == token
    assert dc2.status["timelineID"] == 2
    assert dc2.status["instancesReportedState"]["kms-pg-dc2-1"]["isPrimary"] is True


def test_real_promotion_with_a_foreign_token_is_unrecoverable():
    dc2 = _real_pair()[1]
    bad = cs.token_from_controldata(controldata(system="42"))
    dc2.patch_replica(primary="kms-pg-dc2", promotionToken=bad)
    assert dc2.step().requeue is None
    assert dc2.status["phase"] == cs.PHASE_UNRECOVERABLE
    assert (
        dc2.status["phaseReason"].startswith(cs.TOKEN_MISMATCH_REASON)
        and "system identifiers" in dc2.status["phaseReason"]
    )
    assert ("promote",) not in dc2.instance.calls


def test_real_failover_promotes_at_once_and_waits_for_an_unreachable_instance():
    dc2 = _real_pair()[1]
    dc2.instance.down = True
    dc2.patch_replica(primary="kms-pg-dc2")
    result = dc2.step()
    assert dc2.status["phase"] == cs.PHASE_PROMOTING and result.requeue == 1.0
    dc2.instance.down = False
    dc2.step()
    assert dc2.instance.calls == [("promote",)]
    assert dc2.status["timelineID"] == 2 and "lastPromotionToken" not in dc2.status


def test_already_promoted_instance_is_not_promoted_again():
    dc2 = _real_pair()[1]
    dc2.instance.primary = True  # e.g. the stand-in restarted after pg_promote
    dc2.instance.timeline = 2
    dc2.patch_replica(primary="kms-pg-dc2")
    dc2.settle()
    assert dc2.instance.calls == [] and dc2.status["timelineID"] == 2
    assert dc2.status["instancesReportedState"]["kms-pg-dc2-1"]["isPrimary"] is True


def test_new_replica_cluster_reclones_an_instance_that_is_not_a_standby():
    dc1 = InstanceWorld(cluster("kms-pg-dc1", "kms-pg-dc2", "kms-pg-dc2"), FakeInstance(primary=True))
    dc1.settle()
    assert dc1.instance.calls == [("reclone", "kms-pg-dc2")]
    assert dc1.status["instancesReportedState"]["kms-pg-dc1-1"]["isPrimary"] is False
    assert dc1.status["phase"] == cs.PHASE_HEALTHY
    standby = InstanceWorld(cluster("kms-pg-dc2", "kms-pg-dc1", "kms-pg-dc1"), FakeInstance(primary=False))
    standby.settle()
    assert standby.instance.calls == []
    primary = InstanceWorld(cluster("kms-pg-dc2", "kms-pg-dc2", "kms-pg-dc1"), FakeInstance(primary=False))
    primary.settle()
    assert primary.instance.calls == [("promote",)]
    assert primary.status["instancesReportedState"]["kms-pg-dc2-1"]["isPrimary"] is True


def test_fencing_stops_the_instance_and_unfencing_starts_it():
    dc1 = _real_pair()[0]
    dc1.obj["metadata"]["annotations"][cs.FENCE_ANNOTATION] = '["*"]'
    dc1.settle()
    dc1.settle()
    assert dc1.instance.calls == [("stop",)]
    del dc1.obj["metadata"]["annotations"][cs.FENCE_ANNOTATION]
    dc1.settle()
    assert dc1.instance.calls == [("stop",), ("start",)]
    dc1.instance.down = True  # died on its own: not restarted
    dc1.settle()
    assert dc1.instance.calls == [("stop",), ("start",)]
    assert cs.fencing_requested({"annotations": {cs.HIBERNATION_ANNOTATION: "on"}})
    assert not cs.fencing_requested({"annotations": {cs.FENCE_ANNOTATION: '["kms-pg-dc1-2"]'}})
