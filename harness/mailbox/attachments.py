"""Attachments of stored items, sans-IO: file attachments (a name, a content type and bytes) and item attachments
(an embedded message's subject, body and sender), their Exchange-looking ids, and the MIME parts they become.

An item keeps its attachments as a tuple (none costs nothing per item); adding or removing one replaces the tuple
and counts as a change of the item, as Exchange bumps the item's ChangeKey. Attachment keys come from the mailbox's
change counter, so they are unique in the mailbox and the same after a reset.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from email.message import EmailMessage
from typing import TYPE_CHECKING, Iterator, Optional, Tuple

from harness.mailbox import ids

if TYPE_CHECKING:
    from harness.mailbox.store import Address, Item, MailboxContent


@dataclass(frozen=True)
class EmbeddedMessage:
    """What an ItemAttachment carries: a message that lives only inside its parent item."""
    subject: str
    body: str
    sender: "Address"
    body_type: str = "Text"


@dataclass(frozen=True)
class Attachment:
    key: int
    name: str
    last_modified: dt.datetime
    content_type: str = "application/octet-stream"
    content: bytes = b""
    content_id: str = ""
    is_inline: bool = False
    embedded: Optional[EmbeddedMessage] = None    # set: an ItemAttachment (content unused)

    @property
    def size(self) -> int:
        if self.embedded is not None:
            return len(self.embedded.subject) + len(self.embedded.body) + 256
        return len(self.content)

    def id_in(self, item: "Item") -> str:
        return ids.attachment_id(item.folder.owner.guid, item.folder.key, item.key, self.key)


def add(owner: "MailboxContent", item: "Item", attachment: Attachment) -> Attachment:
    """Attach `attachment` (its key replaced by a fresh one) to `item`; the caller records the item's change."""
    stored = replace(attachment, key=owner.next_change())
    item.attachments = (*item.attachments, stored)
    item.mime = None            # the client's MIME no longer says what the item holds: render it from now on
    return stored


def remove(item: "Item", attachment: Attachment) -> None:
    item.attachments = tuple(a for a in item.attachments if a.key != attachment.key)
    item.mime = None


def find(item: "Item", key: int) -> Optional[Attachment]:
    return next((a for a in item.attachments if a.key == key), None)


def add_mime_parts(message: EmailMessage, attachments: Tuple[Attachment, ...]) -> None:
    """Each attachment as a MIME part: a file by its content type, an item as message/rfc822."""
    for attachment in attachments:
        if attachment.embedded is not None:
            inner = EmailMessage()
            inner["From"] = attachment.embedded.sender[1]
            inner["Subject"] = attachment.embedded.subject
            inner.set_content(attachment.embedded.body)
            message.add_attachment(inner, filename=attachment.name)
            continue
        maintype, _, subtype = attachment.content_type.partition("/")
        if not subtype:
            maintype, subtype = "application", "octet-stream"
        disposition = "inline" if attachment.is_inline else "attachment"
        message.add_attachment(attachment.content, maintype=maintype, subtype=subtype, filename=attachment.name,
                               disposition=disposition, cid=f"<{attachment.content_id}>" if attachment.content_id
                               else None)


def from_mime(message: EmailMessage, when: dt.datetime) -> Iterator[Attachment]:
    """The file attachments of a client's MIME message (keys 0: `add` gives them theirs)."""
    for part in message.iter_attachments():
        if not isinstance(part, EmailMessage):
            continue
        payload = part.get_payload(decode=True)
        yield Attachment(key=0, name=part.get_filename() or "", last_modified=when,
                         content_type=part.get_content_type(), content=payload if isinstance(payload, bytes) else b"",
                         content_id=(part.get("Content-ID") or "").strip("<>"),
                         is_inline=part.get_content_disposition() == "inline")
