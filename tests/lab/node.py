"""Lab component: one real Kubernetes node per site, each site in its own network namespace (issue 15), on the lab's
network (issue 16).

The lab network (``<h>`` = a short hash of the lab dir, so two labs on one machine never share a name or an address):
one Linux bridge ``hk<h>-net`` in the host namespace, ``10.250.<slot>.0/26``; ``slot`` is picked per lab from the
hash, skipping subnets the host already routes. The host (control node, object store) is ``.1``, each site's node
``.2``, ``.3``, the LB hosts ``.10``, ``.11`` (tests/lab/lbhost.py): hosts on one segment, as in a data center
network, with no routing on the machine itself. Cutting a host's port on the bridge partitions it from all others.

Per site:

- network namespace ``hkms-<h>-<site>``, joined to the bridge by the veth pair ``hk<h>-<site>`` (bridge port) /
  ``eth0`` (the node IP and the apiserver address). The site's control plane, containerd, kubelet and kube-proxy run
  inside it, so each kube-proxy has its own iptables;
- pods get ``10.244.<2*slot+i>.0/24`` from CNI ``bridge`` (``cni0``, ``ipMasq``) + ``host-local`` + ``portmap``
  (``loopback`` is added by containerd itself); the host routes that /24 through the node, so tests reach pod IPs;
- containerd (Debian 1.6 + runc) with root, state, socket, runc root and pod network namespaces under the lab dir;
- kubelet (node ``<site>-real``, tainted and labelled ``node-role.hanzo.kms/real``) and kube-proxy (iptables).

Nothing here touches the host's iptables; ``teardown`` removes what ``up`` made, found from the lab dir alone
(processes, containers, mounts, namespaces, veths, the bridge), so it also recovers a killed ``up``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from tests.lab import containerd, images
from tests.lab.core import NETNS_RUN_DIR, LabError, mounts_under, pid_alive, require_binary, unmount_under, wait_until

SITE_NET = ipaddress.ip_network("10.250.0.0/16")  # a /24 per lab (slot), of which the lab network is the first /26
LAB_NET_PREFIX = 26
FIRST_NODE_HOST = 2  # the sites' nodes: .2, .3 (the host is .1)
FIRST_LB_HOST = 10  # the LB hosts: .10, .11
LB_HOSTS = ("lb1", "lb2")
LAB_HOSTS = ("dc1", "dc2", *LB_HOSTS)  # every namespace a lab makes
POD_NET = ipaddress.ip_network("10.244.0.0/16")  # a /23 per lab, a /24 per site
SLOTS = 128
CNI_RESULTS_DIR = "/var/lib/cni/results"  # libcni's cache (not configurable in containerd 1.6)
CONTAINER_LOG_LINKS = "/var/log/containers"  # kubelet's legacy log symlinks (hard-coded in kubelet)
KUBELET_DEVICE_PLUGINS = "/var/lib/kubelet/device-plugins"  # kubelet's device-plugin socket (hard-coded too)
REAL_LABEL = "node-role.hanzo.kms/real"
# Until every workload of the collection has a real image, only pods that tolerate this taint land on the real node
# (the KMS and CNPG pods of the roles stay on kwok's fake nodes).
REAL_TAINT = {"key": REAL_LABEL, "value": "true", "effect": "NoSchedule"}
REAL_ZONE = "zone-a"
KUBELET_PORT = 10250
START_TIMEOUT = float(os.environ.get("HANZO_KMS_NODE_START_TIMEOUT", "90"))
POD_TIMEOUT = float(os.environ.get("HANZO_KMS_POD_TIMEOUT", "60"))
PROBE_NAMESPACE = "hanzo-kms-lab"
FATAL_WAITING = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerError",
    "CreateContainerConfigError",
    "RunContainerError",
}


# -- names and addresses ---------------------------------------------------------------------------------------------
def lab_hash(lab_dir):
    return hashlib.sha256(str(Path(lab_dir).resolve()).encode()).hexdigest()[:8]


def names(lab_dir, host):
    """Host-wide names of a lab host's network objects (a site's or an LB host's), derived from the lab dir (link
    names: at most 15 chars)."""
    digest = lab_hash(lab_dir)
    return {"netns": f"hkms-{digest}-{host}", "veth": f"hk{digest}-{host}", "cni_network": f"hkms-{digest}-{host}"}


def bridge_name(lab_dir):
    return f"hk{lab_hash(lab_dir)}-net"


def lab_network(slot):
    return list(list(SITE_NET.subnets(new_prefix=24))[slot].subnets(new_prefix=LAB_NET_PREFIX))[0]


def addresses(slot, index):
    """A site's addresses: ``host_ip`` (the host on the lab network, where pods reach the object store), ``node_ip``,
    its pods' /24."""
    link = lab_network(slot)
    pods = list(POD_NET.subnets(new_prefix=24))[2 * slot + index]
    return {
        "link": str(link),
        "prefix": LAB_NET_PREFIX,
        "host_ip": str(link[1]),
        "node_ip": str(link[FIRST_NODE_HOST + index]),
        "pod_cidr": str(pods),
        "pod_gateway": str(pods[1]),
    }


