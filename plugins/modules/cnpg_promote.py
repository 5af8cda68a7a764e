#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: cnpg_promote
short_description: Switch over or fail over a CloudNativePG replica cluster between two Kubernetes clusters
version_added: 0.1.0
description:
  - Promotes the CloudNativePG (CNPG) replica C(Cluster) O(new_cluster) to primary of a distributed topology
    (CNPG 1.24 or later, C(spec.replica.primary)), demoting the current primary O(old_cluster) first in a planned
    switchover so that no committed transaction is lost.
  - O(mode=switchover) needs both Kubernetes API servers. It merge-patches the old primary's C(spec.replica.primary)
    to the new cluster (removing a stale C(promotionToken) in the same patch), waits for C(status.demotionToken) and a
    completed C(ReplicaClusterSwitch) condition, then sets C(primary) and C(promotionToken) of the new cluster in one
    patch and waits until C(status.lastPromotionToken) equals the token, the designated primary reports C(isPrimary),
    the phase is C(Cluster in healthy state) and C(Ready) is true.
  - Before the promotion patch, a switchover records the demotion token on the new cluster (annotation
    C(hanzo.kms/demotion-token), with the old cluster's name and the time). When a re-run finds the old cluster's API
    unreachable (its site was lost between demotion and promotion), it promotes the new cluster with that recorded
    token (CNPG promotes once the token's LSN is replayed, so no data is lost) instead of failing; without a usable
    recorded token it refuses and only O(mode=failover) can proceed. A recorded token is used only while the new
    cluster replicates from the cluster that published it and is not on a later timeline than the token.
  - O(mode=failover) is for a lost primary site. It promotes the new cluster without a token (or sets
    C(spec.replica.enabled=false) for the standalone replica form), so WAL not yet shipped is lost and RV(data_loss_possible)
    is true. It refuses when the old cluster still answers and reports a primary, unless that cluster is fenced
    (annotation C(cnpg.io/fencedInstances) covering all instances) or hibernated (C(cnpg.io/hibernation=on)), or
    O(old_cluster_fencing) asks the module to fence or hibernate it first.
  - The standalone replica form (C(spec.replica.enabled)) has no controlled switchover in CNPG; O(mode=switchover)
    is refused there with an explanation.
  - Every step is skipped when the clusters already show it done, so the module is idempotent (an already promoted
    cluster gives C(changed=false)) and a run interrupted at any step resumes, for example from the demotion token
    already in the old cluster's status.
  - Each side has its own connection settings, so the two clusters can live in different Kubernetes clusters. The
    top-level connection options (from C(kubernetes.core)) apply to both sides; the same options inside
    O(old_cluster) or O(new_cluster) override them for one side.
  - Waits fail after O(demotion_timeout) or O(promotion_timeout) with the last observed status in the error, and at
    once with CNPG's C(phaseReason) when a cluster enters the phase C(Cluster is unrecoverable and needs manual
    intervention) (for example a promotion token that does not match). Conflicts (HTTP 409) are retried.
author:
  - Hanzo KMS platform team (@hanzoai)
requirements:
  - kubernetes >= 24.2.0 (Python library)
  - the kubernetes.core collection
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - hanzo.kms.cnpg
attributes:
  check_mode:
    support: full
    description: Reads both clusters and returns the plan (RV(plan), the patches a real run would apply); changes nothing.
  diff_mode:
    support: full
    description: Shows the specs (and fencing annotations) of both clusters before and after.
notes:
  - After a failover the old cluster cannot follow the new timeline; it must be re-cloned (with a fresh
    C(serverName) for its WAL archive) before it rejoins as a replica.
  - This module does not create a backup after the promotion; take one on the new primary afterwards.
seealso:
  - name: CloudNativePG replica clusters
    description: Distributed topology, demotion and promotion tokens.
    link: https://cloudnative-pg.io/documentation/current/replica_cluster/
options:
  mode:
    description:
      - V(switchover) demotes O(old_cluster) and promotes O(new_cluster) with the demotion token (no data loss).
      - V(failover) promotes O(new_cluster) without a token (data loss possible).
    type: str
    required: true
    choices: [switchover, failover]
  old_cluster_fencing:
    description:
      - Only for O(mode=failover) when the old cluster answers and reports a primary.
      - V(none) refuses the failover in that case.
      - V(fence) sets the annotation C(cnpg.io/fencedInstances='["*"]') on the old cluster first.
      - V(hibernate) sets the annotation C(cnpg.io/hibernation=on) on the old cluster first.
    type: str
    choices: [none, fence, hibernate]
    default: none
  demotion_timeout:
    description:
      - Seconds to wait for the old primary's demotion token and completed C(ReplicaClusterSwitch).
    type: int
    default: 300
  promotion_timeout:
    description:
      - Seconds to wait for the new cluster to be a healthy, ready primary.
    type: int
    default: 600
  request_timeout:
    description:
      - Timeout in seconds of each Kubernetes API request. An old site that does not answer within it counts as
        unreachable in O(mode=failover).
    type: int
    default: 10
  poll_interval:
    description:
      - Seconds between two reads of a cluster while waiting.
    type: float
    default: 0.5
"""

EXAMPLES = r"""
- name: Planned switchover from dc1 to dc2 (one kubeconfig, two contexts)
  hanzo.kms.cnpg_promote:
    mode: switchover
    kubeconfig: /etc/kms/kubeconfig
    old_cluster:
      name: kms-pg-dc1
      namespace: kms
      context: dc1
    new_cluster:
      name: kms-pg-dc2
      namespace: kms
      context: dc2
  register: switch

- name: Show the token used and the step timings
  ansible.builtin.debug:
    msg: "{{ switch.token }} {{ switch.timings }}"

- name: Fail over to dc2 after losing dc1, separate credentials per side
  hanzo.kms.cnpg_promote:
    mode: failover
    old_cluster:
      name: kms-pg-dc1
      namespace: kms
      host: https://k8s.dc1.example.com:6443
      api_key: "{{ dc1_token }}"
      ca_cert: /etc/kms/dc1-ca.crt
    new_cluster:
      name: kms-pg-dc2
      namespace: kms
      host: https://k8s.dc2.example.com:6443
      api_key: "{{ dc2_token }}"
      ca_cert: /etc/kms/dc2-ca.crt
    request_timeout: 5

- name: Fail over even though dc1 still answers, fencing its instances first
  hanzo.kms.cnpg_promote:
    mode: failover
    old_cluster_fencing: fence
    kubeconfig: /etc/kms/kubeconfig
    old_cluster: {name: kms-pg-dc1, namespace: kms, context: dc1}
    new_cluster: {name: kms-pg-dc2, namespace: kms, context: dc2}

- name: Show what a switchover would patch
  hanzo.kms.cnpg_promote:
    mode: switchover
    kubeconfig: /etc/kms/kubeconfig
    old_cluster: {name: kms-pg-dc1, namespace: kms, context: dc1}
    new_cluster: {name: kms-pg-dc2, namespace: kms, context: dc2}
  check_mode: true
  register: plan
"""

RETURN = r"""
mode:
  description: The mode that ran.
  returned: always
  type: str
  sample: switchover
plan:
  description:
    - The merge patches applied (or, in check mode, that would be applied), in order.
    - In check mode the promotion token of a switchover whose demotion has not happened yet is a placeholder.
  returned: always
  type: list
  elements: dict
  contains:
    step:
      description: V(demote), V(record_token) (the demotion token recorded on the new cluster), V(promote) or
        V(fence).
      type: str
    cluster:
      description: V(old) or V(new).
      type: str
    name:
      description: Name of the Cluster.
      type: str
    namespace:
      description: Namespace of the Cluster.
      type: str
    patch:
      description: The JSON merge patch.
      type: dict
  sample: [{"step": "demote", "cluster": "old", "name": "kms-pg-dc1", "namespace": "kms",
            "patch": {"spec": {"replica": {"primary": "kms-pg-dc2"}}}}]
steps:
  description: The steps that changed something in this run.
  returned: always
  type: list
  elements: str
  sample: [demote, promote]
token:
  description: The demotion/promotion token used (base64 JSON), null for a failover.
  returned: always
  type: str
token_source:
  description: Where a switchover took the token from, V(old_cluster) (its C(status.demotionToken)), V(recorded)
    (recorded on the new cluster by an interrupted run; the old cluster did not answer) or V(new_cluster_spec) (the
    promotion was already requested).
  returned: when mode is switchover and a token was used
  type: str
  sample: recorded
timings:
  description: Seconds spent per step (C(read), C(probe_old), C(fence), C(demote), C(wait_demotion), C(promote),
    C(wait_promotion)) and C(total).
  returned: always
  type: dict
  sample: {"demote": 0.02, "wait_demotion": 1.6, "promote": 0.02, "wait_promotion": 1.2, "total": 2.9}
data_loss_possible:
  description: True when the new primary was promoted without a demotion token.
  returned: always
  type: bool
lag:
  description: What is known of the replication lag at failover time (the Cluster API has no lag figure).
  returned: when mode is failover
  type: dict
  sample: {"known": false, "new_timeline": 1, "old_timeline": 1, "new_archiving": "True"}
old_reachable:
  description: Whether the old cluster's API answered.
  returned: always
  type: bool
old_error:
  description: Why the old cluster could not be read.
  returned: when the old cluster did not answer
  type: str
before:
  description: Summary of both clusters before the run.
  returned: always
  type: dict
  contains:
    old_cluster:
      description: C(name), C(namespace), C(self), C(role) (primary, replica, standalone-replica, demoting),
        C(spec_primary), C(phase), C(phase_reason), C(ready), C(current_primary), C(current_primary_is_primary),
        C(timeline), C(fencing), C(demotion_token), C(last_promotion_token), C(promotion_token) (booleans),
        C(recorded_token) (the demotion token recorded by a switchover, without the token itself - C(usable),
        C(from), C(recorded), C(problem); null when none). Null if unreachable.
      type: dict
    new_cluster:
      description: Same for the new cluster.
      type: dict
after:
  description: Summary of both clusters after the run (same keys as RV(before)).
  returned: always
  type: dict
  contains:
    old_cluster:
      description: The old cluster.
      type: dict
    new_cluster:
      description: The new cluster.
      type: dict
last_status:
  description: On a failed wait, the last observed status of the cluster waited for (phase, phaseReason,
    conditions, switchReplicaClusterStatus, fencing annotation, spec.replica).
  returned: on failure of a wait
  type: dict
"""

import copy

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hanzo.kms.plugins.module_utils.cnpg import CnpgError, KubeCluster, Promoter
from ansible_collections.hanzo.kms.plugins.module_utils.kube import AUTH_ARG_SPEC, api_client, missing
from ansible_collections.hanzo.kms.plugins.module_utils.module_run import not_positive


def argument_spec():
    side = copy.deepcopy(AUTH_ARG_SPEC)
    side.update(name=dict(type="str", required=True), namespace=dict(type="str", default="default"))
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(
        mode=dict(type="str", required=True, choices=["switchover", "failover"]),
        old_cluster=dict(type="dict", required=True, options=side),
        new_cluster=dict(type="dict", required=True, options=copy.deepcopy(side)),
        old_cluster_fencing=dict(type="str", default="none", choices=["none", "fence", "hibernate"]),
        demotion_timeout=dict(type="int", default=300),
        promotion_timeout=dict(type="int", default=600),
        request_timeout=dict(type="int", default=10),
        poll_interval=dict(type="float", default=0.5),
    )
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    problem = missing()
    if problem:
        module.fail_json(msg=problem[0], exception=problem[1])
    params = module.params
    # Before any client is made: a bad value found by the first wait would come after the demotion patch.
    problem = not_positive(params, ("demotion_timeout", "promotion_timeout", "request_timeout", "poll_interval"))
    if problem:
        module.fail_json(msg=problem)
    sides = {}
    for side in ("old_cluster", "new_cluster"):
        try:
            client = api_client(params, params[side])
        except Exception as exc:  # pylint: disable=broad-exception-caught
            module.fail_json(msg=f"cannot configure the Kubernetes client for {side}: {exc}")
        sides[side] = KubeCluster(
            client,
            params[side]["name"],
            params[side]["namespace"],
            side.split("_", maxsplit=1)[0],
            request_timeout=params["request_timeout"],
        )

    promoter = Promoter(
        sides["old_cluster"],
        sides["new_cluster"],
        params["mode"],
        check_mode=module.check_mode,
        fencing=params["old_cluster_fencing"],
        demotion_timeout=params["demotion_timeout"],
        promotion_timeout=params["promotion_timeout"],
        poll_interval=params["poll_interval"],
    )
    try:
        result = promoter.run()
    except CnpgError as exc:
        details = dict(exc.details)
        partial = details.pop("result", None) or {}
        details.pop("side", None)
        warnings = partial.pop("warnings", [])
        diff = partial.pop("diff", None)
        for warning in warnings:
            module.warn(warning)
        if module._diff and diff:  # pylint: disable=protected-access
            partial["diff"] = diff
        partial.update(details)
        module.fail_json(msg=exc.msg, **partial)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    diff = result.pop("diff")
    if module._diff:  # pylint: disable=protected-access
        result["diff"] = diff
    module.exit_json(**result)


if __name__ == "__main__":
    main()
