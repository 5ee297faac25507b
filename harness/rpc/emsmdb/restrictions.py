"""ROP restrictions (MS-OXCDATA 2.12, the ROP-buffer layout with 16-bit counts) as RopRestrict, RopFindRow and
PidTagRuleCondition carry them: bytes to the plain tuples harness/rpc/nspi/restrictions.py uses for NSPI (the NDR
layout there differs; the tree shape is shared), tuples back to bytes, and a compiled predicate over table rows.

Trees: ("and"|"or", [trees]), ("not", tree), ("content", tag, fuzzy, value), ("property", tag, relop, value),
("compare", relop, tag1, tag2), ("bitmask", relop, tag, mask), ("size", relop, tag, size), ("exist", tag),
("subobject", tag, tree), ("comment", [(tag, value)], tree or None), ("count", count, tree). ``fuzzy`` is
FuzzyLevelLow | FuzzyLevelHigh << 16, the 32-bit ulFuzzyLevel of the NSPI trees.
"""
from __future__ import annotations

import struct
from typing import Any, Callable, List, Mapping, Optional, Tuple

RES_AND, RES_OR, RES_NOT, RES_CONTENT, RES_PROPERTY, RES_COMPARE, RES_BITMASK, RES_SIZE, RES_EXIST = range(9)
RES_SUBOBJECT, RES_COMMENT, RES_COUNT = 9, 10, 11
RELOP_LT, RELOP_LE, RELOP_GT, RELOP_GE, RELOP_EQ, RELOP_NE, RELOP_RE = range(7)
BMR_EQZ, BMR_NEZ = 0, 1
FL_FULLSTRING, FL_SUBSTRING, FL_PREFIX = 0, 1, 2
FL_IGNORECASE = 0x0001 << 16
PT_SHORT, PT_LONG, PT_BOOLEAN, PT_I8, PT_STRING8, PT_UNICODE, PT_SYSTIME, PT_CLSID, PT_BINARY = (
    0x0002, 0x0003, 0x000B, 0x0014, 0x001E, 0x001F, 0x0040, 0x0048, 0x0102)
MV_FLAG, MV_INSTANCE = 0x1000, 0x2000
MAX_DEPTH = 32                       # deeper nesting is refused as too complex, never recursed into
PT_NULL, PT_FLOAT, PT_DOUBLE, PT_CURRENCY, PT_APPTIME, PT_ERROR = 0x0001, 0x0004, 0x0005, 0x0006, 0x0007, 0x000A
_FIXED = {PT_SHORT: "<h", PT_LONG: "<l", PT_BOOLEAN: "<B", PT_I8: "<q", PT_SYSTIME: "<Q", PT_FLOAT: "<f",
          PT_DOUBLE: "<d", PT_CURRENCY: "<q", PT_APPTIME: "<d", PT_ERROR: "<L"}
_RELOPS = {RELOP_LT: lambda a, b: a < b, RELOP_LE: lambda a, b: a <= b, RELOP_GT: lambda a, b: a > b,
           RELOP_GE: lambda a, b: a >= b, RELOP_EQ: lambda a, b: a == b, RELOP_NE: lambda a, b: a != b}


class TooComplex(Exception):
    """A well-formed restriction this model does not evaluate (a value type or restriction kind it lacks): the ROP
    answers ecTooComplex, as Exchange does for restrictions it cannot run."""


# ---- TaggedPropertyValue ----------------------------------------------------------------------------------------
def _need(data: bytes, pos: int, size: int) -> None:
    if pos + size > len(data):
        raise ValueError("truncated restriction")


def read_tagged(data: bytes, pos: int) -> Tuple[int, Any, int]:
    """(tag, value, next position) of a TaggedPropertyValue. Strings: str; PtypBoolean: bool; PtypInteger64 and
    PtypTime: int; PtypBinary and PtypGuid: bytes; multi-valued types: a list (32-bit count, as in ROP buffers)."""
    _need(data, pos, 4)
    tag = struct.unpack_from("<L", data, pos)[0]
    value, pos = read_value(tag & 0xFFFF, data, pos + 4)
    return tag, value, pos


