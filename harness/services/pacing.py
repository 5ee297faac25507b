"""Write-fault pacing: a transport wrapper that carries out the ``write`` hook's WritePlans on one connection.

Each plan's pieces go out in order, each after its delay, then the plan's end: "close" (FIN once the pieces are out),
"reset" (RST once they have left Twisted's buffers) or "hold" (silence: nothing more is sent and the connection stays
open until the client gives up). Output written meanwhile queues behind the plan; once a plan ended the output,
nothing more is sent. With no plan ever given, writes go straight to the transport.

It is also the transport's streaming producer: when the transport's own buffer is full (the client does not read)
Twisted pauses it, and output queues here until the transport has drained. ``on_backlog(held, stalled)`` is told
whenever the bytes held here, or that stall, change: the connection core decides what to do about it.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Deque, Optional, Tuple

from twisted.internet.interfaces import IPullProducer, IPushProducer
from zope.interface import implementer

Pieces = Tuple[Tuple[float, bytes], ...]   # (seconds to wait first, bytes)


@implementer(IPushProducer)
class PacedTransport:
    """Wraps the connection's transport for the HTTP edge: ``write``, ``follow`` (a plan), ``loseConnection``
    (after what is queued) and ``abortConnection``. ``on_end`` is told when a plan closes or resets the output,
    before it does; ``below_tls``: the transport is TLS over TCP, and a reset must wait for the TCP buffer.
    Registers itself as the transport's producer; ``on_backlog`` (see the module docstring) may be None."""

    def __init__(self, transport: Any, clock: Any, *, below_tls: bool, on_end: Callable[[], None],
                 on_backlog: Optional[Callable[[int, bool], None]] = None):
        self.transport = transport
        self._clock = clock
        self._below_tls = below_tls
        self._on_end = on_end
        self._on_backlog = on_backlog
        self._queue: Deque[Tuple[float, bytes, Optional[str]]] = deque()   # (delay, bytes, end after them)
        self._timer: Any = None
        self._close_requested = False
        self.ended = False   # a plan ended the output: nothing more goes out
        self.held = 0        # bytes in the queue: not handed to the transport yet
        self.stalled = False   # the transport paused us: its buffer is full
        self._reported = (0, False)
        self._registered = True
        transport.registerProducer(self, True)

    def write(self, data: bytes) -> None:
        """Straight out, unless planned output is still being paced or the transport is full: then behind it."""
        if self.ended:
            return
        if not self._queue and self._timer is None and not self.stalled:
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
            self.held += len(data)
        self.ended = end is not None
        self._run()
        self._report()

    def loseConnection(self) -> None:
        """Close once everything queued has gone out; never when a plan holds the output (or already ended it)."""
        if self._queue or self._timer is not None or self.ended:
            self._close_requested = True
            return
        self._close_transport()

    def abortConnection(self) -> None:
        self.cancel()
        self.transport.abortConnection()

    def cancel(self) -> None:
        """Forget what is queued (the connection is gone or being reset)."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._queue.clear()
        self.held = 0

    # ---- the transport's producer (IPushProducer) ------------------------------------------------------------------
    def pauseProducing(self) -> None:
        """The transport's buffer is full: hold output here."""
        self.stalled = True
        self._report()

    def resumeProducing(self) -> None:
        """The transport's buffer drained: what is held goes out (until it fills again)."""
        self.stalled = False
        self._run()
        self._report()

    def stopProducing(self) -> None:
        """The transport is gone."""
        self._registered = False
        self.cancel()

    def _release(self) -> None:
        """Stop being the transport's producer: a transport does not close while one is registered, and a reset's
        _AbortWhenDrained needs the place."""
        if self._registered:
            self._registered = False
            self.transport.unregisterProducer()

    def _report(self) -> None:
        backlog = (self.held, self.stalled)
        if backlog != self._reported and self._on_backlog is not None:
            self._reported = backlog
            self._on_backlog(*backlog)

    # ---- carrying out the queue ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while self._queue and self._timer is None and not self.stalled:
            delay, data, end = self._queue[0]
            if delay > 0:
                self._timer = self._clock.callLater(delay, self._wake)
                return
            self._queue.popleft()
            self.held -= len(data)
            self._send(data, end)
        if not self._queue and self._timer is None and self._close_requested and not self.ended:
            self._close_transport()

    def _wake(self) -> None:
        """A piece's delay is over: it goes out now, even into a full transport (one piece: bounded)."""
        self._timer = None
        _, data, end = self._queue.popleft()
        self.held -= len(data)
        self._send(data, end)
        self._run()
        self._report()

    def _close_transport(self) -> None:
        self._release()
        self.transport.loseConnection()

    def _send(self, data: bytes, end: Optional[str]) -> None:
        if end == "reset":
            self._on_end()
            self._reset_after(data)
            return
        if data:
            self.transport.write(data)
        if end == "close":
            self._on_end()
            self._close_transport()

    def _reset_after(self, data: bytes) -> None:
        """Send ``data``, then RST once it has left Twisted's buffers (abortConnection alone would drop it)."""
        if not data:
            self.abortConnection()
            return
        tcp = self.transport.transport if self._below_tls else self.transport
        self._release()
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
