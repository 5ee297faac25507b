"""Hypothesis strategies for what the server answers, per layer; every drawn example is a list of faults with
parameters (``{"fault": NAME, "params": {...}}``), so it can be applied through the control plane and saved as a
scenario as it is.

Order matters: Hypothesis shrinks a choice towards the first option, so each table lists the plainest misbehaviour
first (drop before duplicate before set, the EXPR block's Server before its other elements, a same-host redirect
before an http:// one). A shrunk finding then names the smallest edit that still breaks the client.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from hypothesis import strategies as st

from harness.faults.autodiscover import SETTING_ERROR_CODES
from harness.fuzz.rop_strategies import ROP_LAYERS
from harness.fuzz.rpc_strategies import RPC_LAYERS
from harness.protocols.autodiscover import POX_ERROR_MESSAGES
from harness.protocols.autodiscover_pages import ERROR_PAGES

Example = List[Dict[str, Any]]   # [{"fault": NAME, "params": {...}}, ...]

EXPR = "Account/Protocol[Type=EXPR]"
EXCH = "Account/Protocol[Type=EXCH]"
WEB = "Account/Protocol[Type=WEB]"

# (path, kind of value) for every element the Autodiscover strategy edits; a block itself has kind "block".
POX_ELEMENTS: Tuple[Tuple[str, str], ...] = (
    (f"{EXPR}/Server", "host"), (f"{EXPR}/AuthPackage", "auth"), (f"{EXPR}/SSL", "switch"),
    (f"{EXPR}/CertPrincipalName", "text"), (f"{EXPR}/EwsUrl", "url"), (f"{EXPR}/ASUrl", "url"),
    (f"{EXPR}/OABUrl", "url"), (f"{EXPR}/ServerExclusiveConnect", "switch"), (f"{EXPR}/Type", "text"),
    (f"{EXCH}/Server", "host"), (f"{EXCH}/ServerDN", "text"), (f"{EXCH}/ServerVersion", "number"),
    (f"{EXCH}/MdbDN", "text"), (f"{EXCH}/EwsUrl", "url"), (f"{EXCH}/ASUrl", "url"),
    (f"{WEB}/External/OWAUrl", "url"), (f"{WEB}/Internal/OWAUrl", "url"),
    ("User/DisplayName", "text"), ("User/LegacyDN", "text"), ("User/AutoDiscoverSMTPAddress", "text"),
    ("Account/Action", "text"), ("Account/AccountType", "text"), ("Account/MicrosoftOnline", "switch"),
    (EXPR, "block"), (EXCH, "block"), (WEB, "block"), ("User", "block"), ("Account", "block"),
)

# values a real server, a proxy or a typo could put there, by kind
URLS = ("", "/EWS/Exchange.asmx", "http://mail.contoso.test/EWS/Exchange.asmx",
        "https://mail.evil.test/EWS/Exchange.asmx", "https://mail.contoso.test:0/EWS/Exchange.asmx",
        "https://", "mail.contoso.test", "https://mäil.contoso.test/EWS/Exchange.asmx", "javascript:alert(1)",
        "https://mail.contoso.test/" + "a" * 4096)
HOSTS = ("", "mail.contoso.test.", "127.0.0.1", "[::1]", "mail.contoso.test:444", "*.contoso.test",
         "mail.evil.test", "mäil.contoso.test", "a" * 64 + ".contoso.test", "mail contoso test")
AUTH_PACKAGES = ("Basic", "Ntlm", "Negotiate", "Kerb", "Anonymous", "Certificate", "", "NTLM", "basic", "Bogus")
SWITCHES = ("Off", "On", "", "on", "off ", "Yes", "1")
NUMBERS = ("0", "", "-1", "4294967296", "73C18880", "7FFFFFFFFFFFFFFF", "0x", "1e309", "NaN")
LENGTHS = (0, 1, 255, 256, 4096, 65536)
BY_KIND = {"url": URLS, "host": HOSTS, "auth": AUTH_PACKAGES, "switch": SWITCHES, "number": NUMBERS}

# XML 1.0 text: no control characters but tab/newline, no surrogates
XML_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
                   max_size=40)

REDIRECT_URLS = ("/autodiscover/hop1/autodiscover.xml",
                 "https://mail.contoso.test/autodiscover/autodiscover.xml",
                 "http://mail.contoso.test/autodiscover/autodiscover.xml",
                 "https://autodiscover.evil.test/autodiscover/autodiscover.xml",
                 "http://autodiscover.contoso.test/autodiscover/autodiscover.xml",
                 "https://mail.contoso.test/" + "x" * 2048 + "/autodiscover.xml")
REDIRECT_ADDRESSES = ("bob@contoso.test", "alice@contoso.test", "nobody@contoso.test", "alice@evil.test",
                      "alice", "ünïcode@contoso.test")


def fault(name: str, **params: Any) -> Dict[str, Any]:
    return {"fault": name, "params": params}


def _value(kind: str) -> st.SearchStrategy[str]:
    table = BY_KIND.get(kind)
    typed = st.sampled_from(table) if table else st.nothing()
    lengths = st.sampled_from(LENGTHS).map(lambda n: "A" * n)
    return st.one_of(typed, XML_TEXT, lengths)


@st.composite
def pox_edit(draw: Any) -> Dict[str, Any]:
    """One element of the POX answer dropped, doubled or set to a value of its kind."""
    path, kind = draw(st.sampled_from(POX_ELEMENTS))
    action = draw(st.sampled_from(("drop", "duplicate") if kind == "block" else ("drop", "duplicate", "set")))
    if action != "set":
        return fault("autodiscover.mutate", path=path, action=action)
    return fault("autodiscover.mutate", path=path, action=action, value=draw(_value(kind)))


def redirect() -> st.SearchStrategy[Dict[str, Any]]:
    """redirectUrl, HTTP 30x and redirectAddr answers of every shape; chains and loops."""
    return st.one_of(
        st.builds(lambda url: fault("autodiscover.redirect-url", url=url), st.sampled_from(REDIRECT_URLS)),
        st.builds(lambda url, status: fault("autodiscover.http-redirect", url=url, status=status),
                  st.sampled_from(REDIRECT_URLS), st.sampled_from((302, 301, 307))),
        st.builds(lambda to: fault("autodiscover.redirect-addr", to=to), st.sampled_from(REDIRECT_ADDRESSES)),
        st.builds(lambda hops: fault("autodiscover.redirect-chain", hops=hops), st.integers(1, 12)),
        st.builds(lambda length: fault("autodiscover.redirect-loop", length=length), st.integers(2, 4)),
    )


def refusal() -> st.SearchStrategy[Dict[str, Any]]:
    """HTTP errors, POX ErrorCodes, cut and wrong-schema answers, SOAP setting errors."""
    return st.one_of(
        st.builds(lambda status: fault("autodiscover.http-error", status=status), st.sampled_from(sorted(ERROR_PAGES))),
        st.builds(lambda code: fault("autodiscover.error-code", code=code),
                  st.sampled_from(sorted(POX_ERROR_MESSAGES))),
        st.builds(lambda keep: fault("autodiscover.malformed-xml", keep=keep),
                  st.sampled_from((0.0, 0.5, 0.1, 0.9, 0.99))),
        st.just(fault("autodiscover.wrong-schema")),
        st.builds(lambda code: fault("autodiscover.setting-error", code=code), st.sampled_from(SETTING_ERROR_CODES)),
    )


def autodiscover_fault() -> st.SearchStrategy[Dict[str, Any]]:
    return st.one_of(pox_edit(), redirect(), refusal())


def autodiscover_examples(max_faults: int = 3, hostnames: Sequence[str] = ()) -> st.SearchStrategy[Example]:
    """What the server does wrong at the Autodiscover layer: one to ``max_faults`` faults."""
    return st.lists(autodiscover_fault(), min_size=1, max_size=max_faults)


# Certificate shapes the PKI issues (harness/pki.py SHAPES), as their tls.* faults, then the connection-level TLS
# faults. Ordered by the check a client skips: the host name (the check most often turned off), the dates, the chain,
# the key and signature strength; so a client that skips the name check shrinks to wrong-host.
CERTIFICATE_FAULTS = ("tls.wrong-host", "tls.no-san", "tls.expired", "tls.not-yet-valid", "tls.self-signed",
                      "tls.untrusted-root", "tls.missing-intermediate", "tls.weak-key", "tls.sha1-signature")
TLS_FAULTS = CERTIFICATE_FAULTS + (
    ("tls.protocol-version", {"max": "1.2"}), ("tls.protocol-version", {"min": "1.3"}),
    ("tls.protocol-version", {"max": "1.1"}), ("tls.protocol-version", {"max": "1.0"}),
    ("tls.client-certificate-required", {}))
# Names a certificate fault is scoped to (the SNI the client sends) when the org's are not given.
TLS_HOSTS = ("autodiscover.contoso.test", "mail.contoso.test")
MAX_SCOPED_HOSTS = 4   # of the org's names, the first few (autodiscover.*, mail.* ...): the ones clients ask for


def certificate(hostnames: Sequence[str] = TLS_HOSTS) -> st.SearchStrategy[Dict[str, Any]]:
    """Frankencert-style, within what the PKI issues: a certificate of another shape, everywhere (half the time) or
    for one host; TLS versions narrowed; a client certificate demanded."""
    hosts = st.one_of(st.none(), st.sampled_from(tuple(hostnames[:MAX_SCOPED_HOSTS]) or TLS_HOSTS))

    @st.composite
    def one(draw: Any) -> Dict[str, Any]:
        entry = draw(st.sampled_from(TLS_FAULTS))
        if not isinstance(entry, str):
            return fault(entry[0], **entry[1])
        host = draw(hosts)
        return fault(entry, host=host) if host else fault(entry)
    return one()


def tls_examples(max_faults: int = 3, hostnames: Sequence[str] = TLS_HOSTS) -> st.SearchStrategy[Example]:
    """What the server does wrong at the TLS layer (the first certificate fault that names a host wins there)."""
    return st.lists(certificate(hostnames), min_size=1, max_size=max_faults)


# WWW-Authenticate values IIS and Exchange 2013 send: the Windows schemes, Basic with IIS's realm, Exchange's OAuth
# line (hybrid modern authentication) and IIS Digest. Plain ones first, so a finding shrinks to the odd one.
CHALLENGE_LINES = ("Negotiate", "NTLM", 'Basic realm="{host}"',
                   'Bearer client_id="00000002-0000-0ff1-ce00-000000000000", trusted_issuers="00000001-0000-0000-'
                   'c000-000000000000@*", token_types="app_asserting_user"',
                   'Digest qop="auth",algorithm=MD5-sess,nonce="+Upgraded+v1a1b2c3d4e5f60718293a4b5c6d7e8f9",'
                   'charset=utf-8,realm="Digest"')
# The schemes IIS offers and how it refuses a logon, as the auth.* faults that say so.
AUTH_FAULTS = ("auth.basic-only", "auth.ntlm-only", "auth.negotiate-only", "auth.combined-challenge",
               "auth.401-loop", "auth.wrong-password")
STATUSES = tuple(sorted(ERROR_PAGES))
WEB_SITE_STATUSES = (200, 401, 403, 404, 500)
RETRY_AFTER = ({}, {"retry_after": 0}, {"retry_after": 1}, {"retry_after": 120}, {"retry_after": 86400})
# Output shapes of the network family, short enough that a run stays fast (no stalls: a hang costs a timeout).
WRITE_PLANS = (("network.close-after-headers", {}), ("network.truncate-body", {"keep": 0}),
               ("network.truncate-body", {"keep": 100}),
               ("network.slicer", {"average_size": 1, "size_variation": 0, "delay_ms": 0.0}),
               ("network.slicer", {"average_size": 16, "delay_ms": 0.0}), ("network.reset", {"when": "mid-response"}),
               ("network.reset", {"when": "after-bytes", "bytes": 12}), ("network.reset", {}),
               ("network.latency", {"ms": 200.0}), ("autodiscover.slow", {"seconds": 0.3}))


def challenge() -> st.SearchStrategy[Dict[str, Any]]:
    """A 401 whatever is sent, with one to four WWW-Authenticate lines (repeats too), in any order, as lines or one
    line."""
    def build(lines: List[str], combined: bool) -> Dict[str, Any]:
        return fault("auth.challenge", schemes=lines, combined=True) if combined else \
            fault("auth.challenge", schemes=lines)
    return st.builds(build, st.lists(st.sampled_from(CHALLENGE_LINES), min_size=1, max_size=4),
                     st.booleans())


def auth_fault() -> st.SearchStrategy[Dict[str, Any]]:
    """The schemes offered and how a logon is refused (auth.*), then challenges of any shape."""
    return st.one_of(st.sampled_from(AUTH_FAULTS).map(fault), challenge())


def auth_examples(max_faults: int = 3, hostnames: Sequence[str] = TLS_HOSTS) -> st.SearchStrategy[Example]:
    """What the server does wrong in HTTP authentication: one to ``max_faults`` faults (the first answer wins)."""
    return st.lists(auth_fault(), min_size=1, max_size=max_faults)


def http_examples(max_faults: int = 3, hostnames: Sequence[str] = TLS_HOSTS) -> st.SearchStrategy[Example]:
    """What the server does wrong at the HTTP level: error statuses, another web site on one of the org's names,
    the authentication layer's faults, and answers cut, reset, sliced or late (network write plans)."""
    hosts = st.sampled_from(tuple(hostnames[:MAX_SCOPED_HOSTS]) or TLS_HOSTS)
    one = st.one_of(
        st.builds(lambda status, wait: fault("autodiscover.http-error", status=status, **wait),
                  st.sampled_from(STATUSES), st.sampled_from(RETRY_AFTER)),
        auth_fault(),
        st.builds(lambda host, status: fault("autodiscover.web-site", host=host, status=status),
                  hosts, st.sampled_from(WEB_SITE_STATUSES)),
        st.sampled_from(WRITE_PLANS).map(lambda entry: fault(entry[0], **entry[1])))
    return st.lists(one, min_size=1, max_size=max_faults)


LAYERS = {"autodiscover": autodiscover_examples, "tls": tls_examples, "http": http_examples, "auth": auth_examples,
          **RPC_LAYERS, **ROP_LAYERS}


def examples(layers: List[str], max_faults: int = 3,
             hostnames: Sequence[str] = TLS_HOSTS) -> st.SearchStrategy[Example]:
    """Examples mixing the given layers' faults; ``hostnames``: the org's, that host-scoped faults may name."""
    unknown = [layer for layer in layers if layer not in LAYERS]
    if unknown:
        raise ValueError(f"no fuzz strategies for layer(s) {', '.join(unknown)} yet (known: {', '.join(LAYERS)})")
    if len(layers) == 1:
        return LAYERS[layers[0]](max_faults, hostnames)
    return st.lists(st.one_of(*(LAYERS[layer](1, hostnames).map(lambda e: e[0]) for layer in layers)),
                    min_size=1, max_size=max_faults)
