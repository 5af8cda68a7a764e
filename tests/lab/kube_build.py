"""Build the lab's Kubernetes binaries from the Go module proxy (``make k8s-bins``).

Builds, with the local Go toolchain, pinned versions of kube-apiserver, kube-controller-manager, kube-scheduler,
kubectl, kubelet, kube-proxy and helm (through the wrapper module ``tools/kube/kubernetes``, which replaces every
staging module with its published ``v0.Y.Z`` twin; helm's k8s.io libraries are the same minor release, so it compiles
against Kubernetes' and shares their build cache), etcd, kustomize, the CloudNativePG operator (``cnpg-manager``), the
Barman Cloud plugin (``barman-cloud-plugin``) and kwok (one module: both are controllers on the same Kubernetes 0.36
libraries), CoreDNS and promtool (one module: the same Kubernetes 0.37 client and Prometheus libraries; promtool checks
the alert rules); each group a wrapper module of its own, so its dependencies never raise Kubernetes' or the
operator's. Then renders the CNPG operator and plugin manifests from the
pinned modules' ``config/`` with the
built kustomize (tests/lab/cnpg_operator.py), takes the lab's CRDs from those manifests and kwok's default stages
from its module.

Everything lands in ``~/.cache/hanzo-kms/k8s/<kubernetes version>/`` (``HANZO_KMS_K8S_CACHE`` overrides the parent
folder); nothing built is ever written to the repo. The cache is per module: a module's binaries are reused while
its wrapper module (go.mod, go.sum, tools.go) and build recipe are unchanged, so adding or moving one module rebuilds
that module only. ``manifest.json`` records each module's fingerprint.

    python -m tests.lab.kube_build [--force] [--jobs N]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

try:  # the lab package; also usable as a plain script
    from tests.lab import cnpg_operator
    from tests.lab.core import LabError
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.lab import cnpg_operator
    from tests.lab.core import LabError

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPO_ROOT / "tools" / "kube"

KUBE_VERSION = "v1.34.2"
CNPG_MODULE = "github.com/cloudnative-pg/cloudnative-pg"
CNPG_VERSION = "v1.30.0"
BARMAN_MODULE = "github.com/cloudnative-pg/plugin-barman-cloud"
BARMAN_VERSION = "v0.14.0"
KUSTOMIZE_MODULE = "sigs.k8s.io/kustomize/kustomize/v5"
KWOK_MODULE = "sigs.k8s.io/kwok"
PROMETHEUS_MODULE = "github.com/prometheus/prometheus"
COREDNS_MODULE = "github.com/coredns/coredns"
MIN_GO = (1, 26)  # CNPG 1.30 and the plugin 0.14 need go >= 1.26.4; Kubernetes 1.34 alone needed 1.24
# Flags of every build besides -p (which only changes parallelism): part of each module's fingerprint.
BUILD_FLAGS = "CGO_ENABLED=0 -trimpath -mod=readonly"

# module dir -> (binary name -> package)
BUILDS = {
    "kubernetes": {
        "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
        "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
        "kubectl": "k8s.io/kubernetes/cmd/kubectl",
        "kubelet": "k8s.io/kubernetes/cmd/kubelet",
        "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
        # helm's k8s.io libraries are Kubernetes' minor release: built against the same ones, most of it is cached
        "helm": "helm.sh/helm/v3/cmd/helm",
    },
    "etcd": {"etcd": "go.etcd.io/etcd/server/v3"},
    "kustomize": {"kustomize": KUSTOMIZE_MODULE},
    "cnpg": {"cnpg-manager": f"{CNPG_MODULE}/cmd/manager"},
    # two controllers on the same Kubernetes 0.36 libraries: one module compiles client-go and controller-runtime once
    "barman-cloud-kwok": {"barman-cloud-plugin": f"{BARMAN_MODULE}/cmd/manager", "kwok": f"{KWOK_MODULE}/cmd/kwok"},
    # the wrapper's own main package: CoreDNS with the cluster-DNS plugins only (tools/kube/coredns-promtool/main.go);
    # promtool checks and unit-tests the roles' alert rules (tests/integration/test_alerts.py)
    "coredns-promtool": {
        "coredns": "example.invalid/hanzo-kms/corednspromtoolbin",
        "promtool": f"{PROMETHEUS_MODULE}/cmd/promtool",
    },
}
BINARIES = [name for bins in BUILDS.values() for name in bins]

# Built only by ``make snapshot-bins`` (never by make setup / k8s-bins, and not in ``BUILDS``, whose cache check
# must not see them): the CSI snapshot machinery of volume-snapshot backups (issue 18 item 4, docs/lab.md "Volume
# snapshots"). external-provisioner v6 and external-snapshotter v8 in one module: one compile of the k8s libraries.
SNAPSHOTTER_MODULE = "github.com/kubernetes-csi/external-snapshotter/v8"
SNAPSHOT_CLIENT_MODULE = "github.com/kubernetes-csi/external-snapshotter/client/v8"
PROVISIONER_MODULE = "github.com/kubernetes-csi/external-provisioner/v6"
SNAPSHOT_BUILDS = {
    "csi-snapshots": {
        "snapshot-controller": f"{SNAPSHOTTER_MODULE}/cmd/snapshot-controller",
        "csi-snapshotter": f"{SNAPSHOTTER_MODULE}/cmd/csi-snapshotter",
        "csi-provisioner": f"{PROVISIONER_MODULE}/cmd/csi-provisioner",
        # the wrapper's own main package (main.go): the lab's CSI driver with snapshots, since csi-driver-host-path
        # and node-driver-registrar are not served by the module proxy
        "lab-csi-hostpath": "example.invalid/hanzo-kms/csisnapshotsbin",
    },
}
LAB_CSI_VERSION = "v0.1.0"  # the lab driver's own version (main.go), reported by --version and GetPluginInfo
SNAPSHOTS_MANIFEST = "snapshots.json"
SNAPSHOTS_DIR = "snapshots"  # <cache>/snapshots/{crds,rbac}/, beside the folders _render_assets swaps
# <module>: [files under it], copied as they are into <cache>/snapshots/<folder>/
SNAPSHOT_ASSETS = {
    "crds": (
        SNAPSHOT_CLIENT_MODULE,
        [
            f"config/crd/{group}_{kind}.yaml"
            for group, kinds in (
                ("snapshot.storage.k8s.io", ("volumesnapshotclasses", "volumesnapshotcontents", "volumesnapshots")),
                (
                    "groupsnapshot.storage.k8s.io",
                    ("volumegroupsnapshotclasses", "volumegroupsnapshotcontents", "volumegroupsnapshots"),
                ),
            )
            for kind in kinds
        ],
    ),
    "rbac": (
        SNAPSHOTTER_MODULE,
        [
            "deploy/kubernetes/snapshot-controller/rbac-snapshot-controller.yaml",
            "deploy/kubernetes/csi-snapshotter/rbac-csi-snapshotter.yaml",
            "deploy/kubernetes/csi-snapshotter/rbac-external-provisioner.yaml",
        ],
    ),
}

# The CRDs the lab installs at start (tests/lab/kube.py); taken from the rendered manifests, which hold them all.
LAB_CRDS = [
    "clusters.postgresql.cnpg.io",
    "backups.postgresql.cnpg.io",
    "scheduledbackups.postgresql.cnpg.io",
    "objectstores.barmancloud.cnpg.io",
]
MANIFESTS_DIR = "manifests"

KWOK_STAGES = [
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
]


def cache_root():
    base = os.environ.get("HANZO_KMS_K8S_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hanzo-kms", "k8s"
    )
    return Path(base) / KUBE_VERSION


def _required_version(module_dir, module):
    text = (TOOLS_DIR / module_dir / "go.mod").read_text(encoding="utf-8")
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.M)
    if not match:
        raise LabError(f"{module} is not required in tools/kube/{module_dir}/go.mod")
    return match.group(1)


def versions():
    """The pinned version of each component; the CNPG and plugin pins must be the ones their wrapper modules require."""
    pins = (("cnpg", CNPG_MODULE, CNPG_VERSION), ("barman-cloud-kwok", BARMAN_MODULE, BARMAN_VERSION))
    for module_dir, module, pin in pins:
        required = _required_version(module_dir, module)
        if required != pin:
            raise LabError(
                f"tools/kube/{module_dir}/go.mod requires {module} {required} but tests/lab/kube_build.py "
                f"pins {pin}: change both (go mod edit -require={module}@VERSION && go mod tidy)"
            )
    return {
        "kubernetes": KUBE_VERSION,
        "etcd": _required_version("etcd", "go.etcd.io/etcd/server/v3"),
        "kwok": _required_version("barman-cloud-kwok", KWOK_MODULE),
        "helm": _required_version("kubernetes", "helm.sh/helm/v3"),
        "cloudnative-pg": CNPG_VERSION,
        "plugin-barman-cloud": BARMAN_VERSION,
        "kustomize": _required_version("kustomize", KUSTOMIZE_MODULE),
        "coredns": _required_version("coredns-promtool", COREDNS_MODULE),
        "prometheus": _required_version("coredns-promtool", PROMETHEUS_MODULE),
    }


# versions() key of a module dir, where it is not the dir's name
_VERSION_KEYS = {"cnpg": "cloudnative-pg", "barman-cloud-kwok": "plugin-barman-cloud", "coredns-promtool": "prometheus"}


def snapshot_versions():
    """The pinned versions of the CSI snapshot machinery (tools/kube/csi-snapshots/go.mod)."""
    return {
        "external-snapshotter": _required_version("csi-snapshots", SNAPSHOTTER_MODULE),
        "external-snapshotter-client": _required_version("csi-snapshots", SNAPSHOT_CLIENT_MODULE),
        "external-provisioner": _required_version("csi-snapshots", PROVISIONER_MODULE),
    }


def module_version(module_dir, ver):
    return ver[_VERSION_KEYS.get(module_dir, module_dir)]


def cnpg_ldflags(version, commit="none", date="unknown"):
    """CNPG's version stamps (its Makefile / .goreleaser.yml): ``manager version`` then reports the release."""
    pkg = f"{CNPG_MODULE}/pkg/versions"
    return f"-s -w -X {pkg}.buildVersion={version.lstrip('v')} -X {pkg}.buildCommit={commit} -X {pkg}.buildDate={date}"


