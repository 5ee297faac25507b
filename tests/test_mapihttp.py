"""MAPI over HTTP (/mapi/emsmdb/) and the ROPs after RopLogon: the sans-IO endpoint in-process with a fixed clock,
then a real `mockex serve` driven by tests/support/mapihttp.py (a client built from the spec alone) and, for the
same ROP buffer, impacket's ncacn_http EcDoConnectEx/EcDoRpcExt2."""
from __future__ import annotations

import random
import struct

import pytest
from impacket.uuid import uuidtup_to_bin

from harness.mailbox.store import MailboxStore
from harness.org import load_org, with_config
from harness.rpc import emsmdb
from harness.rpc.base import CallContext, InProcessDce
from tests.support.mapihttp import IN_PROCESS_NOW as NOW
from tests.support.mapihttp import (
    TAG_MESSAGE_CLASS,
    TAG_MID,
    TAG_SUBJECT,
    Endpoint,
    MapiHttpClient,
    connect_body,
    execute_body,
    execute_rops,
    inbox_rop_buffer,
    new_store,
    parse_rop_response,
)
from tests.support.servers import start_mapi_http_server

ORG = with_config(load_org(), {"mapi_http": {"Enabled": True}}, "test")
ALICE = ORG.find("alice")
ALICE_DN = ORG.legacy_dn(ALICE)
COLUMNS = [TAG_SUBJECT, TAG_MESSAGE_CLASS, TAG_MID, 0x0E1D001F]   # the last: no value (PidTagNormalizedSubject)


def inbox_subjects(store: MailboxStore):
    return [item.subject for item in store.mailbox(ALICE.email).distinguished["inbox"].items.values()]


def done_body(answer) -> bytes:
    assert answer.response_code == 0 and answer.chunks[0] == b"PROCESSING\r\n"
    head, _, body = answer.chunks[1].partition(b"\r\n\r\n")
    assert head.startswith(b"DONE\r\nX-ElapsedTime: 0\r\nX-StartTime: Tue, 14 Nov 2023 22:13:20 GMT")
    return body


def logon_then_inbox(endpoint: Endpoint):
    rops = parse_rop_response(execute_rops(done_body(endpoint.post("Execute", execute_body(
        inbox_rop_buffer(ALICE_DN, None, COLUMNS)))))[1], COLUMNS)
    payload = execute_rops(done_body(endpoint.post("Execute", execute_body(
        inbox_rop_buffer(ALICE_DN, rops.inbox_fid, COLUMNS)))))[1]
    return rops, payload


def test_connect_execute_disconnect_reads_the_inbox_of_the_store():
    endpoint = Endpoint()
    connect = endpoint.post("Connect", connect_body(ALICE_DN))
    body = done_body(connect)
    assert struct.unpack_from("<LLLLL", body) == (0, 0, 60000, 6, 10000)
    assert set(endpoint.cookies) == {"MapiContext", "MapiSequence"}
    first, payload = logon_then_inbox(endpoint)
    assert first.results == {0xFE: 0} and first.handles == [1]
    inbox = endpoint.store.mailbox(ALICE.email).distinguished["inbox"]
    assert first.inbox_fid == b"\x01\x00" + inbox.key.to_bytes(6, "big")     # the store's folder counter
    rops = parse_rop_response(payload, COLUMNS)
    assert rops.results == {0xFE: 0, 0x02: 0, 0x05: 0, 0x12: 0, 0x15: 0}
    assert rops.handles == [2, 3, 4]                   # sequential per session, never reused
    assert rops.row_count == 3 and [row[0] for row in rops.rows] == inbox_subjects(endpoint.store)
    assert {row[1] for row in rops.rows} == {"IPM.Note"} and {row[3] for row in rops.rows} == {None}
    assert [row[2] for row in rops.rows] == [b"\x01\x00" + k.to_bytes(6, "big") for k in inbox.items]
    kept = dict(endpoint.cookies)
    disconnect = endpoint.post("Disconnect", struct.pack("<L", 0))
    assert struct.unpack("<LLL", done_body(disconnect)) == (0, 0, 0)
    assert endpoint.cookies["MapiContext"] == ""                  # expired by the Disconnect answer
    stale = endpoint.post("Execute", execute_body(inbox_rop_buffer(ALICE_DN, None, COLUMNS)), cookies=kept)
    assert stale.response_code == 10


def test_the_same_rop_buffer_over_ecdorpcext2_gives_the_same_answers():
    endpoint = Endpoint()
    endpoint.post("Connect", connect_body(ALICE_DN))
    first, over_mapi = logon_then_inbox(endpoint)
    server = emsmdb.Emsmdb(ORG, store=endpoint.store, clock=lambda: NOW)
    ctx = CallContext(org=ORG, mailbox=ALICE, auth_level=6, association={}, record=lambda kind, **f: None,
                      rng=random.Random(2))
    dce = InProcessDce(server, ctx)
    dce.call(10, emsmdb.build_connect_request(ALICE_DN))
    cxh = emsmdb.parse_connect_response(dce.recv()).cxh
    for buffer in (inbox_rop_buffer(ALICE_DN, None, COLUMNS), None):
        payload = inbox_rop_buffer(ALICE_DN, first.inbox_fid, COLUMNS) if buffer is None else buffer
        rop_bytes, handles = payload[2:struct.unpack_from("<H", payload)[0]], payload
        dce.call(11, emsmdb.build_rpc_request(cxh, payload))
        status, _, answers = emsmdb.parse_rpc_response(dce.recv())
        assert status == 0 and rop_bytes and handles
    assert answers == [over_mapi]


