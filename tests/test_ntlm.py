"""NTLM acceptor, session security and SPNEGO, driven by real initiators: pyspnego and impacket's NTLM client."""
import dataclasses
import random
import struct

import pytest
import spnego
from Cryptodome.Cipher import ARC4
from hypothesis import given, settings
from hypothesis import strategies as st
from impacket import ntlm
from spnego._spnego import NegTokenInit, NegTokenResp, pack_mech_type_list, unpack_token
from spnego.exceptions import SpnegoError
from spnego.iov import BufferType

from harness.org import load_org
from harness.protocols.ntlm import (
    NTLMAcceptor,
    NTLMError,
    NTLMResult,
    NTLMSecurity,
    ServerIdentity,
    logon_refusal,
    org_lookup,
)
from harness.protocols.spnego import ACCEPT_COMPLETED, ACCEPT_INCOMPLETE, REJECT, REQUEST_MIC, NegotiateAcceptor
from tests.support.fuzz import scaled

ORG = load_org()
IDENTITY = ServerIdentity.for_org(ORG)
ALICE = ORG.find("alice")
PASSWORD = ALICE.password
HOST = "ex01.contoso.test"
NOW = 1_700_000_000.0
KRB5_OID = "1.2.840.113554.1.2.2"
NTLM_OID = "1.3.6.1.4.1.311.2.2.10"


def acceptor(lookup=None, seed=1, **options):
    return NTLMAcceptor(IDENTITY, lookup or org_lookup(ORG), random.Random(seed), clock=lambda: NOW, **options)


def lookup_with(**changes):
    """An org lookup where alice's mailbox carries the given changes (locked, password_expired, ...)."""
    changed = dataclasses.replace(ALICE, **changes)
    return lambda user, domain: changed if ORG.find(user) == ALICE else ORG.find(user)


def pyspnego_login(username, password, server=None, **client_options):
    client = spnego.client(username, password, hostname=HOST, protocol="ntlm", **client_options)
    server = server or acceptor()
    result = server.authenticate(client.step(server.challenge(client.step())))
    return client, result


def impacket_login(user, password, domain, server=None, signing=True, use_ntlmv2=True, strip_flags=0):
    """impacket's client side, as rpcrt.py (signing=True) or http.py (signing=False) drives it."""
    server = server or acceptor()
    negotiate = ntlm.getNTLMSSPType1("", domain if not signing else "", signingRequired=signing,
                                     use_ntlmv2=use_ntlmv2)
    negotiate["flags"] &= ~strip_flags
    challenge = server.challenge(negotiate.getData())
    authenticate, exported_key = ntlm.getNTLMSSPType3(negotiate, challenge, user, password, domain,
                                                      use_ntlmv2=use_ntlmv2)
    return challenge, authenticate, exported_key, server.authenticate(authenticate.getData())


# ---- CHALLENGE -------------------------------------------------------------------------------------------------
def test_challenge_is_what_exchange_2013_on_2012r2_sends():
    rpc_negotiate = ntlm.getNTLMSSPType1("", "", signingRequired=True)
    assert rpc_negotiate["flags"] == 0xE0888235
    data = acceptor().challenge(rpc_negotiate.getData())
    message = ntlm.NTLMAuthChallenge(data)
    # the client's flags echoed, plus TARGET_TYPE_DOMAIN and VERSION (research note's appendix)
    assert message["flags"] == 0xE0888235 | ntlm.NTLMSSP_TARGET_TYPE_DOMAIN | ntlm.NTLMSSP_NEGOTIATE_VERSION
    assert message["domain_name"] == "CONTOSO".encode("utf-16-le")
    assert message["Version"] == bytes([6, 3]) + struct.pack("<H", 9600) + bytes(3) + bytes([15])
    assert message["challenge"] == random.Random(1).getrandbits(64).to_bytes(8, "little")
    av_pairs = ntlm.AV_PAIRS(message["TargetInfoFields"])
    assert list(av_pairs.fields) == [2, 1, 4, 3, 5, 7, 0]
    names = {av_id: av_pairs[av_id][1].decode("utf-16-le") for av_id in (1, 2, 3, 4, 5)}
    assert names == {1: "EX01", 2: "CONTOSO", 3: "ex01.contoso.test", 4: "contoso.test", 5: "contoso.test"}
    filetime = struct.unpack("<Q", av_pairs[ntlm.NTLMSSP_AV_TIME][1])[0]
    assert filetime == 116444736000000000 + int(NOW * 10_000_000)