def _run(argv, what, check=True, timeout=60, **kwargs):
    proc = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, check=False, timeout=timeout, **kwargs
    )
    if check and proc.returncode != 0:
        raise LabError(f"{what} failed: {' '.join(str(a) for a in argv)}: {(proc.stderr or proc.stdout).strip()}")
    return proc


def _host_networks():
    """IPv4 networks the host already has addresses or routes in (any table)."""
    nets = []
    for argv in (["ip", "-j", "-4", "addr"], ["ip", "-j", "-4", "route", "show", "table", "all"]):
        for item in json.loads(_run(argv, "listing host addresses").stdout or "[]"):
            for info in item.get("addr_info", [item]):
                dst = info.get("local") or info.get("dst")
                if not dst or dst == "default":
                    continue
                prefix = info.get("prefixlen")
                with contextlib.suppress(ValueError):
                    nets.append(ipaddress.ip_network(f"{dst}/{prefix}" if prefix else dst, strict=False))
    return nets


@contextlib.contextmanager
def _host_lock():
    """Serialises subnet choice between labs on this machine (two ``up`` at once would pick the same slot)."""
    with open(Path(tempfile.gettempdir()) / "hanzo-kms-lab-net.lock", "a", encoding="ascii") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def choose_slot(lab_dir):
    """The lab's address slot: derived from the lab dir's hash, moved on while the host already uses its subnets."""
    taken = _host_networks()
    first = int(lab_hash(lab_dir), 16) % SLOTS
    for step in range(SLOTS):
        slot = (first + step) % SLOTS
        wanted = [list(SITE_NET.subnets(new_prefix=24))[slot], list(POD_NET.subnets(new_prefix=23))[slot]]
        if not any(w.overlaps(t) for w in wanted for t in taken):
            return slot
    raise LabError(f"no free lab subnet left in {SITE_NET} / {POD_NET}: the host routes them all")


def reserve_slot(lab):
    """The lab's address slot, chosen once and kept in its state (``net_slot``): the S3 certificate names the host
    addresses of the sites' links before the links exist."""
    slot = lab.state.get("net_slot")
    if slot is None:
        slot = choose_slot(lab.dir)
        lab.state["net_slot"] = slot
        lab.save()
    return slot


def site_links(lab, count):
    """Each site's addresses by site index (``addresses``): ``host_ip`` where pods reach the host's services,
    ``node_ip`` where the host reaches the site's node (its node ports)."""
    with _host_lock():
        slot = reserve_slot(lab)
    return [addresses(slot, index) for index in range(count)]


# -- the site's network namespace ---------------------------------------------------------------------------------
def netns_exists(name):
    return os.path.exists(f"{NETNS_RUN_DIR}/{name}")


def link_exists(name):
    return os.path.exists(f"/sys/class/net/{name}")


def bridge_up(lab):
    """The lab network's bridge with the host's address (``.1``), made once; returns (slot, bridge name)."""
    require_binary("ip", "iproute2")
    with _host_lock():
        slot = reserve_slot(lab)
        bridge = bridge_name(lab.dir)
        if not link_exists(bridge):
            link = lab_network(slot)
            for argv in (
                ["ip", "link", "add", bridge, "type", "bridge"],
                ["ip", "addr", "add", f"{link[1]}/{LAB_NET_PREFIX}", "dev", bridge],
                ["ip", "link", "set", bridge, "up"],
            ):
                _run(argv, "setting up the lab network")
    return slot, bridge


