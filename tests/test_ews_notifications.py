"""EWS notifications and impersonation: the store's event log (sans-IO), Subscribe/GetEvents/GetStreamingEvents/
Unsubscribe and the ExchangeImpersonation header in process, and exchangelib (unmodified, its own discovery) pulling,
streaming and impersonating against the served mock."""
from __future__ import annotations

import datetime as dt
import os
import shutil

import pytest
from lxml import etree

from harness.mailbox import events
from harness.org import load_org
from harness.protocols import ews
from harness.yamlfile import SpecError
from tests.support import REPO
from tests.support.ews import ALICE, BOB, ORG, SOAP, envelope, new_store
from tests.support.ews import results_of as client_results
from tests.support.netns import Check, needs_netns, run_in_netns

M, T = f"{{{ews.MESSAGES_NS}}}", f"{{{ews.TYPES_NS}}}"
CLIENT = os.path.join(REPO, "tests", "support", "exchangelib_ews_notify.py")


def test_the_event_log_records_delivery_moves_changes_and_deletes_in_order():
    store = new_store()
    alice, bob = store.mailbox(ALICE), store.mailbox(BOB)
    start = alice.events.last
    _, [delivered] = store.send(bob, subject="hi", body="x", to=[("", ALICE)])
    store.set_read(delivered, True)
    moved = store.move(delivered, alice.distinguished["junkemail"])
    store.delete(moved, hard=True)
    log = alice.events.after(start)
    assert [e.kind for e in log] == ["NewMailEvent", "CreatedEvent", "ModifiedEvent", "MovedEvent", "DeletedEvent"]
    assert log[0].item[0] == delivered.id and log[0].folder[0] == alice.distinguished["inbox"].id
    assert log[3].item[0] == moved.id and log[3].old_item[0] == delivered.id
    assert log[3].old_folder_key == alice.distinguished["inbox"].key
    assert [e.number for e in log] == list(range(start + 1, start + 6))


def test_the_event_log_is_bounded_and_refuses_watermarks_it_no_longer_covers():
    log = events.EventLog(limit=3)
    store = new_store()
    item = next(iter(store.mailbox(ALICE).distinguished["inbox"].items.values()))
    for _ in range(5):
        log.record(events.MODIFIED, store.clock(), item)
    assert len(log.events) == 3 and [e.number for e in log.after(2)] == [3, 4, 5]
    with pytest.raises(events.InvalidWatermark):
        log.after(1)
    with pytest.raises(events.InvalidWatermark):
        log.after(6)
    guid = store.mailbox(ALICE).guid
    assert events.decode_watermark(guid, events.encode_watermark(guid, 4)) == 4
    with pytest.raises(events.InvalidWatermark):
        events.decode_watermark(store.mailbox(BOB).guid, events.encode_watermark(guid, 4))


def pull_subscribe(folders: str = '<t:DistinguishedFolderId Id="inbox"/>', timeout: int = 10,
                   types=("NewMailEvent", "CreatedEvent", "MovedEvent", "DeletedEvent", "ModifiedEvent")) -> bytes:
    kinds = "".join(f"<t:EventType>{k}</t:EventType>" for k in types)
    return envelope(f"<m:Subscribe><m:PullSubscriptionRequest><t:FolderIds>{folders}</t:FolderIds><t:EventTypes>"
                    f"{kinds}</t:EventTypes><t:Timeout>{timeout}</t:Timeout></m:PullSubscriptionRequest>"
                    "</m:Subscribe>")


def answer_of(store, body: bytes, who: str = ALICE):
    answer = ews.respond_ews(ORG, store, who, body)
    return answer, etree.fromstring(answer.body) if answer.body else None


def get_events(subscription: str, watermark: str) -> bytes:
    return envelope(f"<m:GetEvents><m:SubscriptionId>{subscription}</m:SubscriptionId><m:Watermark>{watermark}"
                    "</m:Watermark></m:GetEvents>")


