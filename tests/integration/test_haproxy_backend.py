"""hanzo.kms.haproxy_backend and the global_lb role against two real HAProxy 2.6 instances.

The instances run the configuration rendered from roles/global_lb/templates/haproxy.cfg.j2 and front two real HTTP
sites (``dc1``, ``dc2``) that tag responses with ``X-KMS-Site``; requests go through the HAProxy frontends.
Most cases run the real module through ``ansible localhost -m hanzo.kms.haproxy_backend``; the drain cases call
module_utils directly because they need to act while the switch is in progress.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests import ansible_run
from tests.integration.haproxy_pair import BACKEND, fixture_pair, get  # noqa: F401  pylint: disable=unused-import
from tests.lab import haproxy as lab_haproxy
from tests.lab.core import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / ".venv" / "collections"))

from ansible_collections.hanzo.kms.plugins.module_utils import haproxy as hx  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="haproxy is not installed (apt-get install haproxy)"
)

SITES = {"dc1": ["dc1"], "dc2": ["dc2"]}
READY, MAINT = "ready", "maint"


def run_module(args, check=False, diff=False, module="hanzo.kms.haproxy_backend"):
    """Run ``module`` for real (ad-hoc on localhost); return its result dict."""
    result = ansible_run.run_module(module, args, check_mode=check, diff=diff, timeout=120).result()
    assert not result.get("unreachable"), f"Ansible took the module result for an unreachable host: {result}"
    return result


@pytest.fixture()
def lbs(pair):
    """The pair reset to dc1 ready / dc2 maint (weights 1), both sites healthy, dc1 serving on every instance."""
    for site in pair.sites:
        site.healthy = True
    for inst in pair.instances:
        for command in (
            "set server kms/dc1 state ready",
            "set server kms/dc2 state maint",
            "set server kms/dc1 weight 1",
            "set server kms/dc2 weight 1",
        ):
            assert inst.command(command).strip() == ""
    for inst in pair.instances:
        wait_until(lambda inst=inst: get(inst.frontend_url) == (200, "dc1"), 10, f"{inst.name} to serve dc1")
    return pair


def module_instances(pair, transport="socket"):
    return [inst.as_module_instance(transport) for inst in pair.instances]


def admin_states(pair):
    """{instance: {server: state word}} read straight from HAProxy."""
    result = {}
    for inst in pair.instances:
        states = hx.parse_servers_state(inst.command(f"show servers state {BACKEND}"))
        result[inst.name] = {server.name: server.state for server in states.values()}
    return result


def landing(pair, requests=4):
    """The set of sites answering ``requests`` fresh requests through every frontend."""
    return {get(inst.frontend_url)[1] for inst in pair.instances for _request in range(requests)}


def expect_all(pair, dc1, dc2):
    assert admin_states(pair) == {inst.name: {"dc1": dc1, "dc2": dc2} for inst in pair.instances}


# ----------------------------------------------------------------------------------------------------------------
def test_switch_dc1_dc2_dc1(lbs):
    args = {"backend": BACKEND, "active_site": "dc2", "sites": SITES, "instances": module_instances(lbs)}
    result = run_module(args, diff=True)
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True
    assert result["unreachable_instances"] == [] and result["rolled_back"] is False
    for inst in result["instances"]:
        # make-before-break: the new site is made ready before the old one goes to maint
        assert inst["executed"] == ["set server kms/dc2 state ready", "set server kms/dc1 state maint"]
    assert result["diff"]["after"]["lb1"]["dc2"]["state"] == READY
    expect_all(lbs, MAINT, READY)
    assert landing(lbs) == {"dc2"}

    again = run_module(args)
    assert again["changed"] is False and all(inst["executed"] == [] for inst in again["instances"])

    # back to dc1 over the TCP Runtime API
    back = run_module(dict(args, active_site="dc1", instances=module_instances(lbs, "tcp")))
    assert not back.get("failed"), back.get("msg")
    assert back["changed"] is True
    expect_all(lbs, READY, MAINT)
    assert landing(lbs) == {"dc1"}


def test_check_mode_changes_nothing(lbs):
    args = {"backend": BACKEND, "active_site": "dc2", "sites": SITES, "instances": module_instances(lbs)}
    state_files = [Path(inst.state_file) for inst in lbs.instances]
    before_files = [p.read_text() if p.exists() else None for p in state_files]
    result = run_module(args, check=True, diff=True)
    assert result["changed"] is True
    assert result["instances"][0]["commands"] == ["set server kms/dc2 state ready", "set server kms/dc1 state maint"]
    assert all(inst["executed"] == [] for inst in result["instances"])
    assert result["diff"]["before"]["lb1"]["dc1"]["state"] == READY
    assert result["diff"]["after"]["lb1"]["dc1"]["state"] == MAINT
    expect_all(lbs, READY, MAINT)
    assert landing(lbs) == {"dc1"}
    assert [p.read_text() if p.exists() else None for p in state_files] == before_files


def test_weights_and_explicit_states(lbs):
    args = {
        "backend": BACKEND,
        "instances": module_instances(lbs),
        "servers": [{"name": "dc1", "state": "drain", "weight": 7}, {"name": "dc2", "state": "ready", "weight": 3}],
    }
    result = run_module(args)
    assert not result.get("failed"), result.get("msg")
    expect_all(lbs, "drain", READY)
    for inst in lbs.instances:
        assert {name: state[2] for name, state in inst.states().items()} == {"dc1": 7, "dc2": 3}
    assert landing(lbs) == {"dc2"}
    assert run_module(args)["changed"] is False


def test_unknown_server_fails_without_change(lbs):
    args = {
        "backend": BACKEND,
        "active_site": "dc2",
        "sites": {"dc1": ["dc1"], "dc2": ["dc3"]},
        "instances": module_instances(lbs),
    }
    result = run_module(args)
    assert result["failed"] is True
    assert "no server 'dc3' in backend 'kms'" in result["msg"] and "nothing was changed" in result["msg"]
    expect_all(lbs, READY, MAINT)
    assert landing(lbs) == {"dc1"}


def test_unknown_server_reply_is_an_error(lbs):
    client = hx.RuntimeClient(lbs.instances[0].socket, name="lb1")
    with pytest.raises(hx.HAProxyCommandError, match=r"No such server\."):
        client.setter("set server kms/nope state maint")


@pytest.mark.parametrize("level", ["operator", "user"])
def test_non_admin_socket_fails_and_rolls_back(lbs, level):
    instances = module_instances(lbs)
    instances[1] = {"name": "lb2", "socket": getattr(lbs.instances[1], f"{level}_socket")}  # declared 'level <level>'
    result = run_module({"backend": BACKEND, "active_site": "dc2", "sites": SITES, "instances": instances})
    assert result["failed"] is True
    assert "Permission denied" in result["msg"] and "level admin" in result["msg"]
    assert "rolled back" in result["msg"]
    assert result["rolled_back"] is True and result["rollback_errors"] == []
    lb1 = result["instances"][0]
    assert "rollback: set server kms/dc1 state ready" not in lb1["executed"]  # dc1 never left ready
    assert "rollback: set server kms/dc2 state maint" in lb1["executed"]
    expect_all(lbs, READY, MAINT)
    assert landing(lbs) == {"dc1"}


def test_unreachable_instance_without_quorum(lbs, tmp_path):
    instances = module_instances(lbs)
    instances[1] = {"name": "lb2", "socket": str(tmp_path / "gone.sock")}
    result = run_module({"backend": BACKEND, "active_site": "dc2", "sites": SITES, "instances": instances})
    assert result["failed"] is True
    assert (
        "quorum not met: 1 of 2" in result["msg"] and "lb2" in result["msg"] and "nothing was changed" in result["msg"]
    )
    assert result["unreachable_instances"] == ["lb2"]
    expect_all(lbs, READY, MAINT)
    assert landing(lbs) == {"dc1"}


def test_unreachable_instance_with_quorum(lbs):
    closed_port = free_port()
    instances = module_instances(lbs)
    instances[1] = {"name": "lb2", "address": f"127.0.0.1:{closed_port}"}
    result = run_module(
        {"backend": BACKEND, "active_site": "dc2", "sites": SITES, "instances": instances, "min_instances": 1}
    )
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and result["unreachable_instances"] == ["lb2"]
    assert any("lb2 was not switched" in warning for warning in result.get("warnings", []))
    assert admin_states(lbs)["lb1"] == {"dc1": MAINT, "dc2": READY}
    assert get(lbs.instances[0].frontend_url) == (200, "dc2")


def test_unhealthy_new_site_rolls_back(lbs):
    lbs.site("dc2").healthy = False
    result = run_module(
        {
            "backend": BACKEND,
            "active_site": "dc2",
            "sites": SITES,
            "instances": module_instances(lbs),
            "healthy_timeout": 3,
        }
    )
    assert result["failed"] is True
    assert "did not pass their health checks" in result["msg"] and "kms/dc2" in result["msg"]
    assert result["rolled_back"] is True
    expect_all(lbs, READY, MAINT)
    assert landing(lbs) == {"dc1"}


# ----------------------------------------------------------------------------------------------------------------
class LiveRequest:
    """A POST through a frontend whose body is sent in two parts: the session to the site stays open in between."""

    def __init__(self, url):
        host, port = url.split("//", 1)[1].split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.sendall(b"POST /upload HTTP/1.1\r\nHost: kms\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello")

    def finish(self):
        """Send the rest of the body; return (status line, X-KMS-Site) or None if the session was cut."""
        try:
            self.sock.sendall(b"world")
            data = b""
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            return None
        finally:
            self.sock.close()
        if not data:
            return None
        head = data.split(b"\r\n\r\n", 1)[0].decode()
        site = [line.split(":", 1)[1].strip() for line in head.splitlines() if line.lower().startswith("x-kms-site:")]
        return head.splitlines()[0], (site[0] if site else None)


def scur(inst, server):
    return int(hx.parse_stat_csv(inst.command(f"show stat {BACKEND} 4 -1"))[server]["scur"])


def core_instances(pair):
    return [hx.Instance(inst.name, inst.socket, state_file=inst.state_file) for inst in pair.instances]


def test_drain_with_live_connection(lbs):
    lb1 = lbs.instances[0]
    live = LiveRequest(lb1.frontend_url)
    wait_until(lambda: scur(lb1, "dc1") == 1, 10, "the live session on lb1 dc1")
    outcome = {}

    def run():
        try:
            outcome["result"] = hx.switch(
                core_instances(lbs), BACKEND, hx.desired_from_sites("dc2", SITES), drain=True, drain_timeout=60
            )
        except hx.HAProxyError as exc:  # pragma: no cover - reported below
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    try:
        wait_until(lambda: admin_states(lbs)["lb1"] == {"dc1": "drain", "dc2": READY}, 20, "dc1 draining on lb1")
        # new requests already land on dc2 while the old session is still on dc1
        assert landing(lbs) == {"dc2"}
        assert scur(lb1, "dc1") == 1 and worker.is_alive()
        assert live.finish() == ("HTTP/1.1 200 OK", "dc1")
    finally:
        worker.join(90)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result["waited"] > 0 and result["drain_timed_out"] is False
    assert result["instances"][0]["executed"] == [
        "set server kms/dc2 state ready",
        "set server kms/dc1 state drain",
        "set server kms/dc1 state maint",
    ]
    expect_all(lbs, MAINT, READY)


def test_drain_timeout_rolls_back(lbs):
    lb1 = lbs.instances[0]
    live = LiveRequest(lb1.frontend_url)
    wait_until(lambda: scur(lb1, "dc1") == 1, 10, "the live session on lb1 dc1")
    with pytest.raises(hx.SwitchError) as failure:
        hx.switch(core_instances(lbs), BACKEND, hx.desired_from_sites("dc2", SITES), drain=True, drain_timeout=0.5)
    assert "did not drain" in str(failure.value) and "lb1 kms/dc1 has 1 session" in str(failure.value)
    assert failure.value.result["rolled_back"] is True
    expect_all(lbs, READY, MAINT)
    assert live.finish() == ("HTTP/1.1 200 OK", "dc1")  # the session survived the rollback


def test_drain_timeout_with_shutdown_sessions(lbs):
    lb1 = lbs.instances[0]
    live = LiveRequest(lb1.frontend_url)
    wait_until(lambda: scur(lb1, "dc1") == 1, 10, "the live session on lb1 dc1")
    result = hx.switch(
        core_instances(lbs),
        BACKEND,
        hx.desired_from_sites("dc2", SITES),
        drain=True,
        drain_timeout=0.5,
        shutdown_sessions=True,
    )
    assert result["drain_timed_out"] is True
    assert "shutdown sessions server kms/dc1" in result["instances"][0]["executed"]
    expect_all(lbs, MAINT, READY)
    assert live.finish() != ("HTTP/1.1 200 OK", "dc1")  # the session was cut
    assert scur(lb1, "dc1") == 0


# ----------------------------------------------------------------------------------------------------------------
def test_reload_after_switch_keeps_switch(lbs):
    result = run_module({"backend": BACKEND, "active_site": "dc2", "sites": SITES, "instances": module_instances(lbs)})
    assert result["changed"] is True
    for inst in lbs.instances:
        assert "kms 1 dc1" in Path(inst.state_file).read_text()
        inst.reload()
    expect_all(lbs, MAINT, READY)
    assert landing(lbs) == {"dc2"}


def test_role_render_validate_reload_keeps_switch(lbs, tmp_path):
    """The global_lb role (no systemd: manage_service false + reload command) re-renders lb1's config, saves the
    runtime state and reloads; the switch survives and a second run changes nothing."""
    lb1 = lbs.instances[0]
    switched = run_module(
        {"backend": BACKEND, "active_site": "dc2", "sites": SITES, "instances": [{"name": "lb1", "socket": lb1.socket}]}
    )  # no state_file: the role saves it
    assert switched["changed"] is True
    Path(lb1.state_file).unlink(missing_ok=True)
    values = dict(
        lb1.values,
        global_lb_manage_package=False,
        global_lb_manage_service=False,
        global_lb_reload_command=f"kill -USR2 {lb1.proc.pid}",
        global_lb_config_path=lb1.config,
        global_lb_maxconn=2048,
    )
    (tmp_path / "vars.json").write_text(json.dumps(values))
    old_pid = [ln for ln in lb1.command("show info").splitlines() if ln.startswith("Pid:")][0]

    def play(*extra):
        run = ansible_run.run_play(
            tmp_path / "play.yml",
            [],
            "-e",
            f"@{tmp_path / 'vars.json'}",
            *extra,
            name="Global LB",
            play={"roles": [{"role": "hanzo.kms.global_lb"}]},
            timeout=300,
        )
        assert run.returncode == 0, json.dumps(run.report, indent=1)[-4000:]
        return run.stats()

    first = play()
    assert first["changed"] == 2  # template and reload command (saving the state changes nothing in HAProxy)
    assert "maxconn 2048" in Path(lb1.config).read_text()
    assert "kms 1 dc1" in Path(lb1.state_file).read_text()
    wait_until(
        lambda: [ln for ln in lb1.command("show info").splitlines() if ln.startswith("Pid:")][0] != old_pid,
        10,
        "lb1 reloaded",
    )
    assert admin_states(lbs)["lb1"] == {"dc1": MAINT, "dc2": READY}
    assert get(lb1.frontend_url) == (200, "dc2")
    second = play()
    assert second["changed"] == 0
    (tmp_path / "vars.json").write_text(json.dumps(dict(values, global_lb_maxconn=1024)))
    config_before = Path(lb1.config).read_text()
    checked = play("--check")
    assert checked["changed"] >= 1  # the template would change ...
    assert Path(lb1.config).read_text() == config_before  # ... but nothing was written or reloaded
    assert admin_states(lbs)["lb1"] == {"dc1": MAINT, "dc2": READY}


@pytest.mark.parametrize("tls_mode", ["terminate", "passthrough", "none"])
def test_role_template_renders_valid_configs(tmp_path, tls_mode):
    """Role defaults (Debian layout) in each TLS mode, sites with TLS to the ingress, pass ``haproxy -c``."""
    from tests.lab.haproxy_render import render  # pylint: disable=import-outside-toplevel

    cert = tmp_path / "kms.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=kms.example",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "crt.pem"),
            "-days",
            "2",
        ],
        check=True,
        capture_output=True,
    )
    cert.write_text((tmp_path / "crt.pem").read_text() + (tmp_path / "key.pem").read_text())
    text = render(
        {
            "global_lb_tls_mode": tls_mode,
            "global_lb_tls_certificate": str(cert),
            "global_lb_chroot": "",
            "global_lb_server_state_file": str(tmp_path / "server-state"),
            "global_lb_admin_socket": str(tmp_path / "admin.sock"),
            "global_lb_admin_address": "127.0.0.1:9999",
            "global_lb_redirect_bind_addresses": ["*:80"],
            "global_lb_public_host": "kms.example",
            "global_lb_sites": [
                {"name": "dc1", "address": "10.1.0.10", "port": 443, "tls": True, "ca_file": str(tmp_path / "crt.pem")},
                {
                    "name": "dc2",
                    "address": "10.2.0.10",
                    "port": 443,
                    "tls": True,
                    "ca_file": str(tmp_path / "crt.pem"),
                    "initial_state": "maint",
                },
            ],
        }
    )
    config = tmp_path / "haproxy.cfg"
    config.write_text(text)
    check = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr + text
    assert "option httpchk GET /api/status" in text and "load-server-state-from-file global" in text
    assert "prometheus-exporter" in text
    assert ("mode tcp" in text) == (tls_mode == "passthrough")
    assert (" ssl crt " in text) == (tls_mode == "terminate")
    assert text.count("verify required ca-file") == 2 and "verify none" not in text
    assert ("http-request set-header Host kms.example" in text) == (tls_mode != "passthrough")


# ----------------------------------------------------------------------------------------------------------------
# The lab's HAProxy pair in front of the KMS stand-ins. dc2's stand-in answers /api/status 503 until its PostgreSQL
# is promoted, so switching to dc2 before promotion must fail and leave dc1 serving on both instances.
def lab_instances(lab, transport="socket"):
    """The lab pair's instances by unix socket, or (``tls``) as the site switch reaches them from the control node:
    the Runtime API over TLS with the control node's client certificate."""
    if transport == "socket":
        return [
            {"name": inst["name"], "socket": inst["socket"], "state_file": inst["state_file"]}
            for inst in lab["lb"]["instances"]
        ]
    files = lab["lb"]["admin_tls"]
    return [
        {
            "name": inst["name"],
            "address": inst["admin_address"],
            "ca_file": files["ca_file"],
            "client_cert": files["cert_file"],
            "client_key": files["key_file"],
        }
        for inst in lab["lb"]["instances"]
    ]


