"""Lab component (opt-in, operator mode): CSI volume snapshots for CNPG's ``volumeSnapshot`` backups (issue 18 item 4).

``HANZO_KMS_LAB_SNAPSHOTS=1`` (with ``HANZO_KMS_LAB_CNPG=operator``; recorded as ``state["snapshots"]``) adds, per
site, what a Kubernetes cluster with snapshot-capable storage has (docs/lab.md, "Volume snapshots"):

- the six snapshot CRDs of ``make snapshot-bins`` (``<cache>/snapshots/crds``), applied with the CNPG CRDs, so
  before roles/cnpg starts the operator (its webhook looks for the VolumeSnapshot CRD once, at start);
- lab processes in the site's network namespace (like kubelet; ``node.lose_site`` stops them with the site):
  ``lab-csi-hostpath`` (the lab's CSI driver, tools/kube/csi-snapshots/main.go: volumes and snapshots are
  directories under ``<lab>/<site>/csi``, published by bind mounts in the host's mount namespace, where kubelet and
  runc see them; it registers itself with kubelet through ``<root-dir>/plugins_registry``), ``csi-provisioner`` and
  ``csi-snapshotter`` on its socket, and ``snapshot-controller``, each with the site's admin kubeconfig;
- a ``CSIDriver`` (no attach, ``fsGroupPolicy: File``: kubelet gives the volume to the pod's fsGroup, CNPG's 26),
  a ``StorageClass`` and a ``VolumeSnapshotClass`` on that driver.

``down`` needs nothing more: the processes are recorded ones, and what the driver mounted lies under the lab dir
(``node.teardown`` unmounts it; ``node.leftovers`` lists any mount left).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from tests.lab import kube_build
from tests.lab.core import LabError

ENV = "HANZO_KMS_LAB_SNAPSHOTS"
DRIVER = "hostpath.lab.hanzo.kms"
STORAGE_CLASS = "lab-csi-hostpath"
SNAPSHOT_CLASS = "lab-csi-hostpath"
BINARIES = ("lab-csi-hostpath", "csi-provisioner", "csi-snapshotter", "snapshot-controller")
# The CSI calls that copy a directory (a snapshot, a volume from one) may take longer than the sidecars' defaults.
CSI_TIMEOUT = "120s"
START_TIMEOUT = float(os.environ.get("HANZO_KMS_KUBE_START_TIMEOUT", "60"))
UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL


def enabled():
    """Whether the lab gets CSI volume snapshots: HANZO_KMS_LAB_SNAPSHOTS (``1``; empty or ``0``: no)."""
    value = os.environ.get(ENV) or "0"
    if value not in ("0", "1"):
        raise LabError(f"{ENV}={value!r}: use 1 (CSI volume snapshots, operator mode only) or 0 (default)")
    return value == "1"


def ensure_binaries(root=None):
    """{name: path} of the four binaries plus ``crds`` (the snapshot CRD files); LabError naming ``make snapshot-bins``
    when they are not built or not current."""
    root = Path(root or kube_build.cache_root())
    if kube_build.snapshots_cached(root) is None:
        missing = [name for name in BINARIES if not (root / "bin" / name).is_file()]
        why = f"missing {', '.join(missing)}" if missing else "not built from the current tools/kube/csi-snapshots"
        raise LabError(
            f"{ENV}=1 needs the CSI snapshot binaries, CRDs and RBAC in {root} ({why}): run make snapshot-bins"
        )
    paths = {name: root / "bin" / name for name in BINARIES}
    paths["crds"] = kube_build.snapshot_asset_paths(root)["crds"]
    return paths


def crd_documents(paths):
    """The snapshot CRDs (dicts) of ``ensure_binaries()``'s ``crds``."""
    docs = []
    for path in paths["crds"]:
        docs += [doc for doc in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")) if doc]
    return docs


def sockets(node_dir):
    """The driver's CSI socket and kubelet's plugin-registration directory, under kubelet's ``--root-dir``."""
    root = Path(node_dir) / "kubelet"
    endpoint = root / "plugins" / DRIVER / "csi.sock"
    registration = root / "plugins_registry"
    for path in (endpoint, registration / f"{DRIVER}-reg.sock"):
        if len(str(path)) > UNIX_PATH_MAX:
            raise LabError(
                f"the CSI socket path {path} is {len(str(path))} bytes, over a Unix socket's {UNIX_PATH_MAX}: "
                "use a shorter lab dir"
            )
    return endpoint, registration


def start(site, node_name, site_dir, node_dir, kubeconfig, paths, spawn):
    """Start the driver, the two sidecars and snapshot-controller (``spawn(component, argv)``: a lab process in the
    site's network namespace); returns the site's ``kube["snapshots"]`` entry."""
    endpoint, registration = sockets(node_dir)
    state_dir = Path(site_dir) / "csi"
    spawn(
        "lab-csi-hostpath",
        [
            paths["lab-csi-hostpath"],
            f"--driver-name={DRIVER}",
            f"--node-id={node_name}",
            f"--state-dir={state_dir}",
            f"--endpoint={endpoint}",
            f"--registration-dir={registration}",
        ],
    )
    common = [f"--kubeconfig={kubeconfig}", "--leader-election=false"]
    csi = [f"--csi-address={endpoint}", f"--timeout={CSI_TIMEOUT}"]
    spawn("csi-provisioner", [paths["csi-provisioner"], *common, *csi, "--v=2"])
    spawn("csi-snapshotter", [paths["csi-snapshotter"], *common, *csi, "--v=2"])
    spawn("snapshot-controller", [paths["snapshot-controller"], *common, "--v=2"])
    return {
        "driver": DRIVER,
        "storage_class": STORAGE_CLASS,
        "snapshot_class": SNAPSHOT_CLASS,
        "state_dir": str(state_dir),
        "endpoint": str(endpoint),
        "site": site,
    }


def objects():
    """The CSIDriver, StorageClass and VolumeSnapshotClass of the lab's driver."""
    return [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "CSIDriver",
            "metadata": {"name": DRIVER},
            # no ControllerPublish: no VolumeAttachment; File: kubelet chowns the volume to the pod's fsGroup
            "spec": {
                "attachRequired": False,
                "podInfoOnMount": False,
                "fsGroupPolicy": "File",
                "volumeLifecycleModes": ["Persistent"],
            },
        },
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS},
            "provisioner": DRIVER,
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete",
        },
        {
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotClass",
            "metadata": {"name": SNAPSHOT_CLASS},
            "driver": DRIVER,
            "deletionPolicy": "Delete",
        },
    ]


def registered(api, node_name):
    """True once kubelet lists the driver on the node's CSINode (the registration went through)."""
    status, body = api.get(f"/apis/storage.k8s.io/v1/csinodes/{node_name}")
    return status == 200 and any(d.get("name") == DRIVER for d in (body.get("spec") or {}).get("drivers") or [])


def wait_registered(lab, site, api, node_name):
    """Wait until kubelet registered the driver (the driver process dying fails at once)."""
    lab.wait_process(
        f"{site}-lab-csi-hostpath",
        lambda: registered(api, node_name),
        START_TIMEOUT,
        f"{site}: kubelet to register CSI driver {DRIVER} on {node_name} (CSINode)",
    )


def check(api, entry):
    """Problems of a site's snapshot machinery (its processes are checked with the site's): [] when healthy."""
    node_name = entry["node"]["name"]
    problems = []
    if not registered(api, node_name):
        problems.append(f"{entry['context']}: CSI driver {DRIVER} is not registered on {node_name}")
    status, _body = api.get(f"/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses/{SNAPSHOT_CLASS}")
    if status != 200:
        problems.append(f"{entry['context']}: VolumeSnapshotClass {SNAPSHOT_CLASS} is missing ({status})")
    return problems
