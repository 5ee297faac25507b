"""Client conduct (harness/conduct.py): each rule on synthetic transcripts (caught and not caught), the registry and
its generated docs, `expect.client.conduct` in scenario files, and the example clients of examples/ run through
`mockex run`: the good one passes, each bad one is caught by the rule it breaks."""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List

import pytest

from harness import conduct
from harness.conduct import Namespace, namespace
from harness.scenario import load_scenario
from harness.yamlfile import SpecError
from tests.support import REPO
from tests.support.clients import run_mockex

ORG = namespace("contoso.test", ["contoso.test", "autodiscover.contoso.test", "mail.contoso.test"])


class Transcript:
    """A synthetic transcript: events with increasing seq and a clock the test sets."""

    def __init__(self) -> None:
        self.events: List[Dict[str, Any]] = []
        self.time = 1000.0
        self.conns = 0

    def add(self, kind: str, **fields: Any) -> Dict[str, Any]:
        event = {"seq": len(self.events) + 1, "time": self.time, "kind": kind, **fields}
        self.events.append(event)
        return event

    def connect(self, tls: bool = True, ok: bool = True, sni: str = "autodiscover.contoso.test",
                profile: str = "valid certificate") -> int:
        self.conns += 1
        self.add("connect", listener="https" if tls else "http", conn=self.conns)
        if tls:
            self.add("tls", conn=self.conns, ok=ok, sni=sni, profile=profile)
        return self.conns

    def request(self, conn: int, host: str, path: str, status: int = 200, headers=(), auth: str = "",
                result: str = "success", user: str = "alice@contoso.test", tls: bool = True) -> None:
        if auth:
            self.add("auth", conn=conn, scheme=auth, user=user, result=result, tls=tls, path=path)
        self.add("http", conn=conn, method="POST", path=path, host=host, status=status,
                 response_headers=[list(h) for h in headers])


def rules(events: List[dict], org: Namespace = ORG, which=None) -> List[str]:
    return [v.rule for v in conduct.judge(events, org, which or list(conduct.RULES))]


AD = "/autodiscover/autodiscover.xml"


# ---- credentials --------------------------------------------------------------------------------------------------
def test_credentials_over_a_trusted_connection_are_fine():
    t = Transcript()
    t.request(t.connect(), "autodiscover.contoso.test", AD, auth="Basic")
    assert rules(t.events) == []


@pytest.mark.parametrize("profile, sni", [("expired certificate", "autodiscover.contoso.test"),
                                          ("valid certificate", "www.fabrikam.test")])
def test_credentials_over_a_connection_a_client_must_reject(profile, sni):
    t = Transcript()
    t.request(t.connect(profile=profile, sni=sni), sni, AD, auth="Basic")
    found = conduct.credentials_untrusted_tls(t.events, ORG)
    assert [v.rule for v in found] == ["credentials-untrusted-tls"]
    assert "sent Basic credentials over a TLS connection it should not have trusted" in found[0].message


def test_credentials_over_plain_http():
    t = Transcript()
    conn = t.connect(tls=False)
    t.request(conn, "autodiscover.contoso.test", "/", status=302, auth="Basic", result="sent in clear", tls=False)
    found = conduct.credentials_cleartext(t.events, ORG)
    assert [v.rule for v in found] == ["credentials-cleartext"] and "clear text" in found[0].message
    assert conduct.credentials_untrusted_tls(t.events, ORG) == []   # one offence, one rule


# ---- namespace ----------------------------------------------------------------------------------------------------
def test_names_inside_the_namespace_are_fine():
    t = Transcript()
    for name in ("contoso.test", "autodiscover.contoso.test", "_autodiscover._tcp.contoso.test", "ex01.contoso.test",
                 "1.0.0.127.in-addr.arpa", "localhost"):
        t.add("dns", name=name, type="A", rcode="NOERROR")
    t.request(t.connect(sni="mail.contoso.test"), "127.0.0.1", AD)
    assert rules(t.events) == []


