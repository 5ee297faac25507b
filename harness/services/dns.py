"""Authoritative DNS for the org (twisted.names): A/AAAA for every CAS name, the Autodiscover SRV record, NXDOMAIN
for unknown names inside the zone, REFUSED for names outside it (we are nobody's recursive resolver)."""
from __future__ import annotations

import ipaddress
from typing import Callable, Dict, List, Optional

from twisted.internet import defer
from twisted.names import authority, dns, error, server

from harness.transcript import Transcript


def zone_records(org, address_of: Callable[[str], str], https_port: int) -> Dict[bytes, List]:
    """The zone as twisted.names record objects, keyed by lower-case owner name.

    ``address_of(host)`` is the loopback address serving that host: the listen address, or a dedicated one when a
    network fault needs the host apart (a refused or blackholed port for one name only)."""
    records: Dict[bytes, List] = {}
    for host in org.hostnames:
        address = address_of(host)
        is_v6 = ipaddress.ip_address(address).version == 6
        rec = dns.Record_AAAA(address, ttl=300) if is_v6 else dns.Record_A(address, ttl=300)
        records.setdefault(host.encode(), []).append(rec)
    srv_name = f"_autodiscover._tcp.{org.domain}".encode()
    records.setdefault(srv_name, []).append(dns.Record_SRV(0, 0, https_port, org.autodiscover_host, ttl=300))
    return records


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
                                                    minimum=300, ttl=300))
        self.records = zone_records(self.org, self.address_of, self.https_port)
        self.records.setdefault(domain.encode(), []).append(self.soa[1])

    def _lookup(self, name, cls, type, timeout=None):
        lname = name.lower()
        zone = self.org.domain.encode()
        if not (lname == zone or lname.endswith(b"." + zone)):
            return defer.fail(error.DNSQueryRefusedError(name))
        return super()._lookup(name, cls, type, timeout)


class RecordingDNSServerFactory(server.DNSServerFactory):
    def __init__(self, authority_: OrgAuthority, transcript: Transcript):
        super().__init__(authorities=[authority_], verbose=0)
        self.transcript = transcript

    def gotResolverError(self, failure, protocol, message, address):
        if failure.check(error.DNSQueryRefusedError):  # twisted would call it NXDOMAIN; we are not authoritative
            response = self._responseFromMessage(message=message, rCode=dns.EREFUSED)
            self.sendReply(protocol, response, address)
            self._verboseLog("Lookup refused")
            return
        return super().gotResolverError(failure, protocol, message, address)

    def sendReply(self, protocol, message, address):
        query = message.queries[0] if message.queries else None
        self.transcript.record(
            "dns", name=query.name.name.decode("ascii", "replace") if query else None,
            type=dns.QUERY_TYPES.get(query.type, str(query.type)) if query else None,
            rcode={0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}.get(message.rCode, str(message.rCode)),
            answers=[str(a.payload) for a in message.answers][:8],
            peer=f"{address[0]}:{address[1]}" if address else "tcp")
        return super().sendReply(protocol, message, address)


def listen_dns(reactor, org, address: str, port: int, https_port: int, transcript: Transcript, *, faults=None,
               address_of: Optional[Callable[[str], str]] = None):
    """Listen on UDP and TCP (same port number); returns (udp_port, tcp_port)."""
    authority_ = OrgAuthority(org, address_of or (lambda host: address), https_port, transcript, faults)
    factory = RecordingDNSServerFactory(authority_, transcript)
    udp = reactor.listenUDP(port, dns.DNSDatagramProtocol(factory), interface=address)
    actual = udp.getHost().port
    tcp = reactor.listenTCP(actual, factory, interface=address)
    return udp, tcp
