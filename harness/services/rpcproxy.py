"""/rpc/rpcproxy.dll for web.py: turns an authenticated RPC_IN_DATA / RPC_OUT_DATA request into a channel of the
sans-IO proxy (harness.protocols.rpcproxy) and carries out the actions it returns on the channel's connection."""
from __future__ import annotations

import random
from typing import Dict, List, Optional, Sequence, Union

from harness.org import Mailbox, Org
from harness.protocols.rpcproxy import Action, Channel, Close, HttpError, RpcProxy, Send, StartTimer
from harness.rpc.base import RpcInterface, interfaces_for
from harness.transcript import Transcript


class RpcChannel:
    """What web.py feeds once a request became a tunnel: every following body byte, then the end."""

    def __init__(self, service: "RpcProxyService", channel: Channel):
        self._service = service
        self.channel = channel

    def data_received(self, data: bytes) -> None:
        self._service.run(self._service.proxy.data_received(self.channel, data))

    def connection_lost(self, reason: str) -> None:
        self._service.forget(self.channel)
        self._service.run(self._service.proxy.connection_lost(self.channel, reason))


class RpcProxyService:
    def __init__(self, org: Org, transcript: Transcript, rng: random.Random, *,
                 interfaces: Optional[Sequence[RpcInterface]] = None, faults=None) -> None:
        interfaces = interfaces if interfaces is not None else interfaces_for(org)
        self.faults = faults  # the server's FaultSet (rpc_channel / rts / rpc_bind / rpc_call / mailbox hooks)
        self.proxy = RpcProxy(org, transcript.record, rng, interfaces)
        self._io: Dict[Channel, object] = {}
        self._timers: Dict[Channel, object] = {}

    def open_channel(self, request, mailbox: Optional[Mailbox], io) -> Union[RpcChannel, HttpError]:
        conn = getattr(request.conn, "conn_id", None)
        outcome = self.proxy.open_channel(request.method, request.query, mailbox, io.peer, conn)
        if isinstance(outcome, HttpError):
            return outcome
        channel, actions = outcome
        self._io[channel] = io
        self.run(actions)
        return RpcChannel(self, channel)

    def ping(self, cookie: Optional[bytes] = None) -> None:
        """Send an RTS Ping on the OUT channel of one (or every) open virtual connection (fault scripting)."""
        self.run(self.proxy.ping(cookie))

    def run(self, actions: List[Action]) -> None:
        for action in actions:
            io = self._io.get(action.channel)
            if io is None:
                continue
            if isinstance(action, Send):
                io.write(action.data)
            elif isinstance(action, Close):
                self.forget(action.channel)
                io.close()
            elif isinstance(action, StartTimer):
                self._timers[action.channel] = io.call_later(action.seconds, self._expire, action.channel)

    def forget(self, channel: Channel) -> None:
        self._io.pop(channel, None)
        timer = self._timers.pop(channel, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, channel: Channel) -> None:
        self._timers.pop(channel, None)
        self.run(self.proxy.timer_expired(channel))
