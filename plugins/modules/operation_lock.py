#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: operation_lock
short_description: Take or release the operation lock of a Hanzo KMS installation
version_added: 0.1.0
description:
  - One lock per installation keeps failover, switchover, backup, restore test and the Redis backup CronJob from
    running at the same time. It is a C(coordination.k8s.io/v1) Lease named O(lease_name) in the namespace of every
    site; C(spec.holderIdentity) is the owner, C(spec.acquireTime) when it was taken, C(spec.renewTime) plus
    C(spec.leaseDurationSeconds) when it expires, and the annotation C(hanzo.kms/operation) the operation.
  - O(state=acquired) takes the Lease of every site in the order of the site names. A Lease that is absent, free,
    expired or already held by O(owner) (a renewal) is taken; one held by another owner makes the module fail with
    the holder and since when, after giving back what it took in the sites before. Every write is a create or a
    replace carrying the resourceVersion read, so of two runs racing for the lock exactly one wins.
  - A site whose Kubernetes API does not answer fails the module unless O(allow_unreachable=true) (a failover after
    losing a site); at least one site must answer. A site that answers is never skipped.
  - O(break_lock) takes over a lock held by someone else, for a run that crashed; it must equal
    C(BREAK LOCK <holder>) exactly.
  - With O(wait), O(state=acquired) waits up to O(wait) seconds for a holder whose operation is in
    O(wait_for_operations) (by default the Redis backup CronJob's Jobs, which hold the lock for the seconds a backup
    takes). Meanwhile it holds nothing (it gives back what it took) and tries again every 2 seconds; once O(wait) has
    passed it fails as above. It never waits for another playbook's run, nor when O(break_lock) is given.
  - O(state=released) frees the Leases held by O(owner) (the Lease is kept, without a holder). It refuses, and fails,
    when a site's lock is held by another owner.
  - The Redis backup CronJob of M(hanzo.kms.redis) takes the same Lease with kubectl (same name, labels, annotation
    and expiry rule).
author:
  - Hanzo KMS platform team (@hanzoai)
requirements:
  - kubernetes >= 24.2.0 (Python library)
  - the kubernetes.core collection
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
  - hanzo.kms.kube_sites
attributes:
  check_mode:
    support: full
    description: Reads every site's Lease and reports what it would do (RV(sites)); fails the same way when the lock
      is held by someone else; writes nothing.
  diff_mode:
    support: none
    description: No diff is produced.
notes:
  - The credentials need C(get), C(create) and C(update) on C(leases.coordination.k8s.io) in each site's namespace.
  - The times are the control node's clock; keep the clocks of the control node and the CronJob's nodes in sync.
options:
  state:
    description:
      - V(acquired) takes (or renews) the lock, V(released) frees it.
    type: str
    choices: [acquired, released]
    default: acquired
  owner:
    description:
      - Who holds the lock. Pass the RV(owner) returned by O(state=acquired) to renew or release it.
      - Default C(<operation>/<run_id>@<control host>).
    type: str
  operation:
    description:
      - What runs under the lock (C(failover), C(switchover), C(site_objects), C(backup), C(restore_test)); recorded
        on the Lease and part of the default O(owner). Required when O(owner) is not given.
    type: str
  run_id:
    description:
      - Identifies the run in the default O(owner); default the UTC time and a random suffix.
    type: str
  ttl:
    description:
      - Seconds after which the lock expires unless renewed (by O(state=acquired) with the same O(owner)), so that a
        crashed run does not block the installation for ever.
    type: int
    default: 7200
  lease_name:
    description:
      - Name of the Lease in every site's namespace.
    type: str
    default: hanzo-kms-operation-lock
  break_lock:
    description:
      - Take the lock over from another holder whose run is known to be dead. Must equal C(BREAK LOCK <holder>)
        exactly (the holder as named in the refusal); anything else is refused.
    type: str
    default: ""
  allow_unreachable:
    description:
      - Proceed when a site's Kubernetes API does not answer (its Lease cannot be read), as long as one site answers.
        For a failover after losing a site.
    type: bool
    default: false
  request_timeout:
    description:
      - Timeout in seconds of each Kubernetes API request; a site that does not answer within it is unreachable.
    type: int
    default: 10
  wait:
    description:
      - Seconds to wait, with O(state=acquired), for a holder whose operation is in O(wait_for_operations) to give
        the lock back. V(0) fails at once.
    type: int
    default: 0
  wait_for_operations:
    description:
      - The holders' operations worth waiting for (short runs on a schedule). V(redis-backup) is the Redis backup
        CronJob's.
    type: list
    elements: str
    default: [redis-backup]
