"""GetStreamingEvents holding its connection: the HTTP core's open-ended answer (sans-IO), the served site behind the
Twisted edge on a StringTransport and a task.Clock (notifications as events happen, keep-alives, ConnectionTimeout,
a client leaving mid-stream), and exchangelib (unmodified) seeing a message sent while its stream is open."""
from __future__ import annotations

import base64
import json
import os
import random
from typing import List, Tuple

import h11
from lxml import etree
from twisted.internet import error, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from harness.hooks import FaultSet
from harness.protocols import ews
from harness.protocols.autodiscover import SiteUrls
from harness.protocols.ews_notify import KEEP_ALIVE_SECONDS
from harness.protocols.http import HttpResponse
from harness.protocols.httpconn import Deliver, HttpConnection, Send
from harness.services.site import ExchangeSite
from harness.services.web import HttpFactory
from harness.transcript import Transcript
from tests.support import REPO
from tests.support.ews import ALICE, BOB, ORG, envelope, new_store
from tests.support.netns import Check, needs_netns, run_in_netns

M, T = f"{{{ews.MESSAGES_NS}}}", f"{{{ews.TYPES_NS}}}"


# ---- the core: an open-ended chunked answer --------------------------------------------------------------------
def test_an_open_ended_answer_keeps_the_connection_in_sending_until_its_end_then_serves_the_next_request():
    core = HttpConnection(tls=False)
    core.start()
    actions = core.receive(b"POST /EWS/Exchange.asmx HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                           b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(actions[-1], Deliver) and actions[-1].request.path == "/EWS/Exchange.asmx"
    [head] = core.respond(HttpResponse(200, "OK", [("Content-Type", "text/xml")], chunks=(b"first",), stream=object()))
    assert isinstance(head, Send) and b"Transfer-Encoding: chunked" in head.data
    assert head.data.endswith(b"5\r\nfirst\r\n") and core.streaming and core.state.value == "sending"
    assert core.stream_data(b"later") == [Send(b"5\r\nlater\r\n")]
    assert core.receive(b"") == []              # the pipelined GET waits in h11's buffer meanwhile
    ended = core.stream_end()
    assert ended[0] == Send(b"0\r\n\r\n") and not core.streaming
    assert isinstance(ended[-1], Deliver) and ended[-1].request.path == "/next"
    assert core.stream_data(b"too late") == [] and core.stream_end() == []


def test_an_open_ended_answer_ends_with_the_connection():
    core = HttpConnection(tls=False)
    core.receive(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    core.respond(HttpResponse(200, "OK", [], stream=object()))
    core.connection_lost()
    assert not core.streaming and core.stream_data(b"x") == [] and core.stream_end() == []


# ---- the site behind the edge, on a fake clock -----------------------------------------------------------------
BASIC = "Basic " + base64.b64encode(f"{ALICE}:{ORG.mailboxes[0].password}".encode()).decode()
assert ORG.mailboxes[0].email == ALICE


class Stream:
    """One connection to the served site, driven by hand; reads its output as HTTP responses with h11."""

    def __init__(self, clock: task.Clock):
        self.store, self.transcript, self.clock = new_store(), Transcript(), clock
        site = ExchangeSite(ORG, self.transcript, random.Random(1), SiteUrls.for_org(ORG, 443), store=self.store,
                            faults=FaultSet())
        factory = HttpFactory(site, tls=False, clock=clock)
        self.transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 443),
                                         peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)
        self.client = h11.Connection(h11.CLIENT)

    def post(self, body: bytes) -> None:
        request = h11.Request(method="POST", target="/EWS/Exchange.asmx", headers=[
            ("Host", "mail.contoso.test"), ("Authorization", BASIC), ("Content-Type", "text/xml"),
            ("Content-Length", str(len(body)))])
        self.protocol.dataReceived(self.client.send(request) + self.client.send(h11.Data(data=body))
                                   + self.client.send(h11.EndOfMessage()))

    def read(self) -> Tuple[List[bytes], bool]:
        """The body chunks written since the last read, and whether the response ended."""
        data = self.transport.value()
        self.transport.clear()
        if data:   # h11 takes b"" for the end of the connection
            self.client.receive_data(data)
        chunks, ended = [], False
        while True:
            event = self.client.next_event()
            if event is h11.NEED_DATA:
                return chunks, ended
            if isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self.client.start_next_cycle()
                return chunks, True

    def answer(self, body: bytes) -> etree._Element:
        self.post(body)
        chunks, ended = self.read()
        assert ended
        return etree.fromstring(b"".join(chunks))

    def subscribe(self) -> str:
        root = self.answer(envelope(
            '<m:Subscribe><m:StreamingSubscriptionRequest><t:FolderIds><t:DistinguishedFolderId Id="inbox"/>'
            "</t:FolderIds><t:EventTypes><t:EventType>NewMailEvent</t:EventType><t:EventType>CreatedEvent"
            "</t:EventType></t:EventTypes></m:StreamingSubscriptionRequest></m:Subscribe>"))
        return root.findtext(f".//{M}SubscriptionId")

    def open(self, subscription: str, minutes: int = 1) -> List[etree._Element]:
        self.post(envelope(
            f"<m:GetStreamingEvents><m:SubscriptionIds><t:SubscriptionId>{subscription}</t:SubscriptionId>"
            f"</m:SubscriptionIds><m:ConnectionTimeout>{minutes}</m:ConnectionTimeout></m:GetStreamingEvents>"))
        return self.envelopes()

    def envelopes(self) -> List[etree._Element]:
        chunks, self.ended = self.read()
        return [etree.fromstring(chunk) for chunk in chunks]

    def bob_sends(self, subject: str) -> str:
        _, [delivered] = self.store.send(self.store.mailbox(BOB), subject=subject, body="x", to=[("", ALICE)])
        return delivered.id


