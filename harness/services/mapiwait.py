"""The timers of a held MAPI/HTTP response (harness.rpc.mapihttp_wait.HeldAnswer) on the reactor: the stream the web
edge drives (HttpResponse.stream). PROCESSING went out with the head; this sends a PENDING meta-tag every period and
the DONE chunk once the answer is ready (an event in a watched log), its maximum wait is over, or its PENDING count is
reached; it stops (timers cancelled, logs unwatched) when the connection ends first."""
from __future__ import annotations

from typing import Any, Callable, List, Optional, Sequence

from harness.mailbox.events import Event
from harness.rpc.mapihttp_wait import PENDING, HeldAnswer

Write = Callable[[Sequence[bytes], bool], None]


class HeldMapiResponse:
    def __init__(self, held: HeldAnswer, clock: Any, ended: Callable[[str, int], None]):
        """``clock``: an IReactorTime; ``ended(how, pending_count)`` is told how the wait ended ("event",
        "max-wait", "periods" or "disconnect")."""
        self.held, self.clock, self.ended = held, clock, ended
        self.write: Optional[Write] = None
        self.pending_sent = 0
        self._calls: List[Any] = []

    def start(self, write: Write) -> None:
        self.write = write
        self._calls.append(self.clock.callLater(self.held.period_ms / 1000, self._pending))
        if self.held.max_wait_ms is not None:
            self._calls.append(self.clock.callLater(self.held.max_wait_ms / 1000, self._finish, "max-wait"))
        for log in self.held.watch:
            log.watchers.append(self._event)

    def stop(self) -> None:
        if self.write is not None:
            self._end("disconnect")

    def _event(self, event: Event) -> None:
        # asked once the store's operation is over (a delivery records more than one event)
        self._calls.append(self.clock.callLater(0, self._check))

    def _check(self) -> None:
        if self.write is not None and self.held.ready():
            self._finish("event")

    def _pending(self) -> None:
        write = self.write
        if write is None:
            return
        self.pending_sent += 1
        write([PENDING], False)
        if self.held.periods is not None and self.pending_sent >= self.held.periods:
            self._finish("periods")
        else:
            self._calls.append(self.clock.callLater(self.held.period_ms / 1000, self._pending))

    def _finish(self, how: str) -> None:
        write = self.write
        if write is None:
            return
        self._end(how)
        write([self.held.finish()], True)

    def _end(self, how: str) -> None:
        self.write = None
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []
        for log in self.held.watch:
            if self._event in log.watchers:
                log.watchers.remove(self._event)
        self.ended(how, self.pending_sent)
