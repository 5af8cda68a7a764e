"""Integration tests of the operations playbooks (issue 9): status.yml, switchover.yml (there and back) and the
refusals of failover.yml/switchover.yml, on the session's lab after install.yml; plus site_data_info and
haproxy_info against the lab's real S3 and HAProxy.

The failover itself loses dc1 for good, so it runs in Molecule (molecule/failover), not on the shared session lab.
Each playbook's wall time is printed (pytest -s).
"""

from __future__ import annotations

import base64
import datetime
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.ansible_run import recap, run_module, run_playbook
from tests.lab import haproxy as lab_haproxy
from tests.lab import redis as lab_redis
from tests.lab import s3 as lab_s3
from tests.lab.kube_fixtures import kube_clients, kube_sites  # noqa: F401  pylint: disable=unused-import

try:
    from kubernetes import client
except ImportError:  # pragma: no cover
    client = None


def run(args, lab_dir, what):
    proc = run_playbook(*args, lab_dir=lab_dir)
    print(f"\n{what}: {proc.seconds:.1f}s")
    return proc


@pytest.fixture(scope="module")
def installed(lab, lab_dir):
    proc = run(["playbooks/install.yml"], lab_dir, "install.yml")
    assert proc.returncode == 0, proc.stdout[-6000:]
    return lab


def cluster(kube_clients, site):  # noqa: F811  pylint: disable=redefined-outer-name
    return client.CustomObjectsApi(kube_clients[site]).get_namespaced_custom_object(
        "postgresql.cnpg.io", "v1", "kms", "clusters", f"kms-pg-{site}"
    )


def replicas(kube_clients, site):  # noqa: F811  pylint: disable=redefined-outer-name
    return client.AppsV1Api(kube_clients[site]).read_namespaced_deployment("kms", "kms").spec.replicas


