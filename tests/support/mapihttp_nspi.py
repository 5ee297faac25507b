"""A MAPI/HTTP address book (/mapi/nspi/) client half built from [MS-OXCMAPIHTTP] 2.2.5 and [MS-OXCDATA] 2.11
alone (no harness code): request bodies for Bind, Unbind, GetSpecialTable, QueryRows, ResolveNames, DNToMId,
GetProps, GetMailboxUrl, GetAddressBookUrl, and parsers for their responses."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

STAT = struct.Struct("<LLLlLLLLL")
CP_TELETEX, CP_1252 = 20127, 1252
AUX_NONE = struct.pack("<L", 0)


def stat_bytes(container: int = 0, codepage: int = CP_1252, current: int = 0, delta: int = 0) -> bytes:
    return STAT.pack(0, container, current, delta, 0, 0, codepage, 0x409, 0x409)


def _tags(tags: Optional[Sequence[int]]) -> bytes:
    if tags is None:
        return b"\x00"
    return struct.pack(f"<BL{len(tags)}L", 1, len(tags), *tags)


def bind_body(codepage: int = CP_1252) -> bytes:
    return struct.pack("<LB", 0, 1) + stat_bytes(codepage=codepage) + AUX_NONE


def unbind_body() -> bytes:
    return struct.pack("<L", 0) + AUX_NONE


def special_table_body(flags: int = 0x4) -> bytes:          # NspiUnicodeStrings
    return struct.pack("<LB", flags, 1) + stat_bytes() + struct.pack("<BL", 1, 0) + AUX_NONE


def query_rows_body(tags: Sequence[int], container: int = 0, count: int = 50,
                    explicit: Sequence[int] = ()) -> bytes:
    return (struct.pack("<LB", 0, 1) + stat_bytes(container) + struct.pack(f"<L{len(explicit)}L", len(explicit),
                                                                           *explicit)
            + struct.pack("<L", count) + _tags(tags) + AUX_NONE)


def resolve_names_body(names: Sequence[str], tags: Sequence[int]) -> bytes:
    strings = b"".join(name.encode("utf-16-le") + b"\x00\x00" for name in names)
    return (struct.pack("<LB", 0, 1) + stat_bytes() + _tags(tags) + struct.pack("<BL", 1, len(names)) + strings
            + AUX_NONE)


def dn_to_mid_body(dns: Sequence[str]) -> bytes:
    return struct.pack("<LBL", 0, 1, len(dns)) + b"".join(dn.encode("ascii") + b"\x00" for dn in dns) + AUX_NONE


def get_props_body(mid: int, tags: Sequence[int]) -> bytes:
    return struct.pack("<LB", 0, 1) + stat_bytes(current=mid) + _tags(tags) + AUX_NONE


def get_matches_body(restriction: bytes, count: int, tags: Optional[Sequence[int]]) -> bytes:
    """Reserved, STAT, HasMinimalIds 0, InterfaceOptionFlags, HasFilter + Filter, HasPropertyName 0, RowCount,
    Columns."""
    return (struct.pack("<LB", 0, 1) + stat_bytes() + struct.pack("<BLB", 0, 0, 1) + restriction + b"\x00"
            + struct.pack("<L", count) + _tags(tags) + AUX_NONE)


def unicode_value(tag: int, text: str) -> bytes:
    """A TaggedPropertyValue of a PtypString ([MS-OXCDATA] 2.11.4)."""
    return struct.pack("<L", tag) + text.encode("utf-16-le") + b"\x00\x00"


def or_restriction(*parts: bytes) -> bytes:                 # [MS-OXCDATA] 2.12.2, 32-bit count in MAPI/HTTP
    return struct.pack("<BL", 0x01, len(parts)) + b"".join(parts)


def property_restriction(relop: int, tag: int, text: str) -> bytes:
    return struct.pack("<BBL", 0x04, relop, tag) + unicode_value(tag, text)


def content_restriction(fuzzy_low: int, fuzzy_high: int, tag: int, text: str) -> bytes:
    return struct.pack("<BHHL", 0x03, fuzzy_low, fuzzy_high, tag) + unicode_value(tag, text)


def prop_list_body(mid: int, codepage: int = CP_1252) -> bytes:
    return struct.pack("<LLL", 0, mid, codepage) + AUX_NONE


def query_columns_body(flags: int = 0x80000000) -> bytes:   # NspiUnicodeProptypes
    return struct.pack("<LL", 0, flags) + AUX_NONE


def compare_mids_body(first: int, second: int, container: int = 0) -> bytes:
    return struct.pack("<LB", 0, 1) + stat_bytes(container) + struct.pack("<LL", first, second) + AUX_NONE


def resort_body(mids: Sequence[int], current: int = 0) -> bytes:
    return (struct.pack("<LB", 0, 1) + stat_bytes(current=current) + struct.pack(f"<BL{len(mids)}L", 1, len(mids),
                                                                                  *mids) + AUX_NONE)


def update_stat_body(delta: int, container: int = 0) -> bytes:
    return struct.pack("<LB", 0, 1) + stat_bytes(container, delta=delta) + b"\x01" + AUX_NONE


def url_body(dn: str) -> bytes:
    return struct.pack("<L", 0) + dn.encode("utf-16-le") + b"\x00\x00" + AUX_NONE


class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def unpack(self, fmt: str) -> Tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def u8(self) -> int:
        return self.unpack("B")[0]

    def u32(self) -> int:
        return self.unpack("L")[0]

    def take(self, size: int) -> bytes:
        self.pos += size
        return self.data[self.pos - size:self.pos]

    def utf16z(self) -> str:
        end = self.pos
        while self.data[end:end + 2] != b"\x00\x00":
            end += 2
        text = self.data[self.pos:end].decode("utf-16-le")
        self.pos = end + 2
        return text

    def asciiz(self) -> bytes:
        end = self.data.index(b"\x00", self.pos)
        text = self.data[self.pos:end]
        self.pos = end + 1
        return text

    def u32s(self) -> List[int]:
        return list(self.unpack(f"{self.u32()}L"))


def read_value(reader: Reader, ptype: int) -> object:
    """A PropertyValue (32-bit counts), after HasValue for the string/binary/multi-valued types."""
    if ptype in (0x001E, 0x001F, 0x0102, 0x101E, 0x101F):
        assert reader.u8() == 1                       # HasValue
    if ptype == 0x0003:
        return reader.unpack("l")[0]
    if ptype == 0x000A:
        return ("error", reader.u32())
    if ptype == 0x000B:
        return bool(reader.u8())
    if ptype == 0x0040:
        return reader.unpack("Q")[0]
    if ptype == 0x001F:
        return reader.utf16z()
    if ptype == 0x001E:
        return reader.asciiz()
    if ptype == 0x0102:
        return reader.take(reader.u32())
    if ptype == 0x101F:
        return [reader.utf16z() for _ in range(reader.u32())]
    if ptype == 0x101E:
        return [reader.asciiz() for _ in range(reader.u32())]
    raise AssertionError(f"type {ptype:#x} not in this client")


def read_row(reader: Reader, columns: Sequence[int]) -> List[object]:
    """An AddressBookPropertyRow: Flags, then a (flagged) value per column."""
    flagged = reader.u8()
    row: List[object] = []
    for column in columns:
        ptype = column & 0xFFFF
        if ptype == 0:
            ptype = reader.unpack("H")[0]
        if flagged:
            flag = reader.u8()
            if flag == 0x0A:
                row.append(("error", reader.u32()))
                continue
            if flag == 0x01:
                row.append(None)
                continue
        row.append(read_value(reader, ptype))
    return row


def read_value_list(reader: Reader) -> List[Tuple[int, object]]:
    values = []
    for _ in range(reader.u32()):
        tag = reader.u32()
        values.append((tag, read_value(reader, tag & 0xFFFF)))
    return values


@dataclass
class AbResponse:
    status: int
    code: int
    stat: Optional[Tuple] = None
    codepage: Optional[int] = None
    mids: Optional[List[int]] = None
    columns: Optional[List[int]] = None
    rows: Optional[List[List[object]]] = None
    values: Optional[List[List[Tuple[int, object]]]] = None
    url: Optional[str] = None
    server_guid: Optional[bytes] = None
    result: Optional[int] = None             # CompareMIds; UpdateStat's Delta


def parse_response(kind: str, body: bytes) -> AbResponse:
    reader = Reader(body)
    status, code = reader.unpack("LL")
    answer = AbResponse(status, code)
    if kind == "Bind":
        answer.server_guid = reader.take(16)
    elif kind == "GetSpecialTable":
        answer.codepage = reader.u32()
        if reader.u8():
            reader.u32()                              # Version
        answer.values = [read_value_list(reader) for _ in range(reader.u32())] if reader.u8() else []
    elif kind in ("QueryRows", "ResolveNames"):
        if kind == "QueryRows":
            answer.stat = reader.unpack("LLLlLLLLL") if reader.u8() else None
        else:
            answer.codepage = reader.u32()
            answer.mids = reader.u32s() if reader.u8() else None
        if reader.u8():
            answer.columns = reader.u32s()
            answer.rows = [read_row(reader, answer.columns) for _ in range(reader.u32())]
    elif kind == "DNToMId":
        answer.mids = reader.u32s() if reader.u8() else None
    elif kind == "GetProps":
        answer.codepage = reader.u32()
        answer.values = [read_value_list(reader)] if reader.u8() else None
    elif kind in ("GetMailboxUrl", "GetAddressBookUrl"):
        answer.url = reader.utf16z()
    elif kind == "GetMatches":
        answer.stat = reader.unpack("LLLlLLLLL") if reader.u8() else None
        answer.mids = reader.u32s() if reader.u8() else None
        if reader.u8():
            answer.columns = reader.u32s()
            answer.rows = [read_row(reader, answer.columns) for _ in range(reader.u32())]
    elif kind in ("GetPropList", "QueryColumns"):
        answer.columns = reader.u32s() if reader.u8() else None
    elif kind == "CompareMIds":
        answer.result = reader.unpack("l")[0]
    elif kind in ("ResortRestriction", "UpdateStat"):
        answer.stat = reader.unpack("LLLlLLLLL") if reader.u8() else None
        if kind == "UpdateStat":
            answer.result = reader.unpack("l")[0] if reader.u8() else None
        else:
            answer.mids = reader.u32s() if reader.u8() else None
    assert reader.u32() == 0 and reader.pos == len(body)   # an empty auxiliary buffer ends every response
    return answer
