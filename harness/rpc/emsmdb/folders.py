"""The folder ROPs over the shared mailbox store (MS-OXCROPS 2.2.4, MS-OXCFOLD): RopCreateFolder, RopDeleteFolder,
RopMoveFolder, RopCopyFolder, RopMoveCopyMessages, RopEmptyFolder, RopHardDeleteMessagesAndSubfolders.

Folders made here are the store's folders, so EWS lists them (FindFolder) and the other way round. The folders
every mailbox is created with cannot be deleted, moved or emptied away (ecAccessDenied; RopEmptyFolder leaves them
and reports PartialCompletion). Only generic folders are created: a search folder answers ecNotSupported. The
private store deletes folders hard whatever DELETE_HARD_DELETE says, as Exchange 2013 does in mailboxes.

Bytes in, bytes out, the ``run_*`` shape of rops.py.
"""
from __future__ import annotations

import struct
from typing import List, Optional, Tuple

from harness.mailbox.folders import FIRST_FOLDER_COUNTER, WELL_KNOWN
from harness.mailbox.store import Folder, MailboxContent, MailboxStore
from harness.rpc.emsmdb.idl import EC_NONE, EC_NOT_FOUND, EC_NOT_SUPPORTED
from harness.rpc.emsmdb.messages import EC_ACCESS_DENIED, _counter, _out_index, _store
from harness.rpc.emsmdb.restrictions import PT_STRING8, PT_UNICODE, read_value
from harness.rpc.emsmdb.rops import EC_INVALID_PARAMETER, EC_NULL_OBJECT, FolderObject, ObjectMap, _fail, _need, fid

ROP_CREATE_FOLDER, ROP_DELETE_FOLDER, ROP_MOVE_COPY_MESSAGES, ROP_MOVE_FOLDER, ROP_COPY_FOLDER = (0x1C, 0x1D, 0x33,
                                                                                       0x35, 0x36)
ROP_EMPTY_FOLDER, ROP_HARD_DELETE_MESSAGES_AND_SUBFOLDERS = 0x58, 0x92
EC_DUPLICATE_NAME = 0x80040604
EC_DST_NULL_OBJECT = 0x00000503      # the destination handle index names no folder
FOLDER_GENERIC, FOLDER_SEARCH = 1, 2
DEL_MESSAGES, DEL_FOLDERS, DELETE_HARD_DELETE = 0x01, 0x04, 0x10
_FIRST_CREATED = FIRST_FOLDER_COUNTER + len(WELL_KNOWN)   # counters below it: the folders of a new mailbox


def _is_built_in(folder: Folder) -> bool:
    return folder.key < _FIRST_CREATED


def _child(parent: Folder, name: str) -> Optional[Folder]:
    wanted = name.casefold()
    return next((child for child in parent.children if child.name.casefold() == wanted), None)


def _text(rops: bytes, pos: int, unicode: int) -> Tuple[str, int]:
    value, end = read_value(PT_UNICODE if unicode else PT_STRING8, rops, pos)
    return str(value), end


def _empty(store: MailboxStore, content: MailboxContent, folder: Folder, *, messages: bool, folders: bool) -> bool:
    """Delete ``folder``'s messages and/or subfolders; True when something had to stay."""
    if messages:
        for item in list(folder.items.values()):
            store.delete(item, hard=True)
    partial = False
    if folders:
        for child in list(folder.children):
            if _is_built_in(child) or any(_is_built_in(below) for below in child.descendants()):
                partial = True
                continue
            for below in [child, *child.descendants()]:
                for item in list(below.items.values()):
                    store.delete(item, hard=True)
            content.remove_folder(child)
    return partial


