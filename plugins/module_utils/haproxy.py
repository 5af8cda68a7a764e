# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""HAProxy Runtime API client and the multi-instance site switch behind hanzo.kms.haproxy_backend.

Plain Python (standard library only), importable without Ansible.

Flow of :func:`switch`: read ``show servers state`` from every instance (quorum: ``min_instances``), plan the
per-server changes, apply them make-before-break (servers that must serve first, then wait until their health
checks pass, then optionally drain and finally take the old servers out), verify by reading back and write
``show servers state`` to each instance's server-state-file. Any non-empty reply to a setter is an error; on any
error every touched instance is put back to the state it had before. Each phase is a function of its own (``_read``,
``_quorum``, ``_plan``, ``_bring_up``, ``_drain``, ``_take_down``, ``_verify``, ``_persist``); every command that
changes HAProxy, forward or in the rollback, goes through ``_apply``, and ``_rollback_on_failure`` wraps the
forward phases.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import socket
import ssl
import time

from ansible_collections.hanzo.kms.plugins.module_utils.files import replace_file

STATES = ("ready", "drain", "maint")

# srv_admin_state bits (include/haproxy/server-t.h)
ADMF_FMAINT = 0x01
ADMF_IMAINT = 0x02
ADMF_CMAINT = 0x04
ADMF_FDRAIN = 0x08
ADMF_IDRAIN = 0x10
ADMF_RMAINT = 0x20
ADMF_HMAINT = 0x40
# CMAINT (``disabled`` in the configuration) stays set after ``set server ... state ready`` although the server then
# serves (observed on 2.6.12), so it does not count as maintenance on its own.
MAINT_MASK = ADMF_FMAINT | ADMF_IMAINT | ADMF_RMAINT | ADMF_HMAINT
DRAIN_MASK = ADMF_FDRAIN | ADMF_IDRAIN

OP_STATES = {0: "stopped", 1: "starting", 2: "running", 3: "stopping"}
CHECK_CONFIGURED = 0x02

DEFAULT_TIMEOUT = 5.0
POLL_INTERVAL = 0.05


class HAProxyError(Exception):
    """Any failure talking to HAProxy, with a message meant for the operator."""


class HAProxyConnectionError(HAProxyError):
    """The Runtime API of an instance could not be reached."""


class HAProxyCommandError(HAProxyError):
    """HAProxy answered a command with an error text."""


class HAProxyNameError(HAProxyError):
    """A backend or server name HAProxy cannot have: refused before anything is sent to the Runtime API."""


class SwitchError(HAProxyError):
    """The switch failed; ``result`` holds the per-instance details (and the rollback outcome)."""

    def __init__(self, message, result):
        super().__init__(message)
        self.result = result


# --------------------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------------------
# The characters HAProxy allows in proxy (backend) and server names: invalid_char() in src/tools.c (2.6) accepts
# [A-Za-z0-9_:.-] and rejects an empty name. The Runtime API splits commands on ';' and newlines, and words on
# spaces, so any other character in a name could smuggle a second command (e.g. "kms;set server kms/dc1 state maint").
NAME_RE = re.compile(r"[A-Za-z0-9_:.-]+")


def check_name(value, what="backend"):
    """Return ``value`` when HAProxy could name a proxy or server so; raise HAProxyNameError otherwise."""
    if isinstance(value, str) and NAME_RE.fullmatch(value):
        return value
    bad = ""
    if isinstance(value, str) and value:
        bad = " (" + ", ".join(sorted({repr(c) for c in value if not NAME_RE.fullmatch(c)})) + " not allowed)"
    raise HAProxyNameError(
        f"invalid HAProxy {what} name {value!r}{bad}: HAProxy names contain only letters, digits, '-', '_', '.' "
        "and ':'; nothing was sent to HAProxy"
    )


def check_names(backend=None, servers=()):
    """Validate the backend and server names of a request before any of them reaches a Runtime API command.

    The one place both hanzo.kms.haproxy_info and hanzo.kms.haproxy_backend validate names; also called by
    :func:`switch` and :meth:`RuntimeClient.servers_state` for Python callers.
    """
    if backend is not None:
        check_name(backend, "backend")
    for server in servers:
        check_name(server, "server")


