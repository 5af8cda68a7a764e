"""A containerd of its own: root, state, socket and CNI config under one directory (issue 15).

Debian's containerd 1.6 with runc, configured as verified in the real-node notes: the CRI's sandbox image is
a local image (nothing is ever pulled) and ``restrict_oom_score_adj`` is on (this sandbox cannot lower
``oom_score_adj``). Used by the image tests (a throwaway instance) and by the lab's real nodes (one per site).

    with containerd.running(tmp_dir) as local:
        images.import_into(local.client(), archives)
        local.run("docker.io/hanzo-kms-lab/busybox:1", ["true"])

``stop`` kills every task first, then containerd, then unmounts whatever containerd mounted under the directory
(overlay snapshots, task rootfs, shm), so the directory can be removed and no mount is left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import uuid
from pathlib import Path

from tests.lab.core import LabError, pid_alive, require_binary, unmount_under, wait_until
from tests.lab.images import Containerd

SANDBOX_IMAGE = "docker.io/hanzo-kms-lab/pause:1"
CNI_BIN_DIR = "/usr/lib/cni"
NAMESPACE = "k8s.io"  # the CRI's namespace: images imported there are the ones kubelet sees


def config_text(directory, sandbox_image=SANDBOX_IMAGE, cni_conf_dir=None):
    """containerd's config.toml for an instance living in ``directory`` (the image tests' throwaway instance and each
    site's real node use the same one)."""
    directory = Path(directory)
    return f'''version = 2
root = "{directory / "root"}"
state = "{directory / "state"}"
# plugins this lab never uses (they only slow the start down or want host paths)
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{directory / "containerd.sock"}"
[ttrpc]
  address = "{directory / "containerd.sock.ttrpc"}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{directory / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # this machine cannot lower oom_score_adj (kubelet asks -998 for sandboxes): runc fails without it
  restrict_oom_score_adj = true
  # pod network namespaces under the state dir, not /run/netns: down finds and unmounts them with the lab dir
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni_conf_dir or directory / "cni"}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{directory / "runc"}"
'''


@dataclasses.dataclass
class LocalContainerd:
    """A running containerd started by :func:`start`."""

    directory: Path
    pid: int
    ctr: str
    process: subprocess.Popen | None = None  # when started by this process: reaped on stop

    @property
    def address(self):
        return str(self.directory / "containerd.sock")

    def client(self):
        return Containerd(self.ctr, self.address, NAMESPACE)

    def _run_argv(self, image, args, name, *, detach=False, net_host=False, mounts=(), env=()):
        argv = self.client().ctr_argv("run", "--detach" if detach else "--rm")
        if net_host:
            argv.append("--net-host")
        for mount in mounts:
            argv += ["--mount", mount]
        for item in env:
            argv += ["--env", item]
        return argv + [image, name, *(args or [])]

    def run(self, image, args=None, *, timeout=120, check=True, **options):
        """``ctr run --rm`` of ``image`` as the image's user (``args`` replace its entrypoint and command; options:
        ``net_host``, ``mounts`` in ctr's syntax, ``env`` as K=V); returns the CompletedProcess, raising LabError
        with the output when it fails and ``check`` is set."""
        argv = self._run_argv(image, args, f"t-{uuid.uuid4().hex[:12]}", **options)
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"{' '.join(argv[5:])} did not finish within {timeout}s") from exc
        if check and proc.returncode != 0:
            raise LabError(f"{' '.join(argv[5:])} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc

    def start_task(self, image, args=None, **options):
        """``ctr run --detach``: the container's name (end it with :meth:`kill_tasks`)."""
        name = f"t-{uuid.uuid4().hex[:12]}"
        argv = self._run_argv(image, args, name, detach=True, **options)
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise LabError(f"{' '.join(argv[5:])} did not start:\n{proc.stdout}{proc.stderr}")
        return name

    def kill_tasks(self):
        """Kill and delete every task and container (what ``ctr run -d`` left running)."""
        self.client().delete_tasks()


def start(directory, sandbox_image=SANDBOX_IMAGE, timeout=30):
    """Start containerd in ``directory`` (created); wait until it answers ``ctr version``."""
    containerd = require_binary("containerd", "containerd")
    ctr = require_binary("ctr", "containerd")
    require_binary("runc", "runc")
    directory = Path(directory).resolve()
    for sub in ("root", "state", "cni"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    config = directory / "config.toml"
    config.write_text(config_text(directory, sandbox_image), encoding="utf-8")
    with open(directory / "containerd.log", "ab") as log:
        proc = subprocess.Popen(
            [containerd, "--config", str(config)],  # pylint: disable=consider-using-with
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    local = LocalContainerd(directory, proc.pid, ctr, proc)

    def ready():
        if proc.poll() is not None:
            tail = (directory / "containerd.log").read_text(encoding="utf-8", errors="replace")[-2000:]
            raise LabError(f"containerd exited with {proc.returncode} at start:\n{tail}")
        return (
            subprocess.run([ctr, "--address", local.address, "version"], capture_output=True, check=False).returncode
            == 0
        )

    try:
        wait_until(ready, timeout, f"containerd on {local.address}")
    except LabError:
        stop(local)
        raise
    return local


def stop(local, timeout=20):
    """Kill the tasks, stop containerd (SIGTERM, then SIGKILL) and unmount everything under its directory."""
    if pid_alive(local.pid):
        local.kill_tasks()
        os.kill(local.pid, signal.SIGTERM)
        process = local.process
        try:
            wait_until(
                lambda: (process.poll() is not None) if process else not pid_alive(local.pid),
                timeout,
                "containerd to stop",
            )
        except LabError:
            os.kill(local.pid, signal.SIGKILL)
            if process:
                process.wait(5)
    unmount_under(local.directory)


@contextlib.contextmanager
def running(directory, sandbox_image=SANDBOX_IMAGE):
    local = start(directory, sandbox_image)
    try:
        yield local
    finally:
        stop(local)