def test_challenge_does_not_grant_what_the_client_did_not_ask():
    http_negotiate = ntlm.getNTLMSSPType1("", "CONTOSO")            # impacket's HTTP layer: 0xa0880205
    flags = ntlm.NTLMAuthChallenge(acceptor().challenge(http_negotiate.getData()))["flags"]
    for unrequested in (ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH, ntlm.NTLMSSP_NEGOTIATE_SIGN, ntlm.NTLMSSP_NEGOTIATE_SEAL,
                        ntlm.NTLMSSP_NEGOTIATE_ALWAYS_SIGN):
        assert not flags & unrequested
    assert flags & ntlm.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY


def test_oem_only_client_gets_an_oem_target_name():
    negotiate = b"NTLMSSP\x00" + struct.pack("<II", 1, ntlm.NTLM_NEGOTIATE_OEM | ntlm.NTLMSSP_NEGOTIATE_NTLM)
    message = ntlm.NTLMAuthChallenge(acceptor().challenge(negotiate))
    assert message["flags"] & ntlm.NTLM_NEGOTIATE_OEM and not message["flags"] & ntlm.NTLMSSP_NEGOTIATE_UNICODE
    assert message["domain_name"] == b"CONTOSO"


def test_challenges_replay_from_the_seed():
    negotiate = ntlm.getNTLMSSPType1("", "").getData()
    assert acceptor(seed=7).challenge(negotiate) == acceptor(seed=7).challenge(negotiate)
    assert acceptor(seed=7).challenge(negotiate) != acceptor(seed=8).challenge(negotiate)


def impacket_challenge(identity, flags, unicode, server_challenge, now):
    """The CHALLENGE as impacket's NTLMAuthChallenge builds it: the reference for the hand-packed one."""
    target_name = identity.netbios_domain.encode("utf-16-le" if unicode else "cp437")
    target_info = ntlm.AV_PAIRS()
    for av_id, name in ((ntlm.NTLMSSP_AV_DOMAINNAME, identity.netbios_domain),
                        (ntlm.NTLMSSP_AV_HOSTNAME, identity.netbios_computer),
                        (ntlm.NTLMSSP_AV_DNS_DOMAINNAME, identity.dns_domain),
                        (ntlm.NTLMSSP_AV_DNS_HOSTNAME, identity.dns_computer),
                        (ntlm.NTLMSSP_AV_DNS_TREENAME, identity.dns_tree)):
        target_info[av_id] = name.encode("utf-16-le")
    target_info[ntlm.NTLMSSP_AV_TIME] = struct.pack("<Q", 116444736000000000 + int(now * 10_000_000))
    version = ntlm.VERSION()
    version["ProductMajorVersion"], version["ProductMinorVersion"], version["ProductBuild"] = 6, 3, 9600
    version["NTLMRevisionCurrent"] = ntlm.VERSION.NTLMSSP_REVISION_W2K3
    message = ntlm.NTLMAuthChallenge()
    message["flags"] = flags
    message["challenge"] = server_challenge
    message["Version"] = version.getData()
    message["domain_name"] = target_name
    message["domain_offset"] = 56
    message["TargetInfoFields"] = target_info.getData()
    message["TargetInfoFields_offset"] = 56 + len(target_name)
    return message.getData()


names = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=15)


@settings(max_examples=scaled(100))
@given(identity=st.builds(ServerIdentity, names, names, names, names, names), client_flags=st.integers(0, 2 ** 32 - 1),
       now=st.floats(0, 4e9), seed=st.integers(0, 2 ** 32))
def test_hand_packed_challenge_is_impacket_s_message(identity, client_flags, now, seed):
    negotiate = b"NTLMSSP\x00" + struct.pack("<II", 1, client_flags)
    server = NTLMAcceptor(identity, org_lookup(ORG), random.Random(seed), clock=lambda: now)
    data = server.challenge(negotiate)
    flags = ntlm.NTLMAuthChallenge(data)["flags"]
    unicode = bool(flags & ntlm.NTLMSSP_NEGOTIATE_UNICODE)
    server_challenge = random.Random(seed).getrandbits(64).to_bytes(8, "little")
    assert data == impacket_challenge(identity, flags, unicode, server_challenge, now)