# --------------------------------------------------------------------------------------------------------------
# Runtime API client
# --------------------------------------------------------------------------------------------------------------
def parse_address(address):
    """``/path`` or ``unix:/path`` -> ("unix", path); ``host:port``, ``tcp:host:port``, ``[v6]:port`` -> ("tcp", (h, p))."""
    if not address or not isinstance(address, str):
        raise HAProxyError(f"invalid Runtime API address {address!r}")
    if address.startswith("unix:"):
        return "unix", address[5:]
    if address.startswith("/") or address.startswith("."):
        return "unix", address
    target = address[4:] if address.startswith("tcp:") else address
    if target.startswith("["):
        host, sep, port = target[1:].partition("]:")
    else:
        host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise HAProxyError(f"invalid Runtime API address {address!r}: expected a socket path or host:port")
    return "tcp", (host, int(port))


def tls_context(ca_file, cert_file=None, key_file=None):
    """The client side of a Runtime API reached over TLS (hanzo.kms.global_lb's admin TLS frontend): the server's
    certificate verified against ``ca_file`` and its name (the address's host) checked; ``cert_file``/``key_file``:
    this client's certificate, which that frontend requires."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
    except OSError as exc:  # ssl.SSLError is one
        raise HAProxyError(
            f"cannot load the Runtime API TLS files (ca_file {ca_file}, client certificate {cert_file}): {exc}"
        ) from exc
    return context


def runtime_instance_spec(**extra_options):
    """The ``instances`` option of hanzo.kms.haproxy_info and hanzo.kms.haproxy_backend: one Runtime API per item
    (a unix socket, a TCP address, or a TLS frontend verified with ``ca_file``), plus ``extra_options``."""
    return dict(
        type="list",
        elements="dict",
        required=True,
        options=dict(
            name=dict(type="str"),
            socket=dict(type="path"),
            address=dict(type="str"),
            ca_file=dict(type="path"),
            client_cert=dict(type="path"),
            client_key=dict(type="path"),
            **extra_options,
        ),
        mutually_exclusive=[("socket", "address"), ("socket", "ca_file")],
        required_one_of=[("socket", "address")],
        required_together=[("client_cert", "client_key")],
        required_by={"client_cert": "ca_file"},
    )


def instance_connection(item):
    """(name, address, tls) of one validated ``instances`` item: its TLS context when ``ca_file`` is set."""
    address = item.get("socket") or item.get("address")
    tls = tls_context(item["ca_file"], item.get("client_cert"), item.get("client_key")) if item.get("ca_file") else None
    return item.get("name") or address, address, tls


class RuntimeClient:
    """One HAProxy instance's Runtime API (stats socket), one connection per command (non-interactive mode).

    Over a unix socket or plain TCP the client half-closes after sending, so it also works with the master CLI
    (``prefix='@1 '``). ``tls`` (an ``ssl.SSLContext`` from :func:`tls_context`): TCP over TLS, read until HAProxy
    closes (a half-close would end the TLS session).
    """

    def __init__(self, address, name=None, timeout=DEFAULT_TIMEOUT, prefix="", tls=None):
        self.address = address
        self.kind, self.target = parse_address(address)
        self.name = name or address
        self.timeout = timeout
        self.prefix = prefix or ""
        if tls is not None and self.kind != "tcp":
            raise HAProxyError(f"{self.name}: TLS needs a host:port Runtime API address, not {address!r}")
        self.tls = tls

    def _connect(self):
        try:
            if self.kind == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(self.target)
                except BaseException:
                    sock.close()
                    raise
                return sock
            sock = socket.create_connection(self.target, timeout=self.timeout)
            if self.tls is None:
                return sock
            try:
                return self.tls.wrap_socket(sock, server_hostname=self.target[0])
            except BaseException:
                sock.close()
                raise
        except ssl.SSLError as exc:
            raise HAProxyConnectionError(
                f"{self.name}: TLS to the Runtime API at {self.address} failed: {exc.reason or exc}"
            ) from exc
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise HAProxyConnectionError(
                f"{self.name}: cannot connect to the Runtime API at {self.address}: {reason}"
            ) from exc

    def execute(self, command):
        """Send one command and return HAProxy's whole reply as text.

        Refuses a command holding a command separator (';', a line break): callers send exactly one command.
        """
        if any(sep in command for sep in (";", "\n", "\r")):
            raise HAProxyNameError(
                f"{self.name}: refusing to send {command!r}: it holds a command separator; nothing was sent to HAProxy"
            )
        sock = self._connect()
        try:
            sock.sendall((self.prefix + command + "\n").encode())
            if self.tls is None:
                sock.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError as exc:  # ssl.SSLError too: a refused client certificate shows here with TLS 1.3
            reason = getattr(exc, "reason", None) or exc.strerror or str(exc) or type(exc).__name__
            raise HAProxyConnectionError(
                f"{self.name}: Runtime API {self.address} failed during {command!r}: {reason}"
            ) from exc
        finally:
            sock.close()
        return b"".join(chunks).decode("utf-8", errors="replace")

    def setter(self, command):
        """Run a state-changing command; any non-empty reply is HAProxy's error text."""
        reply = self.execute(command).strip()
        if reply:
            hint = " (the socket must be declared with 'level admin')" if "Permission denied" in reply else ""
            raise HAProxyCommandError(f"{self.name}: HAProxy rejected {command!r}: {reply}{hint}")

    def servers_state(self, backend=None):
        """Parsed ``show servers state [backend]``: {(backend, server): ServerState}."""
        command = "show servers state" + (f" {check_name(backend)}" if backend else "")
        return parse_servers_state(self.execute(command), self.name, command)

    def raw_servers_state(self):
        text = self.execute("show servers state")
        parse_servers_state(text, self.name, "show servers state")  # validates: never persist an error text
        return text

    def server_stats(self, backend):
        """{server: {column: value}} for ``backend`` from ``show stat -1 4 -1`` (CSV parsed by header names).

        All proxies are asked for and filtered by ``pxname``: ``show stat <name>`` picks the frontend when a frontend
        and the backend share the name.
        """
        command = "show stat -1 4 -1"
        return parse_stat_csv(self.execute(command), self.name, command, proxy=backend)


