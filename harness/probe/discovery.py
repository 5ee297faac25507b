"""Autodiscover the way Outlook does it: root domain https, autodiscover.<domain> https, the HTTP redirect method,
then the SRV record; redirectAddr restarts with the new address, redirectUrl and an HTTP redirect on the POST are
followed (https only, at most 10 redirects, loops detected). Outlook stops at the first successful POST.

Each attempt is a step with its own DNS/port/certificate/POST children. When every attempt fails, failures that
only mean "this method is not set up" (ABSENT: no such name, no SRV record, a root-domain web site, no listener
on the bare domain or on port 80; at any URL a 403/404/405) do not decide. Among the others the attempt that got
furthest decides (DNS < port < certificate < HTTP answer < Autodiscover answer), the earliest one on a tie. When
nothing but absences is left, the verdict is no-autodiscover-endpoint.
"""
from __future__ import annotations

from collections import Counter
from typing import List, Optional, Tuple
from urllib.parse import urlsplit

from harness.probe import pox
from harness.probe.hosts import ProbeContext, check_host
from harness.probe.http import authenticated, choose_scheme, offered_schemes
from harness.probe.pox import OutlookSettings, RedirectAddr, RedirectUrl
from harness.probe.report import Step, StepFailed, Timed
from harness.verdicts import http_status_reason

MAX_REDIRECTS = 10
AUTODISCOVER_PATH = "/autodiscover/autodiscover.xml"
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
STAGE = {"dns": 1, "port": 2, "certificate": 3, "autodiscover": 4}
ANSWER_REASONS = ("no-expr", "redirect-loop", "too-many-redirects", "insecure-redirect")
_NO_NAME = ("nxdomain", "no-a-record")
NOT_SERVED_HERE = ("http-403", "http-404", "http-405")   # at any URL: no Autodiscover there
ABSENT = {
    "root-domain": _NO_NAME + ("connection-refused", "connection-timeout", "malformed-response", "http-401"),
    "autodiscover-domain": _NO_NAME,
    "http-redirect": _NO_NAME + ("connection-refused", "connection-timeout", "no-redirect"),
    "srv": ("no-srv-record",),
}


