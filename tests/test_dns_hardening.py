"""DNS under hostile input: zone transfers refused, over-long names answered FORMERR, every reply readable by
dnspython, idle TCP connections closed. Driven in-process (the datagram handler, a StringTransport and a
task.Clock), plus dnspython against a served mockex for the zone transfer."""
from __future__ import annotations

import struct
from typing import List, Tuple

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.xfr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from harness.org import load_org
from harness.services.dns import (
    DEFAULT_TCP_IDLE_TIMEOUT,
    OrgAuthority,
    RecordingDNSDatagramProtocol,
    RecordingDNSServerFactory,
    RecordingDNSStreamProtocol,
    listen_dns,
)
from harness.transcript import Transcript
from tests.support.fuzz import scaled

ORG = load_org()
CLIENT = ("127.0.0.1", 40053)


class DatagramSink:
    """The UDP transport of the in-process server: keeps what was sent, and to whom."""

    def __init__(self) -> None:
        self.sent: List[Tuple[bytes, tuple]] = []

    def write(self, data: bytes, addr: tuple) -> None:
        self.sent.append((data, addr))


def udp_server(transcript: Transcript) -> Tuple[RecordingDNSDatagramProtocol, DatagramSink]:
    factory = RecordingDNSServerFactory(OrgAuthority(ORG, lambda host: "127.0.0.1", 443, transcript), transcript)
    protocol = RecordingDNSDatagramProtocol(factory, Clock())
    protocol.transport = sink = DatagramSink()
    protocol.startProtocol()
    return protocol, sink


def ask_udp(data: bytes) -> Tuple[List[bytes], Transcript]:
    transcript = Transcript()
    protocol, sink = udp_server(transcript)
    protocol.datagramReceived(data, CLIENT)
    assert all(addr == CLIENT for _, addr in sink.sent)
    return [reply for reply, _ in sink.sent], transcript


def tcp_connection(transcript: Transcript, clock: Clock, **options) -> Tuple[RecordingDNSStreamProtocol,
                                                                              StringTransport]:
    factory = RecordingDNSServerFactory(OrgAuthority(ORG, lambda host: "127.0.0.1", 443, transcript), transcript,
                                        reactor=clock, **options)
    peer = IPv4Address("TCP", *CLIENT)
    protocol = factory.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    return protocol, transport


def tcp_replies(transport: StringTransport) -> List[dns.message.Message]:
    data, replies = transport.value(), []
    while data:
        (length,) = struct.unpack("!H", data[:2])
        replies.append(dns.message.from_wire(data[2:2 + length]))
        data = data[2 + length:]
    return replies


def framed(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def raw_query(name_wire: bytes, qtype: int = 1, query_id: int = 0x1234) -> bytes:
    return struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + name_wire + struct.pack("!HH", qtype, 1)


def labels(*parts: bytes) -> bytes:
    return b"".join(bytes([len(part)]) + part for part in parts) + b"\x00"


# ---- zone transfers ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rdtype", ["AXFR", "IXFR"])
def test_zone_transfer_over_udp_is_refused_and_never_larger_than_the_question(rdtype):
    query = dns.message.make_query(ORG.domain, rdtype)
    (wire,), transcript = ask_udp(query.to_wire())
    reply = dns.message.from_wire(wire)
    assert reply.id == query.id and reply.rcode() == dns.rcode.REFUSED
    assert not reply.answer and not reply.authority
    assert len(wire) <= len(query.to_wire()) + 11          # no amplification (at most an OPT record more)
    (event,) = transcript.events
    assert (event["kind"], event["rcode"], event["type"], event["reason"]) == ("dns", "REFUSED", rdtype,
                                                                               f"{rdtype} refused")


def test_zone_transfer_over_tcp_is_refused():
    transcript = Transcript()
    protocol, transport = tcp_connection(transcript, Clock())
    query = dns.message.make_query(ORG.domain, "AXFR")
    protocol.dataReceived(framed(query.to_wire()))
    (reply,) = tcp_replies(transport)
    assert reply.id == query.id and reply.rcode() == dns.rcode.REFUSED and not reply.answer
    (event,) = transcript.events
    assert (event["rcode"], event["transport"], event["peer"]) == ("REFUSED", "tcp", "127.0.0.1:40053")


def test_dnspython_zone_transfer_is_refused_by_a_served_mockex(server):
    host, port = server.endpoints["dns"]["host"], server.endpoints["dns"]["port"]
    udp_reply = dns.query.udp(dns.message.make_query(ORG.domain, "AXFR"), host, port=port, timeout=5)
    assert udp_reply.rcode() == dns.rcode.REFUSED and not udp_reply.answer
    with pytest.raises(dns.xfr.TransferError, match="REFUSED"):
        list(dns.query.xfr(host, ORG.domain, port=port, timeout=5, lifetime=10))
    assert server.wait_for(lambda e: e["kind"] == "dns" and e.get("reason") == "AXFR refused"
                           and e["transport"] == "tcp")
    assert dns.query.udp(dns.message.make_query(f"mail.{ORG.domain}", "A"), host, port=port,
                         timeout=5).rcode() == dns.rcode.NOERROR


# ---- names too long to be names ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name_wire, reason", [
    (labels(b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 62), "name over 255 octets"),      # 256 octets on the wire
    (labels(b"a" * 64, b"contoso", b"test"), "label of 64 octets (over 63)"),
    (labels(b"x" * 191), "label of 191 octets (over 63)"),
    (b"\x04mail\xc0\x0c\x00", "compression pointer in the question"),
])
def test_a_name_no_dns_name_can_be_gets_formerr_with_the_same_id_and_no_echo(name_wire, reason):
    (wire,), transcript = ask_udp(raw_query(name_wire, query_id=0xBEEF))
    reply = dns.message.from_wire(wire)
    assert (reply.id, reply.rcode(), reply.question) == (0xBEEF, dns.rcode.FORMERR, [])
    assert reply.flags & dns.flags.QR and name_wire[1:8] not in wire
    (event,) = transcript.events
    assert (event["kind"], event["reason"], event["rcode"], event["transport"]) == ("dns_error", reason, "FORMERR",
                                                                                    "udp")