@settings(max_examples=scaled(100))
@given(key_exchange=st.booleans(), session_key=st.binary(min_size=16, max_size=16),
       messages=st.lists(st.binary(max_size=64), min_size=1, max_size=5))
def test_hand_packed_signatures_are_impacket_s(key_exchange, session_key, messages):
    """sign/verify give what impacket's SIGN gives, message after message (sequence numbers, RC4 stream)."""
    flags = ntlm.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY | ntlm.NTLMSSP_NEGOTIATE_128 | \
        (ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH if key_exchange else 0)
    security = NTLMSecurity(NTLMResult(ok=True, flags=flags, session_key=session_key))
    out_key, out_rc4 = ntlm.SIGNKEY(flags, session_key, "Server"), ARC4.new(ntlm.SEALKEY(flags, session_key, "Server"))
    in_key, in_rc4 = ntlm.SIGNKEY(flags, session_key, "Client"), ARC4.new(ntlm.SEALKEY(flags, session_key, "Client"))
    for sequence, message in enumerate(messages):
        assert security.sign(message) == ntlm.SIGN(flags, out_key, message, sequence, out_rc4.encrypt).getData()
        assert security.verify(message, ntlm.SIGN(flags, in_key, message, sequence, in_rc4.encrypt).getData())


@settings(max_examples=scaled(100))
@given(key_exchange=st.booleans(), session_key=st.binary(min_size=16, max_size=16),
       pdus=st.lists(st.tuples(st.binary(max_size=24), st.binary(max_size=64), st.binary(max_size=8)), min_size=1,
                     max_size=4),
       tamper=st.one_of(st.none(), st.integers(0, 15)))
def test_sealing_is_impacket_s_in_both_directions(key_exchange, session_key, pdus, tamper):
    """seal_and_sign gives impacket's SEAL (server to client); unseal_and_verify takes what impacket's SEAL gives
    (client to server), and a signature with any byte changed is refused."""
    flags = ntlm.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY | ntlm.NTLMSSP_NEGOTIATE_128 | \
        (ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH if key_exchange else 0)
    security = NTLMSecurity(NTLMResult(ok=True, flags=flags, session_key=session_key))
    out_key, out_rc4 = ntlm.SIGNKEY(flags, session_key, "Server"), ARC4.new(ntlm.SEALKEY(flags, session_key, "Server"))
    in_key, in_rc4 = ntlm.SIGNKEY(flags, session_key, "Client"), ARC4.new(ntlm.SEALKEY(flags, session_key, "Client"))
    for sequence, (before, data, after) in enumerate(pdus):
        sealed, signature = ntlm.SEAL(flags, out_key, None, before + data + after, data, sequence, out_rc4.encrypt)
        assert security.seal_and_sign(before, data, after) == (sealed, signature.getData())
        sealed, signature = ntlm.SEAL(flags, in_key, None, before + data + after, data, sequence, in_rc4.encrypt)
        signature = signature.getData()
        if tamper is not None and sequence == len(pdus) - 1:
            signature = signature[:tamper] + bytes([signature[tamper] ^ 0x01]) + signature[tamper + 1:]
            with pytest.raises(NTLMError):
                security.unseal_and_verify(before, sealed, after, signature)
        else:
            assert security.unseal_and_verify(before, sealed, after, signature) == data


@pytest.mark.parametrize("negotiate", [b"", b"NTLMSSP\x00", b"NTLMSSP\x00\x03\x00\x00\x00" + bytes(8),
                                       b"XTLMSSP\x00\x01\x00\x00\x00" + bytes(8)])
def test_malformed_negotiate_raises_ntlm_error(negotiate):
    with pytest.raises(NTLMError):
        acceptor().challenge(negotiate)


# ---- AUTHENTICATE verified for real ---------------------------------------------------------------------------
@pytest.mark.parametrize("username, domain", [("CONTOSO\\alice", "CONTOSO"), ("contoso\\Alice", "contoso"),
                                              ("contoso.test\\alice", "contoso.test"),
                                              ("alice@contoso.test", "")])
def test_pyspnego_logs_in_with_every_domain_form(username, domain):
    client, result = pyspnego_login(username, PASSWORD)
    assert (result.ok, result.reason, result.domain, result.protocol) == (True, "", domain, "NTLMv2")
    assert result.mailbox == ALICE
    assert result.session_key == client.session_key


