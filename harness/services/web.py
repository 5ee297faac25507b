"""The HTTP/1.1 edge: a Twisted protocol around an h11 server connection.

h11 does the parsing (sans-IO); this module feeds it socket bytes, hands complete requests to an *app*, writes the
app's responses, and keeps connections alive as IIS does (NTLM authenticates the connection, so a 401 must never
close it). An app may instead return a *channel* (RPC over HTTP): from then on the request body bytes go to the
channel raw and the channel writes the connection itself.

Every byte out goes through the ``write`` hook when a write fault is active: its WritePlan may slice, delay, cut
or end the output (``close`` with FIN, ``reset`` with RST, ``hold`` to go silent), and later output queues behind it.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Deque, Dict, List, Optional, Tuple
from urllib.parse import unquote

import h11
from twisted.internet import protocol
from twisted.internet.interfaces import IHandshakeListener, IPullProducer
from zope.interface import implementer

from harness.hooks import FaultSet, Scope
from harness.protocols.connection import write_hook
from harness.protocols.http import ConnectionInfo, HttpRequest, HttpResponse

MAX_BODY = 1 << 20            # larger autodiscover/EWS bodies get 413, as IIS's request filtering would
MAX_HEADER_BYTES = 64 * 1024  # IIS's default header limit is 64 KiB too
TUNNEL_METHODS = ("RPC_IN_DATA", "RPC_OUT_DATA")


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

    def call_later(self, seconds: float, fn, *args):
        return self._proto.clock.callLater(seconds, fn, *args)


@implementer(IHandshakeListener)
class HttpServerProtocol(protocol.Protocol):
    def __init__(self, factory: "HttpFactory"):
        self.factory = factory
        self.app = factory.app
        self.clock = factory.clock
        self.h11: Optional[h11.Connection] = None
        self.info: Optional[ConnectionInfo] = None
        self.channel = None
        self.closed = False
        self._request: Optional[HttpRequest] = None
        self._body: List[bytes] = []
        self._body_size = 0
        self._handshake_done = False
        self._paced: Optional[_PacedOutput] = None   # exists once a write fault planned some output
        self._request_host: Optional[str] = None

    # ---- connection lifecycle -------------------------------------------------------------------------------
    def connectionMade(self) -> None:
        peer, local = self.transport.getPeer(), self.transport.getHost()
        self.factory.conn_counter += 1
        self.info = ConnectionInfo(peer=(peer.host, peer.port), local=(local.host, local.port),
                                   tls=self.factory.tls, conn_id=self.factory.conn_counter,
                                   host=self.factory.hosts_by_address.get(local.host),
                                   sni=getattr(self.transport, "server_name", None),
                                   tls_profile=getattr(self.transport, "tls_profile", None))
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        self.app.connection_made(self.info)

    def handshakeCompleted(self) -> None:
        self._handshake_done = True
        handle = self.transport.getHandle() if hasattr(self.transport, "getHandle") else None
        if handle is not None:
            name = handle.get_servername()
            self.info.sni = name.decode("ascii", "replace") if name else None
            self.info.tls_version = handle.get_protocol_version_name()
        self.app.tls_handshake(self.info, ok=True, reason="")

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.closed = True
        if self._paced is not None:
            self._paced.cancel()
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
        self.app.connection_lost(self.info, _failure_text(reason))

    def close(self) -> None:
        """Close once everything written so far has gone out (a write plan may still be pacing it)."""
        if not self.closed and self.transport is not None:
            self.closed = True
            if self._paced is None or not self._paced.close_when_done():
                self.transport.loseConnection()

    def abort(self) -> None:
        if self.transport is not None:
            self.closed = True
            if self._paced is not None:
                self._paced.cancel()
            self.transport.abortConnection()

    # ---- bytes in ---------------------------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self.closed:
            return
        if self.channel is not None and self.h11.their_state is h11.DONE:
            # Past the declared body (the OUT channel's 76-byte CONN/A1) the connection belongs to the channel:
            # let it judge the bytes instead of h11 buffering them without limit.
            self.channel.data_received(data)
            return
        try:
            self.h11.receive_data(data)
            self._pump()
        except h11.RemoteProtocolError as exc:
            self._protocol_error(exc)

    def _pump(self) -> None:
        while not self.closed:
            event = self.h11.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                if event is h11.PAUSED and self._can_start_next_cycle():
                    self.h11.start_next_cycle()
                    continue
                return
            if isinstance(event, h11.Request):
                self._on_request(event)
            elif isinstance(event, h11.Data):
                self._on_body(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._on_end()
            elif isinstance(event, h11.ConnectionClosed):
                self.close()
                return

    def _can_start_next_cycle(self) -> bool:
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    def _on_request(self, event: h11.Request) -> None:
        target = event.target.decode("latin-1")
        raw_path, _, query = target.partition("?")
        if raw_path.startswith(("http://", "https://")):  # absolute-form target (proxies)
            raw_path = "/" + raw_path.split("/", 3)[3] if raw_path.count("/") >= 3 else "/"
        request = HttpRequest(
            method=event.method.decode("latin-1"), target=target, path=unquote(raw_path), query=query,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers.raw_items()],
            scheme="https" if self.factory.tls else "http", conn=self.info)
        self._request, self._body, self._body_size = request, [], 0
        self._request_host = request.host or self._request_host
        if request.method in TUNNEL_METHODS:
            outcome = self.app.open_tunnel(request, ChannelIO(self))
            if isinstance(outcome, HttpResponse):
                # A refused channel whose body is still coming (the 1 GiB IN stream) cannot be kept alive;
                # an empty-bodied one (the NTLM Type 1 leg) must be, or the handshake breaks.
                self._request = None
                self._send(outcome, request, tunnel_refused=(request.header("content-length") or "0") != "0")
            else:
                self.channel = outcome
            return
        length = request.header("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            self._request = None
            self._send(self.app.too_large(request, int(length)), request, tunnel_refused=True)
            return
        if self.h11.client_is_waiting_for_100_continue:
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _on_body(self, data: bytes) -> None:
        if self.channel is not None:
            self.channel.data_received(data)
            return
        if self._request is None:
            return
        self._body_size += len(data)
        if self._body_size > MAX_BODY:  # chunked bodies have no Content-Length to check up front
            request, self._request = self._request, None
            self._send(self.app.too_large(request, self._body_size), request, tunnel_refused=True)
            return
        self._body.append(data)

    def _on_end(self) -> None:
        if self.channel is not None:
            leftover = self.h11.trailing_data[0]
            if leftover:
                self.channel.data_received(leftover)
            return
        if self._request is None:
            return
        request, self._request = self._request, None
        request.body = b"".join(self._body)
        self._body = []
        started = time.perf_counter()
        response = self.app.handle(request)
        self._send(response, request, elapsed=time.perf_counter() - started)

    # ---- bytes out --------------------------------------------------------------------------------------------
    def _send(self, response: HttpResponse, request: HttpRequest, *, tunnel_refused: bool = False,
              elapsed: float = 0.0) -> None:
        headers = [(k, v) for k, v in response.headers if k.lower() not in ("content-length", "transfer-encoding")]
        headers.append(("Content-Length", str(len(response.body))))
        if response.close or tunnel_refused:
            headers.append(("Connection", "close"))
        self.app.response_sent(request, response, elapsed)
        try:
            data = self.h11.send(h11.Response(status_code=response.status, reason=response.reason.encode("latin-1"),
                                              headers=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]))
            if request.method != "HEAD" and response.body:
                data += self.h11.send(h11.Data(data=response.body))
            data += self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            self.abort()
            return
        self.send(data)
        if response.close or tunnel_refused or self.h11.our_state is h11.MUST_CLOSE:
            self.close()
        elif self._can_start_next_cycle():
            self.h11.start_next_cycle()

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint or 400
        response = self.app.bad_request(self.info, status, str(exc))
        if self.channel is None and self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            headers = list(response.headers) + [("Content-Length", str(len(response.body))), ("Connection", "close")]
            head = f"HTTP/1.1 {response.status} {response.reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
            self.send(head.encode("latin-1") + b"\r\n" + response.body)
        self.close()

    def send(self, data: bytes) -> None:
        """Every byte this edge sends: straight out, unless a write fault plans how it goes (or earlier output is
        still being paced, which it must queue behind)."""
        if self._paced is not None and self._paced.ended:
            return
        faults = self.factory.faults
        plan = faults.first(write_hook, self.scope(), self.info, data) if faults.has(write_hook) else None
        if plan is None and self._paced is None:
            self.info.bytes_out += len(data)
            self.transport.write(data)
            return
        if self._paced is None:
            self._paced = _PacedOutput(self)
        pieces, end = (plan.pieces, plan.end) if plan is not None else (((0.0, data),), None)
        self.info.bytes_out += sum(len(piece) for _, piece in pieces)
        self._paced.push(pieces, end)

    def scope(self) -> Scope:
        """Whom the output is for: the host of a dedicated address, else the SNI, else the last Host header."""
        return Scope(host=self.info.host or self.info.sni or self._request_host)

    def reset_after(self, data: bytes) -> None:
        """Send ``data``, then RST once it has left Twisted's buffers (abortConnection alone would drop it)."""
        self.closed = True
        if not data:
            self.abort()
            return
        tcp = self.transport.transport if self.factory.tls else self.transport  # below the TLS layer, if any
        try:
            tcp.registerProducer(_AbortWhenDrained(self), False)
        except RuntimeError:  # the transport already serves a producer: nothing tells us when it drains
            self.transport.write(data)
            self.abort()
            return
        self.transport.write(data)


