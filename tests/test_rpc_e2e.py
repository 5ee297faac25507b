"""Outlook Anywhere end to end against the real `mockex serve` on 127.0.0.2:443 (the server443 fixture):

- unmodified exchanger.py for the NSPI commands test_exchanger.py does not run (dump-tables by GUID, guid-known,
  dnt-lookup), checked against the org fixture record by record;
- our EMSMDB client halves (harness.rpc.emsmdb) over impacket's real ncacn_http transport at auth level 6;
- hostile bytes on the IN and OUT channels from raw TLS sockets (hand-made and hypothesis-generated): each ends in
  a fault, a refusal or a closed channel plus a transcript line, never a traceback in serve.log, and a fresh
  exchanger.py still connects afterwards.

The raw-socket client (``RawChannel``, ``open_virtual_connection``) is tests/support/rpchttp.py's.
"""
from __future__ import annotations

import ast
import os
import random
import socket
import ssl
import struct
import time
import uuid
from typing import List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from impacket.dcerpc.v5 import nspi, rpcrt
from impacket.dcerpc.v5.dtypes import NULL
from impacket.uuid import uuidtup_to_bin

from harness.org import load_org
from harness.protocols import rts
from harness.protocols.dcerpc import (
    AUTH3,
    AUTHN_WINNT,
    BIND,
    BIND_ACK,
    BIND_NAK,
    COMMON,
    FAULT,
    NDR_SYNTAX,
    PFC_FIRST_FRAG,
    PFC_LAST_FRAG,
    REQUEST,
    REQUEST_FIELDS,
    RESPONSE,
    SEC_TRAILER,
)
from harness.rpc import emsmdb
from harness.rpc.addressbook import AddressBook
from tests.support.clients import bind_over_http, exchanger, ncacn_http, requires_exchanger, teletex_stat
from tests.support.fuzz import rts_pdus
from tests.support.rpchttp import (
    IO_TIMEOUT,
    RawChannel,
    RawVirtualConnection,
    conn_a1,
    conn_b1,
    open_virtual_connection,
)
from tests.support.transcript import TranscriptTail

ORG = load_org()
BOOK = AddressBook(ORG)
EMSMDB = uuidtup_to_bin((emsmdb.Emsmdb.uuid, "0.81"))
OUTLOOK_2003 = (11, 0, 8303, 0)
SEPARATOR = "======================="        # between the objects exchanger.py prints
AUTH_CONTEXT_ID = 79231                     # impacket's auth_context_id for presentation context 0

pytestmark = [pytest.mark.root, requires_exchanger]


@pytest.fixture(autouse=True)
def no_traceback_in_the_server_log(server443):
    """Whatever a test sends, the server must not log a Python traceback (an escaped exception) meanwhile."""
    path = os.path.join(server443.state_dir, "serve.log")
    start = os.path.getsize(path)
    yield
    with open(path, "rb") as handle:
        handle.seek(start)
        log = handle.read().decode("utf-8", "replace")
    assert "Traceback" not in log and "Unhandled Error" not in log, log[-3000:]


def assert_next_client_connects(served):
    """The reactor is not stuck: a fresh, unmodified exchanger.py run still lists the address books."""
    result = exchanger(served, ["nspi", "list-tables"])
    assert result.returncode == 0 and "All Users" in result.stdout, result.stdout + result.stderr


# ---- exchanger.py output ---------------------------------------------------------------------------------------
def printed_objects(stdout: str) -> List[dict]:
    """exchanger's object dumps: one {attribute: text} per block between separator lines."""
    objects = []
    for block in stdout.split(SEPARATOR):
        fields = {}
        for line in block.splitlines():
            name, colon, value = line.partition(": ")
            if colon and not line.startswith(("[*]", "#", "Impacket")):
                fields[name] = value
        if fields:
            objects.append(fields)
    return objects


