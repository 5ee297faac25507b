"""The MAPI/HTTP address book request and response bodies ([MS-OXCMAPIHTTP] 2.2.5, 2.2.1), sans-IO: plain
little-endian structures (no NDR), each request ending in an auxiliary buffer (read, ignored) and each response
in an empty one.

Property values follow [MS-OXCDATA] 2.11.2 with 32-bit COUNT fields (the MAPI/HTTP form); a string, binary or
multi-valued value is preceded by HasValue. A row (AddressBookPropertyRow) is flagged when one of its cells is an
error; a column of type PT_UNSPECIFIED gets typed values.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from harness.rpc.mapihttp import BadBody, BodyReader
from harness.rpc.nspi.idl import MAX_ROWS
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
    PT_UNSPECIFIED,
    Cell,
)
from harness.rpc.nspi.wire import STAT, pack_stat

U32 = struct.Struct("<L")
FLAG_PRESENT, FLAG_ERROR = 0x00, 0x0A      # AddressBookFlaggedPropertyValue.Flag
_HAS_VALUE_TYPES = (PT_STRING8, PT_UNICODE, PT_BINARY, PT_MV_STRING8, PT_MV_UNICODE)


# ---- requests -----------------------------------------------------------------------------------------------
@dataclass
class AbRequest:
    """The fields of any address book request; each parser fills those its request type has."""
    flags: int = 0
    stat: Optional[Stat] = None
    tags: Optional[List[int]] = None        # Columns / PropertyTags (None: HasColumns 0)
    explicit: Optional[List[int]] = None    # QueryRows' ExplicitTable (None when empty)
    count: int = 0                          # QueryRows' RowCount
    names: Optional[List[str]] = None       # ResolveNames / DNToMId
    dn: str = ""                            # GetMailboxUrl's ServerDn, GetAddressBookUrl's UserDn
    mids: Optional[List[int]] = None        # ResortRestriction's MinimalIds; CompareMIds' two MIds
    mid: int = 0                            # GetPropList's MinimalId
    codepage: int = 0                       # GetPropList's CodePage
    wants_delta: bool = False               # UpdateStat's DeltaRequested
    restriction: Optional[tuple] = None     # GetMatches' Filter as a restrictions.py tree (None: HasFilter 0)


def _stat(reader: BodyReader) -> Optional[Stat]:
    if not reader.u8():
        return None
    return Stat(*STAT.unpack(reader.take(STAT.size)))


def _u32s(reader: BodyReader) -> List[int]:
    count = reader.u32()
    if count > MAX_ROWS:
        raise BadBody("too many values")
    return list(struct.unpack(f"<{count}L", reader.take(4 * count)))


def _tags(reader: BodyReader) -> Optional[List[int]]:
    return _u32s(reader) if reader.u8() else None


def _end(reader: BodyReader) -> None:
    reader.take(reader.u32())               # the auxiliary buffer
    if reader.pos != len(reader.data):
        raise BadBody("trailing bytes")


def parse_request(kind: str, body: bytes) -> AbRequest:
    """The request body of ``kind``; BadBody when it does not parse to its end."""
    reader, request = BodyReader(body), AbRequest()
    if kind == "Bind":
        request.flags = reader.u32()
        request.stat = _stat(reader)
    elif kind == "Unbind":
        reader.u32()                        # Reserved
    elif kind == "GetSpecialTable":
        request.flags = reader.u32()
        request.stat = _stat(reader)
        if reader.u8():                     # HasVersion
            reader.u32()
    elif kind == "QueryRows":
        request.flags = reader.u32()
        request.stat = _stat(reader)
        request.explicit = _u32s(reader) or None
        request.count = reader.u32()
        request.tags = _tags(reader)
    elif kind == "ResolveNames":
        reader.u32()                        # Reserved
        request.stat = _stat(reader)
        request.tags = _tags(reader)
        request.names = [reader.utf16z() for _ in range(reader.u32())] if reader.u8() else []
    elif kind == "DNToMId":
        reader.u32()                        # Reserved
        request.names = [reader.asciiz() for _ in range(reader.u32())] if reader.u8() else []
    elif kind == "GetProps":
        request.flags = reader.u32()
        request.stat = _stat(reader)
        request.tags = _tags(reader)
    elif kind == "GetMatches":
        reader.u32()                        # Reserved
        request.stat = _stat(reader)
        if reader.u8():                     # HasMinimalIds: reserved, ignored as NspiGetMatches' pReserved
            _u32s(reader)
        reader.u32()                        # InterfaceOptionFlags
        request.restriction = restriction(reader, 0) if reader.u8() else None
        if reader.u8():                     # HasPropertyName: a link attribute (no object here has links)
            reader.take(24)
        request.count = reader.u32()
        request.tags = _tags(reader)
    elif kind == "GetPropList":
        request.flags, request.mid, request.codepage = reader.u32(), reader.u32(), reader.u32()
    elif kind == "QueryColumns":
        reader.u32()                        # Reserved
        request.flags = reader.u32()        # MapiFlags
    elif kind == "CompareMIds":
        reader.u32()                        # Reserved
        request.stat = _stat(reader)
        request.mids = [reader.u32(), reader.u32()]
    elif kind == "ResortRestriction":
        reader.u32()                        # Reserved
        request.stat = _stat(reader)
        request.mids = _u32s(reader) if reader.u8() else []
    elif kind == "UpdateStat":
        reader.u32()                        # Reserved
        request.stat = _stat(reader)
        request.wants_delta = bool(reader.u8())
    elif kind in ("GetMailboxUrl", "GetAddressBookUrl"):
        request.flags = reader.u32()
        request.dn = reader.utf16z()
    if request.names is not None and len(request.names) > MAX_ROWS:
        raise BadBody("too many names")
    _end(reader)
    return request


# ---- restrictions ([MS-OXCDATA] 2.12, 32-bit counts), as the tuples harness.rpc.nspi.restrictions compiles ----
_FIXED_SIZES = {0x0002: 2, 0x0003: 4, 0x0004: 4, 0x0005: 8, 0x0006: 8, 0x0007: 8, 0x000A: 4, 0x000B: 1,
                0x0014: 8, 0x0040: 8, 0x0048: 16}
_MAX_DEPTH = 32


def tagged_value(reader: BodyReader) -> Any:
    """A TaggedPropertyValue's value as restrictions.py takes it: str, int, bytes (None for other types)."""
    ptype = reader.u32() & 0xFFFF
    if ptype == PT_UNICODE:
        return reader.utf16z()
    if ptype == PT_STRING8:
        return reader.asciiz()
    if ptype == PT_BINARY:
        return reader.take(reader.u32())
    if ptype in (PT_LONG, PT_BOOLEAN):
        raw = reader.take(_FIXED_SIZES[ptype])
        return int.from_bytes(raw, "little", signed=ptype == PT_LONG)
    if ptype in _FIXED_SIZES:
        reader.take(_FIXED_SIZES[ptype])
        return None
    if ptype in (PT_MV_UNICODE, PT_MV_STRING8):
        for _ in range(reader.u32()):
            reader.utf16z() if ptype == PT_MV_UNICODE else reader.asciiz()
        return None
    raise BadBody(f"property type 0x{ptype:04x} in a restriction")


