"""The probe over MAPI over HTTP and its mailbox step on both transports, against a real `mockex serve`: with the
org's MAPI/HTTP switch on, Autodiscover offers the mapiHttp block to the probe's X-MapiHttpCapability and the probe
connects, logs on, opens the Inbox, lists it and reads a message over /mapi/emsmdb; forced to RPC over HTTP it does
the same through EcDoRpcExt2, and the ROP answers are the same. Failures: the endpoint disabled while MAPI/HTTP is
forced, and a store that refuses the logon."""
from __future__ import annotations

import json
import os
import random
from dataclasses import replace

import jsonschema
import pytest

from harness.probe.discovery import Discovery
from harness.probe.formats import exchange_rows, render_html
from harness.probe.hosts import ProbeContext
from harness.probe.http import Credentials
from harness.probe.mapi_over_http import MapiOverHttp
from harness.probe.net import Budget, Resolver
from harness.probe.report import render_text, verdict_of
from harness.probe.runner import probe
from tests.support import REPO
from tests.support.clients import probe_options
from tests.support.servers import scenario_servers
from tests.support.transcript import TranscriptTail, credential_violations

SCHEMA = json.load(open(os.path.join(REPO, "docs", "probe.schema.json"), encoding="utf-8"))
MAPI_ON = "name: {name}\nconfig:\n  mapi_http: {{Enabled: true}}\n{faults}expect:\n  analyzer: {expect}\n"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    scenarios = {
        "mapi-on": MAPI_ON.format(name="mapi-on", faults="", expect="{passes: true}"),
        "mapi-login-failure": MAPI_ON.format(name="mapi-login-failure",
                                             faults="faults:\n  - mailbox.login-failure: {}\n",
                                             expect="{fails_at: mailbox-logon, reason: ec-login-failure}"),
        "mapi-nspi-refused": MAPI_ON.format(
            name="mapi-nspi-refused",
            faults="faults:\n  - mapihttp.response-code: {endpoint: nspi, request_types: [Bind], code: 1}\n",
            expect="{fails_at: nspi, reason: mapi-http-error}"),
        "mapi-name-not-found": MAPI_ON.format(name="mapi-name-not-found",
                                              faults="faults:\n  - mailbox.name-not-found: {}\n",
                                              expect="{fails_at: nspi, reason: name-not-found}"),
    }
    with scenario_servers(tmp_path_factory.mktemp("mapi-probe"), scenarios) as started:
        yield started


def nodes(report):
    return {node.id: node for phase in report.phases for node in phase.walk()}


def test_both_transports_log_on_list_the_inbox_and_read_a_message_with_the_same_rop_answers(servers):
    served = servers["mapi-on"]
    tail = TranscriptTail(served)
    over_mapi = probe(probe_options(served))
    assert over_mapi.verdict.passed, render_text(over_mapi, verbose=True)
    assert [phase.id for phase in over_mapi.phases] == ["autodiscover", "mapi-http"]
    mapi = nodes(over_mapi)
    assert mapi["autodiscover"].evidence["mapi_mailstore_url"].endswith(
        f"/mapi/emsmdb/?MailboxId={served.user('alice')['rpc_server']}")
    for step_id in ("dns", "port", "certificate", "connect", "address-book", "mailbox-logon", "mailbox"):
        assert mapi[f"mapi-http.{step_id}"].status == "pass", step_id
    assert [node.id for node in over_mapi.phases[1].children][3:5] == ["mapi-http.connect", "mapi-http.address-book"]
    assert mapi["mapi-http.connect"].evidence["scheme"] in ("NTLM", "Negotiate")
    alice = served.user("alice")
    book = mapi["mapi-http.address-book"]
    assert book.step == "nspi" and book.evidence["url"].endswith(f"/mapi/nspi/?MailboxId={alice['rpc_server']}")
    assert book.evidence["offered_by_autodiscover"] is True
    assert book.evidence["display_name"] == mapi["autodiscover"].evidence["display_name"] != ""
    assert book.evidence["legacy_dn"] == mapi["autodiscover"].evidence["legacy_dn"] != ""
    assert book.evidence["smtp_address"].lower() == served.user("alice")["email"].lower()
    assert book.message.endswith(f"→ {book.evidence['display_name']}")
    tail.wait_for(lambda e: e["kind"] == "mapi_http" and e["request_type"] == "Disconnect")
    assert [(e["endpoint"], e["request_type"], e["response_code"]) for e in tail.events("mapi_http")
            if e["response_code"] == 0] == [("emsmdb", "Connect", 0), ("nspi", "Bind", 0),
                                            ("nspi", "ResolveNames", 0), ("nspi", "Unbind", 0)] + [
        ("emsmdb", "Execute", 0)] * 3 + [("emsmdb", "Disconnect", 0)]
    assert [e["names"] for e in tail.events("nspi_resolve")] == [[served.user("alice")["email"]]]
    assert not tail.events("rpc_call")            # nothing went over RPC over HTTP

    over_rpc = probe(probe_options(served, transport="rpc-http"))
    assert over_rpc.verdict.passed, render_text(over_rpc, verbose=True)
    assert [phase.id for phase in over_rpc.phases] == ["autodiscover", "outlook-anywhere"]
    rpc = nodes(over_rpc)
    # without X-MapiHttpCapability Autodiscover leaves the mapiHttp block out, as Exchange does for older Outlooks
    assert rpc["autodiscover"].evidence["mapi_mailstore_url"] == ""
    assert rpc["outlook-anywhere.mailbox"].status == "pass"
    tail.wait_for(lambda e: e["kind"] == "rpc_call" and e["op"] == "EcDoDisconnect")
    assert [(c["op"], c["status"]) for c in tail.events("rpc_call") if c["interface"] == "emsmdb"] == [
        ("EcDoConnectEx", "0x00000000")] + [("EcDoRpcExt2", "0x00000000")] * 3 + [("EcDoDisconnect", "0x00000000")]

    trace = mapi["mapi-http.mailbox"].evidence["rops"]
    assert trace == rpc["outlook-anywhere.mailbox"].evidence["rops"]
    assert [entry["rop"] for entry in trace] == ["RopOpenFolder", "RopGetContentsTable", "RopSetColumns",
                                                 "RopQueryRows", "RopOpenMessage", "RopGetPropertiesSpecific"]
    assert {entry["return_value"] for entry in trace} == {"0x00000000"}
    rows = trace[3]["rows"]
    assert len(rows) == trace[1]["row_count"] >= 1
    assert all(row["subject"] and row["message_class"] == "IPM.Note" and len(row["mid"]) == 16 for row in rows)
    assert trace[4]["normalized_subject"] == trace[5]["subject"] == rows[0]["subject"]
    assert trace[5]["body"] and trace[5]["body_length"] >= len(trace[5]["body"])
    assert not credential_violations(tail.events())
    for report in (over_mapi, over_rpc):
        jsonschema.validate(report.to_json(), SCHEMA)


