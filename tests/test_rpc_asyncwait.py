"""EcDoAsyncConnectEx on EMSMDB and AsyncEMSMDB's EcDoAsyncWaitEx (MS-OXCRPC 3.3.4.1): the held call, sans-IO on a
DCE/RPC association driven by impacket's sealed client; through the RPC proxy service on a fake clock (two virtual
connections as Outlook opens them, the five-minute answer, a client that leaves); and end to end over real RPC/HTTP
with impacket's ncacn_http transport, where mail bob sends through EWS completes alice's wait."""
from __future__ import annotations

import datetime as dt
import random
import struct
import time
from types import SimpleNamespace
from typing import Any, List, Tuple

from impacket.dcerpc.v5 import rpcrt
from impacket.dcerpc.v5.rpcrt import DCERPCException
from impacket.dcerpc.v5.transport import DCERPCTransport, HTTPTransport
from impacket.uuid import uuidtup_to_bin
from twisted.internet import task

from harness.mailbox.seed import default_seeder
from harness.mailbox.store import MailboxStore, accounts_of
from harness.org import load_org
from harness.protocols import dcerpc, rpcproxy
from harness.rpc import emsmdb, interfaces_for
from harness.rpc.base import CallContext, InProcessDce
from harness.rpc.emsmdb.asyncwait import ASYNC_EMSMDB_UUID, EC_REJECTED, AsyncEmsmdb
from harness.rpc.emsmdb.idl import (
    EcDoAsyncConnectEx,
    EcDoAsyncConnectExResponse,
    EcDoAsyncWaitEx,
    EcDoAsyncWaitExResponse,
)
from harness.services.rpcproxy import RpcProxyService
from harness.transcript import Transcript
from tests.support.clients import bind_over_http, ncacn_http
from tests.support.ews import ews_send_as_bob
from tests.support.mapihttp import (
    NEW_MAIL,
    OBJECT_CREATED,
    no_rops_buffer,
    parse_notifies,
    register_notification_buffer,
)

ORG = load_org()
ALICE, BOB = ORG.find("alice"), ORG.find("bob")
ALICE_DN = ORG.legacy_dn(ALICE)
EMSMDB = uuidtup_to_bin((emsmdb.Emsmdb.uuid, "0.81"))
ASYNC_EMSMDB = uuidtup_to_bin((ASYNC_EMSMDB_UUID, "0.1"))
PRIVACY = rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY
PENDING = 0x00000001


def new_store() -> MailboxStore:
    return MailboxStore(accounts_of(ORG.mailboxes), lambda: dt.datetime(2025, 1, 2, tzinfo=dt.timezone.utc),
                        default_seeder({}))


def deliver_to_alice(store: MailboxStore, subject: str = "hello") -> None:
    store.send(store.mailbox(BOB.email), subject=subject, body="hi", to=[("Alice", ALICE.email)])


def call(dce, opnum: int, stub: bytes) -> bytes:
    dce.call(opnum, stub)
    return dce.recv()


def async_connect_request(cxh: bytes) -> bytes:
    request = EcDoAsyncConnectEx()
    request["cxh"].fromString(cxh)
    return request.getData()


def async_wait_request(acxh: bytes) -> bytes:
    request = EcDoAsyncWaitEx()
    request["acxh"].fromString(acxh)
    request["ulFlagsIn"] = 0
    return request.getData()


def async_wait_result(stub: bytes) -> Tuple[int, int]:
    """(pulFlagsOut, return value)."""
    response = EcDoAsyncWaitExResponse(stub)
    return response["pulFlagsOut"], response["ErrorCode"]


def registered_session(dce) -> Tuple[bytes, List[int], bytes]:
    """EcDoConnectEx as alice, RopLogon + RopRegisterNotification(NewMail | ObjectCreated), EcDoAsyncConnectEx:
    (CXH, the handle table, ACXH)."""
    session = emsmdb.parse_connect_response(call(dce, 10, emsmdb.build_connect_request(ALICE_DN)))
    assert session.status == emsmdb.EC_NONE
    payload = emsmdb.parse_rpc_response(call(dce, 11, emsmdb.build_rpc_request(
        session.cxh, register_notification_buffer(ALICE_DN))))[2][0]
    size = struct.unpack_from("<H", payload)[0]
    assert payload[size - 6:size] == struct.pack("<BBL", 0x29, 1, 0)
    handles = list(struct.unpack_from("<2L", payload, size))
    answer = EcDoAsyncConnectExResponse(call(dce, 14, async_connect_request(session.cxh)))
    assert answer["ErrorCode"] == emsmdb.EC_NONE
    return session.cxh, handles, answer["pacxh"].getData()


