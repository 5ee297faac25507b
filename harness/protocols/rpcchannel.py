"""What the parts of the RPC over HTTP proxy (MS-RPCH) share, sans-IO: a ``Channel`` (one HTTP connection carrying
RPC_IN_DATA or RPC_OUT_DATA), a ``VirtualConnection`` (the IN and OUT channel of one virtual-connection cookie and
its DCE/RPC association), a ``ChannelCut`` a fault plans for a channel, and the actions the proxy answers the I/O
layer with: ``Send(channel, bytes)``, ``Close(channel, reason, reset)``, ``StartTimer(channel, seconds)``,
``HoldCall(channel, held)`` and ``DropHold(channel, held)``.

The virtual-connection state machine is harness.protocols.rpcproxy; what leaves on OUT is harness.protocols.rpcout.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple, Union

from harness.hooks import Scope
from harness.org import Mailbox
from harness.protocols.dcerpc import DceRpcAssociation, PduFramer
from harness.protocols.dcerpc.association import HeldCall

IN, OUT = "in", "out"
METHODS = {"RPC_IN_DATA": IN, "RPC_OUT_DATA": OUT}


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
    framing: str                  # OUT only: how the 200's body carries the PDUs (rpcout.OUT_FRAMINGS)
    conn: Optional[int] = None
    vc: Optional["VirtualConnection"] = None
    closed: bool = False
    framer: PduFramer = field(default_factory=PduFramer)
    cut: Optional[ChannelCut] = None
    carried: int = 0              # for ``cut``: PDU bytes sent (OUT), PDU bytes received after CONN/B1 (IN)

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


def cookie_label(cookie: bytes) -> str:
    """How the transcript names a virtual connection: the first 8 hex digits of its cookie."""
    return cookie.hex()[:8]
