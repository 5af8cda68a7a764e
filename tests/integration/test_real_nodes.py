"""The lab's real nodes (issue 15): per site a kubelet + containerd + kube-proxy in the site's own network namespace.

Pods here really run (busybox from the lab's image cache, no registry): they get an IP from the site's pod CIDR,
answer the host, reach each other through a Service (kube-proxy), reach the lab's S3, and ``kubectl logs/exec``
go through the apiserver, which verifies the kubelet's certificate. The last test starts a private lab, kills its
``up`` midway, recovers it with the next ``up`` and checks that ``down`` leaves nothing behind.
"""

# pytest injects the fixtures imported below as arguments of the same name
# pylint: disable=redefined-outer-name
from __future__ import annotations

import ipaddress
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.lab import images, kube, node, stack
from tests.lab.core import REPO_ROOT, Lab, LabError, pid_alive, wait_until
from tests.lab.kube_fixtures import kube_clients, kube_namespace, kube_sites, kubeconfig, kubectl  # noqa: F401  pylint: disable=unused-import

SITES = ("dc1", "dc2")
BUSYBOX = images.busybox_recipe().name
ON_REAL_NODE = {"nodeSelector": {node.REAL_LABEL: "true"}, "tolerations": [dict(node.REAL_TAINT, operator="Equal")]}


def api(entry):
    return kube.Api.from_entry(entry)


def nodes(entry):
    status, body = api(entry).get("/api/v1/nodes")
    assert status == 200, body
    return {n["metadata"]["name"]: n for n in body["items"]}


def is_ready(obj):
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj["status"].get("conditions", []))


def create(entry, namespace, obj):
    plural = {"Pod": "pods", "Service": "services", "Deployment": "deployments"}[obj["kind"]]
    prefix = "/apis/apps/v1" if obj["kind"] == "Deployment" else "/api/v1"

    def created():
        status, body = api(entry).request("POST", f"{prefix}/namespaces/{namespace}/{plural}", body=obj)
        if status == 403 and "serviceaccount" in str(body).lower():
            return None  # the namespace's default ServiceAccount is a moment late
        assert status == 201, body
        return body

    return wait_until(created, 30, f"{obj['kind']} {obj['metadata']['name']} to be created")


def shell_pod(name, script, labels=None):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": dict(
            ON_REAL_NODE,
            terminationGracePeriodSeconds=0,
            dnsPolicy="Default",
            containers=[
                {
                    "name": "main",
                    "image": BUSYBOX,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["/bin/sh", "-c", script],
                }
            ],
        ),
    }


def web_deployment(name):
    script = f"mkdir -p /www && echo {name} > /www/index.html && echo serving && exec httpd -f -v -p 8080 -h /www"
    template = shell_pod(name, script)
    template["spec"]["containers"][0]["ports"] = [{"containerPort": 8080}]
    template["spec"]["containers"][0]["readinessProbe"] = {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": template["metadata"], "spec": template["spec"]},
        },
    }


def deployment_pod(entry, namespace, name):
    def available():
        status, body = api(entry).get(f"/api/v1/namespaces/{namespace}/pods", params={"labelSelector": f"app={name}"})
        pods = [
            p for p in body.get("items", []) if status == 200 and p["status"].get("phase") == "Running" and is_ready(p)
        ]
        return pods[0] if pods else None

    try:
        return wait_until(available, node.POD_TIMEOUT, f"a Ready pod of Deployment {name}", interval=0.2)
    except Exception:
        _status, body = api(entry).get(f"/api/v1/namespaces/{namespace}/pods", params={"labelSelector": f"app={name}"})
        for pod in body.get("items", []):
            print(node.pod_report(api(entry), namespace, pod["metadata"]["name"]))
        raise


def site_kubectl(kubectl, site, namespace):  # noqa: F811  pylint: disable=redefined-outer-name
    return lambda *args, **kw: kubectl("--context", site, "-n", namespace, *args, **kw)


