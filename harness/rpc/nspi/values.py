"""NSPI property values and rows: address-book values converted to the property type and code page a client asks
for, as cells (tag, wire-ready value) that wire.py packs by hand, or as impacket's PropertyValue_r /
PropertyRow_r / PropertyRowSet_r for the calls that still build impacket responses.

Properties a row lacks come back as PtypErrorCode values (MAPI_E_NOT_FOUND), never omitted.
"""
from __future__ import annotations

import codecs
import functools
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

from impacket.dcerpc.v5 import nspi as ndr
from impacket.dcerpc.v5.dtypes import LPSTR, LPWSTR

from harness.hooks import hookspec
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
PT_LONG, PT_BOOLEAN, PT_SYSTIME, PT_BINARY = 0x0003, 0x000B, 0x0040, 0x0102
PT_MV_STRING8, PT_MV_UNICODE = 0x101E, 0x101F
STRING_TYPES = (PT_STRING8, PT_UNICODE)
MV_STRING_TYPES = (PT_MV_STRING8, PT_MV_UNICODE)

# Columns used when a client passes no property tag list (MS-OXNSPI 3.1.4.1.8); the string type follows the code page.
DEFAULT_COLUMNS = (0xFFFD0003, 0x0FFE0003, 0x39000003, 0x3001001E, 0x3A1A001E, 0x3A18001E, 0x3A19001E)
HIERARCHY_COLUMNS = (PR_EMS_AB_CONTAINERID, PR_CONTAINER_FLAGS, PR_DEPTH, PR_EMS_AB_IS_MASTER, PR_DISPLAY_NAME,
                     PR_ENTRYID, PR_EMS_AB_PARENT_ENTRYID, PR_EMS_AB_OBJECT_GUID)


# ---- property values ----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _encoding(codepage: int) -> str:
    try:
        return codecs.lookup(f"cp{codepage}").name
    except LookupError:
        return "ascii"   # e.g. CP_TELETEX 20261, which Python lacks; directory names here are ASCII anyway


def _string8(text: str, codepage: int) -> bytes:
    return text.encode(_encoding(codepage), errors="replace") + b"\x00"


# A cell is one property value as it goes on the wire: (tag, value) with the value by the tag's type: int
# (PT_LONG, PT_ERROR, PT_SYSTIME), bool (PT_BOOLEAN), bytes in the code page with their NUL (PT_STRING8), str without
# a NUL (PT_UNICODE), bytes (PT_BINARY), a list of such bytes / str (PT_MV_STRING8 / PT_MV_UNICODE).
Cell = Tuple[int, Any]
ENCODED_TYPES = (PT_LONG, PT_BOOLEAN, PT_ERROR, PT_STRING8, PT_UNICODE, PT_BINARY, PT_SYSTIME, PT_MV_STRING8,
                 PT_MV_UNICODE)


def error_cell(tag: int, code: int = NOT_FOUND) -> Cell:
    return (tag & 0xFFFF0000) | PT_ERROR, code


def value_cell(tag: int, value: Any, codepage: int) -> Cell:
    """The cell for a value already converted to the tag's type."""
    ptype = tag & 0xFFFF
    if ptype == PT_STRING8:
        return tag, _string8(value, codepage)
    if ptype == PT_MV_STRING8:
        return tag, [_string8(text, codepage) for text in value]
    if ptype == PT_BOOLEAN:
        return tag, bool(value)
    if ptype not in ENCODED_TYPES:
        raise ValueError(f"no encoder for property type 0x{ptype:04x}")
    return tag, value


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


def _string_array(strings: Sequence[Union[str, bytes]], wide: bool) -> Union[ndr.StringArray_r, ndr.WStringArray_r]:
    array = ndr.WStringArray_r() if wide else ndr.StringArray_r()
    for text in strings:
        item = LPWSTR() if wide else LPSTR()
        item["Data"] = text + "\x00" if wide else text
        array["lppszW" if wide else "lppszA"].append(item)
    array["cValues"] = len(strings)
    return array


