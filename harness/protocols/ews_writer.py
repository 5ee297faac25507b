"""The small EWS XML writers the item and folder writers share: the namespaces, and text elements, mailboxes and
arrays written either as lxml elements or as text (a FindItem page is written as text and parsed once), sans-IO."""
from __future__ import annotations

import datetime as dt
from typing import List, Sequence, Union

from lxml import etree

from harness.mailbox.store import Address

MESSAGES_NS = "http://schemas.microsoft.com/exchange/services/2006/messages"
TYPES_NS = "http://schemas.microsoft.com/exchange/services/2006/types"
ERRORS_NS = "http://schemas.microsoft.com/exchange/services/2006/errors"


def m(name: str) -> str:
    return f"{{{MESSAGES_NS}}}{name}"


def t(name: str) -> str:
    return f"{{{TYPES_NS}}}{name}"


def timestamp(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Fragment:
    """Item XML written as text: a FindItem page is parsed once instead of costing an lxml call per element (the
    writers below take either this or an element)."""
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: List[str] = []


Parent = Union[etree._Element, Fragment]


def escape(text: str) -> str:
    """XML character data (a carriage return as lxml writes it, so parsing keeps it). Most text needs nothing."""
    if "&" in text or "<" in text or ">" in text or "\r" in text:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    return text


def attribute(value: str) -> str:
    escaped = escape(value)
    return '"' + (escaped.replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")
                  if '"' in escaped or "\n" in escaped or "\t" in escaped else escaped) + '"'


def text(parent: Parent, name: str, value: object) -> etree._Element:
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if type(parent) is Fragment:
        parent.parts.append(f"<t:{name}>{escape(text)}</t:{name}>")
        return None  # only element writers use the result (Body, MimeContent)
    element = etree.SubElement(parent, t(name))
    element.text = text
    return element


def open_element(parent: Parent, name: str) -> Parent:
    if type(parent) is Fragment:
        parent.parts.append(f"<t:{name}>")
        return parent
    return etree.SubElement(parent, t(name))


def close_element(parent: Parent, name: str) -> None:
    if type(parent) is Fragment:
        parent.parts.append(f"</t:{name}>")


def mailbox(parent: Parent, address: Address) -> None:
    mailbox = open_element(parent, "Mailbox")
    text(mailbox, "Name", address[0] or address[1])
    text(mailbox, "EmailAddress", address[1])
    text(mailbox, "RoutingType", "SMTP")
    text(mailbox, "MailboxType", "Mailbox")
    close_element(mailbox, "Mailbox")


def recipients(parent: Parent, name: str, addresses: Sequence[Address]) -> None:
    if addresses:
        element = open_element(parent, name)
        for address in addresses:
            mailbox(element, address)
        close_element(element, name)


def strings(parent: Parent, name: str, values: Sequence[str]) -> None:
    """An ArrayOfStringsType (Categories): left out when empty, as Exchange does."""
    if values:
        element = open_element(parent, name)
        for value in values:
            text(element, "String", value)
        close_element(element, name)


def single(parent: Parent, name: str, address: Address) -> None:
    element = open_element(parent, name)
    mailbox(element, address)
    close_element(element, name)
