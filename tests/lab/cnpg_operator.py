"""The real CloudNativePG operator and Barman Cloud plugin for the lab: their manifests, rendered from the modules.

Manifests are rendered at build time (``make k8s-bins``, tests/lab/kube_build.py) with the built kustomize from
the pinned modules' own kustomizations, the way each project makes its release manifest:

- CNPG (``hack/release.sh``): ``kustomize edit set image controller=<DefaultOperatorImageName of pkg/versions>`` in
  ``config/manager``, then ``kustomize build config/default`` (= ``releases/cnpg-<version>.yaml``);
- the plugin (Taskfile ``manifest``, on a tag): ``kustomize edit set image plugin-barman-cloud=<image>:<tag>`` and
  ``kustomize edit set secret plugin-barman-cloud --from-literal=SIDECAR_IMAGE=<sidecar>:<tag>`` in
  ``kubernetes/``, then ``kustomize build kubernetes``.

Then, for the lab only (:func:`adapt_for_lab`): every container gets ``imagePullPolicy: IfNotPresent`` (nothing can be
pulled here; the images are built and imported under the upstream names) and the plugin's cert-manager objects are
left out: tests/lab/cnpg_plugin_tls.py makes the two TLS Secrets that cert-manager would have issued.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

try:  # the lab package; kube_build also runs as a plain script
    from tests.lab.core import LabError
except ImportError:  # pragma: no cover

    class LabError(Exception):
        """A lab problem with a message meant for the operator."""


OPERATOR_MANIFEST = "cnpg-operator.yaml"
PLUGIN_MANIFEST = "barman-cloud-plugin.yaml"
LAB_PULL_POLICY = "IfNotPresent"
# The image the plugin's kustomization names (kubernetes/kustomization.yaml, images[].name) and its sidecar's Secret.
PLUGIN_IMAGE_NAME = "plugin-barman-cloud"
PLUGIN_SIDECAR_SECRET = "plugin-barman-cloud"
# Unreleased builds are published with this suffix (the plugin's Taskfile); a tag drops it.
TESTING_SUFFIX = "-testing"
CERT_MANAGER_GROUP = "cert-manager.io"

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


# -- YAML ----------------------------------------------------------------------------------------------------------
def load_docs(text):
    """The non-empty documents of a multi-document YAML text."""
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc]


def dump_docs(docs):
    return yaml.dump_all(
        docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096, explicit_start=True
    )


def read_manifest(path):
    return load_docs(Path(path).read_text(encoding="utf-8"))


# -- what the manifests hold -----------------------------------------------------------------------------------------
def pod_specs(doc):
    """Pod specs inside one object (Deployment, StatefulSet, DaemonSet, Job: spec.template.spec; CronJob deeper)."""
    spec = doc.get("spec") or {}
    if doc.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    template_spec = (spec.get("template") or {}).get("spec")
    return [template_spec] if isinstance(template_spec, dict) else []


def containers(doc):
    """Every container and init container of an object's pod template(s)."""
    found = []
    for pod in pod_specs(doc):
        for key in ("initContainers", "containers"):
            found.extend(pod.get(key) or [])
    return found


def adapt_for_lab(docs):
    """``docs`` without cert-manager objects, with ``imagePullPolicy: IfNotPresent`` on every container.

    Objects with containers are changed on copies (``docs`` stay as upstream renders them), the others passed as they
    are. The images are imported into each node's containerd under the upstream names: a pull would hang here.
    """
    adapted = []
    for doc in docs:
        if str(doc.get("apiVersion", "")).split("/", maxsplit=1)[0] == CERT_MANAGER_GROUP:
            continue
        if containers(doc):
            doc = copy.deepcopy(doc)
            for container in containers(doc):
                container["imagePullPolicy"] = LAB_PULL_POLICY
        adapted.append(doc)
    return adapted


def find(docs, kind, name=None):
    """The documents of one kind (and name); LabError naming what is missing when there is none."""
    found = [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]
    if not found:
        raise LabError(f"the rendered manifest has no {kind}{' ' + name if name else ''}")
    return found


def deployment_images(docs):
    """{deployment name: [image, ...]} of the Deployments in ``docs``."""
    return {d["metadata"]["name"]: [c["image"] for c in containers(d)] for d in find(docs, "Deployment")}


# -- rendering -------------------------------------------------------------------------------------------------------
def operator_image(cnpg_dir):
    """CNPG's release image, as its release script writes it into pkg/versions/versions.go."""
    text = Path(cnpg_dir, "pkg", "versions", "versions.go").read_text(encoding="utf-8")
    match = re.search(r'^\s*DefaultOperatorImageName\s*=\s*"([^"]+)"', text, re.M)
    if not match:
        raise LabError(
            f"no DefaultOperatorImageName in {cnpg_dir}/pkg/versions/versions.go: cannot name the "
            "operator image of the CNPG release"
        )
    return match.group(1)


