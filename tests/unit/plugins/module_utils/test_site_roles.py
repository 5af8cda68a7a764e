"""The active-site decision install.yml and the switch playbooks share (issue 18 item 6)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.hanzo.kms.plugins.filter.site_roles import FilterModule, site_roles
from ansible_collections.hanzo.kms.plugins.module_utils.site_roles import SiteRoleError, decide


def cluster(site, primary, fenced=False, demoting=False):
    obj = {
        "metadata": {"name": f"kms-pg-{site}", "annotations": {}},
        "spec": {"replica": {"self": f"kms-pg-{site}", "primary": f"kms-pg-{primary}", "source": "x"}},
        "status": {},
    }
    if fenced:
        obj["metadata"]["annotations"]["cnpg.io/fencedInstances"] = '["*"]'
    if demoting:
        obj["status"]["switchReplicaClusterStatus"] = {"inProgress": True}
    return obj


def site(name, role, obj=None, failed=False):
    read = (
        {"failed": True, "msg": "connection refused"}
        if failed
        else {"failed": False, "resources": [obj] if obj else []}
    )
    return {"site": name, "inventory_role": role, "cluster_name": f"kms-pg-{name}", "read": read}


def test_fresh_install_follows_the_inventory():
    result = decide([site("dc1", "passive"), site("dc2", "active")])
    assert result == {
        "active_site": "dc2",
        "source": "inventory",
        "roles": {"dc1": "passive", "dc2": "active"},
        "unreachable": {},
        "stale": [],
        "detail": "no Cluster exists or answers yet: the inventory's site_role decides",
    }


def test_installed_sites_agree_with_the_inventory():
    result = decide([site("dc1", "active", cluster("dc1", "dc1")), site("dc2", "passive", cluster("dc2", "dc1"))])
    assert (result["active_site"], result["source"], result["stale"]) == ("dc1", "clusters", [])


def test_after_a_switchover_the_clusters_win_over_the_stale_inventory():
    result = decide([site("dc1", "active", cluster("dc1", "dc2")), site("dc2", "passive", cluster("dc2", "dc2"))])
    assert result["active_site"] == "dc2"
    assert result["roles"] == {"dc1": "passive", "dc2": "active"}
    assert result["stale"] == ["dc1", "dc2"]


def test_after_a_failover_the_fenced_old_primary_is_passive():
    sites = [site("dc1", "active", cluster("dc1", "dc1", fenced=True)), site("dc2", "passive", cluster("dc2", "dc2"))]
    assert decide(sites)["roles"] == {"dc1": "passive", "dc2": "active"}


def test_after_a_failover_the_lost_old_site_is_unreachable_and_passive():
    result = decide([site("dc1", "active", failed=True), site("dc2", "passive", cluster("dc2", "dc2"))])
    assert result["roles"] == {"dc1": "passive", "dc2": "active"}
    assert result["unreachable"] == {"dc1": "connection refused"}


def test_an_unreachable_primary_stays_active_while_the_replica_follows_it():
    result = decide([site("dc1", "active", failed=True), site("dc2", "passive", cluster("dc2", "dc1"))])
    assert (result["active_site"], result["source"]) == ("dc1", "clusters")
    assert "follow dc1" in result["detail"]


def test_nothing_answers_the_inventory_decides():
    result = decide([site("dc1", "active", failed=True), site("dc2", "passive", failed=True)])
    assert (result["active_site"], result["source"]) == ("dc1", "inventory")
    assert set(result["unreachable"]) == {"dc1", "dc2"}


def test_a_read_kept_going_by_failed_when_is_unreachable_and_a_skipped_one_not_read():
    kept_going = {"site": "dc1", "inventory_role": "active", "cluster_name": "kms-pg-dc1"}
    kept_going["read"] = {"failed": False, "failed_when_result": False, "msg": "Max retries exceeded"}
    skipped = {"site": "dc2", "inventory_role": "passive", "cluster_name": "kms-pg-dc2", "read": {"skipped": True}}
    result = decide([kept_going, skipped])
    assert result["unreachable"] == {"dc1": "Max retries exceeded", "dc2": "not read"}
    assert result["source"] == "inventory"


@pytest.mark.parametrize(
    ("sites", "message"),
    [
        ([site("dc1", "active", cluster("dc1", "dc1")), site("dc2", "passive", cluster("dc2", "dc2"))], "split brain"),
        (
            [
                site("dc1", "active", cluster("dc1", "dc2", demoting=True)),
                site("dc2", "passive", cluster("dc2", "dc1")),
            ],
            "being demoted",
        ),
        (
            [site("dc1", "active", cluster("dc1", "dc1", fenced=True)), site("dc2", "passive", cluster("dc2", "dc1"))],
            "fenced or not a primary",
        ),
        (
            [
                site("dc1", "active", failed=True),
                site("dc2", "passive", cluster("dc2", "dc1")),
                site("dc3", "passive", cluster("dc3", "dc2")),
            ],
            "different primaries",
        ),
        ([site("dc1", "active", failed=True), site("dc2", "passive", cluster("dc2", "elsewhere"))], "no site's"),
        ([site("dc1", "active"), site("dc2", "active")], "exactly one site"),
        ([site("dc1", "active"), site("dc1", "passive")], "unique name"),
        ([site("dc1", "primary")], "active or passive"),
        ([], "no sites"),
    ],
)
def test_contradictions_are_refused_naming_the_problem(sites, message):
    with pytest.raises(SiteRoleError, match=message):
        decide(sites)


def test_every_primary_fenced_is_refused():
    sites = [site("dc1", "active", cluster("dc1", "dc1", fenced=True)), site("dc2", "passive")]
    with pytest.raises(SiteRoleError, match="every primary Cluster is fenced"):
        decide(sites)


def test_the_filter_wraps_the_decision_and_its_errors():
    assert FilterModule().filters()["site_roles"] is site_roles
    assert site_roles([site("dc1", "active"), site("dc2", "passive")])["active_site"] == "dc1"
    with pytest.raises(AnsibleFilterError, match="cannot decide the active site: .*split brain"):
        site_roles([site("dc1", "active", cluster("dc1", "dc1")), site("dc2", "passive", cluster("dc2", "dc2"))])
    with pytest.raises(AnsibleFilterError, match="list of site reads"):
        site_roles("dc1")
