"""The timing of one open GetStreamingEvents connection: the edge half of harness.protocols.ews_notify's
NotificationStream, started by the HTTP edge (harness.services.web) once the answer's head is out.

It listens to the mailbox's event log for as long as the connection is open: an event the stream wants schedules
one delivery in the same reactor turn (so the NewMailEvent and CreatedEvent of one delivery share an envelope), a
keep-alive goes out after the stream's keep-alive interval without any other envelope, and at ConnectionTimeout the
pending events and ConnectionStatus Closed go out and the chunked body ends. All of it through the StreamIO's clock,
and all of it undone - timers cancelled, listener removed - when the stream ends or the client leaves first.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from harness.mailbox.events import Event
from harness.protocols.ews_notify import NotificationStream
from harness.services import ews_check


class EwsStreamRunner:
    """Carries out one NotificationStream on a StreamIO; ``record`` writes its ``ews_stream`` transcript events."""

    def __init__(self, stream: NotificationStream, record: Callable[..., Any], conn_id: int, mailbox: str):
        self.stream, self._record, self.conn_id, self.mailbox = stream, record, conn_id, mailbox
        self.io: Any = None
        self._deadline: Any = None      # DelayedCall: ConnectionTimeout
        self._keep_alive: Any = None    # DelayedCall: the next keep-alive
        self._delivery: Any = None      # DelayedCall: events to send (this reactor turn)
        self._unlisten: Optional[Callable[[], None]] = None
        self.notifications = 0          # notification envelopes sent
        self.keep_alives = 0

    @property
    def active(self) -> bool:
        """Still holding a timer or the log listener (False once ended or cancelled: nothing leaks)."""
        return self._unlisten is not None or any(
            call is not None for call in (self._deadline, self._keep_alive, self._delivery))

    def start(self, io: Any) -> None:
        """The head and the opening envelopes are on their way: from now on, events and timers."""
        self.io = io
        self._unlisten = self.stream.log.listen(self._on_event)
        self._deadline = io.call_later(self.stream.timeout_seconds, self._expire)
        self._keep_alive = io.call_later(self.stream.keep_alive_seconds, self._send_keep_alive)
        self._event("open", timeout_s=self.stream.timeout_seconds,
                    subscriptions=len(self.stream.subscriptions))

    def _on_event(self, event: Event) -> None:
        if self._delivery is None and self.stream.wants(event):
            self._delivery = self.io.call_later(0, self._deliver)

    def _deliver(self) -> None:
        self._delivery = None
        envelope = self.stream.notifications()
        if envelope is None:
            return
        self.notifications += 1
        self._send(envelope)
        if self._keep_alive is not None:   # the keep-alive counts from the last envelope sent
            self._keep_alive.reset(self.stream.keep_alive_seconds)
        self._event("notify")

    def _send_keep_alive(self) -> None:
        self.keep_alives += 1
        self._keep_alive = self.io.call_later(self.stream.keep_alive_seconds, self._send_keep_alive)
        self._send(self.stream.status("OK"))

    def _expire(self) -> None:
        self._deadline = None
        self._stop()
        for envelope in self.stream.closing():
            self._send(envelope)
        self._event("close", reason="ConnectionTimeout elapsed")
        self.io.end()

    def _send(self, envelope: bytes) -> None:
        ews_check.check_envelope(envelope, "EWS GetStreamingEvents", 200)   # the test suite's schema check
        self.io.write(envelope)

    def connection_lost(self, reason: str) -> None:
        """The client left before the timeout: forget the timers and the listener."""
        self._stop()
        self._event("close", reason=reason or "connection lost")

    def _stop(self) -> None:
        for name in ("_deadline", "_keep_alive", "_delivery"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None

    def _event(self, state: str, **extra: Any) -> None:
        self._record("ews_stream", conn=self.conn_id, mailbox=self.mailbox, state=state,
                     notifications=self.notifications, keep_alives=self.keep_alives, **extra)
