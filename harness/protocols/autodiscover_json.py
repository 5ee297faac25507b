"""Autodiscover v2 (JSON), sans-IO: GET /autodiscover/autodiscover.json/v1.0/<smtp>?Protocol=<name> and
GET /autodiscover/autodiscover.json?Email=<smtp>&Protocol=<name>.

Exchange 2016+ and Exchange Online serve it anonymously; whether a persona offers it at all (Exchange 2013 does
not) is the HTTP layer's choice. Error bodies and HTTP 400 follow Exchange Online. An address that is not a
mailbox of the org answers 404 with ErrorCode "UserNotFound": Exchange Online's answer there is not documented,
so the mock picks the plain "nothing here" reading.
"""
from __future__ import annotations

import json
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import unquote

from harness.org import Org
from harness.protocols.autodiscover_answer import AutodiscoverAnswer, Flavour
from harness.protocols.siteurls import SiteUrls

JSON_CONTENT_TYPE = "application/json; charset=utf-8"
ENDPOINT = "/autodiscover/autodiscover.json"
VERSIONED_PREFIX = ENDPOINT + "/v1.0/"

# lower-case query value -> (canonical name, URL it resolves to)
PROTOCOLS: Dict[str, Tuple[str, Callable[[SiteUrls], str]]] = {
    "activesync": ("ActiveSync", lambda urls: urls.activesync_url),
    "autodiscoverv1": ("AutodiscoverV1", lambda urls: urls.autodiscover_url),
    "ews": ("Ews", lambda urls: urls.ews_url),
}
SUPPORTED = ",".join(name for name, _ in PROTOCOLS.values())
JSON = Flavour("json")  # the base flavour: the v1 faults that refuse, redirect or edit answers leave these alone


def _body(document: Dict[str, str]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def json_error(status: int, code: str, message: str) -> AutodiscoverAnswer:
    """An Exchange Online style error body: {"ErrorCode": ..., "ErrorMessage": ...}."""
    return AutodiscoverAnswer(status=status, body=_body({"ErrorCode": code, "ErrorMessage": message}),
                              content_type=JSON_CONTENT_TYPE, outcome="error", error_code=code, detail=message,
                              flavour=JSON)


def _first(query: Dict[str, List[str]], name: str) -> str:
    """First value of a query parameter, matched case-insensitively as ASP.NET does."""
    for key, values in query.items():
        if key.lower() == name and values:
            return values[0].strip()
    return ""


def _address(path: str, query: Dict[str, List[str]]) -> Optional[str]:
    """The e-mail address the request asks about, or None when the path has neither valid form."""
    lowered = path.lower()
    if lowered.startswith(VERSIONED_PREFIX):
        address = unquote(path[len(VERSIONED_PREFIX):]).strip()
    elif lowered.rstrip("/") == ENDPOINT:
        address = _first(query, "email")
    else:
        return None
    local, _, domain = address.partition("@")
    return address if local and domain and "/" not in address else None


def respond_json(org: Org, path: str, query: Dict[str, List[str]], urls: SiteUrls) -> AutodiscoverAnswer:
    """Answer one v2 request. Never raises; ``path`` is the request path (any case, query string optional)."""
    path = path.partition("?")[0]
    if not path.lower().startswith(ENDPOINT):
        return json_error(404, "NotFound", f"{path!r} is not the Autodiscover v2 endpoint.")
    address = _address(path, query)
    if address is None:
        return json_error(400, "MandatoryParameterMissing", "The get request sent does not match the valid format.")
    protocol = _first(query, "protocol")
    if not protocol:
        return json_error(400, "MissingProtocol", "A valid value must be provided for the query parameter 'Protocol'.")
    if protocol.lower() not in PROTOCOLS:
        return json_error(400, "ProtocolNotSupported", f"Protocol: The protocol '{protocol}' is not supported. "
                                                       f"Supported protocols are: '{SUPPORTED}'.")
    mailbox = org.find(address)
    if mailbox is None:
        return json_error(404, "UserNotFound", f"The user '{address}' was not found.")
    name, url_of = PROTOCOLS[protocol.lower()]
    url = url_of(urls)
    return AutodiscoverAnswer(status=200, body=_body({"Protocol": name, "Url": url}), content_type=JSON_CONTENT_TYPE,
                              outcome="settings", detail=f"{name} for {mailbox.email}: {url}", mailbox=mailbox,
                              flavour=JSON)
