"""Contacts in the store, sans-IO: a personal contact (IPM.Contact) with its names, company, job title, e-mail
addresses and phone numbers, kept by their EWS dictionary keys (EmailAddress1-3; BusinessPhone, MobilePhone, ...)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from harness.mailbox.store import Folder, Item, MailboxContent

CONTACT_CLASS = "IPM.Contact"
EMAIL_KEYS = ("EmailAddress1", "EmailAddress2", "EmailAddress3")
Entries = Tuple[Tuple[str, str], ...]     # (dictionary key, value), in key order of first setting


@dataclass(eq=False)
class ContactItem(Item):
    """`subject` is the contact's FileAs (what Outlook lists), as Exchange keeps it."""
    display_name: str = ""
    given_name: str = ""
    surname: str = ""
    company_name: str = ""
    job_title: str = ""
    emails: Entries = ()
    phones: Entries = ()

    @property
    def addresses(self) -> Tuple[str, ...]:
        return tuple(address for _, address in self.emails if address)


def file_as(given_name: str, surname: str, display_name: str) -> str:
    """Outlook's default FileAs, "Surname, GivenName" (the display name when a part is missing)."""
    return f"{surname}, {given_name}" if surname and given_name else display_name or surname or given_name


def add_contact(owner: MailboxContent, *, display_name: str = "", given_name: str = "", surname: str = "",
                emails: Sequence[str] = (), phones: Entries = (), company_name: str = "", job_title: str = "",
                when: dt.datetime, folder: Optional[Folder] = None) -> ContactItem:
    display = display_name or " ".join(part for part in (given_name, surname) if part)
    item = owner.add_item(folder or owner.distinguished["contacts"], kind=ContactItem,
                          subject=file_as(given_name, surname, display), body="", sender=owner.address, to=(),
                          received=when, sent=when, message_id="", is_read=True, item_class=CONTACT_CLASS,
                          display_name=display, given_name=given_name, surname=surname, company_name=company_name,
                          job_title=job_title, emails=tuple(zip(EMAIL_KEYS, emails)), phones=tuple(phones))
    assert isinstance(item, ContactItem)
    return item


def with_entry(entries: Entries, key: str, value: Optional[str]) -> Entries:
    """`entries` with `key` set to `value` (None: removed), keeping the others' order."""
    kept = tuple((k, v) for k, v in entries if k != key)
    if value is None:
        return kept
    return tuple((k, value if k == key else v) for k, v in entries) if len(kept) < len(entries) else \
        kept + ((key, value),)
