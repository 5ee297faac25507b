"""The table ROPs over MAPI/HTTP (in-process, real ROP bytes) with the spec-built client of tests/support/ropclient.py:
RopSortTable, RopRestrict, RopQueryPosition, RopSeekRow(Fractional), RopFindRow, RopQueryColumnsAll, RopGetStatus,
RopResetTable, RopGetPropertiesList. Restrictions are built here by hand from MS-OXCDATA 2.12's layouts."""
from __future__ import annotations

import struct

from harness.mailbox.seed import WELCOME
from tests.support.mapihttp import execute_body, execute_rops
from tests.support.restrictions import and_, bitmask, content, exist, not_, or_, prop_long
from tests.support.ropclient import TAG_MID, TAG_SUBJECT, RopBuffer, by_rop, parse_answers
from tests.support.ropsession import ALICE, ALICE_DN, INBOX, in_process_session, new_store

TAG_MESSAGE_FLAGS, TAG_DISPLAY_NAME, TAG_MESSAGE_SIZE = 0x0E070003, 0x3001001F, 0x0E080003
ROWS = [TAG_SUBJECT, TAG_MID]
SUBJECTS = [subject for subject, _ in WELCOME]       # delivery order: Welcome, Quarterly planning, Lunch
BEGINNING, CURRENT, END = 0, 1, 2
EC_NULL_OBJECT, EC_NOT_FOUND, EC_NOT_SUPPORTED, EC_INVALID_PARAMETER = 0x4B9, 0x8004010F, 0x80040102, 0x80070057
EC_TOO_COMPLEX, EC_INVALID_BOOKMARK, EC_RPC_FORMAT = 0x80040117, 0x80040405, 0x4B6


def inbox_table(session, slots: int = 3) -> RopBuffer:
    """Logon, open the Inbox (handle slot 1), its contents table (slot 2) with Subject + MID columns."""
    return (RopBuffer(slots=slots).logon(ALICE_DN).open_folder(session.fids[INBOX], 0, 1).contents_table(1, 2)
            .set_columns(2, ROWS))


def subjects(answer) -> list:
    return [row[0] for row in answer.fields["rows"]]


# ---- sort --------------------------------------------------------------------------------------------------------
def test_sort_table_orders_rows_and_rewinds_the_cursor():
    session = in_process_session(new_store())
    answers, _ = session.run(inbox_table(session).query_rows(2, ROWS, 1).sort_table(2, [(TAG_SUBJECT, 1)])
                             .query_position(2).query_rows(2, ROWS).sort_table(2, [(TAG_SUBJECT, 0)])
                             .query_rows(2, ROWS))
    sorts = [a for a in answers if a.rop_id == 0x13]
    assert [(a.code, a.fields["status"]) for a in sorts] == [(0, 0), (0, 0)]        # TBLSTAT_COMPLETE
    assert by_rop(answers, 0x17).fields == {"numerator": 0, "denominator": 3}       # sorting moved it back
    reads = [subjects(a) for a in answers if a.rop_id == 0x15]
    assert reads[1] == sorted(SUBJECTS, key=str.casefold, reverse=True)
    assert reads[2] == sorted(SUBJECTS, key=str.casefold)


def test_sort_table_refusals():
    session = in_process_session(new_store())
    buffer = (inbox_table(session, slots=4).sort_table(2, [(TAG_SUBJECT, 0)], categories=1)
              .sort_table(2, [(TAG_SUBJECT, 7)]).sort_table(2, [(0x0E12101F, 0)])
              .hierarchy_table(1, 3).sort_table(3, [(TAG_DISPLAY_NAME, 0)]).sort_table(1, [(TAG_SUBJECT, 0)]))
    answers, _ = session.run(buffer)
    assert [a.code for a in answers if a.rop_id == 0x13] == [EC_NOT_SUPPORTED, EC_INVALID_PARAMETER,
                                                             EC_NOT_SUPPORTED, EC_NOT_SUPPORTED, EC_NULL_OBJECT]


def test_sort_table_response_bytes():
    session = in_process_session(new_store())
    response = session.raw(inbox_table(session).sort_table(2, [(TAG_SUBJECT, 0)]))
    # ... RopSetColumns (12 02 00000000 00), then RopSortTable: RopId, InputHandleIndex, ReturnValue, TableStatus
    assert response.endswith(bytes.fromhex("1202" "00000000" "00" "1302" "00000000" "00"))


