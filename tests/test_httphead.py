"""The HTTP core's fast path (harness.protocols.httphead, httpencode.frame) against h11: a connection that reads its
requests without h11 acts exactly as one that gives every byte to h11 - the same actions, the same bytes out, the
same requests delivered, the same refusals - for valid, unusual and malformed streams split anywhere."""
from __future__ import annotations

from collections import deque
from typing import List, Optional, Tuple

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocols import httpencode
from harness.protocols.http import HttpResponse
from harness.protocols.httpconn import (
    Action,
    ConnectionLimits,
    Deliver,
    HandOffTunnel,
    HttpConnection,
    RefuseMalformed,
    RefuseTooLarge,
)
from harness.protocols.httphead import FALL_BACK, Head, decoded_headers, read_head
from tests.support.fuzz import scaled

LIMITS = ConnectionLimits(max_header_bytes=400, max_body_bytes=64)

# ---- streams: requests of the common shape, and each way out of it ---------------------------------------------
HOST = b"Host: mail.contoso.test\r\n"
EXPECT = b"Expect: 100-continue\r\n"
_header_lines = st.sampled_from([
    b"User-Agent: Microsoft Office/16.0\r\n", b"Content-Type: text/xml; charset=utf-8\r\n",
    b"Authorization: Basic YWxpY2U6cGFzcw==\r\n", b"X-Empty:\r\n", b"X-Padded: \t  a  b \t\r\n",
    b"Connection: keep-alive\r\n", b"Connection: Close\r\n", b"connection: upgrade, close \r\n",
    b"X-Obs: caf\xe9\r\n", b"X-Ctl: a\x01b\r\n", b"X-Vt: a\x0bb\r\n", b"X-Nul: a\x00b\r\n", HOST,
    b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip\r\n", b"Expect: 100-continue\r\n",
    b"Upgrade: websocket\r\n", b"Content-Length: 3\r\n", b"Content-Length: 3, 3\r\n", b"Content-Length: \xb2\r\n",
    b"Content-Length: 999\r\n", b"X-Long: " + b"x" * 300 + b"\r\n", b" folded continuation\r\n",
    b"Bad Name: v\r\n", b"X-Bare-LF: v\n", b"X-Big: " + b"y" * 120 + b"\r\n", b"X-Nbsp: \xa0a \x85\r\n",
    b"X-Tabs:\t\ta\t \r\n", b"X-Ff: a\x0c\r\n", b"X-Cr: a\rb\r\n", b"Host: other.contoso.test\r\n", b"HOST: a\r\n"])
_request_lines = st.sampled_from([
    b"POST /autodiscover/autodiscover.xml HTTP/1.1\r\n", b"GET /owa/?a=%20b HTTP/1.1\r\n", b"HEAD / HTTP/1.1\r\n",
    b"GET https://mail.contoso.test/EWS/Exchange.asmx HTTP/1.1\r\n", b"GET / HTTP/1.0\r\n", b"GET / HTTP/2.0\r\n",
    b"RPC_IN_DATA /rpc/rpcproxy.dll?a:6001 HTTP/1.1\r\n", b"CONNECT a:443 HTTP/1.1\r\n", b"get /x HTTP/1.1\r\n",
    b"GET /caf\xe9 HTTP/1.1\r\n", b"GET  / HTTP/1.1\r\n", b"\r\nGET / HTTP/1.1\r\n", b"\x16\x03\x01\x00",
    b"GET / HTTP/1.1\n"])


