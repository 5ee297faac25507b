"""EWS XML for the store's folders and items: response messages, folder and item elements in the schema's element
order for a response shape (IdOnly / Default / AllProperties plus AdditionalProperties), sans-IO."""
from __future__ import annotations

import base64
import datetime as dt
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

from lxml import etree

from harness.mailbox.attachments import Attachment
from harness.mailbox.calendar import END_DATE, MEETING_REQUEST, NUMBERED, WEEKDAYS, CalendarItem, MeetingMessage
from harness.mailbox.store import Address, Folder, Item
from harness.protocols.ews_writer import ERRORS_NS as ERRORS_NS  # re-exported: the EWS modules import them here
from harness.protocols.ews_writer import MESSAGES_NS as MESSAGES_NS
from harness.protocols.ews_writer import TYPES_NS as TYPES_NS
from harness.protocols.ews_writer import Fragment as _Fragment
from harness.protocols.ews_writer import Parent as Parent
from harness.protocols.ews_writer import attribute as _attribute
from harness.protocols.ews_writer import close_element as _close
from harness.protocols.ews_writer import escape as _escape
from harness.protocols.ews_writer import m as m
from harness.protocols.ews_writer import mailbox as _mailbox
from harness.protocols.ews_writer import open_element as _open
from harness.protocols.ews_writer import recipients as _recipients
from harness.protocols.ews_writer import single as _single
from harness.protocols.ews_writer import strings as _strings
from harness.protocols.ews_writer import t as t
from harness.protocols.ews_writer import text as _text
from harness.protocols.ews_writer import timestamp as timestamp


class EwsError(Exception):
    """One response message's error: its ResponseCode and Exchange's MessageText for it."""

    def __init__(self, code: str, text: str):
        super().__init__(text)
        self.code, self.text = code, text


class EwsFault(EwsError):
    """A request-wide failure Exchange answers with a SOAP fault (HTTP 500), e.g. a schema validation error."""


def schema_error(name: str) -> EwsFault:
    """A value the types schema refuses (a bad base64 Content, an unknown enumeration value)."""
    return EwsFault("ErrorSchemaValidation", f"The request failed schema validation: The '{name}' element is invalid "
                                             "- The value is invalid according to its datatype.")


# The sync operations' "last in range" element: their response messages carry it (and a SyncState) even on errors.
SYNC_LAST_IN_RANGE = {"SyncFolderItems": "IncludesLastItemInRange",
                      "SyncFolderHierarchy": "IncludesLastFolderInRange"}

FOLDER_NOT_FOUND = ("ErrorFolderNotFound", "The specified folder could not be found in the store.")
ITEM_NOT_FOUND = ("ErrorItemNotFound", "The specified object was not found in the store.")
ID_MALFORMED = ("ErrorInvalidIdMalformed", "Id is malformed.")
ACCESS_DENIED = ("ErrorAccessDenied", "Access is denied. Check credentials and try again.")


def error_message(parent: etree._Element, operation: str, error: EwsError,
                  empty: Optional[str] = None) -> etree._Element:
    message = etree.SubElement(parent, m(f"{operation}ResponseMessage"), ResponseClass="Error")
    etree.SubElement(message, m("MessageText")).text = error.text
    etree.SubElement(message, m("ResponseCode")).text = error.code
    etree.SubElement(message, m("DescriptiveLinkKey")).text = "0"
    if empty:
        etree.SubElement(message, m(empty))
    return message


def success_message(parent: etree._Element, operation: str) -> etree._Element:
    message = etree.SubElement(parent, m(f"{operation}ResponseMessage"), ResponseClass="Success")
    etree.SubElement(message, m("ResponseCode")).text = "NoError"
    return message


def each_response(messages: etree._Element, operation: str, children: Iterable[etree._Element], empty: str,
                  answer: Callable[[etree._Element, etree._Element], None]) -> None:
    """One response message per requested id: answer(id element, message) fills a Success message, or its
    EwsError becomes an Error message (with the empty `empty` container when given); an EwsFault ends the request."""
    for element in children:
        if not isinstance(element.tag, str):
            continue
        try:
            probe = etree.Element("probe")
            answer(element, probe)
        except EwsFault:
            raise               # request-wide: the whole answer is a SOAP fault
        except EwsError as error:
            error_message(messages, operation, error, empty)
            continue
        message = success_message(messages, operation)
        message.extend(list(probe))


