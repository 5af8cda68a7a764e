"""Kubernetes client settings (module_utils/kube.py): what an unreachable data center costs each call."""

from __future__ import annotations

from ansible_collections.hanzo.kms.plugins.module_utils import kube

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://10.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: ctx, context: {cluster: c, user: u}}]
current-context: ctx
"""


def test_a_connection_gets_the_connect_timeout_and_a_made_one_the_request_timeout():
    assert kube.request_timeout(10) == (kube.CONNECT_TIMEOUT, 10.0)
    assert kube.request_timeout(1) == (1.0, 1.0)  # never longer than what the caller allows in all


def test_a_connection_that_was_not_made_is_not_retried_a_failed_read_is_once(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG, encoding="utf-8")
    retries = kube.api_client({}, {"kubeconfig": str(path), "context": "ctx"}).configuration.retries
    assert (retries.total, retries.connect) == (1, 0)