def test_the_longest_legal_name_is_answered():
    name_wire = labels(b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 48, b"contoso", b"test")
    assert len(name_wire) == 255
    (wire,), _ = ask_udp(raw_query(name_wire))
    assert dns.message.from_wire(wire).rcode() == dns.rcode.NXDOMAIN


def test_over_long_name_over_tcp_gets_formerr_too():
    transcript = Transcript()
    protocol, transport = tcp_connection(transcript, Clock())
    protocol.dataReceived(framed(raw_query(labels(*[b"z" * 63] * 5), query_id=7)))
    (reply,) = tcp_replies(transport)
    assert (reply.id, reply.rcode()) == (7, dns.rcode.FORMERR)
    assert transcript.events[-1]["kind"] == "dns_error" and transcript.events[-1]["transport"] == "tcp"


def test_a_label_holding_a_dot_is_refused_not_answered_for_another_name():
    (wire,), transcript = ask_udp(raw_query(labels(b"mail.contoso", b"test")))
    reply = dns.message.from_wire(wire)
    assert reply.rcode() == dns.rcode.REFUSED and not reply.answer
    assert reply.question[0].name.labels[0] == b"mail.contoso"     # the question as asked, not twisted's reading
    assert transcript.events[-1]["reason"] == "a label holds a dot"


@pytest.mark.parametrize("opcode", [dns.opcode.IQUERY, dns.opcode.STATUS, dns.opcode.NOTIFY, dns.opcode.UPDATE, 3])
def test_other_opcodes_get_notimp_as_a_response_echoing_nothing(opcode):
    query = bytearray(dns.message.make_query(f"mail.{ORG.domain}", "A").to_wire())
    query[2] = (query[2] & 0x87) | (opcode << 3)
    (wire,), transcript = ask_udp(bytes(query))
    reply = dns.message.from_wire(wire)
    assert reply.flags & dns.flags.QR and reply.rcode() == dns.rcode.NOTIMP and reply.opcode() == opcode
    assert transcript.events[-1]["rcode"] == "NOTIMP"


# ---- fuzz: every reply parses ----------------------------------------------------------------------------------
VALID_QUERIES = [dns.message.make_query(name, rdtype, use_edns=edns).to_wire()
                 for name, rdtype, edns in [(f"mail.{ORG.domain}", "A", False), (ORG.domain, "ANY", True),
                                            (f"_autodiscover._tcp.{ORG.domain}", "SRV", False),
                                            ("example.org", "A", True), (ORG.domain, "AXFR", False)]]


def question_name_end(data: bytes) -> int:
    position = 12
    while data[position]:
        position += 1 + data[position]
    return position + 1


@st.composite
def hostile_datagrams(draw) -> bytes:
    kind = draw(st.sampled_from(["random", "header+random", "mutated", "retyped", "flags", "names"]))
    if kind == "random":
        return draw(st.binary(max_size=600))
    if kind == "header+random":
        header = struct.pack("!HHHHHH", draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0x7FFF)),
                             draw(st.integers(0, 3)), draw(st.integers(0, 2)), draw(st.integers(0, 2)),
                             draw(st.integers(0, 2)))
        return header + draw(st.binary(max_size=600))
    if kind == "names":             # labels of any length and content, the name's total length near 255
        parts = draw(st.lists(st.binary(min_size=1, max_size=70), max_size=8))
        return raw_query(labels(*parts), draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF)))
    data = bytearray(draw(st.sampled_from(VALID_QUERIES)))
    if kind == "flags":             # any opcode, QR, TC, rcode... on a good question
        struct.pack_into("!H", data, 2, draw(st.integers(0, 0xFFFF)))
        return bytes(data)
    if kind == "retyped":           # a well-formed question of any type and class
        struct.pack_into("!HH", data, question_name_end(data), draw(st.integers(0, 0xFFFF)),
                         draw(st.integers(0, 0xFFFF)))
        return bytes(data)
    for position, value in draw(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1,
                                         max_size=6)):
        data[position % len(data)] = value
    return bytes(data) + draw(st.binary(max_size=8))


