"""Per-host checks every URL goes through (DNS, TCP port, certificate) and the connector they yield: connections
to the resolved address with the host name as SNI and Host header, verified by the strict TLS context."""
from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Optional, Tuple

from cryptography import x509

from harness.probe import tls
from harness.probe.http import Credentials, HttpConnection
from harness.probe.net import Budget, Resolver, classify_socket_error, connect
from harness.probe.report import Step, StepFailed, Timed


@dataclass
class ProbeContext:
    """Everything the checks share: how to resolve, whom to trust, the ports standing in for 443/80, the budget."""
    email: str
    credentials: Credentials
    resolver: Resolver
    budget: Budget
    ca_file: Optional[str] = None
    https_port: int = 443
    http_port: int = 80
    ssl_context: ssl.SSLContext = field(init=False)

    def __post_init__(self) -> None:
        self.ssl_context = tls.client_context(self.ca_file)


@dataclass
class Connector:
    """Opens connections to a host that passed its checks."""
    context: ProbeContext
    host: str
    addresses: Tuple[str, ...]
    port: int
    secure: bool
    certificate: Optional[x509.Certificate] = None   # the leaf the certificate step passed

    @property
    def host_header(self) -> str:
        default = 443 if self.secure else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    def open(self) -> HttpConnection:
        timeout = self.context.budget.timeout
        sock = connect(self.addresses, self.port, timeout())
        if self.secure:
            try:
                sock.settimeout(timeout())
                # a TLS stream that ends without close_notify (a reset, a dropped proxy) must not look like an EOF
                sock = self.context.ssl_context.wrap_socket(sock, server_hostname=self.host, suppress_ragged_eofs=False)
            except ssl.SSLCertVerificationError as exc:
                sock.close()
                raise StepFailed("untrusted-root", f"certificate verification failed: {exc.verify_message}",
                                 verify_code=exc.verify_code)
            except ssl.SSLError as exc:
                sock.close()
                raise StepFailed("tls-handshake-failed", f"TLS handshake failed: {exc.reason or exc}")
            except OSError as exc:
                sock.close()
                raise classify_socket_error(exc, f"{self.host}:{self.port}", timeout())
        return HttpConnection(sock, self.host_header, timeout, secure=self.secure)


def check_host(context: ProbeContext, parent: Step, host: str, port: int, secure: bool) -> Optional[Connector]:
    """Add the DNS, port and (for https) certificate steps under ``parent``; a Connector when all passed.

    On failure the failing step carries the reason and ``parent`` is failed with it too.
    """
    budget = context.budget
    dns_step = parent.add(Step(f"{parent.id}.dns", f"DNS {host}", "dns", host))
    with Timed(dns_step):
        resolution = context.resolver.resolve(host, budget.timeout())
        answered = f" (answered by {resolution.server})" if resolution.server else ""
        dns_step.passed(f"{host} → {', '.join(resolution.addresses)}{answered}", addresses=list(resolution.addresses),
                        record_type=resolution.record_type, server=resolution.server)
        if resolution.record_type == "AAAA":
            dns_step.mark("warn", f"{host} has only AAAA records ({', '.join(resolution.addresses)})", "aaaa-only")
    if dns_step.status == "fail":
        return _failed(parent, dns_step)

    port_step = parent.add(Step(f"{parent.id}.port", f"TCP {port}", "port", host))
    with Timed(port_step):
        opened = connect(resolution.addresses, port, budget.timeout())
        try:
            peer = opened.getpeername()
        except OSError as exc:   # ENOTCONN: the server reset the connection right after accepting it
            opened.close()
            raise StepFailed("connection-reset", f"{host}:{port} reset the connection",
                             address=f"{host}:{port}") from exc
        port_step.passed(f"port {port} open on {peer[0]}", address=f"{peer[0]}:{peer[1]}")
    if port_step.status == "fail":
        if dns_step.reason == "aaaa-only":   # unreachable over IPv6: the IPv6-only publication is the cause
            dns_step.fail("aaaa-only", f"{host} has only AAAA records and {port_step.message}")
            return _failed(parent, dns_step)
        if port_step.reason == "connection-reset" and secure:
            # reset at or right after the accept: the same verdict as a reset before any TLS answer (below)
            parent.add(Step(f"{parent.id}.certificate", "Certificate", "certificate", host)).mark(
                "skip", "no TLS answer to look at")
        return _failed(parent, port_step)
    connector = Connector(context, host, (peer[0],), port, secure)
    if not secure:
        opened.close()
        return connector

    sockets = iter([opened])   # the handshake reuses the port check's connection, then opens new ones

    def open_socket():
        return next(sockets, None) or connect(connector.addresses, port, budget.timeout())

    cert_step = parent.add(Step(f"{parent.id}.certificate", "Certificate", "certificate", host))
    with Timed(cert_step):
        facts = tls.handshake(open_socket, host, budget.timeout())
        cert_step.evidence.update(tls.describe(facts))
        cert_step.passed(tls.analyse(facts, host, context.ca_file))
        connector.certificate = facts.leaf
    if cert_step.status == "fail":
        if cert_step.reason in ("connection-reset", "connection-closed", "no-response"):
            # the port opened but the connection broke before any TLS answer: a port problem, not a certificate one
            port_step.fail(cert_step.reason, cert_step.message)
            cert_step.mark("skip", "no TLS answer to look at")
            return _failed(parent, port_step)
        return _failed(parent, cert_step)
    return connector


def _failed(parent: Step, step: Step) -> None:
    """Fail ``parent`` with the reason of its failing check; returns None for the caller to pass on."""
    parent.fail(step.reason, step.message)
    parent.cause = step.id
    return None

