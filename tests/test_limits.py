"""Connection limits at the HTTP edge, on a fake clock: a slow TLS handshake, a request head that never completes,
an idle keep-alive connection, too many connections from one address, and the file-descriptor guard. Each limit
ends the connection and is recorded as a ``limit`` transcript event."""
from __future__ import annotations

from typing import List

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from harness.org import load_org
from harness.protocols.httpconn import ConnectionLimits
from harness.services import web
from harness.services.site import RedirectSite
from harness.services.web import HttpFactory
from harness.transcript import Transcript


def factory(tls: bool = False, **limits: object) -> tuple:
    transcript = Transcript()
    app = RedirectSite(load_org(), transcript, 8443)
    made = HttpFactory(app, tls=tls, clock=Clock())
    made.limits = ConnectionLimits(**limits)   # type: ignore[arg-type]
    return made, transcript


def connect(made: HttpFactory, peer: str = "127.0.0.9", port: int = 50000) -> StringTransport:
    transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
                                peerAddress=IPv4Address("TCP", peer, port))
    protocol = made.buildProtocol(transport.getPeer())
    protocol.makeConnection(transport)
    transport.protocol = protocol
    return transport


def limits(transcript: Transcript) -> List[str]:
    return [event["limit"] for event in transcript.of_kind("limit")]


def test_a_tls_handshake_that_never_ends_is_reset_at_its_limit() -> None:
    made, transcript = factory(tls=True, handshake_timeout=30.0, idle_timeout=None)
    transport = connect(made)
    made.clock.advance(29.9)
    assert not transport.disconnecting and limits(transcript) == []
    made.clock.advance(0.2)
    assert limits(transcript) == ["handshake_timeout"]
    assert transport.disconnecting


def test_a_request_head_that_never_completes_is_closed_at_the_header_wait_limit() -> None:
    made, transcript = factory(header_wait_timeout=5.0, idle_timeout=120.0)
    transport = connect(made)
    transport.protocol.dataReceived(b"GET / HT")
    made.clock.advance(4.9)
    transport.protocol.dataReceived(b"T")            # a byte now and then does not re-arm the wait
    assert not transport.disconnecting
    made.clock.advance(0.2)
    assert transport.disconnecting and limits(transcript) == ["header_wait_timeout"]


def test_an_idle_keep_alive_connection_is_closed_at_the_idle_limit() -> None:
    made, transcript = factory(idle_timeout=120.0)
    transport = connect(made)
    transport.protocol.dataReceived(b"GET / HTTP/1.1\r\nHost: contoso.test\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 302")
    made.clock.advance(119.0)
    assert not transport.disconnecting
    made.clock.advance(1.5)
    assert transport.disconnecting and limits(transcript) == ["idle_timeout"]
    assert transcript.of_kind("limit")[0]["reason"] == "idle for 120 s"


GET = b"GET / HTTP/1.1\r\nHost: contoso.test\r\n\r\n"


@pytest.mark.parametrize("request_bytes", [GET, GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")])
def test_a_client_that_never_reads_its_answers_is_reset_at_the_send_timeout(request_bytes: bytes) -> None:
    made, transcript = factory(send_timeout=30.0, idle_timeout=10.0)
    transport = connect(made)
    transport.producer.pauseProducing()    # Twisted's write buffer is full (earlier answers): the client does not read
    transport.protocol.dataReceived(request_bytes)
    assert transport.value() == b""        # the answer is held behind them
    made.clock.advance(29.9)               # the idle timer does not count: the client is not idle, it does not read
    assert not transport.disconnected and limits(transcript) == []
    made.clock.advance(0.2)
    assert transport.disconnected           # a reset: a FIN would wait behind output the client never takes
    assert limits(transcript) == ["send_timeout"]
    assert transcript.of_kind("limit")[0]["reason"] == "client not receiving: output stalled for 30 s"


def test_output_flowing_again_gives_the_idle_limit_back() -> None:
    made, transcript = factory(send_timeout=30.0, idle_timeout=10.0)
    transport = connect(made)
    transport.protocol.dataReceived(GET)
    transport.producer.pauseProducing()
    made.clock.advance(29.0)
    transport.producer.resumeProducing()   # the client read: the send timer stops, the idle one counts afresh
    made.clock.advance(9.9)
    assert not transport.disconnecting
    made.clock.advance(0.2)
    assert transport.disconnecting and not transport.disconnected and limits(transcript) == ["idle_timeout"]


def test_one_address_may_hold_only_its_share_of_connections() -> None:
    made, transcript = factory(max_connections_per_address=2)
    first, second = connect(made, port=1), connect(made, port=2)
    third = connect(made, port=3)
    assert not first.disconnecting and not second.disconnecting and third.disconnecting
    assert limits(transcript) == ["max_connections_per_address"]
    other = connect(made, peer="127.0.0.10", port=4)
    assert not other.disconnecting
    first.protocol.connectionLost(None)
    assert not connect(made, port=5).disconnecting


def test_near_the_descriptor_limit_new_connections_are_reset_with_one_log_line(monkeypatch, capsys) -> None:
    made, transcript = factory()
    monkeypatch.setattr(HttpFactory, "open_connections", 0)
    monkeypatch.setattr(web, "_fd_soft_limit", lambda: HttpFactory.FD_RESERVE + 2)
    kept = [connect(made, port=n) for n in range(2)]
    refused = [connect(made, port=10 + n) for n in range(3)]
    assert not any(t.disconnecting for t in kept) and all(t.disconnecting for t in refused)
    assert limits(transcript) == ["fd_limit"] * 3
    assert capsys.readouterr().err.count("near the file descriptor limit") == 1


@pytest.mark.parametrize("tls", [False, True])
def test_closing_normally_records_no_limit(tls: bool) -> None:
    made, transcript = factory(tls=tls)
    transport = connect(made)
    transport.protocol.connectionLost(None)
    assert limits(transcript) == []
    assert HttpFactory.open_connections >= 0