@st.composite
def requests(draw) -> bytes:
    """One request: mostly of the common shape, often with one thing that is not."""
    line = draw(_request_lines) if draw(st.integers(0, 3)) == 0 else b"POST /ews/exchange.asmx HTTP/1.1\r\n"
    lines = [HOST] if draw(st.integers(0, 5)) else []
    lines += draw(st.lists(_header_lines, max_size=4)) if draw(st.booleans()) else []
    lines += [EXPECT] if not draw(st.integers(0, 5)) else []
    body = draw(st.binary(max_size=8))
    if b"Transfer-Encoding: chunked\r\n" in lines:
        body = (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n"
    elif not any(h.lower().startswith(b"content-length") for h in lines) and draw(st.booleans()):
        lines.append(b"Content-Length: %d\r\n" % len(body))
    lines = draw(st.permutations(lines))
    return line + b"".join(lines) + b"\r\n" + body


_odd_tunnel_framings = st.sampled_from([
    b"Content-Length: 00\r\n", b"Content-Length: 007\r\n", b"Content-Length: 99999999999999999999\r\n",
    b"Content-Length: 123456789012345678901\r\n", b"Content-Length: 1, 1\r\n", b"Transfer-Encoding: chunked\r\n",
    b"Expect: 100-continue\r\n", b""])


@st.composite
def tunnels(draw) -> bytes:
    """An RPC over HTTP channel's request: mostly of the common shape (the NTLM legs' small bodies, the 1 GiB
    streams), now and then not; its body, whole or not, and bytes past it."""
    line = draw(st.sampled_from([b"RPC_IN_DATA /rpc/rpcproxy.dll?mail.contoso.test:6001 HTTP/1.1\r\n",
                                 b"RPC_OUT_DATA /rpc/rpcproxy.dll?mail.contoso.test:6004 HTTP/1.1\r\n",
                                 b"RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.0\r\n"]))
    declared = draw(st.sampled_from([0, 1, 5, 76, 1 << 30]))
    framing = b"Content-Length: %d\r\n" % declared if draw(st.integers(0, 2)) else draw(_odd_tunnel_framings)
    lines = [HOST, framing] + (draw(st.lists(_header_lines, max_size=2)) if draw(st.booleans()) else [])
    lines += [EXPECT] if draw(st.booleans()) else []   # as impacket sends it
    lines = draw(st.permutations(lines))
    body = b"\xa5" * min(draw(st.sampled_from([declared, 0, 3])), 80)   # the whole declared body, or less
    return line + b"".join(lines) + b"\r\n" + body + draw(st.binary(max_size=12))


@st.composite
def streams(draw) -> List[bytes]:
    """Requests back to back (pipelined), sometimes with junk, cut into pieces at random points."""
    data = b"".join(draw(st.lists(st.one_of(requests(), requests(), tunnels(), st.binary(max_size=12)), min_size=1,
                                  max_size=4)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=5)))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)]) if data[a:b]]


# ---- the app's answers ------------------------------------------------------------------------------------------
class Streamed:
    """An open-ended answer's body, for HttpResponse.stream."""


ANSWERS = [
    HttpResponse(200, "OK", [("Content-Type", "text/xml"), ("Server", "Microsoft-IIS/8.5")], b"<ok/>"),
    HttpResponse(200, "OK", [("X-A", "1")], b"bye", close=True),
    HttpResponse(200, "OK", [("Content-Type", "application/mapi-http")], chunks=(b"PROCESSING\r\n", b"", b"DONE")),
    HttpResponse(200, "OK", [("X-A", "1")], chunks=(b"a",), close=True),
    HttpResponse(200, "OK", [("Content-Type", "text/xml")], chunks=(b"<Envelope>",), stream=Streamed()),
    HttpResponse(401, "Unauthorized", [("WWW-Authenticate", "NTLM"), ("Content-Length", "99")], b"denied"),
    HttpResponse(302, "Found", [("Location", "https://a/"), ("Host", "moved")], b""),    # h11 moves Host first
    HttpResponse(200, "OK", [("Connection", "keep-alive")], b"x"),                       # h11 rewrites it
    HttpResponse(204, "No Content", [], b""), HttpResponse(304, "Not Modified", [], b"x"),
    HttpResponse(200, "OK", [("X-Bad", "a\r\nb")], b"x"), HttpResponse(199, "Early", [], b""),
]


class Twin:
    """One core and the app answering it, recording every action in order (as services/web.py carries them out)."""

    def __init__(self, fast_path: bool, answers: List[int], opens: List[bool]) -> None:
        self.core = HttpConnection(None, tls=True, limits=LIMITS, fast_path=fast_path)
        self.answers, self.opens = deque(answers), deque(opens)
        self.log: List[object] = []
        self.run(self.core.start())

    def answer(self) -> HttpResponse:
        index = self.answers[0] if self.answers else 0
        self.answers.rotate(-1)
        return ANSWERS[index % len(ANSWERS)]

    def run(self, actions: List[Action]) -> None:
        queue = deque(actions)
        while queue:
            action = queue.popleft()
            self.log.append(action)
            follow: List[Action] = []
            opens = isinstance(action, HandOffTunnel) and self.opens[0]
            if isinstance(action, HandOffTunnel):
                self.opens.rotate(-1)
            if opens:   # the channel takes the tunnel: its body, then every byte, are TunnelBytes
                follow = self.core.tunnel_opened()
            elif isinstance(action, (Deliver, RefuseTooLarge, RefuseMalformed, HandOffTunnel)):
                follow = self.core.respond(self.answer())   # a refused tunnel: the NTLM 401, or any answer
                if self.core.streaming:
                    follow += self.core.stream_data(b"<Notification/>") + self.core.stream_end()
            queue.extendleft(reversed(follow))
        self.log.append(self.core.state)


@given(streams(), st.lists(st.integers(0, len(ANSWERS) - 1), min_size=1, max_size=4),
       st.lists(st.booleans(), min_size=1, max_size=3), st.booleans())
