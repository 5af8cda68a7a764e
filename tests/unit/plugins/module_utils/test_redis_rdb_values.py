# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the RDB value validation (what Redis's loader checks with sanitize-dump-payload yes) and for the
Valkey RDB header/versions. No server needed: the files come from the builders in tests/rdb_corpus.py."""

from __future__ import annotations

import struct
import subprocess
import sys
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.hanzo.kms.plugins.module_utils import redis_rdb
from ansible_collections.hanzo.kms.plugins.module_utils.redis_rdb import RdbError
from tests import rdb_corpus as corpus

CORPUS = sorted(corpus.malformed_corpus())


def stream_check(data, chunk):
    val = redis_rdb.StreamValidator(structure=True)
    for i in range(0, len(data), chunk):
        val.feed(data[i : i + chunk])
    return val.finish()


def test_good_corpus_passes_every_way():
    data = corpus.rdb_file(corpus.good_records())
    assert redis_rdb.scan_bytes(data).keys_per_db == {0: 6}
    for chunk in (1, 5, 64, 1 << 20):
        assert stream_check(data, chunk).keys_per_db == {0: 6}
    assert [r.key for r in redis_rdb.RdbFile(data).records()][0] == b"good:str"


@pytest.mark.parametrize("name", CORPUS)
def test_malformed_value_is_refused_naming_key_and_problem(name):
    data, key, message = corpus.malformed_file(name)
    assert redis_rdb.crc64(data[:-8]) == struct.unpack("<Q", data[-8:])[0]  # the CRC is valid
    with pytest.raises(RdbError) as err:
        redis_rdb.scan_bytes(data)
    assert f"key b'{key}' (db 0" in str(err.value) and message in str(err.value)
    with pytest.raises(RdbError) as err:
        list(redis_rdb.RdbFile(data).records())
    assert key in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("name", CORPUS)
@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_malformed_value_is_refused_when_streaming(name, chunk):
    data, key, message = corpus.malformed_file(name)
    with pytest.raises(RdbError) as err:
        stream_check(data, chunk)
    assert key in str(err.value) and message in str(err.value)


def test_without_validation_the_framing_pass_still_accepts_them():
    """The restore's second pass (slicing payloads) relies on the verification pass; validate=False is only that."""
    for name in CORPUS:
        data, _key, _message = corpus.malformed_file(name)
        assert redis_rdb.RdbFile(data).scan(validate=False)


# -- LZF: bounded time and memory whatever the declared sizes ---------------------------------------------------
def test_small_file_declaring_huge_lzf_outputs_is_refused_fast_without_memory():
    tracemalloc.start()
    try:
        started = time.perf_counter()
        for declared in (400 * 1024 * 1024, 1 << 40):
            with pytest.raises(RdbError, match="declares"):
                redis_rdb.scan_bytes(corpus.huge_lzf_key_file(declared))
            with pytest.raises(RdbError, match="declares"):
                stream_check(corpus.huge_lzf_key_file(declared), 4096)
        value = corpus.rdb_file([corpus.key_record(0, "v", corpus.enc_lzf(corpus.lzf_literal(b"z" * 64), 300 << 20))])
        with pytest.raises(RdbError, match="key b'v'.*more than LZF can produce"):
            redis_rdb.scan_bytes(value)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 1024 * 1024


def big_lzf_key_file(size):
    """One valid LZF key of ``size`` bytes."""
    return corpus.rdb_file([bytes([0]) + corpus.enc_lzf(corpus.lzf_repeat(size), size) + corpus.enc_str("value")])


