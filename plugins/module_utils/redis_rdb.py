# -*- coding: utf-8 -*-
# Copyright: Hanzo KMS contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis RDB reader: header, opcodes, per-db key counts, RESTORE payloads sliced without decoding values.

Plain Python, importable without Ansible. Every problem with the data surfaces as :class:`RdbError` with an offset;
no other exception escapes the public functions.

CRC-64/Redis (Jones polynomial, reflected, init 0) comes from the C-backed ``anycrc`` package when installed; a
table-driven pure-Python fallback exists (≈10 MB/s) so the module still works, slowly, without it.
"""

from __future__ import annotations

import hashlib
import math
import struct

try:
    import anycrc as _anycrc

    _ANYCRC_MODEL = _anycrc.Model("CRC64-REDIS")
except Exception:  # pylint: disable=broad-exception-caught
    _ANYCRC_MODEL = None

MAGIC = b"REDIS"
VALKEY_MAGIC = b"VALKEY"
HEADER_LEN = 9
# Highest Redis RDB version whose layout this reader knows: 12 = Redis 7.4 .. 8.4.
MAX_SUPPORTED_RDB_VERSION = 12
# Valkey 9.0/9.1 write ``VALKEY080``: the Redis 7.2 (RDB 11) layout plus type 22 (hash with field expiration).
# Valkey numbers its own versions from 80 (12..79 are "foreign", Redis's); Valkey 9.2's 81 adds a type whose layout is
# not published in a release yet, so it is refused.
VALKEY_RDB_VERSIONS = (80,)
# RDB versions written with the VALKEY magic (REDIS + 4 digits below that).
VALKEY_MAGIC_MIN_VERSION = 80
# Keys: RESTORE (and any client) cannot send a key larger than proto-max-bulk-len (512 MiB by default).
MAX_KEY_BYTES = 512 * 1024 * 1024
# Containers (listpack, ziplist, intset, zipmap) that have to be decompressed to be validated: Redis writes them far
# smaller (quicklist nodes 8 KiB, stream nodes 4 KiB, hash/set/zset listpacks 128 entries by default); a declared
# size above this is refused instead of being allocated.
MAX_CONTAINER_BYTES = 64 * 1024 * 1024

OP_KEY_META = 0xF3
OP_SLOT_INFO = 0xF4
OP_FUNCTION2 = 0xF5
OP_FUNCTION_PRE_GA = 0xF6
OP_MODULE_AUX = 0xF7
OP_IDLE = 0xF8
OP_FREQ = 0xF9
OP_AUX = 0xFA
OP_RESIZEDB = 0xFB
OP_EXPIRETIME_MS = 0xFC
OP_EXPIRETIME = 0xFD
OP_SELECTDB = 0xFE
OP_EOF = 0xFF

TYPE_NAMES = {
    0: "string",
    1: "list",
    2: "set",
    3: "zset",
    4: "hash",
    5: "zset",
    6: "module",
    7: "module",
    9: "hash",
    10: "list",
    11: "set",
    12: "zset",
    13: "hash",
    14: "list",
    15: "stream",
    16: "hash",
    17: "zset",
    18: "list",
    19: "stream",
    20: "set",
    21: "stream",
    22: "hash",
    24: "hash",
    25: "hash",
}
MODULE_TYPES = (6, 7)
_SINGLE_STRING_TYPES = frozenset((0, 9, 10, 11, 12, 13, 16, 17, 20))

_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
_U32 = struct.Struct("<I")
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")


class RdbError(Exception):
    """The RDB data is unusable; the message says why (and where)."""


class _Short(Exception):
    """Internal: the buffer ended inside a record (more data may follow when streaming)."""


# --------------------------------------------------------------------------------------------------------------
# CRC-64/Redis
# --------------------------------------------------------------------------------------------------------------
_POLY_REFLECTED = 0x95AC9329AC4BC9B5  # bit-reversed 0xad93d23594c935a9
_TABLE = None


def _table():
    global _TABLE  # pylint: disable=global-statement
    if _TABLE is None:
        table = []
        for i in range(256):
            crc = i
            for _unused in range(8):
                crc = (crc >> 1) ^ _POLY_REFLECTED if crc & 1 else crc >> 1
            table.append(crc)
        _TABLE = table
    return _TABLE


def crc64_pure(data, crc=0):
    """Pure-Python CRC-64/Redis (slow; reference and fallback)."""
    table = _table()
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc


def crc64(data, crc=0):
    """CRC-64/Redis of ``data`` continuing from ``crc`` (0 to start)."""
    if _ANYCRC_MODEL is not None:
        return _ANYCRC_MODEL.calc(data, crc) if crc else _ANYCRC_MODEL.calc(data)
    return crc64_pure(data, crc)


def crc64_function():
    """The fastest available ``f(data, crc=0)`` (the C one when anycrc is installed)."""
    if _ANYCRC_MODEL is not None:
        return _ANYCRC_MODEL.calc
    return crc64_pure


def crc64_is_fast():
    return _ANYCRC_MODEL is not None


def restore_payload(value, version):
    """DUMP/RESTORE payload: ``value`` (type byte + serialized value) + 2-byte RDB version + CRC64 (all LE)."""
    body = bytes(value) + struct.pack("<H", version)
    return body + _U64.pack(crc64(body))


# --------------------------------------------------------------------------------------------------------------
# LZF (keys and aux strings only; values are never decoded)
# --------------------------------------------------------------------------------------------------------------
def lzf_decompress(data, expected_len):
    """Decompress LZF ``data`` that must produce exactly ``expected_len`` bytes (RdbError otherwise). The data is
    validated first without allocating anything, so an impossible declared size costs neither time nor memory."""
    data = bytes(data)
    try:
        return _lzf_decompress(data, 0, len(data), expected_len)
    except _Bad as exc:
        raise RdbError(str(exc)) from None


# --------------------------------------------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------------------------------------------
def parse_header(head):
    """Return the RDB version from the first 9 bytes; RdbError if they are not an RDB header.

    Redis writes ``REDIS`` + 4 digits; Valkey 9+ writes ``VALKEY`` + 3 digits for its own versions (80 and up).
    """
    head = bytes(head[:HEADER_LEN])
    if len(head) < HEADER_LEN:
        raise RdbError(f"not an RDB file: {len(head)} bytes, an RDB header alone is {HEADER_LEN} bytes")
    if head[:6] == VALKEY_MAGIC:
        digits = head[6:9]
        if not digits.isdigit():
            raise RdbError(f"not an RDB file: Valkey version field {digits!r} is not 3 digits")
        version = int(digits)
        if version < VALKEY_MAGIC_MIN_VERSION:
            raise RdbError(
                f"invalid RDB header {head!r}: Valkey writes versions below {VALKEY_MAGIC_MIN_VERSION} "
                "with the REDIS magic"
            )
        return version
    if head[:5] != MAGIC:
        raise RdbError(f"not an RDB file: starts with {head[:6]!r}, expected {MAGIC!r} or {VALKEY_MAGIC!r}")
    digits = head[5:9]
    if not digits.isdigit():
        raise RdbError(f"not an RDB file: version field {digits!r} is not 4 digits")
    version = int(digits)
    if version < 1:
        raise RdbError("RDB version 0 is invalid")
    if version >= VALKEY_MAGIC_MIN_VERSION:
        raise RdbError(f"invalid RDB header {head!r}: version {version} is only written with the VALKEY magic")
    return version


def describe_rdb_version(version):
    """Human description of an RDB version: which servers write it."""
    names = {
        1: "Redis 1.x",
        6: "Redis 2.6-2.8",
        7: "Redis 3.2",
        8: "Redis 4.0",
        9: "Redis 5.0-6.2",
        10: "Redis 7.0",
        11: "Redis 7.2 / Valkey 7.2-8.x",
        12: "Redis 7.4-8.4",
        13: "Redis 8.6",
        14: "Redis 8.8",
        80: "Valkey 9.0-9.1",
        81: "Valkey 9.2",
    }
    name = names.get(version)
    if name is None:
        name = "Valkey" if version >= VALKEY_MAGIC_MIN_VERSION else ("older Redis" if version < 6 else "unknown")
    return f"{version} ({name})"


def check_supported_version(version):
    if version > MAX_SUPPORTED_RDB_VERSION and version not in VALKEY_RDB_VERSIONS:
        raise RdbError(
            f"RDB version {describe_rdb_version(version)} is newer than this reader supports (Redis up to "
            f"{MAX_SUPPORTED_RDB_VERSION}, Valkey {', '.join(str(v) for v in VALKEY_RDB_VERSIONS)})"
        )


# --------------------------------------------------------------------------------------------------------------
# Low-level readers on a buffer. They return (value, new_pos); reading past ``end`` raises _Short.
# --------------------------------------------------------------------------------------------------------------
def _read_len(buf, pos, end):
    """Length encoding -> (value, is_encoded, pos)."""
    if pos >= end:
        raise _Short()
    first = buf[pos]
    kind = first >> 6
    if kind == 0:
        return first & 0x3F, False, pos + 1
    if kind == 1:
        if pos + 2 > end:
            raise _Short()
        return ((first & 0x3F) << 8) | buf[pos + 1], False, pos + 2
    if kind == 3:
        return first & 0x3F, True, pos + 1
    if first == 0x80:
        if pos + 5 > end:
            raise _Short()
        return _BE32.unpack_from(buf, pos + 1)[0], False, pos + 5
    if first == 0x81:
        if pos + 9 > end:
            raise _Short()
        return _BE64.unpack_from(buf, pos + 1)[0], False, pos + 9
    raise RdbError(f"invalid length encoding byte 0x{first:02x} at offset {pos}")


def _plain_len(buf, pos, end, what):
    value, encoded, pos = _read_len(buf, pos, end)
    if encoded:
        raise RdbError(f"{what} at offset {pos - 1} uses a string encoding where a length is required")
    return value, pos


def _lzf_lengths(buf, pos, end):
    """The two lengths after an LZF string marker -> (compressed, uncompressed, pos)."""
    clen, pos = _plain_len(buf, pos, end, "LZF compressed length")
    ulen, pos = _plain_len(buf, pos, end, "LZF uncompressed length")
    return clen, ulen, pos


def _skip_string(buf, pos, end):
    length, encoded, pos = _read_len(buf, pos, end)
    if encoded:
        if length == 0:
            pos += 1
        elif length == 1:
            pos += 2
        elif length == 2:
            pos += 4
        elif length == 3:
            clen, _ulen, pos = _lzf_lengths(buf, pos, end)
            pos += clen
        else:
            raise RdbError(f"unknown string encoding {length} at offset {pos - 1}")
    else:
        pos += length
    if pos > end:
        raise _Short()
    return pos


def _read_string(buf, pos, end):
    """Decode a string (keys, aux fields, function code) -> (bytes, pos)."""
    start = pos
    length, encoded, pos = _read_len(buf, pos, end)
    if not encoded:
        stop = pos + length
        if stop > end:
            raise _Short()
        return bytes(buf[pos:stop]), stop
    if length == 0:
        if pos + 1 > end:
            raise _Short()
        return str(struct.unpack_from("<b", buf, pos)[0]).encode(), pos + 1
    if length == 1:
        if pos + 2 > end:
            raise _Short()
        return str(struct.unpack_from("<h", buf, pos)[0]).encode(), pos + 2
    if length == 2:
        if pos + 4 > end:
            raise _Short()
        return str(struct.unpack_from("<i", buf, pos)[0]).encode(), pos + 4
    if length == 3:
        clen, ulen, pos = _lzf_lengths(buf, pos, end)
        if pos + clen > end:
            raise _Short()
        if ulen > MAX_KEY_BYTES:
            raise RdbError(
                f"LZF string at offset {start} declares {ulen} bytes, more than Redis accepts in a key or "
                f"field ({MAX_KEY_BYTES} bytes)"
            )
        try:
            return _lzf_decompress(buf, pos, pos + clen, ulen), pos + clen
        except _Bad as exc:
            raise RdbError(f"string at offset {start}: {exc}") from None
    raise RdbError(f"unknown string encoding {length} at offset {start}")


def _skip_key(buf, pos, end):
    """Skip a key (or other string) without decoding it; LZF is validated in place (no decompression), and a key
    larger than Redis accepts is refused."""
    start = pos
    length, encoded, pos = _read_len(buf, pos, end)
    if not encoded:
        if length > MAX_KEY_BYTES:
            raise RdbError(
                f"key at offset {start} is {length} bytes, more than Redis accepts in a key ({MAX_KEY_BYTES})"
            )
        pos += length
    elif length == 3:
        clen, ulen, pos = _lzf_lengths(buf, pos, end)
        if pos + clen > end:
            raise _Short()
        if ulen > MAX_KEY_BYTES:
            raise RdbError(
                f"LZF key at offset {start} declares {ulen} bytes, more than Redis accepts in a key "
                f"({MAX_KEY_BYTES} bytes)"
            )
        try:
            lzf_check(buf, pos, pos + clen, ulen)
        except _Bad as exc:
            raise RdbError(f"key at offset {start}: {exc}") from None
        pos += clen
    elif length < 3:
        pos += (1, 2, 4)[length]
    else:
        raise RdbError(f"unknown string encoding {length} at offset {start}")
    if pos > end:
        raise _Short()
    return pos


def _skip_module_opcodes(buf, pos, end):
    """Module serialization (type 7 / MODULE_AUX): opcodes until EOF (0)."""
    while True:
        opcode, pos = _plain_len(buf, pos, end, "module opcode")
        if opcode == 0:
            return pos
        if opcode in (1, 2):
            _value, pos = _plain_len(buf, pos, end, "module integer")
        elif opcode == 3:
            pos += 4
        elif opcode == 4:
            pos += 8
        elif opcode == 5:
            pos = _skip_string(buf, pos, end)
        else:
            raise RdbError(f"unknown module opcode {opcode} at offset {pos}")
        if pos > end:
            raise _Short()


def _skip_stream_pel(buf, pos, end, with_nack):
    count, pos = _plain_len(buf, pos, end, "stream PEL size")
    for _unused in range(count):
        pos += 16
        if with_nack:
            pos += 8
            _dc, pos = _plain_len(buf, pos, end, "stream delivery count")
        elif pos > end:
            raise _Short()
    return pos


def _skip_stream(buf, pos, end, rtype):
    nodes, pos = _plain_len(buf, pos, end, "stream node count")
    for _unused in range(nodes):
        pos = _skip_string(buf, pos, end)
        pos = _skip_string(buf, pos, end)
    # length, last_id ms, last_id seq
    for _unused in range(3):
        _v, pos = _plain_len(buf, pos, end, "stream metadata")
    if rtype >= 19:
        # first_id ms/seq, max_deleted_entry_id ms/seq, entries_added
        for _unused in range(5):
            _v, pos = _plain_len(buf, pos, end, "stream metadata")
    groups, pos = _plain_len(buf, pos, end, "stream consumer group count")
    for _unused in range(groups):
        pos = _skip_string(buf, pos, end)
        _ms, pos = _plain_len(buf, pos, end, "consumer group last id")
        _seq, pos = _plain_len(buf, pos, end, "consumer group last id")
        if rtype >= 19:
            _read, pos = _plain_len(buf, pos, end, "consumer group entries read")
        pos = _skip_stream_pel(buf, pos, end, True)
        consumers, pos = _plain_len(buf, pos, end, "stream consumer count")
        for _unused in range(consumers):
            pos = _skip_string(buf, pos, end)
            pos += 8  # seen time
            if rtype >= 21:
                pos += 8  # active time
            pos = _skip_stream_pel(buf, pos, end, False)
    if pos > end:
        raise _Short()
    return pos


def _skip_value(buf, pos, end, rtype):
    """Skip one serialized value of type ``rtype`` starting at ``pos`` (just after the type byte)."""
    if rtype == 0 or rtype in (9, 10, 11, 12, 13, 16, 17, 20):
        return _skip_string(buf, pos, end)
    if rtype in (1, 2, 14):
        count, pos = _plain_len(buf, pos, end, "element count")
        for _unused in range(count):
            pos = _skip_string(buf, pos, end)
        return pos
    if rtype == 4:
        count, pos = _plain_len(buf, pos, end, "hash field count")
        for _unused in range(count):
            pos = _skip_string(buf, pos, end)
            pos = _skip_string(buf, pos, end)
        return pos
    if rtype == 3:
        count, pos = _plain_len(buf, pos, end, "zset size")
        for _unused in range(count):
            pos = _skip_string(buf, pos, end)
            if pos >= end:
                raise _Short()
            dlen = buf[pos]
            pos += 1 if dlen >= 253 else 1 + dlen
        if pos > end:
            raise _Short()
        return pos
    if rtype == 5:
        count, pos = _plain_len(buf, pos, end, "zset size")
        for _unused in range(count):
            pos = _skip_string(buf, pos, end) + 8
        if pos > end:
            raise _Short()
        return pos
    if rtype == 18:
        count, pos = _plain_len(buf, pos, end, "quicklist node count")
        for _unused in range(count):
            _container, pos = _plain_len(buf, pos, end, "quicklist container")
            pos = _skip_string(buf, pos, end)
        return pos
    if rtype in (15, 19, 21):
        return _skip_stream(buf, pos, end, rtype)
    if rtype == 22:
        # Valkey 9 hash with field expiration: count, then (field, value, 8-byte expire ms) per field
        count, pos = _plain_len(buf, pos, end, "hash field count")
        for _unused in range(count):
            pos = _skip_string(buf, pos, end)
            pos = _skip_string(buf, pos, end) + 8
        if pos > end:
            raise _Short()
        return pos
    if rtype == 25:
        # hash listpack with field expirations: min expire (8 bytes) + listpack
        return _skip_string(buf, pos + 8, end)
    if rtype == 24:
        # hash with field expirations: min expire (8 bytes), count, then (ttl, field, value) per field
        pos += 8
        count, pos = _plain_len(buf, pos, end, "hash field count")
        for _unused in range(count):
            _ttl, pos = _plain_len(buf, pos, end, "hash field ttl")
            pos = _skip_string(buf, pos, end)
            pos = _skip_string(buf, pos, end)
        return pos
    if rtype == 7:
        if pos + 9 > end:
            raise _Short()
        _module_id, pos = _plain_len(buf, pos, end, "module id")
        return _skip_module_opcodes(buf, pos, end)
    if rtype == 6:
        raise RdbError("module value of the old type 6 cannot be sliced (not self-describing)")
    raise RdbError(f"unknown value type {rtype}")


# --------------------------------------------------------------------------------------------------------------
# Value validation: what Redis's loader checks with ``sanitize-dump-payload yes`` (rdbLoadObject with deep integrity
# validation), so a file that passes here neither fails halfway through a RESTORE nor takes down a server loading it.
# Each check raises _Bad(problem); the parser adds the key, its db, type and offset.
# --------------------------------------------------------------------------------------------------------------
class _Bad(Exception):
    """Internal: a value is malformed; the message says how (the caller names the key)."""


_LZF_MAX_RATIO = 88  # an LZF token of 3 bytes produces at most 264 bytes


def lzf_check(src, pos, stop, expected_len):
    """Validate LZF data src[pos:stop] without decompressing it: the tokens must cover the data exactly and produce
    exactly ``expected_len`` bytes, and every back-reference must point inside the output produced so far (what
    lzf_decompress checks). Memory: none; time: one step per token, at most ``stop - pos`` steps."""
    if expected_len == 0:
        raise _Bad("LZF string declares 0 uncompressed bytes")
    if expected_len > (stop - pos) * _LZF_MAX_RATIO:
        raise _Bad(
            f"LZF string declares {expected_len} uncompressed bytes from {stop - pos} compressed bytes, more "
            f"than LZF can produce ({_LZF_MAX_RATIO}x)"
        )
    out = 0
    i = pos
    while i < stop:
        ctrl = src[i]
        if ctrl < 32:
            i += ctrl + 2
            out += ctrl + 1
        elif ctrl >= 224:
            if i + 2 >= stop:
                raise _Bad("LZF back-reference truncated")
            if ((ctrl & 0x1F) << 8) + src[i + 2] >= out:
                raise _Bad("LZF back-reference before the start of the output")
            out += 9 + src[i + 1]
            i += 3
        else:
            if i + 1 >= stop:
                raise _Bad("LZF back-reference truncated")
            if ((ctrl & 0x1F) << 8) + src[i + 1] >= out:
                raise _Bad("LZF back-reference before the start of the output")
            out += (ctrl >> 5) + 2
            i += 2
    if i != stop:
        raise _Bad("LZF literal run past the end of the compressed string")
    if out != expected_len:
        raise _Bad(f"LZF string decompresses to {out} bytes, declared {expected_len}")


def _lzf_decompress(src, pos, stop, expected_len):
    """Decompress src[pos:stop] (validated as it goes); RdbError/_Bad on malformed data."""
    lzf_check(src, pos, stop, expected_len)
    out = bytearray()
    i = pos
    while i < stop:
        ctrl = src[i]
        if ctrl < 32:
            out += src[i + 1 : i + ctrl + 2]
            i += ctrl + 2
        else:
            length = ctrl >> 5
            if length == 7:
                length += src[i + 1]
                i += 1
            ref = len(out) - ((ctrl & 0x1F) << 8) - src[i + 1] - 1
            i += 2
            length += 2
            if ref + length <= len(out):
                out += out[ref : ref + length]
            else:
                for k in range(length):
                    out.append(out[ref + k])
    return bytes(out)


def _str_at(buf, pos, end):
    """A string inside a value -> (bytes, pos). Integer encodings give their decimal text, LZF is decompressed."""
    try:
        length, encoded, pos = _read_len(buf, pos, end)
        if not encoded:
            stop = pos + length
            if stop > end:
                raise _Bad(f"a string of {length} bytes runs past the end of the value")
            return bytes(buf[pos:stop]), stop
        if length == 3:
            clen, ulen, pos = _lzf_lengths(buf, pos, end)
            if pos + clen > end:
                raise _Bad("an LZF string runs past the end of the value")
            if ulen > MAX_CONTAINER_BYTES:
                lzf_check(buf, pos, pos + clen, ulen)
                raise _Bad(
                    f"an LZF-compressed element of {ulen} bytes is larger than this validator decompresses "
                    f"({MAX_CONTAINER_BYTES} bytes)"
                )
            return _lzf_decompress(buf, pos, pos + clen, ulen), pos + clen
        if length > 3:
            raise _Bad(f"unknown string encoding {length}")
        size = (1, 2, 4)[length]
        if pos + size > end:
            raise _Bad("an integer-encoded string runs past the end of the value")
        return str(int.from_bytes(buf[pos : pos + size], "little", signed=True)).encode(), pos + size
    except _Short:
        raise _Bad("a string runs past the end of the value") from None


_MEMBER_DECOMPRESS_MAX = 1024 * 1024


def _member_at(buf, pos, end):
    """A set/zset member or hash field -> (identity bytes, pos). Compressed members up to 1 MiB are compared by
    content; larger ones (Redis accepts members up to 512 MiB) are checked in place and compared by their compressed
    bytes, so memory stays bounded."""
    first = buf[pos] if pos < end else 0xFF
    if first == 0xC3:
        try:
            _c, _e, cpos = _read_len(buf, pos, end)
            clen, ulen, cpos = _lzf_lengths(buf, cpos, end)
        except _Short:
            raise _Bad("a string runs past the end of the value") from None
        if ulen > _MEMBER_DECOMPRESS_MAX:
            stop = _str_check(buf, pos, end)
            return b"\x00lzf" + bytes(buf[cpos : cpos + clen]), stop
    return _str_at(buf, pos, end)


def _str_check(buf, pos, end):
    """Skip a string inside a value, validating LZF without decompressing it -> pos."""
    try:
        length, encoded, pos = _read_len(buf, pos, end)
        if not encoded:
            pos += length
        elif length == 3:
            clen, ulen, pos = _lzf_lengths(buf, pos, end)
            if pos + clen > end:
                raise _Bad("an LZF string runs past the end of the value")
            lzf_check(buf, pos, pos + clen, ulen)
            pos += clen
        elif length < 3:
            pos += (1, 2, 4)[length]
        else:
            raise _Bad(f"unknown string encoding {length}")
    except _Short:
        raise _Bad("a string runs past the end of the value") from None
    if pos > end:
        raise _Bad("a string runs past the end of the value")
    return pos


def _len_at(buf, pos, end, what):
    try:
        return _plain_len(buf, pos, end, what)
    except _Short:
        raise _Bad(f"{what} runs past the end of the value") from None


# -- listpack ------------------------------------------------------------------------------------------------------
_LP_FIXED = {0xF1: 3, 0xF2: 4, 0xF3: 5, 0xF4: 9}


def _backlen_size(size):
    if size < 128:
        return 1
    if size < 16383:
        return 2
    if size < 2097151:
        return 3
    if size < 268435455:
        return 4
    return 5


def _backlen_ok(lp, q, size):
    """The back-length bytes at lp[q:] encode ``size`` (lpEncodeBacklen: 7 bits per byte, most significant first,
    every byte but the first with the high bit set)."""
    count = _backlen_size(size)
    for k in range(count):
        shift = 7 * (count - 1 - k)
        want = (size >> shift) & 127
        if k:
            want |= 128
        if lp[q + k] != want:
            return False
    return True


def listpack_entries(lp, values=True):
    """Validate a listpack blob as lpValidateIntegrity(deep) does; return its entries (ints or bytes) when ``values``,
    else their count. Raises _Bad."""
    count, out = _lp_walk(lp, 1 if values else 0)
    return out if values else count


def _lp_walk(lp, step):
    """Walk and validate a listpack -> (entry count, values of entries 0, step, 2*step, ...; none when step is 0)."""
    n = len(lp)
    if n < 7:
        raise _Bad(f"listpack of {n} bytes is shorter than its header and terminator")
    total = lp[0] | (lp[1] << 8) | (lp[2] << 16) | (lp[3] << 24)
    if total != n:
        raise _Bad(f"listpack header says {total} bytes, the string holds {n}")
    last = n - 1
    if lp[last] != 0xFF:
        raise _Bad("listpack does not end with its 0xFF terminator")
    declared = lp[4] | (lp[5] << 8)
    out = []
    append = out.append
    seen = 0
    want = 1 if step else -1  # countdown to the next entry whose value is kept
    p = 6
    while p < last:
        b = lp[p]
        want -= 1
        if b < 0x80:  # 7-bit unsigned integer: 1 byte + back-length 1
            if lp[p + 1] != 1:
                raise _Bad(f"listpack entry at byte {p} has a wrong back-length")
            if not want:
                append(b)
                want = step
            p += 2
            seen += 1
            continue
        if b < 0xC0:  # string up to 63 bytes
            size = 1 + (b & 0x3F)
            if not want:
                append(lp[p + 1 : p + size])
        elif b < 0xE0:  # 13-bit signed integer
            size = 2
            if not want:
                v = ((b & 0x1F) << 8) | lp[p + 1]
                append(v - 8192 if v >= 4096 else v)
        elif b < 0xF0:  # string up to 4095 bytes
            size = 2 + (((b & 0x0F) << 8) | lp[p + 1])
            if not want:
                append(lp[p + 2 : p + size])
        elif b == 0xF0:  # string with a 32-bit length
            if p + 5 > last:
                raise _Bad(f"listpack entry at byte {p} runs past the end")
            size = 5 + int.from_bytes(lp[p + 1 : p + 5], "little")
            if not want:
                append(lp[p + 5 : p + size])
        else:
            size = _LP_FIXED.get(b)
            if size is None:
                raise _Bad(f"listpack entry at byte {p} has the invalid encoding byte 0x{b:02x}")
            if not want:
                append(int.from_bytes(lp[p + 1 : p + size], "little", signed=True))
        if not want:
            want = step
        q = p + size
        if size < 128:
            if q >= last or lp[q] != size:
                raise _Bad(f"listpack entry at byte {p} runs past the end or has a wrong back-length")
            p = q + 1
        else:
            bl = _backlen_size(size)
            if q + bl > last or not _backlen_ok(lp, q, size):
                raise _Bad(f"listpack entry at byte {p} runs past the end or has a wrong back-length")
            p = q + bl
        seen += 1
    if declared != 65535 and declared != seen:
        raise _Bad(f"listpack header says {declared} entries, it holds {seen}")
    return seen, out


def _canon(value):
    """Entries compare as Redis compares them: integers by their decimal text."""
    return value if isinstance(value, bytes) else str(value).encode()


def _no_dups(items, what):
    """No two items equal, integers compared by their decimal text as Redis compares them."""
    unique = set(items)
    if len(unique) == len(items) and int not in set(map(type, unique)):
        return
    seen = set()
    for item in items:
        item = _canon(item)
        if item in seen:
            raise _Bad(f"duplicate {what} {item[:40]!r}")
        seen.add(item)


def _lp_pairs(lp, what, group=2):
    """A hash/sorted-set listpack: entries in groups of ``group``, no duplicate field/member, not empty."""
    count, fields = _lp_walk(lp, group)
    if not count:
        raise _Bad(f"empty {what} (Redis refuses empty keys)")
    if count % group:
        raise _Bad(f"{what} listpack has {count} entries, not a multiple of {group}")
    if count > group:
        _no_dups(fields, "field" if what == "hash" else "member")


# -- ziplist -------------------------------------------------------------------------------------------------------
_ZL_INT_SIZES = {0xC0: 2, 0xD0: 4, 0xE0: 8, 0xF0: 3, 0xFE: 1}


def ziplist_entries(zl):
    """Validate a ziplist blob as ziplistValidateIntegrity(deep) does; return its entries (ints or bytes)."""
    n = len(zl)
    if n < 11:
        raise _Bad(f"ziplist of {n} bytes is shorter than its header and terminator")
    total = int.from_bytes(zl[0:4], "little")
    if total != n:
        raise _Bad(f"ziplist header says {total} bytes, the string holds {n}")
    tail = int.from_bytes(zl[4:8], "little")
    declared = zl[8] | (zl[9] << 8)
    if zl[n - 1] != 0xFF:
        raise _Bad("ziplist does not end with its 0xFF terminator")
    last = n - 1
    p = 10
    prev = 0
    prev_start = None
    out = []
    while p < last:
        start = p
        b = zl[p]
        if b < 0xFE:
            prevlen = b
            p += 1
        elif b == 0xFE:
            if p + 5 > last:
                raise _Bad(f"ziplist entry at byte {start} runs past the end")
            prevlen = int.from_bytes(zl[p + 1 : p + 5], "little")
            p += 5
        else:
            raise _Bad(f"ziplist entry at byte {start} starts with 0xFF")
        if prevlen != prev:
            raise _Bad(f"ziplist entry at byte {start} records a previous entry of {prevlen} bytes, it was {prev}")
        if p >= last:
            raise _Bad(f"ziplist entry at byte {start} runs past the end")
        e = zl[p]
        kind = e >> 6
        if kind == 0:
            data, p = p + 1, p + 1 + (e & 0x3F)
            value = zl[data:p]
        elif kind == 1:
            if p + 2 > last:
                raise _Bad(f"ziplist entry at byte {start} runs past the end")
            data, p = p + 2, p + 2 + (((e & 0x3F) << 8) | zl[p + 1])
            value = zl[data:p]
        elif kind == 2:
            if e != 0x80 or p + 5 > last:
                raise _Bad(f"ziplist entry at byte {start} has an invalid string encoding")
            data, p = p + 5, p + 5 + int.from_bytes(zl[p + 1 : p + 5], "big")
            value = zl[data:p]
        elif 0xF1 <= e <= 0xFD:
            value = (e & 0x0F) - 1
            p += 1
        else:
            size = _ZL_INT_SIZES.get(e)
            if size is None:
                raise _Bad(f"ziplist entry at byte {start} has the invalid encoding byte 0x{e:02x}")
            value = int.from_bytes(zl[p + 1 : p + 1 + size], "little", signed=True)
            p += 1 + size
        if p > last:
            raise _Bad(f"ziplist entry at byte {start} runs past the end")
        out.append(value)
        prev = p - start
        prev_start = start
    if declared != 65535 and declared != len(out):
        raise _Bad(f"ziplist header says {declared} entries, it holds {len(out)}")
    if (prev_start if prev_start is not None else 10) != tail:
        raise _Bad(f"ziplist tail offset {tail} does not point at its last entry")
    return out


def _zl_pairs(zl, what):
    entries = ziplist_entries(zl)
    if not entries:
        raise _Bad(f"empty {what} (Redis refuses empty keys)")
    if len(entries) % 2:
        raise _Bad(f"{what} ziplist has an odd number of entries ({len(entries)})")
    _no_dups(entries[::2], "field" if what == "hash" else "member")


# -- intset, zipmap ------------------------------------------------------------------------------------------------
def intset_check(blob):
    """intsetValidateIntegrity(deep): encoding 2/4/8, size = 8 + count * encoding, non-empty, strictly ascending."""
    n = len(blob)
    if n < 8:
        raise _Bad(f"intset of {n} bytes is shorter than its header")
    enc = int.from_bytes(blob[0:4], "little")
    count = int.from_bytes(blob[4:8], "little")
    if enc not in (2, 4, 8):
        raise _Bad(f"intset has the invalid encoding {enc}")
    if 8 + count * enc != n:
        raise _Bad(f"intset header says {count} integers of {enc} bytes, the string holds {n - 8} bytes")
    if not count:
        raise _Bad("empty intset (Redis refuses empty keys)")
    fmt = {2: "<%dh", 4: "<%di", 8: "<%dq"}[enc] % count
    values = struct.unpack_from(fmt, blob, 8)
    for k in range(1, count):
        if values[k] <= values[k - 1]:
            raise _Bad(f"intset integers are not strictly ascending ({values[k - 1]} then {values[k]})")


def zipmap_check(zm):
    """zipmapValidateIntegrity(deep) and the loader's duplicate check."""
    n = len(zm)
    if n < 2:
        raise _Bad(f"zipmap of {n} bytes is too short")
    declared = zm[0]
    last = n - 1
    if zm[last] != 0xFF:
        raise _Bad("zipmap does not end with its 0xFF terminator")
    p = 1
    fields = []
    while p < last:
        for role in (0, 1):
            b = zm[p]
            if b < 254:
                length, p = b, p + 1
            elif b == 254:
                if p + 5 > last:
                    raise _Bad("zipmap length runs past the end")
                length, p = int.from_bytes(zm[p + 1 : p + 5], "little"), p + 5
            else:
                raise _Bad(f"zipmap entry at byte {p} ends early")
            if role == 0:
                if p + length > last:
                    raise _Bad("zipmap field runs past the end")
                fields.append(zm[p : p + length])
                p += length
            else:
                if p >= last:
                    raise _Bad("zipmap value runs past the end")
                free = zm[p]
                p += 1 + length + free
                if p > last:
                    raise _Bad("zipmap value runs past the end")
    if declared < 254 and declared != len(fields):
        raise _Bad(f"zipmap header says {declared} fields, it holds {len(fields)}")
    if not fields:
        raise _Bad("empty zipmap (Redis refuses empty keys)")
    _no_dups(fields, "field")