class ServerState:
    """One row of ``show servers state``."""

    __slots__ = ("backend", "name", "op_state", "admin_state", "uweight", "iweight", "check_state", "address", "port")

    def __init__(self, backend, name, op_state, admin_state, uweight, iweight, check_state, address="", port=""):
        self.backend = backend
        self.name = name
        self.op_state = op_state
        self.admin_state = admin_state
        self.uweight = uweight
        self.iweight = iweight
        self.check_state = check_state
        self.address = address
        self.port = port

    @property
    def state(self):
        """The administrative state in ``set server ... state`` words: maint, drain or ready."""
        if self.admin_state & MAINT_MASK:
            return "maint"
        if self.admin_state & DRAIN_MASK:
            return "drain"
        return "ready"

    @property
    def has_check(self):
        return bool(self.check_state & CHECK_CONFIGURED)

    def summary(self):
        return {
            "state": self.state,
            "weight": self.uweight,
            "operational": OP_STATES.get(self.op_state, str(self.op_state)),
            "admin_state": self.admin_state,
        }

    def __repr__(self):
        return f"ServerState({self.backend}/{self.name} {self.state} w={self.uweight} op={self.op_state} admin={self.admin_state})"


def parse_servers_state(text, instance="haproxy", command="show servers state"):
    """Parse ``show servers state`` (format version 1). Anything else is HAProxy's error text and raises."""
    lines = [line.rstrip("\r") for line in text.splitlines()]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or lines[0].strip() != "1":
        reply = text.strip() or "(empty reply)"
        raise HAProxyCommandError(f"{instance}: unexpected reply to {command!r}: {reply}")
    header = None
    states = {}
    for line in lines[1:]:
        if not line.strip():
            continue
        if line.startswith("#"):
            header = line[1:].split()
            continue
        if header is None:
            raise HAProxyCommandError(f"{instance}: {command!r} reply has no header line: {text.strip()}")
        fields = line.split()
        row = dict(zip(header, fields))
        try:
            server = ServerState(
                backend=row["be_name"],
                name=row["srv_name"],
                op_state=int(row["srv_op_state"]),
                admin_state=int(row["srv_admin_state"]),
                uweight=int(row["srv_uweight"]),
                iweight=int(row["srv_iweight"]),
                check_state=int(row.get("srv_check_state", "0")),
                address=row.get("srv_addr", ""),
                port=row.get("srv_port", ""),
            )
        except (KeyError, ValueError) as exc:
            raise HAProxyCommandError(f"{instance}: cannot parse {command!r} line {line!r}: {exc}") from exc
        states[(server.backend, server.name)] = server
    return states


