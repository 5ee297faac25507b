"""Authoritative DNS for the org (twisted.names): A/AAAA for every CAS name, the Autodiscover SRV record, NXDOMAIN
for unknown names inside the zone, REFUSED for names outside it (we are nobody's recursive resolver).

Before the zone answers, the ``dns_query`` hook (scope host = the queried name) may replace the answer with a
``DnsAnswer``: another rcode, other records, or no reply at all.

Hostile input is screened on the wire before twisted.names (which is lenient) sees it: FORMERR for a name no DNS
name can be, NOTIMP for other opcodes, nothing for a response; zone transfers (AXFR, IXFR) are REFUSED over UDP and
TCP; a TCP connection without a complete query for ``tcp_idle_timeout`` seconds is closed. Each of these is a
``dns`` or ``dns_error`` transcript event."""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import connectionDone
from twisted.names import authority, dns, error, server
from twisted.python.failure import Failure

from harness.hooks import Scope
from harness.protocols.dns import DnsAnswer, DnsRecord, dns_query_hook
from harness.transcript import Transcript

RCODE_NAMES = {dns.OK: "NOERROR", dns.ESERVER: "SERVFAIL", dns.ENAME: "NXDOMAIN", dns.EREFUSED: "REFUSED"}
TTL = 300


class NoReply(Exception):
    """A lookup that must go unanswered."""


def zone_records(org, address_of: Callable[[str], str], https_port: int) -> Dict[bytes, List]:
    """The zone as twisted.names record objects, keyed by lower-case owner name.

    ``address_of(host)`` is the loopback address serving that host: the listen address, or a dedicated one when a
    network fault needs the host apart (a refused or blackholed port for one name only)."""
    records: Dict[bytes, List] = {}
    for host in org.hostnames:
        records.setdefault(host.encode(), []).append(_address_record(address_of(host)))
    srv_name = f"_autodiscover._tcp.{org.domain}".encode()
    records.setdefault(srv_name, []).append(dns.Record_SRV(0, 0, https_port, org.autodiscover_host, ttl=TTL))
    return records


def _address_record(address: str):
    if ipaddress.ip_address(address).version == 6:
        return dns.Record_AAAA(address, ttl=TTL)
    return dns.Record_A(address, ttl=TTL)


class OrgAuthority(authority.FileAuthority):
    """FileAuthority gives correct NXDOMAIN/NODATA-with-SOA answers; we only supply the data."""

    def __init__(self, org, address_of: Callable[[str], str], https_port: int, transcript: Transcript, faults=None):
        self.org, self.address_of, self.https_port, self.transcript = org, address_of, https_port, transcript
        self.faults = faults
        super().__init__(org.domain)

    def loadFile(self, filename) -> None:  # FileAuthority's hook for filling self.soa / self.records
        domain = self.org.domain
        self.soa = (domain.encode(), dns.Record_SOA(mname=f"dc01.{domain}", rname=f"hostmaster.{domain}",
                                                    serial=2026112801, refresh=3600, retry=600, expire=86400,
                                                    minimum=300, ttl=TTL))
        self.records = zone_records(self.org, self.address_of, self.https_port)
        self.records.setdefault(domain.encode(), []).append(self.soa[1])

    def _lookup(self, name, cls, type, timeout=None):
        lname = name.lower()
        zone = self.org.domain.encode()
        if not (lname == zone or lname.endswith(b"." + zone)):
            return defer.fail(error.DNSQueryRefusedError(name))
        if self.faults is not None:
            text = lname.decode("ascii", "replace")
            answer = self.faults.first(dns_query_hook, Scope(host=text), text, dns.QUERY_TYPES.get(type, str(type)))
            if answer is not None:
                return self._fault_answer(name, type, answer)
        return super()._lookup(name, cls, type, timeout)

    def _fault_answer(self, name: bytes, qtype: int, answer: DnsAnswer):
        failures = {"NXDOMAIN": dns.AuthoritativeDomainError, "SERVFAIL": error.DNSServerError,
                    "REFUSED": error.DNSQueryRefusedError, "NO-REPLY": NoReply}
        if answer.rcode in failures:
            return defer.fail(failures[answer.rcode](name))
        results = [dns.RRHeader(name, payload.TYPE, dns.IN, TTL, payload, auth=True)
                   for payload in map(self._payload, answer.records)
                   if payload.TYPE == qtype or qtype == dns.ALL_RECORDS]
        authority_ = [] if results else [dns.RRHeader(self.soa[0], dns.SOA, dns.IN, TTL, self.soa[1], auth=True)]
        return defer.succeed((results, authority_, []))

    def _payload(self, record: DnsRecord):
        if record.type == "SRV":
            return dns.Record_SRV(record.priority, record.weight,
                                  self.https_port if record.port is None else record.port, record.value, ttl=TTL)
        return _address_record(record.value or self.address_of(self.org.mail_host))


