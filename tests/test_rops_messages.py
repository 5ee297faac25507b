"""The message ROPs over MAPI/HTTP with the spec-built client (tests/support/ropclient.py): reading a seeded message's
subject and body (properties and a stream), creating, saving, submitting and deleting messages, the receive folder and
an empty rules table; in-process on a fixed clock, then against a real `mockex serve` with exchangelib on the other
side of the shared store."""
from __future__ import annotations

import struct

import pytest

from harness.mailbox.attachments import Attachment
from harness.mailbox.seed import WELCOME
from tests.support.ropclient import TAG_BODY, TAG_SUBJECT, RopBuffer, by_rop
from tests.support.ropsession import (
    ALICE,
    ALICE_DN,
    BOB,
    INBOX,
    NOW,
    exchangelib_accounts,
    https_session,
    in_process_session,
    new_store,
)
from tests.support.servers import start_mapi_http_server


def test_a_seeded_message_reads_by_properties_and_by_stream():
    store = new_store()
    session = in_process_session(store)
    rows = session.inbox_rows()
    assert [row[0] for row in rows] == [subject for subject, _ in WELCOME]
    answers, body = session.read_message(rows[1][1])
    assert [answer.code for answer in answers] == [0] * 7
    assert by_rop(answers, 0x03).fields["normalized_subject"] == WELCOME[1][0]
    assert by_rop(answers, 0x07).fields["values"] == [WELCOME[1][0], "IPM.Note"]
    assert body == WELCOME[1][1]
    # a byte count under the size, then the rest; a size limit below the body's size gives ecNotEnoughMemory
    buffer = (RopBuffer(slots=4).logon(ALICE_DN).open_folder(session.fids[INBOX], 0, 1)
              .open_message(1, 2, session.fids[INBOX], rows[0][1]).get_props(2, [TAG_BODY, 0x0E1D001F], 16)
              .get_props_all(2).open_stream(2, 3, TAG_BODY).read_stream(3, 10).read_stream(3, 0xFFFF))
    answers, _ = session.run(buffer)
    assert by_rop(answers, 0x07).fields["values"] == [("error", 0x8007000E), ("error", 0x8007000E)]
    assert by_rop(answers, 0x08).fields["values"][TAG_BODY] == WELCOME[0][1]
    reads = [answer.fields["data"] for answer in answers if answer.rop_id == 0x2C]
    assert len(reads[0]) == 10 and (reads[0] + reads[1])[:-2].decode("utf-16-le") == WELCOME[0][1]


def test_pr_hasattach_and_the_message_flag_follow_the_stores_attachments():
    store = new_store()
    bob = store.mailbox(BOB.email)
    report = Attachment(key=0, name="report.csv", last_modified=NOW, content=b"a,b\n")
    store.send(bob, subject="With a file", body="attached", to=[("", ALICE.email)], attachments=[report])
    session = in_process_session(store)
    columns = [TAG_SUBJECT, 0x0E1B000B, 0x0E070003]     # PR_HASATTACH, PR_MESSAGE_FLAGS
    buffer = (RopBuffer(slots=3).logon(ALICE_DN).open_folder(session.fids[INBOX], 0, 1).contents_table(1, 2)
              .set_columns(2, columns).query_rows(2, columns))
    rows = {row[0]: row[1:] for row in by_rop(session.run(buffer)[0], 0x15).fields["rows"]}
    assert rows["With a file"][0] is True and rows["With a file"][1] & 0x10
    assert rows[WELCOME[0][0]][0] is False and not rows[WELCOME[0][0]][1] & 0x10


def test_open_message_answers_not_found_and_null_object():
    session = in_process_session(new_store())
    missing = b"\x01\x00" + (0x7FFFFF).to_bytes(6, "big")
    buffer = (RopBuffer(slots=4).logon(ALICE_DN).open_folder(session.fids[INBOX], 0, 1)
              .open_message(1, 2, session.fids[INBOX], missing).get_props(3, [TAG_SUBJECT]).stream_size(3))
    answers, _ = session.run(buffer)
    assert [(a.rop_id, a.code) for a in answers[2:]] == [(0x03, 0x8004010F), (0x07, 0x4B9), (0x5E, 0x4B9)]


