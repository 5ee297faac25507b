"""The EWS operations of the mailbox store, sans-IO: each writes one response message per requested folder or
item (ResponseClass Success or Error with Exchange's ResponseCode), as Exchange 2013 SP1 does."""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.utils import getaddresses
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from lxml import etree

from harness.mailbox import calendar, ids
from harness.mailbox.store import Folder, Item, MailboxContent, MailboxStore
from harness.org import Org
from harness.protocols import ews_attachments, ews_calendar, ews_contacts, ews_meetings, ews_restrict
from harness.protocols.ews_xml import (
    ACCESS_DENIED,
    FOLDER_NOT_FOUND,
    ID_MALFORMED,
    ITEM_NOT_FOUND,
    SORTABLE,
    EwsError,
    addresses,
    each_response,
    folder_element,
    folder_fields,
    item_element,
    item_fields,
    item_id_only,
    items_element,
    m,
    t,
)


@dataclass
class Call:
    store: MailboxStore
    owner: MailboxContent
    request: etree._Element
    messages: etree._Element      # m:ResponseMessages of the answer
    operation: str
    # GetStreamingEvents: the stream to hold open (an ews_notify.StreamRequest) once the first envelope is out
    stream: Any = None
    org: Optional[Org] = None     # the directory (ResolveNames, ExpandDL)
    push: Any = None              # Subscribe: the push subscription (an events.Subscription) the edge serves


def folder_of(call: Call, element: etree._Element) -> Folder:
    """The folder a t:DistinguishedFolderId or t:FolderId names, or EwsError."""
    if etree.QName(element).localname == "DistinguishedFolderId":
        address = element.findtext(f"{t('Mailbox')}/{t('EmailAddress')}")
        if address and address.lower() != call.owner.email.lower():
            raise EwsError(*ACCESS_DENIED) if call.store.mailbox(address) else EwsError(
                "ErrorNonExistentMailbox", "No mailbox with such guid.")
        folder = call.owner.distinguished.get(element.get("Id", ""))
        if folder is None:
            raise EwsError(*FOLDER_NOT_FOUND)
        return folder
    found = _lookup(call, element.get("Id", ""))
    if not isinstance(found, Folder):
        raise EwsError(*FOLDER_NOT_FOUND)
    return found


def _lookup(call: Call, ews_id: str) -> Union[Folder, Item, None]:
    decoded = ids.decode(ews_id)
    if decoded is None:
        raise EwsError(*ID_MALFORMED)
    for owner in call.store.mailboxes.values():
        if owner.guid == decoded[0]:
            if owner is not call.owner:
                raise EwsError(*ACCESS_DENIED)
            return owner.find(ews_id)
    return None


def _item_of(call: Call, element: etree._Element) -> Item:
    occurrence = ews_calendar.find_occurrence(call, element.get("Id", ""))
    if occurrence is not None:
        return occurrence
    named = ids.decode_occurrence(element.get("Id", ""))
    if named is not None:     # an occurrence id naming no occurrence (now)
        if named[0] != call.owner.guid:
            raise EwsError(*ACCESS_DENIED) if any(o.guid == named[0] for o in call.store.mailboxes.values()) \
                else EwsError(*ITEM_NOT_FOUND)
        folder = call.owner.folders.get(named[1])
        master = folder.items.get(named[2]) if folder is not None else None
        if isinstance(master, calendar.CalendarItem) and named[3] in master.deleted:
            raise EwsError("ErrorCalendarOccurrenceIsDeletedFromRecurrence", "Occurrence has been deleted from the "
                                                                             "recurrence.")     # text guessed
        raise EwsError(*ITEM_NOT_FOUND)
    found = _lookup(call, element.get("Id", ""))
    if not isinstance(found, Item):
        raise EwsError(*ITEM_NOT_FOUND)
    return found


def _one_folder(call: Call, container: str) -> Folder:
    """The single folder under m:<container> (ToFolderId, SavedItemFolderId): a request-wide error if missing."""
    element = call.request.find(m(container))
    if element is None or len(element) == 0:
        raise EwsError("ErrorInvalidRequest", "The request is invalid.")
    return folder_of(call, element[0])


def _each(call: Call, children: Iterator[etree._Element], empty: str,
          answer: Callable[[etree._Element, etree._Element], None]) -> None:
    """One response message per requested id: answer(id element, message) or an error message."""
    each_response(call.messages, call.operation, children, empty, answer)


# ---- folders ----------------------------------------------------------------------------------------------------
def get_folder(call: Call) -> None:
    fields = folder_fields(call.request.find(m("FolderShape")))

    def answer(element: etree._Element, message: etree._Element) -> None:
        folder = folder_of(call, element)
        folder_element(etree.SubElement(message, m("Folders")), folder, fields)
    _each(call, call.request.iterfind(f"{m('FolderIds')}/*"), "Folders", answer)


