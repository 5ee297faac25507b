"""RFC 5322 MIME of a stored message, rendered from its fields when the client did not send MIME itself."""
from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr
from typing import TYPE_CHECKING

from harness.mailbox.attachments import add_mime_parts

if TYPE_CHECKING:
    from harness.mailbox.store import Item


def render_mime(item: "Item") -> bytes:
    message = EmailMessage(policy=SMTP)
    message["From"] = formataddr(item.sender)
    if item.to:
        message["To"] = ", ".join(formataddr(a) for a in item.to)
    if item.cc:
        message["Cc"] = ", ".join(formataddr(a) for a in item.cc)
    message["Subject"] = item.subject
    message["Date"] = format_datetime(item.sent)
    message["Message-ID"] = item.message_id
    message.set_content(item.body, subtype="html" if item.body_type == "HTML" else "plain")
    if item.attachments:
        add_mime_parts(message, item.attachments)
    return message.as_bytes()
