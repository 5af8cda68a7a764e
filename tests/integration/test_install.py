"""Integration tests of playbooks/install.yml and the site roles (issue 8) on the lab.

Runs ``ansible-playbook -i inventories/lab playbooks/install.yml`` twice against the session's lab (both Kubernetes
clusters, S3, the HAProxy pair): the first run converges, the second must report 0 changed. Then checks the objects on
both clusters (through the real kube-apiservers), that the roles' server-side apply is strict (an unknown field is
rejected by the apiserver), that the global LB routes to dc1, and that every role's argument_specs rejects a wrong type.
Install and re-run times are printed (pytest -s) for the closing note.
"""

from __future__ import annotations

import base64
import re
import urllib.request

import pytest

from tests.ansible_run import recap, run_playbook
from tests.lab import haproxy as lab_haproxy
from tests.lab.kube_fixtures import kube_clients, kube_sites  # noqa: F401  pylint: disable=unused-import

try:
    from kubernetes import client
except ImportError:  # pragma: no cover
    client = None

NAMESPACE = "kms"
SITES = ("dc1", "dc2")


@pytest.fixture(scope="module")
def installed(lab, lab_dir):
    """Run install.yml twice; return both results and their durations."""
    runs = [
        run_playbook("playbooks/install.yml", lab_dir=lab_dir, timeout=900, must_succeed=True) for dummy in range(2)
    ]
    print(f"\ninstall.yml on the lab: first run {runs[0].seconds:.1f}s, second run {runs[1].seconds:.1f}s")
    return {"first": runs[0], "second": runs[1], "lab": lab}


def test_first_run_changes_and_second_run_changes_nothing(installed):
    first = recap(installed["first"].stdout)
    second = recap(installed["second"].stdout)
    assert set(first) >= {"dc1-kube", "dc2-kube", "lb1", "lb2"}, first
    assert all(r["failed"] == 0 and r["unreachable"] == 0 for r in first.values()), first
    # (the first run changes things only on a fresh lab; HANZO_KMS_TEST_LAB_DIR may point at an installed one)
    assert {host: r["changed"] for host, r in second.items() if r["changed"]} == {}, installed["second"].stdout[-6000:]


def custom(api_client):
    return client.CustomObjectsApi(api_client)


def test_cnpg_clusters_form_a_distributed_topology(installed, kube_clients):  # noqa: F811  pylint: disable=redefined-outer-name,unused-argument
    for site in SITES:
        api = custom(kube_clients[site])
        cluster = api.get_namespaced_custom_object("postgresql.cnpg.io", "v1", NAMESPACE, "clusters", f"kms-pg-{site}")
        spec, status = cluster["spec"], cluster["status"]
        assert status["phase"] == "Cluster in healthy state"
        assert spec["instances"] == 3
        # A promotionToken left by an earlier switchover on this lab stays in the spec (CNPG ignores it once used).
        replica = {k: v for k, v in spec["replica"].items() if k != "promotionToken"}
        assert replica == {
            "self": f"kms-pg-{site}",
            "primary": "kms-pg-dc1",
            "source": "kms-pg-dc2" if site == "dc1" else "kms-pg-dc1",
        }
        assert [e["name"] for e in spec["externalClusters"]] == ["kms-pg-dc1", "kms-pg-dc2"]
        assert (
            spec["plugins"]
            == [
                {
                    "name": "barman-cloud.cloudnative-pg.io",
                    "isWALArchiver": True,
                    "enabled": True,
                    "parameters": {"barmanObjectName": f"kms-pg-{site}-store", "serverName": f"kms-pg-{site}"},
                }
            ]
            or spec["plugins"][0]["parameters"]["barmanObjectName"] == f"kms-pg-{site}-store"
        )
        assert spec["affinity"]["topologyKey"] == "topology.kubernetes.io/zone"
        # The replica bootstraps from the primary. dc1 starts with initdb; a Cluster re-created to rejoin after a
        # failover (tests/integration/test_cnpg_standin_pg.py runs earlier on this lab) recovers from dc2 instead.
        other = "kms-pg-dc2" if site == "dc1" else "kms-pg-dc1"
        if site == "dc2":
            assert spec["bootstrap"]["recovery"]["source"] == other
        else:
            assert "initdb" in spec["bootstrap"] or spec["bootstrap"]["recovery"]["source"] == other
        stores = api.list_namespaced_custom_object("barmancloud.cnpg.io", "v1", NAMESPACE, "objectstores")["items"]
        paths = {s["metadata"]["name"]: s["spec"]["configuration"]["destinationPath"] for s in stores}
        assert paths == {
            "kms-pg-dc1-store": "s3://kms-backups/cnpg/dc1/",
            "kms-pg-dc2-store": "s3://kms-backups/cnpg/dc2/",
        }
        scheduled = api.list_namespaced_custom_object("postgresql.cnpg.io", "v1", NAMESPACE, "scheduledbackups")[
            "items"
        ]
        assert len(scheduled) == 1 and len(scheduled[0]["spec"]["schedule"].split()) == 6
        assert scheduled[0]["spec"]["method"] == "plugin"
    initial = custom(kube_clients["dc1"]).get_namespaced_custom_object(
        "postgresql.cnpg.io", "v1", NAMESPACE, "backups", "kms-pg-dc1-initial"
    )
    assert initial["status"]["phase"] == "completed"