def plugin_images(kustomization, version):
    """(plugin image, sidecar image) of the plugin's release ``version`` from its kustomization (main branch names).

    The plugin's Taskfile publishes ``ghcr.io/<repo>`` and ``ghcr.io/<repo>-sidecar`` tagged with the git tag, and
    ``…-testing:<branch>`` otherwise; the committed kustomization holds the latter.
    """
    image = next((i for i in kustomization.get("images") or [] if i.get("name") == PLUGIN_IMAGE_NAME), None)
    generator = next(
        (g for g in kustomization.get("secretGenerator") or [] if g.get("name") == PLUGIN_SIDECAR_SECRET), None
    )
    sidecar = next(
        (lit.split("=", 1)[1] for lit in (generator or {}).get("literals") or [] if lit.startswith("SIDECAR_IMAGE=")),
        None,
    )
    if not image or not image.get("newName") or not sidecar:
        raise LabError(
            f"the plugin's kubernetes/kustomization.yaml no longer names the image {PLUGIN_IMAGE_NAME!r} "
            f"and the SIDECAR_IMAGE of Secret {PLUGIN_SIDECAR_SECRET!r}: update tests/lab/cnpg_operator.py"
        )
    sidecar_name = re.sub(r"(@.*|:[^/:]*)$", "", sidecar)
    return (
        f"{image['newName'].removesuffix(TESTING_SUFFIX)}:{version}",
        f"{sidecar_name.removesuffix(TESTING_SUFFIX)}:{version}",
    )


def _writable_copy(src, dst):
    """Copy a module-cache folder (read-only files and dirs) so kustomize edit can rewrite it."""
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    for folder, dirs, _files in os.walk(dst):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o755)
    os.chmod(dst, 0o755)


def _kustomize(kustomize, args, cwd):
    proc = subprocess.run([str(kustomize), *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LabError(
            f"kustomize {' '.join(args)} in {cwd} failed ({proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-1500:]}"
        )
    return proc.stdout


def render_operator(kustomize, cnpg_dir):
    """(upstream documents, operator image): CNPG's release manifest rendered from its module's config/."""
    image = operator_image(cnpg_dir)
    with tempfile.TemporaryDirectory(prefix="cnpg-config-") as tmp:
        config = Path(tmp, "config")
        _writable_copy(Path(cnpg_dir, "config"), config)
        _kustomize(kustomize, ["edit", "set", "image", f"controller={image}"], config / "manager")
        docs = load_docs(_kustomize(kustomize, ["build", str(config / "default")], tmp))
    return docs, image


def render_plugin(kustomize, plugin_dir, version):
    """(upstream documents, plugin image, sidecar image): the plugin's release manifest from its module."""
    with tempfile.TemporaryDirectory(prefix="barman-cloud-config-") as tmp:
        for folder in ("kubernetes", "config"):  # kubernetes/ refers to ../config/crd and ../config/rbac
            _writable_copy(Path(plugin_dir, folder), Path(tmp, folder))
        overlay = Path(tmp, "kubernetes")
        kustomization = yaml.load((overlay / "kustomization.yaml").read_text(encoding="utf-8"), Loader=_Loader)
        image, sidecar = plugin_images(kustomization, version)
        _kustomize(kustomize, ["edit", "set", "image", f"{PLUGIN_IMAGE_NAME}={image}"], overlay)
        _kustomize(
            kustomize,
            ["edit", "set", "secret", PLUGIN_SIDECAR_SECRET, f"--from-literal=SIDECAR_IMAGE={sidecar}"],
            overlay,
        )
        docs = load_docs(_kustomize(kustomize, ["build", str(overlay)], tmp))
    return docs, image, sidecar


def _write_crds(docs, crd_dir, names):
    """One file per CRD named in ``names``, cut from ``docs``; all CRD names found."""
    crds = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "CustomResourceDefinition"}
    missing = sorted(set(names) - set(crds))
    if missing:
        raise LabError(f"the pinned CNPG / plugin manifests define no CRD {', '.join(missing)}")
    crd_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        (crd_dir / f"{name}.yaml").write_text(dump_docs([crds[name]]), encoding="utf-8")
    return sorted(crds)


def render(kustomize, cnpg_dir, plugin_dir, plugin_version, out_dir, crd_dir, lab_crds):
    """Write both lab manifests into ``out_dir`` and the CRDs named in ``lab_crds`` into ``crd_dir``.

    Returns the manifest.json part: images, manifest file names, all CRD names, the CRD files written.
    """
    operator_docs, image = render_operator(kustomize, cnpg_dir)
    plugin_docs, plugin_image, sidecar_image = render_plugin(kustomize, plugin_dir, plugin_version)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for file_name, docs in ((OPERATOR_MANIFEST, operator_docs), (PLUGIN_MANIFEST, plugin_docs)):
        (out_dir / file_name).write_text(dump_docs(adapt_for_lab(docs)), encoding="utf-8")
    return {
        "images": {"operator": image, "plugin": plugin_image, "sidecar": sidecar_image},
        "manifests": {"operator": f"{out_dir.name}/{OPERATOR_MANIFEST}", "plugin": f"{out_dir.name}/{PLUGIN_MANIFEST}"},
        "crds_available": _write_crds(operator_docs + plugin_docs, Path(crd_dir), lab_crds),
        "crds": sorted(lab_crds),
    }
