"""Client conduct: what a client did wrong on the wire, judged from the mock's transcript alone (sans-IO).

One function per rule takes the transcript events and the org's facts (``Namespace``) and returns ``Violation``s,
each with the rule's name and a one-line explanation. ``RULES`` is the registry: every rule's name, what it checks,
the real incident that motivates it, what the transcript can and cannot show, and whether it is judged by default.
docs/conduct.md is generated from it (``markdown``); `mockex run` judges every client by the default rules, and a
scenario's ``expect.client.conduct: {require: [...], waive: [...]}`` adds or removes rules.

The transcript sees only what reaches the mock: a DNS query asked of another resolver, or a connection to a real
host on the Internet, leaves no trace here. Each rule's ``observes`` says what it can judge.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Callable, Dict, FrozenSet, Iterable, List, Optional, Sequence, Set, Tuple
from urllib.parse import urljoin, urlsplit

from harness.transcript import trusted_handshakes

MAX_REDIRECTS = 10            # "The client application should stop redirecting after 10 redirects." (RedirectUrl)
MAX_REFUSED_LOGONS = 5        # refused logons for one user in one run before it is hammering
BACKOFF_SLACK = 0.05          # seconds a retry may come early (time stamps are the server's, rounded to 1 us)
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
BUSY_STATUSES = {429, 503}
EC_SERVER_BUSY = "0x00000480"
ROP_LOGON = 0xFE              # RopLogon's RopId (MS-OXCROPS 2.2.3.1)
_URL = re.compile(r"https?://\S+", re.I)


@dataclass(frozen=True)
class Violation:
    rule: str
    message: str          # one line: what the client did, where (no secret: the transcript holds none)
    seq: Optional[int] = None

    def to_json(self) -> Dict[str, object]:
        return {"rule": self.rule, "message": self.message, "seq": self.seq}


@dataclass(frozen=True)
class Namespace:
    """The org's names: its domain (and every name below it) and the host names its certificate carries."""
    domain: str
    hostnames: FrozenSet[str] = frozenset()
    max_refused_logons: int = MAX_REFUSED_LOGONS

    def holds(self, name: Optional[str]) -> bool:
        if not name:
            return True
        name = name.rstrip(".").lower()
        if name in self.hostnames or name == self.domain or name.endswith("." + self.domain):
            return True
        if name == "localhost" or name.endswith((".in-addr.arpa", ".ip6.arpa")):
            return True   # loopback and reverse lookups leak nothing of the user's
        try:
            ipaddress.ip_address(name.strip("[]"))
            return True   # an address literal: the client chose the address itself
        except ValueError:
            return False


def namespace(domain: str, hostnames: Iterable[str] = (), max_refused_logons: int = MAX_REFUSED_LOGONS) -> Namespace:
    return Namespace(domain.lower().rstrip("."), frozenset(h.lower() for h in hostnames), max_refused_logons)


# ---- reading the transcript ---------------------------------------------------------------------------------------
@dataclass
class _Request:
    seq: int
    time: float
    scheme: str           # "https" or "http": which listener it came in on
    host: str
    path: str             # lower-cased, without the query
    status: int
    conn: object = None
    headers: Dict[str, str] = field(default_factory=dict)   # response headers, names lower-cased

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}"


def _requests(events: Sequence[dict]) -> List[_Request]:
    listener = {e.get("conn"): e.get("listener") for e in events if e["kind"] == "connect"}
    found = []
    for event in events:
        if event["kind"] != "http":
            continue
        scheme = "http" if listener.get(event.get("conn")) == "http" else "https"
        host = (event.get("host") or event.get("sni") or "").lower()
        found.append(_Request(event["seq"], event.get("time", 0.0), scheme, host, _path(event.get("path") or "/"),
                              int(event.get("status") or 0), event.get("conn"),
                              {str(n).lower(): str(v) for n, v in event.get("response_headers") or []}))
    return found


def _path(target: str) -> str:
    return (target.split("?", 1)[0] or "/").lower()


def _same_place(url: str, request: _Request) -> bool:
    """``request`` asked for ``url`` (host and path; the port stands for 443/80 and is ignored)."""
    parts = urlsplit(url)
    return (parts.hostname or "").lower() == request.host and _path(parts.path or "/") == request.path


@dataclass
class _Redirect:
    seq: int              # the answer's position in the transcript
    source: _Request      # the request that was answered with it
    target: str           # absolute URL
    kind: str             # "HTTP 302", "redirectUrl", ...