"""

EXAMPLES = r"""
- name: Take the operation lock in every site before a backup
  hanzo.kms.operation_lock:
    operation: backup
    kubeconfig: /etc/kms/kubeconfig
    sites:
      - {name: dc1, namespace: kms, context: dc1}
      - {name: dc2, namespace: kms, context: dc2}
  register: lock

- name: Release it at the end
  hanzo.kms.operation_lock:
    state: released
    owner: "{{ lock.owner }}"
    kubeconfig: /etc/kms/kubeconfig
    sites:
      - {name: dc1, namespace: kms, context: dc1}
      - {name: dc2, namespace: kms, context: dc2}

- name: Fail over with dc1 lost; break the lock of the crashed earlier attempt
  hanzo.kms.operation_lock:
    operation: failover
    allow_unreachable: true
    break_lock: "BREAK LOCK failover/20261202T040000Z-1a2b@ops1"
    request_timeout: 5
    wait: 300
    sites:
      - {name: dc1, namespace: kms, host: "https://k8s.dc1.example.com:6443", api_key: "{{ dc1_token }}"}
      - {name: dc2, namespace: kms, host: "https://k8s.dc2.example.com:6443", api_key: "{{ dc2_token }}"}
"""

RETURN = r"""
state:
  description: The state asked for.
  returned: success
  type: str
  sample: acquired
owner:
  description: The owner of the lock (pass it to O(state=released)).
  returned: always
  type: str
  sample: backup/20261202T050000Z-3f9c@ops1
lease:
  description: The Lease name.
  returned: success
  type: str
  sample: hanzo-kms-operation-lock
sites:
  description: What happened in each site, in the order handled.
  returned: always
  type: list
  elements: dict
  contains:
    site:
      description: The site.
      type: str
    action:
      description:
        - V(created), V(taken), V(renewed), V(taken_expired), V(broken), V(released), V(unchanged), V(unreachable),
          V(refused), or in check mode V(would_create), V(would_take), V(would_renew), V(would_take_expired),
          V(would_break), V(would_release).
      type: str
    holder:
      description: The holder the Lease named when read (before the change).
      type: str
    operation:
      description: The holder's operation.
      type: str
    since:
      description: When the holder took the lock (UTC).
      type: str
    expires:
      description: When the holder's lock expires unless renewed (UTC).
      type: str
    error:
      description: Why the site is unreachable.
      type: str
      returned: when unreachable
acquired_sites:
  description: Sites whose Lease this run holds now.
  returned: success
  type: list
  elements: str
unreachable_sites:
  description: Sites whose Kubernetes API did not answer.
  returned: success
  type: list
  elements: str
waited:
  description: Seconds spent waiting for the holders in RV(waited_for) (V(0) when the lock was free).
  returned: when acquired
  type: float
  sample: 8.0
waited_for:
  description: The holders this run waited for (Redis backup Jobs, by default).
  returned: when acquired, and when refused after waiting
  type: list
  elements: str
  sample: [redis-backup/redis-backup-29417837@dc1]
holder:
  description: The other owner holding the lock.
  returned: when refused
  type: str
holder_operation:
  description: The holder's operation.
  returned: when refused while acquiring
  type: str
since:
  description: Since when the holder has held the lock (UTC).
  returned: when refused while acquiring
  type: str
