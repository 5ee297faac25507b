"""EWS XML for the store's folders and items: response messages, folder and item elements in the schema's element
order for a response shape (IdOnly / Default / AllProperties plus AdditionalProperties), sans-IO."""
from __future__ import annotations

import base64
import datetime as dt
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from lxml import etree

from harness.mailbox.store import Address, Folder, Item

MESSAGES_NS = "http://schemas.microsoft.com/exchange/services/2006/messages"
TYPES_NS = "http://schemas.microsoft.com/exchange/services/2006/types"
ERRORS_NS = "http://schemas.microsoft.com/exchange/services/2006/errors"


def m(name: str) -> str:
    return f"{{{MESSAGES_NS}}}{name}"


def t(name: str) -> str:
    return f"{{{TYPES_NS}}}{name}"


class EwsError(Exception):
    """One response message's error: its ResponseCode and Exchange's MessageText for it."""

    def __init__(self, code: str, text: str):
        super().__init__(text)
        self.code, self.text = code, text


class EwsFault(EwsError):
    """A request-wide failure Exchange answers with a SOAP fault (HTTP 500), e.g. a schema validation error."""


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


def timestamp(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(parent: etree._Element, name: str, value: object) -> etree._Element:
    element = etree.SubElement(parent, t(name))
    element.text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return element


def _mailbox(parent: etree._Element, address: Address) -> None:
    mailbox = etree.SubElement(parent, t("Mailbox"))
    _text(mailbox, "Name", address[0] or address[1])
    _text(mailbox, "EmailAddress", address[1])
    _text(mailbox, "RoutingType", "SMTP")
    _text(mailbox, "MailboxType", "Mailbox")


def _recipients(parent: etree._Element, name: str, addresses: Sequence[Address]) -> None:
    if addresses:
        element = etree.SubElement(parent, t(name))
        for address in addresses:
            _mailbox(element, address)


def _single(parent: etree._Element, name: str, address: Address) -> None:
    _mailbox(etree.SubElement(parent, t(name)), address)


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


def _id(parent: etree._Element, name: str, ews_id: str, change_key: str) -> etree._Element:
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


def _shape(shape: Optional[etree._Element]) -> Tuple[str, FrozenSet[str]]:
    if shape is None:
        return "Default", frozenset()
    extra = frozenset(f.get("FieldURI", "") for f in shape.iterfind(f"{t('AdditionalProperties')}/{t('FieldURI')}"))
    return shape.findtext(t("BaseShape")) or "Default", extra


# ---- items ------------------------------------------------------------------------------------------------------
ItemWriter = Callable[[etree._Element, Item], object]


def _body(element: etree._Element, item: Item) -> None:
    body = _text(element, "Body", item.body)
    body.set("BodyType", item.body_type)


ITEM_FIELDS: List[Tuple[str, ItemWriter]] = [   # ItemType then MessageType, in schema order
    ("item:ParentFolderId", lambda e, i: _id(e, "ParentFolderId", i.folder.id, i.folder.change_key)),
    ("item:ItemClass", lambda e, i: _text(e, "ItemClass", i.item_class)),
    ("item:Subject", lambda e, i: _text(e, "Subject", i.subject)),
    ("item:Sensitivity", lambda e, i: _text(e, "Sensitivity", "Normal")),
    ("item:Body", _body),
    ("item:DateTimeReceived", lambda e, i: _text(e, "DateTimeReceived", timestamp(i.received))),
    ("item:Size", lambda e, i: _text(e, "Size", i.size)),
    ("item:Importance", lambda e, i: _text(e, "Importance", "Normal")),
    ("item:IsSubmitted", lambda e, i: _text(e, "IsSubmitted", False)),
    ("item:IsDraft", lambda e, i: _text(e, "IsDraft", i.is_draft)),
    ("item:IsFromMe", lambda e, i: _text(e, "IsFromMe", i.sender[1].lower() == i.folder.owner.email.lower())),
    ("item:IsResend", lambda e, i: _text(e, "IsResend", False)),
    ("item:IsUnmodified", lambda e, i: _text(e, "IsUnmodified", True)),
    ("item:DateTimeSent", lambda e, i: _text(e, "DateTimeSent", timestamp(i.sent))),
    ("item:DateTimeCreated", lambda e, i: _text(e, "DateTimeCreated", timestamp(i.received))),
    ("item:DisplayCc", lambda e, i: _text(e, "DisplayCc", "; ".join(a[0] or a[1] for a in i.cc))),
    ("item:DisplayTo", lambda e, i: _text(e, "DisplayTo", "; ".join(a[0] or a[1] for a in i.to))),
    ("item:HasAttachments", lambda e, i: _text(e, "HasAttachments", False)),
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
NOT_IN_FIND = frozenset({"item:Body", "message:ToRecipients", "message:CcRecipients", "item:MimeContent"})
ITEM_DEFAULT = ALL_ITEM_FIELDS - {"item:Culture", "item:LastModifiedTime", "message:IsDeliveryReceiptRequested"}


def item_fields(shape: Optional[etree._Element], *, find: bool) -> Tuple[FrozenSet[str], bool]:
    """(field URIs to write, whether to include MimeContent) for an ItemShape."""
    base, extra = _shape(shape)
    chosen = {"IdOnly": frozenset(), "Default": ITEM_DEFAULT}.get(base, ALL_ITEM_FIELDS) | extra
    mime = shape is not None and (shape.findtext(t("IncludeMimeContent")) or "").lower() == "true"
    mime = mime or "item:MimeContent" in extra
    if find:
        return chosen - NOT_IN_FIND, False
    return chosen, mime


def item_element(parent: etree._Element, item: Item, fields: FrozenSet[str], mime: bool = False) -> None:
    element = etree.SubElement(parent, t("Message"))
    if mime:
        _text(element, "MimeContent", base64.b64encode(item.mime_content()).decode("ascii")).set("CharacterSet",
                                                                                               "UTF-8")
    _id(element, "ItemId", item.id, item.change_key)
    for uri, write in ITEM_FIELDS:
        if uri in fields:
            write(element, item)


def item_id_only(parent: etree._Element, item: Item) -> None:
    _id(etree.SubElement(parent, t("Message")), "ItemId", item.id, item.change_key)


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
