"""Autodiscover faults as real clients see them (curl for POX, exchangelib for SOAP), plus stateful steps and
runtime reset (SIGHUP)."""
from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from lxml import etree

from harness.faults.base import FaultParamError, catalog
from harness.protocols import autodiscover as pox
from tests.support.autodiscover import pox_protocols, pox_request
from tests.support.clients import POX_PATH, curl, pin_names
from tests.support.netns import by_user, exchangelib, needs_netns, run_in_netns
from tests.support.servers import scenario_args, server_running, servers_running
from tests.support.transcript import fault_fired

STEPPED = """\
name: stepped
faults:
  - autodiscover.error-code: {code: 603}
steps:
  - after: {requests: 2, path: /autodiscover/autodiscover.xml, status: 200}
    remove: [autodiscover.error-code]
expect:
  analyzer: {passes: true}
"""
# Each fault on its own user (the address asked about) on autodiscover.contoso.test, or on its own host, so one
# server answers every check.
ANSWERS = """\
name: answers
faults:
  - autodiscover.redirect-addr: {host: autodiscover.contoso.test, user: alice@contoso.test, to: carol@contoso.test}
  - autodiscover.malformed-xml: {host: autodiscover.contoso.test, user: bob@contoso.test}
  - autodiscover.no-expr: {host: autodiscover.contoso.test, user: carol@contoso.test}
  - autodiscover.wrong-schema: {host: autodiscover.contoso.test, user: dave@contoso.test}
  - autodiscover.internal-ews-only: {host: autodiscover.contoso.test, user: confroom1@contoso.test}
  - autodiscover.http-error: {host: autodiscover.contoso.test, user: helpdesk@contoso.test, status: 503}
  - autodiscover.http-redirect:
      {host: contoso.test, url: "https://autodiscover.contoso.test/autodiscover/autodiscover.xml"}
  - autodiscover.slow: {host: mail.contoso.test, seconds: 3}
  - autodiscover.redirect-chain: {host: ex01.contoso.test, hops: 3}
  - autodiscover.redirect-loop: {host: ex02.contoso.test, length: 3}
expect:
  analyzer: {passes: true}
"""
SITES = """\
name: sites
faults:
  - autodiscover.web-site: {host: contoso.test, status: 200}
  - autodiscover.web-site: {host: ex01.contoso.test, status: 401}
  - autodiscover.web-site: {host: ex02.contoso.test, status: 404, listener: both}
  - autodiscover.port80-redirect: {host: autodiscover.contoso.test, url: "https://mail.contoso.test", exact: false}
  - autodiscover.port80-redirect: {host: mail.contoso.test, url: "http://mail.contoso.test/x.xml", status: 301}
  - autodiscover.redirect-url: {host: mail.contoso.test, url: "http://mail.contoso.test/autodiscover/autodiscover.xml"}
expect:
  analyzer: {passes: true}
"""


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("autodiscover-faults")
    with servers_running(scenario_args(root, "answers", ANSWERS), scenario_args(root, "sites", SITES)) as both:
        yield both


def ask(served, email: str, host: str = "autodiscover.contoso.test", path: str = POX_PATH, *extra: str):
    """alice asks about ``email`` with Basic over TLS."""
    alice = served.user("alice")
    return curl(served, host, "--basic", "-u", f"alice@contoso.test:{alice['password']}", *extra, path=path,
                data=pox_request(email))


def outlook(body: str, tag: str):
    return etree.fromstring(body.encode()).findtext(f".//{{{pox.OUTLOOK_RESPONSE_NS}}}{tag}")


def error_code(body: str):
    return etree.fromstring(body.encode()).findtext(f".//{{{pox.RESPONSE_NS}}}ErrorCode")


def test_error_code_fault_is_seen_by_curl(tmp_path):
    with server_running(str(tmp_path), "--scenario", "autodiscover-error-500") as served:
        result = ask(served, "alice@contoso.test")
        assert result.status == 200 and error_code(result.body) == "500"
        assert fault_fired(served, "autodiscover.error-code")


