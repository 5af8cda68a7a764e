"""Pure logic of plugins/module_utils/haproxy.py: parsing, planning, ordering, verification, rollback decisions.

The switch tests drive :func:`switch` with an in-memory fake of HAProxy's Runtime API semantics (the real server
is exercised in tests/integration/test_haproxy_backend.py); the fake only implements the replies documented in
shared/notes/haproxy-runtime-api.md.
"""

from __future__ import annotations

import ssl

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import haproxy as hx

HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
    "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
    "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port "
    "srv_check_addr srv_agent_addr srv_agent_port"
)
REAL_OUTPUT = f"""1
{HEADER}
3 be_kms 1 dc1 127.0.0.1 2 0 1 1 3 15 3 4 6 0 0 0 - 18081 - 0 0 - - 0
3 be_kms 2 dc2 127.0.0.1 0 5 1 1 3 15 3 0 14 0 0 0 - 18082 - 0 0 - - 0

"""


def line(backend, sid, name, op, admin, weight=1, check_state=6):
    return f"3 {backend} {sid} {name} 127.0.0.1 {op} {admin} {weight} 1 3 15 3 4 {check_state} 0 0 0 - 1808{sid} - 0 0 - - 0"


# --- addresses ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "address, expected",
    [
        ("/run/haproxy/admin.sock", ("unix", "/run/haproxy/admin.sock")),
        ("unix:/tmp/a.sock", ("unix", "/tmp/a.sock")),
        ("127.0.0.1:9999", ("tcp", ("127.0.0.1", 9999))),
        ("tcp:lb1.example:9999", ("tcp", ("lb1.example", 9999))),
        ("[::1]:9999", ("tcp", ("::1", 9999))),
    ],
)
def test_parse_address(address, expected):
    assert hx.parse_address(address) == expected


@pytest.mark.parametrize("address", ["", "lb1", "lb1:", "lb1:http", "lb1:70000", None])
def test_parse_address_rejects(address):
    with pytest.raises(hx.HAProxyError, match="invalid Runtime API address"):
        hx.parse_address(address)


# --- names (issue 14 item 6) ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["kms", "be_kms", "dc1", "dc-2.a:b", "A_Z-0.9:x"])
def test_check_name_accepts_haproxy_name_characters(name):
    assert hx.check_name(name) == name


@pytest.mark.parametrize(
    "name, shown",
    [
        ("kms;set server kms/dc1 state maint", "';'"),
        ("kms\nset server kms/dc1 state maint", "'\\n'"),
        ("kms dc1", "' '"),
        ("kms/dc1", "'/'"),
        ("k\u00e9ms", "'\u00e9'"),
        ("", ""),
    ],
)
def test_check_name_rejects(name, shown):
    with pytest.raises(hx.HAProxyNameError) as err:
        hx.check_names(backend="kms", servers=[name])
    assert "invalid HAProxy server name" in str(err.value) and "nothing was sent" in str(err.value)
    assert shown in str(err.value)
    with pytest.raises(hx.HAProxyNameError, match="invalid HAProxy backend name"):
        hx.check_names(backend=name)


@pytest.mark.parametrize("value", [None, 3, ["kms"]])
def test_check_name_rejects_non_strings(value):
    with pytest.raises(hx.HAProxyNameError):
        hx.check_name(value, "server")


def test_client_refuses_separators_before_connecting():
    client = hx.RuntimeClient("/nonexistent/socket")  # connecting would fail with a connection error
    for command in ("show servers state kms;set server kms/dc1 state maint", "show info\nshow stat", "a\rb"):
        with pytest.raises(hx.HAProxyNameError, match="command separator"):
            client.execute(command)
    with pytest.raises(hx.HAProxyNameError, match="invalid HAProxy backend name"):
        client.servers_state("kms;set server kms/dc1 state maint")


# --- parsing --------------------------------------------------------------------------------------------------
def test_tls_needs_a_tcp_address():
    context = ssl.create_default_context()
    with pytest.raises(hx.HAProxyError, match="TLS needs a host:port Runtime API address"):
        hx.RuntimeClient("/run/haproxy/admin.sock", name="lb1", tls=context)
    assert hx.RuntimeClient("10.0.1.10:9443", tls=context).tls is context


def test_tls_files_that_cannot_be_loaded_are_named(tmp_path):
    with pytest.raises(hx.HAProxyError, match=r"cannot load the Runtime API TLS files \(ca_file .*missing.pem"):
        hx.tls_context(str(tmp_path / "missing.pem"))


