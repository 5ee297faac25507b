"""The client half of POX Autodiscover: the Outlook request and what a response means to Outlook."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Union
from xml.sax.saxutils import escape

from harness.probe.report import StepFailed
from harness.protocols.autodiscover import (
    OUTLOOK_REQUEST_NS,
    OUTLOOK_RESPONSE_NS,
    RESPONSE_NS,
    child_text,
    parse_untrusted_xml,
)
from harness.verdicts import REASONS

REQUEST_HEADERS = [("Content-Type", "text/xml; charset=utf-8"), ("X-ClientCanHandle", "Negotiate, ExHttpInfo")]
# Outlook 2013 SP1 and later say they speak MAPI over HTTP; Exchange then adds the mapiHttp block (when enabled)
MAPI_HTTP_CAPABILITY = ("X-MapiHttpCapability", "1")


def request_body(email: str) -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<Autodiscover xmlns="{OUTLOOK_REQUEST_NS}"><Request>'
            f"<EMailAddress>{escape(email)}</EMailAddress>"
            f"<AcceptableResponseSchema>{OUTLOOK_RESPONSE_NS}</AcceptableResponseSchema>"
            f"</Request></Autodiscover>").encode()


@dataclass(frozen=True)
class OutlookSettings:
    """What the probe needs from an Action=settings answer (EXCH + EXPR + User)."""
    email: str
    display_name: str
    legacy_dn: str
    rpc_server: str           # EXCH Server: <mailbox GUID>@<domain> on Exchange 2013
    server_dn: str
    mdb_dn: str
    proxy_host: str           # EXPR Server
    ssl: bool
    auth_package: str         # Basic | Ntlm | Negotiate
    cert_principal_name: str
    server_version: str = ""  # EXCH ServerVersion (hex): the mailbox's home server build
    ews_url: str = ""         # EXPR EwsUrl (else EXCH's): where the EWS test goes
    mapi_mailstore_url: str = ""  # mapiHttp MailStore ExternalUrl (https://<host>/mapi/emsmdb/?MailboxId=...)
    mapi_addressbook_url: str = ""  # mapiHttp AddressBook ExternalUrl (https://<host>/mapi/nspi/?MailboxId=...)

    @property
    def home_major(self) -> Optional[int]:
        """The home server's major version (15: 2013, 14: 2010, 8: 2007), None when Autodiscover gave none."""
        try:
            return (int(self.server_version, 16) >> 22) & 0x3F
        except ValueError:
            return None

    @property
    def legacy_homed(self) -> bool:
        """Homed on Exchange 2007/2010: the 2013 CAS proxies this mailbox's Outlook Anywhere to a legacy CAS."""
        major = self.home_major
        return major is not None and major < 15

    def evidence(self) -> Dict[str, object]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class RedirectAddr:
    address: str


@dataclass(frozen=True)
class RedirectUrl:
    url: str


Answer = Union[OutlookSettings, RedirectAddr, RedirectUrl]


