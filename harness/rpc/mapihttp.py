"""MAPI over HTTP ([MS-OXCMAPIHTTP]), sans-IO: the plumbing both endpoints share (MapiHttpEndpoint), and the EMSMDB
endpoint (/mapi/emsmdb/) over the same EMSMDB core
(harness.rpc.emsmdb.server.Emsmdb.connect / execute) that serves EcDoConnectEx / EcDoRpcExt2 over RPC/HTTP.

Request types: Connect, Execute, Disconnect, NotificationWait, PING. The session context is the MapiContext cookie,
set on Connect; MapiSequence is set on Connect and renewed by every Execute, which must present the latest one (else
X-ResponseCode 15, Invalid Sequence). A success is a chunked 200: the PROCESSING meta-tag, then DONE with
X-ElapsedTime and X-StartTime and the binary response body (2.2.2.2, 2.2.7); a transport failure is a 200 with a
non-zero X-ResponseCode and an HTML page (2.2.3.3.3). With the org's MAPI/HTTP switch off the endpoint answers
X-ResponseCode 16 (Endpoint Disabled).

A response whose DONE is not ready yet is *held* (``MapiHttpAnswer.held``, harness.rpc.mapihttp_wait): the site
sends PROCESSING at once, then a PENDING meta-tag every X-PendingPeriod until DONE. NotificationWait is held until
one of the session's notification registrations (RopRegisterNotification) has an event, or for at most
NOTIFICATION_WAIT_MAX_MS; the ``mapi_http`` fault hook may hold any answer longer, or replace it.
"""
from __future__ import annotations

import email.utils
import random
import re
import struct
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from harness.hooks import FaultSet, Scope, hookspec
from harness.mailbox.store import MailboxStore
from harness.org import Mailbox, Org
from harness.rpc.base import RPC_C_AUTHN_LEVEL_PKT_PRIVACY, CallContext
from harness.rpc.emsmdb.idl import EC_NONE, MAX_OUT, OUTLOOK_2013_VERSION
from harness.rpc.emsmdb.notify import pending, registrations
from harness.rpc.emsmdb.server import Emsmdb, EmsmdbSession
from harness.rpc.mapihttp_wait import HeldAnswer

# X-ResponseCode values (2.2.3.3.3); 14 is reserved
SUCCESS, UNKNOWN_FAILURE, INVALID_VERB, INVALID_PATH, INVALID_HEADER, INVALID_REQUEST_TYPE = 0, 1, 2, 3, 4, 5
INVALID_CONTEXT_COOKIE, MISSING_HEADER, ANONYMOUS_NOT_ALLOWED, TOO_LARGE = 6, 7, 8, 9
CONTEXT_NOT_FOUND, NO_PRIVILEGE, INVALID_REQUEST_BODY, MISSING_COOKIE = 10, 11, 12, 13
INVALID_SEQUENCE, ENDPOINT_DISABLED, INVALID_RESPONSE, ENDPOINT_SHUTTING_DOWN = 15, 16, 17, 18
_REASONS = {UNKNOWN_FAILURE: "Unknown failure.", INVALID_VERB: "Invalid verb.", INVALID_PATH: "Invalid path.",
            INVALID_HEADER: "Invalid header.", INVALID_REQUEST_TYPE: "Invalid request type.",
            INVALID_CONTEXT_COOKIE: "Invalid context cookie.", MISSING_HEADER: "Missing header.",
            ANONYMOUS_NOT_ALLOWED: "Anonymous not allowed.", TOO_LARGE: "Request too large.",
            CONTEXT_NOT_FOUND: "Context not found.", NO_PRIVILEGE: "No privilege.",
            INVALID_REQUEST_BODY: "Invalid request body.", MISSING_COOKIE: "Missing cookie.",
            INVALID_SEQUENCE: "Invalid sequence.", ENDPOINT_DISABLED: "Endpoint disabled.",
            INVALID_RESPONSE: "Invalid response.", ENDPOINT_SHUTTING_DOWN: "Endpoint shutting down."}
