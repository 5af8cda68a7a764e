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
import struct

try:
    import anycrc as _anycrc
    _ANYCRC_MODEL = _anycrc.Model('CRC64-REDIS')
except Exception:  # pylint: disable=broad-exception-caught
    _ANYCRC_MODEL = None

MAGIC = b'REDIS'
HEADER_LEN = 9
# Highest RDB version whose layout this reader knows: 12 = Redis 7.4 .. 8.4.
MAX_SUPPORTED_RDB_VERSION = 12
# Valkey 9 writes RDB version 80 with the Redis-7.2-compatible layout plus its own additions; it is read as "foreign".
VALKEY_RDB_VERSIONS = (80,)

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
    0: 'string', 1: 'list', 2: 'set', 3: 'zset', 4: 'hash', 5: 'zset', 6: 'module', 7: 'module',
    9: 'hash', 10: 'list', 11: 'set', 12: 'zset', 13: 'hash', 14: 'list', 15: 'stream', 16: 'hash',
    17: 'zset', 18: 'list', 19: 'stream', 20: 'set', 21: 'stream', 24: 'hash', 25: 'hash',
}
MODULE_TYPES = (6, 7)
_SINGLE_STRING_TYPES = frozenset((0, 9, 10, 11, 12, 13, 16, 17, 20))

_U64 = struct.Struct('<Q')
_I64 = struct.Struct('<q')
_U32 = struct.Struct('<I')
_BE32 = struct.Struct('>I')
_BE64 = struct.Struct('>Q')


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
    body = bytes(value) + struct.pack('<H', version)
    return body + _U64.pack(crc64(body))


# --------------------------------------------------------------------------------------------------------------
# LZF (keys and aux strings only; values are never decoded)
# --------------------------------------------------------------------------------------------------------------
def lzf_decompress(data, expected_len):
    src = bytes(data)
    out = bytearray()
    i = 0
    n = len(src)
    while i < n:
        ctrl = src[i]
        i += 1
        if ctrl < 32:
            length = ctrl + 1
            if i + length > n:
                raise RdbError('LZF literal run past the end of the compressed string')
            out += src[i:i + length]
            i += length
        else:
            length = ctrl >> 5
            if length == 7:
                if i >= n:
                    raise RdbError('LZF back-reference truncated')
                length += src[i]
                i += 1
            if i >= n:
                raise RdbError('LZF back-reference truncated')
            ref = len(out) - ((ctrl & 0x1F) << 8) - src[i] - 1
            i += 1
            if ref < 0:
                raise RdbError('LZF back-reference before the start of the output')
            for k in range(length + 2):
                out.append(out[ref + k])
        if len(out) > expected_len:
            break
    if len(out) != expected_len:
        raise RdbError(f'LZF string decompressed to {len(out)} bytes, expected {expected_len}')
    return bytes(out)


# --------------------------------------------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------------------------------------------
def parse_header(head):
    """Return the RDB version from the first 9 bytes; RdbError if they are not an RDB header."""
    head = bytes(head[:HEADER_LEN])
    if len(head) < HEADER_LEN:
        raise RdbError(f'not an RDB file: {len(head)} bytes, an RDB header alone is {HEADER_LEN} bytes')
    if head[:5] != MAGIC:
        raise RdbError(f'not an RDB file: starts with {head[:5]!r}, expected {MAGIC!r}')
    digits = head[5:9]
    if not digits.isdigit():
        raise RdbError(f'not an RDB file: version field {digits!r} is not 4 digits')
    version = int(digits)
    if version < 1:
        raise RdbError('RDB version 0 is invalid')
    return version


def check_supported_version(version):
    if version > MAX_SUPPORTED_RDB_VERSION and version not in VALKEY_RDB_VERSIONS:
        raise RdbError(f'RDB version {version} is newer than this reader supports (up to {MAX_SUPPORTED_RDB_VERSION}, '
                       f'and Valkey {VALKEY_RDB_VERSIONS})')


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
    raise RdbError(f'invalid length encoding byte 0x{first:02x} at offset {pos}')


