"""Pieces the benchmarks share: the measured POX request, starting `mockex serve` and a bare twisted.web server that
answers the same bytes, the server CPU clock, the one-connection POX client, and a fault library that never touches
the measured request. Not a benchmark itself."""
from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

POX_PATH = "/autodiscover/autodiscover.xml"
POX_REQUEST = b"""<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request>
<EMailAddress>alice@contoso.test</EMailAddress>
<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
</Request></Autodiscover>"""
POX_HOST = "autodiscover.contoso.test"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(cmd, ready_file, env=None, timeout=60.0):
    """Start a server process and wait until it writes ``ready_file``."""
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO)
    deadline = time.monotonic() + timeout
    while not os.path.exists(ready_file):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"server did not start: {process.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    time.sleep(0.1)
    return process


def stop(process) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def serving_on_443(listen: str, prefix: str, serve_args: Sequence[str] = (), org_text: Optional[str] = None,
                   command: Sequence[str] = ("-m", "harness")) -> Iterator[Tuple[dict, int]]:
    """A fresh `mockex serve` on <listen>:443 in a temporary state dir: (endpoints.json, pid). ``org_text``: serve
    an org.yaml of that text; ``command`` replaces ``-m harness`` (e.g. a profiling wrapper)."""
    top = tempfile.mkdtemp(prefix=prefix)
    state = os.path.join(top, "state")
    os.makedirs(state)
    org_args: List[str] = []
    if org_text is not None:
        org_dir = os.path.join(top, "org")
        os.makedirs(org_dir)
        with open(os.path.join(org_dir, "org.yaml"), "w") as out:
            out.write(org_text)
        org_args = ["--org", org_dir]
    try:
        try:
            server = start([sys.executable, *command, "serve", "--state-dir", state, *org_args, "--listen", listen,
                            "--https-port", "443", "--http-port", "0", "--dns-port", "0", "--quiet", *serve_args],
                           os.path.join(state, "endpoints.json"))
        except SystemExit as failure:
            raise SystemExit(f"{failure}\n(:443 needs root, or run inside `unshare -rn`)") from None
        try:
            with open(os.path.join(state, "endpoints.json")) as handle:
                yield json.load(handle), server.pid
        finally:
            server.terminate()
            server.wait()
    finally:
        shutil.rmtree(top, ignore_errors=True)


def start_mockex(state: str, scenario_paths=()) -> Tuple[subprocess.Popen, dict]:
    """`mockex serve` on ephemeral loopback ports with its state in ``state``: (process, endpoints.json)."""
    os.makedirs(state, exist_ok=True)
    extra = [arg for path in scenario_paths for arg in ("--scenario", path)]
    endpoints_file = os.path.join(state, "endpoints.json")
    process = start([sys.executable, "-m", "harness", "serve", "--state-dir", state, "--https-port", "0",
                     "--http-port", "0", "--dns-port", "0", "--quiet", *extra], endpoints_file, timeout=300)
    with open(endpoints_file, encoding="utf-8") as handle:
        return process, json.load(handle)


def user(endpoints: dict, name: str = "alice") -> dict:
    return next(u for u in endpoints["users"] if u["username"] == name)


def basic_auth(endpoints: dict, name: str = "alice") -> str:
    who = user(endpoints, name)
    return "Basic " + base64.b64encode(f"{who['upn']}:{who['password']}".encode()).decode()


