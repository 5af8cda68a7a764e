"""Integration tests of the lab's two real Kubernetes control planes and the CNPG API (issue 3).

Needs the lab up with its clusters (make k8s-bins, then the ``lab`` fixture / make lab-up). For development before
the lab CLI integrates the clusters: ``python -m tests.lab.kube up --dir D`` then run pytest with
``HANZO_KMS_KUBE_DEV_DIR=D``.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path

import pytest
import yaml

from tests.lab import cnpg_state
from tests.lab.core import wait_until
from tests.lab.kube_build import KUBE_VERSION
from tests.lab.kube_fixtures import kube_clients, kube_dc1, kube_dc2, kube_namespace, kube_sites, kubeconfig, kubectl  # noqa: F401  pylint: disable=unused-import

try:
    from kubernetes import client
    from kubernetes.client.rest import ApiException
except ImportError:  # pragma: no cover
    client = ApiException = None

GROUP, VERSION = "postgresql.cnpg.io", "v1"
WAIT = 60
EXTERNAL = [
    {
        "name": "kms-pg-dc1",
        "plugin": {
            "name": cnpg_state.BARMAN_PLUGIN,
            "parameters": {"barmanObjectName": "kms-pg-dc1", "serverName": "kms-pg-dc1"},
        },
    },
    {
        "name": "kms-pg-dc2",
        "plugin": {
            "name": cnpg_state.BARMAN_PLUGIN,
            "parameters": {"barmanObjectName": "kms-pg-dc2", "serverName": "kms-pg-dc2"},
        },
    },
]

if os.environ.get("HANZO_KMS_KUBE_DEV_DIR"):

    @pytest.fixture(scope="session", name="lab")
    def _dev_lab():
        """Development only: the state of a lab started with ``python -m tests.lab.kube up``."""
        return json.loads(Path(os.environ["HANZO_KMS_KUBE_DEV_DIR"], "state.json").read_text(encoding="utf-8"))


def pg_cluster(name, primary, source, **extra):
    spec = {
        "instances": 3,
        "storage": {"size": "1Gi"},
        "bootstrap": {"initdb": {"database": "kms", "owner": "kms"}}
        if primary == name
        else {"pg_basebackup": {"source": source}},
        "plugins": [
            {
                "name": cnpg_state.BARMAN_PLUGIN,
                "isWALArchiver": True,
                "parameters": {"barmanObjectName": name, "serverName": name},
            }
        ],
        "externalClusters": EXTERNAL,
        "replica": {"primary": primary, "source": source},
    }
    spec.update(extra)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Cluster", "metadata": {"name": name}, "spec": spec}


def custom(api_client):
    return client.CustomObjectsApi(api_client)


def get_cluster(api_client, namespace, name):
    return custom(api_client).get_namespaced_custom_object(GROUP, VERSION, namespace, "clusters", name)


def wait_status(api_client, namespace, name, predicate, what, plural="clusters"):
    def check():
        obj = custom(api_client).get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        return obj if predicate(obj.get("status") or {}) else None

    return wait_until(check, WAIT, what, interval=0.05)


def condition(status, ctype):
    return cnpg_state.get_condition(status, ctype) or {}


def healthy(status):
    return status.get("phase") == cnpg_state.PHASE_HEALTHY and condition(status, "Ready").get("status") == "True"


# -- clusters --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("site", ["dc1", "dc2"])
def test_kubectl_get_nodes_per_context(kubectl, site):
    nodes = json.loads(kubectl("--context", site, "get", "nodes", "-o", "json").stdout)["items"]
    ready = [n for n in nodes if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])]
    assert len(ready) >= 3
    assert len({n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in ready}) >= 3


def test_merged_kubeconfig_has_both_contexts(kubeconfig):
    config = yaml.safe_load(Path(kubeconfig).read_text(encoding="utf-8"))
    assert {c["name"] for c in config["contexts"]} >= {"dc1", "dc2"}


@pytest.mark.parametrize("site", ["dc1", "dc2"])
def test_version_is_stamped_and_rbac_is_on(kube_clients, site):
    version = client.VersionApi(kube_clients[site]).get_code()
    assert version.git_version == KUBE_VERSION
    # RBAC: an unprivileged user is refused (impersonation by the system:masters admin)
    api_client = kube_clients[site]
    api_client.set_default_header("Impersonate-User", "nobody")
    try:
        with pytest.raises(ApiException) as err:
            client.CoreV1Api(api_client).list_namespaced_secret("default")
        assert err.value.status == 403
    finally:
        api_client.default_headers.pop("Impersonate-User", None)


def test_token_authentication(kube_sites):
    entry = kube_sites["dc1"]
    configuration = client.Configuration()
    configuration.host = entry["server"]
    configuration.ssl_ca_cert = entry["pki"]["ca"]
    configuration.api_key = {"authorization": "Bearer " + entry["token"]}
    with client.ApiClient(configuration) as api_client:
        assert client.CoreV1Api(api_client).list_node().items


@pytest.mark.parametrize("site", ["dc1", "dc2"])
def test_deployment_with_pod_anti_affinity_becomes_available(kube_clients, kube_namespace, site):
    api_client = kube_clients[site]
    labels = {"app": "kms"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "kms", "labels": labels},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "kms", "image": "registry.invalid/kms:1"}],
                    "affinity": {
                        "podAntiAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": [
                                {"labelSelector": {"matchLabels": labels}, "topologyKey": "kubernetes.io/hostname"}
                            ]
                        }
                    },
                },
            },
        },
    }
    client.AppsV1Api(api_client).create_namespaced_deployment(kube_namespace, deployment)

    def available():
        status = client.AppsV1Api(api_client).read_namespaced_deployment_status("kms", kube_namespace).status
        conds = {c.type: c.status for c in status.conditions or []}
        return status.available_replicas == 3 and conds.get("Available") == "True"

    wait_until(available, WAIT, f"{site} Deployment to become Available")
    pods = client.CoreV1Api(api_client).list_namespaced_pod(kube_namespace, label_selector="app=kms").items
    assert len({p.spec.node_name for p in pods}) == 3
    assert all(p.status.phase == "Running" for p in pods)


# -- CNPG API --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("site", ["dc1", "dc2"])
def test_cnpg_crds_installed(kube_clients, site):
    api = client.ApiextensionsV1Api(kube_clients[site])
    names = {crd.metadata.name for crd in api.list_custom_resource_definition().items}
    assert {
        "clusters.postgresql.cnpg.io",
        "backups.postgresql.cnpg.io",
        "scheduledbackups.postgresql.cnpg.io",
        "objectstores.barmancloud.cnpg.io",
    } <= names


def test_switchover_with_tokens_by_kubectl_patch(kube_clients, kubectl, kube_namespace):
    ns = kube_namespace
    dc1, dc2 = kube_clients["dc1"], kube_clients["dc2"]
    for site, manifest in (
        ("dc1", pg_cluster("kms-pg-dc1", "kms-pg-dc1", "kms-pg-dc2")),
        ("dc2", pg_cluster("kms-pg-dc2", "kms-pg-dc1", "kms-pg-dc1")),
    ):
        kubectl("--context", site, "-n", ns, "create", "-f", "-", input_text=json.dumps(manifest))
    status1 = wait_status(dc1, ns, "kms-pg-dc1", healthy, "dc1 cluster healthy")["status"]
    status2 = wait_status(dc2, ns, "kms-pg-dc2", healthy, "dc2 replica cluster healthy")["status"]
    assert status1["instancesReportedState"][status1["currentPrimary"]]["isPrimary"] is True
    assert status2["instancesReportedState"][status2["currentPrimary"]]["isPrimary"] is False
    assert status1["systemID"] == status2["systemID"]

    # 1. demote dc1
    kubectl(
        "--context",
        "dc1",
        "-n",
        ns,
        "patch",
        "cluster",
        "kms-pg-dc1",
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": {"replica": {"primary": "kms-pg-dc2", "promotionToken": None}}}),
    )
    done = wait_status(
        dc1,
        ns,
        "kms-pg-dc1",
        lambda s: (
            s.get("demotionToken")
            and condition(s, "ReplicaClusterSwitch").get("status") == "True"
            and not s.get("switchReplicaClusterStatus", {}).get("inProgress")
        ),
        "dc1 demotion token",
    )
    status1 = done["status"]
    assert condition(status1, "ReplicaClusterSwitch")["message"] == "Completed the Replica cluster transition"
    assert status1["instancesReportedState"][status1["currentPrimary"]]["isPrimary"] is False
    assert "cnpg.io/fencedInstances" not in (done["metadata"].get("annotations") or {})
    token = kubectl(
        "--context", "dc1", "-n", ns, "get", "cluster", "kms-pg-dc1", "-o", "jsonpath={.status.demotionToken}"
    ).stdout
    content = json.loads(base64.b64decode(token))
    assert sorted(content) == sorted(cnpg_state.TOKEN_KEYS) and all(content.values())

    # 2. a token on a replica is refused with CNPG's wording
    refused = kubectl(
        "--context",
        "dc1",
        "-n",
        ns,
        "patch",
        "cluster",
        "kms-pg-dc1",
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": {"replica": {"promotionToken": token}}}),
        check=False,
    )
    assert refused.returncode != 0
    assert "promotionToken is only allowed for primary clusters" in refused.stderr

    # 3. promote dc2 with primary and token in one patch
    kubectl(
        "--context",
        "dc2",
        "-n",
        ns,
        "patch",
        "cluster",
        "kms-pg-dc2",
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": {"replica": {"primary": "kms-pg-dc2", "promotionToken": token}}}),
    )
    promoted = wait_status(
        dc2, ns, "kms-pg-dc2", lambda s: s.get("lastPromotionToken") == token and healthy(s), "dc2 promotion"
    )["status"]
    assert promoted["instancesReportedState"][promoted["currentPrimary"]]["isPrimary"] is True
    assert promoted["timelineID"] > status2["timelineID"]
    assert "demotionToken" not in promoted

    # 4. a backup on the new primary runs and completes
    backup = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Backup",
        "metadata": {"name": "after-promotion"},
        "spec": {
            "cluster": {"name": "kms-pg-dc2"},
            "method": "plugin",
            "pluginConfiguration": {"name": cnpg_state.BARMAN_PLUGIN},
        },
    }
    custom(dc2).create_namespaced_custom_object(GROUP, VERSION, ns, "backups", backup)
    seen = set()

    def backup_done(status):
        seen.add(status.get("phase"))
        return status.get("phase") in ("completed", "failed")

    final = wait_status(dc2, ns, "after-promotion", backup_done, "backup completion", plural="backups")["status"]
    assert final["phase"] == "completed" and final["backupId"] and final["instanceID"]["podName"]
    assert "failed" not in seen


def test_promotion_with_wrong_token_is_unrecoverable(kube_clients, kubectl, kube_namespace):
    ns = kube_namespace
    dc2 = kube_clients["dc2"]
    kubectl(
        "--context",
        "dc2",
        "-n",
        ns,
        "create",
        "-f",
        "-",
        input_text=json.dumps(pg_cluster("kms-pg-dc2", "kms-pg-dc1", "kms-pg-dc1")),
    )
    wait_status(dc2, ns, "kms-pg-dc2", healthy, "dc2 replica cluster healthy")
    foreign = cnpg_state.make_token("7000000000000000001", 1, 0x3000028, 1_800_000_000)
    kubectl(
        "--context",
        "dc2",
        "-n",
        ns,
        "patch",
        "cluster",
        "kms-pg-dc2",
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": {"replica": {"primary": "kms-pg-dc2", "promotionToken": foreign}}}),
    )
    status = wait_status(
        dc2, ns, "kms-pg-dc2", lambda s: s.get("phase") == cnpg_state.PHASE_UNRECOVERABLE, "unrecoverable phase"
    )["status"]
    assert status["phaseReason"] == cnpg_state.TOKEN_MISMATCH_REASON
    assert status["instancesReportedState"][status["currentPrimary"]]["isPrimary"] is False


def test_strict_field_validation_rejects_unknown_fields(kube_dc1, kubectl, kube_namespace):
    manifest = pg_cluster("kms-pg-dc1", "kms-pg-dc1", "kms-pg-dc2")
    manifest["spec"]["replicaa"] = {"primary": "x"}
    with pytest.raises(ApiException) as err:
        custom(kube_dc1).create_namespaced_custom_object(
            GROUP, VERSION, kube_namespace, "clusters", manifest, field_validation="Strict"
        )
    assert err.value.status in (400, 422)
    assert 'unknown field "spec.replicaa"' in json.loads(err.value.body)["message"]
    proc = kubectl(
        "--context",
        "dc1",
        "-n",
        kube_namespace,
        "create",
        "--validate=strict",
        "-f",
        "-",
        input_text=json.dumps(manifest),
        check=False,
    )
    assert proc.returncode != 0 and "unknown field" in proc.stderr


@pytest.mark.parametrize(
    "replica, message",
    [
        (
            {"primary": "kms-pg-dc1", "source": "kms-pg-dc2", "enabled": True},
            "replica mode enabled is not compatible with the primary field",
        ),
        ({"primary": "kms-pg-dc1", "source": "nowhere"}, "External cluster nowhere not found"),
        ({"primary": "elsewhere", "source": "kms-pg-dc1"}, "External cluster elsewhere not found"),
        (
            {"primary": "kms-pg-dc2", "source": "kms-pg-dc2", "promotionToken": "eyJhIjoiYiJ9"},
            "promotionToken is only allowed for primary clusters",
        ),
        (
            {"primary": "kms-pg-dc1", "source": "kms-pg-dc2", "promotionToken": "eyJhIjoiYiJ9", "minApplyDelay": "1h"},
            "minApplyDelay cannot be applied with a promotion token",
        ),
    ],
)
def test_admission_policies_reject_what_cnpg_rejects(kube_dc1, kube_namespace, replica, message):
    manifest = pg_cluster("kms-pg-dc1", "kms-pg-dc1", "kms-pg-dc2")
    manifest["spec"]["replica"] = replica
    with pytest.raises(ApiException) as err:
        custom(kube_dc1).create_namespaced_custom_object(GROUP, VERSION, kube_namespace, "clusters", manifest)
    assert err.value.status in (400, 403, 422)
    assert message in json.loads(err.value.body)["message"]


def test_role_change_refused_while_switch_in_progress(kube_dc1, kube_namespace):
    ns = kube_namespace
    api = custom(kube_dc1)
    manifest = pg_cluster("paused", "paused", "kms-pg-dc2", externalClusters=EXTERNAL + [{"name": "paused"}])
    manifest["metadata"]["annotations"] = {"cnpg.io/reconciliationLoop": "disabled"}  # the stand-in leaves it alone
    api.create_namespaced_custom_object(GROUP, VERSION, ns, "clusters", manifest)
    api.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, "clusters", "paused", {"status": {"switchReplicaClusterStatus": {"inProgress": True}}}
    )
    with pytest.raises(ApiException) as err:
        api.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "clusters", "paused", {"spec": {"replica": {"primary": "kms-pg-dc2"}}}
        )
    assert (
        "cannot modify the field while there is an ongoing operation to enable the replica cluster"
        in json.loads(err.value.body)["message"]
    )
    # other changes stay allowed
    api.patch_namespaced_custom_object(GROUP, VERSION, ns, "clusters", "paused", {"spec": {"instances": 2}})


def test_objectstore_and_scheduled_backup_api(kube_dc2, kube_namespace):
    api = custom(kube_dc2)
    store = {
        "apiVersion": "barmancloud.cnpg.io/v1",
        "kind": "ObjectStore",
        "metadata": {"name": "kms-pg-dc2"},
        "spec": {
            "retentionPolicy": "30d",
            "configuration": {
                "destinationPath": "s3://kms-pg/dc2/",
                "endpointURL": "http://127.0.0.1:1",
                "s3Credentials": {
                    "accessKeyId": {"name": "kms-pg-s3", "key": "ACCESS_KEY_ID"},
                    "secretAccessKey": {"name": "kms-pg-s3", "key": "ACCESS_SECRET_KEY"},
                },
            },
        },
    }
    api.create_namespaced_custom_object("barmancloud.cnpg.io", "v1", kube_namespace, "objectstores", store)
    scheduled = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ScheduledBackup",
        "metadata": {"name": "daily"},
        "spec": {
            "schedule": "0 0 0 * * *",
            "cluster": {"name": "kms-pg-dc2"},
            "method": "plugin",
            "pluginConfiguration": {"name": cnpg_state.BARMAN_PLUGIN},
        },
    }
    api.create_namespaced_custom_object(GROUP, VERSION, kube_namespace, "scheduledbackups", scheduled)
    with pytest.raises(ApiException) as err:  # CEL in the CRD: spec.cluster is immutable
        api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            kube_namespace,
            "scheduledbackups",
            "daily",
            {"spec": {"cluster": {"name": f"other-{uuid.uuid4().hex[:4]}"}}},
        )
    assert err.value.status == 422


def test_helm_is_built(kubeconfig):
    import subprocess  # pylint: disable=import-outside-toplevel

    from tests.lab import kube  # pylint: disable=import-outside-toplevel

    out = subprocess.run(
        [str(kube.ensure_binaries()["helm"]), "version", "--short"],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, KUBECONFIG=kubeconfig, HOME=str(Path(kubeconfig).parent)),
    )
    assert out.stdout.startswith("v3.")
