"""`mockex probe` against a real `mockex serve` on loopback: the clean org passes every step (Autodiscover over
NTLM, certificate, /rpc auth methods, RPC proxy ping, NSPI Check Name, RFR referral, EMSMDB logon), failures are
named by step and reason, credentials only ever travel over verified TLS (judged from the mock's transcript), the
JSON validates against docs/probe.schema.json, and usage errors exit 2."""
import contextlib
import json
import os
import socket
import subprocess
import time

import jsonschema
import pytest

from harness.pki import PKI
from harness.probe.report import render_text
from harness.probe.runner import probe
from tests.support import REPO
from tests.support.clients import probe_options, run_mockex
from tests.support.transcript import TranscriptTail, credential_violations

SCHEMA = json.load(open(os.path.join(REPO, "docs", "probe.schema.json"), encoding="utf-8"))


def cli_args(served, user: str = "alice"):
    endpoints, account = served.endpoints, served.user(user)
    return [account["email"], "--password", account["password"],
            "--dns", f"{endpoints['dns']['host']}:{endpoints['dns']['port']}", "--ca-file", endpoints["ca_file"],
            "--port", str(endpoints["https"]["port"]), "--http-port", str(endpoints["http"]["port"]),
            "--timeout", "3", "--total-timeout", "40"]


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]