def _redirects(events: Sequence[dict], requests: List[_Request]) -> List[_Redirect]:
    """HTTP 3xx answers with a Location, and Autodiscover redirectUrl answers (to a URL), in transcript order."""
    found = []
    for request in requests:
        location = request.headers.get("location")
        if request.status in REDIRECT_STATUSES and location:
            found.append(_Redirect(request.seq, request, urljoin(request.url, location), f"HTTP {request.status}"))
    for event in events:
        if event["kind"] == "autodiscover" and event.get("outcome") == "redirectUrl":
            match = _URL.search(str(event.get("detail") or ""))
            answered = _answer_of(event, requests)
            if match and answered is not None:
                found.append(_Redirect(answered.seq, answered, match.group(0), "redirectUrl"))
    return sorted(found, key=lambda r: r.seq)


def _answer_of(event: dict, requests: List[_Request]) -> Optional[_Request]:
    """The HTTP request an Autodiscover event was the answer to: the next one finished on its connection."""
    return next((r for r in requests if r.seq > event["seq"] and r.conn == event.get("conn")), None)


def _followed(redirect: _Redirect, requests: List[_Request]) -> Optional[_Request]:
    """The first later request for the redirect's target, if the client made one."""
    return next((r for r in requests if r.seq > redirect.seq and _same_place(redirect.target, r)), None)


# ---- the rules ------------------------------------------------------------------------------------------------------
def credentials_untrusted_tls(events: Sequence[dict], org: Namespace) -> List[Violation]:
    trusted = trusted_handshakes(events, org.hostnames or None)
    return [Violation("credentials-untrusted-tls",
                      f"it sent {e.get('scheme') or 'its'} credentials over a TLS connection it should not have "
                      f"trusted (connection {e.get('conn')}, {e.get('path', '')})", e["seq"])
            for e in events if e["kind"] == "auth" and e.get("tls") and not trusted.get(e.get("conn"))]


def credentials_cleartext(events: Sequence[dict], org: Namespace) -> List[Violation]:
    found = []
    for event in events:
        if event["kind"] == "auth" and not event.get("tls"):
            scheme = event.get("scheme") or "its"
            what = "the password itself, in clear text" if str(scheme).lower() == "basic" else "readable by anyone"
            found.append(Violation("credentials-cleartext",
                                   f"it sent {scheme} credentials over plain HTTP ({what}; connection "
                                   f"{event.get('conn')}, {event.get('path', '')})", event["seq"]))
    return found


def outside_namespace(events: Sequence[dict], org: Namespace) -> List[Violation]:
    found, seen = [], set()
    for event in events:
        kind = event["kind"]
        name = {"dns": event.get("name"), "http": event.get("host"), "tls": event.get("sni")}.get(kind)
        if kind not in ("dns", "http", "tls") or org.holds(name) or (kind, str(name).lower()) in seen:
            continue
        seen.add((kind, str(name).lower()))
        how = {"dns": "looked up", "http": "sent a request to", "tls": "opened TLS to"}[kind]
        label = str(name).rstrip(".").lower()
        leak = (" (autodiscover.<tld>: the 2021 Autodiscover credential-leak pattern)"
                if label.startswith("autodiscover.") and not label.endswith("." + org.domain) else "")
        found.append(Violation("outside-namespace", f"it {how} {label}, outside the org's namespace "
                                                    f"{org.domain}{leak}", event["seq"]))
    return found


Chain = List[Tuple[_Redirect, Optional[_Request]]]


def _chains(events: Sequence[dict]) -> List[Chain]:
    """Redirects grouped into chains, each with the request that followed it (None: not followed): a redirect
    answered to a request the client made by following an earlier one extends that one's chain."""
    requests = _requests(events)
    chains: List[Chain] = []
    reached: Dict[str, int] = {}   # URL reached by following -> its chain
    for redirect in _redirects(events, requests):
        index = reached.get(redirect.source.url)
        if index is None:
            chains.append([])
            index = len(chains) - 1
        follow = _followed(redirect, requests)
        chains[index].append((redirect, follow))
        if follow is not None:
            reached[follow.url] = index
    return chains


