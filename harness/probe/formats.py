"""The probe's report in Exchange's terms, both made from the JSON report (``Report.to_json()``) so they state the
same facts as ``--json``: Test-OutlookConnectivity's result table (``--format exchange``) and a Remote Connectivity
Analyzer-style HTML page (``--html``) with one collapsible entry per step and the remedy under each failure."""
from __future__ import annotations

import html
import json
from typing import Any, Dict, Iterator, List, Tuple

# Test-OutlookConnectivity -Protocol HTTP's scenarios, and the probe steps each one covers (its DNS, TCP and
# certificate checks happen inside the RPC proxy verification, as the cmdlet's own connection does).
EXCHANGE_SCENARIOS: Tuple[Tuple[str, str, Tuple[str, ...]], ...] = (
    ("Autodiscover: Outlook Provider", "Autodiscover: Outlook Provider request for the mailbox's settings.",
     ("autodiscover",)),
    ("RpcProxy::VerifyRpcProxy", "Connect to the RPC proxy (Outlook Anywhere) and authenticate.",
     ("dns", "port", "certificate", "http-auth", "rpc-proxy")),
    ("NSPI::GetProfileDetails", "Bind to the address book and resolve the mailbox.", ("nspi",)),
    ("RFRI::GetReferral", "Get the address book server referral.", ("referral",)),
    ("Mailbox::Logon", "Connect to the mailbox and log on.", ("mailbox-logon",)),
    ("Mailbox::Inbox", "Open the Inbox, list its contents and read a message.", ("mailbox",)),
)
# The same over MAPI over HTTP (Test-OutlookConnectivity's MAPI/HTTP probe): no RPC proxy or referral; the address
# book is /mapi/nspi, bound right after the Connect.
MAPI_HTTP_SCENARIOS: Tuple[Tuple[str, str, Tuple[str, ...]], ...] = (
    EXCHANGE_SCENARIOS[0],
    ("MapiHttp::Connect", "Connect to the MAPI over HTTP endpoint (/mapi/emsmdb) and authenticate.",
     ("dns", "port", "certificate", "mapi-http")),
    ("NSPI::GetProfileDetails", "Bind to the address book (/mapi/nspi) and resolve the mailbox.", ("nspi",)),
    *EXCHANGE_SCENARIOS[-2:],
)
# Test-WebServicesConnectivity's scenarios for `--test ews` (the same table: its Source column is the CAS too).
EWS_SCENARIOS: Tuple[Tuple[str, str, Tuple[str, ...]], ...] = (
    ("Autodiscover: Outlook Provider", "Autodiscover: Outlook Provider request for the mailbox's settings.",
     ("autodiscover",)),
    ("EWS: GetFolder", "Connect to Exchange Web Services, authenticate and get the Inbox.",
     ("dns", "port", "certificate", "ews-auth", "ews")),
)
COLUMNS = ("ClientAccessServer", "Scenario", "ScenarioDescription", "Result", "Latency(MS)", "Error")
RESULTS = {"pass": "Success", "warn": "Success", "info": "Success", "fail": "Failure", "skip": "Skipped"}


