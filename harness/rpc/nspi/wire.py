"""Hand-packed NDR (NDR20, little-endian) for the NSPI calls exchanger.py and Outlook repeat: NspiBind, NspiUnbind,
NspiUpdateStat and NspiQueryRows requests and responses, the responses of NspiGetSpecialTable,
NspiResolveNames(W), NspiQueryColumns, NspiDNToMId and NspiGetPropList, and the PropertyRowSet_r they carry.

impacket's NDR classes cost milliseconds per row set (an object per value, ``eval`` in every constructor); the
packers here write the same bytes directly. They are byte-identical to impacket's ``getData()`` after
``harness.rpc.base.marshal`` for the same input, down to impacket's pad bytes (0xAB before a structure, 0xEF before a
conformant array that a pointer refers to, 0xBF before a call-level integer) and its depth-first referent-ID
numbering (0x00020000, 0x00020004... in the order ``marshal`` walks the fields); tests/test_nspi_wire.py checks both
with hypothesis. The parsers take only the plain layout that consumes the whole stub; for anything else (trailing
bytes, a varying array with an offset, a truncated array) they return None and the ``*_request`` functions parse
with impacket, so a request means the same, or faults the same, either way.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

from impacket.dcerpc.v5 import nspi as ndr

from harness.rpc.base import decoding, is_null
from harness.rpc.nspi.idl import MAX_ROWS, NspiGetSpecialTableIdl, parse_whole, tag_list
from harness.rpc.nspi.stat import Stat
from harness.rpc.nspi.values import (
    PT_BINARY,
    PT_BOOLEAN,
    PT_ERROR,
    PT_LONG,
    PT_MV_STRING8,
    PT_MV_UNICODE,
    PT_STRING8,
    PT_SYSTIME,
    PT_UNICODE,
    Cell,
)

FIRST_REFERENT = 0x00020000
NULL_POINTER = b"\x00\x00\x00\x00"
EMPTY_HANDLE = bytes(20)             # an NSPI context handle impacket leaves unset: attributes 0, a nil UUID

STRUCT_PAD, ARRAY_PAD, CALL_PAD = b"\xab", b"\xef", b"\xbf"   # impacket's alignment fillers (see docstring)

U32 = struct.Struct("<L")
STAT = struct.Struct("<LLLlLLLLL")   # MS-OXNSPI 2.3.7; Delta is the one signed field
_TWO = struct.Struct("<LL")
_ROW = struct.Struct("<LLL")                      # PropertyRow_r: Reserved, cValues, lpProps
_LONG_VALUE = struct.Struct("<LLLl")
_ULONG_VALUE = struct.Struct("<LLLL")             # PT_ERROR, and a PT_STRING8 / PT_UNICODE pointer
_BOOLEAN_VALUE = struct.Struct("<LLLH")
_COUNTED_VALUE = struct.Struct("<LLLLL")          # PT_BINARY and PT_MV_*: count + pointer
_FILETIME_VALUE = struct.Struct("<LLLLl")
_STRING_HEAD = struct.Struct("<LLL")              # conformant varying string: max, offset 0, actual


# ---- STAT ---------------------------------------------------------------------------------------------------
def read_stat(stub: bytes, offset: int) -> Stat:
    return Stat(*STAT.unpack_from(stub, offset))


def pack_stat(stat: Stat) -> bytes:
    return STAT.pack(stat.SortType, stat.ContainerID, stat.CurrentRec, stat.Delta, stat.NumPos, stat.TotalRecs,
                     stat.CodePage, stat.TemplateLocale, stat.SortLocale)


# ---- requests -----------------------------------------------------------------------------------------------
@dataclass
class BindRequest:
    flags: int
    stat: Stat
    wants_guid: bool


@dataclass
class UpdateStatRequest:
    stat: Stat
    wants_delta: bool


@dataclass
class QueryRowsRequest:
    flags: int
    stat: Stat
    explicit: Optional[List[int]]     # lpETable's MIds (at most MAX_ROWS), None for NULL
    count: int
    tags: Optional[List[int]]         # pPropTags (at most MAX_ROWS), None for NULL


def parse_bind(stub: bytes) -> Optional[BindRequest]:
    """dwFlags, STAT, pServerGuid (unique pointer to 16 bytes)."""
    if len(stub) not in (44, 60):
        return None
    wants_guid = U32.unpack_from(stub, 40)[0] != 0
    if len(stub) != (60 if wants_guid else 44):
        return None
    return BindRequest(U32.unpack_from(stub)[0], read_stat(stub, 4), wants_guid)


def parse_unbind(stub: bytes) -> bool:
    """contextHandle, Reserved: True when the stub is exactly that."""
    return len(stub) == 24


def parse_update_stat(stub: bytes) -> Optional[UpdateStatRequest]:
    """hRpc, Reserved, STAT, plDelta (unique pointer to a LONG)."""
    if len(stub) not in (64, 68):
        return None
    wants_delta = U32.unpack_from(stub, 60)[0] != 0
    if len(stub) != (68 if wants_delta else 64):
        return None
    return UpdateStatRequest(read_stat(stub, 24), wants_delta)


def parse_query_rows(stub: bytes) -> Optional[QueryRowsRequest]:
    """hRpc, dwFlags, STAT, dwETableCount, lpETable (unique pointer to a conformant DWORD array), Count,
    pPropTags (unique pointer to PropertyTagArray_r: max count, cValues, offset, actual count, tags)."""
    size = len(stub)
    if size < 76:
        return None
    offset, explicit = 68, None
    if U32.unpack_from(stub, 64)[0]:
        (items,) = U32.unpack_from(stub, offset)
        if size < offset + 4 + 4 * items + 8:
            return None
        explicit = list(struct.unpack_from(f"<{min(items, MAX_ROWS)}L", stub, offset + 4))
        offset += 4 + 4 * items
    count, tags_pointer = _TWO.unpack_from(stub, offset)
    offset += 8
    tags = None
    if tags_pointer:
        if size < offset + 16:
            return None
        maximum, _values, first, items = struct.unpack_from("<LLLL", stub, offset)
        if first != 0 or items > maximum or size < offset + 16 + 4 * items:
            return None
        tags = list(struct.unpack_from(f"<{min(items, MAX_ROWS)}L", stub, offset + 16))
        offset += 16 + 4 * items
    if offset != size:
        return None
    return QueryRowsRequest(U32.unpack_from(stub, 20)[0], read_stat(stub, 24), explicit, count, tags)


def parse_special_table(stub: bytes) -> Optional[Tuple[int, int]]:
    """(dwFlags, the STAT's code page) of NspiGetSpecialTable in either layout idl.py describes: the IDL's inline
    STAT and lpVersion (64 bytes), or impacket's unique pointers (a NULL pStat means CP_TELETEX)."""
    size = len(stub)
    if size < 32:
        return None
    (flags,) = U32.unpack_from(stub, 20)
    if size == 64:                                    # parse_whole tries the IDL layout first
        return flags, U32.unpack_from(stub, 48)[0]
    offset, codepage = 28, ndr.CP_TELETEX
    if U32.unpack_from(stub, 24)[0]:
        if size < 68:
            return None
        codepage = U32.unpack_from(stub, 28 + 24)[0]
        offset += 36
    if U32.unpack_from(stub, offset)[0]:
        offset += 4
    return (flags, codepage) if offset + 4 == size else None


def special_table_request(stub: bytes) -> Tuple[int, int]:
    parsed = parse_special_table(stub)
    if parsed is not None:
        return parsed
    with decoding("NspiGetSpecialTable"):
        request = parse_whole(stub, (NspiGetSpecialTableIdl, ndr.NspiGetSpecialTable))
        return request["dwFlags"], ndr.CP_TELETEX if is_null(request.fields["pStat"]) else \
            request["pStat"]["CodePage"]


def bind_request(stub: bytes) -> BindRequest:
    """NspiBind's request, hand-parsed or, for any other layout, by impacket (a bad stub faults)."""
    parsed = parse_bind(stub)
    if parsed is not None:
        return parsed
    with decoding("NspiBind"):
        request = ndr.NspiBind(stub)
        return BindRequest(request["dwFlags"], Stat.read(request["pStat"]), not is_null(request.fields["pServerGuid"]))


def unbind_request(stub: bytes) -> None:
    if parse_unbind(stub):
        return
    with decoding("NspiUnbind"):
        ndr.NspiUnbind(stub)


def update_stat_request(stub: bytes) -> UpdateStatRequest:
    parsed = parse_update_stat(stub)
    if parsed is not None:
        return parsed
    with decoding("NspiUpdateStat"):
        request = ndr.NspiUpdateStat(stub)
        return UpdateStatRequest(Stat.read(request["pStat"]), not is_null(request.fields["plDelta"]))


def query_rows_request(stub: bytes) -> QueryRowsRequest:
    parsed = parse_query_rows(stub)
    if parsed is not None:
        return parsed
    with decoding("NspiQueryRows"):
        request = ndr.NspiQueryRows(stub)
        explicit = None if is_null(request.fields["lpETable"]) else \
            [item["Data"] for item in request["lpETable"]][:MAX_ROWS]
        return QueryRowsRequest(request["dwFlags"], Stat.read(request["pStat"]), explicit, request["Count"],
                                tag_list(request.fields["pPropTags"]))


# ---- responses ----------------------------------------------------------------------------------------------
def _pad(out: bytearray, filler: bytes) -> None:
    misaligned = len(out) & 3
    if misaligned:
        out += filler * (4 - misaligned)


def _finish(out: bytearray, code: int) -> bytes:
    _pad(out, CALL_PAD)
    out += U32.pack(code)
    return bytes(out)


def bind_response(server_guid: Optional[bytes], handle: bytes, code: int) -> bytes:
    """pServerGuid (NULL unless the client passed one), contextHandle, ErrorCode."""
    guid = U32.pack(FIRST_REFERENT) + server_guid if server_guid is not None else NULL_POINTER
    return guid + handle + U32.pack(code)


def unbind_response(code: int) -> bytes:
    return EMPTY_HANDLE + U32.pack(code)


def update_stat_response(stat: Stat, delta: Optional[int], code: int) -> bytes:
    """pStat, plDelta (NULL when the client passed none, or on error), ErrorCode."""
    pointer = struct.pack("<Ll", FIRST_REFERENT, delta) if delta is not None else NULL_POINTER
    return pack_stat(stat) + pointer + U32.pack(code)


def query_rows_response(stat: Stat, rows: Optional[Sequence[PackedRow]], code: int) -> bytes:
    """pStat, ppRows (NULL on error), ErrorCode."""
    out = bytearray(pack_stat(stat))
    if rows is None:
        out += NULL_POINTER
    else:
        out += U32.pack(FIRST_REFERENT)
        pack_rowset(out, rows, FIRST_REFERENT + 4)
    return _finish(out, code)


def tags_response(tags: Optional[Sequence[int]], code: int) -> bytes:
    """A PropertyTagArray_r pointer (NULL for None), ErrorCode: NspiQueryColumns, NspiDNToMId, NspiGetPropList."""
    out = bytearray()
    if tags is None:
        out += NULL_POINTER
    else:
        out += U32.pack(FIRST_REFERENT)
        _pack_tags(out, tags)
    return _finish(out, code)


def special_table_response(version: int, rows: Sequence[PackedRow], code: int) -> bytes:
    """lpVersion, ppRows, ErrorCode (NspiGetSpecialTable, as impacket lays the response out)."""
    out = bytearray(U32.pack(version))
    out += U32.pack(FIRST_REFERENT)
    pack_rowset(out, rows, FIRST_REFERENT + 4)
    return _finish(out, code)


def resolve_names_response(mids: Sequence[int], rows: Sequence[PackedRow], code: int) -> bytes:
    """ppMIds, ppRows, ErrorCode (NspiResolveNames and NspiResolveNamesW)."""
    out = bytearray(U32.pack(FIRST_REFERENT))
    _pack_tags(out, mids)
    out += U32.pack(FIRST_REFERENT + 4)
    pack_rowset(out, rows, FIRST_REFERENT + 8)
    return _finish(out, code)


def _pack_tags(out: bytearray, tags: Sequence[int]) -> None:
    """A PropertyTagArray_r a pointer refers to: maximum count, cValues, offset 0, actual count, the tags."""
    out += struct.pack(f"<4L{len(tags)}L", len(tags), len(tags), 0, len(tags), *tags)


@dataclass(frozen=True)
class PackedRow:
    """A PropertyRow_r's values packed once, to be placed in any row set: ``body`` is the row's PropertyValue_r
    array and what its values point to, packed at an aligned offset with referent IDs counted from 0, which
    ``slots`` (offset in body, ID) lets pack_rowset shift to where the row lands."""
    values: int
    pointers: int                     # referent IDs the values use (the row's own lpProps pointer aside)
    body: bytes
    slots: Tuple[Tuple[int, int], ...]


def pack_row(cells: Sequence[Cell]) -> PackedRow:
    out = bytearray()
    slots: List[Tuple[int, int]] = []
    pointers = _pack_values(out, cells, slots)
    return PackedRow(len(cells), pointers, bytes(out), tuple(slots))


def pack_rowset(out: bytearray, rows: Sequence[PackedRow], next_id: int) -> int:
    """Append the PropertyRowSet_r a pointer refers to (``len(out)`` is its offset in the stub); referent IDs
    start at ``next_id``. Returns the next free referent ID."""
    out += _TWO.pack(len(rows), len(rows))
    first_ids: List[int] = []
    for row in rows:                                  # depth-first numbering: a row's pointer, then its values'
        first_ids.append(next_id)
        next_id += 4 * (1 + row.pointers)
    for row, row_id in zip(rows, first_ids):
        out += _ROW.pack(0, row.values, row_id)
    pack_into = U32.pack_into
    for row, row_id in zip(rows, first_ids):
        _pad(out, ARRAY_PAD)
        start, base = len(out), row_id + 4
        out += row.body
        for offset, referent in row.slots:
            pack_into(out, start + offset, base + referent)
    return next_id


def _pack_values(out: bytearray, cells: Sequence[Cell], slots: List[Tuple[int, int]]) -> int:
    """A row's PropertyValue_r array (the referent of its lpProps), then what its values point to; ``out`` starts
    empty (aligned). Each referent ID goes into ``slots``; returns how many there are."""
    out += U32.pack(len(cells))
    deferred: List[Tuple[int, Any, int]] = []
    next_id = 0

    def pointer() -> int:
        nonlocal next_id
        slots.append((len(out) - 4, next_id))
        next_id += 4
        return next_id - 4

    for tag, value in cells:
        _pad(out, STRUCT_PAD)
        ptype = tag & 0xFFFF
        if ptype == PT_LONG:
            out += _LONG_VALUE.pack(tag, 0, ptype, value)
        elif ptype == PT_ERROR:
            out += _ULONG_VALUE.pack(tag, 0, ptype, value)
        elif ptype == PT_BOOLEAN:
            out += _BOOLEAN_VALUE.pack(tag, 0, ptype, 1 if value else 0)
        elif ptype == PT_STRING8 or ptype == PT_UNICODE:
            out += _ULONG_VALUE.pack(tag, 0, ptype, 0)
            deferred.append((ptype, value, pointer()))
        elif ptype == PT_BINARY:
            out += _COUNTED_VALUE.pack(tag, 0, ptype, len(value), 0)
            deferred.append((ptype, value, pointer()))
        elif ptype == PT_SYSTIME:
            out += _FILETIME_VALUE.pack(tag, 0, ptype, value & 0xFFFFFFFF, value >> 32)
        elif ptype == PT_MV_STRING8 or ptype == PT_MV_UNICODE:
            out += _COUNTED_VALUE.pack(tag, 0, ptype, len(value), 0)
            deferred.append((ptype, value, pointer()))
            next_id += 4 * len(value)                 # the strings' pointers follow the array's, in order
        else:
            raise ValueError(f"no encoder for property type 0x{ptype:04x}")
    for ptype, value, array_id in deferred:
        if ptype == PT_BINARY:
            _pad(out, ARRAY_PAD)
            out += U32.pack(len(value))
            out += value
        elif ptype == PT_STRING8 or ptype == PT_UNICODE:
            _pack_string(out, ptype == PT_UNICODE, value)
        else:
            _pad(out, ARRAY_PAD)
            out += U32.pack(len(value))
            for index in range(len(value)):
                out += NULL_POINTER
                slots.append((len(out) - 4, array_id + 4 * (index + 1)))
            for text in value:
                _pack_string(out, ptype == PT_MV_UNICODE, text)
    return next_id // 4


def _pack_string(out: bytearray, wide: bool, value: Any) -> None:
    """A conformant varying string: STRING8 values come encoded with their NUL, Unicode ones as text."""
    data = (value + "\x00").encode("utf-16-le") if wide else value
    count = len(data) // 2 if wide else len(data)
    _pad(out, STRUCT_PAD)
    out += _STRING_HEAD.pack(count, 0, count)
    out += data
