"""`mockex probe --format exchange` and `--html`: Test-OutlookConnectivity's result table and a Remote Connectivity
Analyzer-style page, both made from the JSON report, for the clean org and two failing scenarios (one a fault, one
a setting changed by the scenario's config)."""
from __future__ import annotations

import json

import lxml.html
import pytest

from harness.probe.expectation import options_for_expectation
from harness.probe.formats import COLUMNS, EXCHANGE_SCENARIOS, exchange_rows, render_exchange, render_html
from harness.probe.runner import probe
from tests.support.clients import run_mockex

CASES = {   # scenario -> (the Test-OutlookConnectivity scenario that fails, the reason in its Error)
    None: (None, None),
    "oa-iis-basic-only": ("RpcProxy::VerifyRpcProxy", "auth-method-mismatch"),
    "mailbox-login-failure": ("Mailbox::Logon", None),
}


@pytest.fixture(params=list(CASES), ids=lambda s: s or "clean-org")
def probed(request, mockex_orgs):
    scenario = request.param
    org = mockex_orgs(*([scenario] if scenario else []))
    report = probe(options_for_expectation(org.endpoints, {}))
    return scenario, org, json.loads(json.dumps(report.to_json()))   # exactly what --json prints


def test_exchange_table_names_the_failed_scenario_and_stops_there(probed):
    scenario, _, data = probed
    failing, reason = CASES[scenario]
    rows = exchange_rows(data)
    text = render_exchange(data)
    header, dashes = text.splitlines()[1:3]
    assert header.split() == list(COLUMNS) and set(dashes.replace(" ", "")) == {"-"}
    names = [row["Scenario"] for row in rows]
    assert names == [name for name, _, _ in EXCHANGE_SCENARIOS][:len(names)]
    if failing is None:
        assert data["verdict"]["passed"] and len(rows) == len(EXCHANGE_SCENARIOS)
        assert {row["Result"] for row in rows} == {"Success"} and "Failure" not in text
    else:
        assert rows[-1]["Scenario"] == failing and rows[-1]["Result"] == "Failure"
        assert {row["Result"] for row in rows[:-1]} == {"Success"}
        assert rows[-1]["Error"] == f"[{data['verdict']['reason']}] {data['verdict']['message']}"
        assert reason is None or data["verdict"]["reason"] == reason
        assert rows[-1]["Error"] in text
    for row in rows:   # every row's text is in the printed table, latencies are numbers
        assert row["Scenario"] in text and float(row["Latency(MS)"]) >= 0


def test_html_report_has_every_step_and_the_remedies_of_the_json(probed):
    _, org, data = probed
    page = lxml.html.fromstring(render_html(data))
    nodes = []
    stack = list(data["steps"])
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node["children"])
    for node in nodes:
        found = page.get_element_by_id(f"step-{node['id']}")
        assert found.tag == "details" and node["status"] in found.get("class").split()
        assert node["title"] in found.find("summary").text_content()
        remedies = [d.text_content() for d in found.findall("div") if d.get("class") == "remedy"]
        assert remedies == ([f"Tell me more about this issue and how to resolve it: {node['remedy']} "
                             f"{node['reason']}"] if node["remedy"] else [])
        assert (found.get("open") is not None) == (node["status"] in ("fail", "warn"))
    verdict = page.get_element_by_id("verdict").text_content()
    assert ("Successful" in verdict) == data["verdict"]["passed"]
    if not data["verdict"]["passed"]:
        assert data["verdict"]["reason"] in verdict
    passwords = [user["password"] for user in org.endpoints["users"]]
    assert not any(p in render_html(data) for p in passwords)


def test_cli_writes_the_table_and_the_page_from_one_run(tmp_path, mockex_orgs):
    org = mockex_orgs("oa-iis-basic-only")
    endpoints = tmp_path / "endpoints.json"
    endpoints.write_text(json.dumps(org.endpoints))
    dns = f"{org.endpoints['dns']['host']}:{org.endpoints['dns']['port']}"
    page = tmp_path / "report.html"
    result = run_mockex("probe", "alice@contoso.test", "--endpoints", str(endpoints), "--dns", dns,
                        "--format", "exchange", "--html", str(page), "--timeout", "5", "--total-timeout", "60",
                        timeout=90)
    assert result.returncode == 1, result.stderr
    assert "RpcProxy::VerifyRpcProxy" in result.stdout and "Failure" in result.stdout
    assert "[auth-method-mismatch]" in result.stdout
    tree = lxml.html.fromstring(page.read_text())
    assert "auth-method-mismatch" in tree.get_element_by_id("verdict").text_content()
    clash = run_mockex("probe", "alice@contoso.test", "--json", "--format", "exchange", "--password", "x")
    assert clash.returncode == 2 and "two outputs" in clash.stderr
