"""TLS for the HTTPS listeners: the certificate, protocol versions and client-certificate demand a connection
gets, chosen per host.

The ``tls_profile`` hook (scope host = the SNI name, else the host of the dedicated address the client came to)
answers a TlsProfile. OpenSSL settles the protocol version before its SNI callback runs, so a context switched in
that callback cannot limit versions. Instead, while any tls_profile fault is active, the ClientHello is read off the
wire first, its SNI picks the profile, and OpenSSL starts on that profile's context with those bytes. With no such
fault, connections go straight to the default context. One SSL.Context per profile, built on first use.

Every context serves at most the server's ceiling (TLS 1.2, as Exchange 2013 on Windows Server 2012 R2; `serve
--tls-max` changes it) unless its profile says otherwise, with SChannel's cipher-suite order (harness.pki).
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Dict, Iterable, Optional, Tuple

from OpenSSL import SSL
from twisted.internet import protocol
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer, providedBy
from zope.interface.declarations import Provides, _normalizeargs

from harness import pki as pkimod
from harness.hooks import FaultSet, Scope
from harness.protocols.tls import EXCHANGE_2013_MAX_VERSION, TLS_VERSIONS, TlsProfile, tls_profile_hook

HANDSHAKE_RECORD = 0x16
CLIENT_HELLO = 1
SERVER_NAME_EXTENSION = 0
MAX_CLIENT_HELLO_BYTES = 64 * 1024   # past this the client is not sending a ClientHello we can read: go without SNI


DEFAULT_PROFILE = TlsProfile()

OPENSSL_VERSIONS = {"1.0": SSL.TLS1_VERSION, "1.1": SSL.TLS1_1_VERSION, "1.2": SSL.TLS1_2_VERSION,
                    "1.3": SSL.TLS1_3_VERSION}


class TlsContexts:
    """One server context per profile: the certificate in the profile's shape for every name the org serves. A
    certificate without SANs names one host, in its CN: the host the client asked for, so there is one per host.
    ``max_version`` is the server's ceiling, served where a profile names none."""

    def __init__(self, pki: pkimod.PKI, hostnames: Iterable[str], ips: Iterable[str],
                 keylog: Optional["KeyLog"] = None, max_version: str = EXCHANGE_2013_MAX_VERSION):
        if max_version not in TLS_VERSIONS:
            raise ValueError(f"unknown TLS version {max_version!r}; expected one of {', '.join(TLS_VERSIONS)}")
        self._pki, self._hostnames, self._ips = pki, [name.lower() for name in hostnames], list(ips)
        self._keylog, self.max_version = keylog, max_version
        self._contexts: Dict[Tuple[TlsProfile, str], SSL.Context] = {}
        self.default = self.context(DEFAULT_PROFILE)  # built now, so the first client does not wait for it

    def context(self, profile: TlsProfile, host: Optional[str] = None) -> SSL.Context:
        first = host if profile.shape == "no-san" and host in self._hostnames else self._hostnames[0]
        key = (profile, first)
        if key not in self._contexts:
            names = [first] + [name for name in self._hostnames if name != first]
            credential = self._pki.issue(names, shape=profile.shape, ips=self._ips)
            low, high = profile.served_versions(self.max_version)
            self._contexts[key] = pkimod.server_context(
                {}, credential, min_version=OPENSSL_VERSIONS.get(low) if low else None,
                max_version=OPENSSL_VERSIONS[high], require_client_cert=profile.require_client_cert)
            if self._keylog is not None:
                self._contexts[key].set_keylog_callback(self._keylog.callback)
        return self._contexts[key]


class KeyLog:
    """The TLS secrets of every session, in the NSS key log format Wireshark reads (``--keylog`` or SSLKEYLOGFILE).

    Appended one line per write (nothing buffered, so a capture can be decrypted while the server runs); the file is
    0600, since with it anyone holding a capture reads the credentials inside."""

    def __init__(self, path: str):
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(self._fd, 0o600)

    def callback(self, connection: SSL.Connection, line: bytes) -> None:
        if self._fd is not None:
            os.write(self._fd, line + b"\n")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def client_hello_server_name(data: bytes) -> Tuple[bool, Optional[str]]:
    """(complete, SNI) for the first bytes a client sent: complete once the ClientHello is whole, or once the bytes
    cannot be one (then there is no name). The ClientHello may span several handshake records."""
    handshake, offset = b"", 0
    while len(data) >= offset + 5:
        if data[offset] != HANDSHAKE_RECORD:
            return True, None
        end = offset + 5 + int.from_bytes(data[offset + 3:offset + 5], "big")
        if len(data) < end:
            return False, None
        handshake += data[offset + 5:end]
        offset = end
        if len(handshake) >= 4:
            if handshake[0] != CLIENT_HELLO:
                return True, None
            size = 4 + int.from_bytes(handshake[1:4], "big")
            if len(handshake) >= size:
                return True, _server_name(handshake[4:size])
    return False, None


