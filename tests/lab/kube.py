"""Lab component: one real Kubernetes control plane per site (issue 3) with one real node (issue 15).

Per site, inside the site's network namespace (tests/lab/node.py): etcd + kube-apiserver (TLS, client-certificate and
static-token authentication, RBAC; at ``https://<node IP>:6443``) + kube-controller-manager + kube-scheduler + kwok
(only its fake nodes; their pods become Running/Ready, Jobs complete) + containerd, kubelet and kube-proxy (the real
node ``<site>-real``, proven by a probe pod during ``up``); on the host, the CloudNativePG operator stand-in
(tests/lab/cnpg_standin.py), or, in operator mode (``cnpg="operator"``, HANZO_KMS_LAB_CNPG), CoreDNS in the
namespace, hostPath volumes and the operator's images instead, for the real operator that roles/cnpg installs. The
CNPG / Barman Cloud CRDs and (default mode) the ValidatingAdmissionPolicies that carry CNPG's webhook rules
(tests/lab/kube/cnpg-policies.yaml) are installed.
With ``snapshots`` (operator mode, HANZO_KMS_LAB_SNAPSHOTS=1) also the CSI snapshot machinery of tests/lab/snapshots.py.
Binaries come from ``make k8s-bins`` (tests/lab/kube_build.py; ``make snapshot-bins`` for the snapshot ones); nothing
here downloads anything.

    entry = kube.up(lab, "dc1", 0, s3=lab.state["s3"])   # state["sites"]["dc1"]["kube"]
    problems = kube.check(lab, entry)   # [] when healthy
    kube.write_merged_kubeconfig(lab, {"dc1": e1, "dc2": e2})   # <lab dir>/kubeconfig, contexts dc1/dc2
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import secrets
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from ansible_collections.hanzo.kms.plugins.module_utils import times
from tests.lab import dns as site_dns
from tests.lab import images, kube_build, node, pki
from tests.lab import snapshots as csi_snapshots
from tests.lab.core import REPO_ROOT, LabError, wait_until

DATA_DIR = Path(__file__).resolve().parent / "kube"
ZONES = ("zone-a", "zone-b", "zone-c")
NODES_PER_SITE = 3
START_TIMEOUT = float(os.environ.get("HANZO_KMS_KUBE_START_TIMEOUT", "60"))
FIELD_MANAGER = "hanzo-kms-lab"
# kubectl arguments that submit objects as the roles apply them (server-side, strict field validation), changing nothing
STRICT_DRY_RUN_APPLY = ("apply", "--server-side", "--dry-run=server", "--validate=strict", "--force-conflicts")
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_TAINT = {"key": KWOK_ANNOTATION, "value": "fake", "effect": "NoSchedule"}
# How the lab runs CloudNativePG (HANZO_KMS_LAB_CNPG, recorded in the state as ``cnpg``):
# "standin": tests/lab/cnpg_standin.py writes Cluster status, PostgreSQL runs on the host (the default, every test);
# "operator": nothing pretends: the real operator (installed by roles/cnpg) runs in pods on the real node.
CNPG_MODES = ("standin", "operator")
STORAGE_CLASS = "lab-hostpath"
VOLUMES_PER_SITE = int(os.environ.get("HANZO_KMS_LAB_VOLUMES", "6"))
VOLUME_SIZE = "10Gi"
POSTGRES_UID = 26  # CNPG's default postgresUID/postgresGID, the lab's PostgreSQL image's user
OPERATOR_NAMESPACE = "cnpg-system"  # roles/cnpg: cnpg_operator_namespace (the lab inventory keeps it)
BACK_TIMEOUT = 300.0  # a powered-on site: its apiserver, then its operator's pods restarted by kubelet


# -- binaries ------------------------------------------------------------------------------------------------------
def ensure_binaries():
    """Paths of the built binaries plus the ``crds``, ``kwok_stages`` and ``manifests`` folders; LabError if unbuilt."""
    root = kube_build.cache_root()
    if not kube_build.cached(root):
        missing = [n for n in kube_build.BINARIES if not (root / "bin" / n).is_file()]
        why = (
            f"missing {', '.join(missing)}"
            if missing
            else "built from other inputs than tools/kube/*/ and tests/lab/cnpg_operator.py"
        )
        raise LabError(f"the Kubernetes binaries in {root} are not usable ({why}): run make k8s-bins")
    paths = {name: root / "bin" / name for name in kube_build.BINARIES}
    paths["crds"] = root / "crds"
    paths["kwok_stages"] = root / "kwok-stages"
    paths["manifests"] = root / kube_build.MANIFESTS_DIR  # the CNPG operator and plugin manifests (cnpg_operator.py)
    return paths


# -- PKI -----------------------------------------------------------------------------------------------------------
def _pki(directory, server_ips=(), node_name=None, node_ip=None):
    """The site's own CA (tests/lab/pki.py), apiserver serving cert (SANs: loopback, ``server_ips``), admin client
    cert (O=system:masters), service-account key pair (ECDSA P-256); with ``node_name``: the kubelet's serving cert
    (SAN ``node_ip``) and client cert (system:node:<name>), kube-proxy's client cert and the apiserver's client cert
    for kubelets."""
    # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca = pki.new_ca("hanzo-kms-lab-ca")
    sa_key = ec.generate_private_key(ec.SECP256R1())
    files = {
        "ca.crt": ca.cert_pem,
        "ca.key": ca.key_pem,
        "sa.key": pki.key_pem(sa_key),
        "sa.pub": sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }
    files["apiserver.crt"], files["apiserver.key"] = ca.leaf(
        "kube-apiserver",
        server=True,
        dns=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        ips=("127.0.0.1", *server_ips),
    )
    files["admin.crt"], files["admin.key"] = ca.leaf("hanzo-kms-lab-admin", orgs=("system:masters",))
    if node_name:
        files["kubelet.crt"], files["kubelet.key"] = ca.leaf(node_name, server=True, dns=(node_name,), ips=(node_ip,))
        files["kubelet-client.crt"], files["kubelet-client.key"] = ca.leaf(
            f"system:node:{node_name}", orgs=("system:nodes",)
        )
        files["kube-proxy.crt"], files["kube-proxy.key"] = ca.leaf("system:kube-proxy")
        # the apiserver's identity towards kubelets (logs, exec): kubelet asks the apiserver to authorize it
        files["apiserver-kubelet-client.crt"], files["apiserver-kubelet-client.key"] = ca.leaf(
            "kube-apiserver-kubelet-client", orgs=("system:masters",)
        )
    return pki.write(directory, files)


# -- a tiny HTTPS client (no kubectl or python client needed to bring the cluster up) ---------------------------------
class Api:
    """Minimal JSON client for one apiserver, authenticated with the admin client certificate."""

    def __init__(self, server, ca_file, cert_file, key_file):
        self.server = server.rstrip("/")
        self.context = ssl.create_default_context(cafile=str(ca_file))
        self.context.load_cert_chain(str(cert_file), str(key_file))

    @classmethod
    def from_entry(cls, entry):
        pki = entry["pki"]
        return cls(entry["server"], pki["ca"], pki["admin_cert"], pki["admin_key"])

    def request(self, method, path, body=None, content_type="application/json", params=None, timeout=10):
        url = self.server + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": content_type, "Accept": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, context=self.context, timeout=timeout) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            status = exc.code
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def apply(self, obj):
        """Server-side apply of one object (create or update)."""
        path = _object_path(obj)
        status, body = self.request(
            "PATCH",
            path,
            body=obj,
            content_type="application/apply-patch+yaml",
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            timeout=30,
        )
        if status >= 300:
            raise LabError(f"applying {obj['kind']} {obj['metadata']['name']} failed ({status}): {_message(body)}")
        return body


_PLURALS = {
    "CustomResourceDefinition": ("apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    "ValidatingAdmissionPolicy": ("admissionregistration.k8s.io/v1", "validatingadmissionpolicies", False),
    "ValidatingAdmissionPolicyBinding": ("admissionregistration.k8s.io/v1", "validatingadmissionpolicybindings", False),
    "Node": ("v1", "nodes", False),
    "Namespace": ("v1", "namespaces", False),
    "StorageClass": ("storage.k8s.io/v1", "storageclasses", False),
    "PersistentVolume": ("v1", "persistentvolumes", False),
    "CSIDriver": ("storage.k8s.io/v1", "csidrivers", False),
    "VolumeSnapshotClass": ("snapshot.storage.k8s.io/v1", "volumesnapshotclasses", False),
}


def _object_path(obj):
    _api_version, plural, _namespaced = _PLURALS[obj["kind"]]
    api_version = obj["apiVersion"]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/{plural}/{obj['metadata']['name']}"


def _message(body):
    if isinstance(body, dict):
        return body.get("message") or json.dumps(body)[:500]
    return str(body)[:500]


# -- kubeconfigs ---------------------------------------------------------------------------------------------------
def _b64(path):
    return base64.b64encode(Path(path).read_bytes()).decode()


def kubeconfig_dict(entries):
    """One kubeconfig with a cluster/user/context per entry (context name = site)."""
    config = {"apiVersion": "v1", "kind": "Config", "preferences": {}, "clusters": [], "users": [], "contexts": []}
    for entry in entries:
        site = entry["context"]
        pki = entry["pki"]
        config["clusters"].append(
            {"name": site, "cluster": {"server": entry["server"], "certificate-authority-data": _b64(pki["ca"])}}
        )
        config["users"].append(
            {
                "name": f"{site}-admin",
                "user": {"client-certificate-data": _b64(pki["admin_cert"]), "client-key-data": _b64(pki["admin_key"])},
            }
        )
        config["contexts"].append(
            {"name": site, "context": {"cluster": site, "user": f"{site}-admin", "namespace": "default"}}
        )
    config["current-context"] = entries[0]["context"] if entries else ""
    return config


def _write_kubeconfig(path, entries):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(kubeconfig_dict(entries), sort_keys=False), encoding="utf-8")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path


def write_merged_kubeconfig(lab, entries):
    """Write <lab dir>/kubeconfig with one context per site; ``entries`` is {site: entry} or a list of entries."""
    if isinstance(entries, dict):
        entries = [entries[k] for k in sorted(entries)]
    return str(_write_kubeconfig(lab.path("kubeconfig"), list(entries)))


# -- up / check ----------------------------------------------------------------------------------------------------
def _kwok_config(kube_dir, stages_dir):
    docs = [(DATA_DIR / "kwok.yaml").read_text(encoding="utf-8").strip()]
    for name in kube_build.KWOK_STAGES:
        docs.append(Path(stages_dir, Path(name).name).read_text(encoding="utf-8").strip())
    path = kube_dir / "kwok.yaml"
    path.write_text("\n---\n".join(d.removeprefix("---").strip() for d in docs) + "\n", encoding="utf-8")
    return path


def _node(site, index, taint=False):
    """A kwok node; ``taint``: with kwok's own taint (``kwok.x-k8s.io/node=fake:NoSchedule``), so that only pods that
    tolerate it land on the fake nodes (operator mode: everything else runs on the real node)."""
    name = f"{site}-node-{index + 1}"
    zone = ZONES[index % len(ZONES)]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "topology.kubernetes.io/zone": zone,
                "topology.kubernetes.io/region": site,
            },
        },
        "spec": {"taints": [KWOK_TAINT]} if taint else {},
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            "nodeInfo": {
                "architecture": "amd64",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
                "operatingSystem": "linux",
            },
        },
    }


def _nodes_ready(api):
    status, body = api.get("/api/v1/nodes")
    if status != 200:
        return []
    ready = []
    for item in body.get("items", []):
        for cond in item.get("status", {}).get("conditions", []):
            if cond["type"] == "Ready" and cond["status"] == "True":
                ready.append(item["metadata"]["name"])
    return ready


def _crds_established(api, names):
    for name in names:
        status, body = api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        if status != 200:
            return False
        conds = {c["type"]: c["status"] for c in body.get("status", {}).get("conditions", [])}
        if conds.get("Established") != "True":
            return False
    return True


def _policies_enforced(api):
    """True once the admission policies reject a forbidden Cluster (dry run)."""
    probe = {
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": "lab-policy-probe", "namespace": "default"},
        "spec": {
            "instances": 1,
            "storage": {"size": "1Gi"},
            "externalClusters": [{"name": "a"}, {"name": "b"}],
            "replica": {"primary": "a", "source": "a", "enabled": True},
        },
    }
    status, body = api.request(
        "POST", "/apis/postgresql.cnpg.io/v1/namespaces/default/clusters", body=probe, params={"dryRun": "All"}
    )
    return status in (400, 403, 422) and "not compatible with the primary field" in _message(body)


def _component_kubeconfig(path, server, ca, cert, key, user):
    """A kubeconfig for one component identity (kubelet, kube-proxy): a client certificate of the site's CA."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "default",
        "clusters": [{"name": "default", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": user}}],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    os.chmod(path, 0o600)
    return path


def _recycler_template(kube_dir):
    """kube-controller-manager's recycler pod for hostPath volumes: upstream's default (scrub the volume, then the PV
    is Available again) with an image of the lab's, never pulled. Written into ``kube_dir``; its path."""
    path = Path(kube_dir) / "pv-recycler.yaml"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "pv-recycler-", "namespace": "default"},
        "spec": {
            "activeDeadlineSeconds": 60,
            "restartPolicy": "Never",
            "volumes": [{"name": "vol"}],  # the controller sets the PV's hostPath here
            "containers": [
                {
                    "name": "pv-recycler",
                    "image": images.BACKUP_TOOLS_IMAGE,
                    "imagePullPolicy": "Never",
                    # as root, as upstream's image runs: PostgreSQL's data directory is 0700 of UID 26
                    "securityContext": {"runAsUser": 0},
                    "command": ["/bin/sh"],
                    "args": [
                        "-c",
                        'test -e /scrub && find /scrub -mindepth 1 -delete && test -z "$(ls -A /scrub)" || exit 1',
                    ],
                    "volumeMounts": [{"name": "vol", "mountPath": "/scrub"}],
                }
            ],
        },
    }
    path.write_text(yaml.safe_dump(pod, sort_keys=False), encoding="utf-8")
    return path


