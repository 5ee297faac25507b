"""Authoritative DNS for the org (twisted.names): A/AAAA for every CAS name, the Autodiscover SRV record, NXDOMAIN
for unknown names inside the zone, REFUSED for names outside it (we are nobody's recursive resolver).

Before the zone answers, the ``dns_query`` hook (scope host = the queried name) may replace the answer with a
``DnsAnswer``: another rcode, other records, or no reply at all."""
from __future__ import annotations

import ipaddress
from typing import Callable, Dict, List, Optional

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.names import authority, dns, error, server

from harness.hooks import Scope
from harness.transcript import Transcript
from harness.protocols.dns import DnsAnswer, DnsRecord, dns_query_hook

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


class RecordingDNSServerFactory(server.DNSServerFactory):
    def __init__(self, authority_: OrgAuthority, transcript: Transcript):
        super().__init__(authorities=[authority_], verbose=0)
        self.transcript = transcript

    def gotResolverError(self, failure, protocol, message, address):
        if failure.check(NoReply):
            self._record(message, "NO-REPLY", [], address)
            return
        # twisted would call a refusal NXDOMAIN (we are not authoritative) and log a server failure as a bug
        rcode = {error.DNSQueryRefusedError: dns.EREFUSED, error.DNSServerError: dns.ESERVER}.get(
            failure.check(error.DNSQueryRefusedError, error.DNSServerError))
        if rcode is None:
            return super().gotResolverError(failure, protocol, message, address)
        self.sendReply(protocol, self._responseFromMessage(message=message, rCode=rcode), address)

    def sendReply(self, protocol, message, address):
        self._record(message, RCODE_NAMES.get(message.rCode, str(message.rCode)),
                     [str(a.payload) for a in message.answers][:8], address)
        return super().sendReply(protocol, message, address)

    def _record(self, message, rcode: str, answers: List[str], address) -> None:
        query = message.queries[0] if message.queries else None
        self.transcript.record(
            "dns", name=query.name.name.decode("ascii", "replace") if query else None,
            type=dns.QUERY_TYPES.get(query.type, str(query.type)) if query else None,
            rcode=rcode, answers=answers, peer=f"{address[0]}:{address[1]}" if address else "tcp")


def query_problem(data: bytes) -> Optional[str]:
    """Why a datagram is not one well-formed query (twisted's parser is lenient: a cut-off question just vanishes)."""
    message = dns.Message()
    try:
        message.fromStr(data)
    except (EOFError, ValueError) as exc:
        return f"unparsable ({str(exc) or type(exc).__name__})"
    if message.answer:
        return "a response, not a query"
    question_count = int.from_bytes(data[4:6], "big")
    if question_count != 1 or len(message.queries) != 1:
        return f"{len(message.queries)} readable question(s), header says {question_count}"
    return None


class RecordingDNSDatagramProtocol(dns.DNSDatagramProtocol):
    """Twisted drops or half-reads a malformed datagram without a word; a server answers FORMERR (RFC 1035 4.1.1)
    when there is a 12-byte header to answer to (never to a response, which would start a ping-pong), and mockex
    records the attempt either way."""

    def datagramReceived(self, data: bytes, addr) -> None:
        problem = query_problem(data)
        if problem is None:
            super().datagramReceived(data, addr)
            return
        answered = len(data) >= 12 and problem != "a response, not a query"
        if answered:
            reply = dns.Message(id=int.from_bytes(data[:2], "big"), answer=True, rCode=dns.EFORMAT)
            self.transport.write(reply.toStr(), addr)
        self.controller.transcript.record("dns_error", peer=f"{addr[0]}:{addr[1]}", bytes=len(data), reason=problem,
                                          rcode="FORMERR" if answered else None)


def listen_dns(reactor, org, address: str, port: int, https_port: int, transcript: Transcript, *, faults=None,
               address_of: Optional[Callable[[str], str]] = None):
    """Listen on UDP and TCP (same port number); returns (udp_port, tcp_port).

    With port 0 the UDP socket picks the number and TCP takes the same; another program may already hold that
    number over TCP, so then both are tried again with a new number."""
    authority_ = OrgAuthority(org, address_of or (lambda host: address), https_port, transcript, faults)
    factory = RecordingDNSServerFactory(authority_, transcript)
    attempts_left = 20
    while True:
        udp = reactor.listenUDP(port, RecordingDNSDatagramProtocol(factory), interface=address)
        try:
            return udp, reactor.listenTCP(udp.getHost().port, factory, interface=address)
        except CannotListenError:
            udp.stopListening()
            attempts_left -= 1
            if port != 0 or not attempts_left:
                raise
