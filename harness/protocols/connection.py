"""What may happen to a TCP connection beside HTTP: the ``accept`` and ``write`` hook points and their answers.

``ConnectAction`` shapes a listener or a new connection (refuse, blackhole, reset, stall); ``WritePlan`` shapes how
one write reaches the client (slices, delays, an early end). The Twisted edges (services/listeners.py, the HTTP edge)
carry them out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from harness.hooks import hookspec
from harness.protocols.http import ConnectionInfo

CONNECT_KINDS = ("refuse", "blackhole", "reset", "stall")

@dataclass(frozen=True)
class ConnectAction:
    """The ``accept`` hook's answer for a port or a new connection. "refuse" and "blackhole" shape the listener
    itself; a connection that still arrives on it (or any connection, for "reset" and "stall") is reset (RST) or
    held without a byte, until the client leaves or ``seconds`` pass (0: forever)."""
    kind: str
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in CONNECT_KINDS:
            raise ValueError(f"kind must be one of {CONNECT_KINDS}, not {self.kind!r}")

    def describe(self) -> str:
        return self.kind + (f" for {self.seconds:g}s" if self.seconds else "")



WRITE_ENDS = (None, "close", "reset", "hold")


@dataclass(frozen=True)
class WritePlan:
    """The ``write`` hook's answer: how one write reaches the client. Each piece is sent after waiting its delay;
    then the output may end: "close" (FIN after the pieces), "reset" (RST once they left), "hold" (silence: nothing
    more is ever sent and the connection stays open until the client gives up)."""
    pieces: Tuple[Tuple[float, bytes], ...]   # (seconds to wait first, bytes)
    end: Optional[str] = None

    def __post_init__(self) -> None:
        if self.end not in WRITE_ENDS:
            raise ValueError(f"end must be one of {WRITE_ENDS}, not {self.end!r}")

    def describe(self) -> str:
        sent = sum(len(data) for _, data in self.pieces)
        waited = sum(delay for delay, _ in self.pieces)
        text = f"{sent} bytes in {len(self.pieces)} piece(s) over {waited:.3f}s"
        return text + (f", then {self.end}" if self.end else "")


@hookspec(fires_in="services/listeners.py", means="refuse, blackhole, reset or stall the port or a new connection")
def accept_hook(info: ConnectionInfo) -> ConnectAction: ...


@hookspec(fires_in="services/web.py", means="slice, delay, truncate or end one write of HTTP output")
def write_hook(info: ConnectionInfo, data: bytes) -> WritePlan: ...
