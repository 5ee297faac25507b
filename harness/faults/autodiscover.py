"""Autodiscover faults: answers Exchange gives when the service or the directory is unhappy, redirects, answers
clients misread, and the web sites that answer on Autodiscover's URLs instead of Exchange."""
from __future__ import annotations

import re
from typing import Any, Callable, Dict, Optional
from urllib.parse import urlsplit

from harness.faults.base import REQUIRED, Fault, FaultParamError, HostScoped, Param, register
from harness.protocols.autodiscover import POX_ERROR_MESSAGES
from harness.protocols.autodiscover_answer import SettingsEdit, requested_address, same_place
from harness.protocols.autodiscover_pages import ERROR_PAGES, WEB_SITE_PAGES, error_page, web_site_response
from harness.protocols.autodiscover_paths import ACTIONS, PathError, parse_path
from harness.protocols.connection import WritePlan
from harness.protocols.http import HttpAnswer, moved_page

HOP_PATH = re.compile(r"^/autodiscover/hop(\d+)/autodiscover\.(?:xml|svc)$", re.IGNORECASE)


class _RedirectTarget(Fault):
    """A fault whose `url` is a path on the host asked or an absolute http(s) URL (see
    AutodiscoverAnswer.redirect_location)."""

    @classmethod
    def validate(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        result = super().validate(values)
        url = result["url"]
        parts = urlsplit(url)
        if not (url.startswith("/") or (parts.scheme in ("https", "http") and parts.hostname)):
            raise FaultParamError("url", f"{url!r} is not a path or an http(s) URL",
                                  "e.g. /autodiscover/hop1/autodiscover.xml or https://mail.contoso.test/autodiscover/"
                                  "autodiscover.xml")
        return result


@register
class ErrorCode(Fault):
    name = "autodiscover.error-code"
    summary = "Autodiscover answers with an ErrorCode (POX 500/501/600/601/602/603, the SOAP equivalent)."
    description = ("The Autodiscover service is reachable and authenticates the user, then refuses to configure "
                   "the address: 500 unknown address, 501/602 bad address, 600 invalid request, 601 provider not "
                   "available, 603 internal error. Sent with HTTP 200, as Exchange does.")
    symptoms = {"outlook": "cannot configure the profile; the next Autodiscover method is not tried for 500",
                "exchangelib": "ErrorNonExistentMailbox (InvalidUser) or AutoDiscoverFailed"}
    params = {"code": Param(int, 500, "the POX ErrorCode", tuple(POX_ERROR_MESSAGES))}
    analyzer = {"fails_at": "autodiscover", "reason": "autodiscover-error-{code}"}

    def on_autodiscover(self, scope, request, answer):
        return answer.refusal(self.values["code"])


# ---- redirects ------------------------------------------------------------------------------------------------
@register
class RedirectAddr(Fault):
    name = "autodiscover.redirect-addr"
    summary = "The answer for an address redirects to another address (POX redirectAddr, SOAP RedirectAddress)."
    description = ("Hybrid and migrated mailboxes: the on-premises CAS answers with the target address "
                   "(TargetAddress / RemoteRoutingAddress) and the client must start discovery again with it. "
                   "Scope it with `user` (the address asked about); the target's own answer is never redirected, "
                   "so two of these pointing at each other make a loop.")
    symptoms = {"exchangelib": "restarts discovery with the new address; AutoDiscoverCircularRedirect on a loop",
                "php-ews (#503)": "does not follow it"}
    params = {"to": Param(str, REQUIRED, "the address to redirect to (e.g. carol@contoso.test)")}

    def on_autodiscover(self, scope, request, answer):
        to = self.values["to"].lower()
        # Compare with the address asked for, not the mailbox: the target may be another address of the same
        # mailbox (an alias, a hybrid routing address), whose own answer must not be redirected again.
        if answer.outcome != "settings" or answer.mailbox is None \
                or to in (answer.mailbox.email, requested_address(request.body)):
            return None
        return answer.redirect_to_address(to)


@register
class RedirectUrl(_RedirectTarget):
    name = "autodiscover.redirect-url"
    summary = "The answer redirects to another Autodiscover URL (POX redirectUrl, SOAP RedirectUrl)."
    description = ("The client must POST the same request to the URL. `url` is a path on the same host or an "
                   "absolute URL (https URLs without a port get the port the client used; an http:// URL is sent "
                   "as is, and a correct client refuses it). The target URL itself answers normally.")
    symptoms = {"exchangelib": "follows https targets after an unauthenticated HEAD; refuses http:// "
                               "(AutoDiscoverFailed when nothing else works)"}
    params = {"url": Param(str, REQUIRED, "path or URL of the target (autodiscover.xml/.svc matches the request)")}

    def on_autodiscover(self, scope, request, answer):
        target = answer.redirect_location(request, self.values["url"])
        if same_place(request, target) or answer.outcome not in ("settings", "error"):
            return None
        return answer.redirect_to_url(target)


class _Hops(Fault):
    """redirectUrl from /autodiscover/hop<n>/autodiscover.xml to hop ``self.next_hop(n)`` on the same host (hop 0 is
    the plain URL; None: answer normally)."""
    next_hop: Callable[[int], Optional[int]]

    def on_autodiscover(self, scope, request, answer):
        match = HOP_PATH.match(request.path)
        following = self.next_hop(int(match.group(1)) if match else 0)
        if following is None:
            return None
        path = f"/autodiscover/hop{following}/autodiscover.xml" if following else "/autodiscover/autodiscover.xml"
        return answer.redirect_to_url(answer.redirect_location(request, path))


@register
class RedirectChain(_Hops):
    name = "autodiscover.redirect-chain"
    summary = "A chain of `hops` redirectUrl answers (/autodiscover/hop1/..., hop2, ...) before the settings."
    description = ("Clients give up after 10 redirects (exchangelib MAX_REDIRECTS, ews-javascript-api "
                   "AutodiscoverMaxRedirections), so 11 hops must fail and 3 must work.")
    symptoms = {"exchangelib": "follows up to 10; the 11th redirect makes the step fail (AutoDiscoverFailed)"}
    params = {"hops": Param(int, 11, "how many redirects before the real answer")}
    analyzer = {"fails_at": "autodiscover", "reason": "too-many-redirects"}

    def next_hop(self, index):
        return index + 1 if index < self.values["hops"] else None


@register
class RedirectLoop(_Hops):
    name = "autodiscover.redirect-loop"
    summary = "redirectUrl answers that go round in a circle (hop1 -> ... -> the original URL -> hop1)."
    description = ("Two reverse-proxy rules or a TargetAddress pointing back at itself. A correct client notices "
                   "the URL it already tried and stops.")
    symptoms = {"exchangelib": "refuses the already-visited URL; AutoDiscoverFailed"}
    params = {"length": Param(int, 2, "URLs in the circle, the original one included", minimum=2)}
    analyzer = {"fails_at": "autodiscover", "reason": "redirect-loop"}

    def next_hop(self, index):
        return (index + 1) % self.values["length"]


@register
class HttpRedirect(_RedirectTarget):
    name = "autodiscover.http-redirect"
    summary = "The authenticated Autodiscover POST is answered with an HTTP 302 to another URL."
    description = ("Exchange Online and some reverse proxies answer 302 to a per-mailbox or another host's URL "
                   "(exchangelib #863). `url` as for autodiscover.redirect-url; the target answers normally.")
    symptoms = {"exchangelib": "RedirectError; follows it after validating the URL",
                "curl": "-L re-sends a 301/302 as GET (ErrorCode 600 there) unless --post301/--post302"}
    params = {"url": Param(str, REQUIRED, "path or URL of the target"),
              "status": Param(int, 302, "the redirect status", (301, 302, 307))}

    def on_autodiscover(self, scope, request, answer):
        target = answer.redirect_location(request, self.values["url"])
        if same_place(request, target):
            return None
        return HttpAnswer(self.values["status"], moved_page(target), headers=(("Location", target),))


@register
class Port80Redirect(HostScoped):
    name = "autodiscover.port80-redirect"
    summary = "The port-80 redirect site sends clients to another URL (another host, http://, 301)."
    description = ("What the HTTP-redirect discovery method finds on http://autodiscover.<domain>/: usually a 302 "
                   "to https://mail.<domain>/autodiscover/autodiscover.xml. Like IIS's HTTP Redirect, `exact` sends "
                   "every request to `url` itself (so a client asking for autodiscover.svc lands on the .xml "
                   "endpoint); `exact: false` appends the request path to `url`. The URL is sent as written.")
    symptoms = {"exchangelib": "follows 301/302 to https URLs it can HEAD; ignores http:// targets",
                "curl": "-w %{redirect_url} shows the target"}
    params = {"url": Param(str, REQUIRED, "the Location sent (absolute URL)"),
              "status": Param(int, 302, "the redirect status", (301, 302, 307)),
              "exact": Param(bool, True, "send every request to url itself; false: url + the request path")}

    @classmethod
    def validate(cls, values):
        result = super().validate(values)
        if urlsplit(result["url"]).scheme not in ("http", "https"):
            raise FaultParamError("url", f"{result['url']!r} is not an absolute http(s) URL")
        return result

    def on_http_request(self, scope, request):
        if request.scheme != "http":
            return None
        location = self.values["url"] if self.values["exact"] else self.values["url"].rstrip("/") + request.path
        return HttpAnswer(self.values["status"], moved_page(location), headers=(("Location", location),))


# ---- other web sites and HTTP failures -------------------------------------------------------------------------
@register
class WebSite(HostScoped):
    name = "autodiscover.web-site"
    summary = "A non-Exchange web site answers on this host (a CMS page, a 401-protected intranet, 404...)."
    description = ("The classic root-domain case: https://contoso.test/ is the company web site, so "
                   "https://contoso.test/autodiscover/autodiscover.xml gets its page (200 text/html), its login "
                   "challenge (401 Basic for its own accounts, whatever is sent) or its 404, for every path and "
                   "method. `host` is required: it is the host the site answers for.")
    symptoms = {"exchangelib": "200/404: the step fails and discovery goes on; 401: UnauthorizedError aborts "
                               "the whole discovery (exchangelib bug)",
                "outlook": "moves on to autodiscover.<domain>"}
    params = {"host": Param(str, REQUIRED, "the host the web site answers for (e.g. contoso.test)"),
              "status": Param(int, 200, "what every request gets", tuple(WEB_SITE_PAGES)),
              "listener": Param(str, "https", "which listener it answers on", ("https", "http", "both"))}

    def on_http_request(self, scope, request):
        if self.values["listener"] not in ("both", request.scheme):
            return None
        return web_site_response(self.values["status"], request.host)


@register
class HttpError(Fault):
    name = "autodiscover.http-error"
    summary = "Autodiscover fails with an HTTP 5xx error page after authentication."
    description = ("500: the MSExchangeAutodiscoverAppPool throws (ASP.NET 'Server Error in /Autodiscover "
                   "Application'); 502/504: a reverse proxy cannot reach the CAS; 503: the app pool is stopped.")
    symptoms = {"exchangelib": "the step fails (MalformedResponseError / transient error); discovery goes on",
                "curl": "%{http_code} = the status"}
    params = {"status": Param(int, 500, "the HTTP status", tuple(ERROR_PAGES)),
              "retry_after": Param(int, None, "send `Retry-After: N` (seconds), as a load balancer's maintenance "
                                   "answer does (IIS itself sends none)", minimum=0)}
    analyzer = {"fails_at": "autodiscover", "reason": "http-{status}"}

    def on_autodiscover(self, scope, request, answer):
        page = error_page(self.values["status"])
        if self.values["retry_after"] is None:
            return page
        return HttpAnswer(page.status, page.body, page.content_type,
                          page.headers + (("Retry-After", str(self.values["retry_after"])),), page.reason)


@register
class Slow(HostScoped):
    name = "autodiscover.slow"
    summary = "Autodiscover answers only after `seconds` (the 401 challenges still come at once)."
    description = ("An overloaded CAS or a slow directory: IIS authenticates at once, then the Autodiscover "
                   "application takes its time. Clients with a shorter timeout (exchangelib: 10 s) skip the URL. "
                   "The answer is held on the connection and leaves late (through the write hook, which knows no "
                   "user).")
    symptoms = {"curl": "--max-time shorter than the delay: exit 28, Operation timed out",
                "requests": "ReadTimeout", "exchangelib": "the step fails after 10 s"}
    params = {"seconds": Param(float, 15.0, "how long the answer waits", minimum=0)}
    analyzer = {"fails_at": "autodiscover", "reason": "timeout"}

    def on_autodiscover(self, scope, request, answer):
        # The site answers at once; the write hook below holds that answer's bytes on this connection.
        request.conn.state[self._key()] = self.values["seconds"]
        return None

    def on_write(self, scope, info, data):
        seconds = info.state.pop(self._key(), None)
        return None if seconds is None else WritePlan(((seconds, data),))

    def _key(self) -> str:
        return f"slow-answer:{id(self)}"


# ---- answers the client misreads -------------------------------------------------------------------------------
@register
class MalformedXml(Fault):
    name = "autodiscover.malformed-xml"
    summary = "The Autodiscover answer is cut short: HTTP 200, text/xml, not well-formed."
    description = ("A proxy that truncates bodies, an app pool recycled mid-answer, or an antivirus filter. "
                   "`keep` is the fraction of the real body sent.")
    symptoms = {"exchangelib": "its forgiving XML parser (recover=True) reads the half SOAP answer as settings "
                               "without ExternalEwsUrl: AttributeError 'config.service_endpoint' must be set",
                "outlook": "'The Autodiscover XML response wasn't found'",
                "lxml (strict)": "XMLSyntaxError"}
    params = {"keep": Param(float, 0.5, "fraction of the real answer's body that is sent", minimum=0, below=1)}
    analyzer = {"fails_at": "autodiscover", "reason": "malformed-response"}

    def on_autodiscover(self, scope, request, answer):
        return answer.truncated(self.values["keep"])


@register
class WrongSchema(Fault):
    name = "autodiscover.wrong-schema"
    summary = "Autodiscover ignores AcceptableResponseSchema: Outlook gets the mobilesync schema and vice versa."
    description = ("The POX Response comes in the other provider's namespace, so a client looking for the "
                   "Outlook 2006a Account/Protocol elements finds none (a custom provider or a rewriting proxy).")
    symptoms = {"outlook": "no settings in the answer", "analyzer": "the answer has no Outlook settings"}
    analyzer = {"fails_at": "autodiscover", "reason": "malformed-response"}

    def on_autodiscover(self, scope, request, answer):
        return answer.in_other_schema()


class _SettingsEdit(Fault):
    """Edits a settings answer as ``edit()`` says (POX and SOAP parts alike); when that changes nothing, the real
    answer goes out."""

    def edit(self) -> SettingsEdit:
        raise NotImplementedError

    def on_autodiscover(self, scope, request, answer):
        return answer.edited(self.edit(), by=self.name)


OUTLOOK_ANYWHERE_SETTINGS = ("ExternalMailboxServer", "ExternalMailboxServerRequiresSSL",
                             "ExternalMailboxServerAuthenticationMethods", "InternalRpcHttpServer",
                             "InternalRpcHttpConnectivityRequiresSsl", "InternalRpcHttpAuthenticationMethod",
                             "CertPrincipalName")
EXTERNAL_EWS_SETTINGS = ("ExternalEwsUrl", "ExternalEmwsUrl")
EXTERNAL_POX_URLS = ("ASUrl", "EwsUrl", "EmwsUrl", "OOFUrl", "UMUrl", "OABUrl")


@register
class NoExpr(_SettingsEdit):
    name = "autodiscover.no-expr"
    summary = "Outlook Anywhere is disabled: no EXPR protocol (POX), no RPC/HTTP settings (SOAP)."
    description = ("Outlook Anywhere has no ExternalHostname, so Exchange leaves EXPR out: Outlook outside the "
                   "network cannot connect. SOAP answers report those settings as SettingIsNotAvailable.")
    symptoms = {"outlook": "cannot connect from outside", "exrca": "'wasn't able to find the EXPR provider'"}
    analyzer = {"fails_at": "autodiscover", "reason": "no-expr"}

    def edit(self) -> SettingsEdit:
        return SettingsEdit(drop=("EXPR",), unavailable=OUTLOOK_ANYWHERE_SETTINGS)


@register
class InternalEwsOnly(_SettingsEdit):
    name = "autodiscover.internal-ews-only"
    summary = "Only the internal EWS URL is published: no ExternalEwsUrl (SOAP), no EWS URLs in EXPR (POX)."
    description = ("The EWS virtual directory has InternalUrl set and ExternalUrl empty, common on servers never "
                   "published to the Internet. exchangelib only reads ExternalEwsUrl and ends up without an "
                   "endpoint.")
    symptoms = {"exchangelib": "discovery 'succeeds' without an endpoint: AttributeError 'config.service_endpoint' "
                               "must be set"}

    def edit(self) -> SettingsEdit:
        return SettingsEdit(drop=tuple(f"EXPR/{url}" for url in EXTERNAL_POX_URLS), unavailable=EXTERNAL_EWS_SETTINGS)


@register
class ExtraSetting(_SettingsEdit):
    name = "autodiscover.extra-setting"
    summary = "GetUserSettings also returns a setting the client did not ask for (SOAP only)."
    description = ("Some servers and proxies add settings nobody requested. MS-OXWSADISC says only requested "
                   "settings are returned, and exchangelib trusts that: an unknown name is a KeyError.")
    symptoms = {"exchangelib": "KeyError: '<name>' while parsing the answer"}
    params = {"setting": Param(str, "ExternalPhotosUrl", "the extra setting's name"),
              "value": Param(str, "https://mail.contoso.test/ews/Exchange.asmx/s/GetUserPhoto",
                             "its value")}

    def edit(self) -> SettingsEdit:
        return SettingsEdit(add={self.values["setting"]: self.values["value"]})


@register
class EwsSchemas(_SettingsEdit):
    name = "autodiscover.ews-schemas"
    summary = "EwsSupportedSchemas is missing (value '') or names a schema the client does not know."
    description = ("Clients pick their EWS request version from EwsSupportedSchemas. Missing, they must guess; "
                   "an unknown newest schema (a later Exchange build) breaks clients that insist on knowing it.")
    symptoms = {"exchangelib": "unknown value: ValueError 'Unknown supported schemas'; missing: version guessed "
                               "later"}
    params = {"value": Param(str, "Exchange2013, Exchange2019", "the value sent; '' leaves the setting out")}

    def edit(self) -> SettingsEdit:
        if not self.values["value"]:
            return SettingsEdit(unavailable=("EwsSupportedSchemas",))
        return SettingsEdit(replace={"EwsSupportedSchemas": self.values["value"]})


SETTING_ERROR_CODES = ("InvalidUser", "InvalidRequest", "InvalidSetting", "SettingIsNotAvailable", "ServerBusy",
                       "InvalidDomain", "NotFederated", "InternalServerError")


@register
class SettingError(_SettingsEdit):
    name = "autodiscover.setting-error"
    summary = "One requested setting comes back as a UserSettingError with the given code (SOAP only)."
    description = ("InvalidSetting and SettingIsNotAvailable are harmless; any other code on a setting "
                   "(e.g. InternalServerError from a broken provider) is fatal to exchangelib.")
    symptoms = {"exchangelib": "AutoDiscoverFailed: User settings errors: {...}"}
    params = {"setting": Param(str, "ExternalEwsUrl", "the setting that fails"),
              "code": Param(str, "InternalServerError", "its ErrorCode", SETTING_ERROR_CODES)}

    def edit(self) -> SettingsEdit:
        name = self.values["setting"]
        return SettingsEdit(failed={name: (self.values["code"], f"The setting '{name}' could not be read.")})



_CONTROL_CHARACTERS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")   # all below 32 but tab, LF, CR


@register
class Mutate(_SettingsEdit):
    name = "autodiscover.mutate"
    summary = "One element of the POX settings answer is dropped, doubled or given another value."
    description = ("The generic edit `mockex fuzz` draws, and a way to write an answer no named fault gives. "
                   "`path` starts below Response: Account/Protocol[Type=EXPR]/Server is the EXPR block's Server, "
                   "User/DisplayName the display name (a [Child=TEXT] filter picks blocks by a child's text or an "
                   "attribute). `drop` removes every element the path names, `duplicate` sends each twice, `set` "
                   "replaces its text with `value`. POX answers only; SOAP and JSON answers go out unchanged.")
    symptoms = {"outlook": "depends on the element: a missing EXPR Server means no Outlook Anywhere",
                "fragile clients": "crash on a missing or doubled element they assumed was there"}
    params = {"path": Param(str, REQUIRED, "the element(s), e.g. Account/Protocol[Type=EXPR]/Server"),
              "action": Param(str, "drop", "what happens to them", ACTIONS),
              "value": Param(str, "", "the new text, for action set")}

    @classmethod
    def validate(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        result = super().validate(values)
        try:
            parse_path(result["path"])
        except PathError as exc:
            raise FaultParamError("path", str(exc), "e.g. Account/Protocol[Type=EXPR]/Server") from None
        if _CONTROL_CHARACTERS.search(result["value"]):
            raise FaultParamError("value", "control characters cannot be sent in XML text")
        return result

    def edit(self) -> SettingsEdit:
        return SettingsEdit(mutate=((self.values["path"], self.values["action"], self.values["value"]),))