def test_transport_errors_answer_with_their_x_response_code():
    endpoint = Endpoint()
    assert endpoint.post("Execute", b"").response_code == 13                      # no MapiContext
    endpoint.post("Connect", connect_body(ALICE_DN))
    stale = dict(endpoint.cookies)
    endpoint.post("Execute", execute_body(inbox_rop_buffer(ALICE_DN, None, COLUMNS)))
    wrong = endpoint.post("Execute", execute_body(inbox_rop_buffer(ALICE_DN, None, COLUMNS)), cookies=stale)
    assert wrong.response_code == 15 and wrong.chunks == () and b"Invalid sequence" in wrong.body
    assert ("X-ResponseCode", "15") in wrong.headers
    assert endpoint.post("Execute", b"", mailbox=ORG.find("bob")).response_code == 11
    assert endpoint.post("Execute", b"\x00").response_code == 12
    assert endpoint.post("Bogus").response_code == 5
    assert endpoint.post("PING", method="GET").response_code == 2
    assert done_body(endpoint.post("PING")) == b""
    assert Endpoint(org=load_org()).post("Connect", connect_body(ALICE_DN)).response_code == 16


def test_unknown_handles_and_unmodelled_rops():
    endpoint = Endpoint()
    endpoint.post("Connect", connect_body(ALICE_DN))
    logon_then_inbox(endpoint)
    # RopQueryRows on an empty slot; then RopGetAttachmentTable (0x21), which this model does not implement
    rops = struct.pack("<BBBBBH", 0x15, 0, 0, 0, 1, 10) + struct.pack("<BBBBB", 0x21, 0, 0, 0, 0)
    payload = struct.pack("<H", 2 + len(rops)) + rops + b"\xff\xff\xff\xff"
    answer = execute_rops(done_body(endpoint.post("Execute", execute_body(payload))))[1]
    assert answer[2:14] == struct.pack("<BBL", 0x15, 0, 0x4B9) + struct.pack("<BBL", 0x21, 0, emsmdb.EC_NOT_SUPPORTED)


# ---- against a real server ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = start_mapi_http_server(tmp_path_factory, "mapi")
    yield server
    server.stop()


def client(served, user="alice"):
    password = served.user(user)["password"] if user else ""
    return MapiHttpClient(served.host, served.https_port, served.ca_file, f"{ALICE.guid}@contoso.test",
                          user, password)


def test_mapi_http_end_to_end_against_a_real_server(served):
    mapi = client(served)
    connect = mapi.post("Connect", connect_body(ALICE_DN))
    assert connect.status == 200 and connect.response_code == 0
    assert connect.headers["Transfer-Encoding"] == "chunked" and connect.headers["Content-Type"] == \
        "application/mapi-http"
    assert connect.headers["X-ServerApplication"] == "Exchange/15.00.1497.002"
    assert set(mapi.cookies) == {"MapiContext", "MapiSequence"} and "X-StartTime" in connect.done_headers
    first = parse_rop_response(execute_rops(mapi.post("Execute", execute_body(
        inbox_rop_buffer(ALICE_DN, None, COLUMNS))).body)[1], COLUMNS)
    stale_sequence = mapi.cookies["MapiSequence"]
    rops = parse_rop_response(execute_rops(mapi.post("Execute", execute_body(
        inbox_rop_buffer(ALICE_DN, first.inbox_fid, COLUMNS))).body)[1], COLUMNS)
    assert [row[0] for row in rops.rows] == inbox_subjects(new_store())
    mapi.cookies["MapiSequence"] = stale_sequence
    wrong = mapi.post("Execute", execute_body(inbox_rop_buffer(ALICE_DN, None, COLUMNS)))
    assert (wrong.status, wrong.response_code) == (200, 15)
    disconnect = mapi.post("Disconnect", struct.pack("<L", 0))
    assert disconnect.response_code == 0 and struct.unpack("<LLL", disconnect.body) == (0, 0, 0)


def test_mapi_http_without_credentials_is_challenged(served):
    anonymous = client(served, None).post("Connect", connect_body(ALICE_DN))
    assert anonymous.status == 401 and "Basic" in " ".join(anonymous.headers.get_all("WWW-Authenticate"))


def test_the_same_rops_over_rpc_over_http(served):
    if served.https_port != 443:
        pytest.skip("impacket's ncacn_http reaches the proxy on :443 only (run as root or in `unshare -rn`)")
    from tests.support.clients import bind_over_http, ncacn_http
    dce = bind_over_http(ncacn_http(served.host, ORG.personal_server(ALICE), 6001),
                         uuidtup_to_bin((emsmdb.Emsmdb.uuid, "0.81")), "alice", served.user("alice")["password"])
    dce.call(10, emsmdb.build_connect_request(ALICE_DN))
    cxh = emsmdb.parse_connect_response(dce.recv()).cxh
    dce.call(11, emsmdb.build_rpc_request(cxh, inbox_rop_buffer(ALICE_DN, None, COLUMNS)))
    first = parse_rop_response(emsmdb.parse_rpc_response(dce.recv())[2][0], COLUMNS)
    dce.call(11, emsmdb.build_rpc_request(cxh, inbox_rop_buffer(ALICE_DN, first.inbox_fid, COLUMNS)))
    status, _, payloads = emsmdb.parse_rpc_response(dce.recv())
    rops = parse_rop_response(payloads[0], COLUMNS)
    dce.get_rpc_transport().disconnect()
    assert status == 0 and rops.results == {0xFE: 0, 0x02: 0, 0x05: 0, 0x12: 0, 0x15: 0}
    assert [row[0] for row in rops.rows] == inbox_subjects(new_store()) and rops.handles == [2, 3, 4]
