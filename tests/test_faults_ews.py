"""EWS faults: their answers in-process (SOAP fault with BackOffMilliseconds, per-operation errors, scoping by operation
and count), and exchangelib observing each one against a real `mockex serve`, with the `backoff` conduct rule reading
the transcript's back_off_ms."""
from __future__ import annotations

from lxml import etree

from harness import conduct
from harness.faults.ews import (
    ConnectionCountExceeded,
    MailboxMoveInProgress,
    MailboxStoreUnavailable,
    ServerBusy,
    TimeoutExpired,
)
from harness.hooks import FaultSet, Scope
from harness.protocols import ews
from harness.scenario import load_scenario
from tests.support import REPO
from tests.support.ews import ALICE, BOB, CLIENT, ORG, SOAP, envelope, new_store, results_of
from tests.support.netns import Check, needs_netns, run_in_netns

ERRORS = "http://schemas.microsoft.com/exchange/services/2006/errors"
FIND_INBOX = envelope('<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>'
                      '<m:ParentFolderIds><t:DistinguishedFolderId Id="inbox"/></m:ParentFolderIds></m:FindItem>')
GET_INBOX = envelope('<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds>'
                     '<t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder>')


def ask(faults: FaultSet, body: bytes, user: str = ALICE):
    parsed = ews.parse_ews(ORG, body)
    assert isinstance(parsed, ews.EwsRequest)
    return faults.first(ews.ews_hook, Scope("mail.contoso.test", user), parsed)


def test_server_busy_is_the_soap_fault_exchange_throttling_sends():
    answer = ask(FaultSet([ServerBusy(back_off_ms=4321)]), FIND_INBOX)
    assert (answer.status, answer.outcome, answer.error_code, answer.back_off_ms) == (500, "fault", "ErrorServerBusy",
                                                                                      4321)
    fault = etree.fromstring(answer.body).find(f"{{{SOAP}}}Body/{{{SOAP}}}Fault")
    assert fault.findtext("faultcode") == "a:ErrorServerBusy"
    assert fault.find("faultcode").nsmap["a"] == ews.TYPES_NS
    assert fault.findtext(f"detail/{{{ERRORS}}}ResponseCode") == "ErrorServerBusy"
    value = fault.find(f"detail/{{{ews.TYPES_NS}}}MessageXml/{{{ews.TYPES_NS}}}Value")
    assert (value.get("Name"), value.text) == ("BackOffMilliseconds", "4321")
    assert b"mock" not in answer.body.lower() and b"fault" not in fault.findtext("faultstring").encode().lower()


def test_operations_and_times_limit_a_fault():
    busy = ServerBusy(back_off_ms=10, operations=["FindItem"], times=2)
    faults = FaultSet([busy])
    assert ask(faults, GET_INBOX) is None
    assert [ask(faults, FIND_INBOX) is not None for _ in range(3)] == [True, True, False]


def test_store_failures_are_error_response_messages_and_scoped_by_user():
    faults = FaultSet([MailboxStoreUnavailable(user=ALICE), MailboxMoveInProgress(user=BOB)])
    for user, code in ((ALICE, "ErrorMailboxStoreUnavailable"), (BOB, "ErrorMailboxMoveInProgress")):
        answer = ask(faults, FIND_INBOX, user)
        assert (answer.status, answer.outcome, answer.error_code) == (200, "error", code)
        message = etree.fromstring(answer.body).find(f".//{{{ews.MESSAGES_NS}}}FindItemResponseMessage")
        assert message.get("ResponseClass") == "Error"
        assert message.findtext(f"{{{ews.MESSAGES_NS}}}ResponseCode") == code
    assert ask(faults, FIND_INBOX, "carol@contoso.test") is None


def test_connection_count_and_timeout_are_error_messages_naming_the_policy():
    answer = ask(FaultSet([ConnectionCountExceeded(limit=5)]), FIND_INBOX)
    assert (answer.status, answer.outcome, answer.error_code) == (200, "error", "ErrorExceededConnectionCount")
    message = etree.fromstring(answer.body).find(f".//{{{ews.MESSAGES_NS}}}FindItemResponseMessage")
    assert message.get("ResponseClass") == "Error"
    assert [etree.QName(e).localname for e in message] == ["MessageText", "ResponseCode", "DescriptiveLinkKey",
                                                           "MessageXml"]
    values = {v.get("Name"): v.text for v in message.iter(f"{{{ews.TYPES_NS}}}Value")}
    assert values == {"Policy": "MaxConcurrency", "MaxConcurrencyLimit": "5"}
    assert message.findtext(f"{{{ews.MESSAGES_NS}}}MessageText").startswith("You have exceeded the available")
    timeout = FaultSet([TimeoutExpired(operations=["FindItem"])])
    assert ask(timeout, GET_INBOX) is None
    answer = ask(timeout, FIND_INBOX)
    assert (answer.status, answer.outcome, answer.error_code) == (200, "error", "ErrorTimeoutExpired")


def test_an_unfaulted_request_still_runs():
    assert ews.respond_ews(ORG, new_store(), ALICE, FIND_INBOX).outcome == "success"