def minimal_record(mailbox) -> dict:
    """What exchanger's MINIMAL lookup prints for a fixture mailbox, as far as the fixture decides it."""
    return {"mailNickname": mailbox.alias, "mail": mailbox.email,
            "objectGUID": str(BOOK.by_mailbox(mailbox).guid)}


def container_guid(name: str) -> str:
    return str(next(c.obj.guid for c in BOOK.containers if c.obj.display_name == name))


def in_display_order(mailboxes) -> list:
    return sorted(mailboxes, key=lambda m: m.display_name.lower())


@pytest.mark.parametrize("basic", [False, True], ids=["ntlm", "basic"])
@pytest.mark.parametrize("name, kinds", [("All Users", ("user", "shared", "room", "equipment")),
                                         ("All Rooms", ("room", "equipment"))])
def test_dump_tables_by_container_guid(server443, name, kinds, basic):
    options = ["-basic", "-rpc-hostname", server443.user("alice")["rpc_server"]] if basic else []
    result = exchanger(server443, ["nspi", "dump-tables", "-guid", container_guid(name)], options=options)
    assert result.returncode == 0, result.stderr
    assert f"Lookuping {name}" in result.stdout
    members = in_display_order(m for m in ORG.mailboxes if m.kind in kinds)
    printed = printed_objects(result.stdout)
    assert [{k: o.get(k) for k in ("mailNickname", "mail", "objectGUID")} for o in printed] == \
           [minimal_record(m) for m in members]


def test_guid_known_finds_alice_by_her_object_guid(server443):
    alice = ORG.find("alice")
    result = exchanger(server443, ["nspi", "guid-known", "-guid", str(BOOK.by_mailbox(alice).guid)])
    assert result.returncode == 0, result.stderr
    (printed,) = printed_objects(result.stdout)
    assert {k: printed.get(k) for k in ("mailNickname", "mail", "objectGUID")} == minimal_record(alice)
    assert printed["whenCreated"] == "2019-11-04 09:30:00"


def test_guid_known_with_an_unknown_guid_says_not_found(server443):
    result = exchanger(server443, ["nspi", "guid-known", "-guid", "00112233-4455-6677-8899-aabbccddeeff"])
    assert "Object with specified GUID not found!" in result.stdout + result.stderr


def test_dnt_lookup_prints_every_object_by_its_mid(server443):
    """One window of MIds from the last recipient down to the first address list (exchanger walks downwards)."""
    recipients = {BOOK.by_mailbox(m).mid: m for m in ORG.mailboxes}
    last = max(recipients)
    result = exchanger(server443, ["nspi", "dnt-lookup", "-start-dnt", str(last), "-stop-dnt", "3840",
                                   "-rows-per-request", str(last - 3840 + 1)])
    assert result.returncode == 0, result.stderr
    printed = {int(o["PR_INSTANCE_KEY"]): o for o in printed_objects(result.stdout)}
    containers = {c.obj.mid: c.obj for c in BOOK.containers if c.container_id}
    assert sorted(printed) == sorted([*recipients, *containers])
    for mid, mailbox in recipients.items():
        shown = printed[mid]
        assert {k: shown.get(k) for k in ("mailNickname", "mail", "objectGUID")} == minimal_record(mailbox)
        assert shown["PR_DISPLAY_NAME"] == mailbox.display_name
        assert shown["PR_ENTRYID"] == ORG.legacy_dn(mailbox)
        assert shown["msExchMailboxGuid"] == mailbox.guid
        proxies = [f"SMTP:{mailbox.email}"] + [f"smtp:{alias}" for alias in mailbox.aliases]
        assert ast.literal_eval(shown["proxyAddresses"]) == proxies
        assert (shown.get("title"), shown.get("department")) == (mailbox.title or None, mailbox.department or None)
    for mid, container in containers.items():
        assert printed[mid]["PR_DISPLAY_NAME"] == container.display_name
        assert printed[mid]["objectGUID"] == str(container.guid)
    assert f"# MIds {last}-3840:" in result.stdout


