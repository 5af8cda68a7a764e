"""Container images for the lab's real nodes, built here without a registry (issue 15).

An image is described by a :class:`Recipe`: a name (the exact reference pods use, with ``imagePullPolicy:
IfNotPresent``), a function that fills a root filesystem, the OCI config (entrypoint, user, env, workdir) and the
inputs that determine its content. ``ensure(recipe)`` builds the rootfs in a scratch dir, packs it with ``umoci`` as
an OCI image layout and stores it as ``<cache>/images/<slug>-<key>.tar``; ``key`` hashes the recipe's inputs, so a
warm cache reuses the archive and a changed input builds a new one. ``import_into(containerd, paths)`` makes images
visible to a site's CRI (containerd namespace ``k8s.io``); nothing is ever pulled.

    recipe = images.pause_recipe()
    images.import_into(images.Containerd(ctr_path, socket), {recipe.name: images.ensure(recipe)})

A recipe with a :class:`Debian` base starts from ``mmdebstrap --variant=minbase`` with its packages; the versions
the build installed (``dpkg-query -W``) join its key, and a warm run reuses the archive only while the Debian archive
still offers exactly those versions (:class:`DebianIndex`). PyPI packages are installed by pip inside the image's
chroot with every version pinned; Go binaries come from ``make k8s-bins`` (:func:`lab_binary`).

:func:`lab_recipes` lists every image the lab's pods use (docs/lab.md, "Images"); ``python -m tests.lab.images
build [--import-into SOCKET]`` builds them and prints the time each took.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

from tests.lab.core import REPO_ROOT, LabError, pid_alive, require_binary, unmount_under

FORMAT_VERSION = 2  # bump when the way images are packed changes: every cached archive is rebuilt
KEEP_ARCHIVES = 2  # archives kept per image name: the current one and the one before (another checkout's)
BUSYBOX = "/bin/busybox"
DEBIAN_SUITE = "bookworm"
# Files mmdebstrap leaves out of every Debian-based image (documentation only; copyright files stay).
DPKG_EXCLUDES = (
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
    "/usr/share/lintian/*",
)
DPKG_INCLUDES = ("/usr/share/doc/*/copyright",)
# How long the Debian package lists that decide whether a cached image is current are trusted before apt-get update
INDEX_MAX_AGE = float(os.environ.get("HANZO_KMS_IMAGE_INDEX_MAX_AGE", 3600))


def cache_dir():
    base = os.environ.get("HANZO_KMS_IMAGE_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "hanzo-kms", "images"
    )
    return Path(base)


@dataclasses.dataclass(frozen=True)
class Debian:
    """A root filesystem made of Debian packages by ``mmdebstrap`` (variant minbase, the suite's main, updates and
    security archives as mmdebstrap configures them), before the recipe's ``fill`` adds its own files.

    ``essential_hooks`` and ``hooks`` are shell commands mmdebstrap runs on the host (``"$1"`` is the root
    filesystem) after the essential packages and after all packages are installed. They are part of the key, so
    they must not name temporary paths; files they need are written by the hook itself."""

    packages: tuple
    hooks: tuple = ()
    essential_hooks: tuple = ()
    suite: str = DEBIAN_SUITE
    excludes: tuple = ()  # more dpkg path-exclude patterns (files of installed packages left out)


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
    debian: Debian | None = None

    def key(self):
        """The hash of everything known before building (with a Debian base: the package versions come on top,
        see :func:`archive_key`)."""
        config = {
            "entrypoint": self.entrypoint,
            "cmd": self.cmd,
            "user": self.user,
            "env": self.env,
            "workdir": self.workdir,
        }
        spec = {"format": FORMAT_VERSION, "name": self.name, "inputs": self.inputs, "config": config}
        if self.debian:
            spec["debian"] = dataclasses.asdict(self.debian)
        blob = json.dumps(spec, sort_keys=True, default=str)
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


def archive_key(recipe, packages=None):
    """The key of the archive: the recipe's own key, plus (with a Debian base) the versions of the packages the built
    root filesystem holds (``dpkg-query -W``), so a Debian update of any of them makes a new archive."""
    if not recipe.debian:
        return recipe.key()
    blob = json.dumps({"recipe": recipe.key(), "packages": packages or {}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def archive_path(recipe, packages=None):
    return cache_dir() / f"{recipe.slug()}-{archive_key(recipe, packages)}.tar"


def _record_path(recipe):
    """What the last build of a Debian-based recipe installed: ``{"packages": {name: version}, "sources": ...}``."""
    return cache_dir() / f"{recipe.slug()}-{recipe.key()}.debian.json"


def _run(argv, what, **kwargs):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise LabError(f"{what} failed ({' '.join(str(a) for a in argv[:6])} ...):\n{tail}")
    return proc.stdout


def cached_archive(recipe, log=print, index=None):
    """The cached archive of ``recipe`` if it is current, else None. A Debian-based recipe is current when the
    Debian archive still offers, for every package its last build installed, that same version."""
    if not recipe.debian:
        target = archive_path(recipe)
        return target if target.is_file() else None
    try:
        record = json.loads(_record_path(recipe).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    target = archive_path(recipe, record["packages"])
    if not target.is_file():
        return None
    index = index or debian_index()
    changed = stale_packages(record["packages"], index.candidates(record["sources"], sorted(record["packages"])))
    if changed:
        log(
            f"image {recipe.name}: Debian has other versions of {', '.join(changed[:8])}"
            f"{' ...' if len(changed) > 8 else ''}: rebuilding"
        )
        return None
    return target


def ensure(recipe, log=print, index=None):
    """The OCI archive of ``recipe``: from the cache when its inputs are unchanged, else built now."""
    return ensure_built(recipe, log=log, index=index)[0]


def ensure_built(recipe, log=print, index=None):
    """``(archive, built)``: as :func:`ensure`, and whether it had to be built now."""
    if ":" not in recipe.name.rsplit("/", 1)[-1]:
        raise LabError(f"image name {recipe.name!r} has no tag: pods name images as repository:tag")
    target = cached_archive(recipe, log=log, index=index)
    if target:
        return target, False
    umoci = require_binary("umoci", "umoci")
    started = time.monotonic()
    cache_dir().mkdir(parents=True, exist_ok=True)
    remove_stale_scratch()
    with tempfile.TemporaryDirectory(prefix=f"image-{os.getpid()}-{recipe.slug()}-", dir=cache_dir()) as scratch:
        scratch = Path(scratch)
        layout, bundle = scratch / "layout", scratch / "bundle"
        ref = f"{layout}:{recipe.tag()}"  # the ref name in the layout's index: ctr names the image <repo>:<tag>
        _run([umoci, "init", "--layout", str(layout)], f"{recipe.name}: umoci init")
        _run([umoci, "new", "--image", ref], f"{recipe.name}: umoci new")
        _run([umoci, "unpack", "--image", ref, str(bundle)], f"{recipe.name}: umoci unpack")
        rootfs = bundle / "rootfs"
        record = None
        try:
            if recipe.debian:
                record = _debootstrap(recipe, rootfs)
            recipe.fill(rootfs)
        except (OSError, subprocess.SubprocessError) as exc:
            raise LabError(f"building the root filesystem of {recipe.name} failed: {exc}") from exc
        # one layer, no history of the scratch paths
        _run(
            [umoci, "repack", "--no-history", "--refresh-bundle", "--image", ref, str(bundle)],
            f"{recipe.name}: umoci repack",
        )
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
        target = archive_path(recipe, record and record["packages"])
        partial = scratch / "archive.tar"  # in the scratch dir: a killed build leaves no partial archive
        _run(["tar", "-C", str(layout), "-cf", str(partial), "."], f"{recipe.name}: packing the layout")
        partial.rename(target)
        if record:
            _record_path(recipe).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    prune(recipe)
    log(f"image {recipe.name} built in {time.monotonic() - started:.1f}s: {target}")
    return target, True


def prune(recipe, keep=KEEP_ARCHIVES):
    """Delete all but the ``keep`` newest archives (and Debian records) of ``recipe``'s image name."""
    for suffix in (r"\.tar", r"\.debian\.json"):
        pattern = re.compile(rf"{re.escape(recipe.slug())}-[0-9a-f]{{16}}{suffix}")
        files = sorted(
            (f for f in cache_dir().iterdir() if pattern.fullmatch(f.name)),
            key=lambda f: f.stat().st_mtime,
            reverse=True,
        )
        for old in files[keep:]:
            old.unlink(missing_ok=True)


