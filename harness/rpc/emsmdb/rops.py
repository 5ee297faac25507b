"""The ROPs after RopLogon over the shared mailbox store (MS-OXCROPS, MS-OXCFOLD, MS-OXCTABL): RopRelease,
RopOpenFolder, RopGetHierarchyTable, RopGetContentsTable, RopSetColumns, RopQueryRows.

Server objects live in the session's object map, keyed by the handle the server hands out: sequential per session
from 1 (RopLogon's store object is 1, the next object 2...), never reused after RopRelease - the shape Exchange's
handles have within one session. A handle table index naming no object fails the ROP with ecNullObject
(MS-OXCROPS 3.2.5.1). FIDs and MIDs are replica id 1 + the store's 6-byte folder/item counter, so a ROP client and
EWS (whose ids carry the same counters) name the same folders and messages.

Bytes in, bytes out: each ``run_*`` reads one request at ``pos`` and returns (response bytes, next position).
"""
from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from harness.mailbox import ids
from harness.mailbox.store import Folder, Item, MailboxContent, MailboxStore, Rule
from harness.rpc.emsmdb.codec import REPL_ID, SPECIAL_FOLDERS
from harness.rpc.emsmdb.idl import EC_NONE, EC_NOT_FOUND

ROP_RELEASE, ROP_OPEN_FOLDER, ROP_GET_HIERARCHY_TABLE, ROP_GET_CONTENTS_TABLE = 0x01, 0x02, 0x04, 0x05
ROP_SET_COLUMNS, ROP_QUERY_ROWS = 0x12, 0x15
EC_NULL_OBJECT = 0x000004B9          # the handle table index names no server object
EC_INVALID_PARAMETER = 0x80070057
BOOKMARK_BEGINNING, BOOKMARK_CURRENT, BOOKMARK_END = 0, 1, 2
QUERY_NO_ADVANCE = 0x01
TABLE_DEPTH = 0x04                   # RopGetHierarchyTable: every descendant, not only the children

# Special folders the store models (distinguished id or display name under the root); the rest get FIDs above
# every store counter, and opening them answers ecNotFound.
_SPECIAL_IN_STORE = {"Root": "root", "DeferredAction": "Deferred Action", "IpmSubtree": "msgfolderroot",
                     "Inbox": "inbox", "Outbox": "outbox", "SentItems": "sentitems", "DeletedItems": "deleteditems",
                     "CommonViews": "Common Views", "Schedule": "Schedule", "Search": "searchfolders",
                     "Views": "Views"}
UNMODELLED_FOLDER_BASE = 0x7F0000

# ---- property tags (MS-OXPROPS) and types (MS-OXCDATA 2.11.1) -------------------------------------------------
PT_LONG, PT_ERROR, PT_BOOLEAN, PT_I8, PT_STRING8, PT_UNICODE, PT_SYSTIME, PT_BINARY = (
    0x0003, 0x000A, 0x000B, 0x0014, 0x001E, 0x001F, 0x0040, 0x0102)
PT_RESTRICTION, PT_RULE_ACTION = 0x00FD, 0x00FE
TAG_RULE_ID = 0x66740014
TAG_SUBJECT, TAG_MESSAGE_CLASS, TAG_DISPLAY_NAME, TAG_ENTRY_ID = 0x0037001F, 0x001A001F, 0x3001001F, 0x0FFF0102
TAG_FOLDER_ID, TAG_PARENT_FOLDER_ID, TAG_MID = 0x67480014, 0x67490014, 0x674A0014
TAG_CONTENT_COUNT, TAG_CONTENT_UNREAD, TAG_SUBFOLDERS, TAG_CONTAINER_CLASS = (0x36020003, 0x36030003, 0x360A000B,
                                                                              0x3613001F)
TAG_MESSAGE_FLAGS, TAG_DELIVERY_TIME, TAG_SUBMIT_TIME, TAG_SENDER_NAME = 0x0E070003, 0x0E060040, 0x00390040, 0x0C1A001F
TAG_MESSAGE_SIZE, TAG_HAS_ATTACHMENTS, TAG_IMPORTANCE = 0x0E080003, 0x0E1B000B, 0x00170003
MSGFLAG_READ, MSGFLAG_UNSENT, MSGFLAG_HASATTACH = 0x01, 0x08, 0x10
_FILETIME_EPOCH = dt.datetime(1601, 1, 1, tzinfo=dt.timezone.utc)