# ---- folders ----------------------------------------------------------------------------------------------------
FOLDER_ELEMENTS = {"IPF.Appointment": "CalendarFolder", "IPF.Contact": "ContactsFolder", "IPF.Task": "TasksFolder"}
FolderWriter = Callable[[etree._Element, Folder], object]
FOLDER_FIELDS: List[Tuple[str, FolderWriter]] = [   # schema order
    ("folder:ParentFolderId", lambda e, f: f.parent is not None and _id(e, "ParentFolderId", f.parent.id,
                                                                           f.parent.change_key)),
    ("folder:FolderClass", lambda e, f: f.folder_class is not None and _text(e, "FolderClass", f.folder_class)),
    ("folder:DisplayName", lambda e, f: _text(e, "DisplayName", f.name)),
    ("folder:TotalCount", lambda e, f: _text(e, "TotalCount", len(f.items))),
    ("folder:ChildFolderCount", lambda e, f: _text(e, "ChildFolderCount", len(f.children))),
    ("folder:UnreadCount", lambda e, f: etree.QName(e).localname == "Folder" and _text(e, "UnreadCount", f.unread)),
]
FOLDER_DEFAULT = frozenset({"folder:DisplayName", "folder:TotalCount", "folder:ChildFolderCount",
                            "folder:UnreadCount"})


def _id(parent: Parent, name: str, ews_id: str, change_key: str) -> etree._Element:
    if type(parent) is _Fragment:
        parent.parts.append(f"<t:{name} Id={_attribute(ews_id)} ChangeKey={_attribute(change_key)}/>")
        return None
    return etree.SubElement(parent, t(name), Id=ews_id, ChangeKey=change_key)


def folder_element(parent: etree._Element, folder: Folder, fields: FrozenSet[str]) -> None:
    element = etree.SubElement(parent, t(FOLDER_ELEMENTS.get(folder.folder_class or "", "Folder")))
    _id(element, "FolderId", folder.id, folder.change_key)
    for uri, write in FOLDER_FIELDS:
        if uri in fields:
            write(element, folder)


def folder_fields(shape: Optional[etree._Element]) -> FrozenSet[str]:
    base, extra = _shape(shape)
    chosen = {"IdOnly": frozenset(), "Default": FOLDER_DEFAULT}.get(base, frozenset(u for u, _ in FOLDER_FIELDS))
    return chosen | extra


# An IndexedFieldURI (one entry of a dictionary) asks for the dictionary: written whole.
INDEXED_COLLECTIONS = {"contacts:EmailAddress": "contacts:EmailAddresses",
                       "contacts:PhoneNumber": "contacts:PhoneNumbers"}


def _shape(shape: Optional[etree._Element]) -> Tuple[str, FrozenSet[str]]:
    if shape is None:
        return "Default", frozenset()
    extra = frozenset(f.get("FieldURI", "") for f in shape.iterfind(f"{t('AdditionalProperties')}/{t('FieldURI')}"))
    indexed = shape.iterfind(f"{t('AdditionalProperties')}/{t('IndexedFieldURI')}")
    extra |= frozenset(INDEXED_COLLECTIONS.get(f.get("FieldURI", ""), "") for f in indexed) - {""}
    return shape.findtext(t("BaseShape")) or "Default", extra


# ---- items ------------------------------------------------------------------------------------------------------
ItemWriter = Callable[[etree._Element, Item], object]


def _body(element: Parent, item: Item) -> None:
    if type(element) is _Fragment:
        element.parts.append(f"<t:Body BodyType={_attribute(item.body_type)}>"
                             f"{_escape(item.body)}</t:Body>")
        return
    body = _text(element, "Body", item.body)
    body.set("BodyType", item.body_type)


