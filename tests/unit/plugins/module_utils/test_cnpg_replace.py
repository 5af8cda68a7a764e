"""Replacing the active site's Cluster with its point-in-time recovery (pitr.yml replace mode, issue 18 item 3): the
confirmation, refusals, the new archive name, an interrupted run, the passive replica left on the old history."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.hanzo.kms.plugins.filter.cnpg_replace import FilterModule
from ansible_collections.hanzo.kms.plugins.module_utils import cnpg_recovery as cr
from ansible_collections.hanzo.kms.plugins.module_utils import cnpg_rejoin as rj
from ansible_collections.hanzo.kms.plugins.module_utils import cnpg_replace as rp

from .test_cnpg_rejoin import cluster, external

TARGET = {"targetTime": "2026-12-05T01:00:00.000000Z"}
TEXT = "2026-12-05T01:00:00Z"
CONFIRM = "REPLACE kms-pg-dc1 WITH 2026-12-05T01:00:00Z"
PRIMARY = cluster("dc1", "dc1", is_primary=True, tl=1)


def test_the_primary_is_replaced_under_an_archive_named_after_the_next_timeline():
    assert rp.confirmation("kms-pg-dc1", TEXT) == CONFIRM
    plan = rp.plan("kms-pg-dc1", PRIMARY, TARGET, TEXT, CONFIRM)
    assert plan == {
        "action": "rebuild",
        "cluster": "kms-pg-dc1",
        "server_name": "kms-pg-dc1-tl2",
        "old_server_name": "kms-pg-dc1",
        "timeline": 1,
        "recovery_target": TARGET,
    }
    # after a rejoin renamed the archive, and a second replacement on the same timeline: never the old name again
    renamed = cluster("dc1", "dc1", server="kms-pg-dc1-tl2", is_primary=True, tl=2)
    assert rp.plan("kms-pg-dc1", renamed, TARGET, TEXT, CONFIRM)["server_name"] == "kms-pg-dc1-tl3"
    same = cluster("dc1", "dc1", server="kms-pg-dc1-tl3", is_primary=True, tl=2)
    assert rp.plan("kms-pg-dc1", same, TARGET, TEXT, CONFIRM)["server_name"] == "kms-pg-dc1-tl3-r2"


def test_refusals_come_before_anything_changes_and_name_the_reason():
    for wrong in ("", "REPLACE kms-pg-dc1", "REPLACE kms-pg-dc2 WITH 2026-12-05T01:00:00Z", CONFIRM + " "):
        with pytest.raises(rp.ReplaceRefused, match="pitr_confirm must be exactly 'REPLACE kms-pg-dc1 WITH 2026"):
            rp.plan("kms-pg-dc1", PRIMARY, TARGET, TEXT, wrong)
    with pytest.raises(rp.ReplaceRefused, match="not the primary"):
        rp.plan("kms-pg-dc1", cluster("dc1", "dc2"), TARGET, TEXT, CONFIRM)
    with pytest.raises(rp.ReplaceRefused, match="does not exist"):
        rp.plan("kms-pg-dc1", None, TARGET, TEXT, CONFIRM)
    with pytest.raises(rp.ReplaceRefused, match="no timeline"):
        rp.plan("kms-pg-dc1", cluster("dc1", "dc1", is_primary=True, tl=0), TARGET, TEXT, CONFIRM)
    plan_filter = FilterModule().filters()["cnpg_replace_plan"]
    with pytest.raises(AnsibleFilterError, match="Refusing to replace kms-pg-dc1: pitr_confirm must be exactly"):
        plan_filter("kms-pg-dc1", PRIMARY, TARGET, TEXT, "yes")
    assert plan_filter("kms-pg-dc1", PRIMARY, TARGET, TEXT, CONFIRM)["action"] == "rebuild"


def test_an_interrupted_run_finishes_with_the_recorded_plan():
    first = rp.plan("kms-pg-dc1", PRIMARY, TARGET, TEXT, CONFIRM)
    # stopped before the deletion, while deleting, after it, while the replacement recovered
    assert rp.plan("kms-pg-dc1", PRIMARY, TARGET, TEXT, CONFIRM, first)["action"] == "rebuild"
    deleting = dict(PRIMARY, metadata=dict(PRIMARY["metadata"], deletionTimestamp="2026-12-05T01:10:00Z"))
    assert rp.plan("kms-pg-dc1", deleting, TARGET, TEXT, CONFIRM, first)["action"] == "create"
    again = rp.plan("kms-pg-dc1", None, TARGET, TEXT, CONFIRM, first)
    assert (again["action"], again["server_name"]) == ("create", "kms-pg-dc1-tl2")
    recovering = cluster("dc1", "dc1", server="kms-pg-dc1-tl2", phase="Setting up primary", tl=0)
    assert rp.plan("kms-pg-dc1", recovering, TARGET, TEXT, CONFIRM, first)["action"] == "wait"
    # another target than the interrupted run's is refused; a finished record is no interrupted run
    with pytest.raises(rp.ReplaceRefused, match="earlier, unfinished replacement of kms-pg-dc1 recovers to"):
        rp.plan("kms-pg-dc1", None, {"targetLSN": "0/5000000"}, "0/5000000", "REPLACE kms-pg-dc1 WITH 0/5000000", first)
    replaced = cluster("dc1", "dc1", server="kms-pg-dc1-tl2", is_primary=True, tl=2)
    finished = dict(first, finished="2026-12-05T01:20:00Z")
    later_target = {"targetTime": "2026-12-05T01:30:00.000000Z"}
    later_text = "2026-12-05T01:30:00Z"
    later = rp.plan(
        "kms-pg-dc1", replaced, later_target, later_text, rp.confirmation("kms-pg-dc1", later_text), finished
    )
    assert (later["action"], later["server_name"]) == ("rebuild", "kms-pg-dc1-tl3")
    # the same command again after it finished would rewind once more, losing every write since: refused
    with pytest.raises(
        rp.ReplaceRefused, match="already replaced by its recovery to .* delete ConfigMap kms-pg-dc1-replace"
    ):
        rp.plan("kms-pg-dc1", replaced, TARGET, TEXT, CONFIRM, finished)


def test_a_re_run_recovers_from_the_archive_the_interrupted_run_recorded():
    """After an interruption the Cluster is gone or already the replacement archiving under the new name: the
    re-run's target check and recovery read the recorded old archive, not the one the Cluster writes now."""
    old = cluster("dc1", "dc1", server="kms-pg-dc1-tl3", is_primary=True, tl=3)
    first = rp.plan("kms-pg-dc1", old, TARGET, TEXT, CONFIRM)
    source = FilterModule().filters()["cnpg_replace_source"]
    assert first["old_server_name"] == "kms-pg-dc1-tl3" and first["server_name"] == "kms-pg-dc1-tl4"
    assert source(first, "kms-pg-dc1-tl4") == "kms-pg-dc1-tl3"  # the replacement exists, archiving under tl4
    assert source(first, "kms-pg-dc1") == "kms-pg-dc1-tl3"  # the Cluster is gone: no name to read from it
    # no record, or a finished one: the archive the Cluster writes now (a new replacement starts from it)
    assert source(None, "kms-pg-dc1-tl4") == source({}, "kms-pg-dc1-tl4") == "kms-pg-dc1-tl4"
    assert source(dict(first, finished="2026-12-05T01:20:00Z"), "kms-pg-dc1-tl4") == "kms-pg-dc1-tl4"
    with pytest.raises(AnsibleFilterError, match="needs the recorded plan as a dict"):
        source("kms-pg-dc1-tl3", "kms-pg-dc1-tl4")


