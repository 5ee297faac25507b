"""HTTP as an Exchange 2013 CAS (IIS 8.5) speaks it, sans-IO: the request/response model the site and the faults
share, IIS's error bodies and header conventions, and the HTTP-level answers a fault may give."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from harness.hooks import hookspec

DEFAULT_AUTH_METHODS = ("Negotiate", "NTLM", "Basic")
# IISAuthenticationMethods' names -> the WWW-Authenticate schemes IIS offers for them, in IIS's order
IIS_SCHEMES = {"Negotiate": "Negotiate", "Ntlm": "NTLM", "Basic": "Basic"}


def iis_auth_schemes(methods: Sequence[str]) -> Tuple[str, ...]:
    """The schemes a virtual directory with these IISAuthenticationMethods offers (Negotiate, NTLM, Basic order)."""
    wanted = {m.lower() for m in methods}
    return tuple(scheme for name, scheme in IIS_SCHEMES.items() if name.lower() in wanted)
HTML = "text/html"
IIS_401 = (b'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
           b'"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\r\n<html><head><title>401 - Unauthorized: Access is '
           b'denied due to invalid credentials.</title></head><body><h2>401 - Unauthorized: Access is denied due to '
           b'invalid credentials.</h2><h3>You do not have permission to view this directory or page using the '
           b'credentials that you supplied.</h3></body></html>')
REASONS = {200: "OK", 301: "Moved Permanently", 302: "Found", 307: "Temporary Redirect", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           413: "Request Entity Too Large", 500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}
AUTODISCOVER_HEADERS = [("X-SOAP-Enabled", "True"), ("X-WSSecurity-Enabled", "True"), ("X-WSSecurity-For", "None"),
                        ("X-OAuth-Enabled", "True")]


@dataclass
class HttpRequest:
    method: str
    target: str
    path: str                 # percent-decoded path, case as sent
    query: str
    headers: List[Tuple[str, str]]
    body: bytes = b""
    scheme: str = "https"
    conn: Any = None          # the ConnectionInfo of the connection it came on
    response_headers: List[Tuple[str, str]] = field(default_factory=list)  # added to whatever answers it
    # header() and host are asked many times per request: the headers indexed by lower-cased name, made on first
    # use for this very list at this length (a list replaced or grown is indexed afresh;
    # the list is never edited in place)
    _index: Optional[Tuple[List[Tuple[str, str]], int, Dict[str, str]]] = field(default=None, init=False, repr=False,
                                                                               compare=False)

    def header(self, name: str) -> Optional[str]:
        """The value of header ``name`` (any case); repeated headers joined with ", "; None when absent."""
        return self._header_index().get(name.lower())

    def _header_index(self) -> Dict[str, str]:
        headers, index = self.headers, self._index
        if index is not None and index[0] is headers and index[1] == len(headers):
            return index[2]
        values: Dict[str, str] = {}
        for key, value in headers:
            key = key.lower()
            values[key] = values[key] + ", " + value if key in values else value
        self._index = (headers, len(headers), values)
        return values

    @property
    def host(self) -> str:
        value = self.header("host") or ""
        if value.startswith("["):
            return value[1:].split("]", 1)[0].lower()
        return value.rsplit(":", 1)[0].lower() if value.count(":") == 1 else value.lower()


@dataclass
class HttpResponse:
    status: int
    reason: str = ""
    headers: List[Tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    close: bool = False       # close the connection after sending
    chunks: Tuple[bytes, ...] = ()   # non-empty: sent Transfer-Encoding: chunked, one chunk each (body unused)
    # An open-ended chunked body (GetStreamingEvents): the head and ``chunks`` go out, then the edge starts this
    # object with a StreamIO (harness.services.web) that writes further chunks and ends the body.
    stream: Any = None

    def describe(self) -> str:
        return f"HTTP {self.status} {self.reason}, {len(self.body)} bytes" + (", then close" if self.close else "")


@dataclass
class ConnectionInfo:
    """Per-TCP-connection facts and state (auth state lives here: NTLM is connection-bound)."""
    peer: Tuple[str, int]
    local: Tuple[str, int]
    tls: bool
    sni: Optional[str] = None
    tls_version: Optional[str] = None
    conn_id: int = 0
    state: Dict[str, object] = field(default_factory=dict)   # what faults keep per connection, by their own keys
    host: Optional[str] = None          # the host whose dedicated address this came in on (None: the shared one)
    tls_profile: Optional[str] = None   # the TlsProfile served, described (harness.services.tls)
    bytes_out: int = 0                  # bytes of HTTP output handed on for sending so far


def iis_error_page(status: int, text: str) -> bytes:
    return (f"<!DOCTYPE html><html><head><title>{status} - {text}</title></head><body><h2>{status} - {text}</h2>"
            f"</body></html>").encode()


# http.sys answers a request it cannot parse itself, before IIS sees it: its own page, status and Server header.
HTTPSYS_CONTENT_TYPE = "text/html; charset=us-ascii"
HTTPSYS_SERVER = "Microsoft-HTTPAPI/2.0"
_HTTPSYS_ERRORS = {
    "bad_request": ("Bad Request", "HTTP Error 400. The request is badly formed."),
    "head_too_long": ("Bad Request - Request Too Long", "HTTP Error 400. The size of the request headers is too long."),
}


def httpsys_error_page(kind: str) -> bytes:
    """http.sys's 400 page: ``kind`` is "bad_request" or "head_too_long" (what a 431 hint becomes)."""
    heading, detail = _HTTPSYS_ERRORS[kind]
    return ('<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 4.01//EN""http://www.w3.org/TR/html4/strict.dtd">\r\n'
            '<HTML><HEAD><TITLE>Bad Request</TITLE>\r\n'
            '<META HTTP-EQUIV="Content-Type" Content="text/html; charset=us-ascii"></HEAD>\r\n'
            f'<BODY><h2>{heading}</h2>\r\n<hr><p>{detail}</p>\r\n</BODY></HTML>\r\n').encode("ascii")