def _server_name(hello: bytes) -> Optional[str]:
    """The host_name entry of the server_name extension of a ClientHello body, if any (RFC 8446 4.1.2, RFC 6066 3)."""
    at = 2 + 32                                              # legacy_version, random
    at += 1 + hello[at] if at < len(hello) else 0            # legacy_session_id
    at += 2 + int.from_bytes(hello[at:at + 2], "big")        # cipher_suites
    at += 1 + hello[at] if at < len(hello) else 0            # legacy_compression_methods
    end = min(len(hello), at + 2 + int.from_bytes(hello[at:at + 2], "big"))
    at += 2
    while at + 4 <= end:
        kind, size = int.from_bytes(hello[at:at + 2], "big"), int.from_bytes(hello[at + 2:at + 4], "big")
        body = hello[at + 4:at + 4 + size]
        at += 4 + size
        if kind != SERVER_NAME_EXTENSION:
            continue
        names, cursor = body[2:2 + int.from_bytes(body[:2], "big")], 0
        while cursor + 3 <= len(names):
            name_type, length = names[cursor], int.from_bytes(names[cursor + 1:cursor + 3], "big")
            name = names[cursor + 3:cursor + 3 + length]
            if name_type == 0 and len(name) == length and name:
                return name.decode("ascii", "replace").lower()
            cursor += 3 + length
        return None
    return None


# zope's declarations of "this protocol provides interface X" for every interface a transport has: zope caches them
# only weakly, and TLSMemoryBIOProtocol.makeConnection makes one per interface of the transport, each replacing the
# last, so all but one die at once and every connection built them again (resolution orders and all). Held here, they
# are made once. Keyed by the transport's interface set: a few entries.
_TRANSPORT_DECLARATIONS: Dict[object, list] = {}


class ProfiledTLSProtocol(TLSMemoryBIOProtocol):
    """TLS whose context may be chosen before it starts. Unbuffered: the HTTP edge writes whole responses, and a
    write plan's pieces must each become their own TLS record at the time they are due."""
    tls_context: Optional[SSL.Context] = None
    tls_profile: str = DEFAULT_PROFILE.describe()
    server_name: Optional[str] = None   # the SNI read off the ClientHello, when it was read first

    def makeConnection(self, transport) -> None:
        provided = providedBy(transport)
        if provided not in _TRANSPORT_DECLARATIONS:
            cls = type(self)
            _TRANSPORT_DECLARATIONS[provided] = [Provides(cls, interface) for interface in provided] + [
                Provides(cls, *_normalizeargs((provided,)))]   # ProtocolWrapper.makeConnection's: the one in force
        super().makeConnection(transport)

    # The wrapped protocol's transcript batch around each chunk of socket bytes and the connection's end: the
    # handshake's event and the events of a request read in the same chunk go to the transcript in one write.
    def dataReceived(self, data: bytes) -> None:
        with getattr(self.wrappedProtocol, "batch", nullcontext)():
            super().dataReceived(data)

    def connectionLost(self, reason) -> None:
        with getattr(self.wrappedProtocol, "batch", nullcontext)():
            super().connectionLost(reason)


@implementer(IOpenSSLServerConnectionCreator)
class _ProfileConnections:
    def __init__(self, contexts: TlsContexts):
        self._default = contexts.default

    def serverConnectionForTLS(self, tls_protocol: ProfiledTLSProtocol) -> SSL.Connection:
        return SSL.Connection(tls_protocol.tls_context or self._default, None)


class TlsServerFactory(TLSMemoryBIOFactory):
    """TLS in front of ``wrapped_factory``, each connection served the profile its host asks for."""
    protocol = ProfiledTLSProtocol

    def __init__(self, contexts: TlsContexts, faults: FaultSet, wrapped_factory, *,
                 hosts_by_address: Optional[Dict[str, str]] = None, clock=None):
        self.contexts, self.faults = contexts, faults
        self.hosts_by_address = hosts_by_address or {}
        super().__init__(_ProfileConnections(contexts), False, wrapped_factory, clock)

    def buildProtocol(self, addr):
        tls = super().buildProtocol(addr)
        if not self.faults.has(tls_profile_hook):
            return tls
        return _ClientHelloReader(self, tls)

    def host_for(self, server_name: Optional[str], local_address: str) -> Optional[str]:
        return server_name or self.hosts_by_address.get(local_address)

    def profile_for(self, host: Optional[str]) -> TlsProfile:
        return self.faults.first(tls_profile_hook, Scope(host=host), host) or DEFAULT_PROFILE


class _ClientHelloReader(protocol.Protocol):
    """Holds a new connection's first bytes until its ClientHello is whole, then hands the connection to TLS
    started on the profile that ClientHello's SNI asks for."""

    def __init__(self, factory: TlsServerFactory, tls: ProfiledTLSProtocol):
        self._factory, self._tls = factory, tls
        self._buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        complete, server_name = client_hello_server_name(self._buffer)
        if complete or len(self._buffer) > MAX_CLIENT_HELLO_BYTES:
            self._start(server_name)

    def _start(self, server_name: Optional[str]) -> None:
        host = self._factory.host_for(server_name, self.transport.getHost().host)
        profile = self._factory.profile_for(host)
        tls, transport = self._tls, self.transport
        tls.tls_context, tls.tls_profile = self._factory.contexts.context(profile, host), profile.describe()
        tls.server_name = server_name
        transport.protocol = tls  # from here on the socket talks to TLS directly, as Twisted's own startTLS does
        tls.makeConnection(transport)
        tls.dataReceived(self._buffer)
