"""hanzo.kms.cnpg_recovery_target: argument handling before the Kubernetes API is reached, and check_target's reads
(the ObjectStore and the Backups through a KubeReader) and refusals."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest

from ansible_collections.hanzo.kms.plugins.module_utils.site_status import NotFound
from ansible_collections.hanzo.kms.plugins.modules import cnpg_recovery_target as module

ARGS = {"object_store": "kms-pg-dc1-store", "server_name": "kms-pg-dc1", "target_lsn": "0/9000000"}
STORE = {"spec": {"configuration": {"destinationPath": "s3://kms-backups/cnpg/dc1/"}}, "status": {}}
BACKUP = {
    "metadata": {"name": "b1"},
    "spec": {"cluster": {"name": "kms-pg-dc1"}},
    "status": {"phase": "completed", "backupId": "B1", "stoppedAt": "2026-12-04T15:00:00Z", "endLSN": "0/5000100"},
}


@pytest.fixture
def work(collaborators):
    return collaborators(
        module,
        missing=MagicMock(return_value=None),
        api_client=MagicMock(return_value="kube-client"),
        KubeReader=MagicMock(return_value="kube-reader"),
        check_target=MagicMock(return_value={"recovery_target": {"targetLSN": "0/9000000"}}),
    )


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(object_store=None), "missing required arguments: object_store"),
        (dict(target_lsn=None), "one of the following is required: target_time, target_lsn, target_name"),
        (dict(target_name="x"), "parameters are mutually exclusive: target_time|target_lsn|target_name"),
        (dict(request_timeout=0), "request_timeout must be greater than 0, got 0"),
    ],
)
def test_bad_arguments_fail_naming_the_problem_before_anything_is_read(run_module, args_with, work, changes, message):
    run_module.refused(module, args_with(**changes), message)
    work.assert_untouched()


def test_the_module_returns_the_checked_target_unchanged(run_module, work):
    failed, result = run_module(module, ARGS, check_mode=True)
    assert not failed and result == {"changed": False, "recovery_target": {"targetLSN": "0/9000000"}}
    work.KubeReader.assert_called_once_with("kube-client", 10)


def test_a_refused_target_fails_the_module_with_why(run_module, work):
    work.check_target.side_effect = module.RecoveryTargetError("target LSN x is not of the form X/Y")
    run_module.refused(module, ARGS, "cnpg_recovery_target: target LSN x is not of the form X/Y")


def params(**changes):
    base = dict(namespace="kms", target_time=None, target_lsn=None, target_name=None, backup_id=None, exclusive=False)
    return {**base, **ARGS, **changes}


def test_check_target_reads_the_store_and_the_backups():
    reader = MagicMock()
    reader.object_store.return_value = STORE
    reader.backups.return_value = [BACKUP]
    result = module.check_target(reader, params(target_lsn=None, target_name="before-x"))
    reader.object_store.assert_called_once_with("kms", "kms-pg-dc1-store")
    assert result["recovery_target"] == {"targetName": "before-x", "backupID": "B1"}
    assert result["destination_path"] == "s3://kms-backups/cnpg/dc1/"
    assert result["window"]["first_recoverability_point"] == "2026-12-04T15:00:00Z"
    assert result["window"]["first_recoverability_point_from"] == "Backups"


def test_check_target_names_a_missing_store_or_an_unreadable_backup_list():
    reader = MagicMock()
    reader.object_store.side_effect = NotFound("not found")
    with pytest.raises(module.RecoveryTargetError, match="ObjectStore kms/kms-pg-dc1-store not found"):
        module.check_target(reader, params())
    reader.object_store.side_effect = None
    reader.object_store.return_value = STORE
    reader.backups.side_effect = RuntimeError("boom")
    with pytest.raises(module.RecoveryTargetError, match="cannot list the Backups in kms: boom"):
        module.check_target(reader, params())
