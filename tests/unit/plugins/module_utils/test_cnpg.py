"""State machine of plugins/module_utils/cnpg.py (switchover/failover planner and runner).

Most runs drive :class:`Promoter` against an in-memory pair of Clusters whose status is computed by the lab's pure
CNPG stand-in state machine (tests/lab/cnpg_state.py, zero delays), one operator reconcile per read; the real API
path is covered by tests/integration/test_cnpg_promote.py. A fake clock makes timeouts instant.
"""

from __future__ import annotations

import base64
import json

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import cnpg
from tests.lab import cnpg_state

EXTERNAL = [{"name": "pg-dc1"}, {"name": "pg-dc2"}]
ZERO = cnpg_state.Delays(step=0.0, replay=0.0, backup=0.0)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += max(seconds, 0.001)


class SimCluster:
    """A Cluster object: get() runs one reconcile of the stand-in state machine unless paused."""

    def __init__(self, name, replica, side, instances=2, annotations=None):
        self.name, self.namespace, self.side = name, "kms", side
        self.obj = {
            "metadata": {
                "name": name,
                "namespace": "kms",
                "uid": name,
                "generation": 1,
                "annotations": dict(annotations or {}),
            },
            "spec": {"instances": instances, "externalClusters": EXTERNAL, "replica": replica},
        }
        self.mem = {}
        self.paused = False
        self.patches = []
        self.errors = []  # exceptions to raise on the next calls
        self.label = f"Cluster kms/{name} ({side} side, sim)"
        self.settle()

    def reconcile(self):
        result = cnpg_state.reconcile_cluster(self.obj, self.mem, 0.0, ZERO)
        self.obj["status"] = result.status
        for key, value in result.annotations.items():
            if value is None:
                self.obj["metadata"]["annotations"].pop(key, None)
            else:
                self.obj["metadata"]["annotations"][key] = value
        return result.requeue

    def settle(self, limit=20):
        for dummy in range(limit):
            if self.reconcile() is None:
                return

    def get(self):
        if self.errors:
            raise self.errors.pop(0)
        if not self.paused:
            self.reconcile()
        return json.loads(json.dumps(self.obj))

    def patch(self, body):
        if self.errors:
            raise self.errors.pop(0)
        self.patches.append(body)
        self.obj = cnpg.apply_merge_patch(self.obj, body)
        self.obj["metadata"]["generation"] += 1
        return json.loads(json.dumps(self.obj))


def pair(**kwargs):
    old = SimCluster("pg-dc1", {"primary": "pg-dc1", "source": "pg-dc2"}, "old", **kwargs)
    new = SimCluster("pg-dc2", {"primary": "pg-dc1", "source": "pg-dc1"}, "new", **kwargs)
    return old, new


def promoter(old, new, mode="switchover", **kwargs):
    clock = Clock()
    kwargs.setdefault("poll_interval", 0.5)
    kwargs.setdefault("demotion_timeout", 30)
    kwargs.setdefault("promotion_timeout", 30)
    return cnpg.Promoter(old, new, mode, clock=clock, sleep=clock.sleep, **kwargs)


# -- pure helpers --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "replica, expected",
    [
        (None, False),
        ({"source": "x"}, True),
        ({"enabled": True, "source": "x"}, True),
        ({"enabled": False, "source": "x"}, False),
        ({"primary": "c", "source": "x"}, False),
        ({"primary": "d", "source": "x"}, True),
        ({"primary": "me", "self": "me", "source": "x"}, False),
    ],
)
def test_is_replica(replica, expected):
    obj = {"metadata": {"name": "c"}, "spec": {"replica": replica} if replica else {}}
    assert cnpg.is_replica(obj) is expected


@pytest.mark.parametrize(
    "annotations, names, expected",
    [
        ({}, [], "none"),
        ({cnpg.FENCE_ANNOTATION: '["*"]'}, [], "fenced"),
        ({cnpg.FENCE_ANNOTATION: '["a-1","a-2"]'}, ["a-1", "a-2"], "fenced"),
        ({cnpg.FENCE_ANNOTATION: '["a-1"]'}, ["a-1", "a-2"], "partial"),
        ({cnpg.FENCE_ANNOTATION: "garbage"}, [], "partial"),
        ({cnpg.HIBERNATION_ANNOTATION: "on"}, [], "hibernated"),
        ({cnpg.HIBERNATION_ANNOTATION: "off"}, [], "none"),
    ],
)
def test_fencing_state(annotations, names, expected):
    obj = {"metadata": {"name": "a", "annotations": annotations}, "status": {"instanceNames": names}}
    assert cnpg.fencing_state(obj) == expected


