"""EWS notifications over the store's event log (harness.mailbox.events), sans-IO: Subscribe (pull, streaming and
push: harness.protocols.ews_push has push's notifications; Subscribe only takes loopback push URLs),
GetEvents, GetStreamingEvents and Unsubscribe, answering as Exchange 2013 SP1.

A pull subscription reads with GetEvents from a watermark: up to MAX_EVENTS_PER_GET events with MoreEvents, or a
StatusEvent carrying the current watermark when nothing happened. GetStreamingEvents holds its connection open for the
requested ConnectionTimeout, as Exchange does: the answer is chunked, one SOAP envelope a chunk - ConnectionStatus OK
at once (with the events already waiting in a second envelope), then a notification envelope as events happen in the
subscribed folders, a ConnectionStatus OK keep-alive after KEEP_ALIVE_SECONDS without any other envelope, and
ConnectionStatus Closed when the timeout elapses. NotificationStream says what to send; the I/O edge
(harness.services.ews_stream) says when.
"""
from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from lxml import etree

from harness.mailbox import events
from harness.mailbox.store import MailboxContent, MailboxStore
from harness.protocols.ews_ops import Call, folder_of
from harness.protocols.ews_xml import EwsError, EwsFault, m, schema_error, success_message, t, timestamp

MAX_EVENTS_PER_GET = 50
PULL_TIMEOUT_MINUTES = (1, 1440)       # the schema's SubscriptionTimeoutType
STREAMING_TIMEOUT_MINUTES = (1, 30)    # GetStreamingEvents' ConnectionTimeout
# The keep-alive rhythm: the spec names none; the EWS Managed API expects a heartbeat within 45 s
# (GetStreamingEventsRequest.HeartbeatFrequencyDefault) and gives up after twice that, so Exchange's comes within it.
KEEP_ALIVE_SECONDS = 45.0

STATUS_FREQUENCY_MINUTES = (1, 1440)   # push: the schema's SubscriptionStatusFrequencyType
DEFAULT_STATUS_FREQUENCY = 30
INVALID_URL = ("ErrorInvalidPushSubscriptionUrl", "The push subscription URL is invalid.")     # text guessed
NOT_FOUND = ("ErrorSubscriptionNotFound", "The specified subscription was not found.")
ACCESS_DENIED = ("ErrorSubscriptionAccessDenied", "You don't have permission to access this subscription.")
EXPIRED = ("ErrorExpiredSubscription", "The subscription has expired.")
BAD_WATERMARK = ("ErrorInvalidWatermark", "The watermark used for creating this subscription was not recognized.")
NOT_PULL = ("ErrorInvalidPullSubscriptionId", "The pull subscription ID is invalid.")
NOT_STREAMING = ("ErrorInvalidSubscription", "The subscription is invalid.")
TOO_MANY = ("ErrorExceededSubscriptionCount", "You have exceeded the available subscriptions for your account. "
                                              "Remove unnecessary subscriptions and try your request again.")


def _schema_error(name: str) -> EwsFault:
    return EwsFault("ErrorSchemaValidation", f"The request failed schema validation: The '{name}' element is invalid "
                                             "- The value is invalid according to its datatype.")


def _child(parent: etree._Element, name: str) -> Optional[etree._Element]:
    """A child by local name: Exchange takes these in either namespace (exchangelib sends m:Watermark)."""
    return next((c for c in parent if isinstance(c.tag, str) and etree.QName(c).localname == name), None)


@dataclass(frozen=True)
class PushTarget:
    url: str
    host: str
    port: int
    status_frequency: int    # minutes


def push_target(request: etree._Element) -> PushTarget:
    """The URL and StatusFrequency of a t:PushSubscriptionRequest, or the error Exchange answers."""
    frequency_text = child_text(request, "StatusFrequency")
    try:
        frequency = int(frequency_text.strip()) if frequency_text is not None else DEFAULT_STATUS_FREQUENCY
    except ValueError:
        raise schema_error("StatusFrequency") from None
    if not STATUS_FREQUENCY_MINUTES[0] <= frequency <= STATUS_FREQUENCY_MINUTES[1]:
        raise schema_error("StatusFrequency")
    url = (child_text(request, "URL") or "").strip()
    try:
        parts = urllib.parse.urlsplit(url)
        address = ipaddress.ip_address(parts.hostname or "")
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise EwsError(*INVALID_URL) from None
    if parts.scheme not in ("http", "https") or not address.is_loopback:
        raise EwsError(*INVALID_URL)
    return PushTarget(url, str(address), port, frequency)


def child_text(parent: etree._Element, name: str) -> Optional[str]:
    found = _child(parent, name)
    return None if found is None else (found.text or "")


def _minutes(text: Optional[str], name: str, bounds: Tuple[int, int]) -> int:
    try:
        value = int((text or "").strip())
    except ValueError:
        raise _schema_error(name) from None
    if not bounds[0] <= value <= bounds[1]:
        raise _schema_error(name)
    return value


