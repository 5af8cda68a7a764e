#!/usr/bin/python
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: haproxy_backend
short_description: Switch HAProxy backend servers between sites on several HAProxy instances, safely
version_added: 0.1.0
description:
  - Sets the administrative state (V(ready), V(drain), V(maint)) and weight of the servers of one backend on one or
    more HAProxy instances through the Runtime API (stats socket), by unix socket or TCP address.
  - The desired state is given per site (O(active_site) with a map O(sites) of sites to servers) or per server
    (O(servers)).
  - Reads C(show servers state) first and changes only what differs (idempotent). Changes are applied make-before-break
    on all instances together - servers that must serve first, then (O(wait_healthy)) until their health checks pass,
    then optionally a drain with a timeout, then the old servers go to their final state - and verified by reading back.
  - Any error text returned by HAProxy (for example C(Permission denied) on a socket below C(level admin), or
    C(No such server.)) fails the task. When anything fails, every instance is rolled back to the state it had before.
  - After a change, the output of C(show servers state) is written to each instance's O(instances[].state_file)
    (the HAProxy C(server-state-file)), so a reload with C(load-server-state-from-file) keeps the switch.
  - Without O(active_site) and O(servers) the module only reads the state and refreshes the state files (useful just
    before a reload).
author:
  - Hanzo KMS platform team (@hanzoai)
options:
  backend:
    description:
      - Name of the HAProxy backend whose servers are switched.
      - This and every server name may only hold HAProxy's name characters (letters, digits, C(-), C(_), C(.),
        C(:)); any other name (for example one with C(;), a space or a line break, which the Runtime API would take
        as a second command) fails the task before anything is sent.
    type: str
    required: true
  instances:
    description:
      - The HAProxy instances. All of them are switched together.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Name used in messages and results. Defaults to the socket path or address.
        type: str
      socket:
        description:
          - Path of a unix stats socket declared with C(level admin).
          - Exactly one of O(instances[].socket) and O(instances[].address) is required.
        type: path
      address:
        description:
          - C(host:port) of a TCP stats socket declared with C(level admin), or of a TLS frontend in front of the
            Runtime API (O(instances[].ca_file); hanzo.kms.global_lb's C(global_lb_admin_tls_bind)).
        type: str
      ca_file:
        description:
          - Reach O(instances[].address) over TLS and verify the instance's certificate with this CA bundle (a path on
            the host the module runs on). The certificate must name the address's host (IP or DNS name).
          - An instance whose certificate cannot be verified counts as unreachable (see O(min_instances)).
        type: path
      client_cert:
        description:
          - This client's certificate (PEM) for a Runtime API TLS frontend that requires one (C(verify required)).
          - Requires O(instances[].ca_file) and O(instances[].client_key).
        type: path
      client_key:
        description:
          - The private key of O(instances[].client_cert).
        type: path
      state_file:
        description:
          - Path of this instance's C(server-state-file), written with the output of C(show servers state) after every
            change. The path is on the host the module runs on.
        type: path
  active_site:
    description:
      - The site that must receive traffic. Its servers (from O(sites)) become V(ready), the servers of every other
        site become O(inactive_state).
    type: str
  sites:
    description:
      - Map of site name to the list of server names of that site in O(backend).
      - Required with O(active_site).
    type: dict
  inactive_state:
    description:
      - State of the servers of the sites other than O(active_site).
    type: str
    choices: [drain, maint]
    default: maint
  servers:
    description:
      - Explicit desired state per server. Mutually exclusive with O(active_site).
    type: list
    elements: dict
    suboptions:
      name:
        description:
          - Server name in O(backend).
        type: str
        required: true
      state:
        description:
          - Administrative state.
        type: str
        choices: [ready, drain, maint]
      weight:
        description:
          - Absolute weight, 0 to 256.
        type: int
  min_instances:
    description:
      - Quorum. The switch proceeds when at least this many instances are reachable; unreachable ones are reported
        in RV(unreachable_instances). Defaults to all instances.
      - An instance that fails after it was reached always fails the task and rolls every instance back.
    type: int
  drain:
    description:
      - Before putting a V(ready) server in V(maint), put it in V(drain) and wait until its sessions reach 0 on every
        instance (at most O(drain_timeout) seconds).
      - When the timeout expires the task fails and rolls back, unless O(shutdown_sessions=true).
    type: bool
    default: false
  drain_timeout:
    description:
      - Seconds to wait for the sessions of draining servers to reach 0.
    type: float
    default: 30
  shutdown_sessions:
    description:
      - After the old servers reached V(maint) or V(drain), kill their remaining sessions
        (C(shutdown sessions server)).
    type: bool
    default: false
  wait_healthy:
    description:
      - After servers were set V(ready), wait until their health checks pass (status C(UP) after a completed check,
        or C(no check)) before taking other servers out. If they do not within O(healthy_timeout), the task fails
        and rolls back.
    type: bool
    default: true
  healthy_timeout:
    description:
      - Seconds to wait for servers brought up to pass their health checks.
    type: float
    default: 10
  timeout:
    description:
      - Timeout in seconds of each Runtime API connection and command.
    type: float
    default: 5