# ---- the ROPs -----------------------------------------------------------------------------------------------------
def run_create_folder(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 8, "RopCreateFolder")
    _, _, in_index, out_index, folder_type, unicode, open_existing, _reserved = struct.unpack_from("<8B", rops, pos)
    name, at = _text(rops, pos + 8, unicode)
    _comment, end = _text(rops, at, unicode)
    _out_index(handles, out_index, "RopCreateFolder")
    parent = objects.at(handles, in_index)
    _, content = _store(objects)
    if not isinstance(parent, FolderObject) or content is None:
        return _fail(ROP_CREATE_FOLDER, out_index, EC_NULL_OBJECT), end
    if folder_type == FOLDER_SEARCH:
        return _fail(ROP_CREATE_FOLDER, out_index, EC_NOT_SUPPORTED), end
    if folder_type != FOLDER_GENERIC or not name:
        return _fail(ROP_CREATE_FOLDER, out_index, EC_INVALID_PARAMETER), end
    existing = _child(parent.folder, name)
    if existing is not None and not open_existing:
        return _fail(ROP_CREATE_FOLDER, out_index, EC_DUPLICATE_NAME), end
    folder = existing or content.add_folder(name, None, parent.folder)
    handles[out_index] = objects.add(FolderObject(folder))
    answer = struct.pack("<BBL8sB", ROP_CREATE_FOLDER, out_index, EC_NONE, fid(folder.key), existing is not None)
    if existing is not None:
        answer += struct.pack("<BB", bool(folder.rules), 0)          # HasRules, IsGhosted
    return answer, end


def run_delete_folder(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 12, "RopDeleteFolder")
    _, _, in_index, flags, folder_id = struct.unpack_from("<BBBB8s", rops, pos)
    end = pos + 12
    parent = objects.at(handles, in_index)
    store, content = _store(objects)
    if not isinstance(parent, FolderObject) or store is None or content is None:
        return _fail(ROP_DELETE_FOLDER, in_index, EC_NULL_OBJECT), end
    folder = content.folders.get(_counter(folder_id) or -1)
    if folder is None or folder.parent is not parent.folder:
        return _fail(ROP_DELETE_FOLDER, in_index, EC_NOT_FOUND), end
    if _is_built_in(folder):
        return _fail(ROP_DELETE_FOLDER, in_index, EC_ACCESS_DENIED), end
    # without DEL_MESSAGES / DEL_FOLDERS only an empty folder goes; otherwise it stays and the answer says partial
    if (folder.items and not flags & DEL_MESSAGES) or (folder.children and not flags & DEL_FOLDERS):
        return struct.pack("<BBLB", ROP_DELETE_FOLDER, in_index, EC_NONE, 1), end
    if _empty(store, content, folder, messages=True, folders=True):
        return struct.pack("<BBLB", ROP_DELETE_FOLDER, in_index, EC_NONE, 1), end
    content.remove_folder(folder)
    return struct.pack("<BBLB", ROP_DELETE_FOLDER, in_index, EC_NONE, 0), end


def _destination(objects: ObjectMap, handles: List[int], dest_index: int) -> Optional[Folder]:
    dest = objects.at(handles, dest_index)
    return dest.folder if isinstance(dest, FolderObject) else None


def _dst_null(rop_id: int, source_index: int, dest_index: int) -> bytes:
    """ecDstNullObject names the destination index (4 bytes) and a PartialCompletion (MS-OXCROPS 2.2.4.6.3)."""
    return struct.pack("<BBLLB", rop_id, source_index, EC_DST_NULL_OBJECT, dest_index, 0)


def run_move_copy_messages(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 6, "RopMoveCopyMessages")
    _, _, source_index, dest_index, count = struct.unpack_from("<BBBBH", rops, pos)
    _need(rops, pos + 6, 8 * count + 2, "RopMoveCopyMessages MessageIds")
    mids = [rops[pos + 6 + 8 * i:pos + 14 + 8 * i] for i in range(count)]
    _asynchronous, want_copy = struct.unpack_from("<BB", rops, pos + 6 + 8 * count)
    end = pos + 8 + 8 * count
    source = objects.at(handles, source_index)
    store, _ = _store(objects)
    if not isinstance(source, FolderObject) or store is None:
        return _fail(ROP_MOVE_COPY_MESSAGES, source_index, EC_NULL_OBJECT), end
    target = _destination(objects, handles, dest_index)
    if target is None:
        return _dst_null(ROP_MOVE_COPY_MESSAGES, source_index, dest_index), end
    missing = 0
    for mid in mids:
        item = source.folder.items.get(_counter(mid) or -1)
        if item is None:
            missing += 1
        elif want_copy:
            store.copy(item, target)
        elif target is not source.folder:
            store.move(item, target)
    return struct.pack("<BBLB", ROP_MOVE_COPY_MESSAGES, source_index, EC_NONE, int(missing > 0)), end