def test_parse_token():
    token = cnpg_state.make_token("7000", 1, 0x3000000, 0.0)
    assert cnpg.parse_token(token)["databaseSystemIdentifier"] == "7000"
    with pytest.raises(cnpg.CnpgError, match="base64"):
        cnpg.parse_token("not base64!")
    partial = base64.b64encode(json.dumps({"redoWalFile": "x"}).encode()).decode()
    with pytest.raises(cnpg.CnpgError, match="latestCheckpointTimelineID"):
        cnpg.parse_token(partial)


def test_patches():
    old = {"metadata": {"name": "a"}, "spec": {"replica": {"primary": "a", "source": "b", "promotionToken": "T"}}}
    assert cnpg.demote_patch(old, "b") == {"spec": {"replica": {"primary": "b", "promotionToken": None}}}
    bare = {"metadata": {"name": "a"}, "spec": {}}
    assert cnpg.demote_patch(bare, "b") == {"spec": {"replica": {"primary": "b", "source": "b"}}}
    new = {"metadata": {"name": "b"}, "spec": {"replica": {"primary": "a", "source": "a"}}}
    assert cnpg.promote_patch(new, "b", "TOK") == {"spec": {"replica": {"primary": "b", "promotionToken": "TOK"}}}
    assert cnpg.promote_patch(new, "b", None) == {"spec": {"replica": {"primary": "b"}}}
    standalone = {"metadata": {"name": "b"}, "spec": {"replica": {"enabled": True, "source": "a"}}}
    assert cnpg.promote_patch(standalone, "b", None) == {"spec": {"replica": {"enabled": False}}}
    assert cnpg.fence_patch("fence") == {"metadata": {"annotations": {cnpg.FENCE_ANNOTATION: '["*"]'}}}
    assert cnpg.fence_patch("hibernate") == {"metadata": {"annotations": {cnpg.HIBERNATION_ANNOTATION: "on"}}}


def test_apply_merge_patch():
    assert cnpg.apply_merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}) == {"a": {"c": 2, "d": 3}}


# -- switchover ----------------------------------------------------------------------------------------------------
def test_switchover_full_run_and_back():
    old, new = pair()
    result = promoter(old, new).run()
    assert result["changed"] is True
    assert result["steps"] == ["demote", "record_token", "promote"]
    assert result["data_loss_possible"] is False
    token = result["token"]
    cnpg.parse_token(token)
    assert result["token_source"] == "old_cluster" and result["old_reachable"] is True
    assert old.patches == [{"spec": {"replica": {"primary": "pg-dc2"}}}]
    # the token is recorded in the new site first, then primary and promotionToken go in ONE patch
    assert json.loads(new.patches[0]["metadata"]["annotations"][cnpg.TOKEN_ANNOTATION])["token"] == token
    assert new.patches[1:] == [{"spec": {"replica": {"primary": "pg-dc2", "promotionToken": token}}}]
    assert result["before"]["new_cluster"]["role"] == "replica"
    assert result["after"]["new_cluster"]["role"] == "primary"
    assert result["after"]["new_cluster"]["current_primary_is_primary"] is True
    assert result["after"]["new_cluster"]["timeline"] == 2
    assert result["after"]["old_cluster"]["role"] == "replica"
    assert set(result["timings"]) >= {"read", "demote", "wait_demotion", "promote", "wait_promotion", "total"}
    assert result["diff"]["after"]["new_cluster"]["spec"]["replica"]["promotionToken"] == token

    # idempotent
    again = promoter(old, new).run()
    assert again["changed"] is False and again["plan"] == [] and again["token"] == token

    # and back: dc2 -> dc1; the stale promotionToken on dc2 goes away in the demotion patch
    back = promoter(new, old).run()
    assert back["changed"] is True
    assert new.patches[-1] == {"spec": {"replica": {"primary": "pg-dc1", "promotionToken": None}}}
    assert old.patches[-1]["spec"]["replica"]["promotionToken"] == back["token"] != token
    assert cnpg.promotion_done(old.get(), back["token"])


def test_switchover_check_mode_plans_and_changes_nothing():
    old, new = pair()
    result = promoter(old, new, check_mode=True).run()
    assert result["changed"] is True
    assert [p["step"] for p in result["plan"]] == ["demote", "promote"]
    assert result["plan"][1]["patch"]["spec"]["replica"]["promotionToken"] == cnpg.TOKEN_PLACEHOLDER
    assert old.patches == [] and new.patches == []
    assert result["diff"]["after"]["old_cluster"]["spec"]["replica"]["primary"] == "pg-dc2"
    assert result["diff"]["before"]["old_cluster"]["spec"]["replica"]["primary"] == "pg-dc1"


