"""The sites' roles decided again in one ansible-playbook run (playbooks/tasks/site_roles.yml), offline.

group_by never takes a host out of a group, so after install.yml a failover in the same run found the lost dc1 still
in kms_active_sites and site_objects.yml applied dc1's objects (and failed on it). The plays on the groups now run
only on ``kms_site_hosts``, the hosts of the latest decision, active first. tests/integration/playbooks/
site_roles_in_one_run.yml decides three times (the inventory, the roles swapped, every site unreachable) and records
what a play on the groups ran on after each. No lab: the example inventory, and a kubeconfig of a closed port.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import yaml

from tests.ansible_run import run_playbook

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "tests" / "integration" / "playbooks" / "site_roles_in_one_run.yml"


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed once the socket is: nothing listens there


def test_plays_on_the_groups_follow_the_latest_decision(tmp_path):
    kubeconfig = tmp_path / "closed.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "closed", "cluster": {"server": f"https://127.0.0.1:{closed_port()}"}}],
                "users": [{"name": "closed", "user": {"token": "x"}}],
                "contexts": [{"name": "closed", "context": {"cluster": "closed", "user": "closed"}}],
                "current-context": "closed",
            }
        )
    )
    proc = run_playbook(
        PLAYBOOK,
        "-e",
        f"out_dir={tmp_path}",
        "-e",
        f"closed_kubeconfig={kubeconfig}",
        inventory="inventories/example",
        timeout=600,
    )
    assert proc.returncode == 0, proc.tail()

    def seen(decision):
        listed = json.loads((tmp_path / f"{decision}.json").read_text())
        ran = {
            p.name[len(decision) + 1 : -5]: json.loads(p.read_text())["role"] for p in tmp_path.glob(f"{decision}-*")
        }
        return listed, ran

    listed, ran = seen("first")
    assert listed == {"site_hosts": ["dc1-kube", "dc2-kube"], "play_hosts": ["dc1-kube", "dc2-kube"]}
    assert ran == {"dc1-kube": "active", "dc2-kube": "passive"}

    listed, ran = seen("second")
    # the groups still hold dc1-kube as active (group_by), so the play's pattern lists it first; the decision does not
    assert listed == {"site_hosts": ["dc2-kube", "dc1-kube"], "play_hosts": ["dc1-kube", "dc2-kube"]}
    assert ran == {"dc1-kube": "passive", "dc2-kube": "active"}

    listed, ran = seen("third")
    # every site unreachable: none takes part, though both are still in the groups of the decisions before
    assert listed == {"site_hosts": [], "play_hosts": ["dc1-kube", "dc2-kube"]}
    assert not ran