def host_up(lab, host, address):
    """A lab host: namespace ``hkms-<h>-<host>`` with ``eth0`` = ``address`` on the lab network, default route via the
    host. Returns its names and addresses."""
    slot, bridge = bridge_up(lab)
    net = names(lab.dir, host)
    net.update(slot=slot, bridge=bridge, host_ip=str(lab_network(slot)[1]), address=address)
    _delete_network(net["netns"], net["veth"])  # what a killed run left behind
    netns, veth = net["netns"], net["veth"]
    for argv in (
        ["ip", "netns", "add", netns],
        ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns],
        ["ip", "link", "set", veth, "master", bridge],
        ["ip", "link", "set", veth, "up"],
        ["ip", "-n", netns, "link", "set", "lo", "up"],
        ["ip", "-n", netns, "addr", "add", f"{address}/{LAB_NET_PREFIX}", "dev", "eth0"],
        ["ip", "-n", netns, "link", "set", "eth0", "up"],
        ["ip", "-n", netns, "route", "add", "default", "via", net["host_ip"]],
    ):
        _run(argv, f"setting up the {host} network namespace")
    return net


def network_up(lab, site, index):
    """Create the site's namespace on the lab network; return ``state["sites"][site]["kube"]["net"]``."""
    slot, _bridge = bridge_up(lab)
    wanted = addresses(slot, index)
    net = host_up(lab, site, wanted["node_ip"])
    net.update(wanted)
    for argv in (
        # the host reaches pod IPs through the node (tests and the probe call pods by IP)
        ["ip", "route", "add", net["pod_cidr"], "via", net["node_ip"], "dev", net["bridge"]],
        # the namespace routes between its pods' bridge and eth0 (the host's own forwarding stays off)
        ["ip", "netns", "exec", net["netns"], "sysctl", "-qw", "net.ipv4.ip_forward=1"],
    ):
        _run(argv, f"setting up the {site} network namespace")
    return net


def set_link(lab_dir, host, up):
    """Plug or unplug a lab host's port on the lab network (a partition: its processes keep running)."""
    _run(["ip", "link", "set", names(lab_dir, host)["veth"], "up" if up else "down"], f"setting {host}'s link")


def _delete_network(netns, veth):
    if netns_exists(netns):
        _run(["ip", "netns", "delete", netns], f"deleting network namespace {netns}")
    if link_exists(veth):  # gone with the namespace unless a process still holds it
        _run(["ip", "link", "delete", veth], f"deleting veth {veth}", check=False)


# -- containerd ----------------------------------------------------------------------------------------------------
def _containerd_config(directory, net, sandbox_image):
    cni_dir = directory / "cni"
    cni_dir.mkdir(parents=True, exist_ok=True)
    conflist = {
        "cniVersion": "1.0.0",
        "name": net["cni_network"],
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "isDefaultGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": net["pod_cidr"], "gateway": net["pod_gateway"]}]],
                    "dataDir": str(directory / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (cni_dir / "10-lab.conflist").write_text(json.dumps(conflist, indent=2) + "\n", encoding="utf-8")
    config = containerd.config_text(directory, sandbox_image, cni_dir)
    path = directory / "config.toml"
    path.write_text(config, encoding="utf-8")
    return path


def base_images(log=print):
    """{name: OCI archive} of the images every site's containerd gets (sandbox + probe shell)."""
    return images.ensure_all([images.pause_recipe(), images.busybox_recipe()], log=log)


def operator_images(log=print):
    """{name: OCI archive} of the images the pods of operator mode run on a node: the CNPG operator (also the instance
    pods' bootstrap container), the Barman Cloud plugin and its sidecar, the PostgreSQL operand, and what install.yml
    deploys beside the database: Redis (the lab's chart), the KMS stand-in and the Redis backup CronJob's tools."""
    pinned = images.operator_image_names()
    return images.ensure_all(
        [
            images.operator_recipe(pinned["operator"]),
            images.plugin_recipe(pinned["plugin"]),
            images.sidecar_recipe(pinned["sidecar"]),
            images.postgres_recipe(),
            images.redis_recipe(),
            images.kms_standin_recipe(),
            images.backup_tools_recipe(),
        ],
        log=log,
    )


def import_images(entry, archives):
    """Import ``archives`` into a site's containerd (its state entry) in parallel, one ``ctr import`` per image;
    returns {name: seconds} of the images imported (those it already held are skipped)."""
    ctr = images.Containerd(entry["ctr"], entry["address"])
    present = ctr.image_digests()
    wanted = {name: path for name, path in archives.items() if present.get(name) != images.archive_digest(path)}
    seconds = {}

    def one(name):
        started = time.monotonic()
        images.import_into(ctr, {name: wanted[name]})
        seconds[name] = round(time.monotonic() - started, 1)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(wanted))) as pool:
        for future in [pool.submit(one, name) for name in wanted]:
            future.result()
    return seconds


