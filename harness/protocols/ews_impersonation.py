"""The ExchangeImpersonation SOAP header, sans-IO: which mailbox an EWS request acts on.

Exchange grants impersonation through the ApplicationImpersonation role; the org fixture grants it per mailbox
(``impersonates: [alice@contoso.test]``, or ``["*"]`` for every mailbox). Refusals are SOAP faults, as Exchange
sends them: ErrorImpersonateUserDenied for a mailbox the caller may not impersonate, ErrorNonExistentMailbox for an
address with no mailbox, ErrorInvalidExchangeImpersonationHeaderData for a header naming nobody.
"""
from __future__ import annotations

from typing import Optional

from lxml import etree

from harness.org import Org
from harness.protocols.autodiscover_soap import SOAP_NS
from harness.protocols.ews_xml import EwsFault, t

DENIED = ("ErrorImpersonateUserDenied", "The account does not have permission to impersonate the requested user.")
NO_MAILBOX = ("ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it.")
BAD_HEADER = ("ErrorInvalidExchangeImpersonationHeaderData", "The impersonation header data is invalid.")
# ConnectingSID's choices, the ones naming a mailbox by address or name (a SID is not resolved).
_NAMES = ("PrimarySmtpAddress", "SmtpAddress", "PrincipalName")


def acting_mailbox(org: Org, root: etree._Element, email: Optional[str]) -> Optional[str]:
    """The address the request acts on: the authenticated `email`, or the mailbox it may impersonate (EwsFault)."""
    header = root.find(f"{{{SOAP_NS}}}Header/{t('ExchangeImpersonation')}")
    if header is None:
        return email
    sid = header.find(t("ConnectingSID"))
    name = next((sid.findtext(t(n)) for n in _NAMES if sid is not None and sid.findtext(t(n))), None)
    if not name or not name.strip():
        raise EwsFault(*BAD_HEADER)
    target = org.find(name)
    if target is None:
        raise EwsFault(*NO_MAILBOX)
    caller = org.find(email or "")
    if caller is None:
        raise EwsFault(*DENIED)
    if target.email == caller.email or "*" in caller.impersonates or target.email in caller.impersonates:
        return target.email
    raise EwsFault(*DENIED)
