"""A raw RPC-over-HTTP client (MS-RPCH) on plain sockets: HTTPS channels to /rpc/rpcproxy.dll opened by hand
(Basic or NTLM), the CONN/A1 and CONN/B1 RTS PDUs, and a whole virtual connection opened the way impacket orders it.

The hostile-bytes tests (tests/test_rpc_e2e.py) send what they like on these channels; benchmarks/rpc.py holds idle
virtual connections open with them. It needs pyspnego (the ``test`` extra) for the NTLM leg, which is why it lives
here and not in harness.testing, the public helper users' suites import.
"""
from __future__ import annotations

import base64
import random
import socket
import ssl
import struct
from dataclasses import dataclass
from typing import List, Optional, Tuple

import spnego

from harness.org import load_org
from harness.protocols import rts
from harness.protocols.dcerpc import COMMON
from harness.protocols.rpcchannel import cookie_label

ORG = load_org()
IO_TIMEOUT = 5.0              # every socket read is bounded by this


def is_chunked(head: bytes) -> bool:
    """Whether an HTTP response head announces a chunked body (the exchange2013 OUT channel persona)."""
    return any(line.lower().replace(b" ", b"") == b"transfer-encoding:chunked" for line in head.split(b"\r\n"))


def chunk_spans(body: bytes) -> List[Tuple[int, int, int]]:
    """(start, end, announced size) of each chunk's data in a chunked ``body``, strictly parsed; a last chunk cut
    short (a reset mid-chunk) ends at the end of ``body``. Stops at the last-chunk (size 0)."""
    spans, offset = [], 0
    while offset < len(body):
        line_end = body.find(b"\r\n", offset)
        assert line_end > offset, f"no chunk size line at {offset}: {body[offset:offset + 16]!r}"
        size_text = body[offset:line_end]
        assert size_text.strip(b"0123456789abcdefABCDEF") == b"", f"bad chunk size line {size_text!r}"
        size = int(size_text, 16)
        if size == 0:
            break
        start = line_end + 2
        end = min(start + size, len(body))
        spans.append((start, end, size))
        if end < start + size:
            break
        assert body[end:end + 2] in (b"\r\n", b"\r", b""), f"chunk at {start} not closed by CRLF"
        offset = end + 2
    return spans


def dechunk(body: bytes) -> bytes:
    return b"".join(body[start:end] for start, end, _ in chunk_spans(body))


def tls_connect(host: str, ca_file: str, timeout: float = IO_TIMEOUT, port: int = 443) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=ca_file)
    raw = socket.create_connection((host, port), timeout=timeout)
    return context.wrap_socket(raw, server_hostname=ORG.mail_host)