def test_a_pull_subscription_sees_new_mail_in_its_folder_only_and_a_status_event_otherwise():
    store = new_store()
    alice, bob = store.mailbox(ALICE), store.mailbox(BOB)
    answer, root = answer_of(store, pull_subscribe())
    assert answer.outcome == "success", answer.body
    subscription, watermark = root.findtext(f".//{M}SubscriptionId"), root.findtext(f".//{M}Watermark")
    _, root = answer_of(store, get_events(subscription, watermark))
    notification = root.find(f".//{M}Notification")
    assert [etree.QName(e).localname for e in notification] == ["SubscriptionId", "PreviousWatermark", "MoreEvents",
                                                                "StatusEvent"]
    _, [delivered] = store.send(bob, subject="hi", body="x", to=[("", ALICE)])
    store.move(next(iter(alice.distinguished["drafts"].items.values()), delivered), alice.distinguished["junkemail"])
    store.save(alice, alice.distinguished["drafts"], subject="draft", body="")       # not a watched folder
    status = notification.findtext(f"{T}StatusEvent/{T}Watermark")
    _, root = answer_of(store, get_events(subscription, status))
    notification = root.find(f".//{M}Notification")
    found = [(etree.QName(e).localname, e.find(f"{T}ItemId").get("Id") if e.find(f"{T}ItemId") is not None else None)
             for e in notification if etree.QName(e).localname.endswith("Event")]
    assert [kind for kind, _ in found] == ["NewMailEvent", "CreatedEvent", "MovedEvent"]
    assert found[0][1] == delivered.id
    moved = notification.find(f"{T}MovedEvent")
    assert moved.find(f"{T}OldItemId").get("Id") == delivered.id
    assert moved.find(f"{T}OldParentFolderId").get("Id") == alice.distinguished["inbox"].id
    last = moved.findtext(f"{T}Watermark")
    _, root = answer_of(store, get_events(subscription, last))
    assert root.find(f".//{M}Notification/{T}StatusEvent") is not None


def test_get_events_pages_with_more_events_and_unsubscribe_ends_the_subscription():
    store = new_store()
    bob = store.mailbox(BOB)
    _, root = answer_of(store, pull_subscribe(types=("NewMailEvent",)))
    subscription, watermark = root.findtext(f".//{M}SubscriptionId"), root.findtext(f".//{M}Watermark")
    for index in range(60):
        store.send(bob, subject=f"m{index}", body="x", to=[("", ALICE)])
    _, root = answer_of(store, get_events(subscription, watermark))
    notification = root.find(f".//{M}Notification")
    assert notification.findtext(f"{T}MoreEvents") == "true"
    assert len(notification.findall(f"{T}NewMailEvent")) == 50
    _, root = answer_of(store, get_events(subscription, notification.findall(f"{T}NewMailEvent")[-1].findtext(
        f"{T}Watermark")))
    assert len(root.findall(f".//{T}NewMailEvent")) == 10
    assert root.findtext(f".//{T}MoreEvents") == "false"
    other, _ = answer_of(store, get_events(subscription, watermark), who=BOB)
    assert other.error_code == "ErrorSubscriptionAccessDenied"
    unsubscribe = envelope(f"<m:Unsubscribe><m:SubscriptionId>{subscription}</m:SubscriptionId></m:Unsubscribe>")
    assert answer_of(store, unsubscribe)[0].outcome == "success"
    assert answer_of(store, get_events(subscription, watermark))[0].error_code == "ErrorSubscriptionNotFound"
    assert answer_of(store, get_events("AAAA", watermark))[0].error_code == "ErrorSubscriptionNotFound"


def test_subscribe_refuses_bad_requests_as_exchange_does():
    store = new_store()
    assert answer_of(store, pull_subscribe(timeout=0))[0].error_code == "ErrorSchemaValidation"
    assert answer_of(store, pull_subscribe(types=("NoSuchEvent",)))[0].error_code == "ErrorSchemaValidation"
    assert answer_of(store, pull_subscribe(folders='<t:FolderId Id="AAMkAAAA"/>'))[0].error_code == \
        "ErrorInvalidIdMalformed"
    _, root = answer_of(store, pull_subscribe())
    bad = get_events(root.findtext(f".//{M}SubscriptionId"), "bm90IGEgd2F0ZXJtYXJr")
    assert answer_of(store, bad)[0].error_code == "ErrorInvalidWatermark"
    for _ in range(events.MAX_SUBSCRIPTIONS - 1):
        assert answer_of(store, pull_subscribe())[0].outcome == "success"
    assert answer_of(store, pull_subscribe())[0].error_code == "ErrorExceededSubscriptionCount"


