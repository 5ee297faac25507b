"""HTTP authentication faults: refused logons, the schemes IIS offers, how it writes its challenge, and a plain-HTTP
site that asks for credentials."""
from __future__ import annotations

from harness.faults.base import Fault, FaultParamError, HostScoped, Param, register
from harness.protocols.http import AUTODISCOVER_HEADERS, DEFAULT_AUTH_METHODS, IIS_401, AuthOffer, HttpAnswer
from harness.protocols.httpauth import AuthOutcome
from harness.protocols.logon import AV_ACTIONS, AV_IDS, TEXT_AVS, AvEdit, ChallengeEdit

PATH_HELP = "apply only to request paths starting with this prefix (e.g. /rpc/ or /autodiscover/); default: all"


class _Refusal(Fault):
    """A logon Windows would accept is refused with ``reason``; the client gets IIS's 401 and the challenge set."""
    reason = ""
    analyzer = {"fails_at": "autodiscover", "reason": "http-401"}

    def on_auth_result(self, scope, request, outcome):
        return AuthOutcome("failure", scheme=outcome.scheme, user=outcome.user, domain=outcome.domain,
                           mailbox=outcome.mailbox, reason=self.reason)


@register
class WrongPassword(_Refusal):
    name = "auth.wrong-password"
    summary = "The user's right password is refused, as after a password change the client does not know about."
    description = ("Every logon of the user (Basic, NTLM or Negotiate) fails with 401, whatever the password. "
                   "Scope it with `user`; without it every user is refused.")
    symptoms = {"curl": "HTTP 401 after the NTLM/Basic exchange (exit 0, %{http_code} = 401)",
                "exchangelib": "UnauthorizedError: Invalid credentials for <url> (discovery stops at the first URL)",
                "requests": "status 401 after the NTLM handshake"}
    reason = "wrong password"


@register
class AccountLocked(_Refusal):
    name = "auth.account-locked"
    summary = "The user's account is locked out: every logon fails with 401, even with the right password."
    description = "Too many bad passwords (often an old phone retrying) locked the account in Active Directory."
    symptoms = {"curl": "HTTP 401", "exchangelib": "UnauthorizedError: Invalid credentials for <url>"}
    reason = "account locked"


@register
class PasswordExpired(_Refusal):
    name = "auth.password-expired"
    summary = "The user's password has expired: the right password gets 401."
    description = ("IIS refuses the logon (Basic and NTLM alike); only OWA would offer to change the password, "
                   "so rich clients just see 401.")
    symptoms = {"curl": "HTTP 401", "exchangelib": "UnauthorizedError: Invalid credentials for <url>"}
    reason = "password expired"


@register
class Unauthorized401Loop(_Refusal):
    name = "auth.401-loop"
    summary = "Every logon is answered with a new 401 challenge, even with good credentials."
    description = ("A broken authentication provider, a reverse proxy eating the Authorization header, or a "
                   "Kerberos-only back end behind an NTLM front end: the client is asked again and again. A correct "
                   "client gives up after its retry and reports bad credentials instead of looping.")
    symptoms = {"curl": "HTTP 401 after the handshake",
                "requests": "status 401; the response history shows each leg answered 401"}
    reason = "refused by auth.401-loop"


class _PathScoped(HostScoped):
    """Applies to the virtual directories under `path` (IIS authentication is set per directory)."""
    params = {"path": Param(str, None, PATH_HELP)}

    def applies_to(self, request) -> bool:
        prefix = self.values["path"]
        return not prefix or request.path.lower().startswith(prefix.lower())


class _OnlyMethods(_PathScoped):
    """IIS on the matching paths offers only ``methods`` (and refuses any other scheme)."""
    methods: tuple = ()
    analyzer = {"fails_at": "http-auth", "reason": "auth-method-mismatch"}  # the offer differs from AuthPackage

    def on_auth_methods(self, scope, request):
        return AuthOffer(self.methods) if self.applies_to(request) else None


@register
class BasicOnly(_OnlyMethods):
    name = "auth.basic-only"
    summary = "IIS offers only Basic (Windows authentication disabled on the virtual directory)."
    description = ("Outlook Anywhere set to Basic for non-domain clients, or an admin who unticked Windows "
                   "authentication. Autodiscover still says AuthPackage=Negotiate, so NTLM-only clients fail.")
    symptoms = {"curl": "--ntlm: HTTP 401 (no NTLM challenge comes back)",
                "exchangelib": "picks Basic from the header and works"}
    methods = ("Basic",)


@register
class NtlmOnly(_OnlyMethods):
    name = "auth.ntlm-only"
    summary = "IIS offers only NTLM (Basic and Negotiate disabled)."
    description = ("Basic turned off for security (ews-managed-api #207: 'Autodiscover service couldn't be "
                   "located'): Basic-only clients have no way in.")
    symptoms = {"curl": "--basic: HTTP 401", "exchangelib": "uses NTLM and works"}
    methods = ("NTLM",)


