"""The real clients tests drive against a served mockex, unmodified: curl, Python's ssl, dnspython, requests,
impacket's RPC-over-HTTP transport and exchanger.py; and the options that point the probe at a server."""
from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import dns.message
import dns.query
import pytest
from impacket.dcerpc.v5 import nspi, rpcrt
from impacket.dcerpc.v5.transport import DCERPCTransportFactory, HTTPTransport

from harness.probe.expectation import options_from_endpoints
from harness.probe.runner import ProbeOptions
from harness.testing import Served
from tests.support import REPO

# The org's (fixtures/, contoso.test) host names and NetBIOS domain, as clients name them.
ROOT, AUTODISCOVER, MAIL = "contoso.test", "autodiscover.contoso.test", "mail.contoso.test"
EX01, EX02 = "ex01.contoso.test", "ex02.contoso.test"
DOMAIN = "CONTOSO"
POX_PATH = "/autodiscover/autodiscover.xml"
PRIVACY = rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY


def address(served: Served, host: str) -> str:
    """The loopback address mockex serves ``host`` on (hosts with port-level faults get their own)."""
    return served.endpoints["addresses"].get(host, served.host)


# ---- curl ----------------------------------------------------------------------------------------------------
# After the body: the status (000 when no answer came), the body's size and the timings, the redirect target.
CURL_WRITE_OUT = "\n%{http_code} %{size_download} %{time_total} %{time_starttransfer} %{redirect_url}"


@dataclass
class CurlResult:
    status: int
    body: str
    headers: List[Tuple[str, str]]     # of the last response
    exit_code: int
    stderr: str                        # every response's header lines (-D) and curl's own messages
    size: int
    seconds: float
    first_byte: float
    redirect_url: str

    def header(self, name: str) -> List[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


def curl(served: Served, host: str, *args: str, path: str = POX_PATH, data: Union[str, bytes, None] = None,
         scheme: str = "https", max_time: float = 20) -> CurlResult:
    """One curl request to ``scheme://host:port/path`` with ``host`` pinned (--resolve) to the address mockex serves
    it on; ``args`` go to curl before the URL, ``data`` is POSTed as text/xml."""
    port = served.endpoints[scheme]["port"]
    cmd = ["curl", "-sS", "--max-time", str(max_time), "--cacert", served.ca_file,
           "--resolve", f"{host}:{port}:{address(served, host)}", "-D", "/dev/stderr", "-o", "-",
           "-w", CURL_WRITE_OUT, *args]
    if data is not None:
        cmd += ["-H", "Content-Type: text/xml", "--data-binary", data.decode() if isinstance(data, bytes) else data]
    cmd.append(f"{scheme}://{host}:{port}{path}")
    result = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=max_time + 10)
    body, _, written = result.stdout.rpartition("\n")
    status, size, seconds, first_byte, redirect_url = written.split(" ", 4)
    return CurlResult(int(status), body, last_headers(result.stderr), result.returncode, result.stderr,
                      int(size), float(seconds), float(first_byte), redirect_url)


def last_headers(dump: str) -> List[Tuple[str, str]]:
    """The header lines of the last response in a `curl -D` dump (earlier ones are 401 legs or redirects)."""
    headers: List[Tuple[str, str]] = []
    for line in dump.splitlines():
        if line.startswith("HTTP/"):
            headers = []
        elif ":" in line and not line.startswith("curl:"):
            name, value = line.split(":", 1)
            headers.append((name.strip(), value.strip()))
    return headers


# ---- Python's ssl, dnspython, requests -------------------------------------------------------------------------
# What OpenSSL 3 (behind Python's ssl) reports for each broken certificate shape when the client connects to MAIL.
HOSTNAME_MISMATCH = (62, f"Hostname mismatch, certificate is not valid for '{MAIL}'.")
EXPECTED_VERIFY_ERRORS = {
    "expired": (10, "certificate has expired"),
    "not-yet-valid": (9, "certificate is not yet valid"),
    "wrong-host": HOSTNAME_MISMATCH,
    "self-signed": (18, "self-signed certificate"),
    "untrusted-root": (19, "self-signed certificate in certificate chain"),
    "missing-intermediate": (20, "unable to get local issuer certificate"),
    "weak-key": (66, "EE certificate key too weak"),
    "sha1-signature": (68, "CA signature digest algorithm too weak"),
}


def tls_socket(served: Served, host: str, timeout: float = 30.0, context: Optional[ssl.SSLContext] = None,
               **wrap: Any) -> ssl.SSLSocket:
    """A TLS connection to ``host``'s address with SNI ``host``, verified against the served CA by default. The
    default timeout is a safety net for answers that do come (a loaded machine must not turn them into errors); a
    test that expects silence passes its own short one."""
    raw = socket.create_connection((address(served, host), served.https_port), timeout=timeout)
    context = context or ssl.create_default_context(cafile=served.ca_file)
    try:
        return context.wrap_socket(raw, server_hostname=host, **wrap)
    except BaseException:
        raw.close()
        raise


# ---- openssl s_client ------------------------------------------------------------------------------------------
def s_client(served: Served, host: str, *args: str) -> Tuple[int, str]:
    """`openssl s_client -brief` to ``host`` (SNI ``host``, the served CA trusted), stdin closed: (exit status, what
    it printed: "Protocol version: TLSv1.2", "Ciphersuite: ...", "Server Temp Key: ..." or the error)."""
    target = f"{address(served, host)}:{served.https_port}"
    result = subprocess.run(["openssl", "s_client", "-brief", "-connect", target, "-servername", host,
                             "-CAfile", served.ca_file, *args],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", timeout=60)
    return result.returncode, result.stdout + result.stderr


def dns_query(served: Served, name: str, rdtype: str, tcp: bool = False) -> dns.message.Message:
    """One query to the served DNS, over UDP or TCP; the answer whatever its rcode."""
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, served.endpoints["dns"]["host"], port=served.endpoints["dns"]["port"], timeout=5)


