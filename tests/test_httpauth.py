"""IIS-like connection-bound HTTP authentication, driven by pyspnego and impacket's HTTP NTLM client logic."""
import base64
import dataclasses
import random
import re

import pytest
import spnego
from hypothesis import given, settings
from hypothesis import strategies as st
from impacket import ntlm

from harness.org import Org, load_org
from harness.protocols.httpauth import SCHEMES, AuthOutcome, HttpAuthenticator
from harness.protocols.ntlm import ServerIdentity
from tests.support.fuzz import scaled

ORG = load_org()
IDENTITY = ServerIdentity.for_org(ORG)
ALICE = ORG.find("alice")
PASSWORD = ALICE.password
REALM = "mail.contoso.test"
FULL_SET = [("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "NTLM"),
            ("WWW-Authenticate", f'Basic realm="{REALM}"')]


def authenticator(org=ORG, **options):
    return HttpAuthenticator(org, IDENTITY, random.Random(3), realm=REALM, **options)


def org_with_alice(**changes) -> Org:
    mailboxes = [dataclasses.replace(m, **changes) if m is ALICE else m for m in ORG.mailboxes]
    values = {f.name: getattr(ORG, f.name) for f in dataclasses.fields(ORG) if f.init and f.name != "_by_key"}
    return Org(**{**values, "mailboxes": mailboxes})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def basic(login: str, password: str, encoding="utf-8") -> str:
    return "Basic " + b64(f"{login}:{password}".encode(encoding))


def token_of(outcome: AuthOutcome, scheme: str) -> bytes:
    (name, value), = outcome.headers
    assert name == "WWW-Authenticate" and value.startswith(scheme + " ")
    return base64.b64decode(value[len(scheme) + 1:])


def ntlm_login(auth, username="CONTOSO\\alice", password=PASSWORD, scheme="NTLM", protocol="ntlm"):
    """A pyspnego client through the 401 dance on one connection; returns (client, last outcome)."""
    client = spnego.client(username, password, hostname="ex01.contoso.test", protocol=protocol)
    outcome = auth.process(f"{scheme} {b64(client.step())}")
    while outcome.state == "continue":
        outcome = auth.process(f"{scheme} {b64(client.step(token_of(outcome, scheme)))}")
    return client, outcome


# ---- challenges ------------------------------------------------------------------------------------------------
def test_plain_401_offers_each_scheme_on_its_own_line_in_order():
    auth = authenticator()
    assert auth.challenge_headers() == FULL_SET
    outcome = auth.process(None)
    assert (outcome.state, outcome.headers, outcome.mailbox) == ("anonymous", FULL_SET, None)
    assert authenticator(methods=("NTLM", "Basic")).challenge_headers() == FULL_SET[1:]


@pytest.mark.parametrize("methods", [(), ("Digest",), ("NTLM", "Kerberos")])
def test_unknown_methods_are_rejected_at_construction(methods):
    with pytest.raises(ValueError):
        authenticator(methods=methods)


# ---- NTLM: the 401 -> CHALLENGE -> success sequence, bound to the connection -------------------------------------
def test_ntlm_handshake_authenticates_the_connection():
    auth = authenticator()
    assert auth.process(None).state == "anonymous"
    client, outcome = ntlm_login(auth)
    assert (outcome.state, outcome.scheme, outcome.user, outcome.domain) == ("success", "NTLM", "alice", "CONTOSO")
    assert outcome.mailbox == ALICE and outcome.headers == []
    later = auth.process(None)                                        # same connection, no header
    assert (later.state, later.mailbox, later.scheme) == ("success", ALICE, "NTLM")
    assert auth.process(None).mailbox == ALICE


def test_ntlm_continue_carries_the_challenge():
    auth = authenticator()
    client = spnego.client("CONTOSO\\alice", PASSWORD, hostname="ex01.contoso.test", protocol="ntlm")
    outcome = auth.process("NTLM " + b64(client.step()))
    assert outcome.state == "continue"
    assert token_of(outcome, "NTLM")[:12] == b"NTLMSSP\x00\x02\x00\x00\x00"


def test_a_new_negotiate_restarts_the_handshake():
    auth = authenticator()
    ntlm_login(auth)
    client = spnego.client("CONTOSO\\bob", "P@ssw0rd-bob", hostname="ex01.contoso.test", protocol="ntlm")
    assert auth.process("NTLM " + b64(client.step())).state == "continue"
    assert auth.process(None).state == "anonymous"                   # alice no longer counts, bob never finished
    _, outcome = ntlm_login(auth, "CONTOSO\\bob", "P@ssw0rd-bob")
    assert outcome.mailbox.username == "bob" and auth.process(None).mailbox.username == "bob"


def test_wrong_ntlm_password_fails_with_the_full_challenge_set():
    auth = authenticator()
    _, outcome = ntlm_login(auth, password="wrong")
    assert (outcome.state, outcome.reason, outcome.user, outcome.headers) == ("failure", "wrong password",
                                                                               "alice", FULL_SET)
    assert auth.process(None).state == "anonymous"


def test_failure_forgets_the_connection_user():
    auth = authenticator()
    ntlm_login(auth)
    assert auth.process(basic("alice", "wrong")).state == "failure"
    assert auth.process(None).state == "anonymous"


def test_authenticate_without_a_handshake_on_this_connection():
    # What the server sees when a client lets the 401 close the connection (research notes, pitfall 1).
    client = spnego.client("CONTOSO\\alice", PASSWORD, hostname="ex01.contoso.test", protocol="ntlm")
    first = authenticator()
    authenticate = client.step(token_of(first.process("NTLM " + b64(client.step())), "NTLM"))
    outcome = authenticator().process("NTLM " + b64(authenticate))
    assert (outcome.state, outcome.reason) == ("failure", "unexpected NTLM message")


def test_impacket_http_client_flow():
    """impacket/http.py: Type 1 with the domain, challenge found by regex in the joined headers, then Type 3."""
    auth = authenticator()
    negotiate = ntlm.getNTLMSSPType1(domain="CONTOSO")
    challenge_outcome = auth.process("NTLM " + b64(negotiate.getData()))
    joined = ", ".join(value for _, value in challenge_outcome.headers)     # what http.client hands impacket
    challenge = base64.b64decode(re.search("NTLM ([a-zA-Z0-9+/]+={0,2})", joined).group(1))
    av_pairs = ntlm.AV_PAIRS(ntlm.NTLMAuthChallenge(challenge)["TargetInfoFields"])
    assert av_pairs[ntlm.NTLMSSP_AV_HOSTNAME][1].decode("utf-16le") == "EX01"   # rpch.py's RPC server name
    authenticate, _ = ntlm.getNTLMSSPType3(negotiate, challenge, "alice", PASSWORD, "CONTOSO")
    outcome = auth.process("NTLM " + b64(authenticate.getData()))
    assert (outcome.state, outcome.mailbox) == ("success", ALICE)


@pytest.mark.parametrize("changes, reason", [({"locked": True}, "account locked"),
                                             ({"password_expired": True}, "password expired")])
def test_account_state_failures_over_ntlm(changes, reason):
    _, outcome = ntlm_login(authenticator(org_with_alice(**changes)))
    assert (outcome.state, outcome.reason) == ("failure", reason)


# ---- Negotiate -------------------------------------------------------------------------------------------------
def test_negotiate_spnego_final_token_is_accepted_by_the_client():
    auth = authenticator()
    client, outcome = ntlm_login(auth, scheme="Negotiate", protocol="negotiate")
    assert (outcome.state, outcome.scheme, outcome.mailbox) == ("success", "Negotiate", ALICE)
    client.step(token_of(outcome, "Negotiate"))                     # verifies our mechListMIC
    assert client.complete
    assert auth.process(None).mailbox == ALICE


def test_negotiate_with_raw_ntlm_tokens_like_curl():
    auth = authenticator()
    _, outcome = ntlm_login(auth, scheme="Negotiate", protocol="ntlm")
    assert (outcome.state, outcome.headers, outcome.mailbox) == ("success", [], ALICE)


def test_negotiate_wrong_password():
    _, outcome = ntlm_login(authenticator(), password="wrong", scheme="Negotiate", protocol="negotiate")
    assert (outcome.state, outcome.reason, outcome.headers) == ("failure", "wrong password", FULL_SET)


def test_spnego_under_the_ntlm_scheme_is_malformed():
    client = spnego.client("CONTOSO\\alice", PASSWORD, hostname="ex01.contoso.test", protocol="negotiate")
    outcome = authenticator().process("NTLM " + b64(client.step()))
    assert outcome.state == "failure" and outcome.reason.startswith("malformed token")


# ---- scheme selection ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("methods, header_scheme", [(("Basic",), "NTLM"), (("Basic",), "Negotiate"),
                                                    (("NTLM",), "Negotiate"), (("Negotiate",), "NTLM"),
                                                    (("NTLM", "Negotiate"), "Basic"), (SCHEMES, "Digest")])
