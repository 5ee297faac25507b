"""The sans-IO HTTP connection core (harness.protocols.httpconn): its state table, keep-alive, pipelining,
100-continue, limits (413, 431), malformed input (400), timers and the tunnel hand-off, driven without a socket;
and the write-fault pacing wrapper the edge writes through (harness.services.pacing), on a StringTransport."""
from __future__ import annotations

from collections import deque
from typing import Callable, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from harness.protocols import httpencode
from harness.protocols.http import HttpRequest, HttpResponse
from harness.protocols.httpconn import (
    CLOSED,
    CLOSING,
    HEADER_TIMER,
    IDLE,
    IDLE_TIMER,
    READING_BODY,
    READING_HEADERS,
    SEND_TIMER,
    SENDING,
    TRANSITIONS,
    TUNNELLED,
    Abort,
    Action,
    CancelTimer,
    Close,
    ConnectionLimits,
    ConnectionStateError,
    ConnEvent,
    ConnState,
    Deliver,
    HandOffTunnel,
    HttpConnection,
    PauseReading,
    RefuseMalformed,
    RefuseTooLarge,
    ResumeReading,
    Send,
    StartTimer,
    TunnelBytes,
)
from harness.services.pacing import PacedTransport
from tests.support import corpus
from tests.support.fuzz import scaled

Answer = Callable[[HttpRequest], HttpResponse]


def ok(request: HttpRequest) -> HttpResponse:
    return HttpResponse(200, "OK", [("Content-Type", "text/plain")], b"path=" + request.path.encode())


def error_page(status: int) -> HttpResponse:
    return HttpResponse(status, "Bad Request", [("Content-Type", "text/html")], b"<html>%d</html>" % status)


class Driver:
    """Plays the I/O layer and the app for one core, as services/web.py does: every action is carried out, every
    question answered (requests with ``answer``, tunnels accepted or refused with ``tunnel``)."""

    def __init__(self, limits: Optional[ConnectionLimits] = None, answer: Answer = ok,
                 tunnel: Optional[HttpResponse] = None) -> None:
        self.core = HttpConnection(None, tls=True, limits=limits)
        self.answer, self.tunnel = answer, tunnel
        self.actions: List[Action] = []
        self.requests: List[HttpRequest] = []
        self.sent: List[bytes] = []
        self.tunnelled = b""
        self.run(self.core.start())

    def feed(self, *chunks: bytes) -> "Driver":
        for chunk in chunks:
            self.run(self.core.receive(chunk))
        return self

    def run(self, actions: List[Action]) -> None:
        queue = deque(actions)
        while queue:
            action = queue.popleft()
            self.actions.append(action)
            queue.extendleft(reversed(self._carry_out(action)))

    def _carry_out(self, action: Action) -> List[Action]:
        if isinstance(action, Send):
            self.sent.append(action.data)
        elif isinstance(action, TunnelBytes):
            self.tunnelled += action.data
        elif isinstance(action, Deliver):
            self.requests.append(action.request)
            return self.core.respond(self.answer(action.request))
        elif isinstance(action, RefuseTooLarge):
            return self.core.respond(error_page(413))
        elif isinstance(action, RefuseMalformed):
            return self.core.respond(error_page(action.status))
        elif isinstance(action, HandOffTunnel):
            self.requests.append(action.request)
            return self.core.respond(self.tunnel) if self.tunnel is not None else self.core.tunnel_opened()
        return []

    def of(self, kind: type) -> list:
        return [action for action in self.actions if isinstance(action, kind)]

    @property
    def statuses(self) -> List[int]:
        return [int(data[9:12]) for data in self.sent]


def post(path: str = "/a", body: bytes = b"", extra: bytes = b"") -> bytes:
    return (b"POST %s HTTP/1.1\r\nHost: mail.contoso.test\r\nContent-Length: %d\r\n%s\r\n"
            % (path.encode(), len(body), extra)) + body


# ---- the table ---------------------------------------------------------------------------------------------------
def test_the_table_covers_every_state_and_always_allows_close_and_loss():
    assert set(TRANSITIONS) == set(ConnState)
    for moves in TRANSITIONS.values():
        assert moves[ConnEvent.CONNECTION_LOST] is CLOSED
        assert moves[ConnEvent.CLOSE_REQUESTED] in (CLOSING, CLOSED)
        assert set(moves.values()) <= set(ConnState)
    assert set(TRANSITIONS[CLOSED].values()) == {CLOSED}
    assert set(TRANSITIONS[CLOSING].values()) <= {CLOSING, CLOSED}
    reachable = {IDLE} | {target for moves in TRANSITIONS.values() for target in moves.values()}
    assert reachable == set(ConnState)