attributes:
  check_mode:
    support: full
    description: Returns the commands that would be sent (RV(instances[].commands)) and changes nothing.
  diff_mode:
    support: full
    description: Per instance and server, the state and weight before and after.
notes:
  - Targets HAProxy 2.6 and later. Uses C(set server ... state|weight), C(show servers state), C(show stat) and
    C(shutdown sessions server).
  - The Runtime API has no transactions; the module compensates a partial failure by restoring each instance's
    previous state, and reports incomplete rollbacks in the error message.
seealso:
  - module: community.general.haproxy
  - name: HAProxy management guide (Runtime API)
    description: The commands and the C(show servers state) format.
    link: https://docs.haproxy.org/2.6/management.html
"""

EXAMPLES = r"""
- name: Switch every load balancer from the control node in one call, over the Runtime API's TLS frontends
  hanzo.kms.haproxy_backend:
    backend: kms
    active_site: dc2
    sites: {dc1: [dc1], dc2: [dc2]}
    instances:
      - {name: lb1, address: "10.0.1.10:9999", ca_file: /etc/kms/lb-ca.pem, client_cert: /etc/kms/ctl.crt,
         client_key: /etc/kms/ctl.key}
      - {name: lb2, address: "10.0.2.10:9999", ca_file: /etc/kms/lb-ca.pem, client_cert: /etc/kms/ctl.crt,
         client_key: /etc/kms/ctl.key}
    min_instances: 1  # a failover: the lost data center's load balancer may be unreachable

- name: Fail over the global load balancers to dc2
  hanzo.kms.haproxy_backend:
    backend: kms
    active_site: dc2
    sites:
      dc1: [dc1]
      dc2: [dc2]
    instances:
      - name: lb1
        socket: /run/haproxy/admin.sock
        state_file: /var/lib/haproxy/server-state
      - name: lb2
        address: 10.0.2.10:9999
    min_instances: 1
    drain: true
    drain_timeout: 20
    shutdown_sessions: true

- name: Set explicit states and weights
  hanzo.kms.haproxy_backend:
    backend: kms
    servers:
      - name: dc1-a
        state: ready
        weight: 100
      - name: dc1-b
        state: drain
    instances:
      - socket: /run/haproxy/admin.sock

- name: Save the runtime state before a reload
  hanzo.kms.haproxy_backend:
    backend: kms
    instances:
      - socket: /run/haproxy/admin.sock
        state_file: /var/lib/haproxy/server-state
    min_instances: 0
"""

RETURN = r"""
instances:
  description: Per instance result.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Instance name.
      type: str
      sample: lb1
    address:
      description: Socket path or TCP address.
      type: str
      sample: /run/haproxy/admin.sock
    reachable:
      description: Whether the Runtime API answered.
      type: bool
      sample: true
    changed:
      description: Whether this instance needed (or, in check mode, would need) a change.
      type: bool
      sample: true
    commands:
      description: The planned Runtime API commands, in order.
      type: list
      elements: str
      sample: ["set server kms/dc2 state ready", "set server kms/dc1 state maint"]
    executed:
      description: The commands actually sent, including rollback commands (prefixed C(rollback:)).
      type: list
      elements: str
      sample: ["set server kms/dc2 state ready", "set server kms/dc1 state maint"]
    before:
      description: State and weight of each server of the backend before the task.
      type: dict
      sample: {"dc1": {"state": "ready", "weight": 1}, "dc2": {"state": "maint", "weight": 1}}
    after:
      description: State and weight of each server after the task (expected values in check mode).
      type: dict
      sample: {"dc1": {"state": "maint", "weight": 1}, "dc2": {"state": "ready", "weight": 1}}
    state_file:
      description: The server-state-file written for this instance, if any.
      type: str
      sample: /var/lib/haproxy/server-state
    error:
      description: The error of this instance, if any.
      type: str
      sample: "lb2: HAProxy rejected 'set server kms/dc2 state ready': Permission denied"