# ---- restrict ------------------------------------------------------------------------------------------------------
def test_restrict_filters_with_content_property_and_logic_restrictions():
    store = new_store()
    session = in_process_session(store)
    planning = content(TAG_SUBJECT, "PLANNING")                                  # substring, case ignored
    lunch_prefix = content(TAG_SUBJECT, "lunch", low=2)
    exact_wrong_case = content(TAG_SUBJECT, "welcome to contoso", low=0, high=0)
    answers, _ = session.run(
        inbox_table(session).restrict(2, planning).query_rows(2, ROWS)
        .restrict(2, or_(lunch_prefix, planning)).query_rows(2, ROWS)
        .restrict(2, and_(exist(TAG_SUBJECT), not_(lunch_prefix))).query_rows(2, ROWS)
        .restrict(2, exact_wrong_case).query_rows(2, ROWS)
        .restrict(2, prop_long(0x02, TAG_MESSAGE_SIZE, 0)).query_rows(2, ROWS)        # RELOP_GT
        .restrict(2, bitmask(0x01, TAG_MESSAGE_FLAGS, 0x01)).query_rows(2, ROWS)       # BMR_NEZ MSGFLAG_READ
        .restrict(2, bitmask(0x00, TAG_MESSAGE_FLAGS, 0x01)).query_rows(2, ROWS)       # BMR_EQZ: unread
        .restrict(2, b"").query_rows(2, ROWS))
    assert all(a.code == 0 for a in answers)
    reads = [subjects(a) for a in answers if a.rop_id == 0x15]
    assert reads == [["Quarterly planning"], ["Quarterly planning", "Lunch on Thursday?"],
                     ["Welcome to Contoso", "Quarterly planning"], [], SUBJECTS, ["Welcome to Contoso"],
                     SUBJECTS[1:], SUBJECTS]


def test_a_restricted_view_shows_rows_that_arrive_later():
    store = new_store()
    session = in_process_session(store)
    answers, _ = session.run(inbox_table(session).restrict(2, content(TAG_SUBJECT, "budget")).query_rows(2, ROWS)
                             .query_position(2))
    assert subjects(by_rop(answers, 0x15)) == [] and by_rop(answers, 0x17).fields["denominator"] == 0
    owner = store.mailbox(ALICE.email)
    store.save(owner, owner.distinguished["inbox"], subject="Budget 2025", body="numbers")
    answers, _ = session.run(inbox_table(session).restrict(2, content(TAG_SUBJECT, "budget")).query_rows(2, ROWS))
    assert subjects(by_rop(answers, 0x15)) == ["Budget 2025"]


def test_restrict_refusals_and_a_malformed_restriction():
    session = in_process_session(new_store())
    multi_valued = bytes([0x04]) + struct.pack("<BLL", 4, 0x0E121003, 0x0E121003) + struct.pack("<L", 0)
    answers, _ = session.run(inbox_table(session).restrict(2, multi_valued).restrict(1, exist(TAG_SUBJECT))
                             .restrict(2, bytes([0x05]) + struct.pack("<BLL", 9, TAG_SUBJECT, TAG_SUBJECT)))
    assert [a.code for a in answers if a.rop_id == 0x14] == [EC_TOO_COMPLEX, EC_NULL_OBJECT, EC_TOO_COMPLEX]
    truncated = content(TAG_SUBJECT, "x")[:-3]                 # the string's terminator is missing
    code, payload = execute_rops(session.post("Execute", execute_body(inbox_table(session).restrict(
        2, truncated).payload())))
    assert (code, payload) == (EC_RPC_FORMAT, b"")              # the server could not parse the ROP buffer


# ---- position and seeking ----------------------------------------------------------------------------------------
def test_query_position_and_seek_row():
    session = in_process_session(new_store())
    buffer = (inbox_table(session).seek_row(2, BEGINNING, 2).query_position(2).seek_row(2, CURRENT, 5)
              .seek_row(2, END, -1).query_rows(2, ROWS).seek_row(2, CURRENT, -9).seek_row(2, 7, 0)
              .seek_row_fractional(2, 1, 2).query_position(2).seek_row_fractional(2, 1, 0))
    answers, _ = session.run(buffer)
    seeks = [(a.code, a.fields) for a in answers if a.rop_id == 0x18]
    assert seeks == [(0, {"sought_less": 0, "sought": 2}), (0, {"sought_less": 1, "sought": 1}),
                     (0, {"sought_less": 0, "sought": -1}), (0, {"sought_less": 1, "sought": -3}),
                     (EC_INVALID_PARAMETER, {})]
    positions = [a.fields for a in answers if a.rop_id == 0x17]
    assert positions == [{"numerator": 2, "denominator": 3}, {"numerator": 1, "denominator": 3}]
    assert subjects(by_rop(answers, 0x15)) == [SUBJECTS[2]]
    assert [a.code for a in answers if a.rop_id == 0x1A] == [0, EC_INVALID_PARAMETER]


def test_seek_and_position_response_bytes():
    session = in_process_session(new_store())
    response = session.raw(inbox_table(session).seek_row(2, BEGINNING, 2).query_position(2))
    # RopSeekRow: ReturnValue, HasSoughtLess 0, RowsSought 2; RopQueryPosition: Numerator 2, Denominator 3
    assert response.endswith(bytes.fromhex("1802" "00000000" "00" "02000000" "1702" "00000000" "02000000"
                                           "03000000"))


