# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The verdict of a Redis restore test: the keys restored into the scratch Redis against the backup's manifest, and
the record the restore test report keeps (role hanzo.kms.redis_restore_test, filter redis_restore_test_result)."""

from __future__ import annotations

COUNTS_FROM_MANIFEST = "manifest"
COUNTS_FROM_RDB = "rdb (the manifest has no key counts)"


def _db_order(db):
    return (0, int(db), "") if db.isdigit() else (1, 0, db)


def compare_counts(expected, restored, expired):
    """Per db (``{db: count}`` each): the keys in the scratch Redis plus the keys whose TTL passed since the backup
    must equal the backup's count. ``[{db, manifest, restored, expired, match, text}]`` in db order."""
    expected, restored, expired = (
        {str(db): int(count) for db, count in (counts or {}).items()} for counts in (expected, restored, expired)
    )
    rows = []
    for db in sorted(set(expected) | set(restored), key=_db_order):
        want, got, gone = expected.get(db, 0), restored.get(db, 0), expired.get(db, 0)
        rows.append(
            {
                "db": db,
                "manifest": want,
                "restored": got,
                "expired": gone,
                "match": got + gone == want,
                "text": f"db{db}: manifest {want}, restored {got}, expired {gone}",
            }
        )
    return rows


def _target_text(mode, target):
    target = target or {}
    if not target.get("host"):
        return mode
    return f"{mode} {target['host']}:{target.get('port', '')}"


def restore_test_record(backup, restored=None, mode="local", target=None, check_mode=False):
    """The record of a restore test of ``backup`` (an entry of hanzo.kms.s3_backup_info) restored with the result
    ``restored`` of hanzo.kms.redis_rdb_restore into ``target`` ({host, port}) in ``mode`` (local/external)."""
    restored = restored or {}
    manifest = backup.get("manifest") or {}
    per_db = manifest.get("keys_per_db")
    from_manifest = isinstance(per_db, dict)
    # CronJob backups of older versions have no key counts: then the counts read from the RDB itself are used.
    expected = per_db if from_manifest else restored.get("backup_keys_per_db") or {}
    counts = (
        [] if check_mode else compare_counts(expected, restored.get("target_keys_after"), restored.get("keys_expired"))
    )
    differ = [row["text"] for row in counts if not row["match"]]
    if check_mode:
        message = f"check mode: would restore {backup['prefix']}"
    elif differ:
        message = "key counts differ from the manifest: " + "; ".join(differ)
    else:
        message = "key counts match the manifest"
    return {
        "ok": check_mode or not differ,
        "tested": not check_mode,
        "message": message,
        "backup": backup["prefix"],
        "backup_time": backup.get("time", ""),
        "backup_age_seconds": backup.get("age_seconds"),
        "counts_from": COUNTS_FROM_MANIFEST if from_manifest else COUNTS_FROM_RDB,
        "manifest_keys": manifest.get("keys"),
        "counts": counts,
        "target": _target_text(mode, target),
        "target_version": restored.get("target_version", ""),
        "rdb_version": restored.get("rdb_version", ""),
        "sha256": restored.get("sha256", ""),
        "duration": restored.get("duration", 0),
    }


def failed_record(message, backup=None, mode="local", target=None):
    """The record of a restore test that stopped with ``message`` (no backup, a refused target, a failed restore)."""
    return {
        "ok": False,
        "tested": True,
        "message": message or "failed",
        "backup": (backup or {}).get("prefix", ""),
        "target": _target_text(mode, target),
    }