def test_parse_servers_state_real_output():
    states = hx.parse_servers_state(REAL_OUTPUT)
    dc1, dc2 = states[("be_kms", "dc1")], states[("be_kms", "dc2")]
    assert (dc1.state, dc1.op_state, dc1.uweight, dc1.has_check, dc1.port) == ("ready", 2, 1, True, "18081")
    assert (dc2.state, dc2.admin_state) == ("maint", 5)


@pytest.mark.parametrize(
    "admin, state",
    [
        (0, "ready"),
        (1, "maint"),
        (2, "maint"),
        (5, "maint"),
        (8, "drain"),
        (0x10, "drain"),
        (9, "maint"),
        (0x20, "maint"),
        (0x40, "maint"),
        (4, "ready"),  # config 'disabled' left behind after 'set server ... state ready' (observed on 2.6.12)
        (12, "drain"),
    ],
)
def test_admin_state_words(admin, state):
    server = hx.ServerState("b", "s", 2, admin, 1, 1, 6)
    assert server.state == state


@pytest.mark.parametrize("reply", ["Permission denied\n\n", "Can't find backend.\n\n", "", "Unknown command\n"])
def test_parse_servers_state_error_text_raises(reply):
    with pytest.raises(hx.HAProxyCommandError, match="unexpected reply"):
        hx.parse_servers_state(reply, "lb1", "show servers state kms")


def test_parse_servers_state_bad_row():
    with pytest.raises(hx.HAProxyCommandError, match="cannot parse"):
        hx.parse_servers_state(f"1\n{HEADER}\n3 kms 1 dc1 127.0.0.1 x 0 1 1\n")


def test_parse_stat_csv_by_header_names():
    text = (
        "# pxname,svname,qcur,qmax,scur,smax,slim,stot,status,check_status,-,extra\n"
        "kms,dc1,0,0,3,4,,10,UP,L7OK,,\n"
        "kms,dc2,0,0,0,0,,0,MAINT,,,\n"
        "kms,BACKEND,0,0,3,4,,10,UP,,,\n\n"
    )
    rows = hx.parse_stat_csv(text + "web,dc1,0,0,9,9,,9,DOWN,L4CON,,\n", proxy="kms")
    assert set(rows) == {"dc1", "dc2"}
    assert rows["dc1"]["scur"] == "3"
    assert rows["dc1"]["scur"] == "3" and rows["dc2"]["status"] == "MAINT"


def test_parse_stat_csv_error():
    with pytest.raises(hx.HAProxyCommandError, match="No such backend"):
        hx.parse_stat_csv("No such backend.\n\n", "lb1", "show stat x 4 -1")


@pytest.mark.parametrize(
    "row, healthy",
    [
        ({"status": "UP", "check_status": "L7OK"}, True),
        ({"status": "UP", "check_status": "* L7OK"}, True),
        ({"status": "UP 1/2", "check_status": "INI"}, False),
        ({"status": "UP", "check_status": "INI"}, False),
        ({"status": "DOWN", "check_status": "L7STS", "check_desc": "HTTP status check returned code <503>"}, False),
        ({"status": "no check", "check_status": ""}, True),
        ({}, False),
    ],
)
def test_health(row, healthy):
    assert hx._health(row)[0] is healthy  # pylint: disable=protected-access


# --- desired state --------------------------------------------------------------------------------------------
def test_desired_from_sites():
    sites = {"dc1": ["dc1a", "dc1b"], "dc2": "dc2a", "dc3": ["dc3a"]}
    assert hx.desired_from_sites("dc2", sites) == {
        "dc1a": {"state": "maint"},
        "dc1b": {"state": "maint"},
        "dc2a": {"state": "ready"},
        "dc3a": {"state": "maint"},
    }
    assert hx.desired_from_sites("dc1", sites, "drain")["dc2a"] == {"state": "drain"}


@pytest.mark.parametrize(
    "active, sites, inactive, message",
    [
        ("dc9", {"dc1": ["a"]}, "maint", "not one of the sites"),
        ("dc1", {"dc1": ["a"], "dc2": ["a"]}, "maint", "listed under both sites"),
        ("dc1", {"dc1": ["a"], "dc2": []}, "maint", "has no servers"),
        ("dc1", {"dc1": ["a"]}, "ready", "inactive_state"),
    ],
)
def test_desired_from_sites_rejects(active, sites, inactive, message):
    with pytest.raises(hx.HAProxyError, match=message):
        hx.desired_from_sites(active, sites, inactive)


def test_desired_from_servers():
    assert hx.desired_from_servers([{"name": "a", "state": "drain"}, {"name": "b", "weight": 10, "state": None}]) == {
        "a": {"state": "drain"},
        "b": {"weight": 10},
    }


