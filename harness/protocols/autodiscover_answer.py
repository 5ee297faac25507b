"""The answer every Autodiscover flavour returns (POX, SOAP, v2 JSON), sans-IO, and how it is rewritten.

An ``AutodiscoverAnswer`` carries the ``Flavour`` that built it, so a fault can refuse, redirect or edit an answer
without knowing which flavour it is: ``answer.refusal(600)`` is a POX Error or a SOAP InvalidRequest, and
``answer.edited(SettingsEdit(...))`` applies the POX part of the edit to a POX answer and the SOAP part to a SOAP
one. The flavours themselves live with their cores (``autodiscover.POX``, ``autodiscover_soap.SOAP``,
``autodiscover_json.JSON``). Also here: the XML plumbing POX, SOAP and EWS share, and the facts about a request
that a rewrite needs (the address asked about, where a redirect sends this client).
"""
from __future__ import annotations

import dataclasses
import re
import threading
from dataclasses import dataclass, field
from typing import ClassVar, Mapping, Optional, Tuple, Union
from urllib.parse import urlsplit, urlunsplit

from lxml import etree

from harness.hooks import hookspec
from harness.org import Mailbox
from harness.protocols.http import HttpAnswer, HttpRequest

XML_CONTENT_TYPE = "text/xml; charset=utf-8"
XML_DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>\n'
ENDPOINT_FILE = re.compile(r"autodiscover\.(xml|svc)$", re.IGNORECASE)


# ---- XML plumbing shared by POX, SOAP and EWS ---------------------------------------------------------------
_PARSERS = threading.local()   # lxml parsers are not thread-safe: one per thread (the server has one thread)


def parse_untrusted_xml(body: bytes) -> Optional[etree._Element]:
    """The root element of one well-formed document, or None. DTDs are refused (no entities, no network)."""
    parser = getattr(_PARSERS, "parser", None)
    if parser is None:   # made once per thread: building one per request cost ~5% of a POX answer
        parser = _PARSERS.parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                                                   huge_tree=False)
    try:
        root = etree.fromstring(body, parser)
    except (etree.XMLSyntaxError, ValueError, TypeError):
        return None
    if root is None or root.getroottree().docinfo.doctype:
        return None
    return root


def serialize(root: etree._Element) -> bytes:
    document: bytes = etree.tostring(root, encoding="utf-8")
    return XML_DECLARATION + document


def child(parent: etree._Element, tag: str, text: Optional[str] = None, **attrib: str) -> etree._Element:
    """A sub-element in the parent's namespace."""
    parent_tag = parent.tag  # "{namespace}local": slicing it is much cheaper than etree.QName on the hot path
    namespace = parent_tag[1:parent_tag.index("}")] if parent_tag[0] == "{" else None
    element = etree.SubElement(parent, f"{{{namespace}}}{tag}" if namespace else tag, attrib)
    if text is not None:
        element.text = text
    return element


def child_text(parent: etree._Element, namespace: str, tag: str) -> str:
    """Stripped text of the first child ``tag``; "" when absent or empty."""
    element = parent.find(f"{{{namespace}}}{tag}")
    return (element.text or "").strip() if element is not None else ""


# ---- what a rewrite needs to know about the request ----------------------------------------------------------
def requested_address(body: bytes) -> str:
    """The address a POX (EMailAddress) or SOAP (Mailbox) request asks about, lower-cased; "" if none."""
    root = parse_untrusted_xml(body)
    if root is None:
        return ""
    for element in root.iter():
        if isinstance(element.tag, str) and etree.QName(element).localname in ("EMailAddress", "Mailbox"):
            return (element.text or "").strip().lower()
    return ""


def port_suffix(request: HttpRequest) -> str:
    """':port' of the Host header the client sent, '' for 443 (tests run on ephemeral ports)."""
    host = request.header("host") or ""
    port = host.rsplit(":", 1)[1] if host.count(":") == 1 else ""
    return f":{port}" if port and port != "443" else ""


def same_place(request: HttpRequest, url: str) -> bool:
    """Whether ``url`` is the URL this request was sent to (a redirect there would loop at once)."""
    parts = urlsplit(url)
    return (parts.scheme == request.scheme and (parts.hostname or "").lower() == request.host
            and parts.path.lower() == request.path.lower())


# ---- flavours and edits --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SettingsEdit:
    """A change to a settings answer, said once for both XML flavours; each applies the part that concerns it.

    POX: ``drop`` paths name Account Protocol blocks by Type ("EXPR") or elements inside them ("EXPR/EwsUrl").
    SOAP, in every UserResponse: ``unavailable`` settings become SettingIsNotAvailable errors, ``failed`` ones
    (name -> (ErrorCode, message)) other UserSettingErrors; ``replace`` sets the value of settings present, ``add``
    appends settings absent. Names the answer does not hold (or already holds, for ``add``) are left alone.
    """
    drop: Tuple[str, ...] = ()
    unavailable: Tuple[str, ...] = ()
    failed: Mapping[str, Tuple[str, str]] = field(default_factory=dict)
    replace: Mapping[str, str] = field(default_factory=dict)
    add: Mapping[str, str] = field(default_factory=dict)