ZONE_TRANSFER_TYPES = (dns.AXFR, dns.IXFR)
DEFAULT_TCP_IDLE_TIMEOUT = 30.0     # seconds without a complete query before a TCP connection is closed (Windows DNS)
HEADER_SIZE = 12
MAX_NAME_OCTETS = 255               # RFC 1035 2.3.4, on the wire: length octets and the root's zero included
MAX_LABEL_OCTETS = 63
_QR, _RD = 0x8000, 0x0100


def _type_name(qtype: int) -> str:
    return dns.QUERY_TYPES.get(qtype) or dns.EXT_QUERIES.get(qtype) or str(qtype)


def _peer(protocol: Any, address: Optional[Tuple[str, int]]) -> str:
    """host:port of the client: the datagram's source, or the TCP connection's peer."""
    if address is not None:
        return f"{address[0]}:{address[1]}"
    peer = protocol.transport.getPeer()
    return f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"


class RecordingDNSServerFactory(server.DNSServerFactory):
    """twisted.names' server, with every answer recorded, zone transfers refused (as AD-integrated DNS does for a
    host not on the zone's transfer list) and idle TCP connections closed."""

    def __init__(self, authority_: OrgAuthority, transcript: Transcript, *, reactor: Any = None,
                 tcp_idle_timeout: float = DEFAULT_TCP_IDLE_TIMEOUT) -> None:
        if not tcp_idle_timeout > 0:
            raise ValueError(f"tcp_idle_timeout must be positive, got {tcp_idle_timeout!r}")
        super().__init__(authorities=[authority_], verbose=0)
        self.transcript = transcript
        self.reactor = reactor
        self.tcp_idle_timeout = tcp_idle_timeout

    def buildProtocol(self, addr: Any) -> "RecordingDNSStreamProtocol":
        protocol = RecordingDNSStreamProtocol(self, self.reactor, self.tcp_idle_timeout)
        protocol.factory = self
        return protocol

    def handleQuery(self, message: dns.Message, protocol: Any, address: Optional[Tuple[str, int]]) -> None:
        qtype = message.queries[0].type
        if qtype not in ZONE_TRANSFER_TYPES:
            return super().handleQuery(message, protocol, address)
        # Never a zone, over UDP (the x7 amplification) nor TCP: nobody here is on a transfer list.
        response = self._responseFromMessage(message=message, rCode=dns.EREFUSED)
        self._record(response, "REFUSED", [], protocol, address, reason=f"{_type_name(qtype)} refused")
        super().sendReply(protocol, response, address)

    def gotResolverError(self, failure, protocol, message, address):
        if failure.check(NoReply):
            self._record(message, "NO-REPLY", [], protocol, address)
            return
        # twisted would call a refusal NXDOMAIN (we are not authoritative) and log a server failure as a bug
        rcode = {error.DNSQueryRefusedError: dns.EREFUSED, error.DNSServerError: dns.ESERVER}.get(
            failure.check(error.DNSQueryRefusedError, error.DNSServerError))
        if rcode is None:
            return super().gotResolverError(failure, protocol, message, address)
        self.sendReply(protocol, self._responseFromMessage(message=message, rCode=rcode), address)

    def sendReply(self, protocol, message, address):
        self._record(message, RCODE_NAMES.get(message.rCode, str(message.rCode)),
                     [str(a.payload) for a in message.answers][:8], protocol, address)
        return super().sendReply(protocol, message, address)

    def _record(self, message: dns.Message, rcode: str, answers: List[str], protocol: Any,
                address: Optional[Tuple[str, int]], reason: str = "") -> None:
        query = message.queries[0] if message.queries else None
        extra = {"reason": reason} if reason else {}
        self.transcript.record(
            "dns", name=query.name.name.decode("ascii", "replace") if query else None,
            type=_type_name(query.type) if query else None,
            rcode=rcode, answers=answers, peer=_peer(protocol, address),
            transport="udp" if address else "tcp", **extra)


