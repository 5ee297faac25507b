"""`mockex probe --test ews`: the Remote Connectivity Analyzer's EWS test against a running mock - the default org
passes every step (Autodiscover, then DNS, port, certificate, HTTP authentication, GetFolder and FindItem on the
Inbox of the EWS URL from EXPR), an EWS fault scenario fails at the EWS step with the Exchange error code and a
remedy, credentials only go over verified TLS; and the answers the probe interprets, in process."""
from __future__ import annotations

import json
import os

import jsonschema
import pytest

from harness.probe.ews import parse_answer
from harness.probe.expectation import endpoint_user, options_from_endpoints
from harness.probe.formats import exchange_rows, render_html
from harness.probe.http import Response
from harness.probe.report import StepFailed, render_text
from harness.probe.runner import probe
from harness.protocols import ews
from harness.transcript import credential_violations
from tests.support import REPO
from tests.support.clients import run_mockex
from tests.support.ews import ORG

SCHEMA = json.load(open(os.path.join(REPO, "docs", "probe.schema.json"), encoding="utf-8"))
EWS_STEPS = ("ews.dns", "ews.port", "ews.certificate", "ews.auth", "ews.get-folder", "ews.find-item")


def ews_probe(org, **overrides):
    settings = dict(test="ews", step_timeout=10.0, total_timeout=120.0, seed=1)
    settings.update(overrides)
    return probe(options_from_endpoints(org.endpoints, "alice", **settings))


def test_the_default_org_passes_the_ews_test(mockex_org):
    report = ews_probe(mockex_org)
    assert report.verdict.passed, render_text(report, verbose=True)
    nodes = {node.id: node for phase in report.phases for node in phase.walk()}
    assert [p.id for p in report.phases] == ["autodiscover", "ews"]
    assert all(nodes[step].status == "pass" for step in EWS_STEPS), render_text(report, verbose=True)
    url = nodes["ews"].evidence["ews_url"]   # the mock's URLs name its port when it is not 443
    assert url.startswith("https://mail.contoso.test") and url.endswith("/EWS/Exchange.asmx")
    assert nodes["ews.auth"].evidence["scheme"] == "NTLM"
    assert nodes["ews.get-folder"].evidence["total_count"] >= 1
    found = nodes["ews.find-item"].evidence
    assert 1 <= len(found["subjects"]) <= 5 and found["total_items_in_view"] >= len(found["subjects"])
    document = report.to_json()
    jsonschema.validate(document, SCHEMA)
    assert [(r["Scenario"], r["Result"]) for r in exchange_rows(document)] == [
        ("Autodiscover: Outlook Provider", "Success"), ("EWS: GetFolder", "Success")]
    assert "Exchange Web Services Connectivity" in render_html(document)
    assert not credential_violations(mockex_org.events(), mockex_org.endpoints["hostnames"])


@pytest.mark.parametrize("scenario, reason, code", [
    ("ews-mailbox-store-unavailable", "ews-mailbox-store-unavailable", "ErrorMailboxStoreUnavailable"),
    ("ews-throttled", "ews-server-busy", "ErrorServerBusy"),
])
def test_an_ews_fault_scenario_fails_at_the_ews_step_with_the_exchange_code(mockex_orgs, scenario, reason, code):
    org = mockex_orgs(scenario)
    report = ews_probe(org)
    verdict = report.verdict
    assert (verdict.fails_at, verdict.reason, verdict.step_id) == ("ews", reason, "ews.get-folder"), \
        render_text(report, verbose=True)
    assert report.exit_code == 1 and code in verdict.message
    nodes = {node.id: node for phase in report.phases for node in phase.walk()}
    assert nodes["ews.auth"].status == "pass" and nodes["ews.find-item"].status == "skip"
    assert nodes["ews.get-folder"].evidence["error_code"] == code and nodes["ews.get-folder"].remedy
    if code == "ErrorServerBusy":
        assert nodes["ews.get-folder"].evidence["back_off_ms"] == 30000
    document = report.to_json()
    jsonschema.validate(document, SCHEMA)
    assert document["verdict"]["remedy"] and exchange_rows(document)[-1]["Result"] == "Failure"
    assert not credential_violations(org.events(), org.endpoints["hostnames"])
    # the default test does not use EWS: the scenario's own expectation (passes) holds
    assert probe(options_from_endpoints(org.endpoints, "alice", step_timeout=10.0, total_timeout=120.0,
                                        seed=1)).verdict.passed


def test_the_command_line_runs_the_ews_test_in_exchanges_format(mockex_org):
    endpoints, alice = mockex_org.endpoints, endpoint_user(mockex_org.endpoints, "alice")
    result = run_mockex("probe", alice["email"], "--password", alice["password"], "--test", "ews",
                        "--dns", f"{endpoints['dns']['host']}:{endpoints['dns']['port']}",
                        "--ca-file", endpoints["ca_file"], "--port", str(endpoints["https"]["port"]),
                        "--http-port", str(endpoints["http"]["port"]), "--format", "exchange", timeout=90)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "EWS: GetFolder" in result.stdout and "Success" in result.stdout and "RpcProxy" not in result.stdout


# ---- the answers, in process -------------------------------------------------------------------------------------
def request():
    return ews.EwsRequest(ORG, "GetFolder", None)


def failure_of(response: Response) -> StepFailed:
    with pytest.raises(StepFailed) as caught:
        parse_answer(response, "GetFolder")
    return caught.value


def test_answers_are_read_as_the_exchange_codes_they_carry():
    busy = request().server_busy(5000)
    failed = failure_of(Response(busy.status, "Internal Server Error", [], busy.body))
    assert (failed.reason, failed.evidence["error_code"], failed.evidence["back_off_ms"]) == (
        "ews-server-busy", "ErrorServerBusy", 5000)
    moved = request().error("ErrorMailboxMoveInProgress", "The mailbox is being moved.")
    failed = failure_of(Response(200, "OK", [], moved.body))
    assert failed.reason == "ews-mailbox-move-in-progress" and "The mailbox is being moved." in failed.message
    other = request().error("ErrorAccessDenied", "Access is denied.")
    assert failure_of(Response(200, "OK", [], other.body)).reason == "ews-error"
    assert failure_of(Response(503, "Service Unavailable", [], b"<html>down</html>")).reason == "ews-http-error"
    assert failure_of(Response(200, "OK", [], b"<html>a portal</html>")).reason == "ews-malformed-response"