def lab_sites(lab):
    return {site: [server] for site, server in lab["lb"]["servers"].items()}


def lab_landing(lab):
    tls = lab_haproxy.frontend_context(lab)
    return {
        get(inst["frontend_url"], "/api/status", tls=tls)[1] for inst in lab["lb"]["instances"] for _request in range(3)
    }


def test_lab_check_mode_plans_switch(lab):
    result = run_module(
        {
            "backend": lab["lb"]["backend"],
            "active_site": "dc2",
            "sites": lab_sites(lab),
            "instances": lab_instances(lab, "tls"),
        },
        check=True,
        diff=True,
    )
    assert result["changed"] is True
    assert [inst["commands"] for inst in result["instances"]] == [
        ["set server kms/dc2 state ready", "set server kms/dc1 state maint"]
    ] * 2
    assert lab_landing(lab) == {"dc1"}


def test_lab_runtime_api_over_tls_refuses_a_client_without_its_certificate(lab):
    """The LB hosts' Runtime API is level admin: without the control node's client certificate (or with a CA that
    did not sign the server's) an instance is unreachable, and a switch that needs every instance changes nothing."""
    instances = lab_instances(lab, "tls")
    del instances[1]["client_cert"], instances[1]["client_key"]
    result = run_module(
        {"backend": lab["lb"]["backend"], "active_site": "dc2", "sites": lab_sites(lab), "instances": instances}
    )
    assert result["failed"] is True and "quorum not met" in result["msg"] and "nothing was changed" in result["msg"]
    assert "CERTIFICATE_REQUIRED" in result["instances"][1]["error"], result["instances"][1]
    wrong_ca = lab_instances(lab, "tls")
    wrong_ca[0]["ca_file"] = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"  # not ours
    result = run_module({"backend": lab["lb"]["backend"], "instances": wrong_ca})
    assert result["failed"] is True and "CERTIFICATE_VERIFY_FAILED" in result["instances"][0]["error"]
    assert lab_landing(lab) == {"dc1"}


