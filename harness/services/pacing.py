"""Write-fault pacing: a transport wrapper that carries out the ``write`` hook's WritePlans on one connection.

Each plan's pieces go out in order, each after its delay, then the plan's end: "close" (FIN once the pieces are out),
"reset" (RST once they have left Twisted's buffers) or "hold" (silence: nothing more is sent and the connection stays
open until the client gives up). Output written meanwhile queues behind the plan; once a plan ended the output,
nothing more is sent. With no plan ever given, writes go straight to the transport.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Deque, Optional, Tuple

from twisted.internet.interfaces import IPullProducer
from zope.interface import implementer

Pieces = Tuple[Tuple[float, bytes], ...]   # (seconds to wait first, bytes)


class PacedTransport:
    """Wraps the connection's transport for the HTTP edge: ``write``, ``follow`` (a plan), ``loseConnection``
    (after what is queued) and ``abortConnection``. ``on_end`` is told when a plan closes or resets the output,
    before it does; ``below_tls``: the transport is TLS over TCP, and a reset must wait for the TCP buffer."""

    def __init__(self, transport: Any, clock: Any, *, below_tls: bool, on_end: Callable[[], None]):
        self.transport = transport
        self._clock = clock
        self._below_tls = below_tls
        self._on_end = on_end
        self._queue: Deque[Tuple[float, bytes, Optional[str]]] = deque()   # (delay, bytes, end after them)
        self._timer: Any = None
        self._close_requested = False
        self.ended = False   # a plan ended the output: nothing more goes out

    def write(self, data: bytes) -> None:
        """Straight out, unless planned output is still being paced: then behind it."""
        if self.ended:
            return
        if not self._queue and self._timer is None:
            self.transport.write(data)
            return
        self.follow(((0.0, data),), None)

    def follow(self, pieces: Pieces, end: Optional[str]) -> None:
        """Carry out one write plan, after whatever is queued."""
        if self.ended:
            return
        items = list(pieces) or [(0.0, b"")]
        for index, (delay, data) in enumerate(items):
            self._queue.append((delay, data, end if index == len(items) - 1 else None))
        self.ended = end is not None
        self._run()

    def loseConnection(self) -> None:
        """Close once everything queued has gone out; never when a plan holds the output (or already ended it)."""
        if self._queue or self._timer is not None or self.ended:
            self._close_requested = True
            return
        self.transport.loseConnection()

    def abortConnection(self) -> None:
        self.cancel()
        self.transport.abortConnection()

    def cancel(self) -> None:
        """Forget what is queued (the connection is gone or being reset)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._queue.clear()

    # ---- carrying out the queue ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while self._queue and self._timer is None:
            delay, data, end = self._queue[0]
            if delay > 0:
                self._timer = self._clock.callLater(delay, self._wake)
                return
            self._queue.popleft()
            self._send(data, end)
        if not self._queue and self._timer is None and self._close_requested and not self.ended:
            self.transport.loseConnection()

    def _wake(self) -> None:
        self._timer = None
        _, data, end = self._queue.popleft()
        self._send(data, end)
        self._run()

    def _send(self, data: bytes, end: Optional[str]) -> None:
        if end == "reset":
            self._on_end()
            self._reset_after(data)
            return
        if data:
            self.transport.write(data)
        if end == "close":
            self._on_end()
            self.transport.loseConnection()

    def _reset_after(self, data: bytes) -> None:
        """Send ``data``, then RST once it has left Twisted's buffers (abortConnection alone would drop it)."""
        if not data:
            self.abortConnection()
            return
        tcp = self.transport.transport if self._below_tls else self.transport
        try:
            tcp.registerProducer(_AbortWhenDrained(self), False)
        except RuntimeError:  # the transport already serves a producer: nothing tells us when it drains
            self.transport.write(data)
            self.abortConnection()
            return
        self.transport.write(data)


@implementer(IPullProducer)
class _AbortWhenDrained:
    """Registered on the TCP transport, which asks a pull producer for more once its buffer is empty: then the
    bytes are with the kernel (on loopback: with the peer) and the RST may follow."""

    def __init__(self, output: PacedTransport):
        self._output = output
        self._armed = False   # registerProducer asks once right away, before anything was written

    def resumeProducing(self) -> None:
        if not self._armed:
            self._armed = True
            return
        self._output.abortConnection()

    def stopProducing(self) -> None:
        pass
