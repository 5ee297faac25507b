"""RopGetPropertiesSpecific, RopGetPropertiesAll and RopSetProperties on folders and the logon (MS-OXCPRPT); on a
message they are messages.py's, which these hand over to.

A folder answers the properties rops.py gives folder rows plus those a client set (kept with the folder in the
store). Setting PidTagDisplayName renames it (a PropertyProblem instead: ecDuplicateName for a sibling's name,
ecAccessDenied for a folder every mailbox has, as EWS's UpdateFolder refuses); PidTagContainerClass is the folder
class EWS reports; the computed properties (ids, counts) answer ecComputed problems. The logon answers its display
name and owner name.

Bytes in, bytes out, the ``run_*`` shape of rops.py.
"""
from __future__ import annotations

import datetime as dt
import struct
from typing import Dict, List, Optional, Tuple

from harness.rpc.emsmdb.folders import EC_DUPLICATE_NAME, _child, _is_built_in
from harness.rpc.emsmdb.idl import EC_NONE, EC_NOT_FOUND, EC_NOT_SUPPORTED
from harness.rpc.emsmdb.messages import EC_ACCESS_DENIED
from harness.rpc.emsmdb.messages import run_get_props_all as message_props_all
from harness.rpc.emsmdb.messages import run_get_props_specific as message_props_specific
from harness.rpc.emsmdb.messages import run_set_props as message_set_props
from harness.rpc.emsmdb.restrictions import TooComplex, read_value
from harness.rpc.emsmdb.rops import _FILETIME_EPOCH as FILETIME_EPOCH
from harness.rpc.emsmdb.rops import (
    FOLDER_COMPUTED,
    PT_I8,
    PT_SYSTIME,
    TAG_CONTAINER_CLASS,
    TAG_DISPLAY_NAME,
    FolderObject,
    ObjectMap,
    StoreObject,
    _fail,
    _folder_value,
    _need,
    encode_value,
)
from harness.rpc.emsmdb.tables import _COLUMNS

ROP_GET_PROPS_SPECIFIC, ROP_GET_PROPS_ALL, ROP_SET_PROPS = 0x07, 0x08, 0x0A
EC_COMPUTED = 0x8004011A             # MAPI_E_COMPUTED: the store works the value out, a client cannot set it
TAG_MAILBOX_OWNER_NAME = 0x661C001F


def _values_row(values: List[Optional[bytes]]) -> bytes:
    """A StandardPropertyRow when every value is there, else a FlaggedPropertyRow with ecNotFound for the gaps."""
    if all(value is not None for value in values):
        return b"\x00" + b"".join(value for value in values if value is not None)
    return b"\x01" + b"".join(b"\x00" + value if value is not None else b"\x0a" + struct.pack("<L", EC_NOT_FOUND)
                              for value in values)


def _as_stored(prop_type: int, value: object) -> object:
    """A value as rops.encode_value takes it back: PtypInteger64 as its 8 bytes, PtypTime as a datetime."""
    if prop_type == PT_I8 and isinstance(value, int):
        return (value & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
    if prop_type == PT_SYSTIME and isinstance(value, int):
        return FILETIME_EPOCH + dt.timedelta(microseconds=value // 10)
    return value


def _store_value(logon: StoreObject, prop_id: int) -> Optional[str]:
    if logon.content is None:
        return None
    return {TAG_DISPLAY_NAME >> 16: f"Mailbox - {logon.content.display_name}",
            TAG_MAILBOX_OWNER_NAME >> 16: logon.content.display_name}.get(prop_id)


def run_get_props_specific(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 9, "RopGetPropertiesSpecific")
    target = objects.at(handles, rops[pos + 2])
    if not isinstance(target, (FolderObject, StoreObject)):
        return message_props_specific(rops, pos, handles, objects)
    in_index, count = rops[pos + 2], struct.unpack_from("<H", rops, pos + 7)[0]
    _need(rops, pos + 9, 4 * count, "RopGetPropertiesSpecific PropertyTags")
    tags = struct.unpack_from(f"<{count}L", rops, pos + 9)
    if isinstance(target, FolderObject):
        values = [encode_value(tag & 0xFFFF, _folder_value(target.folder, tag >> 16)) for tag in tags]
    else:
        values = [encode_value(tag & 0xFFFF, _store_value(target, tag >> 16)) for tag in tags]
    return (struct.pack("<BBL", ROP_GET_PROPS_SPECIFIC, in_index, EC_NONE) + _values_row(values)), pos + 9 + 4 * count


def run_get_props_all(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 7, "RopGetPropertiesAll")
    target = objects.at(handles, rops[pos + 2])
    if not isinstance(target, FolderObject):
        return message_props_all(rops, pos, handles, objects)
    folder = target.folder
    tags = list(_COLUMNS["hierarchy"]) + [prop_id << 16 | prop_type for prop_id, (prop_type, _) in folder.props.items()]
    values = []
    for tag in tags:
        raw = encode_value(tag & 0xFFFF, _folder_value(folder, tag >> 16))
        if raw is not None:
            values.append(struct.pack("<L", tag) + raw)
    return (struct.pack("<BBLH", ROP_GET_PROPS_ALL, rops[pos + 2], EC_NONE, len(values))
            + b"".join(values)), pos + 7


def run_set_props(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 7, "RopSetProperties")
    target = objects.at(handles, rops[pos + 2])
    if not isinstance(target, FolderObject):
        return message_set_props(rops, pos, handles, objects)
    _, _, in_index, size, count = struct.unpack_from("<BBBHH", rops, pos)
    end = pos + 5 + size
    _need(rops, pos + 5, size, "RopSetProperties PropertyValues")
    values, at = [], pos + 7
    try:
        for _ in range(count):
            _need(rops[:end], at, 4, "TaggedPropertyValue")
            tag = struct.unpack_from("<L", rops, at)[0]
            value, at = read_value(tag & 0xFFFF, rops[:end], at + 4)
            values.append((tag, value))
    except TooComplex:
        return _fail(ROP_SET_PROPS, in_index, EC_NOT_SUPPORTED), end
    folder = target.folder
    problems: Dict[int, Tuple[int, int]] = {}
    for index, (tag, value) in enumerate(values):
        prop_id, prop_type = tag >> 16, tag & 0xFFFF
        if prop_id in FOLDER_COMPUTED:
            problems[index] = (tag, EC_COMPUTED)
        elif prop_id == TAG_DISPLAY_NAME >> 16 and isinstance(value, str):
            clash = _child(folder.parent, value) if folder.parent is not None else None
            if _is_built_in(folder):        # as EWS's UpdateFolder: the default folders keep their names
                problems[index] = (tag, EC_ACCESS_DENIED)
            elif clash is not None and clash is not folder:
                problems[index] = (tag, EC_DUPLICATE_NAME)
            else:
                folder.name = value
        elif prop_id == TAG_CONTAINER_CLASS >> 16 and isinstance(value, str):
            folder.folder_class = value
        else:
            folder.props[prop_id] = (prop_type, _as_stored(prop_type, value))
    folder.owner.folder_changed(folder)     # a hierarchy Update and a ModifiedEvent
    return (struct.pack("<BBLH", ROP_SET_PROPS, in_index, EC_NONE, len(problems))
            + b"".join(struct.pack("<HLL", index, tag, code) for index, (tag, code) in problems.items())), end


HANDLERS = {ROP_GET_PROPS_SPECIFIC: run_get_props_specific, ROP_GET_PROPS_ALL: run_get_props_all,
            ROP_SET_PROPS: run_set_props}