# -- Debian root filesystems -----------------------------------------------------------------------------------------
def _debootstrap(recipe, rootfs):
    """Fill ``rootfs`` with the recipe's Debian packages; return what it installed (``packages``: name -> version,
    from ``dpkg-query -W`` of the new root filesystem, and the apt ``sources`` it came from)."""
    if os.geteuid() != 0:
        raise LabError(f"building {recipe.name} needs root (mmdebstrap --mode=root builds its Debian root filesystem)")
    mmdebstrap = require_binary("mmdebstrap", "mmdebstrap")
    debian = recipe.debian
    argv = [
        mmdebstrap,
        "--mode=root",
        "--variant=minbase",
        "--format=directory",
        "--dpkgopt=force-unsafe-io",
        '--aptopt=Acquire::Languages "none"',
        "--include=" + ",".join(debian.packages),
    ]
    argv += [f"--dpkgopt=path-exclude={path}" for path in DPKG_EXCLUDES + debian.excludes]
    argv += [f"--dpkgopt=path-include={path}" for path in DPKG_INCLUDES]
    argv += [f"--essential-hook={hook}" for hook in debian.essential_hooks]
    argv += [f"--customize-hook={hook}" for hook in debian.hooks]
    # mmdebstrap wants an empty target: umoci's unpack left an empty rootfs directory
    argv += [debian.suite, str(rootfs)]
    _run(argv, f"{recipe.name}: mmdebstrap {debian.suite} with {' '.join(debian.packages)}", stdin=subprocess.DEVNULL)
    out = _run(
        ["dpkg-query", f"--admindir={rootfs}/var/lib/dpkg", "-W", "-f", "${Package}\\t${Version}\\n"],
        f"{recipe.name}: listing the installed Debian packages",
    )
    packages = dict(line.split("\t", 1) for line in out.splitlines() if line.strip())
    sources = ""
    for path in [rootfs / "etc/apt/sources.list", *sorted((rootfs / "etc/apt/sources.list.d").glob("*"))]:
        if path.is_file():
            sources += path.read_text(encoding="utf-8")
    if not packages or not sources.strip():
        raise LabError(f"{recipe.name}: mmdebstrap left no dpkg database or apt sources in {rootfs}")
    return {"packages": packages, "sources": sources}


