"""The RPC over HTTP v2 proxy of an Exchange 2013 CAS (MS-RPCH; RpcProxyShim's target rules), sans-IO.

The mock plays inbound proxy, outbound proxy and RPC server at once, so the proxy-to-server legs (CONN/A2, B2, C1)
never reach the wire. One HTTP connection carrying RPC_IN_DATA or RPC_OUT_DATA is a ``Channel``; the IN and OUT
channel that carry the same virtual-connection cookie form a ``VirtualConnection`` (either may come first), which
owns one DCE/RPC association.

The core is driven by calls (``open_channel``, ``data_received``, ``connection_lost``, ``timer_expired``, ``ping``)
and answers with actions for the I/O layer: ``Send(channel, bytes)``, ``Close(channel, reason)`` and
``StartTimer(channel, seconds)``. All bytes for a channel leave through ``Send`` in the order returned, which keeps
the OUT stream serialised.

Target rules: the query is ``<RemoteName>:<port>``; RemoteName must be a name ``org.is_rpc_target`` accepts
(mailbox-GUID@domain, NetBIOS or FQDN of a server), else 404 Not Found (also for a missing query); the port must be
one of Exchange's ValidPorts 6001-6004, else 503 "Invalid RPC Port". Every interface answers on every valid port.

Flow control (MS-RPCH 3.2.1.1.4): RPC PDUs on OUT are held back when they would overrun the client's receive
window (CONN/A1, then each FlowControlAckWithDestination); RPC PDUs received on IN are acknowledged to the client
with a FlowControlAckWithDestination(FDClient) on OUT once half of the advertised window is consumed. The proxy
never sends RECYCLE_CHANNEL and sends pings only when ``ping`` is called. A channel that finds no partner within
the connection timeout is closed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import unquote

from harness.org import Mailbox, Org
from harness.protocols import rts
from harness.protocols.dcerpc import DceRpcAssociation, FramingError, PduFramer
from harness.rpc.base import RpcInterface

VALID_PORTS = range(6001, 6005)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
OUT_CHANNEL_RESPONSE = (b"HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\n"
                        b"Content-Length: 1073741824\r\n\r\n")
CONNECTION_TIMEOUT_MS = 120000        # CONN/A3 and CONN/C2, as IIS sends it
IN_RECEIVE_WINDOW = 65536             # the inbound proxy's ReceiveWindowSize in CONN/C2
IN, OUT = "in", "out"
METHODS = {"RPC_IN_DATA": IN, "RPC_OUT_DATA": OUT}
OPENING = {IN: "CONN/B1", OUT: "CONN/A1"}        # the RTS PDU each channel must start with


@dataclass(frozen=True)
class HttpError:
    """A refusal web.py sends as an ordinary HTTP response."""
    status: int
    reason: str
    body: bytes = b""


@dataclass(frozen=True)
class RpcTarget:
    name: str
    port: int


def parse_target(query: str, org: Org) -> Union[RpcTarget, HttpError]:
    """``?<RemoteName>:<port>`` as RpcProxyShim judges it."""
    name, colon, port = unquote(query).rpartition(":")
    if not colon:
        name, port = port, ""
    if not name or not org.is_rpc_target(name):
        return HttpError(404, "Not Found")
    if not port.isdigit() or int(port) not in VALID_PORTS:
        return HttpError(503, "Invalid RPC Port")
    return RpcTarget(name, int(port))


# ---- actions for the I/O layer ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    channel: "Channel"
    data: bytes


@dataclass(frozen=True)
class Close:
    channel: "Channel"
    reason: str


@dataclass(frozen=True)
class StartTimer:
    channel: "Channel"
    seconds: float


Action = Union[Send, Close, StartTimer]


@dataclass(eq=False)
class Channel:
    """One HTTP connection in tunnel mode (IN or OUT)."""
    direction: str
    target: RpcTarget
    mailbox: Optional[Mailbox]
    peer: Tuple[str, int]
    conn: Optional[int] = None
    vc: Optional["VirtualConnection"] = None
    closed: bool = False
    framer: PduFramer = field(default_factory=PduFramer)


@dataclass(eq=False)
class VirtualConnection:
    cookie: bytes
    association: DceRpcAssociation
    in_channel: Optional[Channel] = None
    out_channel: Optional[Channel] = None
    in_cookie: bytes = b""
    out_cookie: bytes = b""
    opened: bool = False                           # CONN/C2 sent: RPC PDUs may flow on OUT
    held: List[bytes] = field(default_factory=list)  # RPC PDUs waiting for C2 or for window
    out_bytes_sent: int = 0                        # RPC PDU bytes sent on OUT (flow control counts only those)
    out_acked: int = 0                             # BytesReceived of the client's last acknowledgement
    out_window: int = 0                            # AvailableWindow of that acknowledgement (or CONN/A1's)
    in_bytes_received: int = 0
    in_bytes_acked: int = 0

    @property
    def label(self) -> str:
        return cookie_label(self.cookie)


def cookie_label(cookie: bytes) -> str:
    """How the transcript names a virtual connection: the first 8 hex digits of its cookie."""
    return cookie.hex()[:8]


class RpcProxy:
    def __init__(self, org: Org, record: Callable[..., object], rng: random.Random,
                 interfaces: Sequence[RpcInterface], *, connection_timeout_ms: int = CONNECTION_TIMEOUT_MS,
                 in_receive_window: int = IN_RECEIVE_WINDOW) -> None:
        self.org = org
        self.record = record
        self.rng = rng
        self.interfaces = list(interfaces)
        self.connection_timeout_ms = connection_timeout_ms
        self.in_receive_window = in_receive_window
        self.connections: Dict[bytes, VirtualConnection] = {}

    # ---- channel lifecycle ----------------------------------------------------------------------------------
    def open_channel(self, method: str, query: str, mailbox: Optional[Mailbox], peer: Tuple[str, int],
                     conn: Optional[int] = None) -> Union[Tuple[Channel, List[Action]], HttpError]:
        direction = METHODS.get(method)
        if direction is None:
            return HttpError(405, "Method Not Allowed")
        target = parse_target(query, self.org)
        if isinstance(target, HttpError):
            self.record("rpc_channel", channel=direction, conn=conn, query=query, status=target.status,
                        reason=target.reason)
            return target
        channel = Channel(direction, target, mailbox, peer, conn)
        self.record("rpc_channel", channel=direction, conn=conn, target=target.name, port=target.port,
                    user=mailbox.email if mailbox else None, peer=f"{peer[0]}:{peer[1]}", status=100)
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
                actions += self._send_rts(vc, rts.ping())
        return actions

    # ---- PDUs -----------------------------------------------------------------------------------------------
    def _on_pdu(self, channel: Channel, pdu: bytes) -> List[Action]:
        if pdu[2] != rts.RTS_PTYPE:
            if channel.vc is None:
                return self._fail(channel, f"DCE/RPC PDU (type {pdu[2]}) where {OPENING[channel.direction]} was "
                                           f"expected")
            if channel.direction == OUT:
                return self._fail(channel, "DCE/RPC PDU on the OUT channel")
            return self._on_rpc(channel.vc, pdu)
        try:
            message = rts.decode(pdu)
        except rts.RtsError as exc:
            return self._fail(channel, f"malformed RTS PDU: {exc.reason}")
        cookie = message.first(rts.Cookie)
        self.record("rts", channel=channel.direction, sent=False, pdu=message.name, conn=channel.conn,
                    vc=channel.vc.label if channel.vc else cookie_label(cookie.cookie) if cookie else None)
        if channel.vc is None:
            return self._establish(channel, message)
        if channel.direction == OUT:
            return self._fail(channel, f"{message.name} after CONN/A1 on the OUT channel")
        ack = rts.as_flow_control_ack_with_destination(message)
        if ack is not None and ack.destination == rts.FD_OUT_PROXY:
            return self._on_out_ack(channel.vc, ack.ack)
        # Pings, keep-alives and other acknowledgements from the client need no answer from a combined proxy.
        return []

    def _establish(self, channel: Channel, message: rts.RtsPdu) -> List[Action]:
        """The first PDU of a channel: CONN/A1 on OUT, CONN/B1 on IN; both there opens the connection."""
        opening = rts.as_conn_a1(message) if channel.direction == OUT else rts.as_conn_b1(message)
        if opening is None:
            return self._fail(channel, f"{message.name} where {OPENING[channel.direction]} was expected")
        vc = self._join(channel, opening.virtual_connection_cookie)
        if vc is None:
            return self._fail(channel, f"a second {channel.direction.upper()} channel for the virtual connection")
        actions: List[Action] = []
        if channel.direction == OUT:
            vc.out_cookie, vc.out_window = opening.out_channel_cookie, opening.receive_window_size
            actions.append(Send(channel, OUT_CHANNEL_RESPONSE + rts.encode(rts.conn_a3(self.connection_timeout_ms))))
            self.record("rts", channel=OUT, sent=True, pdu="CONN/A3", conn=channel.conn, vc=vc.label)
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
            self.record("rpc_channel_mismatch", vc=vc.label, **{IN: str(vc.in_channel.target),
                                                                 OUT: str(vc.out_channel.target)})
        return vc

    def _association(self, cookie: bytes, channel: Channel) -> DceRpcAssociation:
        label = cookie_label(cookie)

        def record(kind: str, **fields) -> object:
            return self.record(kind, vc=label, **fields)
        return DceRpcAssociation(self.org, self.interfaces, record, self.rng,
                                 secondary_address=str(channel.target.port), http_mailbox=channel.mailbox)

    def _open(self, vc: VirtualConnection) -> List[Action]:
        """Both channels are there: CONN/C2, then whatever RPC traffic was held for it."""
        vc.opened = True
        actions = self._send_rts(vc, rts.conn_c2(self.in_receive_window, self.connection_timeout_ms))
        return actions + self._release(vc)

    def _on_rpc(self, vc: VirtualConnection, pdu: bytes) -> List[Action]:
        actions: List[Action] = []
        vc.in_bytes_received += len(pdu)
        if vc.in_bytes_received - vc.in_bytes_acked >= self.in_receive_window // 2:
            vc.in_bytes_acked = vc.in_bytes_received
            actions += self._send_rts(vc, rts.flow_control_ack_with_destination(
                rts.FD_CLIENT, vc.in_bytes_received, self.in_receive_window, vc.in_cookie))
        for reply in vc.association.handle_pdu(pdu):
            vc.held.append(reply)
        actions += self._release(vc)
        if vc.association.closed:
            actions += self._tear_down(vc, "the DCE/RPC association closed")
        return actions

    # ---- OUT channel: serialised writes with flow control -----------------------------------------------------
    def _send_rts(self, vc: VirtualConnection, message: rts.RtsPdu) -> List[Action]:
        """RTS PDUs are not subject to flow control, but still wait for the OUT channel's 200 to be out."""
        if vc.out_channel is None or vc.out_channel.closed:
            return []
        self.record("rts", channel=OUT, sent=True, pdu=message.name, conn=vc.out_channel.conn, vc=vc.label)
        return [Send(vc.out_channel, rts.encode(message))]

    def _release(self, vc: VirtualConnection) -> List[Action]:
        """Send held RPC PDUs as far as the client's receive window allows (one at a time when nothing is in
        flight, so that a window smaller than a PDU cannot stall the connection)."""
        if not vc.opened or vc.out_channel is None or vc.out_channel.closed:
            return []
        actions: List[Action] = []
        while vc.held:
            in_flight = vc.out_bytes_sent - vc.out_acked
            if in_flight and in_flight + len(vc.held[0]) > vc.out_window:
                self.record("rpc_flow_control", vc=vc.label, held=len(vc.held), in_flight=in_flight,
                            window=vc.out_window)
                break
            pdu = vc.held.pop(0)
            vc.out_bytes_sent += len(pdu)
            actions.append(Send(vc.out_channel, pdu))
        return actions

    def _on_out_ack(self, vc: VirtualConnection, ack: rts.FlowControlAck) -> List[Action]:
        if ack.channel_cookie != vc.out_cookie:
            self.record("rts_ignored", vc=vc.label, reason="acknowledgement for an unknown channel cookie")
            return []
        vc.out_acked, vc.out_window = ack.bytes_received, ack.available_window
        return self._release(vc)

    # ---- ending -------------------------------------------------------------------------------------------------
    def _fail(self, channel: Channel, reason: str) -> List[Action]:
        """A protocol error on a channel: record it, close the channel and its virtual connection."""
        self.record("rpc_proxy_error", channel=channel.direction, conn=channel.conn, reason=reason,
                    vc=channel.vc.label if channel.vc else None)
        if channel.vc is not None:
            return self._tear_down(channel.vc, reason)
        channel.closed = True
        return [Close(channel, reason)]

    def _tear_down(self, vc: VirtualConnection, reason: str) -> List[Action]:
        if self.connections.pop(vc.cookie, None) is not None:
            self.record("rpc_vc_closed", vc=vc.label, reason=reason, calls_held=len(vc.held))
        actions: List[Action] = []
        for channel in (vc.in_channel, vc.out_channel):
            if channel is not None and not channel.closed:
                channel.closed = True
                actions.append(Close(channel, reason))
        return actions
