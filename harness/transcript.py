"""The transcript: every exchange with a client, in order, as JSON lines flushed per event.

It is the single source of truth for "what the client did"; expectations (e.g. "never sent credentials over an
untrusted connection") are judged from it. Events are plain dicts with ``seq``, ``time`` and ``kind``.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Callable, Iterable, List, Optional

SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie", "set-cookie"}


def mask_header(name: str, value: str) -> str:
    """Keep the scheme of a credential header, hide the secret."""
    if name.lower() not in SECRET_HEADERS:
        return value
    scheme, _, secret = value.partition(" ")
    if not secret:
        return f"***({len(value)} chars)"
    return f"{scheme} ***({len(secret)} chars)"


def mask_headers(headers: Iterable[tuple]) -> List[list]:
    return [[name, mask_header(name, value)] for name, value in headers]


class Transcript:
    def __init__(self, path: Optional[str] = None, clock: Callable[[], float] = time.time, *,
                 keep_events: Optional[bool] = None):
        self.path = path
        # In memory only when there is no file (sans-IO tests); a long-running server must not grow with traffic.
        self.keep_events = path is None if keep_events is None else keep_events
        self._clock = clock
        self._file = open(path, "a", encoding="utf-8") if path else None
        self._lock = threading.Lock()
        self._seq = 0
        self.events: List[dict] = []
        self.listeners: List[Callable[[dict], None]] = []

    def record(self, kind: str, **fields) -> dict:
        with self._lock:
            self._seq += 1
            event = {"seq": self._seq, "time": round(self._clock(), 6), "kind": kind, **fields}
            if self.keep_events:
                self.events.append(event)
            if self._file:
                self._file.write(json.dumps(event, default=str, sort_keys=False) + "\n")
                self._file.flush()
        for listener in list(self.listeners):
            listener(event)
        return event

    def of_kind(self, *kinds: str) -> List[dict]:
        return [e for e in self.events if e["kind"] in kinds]

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None