def _plain_len(buf, pos, end, what):
    value, encoded, pos = _read_len(buf, pos, end)
    if encoded:
        raise RdbError(f'{what} at offset {pos - 1} uses a string encoding where a length is required')
    return value, pos


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
            clen, pos = _plain_len(buf, pos, end, 'LZF compressed length')
            _ulen, pos = _plain_len(buf, pos, end, 'LZF uncompressed length')
            pos += clen
        else:
            raise RdbError(f'unknown string encoding {length} at offset {pos - 1}')
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
        return str(struct.unpack_from('<b', buf, pos)[0]).encode(), pos + 1
    if length == 1:
        if pos + 2 > end:
            raise _Short()
        return str(struct.unpack_from('<h', buf, pos)[0]).encode(), pos + 2
    if length == 2:
        if pos + 4 > end:
            raise _Short()
        return str(struct.unpack_from('<i', buf, pos)[0]).encode(), pos + 4
    if length == 3:
        clen, pos = _plain_len(buf, pos, end, 'LZF compressed length')
        ulen, pos = _plain_len(buf, pos, end, 'LZF uncompressed length')
        if pos + clen > end:
            raise _Short()
        if ulen > 512 * 1024 * 1024:
            raise RdbError(f'LZF string at offset {start} claims {ulen} bytes')
        return lzf_decompress(buf[pos:pos + clen], ulen), pos + clen
    raise RdbError(f'unknown string encoding {length} at offset {start}')


def _skip_module_opcodes(buf, pos, end):
    """Module serialization (type 7 / MODULE_AUX): opcodes until EOF (0)."""
    while True:
        opcode, pos = _plain_len(buf, pos, end, 'module opcode')
        if opcode == 0:
            return pos
        if opcode in (1, 2):
            _value, pos = _plain_len(buf, pos, end, 'module integer')
        elif opcode == 3:
            pos += 4
        elif opcode == 4:
            pos += 8
        elif opcode == 5:
            pos = _skip_string(buf, pos, end)
        else:
            raise RdbError(f'unknown module opcode {opcode} at offset {pos}')
        if pos > end:
            raise _Short()


def _skip_stream_pel(buf, pos, end, with_nack):
    count, pos = _plain_len(buf, pos, end, 'stream PEL size')
    for _unused in range(count):
        pos += 16
        if with_nack:
            pos += 8
            _dc, pos = _plain_len(buf, pos, end, 'stream delivery count')
        elif pos > end:
            raise _Short()
    return pos


def _skip_stream(buf, pos, end, rtype):
    nodes, pos = _plain_len(buf, pos, end, 'stream node count')
    for _unused in range(nodes):
        pos = _skip_string(buf, pos, end)
        pos = _skip_string(buf, pos, end)
    # length, last_id ms, last_id seq
    for _unused in range(3):
        _v, pos = _plain_len(buf, pos, end, 'stream metadata')
    if rtype >= 19:
        # first_id ms/seq, max_deleted_entry_id ms/seq, entries_added
        for _unused in range(5):
            _v, pos = _plain_len(buf, pos, end, 'stream metadata')
    groups, pos = _plain_len(buf, pos, end, 'stream consumer group count')
    for _unused in range(groups):
        pos = _skip_string(buf, pos, end)
        _ms, pos = _plain_len(buf, pos, end, 'consumer group last id')
        _seq, pos = _plain_len(buf, pos, end, 'consumer group last id')
        if rtype >= 19:
            _read, pos = _plain_len(buf, pos, end, 'consumer group entries read')
        pos = _skip_stream_pel(buf, pos, end, True)
        consumers, pos = _plain_len(buf, pos, end, 'stream consumer count')
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
        count, pos = _plain_len(buf, pos, end, 'element count')
        for _unused in range(count):
            pos = _skip_string(buf, pos, end)
        return pos
    if rtype == 4:
        count, pos = _plain_len(buf, pos, end, 'hash field count')
        for _unused in range(count):
            pos = _skip_string(buf, pos, end)
            pos = _skip_string(buf, pos, end)
        return pos
    if rtype == 3:
        count, pos = _plain_len(buf, pos, end, 'zset size')
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
        count, pos = _plain_len(buf, pos, end, 'zset size')
        for _unused in range(count):
            pos = _skip_string(buf, pos, end) + 8
        if pos > end:
            raise _Short()
        return pos
    if rtype == 18:
        count, pos = _plain_len(buf, pos, end, 'quicklist node count')
        for _unused in range(count):
            _container, pos = _plain_len(buf, pos, end, 'quicklist container')
            pos = _skip_string(buf, pos, end)
        return pos
    if rtype in (15, 19, 21):
        return _skip_stream(buf, pos, end, rtype)
    if rtype == 25:
        # hash listpack with field expirations: min expire (8 bytes) + listpack
        return _skip_string(buf, pos + 8, end)
    if rtype == 24:
        # hash with field expirations: min expire (8 bytes), count, then (ttl, field, value) per field
        pos += 8
        count, pos = _plain_len(buf, pos, end, 'hash field count')
        for _unused in range(count):
            _ttl, pos = _plain_len(buf, pos, end, 'hash field ttl')
            pos = _skip_string(buf, pos, end)
            pos = _skip_string(buf, pos, end)
        return pos
    if rtype == 7:
        if pos + 9 > end:
            raise _Short()
        _module_id, pos = _plain_len(buf, pos, end, 'module id')
        return _skip_module_opcodes(buf, pos, end)
    if rtype == 6:
        raise RdbError('module value of the old type 6 cannot be sliced (not self-describing)')
    raise RdbError(f'unknown value type {rtype}')