def fid(counter: int) -> bytes:
    """A FID or MID: 2-byte replica id (little-endian) + 6-byte global counter (big-endian)."""
    return struct.pack("<H", REPL_ID) + counter.to_bytes(6, "big")


def special_folder_counters(content: Optional[MailboxContent]) -> List[int]:
    """The 13 RopLogon folder counters: the store's folders where it has them (no store: 1..13)."""
    if content is None:
        return list(range(1, len(SPECIAL_FOLDERS) + 1))
    root = content.distinguished["root"]
    by_name = {child.name: child for child in root.children}
    counters = []
    for index, name in enumerate(SPECIAL_FOLDERS):
        key = _SPECIAL_IN_STORE.get(name)
        folder = content.distinguished.get(key) or by_name.get(key) if key else None
        counters.append(folder.key if folder is not None else UNMODELLED_FOLDER_BASE + index)
    return counters


# ---- server objects -------------------------------------------------------------------------------------------
@dataclass
class StoreObject:
    content: Optional[MailboxContent]     # None: the session has no store behind it
    store: Optional[MailboxStore] = None  # the org's store (message submission delivers through it)


@dataclass
class FolderObject:
    folder: Folder


@dataclass
class TableObject:
    folder: Folder
    kind: str                             # "contents", "hierarchy" or "rules"
    depth: bool = False
    columns: Optional[List[int]] = None   # None until RopSetColumns
    position: int = 0
    # RopRestrict's predicate and RopSortTable's (tag, order) list, and the view they make of the rows (tables.py):
    # None shows them all in the store's order
    keep: Optional[Callable[[object], bool]] = None
    sort: List[Tuple[int, int]] = field(default_factory=list)
    arrange: Optional[Callable[[List], List]] = None

    def rows(self) -> List[Union[Folder, Item, Rule]]:
        rows: List[Union[Folder, Item, Rule]]
        if self.kind == "contents":
            rows = list(self.folder.items.values())    # the store's order: delivery order
        elif self.kind == "rules":
            rows = list(self.folder.rules)
        else:
            rows = list(self.folder.descendants()) if self.depth else list(self.folder.children)
        return self.arrange(rows) if self.arrange is not None else rows


ServerObject = object      # StoreObject, FolderObject, TableObject, or messages.py's MessageObject, StreamObject


@dataclass
class ObjectMap:
    """One session's server objects by handle; handles are sequential from 1 and never reused."""
    objects: Dict[int, ServerObject] = field(default_factory=dict)
    next_handle: int = 1
    watching: List[int] = field(default_factory=list)   # handles of notification registrations (notify.py)

    def add(self, obj: ServerObject) -> int:
        handle = self.next_handle
        self.next_handle += 1
        self.objects[handle] = obj
        return handle

    def at(self, handles: List[int], index: int) -> Optional[ServerObject]:
        return self.objects.get(handles[index]) if index < len(handles) else None

    def content(self) -> Optional[MailboxContent]:
        return next((o.content for o in self.objects.values() if isinstance(o, StoreObject)), None)


# ---- property values ------------------------------------------------------------------------------------------
def _filetime(moment: dt.datetime) -> int:
    delta = moment - _FILETIME_EPOCH
    return (delta.days * 86400 + delta.seconds) * 10_000_000 + delta.microseconds * 10


# Getters by property id, made once: a restriction or sort reads a value of every row of a folder.
_ITEM_VALUES: Dict[int, Callable[[Item], object]] = {
    TAG_SUBJECT >> 16: lambda item: item.subject, TAG_MESSAGE_CLASS >> 16: lambda item: item.item_class,
    TAG_ENTRY_ID >> 16: lambda item: ids.item_entry_id(item.folder.owner.guid, item.folder.key, item.key),
    TAG_FOLDER_ID >> 16: lambda item: fid(item.folder.key), TAG_MID >> 16: lambda item: fid(item.key),
    TAG_MESSAGE_FLAGS >> 16: lambda item: ((MSGFLAG_READ if item.is_read else 0)
                                           | (MSGFLAG_UNSENT if item.is_draft else 0)
                                           | (MSGFLAG_HASATTACH if item.has_attachments else 0)),
    TAG_DELIVERY_TIME >> 16: lambda item: item.received, TAG_SUBMIT_TIME >> 16: lambda item: item.sent,
    TAG_SENDER_NAME >> 16: lambda item: item.sender[0], TAG_MESSAGE_SIZE >> 16: lambda item: item.size,
    TAG_HAS_ATTACHMENTS >> 16: lambda item: item.has_attachments, TAG_IMPORTANCE >> 16: lambda item: 1,
}


