"""Fuzz target "basic": Basic credentials decoded from arbitrary Authorization values, by the HTTPS site's
authenticator (harness/protocols/httpauth.py) and by the port-80 vhost that records credentials sent in clear
(services/site.py RedirectSite).

Whatever the value: nothing raises; a success names the mailbox whose exact password the token carries (UTF-8, or
Latin-1 when not UTF-8) and right credentials in any accepted login form succeed; the port-80 record says the
password was valid exactly when the HTTPS site would have let these credentials in, and never holds the password."""
from __future__ import annotations

import base64
import binascii
import json
import random
from typing import Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.org import load_org
from harness.protocols.http import ConnectionInfo, HttpRequest
from harness.protocols.httpauth import HttpAuthenticator
from harness.protocols.ntlm import ServerIdentity
from harness.services.site import RedirectSite
from harness.transcript import Transcript
from tests.support import corpus
from tests.support.fuzz import scaled

ORG = load_org()
IDENTITY = ServerIdentity.for_org(ORG)
ALICE = ORG.find("alice")
assert ALICE is not None and not ALICE.locked and not ALICE.password_expired
PASSWORDS = [mailbox.password for mailbox in ORG.mailboxes]

LOGINS = ["alice", "ALICE", "alice@contoso.test", "Alice@Contoso.Test", "CONTOSO\\alice", "contoso.test\\alice",
          "contoso\\ALICE", "FABRIKAM\\alice", "alice@fabrikam.test", "\\alice", "CONTOSO\\", " alice", "alice ",
          "bob", "mallory", "", "alice:x", "smtp:alice@contoso.test"]
near_misses = st.sampled_from([ALICE.password.upper(), ALICE.password + " ", " " + ALICE.password,
                               ALICE.password + "\x00", ALICE.password[:-1], ALICE.password + ":",
                               ALICE.password.replace("0", "O"), "", PASSWORDS[1]])
passwords = st.one_of(st.just(ALICE.password), near_misses, st.text(max_size=24))
text_without_surrogates = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


def encode(login: str, password: str, encoding: str) -> str:
    return base64.b64encode(f"{login}:{password}".encode(encoding, "replace")).decode()


tokens = st.one_of(
    st.builds(encode, st.sampled_from(LOGINS) | text_without_surrogates, passwords,
              st.sampled_from(["utf-8", "latin-1"])),
    st.binary(max_size=60).map(lambda data: base64.b64encode(data).decode()),
    text_without_surrogates,
    st.sampled_from(["", "=", "====", "YWxpY2U6", "YWxpY2U6P", "!!!", "YWxp Y2U6", "\u00e9"]),
)
headers = st.builds("{0}{1}{2}{3}".format, st.sampled_from(["Basic", "basic", "BASIC", "Basic ", "Basic\t", ""]),
                    st.sampled_from([" ", "  ", "\t", ""]), tokens, st.sampled_from(["", " ", "\t", "\r"]))


def decoded(header: str) -> Optional[Tuple[str, str]]:
    """(login, password) that ``header`` carries as Basic credentials, decoded as the brief says (UTF-8, else
    Latin-1), or None when it carries none."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        data = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    login, colon, password = text.partition(":")
    return (login, password) if colon else None


def authenticate(header: str):
    return HttpAuthenticator(ORG, IDENTITY, random.Random(1), realm="mail.contoso.test").process(header)


def check_basic(header: str) -> None:
    outcome = authenticate(header)
    assert outcome.state in ("anonymous", "failure", "success")
    credentials = decoded(header)
    if outcome.state == "success":
        assert credentials is not None and outcome.mailbox is not None and outcome.scheme == "Basic"
        login, password = credentials
        assert password == outcome.mailbox.password, "a success without the mailbox's password"
        assert ORG.find(login.rpartition("\\")[2]) is outcome.mailbox
    if credentials and credentials[1] == ALICE.password and credentials[0] in {
            "alice", "ALICE", "alice@contoso.test", "Alice@Contoso.Test", "CONTOSO\\alice", "contoso.test\\alice",
            "contoso\\ALICE"}:
        assert outcome.state == "success", f"alice's right credentials refused: {outcome.reason}"


def check_port_80_record(header: str) -> None:
    header = header.strip(" \t")     # as h11 hands a header value over
    transcript = Transcript()
    request = HttpRequest("GET", "/", "/", "", [("Host", "autodiscover.contoso.test"), ("Authorization", header)],
                          scheme="http", conn=ConnectionInfo(peer=("127.0.0.1", 50000), local=("127.0.0.1", 80),
                                                             tls=False, conn_id=1))
    RedirectSite(ORG, transcript, 443).handle(request)
    events = transcript.of_kind("auth")
    if not header:
        assert events == []
        return
    (event,) = events
    credentials = decoded(header)
    recorded = json.dumps({key: value for key, value in event.items() if key != "user"})   # the user is the login
    assert not any(password in recorded or password in str(event["user"]) and password not in credentials[0]
                   for password in PASSWORDS if credentials)
    if credentials is None:
        assert event["password_valid"] in (None, False)
    else:
        assert event["password_valid"] is (authenticate(header).state == "success"), (
            "the port-80 record and the HTTPS site disagree about these credentials")


@settings(max_examples=scaled(500), deadline=None)
@given(headers)
def test_any_basic_value_never_raises_and_succeeds_only_with_the_password(header):
    check_basic(header)


@settings(max_examples=scaled(300), deadline=None)
@given(headers)
def test_the_port_80_record_of_any_basic_value_agrees_with_the_https_site(header):
    check_port_80_record(header)


@pytest.mark.parametrize("entry", corpus.entries("basic"))
def test_basic_corpus(entry):
    check_basic(entry["authorization"])
    check_port_80_record(entry["authorization"])