# ---- Subscribe --------------------------------------------------------------------------------------------------
def subscribe(call: Call) -> None:
    request = next((c for c in call.request if isinstance(c.tag, str)), None)
    kind = etree.QName(request).localname if request is not None else ""
    if request is None or kind not in ("PullSubscriptionRequest", "StreamingSubscriptionRequest",
                                       "PushSubscriptionRequest"):
        raise EwsError("ErrorInvalidSubscriptionRequest", "The subscription request is invalid.")
    types_element = _child(request, "EventTypes")
    kinds = [(e.text or "").strip() for e in types_element] if types_element is not None else []
    if not kinds or any(k not in events.EVENT_TYPES for k in kinds):
        raise _schema_error("EventType")
    folders_element = _child(request, "FolderIds")
    all_folders = (request.get("SubscribeToAllFolders") or "").lower() in ("true", "1")
    if all_folders == (folders_element is not None and len(folders_element) > 0):
        raise EwsError("ErrorInvalidSubscriptionRequest", "The subscription request is invalid.")
    folders = None if all_folders or folders_element is None else frozenset(
        folder_of(call, e).key for e in folders_element if isinstance(e.tag, str))
    log = call.owner.events
    streaming = kind == "StreamingSubscriptionRequest"
    position, timeout, push = log.last, 0, None
    if kind == "PullSubscriptionRequest":
        timeout_element = _child(request, "Timeout")
        timeout = _minutes(timeout_element.text if timeout_element is not None else None, "Timeout",
                           PULL_TIMEOUT_MINUTES)
    elif kind == "PushSubscriptionRequest":
        push = push_target(request)
    if not streaming:
        watermark = _child(request, "Watermark")
        if watermark is not None:
            position = _position(call, watermark.text)
    subscription = call.store.subscriptions.add(call.owner.email, call.owner.guid, folders=folders,
                                                event_types=frozenset(kinds), position=position, streaming=streaming,
                                                timeout_minutes=timeout, last_read=call.store.clock(),
                                                push_url=push.url if push else None,
                                                status_frequency=push.status_frequency if push else 0)
    if subscription is None:
        raise EwsError(*TOO_MANY)
    call.push = subscription if push else None
    message = success_message(call.messages, call.operation)
    etree.SubElement(message, m("SubscriptionId")).text = subscription.id
    if not streaming:
        etree.SubElement(message, m("Watermark")).text = events.encode_watermark(call.owner.guid, position)


def _position(call: Call, watermark: Optional[str]) -> int:
    try:
        number = events.decode_watermark(call.owner.guid, watermark)
        call.owner.events.after(number)     # still answerable
    except events.InvalidWatermark:
        raise EwsError(*BAD_WATERMARK) from None
    return number


def _subscription(call: Call, subscription_id: Optional[str]) -> events.Subscription:
    subscription = call.store.subscriptions.by_id.get((subscription_id or "").strip())
    if subscription is None:
        raise EwsError(*NOT_FOUND)
    if subscription.owner != call.owner.email.lower():
        raise EwsError(*ACCESS_DENIED)
    return subscription


# ---- reading events ---------------------------------------------------------------------------------------------
def _id(parent: etree._Element, name: str, ews_id: Tuple[str, str]) -> None:
    etree.SubElement(parent, t(name), Id=ews_id[0], ChangeKey=ews_id[1])


def event_element(parent: etree._Element, event: events.Event, watermark: Optional[str]) -> None:
    element = etree.SubElement(parent, t(event.kind))
    if watermark is not None:
        etree.SubElement(element, t("Watermark")).text = watermark
    etree.SubElement(element, t("TimeStamp")).text = timestamp(event.timestamp)
    kind = "Folder" if event.is_folder else "Item"       # a folder's event names it by t:FolderId
    _id(element, f"{kind}Id", event.item)
    _id(element, "ParentFolderId", event.folder)
    if event.old_item is not None and event.old_folder is not None:
        _id(element, f"Old{kind}Id", event.old_item)
        _id(element, "OldParentFolderId", event.old_folder)


def _pending(call: Call, subscription: events.Subscription) -> List[events.Event]:
    try:
        return [e for e in call.owner.events.after(subscription.position) if subscription.wants(e)]
    except events.InvalidWatermark:
        raise EwsError(*BAD_WATERMARK) from None


