"""MockExchange.start() and .stop() in-process on a MemoryReactorClock: what is listened on, endpoints.json, the
transcript's start/listening/stop events, requests through the assembled listeners (plain HTTP and TLS, in memory),
steps moving listeners, and stop giving everything up."""
from __future__ import annotations

import json
import os
import shutil
import socket
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest
from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

from harness import pki as pkimod
from harness.org import load_org
from harness.scenario import FaultSpec, Scenario, Step
from harness.services.server import MockExchange, ServeOptions

ORG = load_org()
DNS_PORT = 5353   # nothing is bound for DNS on a memory reactor; the number is only reported


@dataclass
class FakePort:
    """A listening port the reactor handed out: where, who serves it, and whether it was stopped."""
    kind: str
    address: str
    port: int
    factory: Any
    stopped: bool = False

    def stopListening(self) -> defer.Deferred:
        self.stopped = True
        return defer.succeed(None)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP" if self.kind != "udp" else "UDP", self.address, self.port)


class ServingReactor(MemoryReactorClock):
    """MemoryReactorClock that hands out trackable ports, for TCP/UDP listens and adopted (pre-bound) sockets."""

    def __init__(self) -> None:
        super().__init__()
        self.ports: List[FakePort] = []

    def _port(self, kind: str, address: str, port: int, factory: Any) -> FakePort:
        self.ports.append(FakePort(kind, address, port, factory))
        return self.ports[-1]

    def adoptStreamPort(self, fileno: int, addressFamily: int, factory: Any) -> FakePort:
        with socket.fromfd(fileno, addressFamily, socket.SOCK_STREAM) as sock:
            address, port = sock.getsockname()[:2]
        return self._port("adopted", address, port, factory)

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> FakePort:
        return self._port("tcp", interface, port, factory)

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> FakePort:
        return self._port("udp", interface, port, protocol)

    def on(self, kind: str, port: int) -> FakePort:
        (found,) = [p for p in self.ports if p.kind == kind and p.port == port]
        return found