@pytest.mark.parametrize("username, password, reason", [
    ("CONTOSO\\alice", "P@ssw0rd-bob", "wrong password"),
    ("CONTOSO\\mallory", "whatever", "unknown user"),
    ("FABRIKAM\\alice", PASSWORD, "unknown domain"),
    ("alice@fabrikam.example", PASSWORD, "unknown user"),
])
def test_pyspnego_refused(username, password, reason):
    _, result = pyspnego_login(username, password)
    assert (result.ok, result.reason, result.session_key) == (False, reason, b"")


@pytest.mark.parametrize("changes, password, reason", [
    ({"locked": True}, PASSWORD, "account locked"),
    ({"locked": True}, "wrong", "account locked"),
    ({"password_expired": True}, PASSWORD, "password expired"),
    ({"password_expired": True}, "wrong", "wrong password"),
])
def test_account_state_refusals_in_windows_order(changes, password, reason):
    _, result = pyspnego_login("CONTOSO\\alice", password, server=acceptor(lookup_with(**changes)))
    assert (result.ok, result.reason) == (False, reason)


def test_logon_refusal_order():
    assert logon_refusal(None, True) == "unknown user"
    assert logon_refusal(ALICE, True) == ""
    assert logon_refusal(dataclasses.replace(ALICE, locked=True, password_expired=True), False) == "account locked"


def test_the_password_of_another_user_does_not_open_alice():
    _, result = pyspnego_login("CONTOSO\\bob", "P@ssw0rd-bob")
    assert result.ok and result.mailbox.username == "bob"
    _, result = pyspnego_login("CONTOSO\\alice", "P@ssw0rd-bob")
    assert not result.ok


@pytest.mark.parametrize("signing", [True, False], ids=["rpcrt-flags", "http-flags"])
def test_impacket_client_session_key_matches(signing):
    _, _, exported_key, result = impacket_login("alice", PASSWORD, "CONTOSO", signing=signing)
    assert result.ok and result.mailbox == ALICE
    assert result.session_key == exported_key


def test_impacket_wrong_password():
    *_, result = impacket_login("alice", "nope", "CONTOSO")
    assert (result.ok, result.reason, result.user, result.domain) == (False, "wrong password", "alice", "CONTOSO")


def test_anonymous_is_refused():
    *_, result = impacket_login("", "", "")
    assert (result.ok, result.reason) == (False, "anonymous")


@pytest.mark.parametrize("strip_flags", [0, ntlm.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY], ids=["ess", "plain"])
def test_ntlmv1_is_verified_and_can_be_refused(strip_flags):
    _, _, exported_key, result = impacket_login("alice", PASSWORD, "CONTOSO", use_ntlmv2=False,
                                                strip_flags=strip_flags)
    assert (result.ok, result.protocol, result.session_key) == (True, "NTLMv1", exported_key)
    *_, result = impacket_login("alice", "wrong", "CONTOSO", use_ntlmv2=False, strip_flags=strip_flags)
    assert (result.ok, result.reason) == (False, "wrong password")
    *_, result = impacket_login("alice", PASSWORD, "CONTOSO", server=acceptor(accept_ntlmv1=False),
                                use_ntlmv2=False, strip_flags=strip_flags)
    assert (result.ok, result.reason) == (False, "ntlmv1 refused")


def test_lm_only_response_is_refused():
    server = acceptor()
    negotiate = ntlm.getNTLMSSPType1("", "", use_ntlmv2=False)
    authenticate, _ = ntlm.getNTLMSSPType3(negotiate, server.challenge(negotiate.getData()), "alice", PASSWORD,
                                           "CONTOSO", use_ntlmv2=False)
    authenticate["ntlm"] = b""
    assert server.authenticate(authenticate.getData()).reason == "lm response refused"


def test_a_second_negotiate_on_one_acceptor_raises():
    server = acceptor()
    server.challenge(ntlm.getNTLMSSPType1("", "").getData())
    with pytest.raises(NTLMError):
        server.challenge(ntlm.getNTLMSSPType1("", "").getData())


def test_pyspnego_ntlmv1_client_interoperates(monkeypatch):
    monkeypatch.setenv("LM_COMPAT_LEVEL", "1")
    client, result = pyspnego_login("CONTOSO\\alice", PASSWORD)
    assert (result.ok, result.protocol) == (True, "NTLMv1")
    security = NTLMSecurity(result)
    assert security.unwrap(client.wrap(b"v1 request").data) == b"v1 request"
    assert client.unwrap(security.wrap(b"v1 reply")).data == b"v1 reply"


