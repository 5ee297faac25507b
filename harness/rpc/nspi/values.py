"""NSPI property values and rows: address-book values converted to the property type and code page a client asks
for, encoded as impacket's PropertyValue_r / PropertyRow_r / PropertyRowSet_r.

Properties a row lacks come back as PtypErrorCode values (MAPI_E_NOT_FOUND), never omitted.
"""
from __future__ import annotations

import codecs
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Sequence, Union

from impacket.dcerpc.v5 import nspi as ndr
from impacket.dcerpc.v5.dtypes import LPSTR, LPWSTR

from harness.rpc.addressbook import (
    PR_CONTAINER_FLAGS,
    PR_DEPTH,
    PR_DISPLAY_NAME,
    PR_EMS_AB_CONTAINERID,
    PR_EMS_AB_IS_MASTER,
    PR_EMS_AB_OBJECT_GUID,
    PR_EMS_AB_PARENT_ENTRYID,
    PR_ENTRYID,
    AbObject,
    ephemeral_entry_id,
)
from harness.rpc.nspi.errors import NOT_FOUND

PT_UNSPECIFIED, PT_ERROR, PT_STRING8, PT_UNICODE = 0x0000, 0x000A, 0x001E, 0x001F
PT_MV_STRING8, PT_MV_UNICODE = 0x101E, 0x101F
STRING_TYPES = (PT_STRING8, PT_UNICODE)
MV_STRING_TYPES = (PT_MV_STRING8, PT_MV_UNICODE)

# Columns used when a client passes no property tag list (MS-OXNSPI 3.1.4.1.8); the string type follows the code page.
DEFAULT_COLUMNS = (0xFFFD0003, 0x0FFE0003, 0x39000003, 0x3001001E, 0x3A1A001E, 0x3A18001E, 0x3A19001E)
HIERARCHY_COLUMNS = (PR_EMS_AB_CONTAINERID, PR_CONTAINER_FLAGS, PR_DEPTH, PR_EMS_AB_IS_MASTER, PR_DISPLAY_NAME,
                     PR_ENTRYID, PR_EMS_AB_PARENT_ENTRYID, PR_EMS_AB_OBJECT_GUID)


# ---- property values ----------------------------------------------------------------------------------------
def _encoding(codepage: int) -> str:
    try:
        return codecs.lookup(f"cp{codepage}").name
    except LookupError:
        return "ascii"   # e.g. CP_TELETEX 20261, which Python lacks; directory names here are ASCII anyway


def _string8(text: str, codepage: int) -> bytes:
    return text.encode(_encoding(codepage), errors="replace") + b"\x00"


def _value(tag: int, arm: str, data: Any) -> ndr.PropertyValue_r:
    value = ndr.PropertyValue_r()
    value["ulPropTag"] = tag
    value["ulReserved"] = 0
    value["Value"]["tag"] = tag & 0xFFFF
    value["Value"][arm] = data
    return value


def _binary(data: bytes) -> ndr.Binary_r:
    binary = ndr.Binary_r()
    binary["cValues"] = len(data)
    binary["lpb"] = [bytes([b]) for b in data]
    return binary


def _string_array(strings: Sequence[str], wide: bool, codepage: int) -> Union[ndr.StringArray_r, ndr.WStringArray_r]:
    array = ndr.WStringArray_r() if wide else ndr.StringArray_r()
    for text in strings:
        item = LPWSTR() if wide else LPSTR()
        item["Data"] = text + "\x00" if wide else _string8(text, codepage)
        array["lppszW" if wide else "lppszA"].append(item)
    array["cValues"] = len(strings)
    return array


def error_value(tag: int, code: int = NOT_FOUND) -> ndr.PropertyValue_r:
    return _value((tag & 0xFFFF0000) | PT_ERROR, "err", code)