def _walk(node: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    yield node
    for child in node["children"]:
        yield from _walk(child)


def _outermost(node: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    """The nodes of a step with no step above them: a step's own DNS or TCP checks (Autodiscover's) stay in it."""
    if node["step"] is not None:
        yield node
    else:
        for child in node["children"]:
            yield from _outermost(child)


def exchange_rows(data: Dict[str, Any]) -> List[Dict[str, str]]:
    """One row per Test-OutlookConnectivity scenario the probe reached (later ones Skipped after a failure)."""
    verdict = data["verdict"]
    rows: List[Dict[str, str]] = []
    failed = False
    outermost = [node for phase in data["steps"] for node in _outermost(phase)]
    over_mapi = any(phase["id"] == "mapi-http" for phase in data["steps"])
    table = (EWS_SCENARIOS if (data.get("options") or {}).get("test") == "ews"
             else MAPI_HTTP_SCENARIOS if over_mapi else EXCHANGE_SCENARIOS)
    for scenario, description, steps in table:
        nodes = [node for node in outermost if node["step"] in steps]
        ran = [n for n in nodes if n["status"] != "skip"]
        if not verdict["passed"] and any(n["id"] == verdict["step_id"] for node in nodes for n in _walk(node)):
            result, error = "Failure", f"[{verdict['reason']}] {verdict['message']}"
            failed = True
        elif failed or not ran:
            result, error = "Skipped", ""
        else:
            result, error = "Success", ""
        host = next((n["host"] for n in ran + nodes if n.get("host")), None) or ""
        latency = sum(n["elapsed_ms"] for n in ran)
        rows.append({"ClientAccessServer": host, "Scenario": scenario, "ScenarioDescription": description,
                     "Result": result, "Latency(MS)": f"{latency:.2f}" if ran else "", "Error": error})
        if result == "Failure":   # the cmdlet stops at the failed scenario
            break
    return rows


def render_exchange(data: Dict[str, Any]) -> str:
    """The rows as PowerShell's Format-Table prints them: header, dashes, left-aligned text, right-aligned numbers."""
    rows = exchange_rows(data)
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in COLUMNS}

    def line(cells: Dict[str, str]) -> str:
        return " ".join(cells[c].rjust(widths[c]) if c == "Latency(MS)" else cells[c].ljust(widths[c])
                        for c in COLUMNS).rstrip()
    header = line({c: c for c in COLUMNS})
    dashes = line({c: "-" * len(c) for c in COLUMNS})
    return "\n".join(["", header, dashes, *(line(r) for r in rows), ""])


# ---- the Remote Connectivity Analyzer-style page ------------------------------------------------------------------
RCA_STATUS = {"pass": ("Test Step Successful", "✔"), "fail": ("Test Step Failed", "✘"),
              "warn": ("Test Step Successful with Warnings", "!"), "skip": ("Test Step Skipped", "-"),
              "info": ("Information", "i")}
STYLE = """
body{font-family:Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em} .overall{font-size:1.2em;font-weight:600;padding:.5em;border-radius:4px}
.overall.pass{background:#dff0d8} .overall.fail{background:#f2dede}
details{margin:.2em 0 .2em 1.2em;border-left:2px solid #ddd;padding-left:.6em}
summary{cursor:pointer} .pass>summary .icon{color:#2a7d2a} .fail>summary .icon{color:#b00}
.warn>summary .icon{color:#b80} .skip>summary .icon{color:#888}
.remedy{background:#fcf8e3;border:1px solid #faebcc;padding:.4em;margin:.3em 0}
.details{color:#555;font-size:.9em} .details dt{font-weight:600} .details dd{margin:0 0 .2em 1em}
"""


def _test_title(data: Dict[str, Any]) -> str:
    return ("Exchange Web Services Connectivity" if (data.get("options") or {}).get("test") == "ews"
            else "Outlook Connectivity")


def render_html(data: Dict[str, Any]) -> str:
    """The step tree as nested <details>: failures and warnings open, each with its remedy; evidence under
    "Additional Details"."""
    verdict = data["verdict"]
    esc = html.escape
    overall = ("Connectivity Test Successful" if verdict["passed"] else
               f"Connectivity Test Failed at {verdict['fails_at']}"
               + (f" on {verdict['host']}" if verdict.get("host") else "") + f": {verdict['reason']}")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>Connectivity Test Results for {esc(data['email'])}</title>", f"<style>{STYLE}</style>",
             "</head><body>", f"<h1>{esc(_test_title(data))}: {esc(data['email'])}</h1>",
             f'<p class="overall {"pass" if verdict["passed"] else "fail"}" id="verdict">{esc(overall)}</p>',
             f"<p>Test started {esc(data['started'])}; elapsed {data['elapsed_ms'] / 1000:.1f} s.</p>"]

    def emit(node: Dict[str, Any]) -> None:
        label, icon = RCA_STATUS[node["status"]]
        opened = " open" if node["status"] in ("fail", "warn") else ""
        parts.append(f'<details class="{node["status"]}" id="step-{esc(node["id"])}"{opened}>')
        message = f" — {esc(node['message'])}" if node["message"] else ""
        parts.append(f'<summary><span class="icon" title="{label}">{icon}</span> {esc(node["title"])}{message} '
                     f'<small>({node["elapsed_ms"]:.0f} ms)</small></summary>')
        if node["remedy"]:
            parts.append(f'<div class="remedy"><strong>Tell me more about this issue and how to resolve it:</strong> '
                         f'{esc(node["remedy"])} <code>{esc(node["reason"] or "")}</code></div>')
        if node["evidence"]:
            parts.append('<dl class="details"><dt>Additional Details</dt>')
            for key, value in node["evidence"].items():
                text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                parts.append(f"<dd><b>{esc(str(key))}</b>: {esc(text)}</dd>")
            parts.append("</dl>")
        for child in node["children"]:
            emit(child)
        parts.append("</details>")

    for phase in data["steps"]:
        emit(phase)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