@settings(max_examples=scaled(600), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_datagrams())
def test_every_reply_to_any_datagram_parses_and_every_datagram_is_recorded(data):
    replies, transcript = ask_udp(data)
    assert len(replies) <= 1
    for wire in replies:
        reply = dns.message.from_wire(wire)            # raises on anything dnspython cannot read
        assert reply.id == int.from_bytes(data[:2], "big") and reply.flags & dns.flags.QR
        if reply.question and reply.question[0].rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
            assert reply.rcode() == dns.rcode.REFUSED and not reply.answer
    assert len(transcript.events) == 1 and transcript.events[0]["kind"] in ("dns", "dns_error")


@settings(max_examples=scaled(100), deadline=None)
@given(hostile_datagrams())
def test_every_reply_over_tcp_parses(data):
    protocol, transport = tcp_connection(Transcript(), Clock())
    protocol.dataReceived(framed(data))
    for reply in tcp_replies(transport):
        assert reply.id == int.from_bytes(data[:2], "big")


def test_a_response_or_a_runt_gets_no_reply_but_a_transcript_line():
    response = dns.message.make_response(dns.message.make_query(f"mail.{ORG.domain}", "A")).to_wire()
    for data, reason in [(response, "a response, not a query"), (b"\x01\x02\x03", "shorter than a DNS header")]:
        replies, transcript = ask_udp(data)
        assert replies == [] and transcript.events[0]["reason"] == reason


# ---- idle TCP connections ---------------------------------------------------------------------------------------
def test_an_idle_tcp_connection_is_closed_after_the_default_timeout():
    assert DEFAULT_TCP_IDLE_TIMEOUT == 30.0
    clock, transcript = Clock(), Transcript()
    protocol, transport = tcp_connection(transcript, clock)
    clock.advance(DEFAULT_TCP_IDLE_TIMEOUT - 0.1)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting
    (event,) = transcript.events
    assert (event["kind"], event["reason"], event["rcode"], event["peer"]) == ("dns_error", "idle for 30 s", None,
                                                                               "127.0.0.1:40053")
    protocol.connectionLost()
    assert not clock.getDelayedCalls()


def test_each_complete_query_restarts_the_idle_clock_but_dripped_bytes_do_not():
    clock, transcript = Clock(), Transcript()
    protocol, transport = tcp_connection(transcript, clock, tcp_idle_timeout=10)
    for _ in range(3):
        clock.advance(9)
        protocol.dataReceived(framed(dns.message.make_query(f"mail.{ORG.domain}", "A").to_wire()))
    assert not transport.disconnecting and len(tcp_replies(transport)) == 3
    for byte in framed(dns.message.make_query(f"ex01.{ORG.domain}", "A").to_wire())[:-1]:
        protocol.dataReceived(bytes([byte]))       # a slowloris never completes a query
        clock.advance(0.5)
        if transport.disconnecting:
            break
    assert transport.disconnecting and clock.seconds() == pytest.approx(27 + 10, abs=0.5)
    assert transcript.events[-1]["reason"] == "idle for 10 s" and transcript.events[-1]["bytes"] > 0


def test_connection_lost_cancels_the_idle_timer():
    clock = Clock()
    protocol, _ = tcp_connection(Transcript(), clock)
    protocol.connectionLost()
    assert not clock.getDelayedCalls()


def test_the_idle_timeout_is_configurable_through_listen_dns():
    class Port:
        def getHost(self):
            return IPv4Address("TCP", "127.0.0.1", 40000)

    class Reactor(Clock):
        def listenUDP(self, port, protocol, interface):
            return Port()

        def listenTCP(self, port, factory, interface):
            self.factory = factory
            return Port()

    reactor = Reactor()
    listen_dns(reactor, ORG, "127.0.0.1", 0, 443, Transcript(), tcp_idle_timeout=2.5)
    protocol = reactor.factory.buildProtocol(IPv4Address("TCP", *CLIENT))
    transport = StringTransport(peerAddress=IPv4Address("TCP", *CLIENT))
    protocol.makeConnection(transport)
    reactor.advance(2.5)
    assert transport.disconnecting
    with pytest.raises(ValueError, match="positive"):
        listen_dns(reactor, ORG, "127.0.0.1", 0, 443, Transcript(), tcp_idle_timeout=0)