@register
class NegotiateOnly(_OnlyMethods):
    name = "auth.negotiate-only"
    summary = "IIS offers only Negotiate (Kerberos-style), no NTLM or Basic header."
    description = ("Windows authentication with the NTLM provider removed. The mock still accepts NTLM inside "
                   "SPNEGO, as Windows does for non-domain clients, but clients that look for an `NTLM` or `Basic` "
                   "header find none.")
    symptoms = {"exchangelib": "TransportError: Failed to get autodiscover auth type from service; "
                               "AutoDiscoverFailed when every URL answers so",
                "curl": "--ntlm or --basic: HTTP 401; --negotiate without Kerberos: 401"}
    methods = ("Negotiate",)


@register
class CombinedChallenge(_PathScoped):
    name = "auth.combined-challenge"
    summary = "The NTLM challenge comes as Exchange 2013 sends it: `WWW-Authenticate: NTLM <token>, Negotiate`."
    description = ("Exchange answers the NTLM NEGOTIATE message with the CHALLENGE token and the other Windows "
                   "scheme on one header line (requests-ntlm #33). Clients that decode everything after `NTLM ` as "
                   "base64 choke on the trailing `, Negotiate`.")
    symptoms = {"python-ntlm (old)": "base64 decoding error in the CHALLENGE message",
                "requests-ntlm": "splits on commas and works",
                "curl (7.88)": "HTTP 401: it never sends the AUTHENTICATE message after that challenge"}

    def on_auth_methods(self, scope, request):
        return AuthOffer(DEFAULT_AUTH_METHODS, combined_challenge=True) if self.applies_to(request) else None


@register
class BasicOverHttp(HostScoped):
    name = "auth.basic-over-http"
    summary = "The plain-HTTP redirect site demands Basic credentials (401) before it redirects."
    description = ("The port-80 site was left with Basic authentication on: an anonymous GET gets "
                   "`401 WWW-Authenticate: Basic`, and only a request carrying credentials gets the 302 to https. "
                   "A client that answers the challenge has sent the password in clear text; the transcript "
                   "records it (auth event with tls false, result 'sent in clear').")
    symptoms = {"curl": "without -u: HTTP 401 and no redirect; with -u: 302 (the password went in clear)",
                "exchangelib": "step 3 sees no redirect and moves on (it never sends credentials there)"}
    analyzer = {"fails_at": "autodiscover", "reason": "no-redirect"}

    def on_http_request(self, scope, request):
        if request.scheme != "http" or request.header("authorization"):
            return None
        realm = request.host or "autodiscover"
        return HttpAnswer(401, IIS_401, headers=(("WWW-Authenticate", f'Basic realm="{realm}"'),))


@register
class Challenge(_PathScoped):
    name = "auth.challenge"
    summary = "Every request is answered with IIS's 401 and exactly these `WWW-Authenticate` lines, in this order."
    description = ("What a client meets when the schemes on offer are not the three it expects: Exchange's OAuth "
                   "`Bearer` line (hybrid modern authentication), IIS Digest, a reverse proxy's own challenge, "
                   "Basic without NTLM, the lines in another order or run together on one line. The server never "
                   "accepts a logon here (whatever the Authorization header says, the same 401 comes back), so a "
                   "correct client gives up after its retry instead of looping. `schemes` are the header values as "
                   "sent; `{host}` in one becomes the request's host. `combined: true` sends them as one line "
                   "joined by `, ` (RFC 9110 allows both forms).")
    symptoms = {"curl": "HTTP 401 (with --anyauth: it picks the first scheme it knows, else stops)",
                "requests": "status 401; requests-ntlm/-negotiate raise when their scheme is not offered",
                "exchangelib": "TransportError: Failed to get auth type from service (no scheme it knows)"}
    params = {**_PathScoped.params,
              "schemes": Param(list, ["Negotiate", "NTLM", 'Basic realm="{host}"'],
                               "the WWW-Authenticate values, in order (`{host}`: the request's host)", items=str),
              "combined": Param(bool, False, "all values on one WWW-Authenticate line, joined by ', '")}
    analyzer = {"fails_at": "http-auth", "reason": "auth-method-mismatch"}

    @classmethod
    def validate(cls, values):
        result = super().validate(values)
        for value in result["schemes"]:
            if any(c in value for c in "\r\n\x00"):
                raise FaultParamError("schemes", f"{value!r}: a header value cannot hold CR, LF or NUL")
        return result

    def on_http_request(self, scope, request):
        if not self.applies_to(request):
            return None
        lines = [value.replace("{host}", request.host or "") for value in self.values["schemes"]]
        if self.values["combined"] and lines:
            lines = [", ".join(lines)]
        headers = [("WWW-Authenticate", line) for line in lines]
        if request.path.lower().startswith("/autodiscover"):
            headers += AUTODISCOVER_HEADERS   # as the site's own 401 there
        return HttpAnswer(401, IIS_401, headers=tuple(headers))