def streaming(subscription: str, minutes: int = 1) -> bytes:
    return envelope(f"<m:GetStreamingEvents><m:SubscriptionIds><t:SubscriptionId>{subscription}</t:SubscriptionId>"
                    f"</m:SubscriptionIds><m:ConnectionTimeout>{minutes}</m:ConnectionTimeout></m:GetStreamingEvents>")


def test_get_streaming_events_opens_with_connection_status_ok_and_the_events_already_waiting():
    store = new_store()
    bob = store.mailbox(BOB)
    _, root = answer_of(store, envelope(
        '<m:Subscribe><m:StreamingSubscriptionRequest SubscribeToAllFolders="true"><t:EventTypes>'
        "<t:EventType>NewMailEvent</t:EventType></t:EventTypes></m:StreamingSubscriptionRequest></m:Subscribe>"))
    subscription = root.findtext(f".//{M}SubscriptionId")
    assert root.find(f".//{M}Watermark") is None
    _, [delivered] = store.send(bob, subject="hi", body="x", to=[("", ALICE)])
    answer = ews.respond_ews(ORG, store, ALICE, streaming(subscription, 7))
    assert answer.status == 200 and answer.body == b"" and len(answer.chunks) == 2
    documents = [etree.fromstring(chunk) for chunk in answer.chunks]
    assert all(etree.QName(d).namespace == SOAP for d in documents)
    assert [d.findtext(f".//{M}ConnectionStatus") for d in documents] == ["OK", None]
    event = documents[1].find(f".//{M}Notifications/{T}Notification/{T}NewMailEvent")
    assert event.find(f"{T}ItemId").get("Id") == delivered.id
    assert answer.stream.timeout_seconds == 7 * 60       # the edge holds the connection that long
    closing = [etree.fromstring(c) for c in answer.stream.closing()]
    assert [d.findtext(f".//{M}ConnectionStatus") for d in closing] == ["Closed"]
    again = ews.respond_ews(ORG, store, ALICE, streaming(subscription))
    assert [etree.fromstring(c).findtext(f".//{M}ConnectionStatus") for c in again.chunks] == ["OK"]
    assert ews.respond_ews(ORG, store, ALICE, streaming(subscription, 31)).error_code == "ErrorSchemaValidation"
    _, root = answer_of(store, pull_subscribe())
    pull = root.findtext(f".//{M}SubscriptionId")
    refused = ews.respond_ews(ORG, store, ALICE, streaming(pull))
    assert refused.error_code == "ErrorInvalidSubscription" and refused.stream is None
    assert answer_of(store, get_events(subscription, "x"))[0].error_code == "ErrorInvalidPullSubscriptionId"


def impersonating(who: str) -> bytes:
    return (f'<s:Envelope xmlns:s="{SOAP}" xmlns:m="{ews.MESSAGES_NS}" xmlns:t="{ews.TYPES_NS}"><s:Header>'
            '<t:RequestServerVersion Version="Exchange2013_SP1"/><t:ExchangeImpersonation><t:ConnectingSID>'
            f"<t:PrimarySmtpAddress>{who}</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>"
            '</s:Header><s:Body><m:GetFolder><m:FolderShape><t:BaseShape>AllProperties</t:BaseShape></m:FolderShape>'
            '<m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder></s:Body></s:Envelope>'
            ).encode()


def org_granting(tmp_path, grant: str) -> str:
    """The built-in org with bob granted impersonation (`grant`: the YAML list)."""
    target = tmp_path / "org"
    shutil.copytree(os.path.dirname(ORG.source), target)
    text = (target / "org.yaml").read_text()
    marker = "    email: bob@contoso.test\n"
    assert marker in text
    (target / "org.yaml").write_text(text.replace(marker, marker + f"    impersonates: {grant}\n"))
    return str(target)


