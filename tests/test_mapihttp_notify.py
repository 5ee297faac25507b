"""Notifications over both transports and the held MAPI/HTTP answer: RopRegisterNotification on the EMSMDB core,
RopNotify/RopPending in the next ROP response (Execute over MAPI/HTTP, EcDoRpcExt2 over RPC/HTTP), and a
NotificationWait that waits - in-process on a fake clock (PENDING every X-PendingPeriod, DONE on an event or after
five minutes), then on a real `mockex serve` where mail bob sends through EWS wakes alice's waiting request."""
from __future__ import annotations

import base64
import contextlib
import random
import struct
import threading
import time
from typing import Any, List

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from harness.org import load_org, with_config
from harness.protocols.autodiscover import SiteUrls
from harness.protocols.http import HttpResponse
from harness.rpc import emsmdb
from harness.rpc.base import CallContext, InProcessDce
from harness.rpc.emsmdb.notify import MAX_NOTIFY_PER_RESPONSE
from harness.services.site import ExchangeSite
from harness.services.web import HttpFactory
from harness.transcript import Transcript
from tests.support.ews import ews_send_as_bob
from tests.support.mapihttp import IN_PROCESS_NOW as NOW
from tests.support.mapihttp import (
    MESSAGE_BIT,
    NEW_MAIL,
    OBJECT_CREATED,
    Endpoint,
    MapiHttpClient,
    connect_body,
    execute_body,
    execute_rops,
    new_store,
    no_rops_buffer,
    parse_notifies,
    register_notification_buffer,
)
from tests.support.servers import start_mapi_http_server

ORG = with_config(load_org(), {"mapi_http": {"Enabled": True}}, "test")
ALICE, BOB = ORG.find("alice"), ORG.find("bob")
ALICE_DN = ORG.legacy_dn(ALICE)


def done_body(answer) -> bytes:
    assert answer.response_code == 0 and answer.chunks[0] == b"PROCESSING\r\n"
    head, _, body = answer.chunks[1].partition(b"\r\n\r\n")
    assert head.startswith(b"DONE\r\nX-ElapsedTime: ")
    return body
WAIT_BODY = struct.pack("<LL", 0, 0)                      # NotificationWait: Flags, AuxiliaryBufferSize


def deliver_to_alice(store, subject: str = "hello") -> int:
    """bob sends alice a message through the store (as EWS and RopSubmitMessage do); her Inbox item's counter."""
    sender = store.mailbox(BOB.email)
    _copy, delivered = store.send(sender, subject=subject, body="hi", to=[("Alice", ALICE.email)])
    return delivered[0].key


def registered(endpoint: Endpoint) -> List[int]:
    """Connect, then RopLogon + RopRegisterNotification(NewMail | ObjectCreated, whole store): the handle table."""
    endpoint.post("Connect", connect_body(ALICE_DN))
    payload = execute_rops(done_body(endpoint.post("Execute", execute_body(register_notification_buffer(
        ALICE_DN)))))[1]
    size = struct.unpack_from("<H", payload)[0]
    assert payload[size - 6:size] == struct.pack("<BBL", 0x29, 1, 0)      # RopRegisterNotification: success
    return list(struct.unpack_from("<2L", payload, size))


def notifies_of(endpoint: Endpoint, handles: List[int]):
    payload = execute_rops(done_body(endpoint.post("Execute", execute_body(no_rops_buffer(handles)))))[1]
    return parse_notifies(payload[2:struct.unpack_from("<H", payload)[0]])


# ---- the core, both transports ------------------------------------------------------------------------------
def test_a_delivery_is_notified_in_the_next_execute_then_not_again():
    endpoint = Endpoint()
    handles = registered(endpoint)
    assert notifies_of(endpoint, handles) == ([], False)               # nothing happened yet
    mid = deliver_to_alice(endpoint.store)
    inbox = endpoint.store.mailbox(ALICE.email).distinguished["inbox"]
    fid, mid_bytes = b"\x01\x00" + inbox.key.to_bytes(6, "big"), b"\x01\x00" + mid.to_bytes(6, "big")
    found, more = notifies_of(endpoint, handles)
    assert found == [(handles[1], NEW_MAIL | MESSAGE_BIT, fid, mid_bytes),
                     (handles[1], OBJECT_CREATED | MESSAGE_BIT, fid, mid_bytes)] and not more
    assert notifies_of(endpoint, handles) == ([], False)               # consumed