unreachable_instances:
  description: Names of the instances that could not be reached (tolerated through O(min_instances)).
  returned: always
  type: list
  elements: str
  sample: ["lb2"]
rolled_back:
  description: Whether a failure caused a rollback.
  returned: always
  type: bool
  sample: false
rollback_errors:
  description: Errors met while rolling back (empty when every instance was restored).
  returned: when a failure caused a rollback
  type: list
  elements: str
  sample: []
drain_timed_out:
  description: Whether the drain wait expired (only with O(drain=true) when servers were drained).
  returned: when servers were drained
  type: bool
  sample: false
elapsed:
  description: Seconds the module spent talking to HAProxy, waits included.
  returned: always
  type: float
  sample: 0.012
waited:
  description: Seconds of RV(elapsed) spent waiting for health checks and drains.
  returned: always
  type: float
  sample: 0.2
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hanzo.kms.plugins.module_utils.haproxy import (
    HAProxyError,
    Instance,
    SwitchError,
    check_names,
    desired_from_servers,
    desired_from_sites,
    instance_connection,
    runtime_instance_spec,
    switch,
)
from ansible_collections.hanzo.kms.plugins.module_utils.module_run import not_positive


def build_desired(params):
    if params["active_site"] is not None:
        return desired_from_sites(params["active_site"], params["sites"], params["inactive_state"])
    if params["servers"] is not None:
        return desired_from_servers(params["servers"])
    return {}


def build_diff(result):
    before, after = {}, {}
    for inst in result["instances"]:
        if inst["reachable"]:
            before[inst["name"]] = inst["before"]
            after[inst["name"]] = inst["after"]
    return {"before": before, "after": after}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backend=dict(type="str", required=True),
            instances=runtime_instance_spec(state_file=dict(type="path")),
            active_site=dict(type="str"),
            sites=dict(type="dict"),
            inactive_state=dict(type="str", choices=["drain", "maint"], default="maint"),
            servers=dict(
                type="list",
                elements="dict",
                options=dict(
                    name=dict(type="str", required=True),
                    state=dict(type="str", choices=["ready", "drain", "maint"]),
                    weight=dict(type="int"),
                ),
                required_one_of=[("state", "weight")],
            ),
            min_instances=dict(type="int"),
            drain=dict(type="bool", default=False),
            drain_timeout=dict(type="float", default=30),
            shutdown_sessions=dict(type="bool", default=False),
            wait_healthy=dict(type="bool", default=True),
            healthy_timeout=dict(type="float", default=10),
            timeout=dict(type="float", default=5),
        ),
        mutually_exclusive=[("active_site", "servers")],
        required_together=[("active_site", "sites")],
        supports_check_mode=True,
    )
    params = module.params
    problem = not_positive(params, ("drain_timeout", "healthy_timeout", "timeout"))
    if problem:
        module.fail_json(msg=f"{problem}; nothing was sent to HAProxy")
    if params["min_instances"] is not None and not 0 <= params["min_instances"] <= len(params["instances"]):
        module.fail_json(
            msg=f"min_instances must be between 0 and the number of instances ({len(params['instances'])})"
        )
    try:
        desired = build_desired(params)
        check_names(params["backend"], desired)
    except HAProxyError as exc:
        module.fail_json(msg=str(exc))

    try:
        instances = []
        for item in params["instances"]:
            name, address, tls = instance_connection(item)
            instances.append(Instance(name, address, state_file=item["state_file"], timeout=params["timeout"], tls=tls))
    except HAProxyError as exc:
        module.fail_json(msg=f"{exc}; nothing was sent to HAProxy")
    try:
        result = switch(
            instances,
            params["backend"],
            desired,
            min_instances=params["min_instances"],
            check_mode=module.check_mode,
            drain=params["drain"],
            drain_timeout=params["drain_timeout"],
            shutdown_sessions=params["shutdown_sessions"],
            wait_healthy=params["wait_healthy"],
            healthy_timeout=params["healthy_timeout"],
        )
    except SwitchError as exc:
        module.fail_json(msg=str(exc), **exc.result)
    for name in result["unreachable_instances"]:
        error = next(inst["error"] for inst in result["instances"] if inst["name"] == name)
        module.warn(f"HAProxy instance {name} was not switched: {error}")
    if module._diff:
        result["diff"] = build_diff(result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
