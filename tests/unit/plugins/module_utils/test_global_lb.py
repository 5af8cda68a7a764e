"""The global load balancer's server entries (issue 16): built from a site's variables, checked before rendering."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.hanzo.kms.plugins.filter.global_lb import FilterModule
from ansible_collections.hanzo.kms.plugins.module_utils.global_lb import (
    ServerError,
    runtime_api_instance,
    servers,
    site_server,
    switch_quorum,
)

SITE = {
    "site_name": "dc1",
    "site_role": "active",
    "site_ingress_host": "kms-dc1.example.net",
    "site_ingress_address": "10.10.0.10",
    "site_ingress_port": "443",
    "site_ingress_tls": True,
    "site_ingress_ca_file": "/etc/haproxy/ca/dc1.pem",
}
ENTRY = {"name": "dc1", "address": "10.10.0.10", "port": 443, "tls": True, "ca_file": "/etc/haproxy/ca/dc1.pem"}


def test_a_site_becomes_a_verified_server_and_a_passive_one_starts_in_maintenance():
    assert site_server(SITE) == {
        "name": "dc1",
        "address": "10.10.0.10",
        "port": 443,
        "tls": True,
        "ca_file": "/etc/haproxy/ca/dc1.pem",
        "initial_state": "ready",
    }
    passive = site_server(dict(SITE, site_name="dc2", site_role="passive", site_ingress_address=""))
    assert passive["initial_state"] == "maint" and passive["address"] == "kms-dc1.example.net"
    # after a failover the decided role wins over the inventory's stale one
    assert site_server(dict(SITE, site_role_now="passive"))["initial_state"] == "maint"
    assert site_server(dict(SITE, site_role="passive", site_role_now="active"))["initial_state"] == "ready"


def test_plain_http_sites_need_no_ca_and_default_to_port_80():
    plain = {
        "site_name": "dc1",
        "site_role": "active",
        "site_ingress_host": "kms-dc1.lab.internal",
        "site_ingress_tls": "false",
    }
    assert site_server(plain) == {
        "name": "dc1",
        "address": "kms-dc1.lab.internal",
        "port": 80,
        "tls": False,
        "ca_file": "",
        "initial_state": "ready",
    }
    assert site_server(dict(plain, site_ingress_ca_file="/ignored.pem"))["ca_file"] == ""


@pytest.mark.parametrize("missing", [{"site_ingress_ca_file": ""}, {"site_ingress_ca_file": None}])
def test_a_tls_site_without_a_ca_is_refused_naming_the_variable(missing):
    site = dict(SITE, **missing)
    del site["site_ingress_tls"]  # TLS is the default
    with pytest.raises(ServerError, match=r"^site dc1: site_ingress_tls is true but site_ingress_ca_file is not set"):
        site_server(site)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"site_name": ""}, "site_name is required"),
        ({"site_ingress_host": "", "site_ingress_address": ""}, "site_ingress_host"),
        ({"site_ingress_port": "https"}, "site_ingress_port must be a TCP port"),
        ({"site_ingress_tls": "maybe"}, "site_ingress_tls must be true or false"),
    ],
)
def test_incomplete_site_variables_are_refused(change, message):
    with pytest.raises(ServerError, match=message):
        site_server(dict(SITE, **change))


def test_entries_are_completed_and_typed():
    passive = {"name": "dc2", "address": "10.20.0.10", "port": 80, "initial_state": "maint", "backup": "yes"}
    assert servers([dict(ENTRY, port="8443"), passive], "kms.example.net") == [
        {
            "name": "dc1",
            "address": "10.10.0.10",
            "port": 8443,
            "tls": True,
            "ca_file": "/etc/haproxy/ca/dc1.pem",
            "backup": False,
            "initial_state": "ready",
        },
        {
            "name": "dc2",
            "address": "10.20.0.10",
            "port": 80,
            "tls": False,
            "ca_file": "",
            "backup": True,
            "initial_state": "maint",
        },
    ]
    assert servers([dict(ENTRY, tls=False)]) == [
        dict(ENTRY, tls=False, ca_file="", backup=False, initial_state="ready")
    ]


@pytest.mark.parametrize(
    "entries, public_host, message",
    [
        (
            [dict(ENTRY, ca_file="")],
            "kms.example.net",
            r"global_lb_sites\[0\] \(dc1\): tls is true but ca_file is empty",
        ),
        ([ENTRY], "", "tls is true but global_lb_public_host is empty"),
        (
            [dict(ENTRY, verify="none")],
            "kms.example.net",
            "'verify' is no longer supported: TLS to a site is always verified",
        ),
        ([dict(ENTRY, sni="kms-dc1.example.net")], "kms.example.net", "'sni' is no longer supported"),
        ([dict(ENTRY, weight=10)], "kms.example.net", "unknown key 'weight'"),
        ([dict(ENTRY, name="dc1;set server kms/dc2 state maint")], "kms.example.net", "invalid HAProxy server name"),
        ([dict(ENTRY, address="")], "kms.example.net", "address must be a host name"),
        ([dict(ENTRY, port=0)], "kms.example.net", "port must be a TCP port"),
        ([dict(ENTRY, initial_state="drain")], "kms.example.net", "initial_state must be one of ready, maint"),
        ([ENTRY, ENTRY], "kms.example.net", "server names must be unique, repeated: dc1"),
        ([ENTRY], "127.0.0.1", "is not a DNS name"),
        ([ENTRY], "kms.example.net\n    server x", "is not a DNS name"),
        ("dc1", "kms.example.net", "must be a list"),
    ],
)
def test_unusable_entries_are_refused(entries, public_host, message):
    with pytest.raises(ServerError, match=message):
        servers(entries, public_host)


def test_the_filters_raise_ansible_errors():
    filters = FilterModule().filters()
    assert filters["global_lb_site_server"](SITE)["tls"] is True
    assert filters["global_lb_servers"]([ENTRY], "kms.example.net")[0]["ca_file"] == ENTRY["ca_file"]
    with pytest.raises(AnsibleFilterError, match="site_ingress_ca_file"):
        filters["global_lb_site_server"](dict(SITE, site_ingress_ca_file=""))
    with pytest.raises(AnsibleFilterError, match="ca_file is empty"):
        filters["global_lb_servers"]([dict(ENTRY, ca_file="")], "kms.example.net")


# -- the site switch across every LB host ---------------------------------------------------------------------------
TLS_FILES = ("/etc/kms/lb-ca.pem", "/etc/kms/ctl.crt", "/etc/kms/ctl.key")


def test_an_lb_host_is_reached_at_its_runtime_api_over_tls():
    host = {"inventory_hostname": "lb1", "global_lb_admin_tls_address": "10.0.1.10:9443", "other": "ignored"}
    assert runtime_api_instance(host, *TLS_FILES) == {
        "name": "lb1",
        "address": "10.0.1.10:9443",
        "ca_file": "/etc/kms/lb-ca.pem",
        "client_cert": "/etc/kms/ctl.crt",
        "client_key": "/etc/kms/ctl.key",
    }


def test_an_lb_host_without_a_tls_runtime_api_is_refused_naming_host_and_variable():
    with pytest.raises(ServerError, match=r"LB host lb2: global_lb_admin_tls_address is not set.*Nothing was changed"):
        runtime_api_instance({"inventory_hostname": "lb2", "global_lb_admin_address": "10.0.2.10:9999"}, *TLS_FILES)


@pytest.mark.parametrize("missing", range(3))
def test_the_control_nodes_tls_files_are_required(missing):
    files = list(TLS_FILES)
    files[missing] = ""
    with pytest.raises(ServerError, match="kms_lb_runtime_api_ca_file, kms_lb_runtime_api_client_cert and"):
        runtime_api_instance({"inventory_hostname": "lb1", "global_lb_admin_tls_address": "lb1:9443"}, *files)


@pytest.mark.parametrize(
    ("mode", "count", "quorum", "expected"),
    [
        ("switchover", 2, 1, 2),  # both data centers up: every load balancer
        ("failover", 2, 1, 1),  # the lost data center's load balancer may be unreachable
        ("failover", 3, "2", 2),
        ("failover", 0, 1, 0),  # no load balancer in the inventory
        ("switchover", 0, 1, 0),
    ],
)
def test_the_switch_quorum(mode, count, quorum, expected):
    assert switch_quorum([{}] * count, mode, quorum) == expected


@pytest.mark.parametrize(
    ("mode", "quorum", "message"),
    [
        ("failover", 0, "between 1 and the number of LB hosts"),
        ("failover", 3, "between 1 and the number of LB hosts"),
        ("failover", "one", "between 1 and the number of LB hosts"),
        ("failback", 1, "mode must be one of switchover, failover"),
    ],
)
def test_a_quorum_that_cannot_be_met_or_an_unknown_mode_is_refused(mode, quorum, message):
    with pytest.raises(ServerError, match=message):
        switch_quorum([{}, {}], mode, quorum)


def test_the_filters_raise_ansible_errors():
    filters = FilterModule().filters()
    with pytest.raises(AnsibleFilterError, match="global_lb_admin_tls_address is not set"):
        filters["global_lb_runtime_api"]({"inventory_hostname": "lb1"}, *TLS_FILES)
    with pytest.raises(AnsibleFilterError, match="site_switch_lb_quorum"):
        filters["global_lb_switch_quorum"]([{}], "failover", 2)
    assert filters["global_lb_switch_quorum"]([{}, {}], "switchover") == 2
