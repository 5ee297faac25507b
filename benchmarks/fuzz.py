"""Examples per second of `mockex fuzz` on the Autodiscover layer: an in-process client (one POX POST with Basic
auth over verified TLS, in Python) and a subprocess client (examples/buggy-clients/careful.py). Each run is bounded
by its example count. Besides the wall-clock rate (which depends on what else the machine runs) it prints the CPU
milliseconds one example costs the fuzzer (engine, Hypothesis and the in-process client) and the mock (its start
subtracted: a one-example run is measured first), which do not. Run in a private network namespace:

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


def in_process(served) -> None:
    raw = socket.create_connection((served.host, served.https_port), 5)
    with context(served.ca_file).wrap_socket(raw, server_hostname=f"autodiscover.{served.domain}") as tls:
        body = REQUEST.format(email=served.email).encode()
        token = base64.b64encode(f"{served.email}:{served.password}".encode()).decode()
        tls.sendall(f"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: autodiscover.{served.domain}\r\n"
                    f"Authorization: Basic {token}\r\nContent-Type: text/xml\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n".encode() + body)
        while tls.recv(65536):
            pass


def cpu() -> tuple:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def measured(client, examples: int) -> tuple:
    """(report, fuzzer CPU ms per example, mock-and-subprocess CPU ms per example)."""
    own0, children0 = cpu()
    fuzz_client(client, max_examples=1, seed=1, timeout=10, expected_errors=(OSError,))
    own1, children1 = cpu()
    report = fuzz_client(client, max_examples=examples, seed=1, timeout=10, expected_errors=(OSError,))
    own2, children2 = cpu()
    extra = examples - 1
    return (report, ((own2 - own1) - (own1 - own0)) * 1000 / extra,
            ((children2 - children1) - (children1 - children0)) * 1000 / extra)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    careful = (f"{sys.executable} {REPO}/examples/buggy-clients/careful.py --url {{autodiscover_url}} --host {{host}} "
               "--https-port {https_port} --http-port {http_port} --ca {ca_file} --email {email} "
               "--password {password}")
    for name, client, examples in (("in-process", in_process, count), ("subprocess", careful, max(count // 4, 10))):
        report, fuzzer_ms, mock_ms = measured(client, examples)
        print(f"{name:<11} {report.examples} examples in {report.seconds:.2f} s: {report.rate:.1f} examples/s, "
              f"{len(report.findings)} findings; CPU per example: fuzzer {fuzzer_ms:.2f} ms, "
              f"mock{' + client' if name == 'subprocess' else ''} {mock_ms:.2f} ms", flush=True)


if __name__ == "__main__":
    main()
