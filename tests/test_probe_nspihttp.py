"""The probe's address book client over MAPI/HTTP (harness.probe.nspihttp, written from the specs alone), in-process:
its request bodies are what the server's parser (harness.rpc.nspi.httpwire) reads; it reads the server's response
bodies, flagged rows and typed columns included; each way an answer can go wrong gives its reason."""
from __future__ import annotations

import struct
from typing import List, Tuple

import pytest

from harness import verdicts
from harness.probe import nspihttp
from harness.probe.report import StepFailed
from harness.probe.rops import RopMalformed
from harness.rpc.nspi import httpwire
from harness.rpc.nspi.stat import Stat

DN = "/o=Contoso/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=alice"
ROW = [(nspihttp.PR_DISPLAY_NAME_W, "Alice Example"), (nspihttp.PR_EMAIL_ADDRESS_W, DN),
       (nspihttp.PR_SMTP_ADDRESS_W, "alice@contoso.test")]
GUID = bytes(range(16))


def resolved(mids=(0x1234,), rows=(ROW,), code=0, columns=nspihttp.CHECK_NAME_TAGS) -> bytes:
    return httpwire.resolve_names_response(code, 1252, list(mids), list(columns), [list(r) for r in rows])


class FakeSession:
    """Answers each request type with the body given; records what was sent."""

    def __init__(self, **answers: bytes):
        self.answers, self.sent = answers, []  # type: ignore[var-annotated]
        self.unbound = False

    def post(self, request_type: str, body: bytes) -> bytes:
        self.sent.append((request_type, body))
        return self.answers[request_type]

    def disconnect(self, request_type: str = "Disconnect") -> None:
        self.unbound = request_type == "Unbind"


def check(**answers: bytes) -> Tuple[nspihttp.CheckName, FakeSession]:
    session = FakeSession(**{"Bind": httpwire.bind_response(0, GUID), **answers})
    return nspihttp.check_name(session, "alice@contoso.test"), session  # type: ignore[arg-type]


def failure(**answers: bytes) -> StepFailed:
    with pytest.raises(StepFailed) as caught:
        check(**answers)
    return caught.value


def test_the_requests_are_what_the_server_parses():
    bind = httpwire.parse_request("Bind", nspihttp.bind_body())
    assert bind.flags == 0 and bind.stat == Stat(CodePage=1252, TemplateLocale=0x409, SortLocale=0x409)
    names = httpwire.parse_request("ResolveNames", nspihttp.resolve_names_body(["alice@contoso.test"],
                                                                                nspihttp.CHECK_NAME_TAGS))
    assert names.names == ["alice@contoso.test"] and names.tags == list(nspihttp.CHECK_NAME_TAGS)
    assert names.stat == Stat(CodePage=1252, TemplateLocale=0x409, SortLocale=0x409)


def test_check_name_reads_the_resolved_row_and_unbinds():
    found, session = check(ResolveNames=resolved())
    assert found == nspihttp.CheckName("03020100-0504-0706-0809-0a0b0c0d0e0f", 0x1234, "Alice Example", DN,
                                       "alice@contoso.test")
    assert [kind for kind, _ in session.sent] == ["Bind", "ResolveNames"] and session.unbound


def test_flagged_rows_and_typed_columns_are_read():
    error_row = [(nspihttp.PR_DISPLAY_NAME_W, "Alice"), (0x3003000A, 0x8004010F), (nspihttp.PR_SMTP_ADDRESS_W, "a@b")]
    found, _ = check(ResolveNames=resolved(rows=[error_row]))
    assert (found.display_name, found.legacy_dn, found.smtp_address) == ("Alice", "", "a@b")
    typed_columns = [0x30010000, 0x39000000, 0x0FFF0000]                     # PT_UNSPECIFIED: typed values
    typed = [(nspihttp.PR_DISPLAY_NAME_W, "Alice"), (0x39000003, 6), (0x0FFF0102, b"\x00" * 20)]
    row = nspihttp.read_resolve_names(resolved(rows=[typed], columns=typed_columns)).row
    assert row == {0x30010000: "Alice", 0x39000000: 6, 0x0FFF0000: b"\x00" * 20}


@pytest.mark.parametrize("mids, message", [([0], "found no entry"), ([1], "found several entries")])
def test_an_unresolved_or_ambiguous_name_is_name_not_found(mids: List[int], message: str):
    failed = failure(ResolveNames=resolved(mids=mids, rows=()))
    assert failed.reason == "name-not-found" and message in failed.message and failed.evidence["mids"] == mids


def test_error_codes_name_their_reason():
    bind = failure(Bind=httpwire.bind_response(0x80040111, bytes(16)))
    assert (bind.reason, bind.evidence["status"]) == ("mapi-nspi-bind-failed", "0x80040111")
    assert "ValidPorts" not in verdicts.remedy_for(bind.reason) and "/mapi/nspi" in verdicts.remedy_for(bind.reason)
    assert "MAPI_E_LOGON_FAILED" in bind.message
    assert failure(ResolveNames=httpwire.code_response(0x8004010F)).reason == "nspi-response-malformed"
    not_found = failure(ResolveNames=resolved(code=0x8004010F, mids=(), rows=()))
    assert (not_found.reason, not_found.evidence["status"]) == ("name-not-found", "0x8004010f")
    other = failure(ResolveNames=resolved(code=0x80004005, mids=(), rows=()))
    assert other.reason == "nspi-error" and "MAPI_E_CALL_FAILED" in other.message


@pytest.mark.parametrize("body, detail", [
    (resolved()[:-9], "an unterminated string in the response body"),
    (resolved() + b"\x00", "1 bytes after the auxiliary buffer"),
    (resolved().replace(b"\x00\x01A\x00l\x00", b"\x07\x01A\x00l\x00", 1), "a row's Flags is 0x07"),
    (resolved(rows=()), "MId 0x1234 resolved but no row came back"),
    (resolved(mids=(), rows=()), "no MinimalIds for the name"),
    (resolved(columns=(0x30010099, nspihttp.PR_EMAIL_ADDRESS_W, nspihttp.PR_SMTP_ADDRESS_W)),
     "property type 0x0099 in a row"),
], ids=["cut-short", "trailing-bytes", "row-flag", "no-row", "no-mids", "unknown-type"])
def test_a_body_that_does_not_read_as_the_spec_says_is_malformed(body: bytes, detail: str):
    failed = failure(ResolveNames=body)
    assert (failed.reason, failed.message) == ("nspi-response-malformed",
                                               f"the ResolveNames response could not be read: {detail}")


def test_a_short_bind_answer_is_malformed():
    assert failure(Bind=struct.pack("<LL", 0, 0) + GUID[:8]).reason == "nspi-response-malformed"
    with pytest.raises(RopMalformed):
        nspihttp.read_resolve_names(b"")


def test_the_address_book_url_defaults_to_the_one_next_to_the_mailstore():
    store = "https://mail.contoso.test/mapi/emsmdb/?MailboxId=x@contoso.test"
    assert nspihttp.address_book_url(store, "") == "https://mail.contoso.test/mapi/nspi/?MailboxId=x@contoso.test"
    assert nspihttp.address_book_url(store, "https://ab.contoso.test/mapi/nspi/?MailboxId=y") == \
        "https://ab.contoso.test/mapi/nspi/?MailboxId=y"