@pytest.mark.parametrize(
    "servers, message",
    [
        ([{"name": "a"}], "give a state"),
        ([{"name": "a", "state": "up"}], "state must be one of"),
        ([{"name": "a", "weight": 257}], "between 0 and 256"),
        ([{"name": "a", "state": "ready"}, {"name": "a", "state": "maint"}], "listed twice"),
        ([{"state": "ready"}], "needs a name"),
    ],
)
def test_desired_from_servers_rejects(servers, message):
    with pytest.raises(hx.HAProxyError, match=message):
        hx.desired_from_servers(servers)


# --- planning -------------------------------------------------------------------------------------------------
def states_of(**servers):
    """states_of(dc1=(op, admin, weight), ...) for backend kms."""
    text = (
        "1\n"
        + HEADER
        + "\n"
        + "\n".join(line("kms", index + 1, name, *values) for index, (name, values) in enumerate(servers.items()))
        + "\n"
    )
    return hx.parse_servers_state(text)


def commands(plan):
    return [step["command"] for step in plan["up"] + plan["down"]]


def test_plan_make_before_break():
    states = states_of(dc1=(2, 0, 1), dc2=(0, 1, 1))
    plan = hx.plan_instance(states, "kms", {"dc1": {"state": "maint"}, "dc2": {"state": "ready"}})
    assert commands(plan) == ["set server kms/dc2 state ready", "set server kms/dc1 state maint"]


def test_plan_drain_first_and_weights():
    states = states_of(dc1=(2, 0, 1), dc2=(0, 1, 1))
    plan = hx.plan_instance(
        states,
        "kms",
        {"dc1": {"state": "maint", "weight": 0}, "dc2": {"state": "ready", "weight": 50}},
        drain_first=True,
    )
    assert commands(plan) == [
        "set server kms/dc2 state ready",
        "set server kms/dc2 weight 50",
        "set server kms/dc1 state drain",
        "set server kms/dc1 state maint",
        "set server kms/dc1 weight 0",
    ]


def test_plan_idempotent_and_config_disabled_server_counts_as_ready():
    states = states_of(dc1=(0, 1, 1), dc2=(2, 4, 1))  # dc2 'disabled' in the config, then set ready at runtime
    assert commands(hx.plan_instance(states, "kms", {"dc1": {"state": "maint"}, "dc2": {"state": "ready"}})) == []


def test_plan_unknown_server_and_backend():
    states = states_of(dc1=(2, 0, 1), dc2=(0, 1, 1))
    with pytest.raises(hx.HAProxyCommandError, match="no server 'dc3' in backend 'kms'; servers are: dc1, dc2"):
        hx.plan_instance(states, "kms", {"dc3": {"state": "ready"}}, instance="lb1")
    with pytest.raises(hx.HAProxyCommandError, match="backend 'web' not found"):
        hx.plan_instance(states, "web", {"dc1": {"state": "ready"}})


def test_mismatches():
    states = states_of(dc1=(2, 8, 3), dc2=(2, 0, 1))
    assert hx.mismatches(states, "kms", {"dc1": {"state": "maint", "weight": 1}, "dc2": {"state": "ready"}}) == [
        "dc1: state drain (admin_state 8), expected maint",
        "dc1: weight 3, expected 1",
    ]


# --- the switch, against a fake Runtime API ------------------------------------------------------------------
class FakeRuntime:
    """HAProxy's documented replies: empty on success, error text otherwise."""

    def __init__(self, name, servers, level="admin", reachable=True, fail_on=None, sessions=None):
        self.name = name
        self.servers = {n: dict(admin=a, weight=w) for n, (a, w) in servers.items()}
        self.level = level
        self.reachable = reachable
        self.fail_on = fail_on or set()
        self.sessions = sessions or {}
        self.log = []

    def execute(self, command):
        if not self.reachable:
            raise hx.HAProxyConnectionError(f"{self.name}: cannot connect to the Runtime API at x: Connection refused")
        self.log.append(command)
        if command.startswith("show servers state"):
            rows = [
                line("kms", i + 1, n, 0 if s["admin"] & 1 else 2, s["admin"], s["weight"])
                for i, (n, s) in enumerate(self.servers.items())
            ]
            return "1\n" + HEADER + "\n" + "\n".join(rows) + "\n\n"
        if command.startswith("show stat"):
            rows = [
                f"kms,{n},{self.sessions.get(n, 0)},{'MAINT' if s['admin'] & 1 else 'UP'},L7OK"
                for n, s in self.servers.items()
            ]
            return "# pxname,svname,scur,status,check_status\n" + "\n".join(rows) + "\n\n"
        if self.level != "admin":
            return "Permission denied\n\n"
        if command in self.fail_on:
            return "Simulated failure.\n\n"
        words = command.split()
        if words[:2] == ["shutdown", "sessions"]:
            self.sessions[words[3].split("/")[1]] = 0
            return "\n"
        target, what, value = words[2:]
        backend, server = target.split("/")
        if backend != "kms" or server not in self.servers:
            return "No such server.\n\n"
        entry = self.servers[server]
        if what == "state":
            entry["admin"] = {"ready": 0, "drain": 8, "maint": 1}[value]
        else:
            entry["weight"] = int(value)
        return "\n"


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.on_sleep = None

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        if self.on_sleep:
            self.on_sleep(self.now)