def test_switchover_resumes_after_demotion():
    old, new = pair()
    old.patch(cnpg.demote_patch(old.get(), "pg-dc2"))
    old.settle()
    token = old.get()["status"]["demotionToken"]
    check = promoter(old, new, check_mode=True).run()
    assert [p["step"] for p in check["plan"]] == ["record_token", "promote"]
    assert check["plan"][1]["patch"]["spec"]["replica"]["promotionToken"] == token
    result = promoter(old, new).run()
    assert result["steps"] == ["record_token", "promote"] and result["token"] == token
    assert len(old.patches) == 1


def test_switchover_resumes_after_promotion_patch():
    old, new = pair()
    old.patch(cnpg.demote_patch(old.get(), "pg-dc2"))
    old.settle()
    token = old.get()["status"]["demotionToken"]
    new.paused = True
    new.patch(cnpg.promote_patch(new.get(), "pg-dc2", token))
    with pytest.raises(cnpg.PhaseTimeout) as info:
        promoter(old, new, promotion_timeout=3).run()
    assert "lastPromotionToken" in info.value.msg and "last observed phase" in info.value.msg
    assert info.value.details["last_status"]["spec_replica"]["promotionToken"] == token
    new.paused = False
    result = promoter(old, new).run()
    assert result["steps"] == [] and result["changed"] is False
    assert cnpg.promotion_done(new.get(), token)


def test_switchover_demotion_timeout_reports_last_status():
    old, new = pair()
    old.paused = True
    with pytest.raises(cnpg.PhaseTimeout) as info:
        promoter(old, new, demotion_timeout=5).run()
    assert "demotion token" in info.value.msg
    assert info.value.details["last_status"]["phase"] == cnpg.PHASE_HEALTHY
    partial = info.value.details["result"]
    assert partial["steps"] == ["demote"] and partial["changed"] is True
    old.paused = False
    result = promoter(old, new).run()
    assert result["steps"] == ["record_token", "promote"]


def test_switchover_unrecoverable_fails_at_once():
    old, new = pair()
    new.obj["metadata"]["annotations"][cnpg_state.REPLAYED_LSN_ANNOTATION] = "FFFFFFFF/0"
    runner = promoter(old, new, promotion_timeout=10_000)
    with pytest.raises(cnpg.Unrecoverable) as info:
        runner.run()
    assert cnpg_state.TOKEN_MISMATCH_REASON in info.value.msg
    assert info.value.details["last_status"]["phase"] == cnpg.PHASE_UNRECOVERABLE
    assert runner.clock() < 1000 + 60  # no waiting for the long timeout


def test_switchover_conflict_retried():
    old, new = pair()
    result_runner = promoter(old, new)
    orig_patch = old.patch
    calls = []

    def flaky(body):
        calls.append(body)
        if len(calls) < 3:
            raise cnpg.ApiError("conflict", status=409)
        return orig_patch(body)

    old.patch = flaky
    assert result_runner.run()["changed"] is True
    assert len(calls) == 3


def test_forbidden_not_retried_and_message_names_permission():
    target = type("T", (), {"label": "Cluster kms/pg-dc1 (old side, https://x)", "namespace": "kms", "side": "old"})()
    err = cnpg.api_error(
        403, 'clusters.postgresql.cnpg.io "pg-dc1" is forbidden: User "u" cannot patch resource', "patch", target
    )
    assert "Cluster kms/pg-dc1" in err.msg and "'patch' permission on clusters.postgresql.cnpg.io" in err.msg
    err404 = cnpg.api_error(404, "not found", "get", target)
    assert "not found" in err404.msg and "name and namespace" in err404.msg
    old, new = pair()

    def forbidden(body):
        raise err

    old.patch = forbidden
    with pytest.raises(cnpg.ApiError) as info:
        promoter(old, new).run()
    assert info.value.status == 403


def test_switchover_refused_for_standalone():
    old = SimCluster("pg-dc1", None, "old")
    new = SimCluster("pg-dc2", {"enabled": True, "source": "pg-dc1"}, "new")
    with pytest.raises(cnpg.Refused, match="standalone"):
        promoter(old, new).run()
    assert new.patches == [] and old.patches == []