def test_an_answer_nobody_asked_for_is_refused():
    core = HttpConnection()
    with pytest.raises(ConnectionStateError):
        core.respond(HttpResponse(200, "OK"))
    with pytest.raises(ConnectionStateError):
        core.tunnel_opened()


def test_one_request_walks_the_states_with_its_timers():
    core = HttpConnection()
    assert core.start() == [StartTimer(IDLE_TIMER, 120.0)] and core.state is IDLE
    assert core.receive(b"POST /x?q=1 HTTP/1.1\r\nHost: a.test\r\n") == [StartTimer(HEADER_TIMER, 120.0)]
    assert core.state is READING_HEADERS
    assert core.receive(b"Content-Length: 3\r\n") == []   # the header-wait timer already counts
    assert core.timer_expired(IDLE_TIMER) == []             # the idle timer stopped counting with the first byte
    assert core.receive(b"\r\n") == []
    assert core.state is READING_BODY
    [deliver] = core.receive(b"abc")
    assert isinstance(deliver, Deliver) and core.state is SENDING
    request = deliver.request
    assert (request.method, request.path, request.query, request.body, request.host) == ("POST", "/x", "q=1",
                                                                                       b"abc", "a.test")
    assert core.last_host == "a.test"
    actions = core.respond(HttpResponse(200, "OK", [("Content-Type", "text/plain")], b"hi"))
    assert actions == [Send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"),
                       StartTimer(IDLE_TIMER, 120.0)]
    assert core.state is IDLE
    assert core.timer_expired(HEADER_TIMER) == []   # a tick of a state left long ago
    assert core.connection_lost() == [CancelTimer(IDLE_TIMER)] and core.state is CLOSED
    assert core.receive(b"GET / HTTP/1.1\r\n\r\n") == []


def test_keep_alive_serves_request_after_request():
    driver = Driver().feed(post("/one"), post("/two", b"body"))
    assert [r.path for r in driver.requests] == ["/one", "/two"]
    assert driver.statuses == [200, 200] and all(b"Connection" not in data for data in driver.sent)
    assert driver.core.state is IDLE and not driver.of(Close)


@pytest.mark.parametrize("request_bytes", [b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                                           b"GET / HTTP/1.0\r\n\r\n"])
def test_a_request_that_ends_the_connection_is_answered_then_closed(request_bytes):
    driver = Driver().feed(request_bytes)
    assert driver.statuses == [200] and driver.core.state is CLOSING
    assert isinstance(driver.actions[-1], Close)
    driver.feed(post("/ignored"))
    assert len(driver.requests) == 1


def test_response_asking_to_close_closes():
    driver = Driver(answer=lambda request: HttpResponse(200, "OK", [], b"", close=True)).feed(post(), post())
    assert len(driver.requests) == 1 and b"Connection: close\r\n" in driver.sent[0]
    assert driver.core.state is CLOSING


def test_pipelined_requests_are_answered_in_order_one_at_a_time():
    core = HttpConnection()
    core.start()
    first = core.receive(post("/1") + post("/2") + post("/3")[:20])
    assert [type(a) for a in first] == [Deliver] and first[-1].request.path == "/1"
    assert core.receive(post("/3")[20:]) == []   # the app still has /1: the rest waits
    second = core.respond(HttpResponse(200, "OK", [], b"1"))
    assert [type(a) for a in second] == [Send, Deliver] and second[-1].request.path == "/2"
    third = core.respond(HttpResponse(200, "OK", [], b"2"))
    assert third[0].data.endswith(b"\r\n\r\n2") and third[-1].request.path == "/3"
    assert core.respond(HttpResponse(200, "OK", [], b"3"))[-1] == StartTimer(IDLE_TIMER, 120.0)


