"""The certificate step: a TLS handshake that accepts anything (so it can look), then every check an admin needs,
each failure a verdict reason; and the strict client context the probe uses for any request that carries
credentials, so a certificate the analysis passed is verified again by the connection that uses it.

Missing intermediate: OpenSSL reports "unable to get local issuer certificate" both for a leaf from an unknown
CA and for a leaf whose intermediate the server forgot to send. With no AIA fetching (the probe talks to nothing
but the target), the probe calls it a missing intermediate when the server sent the leaf alone and the leaf is not
self-issued (an intermediate-issued leaf is what public and enterprise CAs issue); when the server did send a
chain that still does not reach a trusted root, it is an untrusted root.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import select
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto

from harness.probe.report import StepFailed

MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
WEAK_HASHES = ("md5", "sha1")
# OpenSSL X509_V_ERR_* codes the trust check tells apart
CERT_NOT_YET_VALID, CERT_HAS_EXPIRED = 9, 10
DEPTH_ZERO_SELF_SIGNED, SELF_SIGNED_IN_CHAIN = 18, 19
UNABLE_TO_GET_ISSUER, UNABLE_TO_GET_ISSUER_LOCALLY, UNABLE_TO_VERIFY_LEAF_SIGNATURE = 2, 20, 21
OLD_PROTOCOL_ERRORS = ("unsupported protocol", "wrong version number", "protocol version", "no protocols available",
                       "tlsv1 alert protocol version")


@dataclass
class TlsFacts:
    version: str
    cipher: str
    chain: List[x509.Certificate]
    client_cert_requested: bool = False

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]


def _drive(conn: SSL.Connection, sock: socket.socket, operation: Callable, deadline: float):
    """Run a pyOpenSSL operation on a non-blocking socket until it completes or the deadline passes."""
    while True:
        try:
            return operation()
        except SSL.WantReadError:
            wait = ([sock], [])
        except SSL.WantWriteError:
            wait = ([], [sock])
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not any(select.select(wait[0], wait[1], [], remaining)[:2]):
            raise socket.timeout("TLS operation timed out")


class _Handshake:
    """One client handshake that accepts any certificate and notes whether the server asked for a client one."""

    def __init__(self, sock: socket.socket, host: str, min_version: int):
        self.certificate_requested = False
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_verify(SSL.VERIFY_NONE, lambda *_: True)
        context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")   # look at weak keys/old protocols instead of refusing them
        context.set_min_proto_version(min_version)
        context.set_info_callback(self._on_state)
        self.sock = sock
        self.conn = SSL.Connection(context, sock)
        if not _is_address(host):
            self.conn.set_tlsext_host_name(host.encode("idna"))
        self.conn.set_connect_state()
        sock.setblocking(False)

    def _on_state(self, conn: SSL.Connection, where: int, _ret: int) -> None:
        if b"certificate request" in conn.get_state_string():
            self.certificate_requested = True

    def run(self, deadline: float) -> SSL.Connection:
        _drive(self.conn, self.sock, self.conn.do_handshake, deadline)
        return self.conn


def _error_text(exc: Exception) -> str:
    if isinstance(exc, SSL.Error) and exc.args and isinstance(exc.args[0], list):
        return "; ".join(str(item[-1]) for item in exc.args[0]) or type(exc).__name__
    return str(exc) or type(exc).__name__


def handshake(open_socket: Callable[[], socket.socket], host: str, timeout: float) -> TlsFacts:
    """Handshake (TLS 1.2+, any certificate) and collect what the server sent; classify failures.

    ``open_socket`` gives a fresh connected TCP socket (a second one is needed to tell "only old TLS" apart).
    """
    deadline = time.monotonic() + timeout
    sock = open_socket()
    attempt = _Handshake(sock, host, SSL.TLS1_2_VERSION)
    try:
        conn = attempt.run(deadline)
    except socket.timeout:
        sock.close()
        raise StepFailed("no-response", f"the port accepts connections but no TLS answer came within {timeout:.1f} s")
    except SSL.SysCallError as exc:
        sock.close()
        if exc.args and exc.args[0] == -1:
            raise StepFailed("connection-closed", "the server closed the connection during the TLS handshake")
        raise StepFailed("connection-reset", f"the connection was reset during the TLS handshake ({exc.args[-1]})")
    except SSL.Error as exc:
        sock.close()
        text = _error_text(exc)
        if any(marker in text for marker in OLD_PROTOCOL_ERRORS):
            raise _old_protocol_failure(open_socket, host, deadline, text)
        if attempt.certificate_requested or "certificate required" in text:
            raise StepFailed("client-certificate-required",
                             "the server requires a client certificate (handshake refused without one)", error=text)
        raise StepFailed("tls-handshake-failed", f"TLS handshake failed: {text}", error=text)
    chain = conn.get_peer_cert_chain(as_cryptography=True) or []
    facts = TlsFacts(version=conn.get_protocol_version_name(), cipher=conn.get_cipher_name() or "", chain=chain,
                     client_cert_requested=attempt.certificate_requested)
    try:
        _check_client_certificate(conn, sock, host, deadline, attempt.certificate_requested)
    finally:
        sock.close()
    if not chain:
        raise StepFailed("tls-handshake-failed", "the server sent no certificate")
    return facts


def _old_protocol_failure(open_socket, host: str, deadline: float, text: str) -> StepFailed:
    """The server refused TLS 1.2+: find out what it does speak, on a fresh connection."""
    try:
        sock = open_socket()
    except StepFailed:
        return StepFailed("tls-version", f"no common TLS version (TLS 1.2 or later refused: {text})", error=text)
    try:
        conn = _Handshake(sock, host, SSL.TLS1_VERSION).run(deadline)
        spoken = conn.get_protocol_version_name()
    except (SSL.Error, OSError):
        spoken = None
    finally:
        sock.close()
    if spoken:
        return StepFailed("tls-version", f"the server only speaks {spoken}; clients require TLS 1.2 or later",
                          server_version=spoken)
    return StepFailed("tls-version", f"no common TLS version (TLS 1.2 or later refused: {text})", error=text)


def _check_client_certificate(conn: SSL.Connection, sock: socket.socket, host: str, deadline: float,
                              requested: bool) -> None:
    """With TLS 1.3 a server that requires a client certificate says so only after the handshake: send an
    anonymous HEAD and see whether the first answer is that alert (IIS "Require client certificates")."""
    request = f"HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    try:
        _drive(conn, sock, lambda: conn.sendall(request), deadline)
        _drive(conn, sock, lambda: conn.recv(1), min(deadline, time.monotonic() + 2.0))
    except SSL.ZeroReturnError:
        pass   # closed cleanly: not a client-certificate demand
    except SSL.Error as exc:
        text = _error_text(exc)
        if requested or "certificate required" in text:
            raise StepFailed("client-certificate-required", "the server requires a client certificate", error=text)
    except OSError:
        pass   # no answer or a dropped connection: not a client-certificate demand


# ---- checks on what the server sent ------------------------------------------------------------------------
def names_of(cert: x509.Certificate):
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = [n.lower() for n in san.get_values_for_type(x509.DNSName)]
        ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns_names, ips = None, []
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return dns_names, ips, (cns[0] if cns else "")


def _dns_match(host: str, pattern: str) -> bool:
    host, pattern = host.lower().rstrip("."), pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return host == pattern


def name_matches(cert: x509.Certificate, host: str) -> bool:
    dns_names, ips, _cn = names_of(cert)
    if _is_address(host):
        return str(ipaddress.ip_address(host)) in ips
    return any(_dns_match(host, name) for name in dns_names or [])


def check_name(cert: x509.Certificate, host: str) -> str:
    dns_names, ips, cn = names_of(cert)
    if name_matches(cert, host):
        return f"{host} is in the Subject Alternative Names"
    if dns_names is None:
        if _dns_match(host, cn):
            raise StepFailed("name-mismatch", f"the certificate has no Subject Alternative Names; its CN={cn} matches, "
                                              f"but current clients ignore the CN", cn=cn, san=[])
        raise StepFailed("name-mismatch", f"{host} doesn't match the certificate CN={cn} (no SAN)", cn=cn, san=[])
    raise StepFailed("name-mismatch", f"{host} doesn't match any name on the certificate CN={cn} "
                                      f"(SAN: {', '.join(dns_names + ips)})", cn=cn, san=dns_names + ips)


def check_dates(chain: List[x509.Certificate], now: dt.datetime) -> str:
    for depth, cert in enumerate(chain):
        what = "the certificate" if depth == 0 else f"chain certificate {_cn(cert)}"
        if now > cert.not_valid_after_utc:
            raise StepFailed("certificate-expired", f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d}",
                             not_after=cert.not_valid_after_utc.isoformat(), depth=depth)
        if now < cert.not_valid_before_utc:
            raise StepFailed("certificate-not-yet-valid",
                             f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}",
                             not_before=cert.not_valid_before_utc.isoformat(), depth=depth)
    return f"valid until {chain[0].not_valid_after_utc:%Y-%m-%d}"


def _trust_store(ca_file: Optional[str]) -> crypto.X509Store:
    store = crypto.X509Store()
    if ca_file:
        store.load_locations(ca_file)
    else:
        paths = ssl.get_default_verify_paths()
        store.load_locations(paths.cafile, paths.capath)
    return store


def check_trust(chain: List[x509.Certificate], ca_file: Optional[str]) -> str:
    leaf, sent = chain[0], chain[1:]
    context = crypto.X509StoreContext(_trust_store(ca_file), crypto.X509.from_cryptography(leaf),
                                      [crypto.X509.from_cryptography(c) for c in sent])
    try:
        context.verify_certificate()
    except crypto.X509StoreContextError as exc:
        code, depth, text = exc.errors
        trust = ca_file or "the system trust store"
        evidence = dict(verify_error=text, verify_code=code, depth=depth, trust=trust,
                        issuer=leaf.issuer.rfc4514_string(), sent_chain=[_cn(c) for c in chain])
        if code == DEPTH_ZERO_SELF_SIGNED:
            raise StepFailed("self-signed", f"the certificate is self-signed ({_cn(leaf)})", **evidence)
        if code in (UNABLE_TO_GET_ISSUER, UNABLE_TO_GET_ISSUER_LOCALLY, UNABLE_TO_VERIFY_LEAF_SIGNATURE) \
                and not sent and leaf.issuer != leaf.subject:
            raise StepFailed("missing-intermediate", f"the chain is incomplete: the server sent only the leaf; "
                                                     f"its issuer {_rdn(leaf.issuer)} was not sent", **evidence)
        if code in (UNABLE_TO_GET_ISSUER, UNABLE_TO_GET_ISSUER_LOCALLY):
            top = chain[-1]
            raise StepFailed("untrusted-root", f"the chain ends at {_cn(top)}, issued by {_rdn(top.issuer)}, "
                                               f"which {trust} does not trust", **evidence)
        if code == CERT_HAS_EXPIRED:
            raise StepFailed("certificate-expired", f"a chain certificate has expired ({text})", **evidence)
        if code == CERT_NOT_YET_VALID:
            raise StepFailed("certificate-not-yet-valid", f"a chain certificate is not yet valid ({text})",
                             **evidence)
        raise StepFailed("untrusted-root", f"certificate trust validation failed: {text} "
                                           f"(trusted roots: {trust})", **evidence)
    return "chain trusted"


def check_strength(chain: List[x509.Certificate]) -> str:
    """Key size and signature hash of every certificate the server sent, except self-signed roots."""
    for depth, cert in enumerate(chain):
        if depth and cert.issuer == cert.subject:
            continue
        key = cert.public_key()
        bits = getattr(key, "key_size", 0)
        weak = (isinstance(key, rsa.RSAPublicKey) and bits < MIN_RSA_BITS) or isinstance(key, dsa.DSAPublicKey) \
            or (isinstance(key, ec.EllipticCurvePublicKey) and bits < MIN_EC_BITS)
        if weak:
            raise StepFailed("weak-key", f"{_cn(cert)} has a {bits}-bit {_key_kind(key)} key", key_bits=bits,
                             depth=depth)
        algorithm = cert.signature_hash_algorithm
        name = algorithm.name if algorithm else "none"
        if name in WEAK_HASHES:
            raise StepFailed("weak-signature", f"{_cn(cert)} is signed with {name.upper()}", signature_hash=name,
                             depth=depth)
    key = chain[0].public_key()
    return f"{getattr(key, 'key_size', '?')}-bit {_key_kind(key)}"


def describe(facts: TlsFacts) -> dict:
    leaf = facts.leaf
    dns_names, ips, cn = names_of(leaf)
    algorithm = leaf.signature_hash_algorithm
    return {"tls_version": facts.version, "cipher": facts.cipher, "subject_cn": cn, "san": (dns_names or []) + ips,
            "issuer": leaf.issuer.rfc4514_string(), "not_before": leaf.not_valid_before_utc.isoformat(),
            "not_after": leaf.not_valid_after_utc.isoformat(),
            "key": f"{getattr(leaf.public_key(), 'key_size', '?')}-bit {_key_kind(leaf.public_key())}",
            "signature_hash": algorithm.name if algorithm else None,
            "client_certificate_requested": facts.client_cert_requested,
            "sha256": leaf.fingerprint(hashes.SHA256()).hex(), "sent_chain": [_cn(c) for c in facts.chain]}


def analyse(facts: TlsFacts, host: str, ca_file: Optional[str], now: Optional[dt.datetime] = None) -> str:
    """Every certificate check in the order an admin would fix them; the summary line when all pass."""
    now = now or dt.datetime.now(dt.timezone.utc)
    parts = [check_name(facts.leaf, host), check_dates(facts.chain, now), check_trust(facts.chain, ca_file),
             check_strength(facts.chain)]
    return f"{parts[0]}, {parts[1]}, {parts[2]}, {parts[3]}, {facts.version}"


def client_context(ca_file: Optional[str]) -> ssl.SSLContext:
    """The strict context for connections that carry credentials: trust as configured, host name checked."""
    context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _cn(cert: x509.Certificate) -> str:
    return names_of(cert)[2] or cert.subject.rfc4514_string()


def _rdn(name: x509.Name) -> str:
    return name.rfc4514_string()


def _key_kind(key) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC"
    return type(key).__name__


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