def status(document: etree._Element) -> str:
    return document.findtext(f".//{M}ConnectionStatus")


def new_mail(document: etree._Element) -> List[str]:
    return [e.find(f"{T}ItemId").get("Id") for e in document.iterfind(f".//{T}Notification/{T}NewMailEvent")]


def test_a_stream_sends_each_event_as_it_happens_keeps_alive_and_closes_at_its_timeout():
    clock = task.Clock()
    stream = Stream(clock)
    subscription = stream.subscribe()
    waiting = stream.bob_sends("before the stream")
    opening = stream.open(subscription, minutes=2)
    assert [status(d) for d in opening] == ["OK", None] and new_mail(opening[1]) == [waiting]
    assert stream.envelopes() == [] and not stream.ended          # open, and quiet
    clock.advance(30)
    sent = stream.bob_sends("while it is open")
    assert stream.envelopes() == []                               # delivered in the next reactor turn ...
    clock.advance(0)
    [notification] = stream.envelopes()                           # ... as one envelope: NewMail and Created
    assert new_mail(notification) == [sent] and status(notification) is None
    assert len(notification.findall(f".//{T}CreatedEvent")) == 1
    clock.advance(KEEP_ALIVE_SECONDS - 1)                          # the keep-alive counts from that envelope
    assert stream.envelopes() == []
    clock.advance(1)
    assert [status(d) for d in stream.envelopes()] == ["OK"] and not stream.ended
    clock.advance(120 - 1 - clock.seconds())                       # just before ConnectionTimeout (2 minutes)
    assert stream.envelopes() == [] and not stream.ended
    late = stream.bob_sends("as it closes")
    clock.advance(1)
    closing = stream.envelopes()
    assert stream.ended and [status(d) for d in closing] == [None, "Closed"] and new_mail(closing[0]) == [late]
    events = stream.transcript.of_kind("ews_stream")
    assert [e["state"] for e in events] == ["open", "notify", "notify", "close"]
    assert events[-1]["reason"] == "ConnectionTimeout elapsed" and events[-1]["keep_alives"] == 1
    assert stream.store.mailbox(ALICE).events.listeners == []
    assert [c.getTime() for c in clock.getDelayedCalls()] == [clock.seconds() + 120]   # only the idle timer
    root = stream.answer(envelope(                                 # the connection serves the next request
        '<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds>'
        '<t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder>'))
    assert root.findtext(f".//{M}ResponseCode") == "NoError"


