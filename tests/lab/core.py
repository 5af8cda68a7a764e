"""Process and state plumbing shared by every lab component.

The lab starts real servers on 127.0.0.1. Each process is recorded in the state file with its pid and the
executable it was started from, so ``down`` stops exactly what ``up`` started and never a recycled pid.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import fcntl
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ansible_collections.hanzo.kms.plugins.module_utils.processes import pid_alive


def _lab_port_range():
    """Ports the lab hands out: from 10000 up to where the kernel's ephemeral range starts."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    return 10000, max(ephemeral_low, 12000)


LAB_PORT_RANGE = _lab_port_range()

STATE_FILE = "state.json"
LOCK_FILE = "state.lock"
STATE_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO_ROOT / ".lab"


NETNS_RUN_DIR = "/run/netns"  # where ``ip netns add`` pins named network namespaces
_CLONE_NEWNET = 0x40000000


class LabError(Exception):
    """A lab problem with a message meant for the operator."""


def _enter_netns(fd):
    """setns(2) into a network namespace; runs in the child between fork and exec (Python 3.11 has no os.setns)."""
    if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns into the network namespace failed")


def wait_until(predicate, timeout, what, interval=0.05):
    """Poll ``predicate`` until it returns a truthy value; raise LabError naming ``what`` on timeout.

    A LabError raised by the predicate is final and propagates at once; any other exception means "not yet"
    and the last one is kept for the timeout message.
    """
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except LabError:
            raise
        except Exception as exc:  # pylint: disable=broad-exception-caught
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f": last error: {last_error}" if last_error else ""
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