def test_head_gets_the_length_but_no_body():
    driver = Driver().feed(b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n", post("/next"))
    assert driver.sent[0].endswith(b"Content-Length: 7\r\n\r\n")
    assert driver.statuses == [200, 200]


# ---- 100-continue, limits, malformed input -----------------------------------------------------------------------
def test_expect_100_continue_is_answered_through_h11_before_the_body():
    core = HttpConnection()
    actions = core.receive(post("/x", extra=b"Expect: 100-continue\r\n"))
    assert Send(b"HTTP/1.1 100 Continue\r\n\r\n") in actions
    assert isinstance(actions[-1], Deliver)   # an empty body: the request is whole at once
    core = HttpConnection()
    head = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    assert core.receive(head)[-1] == Send(b"HTTP/1.1 100 Continue\r\n\r\n") and core.state is READING_BODY
    [deliver] = core.receive(b"data")
    assert deliver.request.body == b"data"


def test_a_declared_body_over_the_limit_gets_413_without_being_read():
    head = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 50000000\r\nExpect: 100-continue\r\n\r\n"
    driver = Driver().feed(head, b"x" * 1000)
    [refusal] = driver.of(RefuseTooLarge)
    assert refusal.size == 50000000 and not driver.of(Deliver)
    assert driver.sent == [b"HTTP/1.1 413 Bad Request\r\nContent-Type: text/html\r\nContent-Length: 16\r\n"
                           b"Connection: close\r\n\r\n<html>413</html>"]   # no 100 Continue first
    assert driver.core.state is CLOSING and isinstance(driver.actions[-1], Close)


def test_a_chunked_body_over_the_limit_gets_413_once_it_is_too_long():
    limits = ConnectionLimits(max_body_bytes=10)
    head = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    driver = Driver(limits).feed(head, b"6\r\nabcdef\r\n", b"6\r\nghijkl\r\n", b"0\r\n\r\n")
    assert [r.size for r in driver.of(RefuseTooLarge)] == [12] and driver.statuses == [413]
    assert driver.core.state is CLOSING
    small = Driver(limits).feed(head, b"6\r\nabcdef\r\n", b"0\r\n\r\n")
    assert [r.body for r in small.requests] == [b"abcdef"]


@pytest.mark.parametrize("headers", [1, 60])   # one long header; many short ones (h11 counts neither once whole)
def test_an_oversized_head_arriving_whole_in_one_read_gets_431(headers):
    lines = b"".join(b"X-H%d: %s\r\n" % (i, b"x" * (1100 // headers)) for i in range(headers))
    driver = Driver(ConnectionLimits(max_header_bytes=1024)).feed(b"GET / HTTP/1.1\r\nHost: a\r\n" + lines + b"\r\n")
    [refusal] = driver.of(RefuseMalformed)
    assert refusal.status == 431 and driver.statuses == [431] and driver.requests == []
    assert driver.core.state is CLOSING
    just_under = Driver(ConnectionLimits(max_header_bytes=1024)).feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [r.path for r in just_under.requests] == ["/"]


def test_an_oversized_head_gets_431():
    driver = Driver(ConnectionLimits(max_header_bytes=1024)).feed(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 2000)
    [refusal] = driver.of(RefuseMalformed)
    assert refusal.status == 431 and driver.statuses == [431]
    assert driver.core.state is CLOSING


@pytest.mark.parametrize("garbage", [b"\x16\x03\x01 nonsense\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
                                     b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n"])
def test_malformed_requests_get_400_in_the_bytes_the_edge_always_wrote(garbage):
    driver = Driver().feed(garbage)
    [refusal] = driver.of(RefuseMalformed)
    assert refusal.status == 400 and refusal.message
    page = error_page(400)
    # What web.py used to write by hand beside h11: the app's headers, Content-Length, Connection: close.
    raw = (f"HTTP/1.1 {page.status} {page.reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in page.headers)
           + f"Content-Length: {len(page.body)}\r\nConnection: close\r\n\r\n").encode() + page.body
    assert driver.sent == [raw] and driver.core.state is CLOSING


def test_malformed_after_a_good_request_still_answers_the_good_one_first():
    driver = Driver().feed(post("/good") + b"BROKEN\r\n\r\n")
    assert [r.path for r in driver.requests] == ["/good"] and driver.statuses == [200, 400]


# ---- timers ------------------------------------------------------------------------------------------------------
def test_an_idle_connection_is_closed_when_its_timer_runs_out():
    core = HttpConnection()
    core.start()
    assert core.timer_expired(IDLE_TIMER) == [Close("idle for 120 s", limit="idle_timeout")]
    assert core.state is CLOSING


def test_a_head_that_never_completes_is_closed_by_the_header_wait_timer():
    core = HttpConnection(limits=ConnectionLimits(header_wait_timeout=5.0))
    core.start()
    assert core.receive(b"GET / HT")[-1] == StartTimer(HEADER_TIMER, 5.0)
    assert core.timer_expired(IDLE_TIMER) == []   # cancelled when the request started: a stale tick
    assert isinstance(core.timer_expired(HEADER_TIMER)[-1], Close) and core.state is CLOSING


def test_timers_can_be_switched_off():
    core = HttpConnection(limits=ConnectionLimits(idle_timeout=None, header_wait_timeout=None))
    assert core.start() == [] and core.receive(b"GET / HT") == []


# ---- tunnels -----------------------------------------------------------------------------------------------------
def test_rpc_in_data_hands_its_body_to_the_tunnel():
    core = HttpConnection()
    head = b"RPC_IN_DATA /rpc/rpcproxy.dll?ex01:6001 HTTP/1.1\r\nHost: mail\r\nContent-Length: 1073741824\r\n\r\n"
    actions = core.receive(head + b"first")
    assert isinstance(actions[-1], HandOffTunnel) and actions[-1].request.query == "ex01:6001"
    assert core.state is SENDING
    assert core.tunnel_opened() == [TunnelBytes(b"first")] and core.state is TUNNELLED
    assert core.receive(b"more") == [TunnelBytes(b"more")]


def test_rpc_out_data_bytes_past_the_declared_body_go_to_the_tunnel_raw():
    driver = Driver()
    head = b"RPC_OUT_DATA /rpc/rpcproxy.dll?ex01:6001 HTTP/1.1\r\nHost: mail\r\nContent-Length: 4\r\n\r\n"
    driver.feed(head + b"A1A1" + b"after", b"GET / HTTP/1.1\r\n\r\n")
    assert driver.tunnelled == b"A1A1afterGET / HTTP/1.1\r\n\r\n"
    assert driver.core.state is TUNNELLED and not driver.sent and len(driver.requests) == 1


def test_a_refused_empty_tunnel_keeps_the_connection_and_one_with_a_body_closes_it():
    refusal = HttpResponse(401, "Unauthorized", [("WWW-Authenticate", "NTLM")], b"no")
    empty = b"RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nHost: mail\r\nContent-Length: 0\r\n\r\n"
    driver = Driver(tunnel=refusal).feed(empty, post("/next"))
    assert driver.statuses == [401, 200] and b"Connection" not in driver.sent[0]
    assert driver.core.state is IDLE
    streaming = b"RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nHost: mail\r\nContent-Length: 100\r\n\r\n"
    driver = Driver(tunnel=refusal).feed(streaming + b"x" * 10)
    assert driver.statuses == [401] and b"Connection: close\r\n" in driver.sent[0]
    assert driver.core.state is CLOSING


def test_malformed_framing_inside_a_tunnel_closes_without_an_http_answer():
    head = b"RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nHost: mail\r\nTransfer-Encoding: chunked\r\n\r\n"
    driver = Driver().feed(head, b"4\r\nabcd\r\n", b"zz\r\n")
    assert driver.tunnelled == b"abcd" and driver.of(RefuseMalformed) and not driver.sent
    assert driver.core.state is CLOSING and isinstance(driver.actions[-1], Close)


# ---- backpressure (the edge's output backlog) ---------------------------------------------------------------------
BACKLOG = ConnectionLimits(output_high_water=1000, output_low_water=100, send_timeout=30.0)


def reply(body: bytes = b"x") -> HttpResponse:
    return HttpResponse(200, "OK", [], body)


def test_over_the_high_water_no_pipelined_request_is_delivered_until_the_output_drains():
    core = HttpConnection(limits=BACKLOG)
    core.start()
    [deliver] = core.receive(post("/1") + post("/2") + post("/3"))
    assert deliver.request.path == "/1"
    assert core.output_pending(1000, stalled=True) == [StartTimer(SEND_TIMER, 30.0)]   # at the high water: on
    assert core.output_pending(1001, stalled=True) == [PauseReading()]
    actions = core.respond(reply())
    assert [type(a) for a in actions] == [Send] and core.state is READING_HEADERS   # /2 waits in h11's buffer
    assert core.receive(post("/4")) == []                  # bytes already on their way are buffered, not parsed
    assert core.output_pending(500, stalled=False) == []   # drained under the high water, not down to the low
    actions = core.output_pending(100, stalled=False)
    assert actions[:1] == [ResumeReading()] and [a.request.path for a in actions[1:]] == ["/2"]
    assert [a.request.path for a in core.respond(reply()) if isinstance(a, Deliver)] == ["/3"]


def test_a_stalled_output_suspends_the_state_timer_and_resets_the_connection_at_the_send_timeout():
    core = HttpConnection(limits=BACKLOG)
    core.start()
    core.receive(post("/1"))
    assert core.respond(reply())[-1] == StartTimer(IDLE_TIMER, 120.0)
    assert core.output_pending(0, stalled=True) == [StartTimer(SEND_TIMER, 30.0)]
    assert core.timer_expired(IDLE_TIMER) == []     # the client is not idle: it does not read
    assert core.timer_expired(SEND_TIMER) == [Abort("client not receiving: output stalled for 30 s",
                                                    limit="send_timeout")]
    assert core.state is CLOSING


def test_output_flowing_again_stops_the_send_timer_and_restarts_the_idle_one():
    core = HttpConnection(limits=BACKLOG)
    core.start()
    core.receive(post("/1"))
    core.respond(reply())
    core.output_pending(2000, stalled=True)
    assert core.output_pending(0, stalled=False) == [ResumeReading(), StartTimer(IDLE_TIMER, 120.0)]
    assert core.timer_expired(SEND_TIMER) == []     # a stall that ended
    assert core.output_pending(0, stalled=True) == [StartTimer(SEND_TIMER, 30.0)]   # a new stall counts afresh
    assert core.output_pending(0, stalled=False) == [StartTimer(IDLE_TIMER, 120.0)]


def test_a_close_waiting_for_a_stalled_output_keeps_its_send_timer_and_reads_on():
    core = HttpConnection(limits=BACKLOG)
    core.start()
    core.receive(post("/1"))
    core.output_pending(5000, stalled=True)         # earlier output: reading paused
    actions = core.respond(HttpResponse(200, "OK", [], b"bye", close=True))
    assert [type(a) for a in actions] == [Send, ResumeReading, CancelTimer, Close] and core.state is CLOSING
    assert actions[2] == CancelTimer(IDLE_TIMER)   # the send timer is kept
    assert core.close() == []
    assert isinstance(core.timer_expired(SEND_TIMER)[-1], Abort)   # a FIN would wait for the client for ever
    assert core.connection_lost() == [] and core.state is CLOSED


def test_a_tunnel_reads_on_whatever_its_backlog():
    core = HttpConnection(limits=BACKLOG)
    head = b"RPC_OUT_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nHost: mail\r\nContent-Length: 4\r\n\r\n"
    core.receive(head)
    assert core.tunnel_opened() == [] and core.state is TUNNELLED
    assert core.output_pending(5000, stalled=True) == [StartTimer(SEND_TIMER, 30.0)]   # no PauseReading
    assert core.receive(b"A1A1more") == [TunnelBytes(b"A1A1"), TunnelBytes(b"more")]
    core = HttpConnection(limits=BACKLOG)           # paused before the tunnel opened: it reads again when it does
    core.receive(post("/1") + head)
    core.output_pending(5000, stalled=False)
    assert [type(a) for a in core.respond(reply())] == [Send]
    assert core.output_pending(0, stalled=False)[0] == ResumeReading()
    core.output_pending(5000, stalled=False)        # the tunnel's hand-off is out; its own output is over
    assert core.tunnel_opened()[0] == ResumeReading() and core.state is TUNNELLED


def test_backpressure_can_be_switched_off():
    core = HttpConnection(limits=ConnectionLimits(output_high_water=None, send_timeout=None))
    core.receive(post("/1") + post("/2"))
    assert core.output_pending(1 << 30, stalled=True) == []
    assert isinstance(core.respond(reply())[-1], Deliver)


# ---- closing -----------------------------------------------------------------------------------------------------
def test_close_abort_and_late_answers():
    core = HttpConnection()
    core.start()
    assert core.receive(post("/x"))[-1].request.path == "/x"
    assert core.abort() == [CancelTimer(IDLE_TIMER), Abort("aborted by the server")] and core.state is CLOSING
    assert core.respond(HttpResponse(200, "OK")) == []   # the connection ended while the app answered
    assert core.close() == [] and core.abort() == [Abort("aborted by the server")]


@pytest.mark.parametrize("value", ["a\r\nb", "\u20ac"])   # a header split, a value beyond Latin-1
def test_an_unsendable_response_aborts_and_says_why(value):
    driver = Driver(answer=lambda request: HttpResponse(200, "OK", [("X-Bad", value)], b""))
    driver.feed(post())
    abort = driver.actions[-1]
    assert isinstance(abort, Abort) and abort.limit == "unsendable_response" and not driver.sent


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", b"GET / HTTP/1.0\r\n\r\n"])
@pytest.mark.parametrize("headers", [
    [], [("Server", "Microsoft-IIS/8.5"), ("X-Empty", ""), ("Content-Length", "99"), ("Date", "a b"), ("X-L", "\xe9")],
    [("Connection", "keep-alive"), ("X-A", "1")], [("X-A", "1"), ("Host", "h")], [("X-Bad", " padded")],
    [("Bad Name", "v")], [("X-Bad", "a\r\nb")], [("X-Bad", "\u20ac")]])
@pytest.mark.parametrize("close", [False, True])
@pytest.mark.parametrize("status,reason", [(200, "OK"), (404, "Not \xe9"), (204, ""), (199, "Early")])
def test_the_quick_encoder_sends_what_h11_would(request_bytes, headers, close, status, reason):
    """The header-line cache path gives h11's very bytes, leaves h11 in the same state, and fails where h11 does."""
    outcomes = []
    for encode in (httpencode.encode, httpencode.encode_through_h11):   # the second: h11 frames every header itself
        conn = HttpConnection(fast_path=False)
        conn.receive(request_bytes)
        for _ in range(2):   # the second answer's header lines come from the cache
            try:
                sent = encode(conn._h11, HttpResponse(status, reason, list(headers), b"body"), close,
                              request_bytes.startswith(b"HEAD"))
                outcomes.append((sent, conn._h11.our_state, conn._h11.their_state))
                conn._h11.start_next_cycle()
                conn.receive(request_bytes)
            except Exception as exc:
                outcomes.append((type(exc), str(exc), conn._h11.our_state))
                break
    half = len(outcomes) // 2
    assert outcomes[:half] == outcomes[half:]


# ---- the pacing wrapper the edge writes through (harness.services.pacing) ---------------------------------------
def paced(below_tls: bool = False) -> Tuple[PacedTransport, StringTransport, Clock, List[str]]:
    """A wrapper over a StringTransport and a Clock; ``ends`` records each time a plan ended the output."""
    transport, clock, ends = StringTransport(), Clock(), []
    output = PacedTransport(transport, clock, below_tls=below_tls, on_end=lambda: ends.append("end"))
    return output, transport, clock, ends


def test_pacing_passes_plain_writes_straight_through():
    output, transport, clock, ends = paced()
    output.write(b"abc")
    output.loseConnection()
    assert transport.value() == b"abc" and transport.disconnecting and not clock.getDelayedCalls()


def test_a_plan_paces_its_pieces_and_later_output_queues_behind_it():
    output, transport, clock, ends = paced()
    output.follow(((0.0, b"A"), (1.0, b"B")), None)
    output.write(b"C")
    output.loseConnection()                        # waits for the queue
    assert transport.value() == b"A" and not transport.disconnecting
    clock.advance(1.0)
    assert transport.value() == b"ABC" and transport.disconnecting and not ends


def test_a_plan_that_closes_or_holds_ends_the_output():
    output, transport, clock, ends = paced()
    output.follow(((0.5, b"head"),), "close")
    output.write(b"never")
    clock.advance(0.5)
    assert transport.value() == b"head" and transport.disconnecting and ends == ["end"]
    output, transport, clock, ends = paced()
    output.follow((), "hold")
    output.write(b"never")
    output.loseConnection()
    assert transport.value() == b"" and not transport.disconnecting and not ends


def test_a_plan_that_resets_waits_for_the_bytes_to_drain():
    output, transport, clock, ends = paced()
    output.follow(((0.0, b"partial"),), "reset")
    assert transport.value() == b"partial" and not transport.disconnected and ends == ["end"]
    transport.producer.resumeProducing()          # asked once on registration
    transport.producer.resumeProducing()          # the buffer drained: now the RST
    assert transport.disconnected


def test_the_wrapper_is_the_transports_producer_and_holds_output_while_the_transport_is_full():
    transport, backlog = StringTransport(), []
    output = PacedTransport(transport, Clock(), below_tls=False, on_end=lambda: None,
                            on_backlog=lambda held, stalled: backlog.append((held, stalled)))
    assert transport.producer is output and transport.streaming
    output.write(b"a")
    transport.producer.pauseProducing()             # what Twisted does when its buffer is full
    output.write(b"bc")
    output.follow(((0.0, b"def"),), None)
    assert transport.value() == b"a" and output.held == 5
    assert backlog == [(0, True), (2, True), (5, True)]
    output.loseConnection()                         # after what is held
    assert not transport.disconnecting
    transport.producer.resumeProducing()            # drained
    assert transport.value() == b"abcdef" and backlog[-1] == (0, False)
    assert transport.disconnecting and transport.producer is None   # unregistered, or Twisted would not close


# ---- properties --------------------------------------------------------------------------------------------------
request_specs = st.lists(st.tuples(st.sampled_from(["GET", "POST", "PUT"]),
                                   st.from_regex(r"/[a-z0-9]{0,8}", fullmatch=True),
                                   st.binary(max_size=64), st.booleans(), st.booleans()),
                         min_size=1, max_size=5)


def encode_request(method: str, path: str, body: bytes, chunked: bool, expect: bool) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: autodiscover.contoso.test\r\n".encode()
    if expect:
        head += b"Expect: 100-continue\r\n"
    if chunked:
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") \
            + b"0\r\n\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def split_at(data: bytes, cuts: List[int]) -> List[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[start:end] for start, end in zip([0] + points, points + [len(data)], strict=True)]


@settings(max_examples=scaled(300), deadline=None)
@given(request_specs, st.lists(st.integers(min_value=0), max_size=20))
def test_any_chunking_of_a_request_stream_gives_the_same_requests(specs, cuts):
    stream = b"".join(encode_request(*spec) for spec in specs)
    driver = Driver().feed(*split_at(stream, cuts))
    assert [(r.method, r.path, r.body) for r in driver.requests] == [spec[:3] for spec in specs]
    finals = [data for data in driver.sent if not data.startswith(b"HTTP/1.1 100")]
    assert [int(data[9:12]) for data in finals] == [200] * len(specs)
    assert driver.core.state is IDLE and not driver.of(Close)


WAITING = (IDLE, READING_HEADERS, READING_BODY, TUNNELLED)


@settings(max_examples=scaled(500), deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=80), st.sampled_from(
    [b"GET / HTTP/1.1\r\n", b"Host: a\r\n", b"\r\n", b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n",
     b"Expect: 100-continue\r\n", b"RPC_IN_DATA /rpc HTTP/1.1\r\n", b"5\r\nhello\r\n", b"0\r\n\r\n", b"\x00\xff",
     b"Connection: close\r\n", b"HEAD / HTTP/1.0\r\n"])), max_size=12))
def test_arbitrary_bytes_never_raise_and_get_an_http_error_or_a_wait(chunks):
    check_any_bytes(chunks)


@pytest.mark.parametrize("entry", corpus.entries("http_core"))
def test_http_core_corpus(entry):
    check_any_bytes([corpus.as_bytes(chunk) for chunk in entry["chunks"]])


def check_any_bytes(chunks: List[bytes]) -> None:
    driver = Driver(answer=lambda request: HttpResponse(404, "Not Found", [], b"nothing here"))
    driver.feed(*chunks)   # must not raise
    assert all(data.startswith(b"HTTP/1.1 ") for data in driver.sent)
    state = driver.core.state
    assert state in WAITING or state is CLOSING
    if state is CLOSING:
        assert isinstance(driver.actions[-1], (Close, Abort))
    refusals = driver.of(RefuseMalformed)
    # 501: h11's answer to a transfer coding it does not implement (RFC 7230 3.3.1)
    assert len(refusals) <= 1 and all(refusal.status in (400, 431, 501) for refusal in refusals)
    if refusals and not driver.of(HandOffTunnel):   # mid-tunnel there is no HTTP answer to give
        assert driver.statuses[-1] == refusals[0].status and state is CLOSING