def test_lzf_key_of_128_mib_is_checked_in_place():
    """The issue's case: a 1.5 MB file with one 128 MiB LZF key took 6.9 s and 276 MiB; the structure pass now checks
    the compressed key in place (run in a child to measure its peak RSS)."""
    code = (
        "import resource, sys, time\n"
        'sys.path.insert(0, ".")\n'
        "import tests.lab\n"
        "from ansible_collections.hanzo.kms.plugins.module_utils import redis_rdb\n"
        'data = open(sys.argv[1], "rb").read()\n'
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "started = time.process_time()\n"
        "summary = redis_rdb.scan_bytes(data)\n"
        "val = redis_rdb.StreamValidator()\n"
        "for i in range(0, len(data), 262144):\n"
        "    val.feed(data[i:i + 262144])\n"
        "val.finish()\n"
        "print(time.process_time() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before,"
        " summary.keys_per_db[0])\n"
    )
    import tempfile  # pylint: disable=import-outside-toplevel

    with tempfile.NamedTemporaryFile(suffix=".rdb") as handle:
        data = big_lzf_key_file(128 * 1024 * 1024)
        assert len(data) < 1_600_000
        handle.write(data)
        handle.flush()
        out = subprocess.run(
            [sys.executable, "-c", code, handle.name],
            capture_output=True,
            text=True,
            check=True,
            cwd=str(corpus.__file__).rsplit("/tests/", 1)[0],
        ).stdout.split()
    seconds, grown_kib, keys = float(out[0]), int(out[1]), int(out[2])
    assert keys == 1
    assert grown_kib < 16 * 1024, f"{grown_kib} KiB"
    assert seconds < 3.0


@pytest.mark.parametrize(
    "comp, ulen, message",
    [
        (b"\x01ab", 3, "decompresses to 2 bytes, declared 3"),
        (b"\x05ab", 6, "past the end"),
        (b"\x01ab\x20", 5, "truncated"),
        (b"\x01ab\x20\x02", 5, "before the start"),
        (b"\x00a\xe0", 20, "truncated"),
        (b"\x00a", 0, "declares 0"),
    ],
)
def test_lzf_check_problems(comp, ulen, message):
    with pytest.raises(redis_rdb._Bad, match=message):  # pylint: disable=protected-access
        redis_rdb.lzf_check(comp, 0, len(comp), ulen)


def test_lzf_decompress_matches_back_references():
    comp = b"\x02abc" + b"\x40\x02" + b"\xe0\x05\x00"  # "abc", copy 4 from 3 back, copy 14 from 1 back
    assert redis_rdb.lzf_decompress(comp, 3 + 4 + 14) == b"abcabca" + b"a" * 14


# -- containers ----------------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(-(2**63), 2**63 - 1), st.binary(max_size=300)), max_size=40))
def test_listpack_entries_round_trip(values):
    blob = corpus.listpack(values)
    assert redis_rdb.listpack_entries(blob) == values
    assert redis_rdb.listpack_entries(blob, False) == len(values)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=20), min_size=1, max_size=10), st.integers(0, 400), st.integers(0, 255))
def test_mutated_listpacks_never_raise_anything_but_bad(values, where, byte):
    blob = bytearray(corpus.listpack(values))
    blob[where % len(blob)] = byte
    try:
        redis_rdb.listpack_entries(bytes(blob))
    except redis_rdb._Bad:  # pylint: disable=protected-access
        pass


def test_ziplist_and_intset_and_listpack_values():
    assert redis_rdb.ziplist_entries(corpus.ziplist(["a", "bb", "ccc"])) == [b"a", b"bb", b"ccc"]
    bad_tail = bytearray(corpus.ziplist(["a", "bb"]))
    bad_tail[4] = 10
    with pytest.raises(redis_rdb._Bad, match="tail offset"):  # pylint: disable=protected-access
        redis_rdb.ziplist_entries(bytes(bad_tail))
    redis_rdb.intset_check(corpus.intset([-5, 1, 70000], enc=4))
    with pytest.raises(redis_rdb._Bad, match="ascending"):  # pylint: disable=protected-access
        redis_rdb.intset_check(corpus.intset([1, 1]))
    with pytest.raises(redis_rdb._Bad, match="empty"):  # pylint: disable=protected-access
        redis_rdb.intset_check(corpus.intset([]))
    # an integer and its decimal text are the same field for Redis
    assert (
        redis_rdb.check_value(corpus.enc_str(corpus.listpack([5, "x", "5", "y"])), 0, 20, 16) == "duplicate field b'5'"
    )
    assert redis_rdb.check_value(corpus.enc_str(corpus.listpack([5, "x", "6", "y"])), 0, 20, 16) is None


