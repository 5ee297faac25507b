"""EMSMDB: our client halves against the server handler, plus impacket's dce.request over InProcessDce."""
import random
import struct
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from impacket.dcerpc.v5 import oxabref

from harness.org import load_org
from harness.rpc import emsmdb as E
from harness.rpc.base import NCA_S_FAULT_CONTEXT_MISMATCH, NCA_S_OP_RNG_ERROR, CallContext, InProcessDce, RpcFault
from harness.rpc.rfr import Rfr
from tests.support.fuzz import SHARED_SESSION_FUZZ, tolerant_caller

ORG = load_org()
SERVER = E.Emsmdb(ORG, clock=lambda: 1700000000.0)
OUTLOOK_2003 = (11, 0, 8303, 0)


def make_ctx(user="alice", auth_level=6, events=None):
    return CallContext(org=ORG, mailbox=ORG.find(user) if user else None, auth_level=auth_level, association={},
                       record=lambda kind, **fields: events.append({"kind": kind, **fields}) if events is not None
                       else None, rng=random.Random(5))


def dn(name):
    return ORG.legacy_dn(ORG.find(name))


def connect(ctx, user_dn, version=E.OUTLOOK_2013_VERSION, server=SERVER):
    return E.parse_connect_response(server.call(10, E.build_connect_request(user_dn, version), ctx))


def logon(ctx, cxh, essdn):
    return E.parse_logon_response(SERVER.call(11, E.build_logon_request(cxh, essdn), ctx))


def test_alice_connects_and_logs_on_to_her_mailbox():
    events = []
    ctx = make_ctx(events=events)
    session = connect(ctx, dn("alice"))
    assert session.status == E.EC_NONE and session.cxh != b"\x00" * 20
    assert session.display_name == "Alice Example"
    assert session.dn_prefix == "/o=Contoso/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/"
    assert session.server_version == (15, 0, 1497, 2)
    assert (session.polls_max_ms, session.retry_count, session.retry_delay_ms) == (60000, 6, 10000)
    result = logon(ctx, session.cxh, dn("alice"))
    assert (result.status, result.rop_status) == (E.EC_NONE, E.EC_NONE)
    assert len(set(result.folder_ids)) == 13 and result.folders["Inbox"] == b"\x01\x00" + (5).to_bytes(6, "big")
    assert result.mailbox_guid == uuid.UUID("8d3e7c1a-5b2f-4e61-9c0a-3f4d2e1b7a01")
    assert result.response_flags & E.RESPONSE_OWNER_RIGHT and result.logon_handle == 1
    assert result.cxh == session.cxh
    assert {"kind": "emsmdb_logon", "essdn": dn("alice"), "mailbox": "alice", "result": "0x00000000",
            "server_dn": None} in events
    status, cleared = E.parse_disconnect_response(SERVER.call(1, E.build_disconnect_request(session.cxh), ctx))
    assert (status, cleared) == (E.EC_NONE, b"\x00" * 20)
    with pytest.raises(RpcFault) as stale:
        SERVER.call(11, E.build_logon_request(session.cxh, dn("alice")), ctx)
    assert stale.value.status == NCA_S_FAULT_CONTEXT_MISMATCH


def test_outlook_2003_is_refused_with_the_floor_as_best_version():
    refused = connect(make_ctx(), dn("alice"), OUTLOOK_2003)
    assert refused.status == E.EC_CLIENT_VER_DISALLOWED and refused.cxh == b"\x00" * 20
    assert refused.best_version == E.DEFAULT_MIN_CLIENT_VERSION and refused.display_name is None
    old_format = E.EcDoConnectEx(E.build_connect_request(dn("alice")))
    old_format["rgwClientVersion"]["Word0"], old_format["rgwClientVersion"]["Word1"] = 11, 8303   # no 0x8000 bit
    stub = SERVER.call(10, old_format.getData(), make_ctx())
    assert E.parse_connect_response(stub).status == E.EC_CLIENT_VER_DISALLOWED
    lenient = E.Emsmdb(ORG, min_client_version=(11, 0, 0, 0))
    assert connect(make_ctx(), dn("alice"), OUTLOOK_2003, lenient).status == E.EC_NONE
    assert connect(make_ctx(), dn("alice"), (12, 0, 6665, 5000)).status == E.EC_NONE