def fake_instances(*runtimes, state_files=None):
    instances = []
    for index, runtime in enumerate(runtimes):
        inst = hx.Instance(runtime.name, f"/fake/{runtime.name}.sock", state_file=(state_files or {}).get(runtime.name))
        inst.client.execute = runtime.execute
        instances.append(inst)
        del index
    return instances


def initial(name, **kwargs):
    return FakeRuntime(name, {"dc1": (0, 1), "dc2": (1, 1)}, **kwargs)


def run_switch(runtimes, active="dc2", clock=None, **kwargs):
    clock = clock or FakeClock()
    return hx.switch(
        fake_instances(*runtimes, state_files=kwargs.pop("state_files", None)),
        "kms",
        hx.desired_from_sites(active, {"dc1": ["dc1"], "dc2": ["dc2"]}),
        clock=clock,
        sleep=clock.sleep,
        **kwargs,
    )


def admin(runtime):
    return {name: entry["admin"] for name, entry in runtime.servers.items()}


def test_switch_orders_phases_across_instances(tmp_path):
    lb1, lb2 = initial("lb1"), initial("lb2")
    files = {"lb1": str(tmp_path / "lb1.state"), "lb2": str(tmp_path / "lb2.state")}
    result = run_switch([lb1, lb2], state_files=files)
    assert result["changed"] and not result["rolled_back"]
    setters = [(rt.name, c) for rt in (lb1, lb2) for c in rt.log if c.startswith("set")]
    assert setters == [
        ("lb1", "set server kms/dc2 state ready"),
        ("lb1", "set server kms/dc1 state maint"),
        ("lb2", "set server kms/dc2 state ready"),
        ("lb2", "set server kms/dc1 state maint"),
    ]
    # the old site goes down on lb1 only after the new one is up on lb2
    order = [c for c in lb1.log + lb2.log if c.startswith("set")]
    assert order.index("set server kms/dc1 state maint") > order.index("set server kms/dc2 state ready")
    assert admin(lb1) == admin(lb2) == {"dc1": 1, "dc2": 0}
    assert "kms 1 dc1" in (tmp_path / "lb1.state").read_text()
    assert result["instances"][0]["after"] == {
        "dc1": {"state": "maint", "weight": 1},
        "dc2": {"state": "ready", "weight": 1},
    }


def test_switch_refuses_bad_names_before_sending_anything():
    lb1 = initial("lb1")
    with pytest.raises(hx.HAProxyNameError, match="invalid HAProxy server name"):
        hx.switch(fake_instances(lb1), "kms", {"dc1 state maint;x": {"state": "ready"}})
    with pytest.raises(hx.HAProxyNameError, match="invalid HAProxy backend name"):
        hx.switch(fake_instances(lb1), "kms;set server kms/dc1 state maint", {"dc1": {"state": "ready"}})
    assert not lb1.log


def test_switch_check_mode_and_idempotence(tmp_path):
    lb1 = initial("lb1")
    planned = run_switch([lb1], check_mode=True, state_files={"lb1": str(tmp_path / "s")})
    assert planned["changed"] and planned["instances"][0]["commands"] == [
        "set server kms/dc2 state ready",
        "set server kms/dc1 state maint",
    ]
    assert planned["instances"][0]["after"]["dc1"]["state"] == "maint"
    assert not [c for c in lb1.log if c.startswith("set")] and not (tmp_path / "s").exists()
    run_switch([lb1])
    again = run_switch([lb1])
    assert not again["changed"] and again["instances"][0]["executed"] == []


