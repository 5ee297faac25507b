"""The transcript: every exchange with a client, in order, as JSON lines.

It is the single source of truth for "what the client did"; expectations (e.g. "never sent credentials over an
untrusted connection") are judged from it. Events are plain dicts with ``seq``, ``time`` and ``kind``.

Secrets never reach the file, by construction at this sink: credential headers are masked whatever their shape
(``mask_header``), and any free text copied from a client or a library (an h11 error quoting a header line, a
detail echoing a request) has credential header lines redacted (``redact_text``) and is capped in size. The same
redaction runs over other headers' values (a credential line h11 folded into the header before it), and a line h11
refused and quotes (header, request or chunk line) is hidden past its first word, whatever it is: a changed byte
may have made a credential header unrecognizable, and a mis-framed body makes any line a "request line".

Writes: one ``write`` system call per event, or per ``batch()`` (the HTTP edge wraps the handling of each chunk
of received bytes in one, so a request costs one call); nothing stays in user space once an event's batch ends,
so ``kill -9`` loses nothing already answered.

Size cap (``max_bytes``): before a line would take the file past it, transcript.jsonl becomes transcript.jsonl.1
(older ones shift to .2 ... .keep; the oldest beyond ``keep`` is dropped) and a fresh file starts with a
``transcript_rotated`` event. Every file holds at most ``max_bytes`` bytes, except a file whose first event line
(with the marker lines written in front of it) is longer than that on its own: that file holds that one event.

A full or failing disk never takes serving down: a failed write is counted (every event it carried), one clear
error is printed, and when writing works again a ``transcript_gap`` event says how many events were lost.
Both markers take the ``seq`` and ``time`` of the event written right after them; they are file-only (not in
``events``, not passed to listeners).
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
DEFAULT_KEEP = 3         # rotated files kept beside the current one


def _line_encoder() -> Callable[[Any], str]:
    """json.dumps(obj, default=str), cheaper: one C encoder made once and reused (json.dumps with an option, and
    JSONEncoder.encode, make a new one per call), no cycle check (events hold no cycles). JSONEncoder where the C
    accelerator is missing."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.JSONEncoder(default=str, check_circular=False).encode
    iterencode = make(None, str, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)

    def encode(obj: Any) -> str:
        return "".join(iterencode(obj, 0))
    return encode


_encode = _line_encoder()

Entry = Tuple[int, float, bytes]   # (seq, time, the event's JSON line) waiting to be written


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
    # On the hot path the same few names come again and again: a name once found not to be a credential header
    # is looked up, not stripped and lowered; short values of those names are copied as they are, unless a
    # credential line was folded into them (obs-fold: a colon, then the pattern).
    known_plain = _PLAIN_NAMES.get
    return [[name, value] if known_plain(name) and len(value) <= MAX_HEADER_VALUE
            and (":" not in value or not _quotes_credentials(value))
            else [name, _mask_and_remember(name, value)] for name, value in headers]


_PLAIN_NAMES: Dict[str, bool] = {}   # header names (exactly as sent) that are not credential headers
_MAX_PLAIN_NAMES = 512               # names come from clients: the memo stops growing there


def _mask_and_remember(name: str, value: str) -> str:
    if len(_PLAIN_NAMES) < _MAX_PLAIN_NAMES and name.strip().lower() not in SECRET_HEADERS:
        _PLAIN_NAMES[name] = True
    return mask_header(name, value)


def redact_text(text: str) -> str:
    """Free text with credential header lines masked and its length capped."""
    text = _redact_lines(text)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"...({len(text)} chars)"


def _redact_lines(text: str) -> str:
    # every match holds a colon: most fields (paths, names, ids) are ruled out without running the patterns
    if ":" not in text:
        return text
    if _quotes_credentials(text):
        text = _SECRET_TEXT.sub(lambda m: f"{m.group(1)}: ***", text)
    if "illegal " in text:
        text = _REFUSED_LINE.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)} ***{m.group(2)}"
                                           + (")" if "(" in m.group(1) else ""), text)
    return text


def _quotes_credentials(text: str) -> bool:
    """Whether ``_SECRET_TEXT`` finds a credential header line in ``text``. The pattern costs microseconds even on
    a short value (a Date header); ASCII text without the header names in any case cannot match, and is ruled out
    first (text beyond ASCII always runs it: case-insensitive matching pairs some other letters with k, i and s)."""
    if text.isascii():
        lowered = text.lower()
        if "authorization" not in lowered and "cookie" not in lowered:
            return False
    return _SECRET_TEXT.search(text) is not None