ITEM_FIELDS: List[Tuple[str, ItemWriter]] = [   # ItemType then MessageType, in schema order
    ("item:ParentFolderId", lambda e, i: _id(e, "ParentFolderId", i.folder.id, i.folder.change_key)),
    ("item:ItemClass", lambda e, i: _text(e, "ItemClass", i.item_class)),
    ("item:Subject", lambda e, i: _text(e, "Subject", i.subject)),
    ("item:Sensitivity", lambda e, i: _text(e, "Sensitivity", i.sensitivity)),
    ("item:Body", _body),
    ("item:Attachments", lambda e, i: _attachments(e, i)),
    ("item:DateTimeReceived", lambda e, i: _text(e, "DateTimeReceived", timestamp(i.received))),
    ("item:Size", lambda e, i: _text(e, "Size", i.size)),
    ("item:Categories", lambda e, i: _strings(e, "Categories", i.categories)),
    ("item:Importance", lambda e, i: _text(e, "Importance", i.importance)),
    ("item:IsSubmitted", lambda e, i: _text(e, "IsSubmitted", False)),
    ("item:IsDraft", lambda e, i: _text(e, "IsDraft", i.is_draft)),
    ("item:IsFromMe", lambda e, i: _text(e, "IsFromMe", i.sender[1].lower() == i.folder.owner.email.lower())),
    ("item:IsResend", lambda e, i: _text(e, "IsResend", False)),
    ("item:IsUnmodified", lambda e, i: _text(e, "IsUnmodified", True)),
    ("item:DateTimeSent", lambda e, i: _text(e, "DateTimeSent", timestamp(i.sent))),
    ("item:DateTimeCreated", lambda e, i: _text(e, "DateTimeCreated", timestamp(i.received))),
    ("item:DisplayCc", lambda e, i: _text(e, "DisplayCc", "; ".join(a[0] or a[1] for a in i.cc))),
    ("item:DisplayTo", lambda e, i: _text(e, "DisplayTo", "; ".join(a[0] or a[1] for a in i.to))),
    ("item:HasAttachments", lambda e, i: _text(e, "HasAttachments", i.has_attachments)),
    ("item:Culture", lambda e, i: _text(e, "Culture", "en-US")),
    ("item:LastModifiedTime", lambda e, i: _text(e, "LastModifiedTime", timestamp(i.received))),
    ("message:Sender", lambda e, i: _single(e, "Sender", i.sender)),
    ("message:ToRecipients", lambda e, i: _recipients(e, "ToRecipients", i.to)),
    ("message:CcRecipients", lambda e, i: _recipients(e, "CcRecipients", i.cc)),
    ("message:IsReadReceiptRequested", lambda e, i: _text(e, "IsReadReceiptRequested", False)),
    ("message:IsDeliveryReceiptRequested", lambda e, i: _text(e, "IsDeliveryReceiptRequested", False)),
    ("message:ConversationTopic", lambda e, i: _text(e, "ConversationTopic", i.subject)),
    ("message:From", lambda e, i: _single(e, "From", i.sender)),
    ("message:InternetMessageId", lambda e, i: _text(e, "InternetMessageId", i.message_id)),
    ("message:IsRead", lambda e, i: _text(e, "IsRead", i.is_read)),
]
ALL_ITEM_FIELDS = frozenset(uri for uri, _ in ITEM_FIELDS)
# FindItem never returns these (Exchange refuses them in a FindItem shape); GetItem does.
NOT_IN_FIND = frozenset({"item:Body", "message:ToRecipients", "message:CcRecipients", "item:MimeContent",
                         "item:Attachments"})
ITEM_DEFAULT = ALL_ITEM_FIELDS - {"item:Culture", "item:LastModifiedTime", "message:IsDeliveryReceiptRequested"}


# ---- attachments (AttachmentType's fields, then FileAttachmentType's or ItemAttachmentType's) -------------------
def _attachments(parent: Parent, item: Item) -> None:
    if item.attachments:
        element = _open(parent, "Attachments")
        for attachment in item.attachments:
            attachment_element(element, item, attachment)
        _close(element, "Attachments")


