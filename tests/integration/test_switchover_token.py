"""Issue 14 item 7: a switchover whose old site is lost between demotion and promotion finishes with the token.

On the session's lab after install.yml (dc1 primary):

1. dc2's API server refuses the promotion patch (a ValidatingAdmissionPolicy added by the test, as a broken admission
   webhook or an API outage at the wrong moment would), so switchover.yml to dc2 stops after dc1 was demoted and its
   demotion token was read;
2. dc1 is lost: its Kubernetes API no longer answers the control node (the re-run uses a copy of the lab inventory
   whose dc1 kubeconfig points at a closed port: connection refused);
3. switchover.yml to dc2 is run again, as the runbook says. It must promote dc2 with the demotion token dc1 published
   (recorded in dc2 by the first run) instead of refusing and leaving only a tokenless failover (data loss possible).

The lab's dc1 keeps running (killing its kube-apiserver would leave kwok's pods NotReady for the next tests), so with
the real inventory it is a demoted replica of dc2 - the state after a switchover - and the switchover back to dc1
restores the lab for the next tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.ansible_run import LAB_INVENTORY, REPO_ROOT, recap, run_playbook
from tests.lab.core import free_port, wait_until
from tests.lab.kube_fixtures import kube_clients, kube_sites  # noqa: F401  pylint: disable=unused-import

try:
    from kubernetes import client
    from kubernetes.client.rest import ApiException
except ImportError:  # pragma: no cover
    client = ApiException = None

BLOCK = "test-block-promotion.lab.hanzo.kms"
BLOCK_MESSAGE = "lab test: promotions of kms-pg-dc2 are refused"


def switchover(target, lab_dir, inventory=LAB_INVENTORY):
    proc = run_playbook(
        "playbooks/switchover.yml",
        "-e",
        f"switchover_target_site={target}",
        "-e",
        f"switchover_confirm='SWITCHOVER TO {target}'",
        inventory=inventory,
        lab_dir=lab_dir,
    )
    print(f"\nswitchover.yml to {target}: rc {proc.returncode} in {proc.seconds:.1f}s")
    return proc


def cluster(api_client, site):
    return client.CustomObjectsApi(api_client).get_namespaced_custom_object(
        "postgresql.cnpg.io", "v1", "kms", "clusters", f"kms-pg-{site}"
    )


def promotion_refused(api_client):
    """Whether dc2's API refuses a promotion of kms-pg-dc2 (dry run: nothing is changed)."""
    try:
        client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
            "postgresql.cnpg.io",
            "v1",
            "kms",
            "clusters",
            "kms-pg-dc2",
            {"spec": {"replica": {"primary": "kms-pg-dc2"}}},
            dry_run="All",
        )
    except ApiException as exc:
        return BLOCK_MESSAGE in (exc.body or "")
    return False


def block_promotion(api_client):
    api = client.AdmissionregistrationV1Api(api_client)
    api.create_validating_admission_policy(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": BLOCK},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["postgresql.cnpg.io"],
                            "apiVersions": ["v1"],
                            "operations": ["UPDATE"],
                            "resources": ["clusters"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "object.metadata.name != 'kms-pg-dc2' || !has(object.spec.replica) "
                        "|| !has(object.spec.replica.primary) "
                        "|| object.spec.replica.primary != 'kms-pg-dc2'",
                        "message": BLOCK_MESSAGE,
                        "reason": "Forbidden",
                    }
                ],
            },
        }
    )
    api.create_validating_admission_policy_binding(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": BLOCK},
            "spec": {"policyName": BLOCK, "validationActions": ["Deny"]},
        }
    )
    wait_until(lambda: promotion_refused(api_client), 30, "dc2's API to refuse promotions")


def unblock_promotion(api_client):
    api = client.AdmissionregistrationV1Api(api_client)
    for delete in (api.delete_validating_admission_policy_binding, api.delete_validating_admission_policy):
        try:
            delete(BLOCK)
        except ApiException as exc:
            if exc.status != 404:
                raise
    wait_until(lambda: not promotion_refused(api_client), 30, "dc2's API to accept promotions again")


