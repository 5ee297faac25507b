"""Fuzz target "http_edge": the HTTP edge (services/web.py) with the real sites behind it (ExchangeSite on the HTTPS
listener, the port-80 RedirectSite), driven in-process with arbitrary byte chunks over a StringTransport.

Whatever arrives: nothing raises out of the Twisted protocol, every byte written is a whole HTTP/1.1 response, the
responses on the wire are exactly the answers the site gave, in order (no write fault is active, so none may be
lost, but for the answer to bytes that break the framing of a body already answered, which the core drops and
closes), and no password or Authorization token reaches the transcript."""
from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import error, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from harness.org import load_org
from harness.protocols.autodiscover import SiteUrls
from harness.protocols.http import ConnectionInfo, HttpRequest, HttpResponse
from harness.services.site import ExchangeSite, RedirectSite
from harness.services.web import HttpFactory
from harness.transcript import Transcript
from tests.support import corpus
from tests.support.fuzz import scaled

ORG = load_org()
ALICE = ORG.find("alice")
assert ALICE is not None
TOKEN = base64.b64encode(f"CONTOSO\\alice:{ALICE.password}".encode()).decode()
SECRETS = (ALICE.password, TOKEN)
POX = (b'<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request>'
       b'<EMailAddress>alice@contoso.test</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/'
       b'exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>')

REQUEST_LINES = [
    b"GET / HTTP/1.1", b"POST /autodiscover/autodiscover.xml HTTP/1.1", b"HEAD /ews/exchange.asmx HTTP/1.1",
    b"GET /autodiscover/autodiscover.json/v1.0/alice@contoso.test?Protocol=EWS HTTP/1.1",
    b"POST /AutoDiscover/x/autodiscover.svc HTTP/1.1", b"RPC_IN_DATA /rpc/rpcproxy.dll?ex01:6001 HTTP/1.1",
    b"RPC_OUT_DATA /rpc/rpcproxy.dll?ex01:6001 HTTP/1.1", b"POST /EWS/Exchange.asmx HTTP/1.1",
    b"GET /autodiscover/%41%2f%25 HTTP/1.1", b"OPTIONS * HTTP/1.1",
    b"GET http://autodiscover.contoso.test/autodiscover/autodiscover.xml HTTP/1.0", b"GET /%ff%00 HTTP/1.1",
]
HOST_LINES = [b"Host: autodiscover.contoso.test", b"Host: mail.contoso.test:8443", b"Host: [::1]", b"Host: ",
              b"Host: EX01.contoso.test"]
HEADER_LINES = [
    f"Authorization: Basic {TOKEN}".encode(), f"Authorization : Basic {TOKEN}".encode(),
    f"authorization:Basic\t{TOKEN}".encode(), f"Authorization: {TOKEN}".encode(),
    f"Proxy-Authorization: Basic {TOKEN}".encode(), f"Cookie: session={TOKEN}".encode(),
    f" Authorization: Basic {TOKEN}".encode(), b"Authorization: NTLM TlRMTVNTUAABAAAAB4IIogAAAAAAAAAAAAAAAAAAAAA=",
    b"Authorization: Basic !!!", b"Authorization: Negotiate YIIB", b"Expect: 100-continue", b"Connection: close",
    b"Content-Type: text/xml", b"X-A: \x80\x7f", b"X-MapiHttpCapability: 1", b"Content-Length: 5",
    b"Transfer-Encoding: chunked",
]
BODIES = [b"hello", POX, b"\x00\xff" * 3, b"<Autodiscover/>"]


RARELY = st.sampled_from([False] * 9 + [True])   # (Hypothesis favours small integers: 0 would come too often)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """A request from known pieces, framed right most of the time, sometimes with a few bytes changed; now and
    then a line of raw bytes."""
    def line(pieces: list) -> st.SearchStrategy[bytes]:
        return st.binary(max_size=40) if draw(RARELY) else st.sampled_from(pieces)

    lines = [draw(line(REQUEST_LINES))]
    if not draw(RARELY):
        lines.append(draw(line(HOST_LINES)))
    lines += [draw(line(HEADER_LINES)) for _ in range(draw(st.integers(0, 4)))]
    body = draw(st.sampled_from(BODIES) | st.binary(max_size=60))
    framing = draw(st.sampled_from(["none", "length", "length", "chunked", "wrong length", "huge length"]))
    if framing == "none":
        body = b""
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    else:
        length = {"length": len(body), "wrong length": draw(st.integers(0, 100)), "huge length": 99999999999}
        lines.append(b"Content-Length: %d" % length[framing])
    data = bytearray(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    if draw(RARELY):
        # Never inside a line carrying the token: an edit there may make it another header (a new name), whose value
        # is the client's to show; lines h11 refuses are tests/test_fuzz_transcript.py's, which knows them apart.
        starts = accumulate([0] + [len(line) + 2 for line in lines])
        carrying = {offset for start, line in zip(starts, lines) if TOKEN.encode() in line
                    for offset in range(start, start + len(line) + 2)}
        editable = sorted(set(range(len(data))) - carrying)
        for position, value in draw(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1,
                                             max_size=3)):
            data[editable[position % len(editable)]] = value
    return bytes(data)


@st.composite
def streams(draw: st.DrawFn) -> List[bytes]:
    """One connection's bytes: a few requests, now and then raw bytes, cut into reads at arbitrary points."""
    parts = draw(st.lists(st.one_of(requests(), requests(), requests(), requests(), st.binary(max_size=80)),
                          min_size=1, max_size=4))
    data = b"".join(parts)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=8))))
    return [data[start:end] for start, end in zip([0] + cuts, cuts + [len(data)])]


