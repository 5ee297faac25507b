"""The probe's HTTP/1.1 client: h11 over one connected socket, keep-alive (NTLM authenticates the connection), and
client-side Basic / NTLM / Negotiate (NTLM tokens from impacket).

Credentials only ever go over a connection made with the strict TLS context (``secure=True``): the guard lives
here, in the one place that writes an Authorization header.
"""
from __future__ import annotations

import base64
import re
import socket
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import h11
from impacket import ntlm

from harness.probe.report import StepFailed

Header = Tuple[str, str]
USER_AGENT = "Microsoft Office/15.0 (Windows NT 6.1; Microsoft Outlook 15.0.4569; Pro; mockex-probe)"
SCHEMES = ("Negotiate", "NTLM", "Basic")
READ_SIZE = 65536


class InsecureCredentials(RuntimeError):
    """A bug guard: something tried to put credentials on a connection that is not verified TLS."""


@dataclass(frozen=True)
class Credentials:
    user: str          # as NTLM sends it: "alice", or "alice@contoso.test" with an empty domain
    domain: str
    password: str

    @classmethod
    def parse(cls, login: str, password: str) -> "Credentials":
        """'DOMAIN\\user', 'user@upn.suffix' or a bare name."""
        domain, backslash, user = login.partition("\\")
        if backslash:
            return cls(user, domain, password)
        return cls(login, "", password)

    @property
    def basic_login(self) -> str:
        return f"{self.domain}\\{self.user}" if self.domain else self.user


@dataclass
class Response:
    status: int
    reason: str
    headers: List[Header]
    body: bytes = b""

    def header(self, name: str) -> Optional[str]:
        values = self.headers_named(name)
        return ", ".join(values) if values else None

    def headers_named(self, name: str) -> List[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def offered_schemes(response: Response) -> List[str]:
    """Schemes in WWW-Authenticate, in order; copes with several schemes folded into one header line."""
    found: List[str] = []
    for value in response.headers_named("WWW-Authenticate"):
        for part in value.split(","):
            token = part.strip().split(" ", 1)[0]
            scheme = next((s for s in SCHEMES if s.lower() == token.lower()), None)
            if scheme and scheme not in found:
                found.append(scheme)
    return found


class HttpConnection:
    def __init__(self, sock: socket.socket, host_header: str, timeout: Callable[[], float], *, secure: bool):
        self.sock = sock
        self.host_header = host_header
        self.secure = secure
        self._timeout = timeout
        self._h11 = h11.Connection(h11.CLIENT)
        self.ntlm_target_info: Optional[dict] = None

    # ---- plain requests ---------------------------------------------------------------------------------------
    def request(self, method: str, target: str, headers: Sequence[Header] = (), body: bytes = b"") -> Response:
        self.send_head(method, target, list(headers) + [("Content-Length", str(len(body)))])
        if body:
            self._send(h11.Data(data=body))
        self._send(h11.EndOfMessage())
        response = self.read_head(skip_informational=True)
        chunks = []
        while True:
            event = self._next_event()
            if isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
        response.body = b"".join(chunks)
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
        return response

    # ---- pieces, for tunnels and for bodies sent in parts ----------------------------------------------------
    def send_head(self, method: str, target: str, headers: Sequence[Header]) -> None:
        names = {k.lower() for k, _ in headers}
        if "authorization" in names and not self.secure:
            raise InsecureCredentials(f"credentials on a non-verified connection to {self.host_header}")
        base = [("Host", self.host_header)] + ([("User-Agent", USER_AGENT)] if "user-agent" not in names else [])
        self._send(h11.Request(method=method, target=target, headers=base + list(headers)))

    def send_data(self, data: bytes) -> None:
        self._send(h11.Data(data=data))

    def read_head(self, skip_informational: bool) -> Response:
        while True:
            event = self._next_event()
            if isinstance(event, h11.InformationalResponse) and skip_informational:
                continue
            if isinstance(event, (h11.Response, h11.InformationalResponse)):
                return Response(event.status_code, event.reason.decode("latin-1"),
                                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers.raw_items()])
            if isinstance(event, h11.ConnectionClosed):
                raise StepFailed("connection-closed", f"{self.host_header} closed the connection without answering")

    def read_data(self) -> bytes:
        """The next piece of the response body; b'' when the body or the connection ended."""
        event = self._next_event()
        return bytes(event.data) if isinstance(event, h11.Data) else b""

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _send(self, event) -> None:
        try:
            data = self._h11.send(event)
        except h11.LocalProtocolError as exc:   # the server ended the exchange (e.g. Connection: close after a 401)
            raise StepFailed("connection-closed", f"{self.host_header} closed the connection ({exc})") from exc
        if data:
            self.sock.settimeout(self._timeout())
            try:
                self.sock.sendall(data)
            except OSError as exc:
                raise _io_failure(exc, self.host_header, "sending") from exc

    def _next_event(self):
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                if self._h11.their_state is h11.CLOSED or "closed" in str(exc):
                    raise StepFailed("connection-closed", f"{self.host_header} closed the connection mid-answer "
                                                          f"({exc})") from exc
                raise StepFailed("malformed-response", f"{self.host_header} sent malformed HTTP: {exc}") from exc
            if event is not h11.NEED_DATA:
                return event
            timeout = self._timeout()
            self.sock.settimeout(timeout)
            try:
                data = self.sock.recv(READ_SIZE)
            except OSError as exc:
                raise _io_failure(exc, self.host_header, "waiting for the answer", timeout) from exc
            self._h11.receive_data(data)