def test_impersonation_acts_on_the_granted_mailbox_and_is_refused_otherwise(tmp_path):
    org = load_org(org_granting(tmp_path, "[alice@contoso.test]"))
    store = new_store()
    allowed = ews.respond_ews(org, store, BOB, impersonating(ALICE))
    folder = etree.fromstring(allowed.body).find(f".//{T}Folder/{T}FolderId")
    assert allowed.outcome == "success" and folder.get("Id") == store.mailbox(ALICE).distinguished["inbox"].id
    denied = ews.respond_ews(org, store, BOB, impersonating("carol@contoso.test"))
    assert (denied.status, denied.error_code) == (500, "ErrorImpersonateUserDenied")
    assert b"The account does not have permission to impersonate the requested user." in denied.body
    unknown = ews.respond_ews(org, store, BOB, impersonating("nobody@contoso.test"))
    assert (unknown.status, unknown.error_code) == (500, "ErrorNonExistentMailbox")
    nobody_granted = ews.respond_ews(ORG, store, BOB, impersonating(ALICE))
    assert nobody_granted.error_code == "ErrorImpersonateUserDenied"
    everyone = load_org(org_granting(tmp_path / "all", '["*"]'))
    assert ews.respond_ews(everyone, store, BOB, impersonating("carol@contoso.test")).outcome == "success"


def test_an_impersonation_grant_of_an_unknown_mailbox_is_a_file_line_error(tmp_path):
    path = org_granting(tmp_path, "[alcie@contoso.test]")
    with pytest.raises(SpecError) as error:
        load_org(path)
    text = str(error.value)
    assert "org.yaml:" in text and "impersonates" in text and "did you mean 'alice@contoso.test'" in text


def results_of(output: str) -> dict:
    results = client_results(output)
    assert "error" not in results, results.get("error")
    return results


@needs_netns
def test_exchangelib_pulls_and_streams_the_message_a_colleague_sends(tmp_path):
    out = run_in_netns(str(tmp_path), [([], [
        Check("notify", f'"$PY" {CLIENT} 127.0.0.1 53 {ALICE} P@ssw0rd-alice notify {BOB} P@ssw0rd-bob')])])
    results = results_of(out["notify"].output)
    assert results["quiet"]["events"] == [] and results["quiet"]["watermark_moves"]
    pulled = results["pulled"]
    assert pulled["subject"] == "notify me"
    assert pulled["events"] == [["NewMailEvent", pulled["newest_id"]], ["CreatedEvent", pulled["newest_id"]]]
    assert results["streamed"]["events"] == [["NewMailEvent", pulled["newest_id"]]]
    assert results["after-unsubscribe"]["error"] == "ErrorSubscriptionNotFound"
    details = [e["detail"] for e in out["notify"].kind("ews")]
    for operation in ("Subscribe", "GetEvents", "GetStreamingEvents", "Unsubscribe"):
        assert f"EWS {operation}" in details


@needs_netns
def test_exchangelib_impersonates_a_granted_mailbox_and_is_denied_another(tmp_path):
    org = org_granting(tmp_path, "[alice@contoso.test]")
    out = run_in_netns(str(tmp_path), [(["--org", org], [
        Check("allowed", f'"$PY" {CLIENT} 127.0.0.1 53 {BOB} P@ssw0rd-bob impersonate {ALICE}'),
        Check("denied", f'"$PY" {CLIENT} 127.0.0.1 53 {BOB} P@ssw0rd-bob impersonate carol@contoso.test')])])
    allowed = results_of(out["allowed"].output)["impersonated"]
    assert allowed.get("subjects") == ["Lunch on Thursday?", "Quarterly planning", "Welcome to Contoso"], allowed
    denied = results_of(out["denied"].output)["impersonated"]
    assert denied["error"] == "ErrorImpersonateUserDenied", denied
    faults = [e for e in out["denied"].kind("ews") if e["error_code"] == "ErrorImpersonateUserDenied"]
    assert faults and all(e["mailbox"] == BOB for e in faults)


def test_a_pull_subscription_not_read_for_its_timeout_expires():
    store = new_store()
    _, root = answer_of(store, pull_subscribe(timeout=5))
    subscription, watermark = root.findtext(f".//{M}SubscriptionId"), root.findtext(f".//{M}Watermark")
    start = store.clock()
    store.clock = lambda: start + dt.timedelta(minutes=5)
    assert answer_of(store, get_events(subscription, watermark))[0].outcome == "success"   # read: timer restarts
    store.clock = lambda: start + dt.timedelta(minutes=10, seconds=1)
    assert answer_of(store, get_events(subscription, watermark))[0].error_code == "ErrorExpiredSubscription"
    assert answer_of(store, get_events(subscription, watermark))[0].error_code == "ErrorSubscriptionNotFound"
