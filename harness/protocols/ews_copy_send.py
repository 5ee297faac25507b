"""EWS CopyItem and SendItem over the store, sans-IO, and the submission of a saved message they share with
UpdateItem's MessageDisposition SendOnly / SendAndSaveCopy.

CopyItem makes a new item (new id) with the same content in ToFolderId. SendItem sends a saved draft: every in-org
recipient gets it in the Inbox, SaveItemToFolder keeps a copy in SavedItemFolderId (default Sent Items), and the
draft leaves its folder, as Exchange's submission does. A stale ChangeKey on SendItem is ErrorIrresolvableConflict.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

from lxml import etree

from harness.mailbox import ids
from harness.mailbox.calendar import CalendarItem
from harness.mailbox.store import Folder, Item
from harness.protocols.ews_ops import Call, _each, _item_of, _one_folder
from harness.protocols.ews_xml import EwsError, item_id_only, m, parse_flag

IRRESOLVABLE = ("ErrorIrresolvableConflict", "The send or update operation could not be performed because the change "
                                             "key passed in the request does not match the current change key for the "
                                             "item.")


def copy_item(call: Call) -> None:
    target = _one_folder(call, "ToFolderId")

    def answer(element: etree._Element, message: etree._Element) -> None:
        item_id_only(etree.SubElement(message, m("Items")), call.store.copy(_item_of(call, element), target))
    _each(call, call.request.iterfind(f"{m('ItemIds')}/*"), "Items", answer)


def saved_copy_folder(call: Call, save_copy: bool) -> Optional[Folder]:
    """Where a sent message's copy goes: SavedItemFolderId, by default Sent Items (None: no copy)."""
    if not save_copy:
        return None
    if call.request.find(m("SavedItemFolderId")) is not None:
        return _one_folder(call, "SavedItemFolderId")
    return call.owner.distinguished["sentitems"]


def submit(call: Call, item: Item, copy_in: Optional[Folder]) -> None:
    """Send a saved message as it is now: delivered in the org, a read copy in `copy_in`, and the message leaves its
    folder (Exchange's submission moves it out of Drafts)."""
    if isinstance(item, CalendarItem):
        raise EwsError("ErrorInvalidItemForOperationSendItem", "The item is not valid for this operation.")  # guess
    if not item.to and not item.cc:
        raise EwsError("ErrorInvalidRecipients", "At least one recipient isn't valid.")
    call.store.send(call.owner, subject=item.subject, body=item.body, body_type=item.body_type, to=item.to,
                    cc=item.cc, save_copy_in=copy_in, mime=item.mime, attachments=item.attachments)
    call.store.delete(item, hard=True)


def send_item(call: Call) -> None:
    copy_in = saved_copy_folder(call, bool(parse_flag(call.request.get("SaveItemToFolder", "true"))))

    def answer(element: etree._Element, message: etree._Element) -> None:
        item = _item_of(call, element)
        change_key = element.get("ChangeKey")
        if change_key is not None and ids.change_number_of(change_key) != item.change_number:
            raise EwsError(*IRRESOLVABLE)
        submit(call, item, copy_in)
    _each(call, call.request.iterfind(f"{m('ItemIds')}/*"), "", answer)


OPERATIONS: Dict[str, Callable[[Call], None]] = {"CopyItem": copy_item, "SendItem": send_item}