# ---- EMSMDB: our client halves over impacket's ncacn_http ------------------------------------------------------
def emsmdb_session(served, user: str, target: str):
    """impacket's RPC-over-HTTP transport to port 6001, EMSMDB bound with NTLM at privacy (level 6)."""
    return bind_over_http(ncacn_http(served.host, target, 6001), EMSMDB, user, served.user(user)["password"])


def call(dce, opnum: int, stub: bytes) -> bytes:
    dce.call(opnum, stub)
    return dce.recv()


def test_alice_connects_and_logs_on_over_rpc_over_http(server443, socket_timeout):
    tail = TranscriptTail(server443)
    alice = ORG.find("alice")
    dce = emsmdb_session(server443, "alice", ORG.personal_server(alice))
    session = emsmdb.parse_connect_response(call(dce, 10, emsmdb.build_connect_request(ORG.legacy_dn(alice))))
    assert session.status == emsmdb.EC_NONE and session.display_name == alice.display_name
    assert session.server_version == ORG.version_parts
    logon = emsmdb.parse_logon_response(call(dce, 11, emsmdb.build_logon_request(session.cxh, ORG.legacy_dn(alice))))
    assert (logon.status, logon.rop_status) == (emsmdb.EC_NONE, emsmdb.EC_NONE)
    assert len(logon.folder_ids) == 13 and len(set(logon.folder_ids)) == 13
    assert logon.mailbox_guid == uuid.UUID(alice.guid) and logon.response_flags & emsmdb.RESPONSE_OWNER_RIGHT
    status, cleared = emsmdb.parse_disconnect_response(call(dce, 1, emsmdb.build_disconnect_request(session.cxh)))
    assert (status, cleared) == (emsmdb.EC_NONE, bytes(20))
    dce.get_rpc_transport().disconnect()
    (bind,) = tail.events("rpc_bind")
    assert (bind["interface"], bind["auth_level"], bind["result"]) == ("emsmdb", 6, "accepted")
    assert [(c["op"], c["status"]) for c in tail.events("rpc_call")] == [
        ("EcDoConnectEx", "0x00000000"), ("EcDoRpcExt2", "0x00000000"), ("EcDoDisconnect", "0x00000000")]
    assert {c["port"] for c in tail.events("rpc_channel")} == {6001}


def test_outlook_2003_is_refused_with_ec_client_ver_disallowed(server443, socket_timeout):
    alice = ORG.find("alice")
    dce = emsmdb_session(server443, "alice", ORG.cas.name)
    refused = emsmdb.parse_connect_response(call(dce, 10, emsmdb.build_connect_request(ORG.legacy_dn(alice),
                                                                                        OUTLOOK_2003)))
    dce.get_rpc_transport().disconnect()
    assert refused.status == emsmdb.EC_CLIENT_VER_DISALLOWED == 0x4DF
    assert refused.cxh == bytes(20) and refused.best_version == emsmdb.DEFAULT_MIN_CLIENT_VERSION


def test_daves_moved_mailbox_gets_ec_wrong_server_with_the_ex02_dn(server443, socket_timeout):
    dave = ORG.find("dave")
    dce = emsmdb_session(server443, "dave", ORG.personal_server(dave))
    session = emsmdb.parse_connect_response(call(dce, 10, emsmdb.build_connect_request(ORG.legacy_dn(dave))))
    assert session.status == emsmdb.EC_NONE
    logon = emsmdb.parse_logon_response(call(dce, 11, emsmdb.build_logon_request(session.cxh, ORG.legacy_dn(dave))))
    dce.get_rpc_transport().disconnect()
    assert (logon.status, logon.rop_status) == (emsmdb.EC_NONE, emsmdb.EC_WRONG_SERVER) == (0, 0x478)
    assert logon.server_dn == ("/o=Contoso/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Configuration"
                               "/cn=Servers/cn=EX02")
    assert logon.folder_ids == ()