def secret_data(api_client, name):
    data = client.CoreV1Api(api_client).read_namespaced_secret(name, NAMESPACE).data
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_kms_secret_identical_and_deployments_by_role(installed, kube_clients):  # noqa: F811  pylint: disable=redefined-outer-name,unused-argument
    secrets = {site: secret_data(kube_clients[site], "kms-secrets") for site in SITES}
    for key in ("ENCRYPTION_KEY", "AUTH_SECRET"):
        assert secrets["dc1"][key] == secrets["dc2"][key]
    assert re.fullmatch(r"[0-9a-f]{32}", secrets["dc1"]["ENCRYPTION_KEY"])
    assert len(base64.b64decode(secrets["dc1"]["AUTH_SECRET"], validate=True)) == 32
    for site in SITES:
        uri = secrets[site]["DB_CONNECTION_URI"]
        assert re.fullmatch(rf"postgresql://kms:[^@]+@kms-pg-{site}-rw\.kms\.svc:5432/kms", uri), uri
        assert re.fullmatch(r"rediss://default:[^@]+@redis-master:6379", secrets[site]["REDIS_URL"])  # TLS (lab)
        assert secrets[site]["SITE_URL"] == installed["lab"]["lb"]["vip_url"]
        apps = client.AppsV1Api(kube_clients[site])
        deployment = apps.read_namespaced_deployment("kms", NAMESPACE)
        available = {c.type: c.status for c in deployment.status.conditions}
        assert available.get("Available") == "True"
        probe = deployment.spec.template.spec.containers[0].readiness_probe.http_get
        assert probe.path == "/api/status"
        autoscaling = client.AutoscalingV2Api(kube_clients[site])
        hpas = [h.metadata.name for h in autoscaling.list_namespaced_horizontal_pod_autoscaler(NAMESPACE).items]
        if site == "dc1":
            assert hpas == ["kms"]
        else:
            assert deployment.spec.replicas == 0 and hpas == []
        assert apps.read_namespaced_stateful_set("redis-master", NAMESPACE).status.ready_replicas == 1
        redis_pw = secret_data(kube_clients[site], "redis-auth")["redis-password"]
        assert secrets[site]["REDIS_URL"] == f"rediss://default:{redis_pw}@redis-master:6379"
        cronjob = client.BatchV1Api(kube_clients[site]).read_namespaced_cron_job("redis-backup", NAMESPACE)
        init = {c.name: c for c in cronjob.spec.job_template.spec.template.spec.init_containers}
        assert list(init)[0] == "take-lock"  # the operation lock before anything else
        assert list(init) == ["take-lock"]
        [backup] = cronjob.spec.job_template.spec.template.spec.containers
        assert backup.command[1:] == ["-m", "ansible_collections.hanzo.kms.plugins.module_utils.redis_backup_job"]
        assert not any(v.persistent_volume_claim for v in cronjob.spec.job_template.spec.template.spec.volumes or [])
        for kind, read in (
            ("Ingress", client.NetworkingV1Api(kube_clients[site]).read_namespaced_ingress),
            ("PodDisruptionBudget", client.PolicyV1Api(kube_clients[site]).read_namespaced_pod_disruption_budget),
        ):
            assert read("kms", NAMESPACE).metadata.name == "kms", kind


