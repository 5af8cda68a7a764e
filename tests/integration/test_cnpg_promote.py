"""hanzo.kms.cnpg_promote's state handling against the CNPG operator STAND-IN (tests/lab/cnpg_standin.py, not CNPG).

Only what the real operator cannot be made to do on demand stays here: a promotion token CloudNativePG refuses
(the stand-in's replayed-LSN annotation), a promotion that stalls (CloudNativePG's instance manager, not the paused
operator, promotes and records the token), fencing a reachable old site, a stopped API server, and the standalone
replica form. The module's switchover, its dry runs, its refusals, a run killed after its demotion patch and a
demotion that times out while the old Cluster's operator is paused (it publishes the demotion token) run on the real
CloudNativePG operator (tests/integration/test_cnpg_operator_real.py), and so do the playbooks' switchover and
failover.

Each test gets a fresh namespace in both clusters holding ``kms-pg-dc1`` (primary, in dc1) and ``kms-pg-dc2``
(replica, in dc2) of one distributed topology. The main scenarios run the real module through ``ansible-playbook``
(tests/ansible_run.py: the checkout's ansible.cfg, JSON callback); the interruption scenarios drive the
same module_utils state machine directly over kubernetes clients so they can stop it between steps.

Set HANZO_KMS_CNPG_STANDIN_DELAY (seconds per simulated operator step) low, e.g. 0.05, before the lab starts to keep
the stand-in's simulated delays near zero; ``-s`` prints the module timings of a failover.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import cnpg
from tests.ansible_run import run_play
from tests.lab import cnpg_state
from tests.lab.core import wait_until
from tests.lab.kube_fixtures import kube_clients, kube_dc1, kube_dc2, kube_namespace, kube_sites, kubeconfig  # noqa: F401  pylint: disable=unused-import

try:
    from kubernetes import client
except ImportError:  # pragma: no cover
    client = None

GROUP, VERSION = "postgresql.cnpg.io", "v1"
WAIT = 60
DC1, DC2 = "kms-pg-dc1", "kms-pg-dc2"
EXTERNAL = [
    {
        "name": name,
        "plugin": {"name": cnpg_state.BARMAN_PLUGIN, "parameters": {"barmanObjectName": name, "serverName": name}},
    }
    for name in (DC1, DC2)
]
PAUSE = "cnpg.io/reconciliationLoop"


def pg_cluster(name, replica):
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Cluster",
        "metadata": {"name": name},
        "spec": {
            "instances": 2,
            "storage": {"size": "1Gi"},
            "bootstrap": {"initdb": {"database": "kms", "owner": "kms"}}
            if name == DC1
            else {"pg_basebackup": {"source": DC1}},
            "plugins": [
                {
                    "name": cnpg_state.BARMAN_PLUGIN,
                    "isWALArchiver": True,
                    "parameters": {"barmanObjectName": name, "serverName": name},
                }
            ],
            "externalClusters": EXTERNAL,
            "replica": replica,
        },
    }


def custom(api_client):
    return client.CustomObjectsApi(api_client)


def get(api_client, namespace, name):
    return custom(api_client).get_namespaced_custom_object(GROUP, VERSION, namespace, "clusters", name)


def patch(api_client, namespace, name, body):
    return custom(api_client).patch_namespaced_custom_object(GROUP, VERSION, namespace, "clusters", name, body)


def wait_for(api_client, namespace, name, predicate, what, interval=0.05):
    def check():
        obj = get(api_client, namespace, name)
        return obj if predicate(obj) else None

    return wait_until(check, WAIT, f"{namespace}/{name}: {what}", interval=interval)


def healthy(obj):
    status = obj.get("status") or {}
    return status.get("phase") == cnpg.PHASE_HEALTHY and cnpg.condition_true(obj, "Ready")


def create_topology(dc1, dc2, namespace, interval=0.05):
    """kms-pg-dc1 (primary) in dc1 and kms-pg-dc2 (replica) in dc2 created in ``namespace``; returns once both are
    healthy (polled every ``interval`` seconds)."""
    custom(dc1).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "clusters", pg_cluster(DC1, {"primary": DC1, "source": DC2})
    )
    custom(dc2).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "clusters", pg_cluster(DC2, {"primary": DC1, "source": DC1})
    )
    wait_for(dc1, namespace, DC1, lambda o: healthy(o) and cnpg.reports_primary(o), "healthy primary", interval)
    wait_for(
        dc2,
        namespace,
        DC2,
        lambda o: healthy(o) and (o["status"].get("instancesReportedState") or {}),
        "healthy replica",
        interval,
    )


@pytest.fixture(name="topology")
def fixture_topology(kube_clients, kube_namespace):  # noqa: F811  pylint: disable=redefined-outer-name
    """dc1 primary and dc2 replica, both healthy; returns (namespace, dc1 client, dc2 client)."""
    dc1, dc2 = kube_clients["dc1"], kube_clients["dc2"]
    create_topology(dc1, dc2, kube_namespace)
    return kube_namespace, dc1, dc2


# -- running the module --------------------------------------------------------------------------------------------
def run_module(tmp_path, kubeconfig_path, namespace, mode, old="dc1", new="dc2", **options):
    """Run hanzo.kms.cnpg_promote through ansible-playbook; return the task result."""
    names = {"dc1": DC1, "dc2": DC2}
    args = {
        "mode": mode,
        "kubeconfig": kubeconfig_path,
        "poll_interval": 0.05,
        "old_cluster": {"name": names[old], "namespace": namespace, "context": old},
        "new_cluster": {"name": names[new], "namespace": namespace, "context": new},
    }
    args.update(options)
    run = run_play(
        tmp_path / f"promote-{mode}-{time.monotonic_ns()}.yml",
        [{"name": "Run cnpg_promote", "hanzo.kms.cnpg_promote": args}],
        name="Promote",
        timeout=600,
    )
    return run.result()


def run_direct(old_client, new_client, namespace, mode, old_name=DC1, new_name=DC2, **kwargs):
    """The module's state machine over kubernetes clients (for stopping it between steps)."""
    kwargs.setdefault("poll_interval", 0.05)
    old = cnpg.KubeCluster(old_client, old_name, namespace, "old", request_timeout=5)
    new = cnpg.KubeCluster(new_client, new_name, namespace, "new", request_timeout=5)
    return cnpg.Promoter(old, new, mode, **kwargs).run()