def parse_stat_csv(text, instance="haproxy", command="show stat", proxy=None):
    """Parse ``show stat`` CSV by header names into {server name: row} (of ``proxy`` if given); FRONTEND/BACKEND
    rows are skipped."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        raise HAProxyCommandError(f"{instance}: unexpected reply to {command!r}: {text.strip() or '(empty reply)'}")
    header = lines[0][2:].split(",")
    rows = {}
    for record in csv.reader(lines[1:]):
        row = dict(zip(header, record))
        if row.get("svname") in ("FRONTEND", "BACKEND") or (proxy is not None and row.get("pxname") != proxy):
            continue
        rows[row.get("svname")] = row
    return rows


# --------------------------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------------------------
def desired_from_sites(active_site, sites, inactive_state="maint"):
    """{server: {"state": ...}} for ``active_site`` given {site: [servers]}: active site ready, others inactive."""
    if inactive_state not in ("drain", "maint"):
        raise HAProxyError(f"inactive_state must be drain or maint, not {inactive_state!r}")
    if active_site not in sites:
        raise HAProxyError(f"active_site {active_site!r} is not one of the sites: {', '.join(sorted(sites))}")
    desired = {}
    owner = {}
    for site, servers in sites.items():
        if isinstance(servers, str):
            servers = [servers]
        if not servers:
            raise HAProxyError(f"site {site!r} has no servers")
        for server in servers:
            if server in owner:
                raise HAProxyError(f"server {server!r} is listed under both sites {owner[server]!r} and {site!r}")
            owner[server] = site
            desired[server] = {"state": "ready" if site == active_site else inactive_state}
    return desired


def desired_from_servers(servers):
    """{server: {"state": ..., "weight": ...}} from [{name, state, weight}] (state and weight optional)."""
    desired = {}
    for item in servers:
        name = item.get("name")
        if not name:
            raise HAProxyError("every entry of servers needs a name")
        if name in desired:
            raise HAProxyError(f"server {name!r} is listed twice")
        entry = {}
        if item.get("state") is not None:
            if item["state"] not in STATES:
                raise HAProxyError(f"server {name!r}: state must be one of {', '.join(STATES)}, not {item['state']!r}")
            entry["state"] = item["state"]
        if item.get("weight") is not None:
            weight = int(item["weight"])
            if not 0 <= weight <= 256:
                raise HAProxyError(f"server {name!r}: weight must be between 0 and 256, not {weight}")
            entry["weight"] = weight
        if not entry:
            raise HAProxyError(f"server {name!r}: give a state and/or a weight")
        desired[name] = entry
    return desired


def snapshot(states, backend, names=None):
    """{server: {"state", "weight"}} for the servers of ``backend`` (all of them, or ``names``)."""
    result = {}
    for (be_name, name), server in states.items():
        if be_name == backend and (names is None or name in names):
            result[name] = {"state": server.state, "weight": server.uweight}
    return result


def plan_instance(states, backend, desired, drain_first=False, instance="haproxy"):
    """Ordered steps that take ``backend`` on one instance from ``states`` to ``desired``.

    Returns {"up": [...], "down": [...]} where each step is {"server", "command", "kind"}; "up" holds everything that
    makes servers serve (state ready, weight changes of servers that will be ready), "down" the rest, with an extra
    drain step first when ``drain_first`` and a ready server goes to maint.
    """
    known = sorted(name for (be_name, name) in states if be_name == backend)
    if not known:
        raise HAProxyCommandError(f"{instance}: backend {backend!r} not found (or has no servers)")
    unknown = sorted(set(desired) - set(known))
    if unknown:
        raise HAProxyCommandError(
            f"{instance}: no server {', '.join(repr(u) for u in unknown)} in backend {backend!r}; "
            f"servers are: {', '.join(known)}"
        )
    up, down = [], []
    for name in sorted(desired):
        want = desired[name]
        current = states[(backend, name)]
        target_state = want.get("state", current.state)
        steps = up if target_state == "ready" else down
        if target_state != current.state:
            if drain_first and target_state == "maint" and current.state == "ready":
                steps.append({"server": name, "kind": "drain", "command": f"set server {backend}/{name} state drain"})
            steps.append(
                {"server": name, "kind": target_state, "command": f"set server {backend}/{name} state {target_state}"}
            )
        if "weight" in want and want["weight"] != current.uweight:
            steps.append(
                {"server": name, "kind": "weight", "command": f"set server {backend}/{name} weight {want['weight']}"}
            )
    return {"up": up, "down": down}


def restore_plan(states, backend, previous):
    """Steps that put servers back to ``previous`` ({server: {"state", "weight"}}), make-before-break."""
    desired = {name: {"state": prev["state"], "weight": prev["weight"]} for name, prev in previous.items()}
    return plan_instance(states, backend, desired)


def mismatches(states, backend, desired):
    """Differences between read-back ``states`` and ``desired``, as human-readable strings."""
    problems = []
    for name, want in sorted(desired.items()):
        server = states.get((backend, name))
        if server is None:
            problems.append(f"{name}: missing")
            continue
        if "state" in want and server.state != want["state"]:
            problems.append(
                f"{name}: state {server.state} (admin_state {server.admin_state}), expected {want['state']}"
            )
        if "weight" in want and server.uweight != want["weight"]:
            problems.append(f"{name}: weight {server.uweight}, expected {want['weight']}")
    return problems


def write_state_file(path, text):
    """Atomically replace ``path`` with ``text`` (the ``show servers state`` dump) keeping its mode (0644 if new)."""
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    try:
        replace_file(path, text if text.endswith("\n") else text + "\n", mode, prefix=".server-state.", sync=True)
    except OSError as exc:
        raise HAProxyError(f"cannot write the server-state-file {path}: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------------------------------------------------
# The multi-instance switch
# --------------------------------------------------------------------------------------------------------------
class Instance:
    """One HAProxy instance taking part in a switch."""

    def __init__(self, name, address, state_file=None, timeout=DEFAULT_TIMEOUT, prefix="", tls=None):
        self.name = name
        self.address = address
        self.state_file = state_file
        self.client = RuntimeClient(address, name=name, timeout=timeout, prefix=prefix, tls=tls)
        self.before = None  # {(backend, server): ServerState} read at the start
        self.plan = None
        self.executed = []  # commands sent (in order)
        self.error = None
        self.unreachable = False
        self.touched = False
        self.after = None

    def result(self, backend):
        return {
            "name": self.name,
            "address": self.address,
            "reachable": not self.unreachable,
            "changed": bool(self.plan and (self.plan["up"] or self.plan["down"])),
            "commands": [step["command"] for step in (self.plan["up"] + self.plan["down"])] if self.plan else [],
            "executed": list(self.executed),
            "before": snapshot(self.before, backend) if self.before else {},
            "after": snapshot(self.after, backend) if self.after else {},
            "state_file": self.state_file,
            "error": self.error,
        }


def _wait(predicate, timeout, clock, sleep):
    """Poll ``predicate`` (returning (done, detail)) until done or ``timeout``; return (done, detail, waited)."""
    start = clock()
    while True:
        done, detail = predicate()
        if done:
            return True, detail, clock() - start
        if clock() - start >= timeout:
            return False, detail, clock() - start
        sleep(POLL_INTERVAL)


def _health(row):
    """(healthy, settled_description) of a server from its ``show stat`` row."""
    status = (row.get("status") or "").strip()
    check = (row.get("check_status") or "").replace("*", "").strip()
    if status == "no check":
        return True, status
    code = f" {row['check_code']}" if row.get("check_code") else ""
    desc = f": {row['check_desc']}" if row.get("check_desc") else ""
    detail = f"{status or 'unknown'} (check {check or '-'}{code}{desc})"
    return status == "UP" and check not in ("", "INI", "UNK"), detail


class _Timing:
    """A switch's clock: when it started and the seconds it spent waiting for health checks and drains."""

    def __init__(self, clock, sleep):
        self.clock = clock
        self.sleep = sleep
        self.started = clock()
        self.waited = 0.0

    def wait(self, predicate, timeout):
        """:func:`_wait` on this clock; the time spent counts in ``waited`` also when the wait expires."""
        done, detail, spent = _wait(predicate, timeout, self.clock, self.sleep)
        self.waited += spent
        return done, detail


