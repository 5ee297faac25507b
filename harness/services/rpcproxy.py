"""/rpc/rpcproxy.dll for web.py: turns an authenticated RPC_IN_DATA / RPC_OUT_DATA request into a channel of the
sans-IO proxy (harness.protocols.rpcproxy) and carries out the actions it returns on the channel's connection.

Before a channel opens, the ``rpc_channel`` fault hook (scope: the RPC server name of the query, the HTTP user)
may refuse it with an ``HttpError`` or give the proxy a ``ChannelCut``.

The proxy core, the DCE/RPC layer and the RPC interfaces (NSPI, RFR, EMSMDB on impacket's NDR) are imported and
built when the first channel opens: a server nobody asks for Outlook Anywhere starts without them."""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Union

from harness.hooks import FaultSet, Scope
from harness.org import Mailbox, Org
from harness.transcript import Transcript

if TYPE_CHECKING:
    from harness.protocols.dcerpc.interface import RpcInterface
    from harness.protocols.rpcproxy import Action, Channel, HttpError, RpcProxy, Tap

RESET_DELAY = 0.1   # seconds between the last write and a reset, so the bytes before it reach the client


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
                 interfaces: Optional[Sequence[RpcInterface]] = None, faults: Optional[FaultSet] = None,
                 tap: Optional[Tap] = None) -> None:
        self._org, self._record, self._rng, self._interfaces = org, transcript.record, rng, interfaces
        self._tap = tap    # sees every inner PDU (serve --rpc-capture)
        self.faults = faults if faults is not None else FaultSet()
        self._proxy: Optional[RpcProxy] = None
        self._io: Dict[Channel, object] = {}
        self._timers: Dict[Channel, object] = {}

    @property
    def proxy(self) -> RpcProxy:
        """The sans-IO proxy, built on first use (its rng serves it alone: building it late changes no draw)."""
        if self._proxy is None:
            from harness.protocols.rpcproxy import RpcProxy
            from harness.rpc import interfaces_for
            interfaces = self._interfaces if self._interfaces is not None else interfaces_for(self._org)
            self._proxy = RpcProxy(self._org, self._record, self._rng, interfaces, faults=self.faults,
                                   tap=self._tap)
        return self._proxy

    def open_channel(self, request, mailbox: Optional[Mailbox], io) -> Union[RpcChannel, HttpError]:
        from harness.protocols.rpcproxy import ChannelCut, HttpError, rpc_channel_hook, split_target
        conn = getattr(request.conn, "conn_id", None)
        name, port = split_target(request.query)
        scope = Scope(name or None, mailbox.email if mailbox else None)
        plan = self.faults.first(rpc_channel_hook, scope, request, name, int(port) if port.isdigit() else None)
        if isinstance(plan, HttpError):
            return plan
        cut = plan if isinstance(plan, ChannelCut) else None
        outcome = self.proxy.open_channel(request.method, request.query, mailbox, io.peer, conn, cut=cut)
        if isinstance(outcome, HttpError):
            return outcome
        channel, actions = outcome
        self._io[channel] = io
        self.run(actions)
        return RpcChannel(self, channel)

    def ping(self, cookie: Optional[bytes] = None) -> None:
        """Send an RTS Ping on the OUT channel of one (or every) open virtual connection (fault scripting)."""
        if self._proxy is None:   # no channel ever opened
            return
        self.run(self.proxy.ping(cookie))

    def run(self, actions: List[Action]) -> None:
        from harness.protocols.rpcproxy import Close, Send, StartTimer  # loaded with the proxy
        for action in actions:
            io = self._io.get(action.channel)
            if io is None:
                continue
            if isinstance(action, Send):
                io.write(action.data)
            elif isinstance(action, Close):
                self.forget(action.channel)
                if action.reset:
                    io.call_later(RESET_DELAY, io.abort)
                else:
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
