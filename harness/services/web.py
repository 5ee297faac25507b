"""The HTTP/1.1 edge: a thin Twisted protocol around the sans-IO connection core (harness.protocols.httpconn).

It feeds the core socket bytes and timer ticks and carries out the actions the core returns: writes, closes,
timers, whole requests handed to an *app* whose responses go back to the core, and tunnels: an app may answer
RPC_IN_DATA / RPC_OUT_DATA with a *channel* (RPC over HTTP), which from then on gets the body bytes raw and
writes the connection itself. It also keeps the TLS bookkeeping (SNI, version, failed handshakes).

The app interface (harness.services.site implements it): ``connection_made(info)``, ``tls_handshake(info, ok,
reason)``, ``connection_lost(info, reason)``, ``handle(request) -> HttpResponse`` (or a Deferred firing with
one: a long poll; a response with a ``stream`` is open-ended: once its head is out the stream is started with a
StreamIO, writes later chunks and ends the body, and is told ``connection_lost(reason)`` if the client goes first),
``open_tunnel(request, io) -> HttpResponse | channel`` (a channel has ``data_received(bytes)``
and ``connection_lost(reason)``; ``io`` is a ChannelIO), ``too_large(request, size) -> HttpResponse``,
``bad_request(info, status, message) -> HttpResponse``, ``response_sent(request, response, elapsed)``; optionally
``batch()``, a context manager around the handling of each chunk of received bytes (the sites make it their
transcript's batch: a request's events go to disk in one write, before the reactor reads again).

Every byte out goes through the ``write`` hook when a write fault is active: its WritePlan may slice, delay, cut
or end the output, carried out by harness.services.pacing; later output queues behind it.

Backpressure: the pacing wrapper is the transport's streaming producer (TLS passes the registration down to TCP), so
it learns when the transport's buffer is full and holds later output itself. It reports that backlog; the core
answers with PauseReading / ResumeReading (``transport.pauseProducing`` / ``resumeProducing``: the socket is not
read) and stops delivering pipelined requests, and a stall that lasts ``send_timeout`` resets the connection.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import resource
import sys
import time
from typing import Any, Callable, ContextManager, Dict, Iterator, List, Optional, Tuple

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IHandshakeListener
from zope.interface import implementer

from harness.hooks import FaultSet, Scope
from harness.protocols.connection import write_hook
from harness.protocols.http import ConnectionInfo, HttpResponse
from harness.protocols.httpconn import (
    MAX_BODY,
    MAX_HEADER_BYTES,
    TUNNEL_METHODS,
    Abort,
    Action,
    CancelTimer,
    Close,
    ConnectionLimits,
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

__all__ = ["ChannelIO", "StreamIO", "HttpFactory", "HttpServerProtocol", "MAX_BODY", "MAX_HEADER_BYTES",
           "TUNNEL_METHODS"]
_ENDED = (ConnState.CLOSING, ConnState.CLOSED)


class ChannelIO:
    """What a tunnel channel (RPC_IN_DATA/RPC_OUT_DATA) gets to talk to its connection."""

    def __init__(self, proto: "HttpServerProtocol"):
        self._proto = proto
        self.peer = proto.info.peer

    def write(self, data: bytes) -> None:
        if self._proto.transport is not None and not self._proto.closed:
            self._proto.send(data)

    def close(self) -> None:
        self._proto.close()

    def abort(self) -> None:
        self._proto.abort()

    def call_later(self, seconds: float, fn: Callable[..., Any], *args: Any) -> Any:
        return self._proto.clock.callLater(seconds, fn, *args)


class StreamIO:
    """What an open-ended answer's stream gets: chunks out, the end of the body, and the connection's clock."""

    def __init__(self, proto: "HttpServerProtocol"):
        self._proto = proto

    def write(self, data: bytes) -> None:
        """One chunk of the body (dropped once the connection ended)."""
        self._proto._execute(self._proto.core.stream_data(data))

    def end(self) -> None:
        """The body is complete; the connection goes on to its next request (or closes)."""
        self._proto.stream = None
        self._proto._execute(self._proto.core.stream_end())

    def call_later(self, seconds: float, fn: Callable[..., Any], *args: Any) -> Any:
        return self._proto.clock.callLater(seconds, fn, *args)


@implementer(IHandshakeListener)
class HttpServerProtocol(protocol.Protocol):
    def __init__(self, factory: "HttpFactory"):
        self.factory = factory
        self.app = factory.app
        self.clock = factory.clock
        self.core = HttpConnection(tls=factory.tls, limits=factory.limits)
        self.info: ConnectionInfo      # from connectionMade on
        self.output: PacedTransport    # from connectionMade on
        self.channel: Any = None
        self.stream: Any = None             # the open-ended answer going out, if any (see StreamIO)
        self._timers: Dict[str, Any] = {}   # the core's pending timers by name: DelayedCalls
        self._handshake_done = False
        self._handshake_timer: Any = None
        self._counted = False               # holds one of the factory's per-address/fd-limit places
        batch = getattr(self.app, "batch", None)
        # The app's transcript batch (or nothing); TLS below this protocol opens it too, around each chunk of socket
        # bytes and the connection's end, so a handshake's events go out with the request bytes read with it.
        self.batch: Callable[[], ContextManager[Any]] = batch if batch is not None else contextlib.nullcontext

    @property
    def closed(self) -> bool:
        """Closing or closed: nothing more is read, and a channel may not write."""
        return self.core.state in _ENDED

    # ---- connection lifecycle -------------------------------------------------------------------------------
    def connectionMade(self) -> None:
        peer, local = self.transport.getPeer(), self.transport.getHost()
        self.info = ConnectionInfo(peer=(peer.host, peer.port), local=(local.host, local.port),
                                   tls=self.factory.tls, conn_id=next(self.factory.conn_ids),
                                   host=self.factory.hosts_by_address.get(local.host),
                                   sni=getattr(self.transport, "server_name", None),
                                   tls_profile=getattr(self.transport, "tls_profile", None))
        self.output = PacedTransport(self.transport, self.clock, below_tls=self.factory.tls, on_end=self.close,
                                     on_backlog=self._output_backlog)
        self.core.conn = self.info
        self.app.connection_made(self.info)
        refusal = self.factory.admit(self.info.peer[0])
        if refusal:
            self._limit_reached(*refusal)
            self.output.abortConnection()
            return
        self._counted = True
        timeout = self.factory.limits.handshake_timeout
        if self.factory.tls and timeout:
            self._handshake_timer = self.clock.callLater(timeout, self._handshake_expired, timeout)
        self._execute(self.core.start())

    def _handshake_expired(self, seconds: float) -> None:
        self._handshake_timer = None
        self._limit_reached("handshake_timeout", f"TLS handshake not done in {seconds:g} s")
        self.abort()

    def _limit_reached(self, limit: str, reason: str) -> None:
        """Say in the transcript which limit ended the connection (apps without the callback are told nothing)."""
        report = getattr(self.app, "limit_reached", None)
        if report is not None:
            report(self.info, limit, reason)

    def handshakeCompleted(self) -> None:
        self._handshake_done = True
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        handle = self.transport.getHandle() if hasattr(self.transport, "getHandle") else None
        if handle is not None:
            name = handle.get_servername()
            self.info.sni = name.decode("ascii", "replace") if name else None
            self.info.tls_version = handle.get_protocol_version_name()
        self.app.tls_handshake(self.info, ok=True, reason="")

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        if self._counted:
            self._counted = False
            self.factory.release(self.info.peer[0])
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._execute(self.core.connection_lost())   # cancels the core's pending timers
        self.output.cancel()
        if self.factory.tls and not self._handshake_done:
            handle = self.transport.getHandle() if hasattr(self.transport, "getHandle") else None
            try:
                name = handle.get_servername() if handle is not None else None
                if name:
                    self.info.sni = name.decode("ascii", "replace")
            except Exception:  # the handle may be half torn down; SNI is best effort here
                pass
            self.app.tls_handshake(self.info, ok=False, reason=_failure_text(reason))
        if self.channel is not None:
            self.channel.connection_lost(_failure_text(reason))
            self.channel = None
        if self.stream is not None:   # the client left mid-stream: its timers and listeners must go
            stream, self.stream = self.stream, None
            stream.connection_lost(_failure_text(reason))
        self.app.connection_lost(self.info, _failure_text(reason))

    def close(self) -> None:
        """Close once everything written so far has gone out (a write plan may still be pacing it)."""
        self._execute(self.core.close())

    def abort(self) -> None:
        self._execute(self.core.abort())

    # ---- the core's actions -------------------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        with self.batch():   # ends before the reactor reads again: nothing answered waits in memory
            self._execute(self.core.receive(data))

    def _output_backlog(self, held: int, stalled: bool) -> None:
        """The pacing wrapper's output backlog changed (bytes it holds, whether the transport is full)."""
        self._execute(self.core.output_pending(held, stalled))

    def _execute(self, actions: List[Action]) -> None:
        """Carry out the core's actions in order. An action the app answers (Deliver, ...) is the last of its list,
        so the core's actions after that answer simply come next; a loop, not recursion, for long pipelines."""
        while actions:
            follow: List[Action] = []
            for action in actions:
                more = self._carry_out(action)
                if more:
                    follow += more
            actions = follow

    def _carry_out(self, action: Action) -> List[Action]:
        """One action; an app's answer goes back to the core, whose next actions are returned."""
        if isinstance(action, Send):
            self.send(action.data)
        elif isinstance(action, Deliver):
            request = action.request
            started = time.perf_counter()
            response = self.app.handle(request)
            if isinstance(response, defer.Deferred):   # answered later (a long poll): the core waits in SENDING
                response.addCallback(self._answer_later, request, started)
                return []
            self.app.response_sent(request, response, time.perf_counter() - started)
            return self._respond(response)
        elif isinstance(action, StartTimer):
            # A pending timer of that name is re-armed: cheaper for the reactor than a cancel and a new call.
            timer = self._timers.get(action.name)
            if timer is None:
                self._timers[action.name] = self.clock.callLater(action.seconds, self._timer_fired, action.name)
            else:
                timer.reset(action.seconds)
        elif isinstance(action, CancelTimer):
            timer = self._timers.pop(action.name, None)
            if timer is not None:
                timer.cancel()
        elif isinstance(action, Close):
            if action.limit:
                self._limit_reached(action.limit, action.reason)
            self.output.loseConnection()
        elif isinstance(action, Abort):
            if action.limit:
                self._limit_reached(action.limit, action.reason)
            self.output.abortConnection()
        elif isinstance(action, TunnelBytes):
            if self.channel is not None and not self.closed:
                self.channel.data_received(action.data)
        elif isinstance(action, HandOffTunnel):
            return self._hand_off(action)
        elif isinstance(action, RefuseTooLarge):
            response = self.app.too_large(action.request, action.size)
            self.app.response_sent(action.request, response, 0.0)
            return self.core.respond(response)
        elif isinstance(action, RefuseMalformed):
            return self.core.respond(self.app.bad_request(self.info, action.status, action.message))
        elif isinstance(action, PauseReading):
            self.transport.pauseProducing()
        elif isinstance(action, ResumeReading):
            self.transport.resumeProducing()
        return []

    def _answer_later(self, response: HttpResponse, request: Any, started: float) -> None:
        """An app's Deferred answer arrived; the core drops it when the connection ended meanwhile."""
        self.app.response_sent(request, response, time.perf_counter() - started)
        self._execute(self._respond(response))

    def _respond(self, response: HttpResponse) -> List[Action]:
        """Hand the app's answer to the core; an open-ended one's stream starts once its head is on its way (it
        only schedules: its first write comes after the head's Send, which the caller carries out next)."""
        actions = self.core.respond(response)
        if response.stream is not None and self.core.streaming:
            self.stream = response.stream
            response.stream.start(StreamIO(self))
        return actions

    def _hand_off(self, action: HandOffTunnel) -> List[Action]:
        outcome = self.app.open_tunnel(action.request, ChannelIO(self))
        if isinstance(outcome, HttpResponse):
            self.app.response_sent(action.request, outcome, 0.0)
            return self.core.respond(outcome)
        self.channel = outcome
        return self.core.tunnel_opened()

    def _timer_fired(self, name: str) -> None:
        self._timers.pop(name, None)
        self._execute(self.core.timer_expired(name))

    # ---- bytes out --------------------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Every byte this edge sends: straight out, unless a write fault plans how it goes (or earlier output is
        still being paced, which it must queue behind)."""
        if self.output.ended:
            return
        faults = self.factory.faults
        plan = None
        if faults.has(write_hook):
            host = self.info.host or self.info.sni or self.core.last_host   # as scope() says
            if faults.concern(write_hook, host):
                plan = faults.first(write_hook, Scope(host=host), self.info, data)
        if plan is None:
            self.info.bytes_out += len(data)
            self.output.write(data)
            return
        self.info.bytes_out += sum(len(piece) for _, piece in plan.pieces)
        self.output.follow(plan.pieces, plan.end)

    def scope(self) -> Scope:
        """Whom the output is for: the host of a dedicated address, else the SNI, else the last Host header."""
        return Scope(host=self.info.host or self.info.sni or self.core.last_host)


class HttpFactory(protocol.Factory):
    limits = ConnectionLimits()   # header/body sizes, timeouts, backpressure bounds: set on an instance to change

    def __init__(self, app, *, tls: bool, clock=None, faults=None, hosts_by_address: Optional[Dict[str, str]] = None,
                 conn_ids: Optional[Iterator[int]] = None):
        from twisted.internet import reactor
        self.app, self.tls = app, tls
        self.faults = faults if faults is not None else FaultSet()
        self.clock = clock or reactor
        self.hosts_by_address = hosts_by_address or {}   # dedicated loopback address -> the host it serves
        # Connection ids: pass one counter to every factory of a server so ids are unique across its listeners.
        self.conn_ids = conn_ids if conn_ids is not None else itertools.count(1)
        self.open_by_address: Dict[str, int] = {}

    # Connections of every factory in the process, against the file-descriptor limit: near it, new connections are
    # reset at once (with one log line) so the server keeps the descriptors it needs for its own work.
    open_connections = 0
    FD_RESERVE = 64
    _fd_warned = False

    def admit(self, address: str) -> Optional[Tuple[str, str]]:
        """Take a place for a new connection from ``address``, or say which limit refuses it (limit, reason)."""
        cap = self.limits.max_connections_per_address
        if cap is not None and self.open_by_address.get(address, 0) >= cap:
            return "max_connections_per_address", f"{address} already holds {cap} connections"
        soft = _fd_soft_limit()
        if soft is not None and HttpFactory.open_connections >= soft - self.FD_RESERVE:
            if not HttpFactory._fd_warned:
                HttpFactory._fd_warned = True
                print(f"mockex: {HttpFactory.open_connections} connections open, near the file descriptor limit "
                      f"({soft}); new connections are reset until some close (raise it with `ulimit -n`)",
                      file=sys.stderr, flush=True)
            return "fd_limit", f"{HttpFactory.open_connections} connections open, fd limit {soft}"
        self.open_by_address[address] = self.open_by_address.get(address, 0) + 1
        HttpFactory.open_connections += 1
        return None

    def release(self, address: str) -> None:
        left = self.open_by_address.get(address, 1) - 1
        if left > 0:
            self.open_by_address[address] = left
        else:
            self.open_by_address.pop(address, None)
        HttpFactory.open_connections -= 1
        if HttpFactory.open_connections < (_fd_soft_limit() or 0) - 2 * self.FD_RESERVE:
            HttpFactory._fd_warned = False

    def buildProtocol(self, addr):
        return HttpServerProtocol(self)


@functools.lru_cache(maxsize=1)
def _fd_soft_limit() -> Optional[int]:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def _failure_text(reason) -> str:
    value = getattr(reason, "value", reason)
    if value is None:
        return ""
    text = str(value)
    if type(value).__name__ == "ConnectionDone":
        return "closed cleanly"
    if type(value).__name__ == "ConnectionLost":
        return "connection lost"
    return text[:300]