def read_value(prop_type: int, data: bytes, pos: int) -> Tuple[Any, int]:
    if prop_type & MV_INSTANCE:              # one value of a multi-valued property: the base type
        prop_type &= ~(MV_INSTANCE | MV_FLAG)
    if prop_type & MV_FLAG and prop_type & ~MV_FLAG not in (PT_NULL, PT_BOOLEAN, PT_ERROR):
        _need(data, pos, 4)                  # multi-valued: a 32-bit count, then the values of the base type
        count, pos = struct.unpack_from("<L", data, pos)[0], pos + 4
        _need(data, pos, count)              # each value takes a byte or more: a count past the data is malformed
        values = []
        for _ in range(count):
            value, pos = read_value(prop_type & ~MV_FLAG, data, pos)
            values.append(value)
        return values, pos
    if prop_type == PT_NULL:
        return None, pos
    if prop_type in _FIXED:
        width = struct.calcsize(_FIXED[prop_type])
        _need(data, pos, width)
        value = struct.unpack_from(_FIXED[prop_type], data, pos)[0]
        return (bool(value) if prop_type == PT_BOOLEAN else value), pos + width
    if prop_type == PT_UNICODE:
        end = pos
        while True:
            _need(data, end, 2)
            if data[end:end + 2] == b"\x00\x00":
                return data[pos:end].decode("utf-16-le", "replace"), end + 2
            end += 2
    if prop_type == PT_STRING8:
        end = data.find(b"\x00", pos)
        if end < 0:
            raise ValueError("unterminated PtypString8")
        return data[pos:end].decode("latin-1"), end + 1
    if prop_type == PT_BINARY:
        _need(data, pos, 2)
        size = struct.unpack_from("<H", data, pos)[0]
        _need(data, pos + 2, size)
        return data[pos + 2:pos + 2 + size], pos + 2 + size
    if prop_type == PT_CLSID:
        _need(data, pos, 16)
        return data[pos:pos + 16], pos + 16
    raise TooComplex(f"property type 0x{prop_type:04x} in a restriction")


def write_tagged(tag: int, value: Any) -> bytes:
    return struct.pack("<L", tag) + write_value(tag & 0xFFFF, value)


def write_value(prop_type: int, value: Any) -> bytes:
    if prop_type & MV_INSTANCE:
        prop_type &= ~(MV_INSTANCE | MV_FLAG)
    if prop_type & MV_FLAG and prop_type & ~MV_FLAG not in (PT_NULL, PT_BOOLEAN, PT_ERROR):
        return struct.pack("<L", len(value)) + b"".join(write_value(prop_type & ~MV_FLAG, one) for one in value)
    if prop_type in _FIXED:
        return struct.pack(_FIXED[prop_type], value)
    if prop_type == PT_UNICODE:
        return str(value).encode("utf-16-le") + b"\x00\x00"
    if prop_type == PT_STRING8:
        return str(value).encode("latin-1") + b"\x00"
    if prop_type == PT_BINARY:
        return struct.pack("<H", len(value)) + bytes(value)
    if prop_type == PT_CLSID:
        return bytes(value)
    if prop_type == PT_NULL:
        return b""
    raise TooComplex(f"property type 0x{prop_type:04x} in a restriction")