# -- streams -------------------------------------------------------------------------------------------------------
def _lp_int(value):
    if isinstance(value, int):
        return value
    if 0 < len(value) <= 20 and value.lstrip(b"-").isdigit() and str(int(value)).encode() == value:
        num = int(value)
        if -(2**63) <= num < 2**63:
            return num
    raise _Bad(f"stream listpack holds {value[:20]!r} where an integer is required")


def stream_listpack_check(lp):
    """streamValidateListpackIntegrity(deep): master entry, then entries whose field counts add up."""
    entries = listpack_entries(lp)
    if not entries:
        raise _Bad("empty listpack inside the stream")
    n = len(entries)

    def need(i):
        if i >= n:
            raise _Bad("stream listpack ends inside an entry")
        return entries[i]

    count = _lp_int(need(0))
    deleted = _lp_int(need(1))
    master_fields = _lp_int(need(2))
    if master_fields < 0:
        raise _Bad("stream listpack declares a negative field count")
    i = 3 + master_fields
    if _lp_int(need(i)) != 0:
        raise _Bad("stream listpack master entry is not terminated by 0")
    i += 1
    total = count + deleted
    if total < 0 or total > n:
        raise _Bad(f"stream listpack declares {count} + {deleted} entries, it cannot hold them")
    for _unused in range(total):
        flags = _lp_int(need(i))
        _lp_int(need(i + 1))
        _lp_int(need(i + 2))
        i += 3
        fields = master_fields
        extra = 3
        if not flags & 2:  # STREAM_ITEM_FLAG_SAMEFIELDS
            fields = _lp_int(need(i))
            if fields < 0:
                raise _Bad("stream entry declares a negative field count")
            i += 1 + fields
            extra += fields + 1
        i += fields
        if _lp_int(need(i)) != fields + extra:
            raise _Bad("stream entry count field (lp-count) does not match its fields")
        i += 1
    if i != n:
        raise _Bad(f"stream listpack holds {n - i} entries after its last declared entry")


