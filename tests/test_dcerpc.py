"""DCE/RPC server association, driven by impacket's own client (DCERPC_v5) over an in-memory transport."""
import random
import struct

import pytest
from Cryptodome.Cipher import ARC4
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from impacket import ntlm
from impacket.dcerpc.v5 import rpcrt
from impacket.dcerpc.v5.rpcrt import DCERPCException
from impacket.dcerpc.v5.transport import DCERPCTransport
from impacket.uuid import uuidtup_to_bin

from harness.hooks import FaultSet
from harness.org import load_org
from harness.protocols import dcerpc
from harness.transcript import Transcript
from tests.support.echo import ECHO, Echo
from tests.support.fuzz import scaled

ORG = load_org()
ALICE = ORG.find("alice")


OTHER = uuidtup_to_bin(("99999999-1234-abcd-ef00-0123456789ab", "1.0"))
NDR64 = ("71710533-BEBA-4937-8319-B5DBEF9CCC36", "1.0")


def make_association(transcript=None, **kwargs):
    transcript = transcript or Transcript()
    kwargs.setdefault("secondary_address", "6004")
    return dcerpc.DceRpcAssociation(ORG, [Echo()], transcript.record, random.Random(7), **kwargs), transcript


class LoopbackTransport(DCERPCTransport):
    """What impacket's RPC-over-HTTP transport looks like to DCERPC_v5: send() writes, recv() returns one PDU.
    Every byte goes through ``deliver`` (by default an association's feed)."""

    def __init__(self, deliver):
        DCERPCTransport.__init__(self, "mock", 6004)
        self.deliver = deliver
        self.replies = bytearray()
        self.sent = []
        self.received = []

    def connect(self):
        return 1

    def disconnect(self):
        return 1

    def send(self, data, forceWriteAndx=0, forceRecv=0):
        self.sent.append(bytes(data))
        for pdu in self.deliver(bytes(data)):
            self.replies += pdu

    def recv(self, forceRecv=0, count=0):
        if len(self.replies) < 16:
            raise DCERPCException("connection closed: no reply")
        length = struct.unpack_from("<H", self.replies, 8)[0]
        pdu = bytes(self.replies[:length])
        del self.replies[:length]
        self.received.append(pdu)
        return pdu


def client(association, level=rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY, user="alice", password=None, bind=True):
    transport = LoopbackTransport(association.feed)
    dce = transport.get_dce_rpc()
    if level != rpcrt.RPC_C_AUTHN_LEVEL_NONE:
        dce.set_credentials(user, password or ORG.find(user).password, "CONTOSO")
        dce.set_auth_level(level)
    if bind:
        dce.bind(ECHO)
    return dce, transport


def call(dce, opnum, stub=b""):
    dce.call(opnum, stub)
    return dce.recv()


LEVELS = [rpcrt.RPC_C_AUTHN_LEVEL_NONE, rpcrt.RPC_C_AUTHN_LEVEL_CONNECT, rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY,
          rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY]


# ---- binding ---------------------------------------------------------------------------------------------------
def test_bind_ack_layout_is_exact():
    association, _ = make_association()
    dce, transport = client(association, rpcrt.RPC_C_AUTHN_LEVEL_NONE)
    ack = transport.received[0]
    assert struct.unpack_from("<BBBB4sHHL", ack) == (5, 0, 12, 3, b"\x10\0\0\0", len(ack), 0, 1)
    max_xmit, max_recv, group, address_length = struct.unpack_from("<HHLH", ack, 16)
    assert (max_xmit, max_recv, group) == (4280, 4280, association.association_group)
    assert ack[26:26 + address_length] == b"6004\0"
    assert 26 + address_length + 1 == 32                  # one byte of padding brings the result list to 32
    assert struct.unpack_from("<BBHHH", ack, 32) == (1, 0, 0, 0, 0)
    assert ack[40:60] == dcerpc.NDR_SYNTAX and len(ack) == 60
    parsed = rpcrt.MSRPCBindAck(ack)
    assert parsed["SecondaryAddr"] == "6004" and parsed.getCtxItem(1)["Result"] == 0