def test_autodiscover_tld_and_foreign_hosts_are_caught_once_each():
    t = Transcript()
    t.add("dns", name="autodiscover.test", type="A", rcode="REFUSED")
    t.add("dns", name="autodiscover.test", type="AAAA", rcode="REFUSED")
    t.request(t.connect(sni="www.fabrikam.test"), "www.fabrikam.test", "/")
    found = conduct.outside_namespace(t.events, ORG)
    assert [v.message.split(",")[0] for v in found] == [
        "it looked up autodiscover.test", "it opened TLS to www.fabrikam.test",
        "it sent a request to www.fabrikam.test"]
    assert "credential-leak" in found[0].message and "credential-leak" not in found[1].message


# ---- redirects ----------------------------------------------------------------------------------------------------
def redirect_chain(t: Transcript, hops: int, loop: bool = False) -> None:
    """hop0 -> hop1 -> ... -> hop<hops> (each followed); with ``loop``, the last one goes back to hop0."""
    conn = t.connect()
    for hop in range(hops):
        target = 0 if loop and hop == hops - 1 else hop + 1
        t.request(conn, "autodiscover.contoso.test", f"/autodiscover/hop{hop}/autodiscover.xml", status=302,
                  headers=[("Location", f"https://autodiscover.contoso.test:8443/autodiscover/hop{target}/"
                                        "autodiscover.xml")])
    if not loop:
        t.request(conn, "autodiscover.contoso.test", f"/autodiscover/hop{hops}/autodiscover.xml")


def test_ten_redirects_are_fine_eleven_are_not():
    t = Transcript()
    redirect_chain(t, 10)
    assert rules(t.events) == []
    t = Transcript()
    redirect_chain(t, 11)
    found = conduct.redirect_limit(t.events, ORG)
    assert len(found) == 1 and "followed 11 redirects" in found[0].message


def test_going_round_a_loop_is_caught_finding_it_is_not():
    t = Transcript()
    redirect_chain(t, 2, loop=True)    # hop0 -> hop1 -> hop0, and hop0 asked again: how a client sees the loop
    conn = t.connect()
    t.request(conn, "autodiscover.contoso.test", "/autodiscover/hop0/autodiscover.xml", status=302,
              headers=[("Location", "/autodiscover/hop1/autodiscover.xml")])
    assert rules(t.events) == []
    t.request(conn, "autodiscover.contoso.test", "/autodiscover/hop1/autodiscover.xml")   # round again
    found = conduct.redirect_limit(t.events, ORG)
    assert [v.rule for v in found] == ["redirect-limit"] and "a second time" in found[0].message


def test_redirect_url_answers_form_chains_too():
    t = Transcript()
    conn = t.connect()
    t.add("autodiscover", conn=conn, path=AD, outcome="redirectUrl",
          detail="redirectUrl to https://mail.contoso.test:8443/autodiscover/autodiscover.xml")
    t.request(conn, "autodiscover.contoso.test", AD)
    assert conduct.ignored_redirect(t.events, ORG)[0].rule == "ignored-redirect"   # not followed (yet)
    t.request(t.connect(sni="mail.contoso.test"), "mail.contoso.test", AD)
    assert rules(t.events) == []


def test_following_an_http_redirect_over_plain_http():
    t = Transcript()
    t.request(t.connect(tls=False), "autodiscover.contoso.test", "/", status=302,
              headers=[("Location", "http://mail.contoso.test/autodiscover/autodiscover.xml")])
    refused = list(t.events)
    t.request(t.connect(tls=False), "mail.contoso.test", AD, status=401)
    assert conduct.insecure_redirect(refused, ORG) == []
    found = conduct.insecure_redirect(t.events, ORG)
    assert [v.rule for v in found] == ["insecure-redirect"] and "http://mail.contoso.test" in found[0].message