# The kinds of a site's objects the roles write (label app.kubernetes.io/part-of=hanzo-kms); a kind the cluster does
# not serve (no PrometheusRule CRD in the lab) is skipped. Backups are left out: history, like a Cluster's bootstrap.
SITE_KINDS = (
    ("v1", "Service"),
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
    ("v1", "ServiceAccount"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("networking.k8s.io/v1", "Ingress"),
    ("batch/v1", "CronJob"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("postgresql.cnpg.io/v1", "ScheduledBackup"),
    ("barmancloud.cnpg.io/v1", "ObjectStore"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
)
# What the API server, the controllers or an operation's bookkeeping write, not the roles: dropped before comparing.
CREDENTIALS_IN_URL = re.compile(r"://([^:/@]+):[^@]*@")
VOLATILE_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "ownerReferences")
VOLATILE_ANNOTATIONS = (
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
    "kubectl.kubernetes.io/restartedAt",
    "checksum/secret",  # an HMAC of the Secret's data, which is compared decoded
    "cnpg.io/fencedInstances",
    "hanzo.kms/demotion-token",
)


def _without_volatile_annotations(metadata):
    annotations = {k: v for k, v in (metadata.get("annotations") or {}).items() if k not in VOLATILE_ANNOTATIONS}
    metadata.pop("annotations", None)
    if annotations:
        metadata["annotations"] = annotations


def normalized(obj):
    """One object as the roles wrote it: no status, server-set metadata, allocated addresses or operation history."""
    obj = json.loads(json.dumps(obj))
    obj.pop("status", None)
    for key in VOLATILE_METADATA:
        obj["metadata"].pop(key, None)
    _without_volatile_annotations(obj["metadata"])
    spec = obj.get("spec") or {}
    if obj["kind"] == "Secret":
        # the KMS Secret is the same in every role (its site-specific values name the site); the others hold each
        # site's own credentials and certificates, which no role change touches: compared by their keys
        data = obj.get("data") or {}
        if obj["metadata"]["name"] == "kms-secrets":
            # the URLs' passwords are each site's own database and Redis credentials
            obj["data"] = {k: CREDENTIALS_IN_URL.sub(r"://\1:@", base64.b64decode(v).decode()) for k, v in data.items()}
        else:
            obj["data"] = sorted(data)
    elif obj["kind"] == "Service":
        for key in ("clusterIP", "clusterIPs"):
            spec.pop(key, None)
    elif obj["kind"] == "Deployment":
        _without_volatile_annotations(spec["template"]["metadata"])
    elif obj["kind"] == "Cluster":
        spec.pop("bootstrap", None)  # how the Cluster was created: the first primary's initdb, a replica's recovery
        (spec.get("replica") or {}).pop("promotionToken", None)
        spec["externalClusters"] = sorted(spec.get("externalClusters") or [], key=lambda e: e["name"])
    return obj


def site_objects(kube_clients, site):  # noqa: F811  pylint: disable=redefined-outer-name
    """{"<Kind>/<name>": normalized object} of the site's namespace."""
    from kubernetes.dynamic import DynamicClient  # pylint: disable=import-outside-toplevel
    from kubernetes.dynamic.exceptions import ResourceNotFoundError  # pylint: disable=import-outside-toplevel

    dynamic = DynamicClient(kube_clients[site])
    found = {}
    for api_version, kind in SITE_KINDS:
        try:
            resource = dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            continue
        items = resource.get(namespace="kms", label_selector="app.kubernetes.io/part-of=hanzo-kms").to_dict()["items"]
        for item in items:
            item.setdefault("kind", kind)
            found[f"{kind}/{item['metadata']['name']}"] = normalized(item)
    for name, hpa in found.items():
        if name.startswith("HorizontalPodAutoscaler/"):
            # the autoscaler's, not the roles': the template leaves spec.replicas out while an HPA scales it
            found[f"Deployment/{hpa['spec']['scaleTargetRef']['name']}"]["spec"].pop("replicas", None)
    return found


def with_sites_swapped(objects_by_site):
    """The objects of a fresh install with dc1 and dc2 in each other's roles: every site name swapped."""
    text = json.dumps(objects_by_site).replace("dc1", "@site@").replace("dc2", "dc1").replace("@site@", "dc2")
    swapped = json.loads(text)
    for objects in swapped.values():
        for obj in objects.values():
            if obj["kind"] == "Cluster":  # listed in site order, which the swap reversed
                obj["spec"]["externalClusters"].sort(key=lambda e: e["name"])
    return swapped


def assert_same_objects(actual, expected):
    for site in ("dc1", "dc2"):
        assert sorted(actual[site]) == sorted(expected[site]), site
        differing = [name for name in actual[site] if actual[site][name] != expected[site][name]]
        assert not differing, {name: (actual[site][name], expected[site][name]) for name in differing[:2]}


def get(state, url):
    try:
        with urllib.request.urlopen(
            url,
            timeout=5,  # noqa: S310 - the lab's own URL
            context=lab_haproxy.frontend_context(state),
        ) as resp:
            return resp.status, resp.headers.get("X-KMS-Site"), json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("X-KMS-Site"), {}


def test_status_shows_both_sites_and_the_lb(installed, lab_dir):
    proc = run(["playbooks/status.yml"], lab_dir, "status.yml")
    assert proc.returncode == 0, proc.stdout[-6000:]
    out = proc.stdout
    assert '"|  | dc1 | dc2 |"' in out
    assert "| CNPG role | primary | replica |" in out
    assert "Active site (from the Clusters): dc1." in out
    assert "| LB lb1 | SERVING (ready, UP) | not serving (maint, MAINT) |" in out
    assert "Load balancers send traffic to: dc1." in out


def test_wrong_confirmation_changes_nothing(installed, lab_dir, kube_clients):  # noqa: F811  pylint: disable=redefined-outer-name
    proc = run(
        [
            "playbooks/switchover.yml",
            "-e",
            "switchover_target_site=dc2",
            "-e",
            "switchover_confirm='SWITCHOVER TO DC2'",
        ],
        lab_dir,
        "switchover.yml, wrong phrase",
    )
    assert proc.returncode != 0
    assert "the confirmation must be exactly 'SWITCHOVER TO dc2'" in proc.stdout
    assert cluster(kube_clients, "dc1")["spec"]["replica"]["primary"] == "kms-pg-dc1"
    assert replicas(kube_clients, "dc1") != 0
    report = json.loads((Path(lab_dir) / "reports" / "switchover-latest.json").read_text())
    assert report["result"] == "failed"
    assert [(s["name"], s["result"]) for s in report["steps"]] == [("preflight", "ok"), ("confirm", "failed")]


def test_unknown_target_site_is_refused(installed, lab_dir):
    proc = run(
        ["playbooks/failover.yml", "-e", "failover_target_site=dc9", "-e", "failover_confirm=x"],
        lab_dir,
        "failover.yml, unknown site",
    )
    assert proc.returncode != 0 and "Set failover_target_site" in proc.stdout


def test_site_data_info_reads_the_barman_layout(installed, lab_dir):
    s3 = lab_s3.client(installed["s3"])
    bucket = installed["s3"]["bucket"]
    prefix = "cnpg/itest-site/kms-pg-itest-site/"
    keys = [prefix + "wals/0000000100000000/000000010000000000000003.gz", prefix + "base/20261129T100000/backup.info"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    redis_entry = installed["sites"]["dc1"]["redis"]
    try:
        proc = run_module(
            "hanzo.kms.site_data_info",
            {
                "site": "itest-site",
                "bucket": bucket,
                "endpoint_url": installed["s3"]["endpoint_url"],
                "access_key": installed["s3"]["access_key"],
                "secret_key": installed["s3"]["secret_key"],
                "addressing_style": "path",
                "ca_bundle": installed["s3"]["ca_file"],
                "host": redis_entry["host"],
                "port": redis_entry["port"],
                "password": redis_entry["password"],
                "tls": True,
                "tls_ca_cert": redis_entry["ca_file"],
            },
            lab_dir=lab_dir,
            timeout=300,
        )
    finally:
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key} for key in keys]})
    assert proc.returncode == 0, proc.tail()
    result = json.dumps(proc.result())
    assert '"name": "000000010000000000000003"' in result
    assert '"backup_id": "20261129T100000"' in result
    assert '"role": "master"' in result