def ldflags(module_dir, ver, origin=None, binary=None):
    """-ldflags of a module's binaries. ``origin``: commit and date of the CNPG module (its proxy .info file); the
    fingerprint uses placeholders, since they follow from the pinned version. ``binary``: the one binary being
    linked, where a module's binaries take different stamps (csi-snapshots: each reports its own module's release);
    None gives the module's whole set, which the fingerprint uses."""
    if module_dir == "csi-snapshots":
        stamps = {
            "snapshot-controller": ver["external-snapshotter"],
            "csi-snapshotter": ver["external-snapshotter"],
            "csi-provisioner": ver["external-provisioner"],
            "lab-csi-hostpath": LAB_CSI_VERSION,
        }
        names = [binary] if binary else sorted(stamps)
        return " ".join(["-s -w"] + [f"-X main.version={stamps[name]}" for name in names])
    if module_dir == "kubernetes":
        # one set for every binary of the module: the linker ignores -X of a package a binary does not link
        return f"{kube_ldflags(KUBE_VERSION)} -X helm.sh/helm/v3/internal/version.version={ver['helm']}"
    if module_dir == "barman-cloud-kwok":
        # the plugin's version is a constant in its source
        return f"-s -w -X {KWOK_MODULE}/pkg/consts.Version={ver['kwok'].lstrip('v')}"
    if module_dir == "cnpg":
        origin = origin or {"commit": "{commit}", "date": "{date}"}
        return cnpg_ldflags(ver["cloudnative-pg"], origin["commit"], origin["date"])
    if module_dir == "coredns-promtool":
        return f"-s -w -X github.com/prometheus/common/version.Version={prometheus_release(ver['prometheus'])}"
    # kustomize reads its own version from the Go build info
    return "-s -w"