# ---- bytes <-> trees --------------------------------------------------------------------------------------------
def parse(data: bytes, pos: int = 0, depth: int = 0) -> Tuple[tuple, int]:
    """One Restriction at ``pos``: (tree, next position). ValueError when malformed, TooComplex when well-formed
    but outside the model."""
    if depth > MAX_DEPTH:
        raise TooComplex("restriction nested too deeply")
    _need(data, pos, 1)
    kind, pos = data[pos], pos + 1
    if kind in (RES_AND, RES_OR):
        _need(data, pos, 2)
        count, pos = struct.unpack_from("<H", data, pos)[0], pos + 2
        parts = []
        for _ in range(count):
            part, pos = parse(data, pos, depth + 1)
            parts.append(part)
        return ("and" if kind == RES_AND else "or", parts), pos
    if kind == RES_NOT:
        inner, pos = parse(data, pos, depth + 1)
        return ("not", inner), pos
    if kind == RES_CONTENT:
        _need(data, pos, 8)
        low, high, tag = struct.unpack_from("<HHL", data, pos)
        _, value, pos = read_tagged(data, pos + 8)
        return ("content", tag, low | high << 16, value), pos
    if kind == RES_PROPERTY:
        _need(data, pos, 5)
        relop, tag = struct.unpack_from("<BL", data, pos)
        _, value, pos = read_tagged(data, pos + 5)
        return ("property", tag, relop, value), pos
    if kind == RES_COMPARE:
        _need(data, pos, 9)
        relop, tag1, tag2 = struct.unpack_from("<BLL", data, pos)
        return ("compare", relop, tag1, tag2), pos + 9
    if kind in (RES_BITMASK, RES_SIZE):
        _need(data, pos, 9)
        relop, tag, number = struct.unpack_from("<BLL", data, pos)
        return ("bitmask" if kind == RES_BITMASK else "size", relop, tag, number), pos + 9
    if kind == RES_EXIST:
        _need(data, pos, 4)
        return ("exist", struct.unpack_from("<L", data, pos)[0]), pos + 4
    if kind == RES_SUBOBJECT:
        _need(data, pos, 4)
        inner, after = parse(data, pos + 4, depth + 1)
        return ("subobject", struct.unpack_from("<L", data, pos)[0], inner), after
    if kind == RES_COMMENT:
        _need(data, pos, 1)
        count, pos = data[pos], pos + 1
        values = []
        for _ in range(count):
            tag, value, pos = read_tagged(data, pos)
            values.append((tag, value))
        _need(data, pos, 1)
        present, pos = data[pos], pos + 1
        if not present:
            return ("comment", values, None), pos
        commented, pos = parse(data, pos, depth + 1)
        return ("comment", values, commented), pos
    if kind == RES_COUNT:
        _need(data, pos, 4)
        inner, after = parse(data, pos + 4, depth + 1)
        return ("count", struct.unpack_from("<L", data, pos)[0], inner), after
    raise ValueError(f"unknown restriction type 0x{kind:02x}")


def parse_whole(data: bytes) -> tuple:
    """A restriction that must fill ``data`` exactly (RestrictionDataSize bytes)."""
    tree, end = parse(data)
    if end != len(data):
        raise ValueError("bytes after the restriction")
    return tree


def encode(tree: tuple) -> bytes:
    """A tree as ROP-buffer bytes (what parse reads back)."""
    kind = tree[0]
    if kind in ("and", "or"):
        return (bytes([RES_AND if kind == "and" else RES_OR]) + struct.pack("<H", len(tree[1]))
                + b"".join(encode(part) for part in tree[1]))
    if kind == "not":
        return bytes([RES_NOT]) + encode(tree[1])
    if kind == "content":
        _, tag, fuzzy, value = tree
        return bytes([RES_CONTENT]) + struct.pack("<HHL", fuzzy & 0xFFFF, fuzzy >> 16, tag) + write_tagged(tag, value)
    if kind == "property":
        _, tag, relop, value = tree
        return bytes([RES_PROPERTY]) + struct.pack("<BL", relop, tag) + write_tagged(tag, value)
    if kind in ("compare", "bitmask", "size"):
        code = {"compare": RES_COMPARE, "bitmask": RES_BITMASK, "size": RES_SIZE}[kind]
        return bytes([code]) + struct.pack("<BLL", *tree[1:])
    if kind == "exist":
        return bytes([RES_EXIST]) + struct.pack("<L", tree[1])
    if kind in ("subobject", "count"):
        return bytes([RES_SUBOBJECT if kind == "subobject" else RES_COUNT]) + struct.pack("<L", tree[1]) + encode(
            tree[2])
    if kind == "comment":
        _, values, inner = tree
        return (bytes([RES_COMMENT, len(values)]) + b"".join(write_tagged(tag, value) for tag, value in values)
                + (b"\x01" + encode(inner) if inner is not None else b"\x00"))
    raise ValueError(f"not a restriction tree: {kind!r}")


