"""The probe's pieces without a server: vocabulary, verdict selection, POX interpretation, HTTP auth helpers,
the credentials guard, the RPC proxy refusal mapping, the JSON schema and the generated docs table."""
import json
import os
import re

import jsonschema
import pytest

from harness import verdicts
from harness.org import load_org
from harness.probe import docs, pox
from harness.probe.http import Credentials, HttpConnection, InsecureCredentials, Response, offered_schemes
from harness.probe.net import parse_server
from harness.probe.report import STATUSES, Report, Step, verdict_of
from harness.probe.rpchttp import classify_refusal
from harness.protocols import autodiscover
from tests.support import REPO

SCHEMA_PATH = os.path.join(REPO, "docs", "probe.schema.json")


def schema():
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return json.load(handle)


# ---- vocabulary ----------------------------------------------------------------------------------------------
def test_every_reason_belongs_to_a_step_and_has_an_admin_remedy():
    for reason, (step, remedy) in verdicts.REASONS.items():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", reason), reason
        assert step in verdicts.STEPS
        assert len(remedy) > 40 and remedy[0].isupper(), reason


def test_the_ids_scenario_files_rely_on_are_there():
    needed = {"nxdomain": "dns", "servfail": "dns", "dns-timeout": "dns", "no-a-record": "dns",
              "connection-refused": "port", "connection-timeout": "port", "connection-reset": "port",
              "certificate-expired": "certificate", "certificate-not-yet-valid": "certificate",
              "name-mismatch": "certificate", "untrusted-root": "certificate", "self-signed": "certificate",
              "missing-intermediate": "certificate", "weak-key": "certificate", "weak-signature": "certificate",
              "tls-version": "certificate", "client-certificate-required": "certificate",
              "tls-handshake-failed": "certificate", "http-401": "autodiscover", "redirect-loop": "autodiscover",
              "too-many-redirects": "autodiscover", "insecure-redirect": "autodiscover", "no-expr": "autodiscover",
              "malformed-response": "autodiscover", "no-autodiscover-endpoint": "autodiscover",
              "timeout": "autodiscover", "auth-method-mismatch": "http-auth", "rpc-proxy-503": "rpc-proxy",
              "invalid-rpc-port": "rpc-proxy", "unknown-rpc-server": "rpc-proxy", "rpc-channel-broken": "rpc-proxy",
              "rts-timeout": "rpc-proxy", "nspi-bind-failed": "nspi", "name-not-found": "nspi", "rpc-fault": "nspi",
              "ec-wrong-server": "mailbox-logon", "ec-login-failure": "mailbox-logon",
              "ec-client-ver-disallowed": "mailbox-logon", "ec-server-busy": "mailbox-logon",
              "ec-not-encrypted": "mailbox-logon"}
    for code in (500, 501, 600, 601, 602, 603):
        needed[f"autodiscover-error-{code}"] = "autodiscover"
    assert {r: verdicts.REASONS[r][0] for r in needed} == needed
    assert "http-auth" in verdicts.steps_of("http-401") and "referral" in verdicts.steps_of("rpc-fault")


def test_http_status_family():
    assert verdicts.http_status_reason(404) == "http-404"
    assert verdicts.steps_of("http-404") == ("autodiscover",)
    assert "HTTP status" in verdicts.remedy_for("http-503")
    assert verdicts.remedy_for("http-401") == verdicts.REASONS["http-401"][1]
    with pytest.raises(KeyError):
        verdicts.remedy_for("no-such-reason")


# ---- verdict selection ---------------------------------------------------------------------------------------
def test_verdict_follows_the_cause_chain_then_the_first_failure():
    discovery = Step("autodiscover", "Autodiscover", "autodiscover")
    root = discovery.add(Step("autodiscover.root-domain", "root", "autodiscover", "contoso.test"))
    root.add(Step("autodiscover.root-domain.dns", "DNS", "dns", "contoso.test").fail("nxdomain", "no such name"))
    root.fail("nxdomain", "no such name")
    other = discovery.add(Step("autodiscover.autodiscover-domain", "ad", "autodiscover", "autodiscover.contoso.test"))
    cert = other.add(Step("autodiscover.autodiscover-domain.certificate", "Certificate", "certificate",
                          "autodiscover.contoso.test"))
    cert.fail("certificate-expired", "expired on 2020-01-01")
    other.fail("certificate-expired", "expired on 2020-01-01")
    discovery.fail("certificate-expired", "expired")
    assert verdict_of([discovery]).reason == "nxdomain"        # no cause: the first failing child decides
    discovery.cause = cert.id
    verdict = verdict_of([discovery])
    assert (verdict.fails_at, verdict.reason, verdict.host, verdict.step_id) == (
        "certificate", "certificate-expired", "autodiscover.contoso.test", cert.id)
    assert verdict_of([Step("autodiscover", "A", "autodiscover").passed("ok")]).passed


