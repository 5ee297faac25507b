"""EWS ResolveNames and ExpandDL, sans-IO: an unresolved entry matched against the org's directory (mailboxes and
distribution groups) and the mailbox's contacts, and a distribution group's members.

Matching is ambiguous name resolution as Exchange does it for a short entry: a prefix of the display name or of any
word of it, of the alias or user name, or of an SMTP address (an entry with "@", or "SMTP:", must match a whole
address). One match is Success; several are a Warning ErrorNameResolutionMultipleResults carrying every candidate;
none ErrorNameResolutionNoResults. A contact whose address is also a directory entry's is given once, as the
directory entry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

from lxml import etree

from harness.mailbox.contacts import ContactItem
from harness.org import DistributionGroup, Mailbox
from harness.protocols.ews_xml import EwsError, error_message, m, parse_flag, success_message, t

if TYPE_CHECKING:
    from harness.protocols.ews_ops import Call

MULTIPLE = ("ErrorNameResolutionMultipleResults", "Multiple results were found.")
NO_RESULTS = ("ErrorNameResolutionNoResults", "No results were found.")
DL_NO_RESULTS = ("ErrorNameResolutionNoResults", "No results are found.")   # ExpandDL's own wording
SCOPES = ("ActiveDirectory", "ActiveDirectoryContacts", "Contacts", "ContactsActiveDirectory")
CANDIDATE_LIMIT = 100


@dataclass(frozen=True)
class Candidate:
    name: str
    email: str
    mailbox_type: str                      # Mailbox, PublicDL or Contact
    source: object                         # the org Mailbox / DistributionGroup or the ContactItem

    @property
    def sort_key(self) -> Tuple[str, str]:
        return self.name.lower(), self.email


def _matches(entry: str, names: Sequence[str], addresses: Sequence[str]) -> bool:
    key = entry.strip().lower()
    if key.startswith("smtp:"):
        key = key[5:]
    if not key:
        return False
    if "@" in key:
        return key in (a.lower() for a in addresses)
    words = [word.lower() for name in names for word in [name, *name.split()] if word]
    return any(word.startswith(key) for word in words) or any(a.lower().startswith(key) for a in addresses)


def _directory(call: "Call", entry: str) -> List[Candidate]:
    org = call.org
    if org is None:
        return []
    found = [Candidate(mb.display_name, mb.email, "Mailbox", mb) for mb in org.mailboxes
             if _matches(entry, (mb.display_name, mb.username), (mb.email, *mb.aliases))]
    found += [Candidate(group.display_name, group.email, "PublicDL", group) for group in org.groups
              if _matches(entry, (group.display_name, group.alias), (group.email,))]
    return found


def _contacts(call: "Call", entry: str) -> List[Candidate]:
    folder = call.owner.distinguished["contacts"]
    return [Candidate(item.display_name, item.addresses[0] if item.addresses else "", "Contact", item)
            for item in folder.items.values() if isinstance(item, ContactItem)
            and _matches(entry, (item.display_name, item.given_name, item.surname, item.subject), item.addresses)]


def _mailbox(parent: etree._Element, candidate: Candidate) -> None:
    mailbox = etree.SubElement(parent, t("Mailbox"))
    etree.SubElement(mailbox, t("Name")).text = candidate.name
    etree.SubElement(mailbox, t("EmailAddress")).text = candidate.email
    etree.SubElement(mailbox, t("RoutingType")).text = "SMTP"
    etree.SubElement(mailbox, t("MailboxType")).text = candidate.mailbox_type
    if isinstance(candidate.source, ContactItem):
        etree.SubElement(mailbox, t("ItemId"), Id=candidate.source.id, ChangeKey=candidate.source.change_key)


def _full_contact(parent: etree._Element, candidate: Candidate) -> None:
    """ReturnFullContactData: the entry's contact data, in ContactItemType's order."""
    contact = etree.SubElement(parent, t("Contact"))
    source = candidate.source

    def text(name: str, value: str) -> None:
        if value:
            etree.SubElement(contact, t(name)).text = value

    def entries(name: str, values: Sequence[Tuple[str, str]]) -> None:
        if values:
            element = etree.SubElement(contact, t(name))
            for key, value in values:
                etree.SubElement(element, t("Entry"), Key=key).text = value

    if isinstance(source, ContactItem):
        text("DisplayName", source.display_name)
        text("GivenName", source.given_name)
        text("CompanyName", source.company_name)
        entries("EmailAddresses", [(k, f"SMTP:{v}") for k, v in source.emails])
        entries("PhoneNumbers", source.phones)
        text("ContactSource", "Store")
        text("JobTitle", source.job_title)
        text("Surname", source.surname)
        return
    given, _, surname = candidate.name.partition(" ") if isinstance(source, Mailbox) else ("", "", "")
    text("DisplayName", candidate.name)
    text("GivenName", given)
    entries("EmailAddresses", [("EmailAddress1", f"SMTP:{candidate.email}")])
    if isinstance(source, Mailbox):
        entries("PhoneNumbers", [("BusinessPhone", source.phone)] if source.phone else [])
    text("ContactSource", "ActiveDirectory")
    if isinstance(source, Mailbox):
        text("Department", source.department)
        text("JobTitle", source.title)
        text("OfficeLocation", source.office)
    text("Surname", surname)


def resolve_names(call: "Call") -> None:
    scope = call.request.get("SearchScope", "ActiveDirectoryContacts")
    if scope not in SCOPES:
        raise EwsError("ErrorInvalidRequest", "The request is invalid.")
    full = bool(parse_flag(call.request.get("ReturnFullContactData", "false")))
    for entry_element in call.request.iterfind(m("UnresolvedEntry")):
        entry = entry_element.text or ""
        directory = _directory(call, entry) if "ActiveDirectory" in scope else []
        known = {c.email.lower() for c in directory}
        contacts = [c for c in _contacts(call, entry) if c.email.lower() not in known] if "Contacts" in scope else []
        ordered = (contacts + directory) if scope.startswith("Contacts") else (directory + contacts)
        found = sorted(ordered, key=lambda c: c.sort_key) if len(ordered) > 1 else ordered
        if not found:
            error_message(call.messages, call.operation, EwsError(*NO_RESULTS))
            continue
        if len(found) == 1:
            message = success_message(call.messages, call.operation)
        else:
            message = error_message(call.messages, call.operation, EwsError(*MULTIPLE))
            message.set("ResponseClass", "Warning")
        page = found[:CANDIDATE_LIMIT]
        resolutions = etree.SubElement(message, m("ResolutionSet"), TotalItemsInView=str(len(page)),
                                       IncludesLastItemInRange="true" if len(page) == len(found) else "false")
        for candidate in page:
            resolution = etree.SubElement(resolutions, t("Resolution"))
            _mailbox(resolution, candidate)
            if full:
                _full_contact(resolution, candidate)


def _group(call: "Call", wanted: str) -> Optional[DistributionGroup]:
    key = wanted.strip().lower()
    key = key[5:] if key.startswith("smtp:") else key
    groups = call.org.groups if call.org is not None else []
    return next((g for g in groups if key in (g.email, g.display_name.lower(), g.alias.lower())), None)


def expand_dl(call: "Call") -> None:
    """The members of a distribution group named by its address, alias or display name."""
    group = _group(call, call.request.findtext(f"{m('Mailbox')}/{t('EmailAddress')}") or "")
    if group is None or call.org is None:
        error_message(call.messages, call.operation, EwsError(*DL_NO_RESULTS))
        return
    members = [mb for address in group.members for mb in [call.org.find(address)] if mb is not None]
    message = success_message(call.messages, call.operation)
    expansion = etree.SubElement(message, m("DLExpansion"), TotalItemsInView=str(len(members)),
                                 IncludesLastItemInRange="true")
    for member in members:
        _mailbox(expansion, Candidate(member.display_name, member.email, "Mailbox", member))


OPERATIONS: Dict[str, Callable[["Call"], None]] = {"ResolveNames": resolve_names, "ExpandDL": expand_dl}
