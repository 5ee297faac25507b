"""Soak: many well-behaved keep-alive clients for a while, beside slow (one byte at a time) and non-reading clients
and a storm of SIGHUP resets. Prints what a long run needs to stay healthy: requests/s, errors of the well-behaved
clients, the server's RSS at start/peak/end, its open file descriptors, transcript bytes per request, and how many
slow/non-reading connections the server closed.

    python benchmarks/soak.py [--clients 200] [--seconds 180] [--slow 50] [--silent 20] [--hup-every 5]

Loopback only; every loop is bounded by --seconds (and a hard cap of one hour). Well-behaved clients are threads
driving Basic-authenticated POX requests over TLS keep-alive connections.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

POX = (b'<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
       b'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>alice@contoso.test</EMailAddress>'
       b'<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a'
       b'</AcceptableResponseSchema></Request></Autodiscover>')
HARD_CAP_SECONDS = 3600


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def request_bytes() -> bytes:
    token = base64.b64encode(b"CONTOSO\\alice:P@ssw0rd-alice").decode()
    return (f"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: autodiscover.contoso.test\r\n"
            f"Authorization: Basic {token}\r\nContent-Type: text/xml\r\nContent-Length: {len(POX)}\r\n\r\n"
            ).encode() + POX


def read_response(sock: ssl.SSLSocket) -> int:
    """Read one response with a Content-Length body; returns its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        body += chunk
    return int(head.split()[1])


def well_behaved(port: int, ca: str, until: float, counts: Dict[str, int], lock: threading.Lock) -> None:
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    payload = request_bytes()
    while time.monotonic() < until:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
                    context.wrap_socket(raw, server_hostname="autodiscover.contoso.test") as sock:
                while time.monotonic() < until:
                    sock.sendall(payload)
                    status = read_response(sock)
                    with lock:
                        counts["ok" if status == 200 else "bad_status"] += 1
        except (OSError, ConnectionError, ValueError, StopIteration):
            with lock:
                counts["errors"] += 1


def slow_client(port: int, until: float, counts: Dict[str, int], lock: threading.Lock) -> None:
    """Plain TCP to the TLS port, one byte every 10 s (a slowloris): the server should close it."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            while time.monotonic() < until:
                sock.sendall(b"\x16")
                sock.settimeout(10)
                try:
                    if sock.recv(1) == b"":
                        with lock:
                            counts["slow_closed"] += 1
                        return
                except socket.timeout:
                    continue
    except OSError:
        with lock:
            counts["slow_closed"] += 1


def silent_client(port: int, ca: str, until: float, counts: Dict[str, int], lock: threading.Lock) -> None:
    """Pipelines requests and never reads the answers: the server must not buffer without bound."""
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    payload = request_bytes() * 50
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname="autodiscover.contoso.test") as sock:
            sent = 0
            while time.monotonic() < until and sent < 20_000:
                sock.sendall(payload)
                sent += 50
    except OSError:
        with lock:
            counts["silent_stopped"] += 1


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--slow", type=int, default=50)
    parser.add_argument("--silent", type=int, default=20)
    parser.add_argument("--hup-every", type=float, default=5.0, help="seconds between SIGHUP resets (0: none)")
    args = parser.parse_args(argv)
    seconds = min(args.seconds, HARD_CAP_SECONDS)
    state = tempfile.mkdtemp(prefix="mockex-soak-")
    server = subprocess.Popen([sys.executable, "-m", "harness", "serve", "--state-dir", state, "--https-port", "0",
                               "--http-port", "0", "--dns-port", "0", "--quiet"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    endpoints_path = os.path.join(state, "endpoints.json")
    deadline = time.monotonic() + 120
    while not os.path.exists(endpoints_path):
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("server did not start: " + server.stderr.read().decode()[-2000:])
        time.sleep(0.05)
    with open(endpoints_path) as handle:
        endpoints = json.load(handle)
    port, ca = endpoints["https"]["port"], endpoints["ca_file"]
    counts = {"ok": 0, "bad_status": 0, "errors": 0, "slow_closed": 0, "silent_stopped": 0}
    lock = threading.Lock()
    started = time.monotonic()
    until = started + seconds
    rss_start, peak, fds_peak = rss_kib(server.pid), 0, 0
    threads = [threading.Thread(target=well_behaved, args=(port, ca, until, counts, lock), daemon=True)
               for _ in range(args.clients)]
    threads += [threading.Thread(target=slow_client, args=(port, until, counts, lock), daemon=True)
                for _ in range(args.slow)]
    threads += [threading.Thread(target=silent_client, args=(port, ca, until, counts, lock), daemon=True)
                for _ in range(args.silent)]
    for thread in threads:
        thread.start()
    next_hup, last_report = started + args.hup_every, started
    while time.monotonic() < until:
        time.sleep(0.5)
        peak, fds_peak = max(peak, rss_kib(server.pid)), max(fds_peak, fd_count(server.pid))
        if args.hup_every and time.monotonic() >= next_hup:
            server.send_signal(signal.SIGHUP)
            next_hup += args.hup_every
        if time.monotonic() - last_report >= 10:
            last_report = time.monotonic()
            print(f"  {last_report - started:5.0f}s  ok={counts['ok']} errors={counts['errors']} "
                  f"rss={rss_kib(server.pid) // 1024} MiB fds={fd_count(server.pid)}", flush=True)
    for thread in threads:
        thread.join(timeout=30)
    elapsed = time.monotonic() - started
    rss_end, fds_end = rss_kib(server.pid), fd_count(server.pid)
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=60)
    transcript_bytes = os.path.getsize(os.path.join(state, "transcript.jsonl"))
    print(f"clients={args.clients} slow={args.slow} silent={args.silent} seconds={elapsed:.0f}")
    print(f"requests/s            {counts['ok'] / elapsed:10.1f}")
    print(f"errors (well-behaved) {counts['errors'] + counts['bad_status']:10d}")
    print(f"RSS MiB start/peak/end {rss_start / 1024:.0f} / {peak / 1024:.0f} / {rss_end / 1024:.0f}")
    print(f"fds peak/end          {fds_peak} / {fds_end}")
    print(f"transcript bytes/req  {transcript_bytes / max(counts['ok'], 1):10.0f}")
    print(f"slow clients closed   {counts['slow_closed']} of {args.slow}")
    print(f"server exit           {server.returncode}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