def pin_names(monkeypatch: pytest.MonkeyPatch, served: Served) -> None:
    """Make requests/urllib3 connect every name to the server (certificate checks still use the name)."""
    import urllib3.util.connection as connection
    original = connection.create_connection

    def create_connection(address: Tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        return original((served.host, address[1]), *args, **kwargs)

    monkeypatch.setattr(connection, "create_connection", create_connection)


# ---- impacket: exchanger.py and the ncacn_http transport --------------------------------------------------------
EXCHANGER = shutil.which("exchanger.py")
EXCHANGER_TIMEOUT = 60
requires_exchanger = pytest.mark.skipif(EXCHANGER is None, reason="impacket's exchanger.py is not installed")


def exchanger(served: Served, command: Sequence[str], options: Sequence[str] = (), user: str = "alice",
              password: Optional[str] = None, host: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run unmodified exchanger.py to completion against the server, or a relay at ``host`` (a hang fails the test
    through the timeout)."""
    assert EXCHANGER is not None, "mark the test with requires_exchanger"
    password = served.user(user)["password"] if password is None else password
    target = f"{served.endpoints['domain']}/{user}:{password}@{host or served.host}"
    return subprocess.run([sys.executable, EXCHANGER, *options, target, *command], capture_output=True, text=True,
                          timeout=EXCHANGER_TIMEOUT)


def needs_exchanger(served: Served) -> None:
    if EXCHANGER is None or served.https_port != 443:
        pytest.skip("exchanger.py needs the server on :443 (root)")


@contextlib.contextmanager
def default_socket_timeout(seconds: float) -> Iterator[None]:
    """http.client sockets in impacket have no timeout of their own: under this default a hang fails instead."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def ncacn_http(proxy: str, target: str = "EX01", port: int = 6004) -> HTTPTransport:
    """impacket's RPC-over-HTTP transport as exchanger.py builds it: the RPC proxy on ``proxy``:443."""
    return DCERPCTransportFactory(f"ncacn_http:{target}[{port},RpcProxy={proxy}:443]")


class StrictEofTransport(HTTPTransport):
    """impacket's ncacn_http transport whose TLS sockets report a connection cut short (RST, or FIN without
    close_notify) as ssl.SSLEOFError: with the default suppress_ragged_eofs, Python's ssl turns it into b'', on
    which impacket's OUT reader spins forever."""

    def create_tunnel(self) -> None:
        for sock in (self.get_socket_in(), self.get_socket_out()):
            sock.suppress_ragged_eofs = False
        super().create_tunnel()


def rpc_transport(served: Served, target: str, port: int = 6004, user: str = "alice") -> StrictEofTransport:
    """A StrictEofTransport to the served RPC proxy on whatever port it has, logging on as ``user``."""
    transport = StrictEofTransport(target, port)
    transport.set_rpc_proxy_url(f"https://{served.host}:{served.https_port}/rpc/rpcproxy.dll?{target}:{port}")
    transport.set_credentials(user, served.user(user)["password"], DOMAIN)
    return transport


def bind_over_http(transport: HTTPTransport, interface: bytes, user: str, password: str,
                   level: int = PRIVACY) -> rpcrt.DCERPC_v5:
    """Connect ``transport`` and bind ``interface`` as exchanger.py does: NTLM as ``user`` on the HTTP legs and at
    ``level`` inside DCE/RPC (no RPC authentication at level 1)."""
    transport.set_credentials(user, password, DOMAIN)
    dce = transport.get_dce_rpc()
    if level != rpcrt.RPC_C_AUTHN_LEVEL_NONE:
        dce.set_credentials(user, password, DOMAIN)
        dce.set_auth_level(level)
    dce.connect()
    dce.bind(interface)
    return dce


def rpc_bind(served: Served, target: str, interface: bytes = nspi.MSRPC_UUID_NSPI, *, port: int = 6004,
             user: str = "alice", level: int = PRIVACY) -> rpcrt.DCERPC_v5:
    """``interface`` bound on ``target``:``port`` through a StrictEofTransport."""
    return bind_over_http(rpc_transport(served, target, port, user), interface, user, served.user(user)["password"],
                          level)


def teletex_stat() -> nspi.STAT:
    """The STAT exchanger.py binds NSPI with (code page CP_TELETEX)."""
    stat = nspi.STAT()
    stat["CodePage"] = nspi.CP_TELETEX
    return stat


def nspi_handle(dce: Any) -> Any:
    """NspiBind as exchanger.py calls it; the context handle."""
    return nspi.hNspiBind(dce, teletex_stat())["contextHandle"]


# ---- the mockex command and the probe ----------------------------------------------------------------------------
def run_mockex(*args: str, timeout: float = 60, **options: Any) -> subprocess.CompletedProcess:
    """`mockex ARGS...` (as ``python -m harness``) run to completion from the checkout, its output captured as text;
    ``options`` go to subprocess.run (env, stdin)."""
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, **options)


def probe_options(served: Served, user: str = "alice", **overrides: Any) -> ProbeOptions:
    """Options pointing the probe at a running mock: its DNS, CA, and ports standing in for 443/80."""
    settings: dict = dict(step_timeout=3.0, total_timeout=40.0, seed=1)
    settings.update(overrides)
    return options_from_endpoints(served.endpoints, user, **settings)