def test_a_step_refuses_an_unknown_status_or_step():
    with pytest.raises(ValueError):
        Step("x", "x", "not-a-step")
    with pytest.raises(ValueError):
        Step("x", "x").mark("great", "")


def test_report_json_validates_and_schema_enums_match_the_code():
    phase = Step("autodiscover", "Autodiscover", "autodiscover", "contoso.test")
    phase.add(Step("autodiscover.root-domain", "https://contoso.test/", "autodiscover")).fail("http-404", "404")
    phase.fail("http-404", "404")
    phase.cause = "autodiscover.root-domain"
    report = Report("alice@contoso.test", [phase, Step("outlook-anywhere", "OA", status="skip")], 0.0, 12.5, {})
    document = report.to_json()
    jsonschema.validate(document, schema())
    assert document["verdict"]["reason"] == "http-404" and report.exit_code == 1
    defs = schema()["$defs"]
    assert defs["stepName"]["enum"] == list(verdicts.STEPS)
    assert defs["node"]["properties"]["status"]["enum"] == list(STATUSES)
    broken = json.loads(json.dumps(document))
    broken["steps"][0]["status"] = "fail"
    broken["steps"][0]["reason"] = None
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema())


def test_docs_table_is_current():
    with open(os.path.join(REPO, "docs", "probe.md"), encoding="utf-8") as handle:
        text = handle.read()
    assert docs.with_table(text) == text, "stale reason table: run python -m harness.probe.docs docs/probe.md"


# ---- POX interpretation --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def org():
    return load_org()


def test_settings_answer_gives_the_outlook_anywhere_settings(org):
    alice = org.find("alice")
    answer = autodiscover.respond_pox(org, pox.request_body(alice.email), alice,
                                      autodiscover.SiteUrls.for_org(org, 443))
    settings = pox.parse_response(answer.body, alice.email)
    assert settings.proxy_host == "mail.contoso.test"
    assert settings.rpc_server == org.personal_server(alice)
    assert settings.legacy_dn == org.legacy_dn(alice)
    assert pox.auth_scheme_for(settings.auth_package) == "Negotiate"
    assert pox.principal_host(settings.cert_principal_name) == "mail.contoso.test"


@pytest.mark.parametrize("code", [500, 501, 600, 601, 602, 603])
def test_error_codes_become_their_reason(code):
    with pytest.raises(Exception) as failure:
        pox.parse_response(autodiscover.pox_error(code).body, "alice@contoso.test")
    assert failure.value.reason == f"autodiscover-error-{code}"


def test_redirects_html_and_missing_expr(org):
    assert pox.parse_response(autodiscover.pox_redirect_addr("bob@fabrikam.test").body, "a@b.c") == \
        pox.RedirectAddr("bob@fabrikam.test")
    assert pox.parse_response(autodiscover.pox_redirect_url("https://x.test/a.xml").body, "a@b.c") == \
        pox.RedirectUrl("https://x.test/a.xml")
    with pytest.raises(Exception) as failure:
        pox.parse_response(b"<html><body>Welcome to Contoso</body></html>", "a@b.c")
    assert failure.value.reason == "malformed-response"
    alice = org.find("alice")
    body = autodiscover.respond_pox(org, pox.request_body(alice.email), alice,
                                    autodiscover.SiteUrls.for_org(org, 443)).body
    without_expr = re.sub(rb"<Protocol><Type>EXPR</Type>.*?</Protocol>", b"", body, flags=re.S)
    assert without_expr != body
    with pytest.raises(Exception) as failure:
        pox.parse_response(without_expr, alice.email)
    assert failure.value.reason == "no-expr"


def test_the_mapi_http_block_gives_the_mailstore_url_and_stands_in_for_a_missing_expr(org):
    alice = org.find("alice")
    urls = autodiscover.SiteUrls.for_org(org, 443)
    body = autodiscover.respond_pox(org, pox.request_body(alice.email), alice, urls, mapi_http=True).body
    settings = pox.parse_response(body, alice.email)
    assert settings.mapi_mailstore_url == f"https://mail.contoso.test/mapi/emsmdb/?MailboxId={org.personal_server(alice)}"
    without_expr = re.sub(rb"<Protocol><Type>EXPR</Type>.*?</Protocol>", b"", body, flags=re.S)
    assert without_expr != body
    assert pox.parse_response(without_expr, alice.email).proxy_host == ""
    without_either = re.sub(rb'<Protocol Type="mapiHttp".*?</Protocol>', b"", without_expr, flags=re.S)
    assert without_either != without_expr
    with pytest.raises(Exception) as failure:
        pox.parse_response(without_either, alice.email)
    assert failure.value.reason == "no-expr"