"""

import copy
import secrets
import socket

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hanzo.kms.plugins.module_utils.kube import AUTH_ARG_SPEC, api_client, missing
from ansible_collections.hanzo.kms.plugins.module_utils.module_run import not_positive
from ansible_collections.hanzo.kms.plugins.module_utils.operation_lock import (
    DEFAULT_TTL,
    LEASE_NAME,
    REDIS_BACKUP_OPERATION,
    KubeLease,
    LockError,
    OperationLock,
    Unreachable,
)
from ansible_collections.hanzo.kms.plugins.module_utils.times import utcnow_compact


def argument_spec():
    site = copy.deepcopy(AUTH_ARG_SPEC)
    site.update(name=dict(type="str", required=True), namespace=dict(type="str", default="kms"))
    spec = copy.deepcopy(AUTH_ARG_SPEC)
    spec.update(
        state=dict(type="str", default="acquired", choices=["acquired", "released"]),
        sites=dict(type="list", elements="dict", required=True, options=site),
        owner=dict(type="str"),
        operation=dict(type="str"),
        run_id=dict(type="str"),
        ttl=dict(type="int", default=DEFAULT_TTL),
        lease_name=dict(type="str", default=LEASE_NAME),
        break_lock=dict(type="str", default=""),
        allow_unreachable=dict(type="bool", default=False),
        request_timeout=dict(type="int", default=10),
        wait=dict(type="int", default=0),
        wait_for_operations=dict(type="list", elements="str", default=[REDIS_BACKUP_OPERATION]),
    )
    return spec


class UnconfiguredLease:  # pylint: disable=too-few-public-methods
    """A site whose Kubernetes client could not be configured: every read says it is unreachable."""

    def __init__(self, namespace, error):
        self.namespace = namespace
        self.error = error

    def get(self):
        raise Unreachable(self.error)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(), supports_check_mode=True, required_one_of=[("owner", "operation")]
    )
    problem = missing()
    if problem:
        module.fail_json(msg=problem[0], exception=problem[1])
    params = module.params
    problem = not_positive(params, ("ttl", "request_timeout"))
    if params["wait"] < 0:
        problem = f"wait must be 0 (do not wait) or more seconds, got {params['wait']}"
    if problem:
        module.fail_json(msg=problem)
    owner = params["owner"]
    if not owner:
        run_id = params["run_id"] or f"{utcnow_compact()}-{secrets.token_hex(2)}"
        owner = f"{params['operation']}/{run_id}@{socket.gethostname()}"
    names = [site["name"] for site in params["sites"]]
    if len(set(names)) != len(names) or not names:
        module.fail_json(msg=f"sites must name each site once, got {names}", owner=owner)

    stores = {}
    for site in params["sites"]:
        try:
            client = api_client(params, site)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            # No usable kubeconfig for a site (a lost site's credentials are often gone with it): the site is
            # unreachable, which O(allow_unreachable) decides about, like an API that does not answer.
            stores[site["name"]] = UnconfiguredLease(
                site["namespace"], f"cannot configure the Kubernetes client: {exc}"
            )
            continue
        stores[site["name"]] = KubeLease(
            client, site["namespace"], name=params["lease_name"], request_timeout=params["request_timeout"]
        )

    lock = OperationLock(
        stores,
        owner,
        operation=params["operation"] or owner.split("/", 1)[0],
        ttl=params["ttl"],
        name=params["lease_name"],
        break_confirmation=params["break_lock"],
        allow_unreachable=params["allow_unreachable"],
        check_mode=module.check_mode,
        wait=params["wait"],
        wait_for=params["wait_for_operations"],
    )
    try:
        result = lock.acquire() if params["state"] == "acquired" else lock.release()
    except LockError as exc:
        module.fail_json(msg=exc.msg, owner=owner, **exc.details)
    if result.get("waited_for"):
        # Shown without -v: the wait is part of the run's time (a failover's RTO).
        module.warn(
            f"waited {result['waited']:g} s for {', '.join(result['waited_for'])} to give the operation lock back"
        )
    for entry in result["sites"]:
        if entry["action"] == "unreachable":
            module.warn(
                f"site {entry['site']}: the Kubernetes API did not answer, its operation lock was not "
                f"{'taken' if params['state'] == 'acquired' else 'released'}: {entry.get('error', '')}"
            )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
