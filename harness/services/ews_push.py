"""EWS push subscriptions at the edge: the timers and the outbound POSTs of harness.protocols.ews_push.

Each push subscription gets a PushChannel when Subscribe made it: it listens to the mailbox's event log, and an event
the subscription wants schedules one POST in the same reactor turn (so a delivery's NewMailEvent and CreatedEvent go
together); after StatusFrequency without a POST it sends a StatusEvent. The client's SendNotificationResult decides:
OK moves the subscription past what it acknowledged, Unsubscribe ends it. A failed POST (no connection, no answer
within POST_TIMEOUT_SECONDS, not a SendNotificationResult) is retried 30 s, 60 s, 120 s, ... after the first failed
attempt while that is within StatusFrequency, then the subscription ends. Only loopback URLs get here (Subscribe refuses
others). Each step is an ``ews_push`` transcript event. Everything runs on the given clock (a reactor, or a
task.Clock in tests with an injected ``post``).
"""
from __future__ import annotations

import io
from typing import Any, Callable, Dict, Optional, Tuple

from twisted.internet import defer

from harness.mailbox import events
from harness.mailbox.store import MailboxStore
from harness.protocols import ews_push
from harness.protocols.autodiscover_soap import version_parts
from harness.services import ews_check

POST_TIMEOUT_SECONDS = 30.0     # how long a POST may take before it counts as failed (Exchange's is not documented)
Post = Callable[[str, bytes], "defer.Deferred[Tuple[int, bytes]]"]


class PushNotifier:
    """Serves the push subscriptions of one store; ``start`` each as Subscribe makes it."""

    def __init__(self, clock: Any, store: MailboxStore, record: Callable[..., Any], exchange_version: str = "",
                 post: Optional[Post] = None):
        self.clock, self.store, self.record = clock, store, record
        major, minor, build, revision = version_parts(exchange_version) if exchange_version else (15, 0, 847, 32)
        self.user_agent = f"ExchangeServicesClient/{major}.{minor:02d}.{build:04d}.{revision:03d}"
        self.post: Post = post or self._agent_post
        self.channels: Dict[str, PushChannel] = {}

    def start(self, subscription: events.Subscription) -> None:
        channel = PushChannel(self, subscription)
        self.channels[subscription.id] = channel
        channel.start()

    def stop(self) -> None:
        """The server stops: every channel's timers and listeners go."""
        for channel in list(self.channels.values()):
            channel.stop("server stopping")

    def _agent_post(self, url: str, body: bytes) -> "defer.Deferred[Tuple[int, bytes]]":
        from twisted.web.client import Agent, FileBodyProducer, readBody
        from twisted.web.http_headers import Headers
        headers = Headers({b"Content-Type": [b"text/xml; charset=utf-8"], b"User-Agent": [self.user_agent.encode()]})
        producer: Any = FileBodyProducer(io.BytesIO(body))
        request: Any = Agent(self.clock, connectTimeout=POST_TIMEOUT_SECONDS).request(
            b"POST", url.encode("ascii"), headers, producer)

        def read(response: Any) -> Any:
            return readBody(response).addCallback(lambda content: (response.code, content))
        request.addCallback(read)
        request.addTimeout(POST_TIMEOUT_SECONDS, self.clock)
        answer: "defer.Deferred[Tuple[int, bytes]]" = request
        return answer