def raw_channel(served, method: str, **kwargs) -> RawChannel:
    alice = served.user("alice")
    return RawChannel(served.host, served.ca_file, method, "alice", alice["password"], **kwargs)


def raw_virtual_connection(served, rng: random.Random, **kwargs) -> RawVirtualConnection:
    alice = served.user("alice")
    return open_virtual_connection(served.host, served.ca_file, "alice", alice["password"], rng, **kwargs)


# ---- DCE/RPC PDUs built by hand ----------------------------------------------------------------------------------
def dce_pdu(ptype: int, body: bytes, *, call_id: int = 1, flags: int = PFC_FIRST_FRAG | PFC_LAST_FRAG,
            auth_length: int = 0) -> bytes:
    return COMMON.pack(5, 0, ptype, flags, b"\x10\x00\x00\x00", COMMON.size + len(body), auth_length,
                       call_id) + body


def nspi_bind(token: bytes = b"") -> bytes:
    """A bind for NSPI v56 over NDR; with a token, an NTLM sec_trailer at privacy (level 6, exchanger's) carries it."""
    body = struct.pack("<HHLB3x", 4280, 4280, 0, 1) + struct.pack("<HBx", 0, 1) + nspi.MSRPC_UUID_NSPI + NDR_SYNTAX
    if token:
        body += SEC_TRAILER.pack(AUTHN_WINNT, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY, 0, 0, AUTH_CONTEXT_ID) + token
    return dce_pdu(BIND, body, auth_length=len(token))


def request(opnum: int, stub: bytes, *, call_id: int = 2, verifier: bytes = b"",
            level: int = rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY) -> bytes:
    body = REQUEST_FIELDS.pack(len(stub), 0, opnum) + stub
    if verifier:
        pad = -(COMMON.size + len(body)) % 4
        body += bytes(pad) + SEC_TRAILER.pack(AUTHN_WINNT, level, pad, 0, AUTH_CONTEXT_ID) + verifier
    return dce_pdu(REQUEST, body, call_id=call_id, auth_length=len(verifier))


def nspi_bind_stub() -> bytes:
    """NspiBind's request stub, as impacket's hNspiBind builds it."""
    stub = nspi.NspiBind()
    stub["dwFlags"] = 0
    stub["pStat"] = teletex_stat()
    stub["pServerGuid"] = NULL
    return stub.getData()


def fault_status(pdu: bytes) -> int:
    assert pdu[2] == FAULT, f"PDU type {pdu[2]} is not a fault"
    return struct.unpack_from("<L", pdu, 24)[0]


def out_pdus(data: bytes) -> List[bytes]:
    """Cut an OUT stream into PDUs, checking each is whole and well-formed (version 5.0, little-endian)."""
    pdus = []
    while data:
        assert len(data) >= COMMON.size and data[:2] == b"\x05\x00" and data[4] == 0x10, data[:32]
        (length,) = struct.unpack_from("<H", data, 8)
        assert COMMON.size <= length <= len(data), f"a torn PDU: frag_length {length}, {len(data)} bytes left"
        pdus.append(data[:length])
        data = data[length:]
    return pdus


def closed_with(tail: TranscriptTail, label: str) -> dict:
    (closed,) = tail.wait_for(lambda e: e["kind"] == "rpc_vc_closed" and e.get("vc") == label)
    return closed


def channel_conn(tail: TranscriptTail, channel: RawChannel) -> int:
    """The server's connection id for one of our channels, found by our source port."""
    (opened,) = tail.wait_for(lambda e: e["kind"] == "rpc_channel" and e.get("peer", "").endswith(f":{channel.port}"))
    return opened["conn"]


def assert_no_escaped_errors(tail: TranscriptTail) -> None:
    """An exception the protocol code did not expect is caught and recorded; hostile input must not cause one."""
    assert not tail.events("rpc_internal_error")
    assert not [e for e in tail.events("rpc_fault") if e.get("name") == "nca_s_fault_unspec"]