def _stream_check(buf, pos, end, rtype):
    nodes, pos = _len_at(buf, pos, end, "stream node count")
    node_keys = set()
    for _unused in range(nodes):
        key, pos = _str_at(buf, pos, end)
        if len(key) != 16:
            raise _Bad(f"stream node key is {len(key)} bytes, not a 16-byte stream ID")
        if key in node_keys:
            raise _Bad("stream node key repeated (listpack re-added with an existing key)")
        node_keys.add(key)
        blob, pos = _str_at(buf, pos, end)
        stream_listpack_check(blob)
    length, pos = _len_at(buf, pos, end, "stream length")
    for _unused in range(2 if rtype < 19 else 7):
        _v, pos = _len_at(buf, pos, end, "stream metadata")
    if length and not nodes:
        raise _Bad(f"stream length {length} but no entries")
    groups, pos = _len_at(buf, pos, end, "stream consumer group count")
    names = set()
    for _unused in range(groups):
        name, pos = _str_at(buf, pos, end)
        if name in names:
            raise _Bad(f"duplicate consumer group {name[:40]!r}")
        names.add(name)
        for _field in range(2 if rtype < 19 else 3):
            _v, pos = _len_at(buf, pos, end, "consumer group metadata")
        pel_size, pos = _len_at(buf, pos, end, "stream PEL size")
        pel = {}
        for _entry in range(pel_size):
            if pos + 24 > end:
                raise _Bad("consumer group PEL runs past the end of the value")
            rid = bytes(buf[pos : pos + 16])
            if rid in pel:
                raise _Bad(f"consumer group {name[:40]!r} lists PEL entry {_stream_id(rid)} twice")
            pel[rid] = False
            _dc, pos = _len_at(buf, pos + 24, end, "stream delivery count")
        consumers, pos = _len_at(buf, pos, end, "stream consumer count")
        cnames = set()
        for _consumer in range(consumers):
            cname, pos = _str_at(buf, pos, end)
            if cname in cnames:
                raise _Bad(f"consumer group {name[:40]!r} has the consumer {cname[:40]!r} twice")
            cnames.add(cname)
            pos += 16 if rtype >= 21 else 8
            cpel, pos = _len_at(buf, pos, end, "consumer PEL size")
            for _entry in range(cpel):
                if pos + 16 > end:
                    raise _Bad("consumer PEL runs past the end of the value")
                rid = bytes(buf[pos : pos + 16])
                pos += 16
                owned = pel.get(rid)
                if owned is None:
                    raise _Bad(
                        f"consumer {cname[:40]!r} of group {name[:40]!r} has pending entry {_stream_id(rid)} "
                        "that is not in the group PEL"
                    )
                if owned:
                    raise _Bad(f"pending entry {_stream_id(rid)} of group {name[:40]!r} is owned by two consumers")
                pel[rid] = True
        for rid, owned in pel.items():
            if not owned:
                raise _Bad(f"pending entry {_stream_id(rid)} of group {name[:40]!r} has no consumer")
    if pos != end:
        raise _Bad("stream value does not end where its structure ends")