class Discovery:
    def __init__(self, context: ProbeContext, preferred_scheme: Optional[str] = None, mapi_http: bool = False):
        self.context = context
        self.preferred_scheme = preferred_scheme
        self.mapi_http = mapi_http      # send X-MapiHttpCapability, as Outlook 2013 SP1+ does
        self.phase = Step("autodiscover", "Autodiscover", "autodiscover", context.email.rsplit("@", 1)[-1])
        self.hops = 0
        self._posted: set = set()
        self._addresses: List[str] = []
        self._names: Counter = Counter()
        self._failures: List[Tuple[int, int, Step]] = []
        self._absences: List[Step] = []

    # ---- the phase ------------------------------------------------------------------------------------------
    def run(self) -> Optional[OutlookSettings]:
        with Timed(self.phase):
            settings = self._discover()
            if settings is not None:
                self.phase.passed(_summary(settings), **settings.evidence())
            elif self._failures:
                _, _, best = max(self._failures, key=lambda f: (f[0], -f[1]))
                self.phase.fail(best.reason, best.message)
                self.phase.host = best.host
                self.phase.cause = best.id
            else:
                tried = "; ".join(f"{node.host}: {node.reason}" for node in self._absences)
                self.phase.fail("no-autodiscover-endpoint", f"no Autodiscover method is set up ({tried or 'none'})")
                self.phase.cause = self.phase.id
        return settings

    def _discover(self) -> Optional[OutlookSettings]:
        address = self.context.email
        self._addresses.append(address.lower())
        while True:
            outcome = self._methods(address)
            if not isinstance(outcome, RedirectAddr):
                return outcome
            address = outcome.address

    def _methods(self, address: str):
        domain = address.rsplit("@", 1)[-1].lower()
        for method in (self._root_domain, self._autodiscover_domain, self._http_redirect, self._srv):
            outcome = method(address, domain)
            if outcome is not None:
                return outcome
        return None

    # ---- the four methods -----------------------------------------------------------------------------------
    def _root_domain(self, address: str, domain: str):
        return self._post_chain(self.phase, "root-domain", f"https://{domain}{AUTODISCOVER_PATH}", address,
                                ABSENT["root-domain"])

    def _autodiscover_domain(self, address: str, domain: str):
        return self._post_chain(self.phase, "autodiscover-domain",
                                f"https://autodiscover.{domain}{AUTODISCOVER_PATH}", address,
                                ABSENT["autodiscover-domain"])

    def _http_redirect(self, address: str, domain: str):
        host = f"autodiscover.{domain}"
        node = self.phase.add(Step(self._id(self.phase, "http-redirect"),
                                   f"HTTP redirect method: http://{host}{AUTODISCOVER_PATH}", "autodiscover", host))
        with Timed(node):
            connector = check_host(self.context, node, host, self.context.http_port, secure=False)
            if connector is None:
                return self._failed(node, absent=ABSENT["http-redirect"])
            get = node.add(Step(f"{node.id}.redirect", "GET (anonymous)", "autodiscover", host))
            with Timed(get):
                conn = connector.open()
                try:
                    response = conn.request("GET", AUTODISCOVER_PATH)
                finally:
                    conn.close()
                location = response.header("Location") if response.status in REDIRECT_STATUSES else None
                if not location:
                    raise StepFailed("no-redirect", f"answered {response.status} {response.reason}, not a redirect",
                                     status=response.status)
                if not location.lower().startswith("https://"):
                    raise StepFailed("insecure-redirect", f"redirects to {location}: only https is followed",
                                     location=location)
                get.passed(f"{response.status} → {location}", location=location)
            if get.status == "fail":
                return self._failed(node, get, ABSENT["http-redirect"])
            outcome = self._post_chain(node, "target", location, address)
            self._close(node, outcome)
            return outcome

    def _srv(self, address: str, domain: str):
        name = f"_autodiscover._tcp.{domain}"
        node = self.phase.add(Step(self._id(self.phase, "srv"), f"SRV record {name}", "autodiscover", domain))
        with Timed(node):
            lookup = node.add(Step(f"{node.id}.dns", f"DNS SRV {name}", "dns", domain))
            with Timed(lookup):
                targets = self.context.resolver.srv(name, self.context.budget.timeout())
                best = targets[0]
                lookup.passed(f"{name} → {best.target} (port {best.port}, priority {best.priority})",
                              records=[t.__dict__ for t in targets])
                if best.target != domain and not best.target.endswith("." + domain):
                    lookup.mark("warn", f"{best.target} is outside {domain}: Outlook asks the user to allow it",
                                records=[t.__dict__ for t in targets])
            if lookup.status == "fail":
                return self._failed(node, lookup, ABSENT["srv"])
            # Outlook ignores the SRV port and dials 443 (here: --port)
            outcome = self._post_chain(node, "target", f"https://{best.target}{AUTODISCOVER_PATH}", address)
            self._close(node, outcome)
            return outcome

    # ---- POSTs and redirects --------------------------------------------------------------------------------
    def _post_chain(self, container: Step, name: str, url: str, address: str, absent=()):
        """POST to ``url`` and follow redirectUrl / HTTP redirects; settings, a RedirectAddr, or None.
        ``absent``: the reasons that, for this first URL, only mean the method is not set up."""
        while True:
            host = urlsplit(url).hostname or ""
            attempt = container.add(Step(self._id(container, name), url, "autodiscover", host))
            with Timed(attempt):
                answer = self._post(attempt, url, address, absent)
                if answer is None:
                    return None
                if isinstance(answer, OutlookSettings):
                    return answer
                self._check_redirect(answer, address)
                self.hops += 1
                attempt.mark("info", _describe(answer), redirect=_target(answer))
                if isinstance(answer, RedirectAddr):
                    self._addresses.append(answer.address.lower())
                    return answer
            if attempt.status == "fail":
                self._note(attempt)
                return None
            container, name, url, absent = self.phase, "redirect-url", answer.url, ()

    def _check_redirect(self, answer, address: str) -> None:
        if self.hops >= MAX_REDIRECTS:
            raise StepFailed("too-many-redirects", f"more than {MAX_REDIRECTS} redirects", hops=self.hops)
        if isinstance(answer, RedirectAddr):
            if answer.address.lower() in self._addresses:
                raise StepFailed("redirect-loop", f"redirectAddr to {answer.address}, an address already tried",
                                 addresses=self._addresses)
            return
        if not answer.url.lower().startswith("https://"):
            raise StepFailed("insecure-redirect", f"redirect to {answer.url}: only https is followed")
        if (answer.url.lower(), address.lower()) in self._posted:
            raise StepFailed("redirect-loop", f"redirect to {answer.url}, a URL already tried for {address}")

    def _post(self, attempt: Step, url: str, address: str, absent=()):
        parts = urlsplit(url)
        host = parts.hostname or ""
        connector = check_host(self.context, attempt, host, parts.port or self.context.https_port, secure=True)
        if connector is None:
            self._note(next(c for c in attempt.children if c.status == "fail"), absent)
            return None
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._posted.add((url.lower(), address.lower()))
        post = attempt.add(Step(f"{attempt.id}.post", "POST", "autodiscover", host))
        with Timed(post):
            response, scheme = self._send(connector, path, address)
            post.title = f"POST ({scheme})" if scheme else "POST (anonymous)"
            post.evidence.update(status=response.status, scheme=scheme,
                                 server=response.header("Server"), request_id=response.header("request-id"))
            if response.status in REDIRECT_STATUSES and response.header("Location"):
                post.passed(f"{response.status} → {response.header('Location')}")
                return RedirectUrl(response.header("Location"))
            if response.status == 401:
                raise StepFailed("http-401", f"401 Unauthorized with {scheme or 'no usable scheme'}: wrong user name "
                                             f"or password?", offered=offered_schemes(response))
            if response.status != 200:
                raise StepFailed(http_status_reason(response.status), f"HTTP {response.status} {response.reason}")
            answer = pox.parse_response(response.body, address)
            if isinstance(answer, OutlookSettings):
                post.passed(f"settings: {_summary(answer)}")
            else:
                post.passed(_describe(answer))
        if post.status == "fail":
            attempt.fail(post.reason, post.message)
            attempt.cause = post.id
            self._note(post, absent)
            return None
        return answer

    def _send(self, connector, path: str, address: str):
        """Anonymous POST first, as Outlook does, to learn the schemes; then authenticated on the same connection."""
        body = pox.request_body(address)
        headers = pox.REQUEST_HEADERS + [("X-AnchorMailbox", address)] + (
            [pox.MAPI_HTTP_CAPABILITY] if self.mapi_http else [])
        conn = connector.open()
        try:
            first = conn.request("POST", path, headers, body)
            if first.status != 401:
                return first, None
            scheme = choose_scheme(offered_schemes(first), self.preferred_scheme)
            if scheme is None:
                return first, None
            return authenticated(conn, "POST", path, headers, body, self.context.credentials, scheme), scheme
        finally:
            conn.close()

    # ---- bookkeeping -------------------------------------------------------------------------------------------
    def _id(self, container: Step, name: str) -> str:
        base = f"{container.id}.{name}"
        self._names[base] += 1
        count = self._names[base]
        return base if count == 1 else f"{base}#{count}"

    def _note(self, node: Step, absent=()) -> None:
        """Remember a failed check for the phase verdict (its stage, then the order it happened in)."""
        if node.reason in absent or node.reason in NOT_SERVED_HERE:
            self._absences.append(node)
            return
        stage = STAGE.get(node.step or "autodiscover", 4)
        if node.reason in ANSWER_REASONS or (node.reason or "").startswith("autodiscover-error-"):
            stage = 5
        self._failures.append((stage, len(self._failures), node))

    def _failed(self, node: Step, failing: Optional[Step] = None, absent=()):
        failing = failing or next(c for c in node.children if c.status == "fail")
        node.fail(failing.reason, failing.message)
        node.cause = failing.id
        self._note(failing, absent)
        return None

    @staticmethod
    def _close(node: Step, outcome) -> None:
        if outcome is not None:
            node.passed("")
            return
        failing = next((c for c in node.children if c.status == "fail"), None)
        if failing is not None:
            node.fail(failing.reason, failing.message)
            node.cause = failing.id


def _summary(settings: OutlookSettings) -> str:
    outlook_anywhere = (f"EXPR {settings.proxy_host}, AuthPackage {settings.auth_package}" if settings.proxy_host
                        else "no EXPR")
    return outlook_anywhere + ("; MAPI over HTTP offered" if settings.mapi_mailstore_url else "")


def _target(answer) -> str:
    return answer.address if isinstance(answer, RedirectAddr) else answer.url


def _describe(answer) -> str:
    return f"{'redirectAddr' if isinstance(answer, RedirectAddr) else 'redirectUrl'} → {_target(answer)}"
