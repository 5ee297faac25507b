"""Fuzz target "dns": the DNS server edge (services/dns.py, twisted.names behind the wire screen) with the
``dns_query`` hook answering (harness/protocols/dns.py: any rcode, any records a scenario can write), driven
in-process with arbitrary datagrams and TCP streams.

Every datagram gets one reply dnspython can read (same id, QR set; the fault's rcode when a fault answered), or
none exactly when there must be none (a response, a runt, a NO-REPLY fault); nothing is logged as an error by
Twisted (an exception it swallowed would silently drop the query); each datagram is one transcript event."""
from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional, Tuple

import dns.flags
import dns.message
import dns.rcode
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from harness.faults.base import catalog
from harness.hooks import FaultSet
from harness.org import load_org
from harness.protocols.dns import RCODES, DnsAnswer, DnsRecord
from harness.services.dns import (
    OrgAuthority,
    RecordingDNSDatagramProtocol,
    RecordingDNSServerFactory,
    screen_query,
)
from harness.transcript import Transcript
from tests.support import corpus
from tests.support.fuzz import scaled

ORG = load_org()
CLIENT = ("127.0.0.1", 40053)


class Answering:
    """A fault answering every query with one DnsAnswer (scenario faults are built of the same pieces)."""
    name, host, user = "fuzz.dns-answer", None, None

    def __init__(self, answer: Optional[DnsAnswer]) -> None:
        self.answer = answer

    def on_dns_query(self, scope: Any, name: str, qtype: str) -> Optional[DnsAnswer]:
        return self.answer


class Sink:
    def __init__(self) -> None:
        self.sent: List[Tuple[bytes, Any]] = []

    def write(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))


class TwistedErrors:
    """Errors Twisted logs while the block runs (a failure it caught and logged instead of answering)."""

    def __enter__(self) -> List[Dict[str, Any]]:
        self.errors: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self._observe)
        return self.errors

    def _observe(self, event: Dict[str, Any]) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            self.errors.append(event)

    def __exit__(self, *exc_info: Any) -> None:
        globalLogPublisher.removeObserver(self._observe)


def factory(answer: Optional[DnsAnswer], transcript: Transcript, fired: List[dict], **options: Any):
    faults = FaultSet([Answering(answer)], record=lambda kind, **fields: fired.append(fields))
    authority = OrgAuthority(ORG, lambda host: "127.0.0.1", 443, transcript, faults)
    return RecordingDNSServerFactory(authority, transcript, **options)


def failure_texts(errors: List[Dict[str, Any]]) -> List[str]:
    return [str(error.get("log_failure") or error.get("log_format")) for error in errors]


def check_datagram(data: bytes, answer: Optional[DnsAnswer]) -> None:
    transcript, fired = Transcript(), []
    protocol = RecordingDNSDatagramProtocol(factory(answer, transcript, fired), Clock())
    protocol.transport = sink = Sink()
    protocol.startProtocol()
    with TwistedErrors() as errors:
        protocol.datagramReceived(data, CLIENT)
    assert not errors, failure_texts(errors)
    replies = [reply for reply, addr in sink.sent if addr == CLIENT]
    assert len(replies) == len(sink.sent) <= 1
    rejection = screen_query(data)
    silent = (rejection is not None and not rejection.reply) or (fired and answer and answer.rcode == "NO-REPLY")
    assert len(replies) == (0 if silent else 1), f"{len(replies)} replies; fault fired: {fired}"
    for wire in replies:
        reply = dns.message.from_wire(wire)
        assert reply.id == int.from_bytes(data[:2], "big") and reply.flags & dns.flags.QR
        if fired and answer is not None:
            assert dns.rcode.to_text(reply.rcode()) == answer.rcode
    assert len(transcript.events) == 1 and transcript.events[0]["kind"] in ("dns", "dns_error")


def check_tcp_stream(pieces: List[bytes], answer: Optional[DnsAnswer]) -> None:
    transcript, fired = Transcript(), []
    peer = IPv4Address("TCP", *CLIENT)
    protocol = factory(answer, transcript, fired, reactor=Clock()).buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    with TwistedErrors() as errors:
        protocol.makeConnection(transport)
        for piece in pieces:
            protocol.dataReceived(piece)
        protocol.connectionLost()
    assert not errors, failure_texts(errors)
    data, stream = transport.value(), b"".join(pieces)
    frames = []
    while len(stream) >= 2 and len(stream) - 2 >= int.from_bytes(stream[:2], "big"):
        length = int.from_bytes(stream[:2], "big")
        frames.append(stream[2:2 + length])
        stream = stream[2 + length:]
    replies = []
    while data:
        (length,) = struct.unpack("!H", data[:2])
        replies.append(dns.message.from_wire(data[2:2 + length]))
        data = data[2 + length:]
    unanswered = iter(int.from_bytes(frame[:2], "big") for frame in frames if len(frame) >= 2)
    assert all(any(reply.id == query_id for query_id in unanswered) for reply in replies), "replies out of order"


