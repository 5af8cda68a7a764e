# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the RDB reader (no server needed).

Fixtures ``fixtures/redis_rdb_*.rdb`` were fetched with ``redis-cli --rdb`` from Redis 7.0.15 and Valkey 9.1.2 holding
every data type; ``*.dumps.json`` hold what ``DUMP`` returned for each key at that moment, so the payloads this reader
slices from the RDB can be compared byte for byte with the server's own.
"""

from __future__ import annotations

import json
import os
import random
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.hanzo.kms.plugins.module_utils import backup_layout, redis_backup, redis_rdb
from ansible_collections.hanzo.kms.plugins.module_utils.redis_rdb import RdbError
from tests.rdb_corpus import enc_len, enc_str, listpack

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = ["redis_rdb_redis70", "redis_rdb_valkey91"]


def sample(name):
    data = (FIXTURES / f"{name}.rdb").read_bytes()
    dumps = json.loads((FIXTURES / f"{name}.dumps.json").read_text())
    return data, dumps


# -- synthetic RDB builder (encoders shared with the other RDB tests in tests/rdb_corpus.py) ---------------------
def finish(body, version=10, checksum=True):
    data = b"REDIS%04d" % version + body + b"\xff"
    crc = redis_rdb.crc64(data) if checksum else 0
    return data + struct.pack("<Q", crc)


def synthetic():
    body = b""
    body += b"\xfa" + enc_str("redis-ver") + enc_str("7.0.15")
    body += b"\xfa" + enc_str("ctime") + b"\xc2" + struct.pack("<i", 1700000000)  # int-encoded aux value
    body += b"\xf5" + enc_str('#!lua name=x\nredis.register_function("f", function() return 1 end)')
    body += b"\xfe\x00" + b"\xfb" + enc_len(6) + enc_len(1)
    body += b"\x00" + enc_str("plain") + enc_str("value")
    body += b"\xfd" + struct.pack("<I", 4000000000) + b"\x00" + enc_str("exp_seconds") + enc_str("v")
    body += b"\xf8" + enc_len(100) + b"\x00" + enc_str("idle") + enc_str("v")
    body += b"\xf9\x05" + b"\x00" + enc_str("freq") + enc_str("v")
    body += b"\x03" + enc_str("oldzset") + enc_len(2) + enc_str("a") + b"\x031.5" + enc_str("b") + b"\xfe"
    body += b"\x05" + enc_str("zset2") + enc_len(1) + enc_str("a") + struct.pack("<d", 2.5)
    body += b"\xfe\x03" + b"\xf4" + enc_len(1) + enc_len(2) + enc_len(0)
    body += b"\x04" + enc_str("hash") + enc_len(1) + enc_str("f") + enc_str("v")
    body += b"\x12" + enc_str("ql2") + enc_len(1) + enc_len(2) + enc_str(listpack(["a", 1]))
    return body


def module_value():
    # type 7: 64-bit module id as a length, then opcodes: uint, string, double, EOF
    return (
        b"\x07"
        + enc_str("modkey")
        + b"\x81"
        + struct.pack(">Q", 0x1234567890)
        + enc_len(2)
        + enc_len(7)
        + enc_len(5)
        + enc_str("abc")
        + enc_len(4)
        + struct.pack("<d", 1.0)
        + enc_len(0)
    )


# -- CRC64 --------------------------------------------------------------------------------------------------------
def test_crc64_check_value():
    assert redis_rdb.crc64(b"123456789") == 0xE9C6D914C4B8D9CA
    assert redis_rdb.crc64_pure(b"123456789") == 0xE9C6D914C4B8D9CA


def test_crc64_fast_backend_available():
    assert redis_rdb.crc64_is_fast(), "anycrc is not installed: CRC64 falls back to pure Python"


def test_crc64_incremental_and_fast_equals_pure():
    rng = random.Random(7)
    data = bytes(rng.getrandbits(8) for _unused in range(5000))
    assert redis_rdb.crc64(data) == redis_rdb.crc64_pure(data)
    assert redis_rdb.crc64(data[1234:], redis_rdb.crc64(data[:1234])) == redis_rdb.crc64(data)
    assert redis_rdb.crc64(memoryview(data)) == redis_rdb.crc64(bytearray(data))


@pytest.mark.parametrize("name", SAMPLES)
def test_crc64_matches_server_trailer(name):
    data, _unused = sample(name)
    assert redis_rdb.crc64(data[:-8]) == struct.unpack("<Q", data[-8:])[0]


# -- real samples ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SAMPLES)
def test_payloads_equal_server_dump(name):
    data, dumps = sample(name)
    rdb = redis_rdb.RdbFile(data)
    seen = {}
    for rec in rdb.records():
        seen[f"{rec.db}:{rec.key.hex()}"] = rdb.payload(rec)
    assert set(seen) == set(dumps["dumps"])
    for key, dump_hex in dumps["dumps"].items():
        dump = bytes.fromhex(dump_hex)
        if name.startswith("redis_rdb_redis"):
            assert seen[key] == dump, key
        else:
            # Valkey 9 stamps its DUMP payloads with its own version; the serialized value is identical
            assert seen[key][:-10] == dump[:-10], key


@pytest.mark.parametrize("name", SAMPLES)
def test_summary_of_samples(name):
    data, dumps = sample(name)
    summary = redis_rdb.scan_bytes(data)
    info = summary.as_dict()
    assert info["keys"] == len(dumps["dumps"])
    assert info["keys_per_db"] == {"0": info["keys"] - 2, "2": 2}
    assert info["functions"] == 1
    assert set(info["types"]) == {"string", "list", "set", "zset", "hash", "stream"}
    assert info["expires_per_db"]["0"] >= 1
    assert summary.checksum_stored == summary.checksum_computed
    assert rdb_function_payload_ok(data)


def rdb_function_payload_ok(data):
    rdb = redis_rdb.RdbFile(data)
    rdb.scan()
    payload = rdb.function_payload()
    body, crc = payload[:-8], struct.unpack("<Q", payload[-8:])[0]
    return body[0] == 0xF5 and redis_rdb.crc64(body) == crc


def test_lzf_compressed_key_is_decoded():
    data, _unused = sample("redis_rdb_redis70")
    keys = {rec.key for rec in redis_rdb.RdbFile(data).records()}
    assert b"session:user:0000000000000000000001" in keys
    assert b"12345" not in keys and b"i" in keys
    assert b"bin\x00\xffkey" in keys


# -- synthetic layouts -------------------------------------------------------------------------------------------
def test_synthetic_opcodes_and_old_types():
    rdb = redis_rdb.RdbFile(finish(synthetic()))
    recs = list(rdb.records())
    by_key = {r.key: r for r in recs}
    assert by_key[b"exp_seconds"].expire_ms == 4000000000 * 1000
    assert by_key[b"idle"].idle == 100 and by_key[b"freq"].freq == 5
    assert by_key[b"hash"].db == 3
    assert rdb.summary.aux == {"redis-ver": "7.0.15", "ctime": "1700000000"}
    assert rdb.summary.resize_hints[0] == (6, 1)
    assert rdb.summary.keys_per_db == {0: 6, 3: 2}
    # payload = type byte + value + version + crc
    payload = rdb.payload(by_key[b"plain"])
    assert payload[:7] == b"\x00\x05value" and payload[7:9] == b"\x0a\x00"


def test_module_values_are_sliced_and_flagged():
    body = synthetic() + module_value()
    body = body.replace(
        b"\xfe\x00",
        b"\xf7" + enc_len(99) + enc_len(2) + enc_len(2) + enc_len(2) + enc_len(1) + enc_len(0) + b"\xfe\x00",
        1,
    )
    summary = redis_rdb.scan_bytes(finish(body))
    assert summary.module_keys == 1 and summary.module_aux == 1


def test_no_checksum_trailer_is_accepted():
    summary = redis_rdb.scan_bytes(finish(synthetic(), checksum=False))
    assert summary.checksum_stored == 0


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not an RDB"),
        (b"REDIS", "not an RDB"),
        (b"RODIS0010\xff" + b"\x00" * 8, "starts with"),
        (b"REDISxx10\xff" + b"\x00" * 8, "not 4 digits"),
        (finish(b"", version=13), "newer than this reader supports"),
        (finish(b"", version=79), "newer than this reader supports"),
        (finish(b"", version=99), "only written with the VALKEY magic"),
        (finish(synthetic())[:-3], "truncated"),
        (finish(synthetic())[:-9], "truncated"),
        (finish(synthetic())[:200], "truncated"),
        (finish(synthetic()) + b"junk", "unexpected bytes"),
        (finish(synthetic())[:-1] + b"\x00", "checksum mismatch"),
        (finish(b"\x06" + enc_str("k") + b"\x00"), "type 6"),
        (finish(b"\xf6" + enc_str("x")), "0xF6"),
        (finish(b"\x30" + enc_str("k")), "unknown value type"),
        (finish(b"\xf3\x00"), "unknown opcode"),
    ],
)
def test_bad_inputs_raise_clear_rdb_error(data, message):
    with pytest.raises(RdbError, match=message):
        redis_rdb.scan_bytes(data)


def test_every_truncation_is_an_rdb_error():
    data, _unused = sample("redis_rdb_redis70")
    for size in list(range(0, 200)) + list(range(200, len(data), 97)) + [len(data) - 1]:
        with pytest.raises(RdbError):
            redis_rdb.scan_bytes(data[:size])


def test_flipped_byte_is_caught_by_crc():
    data, _unused = sample("redis_rdb_redis70")
    bad = bytearray(data)
    bad[len(data) // 2] ^= 0x01
    with pytest.raises(RdbError):
        redis_rdb.scan_bytes(bytes(bad))


# -- streaming validation ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 7, 64, 4096, 1 << 20])
@pytest.mark.parametrize("structure", [True, False])
def test_stream_validator_any_chunking(chunk, structure):
    data, dumps = sample("redis_rdb_redis70")
    val = redis_rdb.StreamValidator(structure=structure)
    for i in range(0, len(data), chunk):
        val.feed(data[i : i + chunk])
    summary = val.finish()
    assert summary.version == 10 and summary.size == len(data)
    assert summary.aux["redis-ver"] == "7.0.15"
    assert summary.checksum_stored == summary.checksum_computed
    if structure:
        assert val.structure_complete
        assert sum(summary.keys_per_db.values()) == len(dumps["dumps"])
    import hashlib

    assert val.hexdigest() == hashlib.sha256(data).hexdigest()


def test_stream_validator_huge_record_disables_structure_only():
    data, _unused = sample("redis_rdb_redis70")
    val = redis_rdb.StreamValidator(structure=True, max_record=100)
    for i in range(0, len(data), 50):
        val.feed(data[i : i + 50])
    summary = val.finish()
    assert not val.structure_complete and summary.checksum_stored == summary.checksum_computed


@pytest.mark.parametrize("cut", [0, 5, 9, 100, -9, -1])
def test_stream_validator_truncated(cut):
    data, _unused = sample("redis_rdb_redis70")
    val = redis_rdb.StreamValidator()
    with pytest.raises(RdbError):
        val.feed(data[:cut])
        val.finish()


def test_stream_validator_bad_crc_and_version():
    data, _unused = sample("redis_rdb_redis70")
    val = redis_rdb.StreamValidator(structure=False)
    val.feed(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(RdbError, match="checksum mismatch"):
        val.finish()
    val = redis_rdb.StreamValidator()
    with pytest.raises(RdbError, match="newer"):
        val.feed(b"REDIS0042" + data[9:])
    val = redis_rdb.StreamValidator()
    with pytest.raises(RdbError, match=r"RDB version 81 \(Valkey 9.2\) is newer"):
        val.feed(b"VALKEY081" + data[9:])


# -- fuzz: mutated RDBs never raise anything but RdbError ----------------------------------------------------------
def _mutate(data, ops):
    buf = bytearray(data)
    for kind, pos, value in ops:
        if not buf:
            break
        pos %= len(buf)
        if kind == 0:
            buf[pos] = value
        elif kind == 1:
            del buf[pos : pos + 1 + value % 16]
        elif kind == 2:
            buf[pos:pos] = bytes([value]) * (1 + value % 8)
        else:
            buf[pos] ^= 1 << (value % 8)
    return bytes(buf)


OPS = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=6)


def _check_no_traceback(data, check_crc):
    try:
        redis_rdb.RdbFile(data, check_crc=check_crc).scan()
    except RdbError as exc:
        assert str(exc)
    val = redis_rdb.StreamValidator()
    try:
        for i in range(0, len(data), 333):
            val.feed(data[i : i + 333])
        val.finish()
    except RdbError as exc:
        assert str(exc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, which=st.sampled_from(SAMPLES), check_crc=st.booleans())
def test_fuzz_mutated_samples(ops, which, check_crc):
    data, _unused = sample(which)
    _check_no_traceback(_mutate(data, ops), check_crc)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, check_crc=st.booleans())
def test_fuzz_mutated_synthetic(ops, check_crc):
    _check_no_traceback(_mutate(finish(synthetic() + module_value()), ops), check_crc)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_after_header(tail):
    _check_no_traceback(b"REDIS0010" + tail, False)


def test_fuzz_payloads_of_mutated_sample_never_crash():
    data, _unused = sample("redis_rdb_redis70")
    rng = random.Random(1)
    for _unused in range(300):
        bad = bytearray(data)
        for _unused in range(rng.randint(1, 4)):
            bad[rng.randrange(9, len(bad) - 9)] = rng.randrange(256)
        rdb = redis_rdb.RdbFile(bytes(bad), check_crc=False)
        try:
            for rec in rdb.records():
                rdb.payload(rec)
        except RdbError:
            pass


# -- helpers shared with the modules ----------------------------------------------------------------------------
def test_rdb_version_compatibility_table():
    assert redis_backup.rdb_version_for("redis", "7.0.15") == 10
    assert redis_backup.rdb_version_for("redis", "7.4.1") == 12
    assert redis_backup.rdb_version_for("redis", "6.2.14") == 9
    assert redis_backup.rdb_loadable(10, "redis", "7.0.15")
    assert not redis_backup.rdb_loadable(11, "redis", "7.0.15")
    assert redis_backup.rdb_loadable(11, "valkey", "9.1.2")
    assert not redis_backup.rdb_loadable(12, "valkey", "9.1.2")
    # Valkey 9 writes its own versions from 80 up; Redis never loads them
    assert redis_backup.rdb_version_for("valkey", "9.1.2") == 80
    assert redis_backup.rdb_version_for("valkey", "9.2.0") == 81
    assert redis_backup.rdb_version_for("valkey", "8.1.0") == 11
    assert redis_backup.rdb_loadable(80, "valkey", "9.0.0")
    assert not redis_backup.rdb_loadable(81, "valkey", "9.1.2")
    assert not redis_backup.rdb_loadable(80, "valkey", "8.1.0")
    assert not redis_backup.rdb_loadable(80, "redis", "8.8.0")
    assert not redis_backup.rdb_loadable(80, "redis", "7.0.15")


def test_backup_prefix():
    assert (
        backup_layout.backup_prefix("/backups/redis/", "dc1", "20261122T041500Z")
        == "backups/redis/dc1/20261122T041500Z/"
    )
    assert backup_layout.backup_prefix(None, None, "20261122T041500Z") == "20261122T041500Z/"


def test_restore_payload_layout():
    payload = redis_rdb.restore_payload(b"\x00\x03abc", 9)
    assert payload[:5] == b"\x00\x03abc" and payload[5:7] == b"\x09\x00"
    assert struct.unpack("<Q", payload[7:])[0] == redis_rdb.crc64(payload[:7])


def test_fixture_files_exist():
    for name in SAMPLES:
        assert os.path.getsize(FIXTURES / f"{name}.rdb") > 1000


# -- restore-side helpers that need no server ----------------------------------------------------------------------
def test_checkpoints_split_the_key_stream_exactly():
    from ansible_collections.hanzo.kms.plugins.module_utils import redis_restore  # pylint: disable=import-outside-toplevel

    data, dumps = sample("redis_rdb_redis70")
    rdb = redis_rdb.RdbFile(data)
    rdb.scan(checkpoint_every=3)
    assert len(rdb.checkpoints) == len(dumps["dumps"]) // 3
    seen = []
    for start, stop, db in redis_restore._ranges(rdb, 3):  # pylint: disable=protected-access
        seen.extend((rec.db, rec.key) for rec in rdb.records_between(start, stop, db))
    full = [(rec.db, rec.key) for rec in redis_rdb.RdbFile(data).records()]
    assert seen == full
