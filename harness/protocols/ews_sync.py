"""EWS SyncFolderItems and SyncFolderHierarchy over the store's change numbers (harness.mailbox.sync), sans-IO.

The SyncState is opaque to clients; a state this store did not give out for the folder is ErrorInvalidSyncStateData.
An error response message still carries an empty SyncState and IncludesLast...InRange, as Exchange's does (and
exchangelib reads both before it looks at the ResponseCode).
"""
from __future__ import annotations

from typing import Callable, Dict, FrozenSet, Tuple

from lxml import etree

from harness.mailbox import ids, sync
from harness.mailbox.store import Folder, FolderTombstone, Item, Tombstone
from harness.protocols.ews_ops import Call, folder_of
from harness.protocols.ews_xml import (
    EwsError,
    EwsFault,
    folder_element,
    folder_fields,
    item_element,
    item_fields,
    m,
    t,
)

INVALID_STATE = ("ErrorInvalidSyncStateData", "Synchronization state data is corrupt or otherwise invalid.")
MAX_CHANGES = 512          # the schema's MaxSyncChangesReturnedType: 1 to 512


def _respond(call: Call, last_name: str, write: Callable[[etree._Element], Tuple[str, bool]]) -> None:
    """One response message: write(changes element) gives the new state; an EwsError becomes an error message."""
    message = etree.Element(m(f"{call.operation}ResponseMessage"))
    changes = etree.Element(m("Changes"))
    try:
        state, last = write(changes)
    except EwsError as error:
        message.set("ResponseClass", "Error")
        etree.SubElement(message, m("MessageText")).text = error.text
        etree.SubElement(message, m("ResponseCode")).text = error.code
        etree.SubElement(message, m("DescriptiveLinkKey")).text = "0"
        etree.SubElement(message, m("SyncState"))
        etree.SubElement(message, m(last_name)).text = "true"
    else:
        message.set("ResponseClass", "Success")
        etree.SubElement(message, m("ResponseCode")).text = "NoError"
        etree.SubElement(message, m("SyncState")).text = state
        etree.SubElement(message, m(last_name)).text = "true" if last else "false"
        message.append(changes)
    call.messages.append(message)


def _sync_folder(call: Call, default: str) -> Folder:
    element = call.request.find(m("SyncFolderId"))
    if element is None or len(element) == 0:
        return call.owner.distinguished[default]
    return folder_of(call, element[0])


def _since(call: Call, kind: int, folder: Folder) -> int:
    try:
        return sync.decode_state(call.owner, kind, folder, call.request.findtext(m("SyncState")))
    except sync.InvalidSyncState:
        raise EwsError(*INVALID_STATE) from None


def _max_changes(call: Call) -> int:
    text = call.request.findtext(m("MaxChangesReturned"))
    try:
        value = int(text or "")
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_CHANGES:
        raise EwsFault("ErrorSchemaValidation", "The request failed schema validation: The 'MaxChangesReturned' "
                                                "element is invalid - The value is invalid according to its "
                                                "datatype.")
    return value


def sync_folder_items(call: Call) -> None:
    fields, mime = item_fields(call.request.find(m("ItemShape")), find=False)
    limit = _max_changes(call)
    ignore = sync.item_keys(call.owner, [e.get("Id", "") for e in call.request.iterfind(f"{m('Ignore')}/*")])

    def write(changes: etree._Element) -> Tuple[str, bool]:
        folder = _sync_folder(call, "inbox")
        page = sync.item_changes(folder, _since(call, sync.ITEMS, folder), limit, ignore)
        for change in page.changes:
            element = etree.SubElement(changes, t(change.kind))
            subject = change.subject
            if isinstance(subject, Tombstone):
                etree.SubElement(element, t("ItemId"), Id=ids.item_id(call.owner.guid, folder.key, subject.key))
            elif not isinstance(subject, Item):
                continue    # item changes hold items and tombstones only
            elif change.kind == sync.READ_FLAG:
                etree.SubElement(element, t("ItemId"), Id=subject.id, ChangeKey=subject.change_key)
                etree.SubElement(element, t("IsRead")).text = "true" if subject.is_read else "false"
            else:
                item_element(element, subject, fields, mime)
        return sync.encode_state(call.owner, sync.ITEMS, folder, page.state), page.includes_last
    _respond(call, "IncludesLastItemInRange", write)


def sync_folder_hierarchy(call: Call) -> None:
    fields: FrozenSet[str] = folder_fields(call.request.find(m("FolderShape")))

    def write(changes: etree._Element) -> Tuple[str, bool]:
        root = _sync_folder(call, "msgfolderroot")
        page = sync.folder_changes(root, _since(call, sync.HIERARCHY, root), limit=1 << 30)
        for change in page.changes:
            if isinstance(change.subject, Folder):
                folder_element(etree.SubElement(changes, t(change.kind)), change.subject, fields)
            elif isinstance(change.subject, FolderTombstone):
                etree.SubElement(etree.SubElement(changes, t(change.kind)), t("FolderId"),
                                 Id=ids.folder_id(call.owner.guid, change.subject.key))
        return sync.encode_state(call.owner, sync.HIERARCHY, root, page.state), page.includes_last
    _respond(call, "IncludesLastFolderInRange", write)


OPERATIONS: Dict[str, Callable[[Call], None]] = {
    "SyncFolderItems": sync_folder_items, "SyncFolderHierarchy": sync_folder_hierarchy,
}