def _finish(result, instances, backend, timing):
    """Complete ``result`` (returned by :func:`switch` or carried by its SwitchError) with every instance and the times."""
    result["instances"] = [inst.result(backend) for inst in instances]
    result["unreachable_instances"] = [inst.name for inst in instances if inst.unreachable]
    result["elapsed"] = round(timing.clock() - timing.started, 6)
    result["waited"] = round(timing.waited, 6)
    return result


def switch(
    instances,
    backend,
    desired,
    min_instances=None,
    check_mode=False,
    drain=False,
    drain_timeout=30.0,
    shutdown_sessions=False,
    wait_healthy=True,
    healthy_timeout=10.0,
    persist=True,
    clock=time.monotonic,
    sleep=time.sleep,
):
    """Bring ``backend`` on every reachable instance to ``desired``; see the module documentation.

    The phases, each a function: :func:`_read`, :func:`_quorum`, :func:`_plan`, then inside
    :func:`_rollback_on_failure` :func:`_bring_up`, :func:`_drain`, :func:`_take_down` (all three sending through
    :func:`_apply`), :func:`_verify` and :func:`_persist`.
    Returns a result dict; raises SwitchError (with ``.result``) on failure after rolling back.
    """
    check_names(backend, desired)
    timing = _Timing(clock, sleep)
    if min_instances is None:
        min_instances = len(instances)
    result = {"changed": False, "instances": [], "unreachable_instances": [], "rolled_back": False, "waited": 0.0}

    def finish():
        return _finish(result, instances, backend, timing)

    try:
        _read(instances)
    except HAProxyError as exc:
        raise SwitchError(f"{exc}; nothing was changed", finish()) from exc
    reachable, shortfall = _quorum(instances, min_instances)
    if shortfall:
        raise SwitchError(shortfall, finish())
    try:
        result["changed"] = _plan(reachable, backend, desired, drain)
    except HAProxyError as exc:
        raise SwitchError(f"{exc}; nothing was changed", finish()) from exc
    if check_mode or not result["changed"]:
        for inst in reachable:
            inst.after = _expected(inst.before, backend, desired)
        if not check_mode and persist:
            # Nothing to change, but make sure the state files hold the current state (a reload must not undo it).
            try:
                _persist(reachable)
            except HAProxyError as exc:
                raise SwitchError(str(exc), finish()) from exc
        return finish()
    with _rollback_on_failure(reachable, backend, persist, result, finish):
        _bring_up(reachable, backend, timing, wait_healthy, healthy_timeout)
        _drain(reachable, backend, timing, result, drain, drain_timeout, shutdown_sessions)
        _take_down(reachable, backend, shutdown_sessions)
        _verify(reachable, backend, desired)
        if persist:
            _persist(reachable)
    return finish()