def test_a_released_registration_is_not_notified():
    endpoint = Endpoint()
    handles = registered(endpoint)
    release = struct.pack("<BBB", 0x01, 0, 1)                        # RopRelease of the registration (slot 1)
    payload = struct.pack("<H", 2 + len(release)) + release + struct.pack("<2L", *handles)
    done_body(endpoint.post("Execute", execute_body(payload)))
    deliver_to_alice(endpoint.store)
    assert notifies_of(endpoint, handles) == ([], False)
    assert endpoint.post("NotificationWait", WAIT_BODY).held.watch == ()   # nothing left to wake it


def test_events_it_did_not_register_for_are_not_notified_and_a_flood_ends_in_rop_pending():
    endpoint = Endpoint()
    endpoint.post("Connect", connect_body(ALICE_DN))
    execute = endpoint.post("Execute", execute_body(register_notification_buffer(ALICE_DN, types=NEW_MAIL)))
    payload = execute_rops(done_body(execute))[1]
    handles = list(struct.unpack_from("<2L", payload, struct.unpack_from("<H", payload)[0]))
    for index in range(MAX_NOTIFY_PER_RESPONSE + 3):
        deliver_to_alice(endpoint.store, f"m{index}")
    found, more = notifies_of(endpoint, handles)
    assert len(found) == MAX_NOTIFY_PER_RESPONSE and more                # ObjectCreated events are not listed
    assert {flags for _, flags, _, _ in found} == {NEW_MAIL | MESSAGE_BIT}
    assert notifies_of(endpoint, handles)[0][-1][1] == NEW_MAIL | MESSAGE_BIT
    assert notifies_of(endpoint, handles) == ([], False)


def test_over_ecdorpcext2_the_notifications_ride_on_the_next_response():
    store = new_store()
    server = emsmdb.Emsmdb(ORG, store=store, clock=lambda: NOW)
    ctx = CallContext(org=ORG, mailbox=ALICE, auth_level=6, association={}, record=lambda kind, **f: None,
                      rng=random.Random(2))
    dce = InProcessDce(server, ctx)
    dce.call(10, emsmdb.build_connect_request(ALICE_DN))
    cxh = emsmdb.parse_connect_response(dce.recv()).cxh
    dce.call(11, emsmdb.build_rpc_request(cxh, register_notification_buffer(ALICE_DN)))
    payload = emsmdb.parse_rpc_response(dce.recv())[2][0]
    handles = list(struct.unpack_from("<2L", payload, struct.unpack_from("<H", payload)[0]))
    deliver_to_alice(store)
    dce.call(11, emsmdb.build_rpc_request(cxh, no_rops_buffer(handles)))
    payload = emsmdb.parse_rpc_response(dce.recv())[2][0]
    found, _ = parse_notifies(payload[2:struct.unpack_from("<H", payload)[0]])
    assert [flags & 0x0FFF for _, flags, _, _ in found] == [NEW_MAIL, OBJECT_CREATED]


def test_notification_wait_answers_at_once_when_an_event_is_pending_and_else_is_held():
    endpoint = Endpoint()
    handles = registered(endpoint)
    held = endpoint.post("NotificationWait", WAIT_BODY)
    assert held.chunks == (b"PROCESSING\r\n",) and held.held is not None
    assert held.held.max_wait_ms == 300000 and not held.held.ready()
    assert held.held.watch == (endpoint.store.mailbox(ALICE.email).events,)
    deliver_to_alice(endpoint.store)
    assert held.held.ready()
    assert held.held.finish().partition(b"\r\n\r\n")[2] == struct.pack("<LLLL", 0, 0, 1, 0)   # EventPending
    at_once = endpoint.post("NotificationWait", WAIT_BODY)
    assert at_once.held is None and done_body(at_once) == struct.pack("<LLLL", 0, 0, 1, 0)
    assert len(notifies_of(endpoint, handles)[0]) == 2


