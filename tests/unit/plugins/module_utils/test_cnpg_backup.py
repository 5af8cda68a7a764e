"""module_utils/cnpg_backup.py: the Cluster's spec.backup.volumeSnapshot, Backup/ScheduledBackup specs by method, the
VolumeSnapshots a Cluster recovers from, and (cnpg_recovery.recovered_cluster) the Cluster recovered from them; every
object checked against CNPG 1.30's own CRD schemas (the lab's cache of make k8s-bins), fields as strictly as the
API server's strict field validation (an unknown field is an error)."""

from __future__ import annotations

import jsonschema
import pytest

from ansible_collections.hanzo.kms.plugins.module_utils import cnpg_backup as cb
from ansible_collections.hanzo.kms.plugins.module_utils import cnpg_recovery as cr
from tests.crd_schema import assert_cnpg_valid


def assert_valid(plural, obj):
    assert_cnpg_valid(plural, obj)


def cnpg_object(kind, spec, name="x"):
    return {"apiVersion": "postgresql.cnpg.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def test_no_class_means_no_snapshot_backups():
    assert cb.volume_snapshot_config("") is None
    with pytest.raises(cb.BackupConfigError, match="needs one for the data volume"):
        cb.volume_snapshot_config("", wal_class_name="wal-snap")


def test_the_cluster_snapshot_section_is_what_the_cluster_crd_accepts():
    hot = cb.volume_snapshot_config("csi-snap", "csi-wal-snap", immediate_checkpoint=True, owner_reference="backup")
    assert hot == {
        "className": "csi-snap",
        "walClassName": "csi-wal-snap",
        "online": True,
        "onlineConfiguration": {"immediateCheckpoint": True, "waitForArchive": True},
        "snapshotOwnerReference": "backup",
    }
    cold = cb.volume_snapshot_config("csi-snap", online=False)
    assert cold == {"className": "csi-snap", "online": False, "snapshotOwnerReference": "none"}
    for config in (hot, cold):
        assert_valid(
            "clusters",
            cnpg_object("Cluster", {"instances": 1, "storage": {"size": "1Gi"}, "backup": {"volumeSnapshot": config}}),
        )
    with pytest.raises(cb.BackupConfigError, match="owner reference 'self'"):
        cb.volume_snapshot_config("csi-snap", owner_reference="self")


def test_backup_specs_by_method_are_what_the_backup_and_scheduledbackup_crds_accept():
    plugin = cb.backup_spec("kms-pg-dc1")
    assert plugin == {
        "cluster": {"name": "kms-pg-dc1"},
        "method": "plugin",
        "pluginConfiguration": {"name": "barman-cloud.cloudnative-pg.io"},
    }
    snapshot = cb.backup_spec(
        "kms-pg-dc1", "volumeSnapshot", target="primary", online=False, snapshots={"className": "c"}
    )
    assert snapshot == {
        "cluster": {"name": "kms-pg-dc1"},
        "method": "volumeSnapshot",
        "online": False,
        "target": "primary",
    }
    assert "online" not in cb.backup_spec("kms-pg-dc1", "volumeSnapshot")
    for spec in (plugin, snapshot):
        assert_valid("backups", cnpg_object("Backup", spec))
        assert_valid(
            "scheduledbackups",
            cnpg_object("ScheduledBackup", {"schedule": "0 0 2 * * *", "backupOwnerReference": "self", **spec}),
        )


def test_backup_specs_refuse_what_cnpg_would_refuse_or_fail_later():
    with pytest.raises(cb.BackupConfigError, match="'barmanObjectStore' is not one of plugin, volumeSnapshot"):
        cb.backup_spec("c", "barmanObjectStore")
    with pytest.raises(cb.BackupConfigError, match="volumeSnapshot backups only"):
        cb.backup_spec("c", "plugin", online=True)
    with pytest.raises(cb.BackupConfigError, match="Cluster c has no spec.backup.volumeSnapshot.className"):
        cb.backup_spec("c", "volumeSnapshot", snapshots={})
    with pytest.raises(cb.BackupConfigError, match="needs the name of its Cluster"):
        cb.backup_spec("")


def snapshot_backup(phase="completed", elements=None, method="volumeSnapshot"):
    if elements is None:
        elements = [
            {"name": "kms-pg-dc1-snap-1", "type": "PG_DATA"},
            {"name": "kms-pg-dc1-snap-1-wal", "type": "PG_WAL"},
        ]
    return {
        "metadata": {"name": "snap-1", "namespace": "kms"},
        "spec": {"cluster": {"name": "kms-pg-dc1"}, "method": method},
        "status": {"phase": phase, "method": method, "snapshotBackupStatus": {"elements": elements}},
    }


def test_the_snapshots_of_a_completed_snapshot_backup_are_the_recovery_sources():
    ref = {"kind": "VolumeSnapshot", "apiGroup": "snapshot.storage.k8s.io"}
    assert cb.snapshot_sources(snapshot_backup()) == {
        "storage": {"name": "kms-pg-dc1-snap-1", **ref},
        "walStorage": {"name": "kms-pg-dc1-snap-1-wal", **ref},
    }
    tablespace = {"name": "ts", "type": "PG_TABLESPACE", "tablespaceName": "hot"}
    sources = cb.snapshot_sources(snapshot_backup(elements=[{"name": "d", "type": "PG_DATA"}, tablespace]))
    assert sources == {"storage": {"name": "d", **ref}, "tablespaceStorage": {"hot": {"name": "ts", **ref}}}


@pytest.mark.parametrize(
    ("backup", "message"),
    [
        (snapshot_backup(method="plugin"), "Backup snap-1 is of method plugin, not volumeSnapshot"),
        (snapshot_backup(phase="running"), "Backup snap-1 is not completed \\(phase running\\)"),
        (snapshot_backup(elements=[{"name": "w", "type": "PG_WAL"}]), "lists no PG_DATA VolumeSnapshot"),
    ],
)
def test_only_a_completed_snapshot_backup_with_a_data_snapshot_is_a_recovery_source(backup, message):
    with pytest.raises(cb.BackupConfigError, match=message):
        cb.snapshot_sources(backup)


def test_the_cluster_recovered_from_snapshots_keeps_the_archive_for_the_wal_and_is_what_the_crd_accepts():
    sources = cb.snapshot_sources(snapshot_backup())
    manifest = cr.recovered_cluster(
        "kms-pg-snap",
        "kms",
        "kms-pg-dc1",
        {"hanzo.kms/restore-test": "true"},
        storage={"size": "1Gi", "storageClass": "lab-hostpath"},
        recovery_target_spec={"targetName": "before-upgrade", "backupID": "20261204T150000"},
        volume_snapshots=sources,
        wal_storage={"size": "512Mi", "storageClass": ""},
    )
    recovery = manifest["spec"]["bootstrap"]["recovery"]
    assert recovery["volumeSnapshots"] == sources
    assert recovery["source"] == "kms-pg-dc1"  # the WAL after the snapshot comes from the archive
    assert recovery["recoveryTarget"] == {"targetName": "before-upgrade"}  # CNPG refuses a backupID with snapshots
    assert manifest["spec"]["walStorage"] == {"size": "512Mi"}
    assert manifest["spec"]["externalClusters"][0]["name"] == "kms-pg-dc1"
    assert "plugins" not in manifest["spec"]
    assert_valid("clusters", manifest)
    without_wal = cr.recovered_cluster(
        "r", "kms", "kms-pg-dc1", {}, volume_snapshots={"storage": sources["storage"]}, wal_storage={"size": "1Gi"}
    )
    assert "walStorage" not in without_wal["spec"]
    assert_valid("clusters", without_wal)


def test_a_wal_snapshot_needs_a_wal_volume_size():
    with pytest.raises(cb.BackupConfigError, match="needs a WAL volume size"):
        cr.recovered_cluster("r", "kms", "kms-pg-dc1", {}, volume_snapshots=cb.snapshot_sources(snapshot_backup()))


def test_the_strict_schema_refuses_an_unknown_field():
    """The check above can fail: a misspelt field is refused as the API server's strict validation refuses it."""
    spec = {"instances": 1, "backup": {"volumeSnapshot": {"classname": "csi-snap"}}}
    with pytest.raises(jsonschema.ValidationError, match="'classname' was unexpected"):
        assert_valid("clusters", cnpg_object("Cluster", spec))