def test_a_redirect_addr_must_lead_to_another_autodiscover_request():
    t = Transcript()
    conn = t.connect()
    t.add("autodiscover", conn=conn, path=AD, outcome="redirectAddr", detail="redirectAddr to c.jones@contoso.test")
    t.request(conn, "autodiscover.contoso.test", AD)
    found = conduct.ignored_redirect(t.events, ORG)
    assert len(found) == 1 and "c.jones@contoso.test" in found[0].message
    t.request(conn, "autodiscover.contoso.test", AD)
    assert conduct.ignored_redirect(t.events, ORG) == []
    assert "ignored-redirect" not in conduct.DEFAULT_RULES


# ---- back-off and retries ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("waited, caught", [(1.0, True), (5.0, False)])
def test_retry_after(waited, caught):
    t = Transcript()
    conn = t.connect()
    t.request(conn, "autodiscover.contoso.test", AD, status=503, headers=[("Retry-After", "5")])
    t.time += waited
    t.request(conn, "autodiscover.contoso.test", AD)
    assert (rules(t.events) == ["backoff"]) is caught


def test_retry_after_as_a_date():
    t = Transcript()
    t.request(t.connect(), "mail.contoso.test", "/ews/exchange.asmx", status=429,
              headers=[("Retry-After", "Sun, 06 Dec 2026 10:00:30 GMT"), ("Date", "Sun, 06 Dec 2026 10:00:00 GMT")])
    t.time += 10
    t.request(t.connect(), "mail.contoso.test", "/ews/exchange.asmx")
    assert rules(t.events) == ["backoff"]


@pytest.mark.parametrize("waited, caught", [(0.5, True), (2.0, False)])
def test_ec_server_busy_backoff(waited, caught):
    t = Transcript()
    t.add("emsmdb_logon", essdn="/o=contoso", mailbox=None, result="0x00000480", backoff_ms=2000)
    t.time += waited
    t.add("emsmdb_logon", essdn="/o=contoso", mailbox="alice", result="0x00000000")
    assert (rules(t.events) == ["backoff"]) is caught


def test_rop_backoff_on_any_rop_judges_the_sessions_next_buffer_or_the_rop_asked_again():
    t = Transcript()
    execute = {"kind": "emsmdb_execute", "mailbox": "alice", "result": "0x00000000"}
    t.add(**execute, session="mapi-1", rops=[0x02], backoff_ms=3000, backoff_rops=[0x02])
    t.time += 1
    t.add(**execute, session="mapi-2", rops=[0x15])               # another session, another ROP: no retry
    t.time += 1
    retry = t.add(**execute, session="mapi-2", rops=[0x02])       # the delayed RopOpenFolder again, too soon
    t.time += 5
    t.add(**execute, session="mapi-1", rops=[0x02])
    assert [(v.message, v.seq) for v in conduct.backoff(t.events, ORG)] == [
        ("it retried 2.00 s after RopBackoff 3000 ms (RopId 0x02), before the wait was over", retry["seq"])]


def test_ews_back_off_milliseconds():
    t = Transcript()
    conn = t.connect(sni="mail.contoso.test")
    t.add("ews", conn=conn, outcome="error", error_code="ErrorServerBusy", back_off_ms=3000)
    t.request(conn, "mail.contoso.test", "/EWS/Exchange.asmx")      # the busy answer itself
    t.time += 1
    t.request(conn, "mail.contoso.test", "/EWS/Exchange.asmx")
    assert [v.message for v in conduct.backoff(t.events, ORG)] == [
        "it retried 1.00 s after EWS ErrorServerBusy (BackOffMilliseconds 3000), before the wait was over"]


def test_hammering_after_401():
    t = Transcript()
    conn = t.connect()
    for _ in range(ORG.max_refused_logons):
        t.request(conn, "autodiscover.contoso.test", AD, status=401, auth="NTLM", result="continue")
        t.request(conn, "autodiscover.contoso.test", AD, status=401, auth="NTLM", result="failure")
    assert rules(t.events) == []
    t.request(conn, "autodiscover.contoso.test", AD, status=401, auth="Basic", result="failure",
              user="ALICE@contoso.test")
    found = conduct.logon_retries(t.events, ORG)
    assert len(found) == 1 and "6 refused logons for alice@contoso.test" in found[0].message