def _stream_id(raw):
    return f"{int.from_bytes(raw[:8], 'big')}-{int.from_bytes(raw[8:], 'big')}"


# -- per type ------------------------------------------------------------------------------------------------------
def _members(buf, pos, end, count, what, paired):
    """``count`` strings (or field/value pairs) -> pos; duplicates of the first of each group are refused."""
    if not count:
        raise _Bad(f"empty {what} (Redis refuses empty keys)")
    seen = set()
    for _unused in range(count):
        first = buf[pos] if pos < end else 0xFF
        if first < 0x40:  # plain string up to 63 bytes, the usual member
            member = bytes(buf[pos + 1 : pos + 1 + first])
            pos += 1 + first
            if pos > end:
                raise _Bad("a string runs past the end of the value")
        else:
            member, pos = _member_at(buf, pos, end)
        if member in seen:
            raise _Bad(f"duplicate {'field' if what == 'hash' else 'member'} {member[:40]!r}")
        seen.add(member)
        if paired:
            pos = _str_check(buf, pos, end)
    return pos


def _check_value(buf, pos, end, rtype, version):
    """Validate the value of type ``rtype`` in buf[pos:end]; raise _Bad naming the problem."""
    if rtype == 0:
        _str_check(buf, pos, end)
    elif rtype in _BLOB_CHECKS:
        blob, _unused = _str_at(buf, pos, end)
        _BLOB_CHECKS[rtype](blob)
    elif rtype in (18, 14):
        nodes, pos = _len_at(buf, pos, end, "quicklist node count")
        if not nodes:
            raise _Bad("empty list (Redis refuses empty keys)")
        items = 0
        for _unused in range(nodes):
            container = 2
            if rtype == 18:
                container, pos = _len_at(buf, pos, end, "quicklist container")
                if container not in (1, 2):
                    raise _Bad(f"quicklist node container {container} is neither 1 (plain) nor 2 (packed)")
            if container == 1:
                start = pos
                pos = _str_check(buf, pos, end)
                if buf[start] == 0:
                    raise _Bad("empty quicklist node")
                items += 1
                continue
            blob, pos = _str_at(buf, pos, end)
            if not blob:
                raise _Bad("empty quicklist node")
            items += listpack_entries(blob, False) if rtype == 18 else len(ziplist_entries(blob))
        if not items:
            raise _Bad("empty list (Redis refuses empty keys)")
    elif rtype in (1, 2):
        count, pos = _len_at(buf, pos, end, "element count")
        if rtype == 2:
            _members(buf, pos, end, count, "set", False)
        elif not count:
            raise _Bad("empty list (Redis refuses empty keys)")
        else:
            for _unused in range(count):
                pos = _str_check(buf, pos, end)
    elif rtype == 4:
        count, pos = _len_at(buf, pos, end, "hash field count")
        _members(buf, pos, end, count, "hash", True)
    elif rtype in (3, 5):
        count, pos = _len_at(buf, pos, end, "sorted set size")
        if not count:
            raise _Bad("empty sorted set (Redis refuses empty keys)")
        seen = set()
        for _unused in range(count):
            member, pos = _member_at(buf, pos, end)
            if member in seen:
                raise _Bad(f"duplicate member {member[:40]!r}")
            seen.add(member)
            if rtype == 5:
                if pos + 8 > end:
                    raise _Bad("a score runs past the end of the value")
                score = struct.unpack_from("<d", buf, pos)[0]
                pos += 8
            else:
                dlen = buf[pos]
                if dlen == 253:
                    score = float("nan")
                elif dlen >= 254:
                    score = 0.0
                else:
                    text = bytes(buf[pos + 1 : pos + 1 + dlen])
                    try:
                        score = float(text)
                    except ValueError:
                        raise _Bad(f"score {text[:40]!r} of member {member[:40]!r} is not a number") from None
                    pos += dlen
                pos += 1
            if math.isnan(score):
                raise _Bad(f"member {member[:40]!r} has a NaN score")
    elif rtype in (15, 19, 21):
        _stream_check(buf, pos, end, rtype)
    elif rtype == 22:
        if version < VALKEY_MAGIC_MIN_VERSION:
            raise _Bad("type 22 is a Valkey 9 hash with field expiration, not valid in a Redis RDB")
        count, pos = _len_at(buf, pos, end, "hash field count")
        if not count:
            raise _Bad("empty hash (Redis refuses empty keys)")
        seen = set()
        for _unused in range(count):
            field, pos = _member_at(buf, pos, end)
            if field in seen:
                raise _Bad(f"duplicate field {field[:40]!r}")
            seen.add(field)
            pos = _str_check(buf, pos, end) + 8
    elif rtype in (24, 25) and version >= VALKEY_MAGIC_MIN_VERSION:
        raise _Bad(f"type {rtype} is a Redis 7.4+ type, not valid in a Valkey RDB")
    elif rtype == 25:
        blob, _unused = _str_at(buf, pos + 8, end)
        _lp_pairs(blob, "hash", group=3)
    elif rtype == 24:
        count, pos = _len_at(buf, pos + 8, end, "hash field count")
        if not count:
            raise _Bad("empty hash (Redis refuses empty keys)")
        seen = set()
        for _unused in range(count):
            _ttl, pos = _len_at(buf, pos, end, "hash field ttl")
            field, pos = _member_at(buf, pos, end)
            if field in seen:
                raise _Bad(f"duplicate field {field[:40]!r}")
            seen.add(field)
            pos = _str_check(buf, pos, end)


