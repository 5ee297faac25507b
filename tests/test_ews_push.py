"""EWS push subscriptions: Subscribe's checks (loopback URLs only), the SendNotification requests and the retry
schedule (sans-IO), the edge's POSTs and timers on a task.Clock with a fake client, and exchangelib (unmodified)
subscribing with a tiny HTTP receiver on 127.0.0.1 that reads a pushed NewMailEvent and answers Unsubscribe."""
from __future__ import annotations

import json
import os
from typing import List, Tuple

from lxml import etree
from twisted.internet import defer, task

from harness.protocols import ews, ews_push, ews_schema
from harness.services.ews_push import PushNotifier
from tests.support import REPO
from tests.support.ews import ALICE, BOB, ORG, envelope, new_store
from tests.support.netns import Check, needs_netns, run_in_netns

M, T = f"{{{ews.MESSAGES_NS}}}", f"{{{ews.TYPES_NS}}}"
PUSH_CLIENT = os.path.join(REPO, "tests", "support", "exchangelib_ews_push.py")


def subscribe(store, url="http://127.0.0.1:8080/push", frequency="1", user=ALICE):
    return ews.respond_ews(ORG, store, user, envelope(
        '<m:Subscribe><m:PushSubscriptionRequest><t:FolderIds><t:DistinguishedFolderId Id="inbox"/></t:FolderIds>'
        '<t:EventTypes><t:EventType>NewMailEvent</t:EventType></t:EventTypes>'
        f'<t:StatusFrequency>{frequency}</t:StatusFrequency><t:URL>{url}</t:URL></m:PushSubscriptionRequest>'
        '</m:Subscribe>'))


def test_subscribe_takes_loopback_urls_only():
    store = new_store()
    for url in ("http://192.0.2.1/push", "https://mail.contoso.test/push", "ftp://127.0.0.1/x", "127.0.0.1",
                "http://localhost/push", "http://[::2]/x"):
        refused = subscribe(store, url)
        assert refused.error_code == "ErrorInvalidPushSubscriptionUrl" and refused.push is None, url
    for frequency in ("0", "1441", "x"):
        assert subscribe(store, frequency=frequency).error_code == "ErrorSchemaValidation"
    for url in ("http://127.0.0.1:8080/push", "https://127.9.9.9/x", "http://[::1]:81/"):
        answer = subscribe(store, url)
        assert answer.outcome == "success" and answer.push.push_url == url, url
    root = etree.fromstring(answer.body)
    assert root.findtext(f".//{M}SubscriptionId") == answer.push.id and root.findtext(f".//{M}Watermark")
    pulled = ews.respond_ews(ORG, store, ALICE, envelope(
        f'<m:GetEvents><m:SubscriptionId>{answer.push.id}</m:SubscriptionId><m:Watermark>'
        f'{root.findtext(f".//{M}Watermark")}</m:Watermark></m:GetEvents>'))
    assert pulled.error_code == "ErrorInvalidPullSubscriptionId"


def test_notification_requests_and_answers():
    store = new_store()
    subscription = subscribe(store).push
    alice = store.mailbox(ALICE)
    quiet, upto, count = ews_push.notification_request(alice, subscription)
    assert count == 0 and upto == alice.events.last and b"<t:StatusEvent>" in quiet
    store.send(store.mailbox(BOB), subject="hello", body="x", to=[("", ALICE)])
    body, upto, count = ews_push.notification_request(alice, subscription)
    root = etree.fromstring(body)
    assert count == 1 and root.find(f".//{M}SendNotification/{M}ResponseMessages/{M}SendNotificationResponseMessage"
                                    f"/{M}Notification/{T}NewMailEvent/{T}Watermark") is not None
    assert root.findtext(f".//{T}SubscriptionId") == subscription.id
    schema = os.environ.get("MOCKEX_VALIDATE_EWS_SCHEMA", "")   # the suite's schema check names it when found
    if schema:
        assert ews_schema.problems(body, schema) == [] and ews_schema.problems(quiet, schema) == []

    def result(status: str) -> bytes:
        return (f'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><SendNotificationResult '
                f'xmlns="{ews.MESSAGES_NS}"><SubscriptionStatus>{status}</SubscriptionStatus></SendNotificationResult>'
                '</s:Body></s:Envelope>').encode()
    assert ews_push.subscription_status(200, result("OK")) == "OK"
    assert ews_push.subscription_status(200, result("Unsubscribe")) == "Unsubscribe"
    assert ews_push.subscription_status(500, result("OK")) is None
    assert ews_push.subscription_status(200, result("Maybe")) is None
    assert ews_push.subscription_status(200, b"<html/>") is None


def test_retries_double_within_status_frequency():
    times, at = [], None
    while True:
        at = ews_push.next_retry_at(at, 30)
        if at is None:
            break
        times.append(at)
    assert times == [30, 60, 120, 240, 480, 960]      # the documented table: 1920 s is past 30 minutes, not sent
    assert ews_push.next_retry_at(None, 1) == 30 and ews_push.next_retry_at(30, 1) == 60
    assert ews_push.next_retry_at(60, 1) is None


class FakePosts:
    """The notifier's HTTP client: records each POST and lets the test answer it."""

    def __init__(self) -> None:
        self.calls: List[Tuple[str, bytes, defer.Deferred]] = []

    def __call__(self, url: str, body: bytes) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.calls.append((url, body, d))
        return d


OK = (200, b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><m:SendNotificationResult '
           b'xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"><m:SubscriptionStatus>OK'
           b'</m:SubscriptionStatus></m:SendNotificationResult></s:Body></s:Envelope>')