# -- switchover ----------------------------------------------------------------------------------------------------
def test_token_mismatch_fails_with_phase_reason(topology, tmp_path, kubeconfig):  # noqa: F811
    ns, dummy, dc2 = topology
    # the stand-in's designated primary "replayed" past the token's LSN: CNPG's fatal mismatch
    patch(dc2, ns, DC2, {"metadata": {"annotations": {cnpg_state.REPLAYED_LSN_ANNOTATION: "FFFFFFFF/0"}}})
    result = run_module(tmp_path, kubeconfig, ns, "switchover", promotion_timeout=3600)
    assert result.get("failed") is True
    assert cnpg.PHASE_UNRECOVERABLE in result["msg"] and cnpg_state.TOKEN_MISMATCH_REASON in result["msg"]
    assert result["last_status"]["phase"] == cnpg.PHASE_UNRECOVERABLE
    assert result["steps"] == ["demote", "record_token", "promote"]


# -- interruptions -------------------------------------------------------------------------------------------------
def test_resume_after_interruption_during_promotion(topology):
    ns, dc1, dc2 = topology
    patch(dc2, ns, DC2, {"metadata": {"annotations": {PAUSE: "disabled"}}})
    with pytest.raises(cnpg.PhaseTimeout) as info:
        run_direct(dc1, dc2, ns, "switchover", promotion_timeout=0.5)
    assert "lastPromotionToken" in info.value.msg
    token = info.value.details["result"]["token"]
    assert info.value.details["last_status"]["spec_replica"]["promotionToken"] == token
    patch(dc2, ns, DC2, {"metadata": {"annotations": {PAUSE: None}}})
    result = run_direct(dc1, dc2, ns, "switchover")
    assert result["steps"] == [] and result["token"] == token
    assert cnpg.promotion_done(get(dc2, ns, DC2), token)


