"""``serve --epm-port N``: the endpoint mapper (harness/rpc/epm.py) on TCP, one DCE/RPC association per
connection. Off by default: 135 on loopback is not the mock's to take; in the sandbox the mock has its own address
and serves it on 135."""
from __future__ import annotations

import random
from typing import Any

from twisted.internet import protocol

from harness.protocols.dcerpc import DceRpcAssociation
from harness.rpc.epm import EndpointMapper
from harness.transcript import Transcript


class EndpointMapperProtocol(protocol.Protocol):
    def __init__(self, factory: "EndpointMapperFactory"):
        self.factory = factory
        self.association: Any = None

    def connectionMade(self) -> None:
        peer, own = self.transport.getPeer(), self.transport.getHost()
        self.factory.transcript.record("epm_connection", peer=f"{peer.host}:{peer.port}", address=own.host)
        self.association = DceRpcAssociation(self.factory.org, [EndpointMapper(own.host)],
                                             self.factory.transcript.record,
                                             random.Random(self.factory.rng.getrandbits(64)))

    def dataReceived(self, data: bytes) -> None:
        for pdu in self.association.feed(data):
            self.transport.write(pdu)
        if self.association.closed:
            self.transport.loseConnection()


class EndpointMapperFactory(protocol.Factory):
    def __init__(self, org: Any, transcript: Transcript, rng: random.Random):
        self.org, self.transcript, self.rng = org, transcript, rng

    def buildProtocol(self, addr) -> EndpointMapperProtocol:
        return EndpointMapperProtocol(self)


def listen_epm(reactor: Any, org: Any, address: str, port: int, transcript: Transcript, rng: random.Random):
    return reactor.listenTCP(port, EndpointMapperFactory(org, transcript, rng), interface=address)
