"""Load generators for the benchmarks: wrk (Debian package `wrk`) and a built-in one.

Both keep C connections to one 127.0.0.1 port busy with one request in flight each, for a bounded time, and count
completed answers, failed ones and the bytes of the answers.

The built-in generator is a single-threaded selector loop over non-blocking TLS sockets. It is what measures what
wrk cannot: a full TLS handshake per request (wrk keeps the TLS session when it reconnects, so its "new connection"
is a resumed handshake; here every connection starts without a session, and the resumed ones are counted to prove
it), and connection-bound authentication (NTLM), through a blocking ``prepare`` step on each new connection before
the clock starts.
"""
from __future__ import annotations

import json
import os
import selectors
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional

HANDSHAKE_STALL_SECONDS = 10.0  # no event for this long ends a run: a stalled server is a failure, not a wait


@dataclass
class LoadResult:
    requests: int        # completed answers (any status)
    errors: int          # answers other than 200, plus connections that failed
    seconds: float
    answer_bytes: int    # head + body bytes of the completed answers
    resumed: int = 0     # TLS handshakes that resumed a session (built-in generator only)


def request_bytes(method: str, path: str, headers: Dict[str, str], body: bytes) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body


def wrk_path() -> Optional[str]:
    return shutil.which("wrk")