def test_switchover_refused_when_split_brain_or_bad_topology():
    old, new = pair()
    new.patch({"spec": {"replica": {"primary": "pg-dc2"}}})
    new.settle()
    with pytest.raises(cnpg.Refused, match="split brain"):
        promoter(old, new).run()
    old, new = pair()
    new.obj["spec"]["externalClusters"] = [{"name": "pg-dc1"}]
    with pytest.raises(cnpg.Refused, match="externalClusters"):
        promoter(old, new).run()
    old, new = pair()
    new.obj["spec"]["replica"]["minApplyDelay"] = "1h"
    with pytest.raises(cnpg.Refused, match="minApplyDelay"):
        promoter(old, new).run()


def test_demotion_token_rechecked():
    """A token wiped right after it appeared (#11074) is waited for again."""
    old, new = pair()
    old.patch(cnpg.demote_patch(old.get(), "pg-dc2"))
    old.settle()
    good = old.get()
    wiped = json.loads(json.dumps(good))
    wiped["status"]["demotionToken"] = ""
    reads = iter([good, wiped])
    real_get = old.get
    old.get = lambda: next(reads, None) or real_get()
    result = promoter(old, new).run()
    assert result["token"] == good["status"]["demotionToken"]


# -- issue 14 item 7: the old site lost between demotion and promotion ---------------------------------------------
def demoted_then_promotion_refused():
    """A switchover whose promotion patch the new site's API refused: old demoted, token recorded, new a replica."""
    old, new = pair()
    real_patch = new.patch

    def patch(body):
        if "spec" in body:
            raise cnpg.ApiError("patch refused (422): promotion blocked", status=422)
        return real_patch(body)

    new.patch = patch
    with pytest.raises(cnpg.ApiError):
        promoter(old, new).run()
    new.patch = real_patch
    token = old.get()["status"]["demotionToken"]
    return old, new, token


def test_switchover_records_the_token_in_the_new_site_before_promoting():
    old, new, token = demoted_then_promotion_refused()
    assert cnpg.is_replica(old.get()) and cnpg.is_replica(new.get())
    usable, info, problem = cnpg.recorded_token(new.get())
    assert usable == token and info["from"] == "pg-dc1" and problem is None
    assert cnpg.summarize(new.get())["recorded_token"]["usable"] is True


def test_switchover_with_old_site_lost_promotes_with_the_recorded_token():
    old, new, token = demoted_then_promotion_refused()
    old.errors = [cnpg.Unreachable("connection refused")] * 3
    result = promoter(old, new).run()
    assert result["old_reachable"] is False and "connection refused" in result["old_error"]
    assert result["token"] == token and result["token_source"] == "recorded"
    assert result["data_loss_possible"] is False
    assert new.patches[-1] == {"spec": {"replica": {"primary": "pg-dc2", "promotionToken": token}}}
    assert cnpg.promotion_done(new.get(), token)
    assert any("recorded" in w for w in result["warnings"])
    # idempotent while the old site stays away: the promotion with the token is seen as done
    old.errors = [cnpg.Unreachable("connection refused")] * 3
    again = promoter(old, new).run()
    assert again["changed"] is False and again["token"] == token and again["token_source"] == "new_cluster_spec"


def test_switchover_with_old_site_lost_and_no_token_is_refused():
    old, new = pair()
    old.errors = [cnpg.Unreachable("connection refused")]
    with pytest.raises(cnpg.Refused) as info:
        promoter(old, new).run()
    assert "no usable demotion token" in info.value.msg and "failover" in info.value.msg
    assert new.patches == []


def test_stale_recorded_token_is_not_used():
    old, new, token = demoted_then_promotion_refused()
    # the recorded token names an earlier timeline than the Cluster's: from an earlier switchover
    new.obj["status"]["timelineID"] = 7
    new.paused = True
    assert cnpg.recorded_token(new.get())[0] is None
    assert "earlier switchover" in cnpg.recorded_token(new.get())[2]
    old.errors = [cnpg.Unreachable("connection refused")]
    with pytest.raises(cnpg.Refused):
        promoter(old, new).run()
    # a token from another Cluster than the one replicated from is not used either
    new.obj["status"]["timelineID"] = 1
    info = json.loads(new.obj["metadata"]["annotations"][cnpg.TOKEN_ANNOTATION])
    new.obj["metadata"]["annotations"][cnpg.TOKEN_ANNOTATION] = json.dumps(dict(info, **{"from": "pg-dc9"}))
    assert "published by 'pg-dc9'" in cnpg.recorded_token(new.get())[2]
    new.obj["metadata"]["annotations"][cnpg.TOKEN_ANNOTATION] = "not json"
    assert "not understood" in cnpg.recorded_token(new.get())[2]
    assert token


