"""EWS UpdateItem, sans-IO: SetItemField, AppendToItemField and DeleteItemField on the fields the store keeps, with
ConflictResolution over ChangeKeys.

A ChangeKey names the change number the client last saw. NeverOverwrite refuses any later change of the item;
AutoResolve refuses only when a field the request sets was itself changed after it (each item keeps its fields' last
change numbers), as the store cannot merge two values of one property; AlwaysOverwrite applies the request. A refused
update is ErrorIrresolvableConflict and changes nothing; all updates of one ItemChange apply as one change.

MessageDisposition SendOnly / SendAndSaveCopy then sends the updated message as SendItem does (delivered in the org,
a copy in SavedItemFolderId or Sent Items for SendAndSaveCopy, the draft leaves its folder); the answer's m:Items is
then empty, as for a sent CreateItem. Calendar items, contacts and tasks are saved whatever the disposition.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from lxml import etree

from harness.mailbox import calendar, ids
from harness.mailbox.calendar import CalendarItem
from harness.mailbox.store import Item
from harness.protocols import ews_calendar, ews_contacts
from harness.protocols.ews_copy_send import IRRESOLVABLE, saved_copy_folder, submit
from harness.protocols.ews_ops import Call, _each, _item_of
from harness.protocols.ews_xml import ITEM_NOT_FOUND, EwsError, EwsFault, addresses, item_id_only, m, parse_flag, t

INVALID_CHANGE_KEY = ("ErrorInvalidChangeKey", "The change key is invalid.")                      # guess
INVALID_SET = ("ErrorInvalidPropertySet", "The property set is invalid.")
NO_APPEND = ("ErrorInvalidPropertyAppend", "This property does not support append.")            # guess
NO_DELETE = ("ErrorInvalidPropertyDelete", "This property can not be deleted.")                # guess
RESOLUTIONS = ("NeverOverwrite", "AutoResolve", "AlwaysOverwrite")
DISPOSITIONS = ("SaveOnly", "SendOnly", "SendAndSaveCopy")
IMPORTANCE = ("Low", "Normal", "High")
SENSITIVITY = ("Normal", "Personal", "Private", "Confidential")
LEGACY_STATUSES = ("Free", "Tentative", "Busy", "OOF", "WorkingElsewhere", "NoData")
# Accepted and left as they are: times are UTC in this store.
IGNORED = frozenset({"calendar:StartTimeZone", "calendar:EndTimeZone", "calendar:MeetingTimeZone"})
# On a calendar item, also properties the store does not keep: a client saving a whole calendar item, as
# exchangelib's save() without update_fields does, sends them all.
CALENDAR_IGNORED = frozenset({"item:InReplyTo", "item:ReminderDueBy", "item:ReminderIsSet",
                              "item:ReminderMinutesBeforeStart",
                              "item:Culture", "calendar:When", "calendar:IsResponseRequested", "calendar:Resources",
                              "calendar:ConferenceType", "calendar:AllowNewTimeProposal",
                              "calendar:MeetingWorkspaceUrl", "calendar:NetShowUrl"})


def _schema_error(name: str) -> EwsFault:
    return EwsFault("ErrorSchemaValidation", f"The request failed schema validation: The '{name}' element is invalid "
                                             "- The value is invalid according to its datatype.")


def _enum(name: str, allowed: Tuple[str, ...]) -> Callable[[etree._Element], str]:
    def parse(value: etree._Element) -> str:
        if (value.text or "") not in allowed:
            raise _schema_error(name)
        return value.text or ""
    return parse


def _strings(value: etree._Element) -> Tuple[str, ...]:
    return tuple(s.text or "" for s in value.iterfind(t("String")))


def _body(value: etree._Element) -> Dict[str, Any]:
    return {"body": value.text or "", "body_type": value.get("BodyType", "Text")}


def _free_busy(value: etree._Element) -> str:
    """A LegacyFreeBusyStatus; WorkingElsewhere and NoData (which the store does not keep) as Busy."""
    status = _enum("LegacyFreeBusyStatus", LEGACY_STATUSES)(value)
    return status if status in calendar.FREE_BUSY else calendar.BUSY


class Field:
    """How one field URI maps onto item attributes: parse (value element -> {attribute: value}), the values a
    delete leaves (None: cannot be deleted) and append (current item, parsed -> merged; None: cannot append)."""

    def __init__(self, parse: Callable[[etree._Element], Dict[str, Any]], cleared: Optional[Dict[str, Any]],
                 append: Optional[Callable[[Item, Dict[str, Any]], Dict[str, Any]]] = None, calendar: bool = False):
        self.parse, self.cleared, self.append, self.calendar = parse, cleared, append, calendar


def _one(attribute: str, convert: Callable[[etree._Element], Any]) -> Callable[[etree._Element], Dict[str, Any]]:
    return lambda value: {attribute: convert(value)}


def _appended(attribute: str) -> Callable[[Item, Dict[str, Any]], Dict[str, Any]]:
    return lambda item, parsed: {attribute: tuple(getattr(item, attribute)) + tuple(parsed[attribute])}


FIELDS: Dict[str, Field] = {
    "item:Subject": Field(_one("subject", lambda v: v.text or ""), {"subject": ""}),
    "item:Body": Field(_body, {"body": ""}, lambda item, p: {"body": item.body + p["body"],
                                                            "body_type": p["body_type"]}),
    "item:Importance": Field(_one("importance", _enum("Importance", IMPORTANCE)), {"importance": "Normal"}),
    "item:Sensitivity": Field(_one("sensitivity", _enum("Sensitivity", SENSITIVITY)), {"sensitivity": "Normal"}),
    "item:Categories": Field(_one("categories", _strings), {"categories": ()}, _appended("categories")),
    "message:IsRead": Field(_one("is_read", lambda v: bool(parse_flag(v.text))), {"is_read": False}),
    "message:ToRecipients": Field(_one("to", lambda v: tuple(addresses(v))), {"to": ()}, _appended("to")),
    "message:CcRecipients": Field(_one("cc", lambda v: tuple(addresses(v))), {"cc": ()}, _appended("cc")),
    "calendar:Start": Field(_one("start", lambda v: ews_calendar.parse_time(v.text)), None, calendar=True),
    "calendar:End": Field(_one("end", lambda v: ews_calendar.parse_time(v.text)), None, calendar=True),
    "calendar:Location": Field(_one("location", lambda v: v.text or ""), {"location": ""}, calendar=True),
    "calendar:IsAllDayEvent": Field(_one("is_all_day", lambda v: bool(parse_flag(v.text))), {"is_all_day": False},
                                    calendar=True),
    "calendar:LegacyFreeBusyStatus": Field(_one("free_busy", _free_busy), None, calendar=True),
    "calendar:RequiredAttendees": Field(_one("to", lambda v: tuple(ews_calendar.attendees(v))), {"to": ()},
                                        _appended("to"), calendar=True),
    "calendar:OptionalAttendees": Field(_one("cc", lambda v: tuple(ews_calendar.attendees(v))), {"cc": ()},
                                        _appended("cc"), calendar=True),
}


def _changes(item: Item, updates: List[etree._Element]) -> Tuple[Dict[str, Any], List[str]]:
    """The attribute values the updates set, and the field URIs they touch."""
    changes: Dict[str, Any] = {}
    uris: List[str] = []
    for update in updates:
        kind = etree.QName(update).localname
        uri_element = update.find(t("FieldURI"))
        uri = uri_element.get("FieldURI", "") if uri_element is not None else ""
        if uri in IGNORED or (uri in CALENDAR_IGNORED and isinstance(item, CalendarItem)):
            continue
        spec = FIELDS.get(uri)
        if spec is None or (spec.calendar and not isinstance(item, CalendarItem)):
            raise EwsError(*INVALID_SET)
        if kind == "DeleteItemField":
            if spec.cleared is None:
                raise EwsError(*NO_DELETE)
            changes.update(spec.cleared)
        else:
            container = update[1] if len(update) > 1 else None
            value = container.find(t(uri.partition(":")[2])) if container is not None else None
            if value is None:
                raise EwsError(*INVALID_SET)
            parsed = spec.parse(value)
            if kind == "AppendToItemField":
                if spec.append is None:
                    raise EwsError(*NO_APPEND)
                current = _Pending(item, changes)
                parsed = spec.append(current, parsed)    # type: ignore[arg-type]
            changes.update(parsed)
        uris.append(uri)
    return changes, uris


class _Pending:
    """An item as the earlier updates of the same ItemChange left it (an append after a set appends to the set)."""

    def __init__(self, item: Item, changes: Dict[str, Any]):
        self._item, self._changes = item, changes

    def __getattr__(self, name: str) -> Any:
        return self._changes[name] if name in self._changes else getattr(self._item, name)


def _check_conflict(call: Call, item: Item, change_key: Optional[str], uris: List[str]) -> None:
    resolution = call.request.get("ConflictResolution", "AutoResolve")
    if resolution not in RESOLUTIONS:
        raise _schema_error("ConflictResolution")
    if change_key is None or resolution == "AlwaysOverwrite":
        return
    seen = ids.change_number_of(change_key)
    if seen is None:
        raise EwsError(*INVALID_CHANGE_KEY)
    if seen >= item.change_number:
        return
    if resolution == "NeverOverwrite" or any((item.field_changes or {}).get(uri, 0) > seen for uri in uris):
        raise EwsError(*IRRESOLVABLE)


def update_item(call: Call) -> None:
    faults: List[EwsFault] = []       # a schema error fails the whole request, not one response message
    disposition = call.request.get("MessageDisposition", "SaveOnly")
    if disposition not in DISPOSITIONS:
        raise _schema_error("MessageDisposition")
    copy_in = saved_copy_folder(call, disposition == "SendAndSaveCopy")

    def answer(change: etree._Element, message: etree._Element) -> None:
        try:
            _update_one(change, message)
        except EwsFault as fault:
            faults.append(fault)
            raise

    def _update_one(change: etree._Element, message: etree._Element) -> None:
        item_id = change.find(t("ItemId"))
        if item_id is None:
            raise EwsError(*ITEM_NOT_FOUND)
        item = _item_of(call, item_id)
        if isinstance(item, CalendarItem) and item.instance is not None:
            _update_occurrence(item, item_id.get("ChangeKey"), list(change.iterfind(f"{t('Updates')}/*")), message)
            return
        if ews_contacts.handles(item):   # a contact or a task: its own fields
            ews_contacts.update(call, item, list(change.iterfind(f"{t('Updates')}/*")))
            item_id_only(etree.SubElement(message, m("Items")), item)
            etree.SubElement(etree.SubElement(message, m("ConflictResults")), t("Count")).text = "0"
            return
        changes, uris = _changes(item, list(change.iterfind(f"{t('Updates')}/*")))
        _check_conflict(call, item, item_id.get("ChangeKey"), uris)
        if isinstance(item, CalendarItem) and changes.get("end", item.end) < changes.get("start", item.start):
            raise EwsError("ErrorCalendarEndDateIsEarlierThanStartDate", "EndDate is earlier than StartDate")
        if changes:
            call.store.update(item, changes, uris)
        items = etree.SubElement(message, m("Items"))
        if disposition != "SaveOnly" and not isinstance(item, CalendarItem):
            submit(call, item, copy_in)      # sent: no item to name (the draft is gone)
        else:
            item_id_only(items, item)
        etree.SubElement(etree.SubElement(message, m("ConflictResults")), t("Count")).text = "0"
    def _update_occurrence(occurrence: CalendarItem, change_key: Optional[str], updates: List[etree._Element],
                           message: etree._Element) -> None:
        """Modify one occurrence: an exception of its series (the master keeps it), answered by the occurrence's
        id with the series' new ChangeKey."""
        master = occurrence.folder.items[occurrence.key]
        assert isinstance(master, CalendarItem) and occurrence.instance is not None
        changes, uris = _changes(occurrence, updates)
        _check_conflict(call, master, change_key, uris)
        if changes.get("end", occurrence.end) < changes.get("start", occurrence.start):
            raise EwsError("ErrorCalendarEndDateIsEarlierThanStartDate", "EndDate is earlier than StartDate")
        try:
            updated = calendar.modify_occurrence(call.store, master, occurrence.instance, changes, uris)
        except calendar.OccurrenceCrossing:
            raise EwsError("ErrorOccurrenceCrossingBoundary", "Modified occurrence is crossing or overlapping "
                                                              "adjacent occurrence.") from None   # text guessed
        item_id_only(etree.SubElement(message, m("Items")), updated)
        etree.SubElement(etree.SubElement(message, m("ConflictResults")), t("Count")).text = "0"
    _each(call, call.request.iterfind(f"{m('ItemChanges')}/{t('ItemChange')}"), "Items", answer)
    if faults:
        raise faults[0]


OPERATIONS: Dict[str, Callable[[Call], None]] = {"UpdateItem": update_item}