@pytest.mark.parametrize("changes, reason", [({}, "bad MIC"), ({"password_expired": True}, "bad MIC"),
                                             ({"locked": True}, "account locked")])
def test_tampered_mic_is_refused(changes, reason):
    client = spnego.client("CONTOSO\\alice", PASSWORD, hostname=HOST, protocol="ntlm")
    server = acceptor(lookup_with(**changes))
    authenticate = bytearray(client.step(server.challenge(client.step())))
    authenticate[80] ^= 0x01                                       # inside the MIC (offset 72..88)
    result = server.authenticate(bytes(authenticate))
    assert (result.ok, result.reason) == (False, reason)


@settings(max_examples=scaled(40), deadline=None)
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_altered_byte_of_a_pyspnego_authenticate_fails(position, flip):
    client = spnego.client("CONTOSO\\alice", PASSWORD, hostname=HOST, protocol="ntlm")
    server = acceptor()
    authenticate = bytearray(client.step(server.challenge(client.step())))
    authenticate[position % len(authenticate)] ^= flip
    result = server.authenticate(bytes(authenticate))
    assert not result.ok and result.reason


def test_authenticate_out_of_order_or_twice():
    assert acceptor().authenticate(b"NTLMSSP\x00").reason == "unexpected message"
    client = spnego.client("CONTOSO\\alice", PASSWORD, hostname=HOST, protocol="ntlm")
    server = acceptor()
    authenticate = client.step(server.challenge(client.step()))
    assert server.authenticate(authenticate).ok
    assert server.authenticate(authenticate).reason == "unexpected message"


def test_out_of_bounds_security_buffer_is_malformed():
    client = spnego.client("CONTOSO\\alice", PASSWORD, hostname=HOST, protocol="ntlm")
    server = acceptor()
    authenticate = bytearray(client.step(server.challenge(client.step())))
    struct.pack_into("<I", authenticate, 24, len(authenticate))   # NtChallengeResponse offset past the end
    assert server.authenticate(bytes(authenticate)).reason == "malformed message"


@settings(max_examples=scaled(150), deadline=None)
@given(st.binary(max_size=300))
def test_hostile_messages_never_raise_unexpectedly(data):
    negotiate = ntlm.getNTLMSSPType1("", "").getData()
    server = acceptor()
    server.challenge(negotiate)
    for message in (data, b"NTLMSSP\x00\x03\x00\x00\x00" + data):
        assert not server.authenticate(message).ok
        server = acceptor()
        server.challenge(negotiate)
    try:
        acceptor().challenge(b"NTLMSSP\x00\x01\x00\x00\x00" + data)
    except NTLMError:
        pass


# ---- session security: pyspnego -------------------------------------------------------------------------------
def test_pyspnego_wrap_unwrap_both_directions_in_sequence():
    client, result = pyspnego_login("CONTOSO\\alice", PASSWORD)
    security = NTLMSecurity(result)
    for i in range(5):
        request = b"request %d " % i * (i + 1)
        assert security.unwrap(client.wrap(request).data) == request
        reply = b"reply %d" % i * (3 * i + 1)
        assert client.unwrap(security.wrap(reply)).data == reply
    assert (security.in_sequence, security.out_sequence) == (5, 5)


def test_pyspnego_integrity_only_sign_verify():
    client, result = pyspnego_login("CONTOSO\\alice", PASSWORD, context_req=spnego.ContextReq.integrity)
    assert not result.flags & ntlm.NTLMSSP_NEGOTIATE_SEAL
    security = NTLMSecurity(result)
    for i in range(3):
        assert security.verify(b"client %d" % i, client.sign(b"client %d" % i))
        client.verify(b"server %d" % i, security.sign(b"server %d" % i))   # raises on a bad signature
    assert not security.verify(b"forged", client.sign(b"original"))


def test_pyspnego_dce_style_iov_interoperates():
    client, result = pyspnego_login("CONTOSO\\alice", PASSWORD)
    security = NTLMSecurity(result)
    for i in range(3):
        header, stub, trailer = b"H" * 24, b"stub %d" % i * 7, b"T" * 8
        wrapped = client.wrap_iov([BufferType.header, (BufferType.sign_only, header), stub,
                                   (BufferType.sign_only, trailer)]).buffers
        assert security.unseal_and_verify(header, wrapped[2].data, trailer, wrapped[0].data) == stub
        sealed, signature = security.seal_and_sign(header, b"answer %d" % i, trailer)
        unwrapped = client.unwrap_iov([(BufferType.header, signature), (BufferType.sign_only, header),
                                       (BufferType.data, sealed), (BufferType.sign_only, trailer)]).buffers
        assert unwrapped[2].data == b"answer %d" % i