def containerd_start(lab, site, net, spawn):
    """Start the site's containerd in its namespace; return its state entry (wait with ``containerd_ready``)."""
    directory = lab.path(site, "containerd", "x").parent
    config = _containerd_config(directory, net, images.pause_recipe().name)
    spawn("containerd", [require_binary("containerd", "containerd"), "--config", config], netns=net["netns"])
    return {
        "dir": str(directory),
        "address": str(directory / "containerd.sock"),
        "config": str(config),
        "ctr": require_binary("ctr", "containerd"),
        "runc_root": str(directory / "runc"),
    }


def wait_containerd(lab, site, entry):
    """Wait until the site's containerd answers ``ctr version`` (its process dying fails at once); its client."""
    ctr = images.Containerd(entry["ctr"], entry["address"])

    def answers():
        return _run(ctr.ctr_argv("version"), "ctr version", check=False, timeout=10).returncode == 0

    lab.wait_process(f"{site}-containerd", answers, START_TIMEOUT, f"{site} containerd on {entry['address']}")
    return ctr


def containerd_ready(lab, site, entry, archives):
    """Wait for containerd, then import the base images into its CRI namespace."""
    images.import_into(wait_containerd(lab, site, entry), archives)


# -- kubelet and kube-proxy --------------------------------------------------------------------------------------
def kubelet_start(site, net, kube_entry, pki, bins, spawn, tainted=True, cluster_dns=None):
    """Write kubelet's and kube-proxy's configs and start both in the site's namespace. ``tainted``: the node
    registers with REAL_TAINT (the default lab; operator mode taints the kwok nodes instead). ``cluster_dns``: the
    address of the site's cluster DNS (tests/lab/dns.py, operator mode), given to pods with ``dnsPolicy:
    ClusterFirst``; without it pods get no resolver."""
    # pylint: disable=too-many-locals,too-many-arguments,too-many-positional-arguments
    directory = Path(kube_entry["dir"]).parent / "node"
    directory.mkdir(parents=True, exist_ok=True)
    node_name = kube_entry["node"]["name"]
    kubelet_config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": net["node_ip"],
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": str(pki["kubelet.crt"]),
        "tlsPrivateKeyFile": str(pki["kubelet.key"]),
        # the apiserver authenticates with its kubelet client certificate; other callers are reviewed by it
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki["ca.crt"])},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{kube_entry['containerd']['address']}",
        # this machine: cgroup v1 with no systemd delegation, and a process that cannot set up QoS cgroups
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "failSwapOn": False,
        "resolvConf": "",  # no upstream resolver: only the cluster domain resolves (and only with cluster_dns)
        "clusterDomain": "cluster.local",
        **({"clusterDNS": [cluster_dns]} if cluster_dns else {}),
        "podLogsDir": str(directory / "pod-logs"),
        # images cannot be pulled again once garbage-collected, and a shared disk must not evict the lab's pods
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "1Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "registerWithTaints": [REAL_TAINT] if tainted else [],
        "serializeImagePulls": False,
        "maxPods": 110,
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "10s",
        "shutdownGracePeriod": "0s",
    }
    kubelet_yaml = directory / "kubelet.yaml"
    kubelet_yaml.write_text(yaml.safe_dump(kubelet_config), encoding="utf-8")
    labels = {
        REAL_LABEL: "true",
        "topology.kubernetes.io/zone": REAL_ZONE,
        "topology.kubernetes.io/region": site,
        "type": "real",
    }
    spawn(
        "kubelet",
        [
            bins["kubelet"],
            f"--config={kubelet_yaml}",
            f"--kubeconfig={pki['kubelet.kubeconfig']}",
            f"--root-dir={directory / 'kubelet'}",
            f"--cert-dir={directory / 'kubelet' / 'pki'}",
            f"--hostname-override={node_name}",
            f"--node-ip={net['node_ip']}",
            "--node-labels=" + ",".join(f"{k}={v}" for k, v in labels.items()),
            "--v=1",
        ],
        netns=net["netns"],
    )
    proxy_config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(pki["kube-proxy.kubeconfig"])},
        "hostnameOverride": node_name,
        "clusterCIDR": net["pod_cidr"],
        "bindAddress": net["node_ip"],
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "nodePortAddresses": ["primary"],
        # nf_conntrack_max is machine-wide and read-only in a network namespace: leave it as it is
        "conntrack": {"maxPerCore": 0, "min": 0},
        "iptables": {"syncPeriod": "30s", "minSyncPeriod": "0s"},
    }
    proxy_yaml = directory / "kube-proxy.yaml"
    proxy_yaml.write_text(yaml.safe_dump(proxy_config), encoding="utf-8")
    spawn("kube-proxy", [bins["kube-proxy"], f"--config={proxy_yaml}", "--v=1"], netns=net["netns"])
    return {"dir": str(directory), "kubelet_config": str(kubelet_yaml), "kube_proxy_config": str(proxy_yaml)}