def _volumes(api, kube_dir, node_name, count=VOLUMES_PER_SITE):
    """Operator mode: storage for PostgreSQL without a provisioner. A no-provisioner StorageClass (the default class,
    ``WaitForFirstConsumer``) and ``count`` hostPath PersistentVolumes bound to the real node, each a directory under
    the lab dir: ``lab down`` removes them with the dir, nothing lives elsewhere on the host. Owned by PostgreSQL's
    UID, and writable by all: a hostPath volume gets no ``fsGroup`` ownership (a CSI volume would), and whichever
    claim binds it, PostgreSQL's (UID 26) or Redis's (UID 1001), must write to it. ``Recycle``: a volume whose claim
    is deleted is scrubbed by kube-controller-manager's recycler pod (_recycler_template) and bound again, as a
    dynamically provisioned volume of a ``Delete`` class is gone with its claim in production: data the collection
    keeps (a rejoin's old volumes) must be set to ``Retain`` by the collection. Returns the PV names."""
    api.apply(
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Retain",
        }
    )
    names = []
    for number in range(1, count + 1):
        path = Path(kube_dir).parent / "volumes" / f"pv-{number}"
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, POSTGRES_UID, POSTGRES_UID)
        path.chmod(0o777)
        name = f"{node_name}-pv-{number}"
        api.apply(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER}},
                "spec": {
                    "capacity": {"storage": VOLUME_SIZE},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Recycle",
                    "storageClassName": STORAGE_CLASS,
                    "volumeMode": "Filesystem",
                    "hostPath": {"path": str(path), "type": "Directory"},
                    "nodeAffinity": {
                        "required": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node_name]}
                                    ]
                                }
                            ]
                        }
                    },
                },
            }
        )
        names.append(name)
    return names