# ---- screening: what twisted.names must never see -------------------------------------------------------------
@dataclass(frozen=True)
class Rejection:
    """A message answered (or dropped) before twisted.names parses it; ``reply`` is empty when none is sent."""
    reason: str
    rcode: Optional[str] = None
    reply: bytes = b""


def _reply_header(data: bytes, rcode: int, question: bytes = b"") -> bytes:
    """A response to the query header in ``data``: same id and opcode, RD echoed, QR set, one question or none.
    It never carries the rest of the query, whose records this server cannot vouch for."""
    flags = int.from_bytes(data[2:4], "big")
    reply_flags = _QR | (flags & 0x7800) | (flags & _RD) | rcode
    return data[:2] + struct.pack("!HHHHH", reply_flags, 1 if question else 0, 0, 0, 0) + question


def _question_end(data: bytes) -> int:
    """Offset just past the first question; ValueError says why it is not a question dnspython could read back."""
    pos, octets = HEADER_SIZE, 0
    while True:
        if pos >= len(data):
            raise ValueError("question name cut off")
        length = data[pos]
        if length & 0xC0 == 0xC0:
            raise ValueError("compression pointer in the question")     # nothing before it to point at
        if length > MAX_LABEL_OCTETS:
            raise ValueError(f"label of {length} octets (over {MAX_LABEL_OCTETS})")
        octets += 1 + length
        if octets > MAX_NAME_OCTETS:
            raise ValueError(f"name over {MAX_NAME_OCTETS} octets")
        if length == 0:
            break
        if pos + 1 + length > len(data):
            raise ValueError("question name cut off")
        pos += 1 + length
    if pos + 1 + 4 > len(data):
        raise ValueError("question type or class cut off")
    return pos + 1 + 4


def _labels(data: bytes) -> List[bytes]:
    """The labels of the first question's name (already checked by _question_end)."""
    labels, pos = [], HEADER_SIZE
    while data[pos]:
        labels.append(data[pos + 1:pos + 1 + data[pos]])
        pos += 1 + data[pos]
    return labels


def screen_query(data: bytes) -> Optional[Rejection]:
    """None when ``data`` is one well-formed query twisted.names can answer faithfully; else what to do instead.

    Twisted's parser is lenient (a cut-off question just vanishes, a 300-octet name is echoed back), so a query
    is checked on the wire first: FORMERR (RFC 1035 4.1.1) when there is a 12-byte header to answer to, never an
    answer to a response (which would start a ping-pong)."""
    if len(data) < HEADER_SIZE:
        return Rejection("shorter than a DNS header")
    flags = int.from_bytes(data[2:4], "big")
    if flags & _QR:
        return Rejection("a response, not a query")
    opcode = (flags >> 11) & 0xF
    if opcode != dns.OP_QUERY:
        return Rejection(f"opcode {opcode} not implemented", "NOTIMP", _reply_header(data, dns.ENOTIMP))
    question_count = int.from_bytes(data[4:6], "big")
    if question_count != 1:
        return Rejection(f"{question_count} questions", "FORMERR", _reply_header(data, dns.EFORMAT))
    try:
        end = _question_end(data)
    except ValueError as exc:
        return Rejection(str(exc), "FORMERR", _reply_header(data, dns.EFORMAT))
    if any(b"." in label for label in _labels(data)):
        # Legal on the wire, but twisted.names keeps names as dotted text and would answer for another name.
        return Rejection("a label holds a dot", "REFUSED", _reply_header(data, dns.EREFUSED, data[HEADER_SIZE:end]))
    message = dns.Message()
    try:
        message.fromStr(data)
    except (EOFError, ValueError, struct.error) as exc:
        return Rejection(f"unparsable ({str(exc) or type(exc).__name__})", "FORMERR",
                         _reply_header(data, dns.EFORMAT))
    if len(message.queries) != 1:
        return Rejection(f"{len(message.queries)} readable question(s)", "FORMERR", _reply_header(data, dns.EFORMAT))
    return None


