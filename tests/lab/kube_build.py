"""Build the lab's Kubernetes binaries from the Go module proxy (``make k8s-bins``).

Builds, with the local Go toolchain, pinned versions of kube-apiserver, kube-controller-manager, kube-scheduler and
kubectl (through the wrapper module ``tools/kube/kubernetes``, which replaces every staging module with its published
``v0.Y.Z`` twin), etcd, kwok and helm (one wrapper module each, so their dependencies never raise Kubernetes'),
and collects the CloudNativePG / Barman Cloud plugin CRDs and kwok's default stages from the module cache.

Everything lands in ``~/.cache/hanzo-kms/k8s/<kubernetes version>/`` (``HANZO_KMS_K8S_CACHE`` overrides the parent
folder) and is reused when its ``manifest.json`` matches the wrapper modules; nothing built is ever written to the repo.

    python -m tests.lab.kube_build [--force] [--jobs N]
"""
from __future__ import annotations

import argparse
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
    from tests.lab.core import LabError
except ImportError:  # pragma: no cover
    class LabError(Exception):
        """A lab problem with a message meant for the operator."""

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPO_ROOT / "tools" / "kube"

KUBE_VERSION = "v1.34.2"
CNPG_MODULE = "github.com/cloudnative-pg/cloudnative-pg"
CNPG_VERSION = "v1.30.0"
BARMAN_MODULE = "github.com/cloudnative-pg/plugin-barman-cloud"
BARMAN_VERSION = "v0.14.0"
MIN_GO = (1, 24)

# module dir -> (binary name -> package)
BUILDS = {
    "kubernetes": {
        "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
        "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-scheduler": "k8s.io/kubernetes/cmd/kube-scheduler",
        "kubectl": "k8s.io/kubernetes/cmd/kubectl",
        "kubelet": "k8s.io/kubernetes/cmd/kubelet",
        "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
    },
    "etcd": {"etcd": "go.etcd.io/etcd/server/v3"},
    "kwok": {"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
    "helm": {"helm": "helm.sh/helm/v3/cmd/helm"},
}
BINARIES = [name for bins in BUILDS.values() for name in bins]

CRD_FILES = {
    CNPG_MODULE: ["postgresql.cnpg.io_clusters.yaml", "postgresql.cnpg.io_backups.yaml",
                  "postgresql.cnpg.io_scheduledbackups.yaml"],
    BARMAN_MODULE: ["barmancloud.cnpg.io_objectstores.yaml"],
}
# Fallback when the CNPG modules cannot be downloaded: the same files, copied verbatim (see its SOURCES.md).
CRD_FALLBACK_DIRS = [os.environ.get("HANZO_KMS_CNPG_CRDS_DIR", ""), "/work/shared/crds"]

KWOK_STAGES = ["kustomize/stage/node/fast/node-initialize.yaml",
               "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
               "kustomize/stage/pod/fast/pod-ready.yaml",
               "kustomize/stage/pod/fast/pod-complete.yaml",
               "kustomize/stage/pod/fast/pod-delete.yaml"]


def cache_root():
    base = os.environ.get("HANZO_KMS_K8S_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hanzo-kms", "k8s")
    return Path(base) / KUBE_VERSION


def _required_version(module_dir, module):
    text = (TOOLS_DIR / module_dir / "go.mod").read_text(encoding="utf-8")
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.M)
    if not match:
        raise LabError(f"{module} is not required in tools/kube/{module_dir}/go.mod")
    return match.group(1)


def versions():
    return {
        "kubernetes": KUBE_VERSION,
        "etcd": _required_version("etcd", "go.etcd.io/etcd/server/v3"),
        "kwok": _required_version("kwok", "sigs.k8s.io/kwok"),
        "helm": _required_version("helm", "helm.sh/helm/v3"),
        "cloudnative-pg": CNPG_VERSION,
        "plugin-barman-cloud": BARMAN_VERSION,
    }