def test_dave_is_sent_to_his_back_end_and_rfr_resolves_it():
    ctx = make_ctx("dave")
    session = connect(ctx, dn("dave"))
    assert session.status == E.EC_NONE
    result = logon(ctx, session.cxh, dn("dave"))
    assert (result.status, result.rop_status) == (E.EC_NONE, E.EC_WRONG_SERVER)
    assert result.server_dn == "/o=Contoso/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Configuration" \
                               "/cn=Servers/cn=EX02"
    assert result.logon_flags == E.LOGON_PRIVATE and result.folder_ids == ()
    rfr = InProcessDce(Rfr(ORG), ctx)
    assert oxabref.hRfrGetFQDNFromServerDN(rfr, result.server_dn)["ppszServerFQDN"] == "ex02.contoso.test"


@pytest.mark.parametrize("user, user_dn, auth_level, expected", [
    ("alice", "/o=Contoso/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=ghost",
     6, E.EC_UNKNOWN_USER),
    ("alice", dn("bob"), 6, E.EC_LOGIN_FAILURE),
    (None, dn("bob"), 6, E.EC_LOGIN_FAILURE),
    ("alice", dn("alice"), 1, E.EC_NOT_ENCRYPTED),
])
def test_connect_refusals(user, user_dn, auth_level, expected):
    assert connect(make_ctx(user, auth_level), user_dn).status == expected


def test_encryption_gate_can_be_switched_off():
    plain = E.Emsmdb(ORG, encryption_required=False)
    assert connect(make_ctx(auth_level=1), dn("alice"), server=plain).status == E.EC_NONE


@pytest.mark.parametrize("essdn, rop_status, owner", [
    (dn("helpdesk"), E.EC_NONE, False),
    (dn("confroom1"), E.EC_NONE, False),
    (dn("bob"), E.EC_LOGIN_PERM, None),
    ("/o=Contoso/cn=Recipients/cn=nobody", E.EC_UNKNOWN_USER, None),
])
def test_logon_to_other_mailboxes(essdn, rop_status, owner):
    ctx = make_ctx()
    result = logon(ctx, connect(ctx, dn("alice")).cxh, essdn)
    assert result.rop_status == rop_status
    if owner is not None:
        assert bool(result.response_flags & E.RESPONSE_OWNER_RIGHT) == owner


def literal_lz77(data: bytes) -> bytes:
    """A valid DIRECT2 stream of literals only, ending with set flag bits (as MS-XCA's first example)."""
    out = b""
    for start in range(0, len(data), 32):
        chunk = data[start:start + 32]
        out += struct.pack("<L", (1 << (32 - len(chunk))) - 1) + chunk
    if len(data) % 32 == 0:
        out += struct.pack("<L", 0xFFFFFFFF)
    return out


def test_lz77_decoder_matches_the_ms_xca_examples():
    letters = b"abcdefghijklmnopqrstuvwxyz"
    assert E.lz77_decompress(bytes.fromhex("3f000000") + letters, 26) == letters
    assert E.lz77_decompress(bytes.fromhex("ffffff1f61626317000fff2601"), 300) == b"abc" * 100
    with pytest.raises(ValueError):
        E.lz77_decompress(bytes.fromhex("ffffffff1000"), 10)      # a match reaching before the output


def test_compressed_and_obfuscated_rop_input_is_decoded():
    ctx = make_ctx()
    cxh = connect(ctx, dn("alice")).cxh
    payload = E.join_rop_payload(E.build_rop_logon(dn("alice")), [0xFFFFFFFF])
    packed = bytes(b ^ E.XOR_MAGIC for b in literal_lz77(payload))
    rgb_in = E.HEADER_EXT.pack(0, E.FLAG_COMPRESSED | E.FLAG_XOR_MAGIC | E.FLAG_LAST, len(packed), len(payload))
    request = E.EcDoRpcExt2(E.build_rpc_request(cxh, payload))
    request["rgbIn"] = [bytes([b]) for b in rgb_in + packed]
    request["cbIn"] = len(rgb_in + packed)
    stub = SERVER.call(11, request.getData(), ctx)
    result = E.parse_logon_response(stub)
    assert result.rop_status == E.EC_NONE and len(result.folder_ids) == 13
    response = E.EcDoRpcExt2Response(stub)
    flags = E.HEADER_EXT.unpack(b"".join(response["rgbOut"])[:8])[1]
    assert flags == E.FLAG_LAST                                  # answered plain: no compression, no XorMagic


