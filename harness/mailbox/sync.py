"""Incremental synchronization over the store's change numbers, sans-IO: what changed in a folder's items or in a
folder hierarchy since a sync state, and the opaque state to hand back.

Every change in a mailbox takes the next number of its change counter, so "what changed since N" is: items made
after N (Create), items whose last change is after N (Update, or ReadFlagChange when only the read flag changed),
and tombstones of items made up to N that left after N (Delete). Changes are returned in change-number order, so a
page of them ends at a number that is the next state, and the rest all lie after it.

A sync state is base64 of: a version byte, the kind (items or hierarchy), four bytes of the mailbox GUID, the
folder's 6-byte counter and the 8-byte change number. A state of another kind, mailbox or folder, from a newer
counter than the mailbox has (a reset store), or that does not decode, is invalid.
"""
from __future__ import annotations

import base64
import binascii
import heapq
import struct
import uuid
from dataclasses import dataclass
from typing import FrozenSet, List, Optional, Union

from harness.mailbox import ids
from harness.mailbox.store import Folder, FolderTombstone, Item, MailboxContent, Tombstone

STATE_VERSION = 1
ITEMS, HIERARCHY = 0x49, 0x48       # "I", "H"
_STATE = struct.Struct(">BB4s6sQ")

CREATE, UPDATE, DELETE, READ_FLAG = "Create", "Update", "Delete", "ReadFlagChange"


class InvalidSyncState(ValueError):
    """The client's sync state is not one this store gave out for this folder (EWS: ErrorInvalidSyncStateData)."""


def encode_state(owner: MailboxContent, kind: int, folder: Folder, change_number: int) -> str:
    raw = _STATE.pack(STATE_VERSION, kind, uuid.UUID(owner.guid).bytes[:4], folder.key.to_bytes(6, "big"),
                      change_number)
    return base64.b64encode(raw).decode("ascii")


def decode_state(owner: MailboxContent, kind: int, folder: Folder, state: Optional[str]) -> int:
    """The change number a state stands for (0 for no state: everything is new), or InvalidSyncState."""
    if state is None or not state.strip():
        return 0
    try:
        raw = base64.b64decode(state.strip().encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise InvalidSyncState("not base64") from None
    if len(raw) != _STATE.size:
        raise InvalidSyncState("wrong length")
    version, state_kind, guid, folder_key, change_number = _STATE.unpack(raw)
    if (version, state_kind, guid) != (STATE_VERSION, kind, uuid.UUID(owner.guid).bytes[:4]):
        raise InvalidSyncState("another version, kind or mailbox")
    if int.from_bytes(folder_key, "big") != folder.key or change_number > owner.change_number:
        raise InvalidSyncState("another folder, or a counter this store never reached")
    return change_number


@dataclass(frozen=True)
class Change:
    kind: str                                   # CREATE, UPDATE, DELETE or READ_FLAG
    number: int                                 # the change number it is ordered by
    subject: Union[Item, Folder, Tombstone, FolderTombstone]


@dataclass(frozen=True)
class SyncPage:
    changes: List[Change]
    state: int                 # the change number to resume after
    includes_last: bool


def item_changes(folder: Folder, since: int, limit: int, ignore: FrozenSet[int] = frozenset()) -> SyncPage:
    """The first `limit` changes of `folder`'s items after change `since` (items keyed in `ignore` left out)."""
    pending: List[Change] = []
    for item in folder.items.values():
        if item.change_number <= since or item.key in ignore:
            continue
        if item.created > since:
            pending.append(Change(CREATE, item.change_number, item))
        elif item.content_change > since:
            pending.append(Change(UPDATE, item.change_number, item))
        else:
            pending.append(Change(READ_FLAG, item.change_number, item))
    for tombstone in reversed(folder.tombstones):    # newest first: stop at the first one already synced
        if tombstone.removed <= since:
            break
        if tombstone.created <= since and tombstone.key not in ignore:
            pending.append(Change(DELETE, tombstone.removed, tombstone))
    return _page(pending, since, limit, folder.owner.change_number)


def folder_changes(root: Folder, since: int, limit: int) -> SyncPage:
    """The first `limit` changes of the folders below `root` after change `since`: new folders, folders whose
    properties or counts changed, and folders made up to `since` and deleted after it."""
    pending = [Change(CREATE if folder.created > since else UPDATE, folder.change_number, folder)
               for folder in root.descendants() if folder.change_number > since]
    for tombstone in reversed(root.owner.folder_tombstones):
        if tombstone.removed <= since:
            break
        if tombstone.created <= since and root.key in tombstone.ancestors:
            pending.append(Change(DELETE, tombstone.removed, tombstone))
    return _page(pending, since, limit, root.owner.change_number)


def _page(pending: List[Change], since: int, limit: int, newest: int) -> SyncPage:
    if len(pending) <= limit:
        # Everything up to the mailbox's counter is known now, changes or not: resume from there.
        return SyncPage(sorted(pending, key=lambda c: c.number), max(newest, since), True)
    page = heapq.nsmallest(limit, pending, key=lambda c: c.number)
    return SyncPage(page, page[-1].number, False)


def item_keys(owner: MailboxContent, ews_ids: List[str]) -> FrozenSet[int]:
    """Item counters of EWS ids (a sync's Ignore list); ids of other mailboxes or malformed ones are skipped."""
    keys = set()
    for ews_id in ews_ids:
        decoded = ids.decode(ews_id)
        if decoded is not None and decoded[0] == owner.guid and decoded[2] is not None:
            keys.add(decoded[2])
    return frozenset(keys)