def test_tampered_wrapped_token_is_rejected():
    client, result = pyspnego_login("CONTOSO\\alice", PASSWORD)
    security = NTLMSecurity(result)
    token = bytearray(client.wrap(b"important").data)
    token[-1] ^= 0x40
    with pytest.raises(NTLMError):
        security.unwrap(bytes(token))
    with pytest.raises(NTLMError):
        security.unwrap(b"short")


def test_session_security_needs_success_and_ess():
    with pytest.raises(NTLMError):
        NTLMSecurity(NTLMResult(ok=False, reason="wrong password"))
    with pytest.raises(NTLMError):
        NTLMSecurity(NTLMResult(ok=True, flags=ntlm.NTLMSSP_NEGOTIATE_SEAL, session_key=bytes(16)))


# ---- session security: impacket's rpcrt.py at auth level 6 and 5 -----------------------------------------------
class ImpacketRpcClient:
    """The key setup and SEAL/SIGN calls of impacket/dcerpc/v5/rpcrt.py (bind, _transport_send, recv)."""

    def __init__(self, flags, session_key):
        self.flags = flags
        self.client_sign = ntlm.SIGNKEY(flags, session_key)
        self.server_sign = ntlm.SIGNKEY(flags, session_key, b"Server")
        self.client_seal = ntlm.SEALKEY(flags, session_key)
        self.server_seal = ntlm.SEALKEY(flags, session_key, b"Server")
        self.client_handle = ntlm.ARC4.new(self.client_seal).encrypt
        self.server_handle = ntlm.ARC4.new(self.server_seal).encrypt
        self.sequence = 0

    def send_privacy(self, header, stub_and_pad, trailer):
        sealed, signature = ntlm.SEAL(self.flags, self.client_sign, self.client_seal,
                                      header + stub_and_pad + trailer, stub_and_pad, self.sequence,
                                      self.client_handle)
        self.sequence += 1
        return sealed, signature.getData()

    def send_integrity(self, pdu):
        signature = ntlm.SIGN(self.flags, self.client_sign, pdu, self.sequence, self.client_handle)
        self.sequence += 1
        return signature.getData()

    def recv_privacy(self, sealed):
        """rpcrt's recv: decrypt and run the MAC (8 keystream bytes) over the sealed bytes, never compare."""
        answer, _ = ntlm.SEAL(self.flags, self.server_sign, self.server_seal, sealed, sealed, self.sequence,
                              self.server_handle)
        return answer


class CheckingRpcPeer:
    """What a correct client (Windows) does with our responses: decrypt, then verify the signature."""

    def __init__(self, flags, session_key):
        self.flags = flags
        self.sign_key = ntlm.SIGNKEY(flags, session_key, b"Server")
        self.handle = ntlm.ARC4.new(ntlm.SEALKEY(flags, session_key, b"Server")).encrypt
        self.sequence = 0

    def open(self, header, sealed, trailer, signature):
        plain = self.handle(sealed)
        expected = ntlm.SIGN(self.flags, self.sign_key, header + plain + trailer, self.sequence, self.handle)
        self.sequence += 1
        assert expected.getData() == signature
        return plain


def test_impacket_rpc_level6_sealing_both_directions():
    _, authenticate, exported_key, result = impacket_login("alice", PASSWORD, "CONTOSO")
    assert result.ok and result.flags & ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH
    client = ImpacketRpcClient(authenticate["flags"], exported_key)
    checker = CheckingRpcPeer(authenticate["flags"], exported_key)
    security = NTLMSecurity(result)
    for call_id in range(2, 8):
        header = struct.pack("<BBBBIHHIIIHH", 5, 0, 0, 3, 0x10, 0, 16, call_id, 0, 0, 0, 0)[:24]
        trailer = struct.pack("<BBBBI", 10, 6, 0, 0, 79231)
        stub = bytes([call_id]) * (call_id * 13 % 40 + 4)
        sealed, signature = client.send_privacy(header, stub, trailer)
        assert sealed != stub
        assert security.unseal_and_verify(header, sealed, trailer, signature) == stub
        reply = b"reply-%d" % call_id * call_id
        sealed, signature = security.seal_and_sign(header, reply, trailer)
        assert client.recv_privacy(sealed) == reply
        assert checker.open(header, sealed, trailer, signature) == reply