# --------------------------------------------------------------------------------------------------------------
# Record parser
# --------------------------------------------------------------------------------------------------------------
class KeyRecord:
    """One key: db, key bytes, type byte offset ``start``, value bytes [vpos, end), expire (ms since epoch) or None."""

    __slots__ = ('db', 'key', 'rtype', 'start', 'vpos', 'end', 'expire_ms', 'idle', 'freq')

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
        self.functions = []          # decoded library sources
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
            'rdb_version': self.version,
            'redis_version': self.aux.get('redis-ver') or self.aux.get('valkey-ver'),
            'keys_per_db': {str(k): v for k, v in sorted(self.keys_per_db.items())},
            'expires_per_db': {str(k): v for k, v in sorted(self.expires_per_db.items())},
            'keys': sum(self.keys_per_db.values()),
            'types': self.types(),
            'functions': len(self.functions),
            'module_aux': self.module_aux,
            'module_keys': self.module_keys,
            'checksum': None if self.checksum_stored is None else f'{self.checksum_stored:016x}',
            'size': self.size,
        }


def _aux_text(value):
    return value.decode('utf-8', 'replace')


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
        self.checkpoints = None      # with want_keys=False: (offset, db) after every checkpoint_every keys
        self.checkpoint_every = 0

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
                    key = buf[pos + 2:vpos] if want_keys else None
                else:
                    key, vpos = _read_string(buf, pos + 1, end)
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
                    raise RdbError(f'unknown value type {rtype} at offset {pos}')
                if pos > end:
                    raise _Short()
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
                self.idle, pos = _plain_len(buf, pos + 1, end, 'idle time')
            elif op == OP_FREQ:
                if pos + 2 > end:
                    raise _Short()
                self.freq = buf[pos + 1]
                pos += 2
            elif op == OP_SELECTDB:
                db, pos = _plain_len(buf, pos + 1, end, 'db number')
                if db > 1_000_000:
                    raise RdbError(f'db number {db} at offset {self.pos} is implausible')
                self.db = db
            elif op == OP_RESIZEDB:
                size, pos = _plain_len(buf, pos + 1, end, 'db size')
                expires, pos = _plain_len(buf, pos, end, 'expires size')
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
                raise RdbError(f'pre-release Redis 7.0 function format (opcode 0xF6) at offset {pos} is not supported')
            elif op == OP_MODULE_AUX:
                _module_id, pos = _plain_len(buf, pos + 1, end, 'module id')
                _when_op, pos = _plain_len(buf, pos, end, 'module aux when opcode')
                _when, pos = _plain_len(buf, pos, end, 'module aux when')
                pos = _skip_module_opcodes(buf, pos, end)
                summary.module_aux += 1
            elif op == OP_SLOT_INFO:
                pos += 1
                for _field in range(3):
                    _v, pos = _plain_len(buf, pos, end, 'slot info')
            elif op == OP_EOF:
                self.pos = pos
                self.done = True
                return
            else:
                raise RdbError(f'unknown opcode 0x{op:02x} at offset {pos}')
            if pos > end:
                raise _Short()
            self.pos = pos