@pytest.fixture
def rng(request):
    return random.Random(request.node.name)


# ---- hostile bytes: hand-made ----------------------------------------------------------------------------------
def test_garbage_frame_on_in_closes_the_virtual_connection(server443, rng):
    tail = TranscriptTail(server443)
    vc = raw_virtual_connection(server443, rng)
    vc.in_channel.send(b"\x05\x00\x00\x03\x10\x00\x00\x00\x08\x00" + bytes(30))     # frag_length 8 < 16
    assert vc.out_channel.read_until_closed() == b""
    (error,) = tail.wait_for(lambda e: e["kind"] == "rpc_proxy_error")
    assert "frag_length 8 is shorter than the 16-byte common header" in error["reason"]
    assert closed_with(tail, vc.label)["reason"] == error["reason"]
    vc.close()
    assert_next_client_connects(server443)


def test_dce_rpc_where_conn_b1_belongs_closes_the_in_channel(server443):
    tail = TranscriptTail(server443)
    inbound = raw_channel(server443, "RPC_IN_DATA")
    inbound.send(nspi_bind())
    assert inbound.read_until_closed() == b""
    conn = channel_conn(tail, inbound)
    (error,) = tail.wait_for(lambda e: e["kind"] == "rpc_proxy_error" and e["conn"] == conn)
    assert error["reason"] == "DCE/RPC PDU (type 11) where CONN/B1 was expected"
    inbound.close()


def test_dce_rpc_as_the_out_channel_body_closes_it(server443):
    tail = TranscriptTail(server443)
    bind = nspi_bind()
    out = raw_channel(server443, "RPC_OUT_DATA", length=len(bind))
    out.send(bind)
    assert out.read_until_closed() == b""
    conn = channel_conn(tail, out)
    (error,) = tail.wait_for(lambda e: e["kind"] == "rpc_proxy_error" and e["conn"] == conn)
    assert error["reason"] == "DCE/RPC PDU (type 11) where CONN/A1 was expected"
    out.close()


def test_anything_after_conn_a1_on_out_closes_the_virtual_connection(server443, rng):
    tail = TranscriptTail(server443)
    vc = raw_virtual_connection(server443, rng)
    vc.out_channel.sock.settimeout(1.0)
    try:
        vc.out_channel.send(nspi_bind())
        vc.out_channel.read_until_closed()
    except socket.timeout:
        pytest.fail("the server neither answered nor closed the OUT channel")
    finally:
        vc.close()
    (error,) = tail.wait_for(lambda e: e["kind"] == "rpc_proxy_error")
    assert error["reason"] == "DCE/RPC PDU on the OUT channel"
    assert closed_with(tail, vc.label)["reason"] == error["reason"]


def test_truncated_fragment_then_hang_up_tears_the_virtual_connection_down(server443, rng):
    tail = TranscriptTail(server443)
    vc = raw_virtual_connection(server443, rng)
    vc.in_channel.send(nspi_bind()[:50])            # frag_length announces 72 bytes
    time.sleep(0.2)
    assert not tail.events("rpc_bind", "rpc_fault")
    vc.in_channel.close()
    assert closed_with(tail, vc.label)["reason"] == "IN channel closed"
    assert vc.out_channel.read_until_closed() == b""
    vc.out_channel.close()


def test_fragment_cut_short_by_its_frag_length_is_refused(server443, rng):
    """A bind whose frag_length stops inside the presentation context list gets a bind_nak; the leftover bytes
    start an incomplete next PDU, which the hang-up discards."""
    tail = TranscriptTail(server443)
    vc = raw_virtual_connection(server443, rng)
    bind = bytearray(nspi_bind())
    struct.pack_into("<H", bind, 8, 40)
    vc.in_channel.send(bytes(bind))
    nak = vc.out_channel.read_pdu()
    assert nak[2] == BIND_NAK
    (refused,) = tail.wait_for(lambda e: e["kind"] == "rpc_bind")
    assert refused["result"] == "nak: reason_not_specified" and "truncated" in refused["reason"]
    vc.close()
    closed_with(tail, vc.label)
    assert_no_escaped_errors(tail)
    assert_next_client_connects(server443)