def _read(instances):
    """Phase 1, read: each instance's ``show servers state`` into ``inst.before``.

    An instance whose Runtime API cannot be reached is marked unreachable (:func:`_quorum` decides about it); any
    other error is recorded on its instance and raised at once, before the next instance is read.
    """
    for inst in instances:
        try:
            inst.before = inst.client.servers_state()
        except HAProxyConnectionError as exc:
            inst.unreachable = True
            inst.error = str(exc)
        except HAProxyError as exc:
            inst.error = str(exc)
            raise


def _quorum(instances, min_instances):
    """The quorum decision after :func:`_read`: (reachable instances, None) when at least ``min_instances`` answered,
    else (reachable instances, the error message, which names every unreachable instance with its error).

    Only the reachable instances are switched, and a failure on any of them rolls every one back, so the instances
    not switched are exactly ``unreachable_instances``. A failover passes a quorum below the number of instances (the
    lost data center's load balancer may be unreachable), a switchover all of them (hanzo.kms.global_lb_switch_quorum;
    all is also the default).
    """
    reachable = [inst for inst in instances if not inst.unreachable]
    if len(reachable) >= min_instances:
        return reachable, None
    down = "; ".join(inst.error for inst in instances if inst.unreachable)
    return reachable, (
        f"quorum not met: {len(reachable)} of {len(instances)} HAProxy instances reachable, "
        f"min_instances is {min_instances}; nothing was changed. Unreachable: {down}"
    )