# ---- HTTP helpers --------------------------------------------------------------------------------------------
def test_credentials_forms():
    assert Credentials.parse("CONTOSO\\alice", "pw") == Credentials("alice", "CONTOSO", "pw")
    assert Credentials.parse("alice@contoso.test", "pw") == Credentials("alice@contoso.test", "", "pw")
    assert Credentials.parse("CONTOSO\\alice", "pw").basic_login == "CONTOSO\\alice"


def test_offered_schemes_one_per_line_or_folded():
    separate = Response(401, "", [("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "NTLM"),
                                  ("WWW-Authenticate", 'Basic realm="mail.contoso.test"')])
    assert offered_schemes(separate) == ["Negotiate", "NTLM", "Basic"]
    folded = Response(401, "", [("WWW-Authenticate", "NTLM TlRMTVNTUAACAAAA, Negotiate")])
    assert offered_schemes(folded) == ["NTLM", "Negotiate"]


class _Recorder:
    def __init__(self):
        self.sent = b""

    def settimeout(self, _):
        pass

    def sendall(self, data):
        self.sent += data


def test_credentials_never_go_on_a_connection_that_is_not_verified_tls():
    sock = _Recorder()
    plain = HttpConnection(sock, "autodiscover.contoso.test", lambda: 1.0, secure=False)
    with pytest.raises(InsecureCredentials):
        plain.send_head("GET", "/", [("Authorization", "Basic YTpi")])
    assert sock.sent == b""
    plain.send_head("GET", "/autodiscover/autodiscover.xml", [("Content-Length", "0")])
    assert sock.sent.startswith(b"GET /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: autodiscover.contoso.test")


@pytest.mark.parametrize("status, reason_phrase, expected", [
    (401, "Unauthorized", "http-401"),
    (404, "Not Found", "unknown-rpc-server"),
    (503, "Invalid RPC Port", "invalid-rpc-port"),
    (503, "RPC Error: 6BA", "rpc-proxy-503"),
    (500, "Internal Server Error", "rpc-proxy-http-error"),
])
def test_rpc_proxy_refusals(status, reason_phrase, expected):
    failure = classify_refusal(Response(status, reason_phrase, []), "RPC_IN_DATA")
    assert failure.reason == expected
    if reason_phrase.startswith("RPC Error"):
        assert failure.evidence["rpc_error"] == "0x6ba"


def test_dns_server_argument():
    assert parse_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_server("[::1]:53") == ("::1", 53)
    assert parse_server("10.0.0.1") == ("10.0.0.1", 53)
    for bad in ("dns.example:53", "127.0.0.1:0", "127.0.0.1:x"):
        with pytest.raises(ValueError):
            parse_server(bad)


@pytest.mark.parametrize("server_version, major, legacy", [
    ("73C085D9", 15, False),    # Exchange 2013 CU23 (15.0.1497)
    ("7383807B", 14, True),     # Exchange 2010 SP3 (14.3.123)
    ("72038053", 8, True),      # Exchange 2007 SP3 (8.3.83)
    ("", None, False),          # no ServerVersion (--skip-autodiscover): not taken for a legacy mailbox
])
def test_the_home_server_major_version_comes_from_the_exch_server_version(server_version, major, legacy):
    settings = pox.OutlookSettings("erin@contoso.test", "", "", "", "", "", "mail.contoso.test", True, "Ntlm", "",
                                   server_version=server_version)
    assert (settings.home_major, settings.legacy_homed) == (major, legacy)


def test_the_coexistence_reasons_have_exchange_s_remedies():
    assert "Enable-OutlookAnywhere" in verdicts.remedy_for("legacy-oa-disabled")
    assert "-IISAuthenticationMethods Basic,Ntlm" in verdicts.remedy_for("legacy-iis-without-ntlm")
    assert "-ExternalHostname <2013 host name>" in verdicts.remedy_for("legacy-external-hostname")
    assert [verdicts.steps_of(r)[0] for r in ("legacy-oa-disabled", "legacy-iis-without-ntlm",
                                              "legacy-external-hostname")] == ["rpc-proxy", "rpc-proxy", "dns"]
