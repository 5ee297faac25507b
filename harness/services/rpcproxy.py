"""/rpc/rpcproxy.dll for web.py: turns an authenticated RPC_IN_DATA / RPC_OUT_DATA request into a channel of the
sans-IO proxy (harness.protocols.rpcproxy) and carries out the actions it returns on the channel's connection.

Before a channel opens, the ``rpc_channel`` fault hook (scope: the RPC server name of the query, the HTTP user)
may refuse it with an ``HttpError`` or give the proxy a ``ChannelCut``.

The proxy core, the DCE/RPC layer and the RPC interfaces (NSPI, RFR, EMSMDB on impacket's NDR) are imported and
built when the first channel opens: a server nobody asks for Outlook Anywhere starts without them.

A held call (``HoldCall``: EcDoAsyncWaitEx) waits on the clock of the IN channel's connection: its maximum wait, and
a check (once the store's operation is over, as for MAPI/HTTP's NotificationWait) each time its wake-up fires; either
ends it with the proxy's ``complete_held``. ``DropHold`` (the virtual connection went) stops both."""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Union

from harness.hooks import FaultSet, Scope
from harness.org import Mailbox, Org
from harness.transcript import Transcript

if TYPE_CHECKING:
    from harness.protocols.dcerpc.association import HeldCall
    from harness.protocols.dcerpc.interface import RpcInterface
    from harness.protocols.rpcchannel import Action, Channel, Tap
    from harness.protocols.rpcproxy import HttpError, RpcProxy

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
                 tap: Optional[Tap] = None, out_framing: str = "exchange2013") -> None:
        self._out_framing = out_framing   # the OUT channel persona (harness.protocols.rpcout.OUT_FRAMINGS)
        self._org, self._record, self._rng, self._interfaces = org, transcript.record, rng, interfaces
        self._tap = tap    # sees every inner PDU (serve --rpc-capture)
        self.faults = faults if faults is not None else FaultSet()
        self._proxy: Optional[RpcProxy] = None
        self._io: Dict[Channel, object] = {}
        self._timers: Dict[Channel, object] = {}
        self._waits: Dict["HeldCall", "HeldWait"] = {}
        self._action_kinds: Optional[tuple] = None

    @property
    def proxy(self) -> RpcProxy:
        """The sans-IO proxy, built on first use (its rng serves it alone: building it late changes no draw)."""
        if self._proxy is None:
            from harness.protocols.rpcproxy import RpcProxy
            from harness.rpc import interfaces_for
            interfaces = self._interfaces if self._interfaces is not None else interfaces_for(self._org)
            self._proxy = RpcProxy(self._org, self._record, self._rng, interfaces, faults=self.faults,
                                   tap=self._tap, out_framing=self._out_framing)
        return self._proxy

    def open_channel(self, request, mailbox: Optional[Mailbox], io) -> Union[RpcChannel, HttpError]:
        from harness.protocols.rpcchannel import ChannelCut
        from harness.protocols.rpcout import rpc_out_framing_hook
        from harness.protocols.rpcproxy import HttpError, rpc_channel_hook, split_target
        conn = getattr(request.conn, "conn_id", None)
        name, port = split_target(request.query)
        scope = Scope(name or None, mailbox.email if mailbox else None)
        plan = self.faults.first(rpc_channel_hook, scope, request, name, int(port) if port.isdigit() else None)
        if isinstance(plan, HttpError):
            return plan
        cut = plan if isinstance(plan, ChannelCut) else None
        chosen = self.faults.first(rpc_out_framing_hook, scope, name) if request.method == "RPC_OUT_DATA" else None
        framing = chosen.persona if chosen is not None else None
        outcome = self.proxy.open_channel(request.method, request.query, mailbox, io.peer, conn, cut=cut,
                                          framing=framing)
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
        if not actions:
            return
        Close, DropHold, HoldCall, Send, StartTimer = self._action_kinds or self._load_action_kinds()
        for action in actions:
            if isinstance(action, DropHold):
                wait = self._waits.pop(action.held, None)
                if wait is not None:
                    wait.stop()
                continue
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
            elif isinstance(action, HoldCall):
                self._waits[action.held] = HeldWait(io, action.held, self._end_wait)

    def _load_action_kinds(self) -> tuple:
        """The proxy's action classes, imported with the proxy (not at start-up) and then kept: an import statement
        in ``run`` cost every tunnelled PDU 0.7 µs."""
        from harness.protocols.rpcchannel import Close, DropHold, HoldCall, Send, StartTimer
        self._action_kinds = (Close, DropHold, HoldCall, Send, StartTimer)
        return self._action_kinds

    def forget(self, channel: Channel) -> None:
        self._io.pop(channel, None)
        timer = self._timers.pop(channel, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, channel: Channel) -> None:
        self._timers.pop(channel, None)
        self.run(self.proxy.timer_expired(channel))

    def _end_wait(self, held: "HeldCall", how: str) -> None:
        wait = self._waits.pop(held, None)
        if wait is not None:
            wait.stop()
            self.run(self.proxy.complete_held(held, how))


class HeldWait:
    """The timers and wake-up of one held call, on its connection's clock."""

    def __init__(self, io: Any, held: "HeldCall", end: Callable[["HeldCall", str], None]):
        self.io, self.held, self.end = io, held, end
        response = held.response
        self._calls: List[Any] = [io.call_later(response.max_wait_ms / 1000, end, held, "max-wait")]
        self._unsubscribe = response.subscribe(self._wake)
        self._stopped = False

    def _wake(self) -> None:
        # told in the middle of the store's operation (a delivery records more than one event): ask once it is over
        if not self._stopped:
            self._calls = [call for call in self._calls if call.active()]
            self._calls.append(self.io.call_later(0, self._check))

    def _check(self) -> None:
        if not self._stopped and self.held.response.ready():
            self.end(self.held, "event")

    def stop(self) -> None:
        self._stopped = True
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []
        self._unsubscribe()
