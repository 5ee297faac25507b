"""The RPC over HTTP v2 proxy of an Exchange 2013 CAS (MS-RPCH; RpcProxyShim's target rules), sans-IO.

The mock plays inbound proxy, outbound proxy and RPC server at once, so the proxy-to-server legs (CONN/A2, B2, C1)
never reach the wire. One HTTP connection carrying RPC_IN_DATA or RPC_OUT_DATA is a ``Channel``; the IN and OUT
channel that carry the same virtual-connection cookie form a ``VirtualConnection`` (either may come first), which
owns one DCE/RPC association.

The core is driven by calls (``open_channel``, ``data_received``, ``connection_lost``, ``timer_expired``, ``ping``)
and answers with actions for the I/O layer: ``Send(channel, bytes)``, ``Close(channel, reason, reset)`` and
``StartTimer(channel, seconds)``. All bytes for a channel leave through ``Send`` in the order returned, which keeps
the OUT stream serialised. A call the association holds (EcDoAsyncWaitEx) becomes ``HoldCall(channel, held)``: the
I/O layer waits on it (timer, wake-ups) and calls ``complete_held(held, how)``, whose response PDUs go out on OUT like
any other; ``DropHold(channel, held)`` (the virtual connection went) tells it to stop waiting.

OUT framing: the 200 of RPC_OUT_DATA and its body follow the channel's persona (``OUT_FRAMINGS``): exchange2013
(chunked, one PDU per chunk; the default) or legacy (``Content-Length: 1073741824``, raw PDUs); the
``rpc_out_framing`` hook may pick one per channel. Flow control, cuts and the tap count PDU bytes, never framing.

Target rules: the query is ``<RemoteName>:<port>``; RemoteName must be a name ``org.is_rpc_target`` accepts
(mailbox-GUID@domain, NetBIOS or FQDN of a server), else 404 Not Found (also for a missing query); the port must be
one of Exchange's ValidPorts 6001-6004, else 503 "Invalid RPC Port". Every interface answers on every valid port.

Flow control (MS-RPCH 3.2.1.1.4): RPC PDUs on OUT are held back when they would overrun the client's receive
window (CONN/A1, then each FlowControlAckWithDestination); RPC PDUs received on IN are acknowledged to the client
with a FlowControlAckWithDestination(FDClient) on OUT once half of the advertised window is consumed. Unless a
fault says otherwise, the proxy never sends RECYCLE_CHANNEL and sends pings only when ``ping`` is called. A channel
that finds no partner within the connection timeout is closed.

Fault hooks (harness/faults/rpc.py): every RTS PDU about to leave on OUT passes the ``rts`` hook, whose
``RtsAction`` may drop it, refuse the channel in its place or send more RTS PDUs after it; a ``ChannelCut`` given to
``open_channel`` (the ``rpc_channel`` hook's other answer) resets the virtual connection once that channel has
carried so many body bytes. Scope: host = the RPC server name of the query, user = the HTTP-authenticated mailbox.

Capture: a ``tap(cookie, from_client, pdu)`` given to the proxy sees every PDU of each virtual connection's inner
byte stream in the order the proxy handled it: the client's as accepted (the IN and OUT channels' alike, RTS and
RPC), the server's as written to OUT (cut short when a ChannelCut cuts it). ``serve --rpc-capture`` records them.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import unquote

from harness.hooks import FaultSet, Scope, hookspec
from harness.org import Mailbox, Org
from harness.protocols import rts
from harness.protocols.dcerpc import DceRpcAssociation, FramingError, PduFramer
from harness.protocols.dcerpc.association import HeldCall
from harness.protocols.dcerpc.interface import RpcInterface
from harness.protocols.http import HttpRequest

VALID_PORTS = range(6001, 6005)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# The OUT channel's 200 and body framing, by persona (docs/rpc-over-http.md, "OUT channel framing"): Exchange 2013's
# front end streams the body chunked, one PDU per chunk; the IIS rpcproxy of 2007/2010 announces a 1 GiB body
# (MS-RPCH 2.1.2.1.4) and writes raw PDUs.
EXCHANGE2013, LEGACY = "exchange2013", "legacy"
OUT_FRAMINGS = (EXCHANGE2013, LEGACY)
OUT_CHANNEL_HEADS = {
    EXCHANGE2013: b"HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\nTransfer-Encoding: chunked\r\n\r\n",
    LEGACY: b"HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\nContent-Length: 1073741824\r\n\r\n",
}
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

    def describe(self) -> str:
        return f"HTTP {self.status} {self.reason}"


@dataclass(frozen=True)
class RpcTarget:
    name: str
    port: int


@dataclass(frozen=True)
class ChannelCut:
    """A fault's plan for one channel: both channels of its virtual connection are reset, as a load balancer or a
    crashing proxy does, once an OUT channel has sent ``after_bytes`` body bytes (the rest of that write is cut
    off), or when the PDU that would take an IN channel past ``after_bytes`` bytes after CONN/B1 arrives (it is
    not handled)."""
    after_bytes: int

    def describe(self) -> str:
        return f"reset the virtual connection after {self.after_bytes} body bytes on this channel"


@dataclass(frozen=True)
class OutFraming:
    """The OUT channel persona a fault picks for one channel (one of OUT_FRAMINGS)."""
    persona: str

    def describe(self) -> str:
        return f"frame the OUT channel as {self.persona}"


@dataclass(frozen=True)
class RtsAction:
    """A fault's answer for one RTS PDU about to leave on OUT (the ``rts`` hook):
    drop    - it is not sent (the OUT channel's 200 header still goes out before a dropped CONN/A3);
    refuse  - ``data`` (an HTTP status line) goes out in its place, and in place of the 200 before CONN/A3,
              then the virtual connection closes;
    follow  - it is sent, then the RTS PDUs in ``then`` (pings, a recycling request);
    replace - the RTS PDUs in ``then`` go out in its place (a CONN/A3 or CONN/C2 with other fields or commands)."""
    kind: str
    data: bytes = b""
    then: Tuple[rts.RtsPdu, ...] = ()

    def describe(self) -> str:
        if self.kind == "refuse":
            status_line = self.data.split(b"\r\n", 1)[0].decode("latin-1")
            return f"refuse with {status_line!r}"
        if self.kind in ("follow", "replace"):
            return f"{self.kind} with " + ", ".join(pdu.name for pdu in self.then)
        return self.kind


@hookspec(fires_in="services/rpcproxy.py", means="refuse the RPC_IN_DATA/RPC_OUT_DATA channel, or plan its cut")
def rpc_channel_hook(request: HttpRequest, server: str, port: Optional[int]) -> Union[HttpError, ChannelCut]: ...


@hookspec(fires_in="services/rpcproxy.py", means="the body framing (OUT_FRAMINGS) of an RPC_OUT_DATA channel's 200")
def rpc_out_framing_hook(server: str) -> OutFraming: ...


@hookspec(fires_in="protocols/rpcproxy.py", means="drop, refuse or follow an RTS PDU about to leave on OUT")
def rts_hook(direction: str, pdu_name: str) -> RtsAction: ...


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


# ---- actions for the I/O layer ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    channel: "Channel"
    data: bytes


@dataclass(frozen=True)
class Close:
    channel: "Channel"
    reason: str
    reset: bool = False          # abort (TCP RST) once what was sent before has left, instead of closing


@dataclass(frozen=True)
class StartTimer:
    channel: "Channel"
    seconds: float


@dataclass(frozen=True)
class HoldCall:
    channel: "Channel"           # the IN channel the call came on (its connection's clock runs the timers)
    held: HeldCall


@dataclass(frozen=True)
class DropHold:
    channel: "Channel"
    held: HeldCall


Action = Union[Send, Close, StartTimer, HoldCall, DropHold]
Tap = Callable[[bytes, bool, bytes], None]    # (virtual connection cookie, from the client, PDU)


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
    cut: Optional[ChannelCut] = None
    carried: int = 0              # for ``cut``: PDU bytes sent (OUT), PDU bytes received after CONN/B1 (IN)
    framing: str = EXCHANGE2013   # OUT only: how the 200's body carries the PDUs (OUT_FRAMINGS)

    @property
    def scope(self) -> Scope:
        return Scope(self.target.name, self.mailbox.email if self.mailbox else None)


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


def frame_out(framing: str, data: bytes, pdu_length: int) -> bytes:
    """``data`` (all or, when a cut stops it, the first bytes of a ``pdu_length``-byte PDU) as the OUT body carries
    it: raw (legacy) or as one chunk per PDU (exchange2013), whose size line always announces the whole PDU."""
    if framing == LEGACY:
        return data
    return b"%x\r\n" % pdu_length + data + (b"\r\n" if len(data) == pdu_length else b"")


def cookie_label(cookie: bytes) -> str:
    """How the transcript names a virtual connection: the first 8 hex digits of its cookie."""
    return cookie.hex()[:8]


class RpcProxy:
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
        channel = Channel(direction, target, mailbox, peer, conn, cut=cut, framing=framing)
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
                actions += self._send_rts(vc, rts.ping())
        return actions

    def complete_held(self, held: HeldCall, how: str) -> List[Action]:
        """A held call's wait ended (``how``: "event", "max-wait"): its response, on OUT after what is queued."""
        vc = self._held.pop(held, None)
        if vc is None:
            return []
        vc.held.extend(vc.association.complete(held, how))
        return self._release(vc)

    # ---- PDUs -----------------------------------------------------------------------------------------------
    def _on_pdu(self, channel: Channel, pdu: bytes) -> List[Action]:
        if pdu[2] != rts.RTS_PTYPE:
            if channel.vc is None:
                return self._fail(channel, f"DCE/RPC PDU (type {pdu[2]}) where {OPENING[channel.direction]} was "
                                           f"expected")
            if channel.direction == OUT:
                return self._fail(channel, "DCE/RPC PDU on the OUT channel")
            self._tapped(channel.vc, True, pdu)
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
        self._tapped(channel.vc, True, pdu)
        ack = rts.as_flow_control_ack_with_destination(message)
        if ack is not None and ack.destination == rts.FD_OUT_PROXY:
            return self._on_out_ack(channel.vc, ack.ack)
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
        self._tapped(vc, True, pdu)
        actions: List[Action] = []
        if isinstance(opening, rts.ConnA1):      # i.e. the OUT channel
            vc.out_cookie, vc.out_window = opening.out_channel_cookie, opening.receive_window_size
            actions += self._send_rts(vc, rts.conn_a3(self.connection_timeout_ms),
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
        for held in vc.association.take_holds():
            if vc.in_channel is not None:
                self._held[held] = vc
                actions.append(HoldCall(vc.in_channel, held))
        if vc.association.closed:
            actions += self._tear_down(vc, "the DCE/RPC association closed")
        return actions

    # ---- OUT channel: serialised writes with flow control -----------------------------------------------------
    def _send_rts(self, vc: VirtualConnection, message: rts.RtsPdu, head: bytes = b"") -> List[Action]:
        """RTS PDUs are not subject to flow control; ``head`` (the OUT channel's 200) goes out just before.
        Each passes the ``rts`` fault hook first."""
        channel = vc.out_channel
        if channel is None or channel.closed:
            return []
        action = self.faults.first(rts_hook, channel.scope, OUT, message.name)
        if action is not None and action.kind == "refuse":
            return [Send(channel, action.data)] + self._tear_down(vc, f"{message.name} refused by a fault")
        if action is not None and action.kind == "drop":
            return [Send(channel, head)] if head else []
        actions: List[Action] = []
        pdus = (message,) + (action.then if action is not None else ())
        if action is not None and action.kind == "replace":
            pdus = action.then
        for index, pdu in enumerate(pdus):
            if channel.closed:
                break
            self.record("rts", channel=OUT, sent=True, pdu=pdu.name, conn=channel.conn, vc=vc.label)
            actions += self._write(vc, channel, rts.encode(pdu), b"" if index else head)
        return actions

    def _write(self, vc: VirtualConnection, channel: Channel, data: bytes, head: bytes = b"") -> List[Action]:
        """One PDU (after ``head``) on ``vc``'s OUT channel, framed as the channel's persona frames it, cut short
        (and the connection reset) by a ChannelCut: cuts count PDU bytes, whatever the framing."""
        cut = channel.cut
        if cut is None or channel.carried + len(data) <= cut.after_bytes:
            channel.carried += len(data)
            self._tapped(vc, False, data)
            return [Send(channel, head + frame_out(channel.framing, data, len(data)))]
        allowed = data[:cut.after_bytes - channel.carried]
        channel.carried += len(allowed)
        if allowed:
            self._tapped(vc, False, allowed)
        body = frame_out(channel.framing, allowed, len(data)) if allowed else b""
        sent: List[Action] = [Send(channel, head + body)] if head or body else []
        return sent + self._cut(vc, channel)

    def _release(self, vc: VirtualConnection) -> List[Action]:
        """Send held RPC PDUs as far as the client's receive window allows (one at a time when nothing is in
        flight, so that a window smaller than a PDU cannot stall the connection)."""
        channel = vc.out_channel
        if not vc.opened or channel is None or channel.closed:
            return []
        actions: List[Action] = []
        while vc.held and not channel.closed:
            in_flight = vc.out_bytes_sent - vc.out_acked
            if in_flight and in_flight + len(vc.held[0]) > vc.out_window:
                self.record("rpc_flow_control", vc=vc.label, held=len(vc.held), in_flight=in_flight,
                            window=vc.out_window)
                break
            pdu = vc.held.pop(0)
            vc.out_bytes_sent += len(pdu)
            actions += self._write(vc, channel, pdu)
        return actions

    def _on_out_ack(self, vc: VirtualConnection, ack: rts.FlowControlAck) -> List[Action]:
        if ack.channel_cookie != vc.out_cookie:
            self.record("rts_ignored", vc=vc.label, reason="acknowledgement for an unknown channel cookie")
            return []
        vc.out_acked, vc.out_window = ack.bytes_received, ack.available_window
        return self._release(vc)

    def _tapped(self, vc: VirtualConnection, from_client: bool, pdu: bytes) -> None:
        if self.tap is not None:
            self.tap(vc.cookie, from_client, pdu)

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