@dataclass
class Answers:
    """The site behind the edge, with every answer it gives kept: (status, method or None when no request was
    read, whether the connection ends after it)."""
    site: Any
    given: List[Tuple[int, Optional[str]]] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.site, name)

    def _kept(self, response: HttpResponse, method: Optional[str]) -> HttpResponse:
        self.given.append((response.status, method))
        return response

    def handle(self, request: HttpRequest) -> HttpResponse:
        return self._kept(self.site.handle(request), request.method)

    def too_large(self, request: HttpRequest, size: int) -> HttpResponse:
        return self._kept(self.site.too_large(request, size), request.method)

    def bad_request(self, info: ConnectionInfo, status: int, message: str) -> HttpResponse:
        return self._kept(self.site.bad_request(info, status, message), None)

    def open_tunnel(self, request: HttpRequest, io: Any) -> Any:
        outcome = self.site.open_tunnel(request, io)
        return self._kept(outcome, request.method) if isinstance(outcome, HttpResponse) else outcome


def serve(listener: str, transcript: Transcript) -> Tuple[Answers, HttpFactory]:
    if listener == "https":
        site: Any = ExchangeSite(ORG, transcript, random.Random(1), SiteUrls.for_org(ORG, 8443))
    else:
        site = RedirectSite(ORG, transcript, 8443)
    answers = Answers(site)
    return answers, HttpFactory(answers, tls=listener == "https", clock=task.Clock())


def read_responses(data: bytes, given: List[Tuple[int, Optional[str]]]) -> List[int]:
    """The final statuses of the whole HTTP/1.1 responses ``data`` holds (interim 1xx ones skipped); fails on
    anything else. ``given`` says which request each final response answers (a HEAD's has no body; an answer to
    an unreadable request may be either, as it answers whatever the client began)."""
    statuses: List[int] = []
    while data:
        head, separator, data = data.partition(b"\r\n\r\n")
        assert separator, f"a response head cut off: {head[:200]!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        version, status, _ = (status_line + " ").split(" ", 2)
        assert version == "HTTP/1.1" and len(status) == 3 and status.isdigit(), status_line
        lengths = [value.strip() for name, _, value in (line.partition(":") for line in lines)
                   if name.lower() == "content-length"]
        assert all(name and ":" in line and name.strip() == name for line in lines
                   for name in [line.partition(":")[0]]), lines
        if int(status) < 200:
            continue
        assert len(statuses) < len(given), f"a response nobody asked for: {status_line}"
        [length] = [int(value) for value in lengths]
        method = given[len(statuses)][1]
        if method == "HEAD" or (method is None and len(data) != length):
            length = 0
        assert len(data) >= length, f"a body cut off: {len(data)} of {length} bytes"
        statuses.append(int(status))
        data = data[length:]
    return statuses


def check_edge(listener: str, pieces: List[bytes]) -> None:
    transcript = Transcript()
    answers, factory = serve(listener, transcript)
    transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8443),
                                peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
    protocol = factory.buildProtocol(transport.getPeer())
    protocol.makeConnection(transport)
    for piece in pieces:
        if transport.disconnecting:
            break
        protocol.dataReceived(piece)
    protocol.connectionLost(Failure(error.ConnectionDone()))
    on_wire = read_responses(transport.value(), answers.given)
    answered = [status for status, _ in answers.given]
    if on_wire != answered:   # only the core's silent close: bytes that break the framing of a body already answered
        silent_close = answers.given[-1][1] is None and transport.disconnecting and not transport.disconnected
        assert on_wire == answered[:-1] and silent_close, "the answers on the wire are not those the site gave"
    recorded = json.dumps(transcript.events, default=str)
    assert not any(secret in recorded for secret in SECRETS)


@settings(max_examples=scaled(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["https", "http"]), streams())
def test_any_bytes_at_the_edge_get_whole_responses_in_order_and_no_secret_is_recorded(listener, pieces):
    check_edge(listener, pieces)


@pytest.mark.parametrize("entry", corpus.entries("http_edge"))
def test_http_edge_corpus(entry):
    check_edge(entry["listener"], [corpus.as_bytes(piece) for piece in entry["chunks"]])
