"""Container images for the lab's real nodes, built here without a registry (issue 15).

An image is described by a :class:`Recipe`: a name (the exact reference pods use, with ``imagePullPolicy:
IfNotPresent``), a function that fills a root filesystem, the OCI config (entrypoint, user, env, workdir) and the
inputs that determine its content. ``ensure(recipe)`` builds the rootfs in a scratch dir, packs it with ``umoci`` as
an OCI image layout and stores it as ``<cache>/images/<slug>-<key>.tar``; ``key`` hashes the recipe's inputs, so a
warm cache reuses the archive and a changed input builds a new one. ``import_into(containerd, paths)`` makes images
visible to a site's CRI (containerd namespace ``k8s.io``); nothing is ever pulled.

    tar = images.ensure(images.PAUSE)
    images.import_into(images.Containerd(ctr_path, socket), [tar])

Recipes that need Debian packages, PyPI wheels or the Go binaries of ``make k8s-bins`` live beside the two base
images here (``pause``: the pod sandbox; ``busybox``: a shell for probes), built from Debian's ``busybox-static``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from tests.lab.core import LabError, require_binary

FORMAT_VERSION = 2  # bump when the way images are packed changes: every cached archive is rebuilt
BUSYBOX = "/bin/busybox"


def cache_dir():
    base = os.environ.get("HANZO_KMS_IMAGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hanzo-kms", "images")
    return Path(base)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to make one image. ``fill(rootfs)`` populates an empty root filesystem directory; ``inputs`` is everything
    that determines the result (package lists and versions, hashes of copied files, this recipe's revision): the
    cache key is its hash, so it must change whenever ``fill`` would produce something else."""

    name: str
    fill: Callable[[Path], None]
    inputs: dict
    entrypoint: tuple = ()
    cmd: tuple = ()
    user: str = ""
    env: tuple = ()
    workdir: str = ""

    def key(self):
        config = {"entrypoint": self.entrypoint, "cmd": self.cmd, "user": self.user, "env": self.env,
                  "workdir": self.workdir}
        blob = json.dumps({"format": FORMAT_VERSION, "name": self.name, "inputs": self.inputs, "config": config},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def repository(self):
        return self.name.rsplit(":", 1)[0]

    def tag(self):
        return self.name.rsplit(":", 1)[1]

    def slug(self):
        return self.name.rsplit("/", 1)[-1].replace(":", "-")


def file_digest(path):
    """sha256 of a file, for a recipe's ``inputs`` when it copies that file into the image."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def archive_path(recipe):
    return cache_dir() / f"{recipe.slug()}-{recipe.key()}.tar"


def _run(argv, what, **kwargs):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise LabError(f"{what} failed ({' '.join(str(a) for a in argv[:6])} ...):\n{tail}")
    return proc.stdout


def ensure(recipe, log=print):
    """The OCI archive of ``recipe``: from the cache when its inputs are unchanged, else built now."""
    if ":" not in recipe.name.rsplit("/", 1)[-1]:
        raise LabError(f"image name {recipe.name!r} has no tag: pods name images as repository:tag")
    target = archive_path(recipe)
    if target.is_file():
        return target
    umoci = require_binary("umoci", "umoci")
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"image-{recipe.slug()}-", dir=target.parent) as scratch:
        scratch = Path(scratch)
        layout, bundle = scratch / "layout", scratch / "bundle"
        ref = f"{layout}:{recipe.tag()}"  # the ref name in the layout's index: ctr names the image <repo>:<tag>
        _run([umoci, "init", "--layout", str(layout)], f"{recipe.name}: umoci init")
        _run([umoci, "new", "--image", ref], f"{recipe.name}: umoci new")
        _run([umoci, "unpack", "--image", ref, str(bundle)], f"{recipe.name}: umoci unpack")
        rootfs = bundle / "rootfs"
        try:
            recipe.fill(rootfs)
        except LabError:
            raise
        except (OSError, subprocess.SubprocessError) as exc:
            raise LabError(f"building the root filesystem of {recipe.name} failed: {exc}") from exc
        # one layer, no history of the scratch paths; timestamps fixed so equal inputs give equal layers
        _run([umoci, "repack", "--no-history", "--refresh-bundle", "--image", ref, str(bundle)],
             f"{recipe.name}: umoci repack")
        config = [umoci, "config", "--no-history", "--image", ref, "--config.workingdir", recipe.workdir or "/"]
        config += ["--clear=config.entrypoint", "--clear=config.cmd", "--clear=config.env"]
        for arg in recipe.entrypoint:
            config += ["--config.entrypoint", arg]
        for arg in recipe.cmd:
            config += ["--config.cmd", arg]
        for item in recipe.env:
            config += ["--config.env", item]
        if recipe.user:
            config += ["--config.user", recipe.user]
        _run(config, f"{recipe.name}: umoci config")
        _run([umoci, "gc", "--layout", str(layout)], f"{recipe.name}: umoci gc")
        partial = target.with_suffix(".partial")
        _run(["tar", "-C", str(layout), "-cf", str(partial), "."], f"{recipe.name}: packing the layout")
        partial.rename(target)
    log(f"image {recipe.name} built in {time.monotonic() - started:.1f}s: {target}")
    return target


def ensure_all(recipes, log=print):
    return {recipe.name: ensure(recipe, log=log) for recipe in recipes}


@dataclasses.dataclass
class Containerd:
    """A site's containerd, reached with ``ctr`` on its own socket."""

    ctr: str
    address: str
    namespace: str = "k8s.io"

    def ctr_argv(self, *args):
        return [self.ctr, "--address", self.address, "--namespace", self.namespace, *args]

    def image_names(self):
        out = _run(self.ctr_argv("images", "list", "--quiet"), "listing containerd images")
        return set(out.split())


def import_into(containerd, archives):
    """Import OCI archives ``{name: path}`` into ``containerd`` under exactly those names (the layout's ref name is
    the tag, ``--base-name`` the repository; an import of an unchanged archive is cheap)."""
    for name, path in archives.items():
        _run(containerd.ctr_argv("images", "import", "--base-name", name.rsplit(":", 1)[0], str(path)),
             f"importing {name} into {containerd.address}")
    missing = set(archives) - containerd.image_names()
    if missing:
        raise LabError(f"containerd at {containerd.address} does not list {', '.join(sorted(missing))} after import")


# -- base images ---------------------------------------------------------------------------------------------------
def _busybox_inputs():
    if not os.access(BUSYBOX, os.X_OK):
        raise LabError(f"{BUSYBOX} is missing: install the Debian package busybox-static (make setup)")
    with open(BUSYBOX, "rb") as handle:
        if b"/ld-linux" in handle.read(8192):  # an ELF interpreter: Debian's dynamic busybox, useless in an image
            raise LabError(f"{BUSYBOX} is dynamically linked: install the Debian package busybox-static instead of busybox")
    return {"busybox": file_digest(BUSYBOX), "revision": 1}


def _fill_busybox(rootfs, applets=True):
    (rootfs / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for name in ("tmp", "etc", "proc", "sys", "dev", "var/run"):
        (rootfs / name).mkdir(parents=True, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
                                           encoding="ascii")
    (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n", encoding="ascii")
    if applets:
        out = _run([BUSYBOX, "--list"], "listing busybox applets")
        for applet in out.split():
            link = rootfs / "bin" / applet
            if applet != "busybox" and not link.exists():
                link.symlink_to("busybox")


def pause_recipe():
    """The pod sandbox image (containerd's ``sandbox_image``): sleeps until killed."""
    return Recipe(name="docker.io/hanzo-kms-lab/pause:1", fill=lambda root: _fill_busybox(root, applets=False),
                  inputs=_busybox_inputs(), entrypoint=("/bin/busybox", "sleep", "2147483647"))


def busybox_recipe():
    """A shell with the usual tools, for probe pods and init containers of the lab."""
    return Recipe(name="docker.io/hanzo-kms-lab/busybox:1", fill=_fill_busybox, inputs=_busybox_inputs(),
                  entrypoint=("/bin/sh",))
