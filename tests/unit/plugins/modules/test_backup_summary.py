"""hanzo.kms.backup_summary: argument handling (the sites' declared suboptions), check mode, never changed."""

from __future__ import annotations

import pytest

from ansible_collections.hanzo.kms.plugins.modules import backup_summary as module

SITE = {
    "site": "dc1",
    "cluster": "kms-pg-dc1",
    "cluster_exists": "true",
    "kube_reachable": True,
    "redis_port": "6380",
    "redis_host": "10.0.0.5",
    "redis_probe": {"changed": False},
}
ARGS = {"sites": [SITE], "primary_cluster": "kms-pg-dc1"}


@pytest.mark.parametrize(
    "args, message",
    [
        ({"sites": [SITE]}, "missing required arguments: primary_cluster"),
        (dict(ARGS, sites=[{"site": "dc1"}]), "missing required arguments: cluster found in sites"),
        (dict(ARGS, sites=[dict(SITE, redis_port="six")]), "argument 'redis_port' is of type str found in 'sites'"),
        (
            dict(ARGS, sites=[dict(SITE, cnpg_backups="kms-pg-dc1-1")]),
            "Elements value for option 'cnpg_backups' found in 'sites' is of type str",
        ),
        (
            dict(ARGS, sites=[dict(SITE, keys=3)]),
            "Unsupported parameters for (hanzo.kms.backup_summary) module: sites.keys.",
        ),
        (
            dict(ARGS, redis_enabled="perhaps"),
            "argument 'redis_enabled' is of type str and we were unable to convert to bool",
        ),
    ],
)
def test_bad_arguments_fail_naming_the_problem(run_module, args, message):
    failed, result = run_module(module, args)
    assert failed and message in result["msg"], result


@pytest.mark.parametrize("check_mode", [False, True])
def test_types_and_defaults_reach_the_summary(run_module, check_mode):
    failed, result = run_module(module, ARGS, check_mode=check_mode)
    assert not failed and result["changed"] is False, result
    report = result["report"]
    assert report["check_mode"] is check_mode and report["retention"] == {
        "ok": True,
        "message": "",
        "enabled": False,
        "newest": {},
        "listed": {"backups": 0, "incomplete": 0, "unrecognised": 0},
    }
    entry = report["sites"][0]
    assert (entry["cluster_exists"], entry["redis_endpoint"], entry["redis_reachable"], entry["cnpg_backup"]) == (
        True,
        "10.0.0.5:6380",
        True,
        {},
    )
    assert result["problems"] == [] and result["message"] == "Backups done."
    params = run_module.instance.params
    assert (params["cnpg_enabled"], params["redis_enabled"], params["retention"], params["listing"]) == (
        True,
        True,
        {},
        {},
    )