def test_old_encodings_are_validated():
    zl_hash = corpus.key_record(13, "zlhash", corpus.enc_str(corpus.ziplist(["f", "v", "f", "w"])))
    with pytest.raises(RdbError, match="key b'zlhash'.*duplicate field"):
        redis_rdb.scan_bytes(corpus.rdb_file([zl_hash]))
    zl_list = corpus.key_record(14, "ql1", corpus.enc_len(1) + corpus.enc_str(corpus.ziplist(["a", "b"])))
    assert redis_rdb.scan_bytes(corpus.rdb_file([zl_list])).keys_per_db == {0: 1}
    zset = corpus.key_record(3, "oldz", corpus.enc_len(1) + corpus.enc_str("m") + b"\x03abc")
    with pytest.raises(RdbError, match="score b'abc'"):
        redis_rdb.scan_bytes(corpus.rdb_file([zset]))


# -- Valkey ------------------------------------------------------------------------------------------------------
def test_valkey_header_and_versions():
    assert redis_rdb.parse_header(b"VALKEY080") == 80
    with pytest.raises(RdbError, match="REDIS magic"):
        redis_rdb.parse_header(b"VALKEY011")
    with pytest.raises(RdbError, match="VALKEY magic"):
        redis_rdb.parse_header(b"REDIS0080")
    with pytest.raises(RdbError, match="not 3 digits"):
        redis_rdb.parse_header(b"VALKEYxyz")
    assert redis_rdb.describe_rdb_version(80) == "80 (Valkey 9.0-9.1)"
    assert redis_rdb.describe_rdb_version(10) == "10 (Redis 7.0)"


def valkey_hash_2(fields):
    value = corpus.enc_len(len(fields))
    for field, val, expire in fields:
        value += corpus.enc_str(field) + corpus.enc_str(val) + struct.pack("<q", expire)
    return value


def test_valkey_rdb_with_field_expiration_is_read_and_sliced():
    record = corpus.key_record(corpus.HASH_2_VALKEY, "h", valkey_hash_2([("f", "v", 1893456000000), ("g", "w", -1)]))
    data = corpus.rdb_file(corpus.good_records() + [record], version=80, valkey=True)
    rdb = redis_rdb.RdbFile(data)
    recs = {r.key: r for r in rdb.records()}
    assert rdb.summary.version == 80 and rdb.summary.types()["hash"] == 2
    payload = rdb.payload(recs[b"h"])
    assert payload[0] == 22 and payload[-10:-8] == b"\x50\x00"  # RESTORE payload stamped with version 80
    assert stream_check(data, 3).keys_per_db == {0: 7}


def test_valkey_type_22_problems_and_foreign_types():
    dup = corpus.key_record(corpus.HASH_2_VALKEY, "h", valkey_hash_2([("f", "v", -1), ("f", "w", -1)]))
    with pytest.raises(RdbError, match="key b'h'.*duplicate field b'f'"):
        redis_rdb.scan_bytes(corpus.rdb_file([dup], version=80, valkey=True))
    ok = corpus.key_record(corpus.HASH_2_VALKEY, "h", valkey_hash_2([("f", "v", -1)]))
    with pytest.raises(RdbError, match="not valid in a Redis RDB"):
        redis_rdb.scan_bytes(corpus.rdb_file([ok], version=12))


def test_large_compressed_set_members_are_not_decompressed():
    """Redis accepts members up to 512 MiB: a compressed member above the container limit is checked in place and
    compared by its compressed bytes, so it is neither refused nor allocated."""
    big = corpus.lzf_repeat(100 * 1024 * 1024)
    value = corpus.enc_len(2) + corpus.enc_lzf(big, 100 * 1024 * 1024) + corpus.enc_str("small")
    data = corpus.rdb_file([corpus.key_record(corpus.SET, "bigset", value)])
    tracemalloc.start()
    try:
        assert redis_rdb.scan_bytes(data).keys_per_db == {0: 1}
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024
    dup = corpus.enc_len(2) + corpus.enc_lzf(big, 100 * 1024 * 1024) * 2
    with pytest.raises(RdbError, match="key b'bigset'.*duplicate member"):
        redis_rdb.scan_bytes(corpus.rdb_file([corpus.key_record(corpus.SET, "bigset", dup)]))
