"""The responses of the HTTP connection core (harness.protocols.httpconn) as bytes on the wire, sans-IO.

Every response goes out whole in one piece, with IIS's framing: Content-Length, or chunked for a response made of
chunks or open-ended. The bytes are exactly h11's (h11 frames them, keeping its state machine: keep-alive, HEAD,
its own Connection: close), but h11 re-validates every header of every answer, twice; so the app's header lines
are validated and encoded here, once per distinct (name, value) (``header_line``), and h11 frames a Response of
the framing headers alone. Anything out of the ordinary goes the whole way through h11 (``encode_through_h11``).

A connection whose requests were read without h11 (harness.protocols.httphead) has no h11 to frame with: ``frame``
writes what h11 would, to an HTTP/1.1 request that h11 accepted as it stands, for the ordinary answer, and says
None for anything else (the core then hands the connection to h11 and uses ``encode``).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

import h11

from harness.protocols.http import HttpResponse

FRAMING_HEADERS = ("content-length", "transfer-encoding")   # the core frames every response itself


def encode(conn: h11.Connection, response: HttpResponse, close: bool, head_only: bool,
           open_ended: bool = False) -> bytes:
    """The whole response in one piece through ``conn`` (h11 in SEND_RESPONSE); an open-ended one without its end.

    h11 frames a Response of the framing headers alone and its lines go after the app's, where it would put them.
    A header h11 would move or rewrite, or one it would refuse, goes the whole way through h11, which raises exactly
    as it would (h11.LocalProtocolError, UnicodeEncodeError): the response cannot be sent."""
    status = response.status
    lines = []
    for name, value in response.headers:
        line = _HEADER_LINES.get((name, value))
        if line is None:
            line = header_line(name, value)
            if line is None:
                return encode_through_h11(conn, response, close, head_only, open_ended)
        if line:   # b"": a framing header, which the core sets itself
            lines.append(line)
    if type(status) is not int or not 200 <= status < 1000:
        return encode_through_h11(conn, response, close, head_only, open_ended)
    reason = response.reason.encode("latin-1")
    framing = _framing(response)
    if close:
        framing.append((b"Connection", b"close"))
    sent = conn.send(h11.Response(status_code=status, reason=reason, headers=framing))
    status_line = len(b"HTTP/1.1 %d %s\r\n" % (status, reason))
    data = b"".join([sent[:status_line], *lines, sent[status_line:]])
    return data + _send_body(conn, response, head_only, open_ended)


def frame(response: HttpResponse, close: bool, head_only: bool, open_ended: bool, client_close: bool
          ) -> Optional[bytes]:
    """The response as h11 sends it to an HTTP/1.1 request (``client_close``: that request said Connection: close),
    an open-ended one without its end; None when only h11 may frame it (a status it treats apart, a header it would
    move, rewrite or refuse)."""
    status = response.status
    if type(status) is not int or not 200 <= status < 1000 or status == 204 or status == 304:
        return None   # h11 frames 204 and 304 without a body whatever the headers say
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, response.reason.encode("latin-1"))]
    for name, value in response.headers:
        line = _HEADER_LINES.get((name, value))
        if line is None:
            line = header_line(name, value)
            if line is None:
                return None
        if line:
            lines.append(line)
    chunked = bool(response.chunks) or response.stream is not None
    if not chunked:
        lines.append(b"Content-Length: %d\r\n" % len(response.body))
        if close or client_close:
            lines.append(b"Connection: close\r\n")
    elif close and not client_close:   # h11's clean-up moves Transfer-Encoding last, then a Connection it rewrites
        lines.append(b"Connection: close\r\nTransfer-Encoding: chunked\r\n")
    else:
        lines.append(b"Transfer-Encoding: chunked\r\nConnection: close\r\n" if close or client_close
                     else b"Transfer-Encoding: chunked\r\n")
    lines.append(b"\r\n")
    if head_only:
        pass
    elif not chunked:
        lines.append(response.body)
    else:
        lines.extend(chunk(part) for part in response.chunks if part)
        if not open_ended:
            lines.append(LAST_CHUNK)
    return b"".join(lines)


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body, as h11 writes it."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def encode_through_h11(conn: h11.Connection, response: HttpResponse, close: bool, head_only: bool,
                       open_ended: bool = False) -> bytes:
    """The same bytes, every header through h11 (its validation errors are the answer to an unsendable one)."""
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers
               if k.lower() not in FRAMING_HEADERS]
    headers.extend(_framing(response))
    if close:
        headers.append((b"Connection", b"close"))
    data = conn.send(h11.Response(status_code=response.status, reason=response.reason.encode("latin-1"),
                                  headers=headers))
    return data + _send_body(conn, response, head_only, open_ended)


def _send_body(conn: h11.Connection, response: HttpResponse, head_only: bool, open_ended: bool = False) -> bytes:
    data = b""
    if not head_only:
        for part in response.chunks or ((response.body,) if response.body else ()):
            data += conn.send(h11.Data(data=part))
    return data if open_ended else data + conn.send(h11.EndOfMessage())


def _framing(response: HttpResponse) -> List[Tuple[bytes, bytes]]:
    """Content-Length, or chunked for a response made of chunks (MAPI/HTTP's PROCESSING ... DONE) or open-ended."""
    if response.chunks or response.stream is not None:
        return [(b"Transfer-Encoding", b"chunked")]
    return [(b"Content-Length", b"%d" % len(response.body))]


# Header lines as h11 writes them, by (name, value); bounded: unique values (request-id, Date) would grow it forever,
# so it is emptied when full (one re-validation per distinct header every _HEADER_LINES_MAX answers). Pure values:
# shared by every connection of the process.
_HEADER_LINES: Dict[Tuple[Any, Any], bytes] = {}
_HEADER_LINES_MAX = 512
_HEADER_LINE_CACHED = 1024   # longer lines (a fault's huge header) are checked every time, not kept
# h11's own grammar for what it sends (h11/_abnf.py: token, field_value): a name or value outside it is refused.
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
_H11_REWRITES = ("connection", "host")   # h11 moves (Host first) or rewrites (Connection: close) these


def header_line(name: Any, value: Any) -> Optional[bytes]:
    """``name: value`` CRLF as h11 writes it, b"" for a framing header the core sets itself, None when h11 must judge
    it (a header it would refuse, move or rewrite, or not a str pair). Remembered in _HEADER_LINES."""
    if type(name) is not str or type(value) is not str:
        return None
    lowered = name.lower()
    if lowered in FRAMING_HEADERS:
        line = b""
    elif lowered in _H11_REWRITES:
        return None
    else:
        try:
            raw_name, raw_value = name.encode("latin-1"), value.encode("latin-1")
        except UnicodeEncodeError:
            return None
        if _TOKEN.fullmatch(raw_name) is None or _FIELD_VALUE.fullmatch(raw_value) is None:
            return None
        line = b"%s: %s\r\n" % (raw_name, raw_value)
    if len(line) <= _HEADER_LINE_CACHED:
        if len(_HEADER_LINES) >= _HEADER_LINES_MAX:
            _HEADER_LINES.clear()
        _HEADER_LINES[(name, value)] = line
    return line
