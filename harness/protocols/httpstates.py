"""The state table of the HTTP connection core (harness.protocols.httpconn), in the style of h11's ``_state.py``:
the states one server connection passes through, the events that move it, and which event leads where. Sans-IO; the
core drives it, and an event the table does not allow is a bug (ConnectionStateError)."""
from __future__ import annotations

import enum
from typing import Dict

from harness.protocols.httpactions import HEADER_TIMER, IDLE_TIMER


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


class ConnectionStateError(RuntimeError):
    """An event the table does not allow in the current state: a bug in the caller or in this core."""
