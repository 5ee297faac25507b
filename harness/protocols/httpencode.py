"""The bytes of one HTTP response as IIS frames it (always Content-Length, or chunked for a response made of chunks),
sans-IO: h11 frames, this module validates and encodes the app's header lines once per distinct (name, value).
Used by the connection core (harness.protocols.httpconn), which owns the h11 connection and its state."""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

import h11

from harness.protocols.http import HttpResponse

_FRAMING_HEADERS = ("content-length", "transfer-encoding")   # the core frames every response itself


def encode_response(connection: h11.Connection, response: HttpResponse, close: bool, head_only: bool,
                    end: bool = True) -> bytes:
    """The response in one piece: the app's headers with IIS's framing (Content-Length, or chunked for chunks);
    ``end`` False: without its end (a response in parts: its later chunks go through ``connection`` themselves).

    The bytes are exactly h11's, but h11 re-validates every header of every answer (twice: its clean-up builds a
    second Response). So the app's header lines are validated and encoded here, once per distinct (name, value)
    (see ``_header_line``), and h11 frames a Response of the framing headers alone: it keeps its state machine
    (keep-alive, HEAD, its own Connection: close) and its lines go after the app's, where it would put them.
    Anything out of the ordinary - a header h11 would move or rewrite, or one it would refuse - goes the whole
    way through h11 (``_encode_through_h11``), which raises exactly as before."""
    status = response.status
    lines = []
    for name, value in response.headers:
        line = _HEADER_LINES.get((name, value))
        if line is None:
            line = _header_line(name, value)
            if line is None:
                return _encode_through_h11(connection, response, close, head_only, end)
        if line:   # b"": a framing header, which the core sets itself
            lines.append(line)
    if type(status) is not int or not 200 <= status < 1000:
        return _encode_through_h11(connection, response, close, head_only, end)
    reason = response.reason.encode("latin-1")
    framing = _framing(response)
    if close:
        framing.append((b"Connection", b"close"))
    sent = connection.send(h11.Response(status_code=status, reason=reason, headers=framing))
    status_line = len(b"HTTP/1.1 %d %s\r\n" % (status, reason))
    data = b"".join([sent[:status_line], *lines, sent[status_line:]])
    return data + encode_body(connection, response, head_only, end)


def encode_body(connection: h11.Connection, response: HttpResponse, head_only: bool, end: bool = True) -> bytes:
    data = b""
    if not head_only:
        for part in response.chunks or ((response.body,) if response.body else ()):
            data += connection.send(h11.Data(data=part))
    return data + connection.send(h11.EndOfMessage()) if end else data


def _encode_through_h11(connection: h11.Connection, response: HttpResponse, close: bool, head_only: bool,
                        end: bool = True) -> bytes:
    """The same bytes, every header through h11 (its validation errors are the answer to an unsendable one)."""
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers
               if k.lower() not in _FRAMING_HEADERS]
    headers.extend(_framing(response))
    if close:
        headers.append((b"Connection", b"close"))
    data = connection.send(h11.Response(status_code=response.status, reason=response.reason.encode("latin-1"),
                                       headers=headers))
    return data + encode_body(connection, response, head_only, end)


def _framing(response: HttpResponse) -> List[Tuple[bytes, bytes]]:
    """Content-Length, or chunked for a response made of chunks (MAPI/HTTP's PROCESSING ... DONE)."""
    if response.chunks:
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


def _header_line(name: Any, value: Any) -> Optional[bytes]:
    """``name: value`` CRLF as h11 writes it, b"" for a framing header the core sets itself, None when h11 must judge
    it (a header it would refuse, move or rewrite, or not a str pair). Remembered in _HEADER_LINES."""
    if type(name) is not str or type(value) is not str:
        return None
    lowered = name.lower()
    if lowered in _FRAMING_HEADERS:
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
