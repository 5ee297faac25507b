"""Notifications on the EMSMDB core ([MS-OXCNOTIF], [MS-OXCROPS] 2.2.14), sans-IO: RopRegisterNotification, and the
RopNotify / RopPending responses that carry what happened.

A registration is a server object (its handle is the NotificationHandle of each RopNotify) that reads the mailbox
store's event log (harness.mailbox.events) from the position it was registered at: the event types it asked for
(NotificationTypes), in the whole store or in one folder (or one message). Both transports tell the client the same
way Exchange does without an asynchronous channel: each ROP response buffer (EcDoRpcExt2 over RPC/HTTP, Execute over
MAPI/HTTP) ends with a RopNotify per pending event, up to MAX_NOTIFY_PER_RESPONSE, then a RopPending when more wait.
MAPI/HTTP's NotificationWait and RPC/HTTP's EcDoAsyncWaitEx (asyncwait.py) ask ``pending`` whether to answer.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

from harness.mailbox import events, ids
from harness.mailbox.events import Event
from harness.mailbox.store import MailboxContent
from harness.rpc.emsmdb.idl import EC_NONE, EC_NOT_FOUND
from harness.rpc.emsmdb.rops import EC_NULL_OBJECT, ObjectMap, StoreObject, _fail, _need, fid

ROP_REGISTER_NOTIFICATION, ROP_NOTIFY, ROP_PENDING = 0x29, 0x2A, 0x6E
# NotificationTypes / NotificationFlags bits ([MS-OXCNOTIF] 2.2.1.4.1.2), by the store's event kind
TYPE_BITS = {events.NEW_MAIL: 0x0002, events.CREATED: 0x0004, events.DELETED: 0x0008, events.MODIFIED: 0x0010,
             events.MOVED: 0x0020, events.COPIED: 0x0040}
FLAG_MESSAGE = 0x8000                # the M bit: the notification is about a message (MessageId follows FolderId)
MAX_NOTIFY_PER_RESPONSE = 32         # RopNotify entries a response buffer carries; RopPending says more wait
_IPM_NOTE = "IPM.Note"


@dataclass
class NotificationObject:
    """A RopRegisterNotification registration: what it watches and how far it has read the event log."""
    content: MailboxContent
    types: int                          # NotificationTypes bits
    folder_key: Optional[int]           # None: the whole store (WantWholeStore)
    message_key: Optional[int]          # a single message's events only
    logon_id: int
    position: int                       # the last event number handed out

    def wants(self, event: Event) -> bool:
        if not TYPE_BITS.get(event.kind, 0) & self.types:
            return False
        if self.message_key is not None and _item_key(event.item[0]) != self.message_key:
            return False
        return self.folder_key is None or self.folder_key in (event.folder_key, event.old_folder_key)


def _item_key(ews_id: str) -> Optional[int]:
    decoded = ids.decode(ews_id)
    return decoded[2] if decoded is not None else None


def run_register_notification(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    """RopRegisterNotification ([MS-OXCROPS] 2.2.14.1): RopId, LogonId, InputHandleIndex, OutputHandleIndex,
    NotificationTypes, Reserved, WantWholeStore, then FolderId and MessageId when not the whole store."""
    _need(rops, pos, 7, "RopRegisterNotification")
    _, logon_id, in_index, out_index, types, _reserved, whole_store = struct.unpack_from("<7B", rops, pos)
    end = pos + 7
    folder_key = message_key = None
    if not whole_store:
        _need(rops, pos, 23, "RopRegisterNotification")
        folder_id, message_id = rops[end:end + 8], rops[end + 8:end + 16]
        end += 16
        folder_key = int.from_bytes(folder_id[2:], "big")
        message_key = int.from_bytes(message_id[2:], "big") or None
    if out_index >= len(handles):
        raise ValueError("RopRegisterNotification OutputHandleIndex outside the handle table")
    source = objects.at(handles, in_index)
    if source is None:
        return _fail(ROP_REGISTER_NOTIFICATION, out_index, EC_NULL_OBJECT), end
    content = source.content if isinstance(source, StoreObject) else objects.content()
    if content is None or (folder_key is not None and folder_key not in content.folders):
        return _fail(ROP_REGISTER_NOTIFICATION, out_index, EC_NOT_FOUND), end
    handles[out_index] = objects.add(NotificationObject(content, types, folder_key, message_key, logon_id,
                                                        content.events.last))
    objects.watching.append(handles[out_index])
    return struct.pack("<BBL", ROP_REGISTER_NOTIFICATION, out_index, EC_NONE), end


def registrations(objects: ObjectMap) -> Iterator[Tuple[int, NotificationObject]]:
    """The session's live registrations (a released one is forgotten here too); by their own index, so a session
    holding thousands of other objects pays nothing per ROP buffer."""
    if not objects.watching:
        return
    live = [handle for handle in objects.watching if isinstance(objects.objects.get(handle), NotificationObject)]
    objects.watching[:] = live
    for handle in live:
        yield handle, objects.objects[handle]  # type: ignore[misc]


def _unread(registration: NotificationObject) -> Iterator[Event]:
    try:
        waiting = registration.content.events.after(registration.position)
    except events.InvalidWatermark:   # older than the log keeps: those events are lost, as a store restart
        registration.position = registration.content.events.last
        return
    for event in waiting:
        if registration.wants(event):
            yield event
        else:
            registration.position = event.number   # nothing for it: skipped for good


def pending(objects: ObjectMap) -> bool:
    """Some registration has an event to report (NotificationWait's EventPending)."""
    return any(True for _, registration in registrations(objects) for _ in _unread(registration))


def notify_rops(objects: ObjectMap, session_index: int = 0) -> bytes:
    """The RopNotify responses for the pending events (oldest first, up to MAX_NOTIFY_PER_RESPONSE), then a
    RopPending when some are left; consumed as they are written."""
    out = b""
    count, more = 0, False
    for handle, registration in list(registrations(objects)):
        for event in _unread(registration):
            if count == MAX_NOTIFY_PER_RESPONSE:
                more = True
                break
            out += struct.pack("<BLB", ROP_NOTIFY, handle, registration.logon_id) + notification_data(
                registration.content, event)
            registration.position = event.number
            count += 1
    if more:
        out += struct.pack("<BH", ROP_PENDING, session_index)
    return out


def notification_data(content: MailboxContent, event: Event) -> bytes:
    """NotificationData ([MS-OXCNOTIF] 2.2.1.4.1.2) for a message event: NotificationFlags with the M bit, FolderId,
    MessageId, then the fields of its type (old ids for moves and copies, an empty tag list for created/modified,
    MessageFlags / UnicodeFlag / MessageClass for new mail); a folder event's is _folder_notification's."""
    bit = TYPE_BITS[event.kind]
    if event.is_folder:
        return _folder_notification(event, bit)
    item_key = _item_key(event.item[0]) or 0
    out = struct.pack("<H", bit | FLAG_MESSAGE) + fid(event.folder_key) + fid(item_key)
    if event.kind in (events.MOVED, events.COPIED):
        old_key = _item_key(event.old_item[0]) if event.old_item else 0
        out += fid(event.old_folder_key or 0) + fid(old_key or 0)
    elif event.kind in (events.CREATED, events.MODIFIED):
        out += struct.pack("<H", 0)                      # TagCount: no changed tags listed
    elif event.kind == events.NEW_MAIL:
        folder = content.folders.get(event.folder_key)
        item = folder.items.get(item_key) if folder is not None else None
        message_class = item.item_class if item is not None else _IPM_NOTE
        flags = 0 if item is None or not item.is_read else 0x01
        out += struct.pack("<LB", flags, 1) + message_class.encode("utf-16-le") + b"\x00\x00"
    return out

def _folder_key(ews_id: Optional[str]) -> int:
    decoded = ids.decode(ews_id) if ews_id else None
    return decoded[1] if decoded is not None else 0


def _folder_notification(event: Event, bit: int) -> bytes:
    """A folder event (no M bit): FolderId, ParentFolderId (created, deleted, moved, copied), OldFolderId and
    OldParentFolderId (moved, copied), an empty tag list (created, modified), in [MS-OXCNOTIF]'s field order."""
    out = struct.pack("<H", bit) + fid(_folder_key(event.item[0]))
    if event.kind in (events.CREATED, events.DELETED, events.MOVED, events.COPIED):
        out += fid(event.folder_key)
    if event.kind in (events.MOVED, events.COPIED):
        out += fid(_folder_key(event.old_item[0] if event.old_item else None)) + fid(event.old_folder_key or 0)
    if event.kind in (events.CREATED, events.MODIFIED):
        out += struct.pack("<H", 0)                      # TagCount: no changed tags listed
    return out


HANDLERS = {ROP_REGISTER_NOTIFICATION: run_register_notification}