def test_objects_pass_strict_server_side_validation(installed, kube_clients):  # noqa: F811  pylint: disable=redefined-outer-name,unused-argument
    """Re-submit every applied object to the real apiserver as a strict server-side-apply dry run; and show the
    apiserver does reject an unknown field through the same path (so the check has teeth)."""
    for site in SITES:
        api_client = kube_clients[site]
        api = custom(api_client)
        for group, plural, kind in (
            ("postgresql.cnpg.io", "clusters", "Cluster"),
            ("barmancloud.cnpg.io", "objectstores", "ObjectStore"),
            ("postgresql.cnpg.io", "scheduledbackups", "ScheduledBackup"),
        ):
            for item in api.list_namespaced_custom_object(group, "v1", NAMESPACE, plural)["items"]:
                body = {
                    "apiVersion": item["apiVersion"],
                    "kind": kind,
                    "metadata": {"name": item["metadata"]["name"], "namespace": NAMESPACE},
                    "spec": item["spec"],
                }
                api_client.call_api(
                    f"/apis/{group}/v1/namespaces/{NAMESPACE}/{plural}/{item['metadata']['name']}",
                    "PATCH",
                    query_params=[
                        ("fieldManager", "hanzo-kms-test"),
                        ("dryRun", "All"),
                        ("fieldValidation", "Strict"),
                        ("force", "true"),
                    ],
                    header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
                    body=body,
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                )
        bad = {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "metadata": {"name": f"kms-pg-{site}", "namespace": NAMESPACE},
            "spec": {"instances": 3, "storage": {"size": "1Gi"}, "instancesTypo": 3},
        }
        with pytest.raises(client.ApiException) as err:
            api_client.call_api(
                f"/apis/postgresql.cnpg.io/v1/namespaces/{NAMESPACE}/clusters/kms-pg-{site}",
                "PATCH",
                query_params=[("fieldManager", "hanzo-kms-test"), ("dryRun", "All"), ("fieldValidation", "Strict")],
                header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
                body=bad,
                auth_settings=["BearerToken"],
                _preload_content=False,
            )
        assert "instancesTypo" in str(err.value.body)


def test_role_apply_rejects_unknown_fields(installed, lab_dir, tmp_path):  # pylint: disable=unused-argument
    """The roles apply server-side: a manifest with a field the schema lacks fails the play (check mode, no change)."""
    play = tmp_path / "bad_cnpg.yml"
    play.write_text(
        "- name: Apply a Cluster with an unknown field\n"
        "  hosts: dc1\n  gather_facts: false\n"
        "  roles:\n    - role: hanzo.kms.cnpg\n      vars:\n"
        "        cnpg_kubeconfig: '{{ site_kubeconfig }}'\n        cnpg_context: '{{ site_kube_context }}'\n"
        "        cnpg_site: dc1\n        cnpg_sites: [dc1, dc2]\n        cnpg_primary_site: dc1\n"
        "        cnpg_resources: {requests: {cpu: 100m}, bogusField: 1}\n",
        encoding="utf-8",
    )
    proc = run_playbook(play, "--check", lab_dir=lab_dir, timeout=900)
    assert proc.returncode != 0
    assert "bogusField" in proc.stdout and re.search(r"field not declared in schema|unknown field", proc.stdout), (
        proc.stdout[-3000:]
    )


def test_lb_routes_to_dc1(installed):
    for instance in installed["lab"]["lb"]["instances"]:
        with urllib.request.urlopen(
            instance["frontend_url"] + "/api/status",
            timeout=5,  # noqa: S310
            context=lab_haproxy.frontend_context(installed["lab"]),
        ) as resp:
            assert resp.status == 200
            # the stand-in's own header and the one the LB adds from the server that answered agree
            assert resp.headers["X-KMS-Site"] == "dc1" and resp.headers["X-KMS-Served-By"] == "dc1"


BAD_TYPES = {
    "object_storage": ("object_storage_manage_bucket", "maybe-not"),
    "cnpg": ("cnpg_instances", "three"),
    "redis": ("redis_backup_enabled", "sometimes"),
    "kms": ("kms_replicas", "two"),
}


@pytest.mark.parametrize("role", sorted(BAD_TYPES))
def test_argument_specs_reject_wrong_types(role, tmp_path):
    """No lab needed: argument validation runs before any task of the role."""
    var, value = BAD_TYPES[role]
    play = tmp_path / "play.yml"
    play.write_text(
        f"- name: Wrong type\n  hosts: localhost\n  gather_facts: false\n"
        f"  roles:\n    - role: hanzo.kms.{role}\n      vars:\n        {var}: {value}\n",
        encoding="utf-8",
    )
    proc = run_playbook(play, "-c", "local", inventory="localhost,")
    assert proc.returncode != 0
    assert "Validating arguments against arg spec 'main'" in proc.stdout
    assert "Validation of arguments failed" in proc.stdout
    assert re.search(rf"argument '{var}' is of type str and we were unable to convert to (int|bool)", proc.stdout), (
        proc.stdout[-3000:]
    )