def test_switch_permission_denied_rolls_back_the_other_instance():
    lb1, lb2 = initial("lb1"), initial("lb2", level="operator")
    with pytest.raises(hx.SwitchError) as failure:
        run_switch([lb1, lb2])
    message = str(failure.value)
    assert "lb2: HAProxy rejected 'set server kms/dc2 state ready': Permission denied" in message
    assert "rolled back" in message and failure.value.result["rolled_back"]
    assert admin(lb1) == admin(lb2) == {"dc1": 0, "dc2": 1}
    assert lb1.log[2:] == ["show servers state kms", "set server kms/dc2 state maint", "show servers state kms"]


def test_switch_failure_in_down_phase_rolls_back_everything():
    lb1, lb2 = initial("lb1"), initial("lb2", fail_on={"set server kms/dc1 state maint"})
    with pytest.raises(hx.SwitchError, match="Simulated failure"):
        run_switch([lb1, lb2])
    assert admin(lb1) == admin(lb2) == {"dc1": 0, "dc2": 1}


def test_switch_reports_incomplete_rollback():
    lb1 = initial("lb1")
    lb2 = initial("lb2", fail_on={"set server kms/dc1 state maint"})
    original = lb1.execute

    def breaks_after_first_change(command):
        if any(c.startswith("set") for c in lb1.log) and command.startswith("set"):
            lb1.reachable = False
        return original(command)

    instances = fake_instances(lb1, lb2)
    instances[0].client.execute = breaks_after_first_change
    clock = FakeClock()
    with pytest.raises(hx.SwitchError, match="ROLLBACK INCOMPLETE: lb1: cannot connect"):
        hx.switch(
            instances, "kms", {"dc1": {"state": "maint"}, "dc2": {"state": "ready"}}, clock=clock, sleep=clock.sleep
        )


def test_quorum():
    lb1, lb2 = initial("lb1"), initial("lb2", reachable=False)
    with pytest.raises(
        hx.SwitchError,
        match="quorum not met: 1 of 2 HAProxy instances reachable, min_instances is 2; nothing was changed",
    ) as failure:
        run_switch([lb1, lb2])
    assert failure.value.result["unreachable_instances"] == ["lb2"]
    assert admin(lb1) == {"dc1": 0, "dc2": 1}
    result = run_switch([lb1, lb2], min_instances=1)
    assert result["unreachable_instances"] == ["lb2"] and admin(lb1) == {"dc1": 1, "dc2": 0}
    assert result["instances"][1]["reachable"] is False and "Connection refused" in result["instances"][1]["error"]


def test_unknown_server_changes_nothing():
    lb1 = initial("lb1")
    with pytest.raises(hx.SwitchError, match="no server 'dc3'.*nothing was changed"):
        hx.switch(fake_instances(lb1), "kms", {"dc3": {"state": "ready"}})
    assert not [c for c in lb1.log if c.startswith("set")]


def test_drain_waits_for_sessions_then_maint():
    lb1 = initial("lb1", sessions={"dc1": 2})
    clock = FakeClock()
    clock.on_sleep = lambda now: lb1.sessions.update(dc1=0) if now >= 1.0 else None
    result = run_switch([lb1], clock=clock, drain=True, drain_timeout=5)
    assert [c for c in lb1.log if c.startswith("set")] == [
        "set server kms/dc2 state ready",
        "set server kms/dc1 state drain",
        "set server kms/dc1 state maint",
    ]
    assert result["drain_timed_out"] is False and result["waited"] >= 1.0


def test_drain_timeout_fails_or_shuts_sessions():
    lb1 = initial("lb1", sessions={"dc1": 2})
    with pytest.raises(hx.SwitchError, match="did not drain within 0.5s: lb1 kms/dc1 has 2 session"):
        run_switch([lb1], drain=True, drain_timeout=0.5)
    assert admin(lb1) == {"dc1": 0, "dc2": 1}
    result = run_switch([lb1], drain=True, drain_timeout=0.5, shutdown_sessions=True)
    assert result["drain_timed_out"] is True
    assert lb1.log[-3:-1] == ["set server kms/dc1 state maint", "shutdown sessions server kms/dc1"]
    assert lb1.sessions["dc1"] == 0


def test_unhealthy_new_servers_roll_back():
    lb1 = initial("lb1")
    original = lb1.execute

    def down_checks(command):
        reply = original(command)
        return reply.replace(",UP,L7OK", ",DOWN,L7STS") if command.startswith("show stat") else reply

    instances = fake_instances(lb1)
    instances[0].client.execute = down_checks
    clock = FakeClock()
    with pytest.raises(
        hx.SwitchError, match=r"did not pass their health checks within 2s: lb1 kms/dc2 DOWN \(check L7STS\)"
    ):
        hx.switch(
            instances,
            "kms",
            hx.desired_from_sites("dc2", {"dc1": ["dc1"], "dc2": ["dc2"]}),
            healthy_timeout=2,
            clock=clock,
            sleep=clock.sleep,
        )
    assert admin(lb1) == {"dc1": 0, "dc2": 1}