# -- nodes -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("site", SITES)
def test_real_node_is_ready_beside_kwok_nodes(kube_sites, site):
    entry = kube_sites[site]
    found = nodes(entry)
    real = found[entry["node"]["name"]]
    assert is_ready(real)
    assert real["status"]["nodeInfo"]["kubeletVersion"] == kube.kube_build.KUBE_VERSION
    assert real["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert {"type": "InternalIP", "address": entry["net"]["node_ip"]} in real["status"]["addresses"]
    labels = real["metadata"]["labels"]
    assert labels[node.REAL_LABEL] == "true" and labels["topology.kubernetes.io/region"] == site
    assert kube.KWOK_ANNOTATION not in real["metadata"].get("annotations", {})  # kwok must leave it to kubelet
    fakes = [n for name, n in found.items() if name != entry["node"]["name"]]
    assert len(fakes) == kube.NODES_PER_SITE and all(is_ready(n) for n in fakes)
    assert all(n["metadata"]["annotations"][kube.KWOK_ANNOTATION] == "fake" for n in fakes)
    # the real node's lease is kubelet's, not kwok's (kubelet retries its creation ~10 s after registering)
    path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{entry['node']['name']}"
    lease = wait_until(
        lambda: api(entry).get(path)[1] if api(entry).get(path)[0] == 200 else None, 30, f"{site} real node's lease"
    )
    assert lease["spec"]["holderIdentity"] == entry["node"]["name"]


@pytest.mark.parametrize("site", SITES)
def test_status_reports_node_processes(lab_handle, site):
    lab = Lab(lab_handle.dir)
    lab.load()
    entry = lab.state["sites"][site]["kube"]
    assert not kube.check(lab, entry)
    for component in ("containerd", "kubelet", "kube-proxy"):
        proc = lab.process(f"{site}-{component}")
        assert lab.process_alive(proc) and proc["netns"] == entry["net"]["netns"]
    rows = {row[0]: row for row in stack.status(lab)}
    assert rows[f"{site} kubernetes"][1] is True


# -- pods ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("site", SITES)
def test_deployment_pod_runs_on_the_real_node_and_answers_the_host(kube_sites, kube_namespace, site):
    entry = kube_sites[site]
    create(entry, kube_namespace, web_deployment("web"))
    pod = deployment_pod(entry, kube_namespace, "web")
    assert pod["spec"]["nodeName"] == entry["node"]["name"]
    assert pod["status"]["containerStatuses"][0]["containerID"].startswith("containerd://")  # not kwok's fake
    pod_ip = pod["status"]["podIP"]
    assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network(entry["net"]["pod_cidr"])
    with urllib.request.urlopen(f"http://{pod_ip}:8080/", timeout=5) as resp:
        assert resp.read().strip() == b"web"


@pytest.mark.parametrize("site", SITES)
def test_service_cluster_ip_is_reachable_from_another_pod(kube_sites, kube_namespace, kubectl, site):
    entry = kube_sites[site]
    create(entry, kube_namespace, web_deployment("web"))
    service = create(
        entry,
        kube_namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    cluster_ip = service["spec"]["clusterIP"]
    assert ipaddress.ip_address(cluster_ip) in ipaddress.ip_network(entry["service_cidr"])
    deployment_pod(entry, kube_namespace, "web")
    create(entry, kube_namespace, shell_pod("client", "exec sleep 3600"))
    node.wait_pod_running(api(entry), kube_namespace, "client", ready=False)
    run = site_kubectl(kubectl, site, kube_namespace)
    # kube-proxy syncs its rules a moment after the endpoints appear
    wait_until(
        lambda: (
            run(
                "exec", "client", "--", "timeout", "3", "wget", "-q", "-O", "-", f"http://{cluster_ip}/", check=False
            ).stdout.strip()
            == "web"
        ),
        30,
        f"{site} Service {cluster_ip} to answer a pod",
    )
    # in-cluster clients (the operators next) reach the apiserver at the `kubernetes` Service's first address
    proc = run("exec", "client", "--", "nc", "-w", "3", entry["service_ip"], "443", check=False, input_text="")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("site", SITES)
def test_logs_and_exec_through_the_apiserver_verify_the_kubelet(kube_sites, kube_namespace, kubectl, site):
    entry = kube_sites[site]
    create(entry, kube_namespace, shell_pod("talker", "echo hello-from-$(hostname); exec sleep 3600"))
    node.wait_pod_running(api(entry), kube_namespace, "talker", ready=False)
    run = site_kubectl(kubectl, site, kube_namespace)
    wait_until(lambda: "hello-from-talker" in run("logs", "talker").stdout, 10, "the pod's log line")
    assert run("exec", "talker", "--", "cat", "/proc/1/cmdline").stdout.startswith("sleep")
    # the kubelet serves a certificate of the site's CA for its node IP, and refuses anonymous callers
    context = ssl.create_default_context(cafile=entry["pki"]["ca"])
    url = f"https://{entry['net']['node_ip']}:{node.KUBELET_PORT}/pods"
    with pytest.raises(urllib.error.HTTPError) as refused, urllib.request.urlopen(url, context=context, timeout=5):
        pass
    assert refused.value.code == 401


@pytest.mark.parametrize("site", SITES)
def test_pod_reaches_the_lab_s3(lab, kube_sites, kube_namespace, kubectl, site):
    """A TCP connection from a pod to the store's HTTPS port (busybox has no TLS client that can verify; the
    pods that use S3 do, with the lab CA: the Redis backup CronJob and the Barman Cloud plugin in
    tests/integration/test_cnpg_operator_real.py)."""
    entry = kube_sites[site]
    address = urllib.parse.urlsplit(entry["s3_endpoint"])
    assert address.scheme == "https" and str(address.port) == str(lab["s3"]["ports"]["s3"])
    create(entry, kube_namespace, shell_pod("s3-client", "exec sleep 3600"))
    node.wait_pod_running(api(entry), kube_namespace, "s3-client", ready=False)
    run = site_kubectl(kubectl, site, kube_namespace)
    reached = run("exec", "s3-client", "--", "nc", "-w", "5", address.hostname, str(address.port), check=False)
    closed = run("exec", "s3-client", "--", "nc", "-w", "5", address.hostname, "1", check=False)
    assert reached.returncode == 0 and closed.returncode != 0, (reached.stderr, closed.stderr)


def test_a_failing_pod_is_reported_with_its_events_and_logs(kube_sites, kube_namespace):
    entry = kube_sites["dc1"]
    crasher = shell_pod("crasher", "echo about-to-fail; exit 3")
    # without a probe a started container counts as Ready at once, and a poll can land in the moment it runs
    crasher["spec"]["containers"][0]["readinessProbe"] = {"exec": {"command": ["false"]}, "periodSeconds": 1}
    create(entry, kube_namespace, crasher)
    with pytest.raises(LabError) as crashed:
        node.wait_pod_running(api(entry), kube_namespace, "crasher")
    assert "CrashLoopBackOff" in str(crashed.value) and "about-to-fail" in str(crashed.value)
    assert "BackOff" in str(crashed.value)  # the event
    missing = shell_pod("no-image", "true")
    missing["spec"]["containers"][0].update(image="docker.io/hanzo-kms-lab/not-built:1", imagePullPolicy="Never")
    create(entry, kube_namespace, missing)
    with pytest.raises(LabError, match="ErrImageNeverPull") as never:
        node.wait_pod_running(api(entry), kube_namespace, "no-image")
    assert "not-built:1" in str(never.value)


def test_sites_have_separate_network_namespaces(lab_handle, kube_sites):
    lab = Lab(lab_handle.dir)
    lab.load()
    inodes = {os.stat("/proc/self/ns/net").st_ino}
    for site in SITES:
        pid = lab.process(f"{site}-kube-proxy")["pid"]
        inodes.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
        assert (
            os.stat(f"/proc/{lab.process(f'{site}-kubelet')['pid']}/ns/net").st_ino
            == os.stat(f"/proc/{pid}/ns/net").st_ino
        )
    assert len(inodes) == 3  # host, dc1, dc2
    cidrs = [ipaddress.ip_network(kube_sites[s]["net"]["pod_cidr"]) for s in SITES]
    assert not cidrs[0].overlaps(cidrs[1])
    # each kube-proxy programs its own namespace; the host's iptables get nothing
    host_rules = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    assert "KUBE-SERVICES" not in host_rules
    for site in SITES:
        rules = subprocess.run(
            ["ip", "netns", "exec", kube_sites[site]["net"]["netns"], "iptables-save"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "KUBE-SERVICES" in rules and kube_sites[site]["service_ip"] in rules


# -- lifecycle -------------------------------------------------------------------------------------------------------
def _host_snapshot():
    def run(*argv):
        return subprocess.run(list(argv), capture_output=True, text=True, check=True).stdout

    return {"iptables": run("iptables-save").count("\n-A"), "nat": run("iptables-save", "-t", "nat").count("\n-A")}


def test_a_killed_up_is_recovered_and_down_leaves_nothing():  # pylint: disable=too-many-locals
    before = _host_snapshot()
    lab_dir = Path(tempfile.mkdtemp(prefix="hanzo-kms-lab-nodes-"))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    with subprocess.Popen(
        [sys.executable, "-m", "tests.lab", "up", "--dir", str(lab_dir)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    ) as killed:

        def kubelet_started():
            state = json.loads((lab_dir / "state.json").read_text(encoding="utf-8"))
            return any(p["name"] == "dc1-kubelet" for p in state["processes"])

        wait_until(kubelet_started, 180, "the first up to start dc1's kubelet")
        os.killpg(killed.pid, signal.SIGKILL)  # the up and nothing else: its servers run in their own sessions
        killed.wait()
    assert node.netns_exists(node.names(lab_dir, "dc1")["netns"])
    lab = Lab(lab_dir)
    try:
        messages = []
        stack.up(lab, log=messages.append)
        assert "interrupted or broken run" in messages[0]
        entry = lab.state["sites"]["dc1"]["kube"]
        create(entry, "default", shell_pod("left-running", "exec sleep 3600"))
        node.wait_pod_running(api(entry), "default", "left-running", ready=False)
        pids = [p["pid"] for p in lab.state["processes"]]
        sandboxes = [d.name for d in lab_dir.glob("*/containerd/*/io.containerd.grpc.v1.cri/sandboxes/*")]
        assert sandboxes
        rows = {row[0]: row for row in stack.status(lab)}
        assert rows["dc1 kubernetes"][1] and "real node dc1-real Ready" in rows["dc1 kubernetes"][2]
        lab.stop_process(lab.process("dc1-kube-proxy"))
        rows = {row[0]: row for row in stack.status(lab)}
        assert not rows["dc1 kubernetes"][1] and "dc1-kube-proxy is not running" in rows["dc1 kubernetes"][2]
    finally:
        stack.down(Lab(lab_dir), log=lambda _msg: None)
    assert node.leftovers(lab_dir) == []
    assert not any(pid_alive(pid) for pid in pids)
    assert not lab_dir.exists()
    netns_list = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    digest = node.lab_hash(lab_dir)
    assert digest not in netns_list and digest not in links
    with open("/proc/mounts", encoding="utf-8") as mounts:
        assert str(lab_dir) not in mounts.read()
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(lab_dir) not in processes
    assert _host_snapshot() == before
    cached = os.listdir(node.CNI_RESULTS_DIR) if os.path.isdir(node.CNI_RESULTS_DIR) else []
    assert not [name for name in cached if any(sandbox in name for sandbox in sandboxes)]  # libcni's cache
