"""The real CloudNativePG operator on the lab (issue 15, items 3-5), in the lab's opt-in operator mode.

On its own lab started with ``HANZO_KMS_LAB_CNPG=operator`` (no CNPG stand-in, no admission policies, no host
PostgreSQL/Redis/KMS processes, the pods' images in each site's containerd, the real node untainted and kwok's nodes
tainted, hostPath volumes, cluster DNS):

1. ``roles/cnpg`` with ``cnpg_install_operator`` (the lab inventory sets it in this mode) applies the operator and
   Barman Cloud plugin manifests rendered from the pinned modules and creates the plugin's TLS Secrets; both
   Deployments run on the real node of each site and the operator's webhooks answer the apiserver;
2. ``playbooks/install.yml`` creates dc1's primary Cluster (real PostgreSQL 15 image), which archives WAL to the lab's
   SeaweedFS through the plugin, dc2's replica Cluster, which bootstraps from dc1's object store and replays its WAL,
   Redis (the lab chart) and the KMS stand-in in pods, and the global LB in front of them (node ports); the objects
   pass the apiserver's strict validation, a role applying an unknown field fails, refused switch requests change
   nothing;
3. the Redis backup CronJob really runs and its backup is accepted by ``redis_rdb_restore``; ``backup.yml``,
   ``status.yml`` and ``restore_test.yml`` (a scratch Cluster recovered from the object store, its rows counted, the
   scratch Redis gone afterwards) run; ``backup.yml`` in check mode takes and deletes nothing, with the passive site's
   Kubernetes API and Redis unreachable it backs up the primary and says the other was skipped, with the primary's
   unreachable it backs up the passive site and fails naming the primary; ``restore_test.yml`` refuses a site's
   Redis as its scratch Redis;
4. ``hanzo.kms.cnpg_promote`` itself: its dry runs and refusals change nothing; a run killed after its demotion
   patch and a run that timed out while the old Cluster's operator did not reconcile are finished by a re-run (to dc2
   and back);
5. ``switchover.yml`` to dc2 and back loses no acknowledged write (clients use the VIP) and leaves the new active site
   whole: both sites' objects are the install's with the sites swapped (and the install's after the switch back),
   the new primary has its first base backup, a marker key of dc1's Redis is in the target's; a re-run and
   ``install.yml`` with the unchanged inventory after the switch to dc2 change nothing; ``failover.yml`` after dc1
   and lb1 (the VIP holder) are powered off (``node.lose_site``, ``lbhost.lose_host``) switches lb2 alone (the
   failover's quorum), names lb1 in its report, serves from dc2 through the VIP, and what it lost is within the bound
   its report states; the failback (fence, rejoin, switchover back) follows;
6. last, from whichever site is then primary to the other (issue 14 item 7): a switchover whose promotion the
   target's API refuses (a ValidatingAdmissionPolicy) after the old primary was demoted, then, with the old site lost
   (its kubeconfig points at a closed port), the same command again promotes the target with the demotion token the
   first run recorded, losing no acknowledged write.

``HANZO_KMS_TEST_LAB_DIR`` may name a lab already up in operator mode (it is then reused and left running; the
failover test loses its dc1 and lb1). Times are printed with ``pytest -s`` (docs/lab.md, "The real operator").
"""

# pytest injects the fixtures defined below as arguments of the same name
# pylint: disable=redefined-outer-name
from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from psycopg2 import errors as pg_errors

from ansible_collections.hanzo.kms.plugins.module_utils import backup_layout as bl
from ansible_collections.hanzo.kms.plugins.module_utils import cnpg, cnpg_sql, redis_backup_job, site_status
from ansible_collections.hanzo.kms.plugins.module_utils import kube as kube_client
from tests.ansible_run import ansible_argv, ansible_env, local_args, recap, run_module, run_playbook
from tests.drill import analysis
from tests.drill.load import LoadClient
from tests.lab import haproxy as lab_haproxy
from tests.lab import images, kube, kube_build, lbhost, node, site_db, stack
from tests.lab import redis as lab_redis
from tests.lab import s3 as lab_s3
from tests.lab.core import REPO_ROOT, Lab, free_port, wait_until

SITES = ("dc1", "dc2")
NAMESPACE = "kms"
OPERATOR_NAMESPACE = kube.OPERATOR_NAMESPACE
CNPG_PLAYBOOK = "tests/integration/playbooks/cnpg_sites.yml"
PG_IMAGE = images.POSTGRES_IMAGE
POD_IMAGES = (images.REDIS_IMAGE, images.KMS_STANDIN_IMAGE, images.BACKUP_TOOLS_IMAGE)
BIN = Path(sys.executable).parent
FIGURES = {}


@pytest.fixture(scope="module")
def operator_lab():
    """A lab in operator mode: HANZO_KMS_TEST_LAB_DIR when it is one, else a private one, removed afterwards."""
    reuse = os.environ.get("HANZO_KMS_TEST_LAB_DIR")
    lab = Lab(reuse) if reuse else None
    if lab is None or (lab.load() or {}).get("cnpg", {}).get("mode") != "operator":
        lab = Lab(tempfile.mkdtemp(prefix="hanzo-kms-lab-operator-"))
        reuse = None
    saved = os.environ.get("HANZO_KMS_LAB_CNPG")
    os.environ["HANZO_KMS_LAB_CNPG"] = "operator"
    try:
        started = time.monotonic()
        stack.up(lab, log=lambda _msg: None)
        FIGURES["lab up (s)"] = round(time.monotonic() - started, 1)
    finally:
        if saved is None:
            os.environ.pop("HANZO_KMS_LAB_CNPG", None)
        else:
            os.environ["HANZO_KMS_LAB_CNPG"] = saved
    yield lab
    print("\nreal CNPG operator on the lab: " + ", ".join(f"{k} {v}" for k, v in FIGURES.items()))
    if not reuse:
        stack.down(lab, log=lambda _msg: None)
        assert node.leftovers(lab.dir) == []


def playbook(lab, path, *args, timeout=900):
    """ansible-playbook ``path`` on the lab inventory; (run, seconds). Must succeed."""
    run = run_playbook(path, *args, lab_dir=lab.dir, timeout=timeout, must_succeed=True)
    return run, round(run.seconds, 1)


def changed(output):
    """Changed tasks per host from a play recap (ansible-playbook's, or Molecule's with its "│ " margin)."""
    return {host: counts["changed"] for host, counts in recap(re.sub(r"(?m)^[ \t]*(?:│ ?)?", "", output)).items()}


