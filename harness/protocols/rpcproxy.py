"""The RPC over HTTP v2 proxy of an Exchange 2013 CAS (MS-RPCH; RpcProxyShim's target rules), sans-IO: the
virtual-connection state machine.

The mock plays inbound proxy, outbound proxy and RPC server at once, so the proxy-to-server legs (CONN/A2, B2, C1)
never reach the wire. One HTTP connection carrying RPC_IN_DATA or RPC_OUT_DATA is a ``Channel``; the IN and OUT
channel that carry the same virtual-connection cookie form a ``VirtualConnection`` (either may come first), which
owns one DCE/RPC association (both in harness.protocols.rpcchannel).

The core is driven by calls (``open_channel``, ``data_received``, ``connection_lost``, ``timer_expired``, ``ping``)
and answers with actions for the I/O layer: ``Send(channel, bytes)``, ``Close(channel, reason, reset)`` and
``StartTimer(channel, seconds)``. Whatever goes out on OUT (RTS and RPC PDUs, framed by the channel's persona, under
the client's receive window) is written by harness.protocols.rpcout. A call the association holds (EcDoAsyncWaitEx)
becomes ``HoldCall(channel, held)``: the I/O layer waits on it (timer, wake-ups) and calls ``complete_held(held,
how)``, whose response PDUs go out on OUT like any other; ``DropHold(channel, held)`` (the virtual connection went)
tells it to stop waiting.

Target rules: the query is ``<RemoteName>:<port>``; RemoteName must be a name ``org.is_rpc_target`` accepts
(mailbox-GUID@domain, NetBIOS or FQDN of a server), else 404 Not Found (also for a missing query); the port must be
one of Exchange's ValidPorts 6001-6004, else 503 "Invalid RPC Port". Every interface answers on every valid port.

Flow control (MS-RPCH 3.2.1.1.4): RPC PDUs received on IN are acknowledged to the client with a
FlowControlAckWithDestination(FDClient) on OUT once half of the advertised window is consumed (OUT's own window:
harness.protocols.rpcout). Unless a fault says otherwise, the proxy never sends RECYCLE_CHANNEL and sends pings only
when ``ping`` is called. A channel that finds no partner within the connection timeout is closed.

Fault hooks (harness/faults/rpc.py): a ``ChannelCut`` given to ``open_channel`` (the ``rpc_channel`` hook's other
answer) resets the virtual connection once that channel has carried so many body bytes; the ``rts`` hook fires in
harness.protocols.rpcout. Scope: host = the RPC server name of the query, user = the HTTP-authenticated mailbox.

Capture: a ``tap(cookie, from_client, pdu)`` given to the proxy sees every PDU of each virtual connection's inner
byte stream in the order the proxy handled it: the client's as accepted (the IN and OUT channels' alike, RTS and
RPC), the server's as written to OUT (cut short when a ChannelCut cuts it). ``serve --rpc-capture`` records them.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import unquote

from harness.hooks import FaultSet, hookspec
from harness.org import Mailbox, Org
from harness.protocols import rts
from harness.protocols.dcerpc import DceRpcAssociation, FramingError
from harness.protocols.dcerpc.association import HeldCall
from harness.protocols.dcerpc.interface import RpcInterface
from harness.protocols.http import HttpRequest
from harness.protocols.rpcchannel import (
    IN,
    METHODS,
    OUT,
    Action,
    Channel,
    ChannelCut,
    Close,
    DropHold,
    HoldCall,
    RpcTarget,
    Send,
    StartTimer,
    Tap,
    VirtualConnection,
    cookie_label,
)
from harness.protocols.rpcout import EXCHANGE2013, OUT_CHANNEL_HEADS, OUT_FRAMINGS, OutWriter

VALID_PORTS = range(6001, 6005)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
CONNECTION_TIMEOUT_MS = 120000        # CONN/A3 and CONN/C2, as IIS sends it
IN_RECEIVE_WINDOW = 65536             # the inbound proxy's ReceiveWindowSize in CONN/C2
OPENING = {IN: "CONN/B1", OUT: "CONN/A1"}        # the RTS PDU each channel must start with


@dataclass(frozen=True)
class HttpError:
    """A refusal web.py sends as an ordinary HTTP response."""
    status: int
    reason: str
    body: bytes = b""

    def describe(self) -> str:
        return f"HTTP {self.status} {self.reason}"


@hookspec(fires_in="services/rpcproxy.py", means="refuse the RPC_IN_DATA/RPC_OUT_DATA channel, or plan its cut")
def rpc_channel_hook(request: HttpRequest, server: str, port: Optional[int]) -> Union[HttpError, ChannelCut]: ...


def split_target(query: str) -> Tuple[str, str]:
    """(RemoteName, port text) of ``?<RemoteName>:<port>``; either may be empty."""
    name, colon, port = unquote(query).rpartition(":")
    return (name, port) if colon else (port, "")


def parse_target(query: str, org: Org) -> Union[RpcTarget, HttpError]:
    """``?<RemoteName>:<port>`` as RpcProxyShim judges it."""
    name, port = split_target(query)
    if not name or not org.is_rpc_target(name):
        return HttpError(404, "Not Found")
    if not port.isdigit() or int(port) not in VALID_PORTS:
        return HttpError(503, "Invalid RPC Port")
    return RpcTarget(name, int(port))


def legacy_refusal(target: RpcTarget, org: Org) -> Optional[HttpError]:
    """What the 2013 CAS answers when it cannot proxy to the legacy (2007/2010) CAS behind ``target``.

    Legacy Outlook Anywhere disabled: the 2013 CAS finds no legacy CAS to proxy to and answers 503 Service
    Unavailable. NTLM missing from the legacy /rpc IIS methods: the 2013 CAS authenticates to it with NTLM, the
    legacy IIS answers 401, and the 2013 CAS passes that 401 on (Outlook prompts for credentials again and again;
    web.py re-challenges the connection)."""
    server = org.rpc_target_server(target.name)
    if server is None or not server.is_legacy:
        return None
    problem = org.legacy_proxy_problem(server)
    if problem == "disabled":
        return HttpError(503, "Service Unavailable")
    if problem == "no-ntlm":
        return HttpError(401, "Unauthorized")
    return None


class RpcProxy:
    """The virtual connections of one server: channels in, actions out (see the module docstring)."""

    def __init__(self, org: Org, record: Callable[..., object], rng: random.Random,
                 interfaces: Sequence[RpcInterface], *, connection_timeout_ms: int = CONNECTION_TIMEOUT_MS,
                 in_receive_window: int = IN_RECEIVE_WINDOW, faults: Optional[FaultSet] = None,
                 tap: Optional[Tap] = None, out_framing: str = EXCHANGE2013) -> None:
        if out_framing not in OUT_FRAMINGS:
            raise ValueError(f"unknown OUT channel framing {out_framing!r} (one of {', '.join(OUT_FRAMINGS)})")
        self.org = org
        self.out_framing = out_framing
        self.tap = tap
        self.faults = faults if faults is not None else FaultSet()
        self.record = record
        self.rng = rng
        self.interfaces = list(interfaces)
        self.connection_timeout_ms = connection_timeout_ms
        self.in_receive_window = in_receive_window
        self.connections: Dict[bytes, VirtualConnection] = {}
        self._held: Dict[HeldCall, VirtualConnection] = {}    # held calls by their virtual connection
        self.out = OutWriter(record, self.faults, tap, self._tear_down, self._cut)

    # ---- channel lifecycle ----------------------------------------------------------------------------------
    def open_channel(self, method: str, query: str, mailbox: Optional[Mailbox], peer: Tuple[str, int],
                     conn: Optional[int] = None, cut: Optional[ChannelCut] = None, framing: Optional[str] = None
                     ) -> Union[Tuple[Channel, List[Action]], HttpError]:
        """``framing`` overrides the proxy's ``out_framing`` for this (OUT) channel."""
        direction = METHODS.get(method)
        if direction is None:
            return HttpError(405, "Method Not Allowed")
        target = parse_target(query, self.org)
        if isinstance(target, HttpError):
            self.record("rpc_channel", channel=direction, conn=conn, query=query, status=target.status,
                        reason=target.reason)
            return target
        refused = legacy_refusal(target, self.org)
        if refused is not None:
            self.record("rpc_channel", channel=direction, conn=conn, query=query, status=refused.status,
                        reason=refused.reason, proxied_to="legacy")
            return refused
        framing = framing or self.out_framing
        if framing not in OUT_FRAMINGS:
            raise ValueError(f"unknown OUT channel framing {framing!r}")
        channel = Channel(direction, target, mailbox, peer, framing, conn, cut=cut)
        extra = {"framing": framing} if direction == OUT else {}
        self.record("rpc_channel", channel=direction, conn=conn, target=target.name, port=target.port,
                    user=mailbox.email if mailbox else None, peer=f"{peer[0]}:{peer[1]}", status=100, **extra)
        return channel, [Send(channel, CONTINUE), StartTimer(channel, self.connection_timeout_ms / 1000)]

    def data_received(self, channel: Channel, data: bytes) -> List[Action]:
        if channel.closed:
            return []
        try:
            pdus = channel.framer.feed(data)
        except FramingError as exc:
            return self._fail(channel, str(exc))
        actions: List[Action] = []
        for pdu in pdus:
            if channel.cut is not None and channel.direction == IN and channel.vc is not None:   # after CONN/B1
                if channel.carried + len(pdu) > channel.cut.after_bytes:
                    return actions + self._cut(channel.vc, channel)
                channel.carried += len(pdu)
            actions += self._on_pdu(channel, pdu)
            if channel.closed:
                break
        return actions

    def connection_lost(self, channel: Channel, reason: str) -> List[Action]:
        if channel.closed:
            return []
        channel.closed = True
        self.record("rpc_channel_closed", channel=channel.direction, conn=channel.conn, reason=reason or "closed",
                    vc=channel.vc.label if channel.vc else None)
        return self._tear_down(channel.vc, f"{channel.direction.upper()} channel closed") if channel.vc else []

    def timer_expired(self, channel: Channel) -> List[Action]:
        """The connection timeout of a channel: closes it when it still has no partner."""
        vc = channel.vc
        if channel.closed or (vc is not None and vc.opened):
            return []
        return self._fail(channel, f"no partner channel within {self.connection_timeout_ms} ms")

    def ping(self, cookie: Optional[bytes] = None) -> List[Action]:
        """Send a Ping RTS PDU on the OUT channel of one virtual connection (or of all open ones)."""
        actions: List[Action] = []
        for vc in list(self.connections.values()):
            if vc.opened and cookie in (None, vc.cookie):
                actions += self.out.send_rts(vc, rts.ping())
        return actions

    def complete_held(self, held: HeldCall, how: str) -> List[Action]:
        """A held call's wait ended (``how``: "event", "max-wait"): its response, on OUT after what is queued."""
        vc = self._held.pop(held, None)
        if vc is None:
            return []
        vc.held.extend(vc.association.complete(held, how))
        return self.out.release(vc)

    # ---- PDUs -----------------------------------------------------------------------------------------------
    def _on_pdu(self, channel: Channel, pdu: bytes) -> List[Action]:
        if pdu[2] != rts.RTS_PTYPE:
            if channel.vc is None:
                return self._fail(channel, f"DCE/RPC PDU (type {pdu[2]}) where {OPENING[channel.direction]} was "
                                           f"expected")
            if channel.direction == OUT:
                return self._fail(channel, "DCE/RPC PDU on the OUT channel")
            self._tapped(channel.vc, pdu)
            return self._on_rpc(channel.vc, pdu)
        try:
            message = rts.decode(pdu)
        except rts.RtsError as exc:
            return self._fail(channel, f"malformed RTS PDU: {exc.reason}")
        cookie = message.first(rts.Cookie)
        self.record("rts", channel=channel.direction, sent=False, pdu=message.name, conn=channel.conn,
                    vc=channel.vc.label if channel.vc else cookie_label(cookie.cookie) if cookie else None)
        if channel.vc is None:
            return self._establish(channel, message, pdu)
        if channel.direction == OUT:
            return self._fail(channel, f"{message.name} after CONN/A1 on the OUT channel")
        self._tapped(channel.vc, pdu)
        ack = rts.as_flow_control_ack_with_destination(message)
        if ack is not None and ack.destination == rts.FD_OUT_PROXY:
            return self.out.acknowledge(channel.vc, ack.ack)
        # Pings, keep-alives and other acknowledgements from the client need no answer from a combined proxy.
        return []

    def _establish(self, channel: Channel, message: rts.RtsPdu, pdu: bytes) -> List[Action]:
        """The first PDU of a channel: CONN/A1 on OUT, CONN/B1 on IN; both there opens the connection."""
        opening: Union[rts.ConnA1, rts.ConnB1, None] = (
            rts.as_conn_a1(message) if channel.direction == OUT else rts.as_conn_b1(message))
        if opening is None:
            return self._fail(channel, f"{message.name} where {OPENING[channel.direction]} was expected")
        vc = self._join(channel, opening.virtual_connection_cookie)
        if vc is None:
            return self._fail(channel, f"a second {channel.direction.upper()} channel for the virtual connection")
        self._tapped(vc, pdu)
        actions: List[Action] = []
        if isinstance(opening, rts.ConnA1):      # i.e. the OUT channel
            vc.out_cookie, vc.out_window = opening.out_channel_cookie, opening.receive_window_size
            actions += self.out.send_rts(vc, rts.conn_a3(self.connection_timeout_ms),
                                      head=OUT_CHANNEL_HEADS[channel.framing])
            if channel.closed:
                return actions
        else:
            vc.in_cookie = opening.in_channel_cookie
        if vc.in_channel is not None and vc.out_channel is not None:
            actions += self._open(vc)
        return actions

    def _join(self, channel: Channel, cookie: bytes) -> Optional[VirtualConnection]:
        """The virtual connection for ``cookie`` with ``channel`` attached; None when that side is taken."""
        vc = self.connections.get(cookie)
        if vc is None:
            vc = VirtualConnection(cookie, self._association(cookie, channel))
            self.connections[cookie] = vc
        slot = "in_channel" if channel.direction == IN else "out_channel"
        if getattr(vc, slot) is not None:
            return None
        setattr(vc, slot, channel)
        channel.vc = vc
        partner = vc.out_channel if channel.direction == IN else vc.in_channel
        if partner is not None and partner.target != channel.target:
            in_channel, out_channel = (channel, partner) if channel.direction == IN else (partner, channel)
            self.record("rpc_channel_mismatch", vc=vc.label, **{IN: str(in_channel.target),
                                                                 OUT: str(out_channel.target)})
        return vc

    def _association(self, cookie: bytes, channel: Channel) -> DceRpcAssociation:
        label = cookie_label(cookie)

        def record(kind: str, **fields: object) -> object:
            return self.record(kind, vc=label, **fields)
        return DceRpcAssociation(self.org, self.interfaces, record, self.rng,
                                 secondary_address=str(channel.target.port), http_mailbox=channel.mailbox,
                                 faults=self.faults, host=channel.target.name)

    def _open(self, vc: VirtualConnection) -> List[Action]:
        """Both channels are there: CONN/C2, then whatever RPC traffic was held for it."""
        vc.opened = True
        actions = self.out.send_rts(vc, rts.conn_c2(self.in_receive_window, self.connection_timeout_ms))
        return actions + self.out.release(vc)

    def _on_rpc(self, vc: VirtualConnection, pdu: bytes) -> List[Action]:
        actions: List[Action] = []
        vc.in_bytes_received += len(pdu)
        if vc.in_bytes_received - vc.in_bytes_acked >= self.in_receive_window // 2:
            vc.in_bytes_acked = vc.in_bytes_received
            actions += self.out.send_rts(vc, rts.flow_control_ack_with_destination(
                rts.FD_CLIENT, vc.in_bytes_received, self.in_receive_window, vc.in_cookie))
        for reply in vc.association.handle_pdu(pdu):
            vc.held.append(reply)
        actions += self.out.release(vc)
        for held in vc.association.take_holds():
            if vc.in_channel is not None:
                self._held[held] = vc
                actions.append(HoldCall(vc.in_channel, held))
        if vc.association.closed:
            actions += self._tear_down(vc, "the DCE/RPC association closed")
        return actions

    def _tapped(self, vc: VirtualConnection, pdu: bytes) -> None:
        """A client PDU as the proxy accepted it (the server's are tapped as written, by ``self.out``)."""
        if self.tap is not None:
            self.tap(vc.cookie, True, pdu)

    # ---- ending -------------------------------------------------------------------------------------------------
    def _fail(self, channel: Channel, reason: str) -> List[Action]:
        """A protocol error on a channel: record it, close the channel and its virtual connection."""
        self.record("rpc_proxy_error", channel=channel.direction, conn=channel.conn, reason=reason,
                    vc=channel.vc.label if channel.vc else None)
        if channel.vc is not None:
            return self._tear_down(channel.vc, reason)
        channel.closed = True
        return [Close(channel, reason)]

    def _cut(self, vc: VirtualConnection, channel: Channel) -> List[Action]:
        """A ChannelCut's budget is spent: reset the channel and its partner (a client blocked reading the other
        channel sees the reset too). Cuts only count once the channel belongs to a virtual connection."""
        reason = f"{channel.direction.upper()} channel reset after {channel.carried} counted bytes (fault)"
        return self._tear_down(vc, reason, reset=True)

    def _tear_down(self, vc: VirtualConnection, reason: str, reset: bool = False) -> List[Action]:
        if self.connections.pop(vc.cookie, None) is not None:
            self.record("rpc_vc_closed", vc=vc.label, reason=reason, calls_held=len(vc.held))
        actions: List[Action] = []
        for held in vc.association.drop_holds(reason):
            if self._held.pop(held, None) is not None and vc.in_channel is not None:
                actions.append(DropHold(vc.in_channel, held))
        for channel in (vc.in_channel, vc.out_channel):
            if channel is not None and not channel.closed:
                channel.closed = True
                actions.append(Close(channel, reason, reset))
        return actions