def redirect_limit(events: Sequence[dict], org: Namespace) -> List[Violation]:
    found = []
    for chain in _chains(events):
        redirects = [redirect for redirect, _ in chain]
        follows = [follow for _, follow in chain]
        count = sum(1 for follow in follows if follow is not None)
        if count > MAX_REDIRECTS:
            last = next(f for f in reversed(follows) if f is not None)
            found.append(Violation("redirect-limit", f"it followed {count} redirects in a row (at most "
                                                     f"{MAX_REDIRECTS}), the last to {last.url}", last.seq))
        # Going back to a URL once is how a client finds the loop (the probe does); following the same redirect
        # (scheme, host and path of both ends) a second time is going round it.
        taken: Set[Tuple[str, str]] = set()
        for redirect, follow in zip(redirects, follows):
            if follow is None:
                continue
            step = (redirect.source.url, follow.url)
            if step in taken:
                found.append(Violation("redirect-limit", f"it went round a redirect loop: {step[0]} -> {step[1]} "
                                                         "a second time", follow.seq))
                break
            taken.add(step)
    return found


def insecure_redirect(events: Sequence[dict], org: Namespace) -> List[Violation]:
    requests = _requests(events)
    return [Violation("insecure-redirect", f"it followed a {r.kind} to {r.target} over plain HTTP", follow.seq)
            for r in _redirects(events, requests)
            if r.target.lower().startswith("http://") and (follow := _followed(r, requests)) is not None
            and follow.scheme == "http"]


def _retry_after(request: _Request) -> Optional[float]:
    value = request.headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    try:
        when, now = parsedate_to_datetime(value), parsedate_to_datetime(request.headers.get("date", ""))
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - now).total_seconds())


def backoff(events: Sequence[dict], org: Namespace) -> List[Violation]:
    """Busy answers and the wait they asked for: HTTP 429/503 with Retry-After (next request to that host),
    RopBackoff after any ROP (next ROP buffer of that session, the delayed ROP asked again for that mailbox, and
    after a delayed RopLogon the next mailbox logon), EWS ErrorServerBusy with BackOffMilliseconds (next EWS
    request)."""
    requests = _requests(events)
    found = []
    for request in requests:
        wait = _retry_after(request) if request.status in BUSY_STATUSES else None
        if wait is not None:
            found += _too_soon(request.time, wait, f"HTTP {request.status} Retry-After {wait:g} s from "
                               f"{request.host}", [(r.seq, r.time) for r in requests
                                                   if r.seq > request.seq and r.host == request.host])
    logons = [(e["seq"], e["time"]) for e in events if e["kind"] == "emsmdb_logon"]
    executes = [e for e in events if e["kind"] == "emsmdb_execute"]
    found += _rop_backoffs(executes, logons)
    for event in events:
        seq, when = event["seq"], event.get("time", 0.0)
        # a transcript without emsmdb_execute events: RopBackoff is known only from the RopLogon it delayed
        if not executes and event["kind"] == "emsmdb_logon" and event.get("result") == EC_SERVER_BUSY \
                and event.get("backoff_ms"):
            found += _too_soon(when, event["backoff_ms"] / 1000, f"ecServerBusy (RopBackoff {event['backoff_ms']} ms)",
                               [logon for logon in logons if logon[0] > seq])
        if event["kind"] == "ews" and event.get("error_code") == "ErrorServerBusy" and event.get("back_off_ms"):
            found += _too_soon(when, event["back_off_ms"] / 1000,
                               f"EWS ErrorServerBusy (BackOffMilliseconds {event['back_off_ms']})",
                               [(r.seq, r.time) for r in requests if r.seq > _answered_at(event, requests)
                                and r.path.startswith("/ews/")])
    return found


def _rop_backoffs(executes: List[dict], logons: List[Tuple[int, float]]) -> List[Violation]:
    """Each ROP buffer answered with a RopBackoff, against the first retry after it: the session's next ROP
    buffer (EcDoRpcExt2 / Execute), a buffer of that mailbox asking a delayed ROP again, or for a delayed RopLogon
    any later logon."""
    found = []
    for busy in executes:
        delayed = set(busy.get("backoff_rops") or ())
        if not delayed:
            continue
        later = [(e["seq"], e["time"]) for e in executes if e["seq"] > busy["seq"] and (
            e["session"] == busy["session"] or (e["mailbox"] == busy["mailbox"] and delayed & set(e["rops"])))]
        if ROP_LOGON in delayed:
            later += [logon for logon in logons if logon[0] > busy["seq"]]
        rop_ids = ", ".join(f"0x{rop:02X}" for rop in sorted(delayed))
        found += _too_soon(busy["time"], busy.get("backoff_ms", 0) / 1000,
                           f"RopBackoff {busy.get('backoff_ms', 0)} ms (RopId {rop_ids})", sorted(later))
    return found


def _answered_at(event: dict, requests: List[_Request]) -> int:
    answered = _answer_of(event, requests)
    return answered.seq if answered is not None else event["seq"]


