"""EWS attachments, sans-IO: CreateAttachment, GetAttachment and DeleteAttachment of file and item attachments,
and the t:Attachments a CreateItem carries inline (exchangelib's Message(...).attach(...) then save or send).

An unknown attachment is answered as Exchange does (ErrorItemNotFound, "The specified object was not found in the
store."); an id that is no attachment id ErrorInvalidIdMalformed.
"""
from __future__ import annotations

import base64
import binascii
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from lxml import etree

from harness.mailbox import attachments, ids
from harness.mailbox.attachments import Attachment, EmbeddedMessage
from harness.mailbox.store import Item
from harness.protocols.ews_xml import (
    ACCESS_DENIED,
    ID_MALFORMED,
    ITEM_NOT_FOUND,
    EwsError,
    attachment_element,
    each_response,
    element_name,
    m,
    schema_error,
    t,
)

if TYPE_CHECKING:
    from harness.protocols.ews_ops import Call



def parse_attachments(container: etree._Element, call: "Call") -> List[Attachment]:
    """The t:FileAttachment / t:ItemAttachment children of `container` (keys 0: the store gives them theirs)."""
    found = []
    for element in container:
        if not isinstance(element.tag, str):
            continue
        name = etree.QName(element).localname
        common = dict(key=0, name=element.findtext(t("Name")) or "", last_modified=call.store.clock(),
                      content_id=element.findtext(t("ContentId")) or "",
                      is_inline=(element.findtext(t("IsInline")) or "").strip().lower() in ("true", "1"))
        if name == "FileAttachment":
            try:
                content = base64.b64decode(element.findtext(t("Content")) or "", validate=True)
            except (binascii.Error, ValueError):
                raise schema_error("Content") from None
            found.append(Attachment(content_type=element.findtext(t("ContentType")) or "application/octet-stream",
                                    content=content, **common))   # type: ignore[arg-type]
        elif name == "ItemAttachment":
            inner = next((child for child in element if isinstance(child.tag, str) and etree.QName(child).localname
                          in ("Item", "Message")), None)
            if inner is None:
                raise EwsError("ErrorInvalidRequest", "The request is invalid.")
            body = inner.find(t("Body"))
            sender = inner.findtext(f"{t('From')}/{t('Mailbox')}/{t('EmailAddress')}") or call.owner.email
            embedded = EmbeddedMessage(subject=inner.findtext(t("Subject")) or "",
                                       body=(body.text or "") if body is not None else "",
                                       sender=(inner.findtext(f"{t('From')}/{t('Mailbox')}/{t('Name')}") or "", sender),
                                       body_type=body.get("BodyType", "Text") if body is not None else "Text")
            found.append(Attachment(embedded=embedded, **common))    # type: ignore[arg-type]
    return found


def _owned(call: "Call", guid: str) -> None:
    """Another mailbox's id: ErrorAccessDenied (an unknown mailbox's: not found)."""
    if guid != call.owner.guid:
        raise EwsError(*ACCESS_DENIED) if any(o.guid == guid for o in call.store.mailboxes.values()) else \
            EwsError(*ITEM_NOT_FOUND)


def _parent_item(call: "Call", ews_id: str) -> Item:
    decoded = ids.decode(ews_id)
    if decoded is None or decoded[2] is None:
        raise EwsError(*ID_MALFORMED)
    _owned(call, decoded[0])
    found = call.owner.find(ews_id)
    if not isinstance(found, Item):
        raise EwsError(*ITEM_NOT_FOUND)
    return found


def _parent_and_attachment(call: "Call", ews_id: str) -> Tuple[Item, Attachment]:
    decoded = ids.decode_attachment(ews_id)
    if decoded is None:
        raise EwsError(*ID_MALFORMED)
    guid, folder_key, item_key, key = decoded
    _owned(call, guid)
    folder = call.owner.folders.get(folder_key)
    item = folder.items.get(item_key) if folder is not None else None
    attachment = attachments.find(item, key) if item is not None else None
    if item is None or attachment is None:
        raise EwsError(*ITEM_NOT_FOUND)
    return item, attachment


def create_attachment(call: "Call") -> None:
    """One response message per attachment, each naming the parent item's new ChangeKey."""
    parent_id = call.request.find(m("ParentItemId"))
    if parent_id is None:
        raise EwsError("ErrorInvalidRequest", "The request is invalid.")
    parent = _parent_item(call, parent_id.get("Id", ""))
    container = call.request.find(m("Attachments"))
    new = parse_attachments(container, call) if container is not None else []
    stored = [attachments.add(call.owner, parent, attachment) for attachment in new]
    if stored:
        call.store.changed(parent)
    for attachment in stored:
        message = etree.SubElement(call.messages, m("CreateAttachmentResponseMessage"), ResponseClass="Success")
        etree.SubElement(message, m("ResponseCode")).text = "NoError"
        attachment_element(etree.SubElement(message, m("Attachments")), parent, attachment, root=True)


def get_attachment(call: "Call") -> None:
    requested = call.request.iterfind(f"{m('AttachmentIds')}/{t('AttachmentId')}")

    def answer(element: etree._Element, message: etree._Element) -> None:
        item, attachment = _parent_and_attachment(call, element.get("Id", ""))
        attachment_element(etree.SubElement(message, m("Attachments")), item, attachment, content=True)
    each_response(call.messages, call.operation, requested, "Attachments", answer)


def delete_attachment(call: "Call") -> None:
    requested = call.request.iterfind(f"{m('AttachmentIds')}/{t('AttachmentId')}")

    def answer(element: etree._Element, message: etree._Element) -> None:
        item, attachment = _parent_and_attachment(call, element.get("Id", ""))
        attachments.remove(item, attachment)
        call.store.changed(item)
        etree.SubElement(message, m("RootItemId"), RootItemId=item.id, RootItemChangeKey=item.change_key)
    each_response(call.messages, call.operation, requested, "", answer)


OPERATIONS: Dict[str, Callable[["Call"], None]] = {
    "CreateAttachment": create_attachment, "GetAttachment": get_attachment, "DeleteAttachment": delete_attachment,
}


def inline(call: "Call", element: etree._Element, mime: Optional[bytes]) -> List[Attachment]:
    """The attachments a CreateItem's t:Message brings: its MIME's attachment parts, else its t:Attachments."""
    if mime is not None:
        parsed = message_from_bytes(mime, policy=policy.default)
        return list(attachments.from_mime(parsed, call.store.clock())) if isinstance(parsed, EmailMessage) else []
    container = element.find(t("Attachments"))
    return parse_attachments(container, call) if container is not None else []


def created(items: etree._Element, item: Item) -> None:
    """CreateItem's answer for a saved item: its ItemId, and an AttachmentId for each attachment (exchangelib
    reads them back into the attachments it sent)."""
    element = etree.SubElement(items, t(element_name(item)))
    etree.SubElement(element, t("ItemId"), Id=item.id, ChangeKey=item.change_key)
    if item.attachments:
        container = etree.SubElement(element, t("Attachments"))
        for attachment in item.attachments:
            kind = "ItemAttachment" if attachment.embedded is not None else "FileAttachment"
            etree.SubElement(etree.SubElement(container, t(kind)), t("AttachmentId"), Id=attachment.id_in(item))