def test_steps_change_faults_and_sighup_resets_them(tmp_path):
    with server_running(*scenario_args(tmp_path, "stepped", STEPPED)) as served:
        codes = [error_code(ask(served, "alice@contoso.test").body) for _ in range(3)]
        assert codes == ["603", "603", None]  # the step removed the fault after two answers
        assert served.wait_for(lambda e: e["kind"] == "step" and e["removed"] == ["autodiscover.error-code"])
        served.process.send_signal(signal.SIGHUP)
        assert served.wait_for(lambda e: e["kind"] == "reset")
        assert error_code(ask(served, "alice@contoso.test").body) == "603"


def test_redirect_addr_names_the_new_address(servers):
    result = ask(servers[0], "alice@contoso.test")
    assert (outlook(result.body, "Action"), outlook(result.body, "RedirectAddr")) == ("redirectAddr",
                                                                                      "carol@contoso.test")
    assert outlook(ask(servers[0], "c.jones@contoso.test").body, "Action") == "settings"  # carol is not redirected


def test_settings_edits(servers):
    served = servers[0]
    assert list(pox_protocols(ask(served, "alice@contoso.test", "ex01.contoso.test", "/autodiscover/hop3/"
                                     "autodiscover.xml").body)) == ["EXCH", "EXPR", "WEB"]
    assert list(pox_protocols(ask(served, "carol@contoso.test").body)) == ["EXCH", "WEB"]
    blocks = pox_protocols(ask(served, "confroom1@contoso.test").body)
    assert blocks["EXCH"].findtext(f"{{{pox.OUTLOOK_RESPONSE_NS}}}EwsUrl")
    assert blocks["EXPR"].findtext(f"{{{pox.OUTLOOK_RESPONSE_NS}}}EwsUrl") is None
    wrong = etree.fromstring(ask(served, "dave@contoso.test").body.encode())
    assert etree.QName(wrong[0]).namespace == pox.MOBILESYNC_RESPONSE_NS
    assert wrong.find(f".//{{{pox.OUTLOOK_RESPONSE_NS}}}Account") is None


@pytest.mark.parametrize("user", ["alice", "carol", "dave", "confroom1"])
def test_autodiscover_v2_json_is_left_alone_by_v1_faults(servers, user):
    result = curl(servers[0], "autodiscover.contoso.test",
                  path=f"/autodiscover/autodiscover.json/v1.0/{user}@contoso.test?Protocol=EWS")
    assert result.status == 200 and '"Protocol":"Ews"' in result.body


def test_malformed_answer_does_not_parse(servers):
    result = ask(servers[0], "bob@contoso.test")
    assert result.status == 200 and result.header("Content-Type")[0].startswith("text/xml")
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(result.body.encode())


def test_http_error_after_authentication(servers):
    anonymous = curl(servers[0], "autodiscover.contoso.test", data=pox_request("x@y"))
    assert anonymous.status == 401
    result = ask(servers[0], "helpdesk@contoso.test")
    assert result.status == 503 and "HTTP Error 503" in result.body
    assert servers[0].wait_for(lambda e: e["kind"] == "autodiscover" and e["outcome"] == "http-503")


def test_http_redirect_is_followed_by_curl(servers):
    served = servers[0]
    target = f"autodiscover.contoso.test:{served.https_port}"
    follow = ("-L", "--location-trusted", "--resolve", f"{target}:{served.host}")
    as_get = ask(served, "carol@contoso.test", "contoso.test", POX_PATH, *follow)
    assert f"Location: https://{target}/autodiscover/autodiscover.xml" in as_get.stderr
    assert error_code(as_get.body) == "600"  # curl turns the POST into a GET after a 302, and GET gets 600
    reposted = ask(served, "carol@contoso.test", "contoso.test", POX_PATH, *follow, "--post302")
    assert reposted.status == 200 and outlook(reposted.body, "Action") == "settings"


