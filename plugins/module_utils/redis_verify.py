# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The structure check a backup records in its manifest, and whether a restore may rely on it.

``redis_rdb_backup`` runs the RDB structure pass while the RDB streams (``StreamValidator``) and records what it
checked in the manifest's ``verified`` object. At restore, the SHA-256 and size of the bytes matching the manifest
(and the CRC64 trailer matching both the data and the manifest) tie those bytes to the recorded check, so re-running
the same pass proves nothing more: it is skipped. A manifest without the object, or one recording fewer checks or an
older validator than the restore would run, gets the full pass. Plain Python, importable without Ansible.
"""

from __future__ import annotations

from ansible_collections.hanzo.kms.plugins.module_utils import redis_rdb

VERIFIED_FORMAT = 1
VALIDATOR_NAME = "hanzo.kms.redis_rdb"
# Bumped whenever the structure pass checks more. 1: framing of every record (opcodes, lengths, encodings, key and
# value extents, EOF opcode, nothing after the trailer) and the CRC64 trailer. 2: also every value, as Redis's loader
# does with sanitize-dump-payload yes (``redis_rdb.check_value``: LZF in place, listpack/ziplist/intset/zipmap/quicklist
# integrity, duplicates, NaN scores, empty keys, stream consistency).
VALIDATOR_VERSION = 2


def pass_checks():
    """The checks the restore's own structure pass makes (what a recorded check must cover to replace it)."""
    return ("crc64", "framing", "values")


def record_check(summary, validator):
    """The manifest's ``verified`` object for a backup whose stream went through ``validator``; None when the
    structure pass did not cover the whole RDB (it gives up on a single record larger than its bound)."""
    if not (validator.structure and validator.structure_complete):
        return None
    checks = ["framing"]
    if getattr(validator.parser, "validate", False):
        checks.append("values")
    if summary.checksum_stored:
        checks.append("crc64")  # a zero trailer (rdbchecksum no) has nothing to check
    return {
        "format": VERIFIED_FORMAT,
        "validator": VALIDATOR_NAME,
        "validator_version": VALIDATOR_VERSION,
        "checks": sorted(checks),
        "rdb_version": summary.version,
        "size": summary.size,
        "crc64": None if summary.checksum_stored is None else f"{summary.checksum_stored:016x}",
        "keys": sum(summary.keys_per_db.values()),
        "keys_per_db": {str(k): v for k, v in sorted(summary.keys_per_db.items())},
        "expires_per_db": {str(k): v for k, v in sorted(summary.expires_per_db.items())},
        "functions": len(summary.functions),
        "module_keys": summary.module_keys,
        "module_aux": summary.module_aux,
    }


def _int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def manifest_replaces_pass(manifest, required=None, validator_version=None):
    """Can the check recorded in ``manifest`` replace the restore's structure pass?

    Returns ``(True, reason)`` or ``(False, reason)``. Pure: looks only at the manifest. The caller still has to prove
    that the bytes are the ones the manifest describes (SHA-256, size, CRC64), before the target loads them.
    ``required`` (the checks the restore would run) and ``validator_version`` default to this code's.
    """
    required = set(pass_checks() if required is None else required)
    validator_version = VALIDATOR_VERSION if validator_version is None else validator_version
    if not isinstance(manifest, dict):
        return False, "no manifest"
    verified = manifest.get("verified")
    if verified is None:
        return False, "the manifest records no structure check (a backup made before it was recorded)"
    if not isinstance(verified, dict):
        return False, "the manifest's verified entry is not an object"
    if verified.get("format") != VERIFIED_FORMAT:
        return False, f"the manifest's verified entry has an unknown format {verified.get('format')!r}"
    if verified.get("validator") != VALIDATOR_NAME:
        return False, f"the check was made by {verified.get('validator')!r}, not {VALIDATOR_NAME}"
    version = verified.get("validator_version")
    if not _int(version) or version < validator_version:
        return False, f"the check was made by validator version {version!r}, older than this one ({validator_version})"
    checks = verified.get("checks")
    if not isinstance(checks, list) or not all(isinstance(c, str) for c in checks):
        return False, "the manifest's verified entry lists no checks"
    crc = manifest.get("crc64")
    if crc is not None and not (isinstance(crc, str) and len(crc) == 16 and all(c in "0123456789abcdef" for c in crc)):
        return False, "the manifest's crc64 is not 16 hex digits"
    needed = set(required)
    if crc is not None and int(crc, 16) == 0 or crc is None and manifest.get("rdb_version", 5) < 5:
        needed.discard("crc64")  # no checksum in the RDB (rdbchecksum no, or an RDB older than version 5)
    missing = sorted(needed - set(checks))
    if missing:
        return False, f"the recorded check does not cover {', '.join(missing)}"
    if not isinstance(manifest.get("sha256"), str) or len(manifest["sha256"]) != 64:
        return False, "the manifest has no SHA-256"
    if not _int(manifest.get("size")) or verified.get("size") != manifest["size"]:
        return False, "the manifest's size is missing or differs from the checked size"
    if verified.get("crc64") != crc:
        return False, "the manifest's crc64 differs from the checked trailer"
    if verified.get("rdb_version") != manifest.get("rdb_version") or not _int(verified.get("rdb_version")):
        return False, "the manifest's rdb_version differs from the checked one"
    for name in ("keys", "functions", "module_keys", "module_aux"):
        if not _int(verified.get(name)):
            return False, f"the recorded check has no {name} count"
    per_db = verified.get("keys_per_db")
    if (
        not isinstance(per_db, dict)
        or not all(k.isdigit() and _int(v) for k, v in per_db.items())
        or sum(per_db.values()) != verified["keys"]
    ):
        return False, "the recorded check has no consistent keys_per_db"
    return True, (
        f"the backup's {VALIDATOR_NAME} v{version} pass ({', '.join(sorted(checks))}) is tied to these "
        "bytes by their SHA-256, size and CRC64"
    )


