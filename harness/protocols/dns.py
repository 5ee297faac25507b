"""What the authoritative DNS answers when a fault changes a name: ``DnsRecord``, ``DnsAnswer`` and the ``dns_query``
hook point. The Twisted edge (services/dns.py, twisted.names) turns them into records.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from harness.hooks import hookspec

RCODES = ("NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "NO-REPLY")

@dataclass(frozen=True)
class DnsRecord:
    """One record a fault puts in the zone. For A/AAAA the address's family decides which; ``value`` None means the
    address the CAS listens on."""
    type: str                     # "A", "AAAA" or "SRV"
    value: Optional[str] = None   # the address, or the SRV target
    priority: int = 0             # SRV only
    weight: int = 0               # SRV only
    port: Optional[int] = None    # SRV only; None: the HTTPS port

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