def test_slow_answer_times_curl_and_requests_out_but_not_the_challenge(servers, monkeypatch):
    served = servers[0]
    started = time.monotonic()
    challenge = curl(served, "mail.contoso.test", data=pox_request("x@y"), max_time=2)
    assert challenge.status == 401 and time.monotonic() - started < 1.5
    timed_out = ask(served, "alice@contoso.test", "mail.contoso.test", POX_PATH, "--max-time", "1")
    assert timed_out.exit_code == 28 and "Operation timed out" in timed_out.stderr
    pin_names(monkeypatch, served)
    alice = served.user("alice")
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(f"https://mail.contoso.test:{served.https_port}{POX_PATH}", timeout=1, verify=served.ca_file,
                      data=pox_request(alice["email"]), auth=("alice@contoso.test", alice["password"]))
    assert fault_fired(served, "autodiscover.slow")


def follow_redirect_urls(served, host: str, limit: int):
    """Follow POX redirectUrl answers as a client would; returns the URLs visited, then the final Action."""
    path, seen = POX_PATH, []
    for _ in range(limit):
        body = ask(served, "alice@contoso.test", host, path).body
        if outlook(body, "Action") != "redirectUrl":
            return seen, outlook(body, "Action")
        url = outlook(body, "RedirectUrl")
        assert url.startswith(f"https://{host}:{served.https_port}/autodiscover/")
        seen.append(url)
        path = url.split(str(served.https_port), 1)[1]
    return seen, "gave up"


def test_redirect_chain_and_loop(servers):
    chain, action = follow_redirect_urls(servers[0], "ex01.contoso.test", 10)
    assert [u.rsplit("/", 2)[1] for u in chain] == ["hop1", "hop2", "hop3"] and action == "settings"
    loop, action = follow_redirect_urls(servers[0], "ex02.contoso.test", 4)
    assert [u.rsplit("/", 2)[1] for u in loop] == ["hop1", "hop2", "autodiscover", "hop1"] and action == "gave up"


def test_web_sites_answer_instead_of_exchange(servers):
    sites = servers[1]
    page = ask(sites, "alice@contoso.test", "contoso.test")
    assert page.status == 200 and page.header("Content-Type")[0].startswith("text/html") and "<html>" in page.body
    protected = ask(sites, "alice@contoso.test", "ex01.contoso.test")
    assert protected.status == 401 and protected.header("WWW-Authenticate") == ['Basic realm="ex01.contoso.test"']
    assert ask(sites, "alice@contoso.test", "ex02.contoso.test").status == 404
    assert curl(sites, "ex02.contoso.test", scheme="http").status == 404
    assert ask(sites, "alice@contoso.test", "autodiscover.contoso.test").status == 200  # Exchange there


def test_port80_redirects(servers):
    sites = servers[1]
    relative = curl(sites, "autodiscover.contoso.test", path="/autodiscover/autodiscover.svc", scheme="http",
                    max_time=5)
    assert relative.status == 302
    assert relative.header("Location") == ["https://mail.contoso.test/autodiscover/autodiscover.svc"]
    moved = curl(sites, "mail.contoso.test", path="/autodiscover/autodiscover.svc", scheme="http")
    assert moved.status == 301 and moved.header("Location") == ["http://mail.contoso.test/x.xml"]


def test_redirect_url_to_http(servers):
    body = ask(servers[1], "alice@contoso.test", "mail.contoso.test").body
    assert outlook(body, "RedirectUrl") == "http://mail.contoso.test/autodiscover/autodiscover.xml"


@pytest.mark.parametrize("fault, params, bad", [
    ("autodiscover.redirect-url", {"url": "ftp://x/y"}, "url"),
    ("autodiscover.port80-redirect", {"url": "/relative"}, "url"),
    ("autodiscover.redirect-loop", {"length": 1}, "length"),
    ("autodiscover.slow", {"user": "alice@contoso.test"}, "user"),
    ("autodiscover.malformed-xml", {"keep": 1.5}, "keep"),
    ("autodiscover.web-site", {"status": 200}, "host"),
])
def test_bad_parameters_are_refused_before_serving(fault, params, bad):
    with pytest.raises(FaultParamError) as info:
        catalog()[fault].validate(params)
    assert info.value.param == bad


