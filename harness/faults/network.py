"""Network faults: ports refused or black-holed, connections reset or stalled, and output that arrives late, slowly,
in slivers or cut short.

Port-level faults (refused, blackhole, and anything at connect) act before any name is known, so a fault scoped to
a host moves that host onto a loopback address of its own (see harness.services.listeners); DNS hands that address
out. Output faults see what the server writes (plain HTTP, inside TLS) and are scoped by that address, the SNI, or
the Host header. `port` picks the listener: 443 is the HTTPS one and 80 the plain-HTTP redirect one, whatever port
numbers they really use (a real port number works too).
"""
from __future__ import annotations

from typing import Optional, Tuple

from harness.faults.base import HostScoped, Param, register
from harness.protocols.connection import ConnectAction, WritePlan
from harness.protocols.http import ConnectionInfo

PORT_HELP = ("the listener: 443 = HTTPS, 80 = the plain-HTTP redirect listener, whatever ports they really use; "
             "or the real port number")


class ConnectionLevel(HostScoped):
    """A fault decided per connection, before any user is known."""
    user_refusal = "this fault acts on connections, before any user is known"


class _NetworkFault(ConnectionLevel):
    params = {"port": Param(int, 443, PORT_HELP)}

    def covers_port(self, info: ConnectionInfo) -> bool:
        """Whether a connection arrived on the port this fault is about (its number, or the 443/80 it stands for)."""
        port = self.values["port"]
        return port == info.local[1] or port == (443 if info.tls else 80)


def split_response(data: bytes) -> Optional[Tuple[bytes, bytes]]:
    """(head, body) when ``data`` is a whole final HTTP response as the web edge writes it, else None."""
    if not data.startswith(b"HTTP/1.") or data[9:10] == b"1":  # not a response, or a 1xx interim one
        return None
    end = data.find(b"\r\n\r\n")
    return (data[:end + 4], data[end + 4:]) if end >= 0 else None


@register
class Refused(_NetworkFault):
    name = "network.refused"
    summary = "The port is closed: connecting is refused (TCP RST, ECONNREFUSED)."
    description = ("Nothing listens on the port: IIS stopped, the site binding removed, or a firewall that rejects "
                   "rather than drops. The port stays bound, so nothing else takes it.")
    symptoms = {"python-socket": "ConnectionRefusedError: [Errno 111] Connection refused",
                "curl": "exit 7: Failed to connect to <host> port <port> ...: Couldn't connect to server",
                "requests": "requests.exceptions.ConnectionError: ... [Errno 111] Connection refused"}
    analyzer = {"fails_at": "port", "reason": "connection-refused"}

    def on_accept(self, scope, info):
        return ConnectAction("refuse") if self.covers_port(info) else None


@register
class Blackhole(_NetworkFault):
    name = "network.blackhole"
    summary = "Connecting never completes: every SYN is silently dropped, as by a firewall DROP rule."
    description = ("The classic blocked port: no answer at all, so the client waits for its whole connect timeout. "
                   "Done without root or firewall rules: the port listens with a backlog that one connection of "
                   "the mock's own fills, so the kernel drops every further SYN.")
    symptoms = {"python-socket": "TimeoutError: timed out (socket timeout), or [Errno 110] Connection timed out",
                "curl": "exit 28: Failed to connect to <host> port <port> after N ms: Timeout was reached",
                "requests": "requests.exceptions.ConnectTimeout"}
    analyzer = {"fails_at": "port", "reason": "connection-timeout"}

    def on_accept(self, scope, info):
        return ConnectAction("blackhole") if self.covers_port(info) else None