def ndr_value(cell: Cell) -> ndr.PropertyValue_r:
    """A cell as impacket's PropertyValue_r."""
    tag, value = cell
    ptype = tag & 0xFFFF
    if ptype == PT_LONG:
        return _value(tag, "l", value)
    if ptype == PT_BOOLEAN:
        return _value(tag, "b", int(bool(value)))
    if ptype == PT_ERROR:
        return _value(tag, "err", value)
    if ptype == PT_UNICODE:
        return _value(tag, "lpszW", value + "\x00")
    if ptype == PT_STRING8:
        return _value(tag, "lpszA", value)
    if ptype == PT_BINARY:
        return _value(tag, "bin", _binary(value))
    if ptype == PT_SYSTIME:
        filetime = ndr.FILETIME()
        filetime["dwLowDateTime"] = value & 0xFFFFFFFF
        filetime["dwHighDateTime"] = value >> 32
        return _value(tag, "ft", filetime)
    if ptype in MV_STRING_TYPES:
        arm = "MVszW" if ptype == PT_MV_UNICODE else "MVszA"
        return _value(tag, arm, _string_array(value, ptype == PT_MV_UNICODE))
    raise ValueError(f"no encoder for property type 0x{ptype:04x}")


def error_value(tag: int, code: int = NOT_FOUND) -> ndr.PropertyValue_r:
    return ndr_value(error_cell(tag, code))


def encode_value(tag: int, value: Any, codepage: int) -> ndr.PropertyValue_r:
    """A PropertyValue_r for a value already converted to the tag's type."""
    return ndr_value(value_cell(tag, value, codepage))


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
    """Renders address-book objects as rows of cells; ``server_guid`` goes into ephemeral entry IDs."""
    server_guid: uuid.UUID

    def cell(self, obj: Optional[AbObject], tag: int, codepage: int, ephemeral: bool) -> Cell:
        found = obj.value(tag >> 16) if obj is not None else None
        if found is None:
            return error_cell(tag)
        native_tag, value = found
        answer_tag = convert(native_tag, tag & 0xFFFF, codepage == ndr.CP_WINUNICODE)
        if answer_tag is None:
            return error_cell(tag)
        if native_tag == PR_ENTRYID and ephemeral:
            value = ephemeral_entry_id(self.server_guid, obj.display_type, obj.mid)
        return value_cell(answer_tag, value, codepage)

    def cells(self, obj: Optional[AbObject], tags: Sequence[int], codepage: int, ephemeral: bool) -> List[Cell]:
        return [self.cell(obj, tag, codepage, ephemeral) for tag in tags]

    def table(self, objects: Iterable[Optional[AbObject]], tags: Sequence[int], codepage: int,
              ephemeral: bool = False) -> List[List[Cell]]:
        """The rows of ``objects`` as cells, for wire.pack_rowset."""
        return [self.cells(obj, tags, codepage, ephemeral) for obj in objects]

    # impacket forms, for the calls that build impacket responses
    def row(self, obj: Optional[AbObject], tags: Sequence[int], codepage: int,
            ephemeral: bool) -> ndr.PropertyRow_r:
        return ndr_row(self.cells(obj, tags, codepage, ephemeral))

    def rowset(self, objects: Iterable[Optional[AbObject]], tags: Sequence[int], codepage: int,
               ephemeral: bool = False) -> ndr.PropertyRowSet_r:
        return ndr_rowset(self.table(objects, tags, codepage, ephemeral))


def ndr_row(cells: Sequence[Cell]) -> ndr.PropertyRow_r:
    row = ndr.PropertyRow_r()
    row["Reserved"] = 0
    for cell in cells:
        row["lpProps"].append(ndr_value(cell))
    row["cValues"] = len(cells)
    return row


def ndr_rowset(rows: Sequence[Sequence[Cell]]) -> ndr.PropertyRowSet_r:
    rowset = ndr.PropertyRowSet_r()
    for cells in rows:
        rowset["aRow"].append(ndr_row(cells))
    rowset["cRows"] = len(rows)
    return rowset