def node_ready(api, name):
    status, body = api.get(f"/api/v1/nodes/{name}")
    if status != 200:
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in body.get("status", {}).get("conditions", []))


# -- pods: wait for Running, or fail with what Kubernetes says ---------------------------------------------------
def pod_report(api, namespace, name):
    """Phase, container states, events and container logs of a pod: the text a failed wait shows."""
    # pylint: disable=too-many-locals
    lines = []
    status, pod = api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    if status != 200:
        return f"pod {namespace}/{name}: {status} {pod}"
    st = pod.get("status", {})
    lines.append(
        f"pod {namespace}/{name} on {pod['spec'].get('nodeName') or '(unscheduled)'}: phase "
        f"{st.get('phase')}, IP {st.get('podIP') or '-'}"
    )
    for cond in st.get("conditions", []):
        if cond.get("status") != "True":
            lines.append(
                f"  condition {cond['type']}={cond['status']} {cond.get('reason', '')} "
                f"{cond.get('message', '')}".rstrip()
            )
    for cstatus in st.get("initContainerStatuses", []) + st.get("containerStatuses", []):
        state = cstatus.get("state", {})
        for kind, detail in state.items():
            lines.append(
                f"  container {cstatus['name']}: {kind} {detail.get('reason', '')} "
                f"{detail.get('message', '')} (restarts {cstatus.get('restartCount', 0)})".rstrip()
            )
    _status, events = api.get(
        f"/api/v1/namespaces/{namespace}/events", params={"fieldSelector": f"involvedObject.name={name}"}
    )
    lines.append("  events:")
    for event in (events or {}).get("items", [])[-15:] if isinstance(events, dict) else []:
        lines.append(f"    {event.get('type')} {event.get('reason')}: {event.get('message', '').strip()}")
    for cstatus in st.get("initContainerStatuses", []) + st.get("containerStatuses", []):
        for previous in (False, True):
            params = {"container": cstatus["name"], "tailLines": "20"}
            if previous:
                params["previous"] = "true"
            code, text = api.get(f"/api/v1/namespaces/{namespace}/pods/{name}/log", params=params)
            if code == 200 and text:
                lines.append(f"  logs of {cstatus['name']}{' (previous)' if previous else ''}:")
                lines += [f"    {line}" for line in str(text).splitlines()]
    return "\n".join(lines)


def wait_pod_running(api, namespace, name, timeout=POD_TIMEOUT, ready=True):
    """Wait until the pod runs (and is Ready); LabError with events and logs when it fails or hangs."""

    def check():
        status, pod = api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
        if status != 200:
            return None
        st = pod.get("status", {})
        for cstatus in st.get("initContainerStatuses", []) + st.get("containerStatuses", []):
            reason = cstatus.get("state", {}).get("waiting", {}).get("reason")
            if reason in FATAL_WAITING:
                raise LabError(f"pod {namespace}/{name} is in {reason}:\n{pod_report(api, namespace, name)}")
        if st.get("phase") in ("Failed", "Succeeded"):
            raise LabError(f"pod {namespace}/{name} ended ({st['phase']}):\n{pod_report(api, namespace, name)}")
        conds = {c["type"]: c["status"] for c in st.get("conditions", [])}
        if st.get("phase") == "Running" and (not ready or conds.get("Ready") == "True"):
            return pod
        return None

    try:
        return wait_until(
            check, timeout, f"pod {namespace}/{name} to be Running{' and Ready' if ready else ''}", interval=0.2
        )
    except LabError as exc:
        if "is in" in str(exc) or "ended" in str(exc):
            raise
        raise LabError(f"{exc}\n{pod_report(api, namespace, name)}") from None