def _wrap(exc, offset):
    if isinstance(exc, RdbError):
        return exc
    if isinstance(exc, _Short):
        return RdbError(f'RDB is truncated: a record starting at offset {offset} runs past the end of the data')
    return RdbError(f'malformed RDB near offset {offset}: {exc.__class__.__name__}: {exc}')


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
            raise RdbError(f'cannot read RDB header: {exc}') from None
        if not allow_unsupported_version:
            check_supported_version(self.version)
        self.summary = RdbSummary()
        self.summary.version = self.version
        self.summary.size = len(buf)

    def records(self):
        """Yield KeyRecord for every key; at the end the summary is complete and the trailer checked."""
        buf = self.buf
        end = len(buf)
        parser = _Parser(self.summary)
        try:
            yield from parser.parse(buf, HEADER_LEN, end, True)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise _wrap(exc, parser.pos) from None
        if not parser.done:
            raise RdbError(f'RDB is truncated: no EOF opcode (0xFF) before the end of the data at offset {end}')
        self._check_trailer(parser.pos)

    def _check_trailer(self, eof_pos):
        buf = self.buf
        end = len(buf)
        self.summary.eof_offset = eof_pos
        trailer_start = eof_pos + 1
        if self.version >= 5:
            if end < trailer_start + 8:
                raise RdbError(f'RDB is truncated: the 8-byte CRC64 trailer after EOF at offset {eof_pos} is missing')
            stored = _U64.unpack_from(buf, trailer_start)[0]
            self.summary.checksum_stored = stored
            if end > trailer_start + 8:
                raise RdbError(f'{end - trailer_start - 8} unexpected bytes after the RDB checksum trailer')
            if stored and self.check_crc:
                computed = crc64(memoryview(buf)[:trailer_start])
                self.summary.checksum_computed = computed
                if computed != stored:
                    raise RdbError(f'RDB checksum mismatch: trailer says {stored:016x}, data gives {computed:016x}')
        elif end > trailer_start:
            raise RdbError(f'{end - trailer_start} unexpected bytes after the RDB EOF opcode')

    def scan(self, checkpoint_every=0):
        """Full pass without building key records; returns the summary.

        With ``checkpoint_every`` > 0, ``self.checkpoints`` lists (offset, db) key boundaries every that many keys,
        where a parser can start (used to split a restore over several connections).
        """
        buf = self.buf
        end = len(buf)
        parser = _Parser(self.summary)
        if checkpoint_every:
            parser.checkpoints = []
            parser.checkpoint_every = checkpoint_every
        try:
            for _rec in parser.parse(buf, HEADER_LEN, end, False):
                pass
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise _wrap(exc, parser.pos) from None
        if not parser.done:
            raise RdbError(f'RDB is truncated: no EOF opcode (0xFF) before the end of the data at offset {end}')
        self._check_trailer(parser.pos)
        self.checkpoints = parser.checkpoints or []
        return self.summary

    def payload(self, rec):
        """RESTORE payload of a key record (value bytes + RDB version + CRC64)."""
        buf = self.buf
        return restore_payload(bytes(buf[rec.start:rec.start + 1]) + bytes(buf[rec.vpos:rec.end]), self.version)

    def function_payload(self):
        """FUNCTION RESTORE payload for all libraries, or None when the RDB has none."""
        sections = self.summary.function_sections
        if not sections:
            return None
        body = b''.join(bytes(self.buf[s:e]) for s, e in sections)
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
        self.tail = bytearray()       # last 8 bytes seen (the CRC trailer candidate)
        self.pending = bytearray()    # unparsed bytes
        self.summary = RdbSummary()
        self.version = None
        self.structure = structure
        self.structure_complete = False
        self.max_record = max_record
        self.parser = _Parser(self.summary)
        self.parser.header_only = not structure
        self._head = bytearray()
        self._crc_pending = bytearray()
        self._consumed = HEADER_LEN   # absolute offset of pending[0]

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
                raise RdbError(f'RDB is truncated: the stream ended inside a record at offset {self._consumed + parser.pos}') from None
            self._consumed += parser.pos
            del buf[:parser.pos]
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
            raise RdbError(f'not an RDB: only {self.size} bytes received')
        if self.structure and not (self.parser.done or self.parser.header_done):
            self._parse(final=True)
            if not self.parser.done:
                raise RdbError('RDB is truncated: no EOF opcode (0xFF) in the data')
        self.summary.size = self.size
        if self.version >= 5:
            if len(self._crc_pending) < 8:
                raise RdbError('RDB is truncated: no CRC64 trailer')
            stored = _U64.unpack(bytes(self._crc_pending))[0]
            self.summary.checksum_stored = stored
            self.summary.checksum_computed = self.crc
            if stored and stored != self.crc:
                raise RdbError(f'RDB checksum mismatch: trailer says {stored:016x}, data gives {self.crc:016x}')
        if self.structure_complete:
            expected = self.summary.eof_offset + 1 + (8 if self.version >= 5 else 0)
            if expected != self.size:
                raise RdbError(f'RDB has {self.size - expected} unexpected bytes after its EOF opcode and trailer'
                               if self.size > expected else 'RDB is truncated after its EOF opcode')
        return self.summary

    def hexdigest(self):
        return self.sha256.hexdigest()
