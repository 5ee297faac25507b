"""The table ROPs after RopSetColumns (MS-OXCROPS 2.2.5, MS-OXCTABL): RopSortTable, RopRestrict, RopQueryPosition,
RopSeekRow, RopSeekRowFractional, RopFindRow, RopQueryColumnsAll, RopGetStatus, RopResetTable.

A table's view is its rows restricted then sorted (``TableObject.arrange``), evaluated when rows are read, so rows
that arrive later show up as on Exchange. Sorting and restricting move the cursor to the beginning (MS-OXCTABL
3.2.5.3/3.2.5.4). Sorting is for contents tables only, without categories (ecNotSupported otherwise). No
bookmarks are handed out, so RopFindRow from a custom bookmark answers ecInvalidBookmark.

Bytes in, bytes out, the ``run_*`` shape of rops.py.
"""
from __future__ import annotations

import datetime as dt
import struct
from typing import Any, Callable, List, Optional, Tuple

from harness.mailbox.store import Item
from harness.rpc.emsmdb.idl import EC_NONE, EC_NOT_FOUND, EC_NOT_SUPPORTED
from harness.rpc.emsmdb.restrictions import TooComplex, matcher, parse_whole
from harness.rpc.emsmdb.rops import (
    BOOKMARK_BEGINNING,
    BOOKMARK_CURRENT,
    BOOKMARK_END,
    EC_INVALID_PARAMETER,
    EC_NULL_OBJECT,
    ObjectMap,
    TableObject,
    _fail,
    _filetime,
    _need,
    property_row,
    row_lookup,
)

ROP_SORT_TABLE, ROP_RESTRICT, ROP_GET_STATUS, ROP_QUERY_POSITION, ROP_SEEK_ROW = 0x13, 0x14, 0x16, 0x17, 0x18
ROP_SEEK_ROW_FRACTIONAL, ROP_QUERY_COLUMNS_ALL, ROP_FIND_ROW, ROP_RESET_TABLE = 0x1A, 0x37, 0x4F, 0x81
EC_TOO_COMPLEX = 0x80040117
EC_INVALID_BOOKMARK = 0x80040405
BOOKMARK_CUSTOM = 0x03
TABLE_SORT_ASCEND, TABLE_SORT_DESCEND = 0, 1
TBLSTAT_COMPLETE = 0
FIND_ROW_BACKWARD = 0x01
MV_FLAG = 0x1000
TAG_MESSAGE_RECIPIENTS = 0x0E12000D
PT_I8 = 0x0014

# What RopQueryColumnsAll lists per table kind (the properties rops.py gives rows of that kind)
_COLUMNS = {
    "contents": (0x0037001F, 0x001A001F, 0x0FFF0102, 0x674A0014, 0x67480014, 0x0E070003, 0x0E060040, 0x00390040,
                 0x0C1A001F, 0x0E080003, 0x0E1B000B, 0x00170003),
    "hierarchy": (0x3001001F, 0x3613001F, 0x0FFF0102, 0x67480014, 0x67490014, 0x36020003, 0x36030003, 0x360A000B),
    "rules": (0x66740014, 0x66760003, 0x66770003, 0x66780003, 0x667900FD, 0x668000FE, 0x6681001F, 0x6682001F,
              0x66830003, 0x66840102),
}


# ---- row values as restrictions and sorts compare them ----------------------------------------------------------
def value_of(row: Any, tag: int) -> Any:
    """A row's value for ``tag`` in the form restrictions.read_value gives (FILETIME ints, signed 64-bit ints for
    PtypInteger64); a recipient row is a dict by property id."""
    value = row.get(tag >> 16) if isinstance(row, dict) else row_lookup(row)(row, tag >> 16)
    if isinstance(value, dt.datetime):
        return _filetime(value)
    if tag & 0xFFFF == PT_I8 and isinstance(value, bytes) and len(value) == 8:
        return int.from_bytes(value, "little", signed=True)
    return value


def _recipients(row: Any) -> List[dict]:
    if not isinstance(row, Item):
        return []
    return [{0x3001: name, 0x3003: address, 0x39FE: address, 0x3002: "SMTP", 0x0C15: kind}
            for kind, people in ((1, row.to), (2, row.cc)) for name, address in people]


SUBOBJECTS = {TAG_MESSAGE_RECIPIENTS: _recipients}


def _sort_key(tag: int) -> Callable[[Any], Tuple[bool, Any]]:
    def key(row: Any) -> Tuple[bool, Any]:
        value = value_of(row, tag)
        if value is None:
            return False, 0                   # no value sorts before any value
        return True, value.casefold() if isinstance(value, str) else value
    return key


def _sorted(rows: List, orders: List[Tuple[int, int]]) -> List:
    """Stable sorts from the last order to the first: the first order decides, ties keep the store's order."""
    for tag, order in reversed(orders):
        try:
            rows = sorted(rows, key=_sort_key(tag), reverse=order == TABLE_SORT_DESCEND)
        except TypeError:                     # values of two kinds under one tag: leave that order out
            continue
    return rows