@contextlib.contextmanager
def silent_dns_server():
    """A UDP socket that takes DNS queries and never answers (a dropped resolver)."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    try:
        yield sink.getsockname()
    finally:
        sink.close()


# ---- the clean org ---------------------------------------------------------------------------------------------
def test_clean_org_passes_every_step(server):
    tail = TranscriptTail(server)
    report = probe(probe_options(server))
    assert report.verdict.passed, render_text(report, verbose=True)
    assert report.exit_code == 0
    statuses = {node.id: node.status for phase in report.phases for node in phase.walk()}
    for step_id in ("autodiscover.root-domain.dns", "autodiscover.root-domain.port",
                    "autodiscover.root-domain.certificate", "autodiscover.root-domain.post",
                    "outlook-anywhere.dns", "outlook-anywhere.port", "outlook-anywhere.certificate",
                    "outlook-anywhere.http-auth", "outlook-anywhere.rpc-proxy", "outlook-anywhere.nspi",
                    "outlook-anywhere.referral", "outlook-anywhere.mailbox-logon", "outlook-anywhere.mailbox"):
        assert statuses.get(step_id) == "pass", step_id
    assert "autodiscover.autodiscover-domain" not in statuses   # Outlook stops at the first successful POST
    tail.wait_for(lambda e: e["kind"] == "rpc_call" and e["op"] == "EcDoDisconnect")
    calls = [(c["interface"], c["op"], c["status"]) for c in tail.events("rpc_call")]
    assert calls == [("nspi", "NspiBind", "0x00000000"), ("nspi", "NspiResolveNamesW", "0x00000000"),
                     ("nspi", "NspiUnbind", "0x00000001"), ("rfr", "RfrGetNewDSA", "0x00000000"),
                     ("rfr", "RfrGetFQDNFromServerDN", "0x00000000"), ("emsmdb", "EcDoConnectEx", "0x00000000"),
                     ("emsmdb", "EcDoRpcExt2", "0x00000000"),   # RopLogon
                     ("emsmdb", "EcDoRpcExt2", "0x00000000"),   # the Inbox: open, contents table, columns, rows
                     ("emsmdb", "EcDoRpcExt2", "0x00000000"),   # its first message: open, subject and body
                     ("emsmdb", "EcDoDisconnect", "0x00000000")]
    binds = tail.events("rpc_bind")
    assert [(b["interface"], b["auth_level"], b["result"]) for b in binds] == [
        ("nspi", 6, "accepted"), ("rfr", 6, "accepted"), ("emsmdb", 6, "accepted")]
    channels = {(c["target"], c["port"]) for c in tail.events("rpc_channel")}
    rpc_server = server.user("alice")["rpc_server"]
    assert channels == {(rpc_server, 6004), (rpc_server, 6002), (rpc_server, 6001)}
    assert tail.events("auth") and not credential_violations(tail.events())
    failed_handshakes = [e for e in tail.events("tls") if not e["ok"]]
    assert not failed_handshakes   # the port check's connection is reused for the certificate handshake


def test_cli_json_validates_against_the_schema(server):
    result = run_mockex("probe", *cli_args(server), "--json", timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    jsonschema.validate(document, SCHEMA)
    assert document["verdict"]["passed"] and "password" not in document["options"]
    assert [step["id"] for step in document["steps"]] == ["autodiscover", "outlook-anywhere"]


def test_text_report_is_plain_without_a_terminal(server):
    result = run_mockex("probe", *cli_args(server), timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\x1b[" not in result.stdout
    assert "✔ Outlook Anywhere on mail.contoso.test" in result.stdout
    assert "chain trusted, 2048-bit RSA, TLSv1.2" in result.stdout   # the version Exchange 2013 speaks
    assert "All checks passed for alice@contoso.test" in result.stdout


# ---- failures, each named -------------------------------------------------------------------------------------
def test_wrong_password_fails_autodiscover_with_401(server):
    tail = TranscriptTail(server)
    report = probe(probe_options(server, password="not-the-password"))
    verdict = report.verdict
    # the root domain's 401 could be any protected web site: the autodiscover host's 401 is the one that counts
    assert (verdict.fails_at, verdict.reason, verdict.host) == ("autodiscover", "http-401",
                                                                "autodiscover.contoso.test")
    assert report.exit_code == 1
    assert not credential_violations(tail.events())
    jsonschema.validate(report.to_json(), SCHEMA)
    text = render_text(report, colour=True)
    assert text.count("What to do:") == 1 and "\x1b[31m" in text


def test_an_untrusted_ca_means_no_credentials_are_sent(server, tmp_path):
    other_root = PKI(str(tmp_path), org_name="fabrikam.test").ca_file
    tail = TranscriptTail(server)
    report = probe(probe_options(server, ca_file=other_root))
    verdict = report.verdict
    assert (verdict.fails_at, verdict.reason, verdict.host) == ("certificate", "untrusted-root", "contoso.test")
    tail.wait_for(lambda e: e["kind"] == "disconnect")
    assert not tail.events("auth")
    over_tls = [(e["method"], e["path"]) for e in tail.events("http") if e["sni"]]
    assert over_tls == [("HEAD", "/")] * 4   # only the anonymous client-certificate checks


def test_a_domain_the_org_does_not_have(server):
    report = probe(probe_options(server, email="alice@nothere.contoso.test"))
    assert (report.verdict.fails_at, report.verdict.reason) == ("autodiscover", "no-autodiscover-endpoint")
    assert "nothere.contoso.test: nxdomain" in report.verdict.message
    report = probe(probe_options(server, email="alice@fabrikam.test"))
    assert (report.verdict.fails_at, report.verdict.reason) == ("dns", "dns-refused")


def test_closed_https_port_falls_back_to_the_http_redirect_method(server):
    """With the https port closed, Autodiscover still works through the port-80 redirect (its Location names the
    real port) and Outlook Anywhere fails at the port; nothing is sent with credentials over plain HTTP."""
    tail = TranscriptTail(server)
    report = probe(probe_options(server, https_port=free_port()))
    ids = {node.id: node for phase in report.phases for node in phase.walk()}
    assert ids["autodiscover.root-domain"].reason == "connection-refused"
    assert ids["autodiscover.http-redirect.redirect"].status == "pass"
    assert ids["autodiscover.http-redirect.target.post"].status == "pass"
    assert report.phases[0].status == "pass"
    verdict = report.verdict
    assert (verdict.fails_at, verdict.reason, verdict.host) == ("port", "connection-refused", "mail.contoso.test")
    assert [ids[f"outlook-anywhere.{s}"].status for s in ("http-auth", "rpc-proxy", "mailbox-logon")] == ["skip"] * 3
    plain = [e for e in tail.events("http") if e["sni"] is None]
    assert plain and all("authorization" not in json.dumps(e["request_headers"]).lower() for e in plain)
    assert not credential_violations(tail.events())


def test_unanswered_dns_is_a_timeout_and_the_run_stays_bounded(server):
    with silent_dns_server() as address:
        started = time.monotonic()
        report = probe(probe_options(server, dns=address, step_timeout=0.3))
        assert time.monotonic() - started < 5
    assert (report.verdict.fails_at, report.verdict.reason) == ("dns", "dns-timeout")
    with silent_dns_server() as address:
        started = time.monotonic()
        report = probe(probe_options(server, dns=address, step_timeout=5, total_timeout=1.0))
        assert time.monotonic() - started < 3
    assert report.verdict.reason == "time-limit" and report.exit_code == 1
    jsonschema.validate(report.to_json(), SCHEMA)


# ---- without Autodiscover --------------------------------------------------------------------------------------
def test_skip_autodiscover_learns_the_server_name_and_legacy_dn(server):
    tail = TranscriptTail(server)
    report = probe(probe_options(server, skip_autodiscover=True, proxy="mail.contoso.test"))
    assert report.verdict.passed, render_text(report, verbose=True)
    assert report.phases[0].status == "skip"
    tail.wait_for(lambda e: e["kind"] == "rpc_call" and e["op"] == "EcDoDisconnect")
    assert not [e for e in tail.events("http") if e["path"].lower().startswith("/autodiscover")]
    assert {c["target"] for c in tail.events("rpc_channel")} == {"EX01"}
    (connect,) = [c for c in tail.events("rpc_call") if c["op"] == "EcDoConnectEx"]
    assert connect["status"] == "0x00000000"


def test_basic_outlook_anywhere_goes_only_over_verified_tls(server):
    tail = TranscriptTail(server)
    report = probe(probe_options(server, skip_autodiscover=True, proxy="mail.contoso.test", auth_package="Basic",
                                 rpc_server=server.user("alice")["rpc_server"], login="CONTOSO\\alice"))
    assert report.verdict.passed, render_text(report, verbose=True)
    schemes = {e["scheme"] for e in tail.events("auth")}
    assert schemes == {"Basic"}
    assert not credential_violations(tail.events())


# ---- usage ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    [],
    ["not-an-address", "--password", "x"],
    ["alice@contoso.test", "--password", "x", "--skip-autodiscover"],
    ["alice@contoso.test", "--password", "x", "--proxy", "mail.contoso.test"],
    ["alice@contoso.test", "--password", "x", "--dns", "dns.example.com"],
    ["alice@contoso.test", "--password", "x", "--port", "0"],
    ["alice@contoso.test", "--password", "x", "--timeout", "-1"],
    ["alice@contoso.test", "--password", "x", "--ca-file", "/nonexistent/ca.pem"],
    ["alice@contoso.test"],   # no password and no terminal to prompt on
])
def test_usage_errors_exit_2(args):
    env = {k: v for k, v in os.environ.items() if k != "MOCKEX_PROBE_PASSWORD"}
    result = run_mockex("probe", *args, timeout=30, stdin=subprocess.DEVNULL, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr and not result.stdout and "Traceback" not in result.stderr


def test_help_explains_steps_and_exit_status():
    result = run_mockex("probe", "--help", timeout=30)
    assert result.returncode == 0
    for text in ("exit status: 0 every step passed, 1 a step failed, 2 usage error", "--skip-autodiscover",
                 "--total-timeout", "never over plain HTTP"):
        assert text in result.stdout


# ---- RPC-side failures the clean org already has ------------------------------------------------------------------
def test_a_mailbox_homed_on_another_server_is_ec_wrong_server(server):
    report = probe(probe_options(server, user="dave"))
    verdict = report.verdict
    assert (verdict.fails_at, verdict.reason, verdict.host) == ("mailbox-logon", "ec-wrong-server",
                                                                "mail.contoso.test")
    logon = next(n for n in report.phases[1].children if n.step == "mailbox-logon")
    assert logon.evidence["status"] == "0x00000478" and "/cn=" in logon.evidence["server_dn"]
    assert [n.status for n in report.phases[1].children if n.step in ("nspi", "referral")] == ["pass", "pass"]


def test_an_unknown_rpc_server_name_is_refused_by_the_proxy(server):
    report = probe(probe_options(server, skip_autodiscover=True, proxy="mail.contoso.test", rpc_server="EX99"))
    verdict = report.verdict
    assert (verdict.fails_at, verdict.reason) == ("rpc-proxy", "unknown-rpc-server")
    assert [n.status for n in report.phases[1].children if n.step in ("nspi", "referral", "mailbox-logon")] == \
        ["skip"] * 3