# ---- the nspi_rows fault hook ------------------------------------------------------------------------------------
CELL_ACTIONS = ("drop", "error", "text", "type", "duplicate")
ROW_ACTIONS = ("none", "duplicate", "error-row")
RETYPED = {"long": (PT_LONG, 0x7FFFFFFF), "boolean": (PT_BOOLEAN, True), "binary": (PT_BINARY, b""),
           "systime": (PT_SYSTIME, 0), "unicode": (PT_UNICODE, ""), "string8": (PT_STRING8, b"\x00"),
           "mv-unicode": (PT_MV_UNICODE, []), "unspecified-error": (PT_ERROR, 0x80004005)}


@dataclass(frozen=True)
class CellEdit:
    """One change to every row's cell ``column`` (an index into the columns asked for; past the end: nothing):
    drop it (a missing column), make it PT_ERROR ``value`` (an int), give a string cell another text (``value``: a
    str; a non-string cell becomes PT_UNICODE), another type (``value``: a RETYPED key), or send it twice."""
    action: str
    column: int
    value: Any = None

    def apply(self, cells: List[Cell]) -> List[Cell]:
        if not 0 <= self.column < len(cells):
            return cells
        tag, value = cells[self.column]
        if self.action == "drop":
            return cells[:self.column] + cells[self.column + 1:]
        if self.action == "duplicate":
            return cells[:self.column + 1] + cells[self.column:]
        if self.action == "error":
            changed = ((tag & 0xFFFF0000) | PT_ERROR, int(self.value or NOT_FOUND))
        elif self.action == "text":
            text = str(self.value or "")
            changed = (tag, _string8(text, 1252)) if tag & 0xFFFF == PT_STRING8 else \
                ((tag & 0xFFFF0000) | PT_UNICODE, text)
        else:
            ptype, new = RETYPED[self.value]
            changed = ((tag & 0xFFFF0000) | ptype, new)
        return cells[:self.column] + [changed] + cells[self.column + 1:]


@dataclass(frozen=True)
class RowsEdit:
    """The ``nspi_rows`` hook's answer: every row of NspiQueryRows, NspiGetMatches or NspiResolveNames(W) changed
    by ``cells`` (in order), then the row set by ``rows``: none (no rows), duplicate (each twice), error-row (one
    more row, of errors)."""
    cells: Tuple[CellEdit, ...] = ()
    rows: Optional[str] = None

    def apply(self, table: List[List[Cell]]) -> List[List[Cell]]:
        edited = []
        for cells in table:
            for edit in self.cells:
                cells = edit.apply(cells)
            edited.append(cells)
        if self.rows == "none":
            return []
        if self.rows == "duplicate":
            return [row for row in edited for _ in (0, 1)]
        if self.rows == "error-row" and table:
            return edited + [[error_cell(tag) for tag, _value in table[0]]]
        return edited

    def one_column_set(self, columns: Sequence[int], table: List[List[Cell]]) -> Tuple[List[int], List[List[Cell]]]:
        """The edited ``table`` (from ``apply``) for a wire with one column set for every row (MAPI/HTTP's
        AddressBookPropertyRow): the columns asked for, dropped and sent twice as the cell edits did; a column its
        cells' types no longer agree with goes as PtypUnspecified, so each value carries its own type; a row of
        another width (the error row after a drop) as errors."""
        kept = list(columns)
        for edit in self.cells:
            if 0 <= edit.column < len(kept) and edit.action in ("drop", "duplicate"):
                kept[edit.column:edit.column + 1] = [] if edit.action == "drop" else [kept[edit.column]] * 2
        table = [row if len(row) == len(kept) else [error_cell(tag) for tag in kept] for row in table]
        typed = []
        for index, tag in enumerate(kept):
            types = {row[index][0] & 0xFFFF for row in table} - {PT_ERROR}
            typed.append(tag if types <= {tag & 0xFFFF} else tag & 0xFFFF0000 | PT_UNSPECIFIED)
        return typed, table

    def describe(self) -> str:
        return "NSPI rows changed"


@hookspec(fires_in="rpc/nspi/server.py", means="the rows of NspiQueryRows, NspiGetMatches or NspiResolveNames "
          "(\"query-rows\", \"get-matches\", \"resolve-names\") changed: cells dropped, made errors, retyped, "
          "odd strings; no rows, more rows")
def nspi_rows_hook(operation: str) -> RowsEdit: ...