def summary_from_manifest(manifest):
    """An ``RdbSummary`` standing for the pass the manifest records (what the restore reports and checks)."""
    verified = manifest["verified"]
    summary = redis_rdb.RdbSummary()
    summary.version = verified["rdb_version"]
    summary.size = verified["size"]
    summary.keys_per_db = {int(k): v for k, v in verified["keys_per_db"].items()}
    summary.expires_per_db = {int(k): v for k, v in (verified.get("expires_per_db") or {}).items()}
    summary.functions = [None] * verified["functions"]  # the count is what the restore needs from a recorded pass
    summary.module_aux = verified["module_aux"]
    if verified["module_keys"]:
        summary.type_counts[redis_rdb.MODULE_TYPES[-1]] = verified["module_keys"]
    if verified.get("crc64") is not None:
        summary.checksum_stored = int(verified["crc64"], 16)
    return summary


class RecordedRdb:
    """Stands for an ``RdbFile`` whose structure pass the manifest records (``version`` and ``summary`` only)."""

    def __init__(self, summary, reason):
        self.version = summary.version
        self.summary = summary
        self.verification = "manifest"
        self.verification_reason = reason
        self.checkpoints = []


def check_file_against_record(path, manifest, reason):
    """Header and CRC64 of a local RDB against the manifest whose recorded check replaces the pass (its SHA-256 and
    size were compared by the caller). Returns a ``RecordedRdb``; RdbError when they differ."""
    summary = summary_from_manifest(manifest)
    crc = 0
    size = 0
    tail = b""
    head = b""
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(4 * 1024 * 1024)
            if not chunk:
                break
            if len(head) < redis_rdb.HEADER_LEN:
                head += chunk[: redis_rdb.HEADER_LEN]
            data = tail + chunk
            crc = redis_rdb.crc64(data[:-8], crc) if len(data) > 8 else crc
            tail = data[-8:]
            size += len(chunk)
    version = redis_rdb.parse_header(head)
    if version != summary.version:
        raise redis_rdb.RdbError(f"the RDB has version {version} but its manifest says {summary.version}")
    if summary.version >= 5:
        if len(tail) < 8:
            raise redis_rdb.RdbError("RDB is truncated: no CRC64 trailer")
        stored = int.from_bytes(tail, "little")
        if summary.checksum_stored is not None and stored != summary.checksum_stored:
            raise redis_rdb.RdbError("the RDB CRC64 trailer does not match the manifest")
        if stored and stored != crc:
            raise redis_rdb.RdbError(f"RDB checksum mismatch: trailer says {stored:016x}, data gives {crc:016x}")
        summary.checksum_computed = crc
    summary.size = size
    return RecordedRdb(summary, reason)
