"""Examples per second of `mockex fuzz` on the Autodiscover layer: an in-process client (one POX POST with Basic
auth over verified TLS, in Python) and a subprocess client (examples/buggy-clients/careful.py). Each run is bounded
by its example count. Run in a private network namespace:

    unshare -rn sh -c 'ip link set lo up && PYTHONPATH=$PWD python benchmarks/fuzz.py [EXAMPLES]'
"""
from __future__ import annotations

import base64
import os
import socket
import ssl
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from harness.fuzz import fuzz_client  # noqa: E402

REQUEST = ('<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
           'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>{email}</EMailAddress>'
           '<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/'
           '2006a</AcceptableResponseSchema></Request></Autodiscover>')


def in_process(served) -> None:
    context = ssl.create_default_context(cafile=served.ca_file)
    raw = socket.create_connection((served.host, served.https_port), 5)
    with context.wrap_socket(raw, server_hostname=f"autodiscover.{served.domain}") as tls:
        body = REQUEST.format(email=served.email).encode()
        token = base64.b64encode(f"{served.email}:{served.password}".encode()).decode()
        tls.sendall(f"POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: autodiscover.{served.domain}\r\n"
                    f"Authorization: Basic {token}\r\nContent-Type: text/xml\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n".encode() + body)
        while tls.recv(65536):
            pass


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    careful = (f"{sys.executable} {REPO}/examples/buggy-clients/careful.py --url {{autodiscover_url}} --host {{host}} "
               "--https-port {https_port} --http-port {http_port} --ca {ca_file} --email {email} "
               "--password {password}")
    for name, client, examples in (("in-process", in_process, count), ("subprocess", careful, max(count // 4, 10))):
        report = fuzz_client(client, max_examples=examples, seed=1, timeout=10, expected_errors=(OSError,))
        print(f"{name:<11} {report.examples} examples in {report.seconds:.2f} s: {report.rate:.1f} examples/s, "
              f"{len(report.findings)} findings", flush=True)


if __name__ == "__main__":
    main()