def test_scheme_not_offered(methods, header_scheme):
    auth = authenticator(methods=methods)
    outcome = auth.process(f"{header_scheme} {b64(b'NTLMSSP' + bytes(9))}")
    assert (outcome.state, outcome.reason) == ("failure", "scheme not offered")
    assert outcome.headers == auth.challenge_headers()


def test_scheme_names_are_case_insensitive():
    auth = authenticator()
    client = spnego.client("CONTOSO\\alice", PASSWORD, hostname="ex01.contoso.test", protocol="ntlm")
    challenge = token_of(auth.process("ntlm " + b64(client.step())), "NTLM")    # answered in IIS's spelling
    assert auth.process("nTlM " + b64(client.step(challenge))).state == "success"
    assert authenticator().process(basic("alice", PASSWORD).replace("Basic", "BASIC")).state == "success"


# ---- Basic -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("login", ["alice", "alice@contoso.test", "CONTOSO\\alice", "contoso.test\\alice",
                                   "contoso\\ALICE"])
def test_basic_forms_succeed_per_request(login):
    auth = authenticator()
    outcome = auth.process(basic(login, PASSWORD))
    assert (outcome.state, outcome.scheme, outcome.mailbox, outcome.headers) == ("success", "Basic", ALICE, [])
    assert auth.process(None).state == "anonymous"                   # Basic does not bind the connection