EWS = "https://mail.contoso.test/EWS/Exchange.asmx"
NO_ENDPOINT = "AttributeError: 'config.service_endpoint' must be set"
# Faults on one user each, so one server shows exchangelib several of them: user -> (fault, what exchangelib ends
# with: ("ews", url) or ("error", message prefix)).
BY_USER = [
    {"alice": ("autodiscover.redirect-addr: {to: carol@contoso.test}", ("ews", EWS)),
     "bob": ("autodiscover.error-code: {code: 500}", ("error", "ErrorNonExistentMailbox")),
     "dave": ("autodiscover.extra-setting", ("error", "KeyError: 'ExternalPhotosUrl'")),
     "confroom1": ("autodiscover.ews-schemas", ("error", "ValueError: Unknown supported schemas")),
     "helpdesk": ("autodiscover.setting-error", ("error", "AutoDiscoverFailed: User settings errors"))},
    {"alice": ("autodiscover.redirect-addr: {to: carol@contoso.test}", ("error", "AutoDiscoverCircularRedirect")),
     "carol": ("autodiscover.redirect-addr: {to: alice@contoso.test}", ("error", "AutoDiscoverCircularRedirect")),
     "bob": ("autodiscover.internal-ews-only", ("error", NO_ENDPOINT)),
     # exchangelib's forgiving parser (recover=True) takes the half answer as settings without ExternalEwsUrl
     "dave": ("autodiscover.malformed-xml", ("error", NO_ENDPOINT)),
     "confroom1": ("autodiscover.http-error: {status: 500}", ("error", "AutoDiscoverFailed: All steps")),
     "helpdesk": ("autodiscover.no-expr", ("ews", EWS))},
    {"alice": ("autodiscover.redirect-chain: {hops: 11}", ("error", "AutoDiscoverFailed: All steps")),
     "bob": ("autodiscover.redirect-chain: {hops: 3}", ("ews", EWS)),
     "carol": ("autodiscover.redirect-loop", ("error", "AutoDiscoverFailed: All steps")),
     "dave": ('autodiscover.redirect-url: {url: "http://mail.contoso.test/autodiscover/autodiscover.xml"}',
              ("error", "AutoDiscoverFailed: All steps")),
     "confroom1": ('autodiscover.http-redirect: {url: "https://mail.contoso.test/autodiscover/autodiscover.xml"}',
                   ("ews", EWS)),
     "helpdesk": ('autodiscover.redirect-url: {url: "https://mail.contoso.test/autodiscover/autodiscover.xml"}',
                  ("ews", EWS))},
    # without EwsSupportedSchemas exchangelib guesses the version with EWS requests (see the test)
    {"alice": ('autodiscover.ews-schemas: {value: ""}', ("ews", EWS))},
]
PASSWORDS = {"alice": "P@ssw0rd-alice", "bob": "P@ssw0rd-bob", "carol": "P@ssw0rd-carol", "dave": "P@ssw0rd-dave",
             "confroom1": "P@ssw0rd-room", "helpdesk": "P@ssw0rd-helpdesk"}
# Built-in composite scenarios -> what exchangelib's discover() ends with for alice.
BY_SCENARIO = {
    "root-domain-html-site": ("ews", EWS),
    "root-domain-401-breaks-exchangelib": ("error", "UnauthorizedError: Invalid credentials for https://contoso.test/"),
    "srv-only-discovery": ("ews", EWS),
    "srv-highest-priority-bug": ("error", "AutoDiscoverFailed"),
    "autodiscover-srv-cert-mismatch": ("error", "AutoDiscoverFailed"),
    "autodiscover-srv-only": ("error", "AutoDiscoverFailed"),
    "http-redirect-only": ("ews", EWS),
    "http-redirect-xml-only": ("error", "AutoDiscoverFailed"),
    "http-redirect-to-http": ("error", "AutoDiscoverFailed"),
    "http-redirect-301": ("ews", EWS),
    "http-redirect-bad-certificate": ("error", "AutoDiscoverFailed"),
    "srv-non-443-port": ("error", "AutoDiscoverFailed"),
    "no-autodiscover-published": ("error", "AutoDiscoverFailed"),
    "dns-nxdomain-autodiscover": ("error", "AutoDiscoverFailed"),
    "dns-aaaa-only": ("error", "AutoDiscoverFailed"),
}