class PushChannel:
    """One push subscription's POSTs and timers."""

    def __init__(self, notifier: PushNotifier, subscription: events.Subscription):
        self.notifier, self.subscription = notifier, subscription
        self.owner = notifier.store.mailbox(subscription.owner)
        self._unlisten: Optional[Callable[[], None]] = None
        self._status: Any = None       # DelayedCall: the next StatusEvent
        self._soon: Any = None         # DelayedCall: a POST this reactor turn (events happened)
        self._retry: Any = None        # DelayedCall: the next attempt after a failure
        self._in_flight = False
        self._dirty = False            # events arrived while a POST was out
        self._started = 0.0                       # when the last POST went out
        self._first_failure: Optional[float] = None   # when the first POST of a failing run went out
        self._retry_at: Optional[float] = None        # the last retry's time after it
        self.posts = 0

    @property
    def active(self) -> bool:
        return self._unlisten is not None or self._in_flight or any(
            c is not None for c in (self._status, self._soon, self._retry))

    def start(self) -> None:
        if self.owner is None:
            return
        self._unlisten = self.owner.events.listen(self._on_event)
        self._schedule_status()
        self._event("subscribe")

    def _alive(self) -> bool:
        return self.notifier.store.subscriptions.by_id.get(self.subscription.id) is self.subscription

    def _schedule_status(self) -> None:
        self._status = self.notifier.clock.callLater(self.subscription.status_frequency * 60.0, self._timer_post)

    def _on_event(self, event: events.Event) -> None:
        if not self.subscription.wants(event):
            return
        if self._in_flight or self._retry is not None:
            self._dirty = True
        elif self._soon is None:
            self._soon = self.notifier.clock.callLater(0, self._timer_post)

    def _timer_post(self) -> None:
        self._post()      # it cancels the other timers (the one firing is no longer active)

    def _post(self) -> None:
        for name in ("_status", "_soon", "_retry"):
            self._cancel(name)
        if not self._alive() or self.owner is None:
            self.stop("unsubscribed")
            return
        body, acknowledged, count = ews_push.notification_request(self.owner, self.subscription)
        ews_check.check_envelope(body, "EWS SendNotification", 200)   # the suite's schema check
        self._in_flight, self._dirty = True, False
        self._started = self.notifier.clock.seconds()
        self.posts += 1
        self.notifier.post(self.subscription.push_url or "", body).addCallbacks(
            lambda answer: self._answered(answer, acknowledged, count),
            lambda failure: self._failed(failure.getErrorMessage() or failure.type.__name__))

    def _answered(self, answer: Tuple[int, bytes], acknowledged: int, count: int) -> None:
        self._in_flight = False
        status = ews_push.subscription_status(*answer)
        if status is None:
            self._failed(f"HTTP {answer[0]} without a SendNotificationResult")
            return
        self._event("notify", events=count, status=status)
        self._first_failure = self._retry_at = None
        if not self._alive():
            self.stop("unsubscribed")
            return
        self.subscription.position = max(self.subscription.position, acknowledged)
        if status == ews_push.UNSUBSCRIBE:
            del self.notifier.store.subscriptions.by_id[self.subscription.id]
            self.stop("the client answered Unsubscribe")
        elif self._dirty:
            self._soon = self.notifier.clock.callLater(0, self._timer_post)
        else:
            self._schedule_status()

    def _failed(self, reason: str) -> None:
        self._in_flight = False
        if self._first_failure is None:
            self._first_failure = self._started
        at = ews_push.next_retry_at(self._retry_at, self.subscription.status_frequency)
        if at is None or not self._alive():
            if self._alive():
                del self.notifier.store.subscriptions.by_id[self.subscription.id]
            self.stop(f"retries exhausted: {reason}" if at is None else "unsubscribed")
            return
        self._retry_at = at
        delay = max(0.0, self._first_failure + at - self.notifier.clock.seconds())
        self._retry = self.notifier.clock.callLater(delay, self._timer_post)
        self._event("retry", delay_s=delay, reason=reason)

    def _cancel(self, name: str) -> None:
        call = getattr(self, name)
        if call is not None and call.active():
            call.cancel()
        setattr(self, name, None)

    def stop(self, reason: str) -> None:
        if self.notifier.channels.get(self.subscription.id) is not self:
            return
        for name in ("_status", "_soon", "_retry"):
            self._cancel(name)
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        del self.notifier.channels[self.subscription.id]
        self._event("end", reason=reason)

    def _event(self, state: str, **extra: Any) -> None:
        self.notifier.record("ews_push", mailbox=self.subscription.owner, url=self.subscription.push_url or "",
                             state=state, posts=self.posts, **extra)
