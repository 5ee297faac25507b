"""What the authoritative DNS answers when a fault changes a name: ``DnsRecord``, ``DnsAnswer`` and the ``dns_query``
hook point. The Twisted edge (services/dns.py, twisted.names) turns them into records.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional, Tuple

from harness.hooks import hookspec

RCODES = ("NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "NO-REPLY")
RECORD_TYPES = ("A", "AAAA", "SRV")
MAX_NAME_TEXT = 253     # octets of a name's text form without the root dot: 255 on the wire (RFC 1035 2.3.4)

@dataclass(frozen=True)
class DnsRecord:
    """One record a fault puts in the zone. For A/AAAA the address's family decides which; ``value`` None means the
    address the CAS listens on."""
    type: str                     # "A", "AAAA" or "SRV"
    value: Optional[str] = None   # the address, or the SRV target
    priority: int = 0             # SRV only
    weight: int = 0               # SRV only
    port: Optional[int] = None    # SRV only; None: the HTTPS port

    def __post_init__(self) -> None:
        """Refuse at construction (a scenario's load) what could not be put on the wire when a query comes."""
        if self.type not in RECORD_TYPES:
            raise ValueError(f"type must be one of {RECORD_TYPES}, not {self.type!r}")
        for field, number in (("priority", self.priority), ("weight", self.weight), ("port", self.port)):
            if number is not None and not 0 <= number <= 0xFFFF:
                raise ValueError(f"{field} must be 0..65535, not {number!r}")
        if self.type == "SRV":
            if self.value is None or problem_with_name(self.value):
                raise ValueError(f"SRV target {self.value!r}: {problem_with_name(self.value or '') or 'missing'}")
        elif self.value is not None:
            try:
                ipaddress.ip_address(self.value)
            except ValueError:
                raise ValueError(f"{self.value!r} is not an IP address") from None

    def describe(self) -> str:
        if self.type == "SRV":
            return f"SRV {self.priority} {self.weight} {self.port or 'https'} {self.value}"
        return f"{self.type} {self.value or 'cas'}"


@dataclass(frozen=True)
class DnsAnswer:
    """The ``dns_query`` hook's answer. With NOERROR the name has exactly ``records`` (those of the asked type are
    answered; none of it is NODATA). NO-REPLY sends nothing, so the client's resolver times out."""
    rcode: str = "NOERROR"
    records: Tuple[DnsRecord, ...] = ()

    def __post_init__(self) -> None:
        if self.rcode not in RCODES:
            raise ValueError(f"rcode must be one of {RCODES}, not {self.rcode!r}")

    def describe(self) -> str:
        if self.rcode != "NOERROR":
            return self.rcode
        return "; ".join(r.describe() for r in self.records) or "NOERROR, no records (NODATA)"


@hookspec(fires_in="services/dns.py", means="the rcode and records answered for this name instead of the zone's")
def dns_query_hook(name: str, qtype: str) -> DnsAnswer: ...


def problem_with_name(name: str) -> str:
    """Why ``name`` cannot be a record's target on the wire ("" when it can): dot-separated labels of 1 to 63
    octets (IDNA for non-ASCII), 253 octets in all; "" is the root (the SRV target "no such service", RFC 2782,
    which dns.srv's scenarios write ".")."""
    try:
        encoded = name.encode("idna")
    except UnicodeError as exc:
        return f"not a DNS name ({exc.__cause__ or exc})"
    if len(encoded) > MAX_NAME_TEXT:
        return f"a name of {len(encoded)} octets (over {MAX_NAME_TEXT})"
    return ""