ERROR_CODES = tuple(sorted(_REASONS))
CONTENT_TYPE = "application/mapi-http"
CONTEXT_COOKIE, SEQUENCE_COOKIE = "MapiContext", "MapiSequence"
PENDING_PERIOD_MS = 15000         # Exchange 2013's X-PendingPeriod (the spec's default is 30000)
NOTIFICATION_WAIT_MAX_MS = 300000 # a NotificationWait with no event is answered after 5 minutes, as EcDoAsyncWaitEx
EVENT_PENDING = 0x00000001        # NotificationWait's EventPending flag
EXPIRATION_MS = 900000            # X-ExpirationInfo: the session context lives 15 minutes without requests
REQUEST_TYPES = ("Connect", "Execute", "Disconnect", "NotificationWait", "PING")
_CLIENT_APP = re.compile(r"Outlook/(\d+)\.(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class MapiHttpAnswer:
    """What the site sends: ``chunks`` (a success, sent chunked) or ``body`` (an error page)."""
    response_code: int
    request_type: str
    headers: List[Tuple[str, str]]
    chunks: Tuple[bytes, ...] = ()
    body: bytes = b""
    content_type: str = CONTENT_TYPE
    status: int = 0                   # the EMSMDB return value (Connect/Execute/Disconnect), for the transcript
    held: Optional[HeldAnswer] = None # DONE comes later: chunks is the PROCESSING meta-tag alone
    http_status: int = 200            # 401: the site challenges again (a fault's logon expiry mid-session)


@dataclass(frozen=True)
class MapiHttpFault:
    """The ``mapi_http`` hook's answer: what happens to one request instead of (or besides) its usual answer."""
    response_code: int = 0            # answer this X-ResponseCode (its HTML page) instead
    forget_context: bool = False      # the server lost the session: X-ResponseCode 10 now and for good
    unauthorized: bool = False        # HTTP 401 with the site's challenge: the logon expired
    pending_periods: int = 0          # hold the DONE for this many PENDING meta-tags
    pending_period_ms: int = PENDING_PERIOD_MS

    def describe(self) -> str:
        if self.unauthorized:
            return "HTTP 401"
        if self.forget_context:
            return "context forgotten: X-ResponseCode 10"
        if self.response_code:
            return f"X-ResponseCode {self.response_code}"
        return f"{self.pending_periods} PENDING every {self.pending_period_ms} ms before DONE"


@hookspec(fires_in="rpc/mapihttp.py",
          means="a MAPI/HTTP request (endpoint emsmdb or nspi) answered otherwise: an X-ResponseCode, a lost "
                "context, a 401, a slow DONE")
def mapi_http_hook(endpoint: str, request_type: str, mailbox: Mailbox) -> MapiHttpFault: ...


@dataclass
class MapiSession:
    user: str                          # the mailbox that connected (lower-cased address)
    state: object                      # the core's session: an EmsmdbSession, an NspiSession
    sequence: str
    association: Dict[object, object] = field(default_factory=dict)


@dataclass(frozen=True)
class MapiRequest:
    method: str
    header: Callable[[str], Optional[str]]
    body: bytes
    mailbox: Mailbox                   # authenticated by the site
    mailbox_id: Optional[str] = None   # the ?MailboxId= of the URL


def parse_cookies(header: Optional[str]) -> Dict[str, str]:
    cookies: Dict[str, str] = {}
    for part in re.split(r"[;,]", header or ""):
        name, _, value = part.strip().partition("=")
        if name:
            cookies.setdefault(name, value)
    return cookies


def server_application(org: Org) -> str:
    major, minor, build, revision = org.version_parts
    return f"Exchange/{major}.{minor:02d}.{build:04d}.{revision:03d}"


class BadBody(ValueError):
    pass


class BodyReader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def u32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise BadBody("truncated")
        (value,) = struct.unpack_from("<L", self.data, self.pos)
        self.pos += 4
        return value

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise BadBody("truncated")
        self.pos += size
        return self.data[self.pos - size:self.pos]

    def u8(self) -> int:
        return self.take(1)[0]

    def utf16z(self) -> str:
        end = self.pos
        while True:
            if end + 2 > len(self.data):
                raise BadBody("unterminated string")
            if self.data[end:end + 2] == b"\x00\x00":
                break
            end += 2
        text = self.data[self.pos:end].decode("utf-16-le", errors="replace")
        self.pos = end + 2
        return text

    def asciiz(self) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise BadBody("unterminated string")
        text = self.data[self.pos:end].decode("latin-1")
        self.pos = end + 1
        return text


class MapiHttpEndpoint:
    """What both endpoints share: the request checks, the ``mapi_http`` faults, the session context and sequence
    cookies, the chunked PROCESSING/DONE success and the HTML error page. ``path`` scopes the cookies; ``name`` is
    the endpoint as faults name it; ``request_types`` are the endpoint's own; ``opening`` is the request type that
    creates a session (Connect, Bind). A subclass answers a request in ``_answer``."""
    path = ""
    name = ""
    request_types: Tuple[str, ...] = ()
    opening = ""

    def __init__(self, org: Org, rng: random.Random, clock: Callable[[], float], record: Callable[..., object],
                 faults: Optional[FaultSet] = None):
        self.org, self.rng, self.clock, self.record, self.faults = org, rng, clock, record, faults
        self.sessions: Dict[str, MapiSession] = {}

    def handle(self, request: MapiRequest) -> MapiHttpAnswer:
        start = self.clock()
        refused, kind = self._precheck(request)
        if refused is not None:
            return refused
        fault = self._fault(request, kind)
        if fault is not None and fault.unauthorized:
            return MapiHttpAnswer(0, kind, [], http_status=401)
        if fault is not None and fault.response_code:
            return self._error(request, fault.response_code)
        try:
            return self._slowed(request, start, self._answer(request, kind, start, fault), fault)
        except BadBody:
            return self._error(request, INVALID_REQUEST_BODY)

    def _answer(self, request: MapiRequest, kind: str, start: float, fault: Optional[MapiHttpFault]) -> MapiHttpAnswer:
        raise NotImplementedError

    def _ctx(self, request: MapiRequest, association: Dict) -> CallContext:
        # MAPI/HTTP runs over TLS only: the connection is as private as RPC at packet privacy
        return CallContext(org=self.org, mailbox=request.mailbox, auth_level=RPC_C_AUTHN_LEVEL_PKT_PRIVACY,
                           association=association, record=self.record, rng=self.rng, faults=self.faults,
                           host=request.mailbox_id)

    def _opaque(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _precheck(self, request: MapiRequest) -> Tuple[Optional[MapiHttpAnswer], str]:
        """(an error answer, or None and the request type as the endpoint spells it)."""
        request_type = request.header("x-requesttype") or ""
        if not self.org.mapi_http_enabled:
            return self._error(request, ENDPOINT_DISABLED), ""
        if request.method != "POST":
            return self._error(request, INVALID_VERB), ""
        if not request_type or not request.header("x-requestid") or not request.header("x-clientinfo"):
            return self._error(request, MISSING_HEADER), ""
        kind = next((t for t in self.request_types if t.lower() == request_type.lower()), None)
        if kind is None:
            return self._error(request, INVALID_REQUEST_TYPE), ""
        return None, kind

    def _find_session(self, request: MapiRequest, check_sequence: bool
                      ) -> Tuple[Optional[MapiHttpAnswer], str, Optional[MapiSession]]:
        """(an error answer, or None), the MapiContext and its session, for a request after the opening one."""
        cookies = parse_cookies(request.header("cookie"))
        context = cookies.get(CONTEXT_COOKIE)
        if not context:
            return self._error(request, MISSING_COOKIE), "", None
        session = self.sessions.get(context)
        if session is None:
            return self._error(request, CONTEXT_NOT_FOUND), context, None
        if session.user != request.mailbox.email.lower():
            return self._error(request, NO_PRIVILEGE), context, None
        if check_sequence and cookies.get(SEQUENCE_COOKIE) != session.sequence:
            return self._error(request, INVALID_SEQUENCE), context, None
        return None, context, session

    def _open_cookies(self, session: MapiSession) -> Tuple[str, List[Tuple[str, str]]]:
        context = self._opaque()
        self.sessions[context] = session
        return context, [("Set-Cookie", f"{CONTEXT_COOKIE}={context}; path={self.path}"),
                         ("Set-Cookie", f"{SEQUENCE_COOKIE}={session.sequence}; path={self.path}")]

    def _next_sequence(self, session: MapiSession) -> List[Tuple[str, str]]:
        session.sequence = self._opaque()
        return [("Set-Cookie", f"{SEQUENCE_COOKIE}={session.sequence}; path={self.path}")]

    def _close_cookies(self, context: str) -> List[Tuple[str, str]]:
        del self.sessions[context]
        expired = f"; expires=Thu, 01-Jan-1970 00:00:00 GMT; path={self.path}"
        return [("Set-Cookie", f"{CONTEXT_COOKIE}={expired}"), ("Set-Cookie", f"{SEQUENCE_COOKIE}={expired}")]

    def _common(self, request: MapiRequest, code: int) -> List[Tuple[str, str]]:
        return [("X-RequestType", request.header("x-requesttype") or ""),
                ("X-RequestId", request.header("x-requestid") or ""),
                ("X-ClientInfo", request.header("x-clientinfo") or ""),
                ("X-ResponseCode", str(code)), ("X-ServerApplication", server_application(self.org)),
                ("Cache-Control", "private")]

    def _tail(self, start: float, body: bytes) -> bytes:
        """The last chunk: DONE, X-ElapsedTime (until now) and X-StartTime, then the response body."""
        elapsed_ms = max(0, int((self.clock() - start) * 1000))
        return (f"DONE\r\nX-ElapsedTime: {elapsed_ms}\r\nX-StartTime: "
                f"{email.utils.formatdate(start, usegmt=True)}\r\n\r\n").encode("ascii") + body

    def _done(self, request: MapiRequest, start: float, body: bytes, headers: List[Tuple[str, str]],
              status: int = EC_NONE, held: Optional[HeldAnswer] = None) -> MapiHttpAnswer:
        """A success; ``held``: only PROCESSING now, the rest (``held.finish``) when the site sends it."""
        period = held.period_ms if held is not None else PENDING_PERIOD_MS
        common = self._common(request, SUCCESS) + [("X-PendingPeriod", str(period)),
                                                   ("X-ExpirationInfo", str(EXPIRATION_MS))]
        chunks = (b"PROCESSING\r\n",) if held is not None else (b"PROCESSING\r\n", self._tail(start, body))
        return MapiHttpAnswer(SUCCESS, request.header("x-requesttype") or "", common + headers,
                              chunks=chunks, status=status, held=held)

    def _fault(self, request: MapiRequest, kind: str) -> Optional[MapiHttpFault]:
        if self.faults is None or not self.faults.has(mapi_http_hook):
            return None
        host = (request.header("host") or "").rsplit(":", 1)[0].lower() or None
        return self.faults.first(mapi_http_hook, Scope(host=host, user=request.mailbox.email), self.name, kind,
                                 request.mailbox)

    def _forget(self, request: MapiRequest, context: str) -> MapiHttpAnswer:
        """A ``forget_context`` fault: the session goes, as in an application pool recycle (every later request
        with that MapiContext gets 10 too)."""
        del self.sessions[context]
        return self._error(request, CONTEXT_NOT_FOUND)

    def _slowed(self, request: MapiRequest, start: float, answer: MapiHttpAnswer,
                fault: Optional[MapiHttpFault]) -> MapiHttpAnswer:
        """A finished success held for the fault's PENDING periods (its DONE made when sent)."""
        if fault is None or not fault.pending_periods or answer.response_code != SUCCESS or answer.held is not None:
            return answer
        body = answer.chunks[-1].partition(b"\r\n\r\n")[2]
        held = HeldAnswer(fault.pending_period_ms, lambda: self._tail(start, body), periods=fault.pending_periods)
        common = [(k, str(held.period_ms) if k == "X-PendingPeriod" else v) for k, v in answer.headers]
        return MapiHttpAnswer(SUCCESS, answer.request_type, common, chunks=answer.chunks[:1], status=answer.status,
                              held=held)

    def _error(self, request: MapiRequest, code: int) -> MapiHttpAnswer:
        page = (f"<html><head><title>{_REASONS[code]}</title></head><body><h2>{_REASONS[code]}</h2>"
                f"<p>X-ResponseCode: {code}</p></body></html>").encode()
        return MapiHttpAnswer(code, request.header("x-requesttype") or "", self._common(request, code), body=page,
                              content_type="text/html")


class MapiHttpEmsmdb(MapiHttpEndpoint):
    """The /mapi/emsmdb/ endpoint: sessions by MapiContext, each with its EMSMDB session."""
    path = "/mapi/emsmdb"
    name = "emsmdb"
    request_types = REQUEST_TYPES
    opening = "Connect"

    def __init__(self, org: Org, store: Optional[MailboxStore], rng: random.Random, clock: Callable[[], float],
                 record: Callable[..., object], faults: Optional[FaultSet] = None):
        super().__init__(org, rng, clock, record, faults)
        self.emsmdb = Emsmdb(org, store=store, clock=clock, transport="mapi")

    def _answer(self, request: MapiRequest, kind: str, start: float, fault: Optional[MapiHttpFault]) -> MapiHttpAnswer:
        if kind == "Connect":
            return self._connect(request, start)
        refused, context, session = self._find_session(request, check_sequence=kind == "Execute")
        if refused is not None or session is None:
            return refused  # type: ignore[return-value]
        if fault is not None and fault.forget_context:
            return self._forget(request, context)
        if kind == "Execute":
            return self._execute(request, session, start)
        if kind == "Disconnect":
            BodyReader(request.body).u32()   # AuxiliaryBufferSize (the buffer is not read)
            return self._done(request, start, struct.pack("<LLL", 0, EC_NONE, 0), self._close_cookies(context))
        if kind == "NotificationWait":
            reader = BodyReader(request.body)
            reader.u32()                   # Flags
            reader.take(reader.u32())      # the auxiliary buffer
            return self._notification_wait(request, session, start)
        return self._done(request, start, b"", [])                  # PING: meta-tags only

    def _notification_wait(self, request: MapiRequest, session: MapiSession, start: float) -> MapiHttpAnswer:
        """EventPending at once when the session's registrations have an event; else held until one has, or for
        NOTIFICATION_WAIT_MAX_MS."""
        objects = session.state.objects  # type: ignore[attr-defined]

        def body() -> bytes:
            return struct.pack("<LLLL", 0, EC_NONE, EVENT_PENDING if pending(objects) else 0, 0)

        if pending(objects):
            return self._done(request, start, body(), [])
        logs = tuple({id(r.content.events): r.content.events for _, r in registrations(objects)}.values())
        held = HeldAnswer(PENDING_PERIOD_MS, lambda: self._tail(start, body()), lambda: pending(objects),
                          max_wait_ms=NOTIFICATION_WAIT_MAX_MS, watch=logs)
        return self._done(request, start, b"", [], held=held)

    def _connect(self, request: MapiRequest, start: float) -> MapiHttpAnswer:
        reader = BodyReader(request.body)
        user_dn = reader.asciiz()
        for _ in range(4):                     # Flags, DefaultCodePage, LcidSort, LcidString
            reader.u32()
        reader.take(reader.u32())              # the auxiliary buffer
        match = _CLIENT_APP.match(request.header("x-clientapplication") or "")
        version = tuple(int(part) for part in match.groups()) if match else OUTLOOK_2013_VERSION
        association: Dict = {}
        code, session, _best = self.emsmdb.connect(user_dn, version, self._ctx(request, association))  # type: ignore
        headers: List[Tuple[str, str]] = []
        if session is None:
            prefix, display = b"\x00", b"\x00\x00"
        else:
            _context, headers = self._open_cookies(
                MapiSession(request.mailbox.email.lower(), session, self._opaque(), association))
            prefix = self.emsmdb.dn_prefix().encode("latin-1") + b"\x00"
            display = session.mailbox.display_name.encode("utf-16-le") + b"\x00\x00"
        body = (struct.pack("<LLLLL", 0, code, Emsmdb.POLLS_MAX_MS, Emsmdb.RETRY_COUNT, Emsmdb.RETRY_DELAY_MS)
                + prefix + display + struct.pack("<L", 0))
        return self._done(request, start, body, headers, code)

    def _execute(self, request: MapiRequest, session: MapiSession, start: float) -> MapiHttpAnswer:
        reader = BodyReader(request.body)
        flags = reader.u32()
        rgb_in = reader.take(reader.u32())
        max_out = min(reader.u32(), MAX_OUT)
        reader.take(reader.u32())              # the auxiliary buffer
        emsmdb_session: EmsmdbSession = session.state  # type: ignore[assignment]
        code, rgb_out = self.emsmdb.execute(emsmdb_session, rgb_in, max_out, self._ctx(request, session.association))
        body = struct.pack("<LLLL", 0, code, flags, len(rgb_out)) + rgb_out + struct.pack("<L", 0)
        return self._done(request, start, body, self._next_sequence(session), code)