def _plan(reachable, backend, desired, drain):
    """Phase 2, plan: each reachable instance's steps into ``inst.plan`` (:func:`plan_instance`, with a drain step
    first when ``drain``); the first error is recorded on its instance and raised. Returns whether any instance
    needs a change."""
    for inst in reachable:
        try:
            inst.plan = plan_instance(inst.before, backend, desired, drain_first=drain, instance=inst.name)
        except HAProxyError as exc:
            inst.error = str(exc)
            raise
    return any(inst.plan["up"] or inst.plan["down"] for inst in reachable)


def _apply(inst, steps, label=""):
    """Send ``steps`` to one instance in order: the one place a switch changes HAProxy, forward and in the rollback.

    Before each command is sent the instance is marked touched and the command recorded in ``inst.executed``
    (prefixed with ``label``: ``"rollback: "`` in the rollback), so an instance whose first command was rejected is
    rolled back too. The first rejected command raises.
    """
    for step in steps:
        inst.touched = True
        inst.executed.append(label + step["command"])
        inst.client.setter(step["command"])


def _bring_up(reachable, backend, timing, wait_healthy, healthy_timeout):
    """Phase 3, apply (make): every instance's "up" steps, then, with ``wait_healthy``, wait until each server set
    ready passes its health checks on every instance; raises when they do not within ``healthy_timeout``."""
    for inst in reachable:
        _apply(inst, inst.plan["up"])
    coming_up = {
        inst.name: sorted({s["server"] for s in inst.plan["up"] if s["kind"] == "ready"}) for inst in reachable
    }
    if wait_healthy and any(coming_up.values()):
        healthy, detail = timing.wait(lambda: _all_healthy(reachable, backend, coming_up), healthy_timeout)
        if not healthy:
            raise HAProxyError(
                f"servers brought up did not pass their health checks within {healthy_timeout:g}s: {detail}"
            )


def _drain(reachable, backend, timing, result, drain, drain_timeout, shutdown_sessions):
    """Phase 4, drain: every instance's drain steps, then, with ``drain``, wait until the sessions of those servers
    reach 0 (recorded in ``result["drain_timed_out"]``). An expired wait raises unless ``shutdown_sessions`` (then
    :func:`_take_down` cuts the sessions)."""
    draining = {}
    for inst in reachable:
        steps = [step for step in inst.plan["down"] if step["kind"] == "drain"]
        _apply(inst, steps)
        if steps:
            draining.setdefault(inst.name, []).extend(step["server"] for step in steps)
    if drain and draining:
        drained, detail = timing.wait(lambda: _all_drained(reachable, backend, draining), drain_timeout)
        result["drain_timed_out"] = not drained
        if not drained and not shutdown_sessions:
            raise HAProxyError(
                f"sessions did not drain within {drain_timeout:g}s: {detail} "
                "(set shutdown_sessions to cut them, or raise drain_timeout)"
            )


def _take_down(reachable, backend, shutdown_sessions):
    """Phase 5, apply (break): every instance's other "down" steps (final states, weights), then, with
    ``shutdown_sessions``, ``shutdown sessions server`` for each server that went to maint or drain."""
    for inst in reachable:
        _apply(inst, [step for step in inst.plan["down"] if step["kind"] != "drain"])
    if shutdown_sessions:
        for inst in reachable:
            names = sorted({s["server"] for s in inst.plan["down"] if s["kind"] in ("maint", "drain")})
            _apply(inst, [{"command": f"shutdown sessions server {backend}/{name}"} for name in names])


def _verify(reachable, backend, desired):
    """Phase 6, verify: read every instance back into ``inst.after``; the first that differs from ``desired`` raises."""
    for inst in reachable:
        inst.after = inst.client.servers_state(backend)
        problems = mismatches(inst.after, backend, desired)
        if problems:
            raise HAProxyCommandError(f"{inst.name}: read-back does not match the request: {'; '.join(problems)}")