def attachment_element(parent: Parent, item: Item, attachment: Attachment, *, content: bool = False,
                       root: bool = False) -> None:
    """A t:FileAttachment or t:ItemAttachment; `content` adds the bytes (GetAttachment), `root` names the parent
    item in the AttachmentId (CreateAttachment's answer)."""
    name = "ItemAttachment" if attachment.embedded is not None else "FileAttachment"
    element = _open(parent, name)
    if root:
        etree.SubElement(element, t("AttachmentId"), Id=attachment.id_in(item), RootItemId=item.id,
                         RootItemChangeKey=item.change_key)
    else:
        _attachment_id(element, attachment, item)
    _text(element, "Name", attachment.name)
    if attachment.embedded is None:      # an item attachment has no content type of its own
        _text(element, "ContentType", attachment.content_type)
    if attachment.content_id:
        _text(element, "ContentId", attachment.content_id)
    _text(element, "Size", attachment.size)
    _text(element, "LastModifiedTime", timestamp(attachment.last_modified).rstrip("Z"))
    _text(element, "IsInline", attachment.is_inline)
    if attachment.embedded is None:
        _text(element, "IsContactPhoto", False)
        if content:
            _text(element, "Content", base64.b64encode(attachment.content).decode("ascii"))
    elif content:
        embedded = _open(element, "Message")
        _text(embedded, "ItemClass", "IPM.Note")
        _text(embedded, "Subject", attachment.embedded.subject)
        body = _text(embedded, "Body", attachment.embedded.body)
        if body is not None:
            body.set("BodyType", attachment.embedded.body_type)
        _text(embedded, "HasAttachments", False)
        _single(embedded, "From", attachment.embedded.sender)
        _close(embedded, "Message")
    _close(element, name)


def _attachment_id(parent: Parent, attachment: Attachment, item: Item) -> None:
    if type(parent) is _Fragment:
        parent.parts.append(f"<t:AttachmentId Id={_attribute(attachment.id_in(item))}/>")
    else:
        etree.SubElement(parent, t("AttachmentId"), Id=attachment.id_in(item))


# ---- calendar items (CalendarItemType: ItemType's fields, then these, in schema order) ------------------------
def _duration(value: dt.timedelta) -> str:
    minutes = int(value.total_seconds()) // 60
    days, rest = divmod(minutes, 1440)
    return "P" + (f"{days}D" if days else "") + (f"T{rest // 60}H{rest % 60}M" if rest or not days else "")


def _attendees(parent: etree._Element, name: str, item: CalendarItem, attendees: Sequence[Address]) -> None:
    if attendees:
        element = etree.SubElement(parent, t(name))
        for address in attendees:
            attendee = etree.SubElement(element, t("Attendee"))
            _mailbox(attendee, address)
            _text(attendee, "ResponseType", item.response_of(address[1]))


def _recurrence(parent: etree._Element, item: CalendarItem) -> None:
    pattern = item.recurrence
    if pattern is None or item.instance is not None:
        return
    recurrence = etree.SubElement(parent, t("Recurrence"))
    weekly = etree.SubElement(recurrence, t("WeeklyRecurrence"))
    _text(weekly, "Interval", pattern.interval)
    _text(weekly, "DaysOfWeek", " ".join(WEEKDAYS[d] for d in sorted(set(pattern.days))))
    _text(weekly, "FirstDayOfWeek", WEEKDAYS[pattern.first_day_of_week])
    range_element = etree.SubElement(recurrence, t(pattern.range_kind))
    _text(range_element, "StartDate", f"{pattern.start.isoformat()}Z")
    if pattern.range_kind == END_DATE and pattern.end is not None:
        _text(range_element, "EndDate", f"{pattern.end.isoformat()}Z")
    elif pattern.range_kind == NUMBERED:
        _text(range_element, "NumberOfOccurrences", pattern.count or 1)