class Flavour:
    """One Autodiscover flavour: the file name its redirects use, and how its answers are refused, redirected and
    edited. This base rewrites nothing (every method means "leave the answer alone"): it is the flavour of v2 JSON
    answers, which the v1 faults never touch; POX and SOAP override it."""
    editable: ClassVar[bool] = False    # answers are XML documents the methods below may edit

    def __init__(self, name: str, redirect_file: str = "autodiscover.xml") -> None:
        self.name = name
        self.redirect_file = redirect_file  # redirect targets name this file (autodiscover.xml or .svc)

    def __repr__(self) -> str:
        return f"<{self.name} flavour>"

    def refusal(self, pox_code: int) -> Optional[AutodiscoverAnswer]:
        """The answer refusing the address with POX ErrorCode ``pox_code``, or this flavour's equivalent."""
        return None

    def redirect(self, action: str, target: str) -> Optional[AutodiscoverAnswer]:
        """The answer sending the client elsewhere: ``action`` "redirectAddr" (to another address) or
        "redirectUrl" (the same request to another URL)."""
        return None

    def edit_settings(self, document: etree._Element, edit: SettingsEdit) -> bool:
        """Apply this flavour's part of ``edit`` to a settings document in place; whether anything changed."""
        return False

    def swap_schema(self, document: etree._Element) -> Optional[str]:
        """Put the Response in the other provider's namespace in place; that namespace, or None."""
        return None


@dataclass
class AutodiscoverAnswer:
    status: int                       # HTTP status
    body: bytes
    content_type: str
    outcome: str                      # "settings", "error", "redirectAddr", "redirectUrl", "fault"
    error_code: str = ""              # "600", "InvalidUser", "ProtocolNotSupported", ...
    detail: str = ""                  # human reason, for the transcript
    mailbox: Optional[Mailbox] = None  # the mailbox the answer is about
    flavour: Flavour = field(kw_only=True, repr=False)

    def describe(self) -> str:
        """A fault firing's effect: never the body or the mailbox (whose record holds the password)."""
        what = f"{self.outcome} {self.error_code}".strip()
        return f"HTTP {self.status} {self.content_type}, {what}" + (f": {self.detail}" if self.detail else "")

    def refusal(self, pox_code: int) -> Optional[AutodiscoverAnswer]:
        """This flavour's answer for POX ErrorCode ``pox_code`` (None for JSON)."""
        return self.flavour.refusal(pox_code)

    def redirect_to_address(self, address: str) -> Optional[AutodiscoverAnswer]:
        """POX redirectAddr / SOAP RedirectAddress to ``address`` (None for JSON)."""
        return self.flavour.redirect("redirectAddr", address)

    def redirect_to_url(self, url: str) -> Optional[AutodiscoverAnswer]:
        """POX redirectUrl / SOAP RedirectUrl to ``url`` (None for JSON)."""
        return self.flavour.redirect("redirectUrl", url)

    def redirect_location(self, request: HttpRequest, url: str) -> str:
        """Where a redirect to ``url`` sends the client of ``request``. ``url`` is a path on the host that was
        asked, or an absolute URL; an https URL without a port gets the port the client used. The file name becomes
        this flavour's (autodiscover.xml or .svc), so one scenario serves POX and SOAP clients."""
        if url.startswith("/"):
            url = f"https://{request.host}{port_suffix(request)}{url}"
        parts = urlsplit(url)
        if parts.scheme == "https" and parts.port is None:
            parts = parts._replace(netloc=parts.netloc + port_suffix(request))
        return urlunsplit(parts._replace(path=ENDPOINT_FILE.sub(self.flavour.redirect_file, parts.path)))

    def truncated(self, keep: float) -> AutodiscoverAnswer:
        """The first ``keep`` (a fraction) of the body, as a proxy that cuts answers short sends it."""
        body = self.body[:int(len(self.body) * keep)]
        return dataclasses.replace(self, body=body, outcome="malformed",
                                   detail=f"cut to {len(body)} of {len(self.body)} bytes")

    def edited(self, edit: SettingsEdit, by: str) -> Optional[AutodiscoverAnswer]:
        """This settings answer changed as ``edit`` says (``by`` is noted in the detail); None when that changes
        nothing or this is no POX/SOAP settings answer."""
        document = self._settings_document()
        if document is None or not self.flavour.edit_settings(document, edit):
            return None
        return dataclasses.replace(self, body=serialize(document), detail=f"{self.detail}; edited by {by}")

    def in_other_schema(self) -> Optional[AutodiscoverAnswer]:
        """This POX settings answer with its Response in the other provider's namespace (Outlook's settings in the
        mobilesync schema and vice versa); None for any other answer."""
        document = self._settings_document()
        wrong = None if document is None else self.flavour.swap_schema(document)
        if document is None or wrong is None:
            return None
        return dataclasses.replace(self, body=serialize(document), outcome="wrong-schema",
                                   detail=f"Response in {wrong}")

    def _settings_document(self) -> Optional[etree._Element]:
        """The body parsed, when this is a settings answer of a flavour that edits its documents; else None."""
        if not self.flavour.editable or self.outcome != "settings":
            return None
        return parse_untrusted_xml(self.body)


@hookspec(fires_in="services/site.py", means="the Autodiscover answer (POX, SOAP or JSON) sent instead of the real one")
def autodiscover_hook(request: HttpRequest, answer: AutodiscoverAnswer) -> Union[AutodiscoverAnswer, HttpAnswer]: ...
