"""A request head of the common shape, read without h11: the HTTP connection core's fast path, sans-IO.

What Outlook, EWS clients and Autodiscover probes send - an HTTP/1.1 request line with an origin- or absolute-form
target, CRLF header lines of h11's own grammar (token, ``:``, optional whitespace, field value), one Host, at most one
plain Content-Length within the body limit (an RPC over HTTP channel's, which declares 1 GiB, has none) - is read
here with a regular expression, to exactly what h11 would make of it. Anything else answers FALL_BACK and h11 reads
the connection from there on, so every refusal, limit and oddity (HTTP/1.0, chunked bodies, Expect: 100-continue,
obs-fold, bare LF, Upgrade, CONNECT, a channel saying Connection: close, malformed or oversized heads) stays h11's.
Only a head h11 accepts as it stands is ever read here (tests/test_httphead.py).
"""
from __future__ import annotations

import re
from typing import Any, List, Tuple, Union
from urllib.parse import unquote

import h11

from harness.protocols.http import HttpRequest
from harness.protocols.httpactions import TUNNEL_METHODS

# h11's grammar (h11/_abnf.py) as a str pattern over the latin-1 decoded head. A header line is ``token ":" OWS
# field-value OWS``, a field value runs of [^\x00\s] parted by spaces and tabs: so after the colon any run of bytes
# but NUL, CR, LF, VT and FF is a header's value with optional whitespace around it, which is what h11 strips.
_TOKEN = r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_HEAD = re.compile(rf"({_TOKEN}) ([\x21-\x7e]+) HTTP/1\.1\r\n((?:{_TOKEN}:[^\x00\n\r\x0b\x0c]*\r\n)*)\r\n")
_BLANK_LINE = re.compile(rb"\n\r?\n")   # where h11 finds the end of a head (it takes a bare LF too)
_CONTENT_LENGTH_MAX_DIGITS = 20         # h11's bound
# Headers h11 acts on, which send the connection to h11 (Host and Content-Length are checked here)
_H11_HEADERS = frozenset(("transfer-encoding", "expect", "upgrade"))


class _FallBack:
    def __repr__(self) -> str:
        return "FALL_BACK"


FALL_BACK = _FallBack()


class Head:
    """A whole request head of the common shape: what h11 would have made of it, and where its message ends."""
    __slots__ = ("method", "target", "headers", "head_size", "end", "close")

    def __init__(self, method: str, target: str, headers: List[Tuple[str, str]], head_size: int, end: int,
                 close: bool) -> None:
        self.method = method
        self.target = target
        self.headers = headers          # (name as sent, value without surrounding whitespace), as h11's raw_items
        self.head_size = head_size      # bytes of the head on the wire
        self.end = end                  # bytes of head and body
        self.close = close              # the client said Connection: close


def read_head(data: Union[bytes, bytearray], max_header_bytes: int, max_body_bytes: int, searched: int = 0
              ) -> Union[Head, None, _FallBack]:
    """The head at the start of ``data``: a Head, None while it is incomplete (and h11 would wait too), or FALL_BACK
    when h11 must read it (it may refuse it, or it is of a shape only h11 handles). ``searched``: where the search
    for its end goes on (the bytes before were searched already)."""
    found = _BLANK_LINE.search(data, searched)
    if found is None:
        if not data:
            return None
        # h11 refuses at once a line that cannot start a request, and an incomplete head over the limit (431)
        return FALL_BACK if data[0] < 0x21 or len(data) > max_header_bytes else None
    size = found.end()
    if size > max_header_bytes:
        return FALL_BACK   # h11 measures it and may refuse it (431)
    head = _HEAD.fullmatch(data[:size].decode("latin-1"))
    if head is None:
        return FALL_BACK
    method, target, fields = head.groups()
    if method == "CONNECT":
        return FALL_BACK
    headers = []
    hosts, length, close = 0, None, False
    for line in fields.split("\r\n")[:-1]:
        name, value = line.split(":", 1)   # a token holds no colon
        value = value.strip(" \t")
        headers.append((name, value))
        lowered = name.lower()
        if lowered == "host":
            hosts += 1
        elif lowered == "content-length":
            if (length is not None or not value.isascii() or not value.isdigit()
                    or len(value) > _CONTENT_LENGTH_MAX_DIGITS):
                return FALL_BACK
            length = int(value)
        elif lowered == "connection":
            # h11's get_comma_header: lower-cased (ASCII), split at commas, ASCII whitespace stripped
            close = close or "close" in [token.strip(" \t\n\r\x0b\x0c") for token in value.lower().split(",")]
        elif lowered in _H11_HEADERS and not (lowered == "expect" and method in TUNNEL_METHODS):
            return FALL_BACK   # (a channel's Expect, as impacket sends it, changes nothing: no 100 Continue goes out)
    if hosts != 1 or (length is not None and length > max_body_bytes and method not in TUNNEL_METHODS):
        return FALL_BACK   # h11 refuses a missing or repeated Host; the app words the 413 (a channel has no limit)
    if close and method in TUNNEL_METHODS:
        return FALL_BACK   # to h11 a byte past such a channel's body is one after the client's close: malformed
    return Head(method, target, headers, size, size + (length or 0), close)


def request_from(method: str, target: str, headers: List[Tuple[str, str]], scheme: str, conn: Any) -> HttpRequest:
    """The HttpRequest of a head (its body comes later)."""
    raw_path, _, query = target.partition("?")
    if raw_path.startswith(("http://", "https://")):  # absolute-form target (proxies)
        raw_path = "/" + raw_path.split("/", 3)[3] if raw_path.count("/") >= 3 else "/"
    return HttpRequest(method=method, target=target, path=unquote(raw_path), query=query, headers=headers,
                       scheme=scheme, conn=conn)


def decoded_headers(event: h11.Request) -> Tuple[List[Tuple[str, str]], int]:
    """The header fields as str, and the size of the request line and header lines as sent, give or take optional
    whitespace around header values (one pass: both are wanted for every request)."""
    headers = []
    size = len(event.method) + len(event.target) + len(b"  HTTP/1.1\r\n\r\n")
    for name, value in event.headers.raw_items():
        size += len(name) + len(value) + 4   # ": " and CRLF
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    return headers, size