def _file_digest(digest, module_dir):
    for name in ("go.mod", "go.sum", "tools.go", "main.go"):
        path = TOOLS_DIR / module_dir / name
        if path.exists():
            digest.update(f"{module_dir}/{name}\0".encode())
            digest.update(path.read_bytes())


def module_fingerprint(module_dir, ver=None):
    """Hash of everything one module's binaries are built from: its wrapper module files, binaries, flags."""
    ver = ver or versions()
    recipe = {
        "module": module_dir,
        "binaries": {**BUILDS, **SNAPSHOT_BUILDS}[module_dir],
        "ldflags": ldflags(module_dir, ver),
        "flags": BUILD_FLAGS,
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode())
    _file_digest(digest, module_dir)
    return digest.hexdigest()


def assets_fingerprint(ver, kustomize_fingerprint):
    """Hash of what the manifests, CRDs and kwok stages are made from (the render code included)."""
    inputs = {
        "cnpg": ver["cloudnative-pg"],
        "plugin": ver["plugin-barman-cloud"],
        "kwok": ver["kwok"],
        "kustomize": kustomize_fingerprint,
        "crds": LAB_CRDS,
        "kwok_stages": KWOK_STAGES,
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode())
    digest.update(Path(cnpg_operator.__file__).read_bytes())
    return digest.hexdigest()


