"""The transcript: every exchange with a client, in order, as JSON lines written per event.

It is the single source of truth for "what the client did"; expectations (e.g. "never sent credentials over an
untrusted connection") are judged from it. Events are plain dicts with ``seq``, ``time`` and ``kind``.

Secrets never reach the file, by construction at this sink: credential headers are masked whatever their shape
(``mask_header``), and any free text copied from a client or a library (an h11 error quoting a header line, a
detail echoing a request) has credential header lines redacted (``redact_text``) and is capped in size. The same
redaction runs over other headers' values (a credential line h11 folded into the header before it), and a line h11
refused and quotes (header, request or chunk line) is hidden past its first word, whatever it is: a changed byte
may have made a credential header unrecognizable, and a mis-framed body makes any line a "request line".

A full or failing disk never takes serving down: a failed write is counted, one clear error is printed, and when
writing works again a ``transcript_gap`` event says how many events were lost.
"""
from __future__ import annotations

import errno
import json
import os
import re
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

SECRET_HEADERS = {"authorization", "proxy-authorization", "cookie", "set-cookie"}
# Schemes whose name may be kept in front of a masked token; any other first word may itself be the secret.
KNOWN_SCHEMES = {"basic", "ntlm", "negotiate", "kerberos", "bearer", "digest"}
# A credential header line quoted anywhere in free text (its name, a colon; whitespace between, also as a repr's
# escapes), and the rest of that line.
_SECRET_TEXT = re.compile(r"(?i)((?:proxy-)?authorization|(?:set-)?cookie)(?:\s|\\[trn])*:[^\r\n]*")
# A line h11 refused, quoted in its error: a header line whose name is no longer sure to be read right (a byte of it
# changed, a missing colon), or a request or chunk line that may be any of the client's bytes (a body longer or
# shorter than declared puts the next request's lines there). Past its first word it is hidden, whatever it is.
_REFUSED_LINE = re.compile(r"(illegal (?:header line|request line|chunk header): (?:bytearray\()?b?)(['\"])"
                           r"([-!#$%&*+.^_`|~0-9a-zA-Z]*)[^\r\n]*")
MAX_TEXT = 2048          # longest free-text value copied into an event (an echoed 1 MB e-mail address is cut)
MAX_HEADER_VALUE = 1024  # longest header value copied


def mask_header(name: str, value: str) -> str:
    """Keep a known scheme of a credential header, hide everything else; cap other values."""
    if name.strip().lower() not in SECRET_HEADERS:
        value = _redact_lines(value)    # a credential header line folded into this one (obs-fold) is hidden too
        return value if len(value) <= MAX_HEADER_VALUE else value[:MAX_HEADER_VALUE] + f"...({len(value)} chars)"
    parts = value.split(None, 1)
    if len(parts) == 2 and parts[0].lower() in KNOWN_SCHEMES:
        return f"{parts[0]} ***({len(parts[1])} chars)"
    return f"***({len(value)} chars)"


def mask_headers(headers: Iterable[Tuple[str, str]]) -> List[List[str]]:
    return [[name, mask_header(name, value)] for name, value in headers]


def redact_text(text: str) -> str:
    """Free text with credential header lines masked and its length capped."""
    text = _redact_lines(text)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"...({len(text)} chars)"


def _redact_lines(text: str) -> str:
    # every match holds a colon: most fields (paths, names, ids) are ruled out without running the patterns
    if ":" not in text:
        return text
    if _SECRET_TEXT.search(text):
        text = _SECRET_TEXT.sub(lambda m: f"{m.group(1)}: ***", text)
    if "illegal " in text:
        text = _REFUSED_LINE.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)} ***{m.group(2)}"
                                           + (")" if "(" in m.group(1) else ""), text)
    return text


def _safe(value: Any) -> Any:
    return redact_text(value) if isinstance(value, str) else value


class Transcript:
    """Events to a JSON-lines file (one ``write`` system call per event, nothing buffered in user space, so nothing
    is lost on ``kill -9``) and, without a file, to memory."""

    def __init__(self, path: Optional[str] = None, clock: Callable[[], float] = time.time, *,
                 keep_events: Optional[bool] = None, warn: Optional[Callable[[str], None]] = None,
                 opener: Optional[Callable[[str], int]] = None):
        self.path = path
        # In memory only when there is no file (sans-IO tests); a long-running server must not grow with traffic.
        self.keep_events = path is None if keep_events is None else keep_events
        self._clock = clock
        self._open = opener or _open_private
        self._fd: Optional[int] = self._open(path) if path else None
        self._size = os.fstat(self._fd).st_size if self._fd is not None else 0   # end of the last whole line
        self._lock = threading.Lock()
        self._seq = 0
        self.dropped = 0          # events lost to write errors since the last successful write
        self.dropped_total = 0
        self._warn = warn or (lambda text: print(text, file=sys.stderr, flush=True))
        self.events: List[dict] = []
        self.listeners: List[Callable[[dict], None]] = []

    def record(self, kind: str, **fields: Any) -> dict:
        with self._lock:
            self._seq += 1
            event: Dict[str, Any] = {"seq": self._seq, "time": round(self._clock(), 6), "kind": kind,
                                     **{key: _safe(value) for key, value in fields.items()}}
            if self.keep_events:
                self.events.append(event)
            if self.path:
                self._write(event)
        for listener in list(self.listeners):
            listener(event)
        return event

    def _write(self, event: dict) -> None:
        line = json.dumps(event, default=str) + "\n"
        if self.dropped:
            gap = {"seq": event["seq"], "time": event["time"], "kind": "transcript_gap", "lost": self.dropped}
            line = json.dumps(gap) + "\n" + line
        data = line.encode("utf-8")
        try:
            if self._fd is None:   # after a failure: reopen, and cut off any half-written line
                self._fd = self._open(self.path)  # type: ignore[arg-type]
                os.ftruncate(self._fd, self._size)
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, "short write")
        except OSError as exc:
            self._lost(exc)
            return
        self._size += len(data)
        if self.dropped:
            self._warn(f"mockex: transcript writes work again; {self.dropped} event(s) were lost")
            self.dropped = 0

    def _lost(self, exc: OSError) -> None:
        """Count the event and say so once per outage; the next write reopens the file."""
        if not self.dropped:
            self._warn(f"mockex: cannot write the transcript {self.path}: {exc.strerror or exc}; serving goes on, "
                       "lost events are counted")
        self.dropped += 1
        self.dropped_total += 1
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def of_kind(self, *kinds: str) -> List[dict]:
        return [e for e in self.events if e["kind"] in kinds]

    def close(self) -> None:
        self._close_fd()
        self.path = None


def _open_private(path: str) -> int:
    """Append to ``path``, created 0600: it names users and what they sent."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
