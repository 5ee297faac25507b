"""Examples per second of `mockex fuzz` on the Autodiscover layer: an in-process client (one POX POST with Basic
auth over verified TLS, in Python; once with a full TLS handshake per example, once resuming the TLS session as
browsers and .NET do) and a subprocess client (examples/buggy-clients/careful.py). Each run is bounded by its
example count.

The wall-clock rate depends on what else the machine runs. The CPU milliseconds one example costs the fuzzer (engine,
Hypothesis and the in-process client: this process) and the mock (its child; its start subtracted: a one-example run
is measured first) do not, so the script also prints the rates they imply on two idle cores:

- serial: 1000 / (fuzzer + mock) ms. The two sides take turns within an example (apply, then the client's
  request and the mock's answer), so this is the rate to expect; it is also the one-core rate.
- overlapped: 1000 / max(fuzzer, mock) ms, if the two sides ran entirely in parallel (each on its core): the
  ceiling of two cores, which the fuzzer reaches only where its own work (Hypothesis drawing the next example)
  overlaps the mock's (closing the last connection, writing the transcript).

With the subprocess client the mock's figure includes the client process (both are children of this one). Run in a
private network namespace:

    unshare -rn sh -c 'ip link set lo up && PYTHONPATH=$PWD python benchmarks/fuzz.py [EXAMPLES]'
"""
from __future__ import annotations

import base64
import os
import resource
import socket
import ssl
import sys
from functools import lru_cache
from typing import Dict, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from harness.fuzz import fuzz_client  # noqa: E402

REQUEST = ('<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
           'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>{email}</EMailAddress>'
           '<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/'
           '2006a</AcceptableResponseSchema></Request></Autodiscover>')


@lru_cache(maxsize=None)
def context(ca_file: str) -> ssl.SSLContext:
    """One verifying context per CA, as a real client keeps (loading the CA file is not the engine's cost)."""
    return ssl.create_default_context(cafile=ca_file)


def discover(served, session: Optional[ssl.SSLSession] = None) -> Optional[ssl.SSLSession]:
    """One POX request; the TLS session to resume next time (None when the server sent no ticket)."""
    raw = socket.create_connection((served.host, served.https_port), 5)
    # as curl and most HTTP clients: without it, a resumed TLS 1.2 handshake's last flight and the request wait on
    # Nagle for the server's delayed ACK (~40 ms an example)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with context(served.ca_file).wrap_socket(raw, server_hostname=f"autodiscover.{served.domain}",
                                             session=session) as tls:
        body = REQUEST.format(email=served.email).encode()
        token = base64.b64encode(f"{served.email}:{served.password}".encode()).decode()
        tls.sendall(f"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: autodiscover.{served.domain}\r\n"
                    f"Authorization: Basic {token}\r\nContent-Type: text/xml\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n".encode() + body)
        while tls.recv(65536):
            pass
        return tls.session   # TLS 1.3 tickets come after the handshake: read once the answer is in


def in_process(served) -> None:
    discover(served)


_sessions: Dict[tuple, ssl.SSLSession] = {}


def in_process_resumed(served) -> None:
    """As in_process, resuming the last session with this mock (a session of another server is not offered)."""
    key = (served.host, served.https_port, served.ca_file)
    session = discover(served, _sessions.get(key))
    if session is not None:
        _sessions[key] = session


def cpu() -> tuple:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def measured(client, examples: int) -> tuple:
    """(report, fuzzer CPU ms per example, mock-and-subprocess CPU ms per example). The mock's CPU is counted when
    it has exited (RUSAGE_CHILDREN), so each run is a whole fuzz_client call."""
    own0, children0 = cpu()
    fuzz_client(client, max_examples=1, seed=1, timeout=10, expected_errors=(OSError,))
    own1, children1 = cpu()
    report = fuzz_client(client, max_examples=examples, seed=1, timeout=10, expected_errors=(OSError,))
    own2, children2 = cpu()
    extra = report.examples - 1
    return (report, ((own2 - own1) - (own1 - own0)) * 1000 / extra,
            ((children2 - children1) - (children1 - children0)) * 1000 / extra)


def load() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    careful = (f"{sys.executable} {REPO}/examples/buggy-clients/careful.py --url {{autodiscover_url}} --host {{host}} "
               "--https-port {https_port} --http-port {http_port} --ca {ca_file} --email {email} "
               "--password {password}")
    print(f"{os.cpu_count()} CPUs; load average (1/5/15 min) at the start: {load()}", flush=True)
    runs = (("in-process", in_process, count), ("in-process, TLS resumed", in_process_resumed, count),
            ("subprocess", careful, max(count // 8, 10)))
    for name, client, examples in runs:
        report, fuzzer_ms, mock_ms = measured(client, examples)
        mock = "mock + client" if name == "subprocess" else "mock"
        print(f"{name}: {report.examples} examples, {len(report.findings)} findings\n"
              f"  CPU per example: fuzzer {fuzzer_ms:.2f} ms, {mock} {mock_ms:.2f} ms\n"
              f"  implied on 2 idle cores: {1000 / (fuzzer_ms + mock_ms):.0f} examples/s serial (sides take turns), "
              f"{1000 / max(fuzzer_ms, mock_ms):.0f} examples/s overlapped (ceiling)\n"
              f"  wall clock: {report.seconds:.2f} s, {report.rate:.1f} examples/s at load average {load()}",
              flush=True)


if __name__ == "__main__":
    main()