def _set_listpack_check(blob):
    entries = listpack_entries(blob)
    if not entries:
        raise _Bad("empty set (Redis refuses empty keys)")
    if len(entries) > 1:
        _no_dups(entries, "member")


def _list_ziplist_check(blob):
    if not ziplist_entries(blob):
        raise _Bad("empty list (Redis refuses empty keys)")


# value types stored as one string (a container blob), when that string is neither compressed nor int-encoded
_BLOB_CHECKS = {
    16: lambda blob: _lp_pairs(blob, "hash"),
    17: lambda blob: _lp_pairs(blob, "sorted set"),
    20: _set_listpack_check,
    11: intset_check,
    10: _list_ziplist_check,
    12: lambda blob: _zl_pairs(blob, "sorted set"),
    13: lambda blob: _zl_pairs(blob, "hash"),
    9: zipmap_check,
}


def check_value(buf, pos, end, rtype, version=MAX_SUPPORTED_RDB_VERSION):
    """Public wrapper: validate one serialized value; returns None or the problem as text."""
    try:
        _check_value(buf, pos, end, rtype, version)
    except _Bad as exc:
        return str(exc)
    except (RdbError, _Short, IndexError, ValueError, struct.error) as exc:
        return f"malformed value ({exc.__class__.__name__}: {exc})" if str(exc) else "malformed value"
    return None


