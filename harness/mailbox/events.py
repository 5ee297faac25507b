"""Notification events of a mailbox and the subscriptions that read them, sans-IO.

Every mailbox keeps a bounded log of what happened to its items (new mail, created, modified, moved, copied,
deleted) and folders (created, modified, moved, copied, deleted), each event numbered in order. A subscription
(pull or streaming) names the folders and event types it wants and how far it has read; a watermark is that
position, opaque to clients: base64 of a version byte, four bytes of the mailbox GUID and the 8-byte event number.
The log keeps the last MAX_EVENTS events: a watermark older than that can no longer be answered (EWS:
ErrorInvalidWatermark), as a watermark of another mailbox or one that does not decode.
"""
from __future__ import annotations

import base64
import binascii
import collections
import datetime as dt
import struct
import uuid
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, FrozenSet, List, Optional, Tuple

MAX_EVENTS = 2000                  # per mailbox
MAX_SUBSCRIPTIONS = 20             # per mailbox: Exchange's default EwsMaxSubscriptions
NEW_MAIL, CREATED, MODIFIED, MOVED, DELETED, COPIED = (
    "NewMailEvent", "CreatedEvent", "ModifiedEvent", "MovedEvent", "DeletedEvent", "CopiedEvent")
EVENT_TYPES = (COPIED, CREATED, DELETED, MODIFIED, MOVED, NEW_MAIL, "FreeBusyChangedEvent")
_WATERMARK = struct.Struct(">B4sQ")
_WATERMARK_VERSION = 1


@dataclass(frozen=True)
class Event:
    number: int
    kind: str
    timestamp: dt.datetime
    item: Tuple[str, str]                       # (ItemId, ChangeKey) after the event; a folder's (FolderId, ...)
    folder: Tuple[str, str]                     # (FolderId, ChangeKey) of the folder it is in now
    folder_key: int
    old_item: Optional[Tuple[str, str]] = None  # MovedEvent / CopiedEvent: where it was
    old_folder: Optional[Tuple[str, str]] = None
    old_folder_key: Optional[int] = None
    is_folder: bool = False                     # the event is about a folder (EWS: FolderId, not ItemId)


class InvalidWatermark(ValueError):
    """Not a watermark of this mailbox, or older than its log keeps."""


class EventLog:
    """One mailbox's recent events, oldest first; numbers start at 1. Listeners (an open streaming connection) are
    told of each event as it is recorded."""

    def __init__(self, limit: int = MAX_EVENTS):
        self.events: Deque[Event] = collections.deque(maxlen=limit)
        self.last = 0
        self.listeners: List[Callable[[Event], None]] = []

    def listen(self, listener: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``listener(event)`` for every event recorded from now on; returns what stops that."""
        self.listeners.append(listener)

        def stop() -> None:
            if listener in self.listeners:
                self.listeners.remove(listener)
        return stop

    def since(self, number: int) -> List[Event]:
        """Events after `number` that the log still holds (a listener's catch-up: never InvalidWatermark)."""
        return [event for event in self.events if event.number > number]

    def record(self, kind: str, timestamp: dt.datetime, item, *, old_item=None) -> Event:
        """`item` (and `old_item`) are store Items: their id, change key and folder are taken now."""
        self.last += 1
        event = Event(self.last, kind, timestamp, (item.id, item.change_key), (item.folder.id, item.folder.change_key),
                      item.folder.key)
        if old_item is not None:
            event = Event(self.last, kind, timestamp, event.item, event.folder, event.folder_key,
                          (old_item.id, old_item.change_key), (old_item.folder.id, old_item.folder.change_key),
                          old_item.folder.key)
        return self._append(event)

    def record_folder(self, kind: str, timestamp: dt.datetime, folder, parent, *, old_folder=None,
                      old_parent=None) -> Event:
        """A folder event: `folder` as it is now under `parent` (store Folders); a move or copy names the folder it
        was (the same one for a move) and its parent then."""
        self.last += 1
        old = (old_folder.id, old_folder.change_key) if old_folder is not None else None
        old_in = (old_parent.id, old_parent.change_key) if old_parent is not None else None
        event = Event(self.last, kind, timestamp, (folder.id, folder.change_key), (parent.id, parent.change_key),
                      parent.key, old, old_in, old_parent.key if old_parent is not None else None, is_folder=True)
        return self._append(event)

    def _append(self, event: Event) -> Event:
        self.events.append(event)
        for listener in tuple(self.listeners):
            listener(event)
        return event

    def after(self, number: int) -> List[Event]:
        """Events after `number`; InvalidWatermark when some of them were dropped from the log already."""
        if number > self.last:
            raise InvalidWatermark("from the future")
        oldest = self.events[0].number if self.events else self.last + 1
        if number + 1 < oldest:
            raise InvalidWatermark("older than the log")
        return [event for event in self.events if event.number > number]


def encode_watermark(mailbox_guid: str, number: int) -> str:
    raw = _WATERMARK.pack(_WATERMARK_VERSION, uuid.UUID(mailbox_guid).bytes[:4], number)
    return base64.b64encode(raw).decode("ascii")


def decode_watermark(mailbox_guid: str, watermark: Optional[str]) -> int:
    try:
        raw = base64.b64decode((watermark or "").strip().encode("ascii"), validate=True)
        version, guid, number = _WATERMARK.unpack(raw)
    except (binascii.Error, ValueError, UnicodeEncodeError, struct.error):
        raise InvalidWatermark("does not decode") from None
    if version != _WATERMARK_VERSION or guid != uuid.UUID(mailbox_guid).bytes[:4]:
        raise InvalidWatermark("another mailbox")
    return number


@dataclass
class Subscription:
    id: str
    owner: str                          # lower-cased address of the mailbox it watches
    folders: Optional[FrozenSet[int]]   # folder counters; None: every folder (SubscribeToAllFolders)
    event_types: FrozenSet[str]
    position: int                       # the last event number handed out
    streaming: bool
    timeout_minutes: int = 0            # pull: expires when not read for this long
    last_read: Optional[dt.datetime] = None
    push_url: Optional[str] = None      # push: where the server POSTs its notifications
    status_frequency: int = 0           # push: minutes (status pings; how long failed POSTs are retried)

    def wants(self, event: Event) -> bool:
        if event.kind not in self.event_types:
            return False
        return self.folders is None or event.folder_key in self.folders or event.old_folder_key in self.folders

    def expired(self, now: dt.datetime) -> bool:
        return (not self.streaming and self.push_url is None and self.last_read is not None
                and now - self.last_read > dt.timedelta(minutes=self.timeout_minutes))


@dataclass
class Subscriptions:
    """Every live subscription of a store, by id."""
    by_id: Dict[str, Subscription] = field(default_factory=dict)
    issued: int = 0

    def add(self, owner_email: str, owner_guid: str, **fields) -> Optional[Subscription]:
        """A new subscription, or None when the mailbox has MAX_SUBSCRIPTIONS already."""
        owner = owner_email.lower()
        if sum(1 for s in self.by_id.values() if s.owner == owner) >= MAX_SUBSCRIPTIONS:
            return None
        self.issued += 1
        raw = b"\x10\x00" + uuid.UUID(owner_guid).bytes + self.issued.to_bytes(8, "big")
        subscription = Subscription(base64.b64encode(raw).decode("ascii"), owner, **fields)
        self.by_id[subscription.id] = subscription
        return subscription