def drive(port: int, ca_file: str, requests: int, max_seconds: float, auth_header: str | None, ntlm_creds=None):
    """POX requests over one keep-alive TLS connection, bounded by count and time: (done, seconds)."""
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = False  # we connect by IP; the name check is not what is measured
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    headers = {"Content-Type": "text/xml", "Host": POX_HOST}
    if ntlm_creds:
        headers["Authorization"] = ntlm_handshake(conn, headers, *ntlm_creds)
    elif auth_header:
        headers["Authorization"] = auth_header
    done, started = 0, time.perf_counter()
    while done < requests and time.perf_counter() - started < max_seconds:
        conn.request("POST", POX_PATH, body=POX_REQUEST, headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200 or b"EXPR" not in body and len(body) < 100:
            raise SystemExit(f"unexpected answer {response.status}: {body[:200]!r}")
        done += 1
        if ntlm_creds:
            headers.pop("Authorization", None)  # NTLM authenticated the connection
    elapsed = time.perf_counter() - started
    conn.close()
    return done, elapsed


def ntlm_handshake(conn, headers, user, password, domain):
    """NTLM negotiate/challenge over ``conn``; returns the Authorization value of the authenticate message."""
    import spnego
    client = spnego.client(user, password, hostname=POX_HOST, protocol="ntlm")
    token = client.step()
    conn.request("POST", POX_PATH, body=b"", headers={**headers,
                 "Authorization": "NTLM " + base64.b64encode(token).decode()})
    response = conn.getresponse()
    response.read()
    challenge = [v for k, v in response.getheaders() if k.lower() == "www-authenticate" and v.startswith("NTLM ")]
    final = client.step(base64.b64decode(challenge[0].split(" ", 1)[1]))
    return "NTLM " + base64.b64encode(final).decode()


@dataclass
class Answer:
    """One HTTP answer as mockex sent it, for the other servers to repeat byte for byte."""
    status: int
    headers: List[Tuple[str, str]]  # in the order sent, without Date (every server stamps its own)
    body: bytes


def capture_answer(endpoints: dict, auth_header: str) -> Answer:
    """mockex's answer to the measured POX request."""
    conn = http.client.HTTPSConnection("127.0.0.1", endpoints["https"]["port"],
                                       context=ssl._create_unverified_context(), timeout=10)
    conn.request("POST", POX_PATH, body=POX_REQUEST,
                 headers={"Authorization": auth_header, "Content-Type": "text/xml", "Host": POX_HOST})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    if response.status != 200:
        raise SystemExit(f"mockex answered {response.status} to the POX request: {body[:200]!r}")
    headers = [(k, v) for k, v in response.getheaders() if k.lower() != "date"]
    return Answer(response.status, headers, body)


def leaf_files(state: str) -> Tuple[str, str]:
    """(chain file, key file) of the normal leaf `mockex serve` on ``state`` serves: leaf + intermediate, RSA-2048."""
    from harness import pki
    from harness.org import load_org
    credential = pki.PKI(state).issue(load_org().hostnames, ips=["127.0.0.1"])
    return credential.cert_file, credential.key_file


# The bare server's TLS is mockex's (harness.pki.configure_server_tls at mockex's default ceiling): same versions,
# suites in the same order, same ECDHE curve, so a handshake costs both the same and the comparison is of the rest.
BARE_SERVER = r"""
import sys, json
from twisted.internet import reactor, ssl
from twisted.web import resource, server
from harness import pki
from harness.protocols.tls import EXCHANGE_2013_MAX_VERSION
from harness.services.tls import OPENSSL_VERSIONS
body = open(sys.argv[1], 'rb').read()
headers = [(k.encode(), v.encode()) for k, v in json.load(open(sys.argv[2]))
           if k.lower() not in ('content-length', 'connection')]
class Bare(resource.Resource):
    isLeaf = True
    def render_POST(self, request):
        for name, value in headers:
            request.setHeader(name, value)
        return body
ctx = ssl.DefaultOpenSSLContextFactory(sys.argv[3], sys.argv[4])
ctx.getContext().use_certificate_chain_file(sys.argv[4])  # send the intermediate too, as mockex does
pki.configure_server_tls(ctx.getContext(), max_version=OPENSSL_VERSIONS[EXCHANGE_2013_MAX_VERSION])
port = reactor.listenSSL(0, server.Site(Bare()), ctx, interface='127.0.0.1')
open(sys.argv[5], 'w').write(str(port.getHost().port))
reactor.run()
"""


def start_bare(workdir: str, answer: Answer, cert_file: str, key_file: str) -> Tuple[subprocess.Popen, int]:
    """A bare twisted.web resource answering ``answer`` (body and headers) over TLS as mockex serves it (versions,
    suite order, curve): (process, port)."""
    os.makedirs(workdir, exist_ok=True)
    body_file, headers_file = os.path.join(workdir, "body.xml"), os.path.join(workdir, "headers.json")
    port_file = os.path.join(workdir, "port")
    with open(body_file, "wb") as out:
        out.write(answer.body)
    with open(headers_file, "w", encoding="utf-8") as out:
        json.dump(answer.headers, out)
    process = start([sys.executable, "-c", BARE_SERVER, body_file, headers_file, key_file, cert_file, port_file],
                    port_file)
    with open(port_file, encoding="utf-8") as handle:
        return process, int(handle.read())


# A fault library that never applies to the measured request: (share of the library, scenario fault line with {i}
# for the scenario's index). Each is scoped to a user or host the request does not name (user-scoped Autodiscover
# errors, host-scoped TLS, latency, refused-port and reset faults), plus unscoped ones on hooks the request never
# reaches (port 80, DNS). So they exercise every hook lookup on the way (accept, tls_profile, write, http_request,
# autodiscover) without changing the answer.
MIX = [
    (0.40, "autodiscover.error-code: {{code: 500, user: user{i}@contoso.test}}"),
    (0.15, "tls.expired: {{host: tls{i}.contoso.test}}"),
    (0.15, "network.latency: {{host: slow{i}.contoso.test, ms: 2000}}"),
    (0.10, "network.reset: {{host: reset{i}.contoso.test, when: mid-response}}"),
    (0.05, "network.refused: {{host: closed{i}.contoso.test}}"),
    (0.10, "network.refused: {{port: 80}}"),
    (0.05, "dns.nxdomain: {{host: gone{i}.contoso.test}}"),
]


def write_library(directory: str, count: int) -> list:
    """``count`` scenario files, none of which touches the measured request; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    lines = [line for share, line in MIX for _ in range(round(share * count))][:count]
    paths = []
    for index, line in enumerate(lines):
        path = os.path.join(directory, f"bench-{index:04d}.yaml")
        with open(path, "w", encoding="utf-8") as out:
            out.write(f"name: bench-{index:04d}\nfaults:\n  - {line.format(i=index)}\n"
                      "expect:\n  analyzer: {passes: true}\n")
        paths.append(path)
    return paths


def median(values: List[float]) -> Optional[float]:
    ordered = sorted(values)
    if not ordered:
        return None
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