def test_create_save_submit_delivers_in_org_and_delete_removes():
    store = new_store()
    session = in_process_session(store)
    answers, handles = session.send([(1, "Bob", BOB.email), (2, "Outside", "x@fabrikam.test")], "Plans", "At 10.")
    assert [(a.rop_id, a.code) for a in answers] == [(0xFE, 0), (0x02, 0), (0x06, 0), (0x0E, 0), (0x0A, 0),
                                                     (0x0C, 0), (0x32, 0)]
    assert by_rop(answers, 0x06).fields["mid"] is None and handles == [2, 3, 4]     # after the first logon (1)
    delivered = [i for i in store.mailbox(BOB.email).distinguished["inbox"].items.values() if i.subject == "Plans"]
    assert len(delivered) == 1 and delivered[0].body == "At 10." and not delivered[0].is_read
    assert delivered[0].sender == (ALICE.display_name, ALICE.email)
    assert delivered[0].to == (("Bob", BOB.email),) and delivered[0].cc == (("Outside", "x@fabrikam.test"),)
    alice = store.mailbox(ALICE.email)
    assert [i.subject for i in alice.distinguished["sentitems"].items.values()] == ["Plans"]
    assert "Plans" not in [i.subject for i in alice.distinguished["inbox"].items.values()]   # the draft left
    # saved without submitting: a draft in the folder, its MID as the save answered; then RopDeleteMessages
    answers, _ = session.send([(1, "Bob", BOB.email)], "Draft only", "later", submit=False)
    mid = by_rop(answers, 0x0C).fields["mid"]
    rows = session.inbox_rows()
    assert [row[1] for row in rows if row[0] == "Draft only"] == [mid]
    assert session.read_message(mid)[1] == "later"
    gone = b"\x01\x00" + (0x7FFFFF).to_bytes(6, "big")
    answers, _ = session.run(RopBuffer(slots=2).logon(ALICE_DN).open_folder(session.fids[INBOX], 0, 1)
                             .delete_messages(1, [mid, gone]))
    assert by_rop(answers, 0x1E).fields["partial"] == 1
    assert "Draft only" not in [row[0] for row in session.inbox_rows()]


def test_receive_folder_and_an_empty_rules_table():
    session = in_process_session(new_store())
    answers, _ = session.run(RopBuffer(slots=3).logon(ALICE_DN).receive_folder("IPM.Note")
                             .receive_folder("IPC.Anything").receive_folder("")
                             .open_folder(session.fids[INBOX], 0, 1).rules_table(1, 2)
                             .set_columns(2, [0x66740014]).query_rows(2, [0x66740014]))
    folders = [(a.fields["fid"], a.fields["explicit_class"]) for a in answers if a.rop_id == 0x27]
    assert folders == [(session.fids[INBOX], "IPM"), (session.fids[0], "IPC"), (session.fids[INBOX], "")]
    assert by_rop(answers, 0x3F).code == 0 and by_rop(answers, 0x15).fields["rows"] == []


# ---- against a real server, with exchangelib on the other side --------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = start_mapi_http_server(tmp_path_factory, "mapi")
    yield server
    server.stop()


@pytest.fixture
def exchangelib_account(served):
    with exchangelib_accounts(served) as account:
        yield account


def test_a_message_submitted_over_rops_is_in_bobs_inbox_for_exchangelib(served, exchangelib_account):
    session = https_session(served)
    answers, _ = session.send([(1, "Bob", BOB.email)], "From MAPI/HTTP", "Sent with RopSubmitMessage.")
    assert all(answer.code == 0 for answer in answers)
    bob = exchangelib_account("bob")
    found = [m for m in bob.inbox.all() if m.subject == "From MAPI/HTTP"]     # the mock's FindItem: no restrictions
    assert len(found) == 1 and str(found[0].body) == "Sent with RopSubmitMessage."
    assert found[0].sender.email_address == ALICE.email and found[0].is_read is False


def test_a_message_made_with_exchangelib_reads_over_rops(served, exchangelib_account):
    from exchangelib import Message
    alice = exchangelib_account("alice")
    Message(account=alice, subject="Made by EWS", body="Written with exchangelib.",
            to_recipients=[ALICE.email]).send()
    session = https_session(served)
    rows = session.inbox_rows()
    mids = [row[1] for row in rows if row[0] == "Made by EWS"]
    assert len(mids) == 1
    answers, body = session.read_message(mids[0])
    assert by_rop(answers, 0x07).fields["values"][0] == "Made by EWS" and body == "Written with exchangelib."
    assert struct.unpack("<H", mids[0][:2]) == (1,)
