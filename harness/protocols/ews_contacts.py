"""EWS contacts and tasks, sans-IO: t:Contact and t:Task elements (their fields after ItemType's, in schema order),
CreateItem of either and UpdateItem of their fields. GetItem, FindItem and DeleteItem need nothing more: importing
this module registers both kinds with ews_xml's writers (ews_ops imports it).

UpdateItem of a field the store does not keep (PhysicalAddresses, Categories, ...) is accepted and ignored, so a
client saving a whole contact gets through; see docs/ews.md.
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Callable, Dict, Iterable, List, Optional, Tuple

from lxml import etree

from harness.mailbox import events, tasks
from harness.mailbox.contacts import ContactItem, add_contact, file_as, with_entry
from harness.mailbox.store import Folder, Item
from harness.mailbox.tasks import TaskItem, add_task
from harness.protocols import ews_calendar
from harness.protocols.ews_xml import KINDS, EwsError, item_id_only, schema_error, t, timestamp

if TYPE_CHECKING:
    from harness.protocols.ews_ops import Call

INVALID_REQUEST = ("ErrorInvalidRequest", "The request is invalid.")
# The EWS Managed API's description of the code (ServiceError); Exchange's own MessageText is not known here.
BAD_PERCENT = ("ErrorInvalidPercentCompleteValue", "PercentComplete must be an integer between 0 and 100.")


# Contacts and tasks are always written as elements (ews_xml's FindItem text path is for messages only).
def _text(parent: etree._Element, name: str, value: object) -> etree._Element:
    element = etree.SubElement(parent, t(name))
    element.text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return element


def _entries(parent: etree._Element, name: str, entries: Tuple[Tuple[str, str], ...]) -> None:
    if entries:
        element = etree.SubElement(parent, t(name))
        for key, value in entries:
            etree.SubElement(element, t("Entry"), Key=key).text = value


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


ContactWriter = Callable[[etree._Element, ContactItem], object]
CONTACT_FIELDS: List[Tuple[str, ContactWriter]] = [    # ContactItemType, schema order
    ("contacts:FileAs", lambda e, c: _text(e, "FileAs", c.subject)),
    ("contacts:DisplayName", lambda e, c: _text(e, "DisplayName", c.display_name)),
    ("contacts:GivenName", lambda e, c: c.given_name and _text(e, "GivenName", c.given_name)),
    ("contacts:CompanyName", lambda e, c: c.company_name and _text(e, "CompanyName", c.company_name)),
    ("contacts:EmailAddresses", lambda e, c: _entries(e, "EmailAddresses", c.emails)),
    ("contacts:PhoneNumbers", lambda e, c: _entries(e, "PhoneNumbers", c.phones)),
    ("contacts:JobTitle", lambda e, c: c.job_title and _text(e, "JobTitle", c.job_title)),
    ("contacts:Surname", lambda e, c: c.surname and _text(e, "Surname", c.surname)),
]
TaskWriter = Callable[[etree._Element, TaskItem], object]
TASK_FIELDS: List[Tuple[str, TaskWriter]] = [           # TaskType, schema order
    ("task:CompleteDate", lambda e, k: k.complete_date and _text(e, "CompleteDate", timestamp(k.complete_date))),
    ("task:DueDate", lambda e, k: k.due_date and _text(e, "DueDate", timestamp(k.due_date))),
    ("task:IsComplete", lambda e, k: _text(e, "IsComplete", k.is_complete)),
    ("task:IsRecurring", lambda e, k: _text(e, "IsRecurring", False)),
    ("task:PercentComplete", lambda e, k: _text(e, "PercentComplete", _number(k.percent_complete))),
    ("task:StartDate", lambda e, k: k.start_date and _text(e, "StartDate", timestamp(k.start_date))),
    ("task:Status", lambda e, k: _text(e, "Status", k.status)),
]
KINDS[ContactItem] = ("Contact", CONTACT_FIELDS)      # type: ignore[assignment]
KINDS[TaskItem] = ("Task", TASK_FIELDS)               # type: ignore[assignment]


# ---- requests ---------------------------------------------------------------------------------------------------
def _read_entries(element: Optional[etree._Element]) -> Tuple[Tuple[str, str], ...]:
    if element is None:
        return ()
    return tuple((entry.get("Key", ""), (entry.text or "").strip()) for entry in element.iterfind(t("Entry")))


def _time(text: Optional[str], name: str) -> Optional[dt.datetime]:
    try:
        return ews_calendar.parse_time(text) if text else None
    except EwsError:
        raise schema_error(name) from None


def _percent(text: Optional[str]) -> float:
    try:
        value = float(text or "0")
    except ValueError:
        raise schema_error("PercentComplete") from None
    if not 0 <= value <= 100:
        raise EwsError(*BAD_PERCENT)
    return value


def _status(text: Optional[str]) -> str:
    if text is None:
        return tasks.NOT_STARTED
    if text not in tasks.STATUSES:
        raise schema_error("Status")
    return text


def create(call: "Call", element: etree._Element, items: etree._Element, folder: Optional[Folder]) -> None:
    """CreateItem of a t:Contact (into Contacts) or t:Task (into Tasks), or into SavedItemFolderId's folder."""
    now = call.store.clock()
    item: Item
    if etree.QName(element).localname == "Contact":
        emails = dict(_read_entries(element.find(t("EmailAddresses"))))
        item = add_contact(call.owner, display_name=element.findtext(t("DisplayName")) or "",
                           given_name=element.findtext(t("GivenName")) or "",
                           surname=element.findtext(t("Surname")) or "",
                           emails=[emails[key] for key in sorted(emails)],
                           phones=_read_entries(element.find(t("PhoneNumbers"))),
                           company_name=element.findtext(t("CompanyName")) or "",
                           job_title=element.findtext(t("JobTitle")) or "", when=now, folder=folder)
        given_file_as = element.findtext(t("FileAs"))
        if given_file_as:
            item.subject = given_file_as
    else:
        body = element.find(t("Body"))
        item = add_task(call.owner, subject=element.findtext(t("Subject")) or "", when=now,
                        body=(body.text or "") if body is not None else "",
                        start_date=_time(element.findtext(t("StartDate")), "StartDate"),
                        due_date=_time(element.findtext(t("DueDate")), "DueDate"),
                        status=_status(element.findtext(t("Status"))),
                        percent_complete=_percent(element.findtext(t("PercentComplete"))), folder=folder)
    call.owner.events.record(events.CREATED, now, item)
    item_id_only(items, item)


