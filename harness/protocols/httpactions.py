"""The words the HTTP connection core (harness.protocols.httpconn) and its I/O edge share: the limits one connection
enforces and the actions the core answers with. Sans-IO; kept apart so the core module holds only behaviour.

The actions, which the I/O layer carries out in order:

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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from harness.protocols.http import HttpRequest

TUNNEL_METHODS = ("RPC_IN_DATA", "RPC_OUT_DATA")
MAX_BODY = 1 << 20            # larger autodiscover/EWS bodies get 413, as IIS's request filtering would
MAX_HEADER_BYTES = 64 * 1024  # IIS's default header limit is 64 KiB too
IIS_CONNECTION_TIMEOUT = 120.0   # http.sys IdleConnection and HeaderWait, IIS's connectionTimeout: two minutes
OUTPUT_HIGH_WATER = 64 * 1024   # output held back beyond the transport's own buffer (Twisted's: 64 KiB too)
OUTPUT_LOW_WATER = 16 * 1024
IDLE_TIMER = "idle"
HEADER_TIMER = "header-wait"
SEND_TIMER = "send"


@dataclass(frozen=True)
class ConnectionLimits:
    """Every limit one HTTP connection enforces, in one place. ``None`` switches a limit off.

    Enforced here:
      max_header_bytes     request line + headers (h11's max_incomplete_event_size); over it: 431
      max_body_bytes       an ordinary (non-tunnel) request body, declared or chunked; over it: 413 and close
      idle_timeout         seconds with no byte of a next request (from accept, and after each answer): close
      header_wait_timeout  seconds from a request's first byte until its head is whole: close (http.sys sends
                           nothing either, it logs Timer_HeaderWait)
      output_high_water    output bytes the edge holds unsent over which no further pipelined request is read
      output_low_water     ... and at or under which reading goes on (None: 0)
      send_timeout         seconds the output may stay stalled (the client takes nothing): reset
    Enforced by the Twisted edge (harness.services.web), which records each in the transcript as a ``limit`` event:
      handshake_timeout    seconds a TLS handshake may take; then the connection is reset
      max_connections_per_address  open connections one client address may hold; more are reset at once
    """
    max_header_bytes: int = MAX_HEADER_BYTES
    max_body_bytes: int = MAX_BODY
    idle_timeout: Optional[float] = IIS_CONNECTION_TIMEOUT
    header_wait_timeout: Optional[float] = IIS_CONNECTION_TIMEOUT
    handshake_timeout: Optional[float] = 60.0
    max_connections_per_address: Optional[int] = None
    output_high_water: Optional[int] = OUTPUT_HIGH_WATER
    output_low_water: Optional[int] = OUTPUT_LOW_WATER
    send_timeout: Optional[float] = IIS_CONNECTION_TIMEOUT


# ---- actions for the I/O layer ----------------------------------------------------------------------------------
# Slotted dataclasses, treated as immutable (a few are made per request; frozen ones cost twice as much to make).
@dataclass(slots=True)
class Send:
    data: bytes


@dataclass(slots=True)
class Close:
    reason: str = ""
    limit: str = ""     # the ConnectionLimits field that fired ("" for an ordinary close)


@dataclass(slots=True)
class Abort:
    reason: str = ""
    limit: str = ""     # set when a rule of the server (not the peer) ends the connection, as for Close


@dataclass(slots=True)
class StartTimer:
    name: str
    seconds: float


@dataclass(slots=True)
class CancelTimer:
    name: str


@dataclass(slots=True)
class Deliver:
    request: HttpRequest


@dataclass(slots=True)
class RefuseTooLarge:
    request: HttpRequest
    size: int


@dataclass(slots=True)
class RefuseMalformed:
    status: int
    message: str


@dataclass(slots=True)
class HandOffTunnel:
    request: HttpRequest


@dataclass(slots=True)
class TunnelBytes:
    data: bytes


@dataclass(slots=True)
class PauseReading:
    pass


@dataclass(slots=True)
class ResumeReading:
    pass


Action = Union[Send, Close, Abort, StartTimer, CancelTimer, Deliver, RefuseTooLarge, RefuseMalformed, HandOffTunnel,
               TunnelBytes, PauseReading, ResumeReading]
