"""Autodiscover throughput: N authenticated POX requests over one keep-alive TLS connection.

Prints requests/s and server CPU µs/request for mockex, next to a bare Twisted web resource that serves the same
response bytes over the same TLS certificate in the same run (the ratio is the figure to watch, not the absolute
numbers). Loopback only; bounded by --requests and --max-seconds.

    python benchmarks/autodiscover.py [--requests 2000] [--auth basic|ntlm] [--scenarios N]
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

POX_REQUEST = b"""<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request>
<EMailAddress>alice@contoso.test</EMailAddress>
<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
</Request></Autodiscover>"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(cmd, ready_file, env=None):
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO)
    deadline = time.monotonic() + 60
    while not os.path.exists(ready_file):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server did not start: {process.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    time.sleep(0.1)
    return process


def drive(port: int, ca_file: str, requests: int, max_seconds: float, auth_header: str | None, ntlm_creds=None):
    context = ssl.create_default_context(cafile=ca_file)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    conn._context.check_hostname = False  # we connect by IP; the name check is not what is measured
    headers = {"Content-Type": "text/xml", "Host": "autodiscover.contoso.test"}
    if ntlm_creds:
        headers["Authorization"] = ntlm_handshake(conn, headers, *ntlm_creds)
    elif auth_header:
        headers["Authorization"] = auth_header
    done, started = 0, time.perf_counter()
    while done < requests and time.perf_counter() - started < max_seconds:
        conn.request("POST", "/autodiscover/autodiscover.xml", body=POX_REQUEST, headers=headers)
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
    import spnego
    client = spnego.client(user, password, hostname="autodiscover.contoso.test", protocol="ntlm")
    token = client.step()
    conn.request("POST", "/autodiscover/autodiscover.xml", body=b"", headers={**headers,
                 "Authorization": "NTLM " + base64.b64encode(token).decode()})
    response = conn.getresponse()
    response.read()
    challenge = [v for k, v in response.getheaders() if k.lower() == "www-authenticate" and v.startswith("NTLM ")]
    final = client.step(base64.b64decode(challenge[0].split(" ", 1)[1]))
    return "NTLM " + base64.b64encode(final).decode()


BARE_SERVER = r"""
import sys, json
from twisted.internet import reactor, ssl
from twisted.web import resource, server
body = open(sys.argv[1], 'rb').read()
class Bare(resource.Resource):
    isLeaf = True
    def render_POST(self, request):
        request.setHeader(b'content-type', b'text/xml; charset=utf-8')
        return body
ctx = ssl.DefaultOpenSSLContextFactory(sys.argv[2], sys.argv[3])
ctx.getContext().use_certificate_chain_file(sys.argv[3])  # send the intermediate too, as mockex does
port = reactor.listenSSL(0, server.Site(Bare()), ctx, interface='127.0.0.1')
open(sys.argv[4], 'w').write(str(port.getHost().port))
reactor.run()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--max-seconds", type=float, default=60)
    parser.add_argument("--auth", choices=("basic", "ntlm"), default="basic")
    parser.add_argument("--scenario", action="append", default=[], help="extra `mockex serve --scenario` arguments")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="mockex-bench-")
    state = os.path.join(workdir, "state")
    os.makedirs(state)
    extra = [a for s in args.scenario for a in ("--scenario", s)]
    mock = start([sys.executable, "-m", "harness", "serve", "--state-dir", state, "--https-port", "0",
                  "--http-port", "0", "--dns-port", "0", "--quiet", *extra], os.path.join(state, "endpoints.json"))
    try:
        endpoints = json.load(open(os.path.join(state, "endpoints.json")))
        alice = next(u for u in endpoints["users"] if u["username"] == "alice")
        basic = "Basic " + base64.b64encode(f"{alice['upn']}:{alice['password']}".encode()).decode()
        ntlm = ("alice", alice["password"], "CONTOSO") if args.auth == "ntlm" else None
        drive(endpoints["https"]["port"], endpoints["ca_file"], 50, 10, basic, ntlm)  # warm up
        # Capture the exact bytes mockex answers, for the bare server to serve.
        conn = http.client.HTTPSConnection("127.0.0.1", endpoints["https"]["port"],
                                           context=ssl._create_unverified_context())
        conn.request("POST", "/autodiscover/autodiscover.xml", body=POX_REQUEST,
                     headers={"Authorization": basic, "Content-Type": "text/xml"})
        body = conn.getresponse().read()
        conn.close()
        cpu0 = cpu_seconds(mock.pid)
        done, elapsed = drive(endpoints["https"]["port"], endpoints["ca_file"], args.requests, args.max_seconds,
                              basic, ntlm)
        mock_cpu = cpu_seconds(mock.pid) - cpu0
    finally:
        mock.terminate()
        mock.wait()

    body_file, port_file = os.path.join(workdir, "body.xml"), os.path.join(workdir, "port")
    open(body_file, "wb").write(body)
    cred = json.load(open(os.path.join(state, "endpoints.json")))
    pki_dir = os.path.dirname(cred["ca_file"])
    cert, key = _leaf_files(pki_dir)
    bare = start([sys.executable, "-c", BARE_SERVER, body_file, key, cert, port_file], port_file)
    try:
        port = int(open(port_file).read())
        drive(port, cred["ca_file"], 50, 10, None)
        cpu0 = cpu_seconds(bare.pid)
        bare_done, bare_elapsed = drive(port, cred["ca_file"], args.requests, args.max_seconds, None)
        bare_cpu = cpu_seconds(bare.pid) - cpu0
    finally:
        bare.terminate()
        bare.wait()

    rows = [("mockex (POX, %s auth)" % args.auth, done, elapsed, mock_cpu),
            ("bare twisted.web, same bytes", bare_done, bare_elapsed, bare_cpu)]
    print(f"{'server':<34} {'requests':>8} {'req/s':>9} {'server CPU us/req':>18}")
    for name, count, seconds, cpu in rows:
        print(f"{name:<34} {count:>8} {count / seconds:>9.0f} {cpu * 1e6 / max(count, 1):>18.0f}")
    print(f"ratio mockex/bare: throughput {(done / elapsed) / (bare_done / bare_elapsed):.2f}x, "
          f"CPU per request {(mock_cpu / max(done, 1)) / max(bare_cpu / max(bare_done, 1), 1e-9):.2f}x")


def _leaf_files(pki_dir: str):
    """The chain and key files of the normal leaf the mock served (names chosen by harness.pki)."""
    from harness import pki
    authority = pki.PKI(os.path.dirname(pki_dir))
    from harness.org import load_org
    credential = authority.issue(load_org().hostnames, ips=["127.0.0.1"])
    return credential.cert_file, credential.key_file


if __name__ == "__main__":
    main()