CREATES = ("Contact", "Task")
_CONTACT_TEXT = {"contacts:GivenName": "given_name", "contacts:Surname": "surname",
                 "contacts:DisplayName": "display_name", "contacts:CompanyName": "company_name",
                 "contacts:JobTitle": "job_title", "contacts:FileAs": "subject", "item:Subject": "subject"}
_INDEXED = {"contacts:EmailAddress": "emails", "contacts:PhoneNumber": "phones"}
_TASK_VALUES: Dict[str, Tuple[str, Callable[[Optional[str]], object]]] = {
    "item:Subject": ("subject", lambda text: text or ""), "item:Body": ("body", lambda text: text or ""),
    "task:DueDate": ("due_date", lambda text: _time(text, "DueDate")),
    "task:StartDate": ("start_date", lambda text: _time(text, "StartDate")),
    "task:CompleteDate": ("complete_date", lambda text: _time(text, "CompleteDate")),
    "task:Status": ("status", _status),
    "task:PercentComplete": ("percent_complete", _percent)}


def handles(item: Item) -> bool:
    return isinstance(item, (ContactItem, TaskItem))


def update(call: "Call", item: Item, updates: Iterable[etree._Element]) -> None:
    """Apply SetItemField / AppendToItemField / DeleteItemField to a contact or task, then record one change."""
    for change in updates:
        setting = etree.QName(change).localname != "DeleteItemField"
        uri_element = next((c for c in change if isinstance(c.tag, str) and etree.QName(c).localname in (
            "FieldURI", "IndexedFieldURI")), None)
        if uri_element is None:
            raise EwsError(*INVALID_REQUEST)
        uri = uri_element.get("FieldURI", "")
        holder = next((c for c in change if isinstance(c.tag, str) and c is not uri_element), None)
        value = holder[0] if holder is not None and len(holder) else None
        if isinstance(item, ContactItem) and uri in _INDEXED:
            key = uri_element.get("FieldIndex", "")
            entry = value.find(t("Entry")) if value is not None else None
            text = (entry.text or "").strip() if setting and entry is not None else None
            setattr(item, _INDEXED[uri], with_entry(getattr(item, _INDEXED[uri]), key, text))
        elif isinstance(item, ContactItem) and uri in _CONTACT_TEXT:
            setattr(item, _CONTACT_TEXT[uri], (value.text or "") if setting and value is not None else "")
        elif isinstance(item, TaskItem) and uri in _TASK_VALUES:
            name, parse = _TASK_VALUES[uri]
            setattr(item, name, parse(value.text if setting and value is not None else None))
    if isinstance(item, ContactItem) and not item.subject:
        item.subject = file_as(item.given_name, item.surname, item.display_name)
    if isinstance(item, TaskItem):
        tasks.settle(item, call.store.clock())
    call.store.changed(item)