def _arrangement(keep: Optional[Callable[[Any], bool]],
                 orders: List[Tuple[int, int]]) -> Optional[Callable[[List], List]]:
    """The view function: restrict, then sort. The last view is kept while the same rows at the same change numbers
    come in, so paging through a large restricted or sorted table does not redo the work on every ROP (rows
    without change numbers, rules, are always worked out afresh)."""
    if keep is None and not orders:
        return None
    last: List[Tuple[tuple, List]] = []

    def arrange(rows: List) -> List:
        stamp = tuple((id(row), getattr(row, "change_number", None)) for row in rows)
        cacheable = all(number is not None for _, number in stamp)
        if cacheable and last and last[0][0] == stamp:
            return list(last[0][1])
        view = [row for row in rows if keep(row)] if keep is not None else rows
        view = _sorted(view, orders) if orders else view
        if cacheable:
            last[:] = [(stamp, view)]
        return list(view)
    return arrange


def _table(objects: ObjectMap, handles: List[int], index: int) -> Optional[TableObject]:
    table = objects.at(handles, index)
    return table if isinstance(table, TableObject) else None


def _status(rop_id: int, index: int) -> bytes:
    return struct.pack("<BBLB", rop_id, index, EC_NONE, TBLSTAT_COMPLETE)


# ---- the ROPs -----------------------------------------------------------------------------------------------------
def run_sort_table(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 10, "RopSortTable")
    _, _, in_index, _flags, count, categories, _expanded = struct.unpack_from("<BBBBHHH", rops, pos)
    _need(rops, pos + 10, 5 * count, "RopSortTable SortOrders")
    orders = [struct.unpack_from("<HHB", rops, pos + 10 + 5 * i) for i in range(count)]
    end = pos + 10 + 5 * count
    table = _table(objects, handles, in_index)
    if table is None:
        return _fail(ROP_SORT_TABLE, in_index, EC_NULL_OBJECT), end
    if table.kind != "contents" or categories or any(prop_type & MV_FLAG for prop_type, _, _ in orders):
        return _fail(ROP_SORT_TABLE, in_index, EC_NOT_SUPPORTED), end
    if any(order not in (TABLE_SORT_ASCEND, TABLE_SORT_DESCEND) for _, _, order in orders):
        return _fail(ROP_SORT_TABLE, in_index, EC_INVALID_PARAMETER), end
    table.sort = [(prop_id << 16 | prop_type, order) for prop_type, prop_id, order in orders]
    table.arrange = _arrangement(table.keep, table.sort)
    table.position = 0
    return _status(ROP_SORT_TABLE, in_index), end


def _restriction(data: bytes) -> Tuple[Optional[Callable[[Any], bool]], int]:
    """(predicate or None for no restriction, error code) of RestrictionData; ValueError when malformed."""
    if not data:
        return None, EC_NONE
    try:
        return matcher(parse_whole(data), value_of, SUBOBJECTS), EC_NONE
    except TooComplex:
        return None, EC_TOO_COMPLEX


def run_restrict(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 6, "RopRestrict")
    _, _, in_index, _flags, size = struct.unpack_from("<BBBBH", rops, pos)
    _need(rops, pos + 6, size, "RopRestrict RestrictionData")
    end = pos + 6 + size
    keep, code = _restriction(rops[pos + 6:end])
    table = _table(objects, handles, in_index)
    if table is None:
        return _fail(ROP_RESTRICT, in_index, EC_NULL_OBJECT), end
    if code != EC_NONE:
        return _fail(ROP_RESTRICT, in_index, code), end
    table.keep = keep
    table.arrange = _arrangement(keep, table.sort)
    table.position = 0
    return _status(ROP_RESTRICT, in_index), end


def run_get_status(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 3, "RopGetStatus")
    in_index = rops[pos + 2]
    if _table(objects, handles, in_index) is None:
        return _fail(ROP_GET_STATUS, in_index, EC_NULL_OBJECT), pos + 3
    return _status(ROP_GET_STATUS, in_index), pos + 3


def run_query_position(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 3, "RopQueryPosition")
    in_index = rops[pos + 2]
    table = _table(objects, handles, in_index)
    if table is None:
        return _fail(ROP_QUERY_POSITION, in_index, EC_NULL_OBJECT), pos + 3
    total = len(table.rows())
    return struct.pack("<BBLLL", ROP_QUERY_POSITION, in_index, EC_NONE, min(table.position, total), total), pos + 3


def _origin_position(table: TableObject, origin: int, total: int) -> Optional[int]:
    return {BOOKMARK_BEGINNING: 0, BOOKMARK_CURRENT: min(table.position, total), BOOKMARK_END: total}.get(origin)