def test_unsupported_rops_malformed_buffers_and_small_output_buffers():
    ctx = make_ctx()
    cxh = connect(ctx, dn("alice")).cxh
    attachment_table = bytes([0x21, 0x00, 0x00, 0x01, 0x00])   # RopGetAttachmentTable: not implemented
    status, _, payloads = E.parse_rpc_response(SERVER.call(11, E.build_rpc_request(
        cxh, E.join_rop_payload(attachment_table, [1, 0xFFFFFFFF])), ctx))
    assert status == E.EC_NONE
    rops, handles = E.split_rop_payload(payloads[0])
    assert rops == struct.pack("<BBL", 0x21, 0, E.EC_NOT_SUPPORTED) and handles == [1, 0xFFFFFFFF]
    status, _, payloads = E.parse_rpc_response(SERVER.call(11, E.build_rpc_request(cxh, b"\x09\x00\xfe"), ctx))
    assert (status, payloads) == (E.EC_RPC_FORMAT, [])
    small = E.build_rpc_request(cxh, E.join_rop_payload(E.build_rop_logon(dn("alice")), [0xFFFFFFFF]), max_out=40)
    assert E.parse_rpc_response(SERVER.call(11, small, ctx))[0] == E.EC_BUFFER_TOO_SMALL


def test_push_notifications_refused_and_dummy_rpc():
    ctx = make_ctx()
    cxh = connect(ctx, dn("alice")).cxh
    request = E.EcRRegisterPushNotification()
    request["pcxh"].fromString(cxh)
    request["rgbContext"] = [b"\x01"]
    request["cbContext"] = 1
    request["rgbCallbackAddress"] = [bytes([b]) for b in b"\x02\x00\x04\x00\x7f\x00\x00\x01" + b"\x00" * 8]
    request["cbCallbackAddress"] = 16
    response = E.EcRRegisterPushNotificationResponse(SERVER.call(4, request.getData(), ctx))
    assert response["ErrorCode"] == E.EC_NOT_SUPPORTED and response["pcxh"].getData() == cxh
    assert E.EcDummyRpcResponse(SERVER.call(6, b"", ctx))["ErrorCode"] == 0
    with pytest.raises(RpcFault) as obsolete:
        SERVER.call(0, b"", ctx)
    assert obsolete.value.status == NCA_S_OP_RNG_ERROR


def test_impacket_dce_request_works_with_these_structures():
    dce = InProcessDce(SERVER, make_ctx())
    response = dce.request(E.EcDoConnectEx(E.build_connect_request(dn("alice"))))
    assert response["ErrorCode"] == 0 and response["szDisplayName"] == "Alice Example\x00"
    with pytest.raises(E.DCERPCSessionError) as refused:
        dce.request(E.EcDoConnectEx(E.build_connect_request(dn("alice"), OUTLOOK_2003)))
    assert refused.value.get_error_code() == E.EC_CLIENT_VER_DISALLOWED


def test_versions_pack_both_ways():
    assert E.pack_version((15, 0, 4569, 1506)) == (0x0F00, 0x91D9, 1506)
    assert E.unpack_version((0x0F00, 0x91D9, 1506)) == (15, 0, 4569, 1506)
    assert E.unpack_version((11, 8303, 0)) == (11, 0, 8303, 0)


# ---- robustness ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live_session():
    ctx = make_ctx()
    cxh = connect(ctx, dn("alice")).cxh
    stubs = {10: E.build_connect_request(dn("alice")), 11: E.build_logon_request(cxh, dn("alice")),
             6: b""}
    return ctx, cxh, stubs


call_tolerantly = tolerant_caller(SERVER)
FUZZ = SHARED_SESSION_FUZZ