def restriction(reader: BodyReader, depth: int) -> tuple:
    if depth > _MAX_DEPTH:
        raise BadBody("restriction too deep")
    kind = reader.u8()
    if kind in (0x00, 0x01):                                  # And, Or
        count = reader.u32()
        if count > MAX_ROWS:
            raise BadBody("too many restrictions")
        return ("and" if kind == 0 else "or"), [restriction(reader, depth + 1) for _ in range(count)]
    if kind == 0x02:
        return "not", restriction(reader, depth + 1)
    if kind == 0x03:                                          # Content: FuzzyLevelLow, FuzzyLevelHigh, tag, value
        low, high = struct.unpack("<HH", reader.take(4))
        tag = reader.u32()
        return "content", tag, low | high << 16, tagged_value(reader)
    if kind == 0x04:                                          # Property: RelOp, tag, value
        relop = reader.u8()
        tag = reader.u32()
        return "property", tag, relop, tagged_value(reader)
    if kind == 0x08:
        return "exist", reader.u32()
    if kind in (0x05, 0x06, 0x07):                            # CompareProps, Bitmask, Size: 9 bytes
        reader.take(9)
    elif kind in (0x09, 0x0B):                                # SubObject, Count: a 32-bit field, a restriction
        reader.u32()
        restriction(reader, depth + 1)
    elif kind == 0x0A:                                        # Comment: tagged values, an optional restriction
        for _ in range(reader.u8()):
            tagged_value(reader)
        if reader.u8():
            restriction(reader, depth + 1)
    else:
        raise BadBody(f"restriction type 0x{kind:02x}")
    return "unsupported", kind


