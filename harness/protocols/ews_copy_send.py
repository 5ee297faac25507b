"""EWS CopyItem and SendItem over the store, sans-IO.

CopyItem makes a new item (new id) with the same content in ToFolderId. SendItem sends a saved draft: every in-org
recipient gets it in the Inbox, SaveItemToFolder keeps a copy in SavedItemFolderId (default Sent Items), and the
draft leaves its folder, as Exchange's submission does. A stale ChangeKey on SendItem is ErrorIrresolvableConflict.
"""
from __future__ import annotations

from typing import Callable, Dict

from lxml import etree

from harness.mailbox import ids
from harness.mailbox.calendar import CalendarItem
from harness.protocols.ews_ops import Call, _each, _item_of, _one_folder
from harness.protocols.ews_update import IRRESOLVABLE
from harness.protocols.ews_xml import EwsError, item_id_only, m, parse_flag


def copy_item(call: Call) -> None:
    target = _one_folder(call, "ToFolderId")

    def answer(element: etree._Element, message: etree._Element) -> None:
        item_id_only(etree.SubElement(message, m("Items")), call.store.copy(_item_of(call, element), target))
    _each(call, call.request.iterfind(f"{m('ItemIds')}/*"), "Items", answer)


def send_item(call: Call) -> None:
    save_copy = bool(parse_flag(call.request.get("SaveItemToFolder", "true")))
    copy_in = None
    if save_copy:
        copy_in = _one_folder(call, "SavedItemFolderId") if call.request.find(m("SavedItemFolderId")) is not None \
            else call.owner.distinguished["sentitems"]

    def answer(element: etree._Element, message: etree._Element) -> None:
        item = _item_of(call, element)
        change_key = element.get("ChangeKey")
        if change_key is not None and ids.change_number_of(change_key) != item.change_number:
            raise EwsError(*IRRESOLVABLE)
        if isinstance(item, CalendarItem):
            raise EwsError("ErrorInvalidItemForOperationSendItem", "The item is not valid for this operation.")  # guess
        if not item.to and not item.cc:
            raise EwsError("ErrorInvalidRecipients", "At least one recipient isn't valid.")
        call.store.send(call.owner, subject=item.subject, body=item.body, body_type=item.body_type, to=item.to,
                        cc=item.cc, save_copy_in=copy_in, mime=item.mime)
        call.store.delete(item, hard=True)
    _each(call, call.request.iterfind(f"{m('ItemIds')}/*"), "", answer)


OPERATIONS: Dict[str, Callable[[Call], None]] = {"CopyItem": copy_item, "SendItem": send_item}