UNSUBSCRIBE = (OK[0], OK[1].replace(b">OK<", b">Unsubscribe<"))


def served(frequency="1"):
    clock, store, recorded = task.Clock(), new_store(), []
    notifier = PushNotifier(clock, store, lambda kind, **fields: recorded.append((kind, fields)), ORG.exchange_version,
                            post=FakePosts())
    subscription = subscribe(store, frequency=frequency).push
    notifier.start(subscription)
    return clock, store, notifier, subscription, recorded


def test_events_are_pushed_at_once_and_status_pings_follow_quiet_minutes():
    clock, store, notifier, subscription, recorded = served()
    posts = notifier.post
    store.send(store.mailbox(BOB), subject="one", body="x", to=[("", ALICE)])
    assert posts.calls == []                       # the same reactor turn: one POST for the delivery's events
    clock.advance(0)
    [(url, body, answer)] = posts.calls
    assert url == "http://127.0.0.1:8080/push" and body.count(b"<t:NewMailEvent>") == 1
    store.send(store.mailbox(BOB), subject="two", body="x", to=[("", ALICE)])   # while the POST is out
    clock.advance(0)
    assert len(posts.calls) == 1
    answer.callback(OK)
    assert subscription.position > 0
    clock.advance(0)
    assert len(posts.calls) == 2 and posts.calls[1][1].count(b"<t:NewMailEvent>") == 1   # only the second
    posts.calls[1][2].callback(OK)
    clock.advance(59)
    assert len(posts.calls) == 2
    clock.advance(1)                               # StatusFrequency 1 minute without a POST
    assert len(posts.calls) == 3 and b"<t:StatusEvent>" in posts.calls[2][1]
    posts.calls[2][2].callback(OK)
    assert [(f["state"], f.get("events"), f.get("status")) for k, f in recorded if k == "ews_push"] == [
        ("subscribe", None, None), ("notify", 1, "OK"), ("notify", 1, "OK"), ("notify", 0, "OK")]
    notifier.stop()
    assert not clock.getDelayedCalls() and not notifier.channels


def test_unsubscribe_ends_the_subscription():
    clock, store, notifier, subscription, recorded = served()
    clock.advance(60)
    notifier.post.calls[0][2].callback(UNSUBSCRIBE)
    assert subscription.id not in store.subscriptions.by_id and not notifier.channels
    assert not clock.getDelayedCalls() and recorded[-1][1]["reason"] == "the client answered Unsubscribe"
    store.send(store.mailbox(BOB), subject="late", body="x", to=[("", ALICE)])
    clock.advance(0)
    assert len(notifier.post.calls) == 1


def test_failed_posts_are_retried_then_the_subscription_ends():
    clock, store, notifier, subscription, recorded = served(frequency="4")
    store.send(store.mailbox(BOB), subject="one", body="x", to=[("", ALICE)])
    clock.advance(0)
    notifier.post.calls[0][2].errback(ConnectionRefusedError("refused"))
    for delay in (30, 30, 60, 120):               # at 30, 60, 120, 240 s after the first attempt; 480 > 240 s
        clock.advance(delay - 1)
        attempts = len(notifier.post.calls)
        clock.advance(1)
        assert len(notifier.post.calls) == attempts + 1
        assert notifier.post.calls[-1][1].count(b"<t:NewMailEvent>") == 1     # the same events again
        notifier.post.calls[-1][2].callback((503, b"busy"))
    assert subscription.id not in store.subscriptions.by_id and not clock.getDelayedCalls()
    states = [(f["state"], f.get("delay_s")) for k, f in recorded if k == "ews_push"]
    assert states == [("subscribe", None), ("retry", 30), ("retry", 30), ("retry", 60), ("retry", 120),
                      ("end", None)]
    assert recorded[-1][1]["reason"].startswith("retries exhausted: HTTP 503")


def test_an_unsubscribed_push_subscription_stops_at_its_next_timer():
    clock, store, notifier, subscription, _ = served()
    answer = ews.respond_ews(ORG, store, ALICE, envelope(
        f'<m:Unsubscribe><m:SubscriptionId>{subscription.id}</m:SubscriptionId></m:Unsubscribe>'))
    assert answer.outcome == "success"
    clock.advance(60)
    assert notifier.post.calls == [] and not notifier.channels and not clock.getDelayedCalls()


@needs_netns
def test_exchangelib_receives_a_push_notification_and_unsubscribes(tmp_path):
    out = run_in_netns(str(tmp_path), [([], [
        Check("push", f'"$PY" {PUSH_CLIENT} 127.0.0.1 53 {ALICE} P@ssw0rd-alice {BOB} P@ssw0rd-bob')])])
    results = {}
    for line in out["push"].output.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result.pop("check")] = result
    assert "error" not in results, results.get("error") or out["push"].output
    assert results["elsewhere"]["error"] == "ErrorInvalidPushSubscriptionUrl"
    pushed = results["pushed"]
    assert [kind for kind, _ in pushed["events"]] == ["NewMailEvent"] and pushed["ours"] and pushed["watermark"]
    assert pushed["agent"].startswith("ExchangeServicesClient/15.")
    assert results["after-unsubscribe"]["error"] == "ErrorSubscriptionNotFound"
    states = [(e["state"], e.get("status"), e.get("reason")) for e in out["push"].kind("ews_push")]
    assert states[0][0] == "subscribe" and ("notify", "Unsubscribe", None) in states
    assert states[-1] == ("end", None, "the client answered Unsubscribe")