def test_exchange_table_and_html_name_the_mapi_http_scenarios(servers):
    data = probe(probe_options(servers["mapi-on"])).to_json()
    rows = exchange_rows(data)
    assert [(row["Scenario"], row["Result"]) for row in rows] == [
        ("Autodiscover: Outlook Provider", "Success"), ("MapiHttp::Connect", "Success"),
        ("NSPI::GetProfileDetails", "Success"), ("Mailbox::Logon", "Success"), ("Mailbox::Inbox", "Success")]
    page = render_html(data)
    assert 'id="step-mapi-http.mailbox"' in page and "RopGetPropertiesSpecific" in page
    assert 'id="step-mapi-http.address-book"' in page and "Check Name resolved" in page


def test_an_address_book_refusing_the_bind_fails_the_nspi_step_and_skips_the_mailbox(servers):
    """/mapi/nspi answers Bind with X-ResponseCode 1: the address book step fails with mapi-http-error, its remedy
    names the address book's application pool, the mailbox steps are skipped, the tables say NSPI failed."""
    served = servers["mapi-nspi-refused"]
    tail = TranscriptTail(served)
    report = probe(probe_options(served))
    verdict = report.verdict
    assert (verdict.fails_at, verdict.reason, verdict.step_id, verdict.host) == (
        "nspi", "mapi-http-error", "mapi-http.address-book", "mail.contoso.test"), render_text(report)
    found = nodes(report)
    assert found["mapi-http.connect"].status == "pass"
    book = found["mapi-http.address-book"]
    assert (book.evidence["response_code"], book.evidence["request_type"]) == (1, "Bind")
    assert book.message == "Bind to /mapi/nspi/ answered X-ResponseCode 1 (Unknown Failure)"
    assert [found[f"mapi-http.{s}"].status for s in ("mailbox-logon", "mailbox")] == ["skip", "skip"]
    data = report.to_json()
    assert "MSExchangeMapiAddressBookAppPool" in data["verdict"]["remedy"]
    assert [(row["Scenario"], row["Result"]) for row in exchange_rows(data)][-1] == ("NSPI::GetProfileDetails",
                                                                                     "Failure")
    tail.wait_for(lambda e: e["kind"] == "mapi_http" and e["request_type"] == "Disconnect")
    assert [(e["endpoint"], e["request_type"], e["response_code"]) for e in tail.events("mapi_http")] == [
        ("emsmdb", "Connect", 0), ("nspi", "Bind", 1), ("emsmdb", "Disconnect", 0)]
    assert [e["fault"] for e in tail.events("fault")] == ["mapihttp.response-code"]
    jsonschema.validate(data, SCHEMA)


