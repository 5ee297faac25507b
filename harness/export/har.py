"""The HTTP exchanges of a transcript as an HTTP Archive (HAR 1.2), for browser dev tools and HAR viewers.

One entry per ``http`` event. What the event lacks comes from the other events of its connection: the scheme,
server address and port from ``connect``, TLS version and SNI from ``tls``, and the ``auth`` events recorded since
the connection's previous request (they precede the ``http`` event of the request they judged). The transcript keeps
no bodies, so no entry has ``content.text``; credential headers stay masked as the transcript recorded them.

Rotated transcripts (``transcript.jsonl.N``, the highest N oldest) are read before ``transcript.jsonl``. A state
directory used by several runs holds several ``start`` events; connection ids restart with each run, so entries of
the second and later runs name their connection ``RUN.CONN``.
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import parse_qsl

from harness import __version__
from harness.protocols.http import REASONS

TRANSCRIPT = "transcript.jsonl"
DEFAULT_PORTS = {"https": 443, "http": 80}
HTTP_VERSION = "HTTP/1.1"


class ExportError(Exception):
    """The state directory holds no transcript that can be read."""


def transcript_files(state_dir: str) -> List[str]:
    """The transcript files of ``state_dir``, oldest first: rotated ``transcript.jsonl.N`` by falling N, then the
    current file."""
    try:
        names = os.listdir(state_dir)
    except OSError as exc:
        raise ExportError(f"cannot read state directory {state_dir}: {exc.strerror or exc}") from exc
    rotated = sorted((int(m.group(1)), name) for name in names
                     if (m := re.fullmatch(re.escape(TRANSCRIPT) + r"\.(\d+)", name)))
    files = [name for _, name in reversed(rotated)] + ([TRANSCRIPT] if TRANSCRIPT in names else [])
    if not files:
        raise ExportError(f"no {TRANSCRIPT} in {state_dir}")
    return [os.path.join(state_dir, name) for name in files]


def read_events(paths: List[str]) -> Iterator[dict]:
    """Every whole event of the files in order; a line that is not JSON (one cut by a crash or still being
    written) is skipped."""
    for path in paths:
        try:
            handle = open(path, "rb")
        except OSError as exc:
            raise ExportError(f"cannot read {path}: {exc.strerror or exc}") from exc
        with handle:
            for line in handle:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    yield event


@dataclass
class Connection:
    """What the transcript said about one connection before its requests."""
    name: str
    listener: Optional[str] = None      # "https" or "http"
    local: Optional[Tuple[str, int]] = None
    tls: Optional[dict] = None
    auth: List[dict] = field(default_factory=list)   # auth events not yet tied to a request


def split_address(text: Any) -> Optional[Tuple[str, int]]:
    """"127.0.0.1:443" or "::1:443" -> (host, port)."""
    if not isinstance(text, str) or ":" not in text:
        return None
    host, _, port = text.rpartition(":")
    return (host.strip("[]"), int(port)) if port.isdigit() else None


def iso_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def header_value(headers: List[Dict[str, str]], name: str) -> str:
    return next((h["value"] for h in headers if h["name"].lower() == name.lower()), "")


def url_of(event: dict, conn: Connection) -> str:
    scheme = conn.listener or ("https" if event.get("sni") else "http")
    host = event.get("host") or (conn.local[0] if conn.local else "") or "localhost"
    if ":" in host:   # an IPv6 literal
        host = f"[{host}]"
    port = f":{conn.local[1]}" if conn.local and conn.local[1] != DEFAULT_PORTS.get(scheme) else ""
    path = event.get("path") or "/"
    if not path.startswith("/"):   # an absolute-form or authority-form target: keep as sent
        return path if "://" in path else f"{scheme}://{path}"
    return f"{scheme}://{host}{port}{path}"


def comment_of(conn: Connection, auth: List[dict]) -> str:
    parts = []
    if conn.tls is not None:
        tls = conn.tls
        parts.append(f"TLS {tls.get('version') or '?'}, SNI {tls.get('sni') or '(none)'}"
                     + ("" if tls.get("ok", True) else f", handshake failed: {tls.get('reason', '')}"))
    elif conn.listener == "http":
        parts.append("plain HTTP (no TLS)")
    for event in auth:
        user = event.get("user") or "(no user yet)"
        parts.append(f"auth {event.get('scheme', '?')} user {user}: {event.get('result', '?')}"
                     + (f" ({event['reason']})" if event.get("reason") else ""))
    parts.append("bodies are not kept in the transcript: content has size and type only")
    return "; ".join(parts)


def entry_of(event: dict, conn: Connection) -> dict:
    ms = float(event.get("ms") or 0)
    request_headers = [{"name": str(n), "value": str(v)} for n, v in event.get("request_headers") or []]
    response_headers = [{"name": str(n), "value": str(v)} for n, v in event.get("response_headers") or []]
    url = url_of(event, conn)
    query = url.split("?", 1)[1].split("#", 1)[0] if "?" in url else ""
    status = int(event.get("status") or 0)
    auth, conn.auth = conn.auth, []
    entry: Dict[str, Any] = {
        "startedDateTime": iso_time(float(event.get("time", 0)) - ms / 1000),
        "time": ms,
        "request": {
            "method": str(event.get("method") or ""), "url": url, "httpVersion": HTTP_VERSION,
            "cookies": [],   # Cookie headers are masked in the transcript: no name/value pairs to list
            "headers": request_headers,
            "queryString": [{"name": n, "value": v} for n, v in parse_qsl(query, keep_blank_values=True)],
            "headersSize": -1, "bodySize": int(event.get("request_bytes") or 0),
        },
        "response": {
            "status": status, "statusText": REASONS.get(status, ""), "httpVersion": HTTP_VERSION,
            "cookies": [], "headers": response_headers,
            "content": {"size": int(event.get("response_bytes") or 0),
                        "mimeType": header_value(response_headers, "Content-Type")},
            "redirectURL": header_value(response_headers, "Location"),
            "headersSize": -1, "bodySize": int(event.get("response_bytes") or 0),
        },
        "cache": {},
        "timings": {"send": 0, "wait": ms, "receive": 0},
        "connection": conn.name,
        "comment": comment_of(conn, auth),
    }
    if conn.local:
        entry["serverIPAddress"] = conn.local[0]
    return entry


def har_of(events: Iterator[dict]) -> dict:
    """The HAR 1.2 document of the ``http`` events among ``events`` (in transcript order)."""
    entries: List[dict] = []
    run = 0
    conns: Dict[Any, Connection] = {}

    def connection(event: dict) -> Connection:
        key = event.get("conn")
        if key not in conns:
            conns[key] = Connection(name=str(key) if run <= 1 else f"{run}.{key}")
        return conns[key]

    for event in events:
        kind = event.get("kind")
        if kind == "start":
            run += 1
            conns.clear()
        elif "conn" not in event:
            continue
        elif kind == "connect":
            conns.pop(event.get("conn"), None)
            conn = connection(event)
            conn.listener, conn.local = event.get("listener"), split_address(event.get("local"))
        elif kind == "tls":
            connection(event).tls = event
        elif kind == "auth":
            connection(event).auth.append(event)
        elif kind == "http":
            entries.append(entry_of(event, connection(event)))
    return {"log": {"version": "1.2", "creator": {"name": "mockex", "version": __version__},
                    "entries": entries}}


def export_har(state_dir: str, out_path: str) -> int:
    """Write the HAR of ``state_dir``'s transcripts to ``out_path`` (``-`` for stdout); the number of entries."""
    har = har_of(read_events(transcript_files(state_dir)))
    text = json.dumps(har, indent=2, ensure_ascii=False) + "\n"
    if out_path == "-":
        sys.stdout.write(text)
    else:
        try:
            with open(out_path, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            raise ExportError(f"cannot write {out_path}: {exc.strerror or exc}") from exc
    return len(har["log"]["entries"])