# ---- find --------------------------------------------------------------------------------------------------------
def test_find_row_forward_backward_and_misses():
    session = in_process_session(new_store())
    lunch, planning = content(TAG_SUBJECT, "lunch", low=2), content(TAG_SUBJECT, "planning")
    buffer = (inbox_table(session).find_row(2, planning, ROWS).query_position(2)
              .find_row(2, exist(TAG_SUBJECT), ROWS, origin=END, backward=True).query_position(2)
              .find_row(2, planning, ROWS, origin=CURRENT).find_row(2, lunch, ROWS, origin=BEGINNING, backward=True)
              .find_row(2, lunch, ROWS, origin=3, bookmark=b"\x01\x00\x00\x00"))
    answers, _ = session.run(buffer)
    finds = [a for a in answers if a.rop_id == 0x4F]
    assert [(a.code, a.fields.get("row", [None])[0]) for a in finds] == [
        (0, "Quarterly planning"), (0, "Lunch on Thursday?"), (EC_NOT_FOUND, None), (EC_NOT_FOUND, None),
        (EC_INVALID_BOOKMARK, None)]
    assert finds[0].fields["no_longer_visible"] == 0
    assert [a.fields["numerator"] for a in answers if a.rop_id == 0x17] == [1, 2]


def test_find_row_needs_columns_and_its_response_bytes():
    session = in_process_session(new_store())
    no_columns = (RopBuffer(slots=3).logon(ALICE_DN).open_folder(session.fids[INBOX], 0, 1).contents_table(1, 2)
                  .find_row(2, exist(TAG_SUBJECT), ROWS))
    assert by_rop(session.run(no_columns)[0], 0x4F).code == EC_NULL_OBJECT
    response = session.raw(inbox_table(session).find_row(2, content(TAG_SUBJECT, "planning"), [TAG_SUBJECT]))
    row = b"\x00" + "Quarterly planning\x00".encode("utf-16-le")    # a StandardPropertyRow: Subject, then the MID
    start = response.index(bytes.fromhex("4f02" "00000000"))
    assert response[start + 6:start + 8] == b"\x00\x01"          # RowNoLongerVisible 0, HasRowData 1
    assert response[start + 8:start + 8 + len(row)] == row and len(response) == start + 8 + len(row) + 8


# ---- columns, property lists, status and reset -------------------------------------------------------------------
def test_query_columns_all_get_properties_list_status_and_reset():
    session = in_process_session(new_store())
    rows = session.inbox_rows()
    buffer = (inbox_table(session, slots=5).query_columns_all(2).hierarchy_table(1, 3).query_columns_all(3)
              .get_status(2).get_props_list(1).open_message(1, 4, session.fids[INBOX], rows[0][1])
              .get_props_list(4).get_props_list(2).reset_table(2).query_rows(2, ROWS).query_columns_all(1))
    answers, _ = session.run(buffer)
    columns = [a.fields.get("tags") for a in answers if a.rop_id == 0x37]
    assert TAG_SUBJECT in columns[0] and TAG_MID in columns[0] and TAG_DISPLAY_NAME in columns[1]
    assert by_rop(answers, 0x16).fields["status"] == 0
    lists = [(a.code, a.fields.get("tags")) for a in answers if a.rop_id == 0x09]
    assert TAG_DISPLAY_NAME in lists[0][1] and 0x67480014 in lists[0][1]
    assert TAG_SUBJECT in lists[1][1] and 0x1000001F in lists[1][1]                # the body too
    assert lists[2] == (EC_NOT_SUPPORTED, None)                                    # a table has no property list
    assert by_rop(answers, 0x81).code == 0 and by_rop(answers, 0x15).code == EC_NULL_OBJECT   # columns gone
    assert columns[2] is None and [a.code for a in answers if a.rop_id == 0x37][-1] == EC_NULL_OBJECT


def test_an_open_view_follows_the_store_between_executes():
    """The same table handle across Executes: the view is worked out again when rows arrive or change."""
    store = new_store()
    session = in_process_session(store)
    answers, handles = session.run(inbox_table(session).restrict(2, content(TAG_SUBJECT, "o"))
                                   .sort_table(2, [(TAG_SUBJECT, 0)]))
    again = RopBuffer().seek_row(2, BEGINNING, 0).query_rows(2, ROWS)
    payload = struct.pack("<H", 2 + len(again.rops)) + again.rops + struct.pack(f"<{len(handles)}L", *handles)

    def view():
        code, out = execute_rops(session.post("Execute", execute_body(payload)))
        assert code == 0
        return [row[0] for row in by_rop(parse_answers(again, out)[0], 0x15).fields["rows"]]
    assert view() == ["Lunch on Thursday?", "Welcome to Contoso"]
    owner = store.mailbox(ALICE.email)
    store.save(owner, owner.distinguished["inbox"], subject="Agenda for Monday", body="")
    assert view() == ["Agenda for Monday", "Lunch on Thursday?", "Welcome to Contoso"]
    welcome = next(item for item in owner.distinguished["inbox"].items.values() if item.subject.startswith("Welc"))
    store.set_subject(welcome, "A warm welcome")
    assert view() == ["A warm welcome", "Agenda for Monday", "Lunch on Thursday?"]