def test_check_name_finding_nobody_over_mapi_http_is_name_not_found(servers):
    """The address book does not list the user (mailbox.name-not-found): ResolveNames answers MID_UNRESOLVED, the
    step fails with the same reason as Check Name over RPC/HTTP, and the probe still unbinds."""
    served = servers["mapi-name-not-found"]
    tail = TranscriptTail(served)
    report = probe(probe_options(served))
    verdict = report.verdict
    assert (verdict.fails_at, verdict.reason, verdict.step_id) == (
        "nspi", "name-not-found", "mapi-http.address-book"), render_text(report)
    book = nodes(report)["mapi-http.address-book"]
    assert book.message == f"Check Name found no entry for {served.user('alice')['email']}"
    assert book.evidence["mids"] == [0]
    tail.wait_for(lambda e: e["kind"] == "mapi_http" and e["request_type"] == "Disconnect")
    assert [(e["endpoint"], e["request_type"]) for e in tail.events("mapi_http")] == [
        ("emsmdb", "Connect"), ("nspi", "Bind"), ("nspi", "ResolveNames"), ("nspi", "Unbind"),
        ("emsmdb", "Disconnect")]
    jsonschema.validate(report.to_json(), SCHEMA)


def test_a_store_refusing_the_logon_fails_the_mailbox_logon_over_mapi_http(servers):
    report = probe(probe_options(servers["mapi-login-failure"]))
    verdict = report.verdict
    assert (verdict.fails_at, verdict.reason) == ("mailbox-logon", "ec-login-failure"), render_text(report)
    found = nodes(report)
    assert found["mapi-http.connect"].status == "pass"
    assert found["mapi-http.mailbox-logon"].evidence["status"] == "0x80040111"
    assert found["mapi-http.mailbox"].status == "skip"
    jsonschema.validate(report.to_json(), SCHEMA)


def test_forcing_mapi_http_where_it_is_disabled_fails_at_the_endpoint(server):
    """The default org has MAPI over HTTP off: Autodiscover gives no mapiHttp block despite X-MapiHttpCapability,
    and /mapi/emsmdb answers X-ResponseCode 16; the probe built the URL from EXPR and EXCH as Exchange would."""
    tail = TranscriptTail(server)
    report = probe(probe_options(server, transport="mapi-http"))
    verdict = report.verdict
    assert (verdict.fails_at, verdict.reason, verdict.host) == ("mapi-http", "mapi-http-disabled",
                                                                "mail.contoso.test"), render_text(report)
    found = nodes(report)
    assert found["autodiscover"].evidence["mapi_mailstore_url"] == ""
    assert found["mapi-http.connect"].evidence["url"].startswith("https://mail.contoso.test/mapi/emsmdb/?MailboxId=")
    assert [found[f"mapi-http.{s}"].status for s in ("mailbox-logon", "mailbox")] == ["skip", "skip"]
    assert "Set-OrganizationConfig -MapiHttpEnabled $true" in report.to_json()["verdict"]["remedy"]
    tail.wait_for(lambda e: e["kind"] == "mapi_http")
    assert [e["response_code"] for e in tail.events("mapi_http")] == [16]
    jsonschema.validate(report.to_json(), SCHEMA)


def address_book_elsewhere(served, host):
    """The MAPI/HTTP phase with Autodiscover's settings but an AddressBook URL on ``host``."""
    options = probe_options(served)
    context = ProbeContext(email=options.email, credentials=Credentials.parse(options.email, options.password),
                           resolver=Resolver(options.dns), budget=Budget(options.step_timeout, options.total_timeout),
                           ca_file=options.ca_file, https_port=options.https_port, http_port=options.http_port)
    settings = Discovery(context, None, mapi_http=True).run()
    assert settings is not None and settings.mapi_addressbook_url
    moved = settings.mapi_addressbook_url.replace("//mail.contoso.test", f"//{host}", 1)
    phase = MapiOverHttp(context, replace(settings, mapi_addressbook_url=moved), random.Random(1)).run()
    return {node.id: node for node in phase.walk()}, phase


def test_an_address_book_on_another_host_gets_that_hosts_checks_under_its_step(servers):
    """Exchange gives one host for both URLs; when the AddressBook URL names another, its DNS, port and certificate
    are checked under the address book step: a name that resolves and is on the certificate passes, an unknown name
    fails there (nxdomain) and the mailbox steps are skipped."""
    served = servers["mapi-on"]
    found, phase = address_book_elsewhere(served, "autodiscover.contoso.test")
    assert phase.status == "pass", [(n.id, n.status, n.message) for n in found.values()]
    assert [c.id for c in found["mapi-http.address-book"].children] == [
        f"mapi-http.address-book.{s}" for s in ("dns", "port", "certificate")]
    assert found["mapi-http.address-book"].evidence["url"].startswith("https://autodiscover.contoso.test:")
    found, phase = address_book_elsewhere(served, "ab.contoso.test")
    assert (phase.status, phase.reason, phase.cause) == ("fail", "nxdomain", "mapi-http.address-book")
    assert found["mapi-http.address-book.dns"].reason == "nxdomain"
    assert verdict_of([phase]).step_id == "mapi-http.address-book.dns"
    assert [found[f"mapi-http.{s}"].status for s in ("mailbox-logon", "mailbox")] == ["skip", "skip"]