def test_impacket_rpc_level5_signing_both_directions():
    _, authenticate, exported_key, result = impacket_login("alice", PASSWORD, "CONTOSO")
    client = ImpacketRpcClient(authenticate["flags"], exported_key)
    security = NTLMSecurity(result)
    for i in range(4):
        pdu = b"pdu %d" % i * 9
        assert security.verify(pdu, client.send_integrity(pdu))
        signature = security.sign(pdu)
        expected = ntlm.SIGN(client.flags, client.server_sign, pdu, i, client.server_handle)
        assert signature == expected.getData()
    assert not security.verify(b"tampered", client.send_integrity(b"original"))


def test_a_keystream_slip_shows_as_a_bad_signature():
    _, authenticate, exported_key, result = impacket_login("alice", PASSWORD, "CONTOSO")
    client = ImpacketRpcClient(authenticate["flags"], exported_key)
    security = NTLMSecurity(result)
    client.send_privacy(b"h", b"lost request", b"t")                   # never reaches the server
    sealed, signature = client.send_privacy(b"h", b"next request", b"t")
    with pytest.raises(NTLMError):
        security.unseal_and_verify(b"h", sealed, b"t", signature)


# ---- SPNEGO ----------------------------------------------------------------------------------------------------
def negotiate_acceptor(**options):
    return NegotiateAcceptor(acceptor(**options))


def run_negotiate(client, server):
    token = client.step()
    while True:
        step = server.step(token)
        if step.state != "continue":
            return step
        token = client.step(step.token)


def test_pyspnego_negotiate_with_mech_list_mic_and_wrapping():
    client = spnego.client("CONTOSO\\alice", PASSWORD, hostname=HOST, protocol="negotiate")
    step = run_negotiate(client, negotiate_acceptor())
    assert (step.state, step.result.mailbox) == ("success", ALICE)
    final = unpack_token(step.token)
    assert final.neg_state == ACCEPT_COMPLETED and final.mech_list_mic
    assert client.step(step.token) is None and client.complete          # pyspnego verified our mechListMIC
    assert step.security.unwrap(client.wrap(b"after spnego").data) == b"after spnego"
    assert client.unwrap(step.security.wrap(b"server says")).data == b"server says"


def test_pyspnego_negotiate_first_reply_names_ntlm():
    client = spnego.client("CONTOSO\\alice", PASSWORD, hostname=HOST, protocol="negotiate")
    first = unpack_token(negotiate_acceptor().step(client.step()).token)
    assert (first.neg_state, first.supported_mech) == (ACCEPT_INCOMPLETE, NTLM_OID)
    assert first.response_token[:12] == b"NTLMSSP\x00\x02\x00\x00\x00"


def test_pyspnego_negotiate_wrong_password_is_rejected():
    client = spnego.client("CONTOSO\\alice", "wrong", hostname=HOST, protocol="negotiate")
    step = run_negotiate(client, negotiate_acceptor())
    assert (step.state, step.reason) == ("failure", "wrong password")
    assert unpack_token(step.token).neg_state == REJECT


def test_raw_ntlm_under_negotiate():
    client = spnego.client("CONTOSO\\alice", PASSWORD, hostname=HOST, protocol="ntlm")
    step = run_negotiate(client, negotiate_acceptor())
    assert (step.state, step.token, step.result.mailbox) == ("success", b"", ALICE)
    assert step.security.unwrap(client.wrap(b"raw").data) == b"raw"


def test_kerberos_only_is_a_clean_failure():
    token = NegTokenInit([KRB5_OID], mech_token=b"\x60\x03\x06\x01\x00").pack()
    step = negotiate_acceptor().step(token)
    assert (step.state, step.reason) == ("failure", "kerberos not supported")
    assert unpack_token(step.token).neg_state == REJECT


