"""IIS-like HTTP authentication for one TCP connection, sans-IO: Negotiate / NTLM / Basic.

IIS semantics kept here:
- NTLM and Negotiate authenticate the connection: once a handshake succeeded, later requests on the same
  connection without an Authorization header are still that user. A new NEGOTIATE (or SPNEGO NegTokenInit)
  restarts the handshake; any failure forgets the connection's user.
- Basic is per request: a success does not authenticate the connection. ``user`` may be ``alice``,
  ``alice@contoso.test``, ``CONTOSO\\alice`` or ``contoso.test\\alice``; the credentials are UTF-8, or Latin-1
  when not valid UTF-8.
- Every failure carries the full challenge set, so the caller answers 401 again (never 200).
- A scheme that is not in ``methods`` fails with reason "scheme not offered".
"""
from __future__ import annotations

import base64
import binascii
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

from harness.hooks import hookspec
from harness.org import Mailbox, Org
from harness.protocols.http import HttpRequest
from harness.protocols.logon import SIGNATURE, ChallengeEdit, ServerIdentity, logon_refusal, org_lookup
from harness.transcript import KNOWN_SCHEMES

if TYPE_CHECKING:
    from harness.protocols.spnego import NegotiateAcceptor

SCHEMES = ("Negotiate", "NTLM", "Basic")
Header = Tuple[str, str]


@dataclass
class AuthOutcome:
    state: str                   # "anonymous", "continue" (401 + token), "success" or "failure"
    # WWW-Authenticate lines to send: the full challenge set with anonymous/failure (answer 401), the token with
    # continue (401), and on a SPNEGO success the final accept-completed token (send it with the 200).
    headers: List[Header] = field(default_factory=list)
    mailbox: Optional[Mailbox] = None
    scheme: str = ""
    user: str = ""
    domain: str = ""
    reason: str = ""

    def describe(self) -> str:
        """Never the headers: they carry the tokens of the handshake."""
        who = f"{self.domain}\\{self.user}" if self.domain else self.user
        return " ".join(part for part in (self.state, self.scheme, who, self.reason and f"({self.reason})") if part)


@hookspec(fires_in="services/site.py", means="the authentication verdict used instead of the real one")
def auth_result_hook(request: HttpRequest, outcome: AuthOutcome) -> AuthOutcome: ...


class HttpAuthenticator:
    """Authentication state of one HTTP connection."""

    def __init__(self, org: Org, identity: ServerIdentity, rng: random.Random, *,
                 methods: Tuple[str, ...] = SCHEMES, realm: str, clock: Callable[[], float] = time.time,
                 accept_ntlmv1: bool = True) -> None:
        unknown = [m for m in methods if m not in SCHEMES]
        if unknown or not methods:
            raise ValueError(f"methods must be a non-empty subset of {SCHEMES}, not {methods!r}")
        self.methods = tuple(methods)
        self.realm = realm
        self._identity = identity
        self._lookup = org_lookup(org)
        self._rng = rng
        self._clock = clock
        self._accept_ntlmv1 = accept_ntlmv1
        self._handshake: Optional[Tuple[str, NegotiateAcceptor]] = None
        # asked when an NTLM handshake starts: the ntlm_challenge fault hook, set by the site per request
        self.challenge_edit: Callable[[], Optional[ChallengeEdit]] = _no_edit
        self._connection_user: Optional[AuthOutcome] = None
        # The last Basic success: (Authorization value, the methods offered then, the outcome). A client sends the
        # same credentials with every request of a connection; the same value under the same offer succeeds again
        # (the org and its mailboxes do not change), so it is not decoded and looked up once more.
        self._basic_success: Optional[Tuple[str, Tuple[str, ...], AuthOutcome]] = None

    def challenge_headers(self) -> List[Header]:
        """One WWW-Authenticate line per offered scheme, in the configured order."""
        return [("WWW-Authenticate", f'Basic realm="{self.realm}"' if scheme == "Basic" else scheme)
                for scheme in self.methods]

    def process(self, authorization: Optional[str]) -> AuthOutcome:
        """Evaluate one request's Authorization header (None when absent)."""
        if not authorization or not authorization.strip():
            self._handshake = None
            if self._connection_user is not None:
                return _copy(self._connection_user)
            return AuthOutcome("anonymous", self.challenge_headers())
        remembered = self._basic_success
        if remembered is not None and remembered[0] == authorization and remembered[1] == self.methods:
            return _copy(remembered[2])
        name, credentials = split_authorization(authorization)
        scheme = next((s for s in self.methods if s.lower() == name.lower()), None)
        if scheme is None:   # name it only if it is a scheme: a scheme-less header's first word may be the secret
            known = name.lower() in KNOWN_SCHEMES
            return self._failure(name if known else "unknown", "scheme not offered")
        decoded = _b64decode(credentials)
        if decoded is None:
            return self._failure(scheme, "malformed base64")
        if scheme == "Basic":
            outcome = self._basic(decoded)
            if outcome.state == "success":
                self._basic_success = (authorization, self.methods, _copy(outcome))
            return outcome
        return self._windows(scheme, decoded)

    # ---- Basic ----------------------------------------------------------------------------------------------
    def _basic(self, decoded: bytes) -> AuthOutcome:
        fields = _basic_fields(decoded)
        if fields is None:
            return self._failure("Basic", "malformed credentials")
        domain, user, password = fields
        if not user:
            return self._failure("Basic", "anonymous", domain=domain)
        if not self._identity.accepts_domain(domain):
            return self._failure("Basic", "unknown domain", user=user, domain=domain)
        mailbox = self._lookup(user, domain)
        reason = logon_refusal(mailbox, mailbox is not None and mailbox.password == password)
        if reason:
            return self._failure("Basic", reason, user=user, domain=domain, mailbox=mailbox)
        return AuthOutcome("success", mailbox=mailbox, scheme="Basic", user=user, domain=domain)

    # ---- NTLM / Negotiate -----------------------------------------------------------------------------------
    def _windows(self, scheme: str, token: bytes) -> AuthOutcome:
        if not token:
            return self._failure(scheme, "malformed token")
        if scheme == "NTLM" and token[:8] != SIGNATURE:
            return self._failure(scheme, "malformed token: not NTLM")
        if self._handshake is None or self._handshake[0] != scheme or _starts_handshake(token):
            # A new handshake: the connection's previous user no longer counts.
            self._connection_user = None
            # Imported here: NTLM brings impacket and pycryptodomex, which a Basic-only server never needs.
            from harness.protocols.ntlm import NTLMAcceptor
            from harness.protocols.spnego import NegotiateAcceptor
            ntlm = NTLMAcceptor(self._identity, self._lookup, self._rng, clock=self._clock,
                                accept_ntlmv1=self._accept_ntlmv1, challenge_edit=self.challenge_edit())
            self._handshake = (scheme, NegotiateAcceptor(ntlm))
        step = self._handshake[1].step(token)
        if step.state == "continue":
            return AuthOutcome("continue", [("WWW-Authenticate", f"{scheme} {_b64(step.token)}")], scheme=scheme)
        self._handshake = None
        result = step.result
        user, domain, mailbox = (result.user, result.domain, result.mailbox) if result else ("", "", None)
        if step.state == "failure":
            return self._failure(scheme, step.reason, user=user, domain=domain, mailbox=mailbox)
        self._connection_user = AuthOutcome("success", scheme=scheme, user=user, domain=domain, mailbox=mailbox)
        headers = [("WWW-Authenticate", f"{scheme} {_b64(step.token)}")] if step.token else []
        return AuthOutcome("success", headers, scheme=scheme, user=user, domain=domain, mailbox=mailbox)

    def _failure(self, scheme: str, reason: str, *, user: str = "", domain: str = "",
                 mailbox: Optional[Mailbox] = None) -> AuthOutcome:
        self._handshake = None
        self._connection_user = None
        return AuthOutcome("failure", self.challenge_headers(), scheme=scheme, reason=reason, user=user,
                           domain=domain, mailbox=mailbox)