# ---- evaluation -------------------------------------------------------------------------------------------------
ValueOf = Callable[[Any, int], Any]          # (row, property tag) -> comparable value or None
Predicate = Callable[[Any], bool]


def _folded(value: Any, fuzzy: int = FL_IGNORECASE) -> Any:
    return value.casefold() if isinstance(value, str) and fuzzy & FL_IGNORECASE else value


def matcher(tree: tuple, value_of: ValueOf,
            subobjects: Optional[Mapping[int, Callable[[Any], List[Any]]]] = None) -> Predicate:
    """Compile ``tree`` into a predicate over rows. ``value_of`` gives a row's value for a tag (None: no value);
    ``subobjects[tag](row)`` the rows a subobject restriction on ``tag`` runs over (a tag not there: TooComplex).
    String properties compare case-insensitively, as the store's collation does; a missing value matches nothing
    but "not". TooComplex for kinds this model does not evaluate."""
    kind = tree[0]
    if kind in ("and", "or"):
        parts = [matcher(part, value_of, subobjects) for part in tree[1]]
        combine = all if kind == "and" else any
        return lambda row: combine(part(row) for part in parts)
    if kind == "not":
        inner = matcher(tree[1], value_of, subobjects)
        return lambda row: not inner(row)
    if kind == "content":
        return _content(tree[1], tree[2], tree[3], value_of)
    if kind == "property":
        if isinstance(tree[3], list):
            raise TooComplex("property restriction on a multi-valued value")
        return _relation(tree[2], lambda row: value_of(row, tree[1]), lambda row: tree[3])
    if kind == "compare":
        return _relation(tree[1], lambda row: value_of(row, tree[2]), lambda row: value_of(row, tree[3]))
    if kind == "bitmask":
        _, relop, tag, mask = tree

        def bits(row: Any) -> bool:
            value = value_of(row, tag)
            if not isinstance(value, int):
                return False
            return (value & mask == 0) if relop == BMR_EQZ else (value & mask != 0)
        return bits
    if kind == "size":
        return _relation(tree[1], lambda row: _size(value_of(row, tree[2])), lambda row: tree[3])
    if kind == "exist":
        return lambda row: value_of(row, tree[1]) is not None
    if kind == "comment":
        return matcher(tree[2], value_of, subobjects) if tree[2] is not None else (lambda row: True)
    if kind == "subobject" and tree[1] in (subobjects or {}):
        inner = matcher(tree[2], value_of, subobjects)
        rows_of = (subobjects or {})[tree[1]]
        return lambda row: any(inner(sub) for sub in rows_of(row))
    raise TooComplex(f"{kind} restriction")


def _size(value: Any) -> Optional[int]:
    if isinstance(value, str):
        return 2 * len(value) + 2
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, bool):
        return 2
    return None if value is None else 4


def _relation(relop: int, left: Callable[[Any], Any], right: Callable[[Any], Any]) -> Predicate:
    if relop not in _RELOPS:
        raise TooComplex(f"relational operator {relop}")
    compare = _RELOPS[relop]

    def related(row: Any) -> bool:
        a, b = _folded(left(row)), _folded(right(row))
        if a is None or b is None or (type(a) is not type(b) and not (isinstance(a, int) and isinstance(b, int))):
            return False
        return compare(a, b)
    return related


def _content(tag: int, fuzzy: int, wanted: Any, value_of: ValueOf) -> Predicate:
    if not isinstance(wanted, (str, bytes)):
        raise TooComplex("content restriction on a value that is not a string or binary")
    wanted = _folded(wanted, fuzzy)
    how = fuzzy & 0xF

    def contains(row: Any) -> bool:
        value = _folded(value_of(row, tag), fuzzy)
        if type(value) is not type(wanted):
            return False
        if how == FL_SUBSTRING:
            return wanted in value
        if how == FL_PREFIX:
            return value.startswith(wanted)
        return value == wanted
    return contains