class NtlmSecondInList:
    """A Windows-like initiator that prefers Kerberos: NTLM is listed second, so mechListMICs are mandatory."""

    def __init__(self, password=PASSWORD):
        self.mechs = [KRB5_OID, NTLM_OID]
        self.ntlm = spnego.client("CONTOSO\\alice", password, hostname=HOST, protocol="ntlm")

    def init(self):
        return NegTokenInit(self.mechs, mech_token=b"\x60\x03\x06\x01\x00").pack()

    def negotiate(self):
        return NegTokenResp(response_token=self.ntlm.step()).pack()

    def authenticate(self, challenge, with_mic=True):
        authenticate = self.ntlm.step(challenge)
        mic = None
        if with_mic:
            mic = self.ntlm.sign(pack_mech_type_list(self.mechs))
            self.ntlm._reset_ntlm_crypto_state()
        return NegTokenResp(response_token=authenticate, mech_list_mic=mic).pack()


def test_ntlm_listed_after_kerberos_requests_mic():
    client, server = NtlmSecondInList(), negotiate_acceptor()
    first = unpack_token(server.step(client.init()).token)
    assert (first.neg_state, first.supported_mech, first.response_token) == (REQUEST_MIC, NTLM_OID, None)
    second = unpack_token(server.step(client.negotiate()).token)
    assert second.neg_state == ACCEPT_INCOMPLETE and second.supported_mech is None
    step = server.step(client.authenticate(second.response_token))
    assert step.state == "success"
    client.ntlm.verify(pack_mech_type_list(client.mechs), unpack_token(step.token).mech_list_mic)
    client.ntlm._reset_ntlm_crypto_state(outgoing=False)
    assert step.security.unwrap(client.ntlm.wrap(b"x").data) == b"x"


def test_missing_or_bad_mech_list_mic_fails():
    client, server = NtlmSecondInList(), negotiate_acceptor()
    server.step(client.init())
    challenge = unpack_token(server.step(client.negotiate()).token).response_token
    assert server.step(client.authenticate(challenge, with_mic=False)).reason == "mechListMIC missing"

    client, server = NtlmSecondInList(), negotiate_acceptor()
    server.step(client.init())
    challenge = unpack_token(server.step(client.negotiate()).token).response_token
    authenticate = client.ntlm.step(challenge)
    forged = NegTokenResp(response_token=authenticate, mech_list_mic=bytes(16)).pack()
    assert server.step(forged).reason == "bad mechListMIC"


def test_tokens_after_completion_fail():
    client = spnego.client("CONTOSO\\alice", PASSWORD, hostname=HOST, protocol="negotiate")
    server = negotiate_acceptor()
    assert run_negotiate(client, server).state == "success"
    assert server.step(b"anything").reason == "unexpected token"


@settings(max_examples=scaled(100), deadline=None)
@given(st.binary(max_size=200), st.sampled_from([b"", b"\x60", b"\xa1"]))
def test_hostile_spnego_tokens_never_raise(data, prefix):
    step = negotiate_acceptor().step(prefix + data)
    if step.state == "continue":                                    # the fuzzer found a raw NEGOTIATE
        assert step.token[:12] == b"NTLMSSP\x00\x02\x00\x00\x00"
    else:
        assert step.state == "failure" and step.reason


@settings(max_examples=scaled(100), deadline=None)
@given(leg=st.integers(min_value=0, max_value=1), position=st.integers(min_value=0),
       flip=st.integers(min_value=1, max_value=255))
def test_altered_pyspnego_negotiate_tokens_never_raise(leg, position, flip):
    """Only alterations of unprotected SPNEGO framing (e.g. the client's negState) may still succeed."""
    client = spnego.client("CONTOSO\\alice", PASSWORD, hostname=HOST, protocol="negotiate")
    server = negotiate_acceptor()
    original = client.step()
    if leg:
        original = client.step(server.step(original).token)
    altered = bytearray(original)
    altered[position % len(altered)] ^= flip
    step = server.step(bytes(altered))
    while step.state == "continue":
        try:
            reply = client.step(step.token)
        except (SpnegoError, struct.error):     # our answer to the altered token puzzles the client: fine
            return
        step = server.step(reply)
    if step.state == "success":
        def inner(token):
            return (token.mech_token, token.mech_types) if leg == 0 else (token.response_token, token.mech_list_mic)

        try:
            altered_inner = inner(unpack_token(bytes(altered)))
        except (ValueError, IndexError, struct.error):
            # the flip broke framing pyspnego's parser insists on (a tag, a length); the NTLM token must be intact
            assert inner(unpack_token(original))[0] in bytes(altered)
        else:
            assert altered_inner == inner(unpack_token(original))
    else:
        assert step.state == "failure" and step.reason