def collect_notifies(dce, cxh: bytes, handles: List[int]):
    payload = emsmdb.parse_rpc_response(call(dce, 11, emsmdb.build_rpc_request(cxh, no_rops_buffer(handles))))[2][0]
    return parse_notifies(payload[2:struct.unpack_from("<H", payload)[0]])[0]


# ---- the association, sans-IO -----------------------------------------------------------------------------------
class LoopbackTransport(DCERPCTransport):
    """What impacket's transports look like to DCERPC_v5: send() feeds the association, recv() returns one PDU."""

    def __init__(self, association):
        DCERPCTransport.__init__(self, "mock", 6001)
        self.association = association
        self.replies = bytearray()

    def connect(self):
        return 1

    def disconnect(self):
        return 1

    def send(self, data, forceWriteAndx=0, forceRecv=0):
        self.replies += b"".join(self.association.feed(bytes(data)))

    def recv(self, forceRecv=0, count=0):
        if len(self.replies) < 16:
            raise DCERPCException("no reply")
        length = struct.unpack_from("<H", self.replies, 8)[0]
        pdu = bytes(self.replies[:length])
        del self.replies[:length]
        return pdu


def sealed_association():
    store, transcript = new_store(), Transcript()
    association = dcerpc.DceRpcAssociation(ORG, interfaces_for(ORG, store), transcript.record, random.Random(7),
                                           secondary_address="6001")
    transport = LoopbackTransport(association)
    dce = transport.get_dce_rpc()
    dce.set_credentials("alice", ALICE.password, "CONTOSO")
    dce.set_auth_level(PRIVACY)
    dce.bind(EMSMDB)
    return store, transcript, association, transport, dce


def test_a_wait_is_held_without_a_reply_while_other_calls_go_on_and_an_event_completes_it_sealed():
    store, transcript, association, transport, dce = sealed_association()
    cxh, handles, acxh = registered_session(dce)
    waiter = dce.alter_ctx(ASYNC_EMSMDB)                  # the same association binds AsyncEMSMDB too
    waiter.call(0, async_wait_request(acxh))
    assert transport.replies == b""                       # held: no response PDU
    (held,) = association.take_holds()
    assert association.take_holds() == [] and not held.response.ready()
    assert collect_notifies(dce, cxh, handles) == []      # EMSMDB calls are answered meanwhile
    deliver_to_alice(store)
    assert held.response.ready()
    transport.replies += b"".join(association.complete(held, "event"))
    assert async_wait_result(waiter.recv()) == (PENDING, emsmdb.EC_NONE)   # unsealed with the waiter's context
    assert association.complete(held, "max-wait") == []                   # answered once
    assert [flags & 0x0FFF for _, flags, _, _ in collect_notifies(dce, cxh, handles)] == [NEW_MAIL, OBJECT_CREATED]
    (line,) = transcript.of_kind("rpc_call_held")
    assert (line["interface"], line["opnum"]) == ("asyncemsmdb", 0) and "300000 ms" in line["until"]
    (done,) = transcript.of_kind("rpc_call_completed")
    assert (done["how"], done["status"], done["call_id"]) == ("event", "0x00000000", line["call_id"])


def test_a_pending_event_is_answered_at_once_and_an_unknown_acxh_is_rejected():
    store, _transcript, association, transport, dce = sealed_association()
    _cxh, _handles, acxh = registered_session(dce)
    waiter = dce.alter_ctx(ASYNC_EMSMDB)
    deliver_to_alice(store)
    assert async_wait_result(call(waiter, 0, async_wait_request(acxh))) == (PENDING, emsmdb.EC_NONE)
    stranger = b"\x00" * 4 + bytes(range(16))
    assert async_wait_result(call(waiter, 0, async_wait_request(stranger))) == (PENDING, EC_REJECTED)
    assert association.take_holds() == []