def _paged(call: Call, view: Optional[etree._Element], entries: List[Any]) -> Tuple[List[Any], int, bool]:
    """(page, offset after it, includes last) for an IndexedPage*View (BasePoint Beginning or End)."""
    if view is None:
        return entries, len(entries), True
    try:
        limit = int(view.get("MaxEntriesReturned", str(len(entries)) or "0"))
        offset = int(view.get("Offset", "0"))
    except ValueError:
        raise EwsError("ErrorInvalidIndexedPagingParameters", "The indexed paging parameters are invalid.")
    if limit < 1 or offset < 0:
        raise EwsError("ErrorInvalidIndexedPagingParameters", "The indexed paging parameters are invalid.")
    if view.get("BasePoint", "Beginning") == "End":
        stop = max(len(entries) - offset, 0)
        page = entries[max(stop - limit, 0):stop]
        return page, offset + len(page), stop - len(page) <= 0
    page = entries[offset:offset + limit]
    return page, offset + len(page), offset + len(page) >= len(entries)


def _root_folder(message: etree._Element, total: int, next_offset: int, last: bool) -> etree._Element:
    return etree.SubElement(message, m("RootFolder"), IndexedPagingOffset=str(next_offset),
                            TotalItemsInView=str(total), IncludesLastItemInRange="true" if last else "false")


def find_folder(call: Call) -> None:
    fields = folder_fields(call.request.find(m("FolderShape")))
    deep = call.request.get("Traversal", "Shallow") == "Deep"
    view = call.request.find(m("IndexedPageFolderView"))

    def answer(element: etree._Element, message: etree._Element) -> None:
        parent = folder_of(call, element)
        found = list(parent.descendants()) if deep else list(parent.children)
        page, next_offset, last = _paged(call, view, found)
        root = _root_folder(message, len(found), next_offset, last)
        folders = etree.SubElement(root, t("Folders"))
        for folder in page:
            folder_element(folders, folder, fields)
    _each(call, call.request.iterfind(f"{m('ParentFolderIds')}/*"), "", answer)


# ---- items ------------------------------------------------------------------------------------------------------
def _sorted(call: Call, folder: Folder) -> List[Item]:
    """Exchange's default order is newest received first (the folder keeps it); SortOrder's FieldOrders apply last
    to first."""
    orders = list(call.request.iterfind(f"{m('SortOrder')}/{t('FieldOrder')}"))
    if not orders or _is_newest_first(orders):
        return folder.newest_first()
    items = list(folder.items.values())
    for order in reversed(orders):
        uri_element = order.find(t("FieldURI"))
        key = SORTABLE.get(uri_element.get("FieldURI", "") if uri_element is not None else "")
        if key is None:
            raise EwsError("ErrorUnsupportedPropertyDefinition", "This property can not be used in a restriction or "
                                                                 "sort.")
        items = sorted(items, key=key, reverse=order.get("Order") == "Descending")
    return items


def _is_newest_first(orders: List[etree._Element]) -> bool:
    """SortOrder DateTimeReceived Descending alone (exchangelib's order_by("-datetime_received")): the default."""
    if len(orders) != 1 or orders[0].get("Order") != "Descending":
        return False
    uri = orders[0].find(t("FieldURI"))
    return uri is not None and uri.get("FieldURI") == "item:DateTimeReceived"


def find_item(call: Call) -> None:
    fields, _ = item_fields(call.request.find(m("ItemShape")), find=True)
    restriction = call.request.find(m("Restriction"))
    view = call.request.find(m("IndexedPageItemView"))
    calendar_view = call.request.find(m("CalendarView"))
    if call.request.find(m("GroupBy")) is not None or (restriction is not None and calendar_view is not None):
        raise EwsError("ErrorUnsupportedQueryFilter", "The restriction or sort order is too complex for this "
                                                      "operation.")
    matches = ews_restrict.compile_restriction(restriction) if restriction is not None else None

    def answer(element: etree._Element, message: etree._Element) -> None:
        folder = folder_of(call, element)
        if calendar_view is not None:
            ews_calendar.write_calendar_view(calendar_view, folder, fields, message)
            return
        found = _sorted(call, folder)
        if matches is not None:
            found = [item for item in found if matches(item)]
        page, next_offset, last = _paged(call, view, found)
        items_element(_root_folder(message, len(found), next_offset, last), page, fields)
    _each(call, call.request.iterfind(f"{m('ParentFolderIds')}/*"), "", answer)


def get_item(call: Call) -> None:
    fields, mime = item_fields(call.request.find(m("ItemShape")), find=False)

    def answer(element: etree._Element, message: etree._Element) -> None:
        item_element(etree.SubElement(message, m("Items")), _item_of(call, element), fields, mime)
    _each(call, call.request.iterfind(f"{m('ItemIds')}/*"), "Items", answer)