def requested(outcome, host: str, status: int = None) -> bool:
    return any(e["host"] == host and status in (None, e["status"]) for e in outcome.kind("http"))


# What the transcript shows exchangelib did in a composite scenario, beyond how it ended.
EVIDENCE = {
    "root-domain-401-breaks-exchangelib": lambda o: not requested(o, "autodiscover.contoso.test"),
    "srv-only-discovery": lambda o: requested(o, "mail.contoso.test", 200),
    "srv-highest-priority-bug": lambda o: any(e["name"] == "ex02.contoso.test" for e in o.kind("dns"))
    and not requested(o, "mail.contoso.test"),
    "autodiscover-srv-cert-mismatch": lambda o: any(not e["ok"] and e["sni"] == "legacy.contoso.test"
                                                    for e in o.kind("tls")),
    "http-redirect-bad-certificate": lambda o: any(not e["ok"] and e["sni"] == "legacy.contoso.test"
                                                   for e in o.kind("tls")),
    "http-redirect-to-http": lambda o: requested(o, "autodiscover.contoso.test", 302)
    and not requested(o, "mail.contoso.test"),
    "http-redirect-xml-only": lambda o: any(e["error_code"] == "600" for e in o.kind("autodiscover")),
    "srv-non-443-port": lambda o: not requested(o, "mail.contoso.test"),
}


def user_scoped_scenario(faults: dict) -> str:
    lines = ["name: by-user", "faults:"]
    for user, (fault, _) in faults.items():
        name, _, params = fault.partition(": {")
        scope = f"user: {user}@contoso.test"
        lines.append(f"  - {name}: {{{scope}, {params}" if params else f"  - {name}: {{{scope}}}")
    return "\n".join(lines + ["expect:", "  analyzer: {passes: true}", ""])


def verdict(result: dict):
    return ("ews", result["ews_url"]) if "ews_url" in result else ("error", result["error"])


def matches(seen, expected) -> bool:
    return seen[0] == expected[0] and (seen[1] == expected[1] if seen[0] == "ews" else seen[1].startswith(expected[1]))


@needs_netns
def test_exchangelib_discovery_through_each_fault_and_composite_scenario(tmp_path):
    plans = [[], []]   # two namespaces at once: one per core
    for index, faults in enumerate(BY_USER):
        path = tmp_path / f"by-user-{index}.yaml"
        path.write_text(user_scoped_scenario(faults))
        users = [(f"{user}@contoso.test", PASSWORDS[user]) for user in faults]
        plans[index % 2].append((["--scenario", str(path)], [exchangelib(f"by-user-{index}", *users)]))
    for index, name in enumerate(sorted(BY_SCENARIO)):
        plans[index % 2].append((["--scenario", name], [exchangelib(name, ("alice@contoso.test", PASSWORDS["alice"]))]))

    def run(index):
        workdir = tmp_path / f"ns{index}"
        workdir.mkdir()
        return run_in_netns(str(workdir), plans[index])

    with ThreadPoolExecutor(2) as pool:
        outcomes = {label: outcome for part in pool.map(run, range(2)) for label, outcome in part.items()}
    wrong = {}
    for index, faults in enumerate(BY_USER):
        results = by_user(outcomes[f"by-user-{index}"].output)
        for user, (fault, expected) in faults.items():
            seen = verdict(results[f"{user}@contoso.test"])
            if not matches(seen, expected):
                wrong[fault] = seen
    for name, expected in BY_SCENARIO.items():
        seen = verdict(by_user(outcomes[name].output)["alice@contoso.test"])
        if not matches(seen, expected) or not EVIDENCE.get(name, lambda o: True)(outcomes[name]):
            wrong[name] = seen
    assert not wrong, wrong
    assert [bool(outcomes[f"by-user-{index}"].kind("ews")) for index in range(len(BY_USER))] == [False] * 3 + [True]
