"""Write backpressure on a real loopback socket: a client pipelines 5,000 requests and reads nothing, the server
stops reading once its unsent output passes the high water (the answered requests and the held output stay bounded),
then the client reads and gets every answer in order. Plain TCP and TLS (TLSMemoryBIOProtocol passes the producer
registration down to TCP).

The server runs in-process on a reactor of its own, iterated by the test between the client's non-blocking socket
calls: one thread, and every condition is checked on the server objects (no sleeps, no timing). Every loop is bounded
by a count of iterations."""
from __future__ import annotations

import socket
import ssl
from typing import Any, Iterator, List, Tuple

import pytest
from twisted.internet.epollreactor import EPollReactor

from harness.pki import PKI
from harness.protocols.http import ConnectionInfo, HttpRequest, HttpResponse
from harness.protocols.httpconn import ConnectionLimits
from harness.services.tls import TlsContexts, TlsServerFactory
from harness.services.web import HttpFactory, HttpServerProtocol

COUNT = 5000
PADDING = b"x" * 1000          # ~1.1 KB answers: 5.5 MB in all, far more than the socket buffers below hold
SOCKET_BUFFER = 32 * 1024
HIGH_WATER, LOW_WATER = 64 * 1024, 16 * 1024
STEPS = 100_000                # bound on every loop of reactor iterations
HOST = "mail.contoso.test"


class PaddedApp:
    """The app interface of services/web.py, answering each request with its path and 1,000 bytes."""

    def __init__(self) -> None:
        self.answered = 0

    def handle(self, request: HttpRequest) -> HttpResponse:
        self.answered += 1
        return HttpResponse(200, "OK", [("Content-Type", "text/plain")], request.path.encode() + b" " + PADDING)

    def connection_made(self, info: ConnectionInfo) -> None: ...
    def tls_handshake(self, info: ConnectionInfo, ok: bool, reason: str) -> None: ...
    def connection_lost(self, info: ConnectionInfo, reason: str) -> None: ...
    def response_sent(self, request: HttpRequest, response: HttpResponse, elapsed: float) -> None: ...


class RecordingFactory(HttpFactory):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.built: List[HttpServerProtocol] = []

    def buildProtocol(self, addr: Any) -> HttpServerProtocol:
        built = super().buildProtocol(addr)
        self.built.append(built)
        return built


@pytest.fixture(scope="module")
def tls_contexts(tmp_path_factory: pytest.TempPathFactory) -> TlsContexts:
    return TlsContexts(PKI(str(tmp_path_factory.mktemp("pki"))), [HOST], ips=["127.0.0.1"])


@pytest.fixture
def reactor() -> Iterator[EPollReactor]:
    made = EPollReactor()
    yield made
    made.disconnectAll()
    made.waker.connectionLost(None)


def step(reactor: EPollReactor) -> None:
    reactor.iterate(0.001)


def socket_transport(protocol: HttpServerProtocol, tls: bool) -> Any:
    """The TCP transport under the HTTP protocol (under TLS, the one below TLSMemoryBIOProtocol)."""
    return protocol.transport.transport if tls else protocol.transport


def twisted_buffered(transport: Any) -> int:
    """Bytes Twisted's TCP transport holds unsent (its private buffers: no public API tells)."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def connect(reactor: EPollReactor, tls: bool, tls_contexts: TlsContexts,
            app: PaddedApp) -> Tuple[socket.socket, HttpServerProtocol, Any]:
    http = RecordingFactory(app, tls=tls, clock=reactor)
    http.limits = ConnectionLimits(output_high_water=HIGH_WATER, output_low_water=LOW_WATER)
    factory = TlsServerFactory(tls_contexts, http.faults, http, clock=reactor) if tls else http
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)   # before connect: it bounds the window
    raw.setblocking(False)
    raw.connect_ex(("127.0.0.1", port.getHost().port))
    for _ in range(STEPS):
        if http.built:
            break
        step(reactor)
    (protocol,) = http.built
    socket_transport(protocol, tls).getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    if not tls:
        return raw, protocol, port
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    client = context.wrap_socket(raw, server_hostname=HOST, do_handshake_on_connect=False)
    for _ in range(STEPS):
        try:
            client.do_handshake()
            break
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            step(reactor)
    return client, protocol, port


def send_some(client: socket.socket, data: bytes, sent: int) -> int:
    try:
        return sent + client.send(data[sent:sent + 65536])
    except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
        return sent


def receive_some(client: socket.socket) -> bytes:
    """What can be read without waiting (a TLS recv returns one record: ask until there is none)."""
    data = b""
    for _ in range(1000):
        try:
            piece = client.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            break
        if not piece:
            break
        data += piece
    return data


def answers(data: bytes) -> Tuple[List[bytes], bytes]:
    """The bodies of the whole responses at the start of ``data``, and the rest."""
    bodies = []
    while True:
        head, separator, rest = data.partition(b"\r\n\r\n")
        if not separator:
            return bodies, data
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        if len(rest) < length:
            return bodies, data
        assert head.startswith(b"HTTP/1.1 200 ")
        bodies.append(rest[:length])
        data = rest[length:]


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_a_pipelining_client_that_does_not_read_is_no_longer_read_then_gets_every_answer(reactor, tls_contexts, tls):
    app = PaddedApp()
    client, protocol, port = connect(reactor, tls, tls_contexts, app)
    requests = b"".join(f"GET /r{index} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode() for index in range(COUNT))
    server_socket = socket_transport(protocol, tls)
    sent = 0
    for _ in range(STEPS):                          # send, never read, until the server stops reading
        sent = send_some(client, requests, sent)
        step(reactor)
        if server_socket not in reactor.getReaders() and protocol.output.stalled:
            break
    assert server_socket not in reactor.getReaders(), f"still read after {app.answered} answers"
    # Until the socket buffers are full, the kernel may still take output and the server read a little more; past
    # that, every answer given is in one of the bounded buffers: the client's receive buffer, the server's send
    # buffer, Twisted's (it pauses its producer over bufferSize) and the pacing wrapper's (the high water).
    reply = len(f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1007\r\n\r\n/r{COUNT} ".encode()
                + PADDING)
    kernel = (client.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
              + server_socket.getHandle().getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
    bound = (kernel + server_socket.bufferSize + HIGH_WATER) // reply + 4
    for _ in range(500):                            # the client goes on sending, never reading
        sent = send_some(client, requests, sent)
        step(reactor)
        assert protocol.output.held <= HIGH_WATER + 2 * reply
        assert twisted_buffered(server_socket) <= server_socket.bufferSize + 2 * reply
        assert app.answered <= bound < COUNT // 10
    assert sent == len(requests)                    # all sent: the rest waits in the server's receive buffer

    bodies: List[bytes] = []
    pending = b""
    for _ in range(STEPS):                          # now the client reads (and sends the rest)
        sent = send_some(client, requests, sent)
        step(reactor)
        data = receive_some(client)
        if data:
            more, pending = answers(pending + data)
            bodies += more
        if len(bodies) == COUNT:
            break
    assert [body.split(b" ")[0] for body in bodies] == [f"/r{index}".encode() for index in range(COUNT)]
    assert app.answered == COUNT and pending == b"" and server_socket in reactor.getReaders()
    client.close()
    port.stopListening()
    for _ in range(STEPS):
        if protocol.closed:
            break
        step(reactor)

