# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which site is active now: the one decision install.yml and the failover/switchover playbooks share.

The inventory's ``site_role`` names the active site at install time; a failover or switchover moves the primary
without editing the inventory. The record of the real state is the CNPG Clusters themselves: the active site is
the one whose Cluster is an unfenced primary (``spec.replica.primary`` names itself), and a replica names the
primary it follows. The inventory decides only where no Cluster exists yet (a fresh install) or none answers.

A *site read* is what ``kubernetes.core.k8s_info`` returned for one site's Cluster, tolerating an unreachable
API server (``failed``/``msg``):

    {"site": "dc1", "inventory_role": "active"|"passive", "cluster_name": "kms-pg-dc1",
     "read": {"resources": [<Cluster>]} | {"msg": str} (no answer) | {"skipped": true} or None (not read)}

No I/O and no Ansible import: the filter hanzo.kms.site_roles wraps ``decide``.
"""

from __future__ import annotations

from ansible_collections.hanzo.kms.plugins.module_utils.cnpg import summarize

ROLES = ("active", "passive")
STOPPED = ("fenced", "hibernated")


class SiteRoleError(ValueError):
    """The Clusters do not name one active site (split brain, a switch in progress): nothing may be installed."""


def _site_state(entry):
    """(reachable, error, cluster summary or None) of one site read."""
    read = entry.get("read")
    if not read or read.get("skipped"):
        return False, "not read", None
    # failed_when: false keeps the task going and sets failed to false: a read without resources did not answer
    if read.get("failed") or "resources" not in read:
        return False, str(read.get("msg") or "the Kubernetes API did not answer"), None
    resources = read.get("resources") or []
    return True, None, summarize(resources[0]) if resources else None


def _inventory_active(sites):
    active = [s["site"] for s in sites if s.get("inventory_role") == "active"]
    if len(active) != 1:
        raise SiteRoleError(f"exactly one site must have site_role active in the inventory, got {active or 'none'}")
    return active[0]


def _site_of(sites, cluster_name):
    for entry in sites:
        if cluster_name == entry.get("cluster_name"):
            return entry["site"]
    return None


def decide(sites):
    """The roles of the sites now (see the module docstring).

    Returns ``{"active_site", "source": "clusters"|"inventory", "roles": {site: role}, "unreachable": {site: error},
    "stale": [sites whose inventory role is not their role now], "detail": why}``; raises SiteRoleError when the
    Clusters contradict each other."""
    if not sites:
        raise SiteRoleError("no sites given")
    names = [s.get("site") for s in sites]
    if len(set(names)) != len(names) or not all(names):
        raise SiteRoleError(f"every site needs a unique name, got {names}")
    for entry in sites:
        if entry.get("inventory_role") not in ROLES:
            raise SiteRoleError(
                f"site {entry['site']}: site_role must be active or passive, got {entry.get('inventory_role')!r}"
            )
    inventory_active = _inventory_active(sites)
    states = {s["site"]: _site_state(s) for s in sites}
    unreachable = {site: error for site, (reachable, error, dummy) in states.items() if not reachable}
    clusters = {site: cluster for site, (dummy, dummy_error, cluster) in states.items() if cluster}
    demoting = sorted(site for site, c in clusters.items() if c["role"] == "demoting")
    if demoting:
        raise SiteRoleError(
            f"the Cluster of {', '.join(demoting)} is being demoted (a switchover in progress): finish it with "
            "switchover.yml first"
        )
    primaries = sorted(site for site, c in clusters.items() if c["role"] == "primary" and c["fencing"] not in STOPPED)
    if len(primaries) > 1:
        raise SiteRoleError(
            f"more than one Cluster is an unfenced primary ({', '.join(primaries)}): split brain; fence the one the "
            "load balancers do not send traffic to (fence.yml) before installing"
        )
    if primaries:
        active, source = primaries[0], "clusters"
        detail = f"the Cluster of {active} is the unfenced primary"
    else:
        followed = {c["spec_primary"] for c in clusters.values() if c["role"] != "primary"}
        if len(followed) > 1:
            raise SiteRoleError(
                f"the replica Clusters follow different primaries ({', '.join(sorted(followed))}) and none is an "
                "unfenced primary: finish the failover or switchover first"
            )
        named = _site_of(sites, next(iter(followed))) if followed else None
        if followed and named is None:
            raise SiteRoleError(f"the replica Clusters follow {next(iter(followed))}, which is no site's Cluster")
        if named is not None and named in clusters:
            raise SiteRoleError(
                f"the replica Clusters follow {named}, whose Cluster is fenced or not a primary: finish the failover "
                "first (failover.yml), or unfence it"
            )
        if named is not None:
            active, source = named, "clusters"
            detail = f"the replica Clusters follow {named} (its Cluster is missing or unreachable)"
        elif any(c["role"] == "primary" for c in clusters.values()):
            raise SiteRoleError(
                "every primary Cluster is fenced: fail over to a site (failover.yml) or unfence one first"
            )
        else:
            active, source = inventory_active, "inventory"
            detail = "no Cluster exists or answers yet: the inventory's site_role decides"
    roles = {site: "active" if site == active else "passive" for site in names}
    stale = [s["site"] for s in sites if s["inventory_role"] != roles[s["site"]]]
    return {
        "active_site": active,
        "source": source,
        "roles": roles,
        "unreachable": unreachable,
        "stale": stale,
        "detail": detail,
    }
