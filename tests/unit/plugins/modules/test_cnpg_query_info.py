"""hanzo.kms.cnpg_query_info: argument handling, checked before the Kubernetes API or PostgreSQL is reached, and
what it passes to module_utils/cnpg_sql.py."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils.cnpg_sql import SqlError
from ansible_collections.hanzo.kms.plugins.modules import cnpg_query_info as module

ARGS = {"cluster_name": "kms-pg-restore-test", "kubeconfig": "/etc/kms/dc1.kubeconfig"}
RESULT = {"pod": "kms-pg-restore-test-1", "tls_name": "x", "user": "postgres", "database": "kms", "tables": {}}


@pytest.fixture
def work(collaborators):
    return collaborators(
        module,
        missing=MagicMock(return_value=None),
        api_client=MagicMock(return_value="kube-client"),
        KubeReader=MagicMock(return_value="kube-reader"),
        query_info=MagicMock(return_value=dict(RESULT)),
    )


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(cluster_name=None), "missing required arguments: cluster_name"),
        (dict(credentials="root"), "value of credentials must be one of: auto, superuser, app, got: root"),
        (
            dict(read=["rows"]),
            "value of read must be one or more of: row_counts, replication, recovery. Got no match for: rows",
        ),
        (dict(read=[]), "read must name at least one of row_counts, replication, recovery"),
        (dict(request_timeout=0), "request_timeout must be greater than 0, got 0"),
    ],
)
def test_bad_arguments_fail_naming_the_problem_before_anything_is_read(run_module, args_with, work, changes, message):
    run_module.refused(module, args_with(**changes), message)
    work.assert_untouched()


def test_the_defaults_count_rows_in_postgres_with_the_login_cnpg_chooses(run_module, work):
    failed, result = run_module(module, ARGS, check_mode=True)
    assert not failed and result == dict(RESULT, changed=False), result
    work.KubeReader.assert_called_once_with("kube-client", 10)
    _api, reader, params = work.query_info.call_args.args
    assert reader == "kube-reader"
    assert {k: params[k] for k in ("namespace", "database", "credentials", "read")} == {
        "namespace": "kms",
        "database": "postgres",
        "credentials": "auto",
        "read": ["row_counts"],
    }


def test_a_sql_error_fails_the_module_with_its_message(run_module, work):
    work.query_info.side_effect = SqlError("authentication failed at kms/kms-pg-dc1-1 (x) as kms: ...")
    run_module.refused(module, ARGS, "cnpg_query_info: authentication failed at kms/kms-pg-dc1-1")


def test_the_kubernetes_credentials_are_no_log_and_the_choice_of_login_is_not(module_kwargs, unprotected_secrets):
    spec = module_kwargs(module)["argument_spec"]
    not_secret = {"credentials": "which of the Cluster's Secrets to log in with (auto, superuser, app), not a secret"}
    assert not unprotected_secrets(spec, not_secret=not_secret)
    assert all(spec[name]["no_log"] for name in ("kubeconfig", "api_key", "password"))
