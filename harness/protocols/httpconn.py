"""One HTTP/1.1 server connection as an Exchange 2013 CAS (IIS 8.5 on http.sys) runs it, sans-IO.

This module is the connection: the state it is in (an explicit table, in the style of h11's ``_state.py``),
keep-alive and pipelining, ``100 Continue``, the connection limits, the error answers, and the hand-off of an RPC
over HTTP request to a tunnel. Requests of the common shape (RPC over HTTP channels with a Content-Length too) are
read by harness.protocols.httphead and answered with httpencode.frame, without h11; at the first request out of the
ordinary (or an answer h11 must frame) h11 takes the connection over for good, from where it stands, and parses and
frames as it always did (malformed input is h11's RemoteProtocolError; the response bytes:
harness.protocols.httpencode). Both ways act the same, byte for byte (tests/test_httphead.py).

It is driven by calls - ``start``, ``receive(bytes)``, ``timer_expired(name)``, the app's answers (``respond``,
``tunnel_opened``), ``stream_data`` / ``stream_end`` (an open-ended answer's later chunks),
``output_pending(unsent, stalled)`` (the output backlog, see below), ``close``, ``abort``, ``connection_lost`` - and
answers each with a list of actions (harness.protocols.httpactions) that the I/O layer (harness.services.web)
carries out in order.

An answer with a ``stream`` is open-ended: ``respond`` sends its head and first chunks and the connection stays in
SENDING (pipelined requests wait in the buffer) until ``stream_end``; ``stream_data`` frames each later chunk.
Backpressure and the send timer work as for any output.

An action that needs the app's answer (Deliver, RefuseTooLarge, RefuseMalformed, HandOffTunnel) is always the last
of its list: the connection parses nothing further until it is answered, which keeps pipelined answers in order
(later bytes wait in the buffer). A tunnelled connection's own output is written by its channel, not here.

Backpressure: the edge reports its output backlog - the bytes it holds unsent, and whether the transport is
*stalled* (its own buffer full: the client is not reading). Over ``output_high_water`` held bytes the connection
delivers no further pipelined request and stops reading (PauseReading; not in a tunnel, whose channel reads on),
until the backlog is down to ``output_low_water``. While the output is stalled or over the high water the state's
own timer (idle, header-wait) stops counting; the send timer counts instead, from the stall: a client that takes
nothing for ``send_timeout`` is reset (http.sys drops a client that does not receive, IIS's connectionTimeout).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Set, Union, cast

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
from harness.protocols.httpencode import LAST_CHUNK, chunk, encode, frame
from harness.protocols.httphead import FALL_BACK, Head, decoded_headers, read_head, request_from
from harness.protocols.httpstates import (  # noqa: F401  (re-exported: the table is the core's)
    ANSWERED,
    ANSWERED_CLOSE,
    ANSWERED_EARLY,
    BODY_DRAINED,
    CLOSE_REQUESTED,
    CLOSED,
    CLOSING,
    CONNECTION_LOST,
    HEAD_RECEIVED,
    IDLE,
    MALFORMED,
    READING_BODY,
    READING_HEADERS,
    REQUEST_RECEIVED,
    REQUEST_STARTED,
    SENDING,
    TIMED_OUT,
    TOO_LARGE,
    TRANSITIONS,
    TUNNEL_OPENED,
    TUNNEL_REQUESTED,
    TUNNELLED,
    ConnectionStateError,
    ConnEvent,
    ConnState,
)

_PARSING = (READING_HEADERS, READING_BODY, TUNNELLED)
_PAUSABLE = (IDLE, READING_HEADERS, READING_BODY, SENDING)   # where the backlog stops reading


@dataclass(frozen=True)
class _Answer:
    """What the connection knows about the answer it waits for."""
    head_only: bool = False     # a HEAD request: Content-Length as for GET, no body
    close: bool = False         # the connection ends after it
    silent: bool = False        # nothing can be sent any more (mid-tunnel, mid-response): only close


_ANSWER, _ANSWER_HEAD = _Answer(), _Answer(head_only=True)   # the common answers: made once


def _refused_tunnel(request: HttpRequest) -> _Answer:
    """A refused channel whose body is still coming (the 1 GiB IN stream) cannot be kept alive; an empty-bodied one
    (the NTLM Type 1 leg) must be, or the handshake breaks."""
    return _Answer(close=(request.header("content-length") or "0") != "0")


class HttpConnection:
    """The server side of one HTTP connection; see the module docstring for the calls and the actions."""

    def __init__(self, conn: Any = None, *, tls: bool = True, limits: Optional[ConnectionLimits] = None,
                 fast_path: bool = True) -> None:
        self.conn = conn                    # stamped on each HttpRequest (the edge's ConnectionInfo)
        self.scheme = "https" if tls else "http"
        self.limits = limits = limits if limits is not None else ConnectionLimits()
        self.state = IDLE
        self._moves = TRANSITIONS[IDLE]        # the events allowed in this state
        self.last_host: Optional[str] = None   # the Host of the latest request that named one
        # Requests of the common shape are read without h11 (harness.protocols.httphead) and answered with
        # httpencode.frame; at the first thing out of the ordinary h11 takes the connection over (``_to_h11``).
        self._h11: Optional[h11.Connection] = None if fast_path else self._new_h11()
        # bytes read and not yet parsed while h11 has not taken over: the read itself, or a bytearray that grows
        self._buffer: Union[bytes, bytearray] = b""
        self._searched = 0                       # how much of an incomplete head was searched for its end
        self._head: Optional[Head] = None        # the head whose body is being read (fast path)
        self._raw = b""                          # the request being answered, as it came (fast path)
        self._client_close = False               # that request said Connection: close (fast path)
        self._served = False                     # a request was answered without h11 on this connection
        self._tunnel_left = 0                    # body bytes of a tunnel (fast path) its channel has not had yet
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
        if state is TUNNELLED:
            if self._h11 is None:
                return self._tunnel_bytes(data)
            if self._h11.their_state is h11.DONE:
                # Past the declared body (the OUT channel's 76-byte CONN/A1) the connection belongs to the channel:
                # it judges the bytes, instead of h11 buffering them without limit.
                return [TunnelBytes(data)] if data else []
        if state is CLOSING or state is CLOSED or not data:
            return []
        if self._h11 is None:
            if not self._buffer:
                self._buffer = data
            elif type(self._buffer) is bytes:   # a message in several reads: grown in place, not copied each time
                self._buffer = bytearray(self._buffer) + data
            else:
                cast(bytearray, self._buffer).extend(data)
        else:
            self._h11.receive_data(data)
        if state is SENDING:
            return []   # the app still has a request: this waits in the buffer (pipelining)
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
            data = None
            if self._h11 is None:
                data = frame(response, close, answer.head_only, open_ended, self._client_close)
            if data is None:   # h11 frames it: the request goes to h11 as it came, which then reads on
                data = encode(self._to_h11(), response, close, answer.head_only, open_ended)
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
        return [Send(chunk(data) if self._h11 is None else self._h11.send(h11.Data(data=data)))]

    def stream_end(self) -> List[Action]:
        """The open-ended answer is complete: its last chunk, then on as after any answer."""
        if not self.streaming:
            return []
        close, self._stream_close = bool(self._stream_close), None
        return self._answered([Send(LAST_CHUNK if self._h11 is None else self._h11.send(h11.EndOfMessage()))], close)

    def _answered(self, actions: List[Action], close: bool) -> List[Action]:
        """The answer went out: close, or on to the next request (which may be buffered already)."""
        conn = self._h11
        if close or (self._client_close if conn is None else conn.our_state is h11.MUST_CLOSE):
            return actions + self._transition(ANSWERED_CLOSE) + [Close("answered")]
        # the fast path answers requests read whole, and tunnel heads (``_head``) whose body is yet to be read
        if (self._head is None) if conn is None else conn.their_state is h11.DONE:
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
        return actions + (self._pump() if self._h11 is not None else self._open_tunnel())

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
        """The backlog cleared: the state's timer counts afresh, and requests waiting in the buffer are read."""
        if self.state is IDLE:
            return self._start_timer(IDLE_TIMER, self.limits.idle_timeout)
        if self.state is READING_HEADERS or self.state is READING_BODY:
            return self._pump()   # which starts the header-wait timer for a head still incomplete
        return []

    # ---- the table ------------------------------------------------------------------------------------------------
    def _transition(self, event: ConnEvent) -> List[Action]:
        """Move along the table. A state's timer stops counting when it is left (httpstates.STATE_TIMERS)."""
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
        if self._h11 is None:
            return self._pump_fast()
        conn = self._h11
        actions: List[Action] = []
        while self.state in _PARSING:
            if self._over and self.state is not TUNNELLED:
                break   # backpressure: the next request waits in the buffer until the output drains
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                actions += self._refuse_malformed(exc.error_status_hint or 400, str(exc))
                break
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            kind = type(event)   # exact types: isinstance would go through h11's ABC machinery on the hot path
            if kind is h11.Data:
                actions += self._on_body(cast(h11.Data, event).data)
            elif kind is h11.Request:
                actions += self._on_head(conn, cast(h11.Request, event))
            elif kind is h11.EndOfMessage:
                actions += self._on_end()
            else:   # ConnectionClosed: the peer ended its side
                actions += self.close("closed by the client")
        if self.state is READING_HEADERS and self._counting is None:
            actions += self._start_timer(HEADER_TIMER, self.limits.header_wait_timeout)
        return actions

    def _pump_fast(self) -> List[Action]:
        """``_pump`` without h11: whole requests of the common shape (httphead.read_head), or h11 takes over."""
        actions: List[Action] = []
        while not self._over:   # backpressure: the next request waits in the buffer until the output drains
            if self.state is READING_HEADERS:
                head = read_head(self._buffer, self.limits.max_header_bytes, self.limits.max_body_bytes, self._searched)
                if head is None:
                    self._searched = max(0, len(self._buffer) - 2)   # as h11: a blank line may end in the next read
                    break
                if head is FALL_BACK:
                    self._to_h11()
                    return actions + self._pump()
                head = cast(Head, head)
                request = request_from(head.method, head.target, head.headers, self.scheme, self.conn)
                self._method = request.method
                self.last_host = request.host or self.last_host
                if request.method in TUNNEL_METHODS:   # its head stays in the buffer until the app answers
                    self._head, self._client_close, self._answer = head, head.close, _refused_tunnel(request)
                    return actions + self._transition(TUNNEL_REQUESTED) + [HandOffTunnel(request)]
                actions += self._transition(HEAD_RECEIVED)
                self._request, self._head, self._client_close = request, head, head.close
            elif self.state is READING_BODY:
                head, buffer = cast(Head, self._head), self._buffer
                if len(buffer) < head.end:
                    break
                self._raw, self._buffer = bytes(buffer[:head.end]), buffer[head.end:]
                self._head, self._searched = None, 0
                if self._request is None:   # an empty-bodied tunnel, refused: on to the next request, as h11
                    actions += self._next_cycle(BODY_DRAINED)
                    continue
                return actions + self._deliver(self._raw[head.head_size:])
            else:
                break
        if self.state is READING_HEADERS and self._counting is None:
            actions += self._start_timer(HEADER_TIMER, self.limits.header_wait_timeout)
        return actions

    def _to_h11(self) -> h11.Connection:
        """h11 takes the connection over (or has it already): what the fast path read of the request being answered,
        then the bytes waiting, go to h11 as they came, and h11 goes on from where the fast path was."""
        if self._h11 is not None:
            return self._h11
        self._h11 = conn = self._new_h11()
        if self._served:
            conn.their_http_version = b"1.1"   # as h11 keeps it from the request before
        if self._raw:   # the request being answered: h11 reads it again, to the same events
            conn.receive_data(self._raw)
            while type(conn.next_event()) is not h11.EndOfMessage:
                pass
        if self._buffer:   # the bytes waiting (never b"": to h11 that is the peer's close)
            conn.receive_data(bytes(self._buffer))
        if self._head is not None:   # a tunnel's head awaits its answer: h11 had read it, and nothing further
            conn.next_event()
        self._raw, self._buffer, self._head, self._searched = b"", b"", None, 0
        return conn

    def _open_tunnel(self) -> List[Action]:
        """The channel opened on a tunnel read without h11: the body bytes come, then every byte, as from h11."""
        head, buffer = cast(Head, self._head), self._buffer
        self._head, self._buffer, self._searched = None, b"", 0
        self._tunnel_left = head.end - head.head_size
        return self._tunnel_bytes(bytes(buffer[head.head_size:]))

    def _tunnel_bytes(self, data: bytes) -> List[Action]:
        """Bytes for a channel opened without h11, parted where h11 parts them: at the end of the declared body."""
        left = self._tunnel_left
        if not data:
            return []
        if not left or len(data) <= left:
            self._tunnel_left = max(left - len(data), 0)
            return [TunnelBytes(data)]
        self._tunnel_left = 0
        return [TunnelBytes(data[:left]), TunnelBytes(data[left:])]

    def _new_h11(self) -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)

    def _on_head(self, conn: h11.Connection, event: h11.Request) -> List[Action]:
        # h11 bounds only a head still incomplete: one that arrived whole in a single read must be measured.
        headers, size = decoded_headers(event)
        if size > self.limits.max_header_bytes:
            return self._refuse_malformed(431, f"request head of {size} bytes exceeds {self.limits.max_header_bytes}")
        request = request_from(event.method.decode("latin-1"), event.target.decode("latin-1"), headers, self.scheme,
                               self.conn)
        self._method = request.method
        self.last_host = request.host or self.last_host
        if request.method in TUNNEL_METHODS:
            self._answer = _refused_tunnel(request)
            return self._transition(TUNNEL_REQUESTED) + [HandOffTunnel(request)]
        length = request.header("content-length")
        if length is not None and length.isdigit() and int(length) > self.limits.max_body_bytes:
            return self._too_large(request, int(length))
        actions = self._transition(HEAD_RECEIVED)
        self._request, self._body, self._body_size = request, [], 0
        if conn.client_is_waiting_for_100_continue:
            interim = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
            actions.append(Send(conn.send(interim)))
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
            leftover = cast(h11.Connection, self._h11).trailing_data[0]
            return [TunnelBytes(leftover)] if leftover else []
        if self._request is None:
            return self._next_cycle(BODY_DRAINED)
        body, self._body = b"".join(self._body), []
        return self._deliver(body)

    def _deliver(self, body: bytes) -> List[Action]:
        request, self._request = cast(HttpRequest, self._request), None
        request.body = body
        self._answer = _ANSWER_HEAD if request.method == "HEAD" else _ANSWER
        return self._transition(REQUEST_RECEIVED) + [Deliver(request)]

    def _too_large(self, request: HttpRequest, size: int) -> List[Action]:
        self._answer = _Answer(head_only=request.method == "HEAD", close=True)
        return self._transition(TOO_LARGE) + [RefuseTooLarge(request, size)]

    def _refuse_malformed(self, status: int, message: str) -> List[Action]:
        silent = self.state is TUNNELLED or cast(h11.Connection, self._h11).our_state not in (h11.IDLE,
                                                                                             h11.SEND_RESPONSE)
        self._request, self._body = None, []
        self._answer = _Answer(head_only=self._method == "HEAD", close=True, silent=silent)
        return self._transition(MALFORMED) + [RefuseMalformed(status, message)]

    def _next_cycle(self, event: ConnEvent) -> List[Action]:
        """Both sides are done and the connection stays: on to the next request, which may be buffered already."""
        conn = self._h11
        if conn is None:
            pipelined, self._raw, self._served = bool(self._buffer), b"", True
        else:
            pipelined = conn.next_event() is h11.PAUSED   # in DONE, h11 pauses exactly when bytes wait
            conn.start_next_cycle()
        self._method = None
        actions = self._transition(event)
        if pipelined:
            return actions + self._transition(REQUEST_STARTED)
        return actions + self._start_timer(IDLE_TIMER, self.limits.idle_timeout)