@pytest.fixture(scope="module")
def pki_template(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The CA hierarchy made once: key generation is the slow part of a start."""
    state = str(tmp_path_factory.mktemp("pki-template"))
    pkimod.PKI(state)
    return os.path.join(state, "pki")


@pytest.fixture
def state_dir(tmp_path: Any, pki_template: str) -> str:
    state = str(tmp_path / "state")
    shutil.copytree(pki_template, os.path.join(state, "pki"))
    return state


@pytest.fixture
def serve(state_dir: str) -> Iterator[Callable[..., Tuple[MockExchange, "ServingReactor", Dict[str, Any]]]]:
    """Start a MockExchange on a fresh ServingReactor; its transcript is closed after the test."""
    servers: List[MockExchange] = []

    def start(*scenarios: Scenario, **options: Any) -> Tuple[MockExchange, ServingReactor, Dict[str, Any]]:
        server = MockExchange(ORG, ServeOptions(state_dir=state_dir, https_port=0, http_port=0, dns_port=DNS_PORT,
                                                **options), scenarios=list(scenarios))
        servers.append(server)
        reactor = ServingReactor()
        return server, reactor, server.start(reactor)

    yield start
    for server in servers:
        if server.transcript is not None:
            server.transcript.close()


def events(state_dir: str) -> List[Dict[str, Any]]:
    with open(os.path.join(state_dir, "transcript.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def exchange(port: FakePort, data: bytes) -> StringTransport:
    """One plain connection to ``port``: ``data`` in, the transport (holding what came back) out."""
    transport = StringTransport(hostAddress=port.getHost(), peerAddress=IPv4Address("TCP", "127.0.0.1", 41000))
    built = port.factory.buildProtocol(transport.getPeer())
    built.makeConnection(transport)
    built.dataReceived(data)
    return transport


def tls_exchange(port: FakePort, reactor: ServingReactor, ca_file: str, server_name: str, data: bytes) -> bytes:
    """One TLS connection to ``port`` with an in-memory pyOpenSSL client that trusts ``ca_file`` only."""
    transport = StringTransport(hostAddress=port.getHost(), peerAddress=IPv4Address("TCP", "127.0.0.1", 41001))
    server = port.factory.buildProtocol(transport.getPeer())
    server.makeConnection(transport)
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.load_verify_locations(ca_file)
    context.set_verify(SSL.VERIFY_PEER, lambda connection, cert, errno, depth, ok: bool(ok))
    client = SSL.Connection(context, None)
    client.set_tlsext_host_name(server_name.encode())
    client.set_connect_state()

    def pump() -> None:
        for _ in range(50):
            try:
                outgoing = client.bio_read(1 << 16)
            except SSL.WantReadError:
                outgoing = b""
            if outgoing:
                server.dataReceived(outgoing)
            reactor.advance(0)   # TLS flushes small writes on the next turn
            incoming, _ = transport.value(), transport.clear()
            if incoming:
                client.bio_write(incoming)
            if not outgoing and not incoming:
                return

    for _ in range(10):
        try:
            client.do_handshake()
            break
        except SSL.WantReadError:
            pump()
    client.sendall(data)
    pump()
    received = b""
    while True:
        try:
            received += client.recv(1 << 16)
        except (SSL.WantReadError, SSL.ZeroReturnError):
            return received


# ---- start ------------------------------------------------------------------------------------------------------
def test_start_listens_on_every_role_and_writes_the_endpoints(serve, state_dir):
    server, reactor, endpoints = serve()
    with open(os.path.join(state_dir, "endpoints.json"), encoding="utf-8") as handle:
        assert json.load(handle) == endpoints
    https, http = endpoints["https"]["port"], endpoints["http"]["port"]
    assert https and http and https != http
    assert sorted((p.kind, p.address, p.port) for p in reactor.ports) == sorted([
        ("adopted", "127.0.0.1", https), ("adopted", "127.0.0.1", http),
        ("udp", "127.0.0.1", DNS_PORT), ("tcp", "127.0.0.1", DNS_PORT)])
    assert endpoints["dns"] == {"host": "127.0.0.1", "port": DNS_PORT}
    assert endpoints["listeners"] == {"127.0.0.1": {"https": "open", "http": "open"}}
    assert endpoints["rpc_proxy_url"] == f"https://mail.contoso.test:{https}/rpc/rpcproxy.dll"
    assert os.path.exists(endpoints["ca_file"]) and not os.path.exists(os.path.join(state_dir, "endpoints.json.tmp"))
    assert [e["kind"] for e in events(state_dir)] == ["start", "listening"]


def test_the_http_listener_redirects_to_the_https_port(serve, state_dir):
    server, reactor, endpoints = serve()
    https = endpoints["https"]["port"]
    transport = exchange(reactor.on("adopted", endpoints["http"]["port"]),
                         b"GET / HTTP/1.1\r\nHost: autodiscover.contoso.test\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 302 ")
    assert f"Location: https://autodiscover.contoso.test:{https}/autodiscover/autodiscover.xml\r\n".encode() \
        in transport.value()
    assert [(e["kind"], e.get("status")) for e in events(state_dir)][-2:] == [("connect", None), ("http", 302)]


@pytest.mark.parametrize("path, encoded", [
    ("/autodiscover/%E2%82%AC", "/autodiscover/%E2%82%AC"),       # beyond Latin-1 once decoded
    ("/autodiscover/a%0d%0aSet-Cookie:%20x", "/autodiscover/a%0D%0ASet-Cookie:%20x"),   # CR/LF: no header split
    ("/autodiscover/%00", "/autodiscover/%00"),
])
def test_the_redirect_keeps_an_encoded_path_encoded(serve, state_dir, path, encoded):
    server, reactor, endpoints = serve()
    https = endpoints["https"]["port"]
    transport = exchange(reactor.on("adopted", endpoints["http"]["port"]),
                         f"GET {path} HTTP/1.1\r\nHost: autodiscover.contoso.test\r\n\r\n".encode())
    head = transport.value().split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert head[0] == b"HTTP/1.1 302 Found" and not any(line.startswith(b"Set-Cookie") for line in head)
    assert f"Location: https://autodiscover.contoso.test:{https}{encoded}".encode() in head
    assert [(e["kind"], e.get("status")) for e in events(state_dir)][-2:] == [("connect", None), ("http", 302)]


def test_a_head_over_the_limit_gets_http_sys_request_too_long_even_in_one_read(serve, state_dir):
    server, reactor, endpoints = serve()
    headers = b"".join(b"X-Header-%d: %s\r\n" % (i, b"v" * 6) for i in range(10_000))   # ~180 KB
    transport = exchange(reactor.on("adopted", endpoints["http"]["port"]),
                         b"GET / HTTP/1.1\r\nHost: autodiscover.contoso.test\r\n" + headers + b"\r\n")
    answer = transport.value()
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Server: Microsoft-HTTPAPI/2.0" in answer
    assert b"HTTP Error 400. The size of the request headers is too long." in answer
    assert transport.disconnecting
    error = events(state_dir)[-1]
    assert (error["kind"], error["status"], error["limit"]) == ("http_error", 400, "max_header_bytes")
    assert len(json.dumps(error)) < 4096   # the transcript copies no header of it


def test_a_transcript_cap_rotates_the_served_transcript(serve, state_dir):
    server, reactor, endpoints = serve(transcript_max_bytes=4096, transcript_keep=2)
    port = reactor.on("adopted", endpoints["http"]["port"])
    for _ in range(40):
        assert exchange(port, b"GET / HTTP/1.1\r\nHost: autodiscover.contoso.test\r\n\r\n").value().startswith(
            b"HTTP/1.1 302 ")
    server.transcript.close()
    path = os.path.join(state_dir, "transcript.jsonl")
    assert endpoints["transcript"] == path
    assert all(os.path.getsize(name) <= 4096 for name in (path, path + ".1", path + ".2"))
    assert not os.path.exists(path + ".3")
    (marker, *rest) = events(state_dir)
    assert marker["kind"] == "transcript_rotated" and rest[0]["seq"] == marker["seq"] and rest[-1]["kind"] == "http"


def test_the_https_listener_speaks_tls_with_the_org_certificate_and_serves_the_site(serve, state_dir):
    server, reactor, endpoints = serve()
    answer = tls_exchange(reactor.on("adopted", endpoints["https"]["port"]), reactor, endpoints["ca_file"],
                          "mail.contoso.test", b"GET /owa/ HTTP/1.1\r\nHost: mail.contoso.test\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 404 Not Found\r\n") and b"Microsoft-IIS/8.5" in answer
    (tls,) = [e for e in events(state_dir) if e["kind"] == "tls"]
    assert (tls["ok"], tls["sni"]) == (True, "mail.contoso.test")


def test_connection_ids_are_unique_across_the_listeners(serve, state_dir):
    server, reactor, endpoints = serve()
    tls_exchange(reactor.on("adopted", endpoints["https"]["port"]), reactor, endpoints["ca_file"],
                 "mail.contoso.test", b"GET /owa/ HTTP/1.1\r\nHost: mail.contoso.test\r\n\r\n")
    exchange(reactor.on("adopted", endpoints["http"]["port"]),
             b"GET / HTTP/1.1\r\nHost: autodiscover.contoso.test\r\n\r\n")
    connects = {e["listener"]: e["conn"] for e in events(state_dir) if e["kind"] == "connect"}
    assert set(connects) == {"https", "http"} and connects["https"] != connects["http"]
    answered = {e["status"]: e["conn"] for e in events(state_dir) if e["kind"] == "http"}
    assert answered == {404: connects["https"], 302: connects["http"]}


def test_a_remote_listen_address_is_refused_before_anything_is_written(tmp_path):
    state = str(tmp_path / "never")
    server = MockExchange(ORG, ServeOptions(state_dir=state, listen="192.0.2.1"))
    with pytest.raises(ValueError, match="allow-remote"):
        server.start(ServingReactor())
    assert not os.path.exists(state)


def refusing_after(seconds: float) -> Scenario:
    step = Step(after={"seconds": seconds}, apply=[FaultSpec("network.refused", {}, 1)], remove=[], line=1)
    return Scenario("refuse-later", "", faults=[], steps=[step])


def test_a_step_moves_the_listeners_when_the_clock_reaches_it(serve, state_dir):
    server, reactor, endpoints = serve(refusing_after(10))
    https = reactor.on("adopted", endpoints["https"]["port"])
    reactor.advance(9.5)
    assert not https.stopped
    reactor.advance(0.5)
    assert https.stopped and server.listeners.states()["127.0.0.1"]["https"] == "refused"
    assert [(e["kind"], e.get("state")) for e in events(state_dir)][-2:] == [("step", None), ("listener", "refused")]


# ---- stop -------------------------------------------------------------------------------------------------------
def test_stop_closes_every_listener_and_records_stop(serve, state_dir):
    server, reactor, endpoints = serve()
    path = os.path.join(state_dir, "endpoints.json")
    with open(path, "rb") as handle:
        before = handle.read()
    failures: List[Any] = []
    server.stop().addErrback(failures.append)
    assert failures == []
    assert [p for p in reactor.ports if not p.stopped] == []
    assert server.listeners.states() == {"127.0.0.1": {"https": "closed", "http": "closed"}}
    assert events(state_dir)[-1]["kind"] == "stop"
    with open(path, "rb") as handle:
        assert handle.read() == before and json.loads(before) == endpoints
    assert sorted(os.listdir(state_dir)) == ["endpoints.json", "pki", "transcript.jsonl"]


def test_stop_gives_up_ports_held_refused(serve, state_dir):
    refused = Scenario("refused", "", faults=[FaultSpec("network.refused", {}, 1)])
    server, reactor, endpoints = serve(refused)
    port = endpoints["https"]["port"]
    assert endpoints["listeners"]["127.0.0.1"]["https"] == "refused"
    with socket.socket() as probe, pytest.raises(OSError):
        probe.bind(("127.0.0.1", port))
    server.stop()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


def test_a_step_due_after_stop_neither_fires_nor_brings_the_listeners_back(serve, state_dir):
    server, reactor, endpoints = serve(refusing_after(10))
    server.stop()
    server.transcript.record("reset", faults=[])   # a late event must not reconcile either
    reactor.advance(10)
    assert reactor.getDelayedCalls() == [] and len(reactor.ports) == 4
    assert server.listeners.states() == {"127.0.0.1": {"https": "closed", "http": "closed"}}
    assert [e["kind"] for e in events(state_dir)][-2:] == ["stop", "reset"]
