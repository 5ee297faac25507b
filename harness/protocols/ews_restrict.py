"""EWS FindItem restrictions, sans-IO: a t:Restriction compiled into a test of store items.

Search expressions: IsEqualTo, IsNotEqualTo, IsGreaterThan(OrEqualTo), IsLessThan(OrEqualTo) (against a Constant or
another FieldURI), Contains (ContainmentMode FullString / Prefixed / Substring / PrefixOnWords / ExactPhrase,
ContainmentComparison Exact or ignoring case and/or non-spacing characters), Exists, And, Or, Not. String
comparisons ignore case, as the store's collation does; a multi-valued field (Categories) matches when any value
does; a field the item does not have fails every comparison and Exists. A FieldURI this store cannot query is
ErrorUnsupportedPathForQuery; Excludes and extended or indexed properties too.
"""
from __future__ import annotations

import unicodedata
from typing import Any, Callable, Dict, List, Optional, Tuple

from lxml import etree

from harness.mailbox.calendar import CalendarItem
from harness.mailbox.store import Item
from harness.protocols import ews_calendar
from harness.protocols.ews_xml import EwsError, parse_flag, t

Test = Callable[[Item], bool]
UNSUPPORTED_PATH = ("ErrorUnsupportedPathForQuery", "The property path is not supported for the query.")  # guess
INVALID_VALUE = ("ErrorInvalidValueForProperty", "The value is invalid for the property.")              # guess
INVALID_RESTRICTION = ("ErrorInvalidRestriction", "Restriction contains an invalid search expression.")   # guess
STRING, BOOL, TIME, NUMBER, ADDRESS, STRINGS = "string", "bool", "time", "number", "address", "strings"
IMPORTANCE = ("Low", "Normal", "High")
SENSITIVITY = ("Normal", "Personal", "Private", "Confidential")


def _calendar(read: Callable[[CalendarItem], Any]) -> Callable[[Item], Any]:
    return lambda item: read(item) if isinstance(item, CalendarItem) else None


# FieldURI -> (kind, value of an item or None when it has no such property)
FIELDS: Dict[str, Tuple[str, Callable[[Item], Any]]] = {
    "item:Subject": (STRING, lambda i: i.subject),
    "item:Body": (STRING, lambda i: i.body),
    "item:ItemClass": (STRING, lambda i: i.item_class),
    "item:DisplayTo": (STRING, lambda i: "; ".join(a[0] or a[1] for a in i.to)),
    "item:DisplayCc": (STRING, lambda i: "; ".join(a[0] or a[1] for a in i.cc)),
    "message:InternetMessageId": (STRING, lambda i: i.message_id or None),
    "message:ConversationTopic": (STRING, lambda i: i.subject),
    "message:IsRead": (BOOL, lambda i: i.is_read),
    "item:IsDraft": (BOOL, lambda i: i.is_draft),
    # Attachments arrive with another part of the store; until then no item has any.
    "item:HasAttachments": (BOOL, lambda i: bool(getattr(i, "attachments", ()))),
    "item:DateTimeReceived": (TIME, lambda i: i.received),
    "item:DateTimeSent": (TIME, lambda i: i.sent),
    "item:DateTimeCreated": (TIME, lambda i: i.received),
    "item:Size": (NUMBER, lambda i: i.size),
    "item:Importance": (NUMBER, lambda i: IMPORTANCE.index(i.importance)),
    "item:Sensitivity": (NUMBER, lambda i: SENSITIVITY.index(i.sensitivity)),
    "message:From": (ADDRESS, lambda i: i.sender),
    "message:Sender": (ADDRESS, lambda i: i.sender),
    "item:Categories": (STRINGS, lambda i: i.categories or None),
    "calendar:Start": (TIME, _calendar(lambda i: i.start)),
    "calendar:End": (TIME, _calendar(lambda i: i.end)),
    "calendar:Location": (STRING, _calendar(lambda i: i.location)),
}
ENUMS = {"item:Importance": IMPORTANCE, "item:Sensitivity": SENSITIVITY}


def _field(element: Optional[etree._Element]) -> Tuple[str, str, Callable[[Item], Any]]:
    """(uri, kind, reader) of a t:FieldURI path; other paths and unknown URIs: ErrorUnsupportedPathForQuery."""
    if element is None or etree.QName(element).localname != "FieldURI":
        raise EwsError(*UNSUPPORTED_PATH)
    uri = element.get("FieldURI", "")
    if uri not in FIELDS:
        raise EwsError(*UNSUPPORTED_PATH)
    kind, read = FIELDS[uri]
    return uri, kind, read


def _constant(uri: str, kind: str, text: str) -> Any:
    try:
        if kind == BOOL:
            if text.strip().lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return bool(parse_flag(text))
        if kind == TIME:
            return ews_calendar.parse_time(text)
        if kind == NUMBER:
            return ENUMS[uri].index(text) if uri in ENUMS else int(text)
    except (ValueError, EwsError):
        raise EwsError(*INVALID_VALUE) from None
    return text


def _fold(text: str, ignore_case: bool, ignore_nonspacing: bool) -> str:
    if ignore_nonspacing:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))
    return text.casefold() if ignore_case else text