def _too_soon(busy_at: float, wait: float, what: str, later: List[Tuple[int, float]]) -> List[Violation]:
    if not later:
        return []
    seq, when = later[0]
    if when - busy_at >= wait - BACKOFF_SLACK:
        return []
    return [Violation("backoff", f"it retried {when - busy_at:.2f} s after {what}, before the wait was over", seq)]


def logon_retries(events: Sequence[dict], org: Namespace) -> List[Violation]:
    refused: Dict[str, List[dict]] = {}
    for event in events:
        if event["kind"] == "auth" and event.get("result") == "failure":
            refused.setdefault(str(event.get("user") or "(no user)").lower(), []).append(event)
    return [Violation("logon-retries", f"it sent {len(found)} refused logons for {user} (at most "
                                       f"{org.max_refused_logons}): one 401 for good credentials means stop",
                      found[org.max_refused_logons]["seq"])
            for user, found in refused.items() if len(found) > org.max_refused_logons]


def ignored_redirect(events: Sequence[dict], org: Namespace) -> List[Violation]:
    requests = _requests(events)
    found = [Violation("ignored-redirect", f"it never asked {r.target}, where a {r.kind} answer sent it", r.seq)
             for r in _redirects(events, requests) if r.kind == "redirectUrl" and _followed(r, requests) is None]
    for event in events:
        if event["kind"] == "autodiscover" and event.get("outcome") == "redirectAddr":
            if not any(r.seq > event["seq"] + 1 and r.path.startswith("/autodiscover") for r in requests):
                address = str(event.get("detail") or "").rsplit(" ", 1)[-1]
                found.append(Violation("ignored-redirect", f"it never restarted Autodiscover with {address}, where "
                                                           "a redirectAddr answer sent it", event["seq"]))
    return sorted(found, key=lambda v: v.seq or 0)


# ---- the registry ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    name: str
    check: Callable[[Sequence[dict], Namespace], List[Violation]]
    summary: str          # what a correct client does
    incident: str         # the real event that motivates the rule
    observes: str         # what the transcript shows of it, and what it cannot
    default: bool = True  # judged in every scenario unless waived


GUARDICORE = ("Guardicore Labs, \"Autodiscovering the Great Leak\" (Amit Serper, September 2021): Outlook-compatible "
              "clients that could not reach the org's Autodiscover fell back to autodiscover.<tld> "
              "(autodiscover.com, autodiscover.com.br, ...); the researchers registered those domains and collected "
              "372,072 Windows domain credentials in four months, most as HTTP Basic in clear text.")

