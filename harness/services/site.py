"""The Exchange 2013 CAS web site: IIS-like headers, connection-bound auth, and routing to the protocol cores.

Routes (case-insensitive, as IIS):
  /autodiscover/autodiscover.xml   POX Autodiscover (authenticated)
  /autodiscover/autodiscover.svc   SOAP Autodiscover (authenticated)
  /autodiscover/<any>/autodiscover.xml|svc   the same, as Exchange Online's per-mailbox paths and redirect targets
  /autodiscover/autodiscover.json  Autodiscover v2 (anonymous)
  /EWS/Exchange.asmx               Exchange Web Services over the mailbox store (authenticated)
  /EWS/Services.wsdl, messages.xsd, types.xsd   the EWS schema files (authenticated, static), when configured
  /rpc/rpcproxy.dll                RPC over HTTP channels (authenticated), handed to the RPC proxy service
  /owa, /ecp                       forms-based auth: 302 to /owa/auth/logon.aspx, which renders (protocols/owa.py)
  /Microsoft-Server-ActiveSync     EAS (Basic): OPTIONS lists versions and commands
  /oab                             the OAB directory (Windows authentication)

Fault hooks (see harness/hooks.py): ``http_request`` before routing (an HttpAnswer or HttpResponse replaces
the route), ``auth_methods`` (an AuthOffer), ``auth_result`` (an AuthOutcome), ``autodiscover`` (an
AutodiscoverAnswer, or an HttpAnswer for an HTTP-level failure after authentication), ``ews`` (an EwsAnswer sent
instead of running the operation).
"""
from __future__ import annotations

import dataclasses
import random
import re
import time
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qs, quote

from harness.hooks import FaultSet, Scope
from harness.org import Mailbox, Org
from harness.protocols import owa
from harness.protocols.http import (
    AUTODISCOVER_HEADERS,
    DEFAULT_AUTH_METHODS,
    HTML,
    HTTPSYS_CONTENT_TYPE,
    HTTPSYS_SERVER,
    IIS_401,
    REASONS,
    AuthOffer,
    ConnectionInfo,
    HttpAnswer,
    HttpRequest,
    HttpResponse,
    auth_methods_hook,
    combine_challenge,
    http_request_hook,
    httpsys_error_page,
    iis_auth_schemes,
    iis_error_page,
    moved_page,
)
from harness.protocols.httpauth import HttpAuthenticator, auth_result_hook, basic_password_check, split_authorization
from harness.protocols.logon import ServerIdentity, ntlm_challenge_hook
from harness.services import ews_check
from harness.transcript import KNOWN_SCHEMES, Transcript, mask_headers

if TYPE_CHECKING:   # the Autodiscover, EWS and mailbox code loads with the first request that needs it, not at start
    from harness.mailbox.store import MailboxStore
    from harness.protocols import ews_schema
    from harness.protocols.autodiscover import AutodiscoverAnswer
    from harness.protocols.siteurls import SiteUrls

# /autodiscover/<anything>/autodiscover.xml|svc: Exchange Online's per-mailbox form and redirect-hop targets.
AUTODISCOVER_VARIANT = re.compile(r"^/autodiscover/(?:[^/]+/)+autodiscover\.(xml|svc)$")


_MAX_REMEMBERED_PATHS = 256   # request paths whose directory offer a site remembers

_DATE: List = [None, ""]   # (the second, its Date header value)


def http_date() -> str:
    """``formatdate(usegmt=True)``, made once a second: every answer carries it."""
    second = int(time.time())
    if second != _DATE[0]:
        _DATE[:] = [second, formatdate(second, usegmt=True)]
    return _DATE[1]


_V4_CLEAR = ~((0xc000 << 48) | (0xf000 << 64))
_V4_SET = (0x8000 << 48) | (4 << 76)


def request_id(rng: random.Random) -> str:
    """IIS's request-id: ``str(uuid.UUID(int=rng.getrandbits(128), version=4))``, without the UUID object."""
    digits = "%032x" % (rng.getrandbits(128) & _V4_CLEAR | _V4_SET)
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


_POX_CORE: List[Any] = []   # (harness.protocols.autodiscover, autodiscover_hook) once the first request loaded them