def test_the_replacement_reads_its_old_archive_and_then_its_own_entry_reads_the_new_one():
    # the cnpg role renders the replacement writing the new archive, its own entry reading the old one (the source)
    names = rj.server_names(None, "kms-pg", "dc1", ["dc1", "dc2"], {"dc1": "kms-pg-dc1-tl2"}, "kms-pg-dc1")
    assert names == {"self": "kms-pg-dc1-tl2", "sites": {"dc1": "kms-pg-dc1", "dc2": "kms-pg-dc2"}}
    replaced = cluster("dc1", "dc1", server="kms-pg-dc1-tl2", is_primary=True, tl=2)
    entries = FilterModule().filters()["cnpg_own_archive_entries"](replaced, "kms-pg-dc1-tl2")
    assert entries == [external("dc1", "kms-pg-dc1-tl2"), external("dc2")]
    replaced["spec"]["externalClusters"] = entries
    # then install.yml renders the same names (changes nothing)
    assert rj.server_names(replaced, "kms-pg", "dc1", ["dc1", "dc2"])["sites"]["dc1"] == "kms-pg-dc1-tl2"
    assert FilterModule().filters()["cnpg_own_archive_entries"](replaced, "kms-pg-dc1-tl2") == entries


def test_the_passive_replica_on_the_old_archive_is_rebuilt_by_a_rejoin():
    replaced = cluster("dc1", "dc1", server="kms-pg-dc1-tl2", is_primary=True, tl=2)
    passive = cluster("dc2", "dc1")  # a healthy replica of kms-pg-dc1, reading the archive kms-pg-dc1
    plan = rj.plan("dc2", "dc1", "kms-pg-dc2", passive, replaced)
    assert (plan["action"], plan["server_name"]) == ("rebuild", "kms-pg-dc2-tl2")
    assert plan["server_name_overrides"] == {"dc2": "kms-pg-dc2-tl2", "dc1": "kms-pg-dc1-tl2"}
    # a replica reading the archive the primary writes needs no rejoin
    following = cluster("dc2", "dc1")
    following["spec"]["externalClusters"][0] = external("dc1", "kms-pg-dc1-tl2")
    with pytest.raises(rj.RejoinRefused, match="already a healthy replica of kms-pg-dc1"):
        rj.plan("dc2", "dc1", "kms-pg-dc2", following, replaced)


def test_the_report_says_what_was_replaced_kept_and_what_comes_next():
    report = cr.recovery_record(
        cluster("dc1", "dc1", server="kms-pg-dc1-tl2", is_primary=True, tl=2)
        | {"status": {"phase": cr.HEALTHY_PHASE, "conditions": [{"type": "Ready", "status": "True"}]}},
        {"cluster": "kms-pg-dc1", "source_cluster": "kms-pg-dc1", "new_server_name": "kms-pg-dc1-tl2"},
        sql={"tables": {"public.t": 3}, "recovery": {"timeline": 2, "history_error": "permission denied"}},
    )
    report.update(
        mode="replace",
        site="dc1",
        old_server_name="kms-pg-dc1",
        retained_volumes=["dc1-real-pv-1"],
        kms_replicas=2,
        passive_sites=["dc2"],
    )
    text = cr.render_report(report)
    assert "| replaced Cluster | `kms-pg-dc1` in site dc1 |" in text
    assert "| recovery ended | timeline 2 (its history file was not read: permission denied) |" in text
    assert "| new archive (serverName) | `kms-pg-dc1-tl2` |" in text
    assert "| old archive, untouched | `kms-pg-dc1` |" in text
    assert "| old data kept aside (PersistentVolumes, Retain) | dc1-real-pv-1 |" in text
    assert "rejoin.yml -e rejoin_site=dc2 before any failover" in text