def port_is_free(port, host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(taken=None):
    """A loopback port that is free now (nothing listens there), not in the set ``taken`` (which records it).

    Chosen below the kernel's ephemeral range (ip_local_port_range): a port from that range can be taken as the
    source port of any outgoing connection on the machine the moment its server stops, which makes a restart on
    the same port, or the check that ``down`` released it, fail at random.
    """
    low, high = LAB_PORT_RANGE
    for dummy in range(500):
        port = random.randrange(low, high)
        if port not in (taken or ()) and port_is_free(port):
            if taken is not None:
                taken.add(port)
            return port
    raise LabError(f"could not find a free loopback port in {low}-{high}")


def pid_exe(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def require_binary(name, package):
    """Return the path of ``name`` or fail with the Debian package that provides it."""
    path = shutil.which(name)
    if not path:
        raise LabError(f"'{name}' not found: install the Debian package '{package}' (make setup does this)")
    return path


_MISSING = object()


def merge_state(base, ours, theirs):
    """Three-way merge of JSON state: what this process changed since ``base`` wins, everything else is taken from
    ``theirs`` (the file as another process left it, e.g. a CNPG stand-in that restarted PostgreSQL with a new pid).
    Lists of records with a ``name`` (processes) merge by name; other lists and scalars are whole values."""
    if ours == base:
        return theirs
    if theirs == base or theirs is _MISSING:
        return ours
    if isinstance(ours, dict) and isinstance(theirs, dict):
        base = base if isinstance(base, dict) else {}
        merged = {}
        for key in list(ours) + [k for k in theirs if k not in ours]:
            value = merge_state(base.get(key, _MISSING), ours.get(key, _MISSING), theirs.get(key, _MISSING))
            if value is not _MISSING:
                merged[key] = value
        return merged
    if _named_records(ours) and _named_records(theirs):
        base_by_name = {r["name"]: r for r in base} if _named_records(base) else {}
        theirs_by_name = {r["name"]: r for r in theirs}
        ours_names = {r["name"] for r in ours}
        merged = [
            merge_state(base_by_name.get(r["name"], _MISSING), r, theirs_by_name.get(r["name"], _MISSING))
            for r in ours
            if not (r["name"] in base_by_name and r["name"] not in theirs_by_name and r == base_by_name[r["name"]])
        ]
        merged += [r for r in theirs if r["name"] not in ours_names and r["name"] not in base_by_name]
        return merged
    return ours


def _named_records(value):
    return isinstance(value, list) and all(isinstance(r, dict) and "name" in r for r in value)


class Lab:
    """One lab directory: its state file, logs and the processes it started."""

    def __init__(self, directory=None):
        self.dir = Path(directory or os.environ.get("HANZO_KMS_LAB_DIR") or DEFAULT_DIR).resolve()
        self.state_path = self.dir / STATE_FILE
        self.state = {}
        self._base = {}  # the state as last read or written: what save() merges against
        self._lock_depth = 0
        self._ports_taken = set()

    # -- state -----------------------------------------------------------------------------------------
    def load(self):
        if not self.state_path.exists():
            return None
        try:
            self.state = json.loads(self.state_path.read_text(encoding="utf-8"))
            self._base = copy.deepcopy(self.state)
        except (OSError, ValueError) as exc:
            raise LabError(
                f"state file {self.state_path} is unreadable ({exc}); run 'make lab-down' to clear it"
            ) from exc
        if self.state.get("version") != STATE_VERSION:
            raise LabError(
                f"state file {self.state_path} has version {self.state.get('version')!r}, "
                f"expected {STATE_VERSION}; run 'make lab-down' to clear it"
            )
        return self.state

    @contextlib.contextmanager
    def locked(self):
        """An exclusive lock on the state file between processes (re-entrant within this object)."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield self
            finally:
                self._lock_depth -= 1
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / LOCK_FILE, "a", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                yield self
            finally:
                self._lock_depth = 0

    def save(self):
        """Write the state, merged with changes other processes made to the file since this object read it."""
        with self.locked():
            if self.state_path.exists():
                try:
                    theirs = json.loads(self.state_path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    theirs = _MISSING
                if theirs is not _MISSING and theirs != self._base:
                    self.state = merge_state(self._base, self.state, theirs)
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            os.chmod(tmp, 0o600)
            tmp.replace(self.state_path)
            self._base = copy.deepcopy(self.state)

    def path(self, *parts):
        """A path inside the lab dir (parent folders created)."""
        target = self.dir.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    # -- ports and processes ---------------------------------------------------------------------------
    def free_port(self):
        """A loopback port that is free now and not yet handed out by this lab run (see ``free_port``)."""
        return free_port(self._ports_taken)

    def spawn(self, name, argv, env=None, cwd=None, user=None, stop_signal="SIGTERM", netns=None):
        # pylint: disable=too-many-locals
        """Start ``argv`` in its own session, log to logs/<name>.log, record it for ``down``; return the pid.

        ``netns``: the name of a network namespace (``ip netns``) to run it in. Only the network namespace is
        entered, not a mount namespace as ``ip netns exec`` would make: kubelet's volume mounts must stay visible
        to containerd and runc, and ``down`` must see (and unmount) them in /proc/mounts.
        """
        log_path = self.path("logs", f"{name}.log")
        full_env = dict(os.environ)
        full_env.update(env or {})
        kwargs = {}
        if user:
            entry = pwd.getpwnam(user)
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
            full_env["HOME"] = entry.pw_dir
        netns_fd = None
        if netns:
            try:
                netns_fd = os.open(f"{NETNS_RUN_DIR}/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise LabError(f"cannot start {name}: network namespace {netns} is missing ({exc})") from exc
            kwargs["preexec_fn"] = lambda: _enter_netns(netns_fd)
        try:
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(  # pylint: disable=consider-using-with,subprocess-popen-preexec-fn
                    [str(a) for a in argv],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=full_env,
                    cwd=cwd,
                    start_new_session=True,
                    **kwargs,
                )
        finally:
            if netns_fd is not None:
                os.close(netns_fd)
        record = {
            "name": name,
            "pid": proc.pid,
            "exe": pid_exe(proc.pid) or str(argv[0]),
            "stop_signal": stop_signal,
            "log": str(log_path),
            # how to start it again (node.power_on, after node.lose_site)
            "argv": [str(a) for a in argv],
            "env": {key: str(value) for key, value in (env or {}).items()},
            "cwd": str(cwd) if cwd else None,
            "user": user,
        }
        if netns:
            record["netns"] = netns
        self.state.setdefault("processes", []).append(record)
        self.save()
        return proc.pid

    def process(self, name):
        for proc in self.state.get("processes", []):
            if proc["name"] == name:
                return proc
        raise LabError(f"no process named {name!r} in the lab state")

    def process_alive(self, proc):
        """True when the recorded pid still runs the recorded executable."""
        if not pid_alive(proc["pid"]):
            return False
        exe = pid_exe(proc["pid"])
        # An upgraded binary reads "<path> (deleted)" while the old process still runs it.
        return exe is None or exe.removesuffix(" (deleted)") == proc["exe"]

    def log_tail(self, name, lines=20):
        try:
            text = Path(self.process(name)["log"]).read_text(encoding="utf-8", errors="replace")
        except (OSError, LabError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_process(self, name, predicate, timeout, what):
        """wait_until, but fail at once (with the log tail) if the process named ``name`` exits."""
        proc = self.process(name)

        def check():
            if not self.process_alive(proc):
                raise LabError(f"{name} exited while waiting for {what}; log {proc['log']}:\n{self.log_tail(name)}")
            return predicate()

        try:
            return wait_until(check, timeout, what)
        except LabError as exc:
            if not self.process_alive(proc):
                raise
            raise LabError(f"{exc}\nlog {proc['log']}:\n{self.log_tail(name)}") from None

    def stop_process(self, proc, timeout=20.0):
        """Stop one recorded process (its whole session); return False if it was already gone."""
        if not self.process_alive(proc):
            return False
        sig = getattr(signal, proc.get("stop_signal", "SIGTERM"))
        try:
            os.killpg(proc["pid"], sig)
        except (ProcessLookupError, PermissionError):
            os.kill(proc["pid"], sig)
        try:
            wait_until(lambda: not pid_alive(proc["pid"]), timeout, f"{proc['name']} to stop")
        except LabError:
            try:
                os.killpg(proc["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
            wait_until(lambda: not pid_alive(proc["pid"]), 5, f"{proc['name']} to die after SIGKILL")
        return True

    def stop_all(self):
        """Stop every recorded process, newest first (dependants before what they depend on)."""
        stopped = []
        for proc in reversed(self.state.get("processes", [])):
            if self.stop_process(proc):
                stopped.append(proc["name"])
        return stopped


# -- mounts (containerd, kubelet and image builds mount under their own directories) ------------------------------
def mounts_under(directory):
    """Mount points at or below ``directory``, deepest first (the order to unmount them)."""
    directory = os.path.realpath(directory)
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            point = line.split()[4].replace("\\040", " ")
            if point == directory or point.startswith(directory + "/"):
                points.append(point)
    return sorted(set(points), key=lambda p: (p.count("/"), p), reverse=True)


def unmount_under(directory):
    """Unmount everything at or below ``directory`` (lazily when busy; a few rounds, since unmounting a parent can
    uncover mounts below it); LabError if a mount stays."""
    for _round in range(5):
        points = mounts_under(directory)
        if not points:
            return
        for point in points:
            proc = subprocess.run(["umount", point], capture_output=True, text=True, check=False)
            if proc.returncode != 0:  # busy: detach it, it goes away with its last user
                subprocess.run(["umount", "-l", point], capture_output=True, text=True, check=False)
    left = mounts_under(directory)
    if left:
        raise LabError(f"could not unmount {', '.join(left)}")