def _pox_core() -> Tuple[Any, Any]:
    """The POX core and the Autodiscover hook, imported with the first Autodiscover request, as start-up leaves them;
    later requests get them from here (an import statement costs about a microsecond on every request)."""
    if not _POX_CORE:
        from harness.protocols import autodiscover
        from harness.protocols.autodiscover_answer import autodiscover_hook
        _POX_CORE[:] = [autodiscover, autodiscover_hook]
    return _POX_CORE[0], _POX_CORE[1]


class ExchangeSite:
    """The app behind the HTTPS listener (see harness.services.web for the app interface)."""

    def __init__(self, org, transcript: Transcript, rng: random.Random, urls: SiteUrls, *,
                 rpc_proxy=None, auth_methods: Sequence[str] = DEFAULT_AUTH_METHODS,
                 faults: Optional[FaultSet] = None, store: Optional[MailboxStore] = None,
                 ews_schema_files: Optional[ews_schema.SchemaFiles] = None, push: Any = None):
        self.org, self.transcript, self.rng, self.urls = org, transcript, rng, urls
        self.ews_schema_files = ews_schema_files   # None: /EWS/ has no schema files (404, as a bare IIS path)
        self.store = store   # the mailboxes' content behind EWS (None: every EWS mailbox answers as unavailable)
        self.push = push     # the ews_push.PushNotifier serving push subscriptions (None: nothing is POSTed)
        self.faults = faults if faults is not None else FaultSet()
        self.rpc_proxy = rpc_proxy
        self.auth_methods = tuple(auth_methods)
        self._default_offer = AuthOffer(self.auth_methods)   # frozen: one serves every request no fault re-offers
        # Each virtual directory's own authentication: /rpc offers the CAS's Set-OutlookAnywhere
        # -IISAuthenticationMethods, ActiveSync Basic, the OAB Windows authentication; the rest the site default.
        self._directory_offers = (("/rpc/", AuthOffer(iis_auth_schemes(org.cas_outlook_anywhere.iis_auth))),
                                  (owa.ACTIVESYNC_PATH, AuthOffer(owa.ACTIVESYNC_AUTH)),
                                  (owa.OAB_PATH, AuthOffer(owa.OAB_AUTH)))
        self.identity = ServerIdentity.for_org(org)
        self.fe_server = org.cas.name
        self._be_target = org.cas.fqdn   # the org does not change while it serves: its CAS is looked up once
        self._offers_by_path: Dict[str, AuthOffer] = {}   # _directory_offer's answers (bounded: paths are clients')
        self._autodiscover_headers = (*AUTODISCOVER_HEADERS, ("Cache-Control", "private"))
        self.routes: List[Tuple[str, Callable]] = [
            ("/autodiscover/autodiscover.xml", self._pox),
            ("/autodiscover/autodiscover.svc", self._soap),
            ("/autodiscover/autodiscover.json", self._json),
            ("/ews/exchange.asmx", self._ews),
            (owa.LOGON_PATH, self._logon_page),
            ("/owa", self._forms),
            ("/ecp", self._forms),
            (owa.ACTIVESYNC_PATH, self._activesync),
            (owa.OAB_PATH, self._oab),
            ("/mapi/emsmdb", self._mapi_emsmdb),
            ("/mapi/nspi", self._mapi_nspi),
        ]
        if ews_schema_files is not None:
            self.routes.append(("/ews", self._ews_files))
        self._mapi = None        # the MAPI/HTTP EMSMDB endpoint (harness.rpc.mapihttp), built on its first request
        self._mapi_ab = None     # the MAPI/HTTP address book endpoint (harness.rpc.mapihttp_nspi), likewise

    # ---- connection events (from web.py) ----------------------------------------------------------------------
    def batch(self) -> ContextManager[object]:
        """Around one chunk of received bytes: its events go to the transcript file in one write."""
        return self.transcript.batch()

    def connection_made(self, info: ConnectionInfo) -> None:
        self.transcript.record("connect", listener="https" if info.tls else "http", conn=info.conn_id,
                               peer=f"{info.peer[0]}:{info.peer[1]}", local=f"{info.local[0]}:{info.local[1]}")

    def tls_handshake(self, info: ConnectionInfo, ok: bool, reason: str) -> None:
        self.transcript.record("tls", conn=info.conn_id, ok=ok, sni=info.sni, version=info.tls_version,
                               profile=info.tls_profile, reason=reason)

    def connection_lost(self, info: ConnectionInfo, reason: str) -> None:
        self.transcript.record("disconnect", conn=info.conn_id, reason=reason)

    def limit_reached(self, info: ConnectionInfo, limit: str, reason: str) -> None:
        """A connection limit (timeout, connection cap) ends this connection; IIS logs it, the client sees a close."""
        self.transcript.record("limit", conn=info.conn_id, limit=limit, reason=reason,
                               peer=f"{info.peer[0]}:{info.peer[1]}")

    def response_sent(self, request: HttpRequest, response: HttpResponse, elapsed: float) -> None:
        self.transcript.record(
            "http", conn=request.conn.conn_id, method=request.method, path=request.target, host=request.host,
            status=response.status, request_headers=mask_headers(request.headers),
            response_headers=mask_headers(response.headers), request_bytes=len(request.body),
            response_bytes=len(response.body), sni=request.conn.sni, ms=round(elapsed * 1000, 3))

    # ---- error answers web.py asks for -------------------------------------------------------------------------
    def bad_request(self, info: ConnectionInfo, status: int, message: str) -> HttpResponse:
        """http.sys's answer to bytes it cannot parse: always a 400 (a 431 hint is its "Request Too Long" page)."""
        limit = {"limit": "max_header_bytes"} if status == 431 else {}
        self.transcript.record("http_error", conn=info.conn_id, status=400, reason=message, **limit)
        page = httpsys_error_page("head_too_long" if status == 431 else "bad_request")
        return HttpResponse(400, "Bad Request", [("Content-Type", HTTPSYS_CONTENT_TYPE), ("Server", HTTPSYS_SERVER),
                                                 ("Date", http_date())], page, close=True)

    def too_large(self, request: HttpRequest, size: int) -> HttpResponse:
        self.transcript.record("http_error", conn=request.conn.conn_id, status=413, path=request.target,
                               reason=f"request body of {size} bytes exceeds the limit")
        return self._response(413, HTML, iis_error_page(413, "Request Entity Too Large"))

    # ---- requests -----------------------------------------------------------------------------------------------
    @staticmethod
    def scope(request: HttpRequest, mailbox=None) -> Scope:
        return Scope(host=request.host or request.conn.sni, user=mailbox.email if mailbox else None)

    def _fault(self, hook, request: HttpRequest, mailbox, *args):
        """``faults.first`` for a request: the Scope is built only when some fault provides the hook (most
        requests meet none, four hooks each)."""
        faults = self.faults
        if not faults.has(hook):
            return None
        host, user = request.host or request.conn.sni, mailbox.email if mailbox else None
        if not faults.concern(hook, host, user):   # a thousand faults for other hosts and users: no Scope either
            return None
        return faults.first(hook, Scope(host=host, user=user), *args)

    def handle(self, request: HttpRequest) -> HttpResponse:
        answer = self._fault(http_request_hook, request, None, request)
        response = self._render(answer) if answer is not None else self._route(request)
        response.headers.extend(request.response_headers)
        return response

    def _render(self, answer: Union[HttpAnswer, HttpResponse]) -> HttpResponse:
        if isinstance(answer, HttpResponse):
            return answer
        return self._response(answer.status, answer.content_type, answer.body, headers=list(answer.headers),
                              reason=answer.reason)

    def _route(self, request: HttpRequest) -> HttpResponse:
        path = request.path.lower()
        for prefix, handler in self.routes:
            if path == prefix or path.startswith(prefix + "/"):
                return handler(request)
        variant = AUTODISCOVER_VARIANT.match(path)
        if variant:
            return self._pox(request) if variant.group(1) == "xml" else self._soap(request)
        if path.startswith("/rpc/rpcproxy.dll"):
            mailbox, challenge = self.authenticate(request)
            return challenge or self._response(200, HTML, b"")
        return self._response(404, HTML, iis_error_page(404, "File or directory not found."))

    def open_tunnel(self, request: HttpRequest, io):
        if not request.path.lower().startswith("/rpc/rpcproxy.dll"):
            return self._response(404, HTML, iis_error_page(404, "File or directory not found."))
        mailbox, challenge = self.authenticate(request)
        if challenge is not None:
            return challenge
        if self.rpc_proxy is None:
            return self._response(503, HTML, iis_error_page(503, "Service Unavailable"))
        outcome = self.rpc_proxy.open_channel(request, mailbox, io)
        status = getattr(outcome, "status", None)
        if isinstance(status, int):  # an HttpError from the proxy core
            self.transcript.record("rpc_proxy_refused", conn=request.conn.conn_id, target=request.query,
                                   status=status, reason=outcome.reason)
            headers = []
            if status == 401:   # the proxied 401 of a legacy CAS: challenge again, as a fresh logon
                auth = request.conn.state.pop("auth", None)
                headers = list(auth.challenge_headers()) if auth is not None else []
            return self._response(status, HTML, outcome.body or iis_error_page(status, outcome.reason),
                                  reason=outcome.reason, headers=headers)
        return outcome

    def authenticate(self, request: HttpRequest):
        """(mailbox, None) when the connection/request is authenticated, else (None, a 401 response)."""
        state = request.conn.state
        auth = state.get("auth")
        if auth is None:
            auth = state["auth"] = HttpAuthenticator(self.org, self.identity, self.rng, methods=self.auth_methods,
                                                     realm=request.host or self.org.mail_host)
        if self.faults.has(ntlm_challenge_hook):
            auth.challenge_edit = lambda: self._fault(ntlm_challenge_hook, request, None, "http")
        offer = self._fault(auth_methods_hook, request, None, request) or self._directory_offer(request.path)
        auth.methods = tuple(offer.methods)
        header = request.header("authorization")
        outcome = auth.process(header)
        if outcome.state == "success":
            verdict = self._fault(auth_result_hook, request, outcome.mailbox, request, outcome)
            if verdict is not None and verdict.state == "failure" and not verdict.headers:
                verdict = dataclasses.replace(verdict, headers=auth.challenge_headers())  # a refusal re-challenges
            outcome = verdict or outcome
        elif outcome.state == "continue" and offer.combined_challenge:
            outcome = dataclasses.replace(outcome, headers=combine_challenge(outcome.headers, offer.methods))
        if header is not None:
            login = f"{outcome.domain}\\{outcome.user}" if outcome.domain else outcome.user
            self.transcript.record("auth", conn=request.conn.conn_id, scheme=outcome.scheme,
                                   **_who(self.org, login, outcome.mailbox), domain=outcome.domain,
                                   result=outcome.state, reason=outcome.reason, tls=request.conn.tls,
                                   path=request.target)
        if outcome.state == "success":
            request.response_headers.extend(outcome.headers)  # the final Negotiate token rides on the 200, as IIS does
            return outcome.mailbox, None
        extra = AUTODISCOVER_HEADERS if request.path.lower().startswith("/autodiscover") else []
        return None, self._response(401, HTML, IIS_401, headers=list(outcome.headers) + extra, backend=False)

    def _directory_offer(self, path: str) -> AuthOffer:
        offer = self._offers_by_path.get(path)
        if offer is None:
            lowered = path.lower()
            offer = next((offer for prefix, offer in self._directory_offers
                          if lowered.startswith(prefix.rstrip("/"))
                          and lowered[len(prefix.rstrip("/")):][:1] in ("", "/")), self._default_offer)
            if len(self._offers_by_path) < _MAX_REMEMBERED_PATHS:
                self._offers_by_path[path] = offer
        return offer

    # ---- the shared namespace: OWA, ECP, ActiveSync, OAB ----------------------------------------------------------
    def _forms(self, request: HttpRequest) -> HttpResponse:
        """OWA/ECP without a forms session: Exchange's FBA module sends every request to the logon page."""
        target = request.path + (f"?{request.query}" if request.query else "")
        return self._render_front_end(owa.logon_redirect(request.header("host") or self.org.mail_host, target))

    def _logon_page(self, request: HttpRequest) -> HttpResponse:
        destination = parse_qs(request.query).get("url", [""])[0]
        return self._response(200, owa.UTF8_HTML, owa.logon_page(destination), backend=False,
                              headers=list(owa.NO_CACHE) + [("X-Frame-Options", "SAMEORIGIN")])

    def _activesync(self, request: HttpRequest) -> HttpResponse:
        mailbox, challenge = self.authenticate(request)
        return challenge or self._render(owa.activesync_answer(request.method))

    def _oab(self, request: HttpRequest) -> HttpResponse:
        mailbox, challenge = self.authenticate(request)
        return challenge or self._response(404, HTML, iis_error_page(404, "File or directory not found."))

    def _render_front_end(self, answer: HttpAnswer) -> HttpResponse:
        """An answer the front end gives itself (no back-end headers), e.g. the FBA redirect."""
        return self._response(answer.status, answer.content_type, answer.body, headers=list(answer.headers),
                              backend=False, reason=answer.reason)

    def _pox(self, request: HttpRequest) -> HttpResponse:
        mailbox, challenge = self.authenticate(request)
        if challenge:
            return challenge
        answer = _pox_core()[0].respond_pox(self.org, request.body, mailbox, self.urls,
                                          mapi_http=self.org.mapi_http_enabled
                                          and request.header("x-mapihttpcapability") is not None,
                                          method=request.method)
        return self._autodiscover_response(request, answer)

    def _soap(self, request: HttpRequest) -> HttpResponse:
        mailbox, challenge = self.authenticate(request)
        if challenge:
            return challenge
        if request.method in ("GET", "HEAD"):
            return self._response(200, HTML, b"<html><body>You have created a service.</body></html>")
        from harness.protocols import autodiscover_soap
        answer = autodiscover_soap.respond_soap(self.org, request.body, mailbox, self.urls)
        return self._autodiscover_response(request, answer)

    def _json(self, request: HttpRequest) -> HttpResponse:
        from harness.protocols import autodiscover_json
        answer = autodiscover_json.respond_json(self.org, request.path, parse_qs(request.query), self.urls)
        return self._autodiscover_response(request, answer)

    def _ews(self, request: HttpRequest) -> HttpResponse:
        mailbox, challenge = self.authenticate(request)
        if challenge:
            return challenge
        if request.method in ("GET", "HEAD"):
            return self._response(200, HTML, b"<html><body>You have created a service.</body></html>")
        from harness.protocols import ews
        parsed = ews.parse_ews(self.org, request.body)
        answer = parsed if isinstance(parsed, ews.EwsAnswer) else (
            self._fault(ews.ews_hook, request, mailbox, parsed) or ews.execute_ews(parsed, self.store, mailbox.email))
        extra = {"back_off_ms": answer.back_off_ms} if answer.back_off_ms is not None else {}
        self.transcript.record("ews", conn=request.conn.conn_id, outcome=answer.outcome, error_code=answer.error_code,
                               detail=answer.detail, mailbox=mailbox.email, **extra)
        ews_check.check(answer)   # the test suite's schema check; off unless MOCKEX_VALIDATE_EWS names a directory
        if answer.push is not None and self.push is not None:    # a new push subscription: its POSTs begin
            self.push.start(answer.push)
        response = self._response(answer.status, answer.content_type, answer.body)
        response.chunks = answer.chunks    # GetStreamingEvents: one envelope a chunk
        if answer.stream is not None:      # ... and more as events happen, until ConnectionTimeout
            from harness.services.ews_stream import EwsStreamRunner
            response.stream = EwsStreamRunner(answer.stream, self.transcript.record, request.conn.conn_id,
                                              mailbox.email)
        return response

    def _ews_files(self, request: HttpRequest) -> HttpResponse:
        """/EWS/Services.wsdl, messages.xsd and types.xsd: static files of the (authenticated) EWS directory."""
        name = request.path[len("/ews/"):]
        files = self.ews_schema_files
        content = files.file(name, self.urls.ews_url) if files is not None and "/" not in name else None
        if content is None:
            return self._response(404, HTML, iis_error_page(404, "File or directory not found."))
        mailbox, challenge = self.authenticate(request)
        if challenge:
            return challenge
        if request.method not in ("GET", "HEAD"):
            return self._response(405, HTML, iis_error_page(405, "HTTP verb used to access this page is not "
                                                                 "allowed."))
        from harness.protocols import ews_schema  # loaded already: the files were read through it
        return self._response(200, ews_schema.STATIC_CONTENT_TYPE, content, headers=[("Accept-Ranges", "bytes")])

    def _mapi_emsmdb(self, request: HttpRequest) -> HttpResponse:
        if self._mapi is None:
            from harness.rpc.mapihttp import MapiHttpEmsmdb
            self._mapi = MapiHttpEmsmdb(self.org, self.store, random.Random(self.rng.getrandbits(64)), time.time,
                                        self.transcript.record, self.faults)
        return self._mapi_http(request, self._mapi, "emsmdb")

    def _mapi_nspi(self, request: HttpRequest) -> HttpResponse:
        if self._mapi_ab is None:
            from harness.rpc.mapihttp_nspi import MapiHttpNspi
            self._mapi_ab = MapiHttpNspi(self.org, self.urls.mapi_url, random.Random(self.rng.getrandbits(64)),
                                         time.time, self.transcript.record, self.faults)
        return self._mapi_http(request, self._mapi_ab, "nspi")

    def _mapi_http(self, request: HttpRequest, endpoint, name: str) -> HttpResponse:
        mailbox, challenge = self.authenticate(request)
        if challenge:
            return challenge
        from harness.rpc.mapihttp import MapiRequest
        mailbox_id = parse_qs(request.query).get("MailboxId", [None])[0]
        answer = endpoint.handle(MapiRequest(request.method, request.header, request.body, mailbox, mailbox_id))
        held = {"held": answer.held.describe()} if answer.held is not None else {}
        self.transcript.record("mapi_http", conn=request.conn.conn_id, endpoint=name,
                               request_type=answer.request_type, response_code=answer.response_code,
                               status=f"0x{answer.status:08x}", mailbox=mailbox.email,
                               **({"http_status": 401} if answer.http_status == 401 else held))
        if answer.http_status == 401:   # the logon expired: a fresh challenge, as IIS after a token's lifetime
            auth = request.conn.state.pop("auth", None)
            challenge = list(auth.challenge_headers()) if auth is not None else []
            return self._response(401, HTML, IIS_401, headers=challenge, backend=False)
        response = self._response(200, answer.content_type, answer.body, headers=list(answer.headers))
        response.chunks = answer.chunks
        if answer.held is not None:
            response.stream = self._held(request, answer, name, mailbox.email)
        return response

    def _held(self, request: HttpRequest, answer, name: str, mailbox: str):
        from harness.services.mapiwait import HeldMapiResponse

        def ended(how: str, pending: int) -> None:
            self.transcript.record("mapi_http_done", conn=request.conn.conn_id, endpoint=name,
                                   request_type=answer.request_type, ended=how, pending=pending, mailbox=mailbox)

        return HeldMapiResponse(answer.held, ended)

    def _autodiscover_response(self, request: HttpRequest, answer: AutodiscoverAnswer) -> HttpResponse:
        replaced = self._fault(_pox_core()[1], request, answer.mailbox, request, answer)
        if isinstance(replaced, HttpAnswer):
            self.transcript.record("autodiscover", conn=request.conn.conn_id, path=request.path,
                                   outcome=f"http-{replaced.status}", error_code="", detail=replaced.describe(),
                                   mailbox=answer.mailbox.email if answer.mailbox else None)
            return self._render(replaced)
        answer = replaced or answer
        self.transcript.record("autodiscover", conn=request.conn.conn_id, path=request.path, outcome=answer.outcome,
                               error_code=answer.error_code, detail=answer.detail,
                               mailbox=answer.mailbox.email if answer.mailbox else None)
        return self._response(answer.status, answer.content_type, answer.body, headers=self._autodiscover_headers)

    def _response(self, status: int, content_type: str, body: bytes, *, headers: Optional[Sequence] = None,
                  backend: bool = True, reason: Optional[str] = None) -> HttpResponse:
        """IIS + Exchange front-end headers; back-end headers only when the request was 'proxied' to a mailbox
        server."""
        fe_server = self.fe_server
        common = [("Content-Type", content_type), ("Server", "Microsoft-IIS/8.5"),
                  ("request-id", request_id(self.rng))]
        if backend:
            common += [("X-CalculatedBETarget", self._be_target), ("X-BackEndHttpStatus", str(status)),
                       ("X-DiagInfo", fe_server), ("X-BEServer", fe_server), ("X-AspNet-Version", "4.0.30319")]
        if headers:
            common += headers
        common += [("X-Powered-By", "ASP.NET"), ("X-FEServer", fe_server), ("Date", http_date())]
        return HttpResponse(status, reason or REASONS.get(status, ""), common, body)


