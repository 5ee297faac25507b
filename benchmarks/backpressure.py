"""Backpressure: one TLS connection pipelines N Basic-authenticated POX requests and reads nothing for --hold
seconds, then reads every answer. Prints the server's RSS at start, its peak while the client does not read and at
the end, how many requests the client got onto the wire meanwhile, and whether every answer came back, in order.

    python benchmarks/backpressure.py [--requests 60000] [--hold 20] [--checkout PATH]

--checkout runs the server from another checkout (e.g. the main branch, to compare). Loopback only; the client is
one thread with a non-blocking socket, and every phase is bounded in time (--hold, then at most --read-seconds).
"""
from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from soak import request_bytes, rss_kib  # noqa: E402 - the sibling benchmark's POX request and RSS reading


def start_server(checkout: str) -> Tuple[subprocess.Popen, int]:
    state = tempfile.mkdtemp(prefix="mockex-backpressure-")
    print(f"state                 {state}", flush=True)
    env = dict(os.environ, PYTHONPATH=checkout)
    server = subprocess.Popen([sys.executable, "-m", "harness", "serve", "--state-dir", state, "--https-port", "0",
                               "--http-port", "0", "--dns-port", "0", "--quiet"], cwd=checkout, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    endpoints_path = os.path.join(state, "endpoints.json")
    deadline = time.monotonic() + 120
    while not os.path.exists(endpoints_path):
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("server did not start: " + server.stderr.read().decode()[-2000:])
        time.sleep(0.05)
    time.sleep(0.2)   # endpoints.json is written as the listeners come up
    with open(endpoints_path) as handle:
        return server, json.load(handle)["https"]["port"]


def count_answers(data: bytearray) -> List[int]:
    """The statuses of the whole responses at the start of ``data``, which loses them."""
    statuses, offset = [], 0
    while True:
        end = data.find(b"\r\n\r\n", offset)
        if end < 0:
            break
        head = bytes(data[offset:end]).lower()
        length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
        if len(data) < end + 4 + length:
            break
        statuses.append(int(head[9:12]))
        offset = end + 4 + length
    del data[:offset]
    return statuses


def run_client(pid: int, port: int, requests: int, hold: float, read_seconds: float) -> Dict[str, Any]:
    """Send without reading for ``hold`` seconds, then read (and send the rest) until every answer is in."""
    payload = request_bytes() * requests
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock = context.wrap_socket(raw, server_hostname="autodiscover.contoso.test")
    sock.setblocking(False)
    figures: Dict[str, Any] = {"rss_start": rss_kib(pid), "closed": ""}
    sent, peak, started = 0, figures["rss_start"], time.monotonic()

    def send_some() -> None:
        nonlocal sent
        try:
            sent += sock.send(payload[sent:sent + 65536]) if sent < len(payload) else 0
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            pass

    while time.monotonic() - started < hold:          # send, never read
        send_some()
        select.select([], [sock] if sent < len(payload) else [], [], 0.05)
        peak = max(peak, rss_kib(pid))
    figures.update(rss_held=rss_kib(pid), sent_held=sent)
    statuses: List[int] = []
    pending = bytearray()
    reading = time.monotonic()
    while len(statuses) < requests and time.monotonic() - reading < read_seconds and not figures["closed"]:
        send_some()
        select.select([sock], [sock] if sent < len(payload) else [], [], 0.05)
        for _ in range(64):   # a TLS recv gives one record: take what is there, but count it before it piles up
            try:
                chunk = sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if not chunk:
                figures["closed"] = f"closed by the server {time.monotonic() - reading:.1f} s into reading"
                break
            pending += chunk
        statuses += count_answers(pending)
        peak = max(peak, rss_kib(pid))
    sock.close()
    figures.update(read_seconds=time.monotonic() - reading, rss_end=rss_kib(pid), peak=peak, statuses=statuses)
    return figures


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=60_000)
    parser.add_argument("--hold", type=float, default=20.0, help="seconds the client sends without reading")
    parser.add_argument("--read-seconds", type=float, default=300.0, help="bound on the reading phase")
    parser.add_argument("--checkout", default=REPO)
    args = parser.parse_args(argv)
    server, port = start_server(os.path.abspath(args.checkout))
    try:
        figures = run_client(server.pid, port, args.requests, args.hold, args.read_seconds)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    size, statuses = len(request_bytes()), figures["statuses"]
    print(f"checkout              {os.path.abspath(args.checkout)}")
    print(f"requests              {args.requests} pipelined on one TLS connection ({size} bytes each)")
    print(f"sent while not read   {figures['sent_held'] // size} requests in {args.hold:.0f} s")
    print(f"RSS MiB start/held/peak/end  {figures['rss_start'] / 1024:.0f} / {figures['rss_held'] / 1024:.0f} / "
          f"{figures['peak'] / 1024:.0f} / {figures['rss_end'] / 1024:.0f}")
    print(f"answers read          {len(statuses)} in {figures['read_seconds']:.1f} s, statuses "
          f"{sorted(set(statuses))} {figures['closed']}")
    print(f"server exit           {server.returncode}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