# -- failover ------------------------------------------------------------------------------------------------------
def test_fencing_then_failover(topology, tmp_path, kubeconfig):  # noqa: F811
    ns, dc1, dc2 = topology
    result = run_module(tmp_path, kubeconfig, ns, "failover", old_cluster_fencing="fence")
    assert result.get("failed") is not True, result
    assert result["steps"] == ["fence", "promote"] and result["data_loss_possible"] is True
    assert result["old_reachable"] is True and result["token"] is None
    assert get(dc1, ns, DC1)["metadata"]["annotations"][cnpg.FENCE_ANNOTATION] == '["*"]'
    new = get(dc2, ns, DC2)
    assert new["spec"]["replica"]["primary"] == DC2 and "promotionToken" not in new["spec"]["replica"]
    assert cnpg.promotion_done(new)
    again = run_module(tmp_path, kubeconfig, ns, "failover")
    assert again["changed"] is False


def test_failover_with_dc1_apiserver_stopped(topology, tmp_path, kubeconfig, lab_handle):  # noqa: F811
    ns, dummy, dc2 = topology
    pid = lab_handle.process("dc1-kube-apiserver")["pid"]
    os.kill(pid, signal.SIGSTOP)  # dc1's control plane stops answering
    try:
        result = run_module(tmp_path, kubeconfig, ns, "failover", request_timeout=2)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert result.get("failed") is not True, result
    assert result["old_reachable"] is False and result["old_error"]
    assert result["data_loss_possible"] is True and result["steps"] == ["promote"]
    assert result["before"]["old_cluster"] is None
    assert result["lag"]["known"] is False
    assert cnpg.promotion_done(get(dc2, ns, DC2))
    print(f"\nfailover (dc1 apiserver stopped) module timings: {result['timings']}")


def test_failover_module_time_old_site_fenced(topology, tmp_path, kubeconfig):  # noqa: F811
    """Failover timing without the unreachable-probe cost: dc1 already fenced."""
    ns, dc1, dc2 = topology
    patch(dc1, ns, DC1, {"metadata": {"annotations": {cnpg.FENCE_ANNOTATION: '["*"]'}}})
    result = run_module(tmp_path, kubeconfig, ns, "failover")
    assert result["steps"] == ["promote"]
    assert cnpg.promotion_done(get(dc2, ns, DC2))
    print(f"\nfailover (dc1 fenced) module timings: {result['timings']}")


def test_standalone_form_failover_and_switchover_refused(
    kube_clients,
    kube_namespace,
    tmp_path,  # noqa: F811
    kubeconfig,
):  # noqa: F811
    ns = kube_namespace
    dc1, dc2 = kube_clients["dc1"], kube_clients["dc2"]
    primary = pg_cluster(DC1, None)
    del primary["spec"]["replica"]
    custom(dc1).create_namespaced_custom_object(GROUP, VERSION, ns, "clusters", primary)
    custom(dc2).create_namespaced_custom_object(
        GROUP, VERSION, ns, "clusters", pg_cluster(DC2, {"enabled": True, "source": DC1})
    )
    wait_for(dc1, ns, DC1, lambda o: healthy(o) and cnpg.reports_primary(o), "healthy primary")
    wait_for(dc2, ns, DC2, lambda o: healthy(o) and cnpg.is_replica(o), "healthy standalone replica")

    refused = run_module(tmp_path, kubeconfig, ns, "switchover")
    assert refused.get("failed") is True and "standalone" in refused["msg"] and refused["plan"] == []

    result = run_module(tmp_path, kubeconfig, ns, "failover", old_cluster_fencing="hibernate")
    assert result.get("failed") is not True, result
    assert [p["patch"] for p in result["plan"]] == [
        {"metadata": {"annotations": {cnpg.HIBERNATION_ANNOTATION: "on"}}},
        {"spec": {"replica": {"enabled": False}}},
    ]
    assert any("irreversible" in w for w in result.get("warnings", []))
    assert cnpg.promotion_done(get(dc2, ns, DC2))