def _message_fields(message: etree._Element) -> Dict[str, Any]:
    """Subject, body and recipients of a t:Message, from its MimeContent when it has one."""
    mime_text = message.findtext(t("MimeContent"))
    if mime_text:
        try:
            raw = base64.b64decode(mime_text, validate=False)
        except (binascii.Error, ValueError):
            raise EwsError("ErrorMimeContentConversionFailed", "Unable to convert MIME to MAPI.")
        parsed = message_from_bytes(raw, policy=policy.default)
        part = parsed.get_body(("plain", "html")) if parsed.is_multipart() else parsed
        return dict(subject=str(parsed.get("Subject", "")), body=part.get_content() if part is not None else "",
                    to=[(n, a) for n, a in getaddresses(parsed.get_all("To", []))],
                    cc=[(n, a) for n, a in getaddresses(parsed.get_all("Cc", []))], mime=raw)
    body = message.find(t("Body"))
    return dict(subject=message.findtext(t("Subject")) or "", body=body.text or "" if body is not None else "",
                body_type=body.get("BodyType", "Text") if body is not None else "Text",
                to=addresses(message.find(t("ToRecipients"))), cc=addresses(message.find(t("CcRecipients"))))


def create_item(call: Call) -> None:
    disposition = call.request.get("MessageDisposition", "SaveOnly")
    saved_in = call.request.find(m("SavedItemFolderId"))

    def answer(element: etree._Element, message: etree._Element) -> None:
        if etree.QName(element).localname == "CalendarItem":
            ews_calendar.create_calendar_item(call, element, etree.SubElement(message, m("Items")),
                                              _one_folder(call, "SavedItemFolderId") if saved_in is not None else None)
            return
        if etree.QName(element).localname in ews_meetings.CREATES:
            reference = element.find(t("ReferenceItemId"))
            if reference is None:
                raise EwsError(*ews_meetings.INVALID_REFERENCE)
            ews_meetings.create(call, element, _item_of(call, reference), etree.SubElement(message, m("Items")),
                                _one_folder(call, "SavedItemFolderId") if saved_in is not None else None)
            return
        if etree.QName(element).localname in ews_contacts.CREATES:
            ews_contacts.create(call, element, etree.SubElement(message, m("Items")),
                                _one_folder(call, "SavedItemFolderId") if saved_in is not None else None)
            return
        if etree.QName(element).localname != "Message":
            raise EwsError("ErrorInvalidItemForOperationCreateItem", "CreateItem operation does not support this "
                                                                      "item type.")
        fields = _message_fields(element)
        fields["attachments"] = ews_attachments.inline(call, element, fields.get("mime"))
        items = etree.SubElement(message, m("Items"))
        if disposition == "SaveOnly":
            folder = _one_folder(call, "SavedItemFolderId") if saved_in is not None else \
                call.owner.distinguished["drafts"]
            ews_attachments.created(items, call.store.save(call.owner, folder, **fields))
            return
        if not fields["to"] and not fields["cc"]:
            raise EwsError("ErrorInvalidRecipients", "At least one recipient isn't valid.")
        copy_in = None
        if disposition == "SendAndSaveCopy":
            copy_in = _one_folder(call, "SavedItemFolderId") if saved_in is not None else \
                call.owner.distinguished["sentitems"]
        call.store.send(call.owner, save_copy_in=copy_in, **fields)
    _each(call, call.request.iterfind(f"{m('Items')}/*"), "Items", answer)


def delete_item(call: Call) -> None:
    delete_type = call.request.get("DeleteType", "")
    if delete_type not in ("HardDelete", "SoftDelete", "MoveToDeletedItems"):
        raise EwsError("ErrorInvalidRequest", "The request is invalid.")

    def answer(element: etree._Element, message: etree._Element) -> None:
        item = _item_of(call, element)
        if isinstance(item, calendar.CalendarItem) and item.instance is not None:   # one occurrence of a series
            master = item.folder.items[item.key]
            assert isinstance(master, calendar.CalendarItem)
            calendar.delete_occurrence(call.store, master, item.instance)
        elif delete_type == "SoftDelete":   # kept in Recoverable Items, out of the client's view
            call.store.move(item, call.owner.distinguished["recoverableitemsdeletions"])
        else:
            call.store.delete(item, hard=delete_type == "HardDelete")
    _each(call, call.request.iterfind(f"{m('ItemIds')}/*"), "", answer)


def move_item(call: Call) -> None:
    target = _one_folder(call, "ToFolderId")

    def answer(element: etree._Element, message: etree._Element) -> None:
        item_id_only(etree.SubElement(message, m("Items")), call.store.move(_item_of(call, element), target))
    _each(call, call.request.iterfind(f"{m('ItemIds')}/*"), "Items", answer)


OPERATIONS: Dict[str, Callable[[Call], None]] = {
    "GetFolder": get_folder, "FindFolder": find_folder, "FindItem": find_item, "GetItem": get_item,
    "CreateItem": create_item, "DeleteItem": delete_item, "MoveItem": move_item,
}
