"""Name resolution and TCP reachability for the probe, each failure classified into a verdict reason.

DNS goes through dnspython so the probe can say which server answered and can be pointed at the mock's DNS
(``--dns HOST:PORT``); without it the system's resolv.conf servers are asked.
"""
from __future__ import annotations

import errno
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

import dns.exception
import dns.resolver

from harness.probe.report import StepFailed, TimeLimit


class Budget:
    """Per-step timeout bounded by what is left of the total."""

    def __init__(self, step_timeout: float, total_timeout: float):
        self.step_timeout = step_timeout
        self.deadline = time.monotonic() + total_timeout

    def timeout(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= self.MARGIN:
            raise TimeLimit()
        return min(self.step_timeout, remaining)

    MARGIN = 0.05

    def spent(self) -> bool:
        """Whether the total is (all but) used up: a wait that ended now was cut by it."""
        return self.deadline - time.monotonic() <= self.MARGIN


@dataclass(frozen=True)
class Resolution:
    host: str
    addresses: Tuple[str, ...]
    record_type: str            # "A", "AAAA" or "literal"
    server: Optional[str]       # "ip:port" of the DNS server that answered


@dataclass(frozen=True)
class SrvTarget:
    priority: int
    weight: int
    port: int
    target: str


def parse_server(text: str) -> Tuple[str, int]:
    """'HOST[:PORT]' or '[v6]:PORT' -> (address, port); port defaults to 53."""
    text = text.strip()
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else "53"
    elif text.count(":") == 1:
        address, port = text.split(":")
    else:
        address, port = text, "53"
    ipaddress.ip_address(address)   # raises ValueError: dnspython needs an address, not a name
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port {port!r}")
    return address, int(port)


class Resolver:
    def __init__(self, server: Optional[Tuple[str, int]] = None):
        self._server = server

    def _resolver(self, timeout: float) -> dns.resolver.Resolver:
        resolver = dns.resolver.Resolver(configure=self._server is None)
        if self._server is not None:
            resolver.nameservers = [self._server[0]]
            resolver.port = self._server[1]
        resolver.timeout = resolver.lifetime = timeout
        return resolver

    def resolve(self, host: str, timeout: float) -> Resolution:
        """A records, else AAAA; raises StepFailed with nxdomain / no-a-record / servfail / dns-timeout."""
        try:
            return Resolution(host, (str(ipaddress.ip_address(host)),), "literal", None)
        except ValueError:
            pass
        resolver = self._resolver(timeout)
        for record_type in ("A", "AAAA"):
            answer = self._query(resolver, host, record_type)
            if answer is not None:
                return Resolution(host, tuple(r.address for r in answer), record_type,
                                  f"{answer.nameserver}:{answer.port}")
        raise StepFailed("no-a-record", f"{host} exists but has no A or AAAA record", server=self.describe())

    def srv(self, name: str, timeout: float) -> List[SrvTarget]:
        """SRV records in RFC 2782 preference order (lowest priority, then highest weight)."""
        answer = self._query(self._resolver(timeout), name, "SRV")
        if answer is None:
            raise StepFailed("no-srv-record", f"{name} has no SRV record", server=self.describe())
        targets = [SrvTarget(r.priority, r.weight, r.port, r.target.to_text(omit_final_dot=True).lower())
                   for r in answer]
        return sorted(targets, key=lambda t: (t.priority, -t.weight))

    def _query(self, resolver: dns.resolver.Resolver, name: str, record_type: str):
        try:
            return resolver.resolve(name, record_type, search=False)
        except dns.resolver.NXDOMAIN:
            reason = "no-srv-record" if record_type == "SRV" else "nxdomain"
            raise StepFailed(reason, f"{name} does not exist in DNS (NXDOMAIN)", server=self.describe())
        except dns.resolver.NoAnswer:
            return None
        except dns.resolver.NoNameservers as exc:
            if "REFUSED" in str(exc):
                raise StepFailed("dns-refused", f"the DNS server refused to answer for {name}",
                                 server=self.describe())
            raise StepFailed("servfail", f"no DNS server could answer for {name}: {_short(exc)}",
                             server=self.describe())
        except dns.exception.Timeout:
            raise StepFailed("dns-timeout", f"no DNS answer for {name} within {resolver.lifetime:.1f} s",
                             server=self.describe())

    def describe(self) -> str:
        if self._server is not None:
            return f"{self._server[0]}:{self._server[1]}"
        return "system resolver (" + ", ".join(dns.resolver.Resolver().nameservers) + ")"


def connect(addresses: Tuple[str, ...], port: int, timeout: float) -> socket.socket:
    """A connected TCP socket to the first address that accepts; raises StepFailed with the first failure."""
    first: Optional[StepFailed] = None
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout=timeout)
        except OSError as exc:
            failure = classify_socket_error(exc, f"{address}:{port}", timeout)
            first = first or failure
    raise first or StepFailed("connection-refused", "no address to connect to")


def classify_socket_error(exc: BaseException, where: str, timeout: float) -> StepFailed:
    """A socket-level exception as the port step's verdict."""
    if isinstance(exc, ConnectionRefusedError):
        return StepFailed("connection-refused", f"connection to {where} refused (port closed)", address=where)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return StepFailed("connection-timeout", f"no answer from {where} within {timeout:.1f} s (dropped?)",
                          address=where)
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return StepFailed("connection-reset", f"{where} reset the connection", address=where)
    if getattr(exc, "errno", None) in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return StepFailed("host-unreachable", f"{where} is unreachable: {exc.strerror}", address=where)
    return StepFailed("connection-refused", f"cannot connect to {where}: {exc}", address=where)


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:197] + "..."
