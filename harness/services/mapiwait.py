"""The timers of a held MAPI/HTTP response (harness.rpc.mapihttp_wait.HeldAnswer) on the connection's clock: the
open-ended answer's stream (HttpResponse.stream, started by the web edge with a StreamIO). PROCESSING went out with
the head; this sends a PENDING meta-tag every period and the DONE chunk once the answer is ready (an event in a
watched log), its maximum wait is over, or its PENDING count is reached; when the client leaves first, its timers
and log listeners go."""
from __future__ import annotations

from typing import Any, Callable, List

from harness.mailbox.events import Event
from harness.rpc.mapihttp_wait import PENDING, HeldAnswer


class HeldMapiResponse:
    def __init__(self, held: HeldAnswer, ended: Callable[[str, int], None]):
        """``ended(how, pending_count)`` is told how the wait ended ("event", "max-wait", "periods" or
        "disconnect")."""
        self.held, self.ended = held, ended
        self.io: Any = None                 # the StreamIO while the answer goes out
        self.pending_sent = 0
        self._calls: List[Any] = []
        self._unlisten: List[Callable[[], None]] = []

    def start(self, io: Any) -> None:
        self.io = io
        self._calls.append(io.call_later(self.held.period_ms / 1000, self._pending))
        if self.held.max_wait_ms is not None:
            self._calls.append(io.call_later(self.held.max_wait_ms / 1000, self._finish, "max-wait"))
        self._unlisten = [log.listen(self._event) for log in self.held.watch]

    def connection_lost(self, reason: str) -> None:
        if self.io is not None:
            self._end("disconnect")

    def _event(self, event: Event) -> None:
        # asked once the store's operation is over (a delivery records more than one event)
        if self.io is not None:
            self._calls.append(self.io.call_later(0, self._check))

    def _check(self) -> None:
        if self.io is not None and self.held.ready():
            self._finish("event")

    def _pending(self) -> None:
        io = self.io
        if io is None:
            return
        self.pending_sent += 1
        io.write(PENDING)
        if self.held.periods is not None and self.pending_sent >= self.held.periods:
            self._finish("periods")
        else:
            self._calls.append(io.call_later(self.held.period_ms / 1000, self._pending))

    def _finish(self, how: str) -> None:
        io = self.io
        if io is None:
            return
        self._end(how)
        io.write(self.held.finish())
        io.end()

    def _end(self, how: str) -> None:
        self.io = None
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []
        for stop in self._unlisten:
            stop()
        self._unlisten = []
        self.ended(how, self.pending_sent)
