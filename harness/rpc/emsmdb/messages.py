"""The message ROPs over the shared mailbox store (MS-OXCROPS 2.2.6-2.2.9, MS-OXCMSG, MS-OXCPRPT, MS-OXOMSG):
RopOpenMessage, RopCreateMessage, RopGetPropertiesSpecific, RopGetPropertiesAll, RopSetProperties,
RopModifyRecipients, RopSaveChangesMessage, RopSubmitMessage, RopDeleteMessages, RopOpenStream, RopGetStreamSize,
RopReadStream, RopGetReceiveFolder, RopGetRulesTable.

A Message object holds its pending changes (properties, recipients) until RopSaveChangesMessage writes them to the
store (a new message: a draft in its folder, as EWS's SaveOnly). RopSubmitMessage delivers through the store as EWS's
send does: in-org recipients get it in their Inbox, the sender a read copy in Sent Items, and a saved draft leaves
its folder. A Stream object is a read-only snapshot of one property (PT_UNICODE with its terminating NUL, as
Exchange's streams carry it).

Bytes in, bytes out, the ``run_*`` shape of rops.py.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from harness.mailbox.store import Folder, Item, MailboxContent, MailboxStore
from harness.rpc.emsmdb.codec import REPL_ID
from harness.rpc.emsmdb.idl import EC_NONE, EC_NOT_FOUND
from harness.rpc.emsmdb.rops import (
    EC_NULL_OBJECT,
    MSGFLAG_READ,
    MSGFLAG_UNSENT,
    PT_BINARY,
    PT_BOOLEAN,
    PT_I8,
    PT_LONG,
    PT_STRING8,
    PT_SYSTIME,
    PT_UNICODE,
    FolderObject,
    ObjectMap,
    StoreObject,
    TableObject,
    _fail,
    _item_value,
    _need,
    encode_value,
    fid,
)

ROP_OPEN_MESSAGE, ROP_CREATE_MESSAGE, ROP_GET_PROPS_SPECIFIC, ROP_GET_PROPS_ALL = 0x03, 0x06, 0x07, 0x08
ROP_SET_PROPS, ROP_SAVE_CHANGES, ROP_MODIFY_RECIPIENTS, ROP_DELETE_MESSAGES = 0x0A, 0x0C, 0x0E, 0x1E
ROP_GET_RECEIVE_FOLDER, ROP_OPEN_STREAM, ROP_READ_STREAM, ROP_SUBMIT_MESSAGE = 0x27, 0x2B, 0x2C, 0x32
ROP_GET_RULES_TABLE, ROP_GET_STREAM_SIZE = 0x3F, 0x5E
PT_SHORT, PT_ERROR = 0x0002, 0x000A
TAG_BODY, TAG_NORMALIZED_SUBJECT, TAG_SUBJECT_PREFIX = 0x1000001F, 0x0E1D001F, 0x003D001F
TAG_SUBJECT, TAG_MESSAGE_CLASS, TAG_DISPLAY_TO = 0x0037001F, 0x001A001F, 0x0E04001F
EC_NOT_ENOUGH_MEMORY = 0x8007000E    # a value larger than PropertySizeLimit: read it with a stream instead
EC_ACCESS_DENIED = 0x80070005        # a write to a read-only stream / an unsaved message
READ_STREAM_MAX = 0x1000             # ByteCount 0xBABE: MaximumByteCount follows; the server still caps a read
BABE = 0xBABE
RECIPIENT_TO, RECIPIENT_CC = 1, 2
# RecipientFlags (MS-OXCDATA 2.8.3.1): the low 3 bits are the address type
R_TYPE_MASK, R_X500DN, R_PERSONAL_DL1, R_PERSONAL_DL2 = 0x0007, 0x1, 0x6, 0x7
R_OUT_OF_STANDARD, R_EMAIL, R_DISPLAY, R_TRANSMITTABLE, R_SIMPLE, R_UNICODE = (0x8000, 0x0008, 0x0010, 0x0020,
                                                                               0x0400, 0x0200)
# The receive folder table of a new mailbox: message class prefix -> distinguished folder
_RECEIVE_FOLDERS = (("", "inbox"), ("IPM", "inbox"), ("REPORT.IPM", "inbox"), ("IPC", "root"))
# What RopGetPropertiesAll lists for a message
_ALL_MESSAGE_TAGS = (TAG_SUBJECT, TAG_NORMALIZED_SUBJECT, TAG_MESSAGE_CLASS, TAG_BODY, 0x0E070003, 0x0E060040,
                     0x00390040, 0x0C1A001F, 0x0E080003, 0x0E1B000B, 0x00170003, 0x674A0014, 0x67480014,
                     0x0FFF0102)


# ---- server objects -------------------------------------------------------------------------------------------
@dataclass
class MessageObject:
    folder: Folder
    item: Optional[Item]                                  # None until a new message is saved
    props: Dict[int, object] = field(default_factory=dict)     # pending changes by property id
    recipients: Optional[List[Tuple[int, str, str]]] = None    # (RecipientType, name, SMTP) once modified

    def value(self, prop_id: int):
        if prop_id in self.props:
            return self.props[prop_id]
        if prop_id == TAG_NORMALIZED_SUBJECT >> 16:
            return self.value(TAG_SUBJECT >> 16)
        if self.item is not None:
            return self.item.body if prop_id == TAG_BODY >> 16 else _item_value(self.item, prop_id)
        new = {TAG_MESSAGE_CLASS >> 16: "IPM.Note", 0x0E07: MSGFLAG_UNSENT | MSGFLAG_READ,
               0x6748: fid(self.folder.key)}
        return new.get(prop_id)

    def to_and_cc(self) -> Tuple[Tuple[Tuple[str, str], ...], Tuple[Tuple[str, str], ...]]:
        if self.recipients is None:
            return (self.item.to, self.item.cc) if self.item is not None else ((), ())
        pick = lambda kind: tuple((name, smtp) for rtype, name, smtp in self.recipients or () if rtype == kind)  # noqa
        return pick(RECIPIENT_TO), pick(RECIPIENT_CC)


@dataclass
class StreamObject:
    data: bytes
    position: int = 0


def _store(objects: ObjectMap) -> Tuple[Optional[MailboxStore], Optional[MailboxContent]]:
    logon = next((o for o in objects.objects.values() if isinstance(o, StoreObject)), None)
    return (logon.store, logon.content) if logon is not None else (None, None)


def _counter(raw: bytes) -> Optional[int]:
    return int.from_bytes(raw[2:], "big") if struct.unpack_from("<H", raw)[0] == REPL_ID else None


def _out_index(handles: List[int], index: int, name: str) -> None:
    if index >= len(handles):
        raise ValueError(f"{name} OutputHandleIndex outside the handle table")


# ---- property values in and out (MS-OXCDATA 2.11) -------------------------------------------------------------
def read_value(prop_type: int, data: bytes, pos: int) -> Tuple[object, int]:
    """One PropertyValue of ``prop_type`` at ``pos``: (value, next position). ValueError on a type not modelled."""
    if prop_type == PT_UNICODE:
        end = pos
        while data[end:end + 2] != b"\x00\x00":
            if end + 2 > len(data):
                raise ValueError("unterminated PtypString")
            end += 2
        return data[pos:end].decode("utf-16-le", "replace"), end + 2
    if prop_type == PT_STRING8:
        end = data.find(b"\x00", pos)
        if end < 0:
            raise ValueError("unterminated PtypString8")
        return data[pos:end].decode("latin-1"), end + 1
    sizes = {PT_SHORT: "<h", PT_LONG: "<L", PT_ERROR: "<L", PT_BOOLEAN: "<B", PT_I8: "8s", PT_SYSTIME: "<Q"}
    if prop_type in sizes:
        width = struct.calcsize(sizes[prop_type])
        _need(data, pos, width, "PropertyValue")
        return struct.unpack_from(sizes[prop_type], data, pos)[0], pos + width
    if prop_type == PT_BINARY:
        _need(data, pos, 2, "PtypBinary")
        size = struct.unpack_from("<H", data, pos)[0]
        _need(data, pos + 2, size, "PtypBinary")
        return data[pos + 2:pos + 2 + size], pos + 2 + size
    raise ValueError(f"property type 0x{prop_type:04x} not modelled")


def _fits(tag: int, value) -> Optional[bytes]:
    if tag & 0xFFFF == PT_BOOLEAN and isinstance(value, int):
        value = bool(value)
    return encode_value(tag & 0xFFFF, value)


def _property_row(message: MessageObject, tags: List[int], size_limit: int) -> bytes:
    encoded: List[Tuple[int, Optional[bytes]]] = []
    for tag in tags:
        value = message.value(tag >> 16)
        raw = None if value is None else _fits(tag, value)
        if raw is not None and size_limit and len(raw) > size_limit:
            encoded.append((EC_NOT_ENOUGH_MEMORY, None))
        else:
            encoded.append((EC_NOT_FOUND, raw))
    if all(raw is not None for _, raw in encoded):
        return b"\x00" + b"".join(raw for _, raw in encoded if raw is not None)
    return b"\x01" + b"".join(b"\x00" + raw if raw is not None else b"\x0a" + struct.pack("<L", code)
                              for code, raw in encoded)


# ---- messages ---------------------------------------------------------------------------------------------------
def run_open_message(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 23, "RopOpenMessage")
    _, _, in_index, out_index, _cpid, folder_id, _mode, message_id = struct.unpack_from("<BBBBH8sB8s", rops, pos)
    end = pos + 23
    _out_index(handles, out_index, "RopOpenMessage")
    if objects.at(handles, in_index) is None:
        return _fail(ROP_OPEN_MESSAGE, out_index, EC_NULL_OBJECT), end
    _, content = _store(objects)
    folder = content.folders.get(_counter(folder_id) or -1) if content is not None else None
    item = folder.items.get(_counter(message_id) or -1) if folder is not None else None
    if folder is None or item is None:
        return _fail(ROP_OPEN_MESSAGE, out_index, EC_NOT_FOUND), end
    handles[out_index] = objects.add(MessageObject(folder, item))
    subject = item.subject.encode("utf-16-le") + b"\x00\x00"
    # HasNamedProperties, SubjectPrefix (empty), NormalizedSubject (UTF-16), RecipientCount, ColumnCount, RowCount
    return (struct.pack("<BBLBB", ROP_OPEN_MESSAGE, out_index, EC_NONE, 0, 0x01) + b"\x04" + subject
            + struct.pack("<HHB", 0, 0, 0)), end


def run_create_message(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 15, "RopCreateMessage")
    _, _, in_index, out_index, _cpid, folder_id, _associated = struct.unpack_from("<BBBBH8sB", rops, pos)
    end = pos + 15
    _out_index(handles, out_index, "RopCreateMessage")
    if objects.at(handles, in_index) is None:
        return _fail(ROP_CREATE_MESSAGE, out_index, EC_NULL_OBJECT), end
    _, content = _store(objects)
    folder = content.folders.get(_counter(folder_id) or -1) if content is not None else None
    if folder is None:
        return _fail(ROP_CREATE_MESSAGE, out_index, EC_NOT_FOUND), end
    handles[out_index] = objects.add(MessageObject(folder, None))
    return struct.pack("<BBLB", ROP_CREATE_MESSAGE, out_index, EC_NONE, 0), end    # HasMessageId: at save


def run_get_props_specific(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 9, "RopGetPropertiesSpecific")
    _, _, in_index, size_limit, _want_unicode, count = struct.unpack_from("<BBBHHH", rops, pos)
    _need(rops, pos + 9, 4 * count, "RopGetPropertiesSpecific PropertyTags")
    tags = list(struct.unpack_from(f"<{count}L", rops, pos + 9))
    end = pos + 9 + 4 * count
    message = objects.at(handles, in_index)
    if not isinstance(message, MessageObject):
        return _fail(ROP_GET_PROPS_SPECIFIC, in_index, EC_NULL_OBJECT), end
    return struct.pack("<BBL", ROP_GET_PROPS_SPECIFIC, in_index, EC_NONE) + _property_row(message, tags,
                                                                                           size_limit), end


def run_get_props_all(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 7, "RopGetPropertiesAll")
    _, _, in_index, size_limit, _want_unicode = struct.unpack_from("<BBBHH", rops, pos)
    end = pos + 7
    message = objects.at(handles, in_index)
    if not isinstance(message, MessageObject):
        return _fail(ROP_GET_PROPS_ALL, in_index, EC_NULL_OBJECT), end
    values = []
    for tag in _ALL_MESSAGE_TAGS:
        value = message.value(tag >> 16)
        raw = None if value is None else _fits(tag, value)
        if raw is None:
            continue
        if size_limit and len(raw) > size_limit:   # a TaggedPropertyValue of type PtypErrorCode in its place
            values.append(struct.pack("<LL", (tag & 0xFFFF0000) | PT_ERROR, EC_NOT_ENOUGH_MEMORY))
        else:
            values.append(struct.pack("<L", tag) + raw)
    return struct.pack("<BBLH", ROP_GET_PROPS_ALL, in_index, EC_NONE, len(values)) + b"".join(values), end


def run_set_props(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 7, "RopSetProperties")
    _, _, in_index, size, count = struct.unpack_from("<BBBHH", rops, pos)
    end = pos + 5 + size
    _need(rops, pos + 5, size, "RopSetProperties PropertyValues")
    values, at = [], pos + 7
    for _ in range(count):
        _need(rops, at, 4, "TaggedPropertyValue")
        tag = struct.unpack_from("<L", rops, at)[0]
        value, at = read_value(tag & 0xFFFF, rops[:end], at + 4)
        values.append((tag, value))
    message = objects.at(handles, in_index)
    if not isinstance(message, MessageObject):
        return _fail(ROP_SET_PROPS, in_index, EC_NULL_OBJECT), end
    for tag, value in values:
        message.props[tag >> 16] = value
    return struct.pack("<BBLH", ROP_SET_PROPS, in_index, EC_NONE, 0), end    # PropertyProblemCount 0


def _recipient_row(data: bytes, pos: int, columns: List[int]) -> Tuple[str, str]:
    """(display name, email address) of a RecipientRow (MS-OXCDATA 2.8.3.2); its other fields are skipped."""
    flags = struct.unpack_from("<H", data, pos)[0]
    pos += 2
    kind, wide = flags & R_TYPE_MASK, bool(flags & R_UNICODE)

    def text(at: int) -> Tuple[str, int]:
        value, after = read_value(PT_UNICODE if wide else PT_STRING8, data, at)
        return str(value), after
    if kind == R_X500DN:
        pos += 2                                         # AddressPrefixUsed, DisplayType
        _, pos = read_value(PT_STRING8, data, pos)
    if kind in (R_PERSONAL_DL1, R_PERSONAL_DL2):
        _, pos = read_value(PT_BINARY, data, pos)        # EntryId, SearchKey
        _, pos = read_value(PT_BINARY, data, pos)
    if kind == 0 and flags & R_OUT_OF_STANDARD:
        _, pos = read_value(PT_STRING8, data, pos)       # AddressType
    address = name = ""
    if flags & R_EMAIL:
        address, pos = text(pos)
    if flags & R_DISPLAY:
        name, pos = text(pos)
    return name, address


def run_modify_recipients(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 5, "RopModifyRecipients")
    _, _, in_index, column_count = struct.unpack_from("<BBBH", rops, pos)
    _need(rops, pos + 5, 4 * column_count + 2, "RopModifyRecipients RecipientColumns")
    columns = list(struct.unpack_from(f"<{column_count}L", rops, pos + 5))
    at = pos + 5 + 4 * column_count
    row_count = struct.unpack_from("<H", rops, at)[0]
    at += 2
    rows = []
    for _ in range(row_count):
        _need(rops, at, 7, "ModifyRecipientRow")
        row_id, rtype, size = struct.unpack_from("<LBH", rops, at)
        _need(rops, at + 7, size, "RecipientRow")
        if size:
            name, address = _recipient_row(rops[:at + 7 + size], at + 7, columns)
            rows.append((row_id, rtype, name, address))
        at += 7 + size
    message = objects.at(handles, in_index)
    if not isinstance(message, MessageObject):
        return _fail(ROP_MODIFY_RECIPIENTS, in_index, EC_NULL_OBJECT), at
    message.recipients = [(rtype, name, address) for _, rtype, name, address in sorted(rows)]
    return struct.pack("<BBL", ROP_MODIFY_RECIPIENTS, in_index, EC_NONE), at


def run_save_changes(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 5, "RopSaveChangesMessage")
    _, _, response_index, in_index, _flags = struct.unpack_from("<BBBBB", rops, pos)
    end = pos + 5
    message = objects.at(handles, in_index)
    store, content = _store(objects)
    if not isinstance(message, MessageObject) or store is None or content is None:
        return _fail(ROP_SAVE_CHANGES, response_index, EC_NULL_OBJECT), end
    to, cc = message.to_and_cc()
    subject, body = str(message.value(TAG_SUBJECT >> 16) or ""), str(message.value(TAG_BODY >> 16) or "")
    if message.item is None:
        message.item = store.save(content, message.folder, subject=subject, body=body, to=to, cc=cc)
        message.item.item_class = str(message.value(TAG_MESSAGE_CLASS >> 16) or "IPM.Note")
    else:
        message.item.subject, message.item.body, message.item.to, message.item.cc = subject, body, to, cc
        content.touch(message.item)
    message.props.clear()
    message.recipients = None
    return struct.pack("<BBLB8s", ROP_SAVE_CHANGES, response_index, EC_NONE, in_index,
                       fid(message.item.key)), end


def run_submit(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 4, "RopSubmitMessage")
    in_index = rops[pos + 2]
    end = pos + 4
    message = objects.at(handles, in_index)
    store, content = _store(objects)
    if not isinstance(message, MessageObject) or store is None or content is None:
        return _fail(ROP_SUBMIT_MESSAGE, in_index, EC_NULL_OBJECT), end
    to, cc = message.to_and_cc()
    subject, body = str(message.value(TAG_SUBJECT >> 16) or ""), str(message.value(TAG_BODY >> 16) or "")
    if message.item is not None and message.item.key in message.item.folder.items:
        content.remove_item(message.item)                # the draft leaves Drafts/Outbox once sent
    store.send(content, subject=subject, body=body, to=to, cc=cc, save_copy_in=content.distinguished["sentitems"])
    return struct.pack("<BBL", ROP_SUBMIT_MESSAGE, in_index, EC_NONE), end


def run_delete_messages(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 7, "RopDeleteMessages")
    _, _, in_index, _asynchronous, _notify, count = struct.unpack_from("<BBBBBH", rops, pos)
    _need(rops, pos + 7, 8 * count, "RopDeleteMessages MessageIds")
    mids = [rops[pos + 7 + 8 * i:pos + 15 + 8 * i] for i in range(count)]
    end = pos + 7 + 8 * count
    folder = objects.at(handles, in_index)
    store, _ = _store(objects)
    if not isinstance(folder, FolderObject) or store is None:
        return _fail(ROP_DELETE_MESSAGES, in_index, EC_NULL_OBJECT), end
    missing = 0
    for mid in mids:
        item = folder.folder.items.get(_counter(mid) or -1)
        if item is None:
            missing += 1
        else:
            store.delete(item, hard=True)
    return struct.pack("<BBLB", ROP_DELETE_MESSAGES, in_index, EC_NONE, 1 if missing else 0), end


# ---- streams ------------------------------------------------------------------------------------------------------
def run_open_stream(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 9, "RopOpenStream")
    _, _, in_index, out_index, tag, _mode = struct.unpack_from("<BBBBLB", rops, pos)
    end = pos + 9
    _out_index(handles, out_index, "RopOpenStream")
    message = objects.at(handles, in_index)
    if not isinstance(message, MessageObject):
        return _fail(ROP_OPEN_STREAM, out_index, EC_NULL_OBJECT), end
    value = message.value(tag >> 16)
    prop_type = tag & 0xFFFF
    if value is None or prop_type not in (PT_UNICODE, PT_STRING8, PT_BINARY):
        return _fail(ROP_OPEN_STREAM, out_index, EC_NOT_FOUND), end
    data = encode_value(prop_type, value) or b""
    if prop_type == PT_BINARY:
        data = data[2:]                                  # the bytes without PtypBinary's count
    handles[out_index] = objects.add(StreamObject(data))
    return struct.pack("<BBLL", ROP_OPEN_STREAM, out_index, EC_NONE, len(data)), end


def run_get_stream_size(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 3, "RopGetStreamSize")
    in_index = rops[pos + 2]
    stream = objects.at(handles, in_index)
    if not isinstance(stream, StreamObject):
        return _fail(ROP_GET_STREAM_SIZE, in_index, EC_NULL_OBJECT), pos + 3
    return struct.pack("<BBLL", ROP_GET_STREAM_SIZE, in_index, EC_NONE, len(stream.data)), pos + 3


def run_read_stream(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 5, "RopReadStream")
    _, _, in_index, count = struct.unpack_from("<BBBH", rops, pos)
    end = pos + 5
    if count == BABE:
        _need(rops, end, 4, "RopReadStream MaximumByteCount")
        count = min(struct.unpack_from("<L", rops, end)[0], READ_STREAM_MAX)
        end += 4
    stream = objects.at(handles, in_index)
    if not isinstance(stream, StreamObject):
        return _fail(ROP_READ_STREAM, in_index, EC_NULL_OBJECT) + b"\x00\x00", end   # DataSize 0 on failure
    chunk = stream.data[stream.position:stream.position + count]
    stream.position += len(chunk)
    return struct.pack("<BBLH", ROP_READ_STREAM, in_index, EC_NONE, len(chunk)) + chunk, end


# ---- the logon's receive folders and a folder's rules -------------------------------------------------------------
def run_get_receive_folder(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 4, "RopGetReceiveFolder")
    in_index = rops[pos + 2]
    message_class, end = read_value(PT_STRING8, rops, pos + 3)
    logon = objects.at(handles, in_index)
    if not isinstance(logon, StoreObject) or logon.content is None:
        return _fail(ROP_GET_RECEIVE_FOLDER, in_index, EC_NULL_OBJECT), end
    wanted = str(message_class).upper()
    explicit, folder = max(((prefix, name) for prefix, name in _RECEIVE_FOLDERS
                            if not prefix or wanted == prefix or wanted.startswith(prefix + ".")),
                           key=lambda entry: len(entry[0]))
    target = logon.content.distinguished[folder]
    return (struct.pack("<BBL8s", ROP_GET_RECEIVE_FOLDER, in_index, EC_NONE, fid(target.key))
            + explicit.encode("ascii") + b"\x00"), end


def run_get_rules_table(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 5, "RopGetRulesTable")
    _, _, in_index, out_index, _flags = struct.unpack_from("<BBBBB", rops, pos)
    end = pos + 5
    _out_index(handles, out_index, "RopGetRulesTable")
    source = objects.at(handles, in_index)
    if not isinstance(source, FolderObject):
        return _fail(ROP_GET_RULES_TABLE, out_index, EC_NULL_OBJECT), end
    handles[out_index] = objects.add(TableObject(source.folder, "rules"))   # no rules are stored: no rows
    return struct.pack("<BBL", ROP_GET_RULES_TABLE, out_index, EC_NONE), end


HANDLERS = {ROP_OPEN_MESSAGE: run_open_message, ROP_CREATE_MESSAGE: run_create_message,
            ROP_GET_PROPS_SPECIFIC: run_get_props_specific, ROP_GET_PROPS_ALL: run_get_props_all,
            ROP_SET_PROPS: run_set_props, ROP_MODIFY_RECIPIENTS: run_modify_recipients,
            ROP_SAVE_CHANGES: run_save_changes, ROP_SUBMIT_MESSAGE: run_submit,
            ROP_DELETE_MESSAGES: run_delete_messages, ROP_OPEN_STREAM: run_open_stream,
            ROP_GET_STREAM_SIZE: run_get_stream_size, ROP_READ_STREAM: run_read_stream,
            ROP_GET_RECEIVE_FOLDER: run_get_receive_folder, ROP_GET_RULES_TABLE: run_get_rules_table}
