"""A MAPI/HTTP response whose DONE is not ready yet ([MS-OXCMAPIHTTP] 3.2.5.3), sans-IO: what the site needs to hold
it. The site (harness.services, with the reactor's clock) sends the PROCESSING meta-tag with the head, a PENDING
meta-tag every ``period_ms``, and the ``finish()`` chunk (DONE, its headers, the body) once ``ready()`` - asked
again whenever one of the ``watch`` event logs records an event - or after ``max_wait_ms``, or after ``periods``
PENDING tags (a held answer that is only slow)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Tuple

from harness.mailbox.events import EventLog

PENDING = b"PENDING\r\n"


@dataclass
class HeldAnswer:
    period_ms: int                         # between PENDING meta-tags (the X-PendingPeriod sent)
    finish: Callable[[], bytes]            # the last chunk, made when it is sent (X-ElapsedTime counts the wait)
    ready: Callable[[], bool] = lambda: False   # DONE may go now (NotificationWait: an event is pending)
    max_wait_ms: Optional[int] = None      # DONE regardless after this long
    periods: Optional[int] = None          # DONE after this many PENDING meta-tags
    watch: Tuple[EventLog, ...] = ()       # the logs whose new events may make it ready

    def describe(self) -> str:
        if self.periods is not None:
            return f"DONE after {self.periods} PENDING ({self.period_ms} ms apart)"
        return f"DONE on an event or after {self.max_wait_ms} ms (PENDING every {self.period_ms} ms)"