@pytest.mark.parametrize("token, why", [
    (b"NTLMSSP\x00\x01\x00\x00", "not an NTLM message"),
    (b"NTLMSSQ\x00\x01\x00\x00\x00\x35\x82\x88\xe0", "not an NTLM message"),
    (b"NTLMSSP\x00\x03\x00\x00\x00" + bytes(60), "not a NEGOTIATE message"),
], ids=["cut-at-12-bytes", "bad-signature", "authenticate-first"])
def test_bind_with_a_broken_ntlm_token_gets_bind_nak(server443, rng, token, why):
    tail = TranscriptTail(server443)
    vc = raw_virtual_connection(server443, rng, auth="ntlm")
    vc.in_channel.send(nspi_bind(token=token))
    nak = vc.out_channel.read_pdu()
    assert nak[2] == BIND_NAK and struct.unpack_from("<H", nak, 16)[0] == 0     # reason_not_specified
    (refused,) = tail.wait_for(lambda e: e["kind"] == "rpc_bind" and e.get("vc") == vc.label)
    assert refused["reason"] == f"NTLM NEGOTIATE refused: {why}"
    assert {a["scheme"] for a in tail.events("auth")} == {"NTLM"}
    vc.close()
    assert_next_client_connects(server443)


@pytest.mark.parametrize("level, how", [(rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY, "signed"),
                                        (rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY, "sealed")])
def test_request_with_a_bad_verifier_gets_access_denied_and_a_close(server443, socket_timeout, rng, level, how):
    """A genuine NTLM bind by impacket, then a request whose verifier is random bytes."""
    tail = TranscriptTail(server443)
    dce = bind_over_http(ncacn_http(server443.host), nspi.MSRPC_UUID_NSPI, "alice", server443.user("alice")["password"],
                         level)
    transport = dce.get_rpc_transport()
    transport.send(request(0, nspi_bind_stub(), verifier=b"\x01\x00\x00\x00" + rng.randbytes(12), level=level))
    assert fault_status(transport.recv()) == 0x5
    (fault,) = tail.wait_for(lambda e: e["kind"] == "rpc_fault")
    assert (fault["name"], fault["close"]) == ("rpc_s_access_denied", True)
    assert fault["reason"] == f"request verifier does not match ({how})"
    (ended,) = tail.wait_for(lambda e: e["kind"] == "rpc_close")
    assert ended["reason"] == fault["reason"]
    (closed,) = tail.wait_for(lambda e: e["kind"] == "rpc_vc_closed")
    assert closed["reason"] == "the DCE/RPC association closed"
    transport.disconnect()
    assert_next_client_connects(server443)


def test_mismatched_cookies_never_pair(server443, rng):
    """CONN/A1 and CONN/B1 with different virtual-connection cookies: two half connections, no CONN/C2."""
    tail = TranscriptTail(server443)
    out = raw_channel(server443, "RPC_OUT_DATA")
    out.send(conn_a1(rng.randbytes(16), rng.randbytes(16)))
    assert out.head().startswith(b"HTTP/1.1 200 Success")
    assert rts.decode(out.read_pdu()).name == "CONN/A3"
    inbound = raw_channel(server443, "RPC_IN_DATA")
    inbound.send(conn_b1(rng.randbytes(16), rng.randbytes(16), rng.randbytes(16)))
    received = tail.wait_for(lambda e: e["kind"] == "rts" and e["pdu"] == "CONN/B1")
    assert received
    out.sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        out.read_pdu()
    assert "CONN/C2" not in {e["pdu"] for e in tail.events("rts")}
    labels = {e["vc"] for e in tail.events("rts")}
    assert len(labels) == 2
    inbound.close()
    out.close()
    deadline = time.monotonic() + IO_TIMEOUT
    while len(tail.events("rpc_vc_closed")) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert {e["vc"] for e in tail.events("rpc_vc_closed")} == labels
    assert_next_client_connects(server443)