@FUZZ
@given(data=st.data())
def test_truncated_and_mutated_stubs_end_in_a_response_or_fault(live_session, data):
    ctx, cxh, stubs = live_session
    opnum = data.draw(st.sampled_from([10, 11, 6]))
    stub = bytearray(stubs[opnum])
    for _ in range(data.draw(st.integers(0, 3))):
        if len(stub) > 20:
            stub[data.draw(st.integers(20, len(stub) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(stub)))
    call_tolerantly(opnum, bytes(stub[:cut]), ctx)


@FUZZ
@given(opnum=st.integers(0, 15), tail=st.binary(max_size=200))
def test_random_stubs_end_in_a_response_or_fault(live_session, opnum, tail):
    ctx, cxh, _ = live_session
    if opnum == 1:
        return          # a disconnect would end the shared session
    call_tolerantly(opnum, cxh + tail, ctx)


@FUZZ
@given(rop_buffer=st.binary(max_size=120))
def test_random_rop_buffers_never_crash_the_session(live_session, rop_buffer):
    ctx, cxh, _ = live_session
    status, _, _ = E.parse_rpc_response(SERVER.call(11, E.build_rpc_request(cxh, rop_buffer), ctx))
    assert status in (E.EC_NONE, E.EC_RPC_FORMAT)


# ---- wire layout, decoded by hand in the IDL's order (as Gromox's emsmdb_ndr.cpp pulls and pushes it) -------
def test_connect_request_layout():
    stub = E.build_connect_request("/o=X", (15, 0, 4569, 1506), codepage=1252)
    assert struct.unpack_from("<LLL5s", stub) == (5, 0, 5, b"/o=X\x00")
    flags, conmod, limit, cpid, lcid_string, lcid_sort, icxr_link = struct.unpack_from("<7L", stub, 20)
    assert (flags, limit, cpid, lcid_string, icxr_link) == (0, 0, 1252, 0x409, 0xFFFFFFFF)
    assert struct.unpack_from("<H3HL", stub, 48) == (1, 0x0F00, 0x91D9, 1506, 0)
    assert struct.unpack_from("<LLL", stub, 60) == (0, 0, E.MAX_AUX_OUT) and len(stub) == 72


def test_connect_response_layout():
    stub = SERVER.call(10, E.build_connect_request(dn("alice")), make_ctx())
    assert struct.unpack_from("<LLLH", stub, 20) == (60000, 6, 10000, struct.unpack_from("<H", stub, 32)[0])
    referent, size, offset, length = struct.unpack_from("<4L", stub, 36)
    prefix = b"/o=Contoso/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/\x00"
    assert referent and (size, offset, length) == (len(prefix), 0, len(prefix))
    assert stub[52:52 + len(prefix)] == prefix
    pos = (52 + len(prefix) + 3) & ~3
    name = b"Alice Example\x00"
    assert struct.unpack_from("<4L", stub, pos)[1:] == (len(name), 0, len(name))
    pos += 16
    assert stub[pos:pos + len(name)] == name
    pos = (pos + len(name) + 1) & ~1
    assert struct.unpack_from("<6H", stub, pos) == (0x0F00, 0x8000 | 1497, 2, 0x0F00, 0x91D9, 1506)
    pos = (pos + 12 + 3) & ~3
    assert struct.unpack_from("<6L", stub, pos) == (0, 0, 0, 0, 0, E.EC_NONE) and len(stub) == pos + 24


def test_rpc_ext2_response_layout():
    ctx = make_ctx()
    cxh = connect(ctx, dn("alice")).cxh
    stub = SERVER.call(11, E.build_logon_request(cxh, dn("alice")), ctx)
    assert stub[:20] == cxh
    flags, size, offset, length = struct.unpack_from("<4L", stub, 20)
    assert (flags, offset) == (0, 0) and size == length
    rgb_out = stub[36:36 + length]
    pos = (36 + length + 3) & ~3
    assert struct.unpack_from("<5L", stub, pos) == (length, 0, 0, 0, 0)     # pcbOut, empty aux array, pcbAuxOut
    assert struct.unpack_from("<LL", stub, pos + 20) == (0, E.EC_NONE) and len(stub) == pos + 28
    version, header_flags, payload_size, actual = E.HEADER_EXT.unpack_from(rgb_out)
    assert (version, header_flags, payload_size, actual) == (0, E.FLAG_LAST, length - 8, length - 8)
    rop_size = struct.unpack_from("<H", rgb_out, 8)[0]
    assert rgb_out[10] == E.ROP_LOGON and rop_size == 2 + 6 + 1 + 13 * 8 + 1 + 16 + 2 + 16 + 8 + 8 + 4
    assert struct.unpack_from("<L", rgb_out, 8 + rop_size) == (1,)           # handle table: the new logon handle
