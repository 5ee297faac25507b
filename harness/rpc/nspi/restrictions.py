"""NSPI restrictions (MS-OXNSPI 2.3.4), as NspiGetMatches receives them: a parsed Restriction_r turned into plain
tuples, then compiled into a predicate over address-book objects."""
from __future__ import annotations

from typing import Any, Callable, Optional

from impacket.dcerpc.v5 import nspi as ndr
from impacket.dcerpc.v5.ndr import NDR

from harness.rpc.addressbook import PR_ANR, AbObject, anr_matches
from harness.rpc.base import is_null, ndr_text
from harness.rpc.nspi.errors import TOO_COMPLEX, NspiError
from harness.rpc.nspi.values import PT_STRING8, PT_UNICODE

RELOP_LT, RELOP_LE, RELOP_GT, RELOP_GE, RELOP_EQ, RELOP_NE = range(6)
FL_SUBSTRING, FL_PREFIX = 0x1, 0x2
_RELOPS = {RELOP_LT: lambda a, b: a < b, RELOP_LE: lambda a, b: a <= b, RELOP_GT: lambda a, b: a > b,
           RELOP_GE: lambda a, b: a >= b, RELOP_EQ: lambda a, b: a == b, RELOP_NE: lambda a, b: a != b}

Matcher = Callable[[Optional[AbObject]], bool]


def _restriction_value(pointer: NDR) -> Any:
    """The Python value of a restriction's PropertyValue_r, or None for NULL/unsupported types."""
    if is_null(pointer):
        return None
    union = pointer["Value"]
    ptype = pointer["ulPropTag"] & 0xFFFF
    if ptype == PT_UNICODE:
        return ndr_text(union["lpszW"])
    if ptype == PT_STRING8:
        return ndr_text(union["lpszA"])
    if ptype in (0x0003, 0x000B):
        return union["l" if ptype == 0x0003 else "b"]
    if ptype == 0x0102:
        return b"".join(union["bin"]["lpb"])
    return None


def restriction_tree(restriction: ndr.Restriction_r) -> tuple:
    """A parsed Restriction_r as plain tuples: ("and"|"or", [trees]), ("not", tree),
    ("content", tag, fuzzy, value), ("property", tag, relop, value), ("exist", tag) or ("unsupported", kind)."""
    kind = restriction["rt"]
    arm = restriction["res"]
    if kind in (0, 1):
        name = "and" if kind == 0 else "or"
        return name, [restriction_tree(r) for r in arm["resAnd" if kind == 0 else "resOr"]["lpRes"]]
    if kind == 2:
        return "not", restriction_tree(arm["resNot"]["lpRes"])
    if kind == 3:
        content = arm["resContent"]
        return "content", content["ulPropTag"], content["ulFuzzyLevel"], _restriction_value(content["lpProp"])
    if kind == 4:
        prop = arm["resProperty"]
        return "property", prop["ulPropTag"], prop["relop"], _restriction_value(prop["lpProp"])
    if kind == 8:
        return "exist", arm["resExist"]["ulPropTag"]
    return "unsupported", kind


def _comparable(obj: Optional[AbObject], tag: int) -> Any:
    found = obj.value(tag >> 16) if obj is not None else None
    if found is None:
        return None
    value = found[1]
    return value.lower() if isinstance(value, str) else value


def restriction_matcher(tree: tuple) -> Matcher:
    """Compile a restriction tree into a predicate over address-book objects. Kinds it cannot evaluate raise
    NspiError(TOO_COMPLEX), as Exchange answers for restrictions it does not support."""
    kind = tree[0]
    if kind in ("and", "or"):
        parts = [restriction_matcher(sub) for sub in tree[1]]
        combine = all if kind == "and" else any
        return lambda obj: combine(part(obj) for part in parts)
    if kind == "not":
        inner = restriction_matcher(tree[1])
        return lambda obj: not inner(obj)
    if kind == "content":
        return _content_matcher(*tree[1:])
    if kind == "property":
        return _property_matcher(*tree[1:])
    if kind == "exist":
        return lambda obj: obj is not None and obj.value(tree[1] >> 16) is not None
    raise NspiError(TOO_COMPLEX)


def _content_matcher(tag: int, fuzzy: int, wanted: Any) -> Matcher:
    if not isinstance(wanted, str):
        raise NspiError(TOO_COMPLEX)
    wanted = wanted.lower()   # directory string compares are case-insensitive whatever FL_IGNORECASE says

    def match(obj: Optional[AbObject]) -> bool:
        value = _comparable(obj, tag)
        if not isinstance(value, str):
            return False
        if fuzzy & FL_SUBSTRING:
            return wanted in value
        if fuzzy & FL_PREFIX:
            return value.startswith(wanted)
        return value == wanted
    return match


def _property_matcher(tag: int, relop: int, wanted: Any) -> Matcher:
    if relop not in _RELOPS or wanted is None:
        raise NspiError(TOO_COMPLEX)
    if tag >> 16 == PR_ANR >> 16:
        if not isinstance(wanted, str):
            raise NspiError(TOO_COMPLEX)
        return lambda obj: obj is not None and anr_matches(obj, wanted)
    wanted = wanted.lower() if isinstance(wanted, str) else wanted
    compare = _RELOPS[relop]

    def match(obj: Optional[AbObject]) -> bool:
        value = _comparable(obj, tag)
        if value is None or type(value) is not type(wanted):
            return False
        return compare(value, wanted)
    return match