def test_a_second_in_channel_for_an_open_connection_is_refused_and_the_first_keeps_working(server443, rng):
    tail = TranscriptTail(server443)
    victim = raw_virtual_connection(server443, rng)
    intruder = raw_channel(server443, "RPC_IN_DATA")
    intruder.send(conn_b1(victim.cookie, rng.randbytes(16), rng.randbytes(16)))
    assert intruder.read_until_closed() == b""
    (error,) = tail.wait_for(lambda e: e["kind"] == "rpc_proxy_error")
    assert error["reason"] == "a second IN channel for the virtual connection"
    victim.in_channel.send(nspi_bind())
    ack = victim.out_channel.read_pdu()
    assert ack[2] == BIND_ACK
    assert not tail.events("rpc_vc_closed")
    victim.close()
    intruder.close()


def test_flow_control_ack_for_an_unknown_channel_is_ignored(server443, rng):
    tail = TranscriptTail(server443)
    vc = raw_virtual_connection(server443, rng)
    vc.in_channel.send(rts.encode(rts.flow_control_ack_with_destination(rts.FD_OUT_PROXY, 0, 65536,
                                                                        rng.randbytes(16))))
    (ignored,) = tail.wait_for(lambda e: e["kind"] == "rts_ignored")
    assert ignored["vc"] == vc.label and "unknown channel cookie" in ignored["reason"]
    vc.in_channel.send(nspi_bind())
    assert vc.out_channel.read_pdu()[2] == BIND_ACK
    vc.close()


def test_request_before_bind_faults_and_closes(server443, rng):
    tail = TranscriptTail(server443)
    vc = raw_virtual_connection(server443, rng)
    vc.in_channel.send(request(0, nspi_bind_stub()))
    (fault,) = out_pdus(vc.out_channel.read_until_closed())
    assert fault_status(fault) == 0x1C01000B                     # nca_s_proto_error
    (event,) = tail.wait_for(lambda e: e["kind"] == "rpc_fault")
    assert (event["reason"], event["close"], event["vc"]) == ("request before bind", True, vc.label)
    vc.close()


def test_auth3_without_a_bind_faults_and_closes(server443, rng):
    tail = TranscriptTail(server443)
    vc = raw_virtual_connection(server443, rng)
    trailer = SEC_TRAILER.pack(AUTHN_WINNT, 6, 0, 0, AUTH_CONTEXT_ID)
    vc.in_channel.send(dce_pdu(AUTH3, b"    " + trailer + b"NTLMSSP\x00",
                               auth_length=8))
    (fault,) = out_pdus(vc.out_channel.read_until_closed())
    assert fault[2] == FAULT
    assert tail.wait_for(lambda e: e["kind"] == "rpc_fault" and e["close"])
    vc.close()


# ---- hostile bytes: generated ----------------------------------------------------------------------------------
FUZZ = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
OPENINGS = {"RPC_IN_DATA": "CONN/B1", "RPC_OUT_DATA": "CONN/A1"}
REACTIONS = ("rpc_bind", "rpc_fault", "rpc_auth", "rpc_pdu_ignored", "rpc_close", "rpc_call")


@pytest.mark.parametrize("method", ["RPC_IN_DATA", "RPC_OUT_DATA"])
@FUZZ
@given(pdu=rts_pdus.filter(lambda p: p.name not in OPENINGS.values()))
def test_random_rts_pdu_as_a_channel_opening_closes_the_channel(server443, method, pdu):
    tail = TranscriptTail(server443)
    data = rts.encode(pdu)
    channel = raw_channel(server443, method, length=len(data) if method == "RPC_OUT_DATA" else None)
    try:
        channel.send(data)
        assert channel.read_until_closed() == b""
    finally:
        channel.close()
    conn = channel_conn(tail, channel)
    (error,) = tail.wait_for(lambda e: e["kind"] == "rpc_proxy_error" and e["conn"] == conn)
    assert error["reason"] == f"{pdu.name} where {OPENINGS[method]} was expected"