def moved_page(location: str) -> bytes:
    """IIS's body for a 301/302."""
    return (f'<head><title>Document Moved</title></head><body><h1>Object Moved</h1>This document may be found '
            f'<a HREF="{location}">here</a></body>').encode()


@dataclass(frozen=True)
class HttpAnswer:
    """What a fault answers at the HTTP level; the site sends it with IIS's headers, as the real site would."""
    status: int
    body: bytes = b""
    content_type: str = HTML
    headers: Tuple[Tuple[str, str], ...] = ()
    reason: Optional[str] = None

    def describe(self) -> str:
        extra = "".join(f", {name}: {value}" for name, value in self.headers)
        return f"HTTP {self.status} {self.content_type}{extra}"


@dataclass(frozen=True)
class AuthOffer:
    """The ``auth_methods`` hook's answer: the schemes offered, and whether the server's NTLM/Negotiate token
    shares its header line with the other Windows scheme (Exchange's ``NTLM <token>, Negotiate`` form)."""
    methods: Tuple[str, ...]
    combined_challenge: bool = False

    def describe(self) -> str:
        return ", ".join(self.methods) + (" (combined challenge line)" if self.combined_challenge else "")


def combine_challenge(headers: List[Tuple[str, str]], methods: Sequence[str]) -> List[Tuple[str, str]]:
    """``NTLM <token>`` becomes ``NTLM <token>, Negotiate``: the token line also names the other Windows scheme."""
    combined = []
    for name, value in headers:
        scheme = value.split(" ", 1)[0]
        others = [m for m in methods if m in ("Negotiate", "NTLM") and m != scheme]
        combined.append((name, ", ".join([value] + others)))
    return combined


@hookspec(fires_in="services/site.py", means="the answer sent instead of routing the request (any site, any path)")
def http_request_hook(request: HttpRequest) -> Union[HttpAnswer, HttpResponse]: ...


@hookspec(fires_in="services/site.py", means="the WWW-Authenticate schemes offered for this request")
def auth_methods_hook(request: HttpRequest) -> AuthOffer: ...
