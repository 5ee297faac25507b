"""Reading what a served mockex recorded: its transcript (JSON lines, flushed as events happen)."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterable, List

from harness import transcript
from harness.testing import Served

WAIT_SECONDS = 5.0     # how long a wait for an event lasts before the test judges what it has


class TranscriptTail:
    """The transcript events written after this object was made (reads only the new part of the file), so a test
    on a shared server sees its own events only."""

    def __init__(self, served: Served) -> None:
        self.path: str = served.endpoints["transcript"]
        self.offset = os.path.getsize(self.path)

    def events(self, *kinds: str) -> List[dict]:
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            lines = handle.read().split(b"\n")[:-1]        # the last piece may be a line still being written
        events = [json.loads(line) for line in lines if line.strip()]
        return [e for e in events if not kinds or e["kind"] in kinds]

    def wait_for(self, predicate: Callable[[dict], bool], timeout: float = WAIT_SECONDS) -> List[dict]:
        """The events matching ``predicate``, waiting up to ``timeout`` for the first."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events() if predicate(e)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.02)


def fault_fired(served: Served, name: str, **fields: Any) -> List[dict]:
    """The `fault` events of fault ``name`` whose other fields have these values, waiting briefly for the first."""
    return served.wait_for(lambda e: e["kind"] == "fault" and e["fault"] == name
                           and all(e.get(field) == value for field, value in fields.items()))


def credential_violations(events: Iterable[dict]) -> List[dict]:
    """Auth events (credentials the client sent) on plain HTTP or on a connection a verifying client could not
    trust (harness.transcript.credential_violations)."""
    return transcript.credential_violations(events)
