"""The OUT channel of the RPC over HTTP proxy (MS-RPCH), sans-IO: every byte a virtual connection sends its client.

All of it leaves through ``OutWriter`` as ``Send`` actions in the order returned, which keeps the OUT stream
serialised; what ends the virtual connection on the way (a refusal, a cut) goes back to the proxy's ``tear_down``
and ``cut``.

Framing: the 200 of RPC_OUT_DATA and its body follow the channel's persona (``OUT_FRAMINGS``): exchange2013
(chunked, one PDU per chunk; the default) or legacy (``Content-Length: 1073741824``, raw PDUs); the
``rpc_out_framing`` hook may pick one per channel. Flow control, cuts and the tap count PDU bytes, never framing.

Flow control (MS-RPCH 3.2.1.1.4): RPC PDUs wait in the virtual connection's queue until CONN/C2 has gone out and
while they would overrun the client's receive window (CONN/A1's, then each FlowControlAckWithDestination(FDOutProxy)
that names the OUT channel's cookie). RTS PDUs are not flow controlled.

Fault hooks (harness/faults/rpc.py): every RTS PDU about to leave passes the ``rts`` hook, whose ``RtsAction`` may
drop it, refuse the channel in its place or send more RTS PDUs after it; a ``ChannelCut`` on the OUT channel cuts
the write that spends its budget short and resets the virtual connection.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from harness.hooks import FaultSet, hookspec
from harness.protocols import rts
from harness.protocols.rpcchannel import OUT, Action, Channel, Send, Tap, VirtualConnection

# The OUT channel's 200 and body framing, by persona (docs/rpc-over-http.md, "OUT channel framing"): Exchange 2013's
# front end streams the body chunked, one PDU per chunk; the IIS rpcproxy of 2007/2010 announces a 1 GiB body
# (MS-RPCH 2.1.2.1.4) and writes raw PDUs.
EXCHANGE2013, LEGACY = "exchange2013", "legacy"
OUT_FRAMINGS = (EXCHANGE2013, LEGACY)
OUT_CHANNEL_HEADS = {
    EXCHANGE2013: b"HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\nTransfer-Encoding: chunked\r\n\r\n",
    LEGACY: b"HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\nContent-Length: 1073741824\r\n\r\n",
}


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


@hookspec(fires_in="services/rpcproxy.py", means="the body framing (OUT_FRAMINGS) of an RPC_OUT_DATA channel's 200")
def rpc_out_framing_hook(server: str) -> OutFraming: ...


@hookspec(fires_in="protocols/rpcout.py", means="drop, refuse or follow an RTS PDU about to leave on OUT")
def rts_hook(direction: str, pdu_name: str) -> RtsAction: ...


def frame_out(framing: str, data: bytes, pdu_length: int) -> bytes:
    """``data`` (all or, when a cut stops it, the first bytes of a ``pdu_length``-byte PDU) as the OUT body carries
    it: raw (legacy) or as one chunk per PDU (exchange2013), whose size line always announces the whole PDU."""
    if framing == LEGACY:
        return data
    return b"%x\r\n" % pdu_length + data + (b"\r\n" if len(data) == pdu_length else b"")


class OutWriter:
    """Serialised writes on the OUT channel of each virtual connection, with flow control; one per proxy.
    ``tear_down(vc, reason)`` closes a virtual connection, ``cut(vc, channel)`` resets it when a ChannelCut's budget
    is spent; ``tap`` sees each server PDU as written (cut short when a cut cuts it)."""

    def __init__(self, record: Callable[..., object], faults: FaultSet, tap: Optional[Tap],
                 tear_down: Callable[[VirtualConnection, str], List[Action]],
                 cut: Callable[[VirtualConnection, Channel], List[Action]]) -> None:
        self.record = record
        self.faults = faults
        self.tap = tap
        self._tear_down = tear_down
        self._cut = cut

    def send_rts(self, vc: VirtualConnection, message: rts.RtsPdu, head: bytes = b"") -> List[Action]:
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
            actions += self.write(vc, channel, rts.encode(pdu), b"" if index else head)
        return actions

    def write(self, vc: VirtualConnection, channel: Channel, data: bytes, head: bytes = b"") -> List[Action]:
        """One PDU (after ``head``) on ``vc``'s OUT channel, framed as the channel's persona frames it, cut short
        (and the connection reset) by a ChannelCut: cuts count PDU bytes, whatever the framing."""
        cut = channel.cut
        if cut is None or channel.carried + len(data) <= cut.after_bytes:
            channel.carried += len(data)
            self._tapped(vc, data)
            return [Send(channel, head + frame_out(channel.framing, data, len(data)))]
        allowed = data[:cut.after_bytes - channel.carried]
        channel.carried += len(allowed)
        if allowed:
            self._tapped(vc, allowed)
        body = frame_out(channel.framing, allowed, len(data)) if allowed else b""
        sent: List[Action] = [Send(channel, head + body)] if head or body else []
        return sent + self._cut(vc, channel)

    def release(self, vc: VirtualConnection) -> List[Action]:
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
            actions += self.write(vc, channel, pdu)
        return actions

    def acknowledge(self, vc: VirtualConnection, ack: rts.FlowControlAck) -> List[Action]:
        """The client's FlowControlAckWithDestination(FDOutProxy): a new receive window, then what it lets out."""
        if ack.channel_cookie != vc.out_cookie:
            self.record("rts_ignored", vc=vc.label, reason="acknowledgement for an unknown channel cookie")
            return []
        vc.out_acked, vc.out_window = ack.bytes_received, ack.available_window
        return self.release(vc)

    def _tapped(self, vc: VirtualConnection, pdu: bytes) -> None:
        if self.tap is not None:
            self.tap(vc.cookie, False, pdu)