_HEX_DIGITS = set("0123456789abcdefABCDEF")


@register
class NtlmChallenge(Fault):
    name = "auth.ntlm-challenge"
    summary = ("The NTLM CHALLENGE goes out changed: negotiate flags set or cleared, TargetInfo AV pairs dropped, "
               "doubled, reordered or given odd values, another target name, version or timestamp.")
    description = ("The CHALLENGE of a server other than the CAS (a Samba or appliance front end, a reverse proxy "
                   "doing its own NTLM, an older Windows) or a corrupted one: MsvAvEOL missing, a name twice or "
                   "very long, a timestamp of 0, flags the client did not ask for. It stays a well-formed NTLM "
                   "message (MS-NLMP 2.2.1.2), so it reaches the client's parser. `where` picks the HTTP 401 "
                   "handshake or the DCE/RPC bind (RPC over HTTP's inner NTLM); the `mockex fuzz --layer ntlm` "
                   "strategy draws these. The server still checks the AUTHENTICATE against what it sent.")
    symptoms = {"impacket": "parses TargetInfo with AV_PAIRS, which stops at MsvAvEOL or the end; a pair without "
                            "its value may raise struct.error or KeyError in getNTLMSSPType3",
                "requests-ntlm / ntlm-auth": "ValueError or struct.error on an AV pair it cannot read"}
    params = {"flags_set": Param(int, 0, "NEGOTIATE_* flags set in the CHALLENGE (a u32)", minimum=0, below=1 << 32),
              "flags_clear": Param(int, 0, "NEGOTIATE_* flags cleared (a u32)", minimum=0, below=1 << 32),
              "av_pairs": Param(list, None, "TargetInfo edits in order, each {action: drop|duplicate|first|set|add, "
                                            "av: MsvAvDnsComputerName..., value: text (names) or hex (others)}",
                                items=dict),
              "target_name": Param(str, None, "the TargetName instead of the NetBIOS domain"),
              "version": Param(str, None, "the 8-byte Version field, as 16 hex digits (e.g. 0a00614a0000000f)"),
              "timestamp": Param(int, None, "MsvAvTimestamp's FILETIME instead of now (0: 1601)", minimum=0,
                                 below=1 << 64),
              "where": Param(str, None, "only the HTTP 401 handshake (http) or the DCE/RPC bind (rpc); default both",
                             ("http", "rpc"))}

    @classmethod
    def validate(cls, values):
        result = super().validate(values)
        version = result["version"]
        if version is not None and (len(version) != 16 or not set(version) <= _HEX_DIGITS):
            raise FaultParamError("version", f"{version!r} is not 16 hex digits", "e.g. 0603802500000000f")
        for edit in result["av_pairs"] or ():
            _check_av_edit(edit)
        return result

    def __init__(self, rng=None, **values):
        super().__init__(rng, **values)
        v = self.values
        self.edit = ChallengeEdit(
            v["flags_set"], v["flags_clear"],
            tuple(AvEdit(e["action"], e["av"], e.get("value")) for e in v["av_pairs"] or ()), v["target_name"],
            bytes.fromhex(v["version"]) if v["version"] is not None else None, v["timestamp"])

    def on_ntlm_challenge(self, scope, where):
        return self.edit if self.values["where"] in (None, where) else None


def _check_av_edit(edit: dict) -> None:
    unknown = set(edit) - {"action", "av", "value"}
    if unknown:
        raise FaultParamError("av_pairs", f"unknown key {sorted(unknown)[0]!r}", "keys: action, av, value")
    if edit.get("action") not in AV_ACTIONS:
        raise FaultParamError("av_pairs", f"action {edit.get('action')!r} is not allowed", ", ".join(AV_ACTIONS))
    if edit.get("av") not in AV_IDS:
        raise FaultParamError("av_pairs", f"av {edit.get('av')!r} is not an AV pair name", ", ".join(AV_IDS))
    value = edit.get("value")
    if value is not None and not isinstance(value, str):
        raise FaultParamError("av_pairs", f"value {value!r} is not text")
    if value and AV_IDS[edit["av"]] not in TEXT_AVS and (len(value) % 2 or not set(value) <= _HEX_DIGITS):
        raise FaultParamError("av_pairs", f"value {value!r} of {edit['av']} is not hex bytes")
    if value is not None and len(AvEdit(edit["action"], edit["av"], value).encoded()) > 0xFFFF:
        raise FaultParamError("av_pairs", f"the value of {edit['av']} is longer than an AV pair holds")
