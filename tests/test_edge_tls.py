"""The TLS edge's per-connection set-up (harness.services.tls): a connection declares the interfaces Twisted gives it,
and from the second connection on no zope declaration is built again (each cost a resolution-order computation)."""
from __future__ import annotations

import gc

import zope.interface.declarations as declarations
from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from zope.interface import implementer, providedBy

from harness.services import tls
from harness.services.tls import ProfiledTLSProtocol

CONTEXT = SSL.Context(SSL.TLS_METHOD)


@implementer(IOpenSSLServerConnectionCreator)
class Creator:
    def serverConnectionForTLS(self, protocol):
        return SSL.Connection(CONTEXT, None)


def connect(protocol_class) -> TLSMemoryBIOProtocol:
    factory = TLSMemoryBIOFactory(Creator(), False, Factory.forProtocol(Protocol))
    factory.protocol = protocol_class
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    return protocol


def test_a_connection_provides_what_twisted_gives_it():
    assert list(providedBy(connect(ProfiledTLSProtocol))) == list(providedBy(connect(TLSMemoryBIOProtocol)))


def test_later_connections_build_no_interface_declaration(monkeypatch):
    built = []

    class Counted(declarations.ProvidesClass):
        def __init__(self, *interfaces):
            built.append(interfaces)
            super().__init__(*interfaces)

    monkeypatch.setattr(declarations, "ProvidesClass", Counted)
    monkeypatch.setattr(tls, "_TRANSPORT_DECLARATIONS", {})   # as in a fresh process
    for protocol_class in (TLSMemoryBIOProtocol, ProfiledTLSProtocol):
        connect(protocol_class)
        gc.collect()
        del built[:]
        connect(protocol_class)
        gc.collect()
        if protocol_class is TLSMemoryBIOProtocol:
            assert built, "Twisted's own protocol builds them again (else this test checks nothing)"
        else:
            assert built == []