def stale_packages(recorded, candidates):
    """Names of the packages whose recorded version is not what the Debian archive offers now (or no longer offers
    at all): a build today would install something else."""
    return sorted(name for name, version in recorded.items() if candidates.get(name) != version)


def parse_apt_policy(text):
    """``apt-cache policy A B ...`` -> {name: candidate version} (absent: the archive does not have it)."""
    candidates, name = {}, None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            name = line[:-1].split(":", 1)[0]
        elif name and line.strip().startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            if version != "(none)":
                candidates[name] = version
    return candidates


class DebianIndex:
    """The package lists of the apt sources a build used, kept in the image cache (never the host's apt state), to
    ask which version a build today would install. Lists older than ``max_age`` seconds are refreshed (at most once
    per process); when the archive cannot be reached the last lists are used (and said so)."""

    def __init__(self, log=print, max_age=INDEX_MAX_AGE):
        self.log = log
        self.max_age = max_age
        self.refreshed = set()

    def _fresh(self, root):
        try:
            return time.time() - (root / "updated").stat().st_mtime < self.max_age
        except OSError:
            return False

    def _apt_options(self, root):
        return [
            "-o",
            f"Dir::Etc::SourceList={root}/sources.list",
            "-o",
            f"Dir::Etc::SourceParts={root}/sources.d",
            "-o",
            f"Dir::State={root}/state",
            "-o",
            f"Dir::State::status={root}/status",
            "-o",
            f"Dir::Cache={root}/cache",
            "-o",
            "Acquire::Languages=none",
            "-o",
            "Debug::NoLocking=1",
        ]

    def candidates(self, sources, packages):
        root = cache_dir() / "apt-index" / hashlib.sha256(sources.encode()).hexdigest()[:12]
        if root not in self.refreshed and not self._fresh(root):
            for sub in ("sources.d", "state/lists/partial", "cache/archives/partial"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            (root / "sources.list").write_text(sources, encoding="utf-8")
            (root / "status").touch()
            proc = subprocess.run(
                ["apt-get", *self._apt_options(root), "-q", "update"],
                capture_output=True,
                text=True,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            if proc.returncode != 0 or re.search(r"^(E:|W: Failed to fetch)", proc.stdout + proc.stderr, re.M):
                if not any((root / "state/lists").glob("*Packages*")):
                    raise LabError(
                        "cannot read the Debian package lists to check the cached images (apt-get update "
                        f"failed):\n{(proc.stderr or proc.stdout).strip()[-1500:]}"
                    )
                self.log(
                    "warning: the Debian archive could not be reached; checking cached images against the "
                    "package lists of the last run"
                )
            else:
                (root / "updated").touch()
            self.refreshed.add(root)
        out = _run(
            ["apt-cache", *self._apt_options(root), "policy", *packages],
            "reading Debian candidate versions",
            stdin=subprocess.DEVNULL,
        )
        return parse_apt_policy(out)


_INDEX = []


def debian_index():
    if not _INDEX:
        _INDEX.append(DebianIndex())
    return _INDEX[0]


def remove_stale_scratch():
    """Remove the scratch dirs of builds whose process is gone (a killed build; their mounts unmounted first)."""
    for scratch in cache_dir().glob("image-*"):
        match = re.match(r"image-(\d+)-", scratch.name)
        if scratch.is_dir() and match and not pid_alive(int(match.group(1))):
            unmount_under(scratch)
            shutil.rmtree(scratch, ignore_errors=True)


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
        return set(self.image_digests())

    def delete_tasks(self):
        """Kill and delete every task, then every container (best effort: used on the way down)."""
        for kind in ("tasks", "containers"):
            found = subprocess.run(
                self.ctr_argv(kind, "list", "--quiet"), capture_output=True, text=True, check=False
            ).stdout.split()
            if found:
                subprocess.run(
                    self.ctr_argv(kind, "delete", *(["--force"] if kind == "tasks" else []), *found),
                    capture_output=True,
                    text=True,
                    check=False,
                )

    def image_digests(self):
        """{name: digest of its manifest} of the images this containerd holds."""
        out = _run(self.ctr_argv("images", "list"), "listing containerd images")
        rows = [line.split() for line in out.splitlines()[1:]]
        return {row[0]: row[2] for row in rows if len(row) > 2}


def archive_digest(path):
    """The manifest digest of the image in an OCI archive written by :func:`ensure`."""
    with tarfile.open(path) as tar:
        member = next((m for m in tar.getmembers() if m.name in ("index.json", "./index.json")), None)
        if member is None:
            raise LabError(f"{path} is not an OCI image layout (no index.json): delete it and build again")
        return json.load(tar.extractfile(member))["manifests"][0]["digest"]


def import_into(containerd, archives):
    """Import OCI archives ``{name: path}`` into ``containerd`` under exactly those names (the layout's ref name is
    the tag, ``--base-name`` the repository). An image it already holds with the same manifest is not imported again
    (a re-import reads and hashes the whole archive: seconds per image). Returns the names imported."""
    present = containerd.image_digests()
    imported = []
    for name, path in archives.items():
        if present.get(name) == archive_digest(path):
            continue
        _run(
            containerd.ctr_argv("images", "import", "--base-name", name.rsplit(":", 1)[0], str(path)),
            f"importing {name} into {containerd.address}",
        )
        imported.append(name)
    missing = set(archives) - containerd.image_names()
    if missing:
        raise LabError(f"containerd at {containerd.address} does not list {', '.join(sorted(missing))} after import")
    return imported


# -- base images ---------------------------------------------------------------------------------------------------
def _busybox_inputs():
    if not os.access(BUSYBOX, os.X_OK):
        raise LabError(f"{BUSYBOX} is missing: install the Debian package busybox-static (make setup)")
    with open(BUSYBOX, "rb") as handle:
        if b"/ld-linux" in handle.read(8192):  # an ELF interpreter: Debian's dynamic busybox, useless in an image
            raise LabError(
                f"{BUSYBOX} is dynamically linked: install the Debian package busybox-static instead of busybox"
            )
    return {"busybox": file_digest(BUSYBOX), "revision": 1}


def _fill_busybox(rootfs, applets=True):
    (rootfs / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for name in ("tmp", "etc", "proc", "sys", "dev", "var/run"):
        (rootfs / name).mkdir(parents=True, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    (rootfs / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n", encoding="ascii"
    )
    (rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n", encoding="ascii")
    if applets:
        out = _run([BUSYBOX, "--list"], "listing busybox applets")
        for applet in out.split():
            link = rootfs / "bin" / applet
            if applet != "busybox" and not link.exists():
                link.symlink_to("busybox")


def pause_recipe():
    """The pod sandbox image (containerd's ``sandbox_image``): sleeps until killed."""
    return Recipe(
        name="docker.io/hanzo-kms-lab/pause:1",
        fill=lambda root: _fill_busybox(root, applets=False),
        inputs=_busybox_inputs(),
        entrypoint=("/bin/busybox", "sleep", "2147483647"),
    )


def busybox_recipe():
    """A shell with the usual tools, for probe pods and init containers of the lab."""
    return Recipe(
        name="docker.io/hanzo-kms-lab/busybox:1", fill=_fill_busybox, inputs=_busybox_inputs(), entrypoint=("/bin/sh",)
    )


# -- the lab's images (issue 15) -------------------------------------------------------------------------------------
LAB_REGISTRY = "docker.io/hanzo-kms-lab"
POSTGRES_IMAGE = f"{LAB_REGISTRY}/postgresql:15-bookworm"  # Debian's postgresql-15, shaped as CNPG expects
REDIS_IMAGE = f"{LAB_REGISTRY}/redis:7.0-bookworm"  # Debian's redis-server, for tests/lab/charts/redis
KMS_STANDIN_IMAGE = f"{LAB_REGISTRY}/kms-standin:1"  # tests/lab/kms_standin.py: NOT the KMS
BACKUP_TOOLS_IMAGE = (
    f"{LAB_REGISTRY}/redis-backup-tools:2"  # the collection's backup job, kubectl (the Redis backup CronJob)
)
# The names the CNPG 1.30.0 release manifest and the Barman Cloud plugin v0.14.0 module's manifest.yaml reference;
# the manifests the lab renders from the modules (kube_build, manifest.json "images") take precedence.
UPSTREAM_IMAGES = {
    "operator": "ghcr.io/cloudnative-pg/cloudnative-pg:1.30.0",
    "plugin": "ghcr.io/cloudnative-pg/plugin-barman-cloud-testing:main",
    "sidecar": "ghcr.io/cloudnative-pg/plugin-barman-cloud-sidecar-testing:main",
}
POSTGRES_UID = 26  # CNPG's default postgresUID/postgresGID: the operand image's postgres user has this UID
REDIS_UID = 1001  # the Redis chart's and the backup CronJob's runAsUser
NONROOT_UID = 65532  # distroless "nonroot", the user of CNPG's and the plugin's images
GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# barman-cloud for the plugin's sidecar: the version and extras of the plugin module's containers/ (Azure and Google
# clients left out: the lab's object store is S3), every dependency pinned by its sidecar-requirements.txt.
BARMAN_REQUIREMENT = "barman[cloud,snappy,lz4,zstandard]"
SIDECAR_REQUIREMENTS = "containers/sidecar-requirements.txt"
# The backup job's image: the collection where the execution environment (execution-environment.yml, ansible-builder)
# installs it, and a venv with the run-time libraries of redis_backup_job (requirements.txt's pins).
COLLECTIONS_PATH = "/usr/share/ansible/collections"
BACKUP_JOB_VENV = "/opt/hanzo-kms"
BACKUP_JOB_PACKAGES = ("redis", "boto3", "anycrc")


def lab_binary(name):
    """A Go binary of ``make k8s-bins`` (kubectl, cnpg-manager, barman-cloud-plugin) for an image."""
    from tests.lab import kube_build  # pylint: disable=import-outside-toplevel

    path = kube_build.cache_root() / "bin" / name
    if not path.is_file():
        raise LabError(
            f"{path} is missing: build the lab's binaries with `make k8s-bins` (the images take kubectl, "
            "the CNPG operator and the Barman Cloud plugin from there)"
        )
    return path


def operator_image_names(manifest_path=None):
    """{"operator", "plugin", "sidecar"} -> the image names the lab's CNPG and plugin manifests reference: from the
    k8s cache's manifest.json ``images`` (keys or names mentioning sidecar / barman / cnpg), else upstream's."""
    from tests.lab import kube_build  # pylint: disable=import-outside-toplevel

    names = dict(UPSTREAM_IMAGES)
    try:
        images = (
            json.loads(
                Path(manifest_path or kube_build.cache_root() / "manifest.json").read_text(encoding="utf-8")
            ).get("images")
            or {}
        )
    except (OSError, ValueError):
        images = {}
    if isinstance(images, list):
        images = {name: name for name in images}
    taken = set()
    for role, words in (
        ("sidecar", ("sidecar",)),
        ("plugin", ("barman", "plugin")),
        ("operator", ("cloudnative-pg", "cnpg", "operator")),
    ):
        if isinstance(images.get(role), str):
            names[role] = images[role]
            taken.add(role)
            continue
        for key, value in images.items():
            if key not in taken and isinstance(value, str) and any(w in f"{key} {value}".lower() for w in words):
                names[role] = value
                taken.add(key)
                break
    return names


def requirement_pins(text):
    """``name==version`` pins of a pip-compile output (hash and comment lines skipped), names normalized."""
    pins = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", line.strip())
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def _sidecar_pins():
    from tests.lab import kube_build  # pylint: disable=import-outside-toplevel

    go = kube_build.check_go()
    modcache = _run([go, "env", "GOMODCACHE"], "go env GOMODCACHE", env=dict(os.environ, GOTOOLCHAIN="local")).strip()
    path = Path(modcache) / f"{kube_build.BARMAN_MODULE}@{kube_build.BARMAN_VERSION}" / SIDECAR_REQUIREMENTS
    if not path.is_file():
        raise LabError(
            f"{path} is missing: `make k8s-bins` downloads the Barman Cloud plugin module "
            f"{kube_build.BARMAN_VERSION}, whose {SIDECAR_REQUIREMENTS} pins the sidecar's barman-cloud"
        )
    pins = requirement_pins(path.read_text(encoding="utf-8"))
    if "barman" not in pins:
        raise LabError(f"{path} pins no barman version")
    return pins


def _pip_hook(venv, requirement, pins, system_site_packages=False):
    """A customize hook: a venv at ``venv`` in the image with ``requirement`` (one, or a tuple) from PyPI (wheels
    only), every dependency constrained to ``pins``. pip runs in the chroot with the host's CA bundle (removed
    afterwards)."""
    requirements = (requirement,) if isinstance(requirement, str) else requirement
    constraints = "\n".join(f"{name}=={version}" for name, version in sorted(pins.items()))
    site = " --system-site-packages" if system_site_packages else ""
    return (
        f'set -e; chroot "$1" python3 -m venv{site} {venv}; '
        f'printf "%s\\n" {shlex_quote(constraints)} > "$1/tmp/pins.txt"; '
        'cp /etc/ssl/certs/ca-certificates.crt "$1/tmp/pip-ca.crt"; '
        # a clean environment: the host's CA variables name files the chroot does not have; proxies pass
        "env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp PIP_CERT=/tmp/pip-ca.crt "
        'PIP_DISABLE_PIP_VERSION_CHECK=1 ${HTTPS_PROXY:+HTTPS_PROXY="$HTTPS_PROXY"} '
        '${https_proxy:+https_proxy="$https_proxy"} ${NO_PROXY:+NO_PROXY="$NO_PROXY"} '
        '${no_proxy:+no_proxy="$no_proxy"} '
        f'chroot "$1" {venv}/bin/pip install -q --no-cache-dir --only-binary=:all: -c /tmp/pins.txt '
        f'{" ".join(shlex_quote(r) for r in requirements)}; rm -f "$1/tmp/pins.txt" "$1/tmp/pip-ca.crt"'
    )


def shlex_quote(text):
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _write_users(rootfs, users, groups):
    (rootfs / "etc").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/passwd").write_text(
        "".join(f"{n}:x:{u}:{g}:{n}:{h}:{s}\n" for n, u, g, h, s in users), encoding="ascii"
    )
    (rootfs / "etc/group").write_text("".join(f"{n}:x:{g}:\n" for n, g in groups), encoding="ascii")


def _fill_static(rootfs, files, symlinks=()):
    """A root filesystem for a static Go binary, laid out like distroless/static: root, nobody and nonroot (65532)
    users, /tmp, /home/nonroot. ``files``: (source, path in the image, uid, gid, mode)."""
    _write_users(
        rootfs,
        [
            ("root", 0, 0, "/root", "/sbin/nologin"),
            ("nobody", 65534, 65534, "/nonexistent", "/sbin/nologin"),
            ("nonroot", NONROOT_UID, NONROOT_UID, "/home/nonroot", "/sbin/nologin"),
        ],
        [("root", 0), ("nobody", 65534), ("nonroot", NONROOT_UID)],
    )
    for name in ("tmp", "home/nonroot", "root", "proc", "sys", "dev"):
        (rootfs / name).mkdir(parents=True, exist_ok=True)
    os.chmod(rootfs / "tmp", 0o1777)
    os.chown(rootfs / "home/nonroot", NONROOT_UID, NONROOT_UID)
    _copy_files(rootfs, files)
    for link, target in symlinks:
        (rootfs / link.lstrip("/")).symlink_to(target)


def _copy_files(rootfs, files):
    for source, path, uid, gid, mode in files:
        dest = rootfs / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        os.chown(dest, uid, gid)
        os.chmod(dest, mode)


def postgres_recipe():
    """PostgreSQL 15 as CNPG runs it: initdb, postgres, pg_ctl, pg_controldata, pg_basebackup (and pg_rewind,
    pg_isready, pg_dump, du) on PATH, the en_US.UTF-8 locale as LANG, user postgres with UID 26 (CNPG's default
    postgresUID; the pod's GID 26 is Debian's group "tape", which no file of the image needs). No entrypoint: the
    operator runs its instance manager, copied into the pod by its bootstrap-controller init container. No
    barman-cloud: the Barman Cloud plugin's sidecar archives WAL and takes base backups. No JIT: LLVM (130 MB of
    the 470) is left out, and PostgreSQL disables JIT when its provider library is absent."""
    debian = Debian(
        packages=("postgresql-15", "locales"),
        excludes=(
            "/usr/lib/*/libLLVM-14.so*",
            "/usr/lib/*/libz3.so*",
            "/usr/lib/postgresql/15/lib/llvmjit*",
            "/usr/lib/postgresql/15/lib/bitcode/*",
        ),
        # no "main" cluster from postgresql-common's postinst: CNPG runs initdb itself
        essential_hooks=(
            'mkdir -p "$1/etc/postgresql-common/createcluster.d" && '
            'echo "create_main_cluster = false" > "$1/etc/postgresql-common/createcluster.d/lab.conf"',
        ),
        hooks=(
            'set -e; old=$(chroot "$1" id -u postgres); chroot "$1" usermod -u 26 postgres; '
            'find "$1" -xdev -uid "$old" -exec chown -h 26 {} +',
            'chroot "$1" localedef -i en_US -c -f UTF-8 en_US.UTF-8',
        ),
    )
    return Recipe(
        name=POSTGRES_IMAGE,
        fill=lambda root: None,
        inputs={"revision": 2},
        debian=debian,
        user=str(POSTGRES_UID),
        env=(
            "PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=en_US.utf8",
            "PGDATA=/var/lib/postgresql/data/pgdata",
        ),
    )


def redis_recipe():
    """Debian's Redis 7.0 for the lab's Redis chart (``redis-server <conf>`` as UID 1001, probes with ``sh`` and
    ``redis-cli``); also has what the backup CronJob's fetch-rdb container runs (``redis-cli --rdb``, ``head``)."""
    return Recipe(
        name=REDIS_IMAGE,
        fill=lambda root: None,
        inputs={"revision": 1},
        debian=Debian(packages=("redis-server",)),
        user=str(REDIS_UID),
        env=(PATH_ENV,),
        cmd=("redis-server",),
    )


def kms_standin_recipe():
    """The KMS STAND-IN (tests/lab/kms_standin.py: /api/status on $HOST:$PORT, DB_CONNECTION_URI, REDIS_URL,
    KMS_SITE) on Debian's Python with psycopg2 and redis-py."""
    source = Path(__file__).resolve().parent / "kms_standin.py"
    return Recipe(
        name=KMS_STANDIN_IMAGE,
        inputs={"revision": 1, "kms_standin.py": file_digest(source)},
        fill=lambda root: _copy_files(root, [(source, "/app/kms_standin.py", 0, 0, 0o644)]),
        debian=Debian(packages=("python3", "python3-psycopg2", "python3-redis")),
        user=f"{NONROOT_UID}:{NONROOT_UID}",
        env=(PATH_ENV, "PYTHONUNBUFFERED=1"),
        entrypoint=("python3", "/app/kms_standin.py"),
    )


def collection_files(root=None):
    """(source, path in the image) of the collection's ``plugins/module_utils`` as Python imports it from
    ``COLLECTIONS_PATH`` (``ansible_collections.hanzo.kms.plugins.module_utils``), with the ``__init__.py`` files
    that make each level a package."""
    root = Path(root or REPO_ROOT)
    package = f"{COLLECTIONS_PATH}/ansible_collections/hanzo/kms/plugins/module_utils"
    files = [(path, f"{package}/{path.name}") for path in sorted((root / "plugins/module_utils").glob("*.py"))]
    levels = package[len(COLLECTIONS_PATH) + 1 :].split("/")
    inits = [f"{COLLECTIONS_PATH}/{'/'.join(levels[:depth])}/__init__.py" for depth in range(1, len(levels) + 1)]
    return files, inits


def backup_job_pins(root=None):
    """(requirements, pins) of the backup job's venv: redis-py, boto3 and anycrc as requirements.txt pins them, every
    dependency constrained by constraints.txt (the versions the collection is tested with)."""
    root = Path(root or REPO_ROOT)
    required = requirement_pins((root / "requirements.txt").read_text(encoding="utf-8"))
    pins = requirement_pins((root / "constraints.txt").read_text(encoding="utf-8"))
    return tuple(f"{name}=={required[name]}" for name in BACKUP_JOB_PACKAGES), pins


def backup_tools_recipe():
    """The Redis backup CronJob's image: the collection's ``module_utils`` (the job runs
    ``python3 -m ansible_collections.hanzo.kms.plugins.module_utils.redis_backup_job``, PYTHONPATH as in the
    collection's execution environment) in a venv with redis-py, boto3 and anycrc, and what the operation lock's script needs
    (``/bin/sh``, GNU ``date``, kubectl, static: the take-lock container copies it for the backup container)."""
    kubectl = lab_binary("kubectl")
    files, inits = collection_files()
    requirements, pins = backup_job_pins()
    debian = Debian(
        packages=("python3", "python3-venv", "ca-certificates"), hooks=(_pip_hook(BACKUP_JOB_VENV, requirements, pins),)
    )

    def fill(root):
        _copy_files(
            root,
            [(kubectl, "/usr/local/bin/kubectl", 0, 0, 0o755)]
            + [(source, path, 0, 0, 0o644) for source, path in files],
        )
        for init in inits:
            (root / init.lstrip("/")).touch(mode=0o644)

    inputs = {
        "revision": 2,
        "kubectl": file_digest(kubectl),
        "requirements": requirements,
        "module_utils": {path: file_digest(source) for source, path in files},
    }
    return Recipe(
        name=BACKUP_TOOLS_IMAGE,
        inputs=inputs,
        fill=fill,
        debian=debian,
        user=str(REDIS_UID),
        env=(
            f"PATH={BACKUP_JOB_VENV}/bin:{PATH_ENV[len('PATH=') :]}",
            f"PYTHONPATH={COLLECTIONS_PATH}",
            "PYTHONUNBUFFERED=1",
        ),
        entrypoint=("/bin/sh",),
    )


def operator_recipe(name=None):
    """The CNPG operator as its Dockerfile lays it out: /operator/manager_<arch> (owned by nonroot) and the symlink
    /manager, working dir / (the bootstrap-controller init container runs ``/manager bootstrap /controller/manager``
    as the Cluster's postgres UID and copies ``manager`` relative to /), user 65532."""
    binary = lab_binary("cnpg-manager")
    return Recipe(
        name=name or operator_image_names()["operator"],
        inputs={"revision": 1, "cnpg-manager": file_digest(binary)},
        fill=lambda root: _fill_static(
            root,
            [(binary, f"/operator/manager_{GOARCH}", NONROOT_UID, NONROOT_UID, 0o755)],
            symlinks=[("/manager", f"operator/manager_{GOARCH}")],
        ),
        user=f"{NONROOT_UID}:{NONROOT_UID}",
        entrypoint=("/manager",),
        workdir="/",
        env=(PATH_ENV,),
    )


def plugin_recipe(name=None):
    """The Barman Cloud plugin (Dockerfile.plugin: /manager, user 65532; the Deployment runs it as 10001)."""
    binary = lab_binary("barman-cloud-plugin")
    return Recipe(
        name=name or operator_image_names()["plugin"],
        inputs={"revision": 1, "barman-cloud-plugin": file_digest(binary)},
        fill=lambda root: _fill_static(root, [(binary, "/manager", 0, 0, 0o755)]),
        user=f"{NONROOT_UID}:{NONROOT_UID}",
        entrypoint=("/manager",),
        workdir="/",
        env=(PATH_ENV,),
    )


def sidecar_recipe(name=None):
    """The plugin's sidecar (Dockerfile.sidecar): the plugin binary as /manager and barman-cloud in /venv (on PATH),
    user 26:26. Debian's python3 and psycopg2 (the PyPI psycopg2 is source only) instead of distroless."""
    binary = lab_binary("barman-cloud-plugin")
    pins = _sidecar_pins()
    requirement = f"{BARMAN_REQUIREMENT}=={pins.pop('barman')}"
    pins.pop("psycopg2", None)  # Debian's python3-psycopg2 (the venv sees the system's site-packages)
    debian = Debian(
        packages=("python3", "python3-venv", "python3-psycopg2", "ca-certificates"),
        hooks=(_pip_hook("/venv", requirement, pins, system_site_packages=True),),
    )
    return Recipe(
        name=name or operator_image_names()["sidecar"],
        inputs={"revision": 1, "barman-cloud-plugin": file_digest(binary)},
        fill=lambda root: _copy_files(root, [(binary, "/manager", 0, 0, 0o755)]),
        debian=debian,
        user=f"{POSTGRES_UID}:{POSTGRES_UID}",
        entrypoint=("/manager",),
        workdir="/",
        env=("PATH=/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
    )


def lab_recipes():
    """Every image the lab's pods use."""
    names = operator_image_names()
    return [
        pause_recipe(),
        busybox_recipe(),
        postgres_recipe(),
        redis_recipe(),
        kms_standin_recipe(),
        backup_tools_recipe(),
        operator_recipe(names["operator"]),
        plugin_recipe(names["plugin"]),
        sidecar_recipe(names["sidecar"]),
    ]


def build(recipes, containerd=None, log=print):
    """Ensure every recipe's archive (and import it into ``containerd``); return [(name, seconds, built?, path)]."""
    rows = []
    for recipe in recipes:
        started = time.monotonic()
        path, built = ensure_built(recipe, log=log)
        rows.append((recipe.name, time.monotonic() - started, built, path))
        if containerd:
            import_into(containerd, {recipe.name: path})
    return rows


def main(argv=None):
    import argparse  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel

    parser = argparse.ArgumentParser(
        prog="python -m tests.lab.images", description="Build the lab's container images (cached by their inputs)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("build", help="build (or reuse) every image and print the time each took")
    cmd.add_argument("--import-into", metavar="SOCKET", help="also import them into the containerd at SOCKET")
    cmd.add_argument("--only", action="append", metavar="NAME", help="only images whose name contains NAME")
    sub.add_parser("list", help="print the image names")
    args = parser.parse_args(argv)
    try:
        recipes = lab_recipes()
        if args.command == "list":
            print("\n".join(recipe.name for recipe in recipes))
            return 0
        recipes = [r for r in recipes if not args.only or any(word in r.name for word in args.only)]
        containerd = Containerd(require_binary("ctr", "containerd"), args.import_into) if args.import_into else None
        started = time.monotonic()
        rows = build(recipes, containerd)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, seconds, built, path in rows:
        size = path.stat().st_size / 2**20
        print(f"{'built ' if built else 'cached'} {seconds:7.1f}s {size:7.0f} MiB  {name}")
    print(f"total  {time.monotonic() - started:7.1f}s ({sum(r[2] for r in rows)} built, cache {cache_dir()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