class RawChannel:
    """One HTTPS connection to /rpc/rpcproxy.dll turned into an RPC_IN_DATA or RPC_OUT_DATA channel by hand:
    Basic (one request) or NTLM (401 with a challenge, then the authenticated request), up to `100 Continue`."""

    def __init__(self, host: str, ca_file: str, method: str, username: str, password: str, *, auth: str = "basic",
                 query: str = "EX01:6004", length: Optional[int] = None, timeout: float = IO_TIMEOUT,
                 port: int = 443):
        self.sock = tls_connect(host, ca_file, timeout, port)
        self.port = self.sock.getsockname()[1]            # how the transcript's "peer" names this connection
        self.buffer = bytearray()
        self.chunked = False       # the 200 announced a chunked body: read_* de-chunk it
        self._raw_body = bytearray()   # chunked: what came after the 200's head, still framed
        self._taken = 0                # chunked: de-chunked bytes already moved into buffer
        self.method, self.query = method, query
        length = (76 if method == "RPC_OUT_DATA" else 1 << 30) if length is None else length
        login = f"{ORG.netbios_domain}\\{username}"
        if auth == "basic":
            header = "Basic " + base64.b64encode(f"{login}:{password}".encode()).decode()
        else:
            header = self._ntlm(login, password)
        self._request(length, header)
        status = self.head()
        assert status == b"HTTP/1.1 100 Continue\r\n\r\n", status

    def _request(self, length: int, authorization: str, query: bool = True) -> None:
        target = f"/rpc/rpcproxy.dll?{self.query}" if query else "/rpc/rpcproxy.dll"
        self.sock.sendall(f"{self.method} {target} HTTP/1.1\r\nHost: {ORG.mail_host}\r\nUser-Agent: MSRPC\r\n"
                          f"Authorization: {authorization}\r\nContent-Length: {length}\r\n\r\n".encode())

    def _ntlm(self, login: str, password: str) -> str:
        """The NTLM leg as impacket does it: Type 1 without the query, then Type 3 (with it) on the same connection."""
        client = spnego.client(login, password, hostname=ORG.cas.fqdn, protocol="ntlm")
        self._request(0, "NTLM " + base64.b64encode(client.step()).decode(), query=False)
        head = self.head().decode("latin-1")
        assert head.startswith("HTTP/1.1 401"), head
        self.read_exact(int(next(line.split(":", 1)[1] for line in head.split("\r\n")
                                 if line.lower().startswith("content-length:"))))
        challenge = next(line.rsplit(" ", 1)[1] for line in head.split("\r\n")
                         if line.lower().startswith("www-authenticate: ntlm "))
        return "NTLM " + base64.b64encode(client.step(base64.b64decode(challenge))).decode()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        """Read more bytes into the buffer (de-chunked after a chunked head); False at end of stream."""
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            return False
        if self.chunked:
            self._raw_body += data
            self._take_chunked()
        else:
            self.buffer += data
        return bool(data)

    def _take_chunked(self) -> None:
        decoded = dechunk(bytes(self._raw_body))
        self.buffer += decoded[self._taken:]
        self._taken = len(decoded)

    def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            assert self._fill(), f"the connection closed inside an HTTP head: {bytes(self.buffer)!r}"
        end = self.buffer.index(b"\r\n\r\n") + 4
        head, self.buffer = bytes(self.buffer[:end]), self.buffer[end:]
        if head.startswith(b"HTTP/1.1 200 ") and is_chunked(head):
            self.chunked, self._raw_body, self.buffer = True, bytearray(self.buffer), bytearray()
            self._take_chunked()
        return head

    def read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            assert self._fill(), f"the connection closed after {len(self.buffer)} of {size} bytes"
        data, self.buffer = bytes(self.buffer[:size]), self.buffer[size:]
        return data

    def read_pdu(self) -> bytes:
        header = self.read_exact(COMMON.size)
        (frag_length,) = struct.unpack_from("<H", header, 8)
        return header + self.read_exact(frag_length - COMMON.size)

    def read_until_closed(self) -> bytes:
        """Everything the server still sends, up to its close; a socket timeout means it never closed."""
        while self._fill():
            pass
        data, self.buffer = bytes(self.buffer), bytearray()
        return data

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def conn_a1(vc: bytes, out_cookie: bytes) -> bytes:
    """CONN/A1 as impacket sends it: a 256 KiB receive window."""
    return rts.encode(rts.RtsPdu(rts.FLAG_NONE, (rts.Version(1), rts.Cookie(vc), rts.Cookie(out_cookie),
                                                 rts.ReceiveWindowSize(262144))))


def conn_b1(vc: bytes, in_cookie: bytes, group: bytes) -> bytes:
    return rts.encode(rts.RtsPdu(rts.FLAG_NONE, (rts.Version(1), rts.Cookie(vc), rts.Cookie(in_cookie),
                                                 rts.ChannelLifetime(1 << 30), rts.ClientKeepalive(300000),
                                                 rts.AssociationGroupId(group))))


@dataclass
class RawVirtualConnection:
    in_channel: RawChannel
    out_channel: RawChannel
    cookie: bytes

    @property
    def label(self) -> str:
        return cookie_label(self.cookie)

    def close(self) -> None:
        self.in_channel.close()
        self.out_channel.close()


def open_virtual_connection(host: str, ca_file: str, username: str, password: str, rng: random.Random, *,
                            auth: str = "basic", query: str = "EX01:6004",
                            timeout: float = IO_TIMEOUT, port: int = 443) -> RawVirtualConnection:
    """OUT channel + CONN/A1, then IN channel + CONN/B1, as impacket orders them; returns once CONN/A3 and
    CONN/C2 arrived on OUT (the virtual connection is open)."""
    vc, out_cookie, in_cookie, group = (rng.randbytes(16) for _ in range(4))
    out = RawChannel(host, ca_file, "RPC_OUT_DATA", username, password, auth=auth, query=query, timeout=timeout,
                     port=port)
    out.send(conn_a1(vc, out_cookie))
    status = out.head()
    assert status.startswith(b"HTTP/1.1 200 Success\r\n"), status
    assert rts.decode(out.read_pdu()).name == "CONN/A3"
    inbound = RawChannel(host, ca_file, "RPC_IN_DATA", username, password, auth=auth, query=query, timeout=timeout,
                         port=port)
    inbound.send(conn_b1(vc, in_cookie, group))
    assert rts.decode(out.read_pdu()).name == "CONN/C2"
    return RawVirtualConnection(inbound, out, vc)