def query_problem(data: bytes) -> Optional[str]:
    """Why ``data`` is not one well-formed query, or None."""
    rejection = screen_query(data)
    return rejection.reason if rejection else None


class _Screening:
    """Shared by the UDP and TCP protocols: a rejected message is answered here and recorded as ``dns_error``."""
    controller: RecordingDNSServerFactory

    def _rejected(self, data: bytes, peer: str, transport: str, send: Callable[[bytes], None]) -> bool:
        rejection = screen_query(data)
        if rejection is None:
            return False
        if rejection.reply:
            send(rejection.reply)
        self.controller.transcript.record("dns_error", peer=peer, bytes=len(data), reason=rejection.reason,
                                          rcode=rejection.rcode, transport=transport)
        return True


class RecordingDNSDatagramProtocol(_Screening, dns.DNSDatagramProtocol):
    """Twisted drops or half-reads a malformed datagram without a word; here it is answered and recorded."""

    def datagramReceived(self, data: bytes, addr: Tuple[str, int]) -> None:
        if not self._rejected(data, f"{addr[0]}:{addr[1]}", "udp", lambda reply: self.transport.write(reply, addr)):
            super().datagramReceived(data, addr)


class RecordingDNSStreamProtocol(_Screening, dns.DNSProtocol):
    """DNS over TCP: screened like UDP, and closed after ``idle_timeout`` seconds without a complete query (a
    client that connects and sends nothing, or drips a byte at a time, must not hold a descriptor for ever)."""

    def __init__(self, controller: RecordingDNSServerFactory, reactor: Any, idle_timeout: float) -> None:
        super().__init__(controller, reactor)
        self.idle_timeout = idle_timeout
        self._idle_call: Optional[Any] = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._idle_call = self.callLater(self.idle_timeout, self._idle_expired)

    def stringReceived(self, data: bytes) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.reset(self.idle_timeout)
        if not self._rejected(data, _peer(self, None), "tcp", self.sendString):
            super().stringReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
        super().connectionLost(reason)

    def _idle_expired(self) -> None:
        self._idle_call = None
        self.controller.transcript.record("dns_error", peer=_peer(self, None), bytes=len(self.recvd),
                                          reason=f"idle for {self.idle_timeout:g} s", rcode=None, transport="tcp")
        tcp_transport: Any = self.transport          # an ITCPTransport
        tcp_transport.abortConnection()              # not loseConnection: a client that never reads must not keep it


def listen_dns(reactor: Any, org: Any, address: str, port: int, https_port: int, transcript: Transcript, *, faults=None,
               address_of: Optional[Callable[[str], str]] = None,
               tcp_idle_timeout: float = DEFAULT_TCP_IDLE_TIMEOUT):
    """Listen on UDP and TCP (same port number); returns (udp_port, tcp_port).

    With port 0 the UDP socket picks the number and TCP takes the same; another program may already hold that
    number over TCP, so then both are tried again with a new number."""
    authority_ = OrgAuthority(org, address_of or (lambda host: address), https_port, transcript, faults)
    factory = RecordingDNSServerFactory(authority_, transcript, reactor=reactor, tcp_idle_timeout=tcp_idle_timeout)
    attempts_left = 20
    while True:
        udp = reactor.listenUDP(port, RecordingDNSDatagramProtocol(factory, reactor), interface=address)
        try:
            return udp, reactor.listenTCP(udp.getHost().port, factory, interface=address)
        except CannotListenError:
            udp.stopListening()
            attempts_left -= 1
            if port != 0 or not attempts_left:
                raise