def _candidates(kind: str, value: Any) -> List[Any]:
    """The values a comparison tries: each category; a sender's address and name; else the value itself."""
    if kind == STRINGS:
        return list(value)
    if kind == ADDRESS:
        return [value[1], value[0]]
    return [value]


_ORDER: Dict[str, Callable[[Any, Any], bool]] = {
    "IsEqualTo": lambda a, b: a == b, "IsNotEqualTo": lambda a, b: a != b,
    "IsGreaterThan": lambda a, b: a > b, "IsGreaterThanOrEqualTo": lambda a, b: a >= b,
    "IsLessThan": lambda a, b: a < b, "IsLessThanOrEqualTo": lambda a, b: a <= b,
}


def _comparable(kind: str, value: Any) -> Any:
    return value.casefold() if kind in (STRING, STRINGS, ADDRESS) and isinstance(value, str) else value


def _compare(element: etree._Element) -> Test:
    operator = _ORDER[etree.QName(element).localname]
    uri, kind, read = _field(element[0] if len(element) else None)
    other = element.find(t("FieldURIOrConstant"))
    if other is None or len(other) != 1:
        raise EwsError(*INVALID_RESTRICTION)
    if etree.QName(other[0]).localname == "Constant":
        constant = _comparable(kind, _constant(uri, kind, other[0].get("Value", "")))

        def right(item: Item) -> Any:
            return constant
    else:
        _, other_kind, read_other = _field(other[0])
        if other_kind != kind:
            raise EwsError(*INVALID_RESTRICTION)

        def right(item: Item) -> Any:
            value = read_other(item)
            return None if value is None else _comparable(kind, value)
    negated = operator is _ORDER["IsNotEqualTo"]

    if kind in (STRINGS, ADDRESS):
        def test(item: Item) -> bool:
            value, wanted = read(item), right(item)
            if value is None or wanted is None:
                return False
            found = [_comparable(kind, v) for v in _candidates(kind, value)]
            if negated:     # a multi-valued field is unequal when no value is equal
                return all(v != wanted for v in found)
            return any(operator(v, wanted) for v in found)
        return test

    def test_single(item: Item) -> bool:      # one value: no candidate list (FindItem tests every item)
        value, wanted = read(item), right(item)
        if value is None or wanted is None:
            return False
        return operator(value.casefold() if kind == STRING else value, wanted)
    return test_single


def _contains(element: etree._Element) -> Test:
    _, kind, read = _field(element[0] if len(element) else None)
    if kind not in (STRING, STRINGS, ADDRESS):
        raise EwsError(*INVALID_RESTRICTION)
    constant = element.find(t("Constant"))
    mode = element.get("ContainmentMode", "FullString")
    comparison = element.get("ContainmentComparison", "Exact")
    ignore_case = "IgnoreCase" in comparison or "Loose" in comparison
    ignore_nonspacing = "NonSpacing" in comparison or "Loose" in comparison
    wanted = _fold(constant.get("Value", "") if constant is not None else "", ignore_case, ignore_nonspacing)
    matchers: Dict[str, Callable[[str], bool]] = {
        "FullString": lambda v: v == wanted, "Prefixed": lambda v: v.startswith(wanted),
        "Substring": lambda v: wanted in v, "ExactPhrase": lambda v: wanted in v,
        "PrefixOnWords": lambda v: any(word.startswith(wanted) for word in v.split()),
    }
    if mode not in matchers:
        raise EwsError(*INVALID_RESTRICTION)
    matches = matchers[mode]

    if kind == STRING:
        def test_single(item: Item) -> bool:
            value = read(item)
            if not value:
                return False
            if ignore_nonspacing:
                value = _fold(value, ignore_case, True)
            return matches(value.casefold() if ignore_case else value)
        return test_single

    def test(item: Item) -> bool:
        value = read(item)
        if value is None:
            return False
        return any(matches(_fold(v, ignore_case, ignore_nonspacing)) for v in _candidates(kind, value) if v)
    return test


def _exists(element: etree._Element) -> Test:
    _, _, read = _field(element[0] if len(element) else None)
    return lambda item: read(item) is not None


def compile_expression(element: etree._Element) -> Test:
    name = etree.QName(element).localname
    children = [compile_expression(child) for child in element if isinstance(child.tag, str)] \
        if name in ("And", "Or", "Not") else []
    if name == "And":
        return lambda item: all(test(item) for test in children)
    if name == "Or":
        return lambda item: any(test(item) for test in children)
    if name == "Not":
        if len(children) != 1:
            raise EwsError(*INVALID_RESTRICTION)
        return lambda item: not children[0](item)
    if name in _ORDER:
        return _compare(element)
    if name == "Contains":
        return _contains(element)
    if name == "Exists":
        return _exists(element)
    raise EwsError("ErrorUnsupportedQueryFilter", "The restriction or sort order is too complex for this operation.")


def compile_restriction(restriction: etree._Element) -> Test:
    """The test a m:Restriction stands for (its one search expression)."""
    expressions = [child for child in restriction if isinstance(child.tag, str)]
    if len(expressions) != 1:
        raise EwsError(*INVALID_RESTRICTION)
    return compile_expression(expressions[0])
