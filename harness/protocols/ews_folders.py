"""EWS CreateFolder, UpdateFolder, DeleteFolder, EmptyFolder, MoveFolder and CopyFolder over the store's folder
tree, sans-IO.

Every change takes change numbers of the mailbox, so SyncFolderHierarchy reports a new or copied folder (Create), a
renamed or moved one or a parent whose ChildFolderCount changed (Update) and a deleted one (Delete); the store
records each as a notification event. Distinguished folders cannot be deleted or moved; a second folder of the same
name under one parent is ErrorFolderExists, as Exchange answers.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

from lxml import etree

from harness.mailbox.store import Folder
from harness.protocols.ews_ops import Call, _each, _one_folder, folder_of
from harness.protocols.ews_xml import ACCESS_DENIED, FOLDER_ELEMENTS, EwsError, m, parse_flag, t

# The folder element a client creates names its class; a t:Folder without a FolderClass gets none (its answers then
# carry no FolderClass, which exchangelib reads as a generic Folder).
CLASS_OF_ELEMENT: Dict[str, Optional[str]] = {element: kind for kind, element in FOLDER_ELEMENTS.items()}
CLASS_OF_ELEMENT["Folder"] = None
FOLDER_EXISTS = ("ErrorFolderExists", "A folder with the specified name already exists.")
DELETE_DISTINGUISHED = ("ErrorDeleteDistinguishedFolder", "Distinguished folders cannot be deleted.")
MOVE_DISTINGUISHED = ("ErrorMoveDistinguishedFolder", "Distinguished folders cannot be moved.")   # text guessed
# A folder moved or copied into itself or below itself; code and text guessed (the schema's code for a failed move)
MOVE_COPY_FAILED = ("ErrorMoveCopyFailed", "The move or copy operation failed.")
INVALID_REQUEST = ("ErrorInvalidRequest", "The request is invalid.")
# UpdateFolder fields a client may send and Exchange accepts; only DisplayName and FolderClass are kept.
IGNORED_FOLDER_FIELDS = frozenset({"folder:PermissionSet", "folder:ManagedFolderInformation"})


def _check_name(parent: Folder, name: str, renaming: Optional[Folder] = None) -> None:
    if not name.strip():    # guess: code and MessageText not seen for an empty name
        raise EwsError("ErrorFolderSavePropertyError", "The folder save operation failed due to invalid property "
                                                       "values.")
    if any(child.name.lower() == name.lower() and child is not renaming for child in parent.children):
        raise EwsError(*FOLDER_EXISTS)


def _folder_id(message: etree._Element, folder: Folder) -> None:
    element = etree.SubElement(etree.SubElement(message, m("Folders")), t(
        FOLDER_ELEMENTS.get(folder.folder_class or "", "Folder")))
    etree.SubElement(element, t("FolderId"), Id=folder.id, ChangeKey=folder.change_key)


def create_folder(call: Call) -> None:
    parent_element = call.request.find(m("ParentFolderId"))
    if parent_element is None or len(parent_element) == 0:
        raise EwsError(*INVALID_REQUEST)
    parent = folder_of(call, parent_element[0])

    def answer(element: etree._Element, message: etree._Element) -> None:
        kind = etree.QName(element).localname
        if kind not in CLASS_OF_ELEMENT:
            raise EwsError("ErrorInvalidFolderTypeForOperation",
                           "This operation isn't supported on this folder type.")   # guess
        name = element.findtext(t("DisplayName")) or ""
        _check_name(parent, name)
        folder_class = element.findtext(t("FolderClass")) or CLASS_OF_ELEMENT[kind]
        folder = call.owner.add_folder(name, folder_class, parent)
        parent.change_number = call.owner.next_change()      # its ChildFolderCount changed
        _folder_id(message, folder)
    _each(call, call.request.iterfind(f"{m('Folders')}/*"), "Folders", answer)


def update_folder(call: Call) -> None:
    def answer(change: etree._Element, message: etree._Element) -> None:
        id_element = next((e for e in change if etree.QName(e).localname in ("FolderId", "DistinguishedFolderId")),
                          None)
        if id_element is None:
            raise EwsError(*INVALID_REQUEST)
        folder = folder_of(call, id_element)
        changed = False
        for update in change.iterfind(f"{t('Updates')}/*"):
            uri_element = update.find(t("FieldURI"))
            uri = uri_element.get("FieldURI", "") if uri_element is not None else ""
            setting = etree.QName(update).localname == "SetFolderField"
            # SetFolderField: FieldURI, then a folder element holding the new value
            container = update[1] if setting and len(update) > 1 else None
            value = container.find(t(uri.partition(":")[2])) if container is not None else None
            if uri in IGNORED_FOLDER_FIELDS:
                continue
            if uri == "folder:DisplayName" and setting and value is not None:
                if folder.distinguished:
                    raise EwsError(*ACCESS_DENIED)     # guess: what renaming a default folder answers
                if folder.parent is not None:
                    _check_name(folder.parent, value.text or "", renaming=folder)
                folder.name = value.text or ""
            elif uri == "folder:FolderClass" and setting and value is not None:
                folder.folder_class = value.text or None
            else:
                raise EwsError("ErrorInvalidPropertySet", "The property set is invalid.")
            changed = True
        if changed:     # one change (one ModifiedEvent) for all updates of one FolderChange
            call.owner.folder_changed(folder)
        _folder_id(message, folder)
    _each(call, call.request.iterfind(f"{m('FolderChanges')}/{t('FolderChange')}"), "Folders", answer)


def _delete_type(call: Call) -> str:
    delete_type: str = call.request.get("DeleteType", "")
    if delete_type not in ("HardDelete", "SoftDelete", "MoveToDeletedItems"):
        raise EwsError(*INVALID_REQUEST)
    return delete_type


def delete_folder(call: Call) -> None:
    delete_type = _delete_type(call)

    def answer(element: etree._Element, message: etree._Element) -> None:
        folder = folder_of(call, element)
        if folder.distinguished:
            raise EwsError(*DELETE_DISTINGUISHED)
        deleted_items = call.owner.distinguished["deleteditems"]
        in_deleted_items = folder is deleted_items or deleted_items in folder.ancestors()
        if delete_type == "MoveToDeletedItems" and not in_deleted_items:
            call.owner.move_folder(folder, deleted_items)
        else:          # HardDelete, SoftDelete (recoverable only by admins: out of the client's view) or already there
            call.owner.remove_folder(folder)
    _each(call, call.request.iterfind(f"{m('FolderIds')}/*"), "", answer)


def empty_folder(call: Call) -> None:
    delete_type = _delete_type(call)
    sub_folders = bool(parse_flag(call.request.get("DeleteSubFolders", "false")))

    def answer(element: etree._Element, message: etree._Element) -> None:
        folder = folder_of(call, element)
        if folder.distinguished in ("root", "msgfolderroot", "calendar", "contacts", "tasks") and sub_folders:
            raise EwsError("ErrorCannotEmptyFolder", "The folder cannot be emptied.")   # guess
        for item in list(folder.items.values()):
            call.store.delete(item, hard=delete_type != "MoveToDeletedItems")
        if sub_folders:
            for child in list(folder.children):
                if delete_type == "MoveToDeletedItems":
                    call.owner.move_folder(child, call.owner.distinguished["deleteditems"])
                else:
                    call.owner.remove_folder(child)
    _each(call, call.request.iterfind(f"{m('FolderIds')}/*"), "", answer)


def _move_or_copy(call: Call, copying: bool) -> None:
    target = _one_folder(call, "ToFolderId")

    def answer(element: etree._Element, message: etree._Element) -> None:
        folder = folder_of(call, element)
        if not copying and (folder.distinguished or folder.parent is None):
            raise EwsError(*MOVE_DISTINGUISHED)
        if target is folder or folder in target.ancestors():
            raise EwsError(*MOVE_COPY_FAILED)
        if copying or target is not folder.parent:
            _check_name(target, folder.name)    # guess: what a name clash in the new parent answers
        if copying:
            folder = call.store.copy_folder(folder, target)
        elif target is not folder.parent:
            call.owner.move_folder(folder, target)
        _folder_id(message, folder)
    _each(call, call.request.iterfind(f"{m('FolderIds')}/*"), "Folders", answer)


def move_folder(call: Call) -> None:
    _move_or_copy(call, copying=False)


def copy_folder(call: Call) -> None:
    _move_or_copy(call, copying=True)


OPERATIONS: Dict[str, Callable[[Call], None]] = {
    "CreateFolder": create_folder, "UpdateFolder": update_folder, "DeleteFolder": delete_folder,
    "EmptyFolder": empty_folder, "MoveFolder": move_folder, "CopyFolder": copy_folder,
}
