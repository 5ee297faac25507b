"""One HTTP/1.1 server connection as an Exchange 2013 CAS (IIS 8.5 on http.sys) runs it, sans-IO.

h11 parses and frames the messages (the response bytes: harness.protocols.httpencode); this module is the connection
around it: the state it is in (an explicit table, in the style of h11's ``_state.py``), keep-alive and pipelining,
``100 Continue``, the connection limits, the error answers (through h11's own events), and the hand-off of an RPC
over HTTP request to a tunnel.

It is driven by calls - ``start``, ``receive(bytes)``, ``timer_expired(name)``, the app's answers (``respond``,
``tunnel_opened``), ``stream_data`` / ``stream_end`` (an open-ended answer's later chunks),
``output_pending(unsent, stalled)`` (the output backlog, see below), ``close``, ``abort``, ``connection_lost`` - and
answers each with a list of actions that the I/O layer (harness.services.web) carries out in order:

  Send(data)                        write these bytes; one whole response is one Send (write faults judge writes)
  Close(reason, limit)              close once the output so far has gone out (FIN); ``limit`` names the rule
  Abort(reason, limit)              reset the connection now (RST); ``limit`` as for Close
  StartTimer(name, seconds)         call ``timer_expired(name)`` after that long (re-arming a pending timer of
                                    that name); a timer whose state was left is not cancelled, its tick is ignored
  CancelTimer(name)                 forget that timer (the connection is ending)
  Deliver(request)                  the app answers a whole request: give its HttpResponse to ``respond``
  RefuseTooLarge(request, size)     the app words a 413: give it to ``respond``
  RefuseMalformed(status, message)  the app words a 400 (431 for an oversized head): give it to ``respond``; it
                                    goes out when the wire still allows a response (not mid-tunnel)
  HandOffTunnel(request)            RPC_IN_DATA / RPC_OUT_DATA: the app opens a channel (then ``tunnel_opened``)
                                    or refuses it with a response (``respond``)
  TunnelBytes(data)                 body bytes, and past the declared body every byte, for the open channel
  PauseReading() / ResumeReading()  stop / go on reading the socket (backpressure)

An answer with a ``stream`` is open-ended: ``respond`` sends its head and first chunks and the connection stays in
SENDING (pipelined requests wait in h11's buffer) until ``stream_end``; ``stream_data`` frames each later chunk.
Backpressure and the send timer work as for any output.

An action that needs the app's answer (Deliver, RefuseTooLarge, RefuseMalformed, HandOffTunnel) is always the last
of its list: the connection parses nothing further until it is answered, which keeps pipelined answers in order
(later bytes wait in h11's buffer). A tunnelled connection's own output is written by its channel, not here.

Backpressure: the edge reports its output backlog - the bytes it holds unsent, and whether the transport is
*stalled* (its own buffer full: the client is not reading). Over ``output_high_water`` held bytes the connection
delivers no further pipelined request and stops reading (PauseReading; not in a tunnel, whose channel reads on),
until the backlog is down to ``output_low_water``. While the output is stalled or over the high water the state's
own timer (idle, header-wait) stops counting; the send timer counts instead, from the stall: a client that takes
nothing for ``send_timeout`` is reset (http.sys drops a client that does not receive, IIS's connectionTimeout).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set, Tuple, cast
from urllib.parse import unquote

import h11

from harness.protocols.http import HttpRequest, HttpResponse
from harness.protocols.httpactions import (  # noqa: F401  (re-exported: the core's vocabulary)
    HEADER_TIMER,
    IDLE_TIMER,
    IIS_CONNECTION_TIMEOUT,
    MAX_BODY,
    MAX_HEADER_BYTES,
    OUTPUT_HIGH_WATER,
    OUTPUT_LOW_WATER,
    SEND_TIMER,
    TUNNEL_METHODS,
    Abort,
    Action,
    CancelTimer,
    Close,
    ConnectionLimits,
    Deliver,
    HandOffTunnel,
    PauseReading,
    RefuseMalformed,
    RefuseTooLarge,
    ResumeReading,
    Send,
    StartTimer,
    TunnelBytes,
)
from harness.protocols.httpencode import encode


# ---- the state table ----------------------------------------------------------------------------------------------
class ConnState(enum.Enum):
    __hash__ = object.__hash__   # members are singletons: identity hashing spares Enum's Python-level __hash__
    IDLE = "idle"                          # between requests: nothing of the next one has arrived
    READING_HEADERS = "reading headers"    # part of a request head is here
    READING_BODY = "reading body"          # the head is whole; also: draining the body of a request answered early
    SENDING = "sending"                    # the app has the request; its answer goes out next
    TUNNELLED = "tunnelled"                # the body is a channel's byte stream, and the channel writes
    CLOSING = "closing"                    # nothing more is read; the close follows the output
    CLOSED = "closed"                      # the transport is gone


class ConnEvent(enum.Enum):
    __hash__ = object.__hash__
    REQUEST_STARTED = "request started"      # bytes of a request arrived
    HEAD_RECEIVED = "head received"          # an ordinary request's head is whole
    REQUEST_RECEIVED = "request received"    # and its body too
    TUNNEL_REQUESTED = "tunnel requested"    # the head of RPC_IN_DATA / RPC_OUT_DATA
    TOO_LARGE = "too large"                  # a body over its limit
    MALFORMED = "malformed"                  # h11 rejected the input
    ANSWERED = "answered"                    # the answer went out; the request was fully read; keep-alive
    ANSWERED_EARLY = "answered early"        # the answer went out before the request body ended (keep-alive)
    BODY_DRAINED = "body drained"            # that body ended
    ANSWERED_CLOSE = "answered, closing"     # the answer went out and ends the connection
    TUNNEL_OPENED = "tunnel opened"
    TIMED_OUT = "timed out"
    CLOSE_REQUESTED = "close requested"      # the app, a channel or the edge ends the connection (also abort)
    CONNECTION_LOST = "connection lost"


IDLE, READING_HEADERS, READING_BODY, SENDING, TUNNELLED, CLOSING, CLOSED = ConnState
(REQUEST_STARTED, HEAD_RECEIVED, REQUEST_RECEIVED, TUNNEL_REQUESTED, TOO_LARGE, MALFORMED, ANSWERED, ANSWERED_EARLY,
 BODY_DRAINED, ANSWERED_CLOSE, TUNNEL_OPENED, TIMED_OUT, CLOSE_REQUESTED, CONNECTION_LOST) = ConnEvent
_ALWAYS = {CLOSE_REQUESTED: CLOSING, CONNECTION_LOST: CLOSED}
TRANSITIONS: Dict[ConnState, Dict[ConnEvent, ConnState]] = {
    IDLE: {REQUEST_STARTED: READING_HEADERS, TIMED_OUT: CLOSING, **_ALWAYS},
    READING_HEADERS: {HEAD_RECEIVED: READING_BODY, TUNNEL_REQUESTED: SENDING, TOO_LARGE: SENDING,
                      MALFORMED: SENDING, TIMED_OUT: CLOSING, **_ALWAYS},
    READING_BODY: {REQUEST_RECEIVED: SENDING, BODY_DRAINED: IDLE, TOO_LARGE: SENDING, MALFORMED: SENDING,
                   **_ALWAYS},
    SENDING: {ANSWERED: IDLE, ANSWERED_EARLY: READING_BODY, ANSWERED_CLOSE: CLOSING, TUNNEL_OPENED: TUNNELLED,
              **_ALWAYS},
    TUNNELLED: {MALFORMED: SENDING, **_ALWAYS},
    CLOSING: dict(_ALWAYS),
    CLOSED: {CLOSE_REQUESTED: CLOSED, CONNECTION_LOST: CLOSED},
}
# The timer that counts in a state. It is started (or re-armed) on entering the state and simply stops counting when
# the state is left: its tick is then ignored, and the next StartTimer of that name re-arms the same timer. That
# spares the reactor a cancel and a new call per keep-alive request; CLOSING and CLOSED cancel what is left.
STATE_TIMERS = {IDLE: IDLE_TIMER, READING_HEADERS: HEADER_TIMER}
_PARSING = (READING_HEADERS, READING_BODY, TUNNELLED)
_PAUSABLE = (IDLE, READING_HEADERS, READING_BODY, SENDING)   # where the backlog stops reading


class ConnectionStateError(RuntimeError):
    """An event the table does not allow in the current state: a bug in the caller or in this core."""


@dataclass(frozen=True)
class _Answer:
    """What the connection knows about the answer it waits for."""
    head_only: bool = False     # a HEAD request: Content-Length as for GET, no body
    close: bool = False         # the connection ends after it
    silent: bool = False        # nothing can be sent any more (mid-tunnel, mid-response): only close


_ANSWER, _ANSWER_HEAD = _Answer(), _Answer(head_only=True)   # the common answers: made once


class HttpConnection:
    """The server side of one HTTP connection; see the module docstring for the calls and the actions."""

    def __init__(self, conn: Any = None, *, tls: bool = True, limits: Optional[ConnectionLimits] = None) -> None:
        self.conn = conn                    # stamped on each HttpRequest (the edge's ConnectionInfo)
        self.scheme = "https" if tls else "http"
        self.limits = limits = limits if limits is not None else ConnectionLimits()
        self.state = IDLE
        self._moves = TRANSITIONS[IDLE]        # the events allowed in this state
        self.last_host: Optional[str] = None   # the Host of the latest request that named one
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self._scheduled: Set[str] = set()      # timers the I/O layer has pending (started, not cancelled or fired)
        self._counting: Optional[str] = None   # the one that counts for the current state, if started
        self._request: Optional[HttpRequest] = None   # the ordinary request whose body is being read
        self._method: Optional[str] = None            # the method of the request in this cycle
        self._body: List[bytes] = []
        self._body_size = 0
        self._answer: Optional[_Answer] = None
        self._stalled = False          # the edge's transport takes no output (the client does not read)
        self._over = False             # held output went over the high water and is not down to the low water yet
        self._reading_paused = False   # a PauseReading is in force
        self._send_counting = False    # the send timer counts (from the stall)
        self._stream_close: Optional[bool] = None   # an open-ended answer is going out: close after it?

    # ---- calls from the I/O layer ---------------------------------------------------------------------------
    def start(self) -> List[Action]:
        """The connection was accepted: the idle clock runs until the first request byte."""
        return self._start_timer(IDLE_TIMER, self.limits.idle_timeout)

    def receive(self, data: bytes) -> List[Action]:
        state = self.state
        if state is TUNNELLED and self._h11.their_state is h11.DONE:
            # Past the declared body (the OUT channel's 76-byte CONN/A1) the connection belongs to the channel:
            # it judges the bytes, instead of h11 buffering them without limit.
            return [TunnelBytes(data)] if data else []
        if state is CLOSING or state is CLOSED or not data:
            return []
        self._h11.receive_data(data)
        if state is SENDING:
            return []   # the app still has a request: this waits in h11's buffer (pipelining)
        actions = self._transition(REQUEST_STARTED) if state is IDLE else []
        actions += self._pump()
        return actions

    def respond(self, response: HttpResponse) -> List[Action]:
        """The app's answer to the Deliver, RefuseTooLarge, RefuseMalformed or (refused) HandOffTunnel."""
        if self.state is CLOSING or self.state is CLOSED:
            return []   # the connection ended while the app was answering
        answer = self._awaited()
        if answer.silent:
            return self._transition(ANSWERED_CLOSE) + [Close("protocol error")]
        close = response.close or answer.close
        open_ended = response.stream is not None and not answer.head_only
        try:
            data = encode(self._h11, response, close, answer.head_only, open_ended)
        except (h11.LocalProtocolError, UnicodeEncodeError) as exc:
            # the app's response cannot be framed (a header with CR/LF, or beyond Latin-1): say so, send nothing
            return self.abort(f"unsendable response: {exc}", limit="unsendable_response")
        if open_ended:
            self._stream_close = close
            return [Send(data)]
        return self._answered([Send(data)], close)

    @property
    def streaming(self) -> bool:
        """An open-ended answer is going out (``stream_data`` and ``stream_end`` apply)."""
        return self._stream_close is not None and self.state is SENDING

    def stream_data(self, data: bytes) -> List[Action]:
        """One more chunk of the open-ended answer (nothing once the connection ended)."""
        if not self.streaming or not data:
            return []
        return [Send(self._h11.send(h11.Data(data=data)))]

    def stream_end(self) -> List[Action]:
        """The open-ended answer is complete: its last chunk, then on as after any answer."""
        if not self.streaming:
            return []
        close, self._stream_close = bool(self._stream_close), None
        return self._answered([Send(self._h11.send(h11.EndOfMessage()))], close)

    def _answered(self, actions: List[Action], close: bool) -> List[Action]:
        """The answer went out: close, or on to the next request (which may be buffered already)."""
        if close or self._h11.our_state is h11.MUST_CLOSE:
            return actions + self._transition(ANSWERED_CLOSE) + [Close("answered")]
        if self._h11.their_state is h11.DONE:
            actions += self._next_cycle(ANSWERED)
        else:   # an empty-bodied tunnel refused before its end arrived: read that, then the next request
            actions += self._transition(ANSWERED_EARLY)
        if self.state in _PARSING:   # the next request was buffered already (pipelining)
            actions += self._pump()
        return actions

    def tunnel_opened(self) -> List[Action]:
        """The app took a HandOffTunnel: from here the body (and what follows it) is the channel's."""
        if self.state is CLOSING or self.state is CLOSED:
            return []
        self._awaited()
        actions = self._transition(TUNNEL_OPENED)
        if self._reading_paused:   # a channel reads on whatever this connection's backlog (see the module docstring)
            self._reading_paused = False
            actions.append(ResumeReading())
        return actions + self._pump()

    def timer_expired(self, name: str) -> List[Action]:
        self._scheduled.discard(name)
        if name == SEND_TIMER:
            if not self._send_counting:
                return []   # the output flowed again meanwhile
            self._send_counting = False
            return self.abort(f"client not receiving: output stalled for {self.limits.send_timeout:g} s",
                              limit="send_timeout")
        if name != self._counting:
            return []   # the state it counted for was left meanwhile
        self._counting = None
        if name == IDLE_TIMER:
            seconds, what, limit = self.limits.idle_timeout, "idle", "idle_timeout"
        else:
            seconds, what, limit = self.limits.header_wait_timeout, "request head incomplete", "header_wait_timeout"
        return self._transition(TIMED_OUT) + [Close(f"{what} for {seconds:g} s", limit=limit)]

    def close(self, reason: str = "closed by the server") -> List[Action]:
        if self.state is CLOSING or self.state is CLOSED:
            return []
        return self._transition(CLOSE_REQUESTED) + [Close(reason)]

    def abort(self, reason: str = "aborted by the server", limit: str = "") -> List[Action]:
        if self.state is CLOSED:
            return []
        return self._transition(CLOSE_REQUESTED) + [Abort(reason, limit)]

    def connection_lost(self) -> List[Action]:
        self._request, self._answer, self._body, self._stream_close = None, None, [], None
        return self._transition(CONNECTION_LOST)

    def output_pending(self, unsent: int, stalled: bool) -> List[Action]:
        """The edge's output backlog changed: ``unsent`` bytes it holds back, ``stalled`` its transport takes no
        more. Backpressure as the module docstring describes; the actions say what changes."""
        if self.state is CLOSED:
            return []
        actions: List[Action] = []
        was_over, was_waiting = self._over, self._stalled or self._over
        if stalled is not self._stalled:
            self._stalled = stalled
            self._send_counting = stalled and self.limits.send_timeout is not None
            if self._send_counting:
                self._scheduled.add(SEND_TIMER)
                actions.append(StartTimer(SEND_TIMER, cast(float, self.limits.send_timeout)))
        high = self.limits.output_high_water
        if high is not None:
            if not self._over and unsent > high:
                self._over = True
                if self.state in _PAUSABLE:
                    self._reading_paused = True
                    actions.append(PauseReading())
            elif self._over and unsent <= min(self.limits.output_low_water or 0, high):
                self._over = False
                if self._reading_paused:
                    self._reading_paused = False
                    actions.append(ResumeReading())
        waiting = self._stalled or self._over
        if waiting and not was_waiting:
            self._counting = None   # the state's own timer stops counting: the client's reading is what lags
        elif (was_waiting and not waiting) or (was_over and not self._over):
            actions += self._go_on()
        return actions

    def _go_on(self) -> List[Action]:
        """The backlog cleared: the state's timer counts afresh, and requests waiting in h11's buffer are read."""
        if self.state is IDLE:
            return self._start_timer(IDLE_TIMER, self.limits.idle_timeout)
        if self.state is READING_HEADERS or self.state is READING_BODY:
            return self._pump()   # which starts the header-wait timer for a head still incomplete
        return []

    # ---- the table ------------------------------------------------------------------------------------------------
    def _transition(self, event: ConnEvent) -> List[Action]:
        """Move along the table. A state's timer stops counting when it is left (see STATE_TIMERS)."""
        new_state = self._moves.get(event)
        if new_state is None:
            raise ConnectionStateError(f"{event.value!r} is not allowed in state {self.state.value!r}")
        self.state, self._moves = new_state, TRANSITIONS[new_state]
        self._counting = None
        if new_state is CLOSING or new_state is CLOSED:
            return self._ending(new_state is CLOSING)
        return []

    def _ending(self, closing: bool) -> List[Action]:
        """Cancel the timers, but the send timer of a stalled output that is to be closed: a FIN waits for the
        output, which a client that does not read never takes. Reading goes on (TLS reads the peer's close_notify)."""
        actions: List[Action] = [ResumeReading()] if closing and self._reading_paused else []
        self._reading_paused = False
        self._send_counting = closing and self._send_counting
        keep = SEND_TIMER if self._send_counting else None
        actions += [CancelTimer(name) for name in sorted(self._scheduled) if name != keep]
        self._scheduled = {keep} if keep else set()
        return actions

    def _start_timer(self, name: str, seconds: Optional[float]) -> List[Action]:
        """Start the current state's timer (``seconds`` None: that limit is off; not while the output backlog
        holds the connection: the send timer counts then, and ``_go_on`` starts this one)."""
        if seconds is None or self._stalled or self._over:
            return []
        self._counting = name
        self._scheduled.add(name)
        return [StartTimer(name, seconds)]

    def _awaited(self) -> _Answer:
        if self.state is not SENDING or self._answer is None:
            raise ConnectionStateError(f"no request waits for an answer (state {self.state.value!r})")
        answer, self._answer = self._answer, None
        return answer

    # ---- bytes in ---------------------------------------------------------------------------------------------
    def _pump(self) -> List[Action]:
        actions: List[Action] = []
        while self.state in _PARSING:
            if self._over and self.state is not TUNNELLED:
                break   # backpressure: the next request waits in h11's buffer until the output drains
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                actions += self._refuse_malformed(exc.error_status_hint or 400, str(exc))
                break
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            kind = type(event)   # exact types: isinstance would go through h11's ABC machinery on the hot path
            if kind is h11.Data:
                actions += self._on_body(cast(h11.Data, event).data)
            elif kind is h11.Request:
                actions += self._on_head(cast(h11.Request, event))
            elif kind is h11.EndOfMessage:
                actions += self._on_end()
            else:   # ConnectionClosed: the peer ended its side
                actions += self.close("closed by the client")
        if self.state is READING_HEADERS and self._counting is None:
            actions += self._start_timer(HEADER_TIMER, self.limits.header_wait_timeout)
        return actions

    def _on_head(self, event: h11.Request) -> List[Action]:
        # h11 bounds only a head still incomplete: one that arrived whole in a single read must be measured.
        headers, size = _decoded_headers(event)
        if size > self.limits.max_header_bytes:
            return self._refuse_malformed(431, f"request head of {size} bytes exceeds {self.limits.max_header_bytes}")
        request = self._request_from(event, headers)
        self._method = request.method
        self.last_host = request.host or self.last_host
        if request.method in TUNNEL_METHODS:
            # A refused channel whose body is still coming (the 1 GiB IN stream) cannot be kept alive; an
            # empty-bodied one (the NTLM Type 1 leg) must be, or the handshake breaks.
            self._answer = _Answer(close=(request.header("content-length") or "0") != "0")
            return self._transition(TUNNEL_REQUESTED) + [HandOffTunnel(request)]
        length = request.header("content-length")
        if length is not None and length.isdigit() and int(length) > self.limits.max_body_bytes:
            return self._too_large(request, int(length))
        actions = self._transition(HEAD_RECEIVED)
        self._request, self._body, self._body_size = request, [], 0
        if self._h11.client_is_waiting_for_100_continue:
            interim = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
            actions.append(Send(self._h11.send(interim)))
        return actions

    def _on_body(self, data: bytes) -> List[Action]:
        if self.state is TUNNELLED:
            return [TunnelBytes(data)]
        if self._request is None:
            return []   # the body of a request answered early
        self._body_size += len(data)
        if self._body_size > self.limits.max_body_bytes:   # chunked bodies have no Content-Length to check up front
            request, self._request, self._body = self._request, None, []
            return self._too_large(request, self._body_size)
        self._body.append(data)
        return []

    def _on_end(self) -> List[Action]:
        if self.state is TUNNELLED:
            leftover = self._h11.trailing_data[0]
            return [TunnelBytes(leftover)] if leftover else []
        if self._request is None:
            return self._next_cycle(BODY_DRAINED)
        request, self._request = self._request, None
        request.body = b"".join(self._body)
        self._body = []
        self._answer = _ANSWER_HEAD if request.method == "HEAD" else _ANSWER
        return self._transition(REQUEST_RECEIVED) + [Deliver(request)]

    def _too_large(self, request: HttpRequest, size: int) -> List[Action]:
        self._answer = _Answer(head_only=request.method == "HEAD", close=True)
        return self._transition(TOO_LARGE) + [RefuseTooLarge(request, size)]

    def _refuse_malformed(self, status: int, message: str) -> List[Action]:
        silent = self.state is TUNNELLED or self._h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE)
        self._request, self._body = None, []
        self._answer = _Answer(head_only=self._method == "HEAD", close=True, silent=silent)
        return self._transition(MALFORMED) + [RefuseMalformed(status, message)]

    def _next_cycle(self, event: ConnEvent) -> List[Action]:
        """Both sides are done and the connection stays: on to the next request, which may be buffered already."""
        pipelined = self._h11.next_event() is h11.PAUSED   # in DONE, h11 pauses exactly when bytes wait
        self._h11.start_next_cycle()
        self._method = None
        actions = self._transition(event)
        if pipelined:
            return actions + self._transition(REQUEST_STARTED)
        return actions + self._start_timer(IDLE_TIMER, self.limits.idle_timeout)

    def _request_from(self, event: h11.Request, headers: List[Tuple[str, str]]) -> HttpRequest:
        target = event.target.decode("latin-1")
        raw_path, _, query = target.partition("?")
        if raw_path.startswith(("http://", "https://")):  # absolute-form target (proxies)
            raw_path = "/" + raw_path.split("/", 3)[3] if raw_path.count("/") >= 3 else "/"
        return HttpRequest(
            method=event.method.decode("latin-1"), target=target, path=unquote(raw_path), query=query,
            headers=headers,
            scheme=self.scheme, conn=self.conn)

def _decoded_headers(event: h11.Request) -> Tuple[List[Tuple[str, str]], int]:
    """The header fields as str, and the size of the request line and header lines as sent, give or take optional
    whitespace around header values (one pass: both are wanted for every request)."""
    headers = []
    size = len(event.method) + len(event.target) + len(b"  HTTP/1.1\r\n\r\n")
    for name, value in event.headers.raw_items():
        size += len(name) + len(value) + 4   # ": " and CRLF
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    return headers, size