def kubectl_runner(bins, kubeconfig):
    """A function running the built kubectl against ``kubeconfig``; returns the CompletedProcess."""

    def run(*args, timeout=60):
        return subprocess.run(
            [str(bins["kubectl"]), "--kubeconfig", str(kubeconfig), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )

    return run


_PENDING_IMPORTS = {}  # kube dir -> (executor, future, site start) of an operator-mode image import still running


def up(lab, site, index, s3=None, cnpg="standin", defer_images=False, snapshots=False):
    """Start one site's network namespace, control plane and real node, run the probe pod; return the site's
    state entry (see module docstring). ``s3``: the lab's S3 entry, so pods get an endpoint they can reach.
    ``cnpg``: one of CNPG_MODES; "operator" leaves out the stand-in and the admission policies (the real operator's
    webhooks replace them once roles/cnpg installs it), imports the operator's images, untaints the real node and
    taints the kwok nodes instead, and adds hostPath volumes (``_volumes``) and cluster DNS (tests/lab/dns.py).
    ``defer_images``: return while the operator's images are still being imported; ``finish_images(entry)`` waits
    (so one site's import overlaps the next site's start). ``snapshots`` (operator mode): the CSI snapshot machinery
    (tests/lab/snapshots.py), its CRDs applied with CNPG's."""
    # pylint: disable=too-many-locals,too-many-statements,too-many-branches,too-many-arguments
    # pylint: disable=too-many-positional-arguments
    if cnpg not in CNPG_MODES:
        raise LabError(f"unknown CNPG mode {cnpg!r} (HANZO_KMS_LAB_CNPG): use one of {', '.join(CNPG_MODES)}")
    operator = cnpg == "operator"
    if snapshots and not operator:
        raise LabError(f"{csi_snapshots.ENV}=1 needs the real CNPG operator: HANZO_KMS_LAB_CNPG=operator")
    bins = ensure_binaries()
    snapshot_bins = csi_snapshots.ensure_binaries() if snapshots else None
    archives = node.base_images(log=lambda _msg: None)
    operator_archives = node.operator_images(log=lambda _msg: None) if operator else {}
    started = time.monotonic()
    timings = {}

    def mark(what):
        timings[what] = round(time.monotonic() - started, 1)

    kube_dir = lab.path(site, "kube", "x").parent
    net = node.network_up(lab, site, index)
    mark("netns")
    cidr_octet = 96 + index
    service_cidr = f"10.{cidr_octet}.0.0/16"
    service_ip = f"10.{cidr_octet}.0.1"  # the `kubernetes` Service: what in-cluster clients (operators) dial
    node_name = f"{site}-real"
    pki = _pki(kube_dir / "pki", server_ips=(net["node_ip"], service_ip), node_name=node_name, node_ip=net["node_ip"])
    token = secrets.token_hex(16)
    tokens = kube_dir / "pki" / "tokens.csv"
    tokens.write_text(f'{token},hanzo-kms-lab-admin,hanzo-kms-lab-admin,"system:masters"\n', encoding="utf-8")
    os.chmod(tokens, 0o600)
    # Everything listens inside the site's own network namespace: fixed ports cannot collide with anything.
    ports = {
        "etcd_client": 2379,
        "etcd_peer": 2380,
        "apiserver": 6443,
        "controller_manager": 10257,
        "scheduler": 10259,
        "kwok": 10247,
        "kubelet": node.KUBELET_PORT,
    }
    server = f"https://{net['node_ip']}:{ports['apiserver']}"
    entry = {
        "context": site,
        "server": server,
        "token": token,
        "ports": ports,
        "dir": str(kube_dir),
        "version": kube_build.KUBE_VERSION,
        "net": net,
        "service_cidr": service_cidr,
        "service_ip": service_ip,
        "node": {"name": node_name, "ip": net["node_ip"], "pod_cidr": net["pod_cidr"]},
        "pki": {"ca": str(pki["ca.crt"]), "admin_cert": str(pki["admin.crt"]), "admin_key": str(pki["admin.key"])},
        "processes": [],
        "cnpg": cnpg,
    }
    if s3:
        entry["s3_endpoint"] = f"https://{net['host_ip']}:{s3['ports']['s3']}"
    kubeconfig = _write_kubeconfig(kube_dir / "kubeconfig", [entry])
    entry["kubeconfig"] = str(kubeconfig)
    pki["kubelet.kubeconfig"] = _component_kubeconfig(
        kube_dir / "pki" / "kubelet.kubeconfig",
        server,
        pki["ca.crt"],
        pki["kubelet-client.crt"],
        pki["kubelet-client.key"],
        f"system:node:{node_name}",
    )
    pki["kube-proxy.kubeconfig"] = _component_kubeconfig(
        kube_dir / "pki" / "kube-proxy.kubeconfig",
        server,
        pki["ca.crt"],
        pki["kube-proxy.crt"],
        pki["kube-proxy.key"],
        "system:kube-proxy",
    )

    def spawn(component, argv, netns=net["netns"], **kwargs):
        name = f"{site}-{component}"
        lab.spawn(name, argv, netns=netns, **kwargs)
        entry["processes"].append(name)
        return name

    # containerd first: it starts while etcd and the apiserver come up
    entry["containerd"] = node.containerd_start(lab, site, net, spawn)
    etcd_url = f"http://127.0.0.1:{ports['etcd_client']}"
    peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
    etcd = spawn(
        "etcd",
        [
            bins["etcd"],
            f"--name={site}",
            f"--data-dir={kube_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster={site}={peer_url}",
            "--unsafe-no-fsync",
            "--quota-backend-bytes=2147483648",
            "--log-level=warn",
        ],
    )

    apiserver = spawn(
        "kube-apiserver",
        [
            bins["kube-apiserver"],
            f"--etcd-servers={etcd_url}",
            f"--bind-address={net['node_ip']}",
            f"--advertise-address={net['node_ip']}",
            f"--secure-port={ports['apiserver']}",
            f"--tls-cert-file={pki['apiserver.crt']}",
            f"--tls-private-key-file={pki['apiserver.key']}",
            f"--client-ca-file={pki['ca.crt']}",
            f"--requestheader-client-ca-file={pki['ca.crt']}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=Node,RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki['sa.pub']}",
            f"--service-account-signing-key-file={pki['sa.key']}",
            f"--service-cluster-ip-range={service_cidr}",
            "--allow-privileged=true",
            # logs/exec/port-forward: the apiserver verifies the kubelet's serving certificate and presents its own
            f"--kubelet-certificate-authority={pki['ca.crt']}",
            f"--kubelet-client-certificate={pki['apiserver-kubelet-client.crt']}",
            f"--kubelet-client-key={pki['apiserver-kubelet-client.key']}",
            "--kubelet-preferred-address-types=InternalIP",
            "--profiling=false",
            f"--cert-dir={kube_dir / 'pki'}",
        ],
    )
    api = Api(server, pki["ca.crt"], pki["admin.crt"], pki["admin.key"])
    # etcd's health is implied by /readyz (its etcd check); the host cannot reach etcd inside the namespace
    lab.wait_process(
        apiserver,
        lambda: api.get("/readyz", timeout=2)[0] == 200,
        START_TIMEOUT,
        f"{site} kube-apiserver /readyz at {server}",
    )
    mark("apiserver")
    if not lab.process_alive(lab.process(etcd)):
        raise LabError(f"{site} etcd exited; log {lab.process(etcd)['log']}:\n{lab.log_tail(etcd)}")

    node.containerd_ready(lab, site, entry["containerd"], archives)
    mark("containerd")
    # the operator's images (≈ 17 s per fresh containerd) are imported while the rest of the site starts
    importer = concurrent.futures.ThreadPoolExecutor(max_workers=1) if operator else None
    importing = importer.submit(node.import_images, entry["containerd"], operator_archives) if operator else None
    if operator:  # cluster DNS before kubelet, so that the first pods already get it (see tests/lab/dns.py)
        entry["dns"] = site_dns.start(lab, site, net, str(kubeconfig), site, bins["coredns"], spawn)
    entry["node"].update(
        node.kubelet_start(
            site,
            net,
            entry,
            pki,
            bins,
            spawn,
            tainted=not operator,
            cluster_dns=entry["dns"]["server"] if operator else None,
        )
    )

    admin_kc = str(kubeconfig)
    spawn(
        "kube-controller-manager",
        [
            bins["kube-controller-manager"],
            f"--kubeconfig={admin_kc}",
            f"--authentication-kubeconfig={admin_kc}",
            f"--authorization-kubeconfig={admin_kc}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['controller_manager']}",
            f"--service-account-private-key-file={pki['sa.key']}",
            f"--root-ca-file={pki['ca.crt']}",
            f"--cluster-signing-cert-file={pki['ca.crt']}",
            f"--cluster-signing-key-file={pki['ca.key']}",
            f"--service-cluster-ip-range={service_cidr}",
            "--use-service-account-credentials=false",
            "--profiling=false",
            "--concurrent-deployment-syncs=5",
            *([f"--pv-recycler-pod-template-filepath-hostpath={_recycler_template(kube_dir)}"] if operator else []),
        ],
    )
    spawn(
        "kube-scheduler",
        [
            bins["kube-scheduler"],
            f"--kubeconfig={admin_kc}",
            f"--authentication-kubeconfig={admin_kc}",
            f"--authorization-kubeconfig={admin_kc}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['scheduler']}",
            "--profiling=false",
        ],
    )
    # kwok fakes only the nodes annotated as its own (_node): the real node and its pods are kubelet's
    spawn(
        "kwok",
        [
            bins["kwok"],
            f"--kubeconfig={admin_kc}",
            f"--config={_kwok_config(kube_dir, bins['kwok_stages'])}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
            f"--cidr=10.{200 + index}.0.0/16",
            "--node-ip=10.255.0.1",
            f"--server-address=127.0.0.1:{ports['kwok']}",
            "--node-lease-duration-seconds=40",
        ],
    )

    # CRDs (server-side apply: the Cluster CRD is larger than client-side apply's annotation budget) and policies.
    crd_names = []
    for path in sorted(Path(bins["crds"]).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                api.apply(doc)
                crd_names.append(doc["metadata"]["name"])
    for doc in csi_snapshots.crd_documents(snapshot_bins) if snapshots else []:  # before the operator starts
        api.apply(doc)
        crd_names.append(doc["metadata"]["name"])
    for index_node in range(NODES_PER_SITE):
        api.apply(_node(site, index_node, taint=operator))
    wait_until(lambda: _crds_established(api, crd_names), START_TIMEOUT, f"{site} CNPG CRDs to be Established")
    mark("crds")
    if operator:
        site_dns.wait_ready(lab, site, entry["dns"], service_ip)
        mark("dns")
        # the real webhooks validate Clusters once roles/cnpg installs the operator: the policies (same wording)
        # would answer first and hide whether the webhook does
        entry["volumes"] = _volumes(api, kube_dir, node_name)
        entry["storage_class"] = STORAGE_CLASS
        mark("volumes")
        if snapshots:
            entry["snapshots"] = csi_snapshots.start(
                site, node_name, kube_dir.parent, entry["node"]["dir"], admin_kc, snapshot_bins, spawn
            )
            for doc in csi_snapshots.objects():
                api.apply(doc)
    else:
        policies = yaml.safe_load((DATA_DIR / "cnpg-policies.yaml").read_text(encoding="utf-8"))
        for doc in policies["items"]:
            api.apply(doc)
        wait_until(lambda: _policies_enforced(api), START_TIMEOUT, f"{site} CNPG admission policies to be enforced")
        mark("policies")

        ready_file = kube_dir / "cnpg-standin.ready"
        ready_file.unlink(missing_ok=True)
        # on the host: it drives the lab's PostgreSQL on the host's loopback
        standin = spawn(
            "cnpg-standin",
            [
                sys.executable,
                "-m",
                "tests.lab.cnpg_standin",
                "--kubeconfig",
                admin_kc,
                "--context",
                site,
                "--ready-file",
                ready_file,
            ],
            netns=None,
            cwd=str(REPO_ROOT),
            env={"PYTHONPATH": str(REPO_ROOT)},
        )
        lab.wait_process(standin, ready_file.exists, START_TIMEOUT, f"{site} CNPG stand-in to watch")
    lab.wait_process(
        f"{site}-kwok",
        lambda: len(set(_nodes_ready(api)) - {node_name}) >= NODES_PER_SITE,
        START_TIMEOUT,
        f"{site} kwok nodes Ready",
    )
    mark("nodes_ready")
    lab.wait_process(
        f"{site}-kubelet", lambda: node.node_ready(api, node_name), START_TIMEOUT, f"{site} real node {node_name} Ready"
    )
    mark("real_node_ready")
    if snapshots:
        csi_snapshots.wait_registered(lab, site, api, node_name)
        mark("csi_driver_registered")
    for component in ("containerd", "kube-proxy"):
        if not lab.process_alive(lab.process(f"{site}-{component}")):
            raise LabError(
                f"{site}-{component} exited; log {lab.process(f'{site}-{component}')['log']}:\n"
                f"{lab.log_tail(f'{site}-{component}')}"
            )
    timings["probe_pod_running"] = round(
        timings["real_node_ready"]
        + node.run_probe(api, kubectl_runner(bins, kubeconfig), entry, entry.get("s3_endpoint")),
        1,
    )
    mark("probe_pod_checked")
    entry["nodes"] = sorted(_nodes_ready(api))
    entry["start_seconds"] = timings
    entry["crds"] = sorted(crd_names)
    if importing is not None:
        entry["operator_images"] = {"all": sorted(operator_archives)}
        _PENDING_IMPORTS[entry["dir"]] = (importer, importing, started)
        if not defer_images:
            finish_images(entry)
    return entry


def finish_images(entry):
    """Wait for a site's deferred image import (operator mode); records what was imported and when it ended."""
    pending = _PENDING_IMPORTS.pop(entry["dir"], None)
    if pending is None:
        return entry
    importer, importing, started = pending
    try:
        entry["operator_images"]["imported"] = importing.result()
    finally:
        importer.shutdown()
    entry["start_seconds"]["operator_images"] = round(time.monotonic() - started, 1)
    return entry


def check(lab, entry):
    """Health problems of one site's control plane and real node; [] when healthy."""
    problems = []
    for name in entry.get("processes", []):
        try:
            if not lab.process_alive(lab.process(name)):
                problems.append(f"{name} is not running")
        except LabError as exc:
            problems.append(str(exc))
    try:
        api = Api.from_entry(entry)
        status, body = api.get("/readyz", params={"verbose": "1"})
        if status != 200:
            problems.append(f"{entry['context']} kube-apiserver /readyz returned {status}: {str(body)[-300:]}")
        else:
            ready = _nodes_ready(api)
            real = entry.get("node", {}).get("name")
            fake = [n for n in ready if n != real]
            if len(fake) < NODES_PER_SITE:
                problems.append(f"{entry['context']}: only {len(fake)} Ready kwok nodes ({', '.join(fake) or 'none'})")
            if real and real not in ready:
                problems.append(f"{entry['context']}: real node {real} is not Ready")
            if entry.get("snapshots"):
                problems += csi_snapshots.check(api, entry)
    except (OSError, ssl.SSLError) as exc:
        problems.append(f"{entry['context']} kube-apiserver {entry.get('server')} unreachable: {exc}")
    return problems


def running_since(pods, since):
    """True when there are pods and each is Ready with every container running since ``since`` (epoch seconds; the
    kubelet's times have whole seconds). After a power cut the stored status of a Deployment and its pods still says
    Available and Ready until the controllers catch up; the containers' start times come from the restarted kubelet."""
    pods = [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]  # finished Jobs'
    if not pods:
        return False
    for pod in pods:
        status = pod.get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        containers = status.get("containerStatuses") or []
        if conditions.get("Ready") != "True" or not containers:
            return False
        for container in containers:
            started = times.parse_iso_z(((container.get("state") or {}).get("running") or {}).get("startedAt"))
            if not container.get("ready") or started is None or started.timestamp() < int(since):
                return False
    return True


def wait_back(entry, since, operator, timeout=BACK_TIMEOUT):
    """A site's node powered on again at ``since`` (node.power_on): wait until its kube-apiserver is ready and, in
    operator mode, the CNPG operator's and its plugin's pods run again (their webhooks admit the patches of fence.yml
    and rejoin.yml)."""
    api = Api.from_entry(entry)
    wait_until(
        lambda: api.get("/readyz", timeout=2)[0] == 200, timeout, f"{entry['context']} kube-apiserver /readyz", 1
    )
    if operator:
        path = f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/pods"
        wait_until(
            lambda: running_since(api.get(path, timeout=5)[1]["items"], since),
            timeout,
            f"{entry['context']}: the pods in {OPERATOR_NAMESPACE} running again",
            1,
        )


def _dev_main():  # pragma: no cover - developer driver until the lab CLI calls up()/check()
    import argparse  # pylint: disable=import-outside-toplevel

    from tests.lab.core import Lab  # pylint: disable=import-outside-toplevel

    parser = argparse.ArgumentParser(description="start/stop only the Kubernetes part of the lab (development)")
    parser.add_argument("action", choices=["up", "down", "check"])
    parser.add_argument("--dir", default=os.environ.get("HANZO_KMS_KUBE_DEV_DIR", str(REPO_ROOT / ".lab-kube")))
    args = parser.parse_args()
    lab = Lab(args.dir)
    lab.load()
    lab.state.setdefault("version", 1)
    if args.action == "up":
        started = time.monotonic()
        entries = {}
        for index, site in enumerate(("dc1", "dc2")):
            entries[site] = up(lab, site, index)
            lab.state.setdefault("sites", {}).setdefault(site, {})["kube"] = entries[site]
            lab.save()
        write_merged_kubeconfig(lab, entries)
        print(f"two clusters up in {time.monotonic() - started:.1f}s; kubeconfig {lab.path('kubeconfig')}")
        for site, entry in entries.items():
            print(f"{site}: seconds since start when ready: {entry['start_seconds']}")
    elif args.action == "check":
        problems = [p for s in lab.state.get("sites", {}).values() if "kube" in s for p in check(lab, s["kube"])]
        print("\n".join(problems) or "healthy")
        sys.exit(1 if problems else 0)
    else:
        node.stop_pods(lab, lab.state)
        print("stopped:", ", ".join(lab.stop_all()))
        node.teardown(lab.dir)
        lab.state["processes"] = []
        lab.state.pop("sites", None)
        lab.save()


if __name__ == "__main__":  # pragma: no cover
    _dev_main()