def test_another_users_wait_on_alices_acxh_is_rejected_and_a_disconnected_session_forgets_its_acxh():
    server = emsmdb.Emsmdb(ORG, store=new_store())
    waiter = AsyncEmsmdb(server)

    def context(mailbox):
        return CallContext(org=ORG, mailbox=mailbox, auth_level=6, association={}, record=lambda kind, **f: None,
                           rng=random.Random(2))
    alice = InProcessDce(server, context(ALICE))
    cxh, _handles, acxh = registered_session(alice)
    assert EcDoAsyncConnectExResponse(call(alice, 14, async_connect_request(cxh)))["pacxh"].getData() == acxh
    as_bob = InProcessDce(waiter, context(BOB))
    assert async_wait_result(call(as_bob, 0, async_wait_request(acxh))) == (PENDING, EC_REJECTED)
    as_alice = InProcessDce(waiter, context(ALICE))
    assert async_wait_result(call(as_alice, 0, async_wait_request(acxh))) == (0, emsmdb.EC_NONE)
    assert as_alice.held is not None and as_alice.held.max_wait_ms == 300000
    call(alice, 1, emsmdb.build_disconnect_request(cxh))
    assert async_wait_result(call(as_alice, 0, async_wait_request(acxh))) == (PENDING, EC_REJECTED)


def test_dropped_holds_are_recorded_and_never_answered():
    _store, transcript, association, transport, dce = sealed_association()
    _cxh, _handles, acxh = registered_session(dce)
    dce.alter_ctx(ASYNC_EMSMDB).call(0, async_wait_request(acxh))
    (held,) = association.take_holds()
    assert association.drop_holds("gone") == [held]
    assert association.complete(held, "event") == [] and transport.replies == b""
    (done,) = transcript.of_kind("rpc_call_completed")
    assert (done["how"], done["status"], done["reason"]) == ("dropped", None, "gone")


# ---- the RPC proxy service on a fake clock ----------------------------------------------------------------------
class ClockIO:
    """web.py's ChannelIO on a task.Clock; what the server writes waits in ``inbox``."""
    peer = ("127.0.0.1", 50000)

    def __init__(self, clock: task.Clock):
        self.clock, self.inbox, self.closed = clock, bytearray(), False

    def write(self, data: bytes) -> None:
        self.inbox += data

    def close(self) -> None:
        self.closed = True

    abort = close

    def call_later(self, seconds: float, fn: Any, *args: Any) -> Any:
        return self.clock.callLater(seconds, fn, *args)


class ServiceSocket:
    """The client's end of a channel opened on the RpcProxyService."""

    def __init__(self, channel: Any, io: ClockIO):
        self.channel, self.io = channel, io

    def send(self, data: bytes) -> int:
        self.channel.data_received(bytes(data))
        return len(data)

    sendall = send

    def recv(self, size: int) -> bytes:
        if not self.io.inbox:
            raise ConnectionResetError("nothing to read")
        data = bytes(self.io.inbox[:size])
        del self.io.inbox[:size]
        return data

    def close(self) -> None:
        self.channel.connection_lost("client closed")


class ServiceTunnel(HTTPTransport):
    """impacket's ncacn_http transport whose two HTTP connections are channels of the RpcProxyService."""

    def __init__(self, service: RpcProxyService, clock: task.Clock):
        HTTPTransport.__init__(self, "EX01", 6001)
        self.set_rpc_proxy_url("https://mock/rpc/rpcproxy.dll")
        self.service, self.clock, self.sockets = service, clock, {}

    def create_rpc_in_channel(self):
        self._open("RPC_IN_DATA")

    def create_rpc_out_channel(self):
        self._open("RPC_OUT_DATA")

    def _open(self, method):
        io = ClockIO(self.clock)
        request = SimpleNamespace(method=method, query="EX01:6001", conn=SimpleNamespace(conn_id=len(self.sockets)))
        sock = self.sockets[method] = ServiceSocket(self.service.open_channel(request, ALICE, io), io)
        assert sock.recv(8192) == rpcproxy.CONTINUE
        self._RPCProxyClient__channels[method] = SimpleNamespace(sock=sock, close=sock.close)


class Outlook:
    """Two virtual connections through one proxy service: EMSMDB on one, AsyncEMSMDB on the other."""

    def __init__(self):
        self.clock, self.store, self.transcript = task.Clock(), new_store(), Transcript()
        self.service = RpcProxyService(ORG, self.transcript, random.Random(1),
                                       interfaces=interfaces_for(ORG, self.store))
        self.dce, _ = self.bind(EMSMDB)
        self.cxh, self.handles, acxh = registered_session(self.dce)
        self.waiter, self.wait_tunnel = self.bind(ASYNC_EMSMDB)
        self.waiter.call(0, async_wait_request(acxh))

    def bind(self, interface: bytes):
        tunnel = ServiceTunnel(self.service, self.clock)
        dce = tunnel.get_dce_rpc()
        dce.set_credentials("alice", ALICE.password, "CONTOSO")
        dce.set_auth_level(PRIVACY)
        dce.connect()
        dce.bind(interface)
        return dce, tunnel

    def waiting(self) -> bool:
        return not self.wait_tunnel.sockets["RPC_OUT_DATA"].io.inbox

    def wait_timers(self) -> list:
        return [c for c in self.clock.getDelayedCalls() if "_end_wait" in repr(c) or "_check" in repr(c)]

    def listeners(self) -> list:
        return self.store.mailbox(ALICE.email).events.listeners