WRK_SCRIPT = """
wrk.method = "POST"
local handle = io.open(@BODY_FILE@, "rb")
wrk.body = handle:read("*a")
handle:close()
@HEADERS@
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKRESULT %d %d %d %d %d\\n", summary.requests, summary.duration, summary.bytes,
                         e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def run_wrk(port: int, path: str, headers: Dict[str, str], body: bytes, *, connections: int, seconds: float,
            threads: int = 1) -> LoadResult:
    """wrk -t1 -cC -dS over HTTPS keep-alive, POST with ``body`` and ``headers`` (through a generated Lua script)."""
    with tempfile.TemporaryDirectory(prefix="mockex-wrk-") as workdir:
        body_file, script_file = os.path.join(workdir, "body"), os.path.join(workdir, "post.lua")
        with open(body_file, "wb") as out:
            out.write(body)
        # JSON string literals are Lua string literals for ASCII text.
        header_lines = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items())
        with open(script_file, "w", encoding="utf-8") as out:
            out.write(WRK_SCRIPT.replace("@BODY_FILE@", json.dumps(body_file)).replace("@HEADERS@", header_lines))
        command = [wrk_path() or "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                   "--timeout", "5s", "-s", script_file, f"https://127.0.0.1:{port}{path}"]
        finished = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    line = next((x for x in finished.stdout.splitlines() if x.startswith("WRKRESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({finished.returncode}): {finished.stdout[-500:]} {finished.stderr[-500:]}")
    requests, micros, size, socket_errors, status_errors = (int(x) for x in line.split()[1:])
    return LoadResult(requests, socket_errors + status_errors, micros / 1e6, size)


class _Connection:
    __slots__ = ("sock", "stage", "buffer", "need", "status")

    def __init__(self, sock):
        self.sock = sock
        self.stage = "connect"
        self.buffer = bytearray()
        self.need: Optional[int] = None
        self.status = 0


def run_builtin(port: int, request: bytes, *, connections: int, seconds: float, new_connection_per_request=False,
                prepare: Optional[Callable[[ssl.SSLSocket], None]] = None) -> LoadResult:
    """Keep ``connections`` TLS connections busy with ``request`` for ``seconds``.

    ``new_connection_per_request``: close after each answer and open a new connection with a full handshake (the
    request should say ``Connection: close``). ``prepare`` runs blocking on each connection before the clock starts
    (e.g. an NTLM handshake); it only goes with keep-alive, as its state lives on the connection."""
    if prepare is not None and new_connection_per_request:
        raise ValueError("prepare needs keep-alive connections")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # as wrk: the client's verification is not what is measured
    address = ("127.0.0.1", port)
    selector = selectors.DefaultSelector()
    result = LoadResult(0, 0, 0.0, 0)

    def open_connection() -> None:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.setblocking(False)
        raw.connect_ex(address)
        selector.register(raw, selectors.EVENT_WRITE, _Connection(raw))

    def send(conn: _Connection) -> None:
        conn.stage, conn.need = "send", None
        conn.buffer.clear()
        try:
            conn.sock.send(request)
        except ssl.SSLWantWriteError:
            selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
            return
        except ssl.SSLWantReadError:
            selector.modify(conn.sock, selectors.EVENT_READ, conn)
            return
        conn.stage = "read"
        selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def fail(conn: _Connection, reopen: bool = True) -> None:
        result.errors += 1
        try:
            selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass  # it failed between two registrations
        conn.sock.close()
        if reopen and prepare is None and time.perf_counter() < deadline:
            open_connection()  # keep C connections busy; a prepared connection cannot be replaced mid-run

    def answered(conn: _Connection) -> bool:
        """Read what is there; True once the whole answer is in."""
        closed = False
        while not closed:
            try:
                data = conn.sock.recv(262144)
            except ssl.SSLWantReadError:
                break
            closed = not data  # the server may close right after a `Connection: close` answer
            conn.buffer += data
        if conn.need is None:
            end = conn.buffer.find(b"\r\n\r\n")
            if end < 0:
                if closed:
                    raise ConnectionError("closed before the whole answer")
                return False
            head = bytes(conn.buffer[:end]).decode("latin-1")
            conn.status = int(head[9:12])
            length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n")[1:]
                           if line.lower().startswith("content-length:")), 0)
            conn.need = end + 4 + length
        if closed and len(conn.buffer) < conn.need:
            raise ConnectionError("closed before the whole answer")
        return len(conn.buffer) >= conn.need

    ready = []
    if prepare is not None:
        for _ in range(connections):
            sock = context.wrap_socket(socket.create_connection(address, timeout=10))
            prepare(sock)
            sock.setblocking(False)
            ready.append(_Connection(sock))
    started = time.perf_counter()
    deadline = started + seconds
    for conn in ready:
        selector.register(conn.sock, selectors.EVENT_WRITE, conn)
        send(conn)
    if prepare is None:
        for _ in range(connections):
            open_connection()
    while selector.get_map():
        events = selector.select(timeout=HANDSHAKE_STALL_SECONDS)
        if not events:  # stalled: count what is left as failed and let go of it
            for key in list(selector.get_map().values()):
                fail(key.data, reopen=False)
            break
        for key, _mask in events:
            conn = key.data
            try:
                if conn.stage == "connect":
                    error = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if error:
                        raise ConnectionError(os.strerror(error))
                    selector.unregister(conn.sock)
                    conn.sock = context.wrap_socket(conn.sock, do_handshake_on_connect=False)
                    conn.stage = "handshake"
                    selector.register(conn.sock, selectors.EVENT_WRITE, conn)
                if conn.stage == "handshake":
                    try:
                        conn.sock.do_handshake()
                    except ssl.SSLWantReadError:
                        selector.modify(conn.sock, selectors.EVENT_READ, conn)
                        continue
                    except ssl.SSLWantWriteError:
                        selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
                        continue
                    result.resumed += conn.sock.session_reused
                    send(conn)
                elif conn.stage == "send":
                    send(conn)
                elif conn.stage == "read" and answered(conn):
                    result.requests += 1
                    result.answer_bytes += conn.need or 0
                    result.errors += conn.status != 200
                    more = time.perf_counter() < deadline
                    if new_connection_per_request or not more:
                        selector.unregister(conn.sock)
                        conn.sock.close()
                        if more:
                            open_connection()
                    else:
                        send(conn)
            except (OSError, ValueError):
                fail(conn)
    result.seconds = time.perf_counter() - started
    return result