CalendarWriter = Callable[[etree._Element, CalendarItem], object]
CALENDAR_FIELDS: List[Tuple[str, CalendarWriter]] = [
    ("calendar:UID", lambda e, i: _text(e, "UID", i.uid)),
    ("calendar:Start", lambda e, i: _text(e, "Start", timestamp(i.start))),
    ("calendar:End", lambda e, i: _text(e, "End", timestamp(i.end))),
    ("calendar:OriginalStart", lambda e, i: i.instance is not None and _text(e, "OriginalStart",
                                                                               timestamp(i.instance))),
    ("calendar:IsAllDayEvent", lambda e, i: _text(e, "IsAllDayEvent", i.is_all_day)),
    ("calendar:LegacyFreeBusyStatus", lambda e, i: _text(e, "LegacyFreeBusyStatus", i.free_busy)),
    ("calendar:Location", lambda e, i: _text(e, "Location", i.location)),
    ("calendar:IsMeeting", lambda e, i: _text(e, "IsMeeting", i.is_meeting)),
    ("calendar:IsCancelled", lambda e, i: _text(e, "IsCancelled", i.is_cancelled)),
    ("calendar:IsRecurring", lambda e, i: _text(e, "IsRecurring", i.recurrence is not None)),
    ("calendar:MeetingRequestWasSent", lambda e, i: _text(e, "MeetingRequestWasSent", i.is_meeting)),
    ("calendar:IsResponseRequested", lambda e, i: _text(e, "IsResponseRequested", i.is_meeting)),
    ("calendar:CalendarItemType", lambda e, i: _text(e, "CalendarItemType", i.calendar_type)),
    ("calendar:MyResponseType", lambda e, i: _text(e, "MyResponseType", i.my_response)),
    ("calendar:Organizer", lambda e, i: _single(e, "Organizer", i.sender)),
    ("calendar:RequiredAttendees", lambda e, i: _attendees(e, "RequiredAttendees", i, i.to)),
    ("calendar:OptionalAttendees", lambda e, i: _attendees(e, "OptionalAttendees", i, i.cc)),
    ("calendar:Duration", lambda e, i: _text(e, "Duration", _duration(i.end - i.start))),
    ("calendar:AppointmentState", lambda e, i: _text(e, "AppointmentState", 0 if not i.is_meeting else (
        1 if i.my_response == "Organizer" else 3))),
    ("calendar:Recurrence", _recurrence),
    ("calendar:ModifiedOccurrences", lambda e, i: _exceptions(e, i)),
    ("calendar:DeletedOccurrences", lambda e, i: _deleted(e, i)),
]
ALL_CALENDAR_FIELDS = frozenset(uri for uri, _ in CALENDAR_FIELDS)
CALENDAR_NOT_IN_FIND = frozenset({"calendar:RequiredAttendees", "calendar:OptionalAttendees",
                                  "calendar:Recurrence", "calendar:ModifiedOccurrences", "calendar:DeletedOccurrences"})


def _exceptions(parent: etree._Element, item: CalendarItem) -> None:
    """A master's t:ModifiedOccurrences: each exception's id and its times now and originally."""
    if item.instance is None and item.modified:
        element = etree.SubElement(parent, t("ModifiedOccurrences"))
        for original, _ in sorted(item.modified, key=lambda entry: entry[0]):
            exception = item.occurrence(original)
            occurrence = etree.SubElement(element, t("Occurrence"))
            _id(occurrence, "ItemId", exception.id, exception.change_key)
            for name, value in (("Start", exception.start), ("End", exception.end), ("OriginalStart", original)):
                _text(occurrence, name, timestamp(value))


def _deleted(parent: etree._Element, item: CalendarItem) -> None:
    if item.instance is None and item.deleted:
        element = etree.SubElement(parent, t("DeletedOccurrences"))
        for original in item.deleted:
            _text(etree.SubElement(element, t("DeletedOccurrence")), "Start", timestamp(original))


def item_fields(shape: Optional[etree._Element], *, find: bool) -> Tuple[FrozenSet[str], bool]:
    """(field URIs to write, whether to include MimeContent) for an ItemShape."""
    base, extra = _shape(shape)
    kinds = _kind_fields()
    chosen = {"IdOnly": frozenset(), "Default": ITEM_DEFAULT | ALL_CALENDAR_FIELDS | kinds}.get(
        base, ALL_ITEM_FIELDS | ALL_CALENDAR_FIELDS | kinds) | extra
    mime = shape is not None and (shape.findtext(t("IncludeMimeContent")) or "").lower() == "true"
    mime = mime or "item:MimeContent" in extra
    if find:
        return chosen - NOT_IN_FIND - CALENDAR_NOT_IN_FIND, False
    return chosen, mime


# Item kinds whose XML another module writes (ews_contacts): class -> (element name, its fields in schema order,
# written after ItemType's). Registered when that module is imported (ews_ops imports it).
ItemKind = Tuple[str, Sequence[Tuple[str, ItemWriter]]]
KINDS: Dict[type, ItemKind] = {}


