# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Builders for RDB files (valid CRC64) and the corpus of files whose values are malformed.

Shared by the unit tests (the reader's verdict) and the integration tests (what a real Redis 7.0 does with them). Every
builder writes the encodings the way Redis does (``rdb.c``, ``listpack.c``, ``ziplist.c``, ``intset.c``, stream
serialization in ``rdbSaveObject``); the corpus then breaks one value per file behind a consistent outer framing.
"""

from __future__ import annotations

import struct

from ansible_collections.hanzo.kms.plugins.module_utils import redis_rdb

# value types
STRING, LIST, SET, ZSET, HASH, ZSET2 = 0, 1, 2, 3, 4, 5
SET_INTSET, HASH_LISTPACK, ZSET_LISTPACK, LIST_QUICKLIST_2, STREAM_LISTPACKS_2 = 11, 16, 17, 18, 19
HASH_2_VALKEY = 22


# -- strings -----------------------------------------------------------------------------------------------------
def enc_len(n):
    if n < 64:
        return bytes([n])
    if n < 16384:
        return bytes([0x40 | (n >> 8), n & 0xFF])
    if n < 2**32:
        return b"\x80" + struct.pack(">I", n)
    return b"\x81" + struct.pack(">Q", n)


def enc_str(s):
    if isinstance(s, str):
        s = s.encode()
    return enc_len(len(s)) + s


def lzf_literal(data):
    """Valid LZF of ``data`` using literal runs only."""
    out = bytearray()
    for i in range(0, len(data), 32):
        run = data[i : i + 32]
        out.append(len(run) - 1)
        out += run
    return bytes(out)


def lzf_repeat(size, byte=b"k"):
    """Valid LZF of ``size`` copies of ``byte``: one literal, then 264-byte back-references (1.5 MB for 128 MiB)."""
    comp = bytearray(b"\x00" + byte)
    full, rest = divmod(size - 1, 264)
    comp += b"\xe0\xff\x00" * full
    if rest >= 9:
        comp += bytes([0xE0, rest - 9, 0])
    elif rest >= 3:
        comp += bytes([(rest - 2) << 5, 0])
    elif rest:
        comp += bytes([rest - 1]) + byte * rest
    return bytes(comp)


def enc_lzf(compressed, ulen):
    """An LZF string: 0xC3, compressed length, declared uncompressed length, compressed bytes."""
    return b"\xc3" + enc_len(len(compressed)) + enc_len(ulen) + compressed


# -- containers ----------------------------------------------------------------------------------------------------
def _backlen(size):
    if size < 128:
        return bytes([size])
    groups = []
    while size:
        groups.append(size & 127)
        size >>= 7
    groups.reverse()
    return bytes([groups[0]] + [g | 128 for g in groups[1:]])


def lp_entry(value):
    if isinstance(value, int):
        if 0 <= value < 128:
            body = bytes([value])
        elif -4096 <= value < 4096:
            v = value & 0x1FFF
            body = bytes([0xC0 | (v >> 8), v & 0xFF])
        elif -(2**15) <= value < 2**15:
            body = b"\xf1" + struct.pack("<h", value)
        elif -(2**31) <= value < 2**31:
            body = b"\xf3" + struct.pack("<i", value)
        else:
            body = b"\xf4" + struct.pack("<q", value)
    else:
        if isinstance(value, str):
            value = value.encode()
        if len(value) < 64:
            body = bytes([0x80 | len(value)]) + value
        elif len(value) < 4096:
            body = bytes([0xE0 | (len(value) >> 8), len(value) & 0xFF]) + value
        else:
            body = b"\xf0" + struct.pack("<I", len(value)) + value
    return body + _backlen(len(body))


def listpack(entries, count=None, raw_entries=None):
    body = raw_entries if raw_entries is not None else b"".join(lp_entry(e) for e in entries)
    total = 6 + len(body) + 1
    return struct.pack("<IH", total, len(entries) if count is None else count) + body + b"\xff"


def intset(values, enc=2):
    fmt = {2: "h", 4: "i", 8: "q"}[enc]
    return struct.pack("<II", enc, len(values)) + struct.pack(f"<{len(values)}{fmt}", *values)


def ziplist(entries):
    body = b""
    prev = 0
    tail = 10
    for value in entries:
        if isinstance(value, str):
            value = value.encode()
        data = bytes([len(value)]) + value  # 6-bit string encoding
        entry = bytes([prev]) + data
        tail = 10 + len(body)
        body += entry
        prev = len(entry)
    return struct.pack("<IIH", 10 + len(body) + 1, tail, len(entries)) + body + b"\xff"


def stream_id(ms, seq):
    return struct.pack(">QQ", ms, seq)


def stream_value(entries=((1, 1, {"a": "1"}), (2, 1, {"a": "2"})), groups=None, lp_count_delta=0):
    """A type-19 (Redis 7.0) stream: one listpack node; ``groups`` = [(name, [pel ids], {consumer: [ids]})];
    ``lp_count_delta`` breaks the last entry's back-count (lp-count)."""
    first_ms, first_seq, first_fields = entries[0]
    names = list(first_fields)
    lp = [len(entries), 0, len(names)] + names + [0]
    for ms, seq, fields in entries:
        lp += [2, ms - first_ms, seq - first_seq] + [fields[n] for n in names] + [len(names) + 3]
    lp[-1] += lp_count_delta
    last_ms, last_seq, _unused = entries[-1]
    out = enc_len(1) + enc_str(stream_id(first_ms, first_seq)) + enc_str(listpack(lp))
    out += enc_len(len(entries)) + enc_len(last_ms) + enc_len(last_seq)
    out += enc_len(first_ms) + enc_len(first_seq) + enc_len(0) + enc_len(0) + enc_len(len(entries))
    groups = groups if groups is not None else [("g1", [(1, 1)], {"c1": [(1, 1)]})]
    out += enc_len(len(groups))
    for name, pel, consumers in groups:
        out += enc_str(name) + enc_len(last_ms) + enc_len(last_seq) + enc_len(len(entries))
        out += enc_len(len(pel))
        for ms, seq in pel:
            out += stream_id(ms, seq) + struct.pack("<q", 1700000000000) + enc_len(1)
        out += enc_len(len(consumers))
        for cname, ids in consumers.items():
            out += enc_str(cname) + struct.pack("<q", 1700000000000)
            out += enc_len(len(ids)) + b"".join(stream_id(ms, seq) for ms, seq in ids)
    return out


# -- files ---------------------------------------------------------------------------------------------------------
def key_record(rtype, key, value, expire_ms=None):
    head = b"" if expire_ms is None else b"\xfc" + struct.pack("<q", expire_ms)
    return head + bytes([rtype]) + enc_str(key) + value


def rdb_file(records, version=10, db=0, valkey=False):
    """A whole RDB: aux fields, SELECTDB, RESIZEDB, the records, EOF and a valid CRC64."""
    magic = b"VALKEY%03d" % version if valkey else b"REDIS%04d" % version
    body = magic + b"\xfa" + enc_str("redis-ver") + enc_str("7.0.15")
    body += b"\xfe" + enc_len(db) + b"\xfb" + enc_len(len(records)) + enc_len(0)
    body += b"".join(records) + b"\xff"
    return body + struct.pack("<Q", redis_rdb.crc64(body))


def good_records():
    """A few well-formed keys of several types (kept next to each malformed one)."""
    return [
        key_record(STRING, "good:str", enc_str("hello")),
        key_record(STRING, "good:lzf", enc_lzf(lzf_literal(b"x" * 40), 40)),
        key_record(HASH_LISTPACK, "good:hash", enc_str(listpack(["f", "v", "g", 7]))),
        key_record(SET_INTSET, "good:intset", enc_str(intset([1, 2, 3]))),
        key_record(LIST_QUICKLIST_2, "good:list", enc_len(1) + enc_len(2) + enc_str(listpack(["a", "b", 300]))),
        key_record(STREAM_LISTPACKS_2, "good:stream", stream_value()),
    ]


def _garbage_listpack():
    """Header (size, count) consistent, entries garbage: an invalid encoding byte then filler."""
    body = lp_entry("f") + b"\xf6" + b"\x41" * 5
    return struct.pack("<IH", 6 + len(body) + 1, 2) + body + b"\xff"


def _bad_backref_lzf():
    return b"\x01ab" + b"\x20\x10"  # literal "ab", then a back-reference 17 bytes back


# name -> (key, record, fragment of the expected error)
def malformed_corpus():
    return {
        "lzf-impossible-size": (
            "bad:lzf-size",
            key_record(STRING, "bad:lzf-size", enc_lzf(lzf_literal(b"y" * 40), 1 << 30)),
            "more than LZF can produce",
        ),
        "lzf-bad-backref": (
            "bad:lzf-ref",
            key_record(STRING, "bad:lzf-ref", enc_lzf(_bad_backref_lzf(), 5)),
            "back-reference before the start",
        ),
        "listpack-garbage": (
            "bad:lp-garbage",
            key_record(HASH_LISTPACK, "bad:lp-garbage", enc_str(_garbage_listpack())),
            "invalid encoding byte 0xf6",
        ),
        "listpack-count": (
            "bad:lp-count",
            key_record(HASH_LISTPACK, "bad:lp-count", enc_str(listpack(["f", "v"], count=4))),
            "header says 4 entries",
        ),
        "hash-listpack-duplicate-field": (
            "bad:lp-dup",
            key_record(HASH_LISTPACK, "bad:lp-dup", enc_str(listpack(["f", "v", "f", "w"]))),
            "duplicate field b'f'",
        ),
        "quicklist-garbage-node": (
            "bad:ql",
            key_record(LIST_QUICKLIST_2, "bad:ql", enc_len(1) + enc_len(2) + enc_str(_garbage_listpack())),
            "invalid encoding byte",
        ),
        "intset-unsorted": (
            "bad:intset",
            key_record(SET_INTSET, "bad:intset", enc_str(intset([3, 1, 2]))),
            "not strictly ascending",
        ),
        "set-duplicate-member": (
            "bad:set",
            key_record(SET, "bad:set", enc_len(2) + enc_str("m") + enc_str("m")),
            "duplicate member b'm'",
        ),
        "zset-nan-score": (
            "bad:zset",
            key_record(ZSET2, "bad:zset", enc_len(1) + enc_str("m") + struct.pack("<d", float("nan"))),
            "NaN score",
        ),
        "stream-consumer-pel-not-in-group": (
            "bad:stream-pel",
            key_record(
                STREAM_LISTPACKS_2, "bad:stream-pel", stream_value(groups=[("g1", [(1, 1)], {"c1": [(1, 1), (2, 1)]})])
            ),
            "not in the group PEL",
        ),
        "stream-group-pel-without-consumer": (
            "bad:stream-orphan",
            key_record(
                STREAM_LISTPACKS_2,
                "bad:stream-orphan",
                stream_value(groups=[("g1", [(1, 1), (2, 1)], {"c1": [(1, 1)]})]),
            ),
            "has no consumer",
        ),
        "stream-listpack-count": (
            "bad:stream-lp",
            key_record(STREAM_LISTPACKS_2, "bad:stream-lp", stream_value(lp_count_delta=1)),
            "lp-count",
        ),
        "empty-list": ("bad:empty", key_record(LIST_QUICKLIST_2, "bad:empty", enc_len(0)), "empty list"),
    }


def malformed_file(name):
    """(RDB bytes, key, expected error fragment): the good keys, then the malformed one, then one more good key."""
    key, record, message = malformed_corpus()[name]
    records = good_records()
    records.insert(3, record)
    return rdb_file(records), key, message


def huge_lzf_key_file(declared=1 << 40):
    """A small file whose only key is LZF-compressed and declares ``declared`` uncompressed bytes."""
    return rdb_file([bytes([STRING]) + enc_lzf(lzf_literal(b"k" * 64), declared) + enc_str("v")])