# --------------------------------------------------------------------------------------------------------------
# Record parser
# --------------------------------------------------------------------------------------------------------------
class KeyRecord:
    """One key: db, key bytes, type byte offset ``start``, value bytes [vpos, end), expire (ms since epoch) or None."""

    __slots__ = ("db", "key", "rtype", "start", "vpos", "end", "expire_ms", "idle", "freq")

    def __init__(self, db, key, rtype, start, vpos, end, expire_ms, idle, freq):
        self.db = db
        self.key = key
        self.rtype = rtype
        self.start = start
        self.vpos = vpos
        self.end = end
        self.expire_ms = expire_ms
        self.idle = idle
        self.freq = freq


class RdbSummary:
    """What a full pass over an RDB learnt."""

    def __init__(self):
        self.version = None
        self.aux = {}
        self.keys_per_db = {}
        self.resize_hints = {}
        self.expires_per_db = {}
        self.type_counts = {}
        self.functions = []  # decoded library sources
        self.function_sections = []  # raw (start, end) of the 0xF5 opcode sections
        self.module_aux = 0
        self.checksum_stored = None
        self.checksum_computed = None
        self.size = 0
        self.eof_offset = None

    @property
    def module_keys(self):
        return sum(self.type_counts.get(t, 0) for t in MODULE_TYPES)

    def types(self):
        out = {}
        for rtype, count in self.type_counts.items():
            name = TYPE_NAMES.get(rtype, str(rtype))
            out[name] = out.get(name, 0) + count
        return dict(sorted(out.items()))

    def as_dict(self):
        return {
            "rdb_version": self.version,
            "redis_version": self.aux.get("redis-ver") or self.aux.get("valkey-ver"),
            "keys_per_db": {str(k): v for k, v in sorted(self.keys_per_db.items())},
            "expires_per_db": {str(k): v for k, v in sorted(self.expires_per_db.items())},
            "keys": sum(self.keys_per_db.values()),
            "types": self.types(),
            "functions": len(self.functions),
            "module_aux": self.module_aux,
            "module_keys": self.module_keys,
            "checksum": None if self.checksum_stored is None else f"{self.checksum_stored:016x}",
            "size": self.size,
        }


def _aux_text(value):
    return value.decode("utf-8", "replace")


