"""EWS push notifications (MS-OXWSNTIF), sans-IO: the PushSubscriptionRequest's own fields, the SendNotification
requests the server POSTs to the subscription's URL, the client's SendNotificationResult, and when to retry.

A push subscription names a URL and a StatusFrequency (1-1440 minutes, default 30). The server POSTs a SOAP
SendNotification request - m:SendNotificationResponseMessage with m:Notification: the events since the last
acknowledged one (each with its watermark), or a StatusEvent when nothing happened for StatusFrequency. The client
answers m:SendNotificationResult with SubscriptionStatus OK (go on) or Unsubscribe (the subscription ends). No answer,
or one that is no SendNotificationResult, is retried 30 s, 60 s, 120 s, ... after the first failed attempt (each
retry at twice the time of the last) while that is within StatusFrequency; then the server gives up and the
subscription ends, as the retry table in Exchange's documentation of StatusFrequency shows.

mockex only connects to loopback: a URL that is not http(s) to a literal loopback address (127.0.0.0/8 or ::1) is
refused at Subscribe with ErrorInvalidPushSubscriptionUrl (ews_notify.push_target reads the request's URL and
StatusFrequency). The edge (harness.services.ews_push) does the POSTs and keeps the timers.
"""
from __future__ import annotations

from typing import Optional, Tuple

from lxml import etree

from harness.mailbox import events
from harness.mailbox.store import MailboxContent
from harness.protocols.autodiscover_answer import parse_untrusted_xml, serialize
from harness.protocols.autodiscover_soap import SOAP_NS
from harness.protocols.ews_notify import child_text, event_element
from harness.protocols.ews_xml import MESSAGES_NS, TYPES_NS, m, success_message, t

FIRST_RETRY_SECONDS = 30.0
OK, UNSUBSCRIBE = "OK", "Unsubscribe"


def notification_request(owner: MailboxContent, subscription: events.Subscription) -> Tuple[bytes, int, int]:
    """The SendNotification request to POST now: the events the subscription wants after its position, else a
    StatusEvent. Returns (body, the event number an OK acknowledges, how many events it carries)."""
    log = owner.events
    pending = [e for e in log.since(subscription.position) if subscription.wants(e)]
    envelope = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"soap": SOAP_NS, "t": TYPES_NS, "m": MESSAGES_NS})
    header = etree.SubElement(envelope, f"{{{SOAP_NS}}}Header")
    etree.SubElement(header, t("RequestServerVersion"), Version="Exchange2013_SP1")
    body = etree.SubElement(envelope, f"{{{SOAP_NS}}}Body")
    messages = etree.SubElement(etree.SubElement(body, m("SendNotification")), m("ResponseMessages"))
    notification = etree.SubElement(success_message(messages, "SendNotification"), m("Notification"))
    etree.SubElement(notification, t("SubscriptionId")).text = subscription.id
    etree.SubElement(notification, t("PreviousWatermark")).text = events.encode_watermark(owner.guid,
                                                                                        subscription.position)
    etree.SubElement(notification, t("MoreEvents")).text = "false"
    for event in pending:
        event_element(notification, event, events.encode_watermark(owner.guid, event.number))
    if not pending:
        status = etree.SubElement(notification, t("StatusEvent"))
        etree.SubElement(status, t("Watermark")).text = events.encode_watermark(owner.guid, log.last)
    return serialize(envelope), log.last, len(pending)


def subscription_status(status: int, body: bytes) -> Optional[str]:
    """OK or Unsubscribe from the client's answer; None when it is no SendNotificationResult (a retry)."""
    if status != 200:
        return None
    root = parse_untrusted_xml(body)
    if root is None:
        return None
    result = root.find(f".//{m('SendNotificationResult')}")
    value = (child_text(result, "SubscriptionStatus") or "").strip() if result is not None else ""
    return value if value in (OK, UNSUBSCRIBE) else None


def next_retry_at(previous: Optional[float], status_frequency: int) -> Optional[float]:
    """When the next attempt goes, in seconds after the first failed one: 30, then twice the last (60, 120, ...),
    as the retry table of Exchange's StatusFrequency documentation; None once that is past StatusFrequency (the
    server gives up)."""
    at = FIRST_RETRY_SECONDS if previous is None else previous * 2
    return at if at <= status_frequency * 60 else None