def _io_failure(exc: OSError, host: str, doing: str, timeout: float = 0.0) -> StepFailed:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return StepFailed("timeout", f"no answer from {host} within {timeout:.1f} s while {doing}")
    if isinstance(exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return StepFailed("connection-reset", f"{host} reset the connection while {doing}")
    return StepFailed("connection-reset", f"connection to {host} failed while {doing}: {exc}")


# ---- authentication -------------------------------------------------------------------------------------------
def choose_scheme(offered: Sequence[str], preferred: Optional[str] = None) -> Optional[str]:
    """The scheme the probe uses: the preferred one when offered, else NTLM, Negotiate (NTLM inside), Basic."""
    if preferred and preferred in offered:
        return preferred
    return next((s for s in ("NTLM", "Negotiate", "Basic") if s in offered), None)


class NtlmHandshake:
    """The client side of one NTLM exchange (raw NTLM tokens, also what the probe sends under Negotiate)."""

    def __init__(self, credentials: Credentials):
        self._credentials = credentials
        self._negotiate = ntlm.getNTLMSSPType1("", credentials.domain, signingRequired=False)
        self.target_info: dict = {}

    def first_token(self) -> str:
        return _b64(self._negotiate.getData())

    def answer(self, challenge: bytes) -> str:
        self.target_info = _target_info(challenge)
        creds = self._credentials
        authenticate, _key = ntlm.getNTLMSSPType3(self._negotiate, challenge, creds.user, creds.password, creds.domain)
        return _b64(authenticate.getData())


def basic_authorization(credentials: Credentials) -> str:
    return "Basic " + _b64(f"{credentials.basic_login}:{credentials.password}".encode())


def authenticated(conn: HttpConnection, method: str, target: str, headers: Sequence[Header], body: bytes,
                  credentials: Credentials, scheme: str) -> Response:
    """One request authenticated with ``scheme``; for NTLM/Negotiate the two legs run on this connection."""
    if scheme == "Basic":
        return conn.request(method, target, list(headers) + [("Authorization", basic_authorization(credentials))],
                            body)
    handshake = NtlmHandshake(credentials)
    first = conn.request(method, target, list(headers) + [("Authorization", f"{scheme} {handshake.first_token()}")],
                         body)
    challenge = ntlm_challenge(first, scheme)
    if first.status != 401 or challenge is None:
        return first
    answer = handshake.answer(challenge)
    conn.ntlm_target_info = handshake.target_info
    return conn.request(method, target, list(headers) + [("Authorization", f"{scheme} {answer}")], body)


def ntlm_challenge(response: Response, scheme: str) -> Optional[bytes]:
    for value in response.headers_named("WWW-Authenticate"):
        match = re.search(rf"(?:^|,\s*){scheme}\s+([A-Za-z0-9+/]+=*)", value)
        if match:
            return base64.b64decode(match.group(1))
    return None


def _target_info(challenge: bytes) -> dict:
    """NetBIOS/DNS computer and domain names from the NTLM CHALLENGE (what impacket derives the RPC name from)."""
    pairs = ntlm.AV_PAIRS(ntlm.NTLMAuthChallenge(challenge)["TargetInfoFields"])
    names = {"nb_computer": ntlm.NTLMSSP_AV_HOSTNAME, "nb_domain": ntlm.NTLMSSP_AV_DOMAINNAME,
             "dns_computer": ntlm.NTLMSSP_AV_DNS_HOSTNAME, "dns_domain": ntlm.NTLMSSP_AV_DNS_DOMAINNAME}
    info = {}
    for key, av_id in names.items():
        if pairs[av_id] is not None:
            info[key] = pairs[av_id][1].decode("utf-16le", "replace")
    return info


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