# -- failover ------------------------------------------------------------------------------------------------------
def test_failover_old_unreachable():
    old, new = pair()
    old.errors = [cnpg.Unreachable("connection refused")]
    result = promoter(old, new, mode="failover").run()
    assert result["changed"] is True and result["data_loss_possible"] is True
    assert result["old_reachable"] is False and "connection refused" in result["old_error"]
    assert new.patches == [{"spec": {"replica": {"primary": "pg-dc2"}}}]
    assert result["token"] is None
    assert result["after"]["new_cluster"]["role"] == "primary"
    assert result["lag"]["known"] is False
    # idempotent
    old.errors = [cnpg.Unreachable("connection refused")]
    assert promoter(old, new, mode="failover").run()["changed"] is False


def test_failover_refused_when_old_answers_unfenced():
    old, new = pair()
    with pytest.raises(cnpg.Refused, match="two writable primaries"):
        promoter(old, new, mode="failover").run()
    assert new.patches == [] and old.patches == []


@pytest.mark.parametrize(
    "method, annotation", [("fence", cnpg.FENCE_ANNOTATION), ("hibernate", cnpg.HIBERNATION_ANNOTATION)]
)
def test_failover_fences_first(method, annotation):
    old, new = pair()
    check = promoter(old, new, mode="failover", fencing=method, check_mode=True).run()
    assert [p["step"] for p in check["plan"]] == ["fence", "promote"] and old.patches == [] and new.patches == []
    result = promoter(old, new, mode="failover", fencing=method).run()
    assert result["steps"] == ["fence", "promote"]
    assert annotation in old.obj["metadata"]["annotations"]
    assert result["after"]["old_cluster"]["fencing"] in ("fenced", "hibernated")


def test_failover_when_already_fenced():
    old, new = pair()
    old.obj["metadata"]["annotations"][cnpg.FENCE_ANNOTATION] = '["*"]'
    result = promoter(old, new, mode="failover").run()
    assert result["steps"] == ["promote"]


def test_failover_standalone():
    old = SimCluster("pg-dc1", None, "old")
    new = SimCluster("pg-dc2", {"enabled": True, "source": "pg-dc1"}, "new")
    old.errors = [cnpg.Unreachable("timeout")]
    result = promoter(old, new, mode="failover").run()
    assert new.patches == [{"spec": {"replica": {"enabled": False}}}]
    assert any("irreversible" in w for w in result["warnings"])
    assert result["after"]["new_cluster"]["role"] == "primary"


def test_failover_old_server_error_counts_as_unreachable_but_404_fails():
    old, new = pair()
    old.errors = [cnpg.ApiError("boom", status=503)]
    assert promoter(old, new, mode="failover").run()["old_reachable"] is False
    old, new = pair()
    old.errors = [cnpg.ApiError("Cluster kms/pg-dc1 not found", status=404)]
    with pytest.raises(cnpg.ApiError, match="not found"):
        promoter(old, new, mode="failover").run()


def test_wait_survives_transient_errors():
    old, new = pair()
    new_errors = [cnpg.Unreachable("blip")]
    real_get = new.get
    count = {"n": 0}

    def flaky():
        count["n"] += 1
        if count["n"] == 3 and new_errors:
            raise new_errors.pop()
        return real_get()

    new.get = flaky
    assert promoter(old, new).run()["changed"] is True


def test_doc_fragment_matches_kubernetes_core_auth_spec():
    """The per-side suboptions are kubernetes.core's AUTH_ARG_SPEC plus name/namespace, documented with its types."""
    yaml = pytest.importorskip("yaml")
    args_common = pytest.importorskip("ansible_collections.kubernetes.core.plugins.module_utils.args_common")
    k8s_fragment = pytest.importorskip("ansible_collections.kubernetes.core.plugins.doc_fragments.k8s_auth_options")
    from ansible_collections.hanzo.kms.plugins.doc_fragments.cnpg import ModuleDocFragment  # pylint: disable=import-outside-toplevel

    ours = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]
    theirs = yaml.safe_load(k8s_fragment.ModuleDocFragment.DOCUMENTATION)["options"]
    for side in ("old_cluster", "new_cluster"):
        sub = ours[side]["suboptions"]
        assert set(sub) == set(args_common.AUTH_ARG_SPEC) | {"name", "namespace"}
        for key, doc in theirs.items():
            assert sub[key].get("type") == doc.get("type") and sub[key].get("aliases") == doc.get("aliases"), key