def get_events(call: Call) -> None:
    subscription = _subscription(call, call.request.findtext(m("SubscriptionId")))
    if subscription.streaming or subscription.push_url is not None:
        raise EwsError(*NOT_PULL)
    now = call.store.clock()
    if subscription.expired(now):
        del call.store.subscriptions.by_id[subscription.id]
        raise EwsError(*EXPIRED)
    previous = call.request.findtext(m("Watermark"))
    subscription.position = _position(call, previous)   # the client may re-read from an earlier watermark
    subscription.last_read = now
    pending = _pending(call, subscription)
    page, more = pending[:MAX_EVENTS_PER_GET], len(pending) > MAX_EVENTS_PER_GET
    notification = etree.SubElement(success_message(call.messages, call.operation), m("Notification"))
    etree.SubElement(notification, t("SubscriptionId")).text = subscription.id
    etree.SubElement(notification, t("PreviousWatermark")).text = (previous or "").strip()
    etree.SubElement(notification, t("MoreEvents")).text = "true" if more else "false"
    guid = call.owner.guid
    for event in page:
        event_element(notification, event, events.encode_watermark(guid, event.number))
    if not page:
        status = etree.SubElement(notification, t("StatusEvent"))
        etree.SubElement(status, t("Watermark")).text = events.encode_watermark(guid, call.owner.events.last)
    subscription.position = page[-1].number if more else call.owner.events.last


@dataclass(frozen=True)
class StreamRequest:
    """A GetStreamingEvents request found valid: what the stream watches and for how long."""
    subscriptions: Tuple[events.Subscription, ...]
    minutes: int


def get_streaming_events(call: Call) -> None:
    ids = [(e.text or "").strip() for e in call.request.iterfind(f"{m('SubscriptionIds')}/{t('SubscriptionId')}")]
    if not ids:
        raise _schema_error("SubscriptionIds")
    minutes = _minutes(call.request.findtext(m("ConnectionTimeout")), "ConnectionTimeout", STREAMING_TIMEOUT_MINUTES)
    subscriptions = [_subscription(call, subscription_id) for subscription_id in ids]
    if not all(s.streaming for s in subscriptions):
        raise EwsError(*NOT_STREAMING)
    _connection_status(call.messages, call.operation, "OK")
    call.stream = StreamRequest(tuple(subscriptions), minutes)


class NotificationStream:
    """What one open GetStreamingEvents connection sends, sans-IO: the edge asks for the opening envelopes, then for
    notifications when the owner's log records an event this stream ``wants``, for a keep-alive when the line was
    quiet, and for the closing envelopes when the timeout elapses. ``envelope`` wraps m:ResponseMessages in the SOAP
    envelope of a GetStreamingEventsResponse (harness.protocols.ews builds it)."""
    OPERATION = "GetStreamingEvents"

    def __init__(self, store: MailboxStore, owner: MailboxContent, request: StreamRequest,
                 envelope: Callable[[etree._Element], bytes]):
        self.store, self.owner, self._envelope = store, owner, envelope
        self.subscriptions = request.subscriptions
        self.timeout_seconds = request.minutes * 60.0
        self.keep_alive_seconds = KEEP_ALIVE_SECONDS

    @property
    def log(self) -> events.EventLog:
        return self.owner.events

    def wants(self, event: events.Event) -> bool:
        return any(s.wants(event) for s in self._live())

    def _live(self) -> List[events.Subscription]:
        """The stream's subscriptions not unsubscribed meanwhile."""
        return [s for s in self.subscriptions if self.store.subscriptions.by_id.get(s.id) is s]

    def notifications(self) -> Optional[bytes]:
        """The events each subscription has not been sent yet, in one envelope (None: there are none)."""
        messages = etree.Element(m("ResponseMessages"))
        notifications = etree.SubElement(success_message(messages, self.OPERATION), m("Notifications"))
        for subscription in self._live():
            pending = [e for e in self.log.since(subscription.position) if subscription.wants(e)]
            subscription.position = self.log.last
            if pending:
                # NonEmptyArrayOfNotificationsType: t:Notification (GetEvents' single one is m:Notification)
                notification = etree.SubElement(notifications, t("Notification"))
                etree.SubElement(notification, t("SubscriptionId")).text = subscription.id
                for event in pending:
                    event_element(notification, event, None)
        return self._envelope(messages) if len(notifications) else None

    def status(self, status: str) -> bytes:
        """ConnectionStatus OK (the keep-alive) or Closed (the last envelope)."""
        messages = etree.Element(m("ResponseMessages"))
        _connection_status(messages, self.OPERATION, status)
        return self._envelope(messages)

    def closing(self) -> List[bytes]:
        """What goes out when the timeout elapses: events not sent yet, then ConnectionStatus Closed."""
        pending = self.notifications()
        return ([pending] if pending else []) + [self.status("Closed")]


def _connection_status(messages: etree._Element, operation: str, status: str) -> None:
    etree.SubElement(success_message(messages, operation), m("ConnectionStatus")).text = status


def unsubscribe(call: Call) -> None:
    subscription = _subscription(call, call.request.findtext(m("SubscriptionId")))
    del call.store.subscriptions.by_id[subscription.id]
    success_message(call.messages, call.operation)


OPERATIONS: Dict[str, Callable[[Call], None]] = {
    "Subscribe": subscribe, "GetEvents": get_events, "GetStreamingEvents": get_streaming_events,
    "Unsubscribe": unsubscribe,
}
