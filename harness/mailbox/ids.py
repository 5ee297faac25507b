"""Exchange-looking identifiers for folders and items, sans-IO.

An EWS FolderId/ItemId is base64 of a binary id: compression byte 0, id type 3 (mailbox GUID based), the mailbox
GUID as 36 ASCII characters behind its 16-bit length, a processing byte, then the MAPI entry id behind its 16-bit
length. The entry id is the store's: flags, provider uid (the mailbox GUID), the entry type, and the folder's (and for
an item, the message's) 16-byte replica GUID and 6-byte global counter. So ids start "AAMkA" like Exchange's, are
stable for a seeded store, and decode back to (mailbox GUID, folder counter, item counter).

A ChangeKey is base64 of the item kind (1 folder, 9 message), the length 22 and a predecessor change list entry:
the replica GUID and the 6-byte change number.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import struct
import uuid
from typing import Optional, Tuple

_FOLDER_ENTRY, _MESSAGE_ENTRY = 0x0001, 0x0007
_PREFIX = b"\x00\x03" + struct.pack("<H", 36)
CHANGE_FOLDER, CHANGE_MESSAGE = 1, 9
_FILETIME_EPOCH = dt.datetime(1601, 1, 1, tzinfo=dt.timezone.utc)


# Cached: every id of a FindItem page needs both, and uuid5 costs more than the rest of the id.
@functools.lru_cache(maxsize=1024)
def replica_guid(mailbox_guid: str) -> bytes:
    """The mailbox's replica GUID (stable: derived from the mailbox GUID)."""
    return uuid.uuid5(uuid.UUID(mailbox_guid), "replica").bytes


@functools.lru_cache(maxsize=1024)
def _guid_bytes(mailbox_guid: str) -> bytes:
    return uuid.UUID(mailbox_guid).bytes


def _counter(value: int) -> bytes:
    return value.to_bytes(6, "big")


def _wrap(mailbox_guid: str, entry_id: bytes) -> str:
    raw = _PREFIX + mailbox_guid.encode("ascii") + b"\x00" + struct.pack("<H", len(entry_id)) + entry_id
    return base64.b64encode(raw).decode("ascii")


def folder_entry_id(mailbox_guid: str, folder: int) -> bytes:
    """The MAPI folder entry id (MS-OXCDATA 2.2.4.1), also PidTagEntryId over ROPs."""
    replica = replica_guid(mailbox_guid)
    return (b"\x00" * 4 + _guid_bytes(mailbox_guid) + struct.pack("<H", _FOLDER_ENTRY) + replica
            + _counter(folder) + b"\x00\x00")


def item_entry_id(mailbox_guid: str, folder: int, item: int) -> bytes:
    """The MAPI message entry id (MS-OXCDATA 2.2.4.2)."""
    replica = replica_guid(mailbox_guid)
    return (b"\x00" * 4 + _guid_bytes(mailbox_guid) + struct.pack("<H", _MESSAGE_ENTRY) + replica
            + _counter(folder) + b"\x00\x00" + replica + _counter(item) + b"\x00\x00")


def folder_id(mailbox_guid: str, folder: int) -> str:
    return _wrap(mailbox_guid, folder_entry_id(mailbox_guid, folder))


def item_id(mailbox_guid: str, folder: int, item: int) -> str:
    return _wrap(mailbox_guid, item_entry_id(mailbox_guid, folder, item))


def occurrence_id(mailbox_guid: str, folder: int, item: int, original_start: dt.datetime) -> str:
    """An occurrence of a recurring series: the master's entry id followed by the occurrence's original start as
    a FILETIME, so the id names the series and the date."""
    ticks = int((original_start - _FILETIME_EPOCH).total_seconds()) * 10_000_000
    return _wrap(mailbox_guid, item_entry_id(mailbox_guid, folder, item) + struct.pack("<Q", ticks))