def test_state_file_write_keeps_mode(tmp_path):
    path = tmp_path / "server-state"
    path.write_text("old")
    path.chmod(0o600)
    hx.write_state_file(str(path), "1\n# header")
    assert path.read_text() == "1\n# header\n" and (path.stat().st_mode & 0o777) == 0o600
    with pytest.raises(hx.HAProxyError, match="cannot write the server-state-file"):
        hx.write_state_file(str(tmp_path / "missing" / "state"), "1\n")


# --- the switch's phases, one function each (issue 17 item 4) -------------------------------------------------
# pylint: disable=protected-access
TO_DC2 = {"dc1": {"state": "maint"}, "dc2": {"state": "ready"}}


def read_and_plan(*runtimes, desired=None, drain=False, state_files=None):
    """Instances over ``runtimes`` after the read and plan phases (every runtime reachable)."""
    instances = fake_instances(*runtimes, state_files=state_files)
    hx._read(instances)
    reachable, shortfall = hx._quorum(instances, len(instances))
    assert shortfall is None and reachable == instances
    hx._plan(instances, "kms", desired or TO_DC2, drain)
    return instances


def set_commands(runtime):
    return [c for c in runtime.log if not c.startswith("show")]


def test_read_marks_unreachable_and_stops_at_any_other_error():
    lb1, lb2, lb3, lb4 = initial("lb1"), initial("lb2", reachable=False), initial("lb3"), initial("lb4")
    instances = fake_instances(lb1, lb2, lb3, lb4)
    instances[2].client.execute = lambda command: "Permission denied\n\n"
    with pytest.raises(
        hx.HAProxyCommandError, match="lb3: unexpected reply to 'show servers state': Permission denied"
    ):
        hx._read(instances)
    assert [inst.unreachable for inst in instances] == [False, True, False, False]
    assert "Connection refused" in instances[1].error and "Permission denied" in instances[2].error
    assert instances[0].before and instances[0].error is None
    assert not lb4.log and instances[3].before is None  # nothing read after the error


@pytest.mark.parametrize(
    "reachable, min_instances, switched",
    [
        ([True, True], 2, ["lb1", "lb2"]),  # a switchover: every instance
        ([True, False], 1, ["lb1"]),  # a failover with lb2's data center lost
        ([False, False, True], 1, ["lb3"]),
        ([False, False], 0, []),  # refreshing the state files only
    ],
)
def test_quorum_met(reachable, min_instances, switched):
    instances = fake_instances(*(initial(f"lb{i + 1}", reachable=up) for i, up in enumerate(reachable)))
    hx._read(instances)
    chosen, shortfall = hx._quorum(instances, min_instances)
    assert shortfall is None and [inst.name for inst in chosen] == switched


def test_quorum_not_met_names_every_unreachable_instance():
    instances = fake_instances(initial("lb1", reachable=False), initial("lb2", reachable=False), initial("lb3"))
    hx._read(instances)
    chosen, shortfall = hx._quorum(instances, 2)
    assert [inst.name for inst in chosen] == ["lb3"]
    assert shortfall == (
        "quorum not met: 1 of 3 HAProxy instances reachable, min_instances is 2; nothing was changed. "
        "Unreachable: lb1: cannot connect to the Runtime API at x: Connection refused; "
        "lb2: cannot connect to the Runtime API at x: Connection refused"
    )


def test_plan_reports_change_and_records_the_failing_instance():
    lb1, lb2 = initial("lb1"), initial("lb2")
    instances = read_and_plan(lb1, lb2)
    assert [
        hx._plan(instances, "kms", TO_DC2, False),
        hx._plan(instances, "kms", {"dc1": {"state": "ready"}}, False),
    ] == [True, False]
    with pytest.raises(hx.HAProxyCommandError, match="lb1: no server 'dc3'"):
        hx._plan(instances, "kms", {"dc3": {"state": "ready"}}, False)
    assert "no server 'dc3'" in instances[0].error and instances[1].error is None
    assert not set_commands(lb1) and not set_commands(lb2)