class _Batch:
    """``Transcript.batch()``: re-entrant; the outermost exit writes what was recorded inside in one call."""
    __slots__ = ("_transcript",)

    def __init__(self, transcript: "Transcript"):
        self._transcript = transcript

    def __enter__(self) -> "Transcript":
        transcript = self._transcript
        with transcript._lock:
            transcript._depth += 1
        return transcript

    def __exit__(self, *_: object) -> None:
        transcript = self._transcript
        with transcript._lock:
            transcript._depth -= 1
            if transcript._depth == 0 and transcript._pending:
                entries, transcript._pending = transcript._pending, []
                transcript._write(entries)


class Transcript:
    """Events to a JSON-lines file (nothing buffered in user space beyond a batch, so nothing answered is lost on
    ``kill -9``) and, without a file, to memory."""

    def __init__(self, path: Optional[str] = None, clock: Callable[[], float] = time.time, *,
                 keep_events: Optional[bool] = None, warn: Optional[Callable[[str], None]] = None,
                 opener: Optional[Callable[[str], int]] = None, max_bytes: Optional[int] = None,
                 keep: int = DEFAULT_KEEP):
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError("max_bytes must be positive (None: no cap)")
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.path = path
        # In memory only when there is no file (sans-IO tests); a long-running server must not grow with traffic.
        self.keep_events = path is None if keep_events is None else keep_events
        self.max_bytes, self.keep = max_bytes, keep
        self._clock = clock
        self._open = opener or _open_private
        self._fd: Optional[int] = self._open(path) if path else None
        self._size = os.fstat(self._fd).st_size if self._fd is not None else 0   # end of the last whole line
        self._limit = max_bytes            # size at which the current file rotates (pushed on after a failed try)
        self._file_last_seq: Optional[int] = None   # last event this process wrote to the current file
        self._rotated: Optional[Tuple[Optional[int], str]] = None   # a transcript_rotated marker still to write
        self._lock = threading.Lock()
        self._seq = 0
        self._depth = 0                    # open batch() blocks
        self._pending: List[Entry] = []    # lines of the open batch
        self._batch = _Batch(self)
        self.dropped = 0          # events lost to write errors since the last successful write
        self.dropped_total = 0
        self._warn = warn or (lambda text: print(text, file=sys.stderr, flush=True))
        self.events: List[dict] = []
        self.listeners: List[Callable[[dict], None]] = []

    def batch(self) -> _Batch:
        """``with transcript.batch():`` events recorded inside are written in one system call at the end of the
        outermost block (listeners and ``events`` still get each at once)."""
        return self._batch

    @property
    def last_seq(self) -> int:
        """The ``seq`` of the latest event recorded (0 before the first)."""
        return self._seq

    def record(self, kind: str, **fields: Any) -> dict:
        event: Dict[str, Any] = {"seq": 0, "time": 0.0, "kind": kind}
        event.update(fields)
        for key, value in fields.items():
            # redact_text, called only where it may change something: most fields are numbers or short
            # colon-free text
            if isinstance(value, str) and (":" in value or len(value) > MAX_TEXT):
                event[key] = redact_text(value)
        with self._lock:
            self._seq += 1
            event["seq"] = seq = self._seq
            event["time"] = when = round(self._clock() * 1e6) / 1e6   # microseconds; round(x, 6) costs 5x more
            if self.keep_events:
                self.events.append(event)
            if self.path:
                entry = (seq, when, (_encode(event) + "\n").encode("utf-8"))
                if self._depth:
                    self._pending.append(entry)
                else:
                    self._write([entry])
        if self.listeners:
            for listener in list(self.listeners):
                listener(event)
        return event

    # ---- the file (called with the lock held) -----------------------------------------------------------------
    def _write(self, entries: List[Entry]) -> None:
        """Append the lines in one write call, or one per file when the size cap rotates the file in between."""
        start, count = 0, len(entries)
        while start < count:
            try:
                self._reopen_after_failure()
            except OSError as exc:
                self._lost(exc, count - start)
                return
            seq, when, line = entries[start]
            head = self._markers(seq, when)
            if self._limit is not None and self._size and self._size + len(head) + len(line) > self._limit:
                self._rotate()
                head = self._markers(seq, when)
            size = self._size + len(head) + len(line)
            end = start + 1
            while end < count and (self._limit is None or size + len(entries[end][2]) <= self._limit):
                size += len(entries[end][2])
                end += 1
            data = head + b"".join(entry[2] for entry in entries[start:end]) if end - start > 1 else head + line
            try:
                if self._fd is None:   # a rotation could not open the fresh file
                    self._reopen_after_failure()
                written = os.write(self._fd, data)  # type: ignore[arg-type]
                if written != len(data):
                    raise OSError(errno.ENOSPC, "short write")
            except OSError as exc:
                self._lost(exc, count - start)   # the rest of the batch too: the next write reopens the file
                return
            self._size = size
            self._file_last_seq = entries[end - 1][0]
            self._rotated = None
            if self.dropped:
                self._warn(f"mockex: transcript writes work again; {self.dropped} event(s) were lost")
                self.dropped = 0
            start = end

    def _markers(self, seq: int, when: float) -> bytes:
        """The file-only lines due in front of the next event: a fresh file's transcript_rotated, a
        transcript_gap after lost writes."""
        head = ""
        if self._rotated is not None:
            continues_from, previous = self._rotated
            head += _encode({"seq": seq, "time": when, "kind": "transcript_rotated", "continues_from": continues_from,
                             "previous": previous}) + "\n"
        if self.dropped:
            head += _encode({"seq": seq, "time": when, "kind": "transcript_gap", "lost": self.dropped}) + "\n"
        return head.encode("utf-8")

    def _reopen_after_failure(self) -> None:
        """After a failed write: reopen, and cut off any half-written line."""
        if self._fd is None and self.path:
            self._fd = self._open(self.path)
            os.ftruncate(self._fd, self._size)

    def _rotate(self) -> None:
        """transcript.jsonl -> .1 (-> .2 ... -> .keep, the oldest dropped) and a fresh file. A failed rename leaves
        the current file growing, tried again one cap later."""
        path = self.path
        assert path is not None and self.max_bytes is not None
        try:
            for index in range(self.keep - 1, 0, -1):
                try:
                    os.replace(f"{path}.{index}", f"{path}.{index + 1}")
                except FileNotFoundError:
                    pass
            os.replace(path, path + ".1")
        except OSError as exc:
            self._limit = self._size + self.max_bytes
            self._warn(f"mockex: cannot rotate the transcript {path}: {exc.strerror or exc}; it goes on growing")
            return
        self._close_fd()
        self._rotated = (self._file_last_seq, os.path.basename(path) + ".1")
        self._size, self._limit, self._file_last_seq = 0, self.max_bytes, None
        try:
            self._fd = self._open(path)
        except OSError:
            pass   # the write that follows tries again, and counts its events lost if it cannot

    def _lost(self, exc: OSError, count: int) -> None:
        """Count the events and say so once per outage; the next write reopens the file."""
        if not self.dropped:
            self._warn(f"mockex: cannot write the transcript {self.path}: {exc.strerror or exc}; serving goes on, "
                       "lost events are counted")
        self.dropped += count
        self.dropped_total += count
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
        with self._lock:
            if self._pending and self.path:   # closed inside a batch: its events still go out
                entries, self._pending = self._pending, []
                self._write(entries)
            self._close_fd()
            self.path = None