# Meeting messages: MessageType's fields, then these (ews_meetings registers them): their element by item class.
MEETING_FIELDS: List[Tuple[str, ItemWriter]] = []
MEETING_ELEMENTS = {MEETING_REQUEST: "MeetingRequest", "IPM.Schedule.Meeting.Canceled": "MeetingCancellation"}


def _kind_fields() -> FrozenSet[str]:
    return frozenset(uri for _, fields in KINDS.values() for uri, _ in fields) | {u for u, _ in MEETING_FIELDS}


def element_name(item: Item) -> str:
    kind = KINDS.get(type(item))
    if kind is not None:
        return kind[0]
    if isinstance(item, CalendarItem):
        return "CalendarItem"
    if item.item_class.startswith("IPM.Schedule.Meeting.Resp."):
        return "MeetingResponse"
    return MEETING_ELEMENTS.get(item.item_class, "MeetingMessage" if isinstance(item, MeetingMessage) else "Message")


def item_element(parent: etree._Element, item: Item, fields: FrozenSet[str], mime: bool = False) -> None:
    element = etree.SubElement(parent, t(element_name(item)))
    if mime:
        _text(element, "MimeContent", base64.b64encode(item.mime_content()).decode("ascii")).set("CharacterSet",
                                                                                               "UTF-8")
    _id(element, "ItemId", item.id, item.change_key)
    kind = KINDS.get(type(item))
    not_message = kind is not None or isinstance(item, CalendarItem)
    for uri, write in ITEM_FIELDS:
        if uri in fields and not (not_message and uri.startswith("message:")):
            write(element, item)
    if isinstance(item, MeetingMessage):
        for uri, write in MEETING_FIELDS:
            if uri in fields:
                write(element, item)
    if kind is not None:
        for uri, write in kind[1]:
            if uri in fields:
                write(element, item)
    if isinstance(item, CalendarItem):
        for uri, write_calendar in CALENDAR_FIELDS:
            if uri in fields:
                write_calendar(element, item)


_FRAGMENT_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


def items_element(parent: etree._Element, items: Sequence[Item], fields: FrozenSet[str]) -> None:
    """t:Items with `items` under `parent` (a FindItem page). Messages are written as text and parsed once; a page
    with a calendar item, or with text XML cannot carry, takes the element path (which raises as before)."""
    if not any(isinstance(item, (CalendarItem, MeetingMessage)) or type(item) in KINDS for item in items):
        fragment = _Fragment()
        for item in items:
            name = element_name(item)
            fragment.parts.append(f"<t:{name}>")
            _id(fragment, "ItemId", item.id, item.change_key)
            for uri, write in ITEM_FIELDS:
                if uri in fields:
                    write(fragment, item)
            fragment.parts.append(f"</t:{name}>")
        text = f'<t:Items xmlns:t="{TYPES_NS}">{"".join(fragment.parts)}</t:Items>'
        try:
            parent.append(etree.fromstring(text, _FRAGMENT_PARSER))
            return
        except etree.XMLSyntaxError:
            pass
    element = etree.SubElement(parent, t("Items"))
    for item in items:
        item_element(element, item, fields)


def item_id_only(parent: etree._Element, item: Item) -> None:
    _id(etree.SubElement(parent, t(element_name(item))), "ItemId", item.id, item.change_key)


# ---- requests ---------------------------------------------------------------------------------------------------
def addresses(element: Optional[etree._Element]) -> List[Address]:
    if element is None:
        return []
    return [(mb.findtext(t("Name")) or "", mb.findtext(t("EmailAddress")) or "")
            for mb in element.iterfind(t("Mailbox"))]


def parse_flag(text: Optional[str]) -> Optional[bool]:
    """xs:boolean: "true" or "1" (exchangelib sends 1)."""
    return None if text is None else text.strip().lower() in ("true", "1")


SORTABLE: Dict[str, Callable[[Item], Any]] = {
    "item:DateTimeReceived": lambda i: i.received,
    "item:DateTimeSent": lambda i: i.sent,
    "item:Subject": lambda i: i.subject.lower(),
    "message:IsRead": lambda i: i.is_read,
}