class _Parser:
    """Parse records from a buffer. ``feed`` mode keeps state across chunks (streaming)."""

    def __init__(self, summary):
        self.summary = summary
        self.db = 0
        self.expire = None
        self.idle = None
        self.freq = None
        self.done = False
        self.header_only = False
        self.header_done = False
        self.pos = 0
        self.checkpoints = None  # with want_keys=False: (offset, db) after every checkpoint_every keys
        self.checkpoint_every = 0
        self.validate = False  # check every value as Redis's loader does with sanitize-dump-payload yes
        self.version = summary.version or MAX_SUPPORTED_RDB_VERSION

    def parse(self, buf, pos, end, want_keys):
        """Yield KeyRecord (when want_keys) and advance; return via StopIteration the position reached.

        Raises _Short when a record is incomplete; the caller rewinds to ``self.pos`` (start of that record).
        """
        summary = self.summary
        keys_per_db = summary.keys_per_db
        type_counts = summary.type_counts
        single = _SINGLE_STRING_TYPES
        header_only = self.header_only
        checkpoints = self.checkpoints
        countdown = self.checkpoint_every
        validate = self.validate
        version = self.version
        self.pos = pos
        while pos < end:
            op = buf[pos]
            if op < OP_KEY_META:
                if header_only:
                    self.header_done = True
                    return
                rtype = op
                start = pos
                # key: fast path for a plain short length (the key bytes are only sliced when records are wanted)
                first = buf[pos + 1] if pos + 1 < end else -1
                if 0 <= first < 64:
                    vpos = pos + 2 + first
                    if vpos > end:
                        raise _Short()
                    key = buf[pos + 2 : vpos] if want_keys else None
                elif want_keys:
                    key, vpos = _read_string(buf, pos + 1, end)
                else:
                    key = None
                    vpos = _skip_key(buf, pos + 1, end)
                if rtype in single:
                    # inline fast paths for 6- and 14-bit plain lengths and for LZF strings whose two lengths are
                    # 6-bit (most small values); everything else through _skip_string
                    first = buf[vpos] if vpos < end else 0xFF
                    if first < 0x40:
                        pos = vpos + 1 + first
                    elif first < 0x80 and vpos + 1 < end:
                        pos = vpos + 2 + (((first & 0x3F) << 8) | buf[vpos + 1])
                    elif first == 0xC3 and vpos + 2 < end and buf[vpos + 1] < 0x40 and buf[vpos + 2] < 0x40:
                        pos = vpos + 3 + buf[vpos + 1]
                    else:
                        pos = _skip_string(buf, vpos, end)
                elif rtype in TYPE_NAMES:
                    pos = _skip_value(buf, vpos, end, rtype)
                else:
                    raise RdbError(f"unknown value type {rtype} at offset {pos}")
                if pos > end:
                    raise _Short()
                if validate:
                    try:
                        if (
                            rtype == 18
                            and buf[vpos] == 1
                            and buf[vpos + 1] == 2
                            and buf[vpos + 2] < 0x40
                            and vpos + 3 + buf[vpos + 2] == pos
                        ):
                            # the common list: one packed node, a listpack of < 64 bytes
                            if not _lp_walk(bytes(buf[vpos + 3 : pos]), 0)[0]:
                                raise _Bad("empty list (Redis refuses empty keys)")
                        elif rtype not in single:
                            _check_value(buf, vpos, pos, rtype, version)
                        elif first < 0x40:
                            if rtype:
                                _BLOB_CHECKS[rtype](bytes(buf[vpos + 1 : pos]))
                        elif first < 0x80:
                            if rtype:
                                _BLOB_CHECKS[rtype](bytes(buf[vpos + 2 : pos]))
                        elif first == 0xC3 and rtype == 0 and buf[vpos + 1] < 0x40 and buf[vpos + 2] < 0x40:
                            lzf_check(buf, vpos + 3, pos, buf[vpos + 2])
                        elif rtype or first == 0xC3:
                            _check_value(buf, vpos, pos, rtype, version)
                    except _Bad as exc:
                        raise RdbError(f"{_key_label(buf, start, vpos, self.db)}: {exc}") from None
                    except (_Short, IndexError, ValueError, struct.error) as exc:
                        raise RdbError(
                            f"{_key_label(buf, start, vpos, self.db)}: malformed value ({exc.__class__.__name__})"
                        ) from None
                db = self.db
                keys_per_db[db] = keys_per_db.get(db, 0) + 1
                type_counts[rtype] = type_counts.get(rtype, 0) + 1
                expire = self.expire
                if expire is not None:
                    summary.expires_per_db[db] = summary.expires_per_db.get(db, 0) + 1
                if want_keys:
                    rec = KeyRecord(db, key, rtype, start, vpos, pos, expire, self.idle, self.freq)
                    self.expire = self.idle = self.freq = None
                    self.pos = pos
                    yield rec
                else:
                    self.expire = self.idle = self.freq = None
                    self.pos = pos
                    if checkpoints is not None:
                        countdown -= 1
                        if not countdown:
                            checkpoints.append((pos, db))
                            countdown = self.checkpoint_every
                continue
            if header_only and op in (OP_SELECTDB, OP_RESIZEDB, OP_EXPIRETIME_MS, OP_EXPIRETIME, OP_IDLE, OP_FREQ):
                self.header_done = True
                return
            if op == OP_EXPIRETIME_MS:
                if pos + 9 > end:
                    raise _Short()
                self.expire = _I64.unpack_from(buf, pos + 1)[0]
                pos += 9
            elif op == OP_EXPIRETIME:
                if pos + 5 > end:
                    raise _Short()
                self.expire = _U32.unpack_from(buf, pos + 1)[0] * 1000
                pos += 5
            elif op == OP_IDLE:
                self.idle, pos = _plain_len(buf, pos + 1, end, "idle time")
            elif op == OP_FREQ:
                if pos + 2 > end:
                    raise _Short()
                self.freq = buf[pos + 1]
                pos += 2
            elif op == OP_SELECTDB:
                db, pos = _plain_len(buf, pos + 1, end, "db number")
                if db > 1_000_000:
                    raise RdbError(f"db number {db} at offset {self.pos} is implausible")
                self.db = db
            elif op == OP_RESIZEDB:
                size, pos = _plain_len(buf, pos + 1, end, "db size")
                expires, pos = _plain_len(buf, pos, end, "expires size")
                summary.resize_hints[self.db] = (size, expires)
            elif op == OP_AUX:
                key, pos = _read_string(buf, pos + 1, end)
                value, pos = _read_string(buf, pos, end)
                summary.aux[_aux_text(key)] = _aux_text(value)
            elif op == OP_FUNCTION2:
                start = pos
                code, pos = _read_string(buf, pos + 1, end)
                summary.functions.append(code)
                summary.function_sections.append((start, pos))
            elif op == OP_FUNCTION_PRE_GA:
                raise RdbError(f"pre-release Redis 7.0 function format (opcode 0xF6) at offset {pos} is not supported")
            elif op == OP_MODULE_AUX:
                _module_id, pos = _plain_len(buf, pos + 1, end, "module id")
                _when_op, pos = _plain_len(buf, pos, end, "module aux when opcode")
                _when, pos = _plain_len(buf, pos, end, "module aux when")
                pos = _skip_module_opcodes(buf, pos, end)
                summary.module_aux += 1
            elif op == OP_SLOT_INFO:
                pos += 1
                for _field in range(3):
                    _v, pos = _plain_len(buf, pos, end, "slot info")
            elif op == OP_EOF:
                self.pos = pos
                self.done = True
                return
            else:
                raise RdbError(f"unknown opcode 0x{op:02x} at offset {pos}")
            if pos > end:
                raise _Short()
            self.pos = pos


def _key_label(buf, start, vpos, db):
    """'key b'name' (db 0, hash, offset 123)' for error messages (long or compressed keys shortened)."""
    try:
        first = buf[start + 1]
        if first >= 0xC0 and first != 0xC3:
            key, _unused = _read_string(buf, start + 1, vpos)
        elif first == 0xC3 and vpos - start < 4096:
            key, _unused = _read_string(buf, start + 1, vpos)
        elif first < 0xC0:
            length, _unused, kpos = _read_len(buf, start + 1, vpos)
            key = bytes(buf[kpos : kpos + min(length, 200)])
        else:
            key = b"<compressed key>"
    except (RdbError, _Short, IndexError, ValueError):
        key = b"?"
    rtype = buf[start]
    name = TYPE_NAMES.get(rtype, f"type {rtype}")
    return f"key {bytes(key[:200])!r} (db {db}, {name}, type {rtype}, offset {start})"


def _wrap(exc, offset):
    if isinstance(exc, RdbError):
        return exc
    if isinstance(exc, _Short):
        return RdbError(f"RDB is truncated: a record starting at offset {offset} runs past the end of the data")
    return RdbError(f"malformed RDB near offset {offset}: {exc.__class__.__name__}: {exc}")