@settings(max_examples=scaled(2000), deadline=None)
def test_the_fast_path_acts_as_h11_does(pieces, answers, opens, backlog):
    fast, slow = Twin(True, answers, opens), Twin(False, answers, opens)
    for index, piece in enumerate(pieces):
        for twin in (fast, slow):
            if backlog and index == 1:   # the output backs up, then drains: requests wait, then go on
                twin.run(twin.core.output_pending(1 << 20, False))
            twin.run(twin.core.receive(piece))
            if backlog and index == 1:
                twin.run(twin.core.output_pending(0, False))
        assert fast.log == slow.log
    for twin in (fast, slow):
        twin.run(twin.core.connection_lost())
    assert fast.log == slow.log


@pytest.mark.parametrize("opens", [True, False])
@pytest.mark.parametrize("length", [0, 5, 1 << 30])
def test_a_tunnel_of_the_common_shape_is_read_without_h11(length, opens):
    """The channels' requests (the NTLM legs, then the 1 GiB streams) never wake h11, opened or refused."""
    stream = (b"RPC_OUT_DATA /rpc/rpcproxy.dll?a:6001 HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive\r\n"
              b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % length   # as impacket sends them
              + b"abcde"[:length] + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    fast, slow = Twin(True, [5], [opens]), Twin(False, [5], [opens])   # a refusal: the 401
    for twin in (fast, slow):
        for piece in (stream[:40], stream[40:90], stream[90:]):
            twin.run(twin.core.receive(piece))
    assert fast.log == slow.log and fast.core._h11 is None
    assert sum(type(action) is Deliver for action in fast.log) == (0 if opens or length else 1)


# ---- the head reader alone -----------------------------------------------------------------------------------
@given(requests())
@settings(max_examples=scaled(1000), deadline=None)
def test_a_head_read_without_h11_is_what_h11_reads(data):
    head = read_head(data, LIMITS.max_header_bytes, LIMITS.max_body_bytes)
    if head is None or head is FALL_BACK:
        return
    assert isinstance(head, Head)
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=LIMITS.max_header_bytes)
    conn.receive_data(data)
    event = conn.next_event()   # h11 accepts it as it stands
    assert type(event) is h11.Request and event.http_version == b"1.1"
    assert (head.method, head.target) == (event.method.decode("latin-1"), event.target.decode("latin-1"))
    assert head.headers == decoded_headers(event)[0]
    assert head.close == (not conn._cstate.keep_alive)
    body, event = b"", conn.next_event()
    while type(event) is h11.Data:
        body, event = body + bytes(event.data), conn.next_event()
    assert body == data[head.head_size:head.end]
    assert (type(event) is h11.EndOfMessage) == (len(data) >= head.end)


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\nHost: a\r\n", b"GET / HTTP/1.1\r", b"G"])
def test_an_incomplete_head_waits(data):
    assert read_head(data, 400, 64) is None


@pytest.mark.parametrize("data", [b"\r\nGET / HTTP/1.1\r\n", b"\x16\x03\x01", b"GET /" + b"a" * 500])
def test_what_h11_refuses_before_the_head_is_whole_goes_to_h11(data):
    assert read_head(data, 400, 64) is FALL_BACK


# ---- the framing without h11 ------------------------------------------------------------------------------------
def _h11_bytes(request: bytes, response: HttpResponse, close: bool, head_only: bool, open_ended: bool
               ) -> Tuple[bytes, Optional[bytes]]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(request)
    while type(conn.next_event()) is not h11.EndOfMessage:
        pass
    sent = httpencode.encode(conn, response, close, head_only, open_ended)
    more = None
    if open_ended:
        more = conn.send(h11.Data(data=b"abc")) + conn.send(h11.EndOfMessage())
    return sent, more


@pytest.mark.parametrize("request_bytes", [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
                                           b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                                           b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"])
@pytest.mark.parametrize("response", ANSWERS)
@pytest.mark.parametrize("close", [False, True])
def test_the_framing_without_h11_is_h11s(request_bytes, response, close):
    head_only = request_bytes.startswith(b"HEAD")
    client_close = b"Connection: close" in request_bytes
    open_ended = response.stream is not None and not head_only
    framed = httpencode.frame(response, close, head_only, open_ended, client_close)
    try:
        expected, more = _h11_bytes(request_bytes, response, close, head_only, open_ended)
    except (h11.LocalProtocolError, UnicodeEncodeError):
        assert framed is None   # what h11 refuses is left to h11
        return
    if framed is None:   # left to h11: a header it moves or rewrites, a status it frames apart
        assert response.status in (204, 304) or any(name in ("Host", "Connection") for name, _ in response.headers)
        return
    assert framed == expected
    if open_ended:
        assert httpencode.chunk(b"abc") + httpencode.LAST_CHUNK == more