def kubectl(lab, site, *args, timeout=60):
    binary = kube_build.cache_root() / "bin" / "kubectl"
    return subprocess.run(
        [str(binary), "--kubeconfig", lab.state["kubeconfig"], "--context", site, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def get(lab, site, *args):
    proc = kubectl(lab, site, "get", "-o", "json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def psql(lab, site, sql, database="postgres"):
    pod = f"kms-pg-{site}-1"
    proc = kubectl(lab, site, "-n", NAMESPACE, "exec", pod, "-c", "postgres", "--", "psql", "-d", database, "-Atc", sql)
    assert proc.returncode == 0, f"psql on {site}: {proc.stderr}"
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def operator_installed(operator_lab):
    """roles/cnpg installs only the operator and the plugin (cnpg_lab_stop_after_operator): the time it takes."""
    _proc, seconds = playbook(operator_lab, CNPG_PLAYBOOK, "-e", "cnpg_lab_stop_after_operator=true")
    FIGURES["operator and plugin Available after lab up (s)"] = seconds
    return operator_lab


@pytest.fixture(scope="module")
def clusters(operator_installed):
    """install.yml through Molecule's default scenario on this lab, which make test runs only here: syntax, prepare
    (the lab is up already), converge (install.yml), idempotence (a second run changing nothing on the real
    operator), verify. One operator lab and one install serve both."""
    lab = operator_installed
    before = {
        s: get(lab, s, "-n", OPERATOR_NAMESPACE, "secrets", "barman-cloud-server-tls", "barman-cloud-client-tls")
        for s in SITES
    }
    converge, seconds = molecule_default(lab)  # the inventory waits 300 s for the Clusters in this mode
    FIGURES[
        "molecule default: install.yml (both Clusters healthy, initial backup, Redis, KMS, LB), its idempotence, "
        "verify (s)"
    ] = seconds
    return {"lab": lab, "first": converge, "secrets_before": before, "objects": all_site_objects(lab)}


def molecule_default(lab):
    """``molecule test -s default`` on ``lab``; (the converge action's output, seconds). Must succeed."""
    env = dict(
        os.environ,
        HANZO_KMS_LAB_DIR=str(lab.dir),
        HANZO_KMS_LAB_CNPG="operator",
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
    )
    started = time.monotonic()
    # Molecule skips prepare when its state says a scenario was prepared before (on another lab): start clean.
    subprocess.run(
        [str(BIN / "molecule"), "reset", "-s", "default"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        check=True,
        timeout=120,
    )
    proc = subprocess.run(
        [str(BIN / "molecule"), "test", "-s", "default"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=1800,
        check=False,
    )
    output = molecule_text(proc.stdout)
    assert proc.returncode == 0, f"molecule test -s default failed:\n{output[-10000:]}"
    for action in ("syntax", "prepare", "converge", "idempotence", "verify"):
        assert f"{action}: Executed: Successful" in output, f"Molecule's {action} did not succeed:\n{output[-4000:]}"
    return molecule_action(output, "converge", "idempotence"), round(time.monotonic() - started, 1)


def molecule_text(stdout):
    """Molecule's output without colour codes (it writes them to a pipe too)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", stdout)


def molecule_action(output, action, following):
    """The output of one Molecule action: from its "Executing" line to the next action's. Molecule words it
    "default ➜ converge: Executing", or "[default > converge] Executing" when NO_COLOR is set."""
    start = re.search(rf"\b{action}\]?:? Executing", output)
    end = re.search(rf"\b{following}\]?:? Executing", output)
    assert start and end, f"no {action} action in Molecule's output:\n{output[-4000:]}"
    return output[start.start() : end.start()]


def test_lab_runs_cnpg_as_the_operator(operator_lab):
    state = operator_lab.state
    assert state["cnpg"] == {"mode": "operator"}
    for site in SITES:
        entry = state["sites"][site]["kube"]
        assert f"{site}-cnpg-standin" not in entry["processes"]
        assert entry["cnpg"] == "operator"
        # the operator's images were imported while the site started (digests skipped when present)
        pinned = kube_build._read_manifest(kube_build.cache_root())["images"]  # pylint: disable=protected-access
        assert set(entry["operator_images"]["all"]) == {PG_IMAGE, *pinned.values(), *POD_IMAGES}
        nodes = {n["metadata"]["name"]: n for n in get(operator_lab, site, "nodes")["items"]}
        assert not nodes[f"{site}-real"]["spec"].get("taints"), "operator mode: the real node takes any pod"
        assert all(n["spec"].get("taints") == [kube.KWOK_TAINT] for name, n in nodes.items() if name != f"{site}-real")
        assert get(operator_lab, site, "validatingadmissionpolicies")["items"] == []


def test_operator_and_plugin_run_on_the_real_node(operator_installed):
    lab = operator_installed
    images = kube_build._read_manifest(kube_build.cache_root())["images"]  # pylint: disable=protected-access
    for site in SITES:
        pods = get(lab, site, "-n", OPERATOR_NAMESPACE, "pods")["items"]
        # CNPG labels its pods app.kubernetes.io/name=cloudnative-pg, the plugin app=barman-cloud
        running = {
            p["metadata"]["labels"].get("app.kubernetes.io/name") or p["metadata"]["labels"].get("app"): p
            for p in pods
            if p["status"].get("phase") == "Running"
        }
        assert set(running) >= {"cloudnative-pg", "barman-cloud"}, [p["metadata"]["name"] for p in pods]
        for name, image in (("cloudnative-pg", images["operator"]), ("barman-cloud", images["plugin"])):
            pod = running[name]
            assert pod["spec"]["nodeName"] == f"{site}-real"
            assert [c["image"] for c in pod["spec"]["containers"]] == [image]
            assert all(c["ready"] for c in pod["status"]["containerStatuses"])


def test_plugin_tls_secrets_are_self_signed_pairs(operator_installed):
    from cryptography import x509  # pylint: disable=import-outside-toplevel

    for site in SITES:
        for name, usage in (("barman-cloud-server-tls", "serverAuth"), ("barman-cloud-client-tls", "clientAuth")):
            secret = get(operator_installed, site, "-n", OPERATOR_NAMESPACE, "secret", name)
            assert secret["type"] == "kubernetes.io/tls"
            assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "hanzo.kms"
            cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
            assert cert.issuer == cert.subject  # the operator's Go TLS client needs it (docs/lab.md)
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            assert [u._name for u in eku] == [usage]  # pylint: disable=protected-access
            if usage == "serverAuth":
                sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                assert "barman-cloud.cnpg-system.svc" in sans.get_values_for_type(x509.DNSName)


def test_webhooks_answer_the_apiserver(operator_installed, tmp_path):
    """A valid Cluster passes the real mutating + validating webhooks (dry run: defaulted by the operator), an invalid
    one is rejected by the validating webhook (no admission policy exists in this mode)."""
    lab = operator_installed
    valid = {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "webhook-probe", "namespace": "default"},
        "spec": {"instances": 1, "storage": {"size": "1Gi"}},
    }
    invalid = json.loads(json.dumps(valid))
    invalid["spec"].update(
        {
            "externalClusters": [
                {"name": "a", "connectionParameters": {"host": "a"}},
                {"name": "b", "connectionParameters": {"host": "b"}},
            ],
            "replica": {"primary": "a", "source": "a", "enabled": True},
            "bootstrap": {"pg_basebackup": {"source": "a"}},
        }
    )
    for site in SITES:
        for name, doc in (("valid", valid), ("invalid", invalid)):
            (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
        ok = kubectl(lab, site, "create", "--dry-run=server", "-o", "json", "-f", str(tmp_path / "valid.yaml"))
        assert ok.returncode == 0, ok.stderr
        # the mutating webhook defaults the image (the operator's default, not in the request)
        assert json.loads(ok.stdout)["spec"]["imageName"].startswith("ghcr.io/cloudnative-pg/postgresql:")
        bad = kubectl(lab, site, "create", "--dry-run=server", "-f", str(tmp_path / "invalid.yaml"))
        assert bad.returncode != 0
        assert "replica mode enabled is not compatible with the primary field" in bad.stderr
        # the webhook's field path (CNPG names it replicaCluster), not the JSON path an admission policy reports
        assert "spec.replicaCluster" in bad.stderr and "ValidatingAdmissionPolicy" not in bad.stderr


def test_cluster_dns_resolves_service_names(clusters):
    lab = clusters["lab"]
    for site in SITES:
        proc = kubectl(
            lab,
            site,
            "-n",
            NAMESPACE,
            "exec",
            f"kms-pg-{site}-1",
            "-c",
            "postgres",
            "--",
            "getent",
            "hosts",
            "barman-cloud.cnpg-system.svc",
        )
        service = get(lab, site, "-n", OPERATOR_NAMESPACE, "service", "barman-cloud")
        assert proc.returncode == 0 and proc.stdout.split()[0] == service["spec"]["clusterIP"], proc


def test_install_converges_and_keeps_the_plugin_secrets(clusters):
    assert {host for host, count in changed(clusters["first"]).items() if count} == {
        "dc1-kube",
        "dc2-kube",
        "lb1",
        "lb2",
    }
    # the autoscaler only in the active site (the objects the switchovers below compare)
    assert "HorizontalPodAutoscaler/kms" in clusters["objects"]["dc1"]
    assert "HorizontalPodAutoscaler/kms" not in clusters["objects"]["dc2"]
    lab = clusters["lab"]
    for site in SITES:  # the plugin's Secrets were created once and kept
        after = get(
            lab, site, "-n", OPERATOR_NAMESPACE, "secrets", "barman-cloud-server-tls", "barman-cloud-client-tls"
        )
        assert [s["metadata"]["resourceVersion"] for s in after["items"]] == [
            s["metadata"]["resourceVersion"] for s in clusters["secrets_before"][site]["items"]
        ]


def test_install_lays_out_the_distributed_topology(clusters):
    """Both Clusters name dc1 the primary and each other as source, archive to their own ObjectStore under their own
    serverName, spread their instances over zones and have one ScheduledBackup; dc1's first base backup completed."""
    lab = clusters["lab"]
    for site in SITES:
        other = "kms-pg-dc2" if site == "dc1" else "kms-pg-dc1"
        spec = get(lab, site, "-n", NAMESPACE, "cluster", f"kms-pg-{site}")["spec"]
        assert spec["replica"] == {"self": f"kms-pg-{site}", "primary": "kms-pg-dc1", "source": other}
        assert [e["name"] for e in spec["externalClusters"]] == ["kms-pg-dc1", "kms-pg-dc2"]
        [plugin] = spec["plugins"]
        assert plugin["name"] == "barman-cloud.cloudnative-pg.io" and plugin["isWALArchiver"] is True
        assert plugin["parameters"] == {"barmanObjectName": f"kms-pg-{site}-store", "serverName": f"kms-pg-{site}"}
        assert spec["affinity"]["topologyKey"] == "topology.kubernetes.io/zone"
        assert ("initdb" in spec["bootstrap"]) if site == "dc1" else spec["bootstrap"]["recovery"]["source"] == other
        stores = get(lab, site, "-n", NAMESPACE, "objectstores")["items"]
        assert {s["metadata"]["name"]: s["spec"]["configuration"]["destinationPath"] for s in stores} == {
            "kms-pg-dc1-store": "s3://kms-backups/cnpg/dc1/",
            "kms-pg-dc2-store": "s3://kms-backups/cnpg/dc2/",
        }
        [scheduled] = get(lab, site, "-n", NAMESPACE, "scheduledbackups")["items"]
        assert len(scheduled["spec"]["schedule"].split()) == 6 and scheduled["spec"]["method"] == "plugin"
    initial = get(lab, "dc1", "-n", NAMESPACE, "backup", "kms-pg-dc1-initial")
    assert initial["status"]["phase"] == "completed"


def secret_data(lab, site, name):
    return {k: base64.b64decode(v).decode() for k, v in get(lab, site, "-n", NAMESPACE, "secret", name)["data"].items()}


def test_install_gives_both_sites_the_kms_and_its_secrets_by_role(clusters):
    """The KMS Secret's keys are the same in both sites, its URIs name the site's own services (Redis over TLS); the
    active site has the autoscaler, the passive one 0 replicas; Redis, the backup CronJob (the operation lock first,
    the collection's backup code, no volume claim), the KMS Service and the PodDisruptionBudget in both."""
    lab = clusters["lab"]
    secrets = {site: secret_data(lab, site, "kms-secrets") for site in SITES}
    for key in ("ENCRYPTION_KEY", "AUTH_SECRET"):
        assert secrets["dc1"][key] == secrets["dc2"][key]
    assert re.fullmatch(r"[0-9a-f]{32}", secrets["dc1"]["ENCRYPTION_KEY"])
    assert len(base64.b64decode(secrets["dc1"]["AUTH_SECRET"], validate=True)) == 32
    for site in SITES:
        uri = secrets[site]["DB_CONNECTION_URI"]
        assert re.fullmatch(rf"postgresql://kms:[^@]+@kms-pg-{site}-rw\.kms\.svc:5432/kms", uri), uri
        assert secrets[site]["REDIS_URL"] == f"rediss://default:{redis_password(lab, site)}@redis-master:6379"
        assert secrets[site]["SITE_URL"] == lab.state["lb"]["vip_url"]
        deployment = get(lab, site, "-n", NAMESPACE, "deployment", "kms")
        assert {c["type"]: c["status"] for c in deployment["status"]["conditions"]}["Available"] == "True"
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/api/status"
        hpas = [h["metadata"]["name"] for h in get(lab, site, "-n", NAMESPACE, "hpa")["items"]]
        assert hpas == (["kms"] if site == "dc1" else []) and (site == "dc1" or deployment["spec"]["replicas"] == 0)
        assert get(lab, site, "-n", NAMESPACE, "statefulset", "redis-master")["status"]["readyReplicas"] == 1
        job = get(lab, site, "-n", NAMESPACE, "cronjob", "redis-backup")["spec"]["jobTemplate"]["spec"]["template"]
        assert [c["name"] for c in job["spec"]["initContainers"]] == ["take-lock"]  # the operation lock first
        [backup] = job["spec"]["containers"]
        assert backup["command"][1:] == ["-m", "ansible_collections.hanzo.kms.plugins.module_utils.redis_backup_job"]
        assert not any("persistentVolumeClaim" in v for v in job["spec"].get("volumes", []))
        # no Ingress controller builds here: the lab's inventory exposes the KMS as a NodePort Service behind the
        # site's ingress stand-in (kms_ingress_enabled false); test_render_example.py submits the rendered Ingress
        assert get(lab, site, "-n", NAMESPACE, "service", "kms")["spec"]["type"] == "NodePort"
        assert get(lab, site, "-n", NAMESPACE, "pdb", "kms")["spec"]["maxUnavailable"] == 1


def test_installed_objects_pass_strict_server_side_validation(clusters, tmp_path):
    """Every Cluster, ObjectStore and ScheduledBackup re-submitted to the apiserver as a strict server-side-apply dry
    run (the operator's webhooks too); the same path rejects an unknown field, so the check has teeth."""
    lab = clusters["lab"]
    for site in SITES:
        for kind in ("clusters.postgresql.cnpg.io", "objectstores.barmancloud.cnpg.io", "scheduledbackups"):
            for item in get(lab, site, "-n", NAMESPACE, kind)["items"]:
                body = {
                    "apiVersion": item["apiVersion"],
                    "kind": item["kind"],
                    "metadata": {"name": item["metadata"]["name"], "namespace": NAMESPACE},
                    "spec": item["spec"],
                }
                proc = server_dry_run(lab, site, body, tmp_path)
                assert proc.returncode == 0, f"{item['kind']}/{item['metadata']['name']} on {site}: {proc.stderr}"
        bad = {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "metadata": {"name": f"kms-pg-{site}", "namespace": NAMESPACE},
            "spec": {"instances": 1, "storage": {"size": "1Gi"}, "instancesTypo": 3},
        }
        proc = server_dry_run(lab, site, bad, tmp_path)
        assert proc.returncode != 0 and "instancesTypo" in proc.stderr, proc


def server_dry_run(lab, site, body, tmp_path):
    path = tmp_path / "object.json"
    path.write_text(json.dumps(body), encoding="utf-8")
    return kubectl(lab, site, *kube.STRICT_DRY_RUN_APPLY, "--field-manager=hanzo-kms-test", "-f", str(path))


def test_a_role_applying_an_unknown_field_fails_and_changes_nothing(clusters, tmp_path):
    """The roles apply server-side: a manifest with a field the schema lacks fails the play (check mode)."""
    lab = clusters["lab"]
    before = get(lab, "dc1", "-n", NAMESPACE, "cluster", "kms-pg-dc1")["metadata"]["generation"]
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
    proc = run_playbook(play, "--check", lab_dir=lab.dir, timeout=900)
    assert proc.returncode != 0
    assert "bogusField" in proc.stdout and re.search(r"field not declared in schema|unknown field", proc.stdout), (
        proc.stdout[-3000:]
    )
    assert get(lab, "dc1", "-n", NAMESPACE, "cluster", "kms-pg-dc1")["metadata"]["generation"] == before


def test_refused_switch_requests_change_nothing(clusters):
    """switchover.yml with a confirmation that is not exactly 'SWITCHOVER TO dc2' stops after its preflight and
    reports it; failover.yml to a site the inventory does not have is refused."""
    lab = clusters["lab"]
    proc = run_playbook(
        "playbooks/switchover.yml",
        "-e",
        "switchover_target_site=dc2",
        "-e",
        "switchover_confirm='SWITCHOVER TO DC2'",
        lab_dir=lab.dir,
    )
    assert proc.returncode != 0
    assert "the confirmation must be exactly 'SWITCHOVER TO dc2'" in proc.stdout, proc.stdout[-3000:]
    assert cluster(lab, "dc1")["spec"]["replica"]["primary"] == "kms-pg-dc1"
    assert get(lab, "dc1", "-n", NAMESPACE, "deployment", "kms")["spec"]["replicas"] != 0
    refused = report(lab, "switchover")
    assert refused["result"] == "failed"
    assert [(s["name"], s["result"]) for s in refused["steps"]] == [("preflight", "ok"), ("confirm", "failed")]
    proc = run_playbook(
        "playbooks/failover.yml", "-e", "failover_target_site=dc9", "-e", "failover_confirm=x", lab_dir=lab.dir
    )
    assert proc.returncode != 0 and "Set failover_target_site" in proc.stdout, proc.stdout[-3000:]


def test_site_data_info_reads_what_the_plugin_archived_and_the_redis_pod(clusters):
    """site_data_info lists dc1's WAL archive and base backups as the Barman Cloud plugin wrote them, and probes dc1's
    Redis pod over TLS."""
    lab = clusters["lab"]
    s3, redis = lab.state["s3"], lab.state["sites"]["dc1"]["redis"]
    args = {
        "site": "dc1",
        "bucket": s3["bucket"],
        "endpoint_url": s3["endpoint_url"],
        "access_key": s3["access_key"],
        "secret_key": s3["secret_key"],
        "addressing_style": "path",
        "ca_bundle": s3["ca_file"],
        "host": redis["host"],
        "port": redis["port"],
        "password": redis_password(lab, "dc1"),
        "tls": True,
        "tls_ca_cert": redis["ca_file"],
    }
    result = run_module("hanzo.kms.site_data_info", args, lab_dir=lab.dir, timeout=300, must_succeed=True).result()
    archive = result["cnpg"]
    assert archive["servers"] == ["kms-pg-dc1"] and archive["wal_count"] > 0, archive
    assert re.fullmatch(r"[0-9A-F]{24}", archive["newest_wal"]["name"]), archive["newest_wal"]
    assert archive["newest_base_backup"]["server"] == "kms-pg-dc1", archive["newest_base_backup"]
    assert result["redis"]["server"]["role"] == "master", result["redis"]


def test_dc1_primary_is_healthy_on_the_real_node_and_archives_wal(clusters):
    lab = clusters["lab"]
    cluster = get(lab, "dc1", "-n", NAMESPACE, "cluster", "kms-pg-dc1")
    assert cluster["status"]["phase"] == "Cluster in healthy state"
    assert cluster["spec"]["imageName"] == PG_IMAGE and cluster["spec"]["instances"] == 1
    conditions = {c["type"]: c["status"] for c in cluster["status"]["conditions"]}
    assert conditions["Ready"] == "True" and conditions["ContinuousArchiving"] == "True", conditions
    pod = get(lab, "dc1", "-n", NAMESPACE, "pod", "kms-pg-dc1-1")
    assert pod["spec"]["nodeName"] == "dc1-real"
    assert psql(lab, "dc1", "select pg_is_in_recovery()") == "f"
    assert psql(lab, "dc1", "show server_version_num").startswith("15")
    assert any(key.startswith("cnpg/dc1/kms-pg-dc1/base/") for key in bucket_keys(lab, "cnpg/dc1/"))
    assert any("/wals/" in key for key in bucket_keys(lab, "cnpg/dc1/"))
    # over HTTPS, verified with the lab CA the object_storage role stored for the plugin's sidecar
    store = get(lab, "dc1", "-n", NAMESPACE, "objectstore", "kms-pg-dc1-store")["spec"]["configuration"]
    assert store["endpointURL"].startswith("https://")
    assert store["endpointCA"] == {"name": "kms-object-store-ca", "key": "ca.crt"}
    ca_secret = get(lab, "dc1", "-n", NAMESPACE, "secret", "kms-object-store-ca")
    assert base64.b64decode(ca_secret["data"]["ca.crt"]) == Path(lab.state["pki"]["ca_file"]).read_bytes()


def bucket_keys(lab, prefix):
    s3 = lab.state["s3"]
    pages = lab_s3.client(s3).get_paginator("list_objects_v2").paginate(Bucket=s3["bucket"], Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_dc2_replica_bootstraps_from_the_object_store_and_replays_wal(clusters):
    lab = clusters["lab"]
    cluster = get(lab, "dc2", "-n", NAMESPACE, "cluster", "kms-pg-dc2")
    assert cluster["status"]["phase"] == "Cluster in healthy state"
    assert cluster["spec"]["bootstrap"]["recovery"]["source"] == "kms-pg-dc1"
    assert cluster["spec"]["replica"] == {"self": "kms-pg-dc2", "primary": "kms-pg-dc1", "source": "kms-pg-dc1"}
    assert psql(lab, "dc2", "select pg_is_in_recovery()") == "t"
    # a write on dc1 reaches dc2 through the bucket only: no connectionParameters, the sites cannot reach each other
    marker = f"wal-{time.time_ns()}"
    before = psql(lab, "dc2", "select pg_last_wal_replay_lsn()")
    psql(lab, "dc1", "create table if not exists lab_wal_probe (marker text primary key)")
    psql(lab, "dc1", f"insert into lab_wal_probe values ('{marker}')")
    segment = psql(lab, "dc1", "select pg_walfile_name(pg_current_wal_lsn())")
    started = time.monotonic()
    psql(lab, "dc1", "select pg_switch_wal()")  # its own transaction: the commit above is in the switched segment
    wait_until(
        lambda: any(key.endswith(f"/{segment}.gz") for key in bucket_keys(lab, "cnpg/dc1/kms-pg-dc1/wals/")),
        60,
        f"WAL segment {segment} in the bucket",
    )
    FIGURES["switched WAL segment in the bucket (s)"] = round(time.monotonic() - started, 1)

    def replayed():
        proc = kubectl(
            lab,
            "dc2",
            "-n",
            NAMESPACE,
            "exec",
            "kms-pg-dc2-1",
            "-c",
            "postgres",
            "--",
            "psql",
            "-Atc",
            f"select count(*) from lab_wal_probe where marker = '{marker}'",
        )
        return proc.returncode == 0 and proc.stdout.strip() == "1"

    wait_until(replayed, 120, f"dc2 to replay the row written on dc1 ({marker})", interval=1)
    FIGURES["dc1 write visible on dc2 through the bucket (s)"] = round(time.monotonic() - started, 1)
    after = psql(lab, "dc2", "select pg_last_wal_replay_lsn()")
    assert site_db.lsn_bytes(after) > site_db.lsn_bytes(before)


# -- install.yml's pods, the backup CronJob, switchover and failover on the real operator ---------------------------
def test_sql_through_a_port_forward_verifies_tls_and_names_what_failed(clusters):
    """cnpg_query_info reads dc2's designated primary from the control node (port-forward, TLS verified against
    kms-pg-dc2-ca, the application owner's login) in check mode; a wrong password, a CA that did not sign the server
    certificate, a pod without PostgreSQL and a missing Cluster each fail naming the problem; the session refuses
    writes."""
    lab = clusters["lab"]
    auth = {"kubeconfig": lab.state["kubeconfig"], "namespace": NAMESPACE}
    args = dict(auth, context="dc2", cluster_name="kms-pg-dc2", database="kms", read=["replication", "row_counts"])
    run = run_module("hanzo.kms.cnpg_query_info", args, lab_dir=lab.dir, check_mode=True, must_succeed=True)
    result = run.result()
    FIGURES["cnpg_query_info on dc2 (s)"] = round(run.seconds, 1)
    assert result["changed"] is False and result["pod"] == "kms-pg-dc2-1" and result["user"] == "kms"
    assert result["tls_name"] == "kms-pg-dc2-rw.kms.svc"
    assert result["replication"]["in_recovery"] is True and result["replication"]["replay_lsn"]
    assert "public.kms_secrets" in result["tables"]
    missing = run_module(
        "hanzo.kms.cnpg_query_info", dict(args, cluster_name="kms-pg-nope"), lab_dir=lab.dir, must_succeed=False
    ).result()
    assert missing["failed"] and missing["msg"] == "cnpg_query_info: Cluster kms/kms-pg-nope not found", missing

    readers = {site: site_status.KubeReader(kube_client.api_client({}, dict(auth, context=site))) for site in SITES}
    dc1 = readers["dc1"].cluster(NAMESPACE, "kms-pg-dc1")
    dc2_ca = cnpg_sql.secret_value(readers["dc2"].secret_data(NAMESPACE, "kms-pg-dc2-ca"), "ca.crt", "kms-pg-dc2-ca")
    where = "at kms/kms-pg-dc1-1 (kms-pg-dc1-rw.kms.svc) as kms: "
    for override, error in (
        ({"password": "not-the-password"}, f"authentication failed {where}"),
        ({"ca_cert": dc2_ca}, f"TLS verification failed {where}"),
    ):
        with pytest.raises(cnpg_sql.SqlError) as failed:
            with cnpg_sql.Instance(readers["dc1"].api, readers["dc1"], dc1, NAMESPACE, **override):
                pass
        assert str(failed.value).startswith(error), str(failed.value)
        assert "not-the-password" not in str(failed.value)
    # a pod where nothing listens on 5432 (Redis's): the kubelet's refusal, not libpq's "server closed the connection"
    no_postgres = dict(dc1, status=dict(dc1["status"], currentPrimary="redis-master-0"))
    with pytest.raises(cnpg_sql.SqlError) as failed:
        with cnpg_sql.Instance(readers["dc1"].api, readers["dc1"], no_postgres, NAMESPACE):
            pass
    assert re.match(r"port-forward to kms/redis-master-0:5432: .*connection refused", str(failed.value)), failed.value
    with cnpg_sql.Instance(readers["dc1"].api, readers["dc1"], dc1, NAMESPACE, database="kms") as conn:
        assert cnpg_sql.replication_state(conn)["in_recovery"] is False
        with pytest.raises(pg_errors.ReadOnlySqlTransaction):
            cnpg_sql.fetch(conn, "CREATE TABLE written_by_a_status_read (n int)")


def lb_client(lab, prefix, rate=5.0):
    return LoadClient(
        lab.state["lb"]["vip_url"],
        rate=rate,
        prefix=prefix,  # clients use the VIP, over TLS
        ca_file=lab.state["pki"]["ca_file"],
    )


def lost_writes(lab, client, site):
    """The acknowledged writes [(name, want, got)] that ``site``'s database does not hold with their value."""
    return analysis.lost_writes(client.acked, site_db.secret_values(lab.state, site, f"{client.prefix}-"))


def report(lab, operation):
    return json.loads((lab.dir / "reports" / f"{operation}-latest.json").read_text(encoding="utf-8"))


def test_redis_and_the_kms_stand_in_run_in_pods_behind_the_lb(clusters):
    lab = clusters["lab"]
    for site, replicas in (("dc1", 2), ("dc2", 0)):
        deployment = get(lab, site, "-n", NAMESPACE, "deployment", "kms")
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == POD_IMAGES[1]
        assert deployment["status"].get("readyReplicas", 0) == replicas
        redis_pod = get(lab, site, "-n", NAMESPACE, "pod", "redis-master-0")
        assert redis_pod["spec"]["nodeName"] == f"{site}-real" and redis_pod["status"]["phase"] == "Running"
        assert get(lab, site, "-n", NAMESPACE, "pvc", "redis-data-redis-master-0")["status"]["phase"] == "Bound"
    client = lb_client(lab, "install")
    client.write_once()
    assert client.records[-1]["ok"] and client.records[-1]["site"] == "dc1", client.records[-1]
    for instance in lab.state["lb"]["instances"]:  # each LB host's own frontend, not only the VIP's holder
        with urllib.request.urlopen(  # noqa: S310
            instance["frontend_url"] + "/api/status", timeout=5, context=lab_haproxy.frontend_context(lab.state)
        ) as resp:
            # the stand-in's own header and the one the LB adds from the server that answered agree
            assert resp.status == 200
            assert (resp.headers["X-KMS-Site"], resp.headers["X-KMS-Served-By"]) == ("dc1", "dc1"), instance


def job_result(logs):
    """The backup container's result: the JSON line redis_backup_job prints (run_backup's result)."""
    for line in logs.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON result line in the Job's log:\n{logs}")


def test_the_redis_backup_cronjob_runs_and_redis_rdb_restore_accepts_its_backup(clusters, tmp_path):
    """The CronJob's Job runs the collection's backup code (its log's JSON line is run_backup's result), writes the
    manifest backup_layout builds with every field hanzo.kms.redis_rdb_backup fills, and redis_rdb_restore restores
    its backup."""
    lab = clusters["lab"]
    job = f"backup-test-{time.time_ns() % 100000}"
    assert kubectl(lab, "dc1", "-n", NAMESPACE, "create", "job", "--from=cronjob/redis-backup", job).returncode == 0
    started = time.monotonic()
    done = kubectl(
        lab, "dc1", "-n", NAMESPACE, "wait", "--for=condition=complete", f"job/{job}", "--timeout=240s", timeout=260
    )
    assert done.returncode == 0, kubectl(lab, "dc1", "-n", NAMESPACE, "logs", f"job/{job}", "--all-containers").stdout
    FIGURES["Redis backup Job from the CronJob (s)"] = round(time.monotonic() - started, 1)
    container = get(lab, "dc1", "-n", NAMESPACE, "cronjob", "redis-backup")["spec"]["jobTemplate"]["spec"]["template"][
        "spec"
    ]["containers"][0]
    assert (
        container["command"][1:] == ["-m", redis_backup_job.__name__]
        and container["image"] == images.BACKUP_TOOLS_IMAGE
    )
    assert {"name": "AWS_CA_BUNDLE", "value": "/etc/hanzo-kms/s3-ca/ca.crt"} in container["env"]  # HTTPS-only store
    result = job_result(kubectl(lab, "dc1", "-n", NAMESPACE, "logs", f"job/{job}", "-c", "backup").stdout)
    key, manifest = result["key"], result["manifest"]
    assert bl.parse_key(key).site == "dc1" and result["manifest_key"] == bl.manifest_key_for(key)
    assert result["manifest_key"] in bucket_keys(lab, "redis/dc1/")
    s3 = lab.state["s3"]
    store = lab_s3.client(s3)
    stored = store.get_object(Bucket=s3["bucket"], Key=result["manifest_key"])
    assert stored["Body"].read() == bl.encode_manifest(manifest) and stored["ContentType"] == "application/json"
    rdb_size = store.head_object(Bucket=s3["bucket"], Key=key)["ContentLength"]
    bl.check_complete_backup({key: rdb_size, result["manifest_key"]: stored["ContentLength"]}, manifest)
    # every field, filled as the module fills it: the structure pass ran and is recorded
    assert all(manifest[field] is not None for field in bl.MANIFEST_FIELDS + bl.LATER_FIELDS), manifest
    assert manifest["source"]["site"] == "dc1" and manifest["source"]["host"] == "redis-master"
    assert all(manifest["source"][field] is not None for field in bl.SOURCE_FIELDS + bl.LATER_SOURCE_FIELDS)
    # ... and field for field what hanzo.kms.redis_rdb_backup writes for the same Redis
    source = lab.state["sites"]["dc1"]["redis"]
    args = {
        "host": source["host"],
        "port": source["port"],
        "password": redis_password(lab, "dc1"),
        "tls": True,
        "tls_ca_cert": source["ca_file"],
        "dest": str(tmp_path / "dump.rdb"),
        "site": "dc1",
    }
    run_module("hanzo.kms.redis_rdb_backup", args, lab_dir=lab.dir, must_succeed=True)
    module_manifest = bl.parse_manifest((tmp_path / "dump.rdb.manifest.json").read_bytes())

    def shape(entry):
        return {
            name: (shape(value) if isinstance(value, dict) and name in ("source", "verified") else value is None)
            for name, value in entry.items()
        }

    assert shape(manifest) == shape(module_manifest)
    assert manifest["verified"]["validator_version"] == module_manifest["verified"]["validator_version"]
    assert (manifest["rdb_version"], manifest["source"]["server_version"]) == (
        module_manifest["rdb_version"],
        module_manifest["source"]["server_version"],
    )

    # restore exactly that backup into dc2's (passive) Redis, as the failover would
    target = lab.state["sites"]["dc2"]["redis"]
    args = {
        "host": target["host"],
        "port": target["port"],
        "password": redis_password(lab, "dc2"),
        "tls": True,
        "tls_ca_cert": target["ca_file"],
        "bucket": s3["bucket"],
        "key": key,
        "endpoint_url": s3["endpoint_url"],
        "region": s3["region"],
        "access_key": s3["access_key"],
        "secret_key": s3["secret_key"],
        "ca_bundle": s3["ca_file"],
        "mode": "replace",
    }
    result = run_module("hanzo.kms.redis_rdb_restore", args, lab_dir=lab.dir, must_succeed=True).result()
    assert result["changed"] is True and f'"key": "{key}"' in json.dumps(result), result


AGE = r"(?:\d+[dhms] ?)+"  # times.human_age: "42s", "1m 01s", "2d 03h"
# the "WAL archiver (SQL)" row: per site "<wal> <age> ago; <n> failed" (groups wal0, age0, failed0 for dc1, ...1 for dc2)
ARCHIVER_ROW = r"\| WAL archiver \(SQL\) \| " + r" \| ".join(
    rf"(?P<wal{i}>[0-9A-F]{{24}}\S*) (?P<age{i}>{AGE}) ago; (?P<failed{i}>\d+) failed" for i in (0, 1)
)


def seconds_of(age):
    """Seconds of a human_age text such as ``3m 05s``."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([dhms])", age))


def newest_report(lab, prefix):
    newest = max((lab.dir / "reports").glob(f"{prefix}-*.json"), key=lambda path: path.stat().st_mtime)
    return json.loads(newest.read_text(encoding="utf-8"))


def archive_current_wal(lab, site="dc1"):
    """Switch ``site``'s WAL segment and wait until the switched segment is in the bucket, under the archive the
    Cluster writes now (a rejoin renamed it): every commit before the switch can then be recovered from it."""
    wals = f"cnpg/{site}/{archive_server(cluster(lab, site))}/wals/"
    segment = psql(lab, site, "select pg_walfile_name(pg_current_wal_lsn())")
    psql(lab, site, "select pg_switch_wal()")  # its own transaction: the commits before it are in the switched segment
    wait_until(
        lambda: any(key.endswith(f"/{segment}.gz") for key in bucket_keys(lab, wals)),
        60,
        f"WAL segment {segment} in the bucket",
    )
    return segment


def backup_names(lab, site):
    """The names of the CNPG Backups in the site's namespace."""
    return {b["metadata"]["name"] for b in get(lab, site, "-n", NAMESPACE, "backups.postgresql.cnpg.io")["items"]}


def lost_site_inventory(lab, tmp_path, site, redis_port=None):
    """An inventory to layer over the lab's: host vars (they beat group_vars) of ``site``'s host giving it a copy of
    its kubeconfig that points at a closed port (connection refused, as when the site is lost) and, with
    ``redis_port``, that port for its Redis. The site itself keeps running."""
    kubeconfig = yaml.safe_load(Path(lab.state["sites"][site]["kube"]["kubeconfig"]).read_text(encoding="utf-8"))
    closed = free_port()
    for entry in kubeconfig["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{closed}"
    lost = tmp_path / f"{site}-lost.kubeconfig"
    lost.write_text(yaml.safe_dump(kubeconfig), encoding="utf-8")
    host = {"site_kubeconfig": str(lost)}
    if redis_port:
        host["site_redis_port"] = redis_port
    path = tmp_path / f"{site}-lost.yml"
    path.write_text(json.dumps({"all": {"hosts": {f"{site}-kube": host}}}), encoding="utf-8")
    return ["inventories/lab", str(path)]


def test_backup_check_mode_takes_and_deletes_nothing(clusters):
    """backup.yml --check plans a Redis backup per site and takes none (the key it names is not written), deletes no
    Redis backup and creates no CNPG Backup (the hourly CronJob may add a Redis backup meanwhile: not compared)."""
    lab = clusters["lab"]
    before = {site: (backup_names(lab, site), set(bucket_keys(lab, f"redis/{site}/"))) for site in SITES}
    proc = run_playbook("playbooks/backup.yml", "--check", lab_dir=lab.dir, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:]
    FIGURES["backup.yml --check (s)"] = round(proc.seconds, 1)
    assert "(CHECK MODE: nothing taken or deleted)" in proc.stdout, proc.stdout[-3000:]
    for site in SITES:
        planned = re.search(rf"{site} Redis \S+: would back up to (redis/{site}/\S+),", proc.stdout)
        assert planned, proc.stdout[-3000:]
        keys = set(bucket_keys(lab, f"redis/{site}/"))
        assert not any(key.startswith(planned[1]) for key in keys), planned[1]
        assert before[site][1] <= keys, "check mode deleted a Redis backup"
        assert backup_names(lab, site) == before[site][0]


def test_backup_skips_a_lost_passive_site_and_fails_for_a_lost_primary(clusters, tmp_path):
    """With dc2's Kubernetes API and Redis unreachable backup.yml backs up dc1 (a new completed CNPG Backup), says
    dc2 was skipped and succeeds; with dc1's (the primary's) unreachable it still backs up dc2 but fails naming dc1."""
    lab = clusters["lab"]
    assert cluster(lab, "dc1")["spec"]["replica"]["primary"] == PRIMARY, "dc1 is the primary here"
    for lost, kept in (("dc2", "dc1"), ("dc1", "dc2")):
        port = free_port()
        before = {site: backup_names(lab, site) for site in SITES}
        proc = run_playbook(
            "playbooks/backup.yml", inventory=lost_site_inventory(lab, tmp_path, lost, port), lab_dir=lab.dir
        )
        FIGURES[f"backup.yml with {lost} unreachable (s)"] = round(proc.seconds, 1)
        new = backup_names(lab, kept) - before[kept]
        assert [get(lab, kept, "-n", NAMESPACE, "backup", name)["status"]["phase"] for name in new] == ["completed"]
        assert f"Backup kms-pg-{kept}-ondemand-" in proc.stdout and backup_names(lab, lost) == before[lost]
        redis = f"{lab.state['sites'][lost]['redis']['host']}:{port}"
        if lost == "dc2":
            assert proc.returncode == 0, proc.stdout[-6000:]
            assert "SKIPPED dc2: Kubernetes API unreachable" in proc.stdout, proc.stdout[-3000:]
            assert f"SKIPPED dc2: Redis at {redis} unreachable" in proc.stdout, proc.stdout[-3000:]
        else:
            assert proc.returncode != 0, proc.stdout[-6000:]
            assert "dc1: the primary site's Kubernetes API did not answer" in proc.stdout, proc.stdout[-3000:]
            assert f"dc1: the active site's Redis at {redis} did not answer" in proc.stdout, proc.stdout[-3000:]


def test_restore_test_refuses_a_site_redis_as_its_scratch_redis(clusters):
    """restore_test.yml in external mode pointed at dc1's Redis refuses before restoring: its keys stay."""
    lab = clusters["lab"]
    target = lab.state["sites"]["dc1"]["redis"]
    keys_before = site_redis(lab, "dc1").dbsize()
    proc = run_playbook(
        "playbooks/restore_test.yml",
        *("-e", "restore_test_redis_mode=external", "-e", f"restore_test_redis_host={target['host']}"),
        *("-e", f"restore_test_redis_port={target['port']}", "-e", "restore_test_cnpg_enabled=false"),
        lab_dir=lab.dir,
    )
    assert proc.returncode != 0 and "not a site's" in proc.stdout, proc.stdout[-3000:]
    assert site_redis(lab, "dc1").dbsize() == keys_before


def test_backup_status_and_restore_test_run_on_the_real_operator(clusters):
    """backup.yml takes a CNPG Backup (plugin method) in both Clusters and a Redis backup per site; status.yml shows
    dc1 primary and dc2 a replica with its newest replayed commit; restore_test.yml recovers a scratch Cluster from
    dc1's object store and finds exactly the marker rows written before dc1's last archived WAL."""
    lab = clusters["lab"]
    _proc, seconds = playbook(lab, "playbooks/backup.yml")
    FIGURES["backup.yml (s)"] = seconds
    backup = newest_report(lab, "backup")
    assert backup["problems"] == [], backup["problems"]
    for entry in backup["sites"]:
        assert entry["cnpg_backup"]["ok"] and entry["cnpg_backup"]["phase"] == "completed", entry["cnpg_backup"]
        assert entry["redis_backup"]["ok"], entry["redis_backup"]

    marker = f"restore_probe_{time.time_ns() % 10**9}"
    marker_written = time.time()
    psql(lab, "dc1", f"create table {marker} (n int); insert into {marker} select generate_series(1, 7)", "kms")
    segment = archive_current_wal(lab)
    wait_until(
        lambda: psql(lab, "dc2", f"select to_regclass('{marker}') is not null", "kms") == "t",
        120,
        f"dc2 to replay {marker}",
        interval=1,
    )

    status, seconds = playbook(lab, "playbooks/status.yml")
    status_done = time.time()
    FIGURES["status.yml (s)"] = seconds
    assert '"|  | dc1 | dc2 |"' in status.stdout and "| CNPG role | primary | replica |" in status.stdout
    assert "| LB lb1 | SERVING (ready, UP) | not serving (maint, MAINT) |" in status.stdout
    assert "Load balancers send traffic to: dc1." in status.stdout
    replayed = re.search(rf"\| Newest replayed transaction \| - \(primary\) \| {AGE} ago", status.stdout)
    assert replayed, status.stdout[-3000:]
    assert "- Active site (from the Clusters): dc1." in status.stdout
    # read over SQL: dc1's archiver has just archived the marker's segment, without a failure; dc2 is in recovery
    # and its newest replayed commit is the marker's or a later one
    archiver = re.search(ARCHIVER_ROW, status.stdout)
    assert archiver, status.stdout[-3000:]
    assert archiver["wal0"] >= segment and archiver["failed0"] == "0" and archiver["failed1"] == "0"
    assert seconds_of(archiver["age0"]) <= status_done - marker_written + 2
    replay = re.search(
        r"\| Replay \(SQL\) \| - \(not in recovery, WAL at [0-9A-F]+/[0-9A-F]+\) \| in recovery, replayed "
        rf"[0-9A-F]+/[0-9A-F]+(?:, received [0-9A-F]+/[0-9A-F]+)?, lag (?P<lag>{AGE}) \|",
        status.stdout,
    )
    assert replay, status.stdout[-3000:]
    FIGURES["dc2 replay lag in status.yml (s)"] = seconds_of(replay["lag"])
    assert seconds_of(replay["lag"]) <= status_done - marker_written + 2

    _proc, seconds = playbook(lab, "playbooks/restore_test.yml")
    FIGURES["restore_test.yml: Redis + scratch Cluster recovered from the object store (s)"] = seconds
    restored = newest_report(lab, "restore-test")
    assert restored["ok"] is True, restored
    assert restored["cnpg"]["phase"] == "Cluster in healthy state" and restored["cnpg"]["database"] == "kms"
    assert restored["cnpg"]["tables"][f"public.{marker}"] == 7, restored["cnpg"]["tables"]
    assert restored["cnpg"]["system_id"] == restored["cnpg"]["source_system_id"]
    assert all(c["match"] for c in restored["redis"]["counts"]), restored["redis"]
    # nothing left behind: the scratch Redis ("local 127.0.0.1:<port>") no longer listens
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", int(restored["redis"]["target"].rsplit(":", 1)[1]))) != 0
    assert not any(
        c["metadata"]["name"] == "kms-pg-restore-test" for c in get(lab, "dc1", "-n", NAMESPACE, "clusters")["items"]
    ), "the scratch Cluster is removed"


def marker_batches(lab, table, first, total):
    """Table ``table`` in dc1's kms database with rows 1..``first``, then rows up to ``total``, and dc1's WAL archived;
    the server's clock between the two batches (each psql is its own transaction), a PITR target time."""
    psql(
        lab,
        "dc1",
        f"create table {table} (n int primary key); insert into {table} select generate_series(1, {first})",
        "kms",
    )
    target = psql(
        lab, "dc1", "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    )
    psql(lab, "dc1", f"insert into {table} select generate_series({first + 1}, {total})", "kms")
    archive_current_wal(lab)
    return target


def test_pitr_recovers_exactly_the_markers_written_before_the_target_time(clusters):
    """pitr.yml refuses a target in the future before creating anything; to a time noted on dc1's server between two
    batches of marker rows, it recovers a new Cluster (kms-pg-pitr) from dc1's object store holding exactly the first
    batch, on a new timeline whose history says it stopped before that time; pitr_remove=true removes the Cluster and
    its volume claims."""
    lab = clusters["lab"]
    table = f"pitr_probe_{time.time_ns() % 10**9}"
    target = marker_batches(lab, table, 5, 9)

    refused = run_playbook(
        "playbooks/pitr.yml", "-e", "pitr_target_time=2999-01-01T00:00:00Z", lab_dir=lab.dir, must_succeed=False
    )
    assert refused.returncode != 0 and "target time 2999-01-01T00:00:00Z is in the future" in refused.output, (
        refused.tail()
    )
    assert kubectl(lab, "dc1", "-n", NAMESPACE, "get", "cluster", "kms-pg-pitr").returncode != 0, "nothing created"

    try:
        _proc, seconds = playbook(lab, "playbooks/pitr.yml", "-e", f"pitr_target_time={target}")
        FIGURES["pitr.yml: Cluster recovered to a time from the object store (s)"] = seconds
        report = newest_report(lab, "pitr")
        assert report["ok"] is True and report["kind"] == "time", report
        assert report["target"] == {"targetTime": target}, report["target"]
        assert report["tables"][f"public.{table}"] == 5, report["tables"]
        assert report["system_id"] == report["source_system_id"]
        ended = report["recovery_end"]
        assert ended["timeline"] >= 2 and ended["reason"].startswith("before "), ended
        proc = kubectl(
            lab,
            "dc1",
            *("-n", NAMESPACE, "exec", "kms-pg-pitr-1", "-c", "postgres", "--", "psql", "-d", "kms", "-Atc"),
            f"select string_agg(n::text, ',' order by n) from {table}",
        )
        assert proc.returncode == 0 and proc.stdout.strip() == "1,2,3,4,5", proc.stdout + proc.stderr
        volume = get(lab, "dc1", "-n", NAMESPACE, "pvc", "kms-pg-pitr-1")["spec"]["volumeName"]
    finally:
        _proc, seconds = playbook(lab, "playbooks/pitr.yml", "-e", "pitr_remove=true")
        FIGURES["pitr.yml pitr_remove=true (s)"] = seconds
    assert kubectl(lab, "dc1", "-n", NAMESPACE, "get", "cluster", "kms-pg-pitr").returncode != 0
    claims = get(lab, "dc1", "-n", NAMESPACE, "pvc", "-l", "cnpg.io/cluster=kms-pg-pitr")["items"]
    assert claims == [], [c["metadata"]["name"] for c in claims]
    # the lab's volumes are Recycle (tests/lab/kube.py): the recovered data is scrubbed and the volume bound again
    wait_until(lambda: volume in available_volumes(lab, "dc1"), 120, f"{volume} to be recycled", interval=1)
    assert not any(Path(get(lab, "dc1", "pv", volume)["spec"]["hostPath"]["path"]).iterdir())


# -- hanzo.kms.cnpg_promote on the real operator: its refusals, dry runs and interrupted runs ------------------------
# (the playbooks' switches below run it further; the stand-in keeps only what the real operator cannot be made to do
# on demand: tests/integration/test_cnpg_promote.py)
PRIMARY, REPLICA = "kms-pg-dc1", "kms-pg-dc2"
RECONCILIATION = "cnpg.io/reconciliationLoop"
PROMOTE_TIMEOUT = 300


def promote_args(lab, mode, old="dc1", new="dc2", **options):
    """cnpg_promote's arguments for the lab's two Clusters (``old`` and ``new`` are sites)."""
    args = {
        "mode": mode,
        "kubeconfig": lab.state["kubeconfig"],
        "poll_interval": 0.5,
        "old_cluster": {"name": f"kms-pg-{old}", "namespace": NAMESPACE, "context": old},
        "new_cluster": {"name": f"kms-pg-{new}", "namespace": NAMESPACE, "context": new},
    }
    args.update(options)
    return args


def promote(lab, mode, old="dc1", new="dc2", check=False, diff=False, **options):
    """hanzo.kms.cnpg_promote ad hoc on the control node; its result."""
    run = run_module(
        "hanzo.kms.cnpg_promote",
        promote_args(lab, mode, old, new, **options),
        check_mode=check,
        diff=diff,
        timeout=PROMOTE_TIMEOUT + 60,
    )
    return run.result()


def cluster(lab, site):
    return get(lab, site, "-n", NAMESPACE, "cluster", f"kms-pg-{site}")


def merge_patch(lab, site, body):
    proc = kubectl(
        lab, site, "-n", NAMESPACE, "patch", "cluster", f"kms-pg-{site}", "--type", "merge", "-p", json.dumps(body)
    )
    assert proc.returncode == 0, proc.stderr


def healthy_replica(lab, site):
    """The site's Cluster is a healthy replica and its instance is in recovery."""
    obj = cluster(lab, site)
    if not cnpg.is_replica(obj) or (obj.get("status") or {}).get("phase") != cnpg.PHASE_HEALTHY:
        return False
    return psql(lab, site, "select pg_is_in_recovery()") == "t"


def wanted(obj):
    """What cnpg_promote may change on a Cluster: its spec and annotations (the operator rewrites status)."""
    return obj["metadata"]["generation"], obj["metadata"].get("annotations"), obj["spec"]


def test_cnpg_promote_refusals_and_dry_runs_change_nothing_on_the_real_operator(clusters):
    """Check mode plans both modes' patches, a failover with dc1 reachable and unfenced is refused, a missing
    Cluster and a ServiceAccount that may only read Clusters are named: no Cluster changes."""
    lab = clusters["lab"]
    before = {site: wanted(cluster(lab, site)) for site in SITES}

    dry = promote(lab, "switchover", check=True, diff=True)
    assert dry["changed"] is True, dry
    assert [(p["step"], p["cluster"]) for p in dry["plan"]] == [("demote", "old"), ("promote", "new")]
    assert dry["plan"][0]["patch"] == {"spec": {"replica": {"primary": REPLICA}}}
    assert dry["diff"]["before"]["old_cluster"]["spec"]["replica"]["primary"] == PRIMARY
    assert dry["diff"]["after"]["old_cluster"]["spec"]["replica"]["primary"] == REPLICA
    assert dry["before"]["old_cluster"]["role"] == "primary" and dry["before"]["new_cluster"]["role"] == "replica"
    dry_failover = promote(lab, "failover", check=True, old_cluster_fencing="fence")
    assert [p["step"] for p in dry_failover["plan"]] == ["fence", "promote"], dry_failover

    refused = promote(lab, "failover")
    assert refused.get("failed") is True and "two writable primaries" in refused["msg"], refused

    missing = promote(lab, "switchover", new_cluster={"name": "nope", "namespace": NAMESPACE, "context": "dc2"})
    assert missing.get("failed") is True
    assert f"Cluster {NAMESPACE}/nope" in missing["msg"] and "not found" in missing["msg"], missing["msg"]

    # dc1's side with its own host, token and CA: a ServiceAccount that may read Clusters but not patch them
    for args in (
        ("create", "serviceaccount", "promote-reader"),
        ("create", "role", "promote-reader", "--verb=get,list,watch", "--resource=clusters.postgresql.cnpg.io"),
        (
            "create",
            "rolebinding",
            "promote-reader",
            "--role=promote-reader",
            f"--serviceaccount={NAMESPACE}:promote-reader",
        ),
    ):
        proc = kubectl(lab, "dc1", "-n", NAMESPACE, *args)
        assert proc.returncode == 0, proc.stderr
    try:
        proc = kubectl(lab, "dc1", "-n", NAMESPACE, "create", "token", "promote-reader", "--duration=10m")
        assert proc.returncode == 0, proc.stderr
        site = lab.state["sites"]["dc1"]["kube"]
        forbidden = promote(
            lab,
            "switchover",
            old_cluster={
                "name": PRIMARY,
                "namespace": NAMESPACE,
                "host": site["server"],
                "api_key": proc.stdout.strip(),
                "ca_cert": site["pki"]["ca"],
            },
        )
    finally:
        for kind in ("rolebinding", "role", "serviceaccount"):
            kubectl(lab, "dc1", "-n", NAMESPACE, "delete", kind, "promote-reader")
    assert forbidden.get("failed") is True
    assert f"Cluster {NAMESPACE}/{PRIMARY}" in forbidden["msg"] and "forbidden" in forbidden["msg"], forbidden["msg"]
    assert "'patch' permission on clusters.postgresql.cnpg.io" in forbidden["msg"]
    assert forbidden["before"]["old_cluster"]["role"] == "primary"  # it read dc1 with the same credentials

    assert {site: wanted(cluster(lab, site)) for site in SITES} == before


def test_cnpg_promote_finishes_interrupted_switchovers_on_the_real_operator(clusters):
    """To dc2: the module is killed once its demotion patch is on dc1 (the control node died); a re-run records
    dc1's demotion token and promotes dc2 with it. Back to dc1: the module times out while dc2's operator does not
    reconcile; a re-run finishes the same way."""
    lab = clusters["lab"]
    try:
        interrupted_switchovers(lab)
    finally:
        # the tests after this one need dc1 primary: finish whatever a failed step left half done
        if not cnpg.promotion_done(cluster(lab, "dc1")):
            promote(lab, "switchover", old="dc2", new="dc1", promotion_timeout=PROMOTE_TIMEOUT)


def interrupted_switchovers(lab):
    """The steps of test_cnpg_promote_finishes_interrupted_switchovers_on_the_real_operator."""
    started = time.monotonic()
    output = tempfile.TemporaryFile(mode="w+")  # pylint: disable=consider-using-with
    killed = subprocess.Popen(  # pylint: disable=consider-using-with
        ansible_argv(
            "ansible",
            "localhost",
            *local_args(),
            "-m",
            "hanzo.kms.cnpg_promote",
            "-a",
            json.dumps(promote_args(lab, "switchover", promotion_timeout=PROMOTE_TIMEOUT)),
        ),
        cwd=REPO_ROOT,
        env=ansible_env(),
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: cluster(lab, "dc1")["spec"]["replica"]["primary"] == REPLICA or killed.poll() is not None,
            120,
            "the module's demotion patch on dc1",
            interval=0.1,
        )
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have ended on its own (then it says why below)
            os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        output.seek(0)
        ran = output.read()
        output.close()
    assert cluster(lab, "dc1")["spec"]["replica"]["primary"] == REPLICA, (
        f"no demotion patch; the module said:\n{ran[-3000:]}"
    )
    assert cnpg.recorded_token(cluster(lab, "dc2"))[1] is None, "killed before it recorded a token"

    resumed = promote(lab, "switchover", promotion_timeout=PROMOTE_TIMEOUT)
    assert resumed.get("failed") is not True, resumed
    assert resumed["steps"] == ["record_token", "promote"], resumed["steps"]
    assert resumed["token"] == cluster(lab, "dc1")["status"]["demotionToken"]
    assert resumed["data_loss_possible"] is False
    # a promotion starts a new timeline (the real operator reports none for a replica Cluster, so the "before" has none)
    assert resumed["after"]["new_cluster"]["timeline"] >= 2, resumed["after"]
    assert cnpg.promotion_done(cluster(lab, "dc2"), resumed["token"])
    FIGURES["cnpg_promote killed after its demotion patch, re-run until dc2 is primary (s)"] = round(
        time.monotonic() - started, 1
    )

    # Back to dc1 while dc2's operator does not reconcile (CloudNativePG's reconciliationLoop annotation): the operator
    # publishes the demotion token, so the module times out waiting for it, naming it; a re-run finishes.
    started = time.monotonic()
    merge_patch(lab, "dc2", {"metadata": {"annotations": {RECONCILIATION: "disabled"}}})
    try:
        timed_out = promote(lab, "switchover", old="dc2", new="dc1", demotion_timeout=20)
    finally:
        merge_patch(lab, "dc2", {"metadata": {"annotations": {RECONCILIATION: None}}})
    assert timed_out.get("failed") is True, timed_out
    assert "timed out after 20s waiting for the demotion token" in timed_out["msg"], timed_out["msg"]
    assert timed_out["steps"] == ["demote"] and timed_out["last_status"]["spec_replica"]["primary"] == PRIMARY
    back = promote(lab, "switchover", old="dc2", new="dc1", promotion_timeout=PROMOTE_TIMEOUT)
    assert back.get("failed") is not True, back
    assert back["steps"] == ["record_token", "promote"], back["steps"]
    demoted = cluster(lab, "dc2")
    assert back["token"] == demoted["status"]["demotionToken"]
    assert "promotionToken" not in demoted["spec"]["replica"], "the demotion patch removed dc2's consumed token"
    assert cnpg.promotion_done(cluster(lab, "dc1"), back["token"])
    wait_until(lambda: healthy_replica(lab, "dc2"), PROMOTE_TIMEOUT, "dc2 a healthy replica of dc1 again", interval=1)
    FIGURES["back to dc1: timed out with dc2's operator paused, re-run until dc1 is primary (s)"] = round(
        time.monotonic() - started, 1
    )


# -- both sites' objects: after a switchover each site has what a fresh install in its new role has ------------------
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


def site_objects(lab, site):
    """{"<Kind>/<name>": normalized object} of the site's namespace."""
    from kubernetes.dynamic import DynamicClient  # pylint: disable=import-outside-toplevel
    from kubernetes.dynamic.exceptions import ResourceNotFoundError  # pylint: disable=import-outside-toplevel

    dynamic = DynamicClient(kube_client.api_client({}, {"kubeconfig": lab.state["kubeconfig"], "context": site}))
    found = {}
    for api_version, kind in SITE_KINDS:
        try:
            resource = dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            continue
        selector = "app.kubernetes.io/part-of=hanzo-kms"
        for item in resource.get(namespace=NAMESPACE, label_selector=selector).to_dict()["items"]:
            item.setdefault("kind", kind)
            found[f"{kind}/{item['metadata']['name']}"] = normalized(item)
    for name, hpa in found.items():
        if name.startswith("HorizontalPodAutoscaler/"):
            # the autoscaler's, not the roles': the template leaves spec.replicas out while an HPA scales it
            found[f"Deployment/{hpa['spec']['scaleTargetRef']['name']}"]["spec"].pop("replicas", None)
    return found


def all_site_objects(lab):
    return {site: site_objects(lab, site) for site in SITES}


def site_addresses(lab):
    """Each site's own address in its objects: the S3 endpoint its pods reach (the host side of the site's veth, in
    its ObjectStores). It belongs to the site, not to its role, so a switchover keeps it."""
    return {site: lab.state["sites"][site]["kube"]["s3_endpoint"] for site in SITES}


def with_sites_swapped(objects_by_site, addresses):
    """The objects of a fresh install with dc1 and dc2 in each other's roles: every site name and the sites'
    ``addresses`` (site_addresses) swapped."""
    swap = {"dc1": "dc2", "dc2": "dc1", addresses["dc1"]: addresses["dc2"], addresses["dc2"]: addresses["dc1"]}
    pattern = "|".join(re.escape(token) for token in sorted(swap, key=len, reverse=True))
    swapped = json.loads(re.sub(pattern, lambda match: swap[match[0]], json.dumps(objects_by_site)))
    for objects in swapped.values():
        for obj in objects.values():
            if obj["kind"] == "Cluster":  # listed in site order, which the swap reversed
                obj["spec"]["externalClusters"].sort(key=lambda e: e["name"])
    return swapped


def assert_same_objects(actual, expected):
    for site in SITES:
        assert sorted(actual[site]) == sorted(expected[site]), site
        differing = [name for name in actual[site] if actual[site][name] != expected[site][name]]
        assert not differing, {name: (actual[site][name], expected[site][name]) for name in differing[:2]}


def redis_password(lab, site):
    """The site's Redis password, from the redis role's Secret (as the playbooks read it)."""
    return base64.b64decode(get(lab, site, "-n", NAMESPACE, "secret", "redis-auth")["data"]["redis-password"]).decode()


def site_redis(lab, site):
    """A client of the site's Redis pod (node port, TLS)."""
    return lab_redis.client(dict(lab.state["sites"][site]["redis"], password=redis_password(lab, site)))


def switchover_args(target):
    """switchover.yml's extra variables for a switchover to ``target``."""
    return ("-e", f"switchover_target_site={target}", "-e", f"switchover_confirm='SWITCHOVER TO {target}'")


def switchover(lab, target):
    """switchover.yml to ``target``; (its run, seconds). Must succeed."""
    return playbook(lab, "playbooks/switchover.yml", *switchover_args(target))


def after_switch(lab, target, marker):
    """What the tests below check after a switchover to ``target``: both Clusters, both KMS Deployments' replicas,
    the report, the marker key in the target's Redis, both sites' objects and the target's first base Backup."""
    return {
        "clusters": {site: cluster(lab, site) for site in SITES},
        "replicas": {site: get(lab, site, "-n", NAMESPACE, "deployment", "kms")["spec"]["replicas"] for site in SITES},
        "report": report(lab, "switchover"),
        "marker": site_redis(lab, target).get(marker),
        "objects": all_site_objects(lab),
        "first_backup": get(lab, target, "-n", NAMESPACE, "backup", f"kms-pg-{target}-initial")["status"]["phase"],
    }


@pytest.fixture(scope="module")
def switched(clusters):
    """switchover.yml to dc2 and back under a steady write load through the LB, a marker key written in dc1's Redis
    before; between them switchover.yml to dc2 again and install.yml with the unchanged inventory (dc1 active). What
    each run left is recorded for the tests below."""
    lab = clusters["lab"]
    marker = f"itest:marker:{time.time_ns()}"
    site_redis(lab, "dc1").set(marker, "from-dc1")
    seen = {}
    client = lb_client(lab, "switchover")
    client.start()
    try:
        for target in ("dc2", "dc1"):
            _proc, seconds = switchover(lab, target)
            FIGURES[f"switchover to {target} (s)"] = seconds
            steps = {s["name"]: s for s in report(lab, "switchover")["steps"]}
            # the promotion runs from the promote step's start to wait_promotion's end, restore_redis meanwhile
            FIGURES[f"switchover to {target}: cnpg_promote (s)"] = steps["wait_promotion"]["data"]["timings"]["total"]
            # one haproxy_backend call over both LB hosts' Runtime API (TLS), then each saves its state over SSH
            FIGURES[f"switchover to {target}: switch_lb step, 2 LB hosts (s)"] = steps["switch_lb"]["seconds"]
            seen[target] = after_switch(lab, target, marker)
            if target == "dc2":
                again, seconds = switchover(lab, "dc2")
                FIGURES["switchover to dc2 again, nothing to do (s)"] = seconds
                seen["again"] = {"changed": changed(again.stdout), "report": report(lab, "switchover")}
                install, seconds = playbook(lab, "playbooks/install.yml")
                FIGURES["install.yml after the switchover to dc2 (s)"] = seconds
                seen["install"] = {
                    "stdout": install.stdout,
                    "changed": changed(install.stdout),
                    "primary": cluster(lab, "dc2")["spec"]["replica"]["primary"],
                    "objects": all_site_objects(lab),
                }
    finally:
        records = client.stop()
    return {"lab": lab, "client": client, "records": records, "seen": seen}


def test_switchover_leaves_the_new_active_site_whole(switched, clusters):
    """After each switch: both Clusters name the target primary and the target's promotion is done, the old site's
    KMS is scaled to 0 and the target's up, the report says every planned step succeeded with no PostgreSQL loss, the
    marker key from dc1's Redis was restored into the target's, the new primary has its first base backup, and both
    sites' objects are the install's with the sites swapped (to dc2) or the install's (back to dc1): the HPA, the
    Deployments' replicas, ... of the new roles."""
    installed = clusters["objects"]
    for target, old, objects in (
        ("dc2", "dc1", with_sites_swapped(installed, site_addresses(switched["lab"]))),
        ("dc1", "dc2", installed),
    ):
        seen = switched["seen"][target]
        new_cluster = seen["clusters"][target]
        assert new_cluster["status"]["lastPromotionToken"] == new_cluster["spec"]["replica"]["promotionToken"]
        assert {site: c["spec"]["replica"]["primary"] for site, c in seen["clusters"].items()} == {
            site: f"kms-pg-{target}" for site in SITES
        }
        assert seen["replicas"][old] == 0 and seen["replicas"][target] >= 2, seen["replicas"]
        done = seen["report"]
        assert (done["result"], done["target"], done["old_site"]) == ("succeeded", target, old)
        assert [s["name"] for s in done["steps"]] == done["steps_planned"]
        assert all(s["result"] in ("ok", "changed") for s in done["steps"]), done["steps"]
        assert done["data_loss"]["postgres"]["bound_seconds"] == 0
        assert seen["marker"] == b"from-dc1", target
        assert seen["first_backup"] == "completed", target
        assert_same_objects(seen["objects"], objects)


def test_switchover_rerun_and_install_after_it_change_nothing(switched):
    """switchover.yml to dc2 again changes nothing and skips the Redis restore; install.yml with the unchanged
    inventory (site_role: dc1 active) follows the Clusters: it names the stale inventory, changes no site and leaves
    dc2 the primary with its objects."""
    seen = switched["seen"]
    assert set(seen["again"]["changed"].values()) == {0}, seen["again"]["changed"]
    assert {s["name"]: s["result"] for s in seen["again"]["report"]["steps"]}["restore_redis"] == "skipped"
    install = seen["install"]
    assert "the inventory's site_role is stale for dc1, dc2" in install["stdout"]
    changed_sites = {host: n for host, n in install["changed"].items() if host.endswith("-kube") and n}
    assert changed_sites == {}, install["stdout"][-6000:]
    assert install["primary"] == "kms-pg-dc2"
    assert install["objects"] == seen["dc2"]["objects"]


def test_switchover_there_and_back_loses_no_acknowledged_write(switched):
    lab, client = switched["lab"], switched["client"]
    served = {r["site"] for r in switched["records"] if r["ok"]}
    assert served == {"dc1", "dc2"}, "the load was served by both sites in turn"
    assert len(client.acked) > 20
    assert lost_writes(lab, client, "dc1") == []
    assert psql(lab, "dc1", "select pg_is_in_recovery()") == "f"
    assert psql(lab, "dc2", "select pg_is_in_recovery()") == "t"
    for site, primary in (("dc1", "kms-pg-dc1"), ("dc2", "kms-pg-dc1")):
        assert get(lab, site, "-n", NAMESPACE, "cluster", f"kms-pg-{site}")["spec"]["replica"]["primary"] == primary
    assert report(lab, "switchover")["data_loss"]["postgres"]["bound_seconds"] == 0


def test_failover_after_losing_dc1_loses_only_what_its_report_bounds(switched):
    """Power dc1 off under load (no final WAL archive, no Redis backup) together with lb1, the VIP holder (the LB host
    in dc1), and fail over to dc2: the VIP moves to lb2, the switch proceeds with lb2 alone (the failover's quorum)
    and the report names lb1 as not switched; dc2 serves through the VIP, and every acknowledged write that is
    missing was acknowledged after the newest WAL of dc1 in the object store."""
    lab = switched["lab"]
    client = lb_client(lab, "failover")
    client.start()
    try:
        wait_until(lambda: len(client.acked) >= 10, 30, "writes acknowledged by dc1")
        # The steady state of a replica: it has replayed a transaction since its restart (right after the
        # switchover back it has not: dc1's first segment waits for archive_timeout, and the report's bound is then
        # the approximate archive age, tested in tests/unit). A WAL switch on dc1 ships the load's commits.
        psql(lab, "dc1", "select pg_switch_wal()")
        wait_until(
            lambda: psql(lab, "dc2", "select pg_last_xact_replay_timestamp() is not null") == "t",
            120,
            "dc2 to replay a transaction of dc1",
            interval=1,
        )
        killed = node.lose_site(lab.dir, "dc1") + lbhost.lose_host(lab.dir, "lb1")
        lost_at = time.time()
        proc, seconds = playbook(
            lab, "playbooks/failover.yml", "-e", "failover_target_site=dc2", "-e", "failover_confirm='FAILOVER TO dc2'"
        )
        wait_until(
            lambda: any(r["ok"] and r["site"] == "dc2" and r["t0"] > lost_at for r in client.records),
            30,
            "a request served by dc2",
        )
    finally:
        records = client.stop()
    assert killed > 10
    first_dc2 = min(r["t1"] for r in records if r["ok"] and r["site"] == "dc2" and r["t0"] > lost_at)
    FIGURES["failover playbook (s)"] = seconds
    FIGURES["failover: dc1 lost -> first request served by dc2 (s)"] = round(first_dc2 - lost_at, 1)
    done = report(lab, "failover")
    assert done["result"] == "succeeded", proc.stdout[-3000:]
    switch_lb = {step["name"]: step for step in done["steps"]}["switch_lb"]
    assert switch_lb["detail"].startswith("lb2 -> dc2; NOT switched (unreachable): lb1: "), switch_lb
    assert "lb2" in lbhost.vip_holders(lab.state["lb_hosts"])
    bound = done["data_loss"]["postgres"]
    # from dc2's newest replayed transaction (exec into its instance), not the approximate archive age
    assert bound["approximate"] is False and isinstance(bound["bound_seconds"], int), bound
    lost = lost_writes(lab, client, "dc2")
    FIGURES["failover: acknowledged writes lost"] = (
        f"{len(lost)} of {len(client.acked)} (bound {bound['bound_seconds']} s)"
    )
    broken = analysis.lost_before(records, lost, analysis.iso_seconds(bound["since"]))
    assert broken == [], f"lost writes acknowledged before {bound['since']}, which the report says were kept: {broken}"
    assert psql(lab, "dc2", "select pg_is_in_recovery()") == "f"


def rejoin(lab, site, confirm, *args):
    """rejoin.yml for ``site`` with the confirmation ``confirm``; the run (not required to succeed)."""
    return run_playbook(
        "playbooks/rejoin.yml",
        "-e",
        f"rejoin_site={site}",
        "-e",
        f"rejoin_confirm='{confirm}'",
        *args,
        lab_dir=lab.dir,
        timeout=2400,
    )


def archive_server(obj):
    """The serverName the Cluster archives WAL under (its Barman Cloud plugin's)."""
    return next(p for p in obj["spec"]["plugins"] if p["name"] == "barman-cloud.cloudnative-pg.io")["parameters"][
        "serverName"
    ]


def available_volumes(lab, site):
    return [pv["metadata"]["name"] for pv in get(lab, site, "pv")["items"] if pv["status"]["phase"] == "Available"]


def test_rejoin_rebuilds_dc1_as_a_replica_and_the_switchover_back_loses_no_write(switched):
    """The failback after the failover above. dc1 and lb1 come back (``stack.power_on``: the old primary restarts on
    the data the power cut left) and fence.yml fences the old primary; rejoin.yml refuses a wrong confirmation and the
    active site, changes nothing in check mode, then rebuilds dc1's Cluster as a replica of dc2 from dc2's object
    store, archiving under a new serverName (the old archive untouched), the old volume kept aside (Retain, released,
    its data on disk), dc1's Redis up; dc1 replays what dc2 writes. Then switchover.yml back to dc1 under the write
    load loses no acknowledged write and leaves dc1 the primary, archiving under the new name."""
    lab = switched["lab"]
    # the operator's webhooks validate the fencing patch: stack.power_on waits until its pods run again
    started_lb, _seconds = stack.power_on(lab, "lb1")
    started, seconds = stack.power_on(lab, "dc1")
    assert "dc1-kube-apiserver" in started and "lb1-haproxy" in started_lb, (started, started_lb)
    FIGURES["failback: dc1 powered on -> its operator available (s)"] = seconds
    playbook(
        lab,
        "playbooks/fence.yml",
        "-e",
        "fence_site=dc1",
        "-e",
        "fence_active_site=dc2",
        "-e",
        "fence_confirm='FENCE dc1'",
    )
    fenced = cluster(lab, "dc1")
    assert cnpg.fencing_state(fenced) == "fenced", fenced["metadata"].get("annotations")
    old_archive = bucket_keys(lab, "cnpg/dc1/kms-pg-dc1/")
    assert old_archive

    wrong = rejoin(lab, "dc1", "REJOIN dc2")
    assert wrong.returncode != 0 and "rejoin_confirm to 'REJOIN <rejoin_site>'" in wrong.stdout, wrong.stdout[-2000:]
    active = rejoin(lab, "dc2", "REJOIN dc2")
    assert active.returncode != 0 and "dc2 is the active site" in active.stdout, active.stdout[-2000:]
    dry = rejoin(lab, "dc1", "REJOIN dc1", "--check")
    assert dry.returncode == 0, dry.stdout[-3000:]
    assert cluster(lab, "dc1")["metadata"]["uid"] == fenced["metadata"]["uid"]
    assert available_volumes(lab, "dc1"), "a free volume for the rebuilt instance"

    run = rejoin(lab, "dc1", "REJOIN dc1")
    assert run.returncode == 0, run.stdout[-6000:]
    FIGURES["rejoin.yml (s)"] = round(run.seconds, 1)
    done = report(lab, "rejoin")
    FIGURES["rejoin: start -> dc1 a healthy replica (s)"] = done["seconds_to_healthy"]
    rebuilt = cluster(lab, "dc1")
    timeline = cluster(lab, "dc2")["status"]["timelineID"]
    assert rebuilt["metadata"]["uid"] != fenced["metadata"]["uid"]
    assert rebuilt["spec"]["replica"]["primary"] == "kms-pg-dc2"
    assert done["server_name"] == archive_server(rebuilt) == f"kms-pg-dc1-tl{timeline}"
    assert done["old_server_name"] == "kms-pg-dc1"
    assert healthy_replica(lab, "dc1")
    assert bucket_keys(lab, "cnpg/dc1/kms-pg-dc1/") == old_archive, "the old archive is untouched"
    for name in done["retained_volumes"]:
        pv = get(lab, "dc1", "pv", name)
        assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
        assert pv["metadata"]["labels"]["hanzo.kms/retained-from"] == "kms-pg-dc1"
        assert pv["status"]["phase"] == "Released"
        assert any(Path(pv["spec"]["hostPath"]["path"]).glob("**/PG_VERSION")), "the old data is still on disk"
    assert done["retained_volumes"], done
    assert done["redis"].startswith("up"), done
    # dc2's external cluster of dc1 reads the new archive (what it follows after the switchover back)
    ext = {e["name"]: e for e in cluster(lab, "dc2")["spec"]["externalClusters"]}
    assert ext["kms-pg-dc1"]["plugin"]["parameters"]["serverName"] == done["server_name"]
    # dc1 replays dc2's WAL from the object store
    marker = f"rejoin-{time.time_ns()}"
    psql(lab, "dc2", f"create table if not exists rejoin_probe(x text); insert into rejoin_probe values ('{marker}')")
    psql(lab, "dc2", "select pg_switch_wal()")
    wait_until(
        lambda: psql(lab, "dc1", f"select count(*) from rejoin_probe where x = '{marker}'") == "1",
        300,
        "dc1 to replay a row written on dc2",
        interval=2,
    )

    client = lb_client(lab, "failback")
    client.start()
    try:
        _proc, seconds = switchover(lab, "dc1")
        FIGURES["failback: switchover to dc1 after rejoin (s)"] = seconds
    finally:
        records = client.stop()
    assert {r["site"] for r in records if r["ok"]} == {"dc1", "dc2"}
    assert len(client.acked) > 20
    lost = lost_writes(lab, client, "dc1")
    FIGURES["failback: acknowledged writes lost"] = f"{len(lost)} of {len(client.acked)}"
    assert lost == []
    assert psql(lab, "dc1", "select pg_is_in_recovery()") == "f"
    assert psql(lab, "dc2", "select pg_is_in_recovery()") == "t"
    assert report(lab, "switchover")["data_loss"]["postgres"]["bound_seconds"] == 0
    psql(lab, "dc1", "select pg_switch_wal()")
    wait_until(
        lambda: bucket_keys(lab, f"cnpg/dc1/{done['server_name']}/wals/"), 300, "dc1 to archive under its new name"
    )


def test_after_the_failback_restore_test_and_pitr_read_the_new_archive(switched):
    """After the failback above dc1 archives under ``kms-pg-dc1-tl<n>``; the archive under ``kms-pg-dc1`` holds the
    history from before the failover. restore_test.yml recovers from the new archive (rows written after the
    switchover back are there), and pitr.yml's check and recovery use it too: a time between two batches written
    now recovers exactly the first batch. Reading ``kms-pg-dc1`` would find neither table."""
    lab = switched["lab"]
    server = archive_server(cluster(lab, "dc1"))
    assert server.startswith("kms-pg-dc1-tl") and psql(lab, "dc1", "select pg_is_in_recovery()") == "f", (
        f"needs the failback test before it: dc1 primary under a new archive name, found {server}"
    )
    table = f"failback_probe_{time.time_ns() % 10**9}"
    target = marker_batches(lab, table, 4, 6)

    _proc, seconds = playbook(lab, "playbooks/restore_test.yml")
    FIGURES["failback: restore_test.yml from the new archive (s)"] = seconds
    restored = newest_report(lab, "restore-test")
    assert restored["ok"] is True, restored
    assert restored["cnpg"]["server_name"] == server, restored["cnpg"]
    assert restored["cnpg"]["tables"][f"public.{table}"] == 6, restored["cnpg"]["tables"]

    try:
        _proc, seconds = playbook(lab, "playbooks/pitr.yml", "-e", f"pitr_target_time={target}")
        FIGURES["failback: pitr.yml from the new archive (s)"] = seconds
        recovered = newest_report(lab, "pitr")
        assert recovered["ok"] is True and recovered["server_name"] == server, recovered
        assert recovered["tables"][f"public.{table}"] == 4, recovered["tables"]
    finally:
        playbook(lab, "playbooks/pitr.yml", "-e", "pitr_remove=true")


# -- a switchover whose old site is lost between its demotion and its promotion (issue 14 item 7) --------------------
BLOCK = "test-block-promotion.lab.hanzo.kms"
BLOCK_MESSAGE = "lab test: this promotion is refused"


def promotion_refused(lab, site):
    """Whether the site's API refuses its Cluster's promotion with BLOCK_MESSAGE (a server dry run: nothing changes)."""
    body = {"spec": {"replica": {"primary": f"kms-pg-{site}"}}}
    args = ("patch", "cluster", f"kms-pg-{site}", "--type", "merge", "--dry-run=server", "-p", json.dumps(body))
    proc = kubectl(lab, site, "-n", NAMESPACE, *args)
    return proc.returncode != 0 and BLOCK_MESSAGE in proc.stderr


def block_promotion(lab, site, tmp_path):
    """A ValidatingAdmissionPolicy and its binding on the site's API refusing any update that makes its Cluster name
    itself the primary (as a broken admission webhook or an API outage at the wrong moment would)."""
    name = f"kms-pg-{site}"
    policy = {
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
                    "expression": f"object.metadata.name != '{name}' || !has(object.spec.replica) "
                    f"|| !has(object.spec.replica.primary) || object.spec.replica.primary != '{name}'",
                    "message": BLOCK_MESSAGE,
                    "reason": "Forbidden",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": BLOCK},
        "spec": {"policyName": BLOCK, "validationActions": ["Deny"]},
    }
    path = tmp_path / "block-promotion.yaml"
    path.write_text(yaml.safe_dump_all([policy, binding]), encoding="utf-8")
    proc = kubectl(lab, site, "create", "-f", str(path))
    assert proc.returncode == 0, proc.stderr
    wait_until(lambda: promotion_refused(lab, site), 30, f"{site}'s API to refuse the promotion")


def unblock_promotion(lab, site):
    proc = kubectl(
        lab, site, "delete", "--ignore-not-found", "validatingadmissionpolicybinding,validatingadmissionpolicy", BLOCK
    )
    assert proc.returncode == 0, proc.stderr
    wait_until(lambda: not promotion_refused(lab, site), 30, f"{site}'s API to accept the promotion again")


def test_switchover_finishes_with_the_recorded_token_after_the_old_site_is_lost(clusters, tmp_path):
    """From whichever site is primary (read from the Clusters) to the other, under a write load through the VIP:
    the target's API refuses the promotion patch, so switchover.yml stops after the old primary was demoted and its
    demotion token recorded in the target; then the old site is lost (its kubeconfig points at a closed port) and the
    same command again promotes the target with the recorded token, losing no acknowledged write. The old site keeps
    running: it is left a healthy replica of the new primary, its KMS stopped (a switchover's end state)."""
    lab = clusters["lab"]
    primaries = {cluster(lab, site)["spec"]["replica"]["primary"] for site in SITES}
    assert len(primaries) == 1, primaries
    old = primaries.pop().removeprefix("kms-pg-")
    new = next(site for site in SITES if site != old)
    assert psql(lab, old, "select pg_is_in_recovery()") == "f" and healthy_replica(lab, new)
    started = time.monotonic()
    client = lb_client(lab, "token")
    client.start()
    try:
        # 1. the switchover stops after the demotion: the target's API refuses the promotion patch
        block_promotion(lab, new, tmp_path)
        try:
            first = run_playbook("playbooks/switchover.yml", *switchover_args(new), lab_dir=lab.dir, timeout=900)
        finally:
            unblock_promotion(lab, new)
        FIGURES["token: switchover refused at the promotion (s)"] = round(first.seconds, 1)
        assert first.returncode != 0 and BLOCK_MESSAGE in first.stdout, first.stdout[-6000:]
        demoted, target = cluster(lab, old), cluster(lab, new)
        token = demoted["status"].get("demotionToken")
        assert demoted["spec"]["replica"]["primary"] == f"kms-pg-{new}" and token, "the old primary was demoted"
        assert target["spec"]["replica"]["primary"] == f"kms-pg-{old}"
        assert "promotionToken" not in target["spec"]["replica"]
        assert cnpg.recorded_token(target)[0] == token, "the first run recorded the token in the target"

        # 2. the old site is lost (its API no longer answers the control node); 3. the same command again
        second = run_playbook(
            "playbooks/switchover.yml",
            *switchover_args(new),
            inventory=lost_site_inventory(lab, tmp_path, old),
            lab_dir=lab.dir,
            timeout=900,
        )
        FIGURES["token: switchover again with the old site lost (s)"] = round(second.seconds, 1)
        assert second.returncode == 0, second.stdout[-8000:]
        # the load runs until the new site serves it through the VIP
        wait_until(lambda: any(r["ok"] and r["site"] == new for r in client.records), 30, f"a request served by {new}")
    finally:
        records = client.stop()
    promoted = cluster(lab, new)
    assert promoted["spec"]["replica"]["primary"] == f"kms-pg-{new}"
    assert promoted["spec"]["replica"].get("promotionToken") == token, "promoted without the old site's token"
    assert cnpg.promotion_done(promoted, token)
    done = report(lab, "switchover")
    assert done["result"] == "succeeded" and done["preflight"]["state"] == "resume", done
    steps = {s["name"]: s for s in done["steps"]}
    promotion = steps["wait_promotion"]["data"]
    assert (promotion["token"], promotion["token_source"], promotion["old_reachable"]) == (token, "recorded", False)
    assert steps["stop_old_kms"]["result"] == "skipped" and steps["backup_redis"]["result"] == "skipped"
    assert steps["restore_redis"]["result"] == "changed" and steps["switch_lb"]["result"] == "changed"
    assert done["data_loss"]["postgres"]["bound_seconds"] == 0
    assert all(r["failed"] == 0 for r in recap(second.stdout).values()), second.stdout[-4000:]
    assert {r["site"] for r in records if r["ok"]} == {old, new}
    assert len(client.acked) > 20
    assert lost_writes(lab, client, new) == []
    # what is left is a switchover's end state: the old site a healthy replica of the new primary, its KMS stopped
    assert psql(lab, new, "select pg_is_in_recovery()") == "f"
    wait_until(lambda: healthy_replica(lab, old), PROMOTE_TIMEOUT, f"{old} a healthy replica of {new}", interval=1)
    assert get(lab, old, "-n", NAMESPACE, "deployment", "kms")["spec"]["replicas"] == 0
    FIGURES["token: refused switchover, old site lost, re-run until the old site is a replica (s)"] = round(
        time.monotonic() - started, 1
    )
