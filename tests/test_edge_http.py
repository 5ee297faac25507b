"""The HTTP edge (services/web.py) in-process: bytes in through ``HttpFactory(...).buildProtocol``, bytes out of a
StringTransport, a recording app in place of the site, and a task.Clock for write-fault pacing.

Only the stable surface is used: the factory's constructor, the Twisted protocol interface (makeConnection,
dataReceived, connectionLost), the app callbacks services/server.py relies on, and the bytes on the wire."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from twisted.internet import error, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from harness.faults.base import Fault
from harness.faults.network import Latency
from harness.hooks import FaultSet, Scope
from harness.protocols.connection import WritePlan
from harness.protocols.http import ConnectionInfo, HttpRequest, HttpResponse
from harness.protocols.httpconn import ConnectionLimits
from harness.services.web import HttpFactory

GIB = 1 << 30


@dataclass
class Reply:
    status: int
    headers: Dict[str, str]
    body: bytes


def parse_replies(data: bytes) -> List[Reply]:
    """Raw server output split into responses (1xx interim ones included); fails on a cut-off response."""
    replies = []
    while data:
        head, separator, data = data.partition(b"\r\n\r\n")
        assert separator, f"incomplete response head: {head!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        status = int(status_line.split(" ", 2)[1])
        length = int(headers.get("content-length", "0")) if status >= 200 else 0
        assert len(data) >= length, f"body cut short: {len(data)} of {length} bytes"
        replies.append(Reply(status, headers, data[:length]))
        data = data[length:]
    return replies


@dataclass
class FakeChannel:
    """A tunnel channel (what the RPC proxy returns): collects the raw body bytes it is handed."""
    received: bytes = b""
    lost: List[str] = field(default_factory=list)
    io: Any = None

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, reason: str) -> None:
        self.lost.append(reason)


@dataclass
class RecordingApp:
    """The app interface of services/web.py as ExchangeSite implements it, recording every call."""
    tunnel: Callable[[HttpRequest], Any] = lambda request: FakeChannel()
    calls: List[Tuple[Any, ...]] = field(default_factory=list)
    requests: List[HttpRequest] = field(default_factory=list)
    channels: List[FakeChannel] = field(default_factory=list)
    close_after: bool = False

    def connection_made(self, info: ConnectionInfo) -> None:
        self.calls.append(("connection_made", info.conn_id, info.host))

    def tls_handshake(self, info: ConnectionInfo, ok: bool, reason: str) -> None:
        self.calls.append(("tls_handshake", info.conn_id, ok))

    def connection_lost(self, info: ConnectionInfo, reason: str) -> None:
        self.calls.append(("connection_lost", info.conn_id, reason))

    def response_sent(self, request: HttpRequest, response: HttpResponse, elapsed: float) -> None:
        self.calls.append(("response_sent", request.method, request.path, response.status))

    def bad_request(self, info: ConnectionInfo, status: int, message: str) -> HttpResponse:
        self.calls.append(("bad_request", info.conn_id, status))
        return HttpResponse(status, "Bad Request", [("Content-Type", "text/plain")], b"bad request")

    def too_large(self, request: HttpRequest, size: int) -> HttpResponse:
        self.calls.append(("too_large", request.method, size))
        return HttpResponse(413, "Request Entity Too Large", [("Content-Type", "text/plain")], b"too large")

    def handle(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        body = f"{request.method} {request.path} {len(request.body)}".encode()
        return HttpResponse(200, "OK", [("Content-Type", "text/plain")], body, close=self.close_after)

    def open_tunnel(self, request: HttpRequest, io: Any) -> Any:
        outcome = self.tunnel(request)
        if isinstance(outcome, FakeChannel):
            outcome.io = io
            self.channels.append(outcome)
        return outcome


class Client:
    """One connection to the edge, driven by hand."""

    def __init__(self, factory: HttpFactory, local: str = "127.0.0.1", peer_port: int = 50000,
                 transport_class: type = StringTransport):
        self.transport = transport_class(hostAddress=IPv4Address("TCP", local, 8443),
                                         peerAddress=IPv4Address("TCP", "127.0.0.1", peer_port))
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def replies(self) -> List[Reply]:
        """Everything written since the last call, as responses."""
        data = self.transport.value()
        self.transport.clear()
        return parse_replies(data)

    def lose(self, reason: Optional[Exception] = None) -> None:
        self.protocol.connectionLost(Failure(reason or error.ConnectionDone()))

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting


def get(path: str = "/", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: mail.contoso.test\r\n{extra}\r\n".encode()


def post(path: str, body: bytes, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: mail.contoso.test\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            .encode() + body)


@pytest.fixture
def clock() -> task.Clock:
    return task.Clock()


@pytest.fixture
def app() -> RecordingApp:
    return RecordingApp()


def edge(app: RecordingApp, clock: task.Clock, *faults: Fault, **kwargs: Any) -> HttpFactory:
    return HttpFactory(app, tls=kwargs.pop("tls", False), clock=clock, faults=FaultSet(faults), **kwargs)


# ---- requests and keep-alive ----------------------------------------------------------------------------------
def test_requests_one_after_another_share_one_connection(app, clock):
    client = Client(edge(app, clock))
    for index in range(3):
        client.send(post(f"/r{index}", b"x" * index))
        (reply,) = client.replies()
        assert (reply.status, reply.body) == (200, f"POST /r{index} {index}".encode())
        assert reply.headers["content-length"] == str(len(reply.body))
        assert not client.closed
    assert {request.conn.conn_id for request in app.requests} == {1}
    assert [call for call in app.calls if call[0] == "response_sent"] == [
        ("response_sent", "POST", f"/r{index}", 200) for index in range(3)]


def test_pipelined_requests_are_answered_in_order(app, clock):
    client = Client(edge(app, clock))
    client.send(get("/a") + post("/b", b"hello") + get("/c"))
    assert [reply.body for reply in client.replies()] == [b"GET /a 0", b"POST /b 5", b"GET /c 0"]
    assert not client.closed


def test_requests_arriving_a_byte_at_a_time(app, clock):
    client = Client(edge(app, clock))
    for byte in post("/slow", b"abc") + get("/next"):
        client.send(bytes([byte]))
    assert [reply.body for reply in client.replies()] == [b"POST /slow 3", b"GET /next 0"]


def test_the_request_model_the_app_receives(app, clock):
    client = Client(edge(app, clock))
    client.send(b"GET http://mail.contoso.test/EWS/Exch%61nge.asmx?a=1&b=2 HTTP/1.1\r\nHost: Mail.Contoso.Test:8443"
                b"\r\nX-Twice: 1\r\nX-Twice: 2\r\n\r\n")
    (request,) = app.requests
    assert (request.method, request.path, request.query, request.scheme) == ("GET", "/EWS/Exchange.asmx", "a=1&b=2",
                                                                            "http")
    assert request.host == "mail.contoso.test" and request.header("x-twice") == "1, 2"
    assert request.conn.peer == ("127.0.0.1", 50000) and request.conn.local == ("127.0.0.1", 8443)


def test_each_connection_gets_its_own_id_and_the_dedicated_address_host(app, clock):
    factory = edge(app, clock, hosts_by_address={"127.0.1.1": "mail.contoso.test"})
    Client(factory)
    Client(factory, local="127.0.1.1", peer_port=50001)
    assert app.calls == [("connection_made", 1, None), ("connection_made", 2, "mail.contoso.test")]


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
])
def test_a_client_that_does_not_keep_alive_is_answered_then_closed(app, clock, request_bytes):
    client = Client(edge(app, clock))
    client.send(request_bytes)
    assert [reply.status for reply in client.replies()] == [200]
    assert client.closed


def test_a_response_asking_to_close_closes(app, clock):
    app.close_after = True
    client = Client(edge(app, clock))
    client.send(get("/") + get("/never"))
    (reply,) = client.replies()
    assert reply.headers["connection"].lower() == "close"
    assert client.closed and len(app.requests) == 1


# ---- 100-continue, limits and malformed input -----------------------------------------------------------------
def test_100_continue_comes_before_the_body_is_sent(app, clock):
    client = Client(edge(app, clock))
    client.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert [reply.status for reply in client.replies()] == [100]
    assert app.requests == []
    client.send(b"12345")
    assert [(reply.status, reply.body) for reply in client.replies()] == [(200, b"POST /upload 5")]
    client.send(post("/plain", b"ab"))  # no Expect: no interim response
    assert [reply.status for reply in client.replies()] == [200]


def test_a_declared_body_over_the_limit_gets_413_and_the_close(app, clock):
    client = Client(edge(app, clock))
    client.send(f"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: {GIB}\r\n\r\n".encode())
    (reply,) = client.replies()
    assert reply.status == 413 and reply.headers["connection"].lower() == "close"
    assert ("too_large", "POST", GIB) in app.calls
    assert app.requests == [] and client.closed


def test_a_chunked_body_growing_over_the_limit_gets_413(app, clock):
    client = Client(edge(app, clock))
    client.send(b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n" % (1 << 20) + b"z" * (1 << 20) + b"\r\n"
    for _ in range(64):   # whatever the limit is, 64 MiB is over it
        client.send(chunk)
        if client.transport.value():
            break
    (reply,) = client.replies()
    assert reply.status == 413 and client.closed and app.requests == []


def test_headers_over_the_limit_get_431(app, clock):
    client = Client(edge(app, clock))
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Huge: ")
    for _ in range(256):   # 4 MiB of one header line: over any header limit
        client.send(b"a" * (16 * 1024))
        if client.transport.value():
            break
    (reply,) = client.replies()
    assert reply.status == 431 and client.closed
    assert ("bad_request", 1, 431) in app.calls and app.requests == []


@pytest.mark.parametrize("garbage", [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
                                     b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n"])
def test_a_malformed_request_gets_400_and_nothing_after_it_is_read(app, clock, garbage):
    client = Client(edge(app, clock))
    client.send(garbage + get("/after"))
    client.send(get("/later"))
    (reply,) = client.replies()
    assert reply.status == 400 and reply.headers["connection"].lower() == "close"
    assert client.closed and app.requests == [] and ("bad_request", 1, 400) in app.calls


def test_a_malformed_request_after_a_good_one_on_the_same_connection(app, clock):
    client = Client(edge(app, clock))
    client.send(get("/ok") + b"BROKEN\r\n\r\n")
    assert [reply.status for reply in client.replies()] == [200, 400]
    assert client.closed


# ---- tunnels (RPC over HTTP) ------------------------------------------------------------------------------------
def test_an_rpc_in_data_tunnel_receives_the_raw_body(app, clock):
    client = Client(edge(app, clock))
    client.send(f"RPC_IN_DATA /rpc/rpcproxy.dll?ex01:6001 HTTP/1.1\r\nHost: x\r\nContent-Length: {GIB}\r\n\r\n"
                .encode() + b"\x05\x00\x14")
    client.send(b"\x03 more PDU bytes")
    (channel,) = app.channels
    assert channel.received == b"\x05\x00\x14\x03 more PDU bytes"
    assert client.transport.value() == b"" and app.requests == [] and not client.closed
    assert not [call for call in app.calls if call[0] == "too_large"]   # a 1 GiB tunnel body is no 413


def test_a_tunnel_channel_gets_bytes_past_its_declared_body_and_writes_closes_schedules_through_its_io(app, clock):
    client = Client(edge(app, clock))
    client.send(b"RPC_OUT_DATA /rpc/rpcproxy.dll?ex01:6001 HTTP/1.1\r\nHost: x\r\nContent-Length: 76\r\n\r\n"
                + b"A" * 76 + b"beyond")
    client.send(b"-and-later")
    (channel,) = app.channels
    assert channel.received == b"A" * 76 + b"beyond-and-later"
    fired: List[str] = []
    channel.io.call_later(5.0, fired.append, "tick")
    clock.advance(4.999)
    assert fired == []
    clock.advance(0.001)
    assert fired == ["tick"]
    channel.io.write(b"HTTP/1.1 200 Success\r\n\r\nstream")
    assert client.transport.value() == b"HTTP/1.1 200 Success\r\n\r\nstream"
    channel.io.close()
    assert client.closed


def test_a_lost_connection_reaches_the_tunnel_channel_and_the_app(app, clock):
    client = Client(edge(app, clock))
    client.send(b"RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    client.lose(error.ConnectionLost())
    assert [len(channel.lost) for channel in app.channels] == [1]
    assert app.calls[-1] == ("connection_lost", 1, "connection lost")


def refuse(request: HttpRequest) -> HttpResponse:
    return HttpResponse(401, "Unauthorized", [("WWW-Authenticate", "NTLM")], b"denied")


@pytest.mark.parametrize("length, statuses, kept", [
    (0, [401, 200], True),      # the NTLM Type 1 leg: the handshake goes on on this connection
    (GIB, [401], False),        # the 1 GiB IN stream is coming: the connection cannot be kept
])
def test_a_refused_tunnel_is_kept_alive_only_when_no_body_follows(clock, length, statuses, kept):
    app = RecordingApp(tunnel=refuse)
    client = Client(edge(app, clock))
    client.send(f"RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()
                + get("/next"))
    replies = client.replies()
    assert [reply.status for reply in replies] == statuses
    assert client.closed is not kept and (kept or replies[0].headers["connection"].lower() == "close")


# ---- connection end ---------------------------------------------------------------------------------------------
def test_connection_lost_reaches_the_app(app, clock):
    client = Client(edge(app, clock))
    client.send(get("/"))
    client.lose()
    assert app.calls[0] == ("connection_made", 1, None)
    assert app.calls[-1] == ("connection_lost", 1, "closed cleanly")
    assert not [call for call in app.calls if call[0] == "tls_handshake"]


def test_a_tls_connection_lost_before_its_handshake_reports_a_failed_handshake(app, clock):
    client = Client(edge(app, clock, tls=True))
    client.lose(error.ConnectionLost())
    assert ("tls_handshake", 1, False) in app.calls
    assert app.calls[-1][0] == "connection_lost"


# ---- backpressure: a client that does not read -------------------------------------------------------------------
class FillingTransport(StringTransport):
    """A StringTransport whose buffer fills as Twisted's does: past ``size`` unsent bytes it pauses its producer, and
    ``drain`` (the client read everything) empties it and resumes the producer."""
    size = 4096

    def write(self, data: bytes) -> None:
        super().write(data)
        if len(self.value()) > self.size and self.producer is not None:
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        data = self.value()
        self.clear()
        if self.producer is not None:
            self.producer.resumeProducing()
        return data


def pipelined(count: int) -> bytes:
    return b"".join(get(f"/r{index}") for index in range(count))


def backlogged(factory: HttpFactory, **limits: Any) -> Tuple[Client, FillingTransport]:
    factory.limits = ConnectionLimits(**limits)
    client = Client(factory, transport_class=FillingTransport)
    return client, client.transport


def test_a_client_that_does_not_read_is_no_longer_read_and_gets_everything_once_it_reads(app, clock):
    client, transport = backlogged(edge(app, clock), output_high_water=2048, output_low_water=512)
    client.send(pipelined(1000))                    # 1000 requests in one read; the answers are ~90 bytes each
    answered = len(app.requests)
    assert transport.producerState == "paused"       # the socket is not read
    assert answered < 100                            # 4 KiB in the transport, 2 KiB held, an answer or two more
    assert client.protocol.output.held <= 2048 + 2 * 120
    client.send(pipelined(1000))                    # what was already on its way is buffered, not answered
    clock.advance(60)
    assert len(app.requests) == answered and not client.closed
    received = b""
    for _ in range(1000):                            # the client reads, a transport's worth at a time
        received += transport.drain()
        if len(app.requests) == 2000 and not transport.value():
            break
    assert transport.producerState == "producing"
    assert [reply.body for reply in parse_replies(received)] == [f"GET /r{index % 1000} 0".encode()
                                                                 for index in range(2000)]


def test_a_paced_write_plan_still_paces_and_its_held_output_counts_as_backlog(app, clock):
    client, transport = backlogged(edge(app, clock, Latency(ms=1000.0, port=8443)), output_high_water=300,
                                   output_low_water=0)
    client.send(pipelined(20))                      # every answer waits 1 s behind the one before
    assert transport.value() == b"" and transport.producerState == "paused"
    assert len(app.requests) < 20
    for _ in range(40):
        clock.advance(1)
    assert [reply.body for reply in client.replies()] == [f"GET /r{index} 0".encode() for index in range(20)]
    assert transport.producerState == "producing" and not client.closed


# ---- write faults, paced on the clock --------------------------------------------------------------------------
class PacedWrites(Fault):
    """Answers the ``write`` hook for the first write only: 5 bytes after 1 s, the rest 2 s later, then ``end``."""
    name = "network.test-paced"
    end: Optional[str] = None
    planned = False

    def on_write(self, scope: Scope, info: ConnectionInfo, data: bytes) -> Optional[WritePlan]:
        if self.planned:
            return None
        self.planned = True
        return WritePlan(((1.0, data[:5]), (2.0, data[5:])), self.end)


def paced(end: Optional[str] = None, host: Optional[str] = None) -> PacedWrites:
    fault = PacedWrites(host=host) if host else PacedWrites()
    fault.end = end
    return fault


# Clock.advance runs what is due and only then what those calls scheduled, so a plan's pieces, each waiting after
# the previous one, are walked through one advance per piece.
def test_a_write_plan_sends_each_piece_when_the_clock_says(app, clock):
    client = Client(edge(app, clock, paced()))
    client.send(get("/paced"))
    assert client.transport.value() == b""
    clock.advance(0.999)
    assert client.transport.value() == b""
    clock.advance(0.001)
    assert client.transport.value() == b"HTTP/"
    clock.advance(1.999)
    assert client.transport.value() == b"HTTP/"
    clock.advance(0.001)
    assert [reply.body for reply in client.replies()] == [b"GET /paced 0"]
    assert not client.closed


def test_later_output_queues_behind_a_paced_write(app, clock):
    client = Client(edge(app, clock, paced()))
    client.send(get("/first") + get("/second"))
    clock.advance(1)
    clock.advance(1.9)
    assert client.transport.value() == b"HTTP/"
    clock.advance(0.1)
    assert [reply.body for reply in client.replies()] == [b"GET /first 0", b"GET /second 0"]


def test_a_plan_ending_in_close_closes_after_its_last_piece(app, clock):
    client = Client(edge(app, clock, paced(end="close")))
    client.send(get("/") + get("/never-answered"))
    clock.advance(1)
    clock.advance(1.9)
    assert not client.closed
    clock.advance(0.1)
    assert client.closed
    assert [reply.body for reply in client.replies()] == [b"GET / 0"]


def test_a_plan_ending_in_hold_goes_silent_for_good(app, clock):
    client = Client(edge(app, clock, paced(end="hold")))
    client.send(get("/") + get("/second"))
    clock.advance(1)
    clock.advance(3600)
    assert [reply.body for reply in client.replies()] == [b"GET / 0"]   # the plan's own pieces, then silence
    client.send(get("/third"))
    clock.advance(3600)
    assert client.transport.value() == b"" and not client.closed


def test_a_write_fault_scoped_to_another_host_leaves_output_alone(app, clock):
    factory = edge(app, clock, paced(host="autodiscover.contoso.test"),
                   hosts_by_address={"127.0.1.1": "autodiscover.contoso.test"})
    other = Client(factory)
    other.send(get("/"))
    assert [reply.status for reply in other.replies()] == [200]
    target = Client(factory, local="127.0.1.1")
    target.send(get("/"))
    assert target.transport.value() == b""
    clock.advance(1)
    clock.advance(2)
    assert [reply.status for reply in target.replies()] == [200]


def test_losing_the_connection_stops_paced_output(app, clock):
    client = Client(edge(app, clock, paced()))
    client.send(get("/"))
    clock.advance(1)
    client.lose(error.ConnectionLost())
    clock.advance(10)
    assert client.transport.value() == b"HTTP/"
    assert clock.getDelayedCalls() == []


def test_the_latency_fault_delays_the_whole_response(app, clock):
    client = Client(edge(app, clock, Latency(ms=250.0, port=8443)))
    client.send(get("/"))
    clock.advance(0.249)
    assert client.transport.value() == b""
    clock.advance(0.001)
    assert [reply.status for reply in client.replies()] == [200]


def test_a_close_waits_for_paced_output_to_go_out(app, clock):
    client = Client(edge(app, clock, paced()))
    client.send(get("/", extra="Connection: close\r\n"))
    clock.advance(1)
    assert not client.closed and client.transport.value() == b"HTTP/"
    clock.advance(2)
    assert client.closed
    assert [reply.body for reply in client.replies()] == [b"GET / 0"]