class RedirectSite:
    """The plain-HTTP (port 80) vhost admins set up for the HTTP-redirect discovery method: 302 to https, any path.

    The ``http_request`` hook may answer instead (an HttpAnswer or HttpResponse), e.g. a 401 demanding Basic
    credentials over plain HTTP or a redirect elsewhere. Credentials that arrive here are recorded (the user name,
    and whether the password was right, never the password): a client must never send them over this leg."""

    def __init__(self, org, transcript: Transcript, https_port: int, *, faults: Optional[FaultSet] = None,
                 rpc_site: Optional["ExchangeSite"] = None):
        self.org, self.transcript = org, transcript
        self.faults = faults if faults is not None else FaultSet()
        # Set-OutlookAnywhere -SSLOffloading $true: TLS ends at an offloader in front of the CAS, so the /rpc virtual
        # directory takes plain HTTP, here on the port-80 listener (the offloader's back side), served by the site.
        self.rpc_site = rpc_site
        port = "" if https_port == 443 else f":{https_port}"
        self.base = f"https://{org.autodiscover_host}{port}"
        self.identity = ServerIdentity.for_org(org)

    batch = ExchangeSite.batch
    connection_made = ExchangeSite.connection_made
    connection_lost = ExchangeSite.connection_lost
    limit_reached = ExchangeSite.limit_reached
    response_sent = ExchangeSite.response_sent
    bad_request = ExchangeSite.bad_request

    def tls_handshake(self, info, ok, reason):  # plain listener: never called
        pass

    def _offloaded_rpc(self, request: HttpRequest) -> bool:
        return (self.rpc_site is not None and request.path.lower().startswith("/rpc/")
                and self.org.cas_outlook_anywhere.ssl_offloading)

    def handle(self, request: HttpRequest) -> HttpResponse:
        if self._offloaded_rpc(request):
            return self.rpc_site.handle(request)
        if request.header("authorization"):
            self._record_credentials(request)
        answer = self.faults.first(http_request_hook, Scope(host=request.host), request) or self._redirect(request)
        if isinstance(answer, HttpResponse):
            return answer
        return HttpResponse(answer.status, answer.reason or REASONS.get(answer.status, ""),
                            [*answer.headers, ("Content-Type", answer.content_type), ("Server", "Microsoft-IIS/8.5"),
                             ("Date", http_date())], answer.body)

    def _redirect(self, request: HttpRequest) -> HttpAnswer:
        path = request.path if request.path.lower().startswith("/autodiscover/") else "/autodiscover/autodiscover.xml"
        # The path was percent-decoded: encode it again (as IIS keeps it), or a "€" or a CR/LF would make the
        # Location header unsendable.
        location = self.base + quote(path, safe="/-._~!$&'()*+,;=:@")
        return HttpAnswer(302, moved_page(location), headers=(("Location", location),))

    def _record_credentials(self, request: HttpRequest) -> None:
        header = request.header("authorization") or ""
        scheme = split_authorization(header)[0]
        login, valid = "", None
        if scheme.lower() not in KNOWN_SCHEMES:   # a scheme-less header: its first word may be the secret itself
            scheme = "unknown"
        if scheme.lower() == "basic":   # read as the HTTPS site reads it: "valid" means it would have let them in
            login, valid = basic_password_check(self.org, self.identity, header) or ("", False)
        self.transcript.record("auth", conn=request.conn.conn_id, scheme=scheme, **_who(self.org, login),
                               result="sent in clear",
                               reason="credentials sent over plain HTTP", password_valid=valid, tls=False,
                               path=request.target)

    def too_large(self, request, size):
        return self.handle(request)

    def open_tunnel(self, request, io):
        if self._offloaded_rpc(request):
            return self.rpc_site.open_tunnel(request, io)
        return self.handle(request)


def _who(org: Org, login: str, mailbox: Optional[Mailbox] = None) -> Dict[str, str]:
    """An auth event's ``user`` (the mailbox's address when the login names one: CONTOSO\\alice, alice and
    alice@contoso.test are all alice@contoso.test) and ``login`` (as typed)."""
    mailbox = mailbox or org.find(login)
    return {"user": mailbox.email if mailbox else login, "login": login}