def decode_occurrence(ews_id: str) -> Optional[Tuple[str, int, int, dt.datetime]]:
    """(mailbox GUID, folder counter, master item counter, original start) of an occurrence id, else None."""
    raw = _unwrap(ews_id)
    if raw is None or len(raw[1]) != 78 or struct.unpack_from("<H", raw[1], 20)[0] != _MESSAGE_ENTRY:
        return None
    entry = raw[1]
    (ticks,) = struct.unpack_from("<Q", entry, 70)
    start = _FILETIME_EPOCH + dt.timedelta(microseconds=ticks // 10)
    return raw[0], int.from_bytes(entry[38:44], "big"), int.from_bytes(entry[62:68], "big"), start


def _unwrap(ews_id: str) -> Optional[Tuple[str, bytes]]:
    try:
        raw = base64.b64decode(ews_id.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    if len(raw) < 43 or not raw.startswith(_PREFIX):
        return None
    (length,) = struct.unpack_from("<H", raw, 41)
    entry = raw[43:]
    return (raw[4:40].decode("ascii", "replace"), entry) if len(entry) == length else None


def change_key(mailbox_guid: str, kind: int, change_number: int) -> str:
    raw = struct.pack("<II", kind, 22) + replica_guid(mailbox_guid) + _counter(change_number)
    return base64.b64encode(raw).decode("ascii")


def decode(ews_id: str) -> Optional[Tuple[str, int, Optional[int]]]:
    """(mailbox GUID, folder counter, item counter or None) of an id this module made, or None when malformed."""
    unwrapped = _unwrap(ews_id)
    if unwrapped is None:
        return None
    guid, entry = unwrapped
    if len(entry) == 46 and struct.unpack_from("<H", entry, 20)[0] == _FOLDER_ENTRY:
        return guid, int.from_bytes(entry[38:44], "big"), None
    if len(entry) == 70 and struct.unpack_from("<H", entry, 20)[0] == _MESSAGE_ENTRY:
        return guid, int.from_bytes(entry[38:44], "big"), int.from_bytes(entry[62:68], "big")
    return None


def change_number_of(change_key: str) -> Optional[int]:
    """The change number a ChangeKey this module made stands for, or None when it does not decode."""
    try:
        raw = base64.b64decode(change_key.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    if len(raw) != 30 or struct.unpack_from("<I", raw, 4)[0] != 22:
        return None
    return int.from_bytes(raw[24:30], "big")


# ---- other id formats (EWS ConvertId) ----------------------------------------------------------------------------
_LEGACY_TYPE = 0          # an Exchange 2007 id: the mailbox named by its SMTP address instead of its GUID


def entry_mailbox(entry_id: bytes) -> Optional[str]:
    """The mailbox GUID of a folder or message entry id this module made (its provider uid), or None."""
    if len(entry_id) == 46 and struct.unpack_from("<H", entry_id, 20)[0] == _FOLDER_ENTRY or \
            len(entry_id) == 70 and struct.unpack_from("<H", entry_id, 20)[0] == _MESSAGE_ENTRY:
        return str(uuid.UUID(bytes=entry_id[4:20]))
    return None


def ews_id_of_entry(entry_id: bytes) -> Optional[str]:
    guid = entry_mailbox(entry_id)
    return None if guid is None else _wrap(guid, entry_id)


def entry_of_ews_id(ews_id: str) -> Optional[bytes]:
    """The entry id inside an EwsId (an occurrence id: its series master's)."""
    unwrapped = _unwrap(ews_id)
    if unwrapped is None:
        return None
    entry = unwrapped[1][:70] if len(unwrapped[1]) == 78 else unwrapped[1]
    return entry if entry_mailbox(entry) == unwrapped[0] else None


def legacy_id(smtp_address: str, entry_id: bytes) -> str:
    address = smtp_address.encode("ascii", "replace")
    raw = (b"\x00" + bytes([_LEGACY_TYPE]) + struct.pack("<H", len(address)) + address + b"\x00"
           + struct.pack("<H", len(entry_id)) + entry_id)
    return base64.b64encode(raw).decode("ascii")


def entry_of_legacy_id(legacy: str) -> Optional[bytes]:
    try:
        raw = base64.b64decode(legacy.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    if len(raw) < 4 or raw[:2] != b"\x00" + bytes([_LEGACY_TYPE]):
        return None
    (length,) = struct.unpack_from("<H", raw, 2)
    rest = raw[4 + length:]
    if len(rest) < 3 or struct.unpack_from("<H", rest, 1)[0] != len(rest) - 3:
        return None
    entry = rest[3:]
    return entry if entry_mailbox(entry) is not None else None


def store_id(entry_id: bytes) -> bytes:
    """A store object id (the OwaId / StoreId formats): the entry id behind its length byte, then the object type
    (1 folder, 9 message)."""
    kind = CHANGE_FOLDER if len(entry_id) == 46 else CHANGE_MESSAGE
    return bytes([len(entry_id)]) + entry_id + bytes([kind])


def entry_of_store_id(raw: bytes) -> Optional[bytes]:
    if len(raw) < 2 or raw[0] != len(raw) - 2:
        return None
    entry = raw[1:-1]
    return entry if entry_mailbox(entry) is not None else None


def attachment_id(mailbox_guid: str, folder: int, item: int, attachment: int) -> str:
    """An AttachmentId: the item's id followed by one attachment level (a count byte, then a counted 16-byte
    attachment key), so ids end "...AAABEgAQ..." as Exchange's do. The key here is the replica GUID's first ten
    bytes and the attachment's 6-byte counter."""
    entry = item_entry_id(mailbox_guid, folder, item)
    level = struct.pack("<H", 16) + replica_guid(mailbox_guid)[:10] + _counter(attachment)
    raw = (_PREFIX + mailbox_guid.encode("ascii") + b"\x00" + struct.pack("<H", len(entry)) + entry + b"\x01"
           + struct.pack("<H", len(level)) + level)
    return base64.b64encode(raw).decode("ascii")


def decode_attachment(ews_id: str) -> Optional[Tuple[str, int, int, int]]:
    """(mailbox GUID, folder counter, item counter, attachment counter) of an AttachmentId, else None."""
    try:
        raw = base64.b64decode(ews_id.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    if len(raw) != 43 + 70 + 1 + 2 + 18 or not raw.startswith(_PREFIX) or raw[113] != 1:
        return None
    entry = raw[43:113]
    if struct.unpack_from("<H", raw, 41)[0] != 70 or struct.unpack_from("<H", entry, 20)[0] != _MESSAGE_ENTRY:
        return None
    if struct.unpack_from("<HH", raw, 114) != (18, 16):
        return None
    return (raw[4:40].decode("ascii", "replace"), int.from_bytes(entry[38:44], "big"),
            int.from_bytes(entry[62:68], "big"), int.from_bytes(raw[-6:], "big"))