def _item_value(item: Item, prop_id: int):
    getter = _ITEM_VALUES.get(prop_id)
    return getter(item) if getter is not None else None


FOLDER_COMPUTED = (TAG_ENTRY_ID >> 16, TAG_FOLDER_ID >> 16, TAG_PARENT_FOLDER_ID >> 16, TAG_CONTENT_COUNT >> 16,
                   TAG_CONTENT_UNREAD >> 16, TAG_SUBFOLDERS >> 16)     # what RopSetProperties cannot change


_FOLDER_VALUES: Dict[int, Callable[[Folder], object]] = {
    TAG_DISPLAY_NAME >> 16: lambda folder: folder.name, TAG_CONTAINER_CLASS >> 16: lambda folder: folder.folder_class,
    TAG_ENTRY_ID >> 16: lambda folder: ids.folder_entry_id(folder.owner.guid, folder.key),
    TAG_FOLDER_ID >> 16: lambda folder: fid(folder.key),
    TAG_PARENT_FOLDER_ID >> 16: lambda folder: fid(folder.parent.key) if folder.parent else None,
    TAG_CONTENT_COUNT >> 16: lambda folder: len(folder.items), TAG_CONTENT_UNREAD >> 16: lambda folder: folder.unread,
    TAG_SUBFOLDERS >> 16: lambda folder: bool(folder.children),
}


def _folder_value(folder: Folder, prop_id: int):
    getter = _FOLDER_VALUES.get(prop_id)
    if getter is not None:
        return getter(folder)
    kept = folder.props.get(prop_id)          # (property type, value) a client set
    return kept[1] if kept is not None else None


def encode_value(prop_type: int, value) -> Optional[bytes]:
    """A PropertyValue without its tag (the columns give the types), or None when the type does not fit."""
    if prop_type == PT_UNICODE and isinstance(value, str):
        return value.encode("utf-16-le") + b"\x00\x00"
    if prop_type == PT_STRING8 and isinstance(value, str):
        return value.encode("latin-1", "replace") + b"\x00"
    if prop_type == PT_BOOLEAN and isinstance(value, bool):
        return bytes([value])
    if prop_type == PT_LONG and isinstance(value, int):
        return struct.pack("<L", value & 0xFFFFFFFF)
    if prop_type == PT_I8 and isinstance(value, bytes) and len(value) == 8:
        return value
    if prop_type == PT_SYSTIME and isinstance(value, dt.datetime):
        return struct.pack("<Q", _filetime(value))
    if prop_type == PT_BINARY and isinstance(value, bytes):
        return struct.pack("<H", len(value)) + value
    if prop_type in (PT_RESTRICTION, PT_RULE_ACTION) and isinstance(value, bytes):
        return value                       # kept as the ROP bytes a client sent
    return None


def _rule_value(rule: Rule, prop_id: int):
    return fid(rule.rule_id) if prop_id == TAG_RULE_ID >> 16 else rule.props.get(prop_id)


def row_lookup(obj: Union[Folder, Item, Rule]) -> Callable[[Any, int], Any]:
    """The value getter (row, property id) for a table row."""
    return _item_value if isinstance(obj, Item) else _rule_value if isinstance(obj, Rule) else _folder_value


def property_row(obj: Union[Folder, Item, Rule], columns: List[int]) -> bytes:
    """A StandardPropertyRow when every column has a value, else a FlaggedPropertyRow with ecNotFound errors
    (MS-OXCDATA 2.8.1)."""
    lookup = row_lookup(obj)
    encoded = []
    for tag in columns:
        value = lookup(obj, tag >> 16)  # type: ignore[arg-type]
        encoded.append(None if value is None else encode_value(tag & 0xFFFF, value))
    if all(part is not None for part in encoded):
        return b"\x00" + b"".join(encoded)  # type: ignore[arg-type]
    return b"\x01" + b"".join(b"\x00" + part if part is not None else b"\x0a" + struct.pack("<L", EC_NOT_FOUND)
                              for part in encoded)


# ---- the ROPs -------------------------------------------------------------------------------------------------
def _need(rops: bytes, pos: int, size: int, name: str) -> None:
    if pos + size > len(rops):
        raise ValueError(f"truncated {name}")