def _open_private(path: str) -> int:
    """Append to ``path``, created 0600: it names users and what they sent."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def read_events(path: str, offset: int = 0) -> List[dict]:
    """The whole events of a transcript file from byte ``offset`` on (a last line still being written is left out)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        lines = handle.read().split(b"\n")[:-1]
    return [json.loads(line) for line in lines if line.strip()]


def trusted_handshakes(events: Iterable[dict], names: Optional[Iterable[str]] = None) -> Dict[Any, bool]:
    """conn -> whether a client verifying against the org's CA could trust that TLS connection: the handshake
    finished, the certificate served was of the valid shape (not expired, self-signed, ...) and, when ``names``
    (the names the valid certificate carries) is given, the client asked (SNI) for one of them or for none (an IP
    address, which the certificate also carries)."""
    allowed = {name.lower() for name in names} if names is not None else None
    trusted = {}
    for event in events:
        if event["kind"] == "tls":
            shape_ok = str(event.get("profile") or "valid certificate").startswith("valid certificate")
            sni = event.get("sni")
            name_ok = allowed is None or not sni or sni.lower() in allowed
            trusted[event["conn"]] = bool(event["ok"]) and shape_ok and name_ok
    return trusted


def credential_violations(events: Iterable[dict], names: Optional[Iterable[str]] = None,
                          allowed: str = "trusted-tls") -> List[dict]:
    """Auth events (a client sent credentials) the client should not have sent: with ``allowed`` "trusted-tls",
    those on plain HTTP or on a TLS connection it could not have trusted (``trusted_handshakes``); with "never",
    every one; with "any", none."""
    events = list(events)
    if allowed == "any":
        return []
    auth = [e for e in events if e["kind"] == "auth"]
    if allowed == "never":
        return auth
    trusted = trusted_handshakes(events, names)
    return [e for e in auth if not (e.get("tls") and trusted.get(e["conn"]))]
