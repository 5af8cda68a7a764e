"""Issue 14 item 6: names sent to HAProxy's Runtime API are validated (no command injection).

HAProxy's CLI runs several commands given on one line separated by ``;`` (and one per line), so a backend name such
as ``kms;set server kms/dc1 state maint`` used to make the read-only ``hanzo.kms.haproxy_info`` switch traffic. Both
modules must refuse such names with a clear error before anything is sent, and the server states must not change.
Runs the real modules against a real HAProxy 2.6 pair (tests/integration/haproxy_pair.py, the global_lb role's
configuration).
"""

from __future__ import annotations

import shutil

import pytest

from tests.ansible_run import run_module
from tests.integration.haproxy_pair import BACKEND, fixture_pair, get  # noqa: F401  pylint: disable=unused-import
from tests.integration.test_haproxy_backend import SITES, admin_states, module_instances
from tests.lab.core import wait_until

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="haproxy is not installed (apt-get install haproxy)"
)

INJECTIONS = [
    f"{BACKEND};set server {BACKEND}/dc1 state maint",
    f"{BACKEND}\nset server {BACKEND}/dc1 state maint",
    f"{BACKEND} ; set server {BACKEND}/dc1 state maint",
]


def run(module, args):
    """Run ``module`` for real (ad-hoc on localhost); return its result dict."""
    return run_module(module, args, timeout=120).result()


@pytest.fixture()
def lbs(pair):
    """dc1 ready and serving, dc2 in maintenance, on every instance."""
    for inst in pair.instances:
        for command in (f"set server {BACKEND}/dc1 state ready", f"set server {BACKEND}/dc2 state maint"):
            assert inst.command(command).strip() == ""
    for inst in pair.instances:
        wait_until(lambda inst=inst: get(inst.frontend_url) == (200, "dc1"), 10, f"{inst.name} to serve dc1")
    return pair


def info_instances(pair):
    return [{"name": inst.name, "socket": inst.socket} for inst in pair.instances]


def unchanged(pair):
    assert admin_states(pair) == {inst.name: {"dc1": "ready", "dc2": "maint"} for inst in pair.instances}
    assert {get(inst.frontend_url)[1] for inst in pair.instances} == {"dc1"}


@pytest.mark.parametrize("backend", INJECTIONS, ids=["semicolon", "newline", "spaces"])
def test_haproxy_info_refuses_injected_backend(lbs, backend):
    result = run("hanzo.kms.haproxy_info", {"backend": backend, "instances": info_instances(lbs)})
    unchanged(lbs)  # before the fix, the injected command had put dc1 in maintenance on every instance
    assert result.get("failed") is True, result
    assert "invalid HAProxy backend name" in result["msg"] and "nothing was sent" in result["msg"], result["msg"]


@pytest.mark.parametrize("backend", INJECTIONS, ids=["semicolon", "newline", "spaces"])
def test_haproxy_backend_refuses_injected_backend(lbs, backend):
    result = run(
        "hanzo.kms.haproxy_backend",
        {"backend": backend, "active_site": "dc1", "sites": SITES, "instances": module_instances(lbs)},
    )
    unchanged(lbs)
    assert result.get("failed") is True, result
    assert "invalid HAProxy backend name" in result["msg"] and "nothing was sent" in result["msg"], result["msg"]


@pytest.mark.parametrize("server", ["dc1;set server kms/dc1 state maint", "dc1\nshow info", "dc 1"])
def test_haproxy_backend_refuses_injected_server(lbs, server):
    by_site = run(
        "hanzo.kms.haproxy_backend",
        {
            "backend": BACKEND,
            "active_site": "dc2",
            "sites": {"dc1": [server], "dc2": ["dc2"]},
            "instances": module_instances(lbs),
        },
    )
    explicit = run(
        "hanzo.kms.haproxy_backend",
        {"backend": BACKEND, "servers": [{"name": server, "state": "maint"}], "instances": module_instances(lbs)},
    )
    unchanged(lbs)
    for result in (by_site, explicit):
        assert result.get("failed") is True, result
        assert "invalid HAProxy server name" in result["msg"] and "nothing was sent" in result["msg"], result["msg"]


def test_valid_names_still_work(lbs):
    """HAProxy's own name characters (letters, digits, - _ . :) pass; the real backend is read as before."""
    info = run("hanzo.kms.haproxy_info", {"backend": BACKEND, "instances": info_instances(lbs)})
    assert not info.get("failed"), info
    assert info["serving"] == ["dc1"]
    missing = run("hanzo.kms.haproxy_info", {"backend": "be_other-1.a:b", "instances": info_instances(lbs)})
    assert not missing.get("failed"), missing
    assert missing["serving"] == [] and "Can't find backend" in missing["instances"][0]["error"]
    unchanged(lbs)