def _fail(rop_id: int, index: int, code: int) -> bytes:
    return struct.pack("<BBL", rop_id, index, code)


def run_release(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 3, "RopRelease")
    index = rops[pos + 2]
    if index < len(handles):
        objects.objects.pop(handles[index], None)
    return b"", pos + 3                   # RopRelease has no response


def run_open_folder(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 13, "RopOpenFolder")
    _, _, in_index, out_index, folder_id, _open_mode = struct.unpack_from("<BBBB8sB", rops, pos)
    end = pos + 13
    if out_index >= len(handles):
        raise ValueError("RopOpenFolder OutputHandleIndex outside the handle table")
    source = objects.at(handles, in_index)
    if source is None:
        return _fail(ROP_OPEN_FOLDER, out_index, EC_NULL_OBJECT), end
    content = objects.content()
    replica, counter = struct.unpack_from("<H", folder_id)[0], int.from_bytes(folder_id[2:], "big")
    folder = content.folders.get(counter) if content is not None and replica == REPL_ID else None
    if folder is None:
        return _fail(ROP_OPEN_FOLDER, out_index, EC_NOT_FOUND), end
    handles[out_index] = objects.add(FolderObject(folder))
    return struct.pack("<BBLBB", ROP_OPEN_FOLDER, out_index, EC_NONE, bool(folder.rules), 0), end  # HasRules, IsGhosted


def run_get_table(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 5, "RopGetContentsTable")
    rop_id, _, in_index, out_index, flags = struct.unpack_from("<BBBBB", rops, pos)
    end = pos + 5
    if out_index >= len(handles):
        raise ValueError("table OutputHandleIndex outside the handle table")
    source = objects.at(handles, in_index)
    if not isinstance(source, FolderObject):
        return _fail(rop_id, out_index, EC_NULL_OBJECT), end
    kind = "contents" if rop_id == ROP_GET_CONTENTS_TABLE else "hierarchy"
    table = TableObject(source.folder, kind, depth=kind == "hierarchy" and bool(flags & TABLE_DEPTH))
    handles[out_index] = objects.add(table)
    return struct.pack("<BBLL", rop_id, out_index, EC_NONE, len(table.rows())), end


def run_set_columns(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 6, "RopSetColumns")
    _, _, in_index, _flags, count = struct.unpack_from("<BBBBH", rops, pos)
    _need(rops, pos + 6, 4 * count, "RopSetColumns PropertyTags")
    tags = list(struct.unpack_from(f"<{count}L", rops, pos + 6))
    end = pos + 6 + 4 * count
    table = objects.at(handles, in_index)
    if not isinstance(table, TableObject):
        return _fail(ROP_SET_COLUMNS, in_index, EC_NULL_OBJECT), end
    if not tags:
        return _fail(ROP_SET_COLUMNS, in_index, EC_INVALID_PARAMETER), end
    table.columns = tags
    return struct.pack("<BBLB", ROP_SET_COLUMNS, in_index, EC_NONE, 0), end       # TableStatus: complete


def run_query_rows(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 7, "RopQueryRows")
    _, _, in_index, flags, forward, count = struct.unpack_from("<BBBBBH", rops, pos)
    end = pos + 7
    table = objects.at(handles, in_index)
    if not isinstance(table, TableObject) or table.columns is None:
        return _fail(ROP_QUERY_ROWS, in_index, EC_NULL_OBJECT), end
    rows = table.rows()
    start = min(table.position, len(rows))
    if forward:
        chosen, after = rows[start:start + count], min(start + count, len(rows))
    else:
        first = max(0, start - count)
        chosen, after = rows[first:start][::-1], first
    if not flags & QUERY_NO_ADVANCE:
        table.position = after
    position = table.position
    origin = (BOOKMARK_END if forward and position >= len(rows) else
              BOOKMARK_BEGINNING if not forward and position == 0 else BOOKMARK_CURRENT)
    data = b"".join(property_row(row, table.columns) for row in chosen)
    return struct.pack("<BBLBH", ROP_QUERY_ROWS, in_index, EC_NONE, origin, len(chosen)) + data, end


HANDLERS = {ROP_RELEASE: run_release, ROP_OPEN_FOLDER: run_open_folder, ROP_GET_HIERARCHY_TABLE: run_get_table,
            ROP_GET_CONTENTS_TABLE: run_get_table, ROP_SET_COLUMNS: run_set_columns, ROP_QUERY_ROWS: run_query_rows}