def encode_value(tag: int, value: Any, codepage: int) -> ndr.PropertyValue_r:
    """A PropertyValue_r for a value already converted to the tag's type."""
    ptype = tag & 0xFFFF
    if ptype == 0x0003:
        return _value(tag, "l", value)
    if ptype == 0x000B:
        return _value(tag, "b", int(bool(value)))
    if ptype == PT_UNICODE:
        return _value(tag, "lpszW", value + "\x00")
    if ptype == PT_STRING8:
        return _value(tag, "lpszA", _string8(value, codepage))
    if ptype == 0x0102:
        return _value(tag, "bin", _binary(value))
    if ptype == 0x0040:
        filetime = ndr.FILETIME()
        filetime["dwLowDateTime"] = value & 0xFFFFFFFF
        filetime["dwHighDateTime"] = value >> 32
        return _value(tag, "ft", filetime)
    if ptype in MV_STRING_TYPES:
        arm = "MVszW" if ptype == PT_MV_UNICODE else "MVszA"
        return _value(tag, arm, _string_array(value, ptype == PT_MV_UNICODE, codepage))
    raise ValueError(f"no encoder for property type 0x{ptype:04x}")


def convert(native_tag: int, requested_type: int, unicode_default: bool) -> Optional[int]:
    """The tag to answer with when a client asks for ``requested_type`` of a property held as ``native_tag``;
    None when the types cannot be converted (the client then gets an error value)."""
    native_type = native_tag & 0xFFFF
    prop_id = native_tag & 0xFFFF0000
    if requested_type == PT_UNSPECIFIED:
        if native_type in STRING_TYPES:
            return prop_id | (PT_UNICODE if unicode_default else PT_STRING8)
        if native_type in MV_STRING_TYPES:
            return prop_id | (PT_MV_UNICODE if unicode_default else PT_MV_STRING8)
        return native_tag
    for group in (STRING_TYPES, MV_STRING_TYPES):
        if native_type in group and requested_type in group:
            return prop_id | requested_type
    return native_tag if requested_type == native_type else None


def client_tag(native_tag: int, unicode: bool) -> int:
    """A native tag as listed to a client: string types in the client's flavour (Unicode or 8-bit)."""
    return convert(native_tag, PT_UNSPECIFIED, unicode)


def columns_or_default(tags: Optional[List[int]], codepage: int) -> List[int]:
    """The columns a call answers: the client's tags, or DEFAULT_COLUMNS when it passed none."""
    if tags is not None:
        return tags
    return [client_tag(tag, codepage == ndr.CP_WINUNICODE) for tag in DEFAULT_COLUMNS]


# ---- rows ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowEncoder:
    """Encodes address-book objects as rows; ``server_guid`` goes into ephemeral entry IDs."""
    server_guid: uuid.UUID

    def _render(self, obj: Optional[AbObject], tag: int, codepage: int, ephemeral: bool) -> ndr.PropertyValue_r:
        found = obj.value(tag >> 16) if obj is not None else None
        if found is None:
            return error_value(tag)
        native_tag, value = found
        answer_tag = convert(native_tag, tag & 0xFFFF, codepage == ndr.CP_WINUNICODE)
        if answer_tag is None:
            return error_value(tag)
        if native_tag == PR_ENTRYID and ephemeral:
            value = ephemeral_entry_id(self.server_guid, obj.display_type, obj.mid)
        return encode_value(answer_tag, value, codepage)

    def row(self, obj: Optional[AbObject], tags: Sequence[int], codepage: int,
            ephemeral: bool) -> ndr.PropertyRow_r:
        row = ndr.PropertyRow_r()
        row["Reserved"] = 0
        for tag in tags:
            row["lpProps"].append(self._render(obj, tag, codepage, ephemeral))
        row["cValues"] = len(tags)
        return row

    def rowset(self, objects: Iterable[Optional[AbObject]], tags: Sequence[int], codepage: int,
               ephemeral: bool = False) -> ndr.PropertyRowSet_r:
        rowset = ndr.PropertyRowSet_r()
        count = 0
        for obj in objects:
            rowset["aRow"].append(self.row(obj, tags, codepage, ephemeral))
            count += 1
        rowset["cRows"] = count
        return rowset
