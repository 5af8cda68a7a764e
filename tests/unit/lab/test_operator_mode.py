"""Unit tests of the lab's operator-mode helpers: the CNPG mode switch, the kwok taint, CoreDNS's configuration."""

from __future__ import annotations

import pytest

from tests.lab import dns, kube, stack
from tests.lab.core import LabError


def test_the_cnpg_mode_defaults_to_the_stand_in(monkeypatch):
    monkeypatch.delenv("HANZO_KMS_LAB_CNPG", raising=False)
    assert stack.cnpg_mode() == "standin"
    monkeypatch.setenv("HANZO_KMS_LAB_CNPG", "operator")
    assert stack.cnpg_mode() == "operator"


def test_an_unknown_cnpg_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HANZO_KMS_LAB_CNPG", "real")
    with pytest.raises(LabError, match="HANZO_KMS_LAB_CNPG='real'"):
        stack.cnpg_mode()


def test_kwok_nodes_carry_kwoks_taint_only_in_operator_mode():
    assert "taints" not in kube._node("dc1", 0)["spec"]  # pylint: disable=protected-access
    assert kube._node("dc1", 0, taint=True)["spec"]["taints"] == [  # pylint: disable=protected-access
        {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
    ]


def test_corefile_serves_the_cluster_domain_from_the_sites_apiserver_on_the_node_ip():
    text = dns.corefile("10.250.3.2", "/lab/dc1/kube/kubeconfig", "dc1")
    assert "bind 10.250.3.2" in text
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa {" in text
    assert "kubeconfig /lab/dc1/kube/kubeconfig dc1" in text
    assert "forward" not in text  # no upstream resolver in the lab


@pytest.mark.parametrize(
    ("data", "offset", "end"),
    [
        (b"\x07example\x03com\x00rest", 0, 13),  # labels up to the root
        (b"\xc0\x0cxx", 0, 2),  # a compression pointer
        (b"\x03www\xc0\x0c", 0, 6),  # labels, then a pointer
    ],
)
def test_dns_names_are_skipped_whole(data, offset, end):
    assert dns._skip_name(data, offset) == end  # pylint: disable=protected-access


def operator_pod(started, ready=True, phase="Running"):
    return {
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": "manager", "ready": ready, "state": {"running": {"startedAt": started}}}],
        }
    }


POWERED_ON = 1796424200.0  # 2026-12-04T22:43:20Z


def test_the_operator_runs_again_only_when_every_pod_was_restarted_after_the_power_on_and_is_ready():
    after, before = "2026-12-04T22:43:25Z", "2026-12-04T21:00:00Z"
    assert kube.running_since([operator_pod(after), operator_pod("2026-12-04T22:43:20Z")], POWERED_ON)
    # the status stored before the power cut still says Ready: not yet
    assert not kube.running_since([operator_pod(after), operator_pod(before)], POWERED_ON)
    assert not kube.running_since([operator_pod(after, ready=False)], POWERED_ON)
    assert not kube.running_since([{"status": {"phase": "Pending"}}], POWERED_ON)
    assert not kube.running_since([], POWERED_ON)
    # a finished Job's pod does not count
    assert kube.running_since([operator_pod(after), operator_pod(before, ready=False, phase="Succeeded")], POWERED_ON)