def _copy(outcome: AuthOutcome) -> AuthOutcome:
    """A fresh outcome equal to ``outcome`` (its own headers list): what the caller gets may be changed."""
    return AuthOutcome(outcome.state, list(outcome.headers), outcome.mailbox, outcome.scheme, outcome.user,
                       outcome.domain, outcome.reason)


def _no_edit() -> Optional[ChallengeEdit]:
    return None


def split_authorization(authorization: str) -> Tuple[str, str]:
    """(scheme, credentials) of an Authorization value: the scheme is its first word, ended by a space (RFC 7235's
    1*SP: a tab does not end it)."""
    name, _, credentials = authorization.strip().partition(" ")
    return name, credentials.strip()


def basic_password_check(org: Org, identity: ServerIdentity, authorization: str) -> Optional[Tuple[str, bool]]:
    """(the login as sent, whether its password is right) for the Basic credentials of an Authorization value,
    read exactly as HttpAuthenticator reads them; None when it holds none. For recording credentials that should
    not have been sent (over plain HTTP): the password itself never leaves."""
    name, credentials = split_authorization(authorization)
    decoded = _b64decode(credentials) if name.lower() == "basic" else None
    fields = _basic_fields(decoded) if decoded is not None else None
    if fields is None:
        return None
    domain, user, password = fields
    mailbox = org_lookup(org)(user, domain) if user and identity.accepts_domain(domain) else None
    return (f"{domain}\\{user}" if domain else user), mailbox is not None and mailbox.password == password


def _b64decode(credentials: str) -> Optional[bytes]:
    try:
        return base64.b64decode(credentials, validate=True)
    except (binascii.Error, ValueError):    # ValueError: text beyond ASCII
        return None


def _basic_fields(decoded: bytes) -> Optional[Tuple[str, str, str]]:
    """(domain, user, password) of decoded Basic credentials (UTF-8, or Latin-1 when not UTF-8); None without a
    colon."""
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        text = decoded.decode("latin-1")
    login, colon, password = text.partition(":")
    if not colon:
        return None
    domain, _, user = login.rpartition("\\")
    return domain, user, password


def _starts_handshake(token: bytes) -> bool:
    """A NEGOTIATE message or an SPNEGO NegTokenInit (GSS InitialContextToken)."""
    return token[:12] == SIGNATURE + b"\x01\x00\x00\x00" or token[:1] == b"\x60"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


__all__ = ["AuthOutcome", "HttpAuthenticator", "SCHEMES", "basic_password_check", "split_authorization"]
