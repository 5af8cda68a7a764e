"""The failback's decisions (rejoin.yml, issue 18 item 2): refusals, the new archive name, an interrupted run."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.hanzo.kms.plugins.filter.cnpg_rejoin import FilterModule, cnpg_rejoin_plan
from ansible_collections.hanzo.kms.plugins.module_utils import cnpg_rejoin as rj

PLUGIN = "barman-cloud.cloudnative-pg.io"


def external(site, server=None):
    return {
        "name": f"kms-pg-{site}",
        "plugin": {
            "name": PLUGIN,
            "parameters": {"barmanObjectName": f"kms-pg-{site}-store", "serverName": server or f"kms-pg-{site}"},
        },
    }


def cluster(site, primary, server=None, is_primary=False, fenced=False, phase="Cluster in healthy state", tl=1):
    name = f"kms-pg-{site}"
    obj = {
        "metadata": {"name": name, "annotations": {}},
        "spec": {
            "replica": {"self": name, "primary": f"kms-pg-{primary}", "source": "x"},
            "plugins": [{"name": PLUGIN, "isWALArchiver": True, "parameters": {"serverName": server or name}}],
            "externalClusters": [external("dc1"), external("dc2")],
        },
        "status": {
            "phase": phase,
            "timelineID": tl,
            "currentPrimary": f"{name}-1",
            "instancesReportedState": {f"{name}-1": {"isPrimary": is_primary}},
        },
    }
    if fenced:
        obj["metadata"]["annotations"]["cnpg.io/fencedInstances"] = '["*"]'
    return obj


ACTIVE = cluster("dc2", "dc2", is_primary=True, tl=2)


def test_a_fenced_old_primary_is_rebuilt_under_a_name_of_the_new_timeline():
    old = cluster("dc1", "dc1", is_primary=True, fenced=True)
    plan = rj.plan("dc1", "dc2", "kms-pg-dc1", old, ACTIVE)
    assert plan["action"] == "rebuild"
    assert (plan["server_name"], plan["old_server_name"]) == ("kms-pg-dc1-tl2", "kms-pg-dc1")
    assert (plan["primary"], plan["timeline"]) == ("kms-pg-dc2", 2)
    assert plan["server_name_overrides"] == {"dc1": "kms-pg-dc1-tl2", "dc2": "kms-pg-dc2"}
    # the active Cluster's external cluster of dc1 must read the new archive (what it follows after a switchover back)
    assert plan["active_external_clusters"] == [external("dc1", "kms-pg-dc1-tl2"), external("dc2")]


def test_refusals_name_the_reason():
    old = cluster("dc1", "dc1", is_primary=True, fenced=True)
    with pytest.raises(rj.RejoinRefused, match="dc2 is the active site"):
        rj.plan("dc2", "dc2", "kms-pg-dc2", ACTIVE, ACTIVE)
    with pytest.raises(rj.RejoinRefused, match="still a writable primary and is not fenced .*fence\\.yml"):
        rj.plan("dc1", "dc2", "kms-pg-dc1", cluster("dc1", "dc1", is_primary=True), ACTIVE)
    with pytest.raises(rj.RejoinRefused, match="already a healthy replica of kms-pg-dc2"):
        rj.plan("dc1", "dc2", "kms-pg-dc1", cluster("dc1", "dc2"), ACTIVE)
    with pytest.raises(rj.RejoinRefused, match="not a healthy primary"):
        rj.plan("dc1", "dc2", "kms-pg-dc1", old, cluster("dc2", "dc2", is_primary=True, phase="Creating"))
    with pytest.raises(rj.RejoinRefused, match="not a healthy primary"):
        rj.plan("dc1", "dc2", "kms-pg-dc1", old, cluster("dc2", "dc1"))
    with pytest.raises(rj.RejoinRefused, match="has no Cluster"):
        rj.plan("dc1", "dc2", "kms-pg-dc1", old, None)
    with pytest.raises(rj.RejoinRefused, match="followed kms-pg-dc3"):
        rj.plan("dc1", "dc2", "kms-pg-dc1", old, ACTIVE, {"primary": "kms-pg-dc3", "server_name": "x"})
    # the filter fails the task with the reason
    with pytest.raises(AnsibleFilterError, match="Refusing to rejoin dc2: dc2 is the active site"):
        cnpg_rejoin_plan("dc2", "dc2", "kms-pg-dc2", ACTIVE, ACTIVE)


def test_a_hibernated_or_replica_old_cluster_is_rebuilt():
    hibernated = cluster("dc1", "dc1", is_primary=True)
    hibernated["metadata"]["annotations"]["cnpg.io/hibernation"] = "on"
    assert rj.plan("dc1", "dc2", "kms-pg-dc1", hibernated, ACTIVE)["action"] == "rebuild"
    # a replica of the old primary (never switched) cannot follow the new timeline either
    assert rj.plan("dc1", "dc2", "kms-pg-dc1", cluster("dc1", "dc3"), ACTIVE)["action"] == "rebuild"


def test_an_interrupted_run_finishes_with_the_recorded_plan():
    old = cluster("dc1", "dc1", is_primary=True, fenced=True)
    first = rj.plan("dc1", "dc2", "kms-pg-dc1", old, ACTIVE)
    # killed before the deletion: the old Cluster is still there, the recorded name is kept
    later = cluster("dc2", "dc2", is_primary=True, tl=3)
    again = rj.plan("dc1", "dc2", "kms-pg-dc1", old, later, first)
    assert (again["action"], again["server_name"]) == ("rebuild", "kms-pg-dc1-tl2")
    # killed while the Cluster was being deleted, or after: it is created
    deleting = dict(old, metadata=dict(old["metadata"], deletionTimestamp="2026-12-04T19:00:00Z"))
    assert rj.plan("dc1", "dc2", "kms-pg-dc1", deleting, ACTIVE, first)["action"] == "rebuild"
    assert rj.plan("dc1", "dc2", "kms-pg-dc1", None, ACTIVE, first)["action"] == "create"
    # killed while the new replica bootstrapped (or a re-run after success): only waits; the active side is done
    rebuilt = cluster("dc1", "dc2", server="kms-pg-dc1-tl2", phase="Setting up primary")
    active = cluster("dc2", "dc2", is_primary=True, tl=2)
    active["spec"]["externalClusters"] = first["active_external_clusters"]
    done = rj.plan("dc1", "dc2", "kms-pg-dc1", rebuilt, active, first)
    assert (done["action"], done["server_name"], done["active_external_clusters"]) == ("wait", "kms-pg-dc1-tl2", None)
    # the record of a rejoin that finished is not an interrupted run: after the next failover dc1 is rebuilt again
    again_failed = cluster("dc1", "dc1", server="kms-pg-dc1-tl2", is_primary=True, fenced=True)
    later = rj.plan(
        "dc1",
        "dc2",
        "kms-pg-dc1",
        again_failed,
        cluster("dc2", "dc2", is_primary=True, tl=4),
        dict(first, finished="2026-12-04T20:00:10Z"),
    )
    assert (later["action"], later["server_name"], later["old_server_name"]) == (
        "rebuild",
        "kms-pg-dc1-tl4",
        "kms-pg-dc1-tl2",
    )


def test_a_site_without_a_cluster_is_created_and_new_names_never_repeat_the_old_one():
    plan = rj.plan("dc1", "dc2", "kms-pg-dc1", None, ACTIVE)
    assert (plan["action"], plan["server_name"]) == ("create", "kms-pg-dc1-tl2")
    assert rj.new_server_name("kms-pg-dc1", 2, "kms-pg-dc1") == "kms-pg-dc1-tl2"
    assert rj.new_server_name("kms-pg-dc1", 2, "kms-pg-dc1-tl2") == "kms-pg-dc1-tl2-r2"
    assert rj.new_server_name("kms-pg-dc1", 2, "kms-pg-dc1-tl2-r2") == "kms-pg-dc1-tl2-r3"
    assert rj.new_server_name("kms-pg-dc1", 4, "kms-pg-dc1-tl2-r2") == "kms-pg-dc1-tl4"


def test_server_names_keep_what_the_clusters_say():
    sites = ["dc1", "dc2"]
    assert rj.server_names(None, "kms-pg", "dc1", sites) == {
        "self": "kms-pg-dc1",
        "sites": {"dc1": "kms-pg-dc1", "dc2": "kms-pg-dc2"},
    }
    rebuilt = cluster("dc1", "dc2", server="kms-pg-dc1-tl2")
    rebuilt["spec"]["externalClusters"][0] = external("dc1", "kms-pg-dc1-tl2")
    assert rj.server_names(rebuilt, "kms-pg", "dc1", sites)["sites"] == {"dc1": "kms-pg-dc1-tl2", "dc2": "kms-pg-dc2"}
    active = cluster("dc2", "dc2", is_primary=True)
    active["spec"]["externalClusters"][0] = external("dc1", "kms-pg-dc1-tl2")
    assert rj.server_names(active, "kms-pg", "dc2", sites) == {
        "self": "kms-pg-dc2",
        "sites": {"dc1": "kms-pg-dc1-tl2", "dc2": "kms-pg-dc2"},
    }
    # rejoin.yml's override wins over the old Cluster's name
    assert rj.server_names(cluster("dc1", "dc1"), "kms-pg", "dc1", sites, {"dc1": "kms-pg-dc1-tl2"})["self"] == (
        "kms-pg-dc1-tl2"
    )
    filters = FilterModule().filters()
    assert filters["cnpg_server_names"](None, "kms-pg", "dc2", sites)["self"] == "kms-pg-dc2"


def test_retained_volumes_and_report():
    claims = [
        {"metadata": {"labels": {"cnpg.io/cluster": "kms-pg-dc1"}}, "spec": {"volumeName": "pv-3"}},
        {"metadata": {"labels": {"cnpg.io/cluster": "kms-pg-dc1"}}, "spec": {"volumeName": "pv-1"}},
        {"metadata": {"labels": {"cnpg.io/cluster": "other"}}, "spec": {"volumeName": "pv-2"}},
        {"metadata": {"labels": {"cnpg.io/cluster": "kms-pg-dc1"}}, "spec": {}},
    ]
    assert rj.retained_volumes(claims, "kms-pg-dc1") == ["pv-1", "pv-3"]
    text = rj.render_report(
        {
            "site": "dc1",
            "primary": "kms-pg-dc2",
            "result": "succeeded",
            "action": "rebuild",
            "server_name": "kms-pg-dc1-tl2",
            "old_server_name": "kms-pg-dc1",
            "timeline": 2,
            "retained_volumes": ["pv-1"],
            "record": "kms-pg-dc1-rejoin",
            "seconds_to_healthy": 42.0,
            "redis": "up",
        }
    )
    assert "`kms-pg-dc1-tl2`" in text and "old archive, untouched: `kms-pg-dc1`" in text and "pv-1" in text


def test_a_recovery_reads_the_archive_the_cluster_writes_now():
    """After a rejoin, restore_test.yml and pitr.yml must read kms-pg-dc1-tl2, not the pre-failover kms-pg-dc1."""
    rebuilt = cluster("dc1", "dc2", server="kms-pg-dc1-tl2")
    active = cluster("dc2", "dc2", is_primary=True, tl=2)
    active["spec"]["externalClusters"][0] = external("dc1", "kms-pg-dc1-tl2")
    read = {"changed": False, "resources": [rebuilt]}
    assert rj.archive_server_name("kms-pg-dc1", [read, {"resources": [active]}]) == "kms-pg-dc1-tl2"
    assert rj.archive_server_name("kms-pg-dc2", [read, {"resources": [active]}]) == "kms-pg-dc2"
    # dc1 does not answer: dc2's entry for it says the name
    unreachable = {"failed": True, "msg": "connection refused"}
    skipped = {"skipped": True}
    assert rj.archive_server_name("kms-pg-dc1", [unreachable, skipped, active]) == "kms-pg-dc1-tl2"
    # the Cluster's own word wins over a stale entry elsewhere
    stale = cluster("dc2", "dc2", is_primary=True)
    assert rj.archive_server_name("kms-pg-dc1", [stale, rebuilt]) == "kms-pg-dc1-tl2"
    # nothing known: the Cluster's name; a Cluster without the plugin archives under its name
    assert rj.archive_server_name("kms-pg-dc1", [unreachable]) == "kms-pg-dc1"
    plain = {"metadata": {"name": "kms-pg-dc1"}, "spec": {}}
    assert rj.archive_server_name("kms-pg-dc1", [plain, active]) == "kms-pg-dc1"
    archive_filter = FilterModule().filters()["cnpg_archive_server_name"]
    assert archive_filter("kms-pg-dc1", [read]) == "kms-pg-dc1-tl2"
    with pytest.raises(AnsibleFilterError, match="needs a list"):
        archive_filter("kms-pg-dc1", {"resources": []})