def test_the_same_basic_credentials_again_on_a_connection_succeed_alike_and_others_are_judged_afresh():
    auth = authenticator()
    header = basic("CONTOSO\\alice", PASSWORD)
    first = auth.process(header)
    again = auth.process(header)
    assert again == first and again is not first and again.headers is not first.headers
    again.headers.append(("X-Changed", "by the caller"))           # a caller's change stays its own
    assert auth.process(header).headers == []
    assert auth.process(basic("alice", "wrong")).reason == "wrong password"
    assert auth.process(header).state == "success"
    auth.methods = ("Negotiate", "NTLM")                              # Basic no longer offered
    assert (auth.process(header).state, auth.process(header).reason) == ("failure", "scheme not offered")
    auth.methods = SCHEMES
    assert ntlm_login(auth)[1].state == "success"                     # the connection's NTLM user is kept
    assert auth.process(header).user == "alice" and auth.process(None).scheme == "NTLM"


@pytest.mark.parametrize("header, reason", [
    (basic("alice", "wrong"), "wrong password"),
    (basic("alice", PASSWORD.upper()), "wrong password"),
    (basic("mallory", "x"), "unknown user"),
    (basic("FABRIKAM\\alice", PASSWORD), "unknown domain"),
    (basic("", "x"), "anonymous"),
    ("Basic " + b64(b"no-colon"), "malformed credentials"),
    ("Basic !!!notbase64", "malformed base64"),
    ("NTLM ***", "malformed base64"),
    ("NTLM", "malformed token"),
    ("Negotiate " + b64(b"\x30\x00"), "malformed token: GSS InitialContextToken expected"),
])
def test_bad_requests_fail_with_a_reason(header, reason):
    outcome = authenticator().process(header)
    assert (outcome.state, outcome.reason, outcome.headers) == ("failure", reason, FULL_SET)


@pytest.mark.parametrize("changes, reason", [({"locked": True}, "account locked"),
                                             ({"password_expired": True}, "password expired")])
def test_account_state_failures_over_basic(changes, reason):
    outcome = authenticator(org_with_alice(**changes)).process(basic("alice", PASSWORD))
    assert (outcome.state, outcome.reason, outcome.mailbox.username) == ("failure", reason, "alice")


def test_basic_latin1_credentials():
    auth = authenticator(org_with_alice(password="Pässwörd"))
    assert auth.process(basic("alice", "Pässwörd", "latin-1")).state == "success"
    assert auth.process(basic("alice", "Pässwörd", "utf-8")).state == "success"


# ---- hostile input ---------------------------------------------------------------------------------------------
SCHEME_NAMES = st.sampled_from(["NTLM", "Negotiate", "Basic", "ntlm", "Bearer", ""])
NTLM_PREFIXES = st.sampled_from([b"", b"NTLMSSP\x00\x01\x00\x00\x00", b"NTLMSSP\x00\x03\x00\x00\x00", b"\x60",
                                 b"\xa1"])
HEADER = st.one_of(
    st.none(),
    st.text(max_size=60),
    st.builds(lambda scheme, prefix, data: f"{scheme} {b64(prefix + data)}", SCHEME_NAMES, NTLM_PREFIXES,
              st.binary(max_size=120)),
)


def check_outcome(auth: HttpAuthenticator, outcome: AuthOutcome) -> None:
    assert outcome.state in ("anonymous", "continue", "success", "failure")
    if outcome.state == "failure":
        assert outcome.reason and outcome.headers == auth.challenge_headers()
    assert outcome.state != "success" or outcome.mailbox is not None


def replay_headers(headers) -> None:
    auth = authenticator()
    for header in headers:
        outcome = auth.process(header)
        check_outcome(auth, outcome)
        assert outcome.state != "success"


@settings(max_examples=scaled(200), deadline=None)
@given(st.lists(HEADER, min_size=1, max_size=6))
def test_hostile_header_sequences_never_raise(headers):
    replay_headers(headers)


@pytest.mark.slow
@settings(max_examples=scaled(3000), deadline=None)
@given(st.lists(HEADER, min_size=1, max_size=12))
def test_hostile_header_sequences_never_raise_long(headers):
    replay_headers(headers)


@settings(max_examples=scaled(60), deadline=None)
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_an_altered_authenticate_over_http_never_succeeds(position, flip):
    auth = authenticator()
    client = spnego.client("CONTOSO\\alice", PASSWORD, hostname="ex01.contoso.test", protocol="ntlm")
    authenticate = bytearray(client.step(token_of(auth.process("NTLM " + b64(client.step())), "NTLM")))
    authenticate[position % len(authenticate)] ^= flip
    outcome = auth.process("NTLM " + b64(bytes(authenticate)))
    check_outcome(auth, outcome)
    assert outcome.state == "failure"