class RdbFile:
    """An RDB held in a buffer (bytes, bytearray, memoryview or mmap)."""

    def __init__(self, buf, check_crc=True, allow_unsupported_version=False):
        if isinstance(buf, (bytearray, memoryview)):
            buf = bytes(buf)
        self.buf = buf
        self.check_crc = check_crc
        try:
            self.version = parse_header(buf[:HEADER_LEN])
        except RdbError:
            raise
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise RdbError(f"cannot read RDB header: {exc}") from None
        if not allow_unsupported_version:
            check_supported_version(self.version)
        self.summary = RdbSummary()
        self.summary.version = self.version
        self.summary.size = len(buf)

    def records(self, validate=True):
        """Yield KeyRecord for every key (each value validated first unless ``validate`` is false); at the end the
        summary is complete and the trailer checked."""
        buf = self.buf
        end = len(buf)
        parser = _Parser(self.summary)
        parser.validate = validate
        try:
            yield from parser.parse(buf, HEADER_LEN, end, True)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise _wrap(exc, parser.pos) from None
        if not parser.done:
            raise RdbError(f"RDB is truncated: no EOF opcode (0xFF) before the end of the data at offset {end}")
        self._check_trailer(parser.pos)

    def _check_trailer(self, eof_pos):
        buf = self.buf
        end = len(buf)
        self.summary.eof_offset = eof_pos
        trailer_start = eof_pos + 1
        if self.version >= 5:
            if end < trailer_start + 8:
                raise RdbError(f"RDB is truncated: the 8-byte CRC64 trailer after EOF at offset {eof_pos} is missing")
            stored = _U64.unpack_from(buf, trailer_start)[0]
            self.summary.checksum_stored = stored
            if end > trailer_start + 8:
                raise RdbError(f"{end - trailer_start - 8} unexpected bytes after the RDB checksum trailer")
            if stored and self.check_crc:
                computed = crc64(memoryview(buf)[:trailer_start])
                self.summary.checksum_computed = computed
                if computed != stored:
                    raise RdbError(f"RDB checksum mismatch: trailer says {stored:016x}, data gives {computed:016x}")
        elif end > trailer_start:
            raise RdbError(f"{end - trailer_start} unexpected bytes after the RDB EOF opcode")

    def scan(self, checkpoint_every=0, validate=True):
        """Full pass without building key records; returns the summary. Every value is validated as Redis's loader
        does with ``sanitize-dump-payload yes`` unless ``validate`` is false.

        With ``checkpoint_every`` > 0, ``self.checkpoints`` lists (offset, db) key boundaries every that many keys,
        where a parser can start (used to split a restore over several connections).
        """
        buf = self.buf
        end = len(buf)
        parser = _Parser(self.summary)
        parser.validate = validate
        if checkpoint_every:
            parser.checkpoints = []
            parser.checkpoint_every = checkpoint_every
        try:
            for _rec in parser.parse(buf, HEADER_LEN, end, False):
                pass
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise _wrap(exc, parser.pos) from None
        if not parser.done:
            raise RdbError(f"RDB is truncated: no EOF opcode (0xFF) before the end of the data at offset {end}")
        self._check_trailer(parser.pos)
        self.checkpoints = parser.checkpoints or []
        return self.summary

    def records_between(self, start, stop, db):
        """KeyRecords of the keys in [start, stop) (stop None = to the EOF opcode), a range that starts at one of
        ``scan``'s checkpoints in database ``db``. For an RDB already scanned: values are not validated again, the
        summary is left alone and a parse error is raised unwrapped."""
        parser = _Parser(RdbSummary())
        parser.db = db
        return parser.parse(self.buf, start, len(self.buf) if stop is None else stop, True)

    def payload(self, rec):
        """RESTORE payload of a key record (value bytes + RDB version + CRC64)."""
        buf = self.buf
        return restore_payload(bytes(buf[rec.start : rec.start + 1]) + bytes(buf[rec.vpos : rec.end]), self.version)

    def function_payload(self):
        """FUNCTION RESTORE payload for all libraries, or None when the RDB has none."""
        sections = self.summary.function_sections
        if not sections:
            return None
        body = b"".join(bytes(self.buf[s:e]) for s, e in sections)
        return restore_payload(body, self.version)


def scan_bytes(data, check_crc=True):
    """Validate a whole RDB in memory and return its summary (RdbError on any problem)."""
    rdb = RdbFile(data, check_crc=check_crc)
    return rdb.scan()


# --------------------------------------------------------------------------------------------------------------
# Streaming validation (backup): CRC64 + sha256 + structure, bounded memory
# --------------------------------------------------------------------------------------------------------------
class StreamValidator:
    """Feed chunks of an RDB as they arrive; ``finish()`` checks the trailer and returns the summary.

    Memory is bounded: only the unparsed tail of the current record is kept. A single record larger than
    ``max_record`` stops the structural pass (counts become unknown) but CRC64/sha256 still cover every byte.
    """

    def __init__(self, structure=True, max_record=32 * 1024 * 1024):
        self.sha256 = hashlib.sha256()
        self.crc = 0
        self.size = 0
        self.tail = bytearray()  # last 8 bytes seen (the CRC trailer candidate)
        self.pending = bytearray()  # unparsed bytes
        self.summary = RdbSummary()
        self.version = None
        self.structure = structure
        self.structure_complete = False
        self.max_record = max_record
        self.parser = _Parser(self.summary)
        self.parser.header_only = not structure
        self.parser.validate = structure
        self._head = bytearray()
        self._crc_pending = bytearray()
        self._consumed = HEADER_LEN  # absolute offset of pending[0]

    def feed(self, chunk):
        if not chunk:
            return
        self.sha256.update(chunk)
        self.size += len(chunk)
        # CRC covers everything except the final 8 bytes; hold back the last 8 bytes seen so far. ``chunk`` may be a
        # view of a buffer the caller reuses, so nothing keeps a reference to it and large chunks are not copied.
        if len(chunk) >= 8:
            if self._crc_pending:
                self.crc = crc64(self._crc_pending, self.crc)
            with memoryview(chunk) as view:
                self.crc = crc64(view[:-8], self.crc)
                self._crc_pending = bytes(view[-8:])
        else:
            data = bytes(self._crc_pending) + bytes(chunk)
            if len(data) > 8:
                self.crc = crc64(data[:-8], self.crc)
            self._crc_pending = data[-8:]
        if self.version is None:
            self._head += chunk
            if len(self._head) < HEADER_LEN:
                return
            self.version = parse_header(self._head)
            check_supported_version(self.version)
            self.summary.version = self.version
            self.parser.version = self.version
            rest = bytes(self._head[HEADER_LEN:])
            self._head = bytearray()
            chunk = rest
        if not (self.parser.done or self.parser.header_done):
            self.pending += chunk
            self._parse(final=False)

    def _parse(self, final):
        buf = self.pending
        parser = self.parser
        try:
            for _rec in parser.parse(buf, 0, len(buf), False):
                pass
        except _Short:
            if final:
                raise RdbError(
                    f"RDB is truncated: the stream ended inside a record at offset {self._consumed + parser.pos}"
                ) from None
            self._consumed += parser.pos
            del buf[: parser.pos]
            if len(buf) > self.max_record:
                self.structure = False
                self.parser.header_done = True
                self.pending = bytearray()
            return
        except RdbError:
            raise
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise _wrap(exc, self._consumed + parser.pos) from None
        if parser.header_done:
            self.pending = bytearray()
            return
        if parser.done:
            self.structure_complete = True
            self.summary.eof_offset = self._consumed + parser.pos
        else:
            self._consumed += len(buf)
        self.pending = bytearray()

    def finish(self):
        if self.version is None:
            raise RdbError(f"not an RDB: only {self.size} bytes received")
        if self.structure and not (self.parser.done or self.parser.header_done):
            self._parse(final=True)
            if not self.parser.done:
                raise RdbError("RDB is truncated: no EOF opcode (0xFF) in the data")
        self.summary.size = self.size
        if self.version >= 5:
            if len(self._crc_pending) < 8:
                raise RdbError("RDB is truncated: no CRC64 trailer")
            stored = _U64.unpack(bytes(self._crc_pending))[0]
            self.summary.checksum_stored = stored
            self.summary.checksum_computed = self.crc
            if stored and stored != self.crc:
                raise RdbError(f"RDB checksum mismatch: trailer says {stored:016x}, data gives {self.crc:016x}")
        if self.structure_complete:
            expected = self.summary.eof_offset + 1 + (8 if self.version >= 5 else 0)
            if expected != self.size:
                raise RdbError(
                    f"RDB has {self.size - expected} unexpected bytes after its EOF opcode and trailer"
                    if self.size > expected
                    else "RDB is truncated after its EOF opcode"
                )
        return self.summary

    def hexdigest(self):
        return self.sha256.hexdigest()