def fingerprint():
    """Hash of the wrapper modules and pins: the cache is rebuilt when any of them changes."""
    digest = hashlib.sha256(json.dumps(versions(), sort_keys=True).encode())
    for module_dir in sorted(BUILDS):
        for name in ("go.mod", "go.sum", "tools.go"):
            path = TOOLS_DIR / module_dir / name
            if path.exists():
                digest.update(f"{module_dir}/{name}\0".encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def cached(root=None):
    """The cached build if complete and current, else None."""
    root = root or cache_root()
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("fingerprint") != fingerprint():
        return None
    if not all((root / "bin" / name).is_file() for name in BINARIES):
        return None
    return manifest


def _go_env(jobs):
    env = dict(os.environ)
    env.update(GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS=f"-p={jobs} -trimpath -mod=readonly")
    return env


def check_go():
    go = shutil.which("go") or ("/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None)
    if not go:
        raise LabError("the Go toolchain is required to build the lab's Kubernetes binaries (make k8s-bins) but 'go' "
                       f"is not on PATH: install Go >= {MIN_GO[0]}.{MIN_GO[1]} (https://go.dev/dl/) and retry")
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False,
                         env=dict(os.environ, GOTOOLCHAIN="local")).stdout.strip()
    match = re.match(r"go(\d+)\.(\d+)", out)
    if not match or (int(match.group(1)), int(match.group(2))) < MIN_GO:
        raise LabError(f"{go} reports {out or 'no version'}; building Kubernetes {KUBE_VERSION} needs Go >= "
                       f"{MIN_GO[0]}.{MIN_GO[1]}")
    return go


def _run(argv, cwd, env, what):
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        hint = ""
        if re.search(r"dial tcp|no such host|connection refused|i/o timeout|proxyconnect|403 Forbidden|"
                     r"verifying module|GOPROXY|could not resolve", tail):
            proxy = env.get("GOPROXY") or "https://proxy.golang.org,direct"
            hint = (f"\nthe Go module proxy ({proxy}) looks unreachable: make k8s-bins needs it, or a module cache "
                    "that already holds the pinned modules (then set GOPROXY=off)")
        raise LabError(f"{what} failed ({' '.join(argv)} in {cwd}):\n{tail}{hint}")
    return proc.stdout


def _module_dir(go, env, module, version):
    out = _run([go, "mod", "download", "-json", f"{module}@{version}"], TOOLS_DIR, env,
               f"downloading {module}@{version}")
    info = json.loads(out)
    if info.get("Error"):
        raise LabError(f"downloading {module}@{version}: {info['Error']}")
    return Path(info["Dir"])


def kube_ldflags(version):
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.gitVersion={version}", f"-X {pkg}.gitMajor={major}", f"-X {pkg}.gitMinor={minor}",
                  f"-X {pkg}.gitTreeState=clean"]
    return " ".join(flags)


def build(force=False, jobs=2, log=print):
    """Build (or reuse) everything; return the manifest dict."""
    root = cache_root()
    if not force:
        manifest = cached(root)
        if manifest:
            log(f"k8s binaries up to date in {root}")
            return manifest
    go = check_go()
    env = _go_env(jobs)
    stage = root.with_name(root.name + ".partial")
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "bin").mkdir(parents=True)
    ver = versions()
    started = time.monotonic()
    timings = {}
    for module_dir, bins in BUILDS.items():
        cwd = TOOLS_DIR / module_dir
        t0 = time.monotonic()
        log(f"downloading modules for tools/kube/{module_dir} ...")
        _run([go, "mod", "download"], cwd, env, f"module download for tools/kube/{module_dir}")
        if module_dir == "kubernetes":
            ldflags = kube_ldflags(KUBE_VERSION)
        elif module_dir == "helm":
            ldflags = f"-s -w -X helm.sh/helm/v3/internal/version.version={ver['helm']}"
        elif module_dir == "kwok":
            ldflags = f"-s -w -X sigs.k8s.io/kwok/pkg/consts.Version={ver['kwok'].lstrip('v')}"
        else:
            ldflags = "-s -w"
        for name, pkg in bins.items():
            log(f"building {name} ({pkg}) ...")
            _run([go, "build", "-ldflags", ldflags, "-o", str(stage / "bin" / name), pkg], cwd, env,
                 f"building {name}")
        timings[module_dir] = round(time.monotonic() - t0, 1)

    crd_dir = stage / "crds"
    crd_dir.mkdir()
    crd_source = "go modules"
    try:
        for module, version in ((CNPG_MODULE, CNPG_VERSION), (BARMAN_MODULE, BARMAN_VERSION)):
            src = _module_dir(go, env, module, version) / "config" / "crd" / "bases"
            for name in CRD_FILES[module]:
                shutil.copyfile(src / name, crd_dir / name)
    except (LabError, OSError) as exc:
        fallback = next((Path(d) for d in CRD_FALLBACK_DIRS if d and Path(d, "postgresql.cnpg.io_clusters.yaml").is_file()),
                        None)
        if not fallback:
            raise
        log(f"warning: CNPG CRDs from the module proxy unavailable ({exc}); using {fallback}")
        crd_source = str(fallback)
        for names in CRD_FILES.values():
            for name in names:
                shutil.copyfile(fallback / name, crd_dir / name)

    stages_dir = stage / "kwok-stages"
    stages_dir.mkdir()
    kwok_src = _module_dir(go, env, "sigs.k8s.io/kwok", ver["kwok"])
    for rel in KWOK_STAGES:
        shutil.copyfile(kwok_src / rel, stages_dir / Path(rel).name)

    manifest = {"fingerprint": fingerprint(), "versions": ver, "crd_source": crd_source,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "build_seconds": round(time.monotonic() - started, 1), "module_seconds": timings,
                "go": subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False,
                                     env=env).stdout.strip()}
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(root, ignore_errors=True)
    stage.rename(root)
    log(f"k8s binaries built in {manifest['build_seconds']}s into {root}")
    return manifest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache is current")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("HANZO_KMS_GO_JOBS", "2")),
                        help="go build -p (parallel compile jobs; memory grows with it)")
    parser.add_argument("--print-dir", action="store_true", help="print the cache dir and exit")
    args = parser.parse_args(argv)
    if args.print_dir:
        print(cache_root())
        return 0
    try:
        build(force=args.force, jobs=args.jobs)
    except LabError as exc:
        print(f"make k8s-bins: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