# ---- the edge on a fake clock ---------------------------------------------------------------------------------
class Wire:
    """One in-process HTTP connection to the site; ``post`` sends a MAPI/HTTP request, ``output`` reads the bytes."""

    def __init__(self, tmp_path):
        self.clock = task.Clock()
        self.store = new_store()
        self.transcript = Transcript(str(tmp_path / "transcript.jsonl"), lambda: NOW, keep_events=True)
        self.site = ExchangeSite(ORG, self.transcript, random.Random(1), SiteUrls.for_org(ORG, 8443),
                                 store=self.store)
        factory = HttpFactory(self.site, tls=False, clock=self.clock)
        self.transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 8443),
                                         peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
        self.protocol: Any = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)
        self.cookies: dict = {}
        self.token = base64.b64encode(f"{ALICE.email}:{ALICE.password}".encode()).decode()

    def post(self, request_type: str, body: bytes) -> None:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        head = (f"POST /mapi/emsmdb/?MailboxId={ALICE.guid}@contoso.test HTTP/1.1\r\nHost: mail.contoso.test\r\n"
                f"Authorization: Basic {self.token}\r\nContent-Type: application/mapi-http\r\n"
                f"X-RequestType: {request_type}\r\nX-RequestId: {{A}}:1\r\nX-ClientInfo: {{B}}\r\n"
                f"Cookie: {cookie}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        self.protocol.dataReceived(head + body)

    def output(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        for line in data.split(b"\r\n"):
            if line.lower().startswith(b"set-cookie: "):
                name, _, rest = line[12:].decode().partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
        return data


def test_a_held_notification_wait_sends_pending_every_period_and_done_when_mail_arrives(tmp_path):
    wire = Wire(tmp_path)
    wire.post("Connect", connect_body(ALICE_DN))
    assert b"DONE" in wire.output()
    wire.post("Execute", execute_body(register_notification_buffer(ALICE_DN)))
    assert b"DONE" in wire.output()
    wire.post("NotificationWait", WAIT_BODY)
    head = wire.output()
    assert b"X-PendingPeriod: 15000\r\n" in head and head.endswith(b"\r\n\r\nc\r\nPROCESSING\r\n\r\n")
    wire.clock.advance(14.9)
    assert wire.output() == b""
    wire.clock.advance(0.1)
    assert wire.output() == b"9\r\nPENDING\r\n\r\n"
    wire.clock.advance(15)
    assert wire.output() == b"9\r\nPENDING\r\n\r\n"
    deliver_to_alice(wire.store)
    assert wire.output() == b""                      # asked once the store's operation is over
    wire.clock.advance(0)
    tail = wire.output()
    assert b"DONE\r\nX-ElapsedTime: " in tail and tail.endswith(struct.pack("<LLLL", 0, 0, 1, 0) + b"\r\n0\r\n\r\n")
    wire.clock.advance(60)
    assert wire.output() == b""                      # every timer of the wait is gone
    assert wire.store.mailbox(ALICE.email).events.listeners == []
    done = [e for e in wire.transcript.events if e["kind"] == "mapi_http_done"]
    assert [(e["ended"], e["pending"]) for e in done] == [("event", 2)]
    wire.post("PING", b"")                            # the connection serves the next request
    assert b"DONE" in wire.output()


def test_without_an_event_notification_wait_is_done_after_five_minutes(tmp_path):
    wire = Wire(tmp_path)
    wire.post("Connect", connect_body(ALICE_DN))
    wire.output()
    wire.post("Execute", execute_body(register_notification_buffer(ALICE_DN)))
    wire.output()
    wire.post("NotificationWait", WAIT_BODY)
    wire.output()
    wire.clock.pump([15] * 19 + [14])
    assert wire.output() == b"9\r\nPENDING\r\n\r\n" * 19
    wire.clock.advance(1)
    tail = wire.output()
    assert [call for call in wire.clock.getDelayedCalls() if "HeldMapiResponse" in repr(call)] == []
    assert tail.endswith(struct.pack("<LLLL", 0, 0, 0, 0) + b"\r\n0\r\n\r\n")     # no EventPending


def test_a_client_that_goes_away_ends_the_wait(tmp_path):
    wire = Wire(tmp_path)
    wire.post("Connect", connect_body(ALICE_DN))
    wire.output()
    wire.post("Execute", execute_body(register_notification_buffer(ALICE_DN)))
    wire.output()
    wire.post("NotificationWait", WAIT_BODY)
    assert wire.output().endswith(b"PROCESSING\r\n\r\n")
    wire.protocol.connectionLost()
    assert wire.clock.getDelayedCalls() == [] and wire.store.mailbox(ALICE.email).events.listeners == []
    assert [e["ended"] for e in wire.transcript.events if e["kind"] == "mapi_http_done"] == ["disconnect"]


# ---- a real server --------------------------------------------------------------------------------------------
def test_mail_bob_sends_through_ews_wakes_alices_waiting_notification_wait(tmp_path_factory):
    served = start_mapi_http_server(tmp_path_factory, "notify")
    try:
        alice = MapiHttpClient(served.host, served.https_port, served.ca_file, f"{ALICE.guid}@contoso.test",
                               "alice", served.user("alice")["password"])
        assert alice.post("Connect", connect_body(ALICE_DN)).response_code == 0
        payload = execute_rops(alice.post("Execute", execute_body(register_notification_buffer(ALICE_DN))).body)[1]
        handles = list(struct.unpack_from("<2L", payload, struct.unpack_from("<H", payload)[0]))
        answers: list = []
        waiting = threading.Thread(target=lambda: answers.append(alice.post("NotificationWait", WAIT_BODY)))
        waiting.start()
        held = [e for e in served.transcript("mapi_http") if e["request_type"] == "NotificationWait"]
        while not held and waiting.is_alive():   # bounded by the client's socket timeout
            time.sleep(0.01)
            held = [e for e in served.transcript("mapi_http") if e["request_type"] == "NotificationWait"]
        assert held and held[0]["held"].startswith("DONE on an event")
        assert ews_send_as_bob(served, "wake up") == 200
        waiting.join(30)
        (wait,) = answers
        assert wait.response_code == 0 and struct.unpack("<LLLL", wait.body) == (0, 0, 1, 0)
        rops = execute_rops(alice.post("Execute", execute_body(no_rops_buffer(handles))).body)[1]
        found, _ = parse_notifies(rops[2:struct.unpack_from("<H", rops)[0]])
        assert [flags & 0x0FFF for _, flags, _, _ in found] == [NEW_MAIL, OBJECT_CREATED]
        assert [e["ended"] for e in served.transcript("mapi_http_done")] == ["event"]
    finally:
        served.stop()



class LaterApp:
    """A web app whose answer comes later (a Deferred) and is a response in parts."""

    def __init__(self) -> None:
        self.answer: Any = defer.Deferred()
        self.io: Any = None
        self.sent: list = []

    def handle(self, request):
        return self.answer

    def start(self, io) -> None:
        self.io = io

    def connection_lost(self, reason) -> None:
        self.io = None

    def response_sent(self, request, response, elapsed) -> None:
        self.sent.append(response.status)

    def batch(self):
        return contextlib.nullcontext()

    def __getattr__(self, name):                     # connection_made, connection_lost, ...: nothing to do
        return lambda *args, **kwargs: None


def test_a_response_in_parts_may_come_later_and_is_streamed_as_well():
    app = LaterApp()
    transport = StringTransport()
    protocol: Any = HttpFactory(app, tls=False, clock=task.Clock()).buildProtocol(None)
    protocol.makeConnection(transport)
    protocol.dataReceived(b"POST /mapi/emsmdb/ HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")
    assert transport.value() == b""
    app.answer.callback(HttpResponse(200, "OK", [], chunks=(b"PROCESSING\r\n",), stream=app))
    assert transport.value().endswith(b"c\r\nPROCESSING\r\n\r\n") and app.io is not None
    app.io.write(b"DONE\r\n\r\n")
    app.io.end()
    assert transport.value().endswith(b"8\r\nDONE\r\n\r\n\r\n0\r\n\r\n") and app.sent == [200]