def parse_response(body: bytes, email: str) -> Answer:
    """Interpret a 200 POX answer; anything Outlook could not use raises StepFailed with the reason."""
    root = parse_untrusted_xml(body)
    if root is None or root.tag != f"{{{RESPONSE_NS}}}Autodiscover":
        raise StepFailed("malformed-response", "the answer is not Autodiscover XML" + _peek(body))
    error = root.find(f"{{{RESPONSE_NS}}}Response/{{{RESPONSE_NS}}}Error")
    if error is not None:
        code = child_text(error, RESPONSE_NS, "ErrorCode")
        message = child_text(error, RESPONSE_NS, "Message")
        reason = f"autodiscover-error-{code}"
        raise StepFailed(reason if reason in REASONS else "malformed-response",
                         f"Autodiscover error {code}: {message}", error_code=code, error_message=message)
    response = root.find(f"{{{OUTLOOK_RESPONSE_NS}}}Response")
    account = response.find(f"{{{OUTLOOK_RESPONSE_NS}}}Account") if response is not None else None
    if account is None:
        raise StepFailed("malformed-response", "the answer has no Outlook Response/Account")
    action = child_text(account, OUTLOOK_RESPONSE_NS, "Action")
    if action == "redirectAddr":
        return RedirectAddr(_required(account, "RedirectAddr"))
    if action == "redirectUrl":
        return RedirectUrl(_required(account, "RedirectUrl"))
    if action != "settings":
        raise StepFailed("malformed-response", f"unknown Action {action!r}")
    protocols = {child_text(p, OUTLOOK_RESPONSE_NS, "Type"): p
                 for p in account.findall(f"{{{OUTLOOK_RESPONSE_NS}}}Protocol")}
    expr, exch = protocols.get("EXPR"), protocols.get("EXCH")
    mapi = next((p for p in account.findall(f"{{{OUTLOOK_RESPONSE_NS}}}Protocol") if p.get("Type") == "mapiHttp"),
                None)
    store = mapi.find(f"{{{OUTLOOK_RESPONSE_NS}}}MailStore") if mapi is not None else None
    book = mapi.find(f"{{{OUTLOOK_RESPONSE_NS}}}AddressBook") if mapi is not None else None
    # a client that speaks MAPI over HTTP needs no Outlook Anywhere provider when the MailStore URL is there
    if (expr is None or not child_text(expr, OUTLOOK_RESPONSE_NS, "Server")) and (
            store is None or not child_text(store, OUTLOOK_RESPONSE_NS, "ExternalUrl")):
        raise StepFailed("no-expr", "the settings have no EXPR (Outlook Anywhere) provider",
                         protocols=sorted(p for p in protocols if p))
    user = response.find(f"{{{OUTLOOK_RESPONSE_NS}}}User")

    def text(element, tag: str) -> str:
        return child_text(element, OUTLOOK_RESPONSE_NS, tag) if element is not None else ""

    return OutlookSettings(
        email=text(user, "AutoDiscoverSMTPAddress") or email, display_name=text(user, "DisplayName"),
        legacy_dn=text(user, "LegacyDN"), rpc_server=text(exch, "Server"), server_dn=text(exch, "ServerDN"),
        mdb_dn=text(exch, "MdbDN"), proxy_host=text(expr, "Server"), ssl=text(expr, "SSL").lower() != "off",
        auth_package=text(expr, "AuthPackage") or "Basic", cert_principal_name=text(expr, "CertPrincipalName"),
        server_version=text(exch, "ServerVersion"), ews_url=text(expr, "EwsUrl") or text(exch, "EwsUrl"),
        mapi_mailstore_url=text(store, "ExternalUrl") or text(store, "InternalUrl"),
        mapi_addressbook_url=text(book, "ExternalUrl") or text(book, "InternalUrl"))


def _required(account, tag: str) -> str:
    value = child_text(account, OUTLOOK_RESPONSE_NS, tag)
    if not value:
        raise StepFailed("malformed-response", f"the redirect has an empty {tag}")
    return value


def _peek(body: bytes) -> str:
    start = body[:60].decode("utf-8", "replace").strip().replace("\n", " ")
    return f" (starts {start!r})" if start else " (empty body)"


def auth_scheme_for(auth_package: str) -> str:
    """The HTTP scheme Outlook uses on /rpc for an EXPR AuthPackage."""
    return {"basic": "Basic", "ntlm": "NTLM", "negotiate": "Negotiate"}.get(auth_package.lower(), "NTLM")


def principal_host(cert_principal_name: str) -> Optional[str]:
    """'msstd:mail.contoso.com' -> 'mail.contoso.com'; None for 'None' or an empty value."""
    if cert_principal_name.lower().startswith("msstd:"):
        return cert_principal_name[6:].strip() or None
    return None
