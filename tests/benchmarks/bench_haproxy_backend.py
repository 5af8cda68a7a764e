"""Benchmark: switch 2 HAProxy instances x 4 servers (dc1 = a1,a2 -> dc2 = b1,b2 and back).

Goal (issue 7): hanzo.kms.haproxy_backend's own time, waits excluded, <= 100 ms; shown next to the same switch done
with community.general.haproxy in a loop (one call per server and instance = 8 calls), in the same run.

Three levels, each the median of ``--runs`` switches (alternating direction so every switch changes 8 servers):
1. in process: ``switch()`` from module_utils, ``elapsed - waited`` (health-check wait excluded) and with the wait;
   the same over each instance's Runtime API over TLS with client certificates (the site switch's way in from the
   control node since issue 16: one TLS connection per command), against the unix socket in the same run;
2. module processes: ``python -m <haproxy_backend> args.json`` once vs ``python -m <community haproxy> args.json`` x 8
   (wait_healthy off, as community.general does not wait by default);
3. ansible-playbook: one hanzo.kms.haproxy_backend task vs one community.general.haproxy task looping over 8 items.

Run: ``.venv/bin/python -m tests.benchmarks.bench_haproxy_backend [--runs N]`` from the repository root.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
for entry in (str(REPO), str(REPO / ".venv" / "collections")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

# pylint: disable=wrong-import-position
from ansible_collections.hanzo.kms.plugins.module_utils import haproxy as hx  # noqa: E402
from tests.ansible_run import COLLECTIONS_PATH, ansible_env, run_ansible, write_play  # noqa: E402
from tests.integration.haproxy_pair import BACKEND, Pair  # noqa: E402
from tests.lab import pki  # noqa: E402
from tests.lab.core import wait_until  # noqa: E402

PYTHON = sys.executable
OUR_MODULE = "ansible_collections.hanzo.kms.plugins.modules.haproxy_backend"
SERVERS = ("a1", "a2", "b1", "b2")
SITES = {"dc1": ["a1", "a2"], "dc2": ["b1", "b2"]}


def community_module():
    name = "ansible_collections.community.general.plugins.modules.haproxy"
    if importlib.util.find_spec(name) is None:
        raise SystemExit("community.general is not installed (it comes with the 'ansible' package)")
    return name


def reset(pair, active):
    for inst in pair.instances:
        for server in SERVERS:
            state = "ready" if server in SITES[active] else "maint"
            assert inst.command(f"set server {BACKEND}/{server} state {state}").strip() == ""
    for inst in pair.instances:
        wait_until(lambda inst=inst: all(inst.states()[s][0] == 2 for s in SITES[active]), 20, "servers up")


def check(pair, active):
    for inst in pair.instances:
        states = hx.parse_servers_state(inst.command(f"show servers state {BACKEND}"))
        got = {server.name: server.state for server in states.values()}
        want = {server: ("ready" if server in SITES[active] else "maint") for server in SERVERS}
        assert got == want, (inst.name, got, want)


def run_module_file(module, args, env):
    """Run a module as Ansible would without AnsiballZ: ``python -m <module> args.json``."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
    try:
        proc = subprocess.run([PYTHON, "-m", module, handle.name], capture_output=True, text=True, env=env, check=False)
    finally:
        os.unlink(handle.name)
    result = json.loads(proc.stdout)
    assert not result.get("failed"), result
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--playbook-runs", type=int, default=3)
    options = parser.parse_args(argv)
    env = ansible_env(PYTHONPATH=os.pathsep.join([str(COLLECTIONS_PATH), str(REPO)]))
    community = community_module()
    directory = Path(tempfile.mkdtemp(prefix="bench-haproxy-"))
    ca = pki.new_ca("bench-haproxy-ca")
    client_cert, client_key = ca.leaf("bench-control-node")
    files = pki.write(directory, {"ca.crt": ca.cert_pem, "client.crt": client_cert, "client.key": client_key})
    admin_tls = {
        "ca": ca,
        "ca_file": str(files["ca.crt"]),
        "cert_file": str(files["client.crt"]),
        "key_file": str(files["client.key"]),
    }
    pair = Pair(directory, site_names=SERVERS, admin_tls=admin_tls)
    try:
        reset(pair, "dc1")
        instances = [inst.as_module_instance() for inst in pair.instances]
        tls = hx.tls_context(admin_tls["ca_file"], admin_tls["cert_file"], admin_tls["key_file"])

        # 1. in process
        own, own_with_wait = [], []
        active = "dc1"
        for _run in range(options.runs):
            active = "dc2" if active == "dc1" else "dc1"
            objs = [hx.Instance(i["name"], i["socket"], state_file=i["state_file"]) for i in instances]
            result = hx.switch(objs, BACKEND, hx.desired_from_sites(active, SITES))
            check(pair, active)
            own.append((result["elapsed"] - result["waited"]) * 1000)
            own_with_wait.append(result["elapsed"] * 1000)
        own_tls = []
        for _run in range(options.runs):
            active = "dc2" if active == "dc1" else "dc1"
            objs = [
                hx.Instance(inst.name, inst.admin_address, state_file=inst.state_file, tls=tls)
                for inst in pair.instances
            ]
            result = hx.switch(objs, BACKEND, hx.desired_from_sites(active, SITES))
            check(pair, active)
            own_tls.append((result["elapsed"] - result["waited"]) * 1000)

        # 2. module processes
        reset(pair, "dc1")
        ours_proc, community_proc, ours_reported = [], [], []
        active = "dc1"
        for _run in range(options.runs):
            active = "dc2" if active == "dc1" else "dc1"
            args = {
                "backend": BACKEND,
                "active_site": active,
                "sites": SITES,
                "instances": instances,
                "wait_healthy": False,
            }
            start = time.perf_counter()
            result = run_module_file(OUR_MODULE, args, env)
            ours_proc.append((time.perf_counter() - start) * 1000)
            ours_reported.append((result["elapsed"] - result["waited"]) * 1000)
            check(pair, active)
            active = "dc2" if active == "dc1" else "dc1"
            start = time.perf_counter()
            # same make-before-break order as ours: new site up first, then the old one down
            for wanted in ("enabled", "disabled"):
                for inst in instances:
                    for server in SERVERS:
                        if (server in SITES[active]) == (wanted == "enabled"):
                            run_module_file(
                                community,
                                {"state": wanted, "host": server, "backend": BACKEND, "socket": inst["socket"]},
                                env,
                            )
            community_proc.append((time.perf_counter() - start) * 1000)
            check(pair, active)

        # 3. ansible-playbook
        reset(pair, "dc1")
        workdir = Path(tempfile.mkdtemp(prefix="bench-haproxy-play-"))
        ours_play, community_play = [], []
        active = "dc1"
        for _run in range(options.playbook_runs):
            active = "dc2" if active == "dc1" else "dc1"
            ours_play.append(
                playbook(
                    workdir,
                    "ours",
                    [
                        {
                            "name": "Switch",
                            "hanzo.kms.haproxy_backend": {
                                "backend": BACKEND,
                                "active_site": active,
                                "sites": SITES,
                                "instances": instances,
                                "wait_healthy": False,
                            },
                        }
                    ],
                    env,
                )
            )
            check(pair, active)
            active = "dc2" if active == "dc1" else "dc1"
            items = [
                {
                    "state": "enabled" if server in SITES[active] else "disabled",
                    "host": server,
                    "socket": inst["socket"],
                }
                for wanted in ("enabled", "disabled")
                for inst in instances
                for server in SERVERS
                if (server in SITES[active]) == (wanted == "enabled")
            ]
            community_play.append(
                playbook(
                    workdir,
                    "community",
                    [
                        {
                            "name": "Switch",
                            "loop": items,
                            "community.general.haproxy": {
                                "state": "{{ item.state }}",
                                "host": "{{ item.host }}",
                                "backend": BACKEND,
                                "socket": "{{ item.socket }}",
                            },
                        }
                    ],
                    env,
                )
            )
            check(pair, active)
    finally:
        pair.stop()

    med = statistics.median
    rows = [
        ("in process: haproxy_backend switch(), waits excluded", med(own), None, None),
        ("in process: haproxy_backend switch(), incl. health-check wait", med(own_with_wait), None, None),
        (
            "in process: switch() over the TLS Runtime API, waits excluded",
            med(own_tls),
            med(own_tls) / med(own),
            "the unix socket",
        ),
        ("module process: haproxy_backend x1 (reported elapsed - waited)", med(ours_reported), None, None),
        ("module process: haproxy_backend x1 (wall)", med(ours_proc), None, None),
        (
            "module process: community.general.haproxy x8 (wall)",
            med(community_proc),
            med(community_proc) / med(ours_proc),
            "haproxy_backend",
        ),
        ("ansible-playbook: haproxy_backend, 1 task (wall)", med(ours_play), None, None),
        (
            "ansible-playbook: community.general.haproxy, loop of 8 (wall)",
            med(community_play),
            med(community_play) / med(ours_play),
            "haproxy_backend",
        ),
    ]
    print(f"switch of 2 instances x 4 servers, median of {options.runs} (playbooks: {options.playbook_runs}) runs")
    for label, value, *ratio in rows:
        print(f"  {label:<66} {value:9.1f} ms" + (f"   ({ratio[0]:.1f}x {ratio[1]})" if ratio[0] else ""))
    goal = med(own)
    print(f"goal: module time excluding waits <= 100 ms: {goal:.1f} ms -> {'met' if goal <= 100 else 'NOT met'}")


def playbook(workdir, name, tasks, env):
    """Wall milliseconds of one ansible-playbook run of ``tasks`` on localhost."""
    run = run_ansible(
        "ansible-playbook", write_play(workdir / f"{name}.yml", tasks, f"Bench {name}"), env=env, must_succeed=True
    )
    return run.seconds * 1000


if __name__ == "__main__":
    main()