def test_apply_records_each_command_before_sending_and_stops_at_the_first_rejection():
    lb1 = initial("lb1", fail_on={"set server kms/dc1 state maint"})
    inst = fake_instances(lb1)[0]
    hx._apply(inst, [])
    assert not inst.touched and inst.executed == []
    steps = [
        {"command": "set server kms/dc2 state ready"},
        {"command": "set server kms/dc1 state maint"},
        {"command": "set server kms/dc1 weight 0"},
    ]
    with pytest.raises(hx.HAProxyCommandError, match="lb1: HAProxy rejected 'set server kms/dc1 state maint'"):
        hx._apply(inst, steps)
    assert inst.touched and inst.executed == ["set server kms/dc2 state ready", "set server kms/dc1 state maint"]
    assert set_commands(lb1) == inst.executed  # the weight was never sent
    hx._apply(inst, steps[:1], "rollback: ")
    assert (
        inst.executed[-1] == "rollback: set server kms/dc2 state ready"
        and lb1.log[-1] == "set server kms/dc2 state ready"
    )


def test_rejected_first_command_still_counts_as_touched():
    lb1 = initial("lb1", level="operator")
    inst = fake_instances(lb1)[0]
    with pytest.raises(hx.HAProxyCommandError, match="Permission denied"):
        hx._apply(inst, [{"command": "set server kms/dc2 state ready"}])
    assert inst.touched


def test_rollback_restores_every_reached_instance_when_the_apply_fails_on_the_second():
    lb1, lb2, lb3 = initial("lb1"), initial("lb2", fail_on={"set server kms/dc2 state ready"}), initial("lb3")
    instances = read_and_plan(lb1, lb2, lb3)
    logged = [len(rt.log) for rt in (lb1, lb2, lb3)]
    result = {"rolled_back": False}
    clock = FakeClock()
    with pytest.raises(hx.SwitchError) as failure:
        with hx._rollback_on_failure(instances, "kms", False, result, lambda: result):
            hx._bring_up(instances, "kms", hx._Timing(clock, clock.sleep), False, 1.0)
    assert str(failure.value) == (
        "switch of backend 'kms' failed: lb2: HAProxy rejected 'set server kms/dc2 state ready': "
        "Simulated failure.. Every instance was rolled back to its previous state."
    )
    assert failure.value.result == {"rolled_back": True, "rollback_errors": []}
    assert admin(lb1) == admin(lb2) == admin(lb3) == {"dc1": 0, "dc2": 1}
    assert instances[0].executed == ["set server kms/dc2 state ready", "rollback: set server kms/dc2 state maint"]
    assert instances[1].executed == ["set server kms/dc2 state ready"]  # touched: read back, nothing to restore
    assert instances[1].error.startswith("lb2: HAProxy rejected") and instances[0].error is None
    assert not instances[2].touched and len(lb3.log) == logged[2]  # never changed, so not contacted again
    assert lb2.log[logged[1] :] == [
        "set server kms/dc2 state ready",
        "show servers state kms",
        "show servers state kms",
    ]


def test_rollback_wrapper_lets_success_and_foreign_errors_through():
    lb1 = initial("lb1")
    instances = read_and_plan(lb1)
    result = {"rolled_back": False}
    with hx._rollback_on_failure(instances, "kms", False, result, lambda: result):
        hx._take_down(instances, "kms", False)
    assert result == {"rolled_back": False} and admin(lb1) == {"dc1": 1, "dc2": 1}
    with pytest.raises(KeyError):
        with hx._rollback_on_failure(instances, "kms", False, result, lambda: result):
            raise KeyError("not an HAProxy error")
    assert result == {"rolled_back": False} and admin(lb1) == {"dc1": 1, "dc2": 1}


def test_rollback_reports_each_instance_it_could_not_restore():
    lb1, lb2 = initial("lb1"), initial("lb2")
    instances = read_and_plan(lb1, lb2)
    for inst in instances:
        hx._apply(inst, inst.plan["up"])
    lb1.reachable = False
    errors = hx._rollback(instances, "kms", False)
    assert len(errors) == 1 and errors[0].startswith("lb1: cannot connect")
    assert admin(lb2) == {"dc1": 0, "dc2": 1}  # lb1's failure did not stop lb2's restore


def test_restore_only_puts_back_the_planned_servers_and_persists(tmp_path):
    lb1 = FakeRuntime("lb1", {"dc1": (0, 1), "dc2": (1, 1), "dc3": (1, 5)})
    inst = read_and_plan(lb1, state_files={"lb1": str(tmp_path / "lb1.state")})[0]
    hx._apply(inst, inst.plan["up"] + inst.plan["down"])
    lb1.servers["dc3"]["weight"] = 9  # changed by someone else meanwhile: not the switch's to restore
    hx._restore(inst, "kms", persist=True)
    assert admin(lb1) == {"dc1": 0, "dc2": 1, "dc3": 1} and lb1.servers["dc3"]["weight"] == 9
    assert inst.executed[-2:] == [
        "rollback: set server kms/dc1 state ready",
        "rollback: set server kms/dc2 state maint",
    ]
    assert hx.snapshot(inst.after, "kms", {"dc1", "dc2"}) == hx.snapshot(inst.before, "kms", {"dc1", "dc2"})
    assert "kms 3 dc3" in (tmp_path / "lb1.state").read_text()