RULES: Dict[str, Rule] = {rule.name: rule for rule in (
    Rule("credentials-untrusted-tls", credentials_untrusted_tls,
         "Sends credentials over TLS only when the certificate is one it must accept: valid dates, a trusted chain, "
         "the host name it asked for.",
         "FTC v. Fandango and Credit Karma (2014): both apps turned off SSL certificate validation, so anyone on the "
         "path could present a certificate and read logins; Georgiev et al., \"The most dangerous code in the "
         "world\" (CCS 2012) found the same in many SDKs.",
         "Judged from the TLS handshake the mock records (the certificate profile served and the SNI asked) and the "
         "auth events on that connection; a client that gives no SNI is judged by the certificate alone."),
    Rule("credentials-cleartext", credentials_cleartext,
         "Never sends credentials (Basic, NTLM, Negotiate) over plain HTTP, also when a plain-HTTP server asks "
         "for them with a 401.",
         GUARDICORE + " The same report's \"back-off\" downgrade answered 401 Basic to get the password itself.",
         "Judged from auth events on the plain-HTTP (port-80 role) listener: the mock records the scheme and user "
         "(never the password)."),
    Rule("outside-namespace", outside_namespace,
         "Looks up and connects only to names in the org's namespace (its domain and the names it publishes), "
         "never autodiscover.<tld> or another foreign host.",
         GUARDICORE,
         "Judged from DNS queries, HTTP Host headers and TLS SNI that reach the mock: only when the client uses the "
         "mock's DNS server (or connects to the mock under that name); a query sent to another resolver is not "
         "seen. Reverse lookups, localhost and address literals are not counted."),
    Rule("redirect-limit", redirect_limit,
         f"Follows at most {MAX_REDIRECTS} redirects in a row (HTTP 3xx, Autodiscover redirectUrl) and stops at a "
         "loop: it may come back to a URL once (that is how it sees the loop), never follow the same redirect twice.",
         "Microsoft's RedirectUrl (POX) reference: \"The client application should stop redirecting after 10 "
         "redirects\"; hybrid deployments whose TargetAddress and redirect rules point at each other send "
         "clients round in circles (exchangelib and ews-javascript-api cap redirects at 10 for that reason).",
         "Judged from the mock's redirect answers and the client's next request for each target (host and path; "
         "the port is ignored): a redirect is followed when the target is asked for after it."),
    Rule("insecure-redirect", insecure_redirect,
         "Follows only https redirects: an http:// target would carry the next request, and its credentials, in "
         "clear text.",
         "MS-OXDSCLI and the Exchange Autodiscover guidance allow only https redirect targets; the port-80 "
         "redirect method exists only to point at https. " + GUARDICORE.split(":")[0]
         + " showed how readily clients send credentials wherever they are sent.",
         "Judged from redirect answers whose target is http:// and a later request for that target on the "
         "plain-HTTP listener."),
    Rule("backoff", backoff,
         "Waits as long as the server asks: HTTP Retry-After on 429/503, RopBackoff (after any ROP), EWS "
         "BackOffMilliseconds with ErrorServerBusy.",
         "Exchange Online throttling: EWS clients that ignored BackOffMilliseconds kept their throttling budget "
         "exhausted and were throttled for longer (Microsoft, \"EWS throttling in Exchange\"); MS-OXCROPS RopBackoff "
         "and RFC 9110 Retry-After say the same for RPC and HTTP.",
         f"Judged from the server's time stamps ({BACKOFF_SLACK:g} s slack): the next request to the same host "
         "after a 429/503 with Retry-After; after a ROP buffer answered with a RopBackoff (whichever ROP it "
         "delays), the session's next EcDoRpcExt2/Execute, a buffer of that mailbox asking a delayed ROP again, or "
         "(a delayed RopLogon) the next mailbox logon; the next EWS request after ErrorServerBusy when the mock "
         "records its BackOffMilliseconds."),
    Rule("logon-retries", logon_retries,
         f"Stops after a refused logon instead of retrying: at most {MAX_REFUSED_LOGONS} refused logons per user "
         "in a run.",
         "Active Directory account lockouts from phones and sync clients that retry a stale password after a "
         "password change (Microsoft's account-lockout troubleshooting guidance names ActiveSync devices as the "
         "classic source).",
         "Judged from auth events the mock refused (result failure), per user; challenge round trips "
         "(NTLM/Negotiate continue) are not counted."),
    Rule("ignored-redirect", ignored_redirect,
         "Does not ignore an Autodiscover redirect: after redirectUrl it asks the new URL, after redirectAddr it "
         "restarts Autodiscover for the new address.",
         "Hybrid migrations: once a mailbox moves to Exchange Online, on-premises Autodiscover answers redirectAddr "
         "to the user's routing address; clients that ignore it keep talking to the old server and fail after the "
         "move.",
         "Judged from the mock's redirect answers and whether any later request goes to the new URL (redirectUrl) or "
         "to Autodiscover at all (redirectAddr: the request body, hence the address asked, is not in the "
         "transcript). Off by default (a client may find the settings another way); scenarios that test redirects "
         "require it.",
         default=False),
)}

DEFAULT_RULES: Tuple[str, ...] = tuple(name for name, rule in RULES.items() if rule.default)


def rules_for(require: Iterable[str] = (), waive: Iterable[str] = ()) -> List[str]:
    """The rules judged: the default ones plus ``require``, less ``waive``, in registry order."""
    chosen = (set(DEFAULT_RULES) | set(require)) - set(waive)
    return [name for name in RULES if name in chosen]


def judge(events: Sequence[dict], org: Namespace, rules: Optional[Iterable[str]] = None) -> List[Violation]:
    """Every violation of the given rules (default: ``DEFAULT_RULES``), rule by rule."""
    events = list(events)
    return [v for name in (DEFAULT_RULES if rules is None else rules) for v in RULES[name].check(events, org)]


CONDUCT_BEGIN = "<!-- conduct:begin (generated by python -m harness.catalog_docs) -->"
CONDUCT_END = "<!-- conduct:end -->"


def markdown() -> str:
    """The rule reference of docs/conduct.md."""
    lines = []
    for rule in RULES.values():
        lines += [f"### `{rule.name}`{'' if rule.default else ' (off unless required)'}", "", rule.summary, "",
                  f"**Why:** {rule.incident}", "", f"**Judged from:** {rule.observes}", ""]
    return "\n".join(lines).rstrip("\n")