def fingerprints(ver=None):
    """{"modules": {module dir: fingerprint}, "assets": fingerprint} of the current sources."""
    ver = ver or versions()
    modules = {module_dir: module_fingerprint(module_dir, ver) for module_dir in BUILDS}
    return {"modules": modules, "assets": assets_fingerprint(ver, modules["kustomize"])}


def recorded_fingerprints(manifest):
    """{module dir: fingerprint} a cache manifest says its binaries were built from."""
    return {m: (entry or {}).get("fingerprint") for m, entry in (manifest.get("modules") or {}).items()}


def stale_modules(recorded, current, binaries, existing):
    """The modules to (re)build, in ``current``'s order: never built, built from other inputs, or a binary gone.

    recorded/current: {module: fingerprint}; binaries: {module: {binary: package}}; existing: names in bin/.
    """
    return [m for m, fp in current.items() if recorded.get(m) != fp or not set(binaries[m]) <= set(existing)]


def _read_manifest(root):
    try:
        return json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_manifest(root, manifest):
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    tmp.replace(root / "manifest.json")


def _asset_paths(root):
    return (
        [root / MANIFESTS_DIR / name for name in (cnpg_operator.OPERATOR_MANIFEST, cnpg_operator.PLUGIN_MANIFEST)]
        + [root / "crds" / f"{name}.yaml" for name in LAB_CRDS]
        + [root / "kwok-stages" / Path(rel).name for rel in KWOK_STAGES]
    )


def _existing_binaries(root):
    bin_dir = root / "bin"
    return {p.name for p in bin_dir.iterdir() if p.is_file()} if bin_dir.is_dir() else set()


def cached(root=None):
    """The cached build (its manifest.json) if every module and asset is complete and current, else None."""
    root = root or cache_root()
    manifest = _read_manifest(root)
    if manifest is None:
        return None
    current = fingerprints()
    if stale_modules(recorded_fingerprints(manifest), current["modules"], BUILDS, _existing_binaries(root)):
        return None
    if (manifest.get("assets") or {}).get("fingerprint") != current["assets"]:
        return None
    if not all(path.is_file() for path in _asset_paths(root)):
        return None
    return manifest


def _go_env(jobs):
    env = dict(os.environ)
    env.update(GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS=f"-p={jobs} -trimpath -mod=readonly")
    return env


def check_go():
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None)
    if not go:
        raise LabError(
            "the Go toolchain is required to build the lab's Kubernetes binaries (make k8s-bins) but 'go' "
            f"is not on PATH: install Go >= {MIN_GO[0]}.{MIN_GO[1]} (https://go.dev/dl/) and retry"
        )
    out = subprocess.run(
        [go, "env", "GOVERSION"], capture_output=True, text=True, check=False, env=dict(os.environ, GOTOOLCHAIN="local")
    ).stdout.strip()
    match = re.match(r"go(\d+)\.(\d+)", out)
    if not match or (int(match.group(1)), int(match.group(2))) < MIN_GO:
        raise LabError(
            f"{go} reports {out or 'no version'}; building the lab's binaries (CloudNativePG "
            f"{CNPG_VERSION}, Kubernetes {KUBE_VERSION}) needs Go >= {MIN_GO[0]}.{MIN_GO[1]}"
        )
    return go


