#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: scratch_redis
short_description: Start or remove a throw-away redis-server on 127.0.0.1 for a restore test
version_added: 0.1.0
description:
  - With O(state=started), creates a directory C(hanzo-kms-restore-test-*) in O(tmpdir), writes a configuration
    there (bound to 127.0.0.1, the password O(password), no persistence, daemonized, pid file and log in the
    directory), starts O(server) with it and waits until it answers C(PING). A server that does not start or answer
    is stopped and its directory removed before the module fails.
  - With O(state=absent) and O(path), stops that directory's server (SIGTERM, then SIGKILL), waits until it has
    exited and removes the directory. With O(leftovers=true), does so for every scratch directory in O(tmpdir), those
    an interrupted run left behind.
  - A pid from a pid file is only signalled when C(/proc) shows that process working in the scratch directory, so a
    stale pid file never stops another process.
  - Used by the role C(hanzo.kms.redis_restore_test). It runs where the task runs, normally the control node.
author:
  - Hanzo KMS platform team (@hanzoai)
attributes:
  check_mode:
    support: full
    description: Reports what would be started or removed, and starts, stops and removes nothing.
  diff_mode:
    support: none
    description: No diff is produced.
  platform:
    support: full
    platforms: posix
    description: Linux (C(/proc) identifies the scratch server's process).
options:
  state:
    description:
      - V(started) starts a new scratch Redis; V(absent) stops and removes one (O(path)) or the leftovers (O(leftovers)).
    type: str
    choices: [started, absent]
    default: started
  path:
    description:
      - The scratch directory to remove (the RV(path) of a started one). With O(state=absent) only.
    type: path
  leftovers:
    description:
      - With O(state=absent), stop and remove every scratch directory in O(tmpdir) (owned by this user, holding a
        C(redis.conf)).
    type: bool
    default: false
  server:
    description:
      - The redis-server executable (name on C(PATH) or path). Its version must be able to load the RDB to restore.
    type: str
    default: redis-server
  port:
    description:
      - Port on 127.0.0.1; V(0) picks a free one. A port in use is refused before anything is created.
    type: int
    default: 0
  password:
    description:
      - Password of the scratch Redis (C(requirepass)). Required with O(state=started).
    type: str
  tmpdir:
    description:
      - Directory holding the scratch directories; default the system's temporary directory (C(TMPDIR), else C(/tmp)).
    type: path
  timeout:
    description:
      - Seconds to wait for the started server to answer, and for a stopped one to exit.
    type: float
    default: 30
seealso:
  - module: hanzo.kms.redis_rdb_restore
"""

EXAMPLES = r"""
- name: Stop the scratch Redis servers an interrupted run left
  hanzo.kms.scratch_redis:
    state: absent
    leftovers: true

- name: Start a scratch Redis
  hanzo.kms.scratch_redis:
    password: "{{ scratch_password }}"
  register: scratch

- name: Remove it
  hanzo.kms.scratch_redis:
    state: absent
    path: "{{ scratch.path }}"
"""

RETURN = r"""
path:
  description: The scratch directory (configuration, pid file, log; the server's working directory).
  returned: state=started, not in check mode
  type: str
  sample: /tmp/hanzo-kms-restore-test-k2j4x9
host:
  description: Where the scratch Redis listens.
  returned: state=started
  type: str
  sample: 127.0.0.1
port:
  description: Its port.
  returned: state=started, not in check mode
  type: int
  sample: 41873
pid:
  description: Its process id.
  returned: state=started, not in check mode
  type: int
removed:
  description: The scratch directories stopped and removed, with the pid stopped in each (null when none ran).
  returned: state=absent
  type: list
  elements: dict
  sample: [{"path": "/tmp/hanzo-kms-restore-test-k2j4x9", "pid": 12345, "removed": true}]
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hanzo.kms.plugins.module_utils import scratch_redis
from ansible_collections.hanzo.kms.plugins.module_utils.module_run import not_positive


def _absent(module):
    params = module.params
    tmpdir = params["tmpdir"] or tempfile.gettempdir()
    paths = scratch_redis.leftovers(tmpdir) if params["leftovers"] else []
    if params["path"] and os.path.isdir(params["path"]) and params["path"] not in paths:
        paths.append(params["path"])
    if module.check_mode:
        removed = [{"path": path, "pid": scratch_redis.server_pid(path), "removed": True} for path in paths]
    else:
        removed = [dict(scratch_redis.stop(path, params["timeout"]), path=path) for path in paths]
    return {"changed": bool(removed), "removed": removed}


def _started(module):
    params = module.params
    if module.check_mode:
        return {"changed": True, "host": scratch_redis.HOST}
    started = scratch_redis.start(
        params["server"],
        params["password"],
        port=params["port"],
        tmpdir=params["tmpdir"],
        timeout=params["timeout"],
        run=module.run_command,
    )
    return dict(started, changed=True)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["started", "absent"], default="started"),
            path=dict(type="path"),
            leftovers=dict(type="bool", default=False),
            server=dict(type="str", default="redis-server"),
            port=dict(type="int", default=0),
            password=dict(type="str", no_log=True),
            tmpdir=dict(type="path"),
            timeout=dict(type="float", default=30),
        ),
        required_if=[("state", "started", ("password",))],
        supports_check_mode=True,
    )
    params = module.params
    problem = not_positive(params, ["timeout"])
    if problem is None and not 0 <= params["port"] <= 65535:
        problem = f"port must be 0 (a free one) or 1-65535, got {params['port']}"
    if problem is None and params["state"] == "started" and (params["path"] or params["leftovers"]):
        problem = "path and leftovers go with state=absent"
    if problem is None and params["state"] == "absent" and not (params["path"] or params["leftovers"]):
        problem = "state=absent needs path (the scratch directory to remove) or leftovers=true"
    if problem:
        module.fail_json(msg=problem)
    try:
        result = _absent(module) if params["state"] == "absent" else _started(module)
    except (scratch_redis.ScratchRedisError, OSError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