def lost_dc1_inventory(tmp_path, lab):
    """A copy of the lab inventory in which dc1's Kubernetes API is unreachable from the control node (its kubeconfig
    points at a closed port: connection refused), as when the site is lost. The lab's dc1 itself keeps running, so
    it is a demoted replica of dc2 again - a switchover's end state - once the real inventory is used."""
    inventory = tmp_path / "inventory"
    shutil.copytree(REPO_ROOT / "inventories" / "lab", inventory)
    kubeconfig = yaml.safe_load(Path(lab["sites"]["dc1"]["kube"]["kubeconfig"]).read_text())
    closed = free_port()
    for entry in kubeconfig["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{closed}"
    lost = tmp_path / "dc1-lost.kubeconfig"
    lost.write_text(yaml.safe_dump(kubeconfig))
    dc1_vars = inventory / "group_vars" / "dc1.yml"
    dc1_vars.write_text(dc1_vars.read_text() + f"site_kubeconfig: {lost}\n")  # over kms_sites.yml's (child group)
    return str(inventory)


@pytest.fixture(scope="module")
def installed(lab, lab_dir):
    proc = run_playbook("playbooks/install.yml", lab_dir=lab_dir)
    assert proc.returncode == 0, proc.stdout[-6000:]
    return lab


def test_switchover_finishes_with_the_recorded_token_after_the_old_site_is_lost(  # noqa: F811
    installed, lab_dir, kube_clients, tmp_path
):  # pylint: disable=redefined-outer-name
    dc1, dc2 = kube_clients["dc1"], kube_clients["dc2"]
    assert cluster(dc1, "dc1")["spec"]["replica"]["primary"] == "kms-pg-dc1", "the test starts with dc1 primary"

    # 1. the switchover stops after the demotion: dc2's API refuses the promotion patch
    block_promotion(dc2)
    try:
        first = switchover("dc2", lab_dir)
    finally:
        unblock_promotion(dc2)
    assert first.returncode != 0 and BLOCK_MESSAGE in first.stdout, first.stdout[-6000:]
    old, new = cluster(dc1, "dc1"), cluster(dc2, "dc2")
    token = old["status"].get("demotionToken")
    assert old["spec"]["replica"]["primary"] == "kms-pg-dc2" and token, "dc1 was demoted and published its token"
    assert new["spec"]["replica"]["primary"] == "kms-pg-dc1" and "promotionToken" not in new["spec"]["replica"]

    # 2. dc1 is lost (its API no longer answers); 3. the same command again
    second = switchover("dc2", lab_dir, lost_dc1_inventory(tmp_path, installed))
    assert second.returncode == 0, second.stdout[-8000:]
    new = cluster(dc2, "dc2")
    assert new["spec"]["replica"]["primary"] == "kms-pg-dc2"
    assert new["spec"]["replica"].get("promotionToken") == token, "dc2 was promoted without dc1's demotion token"
    assert new["status"]["lastPromotionToken"] == token
    assert new["status"]["phase"] == "Cluster in healthy state"
    report = json.loads((Path(lab_dir) / "reports" / "switchover-latest.json").read_text())
    assert report["result"] == "succeeded" and report["preflight"]["state"] == "resume"
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["wait_promotion"]["data"]["token"] == token
    assert steps["wait_promotion"]["data"]["token_source"] == "recorded"
    assert steps["wait_promotion"]["data"]["old_reachable"] is False
    assert steps["stop_old_kms"]["result"] == "skipped" and steps["backup_redis"]["result"] == "skipped"
    assert steps["restore_redis"]["result"] == "changed" and steps["switch_lb"]["result"] == "changed"
    assert report["data_loss"]["postgres"]["bound_seconds"] == 0
    assert all(r["failed"] == 0 for r in recap(second.stdout).values())

    # dc1 is back as a demoted replica of dc2 (a switchover's end state): switch back for the next tests
    assert cluster(dc1, "dc1")["spec"]["replica"]["primary"] == "kms-pg-dc2"
    back = switchover("dc1", lab_dir)
    assert back.returncode == 0, back.stdout[-8000:]
    assert (
        cluster(dc1, "dc1")["status"]["lastPromotionToken"] == cluster(dc1, "dc1")["spec"]["replica"]["promotionToken"]
    )