def test_events_outside_the_subscription_wake_nothing_and_keep_alives_repeat():
    clock = task.Clock()
    stream = Stream(clock)
    stream.open(stream.subscribe(), minutes=30)
    alice = stream.store.mailbox(ALICE)
    stream.store.save(alice, alice.distinguished["drafts"], subject="a draft", body="")   # not the Inbox
    assert clock.getDelayedCalls() and all(c.getTime() > 0 for c in clock.getDelayedCalls())
    clock.advance(0)
    assert stream.envelopes() == []
    for _ in range(3):
        clock.advance(KEEP_ALIVE_SECONDS)
        assert [status(d) for d in stream.envelopes()] == ["OK"]
    assert not stream.ended


def test_a_client_leaving_mid_stream_cancels_its_timers_and_its_listener():
    clock = task.Clock()
    stream = Stream(clock)
    stream.open(stream.subscribe(), minutes=30)
    alice = stream.store.mailbox(ALICE)
    stream.bob_sends("pending delivery")                          # a delivery is scheduled, not yet sent
    pending = sorted(str(c.func.__name__) for c in clock.getDelayedCalls())   # the core's idle tick too (ignored)
    assert len(alice.events.listeners) == 1 and pending == ["_deliver", "_expire", "_send_keep_alive", "_timer_fired"]
    stream.protocol.connectionLost(Failure(error.ConnectionLost()))
    assert alice.events.listeners == [] and clock.getDelayedCalls() == []
    stream.bob_sends("after the client left")                     # nobody listens: nothing is scheduled
    assert clock.getDelayedCalls() == []
    [*_, closed] = stream.transcript.of_kind("ews_stream")
    assert closed["state"] == "close" and closed["reason"] == "connection lost"


def test_a_stream_to_a_client_that_stops_reading_is_reset_at_the_send_timeout_and_cancelled():
    clock = task.Clock()
    stream = Stream(clock)
    stream.open(stream.subscribe(), minutes=30)
    stream.protocol._output_backlog(1, True)        # what the pacing wrapper reports when the transport is full
    clock.advance(KEEP_ALIVE_SECONDS)                 # keep-alives still go out (into the backlog) ...
    assert [status(d) for d in stream.envelopes()] == ["OK"]
    clock.advance(120 - KEEP_ALIVE_SECONDS)           # ... until the send timeout (IIS's two minutes) resets it
    [limit] = stream.transcript.of_kind("limit")
    assert limit["limit"] == "send_timeout" and stream.transport.disconnecting
    stream.protocol.connectionLost(Failure(error.ConnectionLost()))
    assert stream.store.mailbox(ALICE).events.listeners == [] and clock.getDelayedCalls() == []


def test_a_refused_stream_is_an_ordinary_answer_and_holds_nothing():
    clock = task.Clock()
    stream = Stream(clock)
    stream.post(envelope("<m:GetStreamingEvents><m:SubscriptionIds><t:SubscriptionId>AAAA</t:SubscriptionId>"
                         "</m:SubscriptionIds><m:ConnectionTimeout>1</m:ConnectionTimeout></m:GetStreamingEvents>"))
    chunks, ended = stream.read()
    assert ended and etree.fromstring(b"".join(chunks)).findtext(f".//{M}ResponseCode") == "ErrorSubscriptionNotFound"
    assert stream.transcript.of_kind("ews_stream") == [] and stream.store.mailbox(ALICE).events.listeners == []


# ---- exchangelib, unmodified, on a real socket ---------------------------------------------------------------------
CLIENT = os.path.join(REPO, "tests", "support", "exchangelib_ews_notify.py")


@needs_netns
def test_exchangelib_sees_a_message_sent_while_its_stream_is_open(tmp_path):
    out = run_in_netns(str(tmp_path), [([], [
        Check("live", f'"$PY" {CLIENT} 127.0.0.1 53 {ALICE} P@ssw0rd-alice live {BOB} P@ssw0rd-bob')])])
    [result] = [json.loads(line) for line in out["live"].output.splitlines() if line.startswith("{")]
    assert result["check"] == "live" and result["error"] is None, result
    assert result["opened_before_send"] and result["subject"] == "while streaming"
    assert result["events"] == [["NewMailEvent", result["newest_id"]]]
    streams = out["live"].kind("ews_stream")
    assert [e["state"] for e in streams] == ["open", "notify", "close"]
    # delivered while open: the client, not ConnectionTimeout, ended the stream, after that one notification
    assert streams[-1]["reason"] != "ConnectionTimeout elapsed" and streams[-1]["notifications"] == 1