def test_lab_haproxy_info_reads_the_runtime_api_over_tls_with_the_client_certificate(lab):
    """haproxy_info reaches the LB hosts' TLS-only Runtime API as haproxy_backend does; an instance read without the
    client certificate is reported unreachable with the TLS error, not fatal."""
    instances = lab_instances(lab, "tls")
    result = run_module({"backend": lab["lb"]["backend"], "instances": instances}, module="hanzo.kms.haproxy_info")
    assert not result.get("failed"), result
    assert result["serving"] == ["dc1"] and result["unreachable_instances"] == []
    assert [inst["servers"]["dc2"]["state"] for inst in result["instances"]] == ["maint", "maint"]
    del instances[1]["client_cert"], instances[1]["client_key"]
    result = run_module({"backend": lab["lb"]["backend"], "instances": instances}, module="hanzo.kms.haproxy_info")
    assert not result.get("failed"), result
    assert result["unreachable_instances"] == [instances[1]["name"]]
    assert "CERTIFICATE_REQUIRED" in result["instances"][1]["error"], result["instances"][1]


def test_lab_switch_to_unpromoted_site_rolls_back(lab):
    result = run_module(
        {
            "backend": lab["lb"]["backend"],
            "active_site": "dc2",
            "sites": lab_sites(lab),
            "instances": lab_instances(lab),
            "healthy_timeout": 5,
        }
    )
    assert result["failed"] is True and result["rolled_back"] is True
    assert "did not pass their health checks" in result["msg"] and "503" in result["msg"]
    for inst in lab["lb"]["instances"]:
        states = hx.RuntimeClient(inst["socket"]).servers_state(lab["lb"]["backend"])
        assert {server.name: server.state for server in states.values()} == {"dc1": READY, "dc2": MAINT}
    assert lab_landing(lab) == {"dc1"}
    again = run_module(
        {
            "backend": lab["lb"]["backend"],
            "active_site": "dc1",
            "sites": lab_sites(lab),
            "instances": lab_instances(lab),
        }
    )
    assert again["changed"] is False