def run_seek_row(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 9, "RopSeekRow")
    _, _, in_index, origin, count, _want_moved = struct.unpack_from("<BBBBlB", rops, pos)
    end = pos + 9
    table = _table(objects, handles, in_index)
    if table is None:
        return _fail(ROP_SEEK_ROW, in_index, EC_NULL_OBJECT), end
    total = len(table.rows())
    start = _origin_position(table, origin, total)
    if start is None:
        return _fail(ROP_SEEK_ROW, in_index, EC_INVALID_PARAMETER), end
    table.position = max(0, min(total, start + count))
    sought = table.position - start
    return struct.pack("<BBLBl", ROP_SEEK_ROW, in_index, EC_NONE, int(sought != count), sought), end


def run_seek_row_fractional(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 11, "RopSeekRowFractional")
    _, _, in_index, numerator, denominator = struct.unpack_from("<BBBLL", rops, pos)
    end = pos + 11
    table = _table(objects, handles, in_index)
    if table is None:
        return _fail(ROP_SEEK_ROW_FRACTIONAL, in_index, EC_NULL_OBJECT), end
    if denominator == 0:
        return _fail(ROP_SEEK_ROW_FRACTIONAL, in_index, EC_INVALID_PARAMETER), end
    total = len(table.rows())
    table.position = min(total, numerator * total // denominator)
    return struct.pack("<BBL", ROP_SEEK_ROW_FRACTIONAL, in_index, EC_NONE), end


def run_find_row(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 6, "RopFindRow")
    _, _, in_index, flags, size = struct.unpack_from("<BBBBH", rops, pos)
    _need(rops, pos + 6, size + 3, "RopFindRow RestrictionData")
    data = rops[pos + 6:pos + 6 + size]
    origin, bookmark_size = struct.unpack_from("<BH", rops, pos + 6 + size)
    end = pos + 9 + size + bookmark_size
    _need(rops, pos + 9 + size, bookmark_size, "RopFindRow Bookmark")
    keep, code = _restriction(data)
    table = _table(objects, handles, in_index)
    if table is None or table.columns is None:
        return _fail(ROP_FIND_ROW, in_index, EC_NULL_OBJECT), end
    if code != EC_NONE:
        return _fail(ROP_FIND_ROW, in_index, code), end
    if origin == BOOKMARK_CUSTOM:
        return _fail(ROP_FIND_ROW, in_index, EC_INVALID_BOOKMARK), end
    rows = table.rows()
    start = _origin_position(table, origin, len(rows))
    if start is None:
        return _fail(ROP_FIND_ROW, in_index, EC_INVALID_PARAMETER), end
    # forward: the origin row and those after it; backward: the rows before the origin, nearest first
    order = range(start, len(rows)) if not flags & FIND_ROW_BACKWARD else range(start - 1, -1, -1)
    found = next((index for index in order if keep is None or keep(rows[index])), None)
    if found is None:
        return _fail(ROP_FIND_ROW, in_index, EC_NOT_FOUND), end
    table.position = found
    # RowNoLongerVisible 0, HasRowData 1, the row in the table's columns
    return (struct.pack("<BBLBB", ROP_FIND_ROW, in_index, EC_NONE, 0, 1)
            + property_row(rows[found], table.columns)), end


def run_query_columns_all(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 3, "RopQueryColumnsAll")
    in_index = rops[pos + 2]
    table = _table(objects, handles, in_index)
    if table is None:
        return _fail(ROP_QUERY_COLUMNS_ALL, in_index, EC_NULL_OBJECT), pos + 3
    tags = _COLUMNS[table.kind]
    return (struct.pack("<BBLH", ROP_QUERY_COLUMNS_ALL, in_index, EC_NONE, len(tags))
            + struct.pack(f"<{len(tags)}L", *tags)), pos + 3


def run_reset_table(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    """Columns, restriction and sort order gone, the cursor at the beginning (MS-OXCTABL 3.2.5.15)."""
    _need(rops, pos, 3, "RopResetTable")
    in_index = rops[pos + 2]
    table = _table(objects, handles, in_index)
    if table is None:
        return _fail(ROP_RESET_TABLE, in_index, EC_NULL_OBJECT), pos + 3
    table.columns, table.keep, table.sort, table.arrange, table.position = None, None, [], None, 0
    return struct.pack("<BBL", ROP_RESET_TABLE, in_index, EC_NONE), pos + 3


HANDLERS = {ROP_SORT_TABLE: run_sort_table, ROP_RESTRICT: run_restrict, ROP_GET_STATUS: run_get_status,
            ROP_QUERY_POSITION: run_query_position, ROP_SEEK_ROW: run_seek_row,
            ROP_SEEK_ROW_FRACTIONAL: run_seek_row_fractional, ROP_FIND_ROW: run_find_row,
            ROP_QUERY_COLUMNS_ALL: run_query_columns_all, ROP_RESET_TABLE: run_reset_table}