def probe_pod_manifest(node_name, name="probe"):
    """A busybox pod on the real node that serves HTTP on 8080 and says so in its log."""
    script = (
        "mkdir -p /www && echo hanzo-kms-probe > /www/index.html && echo probe serving on 8080 && "
        "exec httpd -f -v -p 8080 -h /www"
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "hanzo-kms-lab-probe"}},
        "spec": {
            "nodeName": node_name,
            "automountServiceAccountToken": False,
            "dnsPolicy": "Default",
            "tolerations": [dict(REAL_TAINT, operator="Equal")],
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "probe",
                    "image": images.busybox_recipe().name,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["/bin/sh", "-c", script],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                }
            ],
        },
    }


def run_probe(api, kubectl, kube_entry, s3_endpoint):
    """Prove the site's node runs pods: Running, HTTP from the host, S3 from inside, logs and exec through the
    apiserver (which verifies the kubelet's certificate). Returns seconds to Running."""
    # pylint: disable=too-many-locals
    site = kube_entry["context"]
    started = time.monotonic()
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": PROBE_NAMESPACE}}
    api.request("POST", "/api/v1/namespaces", body=namespace)
    manifest = probe_pod_manifest(kube_entry["node"]["name"])
    path = f"/api/v1/namespaces/{PROBE_NAMESPACE}/pods"

    def created():  # the namespace's default ServiceAccount appears a moment after the namespace
        status, body = api.request("POST", path, body=manifest)
        if status in (201, 409):
            return True
        if status == 403 and "serviceaccount" in str(body).lower():
            return False
        raise LabError(f"{site}: creating the probe pod failed ({status}): {body}")

    wait_until(created, 30, f"{site} probe pod to be created")
    pod = wait_pod_running(api, PROBE_NAMESPACE, "probe")
    running = round(time.monotonic() - started, 1)
    pod_ip = pod["status"]["podIP"]
    if ipaddress.ip_address(pod_ip) not in ipaddress.ip_network(kube_entry["net"]["pod_cidr"]):
        raise LabError(f"{site} probe pod got {pod_ip}, outside the site's pod CIDR {kube_entry['net']['pod_cidr']}")
    with urllib.request.urlopen(f"http://{pod_ip}:8080/", timeout=5) as resp:
        if resp.read().strip() != b"hanzo-kms-probe":
            raise LabError(f"{site} probe pod at {pod_ip}:8080 answered something else")
    code, logs = api.get(f"/api/v1/namespaces/{PROBE_NAMESPACE}/pods/probe/log")
    if code != 200 or "probe serving on 8080" not in str(logs):
        raise LabError(f"{site}: logs of the probe pod through the apiserver failed ({code}): {logs}")
    # exec goes apiserver -> kubelet (certificate verified) -> containerd's stream server; S3 is on the host. A TCP
    # connection only: busybox's TLS client cannot talk to the store (the pods that use S3 verify it with the lab CA,
    # tests/integration/test_real_nodes.py).
    s3_address = urllib.parse.urlsplit(s3_endpoint) if s3_endpoint else None
    command = ["nc", "-w", "5", s3_address.hostname, str(s3_address.port)] if s3_address else ["true"]
    proc = kubectl("exec", "-n", PROBE_NAMESPACE, "probe", "--", *command)
    if proc.returncode != 0:
        what = f"reach S3 at {s3_endpoint}" if s3_endpoint else "run a command"
        raise LabError(
            f"{site}: the probe pod cannot {what} (kubectl exec, exit {proc.returncode}): "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    api.request("DELETE", f"{path}/probe", body={"gracePeriodSeconds": 0})
    return running


# -- teardown ------------------------------------------------------------------------------------------------------
def _under(path, lab_dir):
    return path == lab_dir or path.startswith(lab_dir + "/")


def _ancestors():
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
                pid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _lab_pids(lab_dir, site="*"):
    """Processes of the lab's containers that no recorded pid covers: container init processes (their runc state
    is under the lab dir) and containerd shims (they outlive containerd by design; their socket is under it), and
    every process in a site's network namespace. ``site``: one site's, or ``*`` for all."""
    found = set()
    for runc_state in Path(lab_dir).glob(f"{site}/containerd/runc/*/*/state.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            recorded = json.loads(runc_state.read_text(encoding="utf-8"))
            pid = int(recorded["init_process_pid"])
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
                started = int(stat.read().rsplit(")", 1)[1].split()[19])
            if started == int(recorded["init_process_start"]):  # not a recycled pid
                found.add(pid)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if not os.path.basename(os.readlink(entry / "exe")).startswith("containerd-shim"):
                continue
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            if f"{lab_dir}/{'' if site == '*' else site + '/'}" in cmdline:
                found.add(int(entry.name))
    # anything still inside a site's namespace (a process whose pid never reached the state file of a killed up)
    inodes = set()
    for netns in Path(NETNS_RUN_DIR).glob(f"hkms-{lab_hash(lab_dir)}-{site}"):
        with contextlib.suppress(OSError):
            inodes.add((os.stat(netns).st_dev, os.stat(netns).st_ino))
    if inodes:
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if (
                    entry.name.isdigit()
                    and (os.stat(entry / "ns" / "net").st_dev, os.stat(entry / "ns" / "net").st_ino) in inodes
                ):
                    found.add(int(entry.name))
    return sorted(pid for pid in found - _ancestors() if pid_alive(pid))


def _site_host_processes(lab_dir, site):
    """The site's own services that run on the host (a per-site lab's object store ``<site>-s3``): they die with it."""
    try:
        state = json.loads((Path(lab_dir) / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [p["pid"] for p in state.get("processes", []) if p["name"] == f"{site}-s3" and pid_alive(p["pid"])]


def lose_site(lab_dir, site):
    """Power a site off, as a lost data center: every process of its network namespace (control plane, containerd,
    kubelet, kube-proxy, CoreDNS) and of its containers (PostgreSQL, Redis, the KMS, the operator) stops at once,
    with no clean shutdown and no final checkpoint or WAL archive. Frozen first (SIGSTOP) so that nothing restarts
    what is being killed. The namespace, its veth and the data on disk stay (``lab down`` removes them). Returns how
    many processes were killed."""
    lab_dir = str(Path(lab_dir).resolve())
    pids = _lab_pids(lab_dir, site) + _site_host_processes(lab_dir, site)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    wait_until(lambda: not any(pid_alive(p) for p in pids), 20, f"{site}'s processes to die")
    return len(pids)


def power_on(lab, host):
    """Power a host lost by ``lose_site`` (or ``lbhost.lose_host``) on again, as a data center that comes back: its
    link plugged in and every recorded process of it started again with its recorded command line, environment and
    network namespace, in the order they first started; its data on disk is what the loss left (kubelet restarts the
    pods, containerd cleans up the killed containers). Returns the names of the processes started."""
    set_link(lab.dir, host, up=True)
    started = []
    for proc in list(lab.state.get("processes", [])):
        if not proc["name"].startswith(f"{host}-") or lab.process_alive(proc):
            continue
        if "argv" not in proc:
            raise LabError(f"{proc['name']} was started before the lab recorded command lines: restart the lab")
        lab.state["processes"].remove(proc)
        lab.spawn(
            proc["name"],
            proc["argv"],
            env=proc.get("env"),
            cwd=proc.get("cwd"),
            user=proc.get("user"),
            stop_signal=proc.get("stop_signal", "SIGTERM"),
            netns=proc.get("netns"),
        )
        started.append(proc["name"])
        if proc["name"] == f"{host}-containerd":  # kubelet exits at once when containerd does not answer yet
            wait_containerd(lab, host, lab.state["sites"][host]["kube"]["containerd"])
    return started


def _kill_containers(lab_dir):
    """runc delete --force every container under the lab's runc roots (kills its processes, removes its cgroups)."""
    runc = shutil.which("runc")
    if not runc:
        return
    for root in Path(lab_dir).glob("*/containerd/runc/*"):
        if not root.is_dir():
            continue
        for container in root.iterdir():
            if (container / "state.json").exists():
                _run([runc, "--root", root, "delete", "--force", container.name], "runc delete", check=False)


def stop_pods(lab, state):
    """Before the processes stop: stop kubelet (it would restart containers), then have containerd kill and delete
    every task, so the shims exit and remove their sockets (they outlive containerd otherwise)."""
    for site in (state or {}).get("sites", {}).values():
        kube = site.get("kube", {})
        name = f"{kube.get('context')}-kubelet"
        if name in kube.get("processes", []):
            with contextlib.suppress(LabError):
                lab.stop_process(lab.process(name))
        entry = kube.get("containerd")
        with contextlib.suppress(LabError, KeyError):
            if not lab.process_alive(lab.process(f"{kube.get('context')}-containerd")):
                continue
            images.Containerd(entry["ctr"], entry["address"]).delete_tasks()


def _shim_sockets(lab_dir):
    """Shim sockets live in containerd's fixed /run/containerd/s; each bundle under the lab dir names its own."""
    sockets = []
    for address in Path(lab_dir).glob("*/containerd/state/io.containerd.runtime.v2.task/*/*/address"):
        with contextlib.suppress(OSError):
            path = address.read_text(encoding="utf-8").strip().removeprefix("unix://")
            if path and os.path.exists(path):
                sockets.append(path)
    return sockets


def teardown(lab_dir, sites=LAB_HOSTS):
    """Remove what the nodes left, from the lab dir alone: container and shim processes, mounts, the network
    namespaces and veths of ``sites`` (any lab hosts: sites and LB hosts), the lab network's bridge, libcni cache
    files and kubelet's log links. Safe to call twice."""
    lab_dir = str(Path(lab_dir).resolve())
    _kill_containers(lab_dir)
    pids = _lab_pids(lab_dir)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(pid_alive(p) for p in pids), 20, f"the lab's leftover processes {pids} to die")
    for socket_path in _shim_sockets(lab_dir):
        with contextlib.suppress(OSError):
            os.unlink(socket_path)
    unmount_under(lab_dir)
    for site in sites:
        net = names(lab_dir, site)
        _delete_network(net["netns"], net["veth"])
    if link_exists(bridge_name(lab_dir)):
        _run(["ip", "link", "delete", bridge_name(lab_dir)], "deleting the lab network's bridge", check=False)
    for cached in _cni_cache_files(lab_dir, sites):
        with contextlib.suppress(OSError):
            cached.unlink()
    with contextlib.suppress(OSError):
        for link in Path(CONTAINER_LOG_LINKS).iterdir():
            if link.is_symlink() and _under(os.readlink(link), lab_dir):
                link.unlink()
    _remove_kubelet_host_paths()


def _cni_cache_files(lab_dir, sites):
    """libcni's cache entries of the lab (``<network>-<sandbox id>-<interface>``: its own networks, and containerd's
    ``cni-loopback`` whose entries name a pod network namespace under the lab dir); a pod that was not torn down
    through CNI leaves them."""
    prefixes = tuple(names(lab_dir, site)["cni_network"] + "-" for site in sites)
    found = []
    with contextlib.suppress(OSError):
        for cached in Path(CNI_RESULTS_DIR).iterdir():
            if cached.name.startswith(prefixes):
                found.append(cached)
                continue
            with contextlib.suppress(OSError, ValueError, AttributeError):
                result = json.loads(cached.read_text(encoding="utf-8")).get("result") or {}
                if any(_under(iface.get("sandbox", ""), lab_dir) for iface in result.get("interfaces", [])):
                    found.append(cached)
    return found


def _remove_kubelet_host_paths():
    """kubelet hard-codes its device-plugin socket and log-link dirs on the host; once no kubelet runs on the machine
    (another lab's may), remove them, and empty dirs only."""
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and os.path.basename(os.readlink(entry / "exe")).startswith("kubelet"):
                return
    socket_path = Path(KUBELET_DEVICE_PLUGINS) / "kubelet.sock"
    with contextlib.suppress(OSError):
        if socket_path.is_socket():
            socket_path.unlink()
    for directory in (
        KUBELET_DEVICE_PLUGINS,
        os.path.dirname(KUBELET_DEVICE_PLUGINS),
        CONTAINER_LOG_LINKS,
        CNI_RESULTS_DIR,
        os.path.dirname(CNI_RESULTS_DIR),
    ):
        with contextlib.suppress(OSError):
            os.rmdir(directory)  # only when empty


def leftovers(lab_dir, sites=LAB_HOSTS):
    """What of the lab's nodes still exists on the host (for tests and ``down``): [] when clean."""
    lab_dir = str(Path(lab_dir).resolve())
    found = [f"process {pid}" for pid in _lab_pids(lab_dir)]
    found += [f"mount {point}" for point in mounts_under(lab_dir)]
    found += [f"shim socket {path}" for path in _shim_sockets(lab_dir)]
    found += [f"CNI cache file {path}" for path in _cni_cache_files(lab_dir, sites)]
    for site in sites:
        net = names(lab_dir, site)
        found += [f"network namespace {net['netns']}"] if netns_exists(net["netns"]) else []
        found += [f"veth {net['veth']}"] if link_exists(net["veth"]) else []
    found += [f"bridge {bridge_name(lab_dir)}"] if link_exists(bridge_name(lab_dir)) else []
    return found