def run_move_folder(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 14, "RopMoveFolder")
    _, _, source_index, dest_index, _asynchronous, unicode, folder_id = struct.unpack_from("<BBBBBB8s", rops, pos)
    new_name, end = _text(rops, pos + 14, unicode)
    source = objects.at(handles, source_index)
    _, content = _store(objects)
    if not isinstance(source, FolderObject) or content is None:
        return _fail(ROP_MOVE_FOLDER, source_index, EC_NULL_OBJECT), end
    target = _destination(objects, handles, dest_index)
    if target is None:
        return _dst_null(ROP_MOVE_FOLDER, source_index, dest_index), end
    folder = content.folders.get(_counter(folder_id) or -1)
    if folder is None or folder.parent is not source.folder:
        return _fail(ROP_MOVE_FOLDER, source_index, EC_NOT_FOUND), end
    if _is_built_in(folder) or target is folder or target in folder.descendants():
        return _fail(ROP_MOVE_FOLDER, source_index, EC_ACCESS_DENIED), end
    clash = _child(target, new_name or folder.name)
    if clash is not None and clash is not folder:
        return _fail(ROP_MOVE_FOLDER, source_index, EC_DUPLICATE_NAME), end
    folder.name = new_name or folder.name
    content.move_folder(folder, target)
    return struct.pack("<BBLB", ROP_MOVE_FOLDER, source_index, EC_NONE, 0), end


def run_copy_folder(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    """A new folder under the destination with the folder's class, properties and messages (copies with their own
    MIDs), and with WantRecursive its subfolders likewise."""
    _need(rops, pos, 15, "RopCopyFolder")
    _, _, source_index, dest_index, _asynchronous, recursive, unicode, folder_id = struct.unpack_from(
        "<BBBBBBB8s", rops, pos)
    new_name, end = _text(rops, pos + 15, unicode)
    source = objects.at(handles, source_index)
    store, content = _store(objects)
    if not isinstance(source, FolderObject) or store is None or content is None:
        return _fail(ROP_COPY_FOLDER, source_index, EC_NULL_OBJECT), end
    target = _destination(objects, handles, dest_index)
    if target is None:
        return _dst_null(ROP_COPY_FOLDER, source_index, dest_index), end
    folder = content.folders.get(_counter(folder_id) or -1)
    if folder is None or folder.parent is not source.folder:
        return _fail(ROP_COPY_FOLDER, source_index, EC_NOT_FOUND), end
    if recursive and (target is folder or target in folder.descendants()):
        return _fail(ROP_COPY_FOLDER, source_index, EC_ACCESS_DENIED), end
    if _child(target, new_name or folder.name) is not None:
        return _fail(ROP_COPY_FOLDER, source_index, EC_DUPLICATE_NAME), end
    store.copy_folder(folder, target, new_name or folder.name, recursive=bool(recursive))
    return struct.pack("<BBLB", ROP_COPY_FOLDER, source_index, EC_NONE, 0), end


def run_empty_folder(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    """RopEmptyFolder and RopHardDeleteMessagesAndSubfolders (same layout): the folder's messages and subfolders go,
    the folder stays; no associated (FAI) messages are modelled."""
    _need(rops, pos, 5, "RopEmptyFolder")
    rop_id, _, in_index, _asynchronous, _associated = struct.unpack_from("<BBBBB", rops, pos)
    end = pos + 5
    folder = objects.at(handles, in_index)
    store, content = _store(objects)
    if not isinstance(folder, FolderObject) or store is None or content is None:
        return _fail(rop_id, in_index, EC_NULL_OBJECT), end
    partial = _empty(store, content, folder.folder, messages=True, folders=True)
    return struct.pack("<BBLB", rop_id, in_index, EC_NONE, int(partial)), end


HANDLERS = {ROP_CREATE_FOLDER: run_create_folder, ROP_DELETE_FOLDER: run_delete_folder,
            ROP_MOVE_COPY_MESSAGES: run_move_copy_messages, ROP_MOVE_FOLDER: run_move_folder,
            ROP_COPY_FOLDER: run_copy_folder,
            ROP_EMPTY_FOLDER: run_empty_folder, ROP_HARD_DELETE_MESSAGES_AND_SUBFOLDERS: run_empty_folder}
