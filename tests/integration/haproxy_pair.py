"""A throwaway HAProxy pair for the haproxy_backend tests and benchmark.

Real HAProxy processes (master-worker, foreground) run the config rendered from the global_lb role template
(tests/lab/haproxy_render.py); the sites are small real HTTP servers that answer ``GET /api/status`` and tag
every response with ``X-KMS-Site`` like the lab's KMS stand-in. Everything listens on 127.0.0.1 free ports.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.lab.core import free_port, wait_until
from tests.lab.haproxy_render import lab_values, render

BACKEND = "kms"


PORTS_TAKEN = set()  # the pairs of one process never share a port


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # health checks and killed sessions reset connections; that is expected here


class Site:
    """A KMS stand-in: ``/api/status`` 200 (or 503 when unhealthy), ``POST`` reads the whole body first."""

    def __init__(self, name):
        self.name = name
        self.healthy = True
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # pylint: disable=redefined-builtin
                pass

            def reply(self, code, body=b"ok"):
                self.send_response(code)
                self.send_header("X-KMS-Site", site.name)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # pylint: disable=invalid-name
                if self.path == "/api/status":
                    self.reply(200 if site.healthy else 503)
                else:
                    self.reply(200, site.name.encode())

            def do_POST(self):  # pylint: disable=invalid-name
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                self.reply(200, body)

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Instance:
    def __init__(self, name, directory, sites, active_site, extra_sockets=None, admin_tls=None):
        """``admin_tls``: {"ca": a tests.lab.pki CA, "ca_file", "cert_file", "key_file"} to serve the TCP Runtime API
        over TLS with client certificates (the global_lb role's admin TLS frontend) instead of plain TCP."""
        self.name = name
        self.dir = Path(directory) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = str(self.dir / "admin.sock")
        self.admin_port = free_port(PORTS_TAKEN)
        self.admin_address = f"127.0.0.1:{self.admin_port}"
        self.frontend_port = free_port(PORTS_TAKEN)
        self.stats_port = free_port(PORTS_TAKEN)
        self.frontend_url = f"http://127.0.0.1:{self.frontend_port}"
        self.state_file = str(self.dir / "server-state")
        self.config = str(self.dir / "haproxy.cfg")
        self.operator_socket = str(self.dir / "operator.sock")
        self.user_socket = str(self.dir / "user.sock")
        extra = [
            {"address": self.operator_socket, "level": "operator", "mode": "600"},
            {"address": self.user_socket, "level": "user", "mode": "600"},
        ] + list(extra_sockets or [])
        values = {
            "socket": self.socket,
            "admin_port": self.admin_port,
            "frontend_port": self.frontend_port,
            "stats_port": self.stats_port,
            "state_file": self.state_file,
        }
        self.admin_tls = admin_tls
        if admin_tls:
            cert, key = admin_tls["ca"].leaf(f"{name}-runtime-api", server=True, ips=("127.0.0.1",))
            pem = self.dir / "runtime-api.pem"
            pem.write_bytes(cert + key)
            values.update(
                admin_tls_certificate=str(pem),
                admin_tls_client_ca_file=admin_tls["ca_file"],
                admin_tls_socket=str(self.dir / "admin-tls.sock"),
            )
        self.values = lab_values(
            values,
            {site.name: ("127.0.0.1", site.port) for site in sites},
            active_site=active_site,
            extra_stats_sockets=extra,
            check_interval="200ms",
        )
        Path(self.config).write_text(render(self.values), encoding="utf-8")
        subprocess.run(["haproxy", "-c", "-q", "-f", self.config], check=True)
        self.log = open(self.dir / "haproxy.log", "ab")  # pylint: disable=consider-using-with
        self.proc = subprocess.Popen(
            ["haproxy", "-W", "-db", "-f", self.config],  # pylint: disable=consider-using-with
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(lambda: os.path.exists(self.socket) and self.command("show info"), 10, f"{name} runtime socket")

    def as_module_instance(self, transport="socket"):
        item = {"name": self.name, "state_file": self.state_file}
        if transport == "socket":
            item["socket"] = self.socket
        else:
            item["address"] = self.admin_address
            if self.admin_tls:
                item.update(
                    ca_file=self.admin_tls["ca_file"],
                    client_cert=self.admin_tls["cert_file"],
                    client_key=self.admin_tls["key_file"],
                )
        return item

    def command(self, command, address=None):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with sock:
            sock.settimeout(5)
            sock.connect(address or self.socket)
            sock.sendall(command.encode() + b"\n")
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def states(self):
        """{server: (op_state, admin_state, uweight)} from show servers state."""
        result = {}
        for line in self.command(f"show servers state {BACKEND}").splitlines()[1:]:
            if line and not line.startswith("#"):
                fields = line.split()
                result[fields[3]] = (int(fields[5]), int(fields[6]), int(fields[7]))
        return result

    def master_pids(self):
        return self.proc.pid

    def reload(self):
        """SIGUSR2 to the master; wait until a new worker answers (the old one goes away)."""
        old = self.command("show info")
        old_pid = [ln for ln in old.splitlines() if ln.startswith("Pid:")][0]
        os.kill(self.proc.pid, signal.SIGUSR2)
        wait_until(
            lambda: [ln for ln in self.command("show info").splitlines() if ln.startswith("Pid:")][0] != old_pid,
            10,
            f"{self.name} reload",
        )

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


def get(url, path="/", timeout=5, tls=None):
    """One HTTP GET on a fresh connection (an https URL with the ``tls`` context); return (status, X-KMS-Site)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "https":
        conn = http.client.HTTPSConnection(parsed.hostname, parsed.port, timeout=timeout, context=tls)
    else:
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("X-KMS-Site")
    finally:
        conn.close()


class Pair:
    """``count`` HAProxy instances in front of ``sites`` (names), the first site active."""

    def __init__(self, directory, site_names=("dc1", "dc2"), count=2, admin_tls=None):
        self.sites = [Site(name) for name in site_names]
        self.instances = []
        try:
            for index in range(count):
                self.instances.append(
                    Instance(f"lb{index + 1}", directory, self.sites, site_names[0], admin_tls=admin_tls)
                )
            for inst in self.instances:
                wait_until(
                    lambda inst=inst: inst.states()[site_names[0]][0] == 2, 15, f"{inst.name} to see {site_names[0]} up"
                )
        except BaseException:
            self.stop()
            raise

    def site(self, name):
        return next(site for site in self.sites if site.name == name)

    def stop(self):
        for inst in self.instances:
            inst.stop()
        for site in self.sites:
            site.stop()


@pytest.fixture(scope="module", name="pair")
def fixture_pair(tmp_path_factory):
    """A Pair for the test module, stopped after its last test."""
    lb_pair = Pair(tmp_path_factory.mktemp("haproxy"))
    yield lb_pair
    lb_pair.stop()