@register
class Reset(_NetworkFault):
    name = "network.reset"
    summary = "The connection is reset (TCP RST): at connect, after N bytes of output, or in the middle of a response."
    description = ("A load balancer or IPS tearing connections down. `when: connect` resets as soon as the "
                   "connection is accepted (before the TLS handshake); `after-bytes` lets `bytes` bytes of HTTP "
                   "output through (counted inside TLS) and then resets; `mid-response` sends the headers and half "
                   "the body of the first response with a body, then resets.")
    symptoms = {"python-socket": "ConnectionResetError: [Errno 104] Connection reset by peer",
                "python-ssl": "ConnectionResetError during the handshake; after it, ssl.SSLEOFError: EOF occurred in "
                              "violation of protocol",
                "curl": "at connect: exit 7 (Couldn't connect) or 35 (reset during the TLS handshake); later: "
                        "exit 56: Recv failure: Connection reset by peer",
                "requests": "requests.exceptions.ConnectionError: ('Connection aborted.', ConnectionResetError(104))"}
    analyzer = {"fails_at": "port", "reason": "connection-reset"}
    params = {**_NetworkFault.params,
              "when": Param(str, "connect", "when the RST comes", ("connect", "after-bytes", "mid-response")),
              "bytes": Param(int, 0, "with `when: after-bytes`: how many bytes of output get through first")}

    def on_accept(self, scope, info):
        if self.values["when"] == "connect" and self.covers_port(info):
            return ConnectAction("reset")
        return None

    def on_write(self, scope, info, data):
        when = self.values["when"]
        if when == "connect" or not self.covers_port(info):
            return None
        if when == "after-bytes":
            allowed = self.values["bytes"] - info.bytes_out
            return WritePlan(((0.0, data[:max(allowed, 0)]),), "reset") if len(data) >= allowed else None
        response = split_response(data)
        if response is None or not response[1]:
            return None
        head, body = response
        return WritePlan(((0.0, head + body[:len(body) // 2]),), "reset")


@register
class Stall(_NetworkFault):
    name = "network.stall"
    summary = "The server accepts the connection (or reads the request) and then never answers."
    description = ("A hung IIS worker or a proxy that lost its back end: TCP connects, then silence. `when: "
                   "connect` never starts the TLS handshake; `when: response` reads the request and sends nothing. "
                   "After `seconds` the connection is dropped (0: held until the client gives up).")
    symptoms = {"python-ssl": "TimeoutError: _ssl.c: The handshake operation timed out (when: connect)",
                "python-socket": "TimeoutError: timed out (reading the response)",
                "curl": "exit 28: Operation timed out after N milliseconds with 0 bytes received",
                "requests": "requests.exceptions.ReadTimeout"}
    analyzer = {"fails_at": "port", "reason": "no-response"}   # with `when: response`: autodiscover, timeout
    params = {**_NetworkFault.params,
              "when": Param(str, "connect", "where the silence starts", ("connect", "response")),
              "seconds": Param(float, 0.0, "drop the connection after this long (0: never)")}

    def on_accept(self, scope, info):
        if self.values["when"] == "connect" and self.covers_port(info):
            return ConnectAction("stall", self.values["seconds"])
        return None

    def on_write(self, scope, info, data):
        if self.values["when"] != "response" or not self.covers_port(info) or split_response(data) is None:
            return None
        seconds = self.values["seconds"]
        return WritePlan(((seconds, b""),), "close") if seconds else WritePlan((), "hold")


@register
class Latency(_NetworkFault):
    name = "network.latency"
    summary = "Every write reaches the client late: a fixed delay plus seeded jitter."
    description = ("A long or congested path (satellite, VPN hairpin, overloaded proxy). Each response, and each "
                   "RPC over HTTP PDU, waits `ms` plus a uniform draw in [-jitter_ms, +jitter_ms] from the run's "
                   "seed; order is kept.")
    symptoms = {"curl": "succeeds; %{time_starttransfer} grows by the delay",
                "requests": "succeeds slowly; ReadTimeout when its timeout is below the delay"}
    params = {**_NetworkFault.params,
              "ms": Param(float, 500.0, "the delay in milliseconds"),
              "jitter_ms": Param(float, 0.0, "uniform jitter either side of `ms`, drawn from the seed")}

    def on_write(self, scope, info, data):
        if not self.covers_port(info):
            return None
        jitter = self.values["jitter_ms"]
        delay = self.values["ms"] + (self.rng.uniform(-jitter, jitter) if jitter else 0.0)
        return WritePlan(((max(delay, 0.0) / 1000, data),))


@register
class Bandwidth(_NetworkFault):
    name = "network.bandwidth"
    summary = "Output trickles at a fixed rate (bytes per second)."
    description = "A thin or throttled link: large answers (an OAB, a big Autodiscover reply) take their time."
    symptoms = {"curl": "succeeds; %{speed_download} stays at about the rate",
                "requests": "succeeds slowly; ReadTimeout when a read waits longer than its timeout"}
    params = {**_NetworkFault.params, "bytes_per_second": Param(int, 10000, "the rate", minimum=1)}

    def on_write(self, scope, info, data):
        if not self.covers_port(info):
            return None
        rate = self.values["bytes_per_second"]
        size = max(1, rate // 20)  # about 20 pieces a second
        pieces = [data[at:at + size] for at in range(0, len(data), size)]
        return WritePlan(tuple((len(piece) / rate, piece) for piece in pieces))


@register
class Slicer(_NetworkFault):
    name = "network.slicer"
    summary = "Output arrives in tiny writes (each its own TLS record), a few bytes at a time."
    description = ("Fragmentation stress: headers split mid-line, XML split mid-tag, TLS records of a few bytes. "
                   "Piece sizes are `average_size` +/- `size_variation`, drawn from the run's seed. A correct client "
                   "reassembles and works.")
    symptoms = {"curl": "succeeds", "requests": "succeeds",
                "naive parsers": "fail on a header or an XML document split across reads"}
    params = {**_NetworkFault.params,
              "average_size": Param(int, 16, "average piece size in bytes"),
              "size_variation": Param(int, 8, "pieces vary by up to this many bytes either way"),
              "delay_ms": Param(float, 1.0, "pause between pieces, in milliseconds")}

    def on_write(self, scope, info, data):
        if not self.covers_port(info):
            return None
        average, variation = self.values["average_size"], self.values["size_variation"]
        pieces, at = [], 0
        while at < len(data):
            size = max(1, average + self.rng.randint(-variation, variation))
            pieces.append(((self.values["delay_ms"] / 1000) if pieces else 0.0, data[at:at + size]))
            at += size
        return WritePlan(tuple(pieces))


@register
class TruncateBody(_NetworkFault):
    name = "network.truncate-body"
    summary = "Responses stop short: the headers promise the whole body, `keep` bytes of it arrive, then the close."
    description = ("A proxy or a crashing worker cutting the answer: Content-Length says one thing, the connection "
                   "closes (TLS close_notify, FIN) after `keep` bytes of body. Bodies no longer than `keep` pass.")
    symptoms = {"curl": "exit 18: transfer closed with N bytes remaining to read",
                "requests": "requests.exceptions.ChunkedEncodingError: ('Connection broken: IncompleteRead(...)')",
                "python-http.client": "http.client.IncompleteRead"}
    analyzer = {"fails_at": "autodiscover", "reason": "connection-closed"}
    params = {**_NetworkFault.params, "keep": Param(int, 100, "bytes of each body that get through")}

    def on_write(self, scope, info, data):
        response = split_response(data) if self.covers_port(info) else None
        if response is None or len(response[1]) <= self.values["keep"]:
            return None
        head, body = response
        return WritePlan(((0.0, head + body[:self.values["keep"]]),), "close")


@register
class CloseAfterHeaders(_NetworkFault):
    name = "network.close-after-headers"
    summary = "Responses end right after their headers: the status line arrives, the body never does."
    description = "The extreme of a truncated answer: the client gets a status and a Content-Length, then the close."
    symptoms = {"curl": "exit 18: transfer closed with N bytes remaining to read",
                "requests": "requests.exceptions.ChunkedEncodingError: ('Connection broken: IncompleteRead(0 bytes "
                            "read, N more expected)')"}
    analyzer = {"fails_at": "autodiscover", "reason": "connection-closed"}

    def on_write(self, scope, info, data):
        response = split_response(data) if self.covers_port(info) else None
        if response is None or not response[1]:
            return None
        return WritePlan(((0.0, response[0]),), "close")