def test_authenticated_bind_ack_puts_the_challenge_after_an_aligned_trailer():
    association, _ = make_association()
    dce, transport = client(association, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    ack = transport.received[0]
    frag_length, auth_length = struct.unpack_from("<HH", ack, 8)
    trailer = frag_length - auth_length - 8
    assert trailer == 60 and trailer % 4 == 0
    auth_type, level, pad, _, context_id = struct.unpack_from("<BBBBL", ack, trailer)
    assert (auth_type, level, pad, context_id) == (10, 6, 0, 79231)
    challenge = ntlm.NTLMAuthChallenge(ack[trailer + 8:])
    av = ntlm.AV_PAIRS(challenge["TargetInfoFields"])
    assert av[ntlm.NTLMSSP_AV_HOSTNAME][1].decode("utf-16-le") == "EX01"
    # AUTH3 got no reply at all
    assert len(transport.sent) == 2 and len(transport.received) == 1


@pytest.mark.parametrize("level", LEVELS)
def test_calls_round_trip_at_every_auth_level(level):
    association, transcript = make_association()
    dce, _ = client(association, level)
    assert call(dce, 0, b"hello world") == b"hello world\0\0\0\0"
    who = call(dce, 2)[:-4].decode()
    expected_user = "-" if level == rpcrt.RPC_C_AUTHN_LEVEL_NONE else "alice@contoso.test"
    assert who == f"{expected_user}|{level}|1"
    assert call(dce, 2)[:-4].decode().endswith("|2")      # association state survives between calls
    binds = transcript.of_kind("rpc_bind")
    assert [(b["interface"], b["auth_level"], b["result"]) for b in binds] == [("ECHO", level, "accepted")]
    assert [(c["op"], c["status"]) for c in transcript.of_kind("rpc_call")] == [
        ("echo", "0x00000000"), ("whoami", "0x00000000"), ("whoami", "0x00000000")]


def test_level_none_uses_the_http_user():
    association, _ = make_association(http_mailbox=ORG.find("bob"))
    dce, _ = client(association, rpcrt.RPC_C_AUTHN_LEVEL_NONE)
    assert call(dce, 2)[:-4].decode() == "bob@contoso.test|1|1"


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("size", [0, 4000, 4300, 30000])
def test_fragmentation_in_both_directions(level, size):
    association, _ = make_association()
    dce, transport = client(association, level)
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert call(dce, 0, payload) == payload + b"\0\0\0\0"
    assert all(len(pdu) <= 4280 for pdu in transport.received)
    grown = call(dce, 1, struct.pack("<L", size))
    assert grown == bytes(i % 251 for i in range(size)) + b"\0\0\0\0"
    responses = [pdu for pdu in transport.received if pdu[2] == dcerpc.RESPONSE]
    assert all(len(pdu) <= 4280 for pdu in responses)
    if size > 4280:
        assert len([pdu for pdu in transport.sent if pdu[2] == dcerpc.REQUEST]) > 2   # the client fragmented too


def _server_stream_verifier(dce):
    """An independent check of the server's signatures, from impacket's exported session key and primitives."""
    flags = dce._DCERPC_v5__flags
    key = dce.get_session_key()
    sign_key = ntlm.SIGNKEY(flags, key, "Server")
    rc4 = ARC4.new(ntlm.SEALKEY(flags, key, "Server")).encrypt
    sequence = [0]

    def verify(pdu):
        frag_length, auth_length = struct.unpack_from("<HH", pdu, 8)
        trailer = frag_length - auth_length - 8
        level = pdu[trailer + 1]
        data = pdu[24:trailer]
        plain = rc4(data) if level == 6 else data
        expected = ntlm.MAC(flags, rc4, sign_key, sequence[0], pdu[:24] + plain + pdu[trailer:trailer + 8])
        sequence[0] += 1
        return expected.getData() == pdu[trailer + 8:]
    return verify


@pytest.mark.parametrize("level", [rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY])
def test_responses_carry_correct_signatures(level):
    association, _ = make_association()
    dce, transport = client(association, level)
    verify = _server_stream_verifier(dce)
    call(dce, 0, b"a" * 9000)
    call(dce, 0, b"short")
    responses = [pdu for pdu in transport.received if pdu[2] == dcerpc.RESPONSE]
    assert len(responses) == 4 and all(verify(pdu) for pdu in responses)


# ---- refusals --------------------------------------------------------------------------------------------------
def test_unknown_interface_is_rejected_in_the_bind_ack():
    association, transcript = make_association()
    dce, _ = client(association, rpcrt.RPC_C_AUTHN_LEVEL_NONE, bind=False)
    with pytest.raises(DCERPCException, match="abstract_syntax_not_supported"):
        dce.bind(OTHER)
    assert transcript.of_kind("rpc_bind")[0]["result"] == "abstract_syntax_not_supported"
    assert not association.closed


def test_ndr64_only_is_rejected_with_the_transfer_syntax_reason():
    association, _ = make_association()
    dce, _ = client(association, rpcrt.RPC_C_AUTHN_LEVEL_NONE, bind=False)
    with pytest.raises(DCERPCException, match="proposed_transfer_syntaxes_not_supported"):
        dce.bind(ECHO, transfer_syntax=NDR64)


def test_only_the_first_acceptable_context_is_accepted():
    association, _ = make_association()
    pdu = bind_pdu([(0, ECHO, [uuidtup_to_bin(NDR64)]), (1, ECHO, [dcerpc.NDR_SYNTAX]), (2, ECHO, [dcerpc.NDR_SYNTAX]),
                    (3, OTHER, [dcerpc.NDR_SYNTAX])])
    ack = rpcrt.MSRPCBindAck(association.feed(pdu)[0])
    results = [(ack.getCtxItem(i)["Result"], ack.getCtxItem(i)["Reason"]) for i in range(1, 5)]
    assert results == [(2, 2), (0, 0), (2, 2), (2, 1)]


def test_bind_time_feature_negotiation_is_acknowledged():
    association, _ = make_association()
    feature = bytes.fromhex("2c1cb76c12984045") + struct.pack("<Q", 3) + struct.pack("<HH", 1, 0)
    ack = rpcrt.MSRPCBindAck(association.feed(bind_pdu([(0, ECHO, [dcerpc.NDR_SYNTAX]), (1, ECHO, [feature])]))[0])
    assert (ack.getCtxItem(1)["Result"], ack.getCtxItem(2)["Result"], ack.getCtxItem(2)["Reason"]) == (0, 3, 3)


def bind_pdu(items, call_id=1, auth=b"", ptype=dcerpc.BIND, version=(5, 0), drep=b"\x10\0\0\0", group=0):
    body = struct.pack("<HHLBBH", 4280, 4280, group, len(items), 0, 0)
    for context_id, abstract, transfers in items:
        body += struct.pack("<HBB", context_id, len(transfers), 0) + abstract + b"".join(transfers)
    length = 16 + len(body) + len(auth)
    auth_length = len(auth) - 8 if auth else 0
    return struct.pack("<BBBB4sHHL", version[0], version[1], ptype, 3, drep, length, auth_length, call_id) + body + auth


@pytest.mark.parametrize("pdu, reason, text", [
    (bind_pdu([]), 4, "protocol_version_not_supported"),
    (bind_pdu([(0, ECHO, [dcerpc.NDR_SYNTAX])], version=(4, 0)), 4, "protocol_version_not_supported"),
    (bind_pdu([(0, ECHO, [dcerpc.NDR_SYNTAX])], group=0x1234), 0, "reason_not_specified"),
    (bind_pdu([(0, ECHO, [dcerpc.NDR_SYNTAX])], auth=struct.pack("<BBBBL", 9, 6, 0, 0, 1) + b"NTLMSSP"), 8,
     "authentication_type_not_recognized"),
    (bind_pdu([(0, ECHO, [dcerpc.NDR_SYNTAX])], auth=struct.pack("<BBBBL", 10, 7, 0, 0, 1) + b"NTLMSSP"), 0,
     "reason_not_specified"),
    (bind_pdu([(0, ECHO, [dcerpc.NDR_SYNTAX])], auth=struct.pack("<BBBBL", 10, 6, 0, 0, 1) + b"garbage!"), 0,
     "reason_not_specified"),
], ids=["no-context", "version-4", "association-group", "spnego", "level-7", "bad-negotiate"])
def test_bind_naks(pdu, reason, text):
    association, transcript = make_association()
    (nak,) = association.feed(pdu)
    assert nak[2] == dcerpc.BIND_NAK and len(nak) % 4 == 0
    assert rpcrt.MSRPCBindNak(nak[16:])["RejectedReason"] == reason
    assert transcript.of_kind("rpc_bind")[-1]["result"] == f"nak: {text}"
    assert not association.closed


def test_second_bind_is_refused():
    association, _ = make_association()
    client(association, rpcrt.RPC_C_AUTHN_LEVEL_NONE)
    (nak,) = association.feed(bind_pdu([(1, ECHO, [dcerpc.NDR_SYNTAX])], call_id=5))
    assert nak[2] == dcerpc.BIND_NAK


def test_wrong_password_fails_at_the_first_call_with_access_denied():
    association, transcript = make_association()
    dce, _ = client(association, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY, password="wrong")
    with pytest.raises(DCERPCException, match="rpc_s_access_denied"):
        call(dce, 0, b"x")
    (auth,) = transcript.of_kind("rpc_auth")
    assert (auth["ok"], auth["user"], auth["reason"]) == (False, "alice", "wrong password")
    assert association.closed


def test_unknown_opnum_faults_and_the_sealed_session_stays_usable():
    association, transcript = make_association()
    dce, _ = client(association, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    with pytest.raises(DCERPCException, match="nca_s_op_rng_error"):
        call(dce, 9)
    with pytest.raises(DCERPCException, match="rpc_x_bad_stub_data"):
        call(dce, 3)
    with pytest.raises(DCERPCException, match="nca_s_fault_unspec"):
        call(dce, 4)
    assert call(dce, 0, b"still in step") == b"still in step\0\0\0\0"
    faults = transcript.of_kind("rpc_fault")
    assert [f["status"] for f in faults] == ["0x1c010002", "0x000006f7", "0x1c000012"]
    assert "interface bug" in faults[2]["reason"]


def test_tampered_request_gets_access_denied_and_closes():
    association, transcript = make_association()
    dce, transport = client(association, rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY)

    def tamper(data):
        data = bytearray(data)
        data[26] ^= 0xFF                       # a stub byte: the signature no longer matches
        return association.feed(bytes(data))
    transport.deliver = tamper
    with pytest.raises(DCERPCException, match="rpc_s_access_denied"):
        call(dce, 0, b"payload")
    fault = transport.received[-1]
    assert fault[3] & dcerpc.PFC_DID_NOT_EXECUTE and len(fault) == 32
    assert association.closed and transcript.of_kind("rpc_fault")[-1]["close"] is True


def test_missing_verifier_at_privacy_is_access_denied():
    association, _ = make_association()
    client(association, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    request = struct.pack("<BBBB4sHHLLHH", 5, 0, 0, 3, b"\x10\0\0\0", 28, 0, 2, 4, 0, 0) + b"abcd"
    (fault,) = association.feed(request)
    assert struct.unpack_from("<L", fault, 24)[0] == dcerpc.RPC_S_ACCESS_DENIED and association.closed


def test_request_for_an_unbound_context_is_unk_if():
    association, _ = make_association()
    client(association, rpcrt.RPC_C_AUTHN_LEVEL_NONE)
    request = struct.pack("<BBBB4sHHLLHH", 5, 0, 0, 3, b"\x10\0\0\0", 28, 0, 2, 4, 7, 0) + b"abcd"
    (fault,) = association.feed(request)
    assert struct.unpack_from("<L", fault, 24)[0] == dcerpc.NCA_S_UNK_IF and not association.closed


@pytest.mark.parametrize("pdu, reason", [
    (struct.pack("<BBBB4sHHLLHH", 5, 0, 0, 3, b"\x10\0\0\0", 28, 0, 1, 4, 0, 0) + b"abcd", "request before bind"),
    (struct.pack("<BBBB4sHHL", 5, 0, 16, 3, b"\x10\0\0\0", 20, 0, 1) + b"    ", "AUTH3 without an auth trailer"),
    (struct.pack("<BBBB4sHHL", 5, 0, 2, 3, b"\x10\0\0\0", 16, 0, 1), "does not send response"),
    (struct.pack("<BBBB4sHHL", 5, 0, 14, 3, b"\x10\0\0\0", 16, 0, 1), "alter_context before bind"),
], ids=["request", "auth3", "response", "alter"])
def test_protocol_errors_fault_and_close(pdu, reason):
    association, transcript = make_association()
    (fault,) = association.feed(pdu)
    assert fault[2] == dcerpc.FAULT and struct.unpack_from("<L", fault, 24)[0] == dcerpc.NCA_S_PROTO_ERROR
    assert association.closed and reason in transcript.of_kind("rpc_fault")[0]["reason"]
    assert association.feed(pdu) == []


def test_a_broken_frame_closes_without_reply():
    association, transcript = make_association()
    assert association.feed(b"\x05\x00\x0b\x03\x10\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x00") == []
    assert association.closed and "frag_length 8" in transcript.of_kind("rpc_close")[0]["reason"]


def test_alter_context_adds_a_security_context_like_impacket_alter_ctx():
    association, transcript = make_association()
    dce, _ = client(association, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    other = dce.alter_ctx(ECHO)
    assert call(other, 2)[:-4].decode() == "alice@contoso.test|6|1"
    assert call(dce, 0, b"first context") == b"first context\0\0\0\0"
    assert [a["auth_context"] for a in transcript.of_kind("rpc_auth")] == [79231, 79232]
    assert transcript.of_kind("rpc_bind")[-1]["pdu"] == "alter_context"


def test_alter_context_response_has_an_empty_secondary_address():
    association, _ = make_association()
    client(association, rpcrt.RPC_C_AUTHN_LEVEL_NONE)
    (response,) = association.feed(bind_pdu([(1, ECHO, [dcerpc.NDR_SYNTAX])], call_id=2, ptype=dcerpc.ALTER_CONTEXT))
    assert response[2] == dcerpc.ALTER_CONTEXT_RESP
    assert struct.unpack_from("<H", response, 24)[0] == 0 and struct.unpack_from("<B", response, 28)[0] == 1
    assert rpcrt.MSRPCBindAck(response).getCtxItem(1)["Result"] == 0


def test_feeding_byte_by_byte_gives_the_same_answers():
    whole, _ = make_association()
    dce, transport = client(whole, rpcrt.RPC_C_AUTHN_LEVEL_NONE)
    call(dce, 0, b"z" * 5000)
    stream = b"".join(transport.sent)
    dribbled, _ = make_association()
    replies = b"".join(b"".join(dribbled.feed(stream[i:i + 1])) for i in range(len(stream)))
    assert replies == b"".join(transport.received)


# ---- hostile input ---------------------------------------------------------------------------------------------
def _recorded_session():
    association, _ = make_association()
    dce, transport = client(association, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    call(dce, 0, b"q" * 5000)
    return transport.sent


SESSION = _recorded_session()


@settings(max_examples=scaled(200), suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_escape_feed(data):
    association, transcript = make_association()
    for pdu in association.feed(data):
        assert pdu[:2] == b"\x05\x00"
    assert not transcript.of_kind("rpc_internal_error")


def _replay_mutated_session(data):
    association, transcript = make_association()
    index = data.draw(st.integers(0, len(SESSION) - 1))
    pdus = list(SESSION)
    mutated = bytearray(pdus[index])
    for _ in range(data.draw(st.integers(1, 3))):
        mutated[data.draw(st.integers(0, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    pdus[index] = bytes(mutated)
    for pdu in pdus:
        association.feed(pdu)
    assert not transcript.of_kind("rpc_internal_error")


@settings(max_examples=scaled(200), suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_sessions_end_in_answers_faults_or_close(data):
    _replay_mutated_session(data)


@pytest.mark.slow
@settings(max_examples=scaled(5000), suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_long_fuzz_of_mutated_sessions(data):
    _replay_mutated_session(data)


class OnlyFor:
    """An rpc_call fault scoped to one user: access denied on every call of that user."""
    name, host = "only-for", None

    def __init__(self, user):
        self.user = user

    def on_rpc_call(self, scope, interface, opnum):
        return dcerpc.CallFault(0x5)


def test_a_scoped_call_fault_meets_its_user_only_and_a_connection_keeps_its_call_context():
    faults = FaultSet([OnlyFor("bob@contoso.test")])
    association, transcript = make_association(faults=faults, http_mailbox=ALICE, host="EX01")
    dce, _ = client(association, rpcrt.RPC_C_AUTHN_LEVEL_NONE)
    assert call(dce, 2)[:-4].decode() == "alice@contoso.test|1|1"
    first = association._last_context
    assert call(dce, 2)[:-4].decode() == "alice@contoso.test|1|2" and association._last_context is first
    assert not transcript.of_kind("rpc_fault")
    association, transcript = make_association(faults=faults, http_mailbox=ORG.find("bob"), host="EX01")
    dce, _ = client(association, rpcrt.RPC_C_AUTHN_LEVEL_NONE)
    with pytest.raises(DCERPCException, match="rpc_s_access_denied"):
        call(dce, 2)
    assert [(f["opnum"], f["status"], f["reason"]) for f in transcript.of_kind("rpc_fault")] \
        == [(2, "0x00000005", "injected by a fault")]