def send_until_closed(channel: RawChannel, pdus: List[bytes]) -> None:
    """Send PDU after PDU; once the server has closed the channel, the rest cannot be sent."""
    for pdu in pdus:
        try:
            channel.send(pdu)
        except (OSError, ssl.SSLError):
            return


def hang_up(tail: TranscriptTail, vc: RawVirtualConnection) -> None:
    """Close our IN channel: the server tears the virtual connection down and closes OUT after whole PDUs."""
    vc.in_channel.close()
    closed_with(tail, vc.label)
    out_pdus(vc.out_channel.read_until_closed())


PTYPES = st.sampled_from([REQUEST, RESPONSE, FAULT, BIND, BIND_ACK, BIND_NAK, 14, 15, AUTH3, 17, 18, 19])
any_pdus = st.builds(lambda ptype, flags, call_id, body, auth_length: dce_pdu(
    ptype, body, call_id=call_id, flags=flags, auth_length=min(auth_length, len(body))),
    PTYPES, st.integers(0, 255), st.integers(0, 2 ** 32 - 1), st.binary(max_size=200), st.integers(0, 64))
# Requests on presentation context 0 reach the NSPI stubs once the (unauthenticated) bind went through.
nspi_requests = st.builds(lambda opnum, stub, call_id: request(opnum, stub, call_id=call_id),
                          st.integers(0, 24), st.binary(max_size=300), st.integers(1, 50))
well_framed_pdus = st.one_of(any_pdus, nspi_requests)


def hostile_dce_rpc_session(served, pdus: List[bytes], bound: bool, seed: int) -> None:
    """Every well-framed PDU is answered, refused or ignored on the record; whatever comes back on OUT is
    well-formed; the association ends cleanly when we hang up."""
    vc = raw_virtual_connection(served, random.Random(seed))
    try:
        if bound:
            vc.in_channel.send(nspi_bind())
            assert vc.out_channel.read_pdu()[2] == BIND_ACK
        tail = TranscriptTail(served)
        send_until_closed(vc.in_channel, pdus)
        assert tail.wait_for(lambda e: e.get("vc") == vc.label and e["kind"] in REACTIONS), \
            f"no transcript line for {pdus[0][:24].hex()}"
        hang_up(tail, vc)
    finally:
        vc.close()
    assert_no_escaped_errors(tail)


@FUZZ
@given(pdus=st.lists(well_framed_pdus, min_size=1, max_size=4), bound=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_random_dce_rpc_pdus_on_an_open_connection_each_get_a_transcript_line(server443, pdus, bound, seed):
    hostile_dce_rpc_session(server443, pdus, bound, seed)


@pytest.mark.slow
@settings(FUZZ, max_examples=1000)
@given(pdus=st.lists(well_framed_pdus, min_size=1, max_size=8), bound=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_long_fuzz_of_dce_rpc_pdus_on_an_open_connection(server443, pdus, bound, seed):
    hostile_dce_rpc_session(server443, pdus, bound, seed)


@FUZZ
@given(data=st.binary(min_size=1, max_size=600), seed=st.integers(0, 2 ** 32 - 1))
def test_random_bytes_on_an_open_in_channel_never_escape(server443, data, seed):
    tail = TranscriptTail(server443)
    vc = raw_virtual_connection(server443, random.Random(seed))
    try:
        send_until_closed(vc.in_channel, [data])
        hang_up(tail, vc)
    finally:
        vc.close()
    assert_no_escaped_errors(tail)


def test_the_server_still_serves_after_the_generated_traffic(server443):
    assert_next_client_connects(server443)