def _persist(instances):
    """Phase 7, persist: write each instance's ``show servers state`` to its server-state-file, if it has one (so a
    reload with ``load-server-state-from-file`` keeps the state)."""
    for inst in instances:
        if inst.state_file:
            write_state_file(inst.state_file, inst.client.raw_servers_state())


@contextlib.contextmanager
def _rollback_on_failure(reachable, backend, persist, result, finish):
    """Rollback around the forward phases (the ``with`` body): when one raises HAProxyError, record the error on the
    instance it names, put every touched instance back to its snapshot (:func:`_rollback`) and raise SwitchError
    with ``finish()`` (``rolled_back``, ``rollback_errors``). Other exceptions pass through unchanged."""
    try:
        yield
    except HAProxyError as exc:
        for inst in reachable:
            if inst.error is None and str(exc).startswith(inst.name + ":"):
                inst.error = str(exc)
        rollback_errors = _rollback(reachable, backend, persist)
        result["rolled_back"] = True
        result["rollback_errors"] = rollback_errors
        message = f"switch of backend {backend!r} failed: {exc}. "
        if rollback_errors:
            message += "ROLLBACK INCOMPLETE: " + "; ".join(rollback_errors)
        else:
            message += "Every instance was rolled back to its previous state."
        raise SwitchError(message, finish()) from exc


def _expected(states, backend, desired):
    """The states as they will be after ``desired`` is applied (for check mode and no-op runs)."""
    expected = {}
    for key, server in states.items():
        clone = ServerState(
            server.backend,
            server.name,
            server.op_state,
            server.admin_state,
            server.uweight,
            server.iweight,
            server.check_state,
            server.address,
            server.port,
        )
        want = desired.get(server.name) if server.backend == backend else None
        if want:
            if "state" in want and want["state"] != clone.state:
                admin = clone.admin_state & ~(MAINT_MASK | DRAIN_MASK)
                clone.admin_state = admin | {"ready": 0, "drain": ADMF_FDRAIN, "maint": ADMF_FMAINT}[want["state"]]
            if "weight" in want:
                clone.uweight = want["weight"]
        expected[key] = clone
    return expected


def _pending(instances, backend, servers, problem):
    """``(done, detail)``: done when ``problem(row)`` finds nothing in any listed server's stats row."""
    pending = []
    for inst in instances:
        names = servers.get(inst.name)
        if not names:
            continue
        rows = inst.client.server_stats(backend)
        for name in names:
            detail = problem(rows.get(name, {}))
            if detail:
                pending.append(f"{inst.name} {backend}/{name} {detail}")
    return not pending, "; ".join(pending)


def _unhealthy(row):
    healthy, detail = _health(row)
    return None if healthy else detail


def _sessions(row):
    scur = int(row.get("scur") or 0)
    return f"has {scur} session(s)" if scur else None


def _all_healthy(instances, backend, servers):
    return _pending(instances, backend, servers, _unhealthy)


def _all_drained(instances, backend, servers):
    return _pending(instances, backend, servers, _sessions)


def _rollback(instances, backend, persist):
    """Put every touched instance back to its ``before`` state (:func:`_restore`); return a list of errors (empty =
    clean). An instance that fails to restore does not stop the others."""
    errors = []
    for inst in instances:
        if not inst.touched:
            continue
        try:
            _restore(inst, backend, persist)
        except HAProxyError as exc:
            errors.append(str(exc))
    return errors


def _restore(inst, backend, persist):
    """One instance back to its snapshot: the servers its plan named go from their state read now to their state in
    ``inst.before`` (make-before-break, sent by :func:`_apply` labelled ``rollback:``), then read back into
    ``inst.after`` (a difference raises) and persisted. Raises HAProxyError on any failure."""
    previous = snapshot(inst.before, backend, names={s["server"] for s in inst.plan["up"] + inst.plan["down"]})
    current = inst.client.servers_state(backend)
    steps = restore_plan(current, backend, previous)
    _apply(inst, steps["up"] + steps["down"], "rollback: ")
    inst.after = inst.client.servers_state(backend)
    problems = mismatches(inst.after, backend, previous)
    if problems:
        raise HAProxyCommandError(f"{inst.name}: read-back after rollback: {'; '.join(problems)}")
    if persist:
        _persist([inst])