# ---- values and rows ----------------------------------------------------------------------------------------
def _value(out: bytearray, ptype: int, value: Any) -> None:
    """A PropertyValue (MS-OXCDATA 2.11.2.1, 32-bit counts), HasValue first for the types that carry it."""
    if ptype in _HAS_VALUE_TYPES:
        out.append(1)
    if ptype == PT_LONG:
        out += struct.pack("<l", value)
    elif ptype == PT_ERROR:
        out += U32.pack(value)
    elif ptype == PT_BOOLEAN:
        out.append(1 if value else 0)
    elif ptype == PT_SYSTIME:
        out += struct.pack("<Q", value)
    elif ptype == PT_STRING8:
        out += value                                  # bytes in the code page, with their NUL
    elif ptype == PT_UNICODE:
        out += str(value).encode("utf-16-le") + b"\x00\x00"
    elif ptype == PT_BINARY:
        out += U32.pack(len(value)) + value
    elif ptype == PT_MV_STRING8:
        out += U32.pack(len(value)) + b"".join(value)
    elif ptype == PT_MV_UNICODE:
        out += U32.pack(len(value)) + b"".join(text.encode("utf-16-le") + b"\x00\x00" for text in value)
    else:
        raise ValueError(f"no encoder for property type 0x{ptype:04x}")


def pack_row(out: bytearray, columns: Sequence[int], cells: Sequence[Cell]) -> None:
    """An AddressBookPropertyRow of ``cells`` under ``columns``."""
    flagged = any(tag & 0xFFFF == PT_ERROR for tag, _value in cells)
    out.append(1 if flagged else 0)
    for column, (tag, value) in zip(columns, cells):
        ptype = tag & 0xFFFF
        if column & 0xFFFF == PT_UNSPECIFIED:         # typed: the value's own type first
            out += struct.pack("<H", ptype)
        if flagged:
            out.append(FLAG_ERROR if ptype == PT_ERROR else FLAG_PRESENT)
            if ptype == PT_ERROR:
                out += U32.pack(value)
                continue
        _value(out, ptype, value)


def pack_value_list(out: bytearray, cells: Sequence[Cell]) -> None:
    """An AddressBookPropertyValueList: a count, then each value with its tag."""
    out += U32.pack(len(cells))
    for tag, value in cells:
        out += U32.pack(tag)
        _value(out, tag & 0xFFFF, value)


def _u32_array(out: bytearray, values: Sequence[int]) -> None:
    out += U32.pack(len(values)) + struct.pack(f"<{len(values)}L", *values)


def _rows(out: bytearray, columns: Sequence[int], rows: Sequence[Sequence[Cell]]) -> None:
    out.append(1)                                     # HasColumnsAndRows / HasRowsAndColumns
    _u32_array(out, columns)
    out += U32.pack(len(rows))
    for cells in rows:
        pack_row(out, columns, cells)


_AUX_NONE = U32.pack(0)


# ---- responses (StatusCode 0: the request was processed; ErrorCode: the NSPI return value) ------------------
def bind_response(code: int, server_guid: bytes) -> bytes:
    return struct.pack("<LL", 0, code) + server_guid + _AUX_NONE