class _PacedOutput:
    """Carries out write plans on one connection, in order: each piece after its delay, then the plan's end.
    Output written meanwhile queues behind; once a plan ended the output, nothing more is sent."""

    def __init__(self, proto: HttpServerProtocol):
        self._proto = proto
        self._queue: Deque[Tuple[float, bytes, Optional[str]]] = deque()   # (delay, bytes, end after them)
        self._timer = None
        self.ended = False
        self._close_requested = False

    def push(self, pieces: Tuple[Tuple[float, bytes], ...], end: Optional[str]) -> None:
        if self.ended:
            return
        items = list(pieces) or [(0.0, b"")]
        for index, (delay, data) in enumerate(items):
            self._queue.append((delay, data, end if index == len(items) - 1 else None))
        self.ended = end is not None
        self._run()

    def close_when_done(self) -> bool:
        """True when closing must wait (pieces still queued) or never happen (held); the close then happens here."""
        if self._queue or self._timer is not None or self.ended:
            self._close_requested = True
            return True
        return False

    def cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._queue.clear()

    def _run(self) -> None:
        while self._queue and self._timer is None:
            delay, data, end = self._queue[0]
            if delay > 0:
                self._timer = self._proto.clock.callLater(delay, self._wake)
                return
            self._queue.popleft()
            self._send(data, end)
        if not self._queue and self._timer is None and self._close_requested and not self.ended:
            self._proto.transport.loseConnection()

    def _wake(self) -> None:
        self._timer = None
        _, data, end = self._queue.popleft()
        self._send(data, end)
        self._run()

    def _send(self, data: bytes, end: Optional[str]) -> None:
        proto = self._proto
        if proto.transport is None:
            return
        if end == "reset":
            proto.reset_after(data)
            return
        if data:
            proto.transport.write(data)
        if end == "close":
            proto.closed = True
            proto.transport.loseConnection()


@implementer(IPullProducer)
class _AbortWhenDrained:
    """Registered on the TCP transport, which asks a pull producer for more once its buffer is empty: then the
    bytes are with the kernel (on loopback: with the peer) and the RST may follow."""

    def __init__(self, proto: HttpServerProtocol):
        self._proto = proto
        self._armed = False   # registerProducer asks once right away, before anything was written

    def resumeProducing(self) -> None:
        if not self._armed:
            self._armed = True
            return
        self._proto.abort()

    def stopProducing(self) -> None:
        pass


class HttpFactory(protocol.Factory):
    def __init__(self, app, *, tls: bool, clock=None, faults=None, hosts_by_address: Optional[Dict[str, str]] = None):
        from twisted.internet import reactor
        self.app, self.tls = app, tls
        self.faults = faults if faults is not None else FaultSet()
        self.clock = clock or reactor
        self.hosts_by_address = hosts_by_address or {}   # dedicated loopback address -> the host it serves
        self.conn_counter = 0

    def buildProtocol(self, addr):
        return HttpServerProtocol(self)


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