# ---- what the clients and the faults send ------------------------------------------------------------------
NAMES = [f"autodiscover.{ORG.domain}", f"_autodiscover._tcp.{ORG.domain}", f"MAIL.{ORG.domain.upper()}",
         ORG.domain, f"nothere.{ORG.domain}", "example.org", f"a.b.c.{ORG.domain}"]
TYPES = ["A", "AAAA", "SRV", "ANY", "MX", "TXT", "SOA", "CNAME", "NS", "PTR", "AXFR", "IXFR"]
addresses = st.one_of(st.none(), st.sampled_from(["127.0.0.1", "127.0.0.254", "::1", "127.1.2.3"]),
                      st.ip_addresses().map(str))
targets = st.one_of(st.sampled_from([f"ex01.{ORG.domain}", "ex02.example.org", "", ".", "a..b", "x" * 70,
                                     ".".join(["y" * 60] * 5), "\u00e9.test", "a b.test", "*.test", "-x.test"]),
                    st.text(max_size=30))
ports = st.none() | st.integers(0, 65535)


def record_or_none(*fields: Any) -> Optional[DnsRecord]:
    """The record, or None when DnsRecord refuses it (as a scenario's load would): what is refused up front can
    never reach a query."""
    try:
        return DnsRecord(*fields)
    except ValueError:
        return None


records = st.one_of(
    st.builds(record_or_none, st.sampled_from(["A", "AAAA", "MX"]), addresses | st.text(max_size=10)),
    st.builds(record_or_none, st.just("SRV"), targets, st.integers(-1, 65536), st.integers(0, 65535), ports))
fault_answers = st.builds(DnsAnswer, st.sampled_from(RCODES),
                          st.lists(records, max_size=4).map(lambda drawn: tuple(r for r in drawn if r)))
answers = st.one_of(fault_answers, fault_answers, fault_answers, st.none())    # None: no fault, the zone answers


@st.composite
def queries(draw: st.DrawFn) -> bytes:
    """A well-formed query for a name in or out of the zone, sometimes with a few bytes changed."""
    name = draw(st.sampled_from(NAMES) | st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,20}){0,3}", fullmatch=True)
                .map(lambda label: f"{label}.{ORG.domain}"))
    query = dns.message.make_query(name, draw(st.sampled_from(TYPES)), use_edns=draw(st.booleans()))
    query.id = draw(st.integers(0, 0xFFFF))
    data = bytearray(query.to_wire())
    if draw(st.sampled_from([False] * 3 + [True])):
        for position, value in draw(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1,
                                             max_size=4)):
            data[position % len(data)] = value
    return bytes(data)


datagrams = st.one_of(queries(), queries(), queries(), st.binary(max_size=120))


@st.composite
def tcp_streams(draw: st.DrawFn) -> List[bytes]:
    """Framed queries (a frame's length sometimes wrong) and raw bytes, cut into reads at arbitrary points."""
    parts = []
    for data in draw(st.lists(datagrams, min_size=1, max_size=4)):
        length = len(data) if draw(st.sampled_from([True] * 4 + [False])) else draw(st.integers(0, 0xFFFF))
        parts.append(struct.pack("!H", length) + data)
    stream = b"".join(parts)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=6))))
    return [stream[start:end] for start, end in zip([0] + cuts, cuts + [len(stream)])]


@settings(max_examples=scaled(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datagrams, answers)
def test_any_datagram_with_any_fault_answer_gets_one_readable_reply_or_none_by_rule(data, answer):
    check_datagram(data, answer)


@settings(max_examples=scaled(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tcp_streams(), answers)
def test_any_tcp_stream_gets_readable_replies_in_order(pieces, answer):
    check_tcp_stream(pieces, answer)


@pytest.mark.parametrize("fields", [("SRV", "."), ("SRV", "a..b"), ("SRV", "x" * 64), ("SRV", ".".join(["y" * 63] * 4)),
                                    ("SRV", None), ("SRV", "a", -1), ("SRV", "a", 0, 65536), ("A", "mail"),
                                    ("AAAA", "::g"), ("MX", None)])
def test_a_record_no_reply_could_carry_is_refused_when_built(fields):
    with pytest.raises(ValueError):
        DnsRecord(*fields)


def test_the_root_target_of_an_srv_scenario_is_served():
    """dns.srv writes "no such service" (RFC 2782) as target ".": the fault keeps it as the root."""
    [record] = catalog()["dns.srv"](records=[{"target": "."}]).records
    assert record.value == ""
    check_datagram(dns.message.make_query(f"_autodiscover._tcp.{ORG.domain}", "SRV").to_wire(),
                   DnsAnswer("NOERROR", (record,)))


def answer_of(entry: Dict[str, Any]) -> Optional[DnsAnswer]:
    if entry.get("answer") is None:
        return None
    built = (record_or_none(*record.values()) for record in entry["answer"]["records"])
    return DnsAnswer(entry["answer"]["rcode"], tuple(record for record in built if record))


@pytest.mark.parametrize("entry", corpus.entries("dns"))
def test_dns_corpus(entry):
    if "tcp" in entry:
        check_tcp_stream([corpus.as_bytes(piece) for piece in entry["tcp"]], answer_of(entry))
    else:
        check_datagram(corpus.as_bytes(entry["udp"]), answer_of(entry))
