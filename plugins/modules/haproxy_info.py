#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: haproxy_info
short_description: Where each HAProxy instance sends the traffic of a backend
version_added: 0.1.0
description:
  - Read-only. Asks each instance's Runtime API for C(show servers state) and C(show stat) and reports, per server of
    O(backend), the administrative state, weight and health check status, and which servers serve traffic (C(ready),
    weight above 0, health check C(UP) or no check).
  - An instance that cannot be reached is reported with its error; the task does not fail.
  - Changes are made with M(hanzo.kms.haproxy_backend).
author:
  - Hanzo KMS platform team (@hanzoai)
extends_documentation_fragment:
  - hanzo.kms.info_module
options:
  backend:
    description:
      - Name of the backend.
      - Only HAProxy's name characters (letters, digits, C(-), C(_), C(.), C(:)) are accepted; any other name (for
        example one with C(;), a space or a line break, which the Runtime API would take as a second command) fails
        the task before anything is sent.
    type: str
    default: kms
  instances:
    description:
      - The HAProxy instances.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Name used in the result. Defaults to the socket path or address.
        type: str
      socket:
        description:
          - Path of a unix stats socket.
          - Exactly one of O(instances[].socket) and O(instances[].address) is required.
        type: path
      address:
        description:
          - C(host:port) of a TCP stats socket, or of a TLS frontend in front of the Runtime API
            (O(instances[].ca_file); hanzo.kms.global_lb's C(global_lb_admin_tls_bind)).
        type: str
      ca_file:
        description:
          - Reach O(instances[].address) over TLS and verify the instance's certificate with this CA bundle (a path on
            the host the module runs on). The certificate must name the address's host (IP or DNS name).
          - An instance whose certificate cannot be verified is reported unreachable with the TLS error.
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
  timeout:
    description:
      - Timeout in seconds of each Runtime API connection.
    type: float
    default: 5
seealso:
  - module: hanzo.kms.haproxy_backend
"""

EXAMPLES = r"""
- name: Where does lb1 send the KMS traffic?
  hanzo.kms.haproxy_info:
    instances:
      - name: lb1
        socket: /run/haproxy/admin.sock
  register: lb

- name: Show the serving servers
  ansible.builtin.debug:
    msg: "{{ lb.instances[0].serving }}"
"""

RETURN = r"""
instances:
  description: One entry per instance.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Instance name.
      type: str
    reachable:
      description: Whether the Runtime API answered.
      type: bool
    error:
      description: Why it did not.
      type: str
    servers:
      description: Per server C(state) (ready, drain, maint), C(weight), C(status) (UP, DOWN, MAINT, no check...) and
        C(check) (last check status).
      type: dict
      sample: {"dc1": {"state": "ready", "weight": 1, "status": "UP", "check": "L7OK"}}
    serving:
      description: Servers that receive traffic.
      type: list
      elements: str
      sample: [dc1]
serving:
  description: Union of the serving servers of the reachable instances.
  returned: always
  type: list
  elements: str
unreachable_instances:
  description: Names of the instances that did not answer.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hanzo.kms.plugins.module_utils.haproxy import HAProxyError, check_names, runtime_instance_spec
from ansible_collections.hanzo.kms.plugins.module_utils.module_run import not_positive
from ansible_collections.hanzo.kms.plugins.module_utils.site_data import read_lb


def main():
    module = AnsibleModule(
        argument_spec=dict(
            backend=dict(type="str", default="kms"),
            instances=runtime_instance_spec(),
            timeout=dict(type="float", default=5),
        ),
        supports_check_mode=True,
    )
    problem = not_positive(module.params, ("timeout",))
    if problem:
        module.fail_json(msg=problem)
    try:
        check_names(module.params["backend"])
    except HAProxyError as exc:
        module.fail_json(msg=str(exc))
    views = [read_lb(inst, module.params["backend"], module.params["timeout"]) for inst in module.params["instances"]]
    serving = sorted({server for view in views for server in view["serving"]})
    module.exit_json(
        changed=False,
        instances=views,
        serving=serving,
        unreachable_instances=[v["name"] for v in views if not v["reachable"]],
    )


if __name__ == "__main__":
    main()