def test_through_the_proxy_an_event_completes_the_wait_on_the_other_virtual_connection():
    outlook = Outlook()
    assert outlook.waiting() and len(outlook.listeners()) == 1
    assert collect_notifies(outlook.dce, outlook.cxh, outlook.handles) == []   # the other connection works
    outlook.clock.advance(299)
    deliver_to_alice(outlook.store)
    assert outlook.waiting()                              # asked once the store's operation is over
    outlook.clock.advance(0)
    assert async_wait_result(outlook.waiter.recv()) == (PENDING, emsmdb.EC_NONE)
    assert outlook.wait_timers() == [] and outlook.listeners() == []
    notified = collect_notifies(outlook.dce, outlook.cxh, outlook.handles)
    assert [flags & 0x0FFF for _, flags, _, _ in notified] == [NEW_MAIL, OBJECT_CREATED]
    assert [e["how"] for e in outlook.transcript.events if e["kind"] == "rpc_call_completed"] == ["event"]


def test_through_the_proxy_a_wait_without_an_event_is_answered_after_five_minutes():
    outlook = Outlook()
    outlook.clock.advance(299.9)
    assert outlook.waiting()
    outlook.clock.advance(0.1)
    assert async_wait_result(outlook.waiter.recv()) == (0, emsmdb.EC_NONE)
    assert outlook.wait_timers() == [] and outlook.listeners() == []
    assert [e["how"] for e in outlook.transcript.events if e["kind"] == "rpc_call_completed"] == ["max-wait"]


def test_through_the_proxy_a_client_that_leaves_cancels_the_wait():
    outlook = Outlook()
    outlook.wait_tunnel.sockets["RPC_IN_DATA"].close()
    assert outlook.wait_timers() == [] and outlook.listeners() == []
    deliver_to_alice(outlook.store)
    outlook.clock.advance(300)
    completed = [e for e in outlook.transcript.events if e["kind"] == "rpc_call_completed"]
    assert [(e["how"], e["status"]) for e in completed] == [("dropped", None)]
    assert len(collect_notifies(outlook.dce, outlook.cxh, outlook.handles)) == 2   # the session itself lives on


# ---- end to end over RPC/HTTP -------------------------------------------------------------------------------------
def test_mail_bob_sends_through_ews_completes_alices_ecdoasyncwaitex(server443, socket_timeout):
    before = len(server443.transcript("rpc_call_held")), len(server443.transcript("rpc_call_completed"))
    password = server443.user("alice")["password"]
    target = ORG.personal_server(ALICE)
    dce = bind_over_http(ncacn_http(server443.host, target, 6001), EMSMDB, "alice", password)
    cxh, handles, acxh = registered_session(dce)
    waiter = bind_over_http(ncacn_http(server443.host, target, 6001), ASYNC_EMSMDB, "alice", password)
    waiter.call(0, async_wait_request(acxh))
    deadline = time.monotonic() + 20               # bounded: the server records the hold as it reads the call
    while len(server443.transcript("rpc_call_held")) == before[0] and time.monotonic() < deadline:
        time.sleep(0.01)
    (held,) = server443.transcript("rpc_call_held")[before[0]:]
    assert (held["interface"], held["opnum"]) == ("asyncemsmdb", 0)
    assert ews_send_as_bob(server443, "wake up") == 200
    assert async_wait_result(waiter.recv()) == (PENDING, emsmdb.EC_NONE)
    notified = collect_notifies(dce, cxh, handles)
    assert [flags & 0x0FFF for _, flags, _, _ in notified] == [NEW_MAIL, OBJECT_CREATED]
    assert [e["how"] for e in server443.transcript("rpc_call_completed")[before[1]:]] == ["event"]
    waiter.get_rpc_transport().disconnect()
    dce.get_rpc_transport().disconnect()