# ---- the registry, its docs, scenarios ---------------------------------------------------------------------------
def test_every_rule_is_documented_with_its_incident():
    for rule in conduct.RULES.values():
        assert rule.summary and rule.incident and rule.observes
        assert rule.check.__name__ == rule.name.replace("-", "_")
    assert conduct.rules_for(require=["ignored-redirect"], waive=["backoff"]) == [
        name for name in conduct.RULES if name != "backoff"]


def test_conduct_doc_is_fresh():
    from harness import catalog_docs
    with open(os.path.join(REPO, "docs", "conduct.md"), encoding="utf-8") as handle:
        text = handle.read()
    assert catalog_docs.with_conduct_rules(text) == text, "stale docs/conduct.md: run `python -m harness.catalog_docs`"
    for name in conduct.RULES:
        assert f"### `{name}`" in text


SCENARIO = """\
name: conduct-check
description: x
faults: []
expect:
  analyzer: {{passes: true}}
  client:
    conduct:
{conduct}
"""


def test_scenario_conduct_block(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.format(conduct="      require: [ignored-redirect]\n      waive: [backoff]"))
    assert load_scenario(str(path)).expect["client"]["conduct"] == {"require": ["ignored-redirect"],
                                                                    "waive": ["backoff"]}
    path.write_text(SCENARIO.format(conduct="      waive: [backof]"))
    with pytest.raises(SpecError) as caught:
        load_scenario(str(path))
    assert "s.yaml:8" in str(caught.value) and "backoff" in str(caught.value)
    path.write_text(SCENARIO.format(conduct="      ignore: [backoff]"))
    with pytest.raises(SpecError) as caught:
        load_scenario(str(path))
    assert "ignore" in str(caught.value)


# ---- the example clients, run by `mockex run` ------------------------------------------------------------------
EXAMPLES = os.path.join(REPO, "examples")
# client -> scenarios it runs against, and the conduct rules it must be caught by in each ([]: it passes; a bad
# client may break more rules on the way, e.g. one that follows every redirect also goes round in circles)
EXAMPLE_CASES = {
    "good_client.py": {"tls-expired": [], "auth-401-loop": [], "http-redirect-to-http": [],
                       "autodiscover-redirect-url": [], "dns-nxdomain-autodiscover": []},
    "bad_ignores_certificate.py": {"tls-expired": ["credentials-untrusted-tls"]},
    "bad_follows_http_redirect.py": {"http-redirect-to-http": ["credentials-cleartext", "insecure-redirect"],
                                     "autodiscover-redirect-to-http": ["credentials-cleartext",
                                                                       "insecure-redirect"]},
    "bad_autodiscover_tld.py": {"dns-nxdomain-autodiscover": ["outside-namespace"]},
    "bad_retries_401.py": {"auth-401-loop": ["logon-retries"]},
}


@pytest.mark.parametrize("client", sorted(EXAMPLE_CASES))
def test_example_clients_are_judged_by_the_right_rule(client, tmp_path):
    cases = EXAMPLE_CASES[client]
    report = tmp_path / "results.json"
    done = run_mockex("run", *cases, "-j", "2", "--timeout", "60", "--client",
                      f"{sys.executable} {os.path.join(EXAMPLES, client)}", "--json", str(report), timeout=300)
    scenarios = {s["name"]: s for s in json.loads(report.read_text())["scenarios"]}
    for name, caught in cases.items():
        result = scenarios[name]
        found = {v["rule"] for v in result["conduct"]}
        assert found >= set(caught) and (found or not caught), (name, result["problems"], done.stderr)
        if not caught:
            assert not found, (name, result["problems"])
            assert result["outcome"] == "passed", (name, result["problems"], result["client"])
        else:
            assert result["outcome"] == "failed"
            assert all(any(p.startswith(f"[{rule}] ") for p in result["problems"]) for rule in caught)
    assert done.returncode == (0 if client == "good_client.py" else 1)