def test_restore_raises_when_the_read_back_differs():
    lb1 = initial("lb1")
    inst = read_and_plan(lb1)[0]
    hx._apply(inst, inst.plan["up"])
    original = lb1.execute
    ignored = {"set server kms/dc2 state maint"}  # HAProxy accepts it, but the state does not change

    def ignores_maint(command):
        return "\n" if command in ignored else original(command)

    inst.client.execute = ignores_maint
    with pytest.raises(hx.HAProxyCommandError, match="lb1: read-back after rollback: dc2: state ready"):
        hx._restore(inst, "kms", persist=False)


def test_drain_records_the_timeout_and_the_wait_also_when_it_fails():
    lb1 = initial("lb1", sessions={"dc1": 2})
    instances = read_and_plan(lb1, drain=True)
    clock = FakeClock()
    timing = hx._Timing(clock, clock.sleep)
    result = {}
    with pytest.raises(hx.HAProxyError, match="sessions did not drain within 0.5s: lb1 kms/dc1 has 2 session"):
        hx._drain(instances, "kms", timing, result, True, 0.5, False)
    assert result == {"drain_timed_out": True} and timing.waited >= 0.5
    assert set_commands(lb1) == ["set server kms/dc1 state drain"]


def test_drain_timeout_with_shutdown_sessions_goes_on_to_take_down():
    lb1 = initial("lb1", sessions={"dc1": 2})
    instances = read_and_plan(lb1, drain=True)
    clock = FakeClock()
    result = {}
    hx._drain(instances, "kms", hx._Timing(clock, clock.sleep), result, True, 0.5, True)
    hx._take_down(instances, "kms", True)
    assert result == {"drain_timed_out": True} and lb1.sessions["dc1"] == 0
    assert set_commands(lb1) == [
        "set server kms/dc1 state drain",
        "set server kms/dc1 state maint",
        "shutdown sessions server kms/dc1",
    ]
    assert instances[0].executed == set_commands(lb1)


def test_drain_without_drain_steps_does_not_wait():
    lb1 = initial("lb1", sessions={"dc1": 2})
    instances = read_and_plan(lb1)  # no drain step planned
    clock = FakeClock()
    timing = hx._Timing(clock, clock.sleep)
    result = {}
    hx._drain(instances, "kms", timing, result, True, 0.5, False)
    assert result == {} and timing.waited == 0.0 and not set_commands(lb1)


def test_verify_names_the_instance_that_differs():
    lb1, lb2 = initial("lb1"), initial("lb2")
    instances = read_and_plan(lb1, lb2)
    for inst in instances:
        hx._apply(inst, inst.plan["up"] + inst.plan["down"])
    lb2.servers["dc1"]["admin"] = 8  # drain instead of maint
    with pytest.raises(
        hx.HAProxyCommandError,
        match=r"lb2: read-back does not match the request: dc1: state drain \(admin_state 8\), "
        "expected maint",
    ):
        hx._verify(instances, "kms", TO_DC2)
    assert instances[0].after[("kms", "dc1")].state == "maint"


def test_failover_quorum_switches_the_reached_instances_and_names_every_other():
    lb1, lb2, lb3 = initial("lb1"), initial("lb2", reachable=False), initial("lb3", reachable=False)
    result = run_switch([lb1, lb2, lb3], min_instances=1)
    assert result["changed"] and result["unreachable_instances"] == ["lb2", "lb3"]
    assert admin(lb1) == {"dc1": 1, "dc2": 0}
    assert [inst["reachable"] for inst in result["instances"]] == [True, False, False]


def test_failure_after_the_quorum_rolls_back_every_reached_instance():
    lb1, lb2 = initial("lb1"), initial("lb2", reachable=False)
    lb3 = initial("lb3", fail_on={"set server kms/dc1 state maint"})
    with pytest.raises(hx.SwitchError, match="lb3: HAProxy rejected.*Every instance was rolled back") as failure:
        run_switch([lb1, lb2, lb3], min_instances=1)
    assert admin(lb1) == admin(lb3) == {"dc1": 0, "dc2": 1}
    assert failure.value.result["rolled_back"] and failure.value.result["unreachable_instances"] == ["lb2"]
    assert [inst["error"] is not None for inst in failure.value.result["instances"]] == [False, True, True]