def _run(argv, cwd, env, what):
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        hint = ""
        if re.search(
            r"dial tcp|no such host|connection refused|i/o timeout|proxyconnect|403 Forbidden|"
            r"verifying module|GOPROXY|could not resolve",
            tail,
        ):
            proxy = env.get("GOPROXY") or "https://proxy.golang.org,direct"
            hint = (
                f"\nthe Go module proxy ({proxy}) looks unreachable: make k8s-bins needs it, or a module cache "
                "that already holds the pinned modules (then set GOPROXY=off)"
            )
        raise LabError(f"{what} failed ({' '.join(argv)} in {cwd}):\n{tail}{hint}")
    return proc.stdout


def _module_download(go, env, module, version):
    """``go mod download -json`` of one module version: Dir (its source) and Info (the proxy's .info file)."""
    out = _run(
        [go, "mod", "download", "-json", f"{module}@{version}"], TOOLS_DIR, env, f"downloading {module}@{version}"
    )
    info = json.loads(out)
    if info.get("Error"):
        raise LabError(f"downloading {module}@{version}: {info['Error']}")
    return info


def _module_dir(go, env, module, version):
    return Path(_module_download(go, env, module, version)["Dir"])


def module_origin(download_info):
    """Short commit and commit day of a module version, from the proxy's .info (``Origin.Hash``, ``Time``)."""
    try:
        info = json.loads(Path(download_info["Info"]).read_text(encoding="utf-8"))
    except (KeyError, OSError, ValueError):
        info = {}
    commit = ((info.get("Origin") or download_info.get("Origin") or {}).get("Hash") or "")[:7]
    return {"commit": commit or "none", "date": (info.get("Time") or "")[:10] or "unknown"}


def prometheus_release(module_version):
    """Prometheus' release of its Go module version: v0.316.0 is Prometheus 3.16.0 (v0.X.Y with X = 100 * major +
    minor, the scheme of its Go tags since 3.0)."""
    major, minor = divmod(int(module_version.lstrip("v").split(".")[1]), 100)
    return f"{major}.{minor}.{module_version.split('.')[2]}"


def kube_ldflags(version):
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