def code_response(code: int) -> bytes:
    """Unbind, and any request refused before its own fields (e.g. a STAT naming no table)."""
    return struct.pack("<LL", 0, code) + _AUX_NONE


def special_table_response(code: int, codepage: int, version: int, rows: Sequence[Sequence[Cell]]) -> bytes:
    out = bytearray(struct.pack("<LLLBLBL", 0, code, codepage, 1, version, 1, len(rows)))
    for cells in rows:
        pack_value_list(out, cells)
    return bytes(out + _AUX_NONE)


def query_rows_response(code: int, stat: Stat, columns: Sequence[int],
                        rows: Optional[Sequence[Sequence[Cell]]]) -> bytes:
    out = bytearray(struct.pack("<LLB", 0, code, 1) + pack_stat(stat))
    if rows is None:
        out.append(0)
    else:
        _rows(out, columns, rows)
    return bytes(out + _AUX_NONE)


def resolve_names_response(code: int, codepage: int, mids: Sequence[int], columns: Sequence[int],
                           rows: Sequence[Sequence[Cell]]) -> bytes:
    out = bytearray(struct.pack("<LLLB", 0, code, codepage, 1))
    _u32_array(out, mids)
    _rows(out, columns, rows)
    return bytes(out + _AUX_NONE)


def dn_to_mid_response(code: int, mids: Sequence[int]) -> bytes:
    out = bytearray(struct.pack("<LLB", 0, code, 1))
    _u32_array(out, mids)
    return bytes(out + _AUX_NONE)


def get_props_response(code: int, codepage: int, cells: Optional[Sequence[Cell]]) -> bytes:
    out = bytearray(struct.pack("<LLL", 0, code, codepage))
    if cells is None:
        out.append(0)
    else:
        out.append(1)
        pack_value_list(out, cells)
    return bytes(out + _AUX_NONE)


def get_matches_response(code: int, stat: Stat, mids: Optional[Sequence[int]], columns: Sequence[int],
                         rows: Optional[Sequence[Sequence[Cell]]]) -> bytes:
    out = bytearray(struct.pack("<LLB", 0, code, 1) + pack_stat(stat))
    if mids is None:
        out += b"\x00\x00"                                    # HasMinimalIds 0, HasColumnsAndRows 0
    else:
        out.append(1)
        _u32_array(out, mids)
        if rows is None:
            out.append(0)
        else:
            _rows(out, columns, rows)
    return bytes(out + _AUX_NONE)


def tags_response(code: int, tags: Optional[Sequence[int]]) -> bytes:
    """GetPropList (PropertyTags) and QueryColumns (Columns): a flag, then a LargePropTagArray."""
    out = bytearray(struct.pack("<LL", 0, code))
    if tags is None:
        out.append(0)
    else:
        out.append(1)
        _u32_array(out, tags)
    return bytes(out + _AUX_NONE)


def compare_mids_response(code: int, result: int) -> bytes:
    return struct.pack("<LLl", 0, code, result) + _AUX_NONE


def resort_response(code: int, stat: Stat, mids: Optional[Sequence[int]]) -> bytes:
    out = bytearray(struct.pack("<LLB", 0, code, 1) + pack_stat(stat))
    if mids is None:
        out.append(0)
    else:
        out.append(1)
        _u32_array(out, mids)
    return bytes(out + _AUX_NONE)


def update_stat_response(code: int, stat: Stat, delta: Optional[int]) -> bytes:
    out = struct.pack("<LLB", 0, code, 1) + pack_stat(stat)
    out += struct.pack("<Bl", 1, delta) if delta is not None else b"\x00"
    return out + _AUX_NONE


def url_response(code: int, url: str) -> bytes:
    """GetMailboxUrl / GetAddressBookUrl: ServerUrl, a NUL-terminated UTF-16 string."""
    return struct.pack("<LL", 0, code) + url.encode("utf-16-le") + b"\x00\x00" + _AUX_NONE
