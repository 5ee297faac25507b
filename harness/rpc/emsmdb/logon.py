"""The ROPs on the logon object besides RopGetReceiveFolder (MS-OXCROPS 2.2.3, MS-OXCSTOR): RopLongTermIdFromId,
RopIdFromLongTermId, RopGetPerUserLongTermIds, and RopGetPropertiesList on any property object.

A LongTermID is the replica GUID RopLogon answered (ReplGuid) + the 6-byte global counter + 2 zero bytes (MS-OXCDATA
2.2.1.3.1). A private mailbox keeps no per-user data of public folders here, so RopGetPerUserLongTermIds lists none.

Bytes in, bytes out, the ``run_*`` shape of rops.py.
"""
from __future__ import annotations

import struct
import uuid
from typing import List, Optional, Tuple

from harness.rpc.emsmdb.idl import EC_NONE, EC_NOT_FOUND, EC_NOT_SUPPORTED
from harness.rpc.emsmdb.messages import _ALL_MESSAGE_TAGS, MessageObject, _counter, _fits
from harness.rpc.emsmdb.rops import (
    EC_NULL_OBJECT,
    FolderObject,
    ObjectMap,
    StoreObject,
    _fail,
    _folder_value,
    _need,
    encode_value,
    fid,
)
from harness.rpc.emsmdb.tables import _COLUMNS

ROP_GET_PROPERTIES_LIST, ROP_LONG_TERM_ID_FROM_ID, ROP_ID_FROM_LONG_TERM_ID = 0x09, 0x43, 0x44
ROP_GET_PER_USER_LONG_TERM_IDS = 0x60


def _replica_guid(logon: StoreObject) -> Optional[bytes]:
    """ReplGuid as RopLogon sent it (server.py derives it from the mailbox GUID)."""
    if logon.content is None:
        return None
    return uuid.uuid5(uuid.UUID(logon.content.guid), "replica").bytes_le


def run_long_term_id_from_id(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 11, "RopLongTermIdFromId")
    in_index, object_id = rops[pos + 2], rops[pos + 3:pos + 11]
    logon = objects.at(handles, in_index)
    if not isinstance(logon, StoreObject):
        return _fail(ROP_LONG_TERM_ID_FROM_ID, in_index, EC_NULL_OBJECT), pos + 11
    guid, counter = _replica_guid(logon), _counter(object_id)
    if guid is None or counter is None:
        return _fail(ROP_LONG_TERM_ID_FROM_ID, in_index, EC_NOT_FOUND), pos + 11
    return (struct.pack("<BBL", ROP_LONG_TERM_ID_FROM_ID, in_index, EC_NONE) + guid + object_id[2:]
            + b"\x00\x00"), pos + 11


def run_id_from_long_term_id(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 27, "RopIdFromLongTermId")
    in_index, long_term_id = rops[pos + 2], rops[pos + 3:pos + 27]
    logon = objects.at(handles, in_index)
    if not isinstance(logon, StoreObject):
        return _fail(ROP_ID_FROM_LONG_TERM_ID, in_index, EC_NULL_OBJECT), pos + 27
    if _replica_guid(logon) != long_term_id[:16]:
        return _fail(ROP_ID_FROM_LONG_TERM_ID, in_index, EC_NOT_FOUND), pos + 27
    counter = int.from_bytes(long_term_id[16:22], "big")
    return struct.pack("<BBL8s", ROP_ID_FROM_LONG_TERM_ID, in_index, EC_NONE, fid(counter)), pos + 27


def run_get_per_user_long_term_ids(rops: bytes, pos: int, handles: List[int],
                                   objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 19, "RopGetPerUserLongTermIds")
    in_index = rops[pos + 2]
    if not isinstance(objects.at(handles, in_index), StoreObject):
        return _fail(ROP_GET_PER_USER_LONG_TERM_IDS, in_index, EC_NULL_OBJECT), pos + 19
    return struct.pack("<BBLH", ROP_GET_PER_USER_LONG_TERM_IDS, in_index, EC_NONE, 0), pos + 19


def run_get_properties_list(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    """The tags of the properties the object has a value for (the ones RopGetPropertiesSpecific would answer)."""
    _need(rops, pos, 3, "RopGetPropertiesList")
    in_index = rops[pos + 2]
    target = objects.at(handles, in_index)
    if isinstance(target, MessageObject):
        tags = [tag for tag in _ALL_MESSAGE_TAGS if _has(_fits(tag, target.value(tag >> 16)))]
    elif isinstance(target, FolderObject):
        tags = [tag for tag in _COLUMNS["hierarchy"]
                if _has(encode_value(tag & 0xFFFF, _folder_value(target.folder, tag >> 16)))]
    elif target is None:
        return _fail(ROP_GET_PROPERTIES_LIST, in_index, EC_NULL_OBJECT), pos + 3
    else:
        return _fail(ROP_GET_PROPERTIES_LIST, in_index, EC_NOT_SUPPORTED), pos + 3
    return (struct.pack("<BBLH", ROP_GET_PROPERTIES_LIST, in_index, EC_NONE, len(tags))
            + struct.pack(f"<{len(tags)}L", *tags)), pos + 3


def _has(encoded: Optional[bytes]) -> bool:
    return encoded is not None


HANDLERS = {ROP_GET_PROPERTIES_LIST: run_get_properties_list, ROP_LONG_TERM_ID_FROM_ID: run_long_term_id_from_id,
            ROP_ID_FROM_LONG_TERM_ID: run_id_from_long_term_id,
            ROP_GET_PER_USER_LONG_TERM_IDS: run_get_per_user_long_term_ids}