@contextlib.contextmanager
def _locked(root):
    """Hold the cache's lock: two builds (two checkouts, two terminals) never write the same cache at once."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build_module(go, env, module_dir, ver, bin_dir, log, builds=None):
    builds = builds or BUILDS
    cwd = TOOLS_DIR / module_dir
    log(f"downloading modules for tools/kube/{module_dir} ...")
    _run([go, "mod", "download"], cwd, env, f"module download for tools/kube/{module_dir}")
    origin = None
    if module_dir == "cnpg":
        origin = module_origin(_module_download(go, env, CNPG_MODULE, CNPG_VERSION))
    for name, pkg in builds[module_dir].items():
        log(f"building {name} ({pkg}) ...")
        partial = bin_dir / f".{name}.partial"
        flags = ldflags(module_dir, ver, origin, binary=name)
        _run([go, "build", "-ldflags", flags, "-o", str(partial), pkg], cwd, env, f"building {name}")
        partial.replace(bin_dir / name)


def _render_assets(go, env, root, ver, log):
    """Manifests, the lab's CRDs (from them) and kwok's stages, swapped in whole; returns the manifest.json part."""
    stage = root / ".assets.partial"
    shutil.rmtree(stage, ignore_errors=True)
    log("rendering the CNPG operator and Barman Cloud plugin manifests with kustomize ...")
    rendered = cnpg_operator.render(
        root / "bin" / "kustomize",
        _module_dir(go, env, CNPG_MODULE, CNPG_VERSION),
        _module_dir(go, env, BARMAN_MODULE, BARMAN_VERSION),
        BARMAN_VERSION,
        stage / MANIFESTS_DIR,
        stage / "crds",
        LAB_CRDS,
    )
    (stage / "kwok-stages").mkdir(parents=True)
    kwok_src = _module_dir(go, env, KWOK_MODULE, ver["kwok"])
    for rel in KWOK_STAGES:
        shutil.copyfile(kwok_src / rel, stage / "kwok-stages" / Path(rel).name)
    for folder in (MANIFESTS_DIR, "crds", "kwok-stages"):
        shutil.rmtree(root / folder, ignore_errors=True)
        (stage / folder).rename(root / folder)
    stage.rmdir()
    return rendered


def _toolchain(jobs):
    """The checked go command, its build environment and its version."""
    go = check_go()
    env = _go_env(jobs)
    go_version = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False, env=env)
    return go, env, go_version.stdout.strip()


def _module_record(fingerprint, binaries, started, go_version, **extra):
    """A module's entry in manifest.json / snapshots.json, once its binaries are built."""
    return {
        "fingerprint": fingerprint,
        **extra,
        "binaries": sorted(binaries),
        "seconds": round(time.monotonic() - started, 1),
        "go": go_version,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def build(force=False, jobs=2, log=print):
    """Build what is missing or stale (everything with ``force``), reuse the rest; return the manifest dict."""
    root = cache_root()
    with _locked(root):
        if not force:
            manifest = cached(root)
            if manifest:
                log(f"k8s binaries up to date in {root}")
                return manifest
        go, env, go_version = _toolchain(jobs)
        ver = versions()
        current = fingerprints(ver)
        previous = {} if force else (_read_manifest(root) or {})
        recorded = recorded_fingerprints(previous)
        modules = {m: dict(previous["modules"][m] or {}) for m in recorded if m in BUILDS}
        bin_dir = root / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        for leftover in bin_dir.glob(".*.partial"):  # a killed build
            leftover.unlink()
        todo = stale_modules(recorded, current["modules"], BUILDS, _existing_binaries(root))
        log(
            f"k8s binaries in {root}: building {', '.join(todo) or 'nothing'}"
            f"{'; reusing ' + ', '.join(m for m in BUILDS if m not in todo) if len(todo) < len(BUILDS) else ''}"
        )
        started = time.monotonic()

        def save(**extra):
            _write_manifest(
                root,
                {
                    "versions": ver,
                    "go": go_version,
                    "modules": modules,
                    **extra,
                },
            )

        for module_dir in todo:
            t0 = time.monotonic()
            modules.pop(module_dir, None)
            save()  # this module is not current until it is built
            _build_module(go, env, module_dir, ver, bin_dir, log)
            modules[module_dir] = _module_record(
                current["modules"][module_dir],
                BUILDS[module_dir],
                t0,
                go_version,
                version=module_version(module_dir, ver),
            )
            save()  # progress survives a killed build
        assets = previous.get("assets") or {}
        if (
            force
            or assets.get("fingerprint") != current["assets"]
            or not all(path.is_file() for path in _asset_paths(root))
        ):
            save()  # no assets while they are swapped
            assets = {"fingerprint": current["assets"], **_render_assets(go, env, root, ver, log)}
        build_seconds = round(time.monotonic() - started, 1)
        save(
            assets=assets,
            images=assets["images"],
            built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            build_seconds=build_seconds,
            module_seconds={m: e["seconds"] for m, e in modules.items() if "seconds" in e},
        )
        manifest = _read_manifest(root)
    log(f"k8s binaries ready in {root} ({manifest['build_seconds']}s)")
    return manifest


def snapshot_fingerprints(ver=None):
    """{"modules": {module dir: fingerprint}, "assets": fingerprint} of the CSI snapshot machinery's sources."""
    ver = ver or snapshot_versions()
    modules = {module_dir: module_fingerprint(module_dir, ver) for module_dir in SNAPSHOT_BUILDS}
    assets = {
        folder: [module, ver[_SNAPSHOT_ASSET_KEYS[module]], files]
        for folder, (module, files) in SNAPSHOT_ASSETS.items()
    }
    return {"modules": modules, "assets": hashlib.sha256(json.dumps(assets, sort_keys=True).encode()).hexdigest()}


_SNAPSHOT_ASSET_KEYS = {
    SNAPSHOT_CLIENT_MODULE: "external-snapshotter-client",
    SNAPSHOTTER_MODULE: "external-snapshotter",
}


def snapshot_asset_paths(root=None):
    """{folder: [paths]} of the CRDs and RBAC manifests ``make snapshot-bins`` copies from the pinned modules."""
    root = root or cache_root()
    return {
        folder: [root / SNAPSHOTS_DIR / folder / Path(rel).name for rel in files]
        for folder, (_module, files) in SNAPSHOT_ASSETS.items()
    }


def snapshots_cached(root=None):
    """The CSI snapshot build's record (snapshots.json) if its binaries and assets are complete and current."""
    root = root or cache_root()
    try:
        manifest = json.loads((root / SNAPSHOTS_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    current = snapshot_fingerprints()
    recorded = recorded_fingerprints(manifest)
    if stale_modules(recorded, current["modules"], SNAPSHOT_BUILDS, _existing_binaries(root)):
        return None
    if manifest.get("assets") != current["assets"]:
        return None
    if not all(path.is_file() for paths in snapshot_asset_paths(root).values() for path in paths):
        return None
    return manifest


def build_snapshots(force=False, jobs=2, log=print):
    """``make snapshot-bins``: the CSI snapshot machinery's binaries into the cache's bin/, its CRDs and RBAC
    manifests (copied from the pinned modules) into <cache>/snapshots/; its own record, snapshots.json, so that
    the default build (``build``) neither sees nor rebuilds it."""
    root = cache_root()
    with _locked(root):
        if not force:
            manifest = snapshots_cached(root)
            if manifest:
                log(f"CSI snapshot binaries up to date in {root}")
                return manifest
        go, env, go_version = _toolchain(jobs)
        ver = snapshot_versions()
        current = snapshot_fingerprints(ver)
        bin_dir = root / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        (root / SNAPSHOTS_MANIFEST).unlink(missing_ok=True)  # not current until rebuilt
        modules = {}
        for module_dir in SNAPSHOT_BUILDS:
            t0 = time.monotonic()
            _build_module(go, env, module_dir, ver, bin_dir, log, builds=SNAPSHOT_BUILDS)
            modules[module_dir] = _module_record(
                current["modules"][module_dir], SNAPSHOT_BUILDS[module_dir], t0, go_version
            )
        stage = root / f".{SNAPSHOTS_DIR}.partial"
        shutil.rmtree(stage, ignore_errors=True)
        for folder, (module, files) in SNAPSHOT_ASSETS.items():
            src = _module_dir(go, env, module, ver[_SNAPSHOT_ASSET_KEYS[module]])
            (stage / folder).mkdir(parents=True)
            for rel in files:
                shutil.copyfile(src / rel, stage / folder / Path(rel).name)
        shutil.rmtree(root / SNAPSHOTS_DIR, ignore_errors=True)
        stage.rename(root / SNAPSHOTS_DIR)
        manifest = {"versions": ver, "go": go_version, "modules": modules, "assets": current["assets"]}
        tmp = root / f"{SNAPSHOTS_MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        tmp.replace(root / SNAPSHOTS_MANIFEST)
    log(f"CSI snapshot binaries ready in {root} ({modules['csi-snapshots']['seconds']}s)")
    return manifest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache is current")
    parser.add_argument(
        "--jobs",
        type=int,
        default=int(os.environ.get("HANZO_KMS_GO_JOBS", "2")),
        help="go build -p (parallel compile jobs; memory grows with it)",
    )
    parser.add_argument("--print-dir", action="store_true", help="print the cache dir and exit")
    parser.add_argument(
        "--snapshots",
        action="store_true",
        help="build only the CSI snapshot machinery (make snapshot-bins), not the default set",
    )
    args = parser.parse_args(argv)
    if args.print_dir:
        print(cache_root())
        return 0
    try:
        if args.snapshots:
            build_snapshots(force=args.force, jobs=args.jobs)
        else:
            build(force=args.force, jobs=args.jobs)
    except LabError as exc:
        print(f"make {'snapshot-bins' if args.snapshots else 'k8s-bins'}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