def test_switchover_there_and_back(installed, lab_dir, kube_clients):  # noqa: F811  pylint: disable=redefined-outer-name
    """dc1 -> dc2 -> dc1 with a marker key in dc1's Redis; checks the Clusters, Redis, HAProxy and the reports."""
    frontends = [i["frontend_url"] for i in installed["lb"]["instances"]]
    installed_objects = {site: site_objects(kube_clients, site) for site in ("dc1", "dc2")}
    assert "HorizontalPodAutoscaler/kms" in installed_objects["dc1"]
    assert "HorizontalPodAutoscaler/kms" not in installed_objects["dc2"]
    marker = f"itest:marker:{datetime.datetime.now().timestamp()}"
    lab_redis.client(installed["sites"]["dc1"]["redis"]).set(marker, "from-dc1")
    for target, old in (("dc2", "dc1"), ("dc1", "dc2")):
        proc = run(
            [
                "playbooks/switchover.yml",
                "-e",
                f"switchover_target_site={target}",
                "-e",
                f"switchover_confirm='SWITCHOVER TO {target}'",
            ],
            lab_dir,
            f"switchover.yml to {target}",
        )
        assert proc.returncode == 0, proc.stdout[-8000:]
        new_cluster, old_cluster = cluster(kube_clients, target), cluster(kube_clients, old)
        assert new_cluster["spec"]["replica"]["primary"] == f"kms-pg-{target}"
        assert new_cluster["status"]["phase"] == "Cluster in healthy state"
        assert new_cluster["status"]["lastPromotionToken"] == new_cluster["spec"]["replica"]["promotionToken"]
        assert old_cluster["spec"]["replica"]["primary"] == f"kms-pg-{target}"
        assert replicas(kube_clients, old) == 0 and replicas(kube_clients, target) >= 2
        # the fresh backup of the old site's Redis was restored into the target's
        assert lab_redis.client(installed["sites"][target]["redis"]).get(marker) == b"from-dc1"
        for url in frontends:
            status, served_by, dummy = get(installed, url + "/api/status")
            assert (status, served_by) == (200, target)
        report = json.loads((Path(lab_dir) / "reports" / "switchover-latest.json").read_text())
        assert report["result"] == "succeeded" and report["target"] == target and report["old_site"] == old
        assert [s["name"] for s in report["steps"]] == report["steps_planned"]
        assert all(s["result"] in ("ok", "changed") for s in report["steps"]), report["steps"]
        assert report["data_loss"]["postgres"]["bound_seconds"] == 0
        # Both sites have what a fresh install in these roles has: the install's objects with the sites swapped (the
        # HPA, the Deployments' replicas, ... of the new roles), and the new primary its first base backup.
        switched_objects = {site: site_objects(kube_clients, site) for site in ("dc1", "dc2")}
        assert_same_objects(
            switched_objects, installed_objects if target == "dc1" else with_sites_swapped(installed_objects)
        )
        first_backup = client.CustomObjectsApi(kube_clients[target]).get_namespaced_custom_object(
            "postgresql.cnpg.io", "v1", "kms", "backups", f"kms-pg-{target}-initial"
        )
        assert first_backup["status"]["phase"] == "completed"
        # a re-run completes nothing new and reports every step done or skipped
        if target == "dc2":
            again = run(
                [
                    "playbooks/switchover.yml",
                    "-e",
                    "switchover_target_site=dc2",
                    "-e",
                    "switchover_confirm='SWITCHOVER TO dc2'",
                ],
                lab_dir,
                "switchover.yml to dc2, again",
            )
            assert again.returncode == 0, again.stdout[-8000:]
            assert all(r["changed"] == 0 and r["failed"] == 0 for r in recap(again.stdout).values()), again.stdout[
                -4000:
            ]
            rerun = json.loads((Path(lab_dir) / "reports" / "switchover-latest.json").read_text())
            assert {s["name"]: s["result"] for s in rerun["steps"]}["restore_redis"] == "skipped"
            # install.yml with the unchanged inventory (site_role: dc1 active) follows the Clusters: it changes no
            # site and leaves dc2 the primary with its objects
            install = run(["playbooks/install.yml"], lab_dir, "install.yml after the switchover")
            assert install.returncode == 0, install.stdout[-8000:]
            assert "the inventory's site_role is stale for dc1, dc2" in install.stdout
            changed_sites = {h: r for h, r in recap(install.stdout).items() if h.endswith("-kube") and r["changed"]}
            assert changed_sites == {}, install.stdout[-6000:]
            assert cluster(kube_clients, "dc2")["spec"]["replica"]["primary"] == "kms-pg-dc2"
            assert {site: site_objects(kube_clients, site) for site in ("dc1", "dc2")} == switched_objects