def test_the_builtin_scenarios_load():
    for name, fault in (("ews-throttled", "ews.server-busy"),
                        ("ews-mailbox-store-unavailable", "ews.mailbox-store-unavailable"),
                        ("ews-mailbox-move-in-progress", "ews.mailbox-move-in-progress"),
                        ("ews-connection-count-exceeded", "ews.connection-count-exceeded"),
                        ("ews-timeout-expired", "ews.timeout-expired")):
        scenario = load_scenario(f"{REPO}/scenarios/{name}.yaml")
        assert [f.name for f in scenario.faults] == [fault] and scenario.expect["analyzer"] == {"passes": True}


def scenario_file(tmp_path, name: str, faults: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ndescription: test\nfaults:\n{faults}expect:\n  analyzer: {{passes: true}}\n")
    return str(path)


@needs_netns
def test_exchangelib_observes_each_ews_fault(tmp_path):
    """ews-throttled as shipped: FailFast raises ErrorServerBusy with back_off 30 s, FaultTolerance(max_wait=5) gives
    up at once (RateLimitError, wait 30 s) instead of retrying early. A one-shot 1.5 s throttle: FaultTolerance waits
    it out and lists the Inbox, and the conduct rule finds the retry late enough. Store faults raise their codes."""
    once = scenario_file(tmp_path, "once", "  - ews.server-busy: {back_off_ms: 1500, operations: [FindItem], "
                                           "times: 1}\n")
    store = scenario_file(tmp_path, "store", f"  - ews.mailbox-store-unavailable: {{user: {ALICE}, operations: "
                                             f"[FindItem]}}\n  - ews.mailbox-move-in-progress: {{user: {BOB}, "
                                             "operations: [FindItem]}\n")
    client = f'"$PY" {CLIENT} 127.0.0.1 53'
    out = run_in_netns(str(tmp_path), [
        (["--scenario", "ews-throttled"], [Check("failfast", f"{client} {ALICE} P@ssw0rd-alice throttled failfast"),
                                           Check("patient", f"{client} {ALICE} P@ssw0rd-alice throttled tolerant 5")]),
        (["--scenario", once], [Check("once", f"{client} {ALICE} P@ssw0rd-alice throttled tolerant 60")]),
        (["--scenario", store], [Check("alice", f"{client} {ALICE} P@ssw0rd-alice throttled failfast"),
                                 Check("bob", f"{client} {BOB} P@ssw0rd-bob throttled failfast")]),
    ])
    failfast, patient = results_of(out["failfast"].output), results_of(out["patient"].output)
    assert failfast["raised"] == {"error": "ErrorServerBusy", "back_off": 30.0, "wait": None}, out["failfast"].output
    assert patient["raised"]["error"] == "RateLimitError" and patient["raised"]["wait"] == 30.0
    busy = [e for e in out["failfast"].kind("ews") if e["error_code"] == "ErrorServerBusy"]
    assert busy and all(e["back_off_ms"] == 30000 and e["outcome"] == "fault" for e in busy)

    once = results_of(out["once"].output)
    assert once["listed"]["subjects"] == ["Lunch on Thursday?", "Quarterly planning", "Welcome to Contoso"]
    events = out["once"].events
    finds = [e for e in events if e["kind"] == "ews" and e["detail"] == "EWS FindItem"]
    assert [(e["error_code"], e.get("back_off_ms")) for e in finds] == [("ErrorServerBusy", 1500), ("", None)]
    org = conduct.namespace("contoso.test", ["autodiscover.contoso.test", "mail.contoso.test"])
    assert conduct.backoff(events, org) == []
    # The rule reads this event: the same transcript with the retry moved 0.1 s after the busy answer is caught.
    hurried = [dict(e, time=finds[0]["time"] + 0.1) if e["seq"] > finds[0]["seq"] else e for e in events]
    assert [v.rule for v in conduct.backoff(hurried, org)] == ["backoff"]

    assert results_of(out["alice"].output)["raised"]["error"] == "ErrorMailboxStoreUnavailable"
    assert results_of(out["bob"].output)["raised"]["error"] == "ErrorMailboxMoveInProgress"


@needs_netns
def test_exchangelib_observes_connection_count_and_timeout_faults(tmp_path):
    """The shipped scenarios: exchangelib (one session) cannot shrink its pool further and raises each error; the
    transcript records the refused FindItem. Once the one-shot fault is spent, the next listing works."""
    once = scenario_file(tmp_path, "once", "  - ews.timeout-expired: {operations: [FindItem], times: 1}\n")
    client = f'"$PY" {CLIENT} 127.0.0.1 53 {ALICE} P@ssw0rd-alice throttled failfast'
    out = run_in_netns(str(tmp_path), [
        (["--scenario", "ews-connection-count-exceeded"], [Check("count", client)]),
        (["--scenario", "ews-timeout-expired"], [Check("timeout", client)]),
        (["--scenario", once], [Check("once", client), Check("again", client)]),
    ])
    assert results_of(out["count"].output)["raised"]["error"] == "ErrorExceededConnectionCount", out["count"].output
    assert results_of(out["timeout"].output)["raised"]["error"] == "ErrorTimeoutExpired", out["timeout"].output
    refused = [e for e in out["count"].kind("ews") if e["error_code"] == "ErrorExceededConnectionCount"]
    assert refused and all(e["outcome"] == "error" for e in refused)
    assert results_of(out["once"].output)["raised"]["error"] == "ErrorTimeoutExpired"
    assert results_of(out["again"].output)["listed"]["subjects"] == ["Lunch on Thursday?", "Quarterly planning",
                                                                     "Welcome to Contoso"]
