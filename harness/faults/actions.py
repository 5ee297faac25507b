"""What hooks answer: small value objects a fault returns and a service acts on (no Twisted here).

The HTTP-level answers (HttpAnswer, AuthOffer, HttpResponse) live with the HTTP model in harness.protocols.http.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from OpenSSL import SSL

from harness import pki as pkimod

VERSIONS = {"1.0": SSL.TLS1_VERSION, "1.1": SSL.TLS1_1_VERSION, "1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}

@dataclass(frozen=True)
class TlsProfile:
    """The ``tls_profile`` hook's answer: what a TLS connection is served."""
    shape: str = "valid"                   # the certificate's shape (harness.pki.SHAPES)
    min_version: Optional[str] = None      # "1.0" .. "1.3"; None = OpenSSL's default
    max_version: Optional[str] = None
    require_client_cert: bool = False      # IIS "Require client certificates": no certificate, no handshake

    def __post_init__(self) -> None:
        if self.shape not in pkimod.SHAPES:
            raise ValueError(f"unknown certificate shape {self.shape!r}")
        for version in (self.min_version, self.max_version):
            if version is not None and version not in VERSIONS:
                raise ValueError(f"unknown TLS version {version!r}; expected one of {', '.join(VERSIONS)}")

    def describe(self) -> str:
        parts = [f"{self.shape} certificate"]
        if self.min_version or self.max_version:
            parts.append(f"TLS {self.min_version or 'any'} to {self.max_version or 'any'}")
        if self.require_client_cert:
            parts.append("client certificate required")
        return ", ".join(parts)



CONNECT_KINDS = ("refuse", "blackhole", "reset", "stall")

@dataclass(frozen=True)
class ConnectAction:
    """The ``accept`` hook's answer for a port or a new connection. "refuse" and "blackhole" shape the listener
    itself; a connection that still arrives on it (or any connection, for "reset" and "stall") is reset (RST) or
    held without a byte, until the client leaves or ``seconds`` pass (0: forever)."""
    kind: str
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in CONNECT_KINDS:
            raise ValueError(f"kind must be one of {CONNECT_KINDS}, not {self.kind!r}")

    def describe(self) -> str:
        return self.kind + (f" for {self.seconds:g}s" if self.seconds else "")



WRITE_ENDS = (None, "close", "reset", "hold")


@dataclass(frozen=True)
class WritePlan:
    """The ``write`` hook's answer: how one write reaches the client. Each piece is sent after waiting its delay;
    then the output may end: "close" (FIN after the pieces), "reset" (RST once they left), "hold" (silence: nothing
    more is ever sent and the connection stays open until the client gives up)."""
    pieces: Tuple[Tuple[float, bytes], ...]   # (seconds to wait first, bytes)
    end: Optional[str] = None

    def __post_init__(self) -> None:
        if self.end not in WRITE_ENDS:
            raise ValueError(f"end must be one of {WRITE_ENDS}, not {self.end!r}")

    def describe(self) -> str:
        sent = sum(len(data) for _, data in self.pieces)
        waited = sum(delay for delay, _ in self.pieces)
        text = f"{sent} bytes in {len(self.pieces)} piece(s) over {waited:.3f}s"
        return text + (f", then {self.end}" if self.end else "")



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
