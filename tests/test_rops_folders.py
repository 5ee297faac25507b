"""Folder, rule and logon ROPs with the spec-built client of tests/support/ropclient.py: RopCreateFolder,
RopDeleteFolder, RopMoveFolder, RopMoveCopyMessages, RopEmptyFolder, RopHardDeleteMessagesAndSubfolders,
RopModifyRules + RopGetRulesTable, RopLongTermIdFromId / RopIdFromLongTermId, RopGetPerUserLongTermIds and a
public-folder RopLogon; over MAPI/HTTP in-process, over EcDoRpcExt2, and against a served store that exchangelib
reads."""
from __future__ import annotations

import random
import struct
import uuid

import pytest
from lxml import etree

from harness.mailbox import ids
from harness.protocols import ews
from harness.rpc import emsmdb as E
from harness.rpc.base import CallContext
from harness.rpc.emsmdb.server import Emsmdb
from tests.support.ews import envelope
from tests.support.restrictions import content
from tests.support.ropclient import TAG_DISPLAY_NAME, TAG_MID, TAG_SUBJECT, RopBuffer, by_rop, parse_answers
from tests.support.ropsession import (
    ALICE,
    ALICE_DN,
    INBOX,
    ORG,
    exchangelib_accounts,
    https_session,
    in_process_session,
    new_store,
)
from tests.support.servers import start_mapi_http_server

IPM_SUBTREE, ROOT = 3, 0                      # RopLogon special folder slots
EC_NULL_OBJECT, EC_NOT_FOUND, EC_NOT_SUPPORTED, EC_INVALID_PARAMETER = 0x4B9, 0x8004010F, 0x80040102, 0x80070057
EC_DUPLICATE_NAME, EC_ACCESS_DENIED, EC_DST_NULL_OBJECT = 0x80040604, 0x80070005, 0x503
DEL_MESSAGES, DEL_FOLDERS, DELETE_HARD_DELETE = 0x01, 0x04, 0x10
ROW_ADD, ROW_MODIFY, ROW_REMOVE = 0x01, 0x02, 0x04
TAG_RULE_ID, TAG_RULE_SEQUENCE, TAG_RULE_STATE, TAG_RULE_CONDITION = 0x66740014, 0x66760003, 0x66770003, 0x667900FD
TAG_RULE_ACTIONS, TAG_RULE_PROVIDER, TAG_RULE_NAME = 0x668000FE, 0x6681001F, 0x6682001F
RULE_COLUMNS = [TAG_RULE_ID, TAG_RULE_SEQUENCE, TAG_RULE_STATE, TAG_RULE_NAME, TAG_RULE_PROVIDER, TAG_RULE_CONDITION,
                TAG_RULE_ACTIONS]


def folder_rows(session, parent_slot: int = IPM_SUBTREE):
    buffer = (RopBuffer(slots=3).logon(ALICE_DN).open_folder(session.fids[parent_slot], 0, 1).hierarchy_table(1, 2)
              .set_columns(2, [TAG_DISPLAY_NAME, 0x67480014]).query_rows(2, [TAG_DISPLAY_NAME, 0x67480014]))
    return {row[0]: row[1] for row in by_rop(session.run(buffer)[0], 0x15).fields["rows"]}


def contents(session, fid: bytes):
    buffer = (RopBuffer(slots=3).logon(ALICE_DN).open_folder(fid, 0, 1).contents_table(1, 2)
              .set_columns(2, [TAG_SUBJECT, TAG_MID]).query_rows(2, [TAG_SUBJECT, TAG_MID]))
    return [tuple(row) for row in by_rop(session.run(buffer)[0], 0x15).fields["rows"]]


def create(session, name: str, parent_slot: int = IPM_SUBTREE) -> bytes:
    answers, _ = session.run(RopBuffer(slots=3).logon(ALICE_DN).open_folder(session.fids[parent_slot], 0, 1)
                             .create_folder(1, 2, name))
    assert by_rop(answers, 0x1C).code == 0
    return by_rop(answers, 0x1C).fields["fid"]


# ---- create ------------------------------------------------------------------------------------------------------
def test_create_folder_new_existing_and_refused():
    store = new_store()
    session = in_process_session(store)
    buffer = (RopBuffer(slots=5).logon(ALICE_DN).open_folder(session.fids[IPM_SUBTREE], 0, 1)
              .create_folder(1, 2, "Projects", comment="work").create_folder(1, 3, "PROJECTS")
              .create_folder(1, 3, "projects", open_existing=True).create_folder(1, 4, "Searches", folder_type=2)
              .create_folder(1, 4, "").create_folder(2, 4, "Inside"))
    answers, handles = session.run(buffer)
    creates = [a for a in answers if a.rop_id == 0x1C]
    assert [a.code for a in creates] == [0, EC_DUPLICATE_NAME, 0, EC_NOT_SUPPORTED, EC_INVALID_PARAMETER, 0]
    new, existing = creates[0].fields, creates[2].fields
    assert new["existing"] == 0 and existing == {"fid": new["fid"], "existing": 1, "has_rules": 0}
    assert struct.unpack("<H", new["fid"][:2]) == (1,)                      # replica id 1 + the store counter
    folder = store.mailbox(ALICE.email).folders[int.from_bytes(new["fid"][2:], "big")]
    assert folder.name == "Projects" and folder.parent.distinguished == "msgfolderroot"
    assert [child.name for child in folder.children] == ["Inside"]
    assert folder_rows(session)["Projects"] == new["fid"] and handles[2] > 0


def test_create_folder_response_bytes():
    session = in_process_session(new_store())
    buffer = (RopBuffer(slots=3).logon(ALICE_DN).open_folder(session.fids[IPM_SUBTREE], 0, 1)
              .create_folder(1, 2, "Bytes").create_folder(1, 2, "Bytes", open_existing=True))
    response = session.raw(buffer)
    fid = response[-11:-3]                                       # the second answer's FolderId
    # RopCreateFolder: RopId, OutputHandleIndex, ReturnValue, FolderId, IsExistingFolder 0; then the existing one
    # with IsExistingFolder 1, HasRules 0, IsGhosted 0
    assert response.endswith(bytes.fromhex("1c02" "00000000") + fid + b"\x00" + bytes.fromhex("1c02" "00000000")
                             + fid + b"\x01\x00\x00")


def test_folder_properties_get_set_and_all():
    store = new_store()
    session = in_process_session(store)
    fid = create(session, "Props")
    custom, comment = 0x6801001F, 0x3004001F
    values = {TAG_DISPLAY_NAME: "Renamed", 0x3613001F: "IPF.Task", custom: "kept", comment: "a note"}
    buffer = (RopBuffer(slots=3).logon(ALICE_DN).open_folder(fid, 0, 1).set_props(1, values)
              .get_props(1, [TAG_DISPLAY_NAME, 0x3613001F, custom, 0x67480014, 0x36020003, 0x6803001F])
              .get_props_all(1).get_props(0, [TAG_DISPLAY_NAME, 0x661C001F]))
    answers, _ = session.run(buffer)
    assert by_rop(answers, 0x0A).fields["problems"] == 0
    specific = [a.fields["values"] for a in answers if a.rop_id == 0x07]
    assert specific[0] == ["Renamed", "IPF.Task", "kept", fid, 0, ("error", EC_NOT_FOUND)]
    assert specific[1] == ["Mailbox - " + ALICE.display_name, ALICE.display_name]
    every = by_rop(answers, 0x08).fields["values"]
    assert every[custom] == "kept" and every[comment] == "a note" and every[0x3613001F] == "IPF.Task"
    folder = store.mailbox(ALICE.email).folders[int.from_bytes(fid[2:], "big")]
    assert (folder.name, folder.folder_class) == ("Renamed", "IPF.Task")
    # computed properties and a sibling's name come back as PropertyProblems (Index, PropertyTag, ErrorCode)
    create(session, "Taken")
    response = session.raw(RopBuffer(slots=2).logon(ALICE_DN).open_folder(fid, 0, 1)
                           .set_props(1, {0x3001001F: "Taken", 0x6802001F: "fine"}))
    assert response.endswith(bytes.fromhex("0a01" "00000000" "0100" "0000" "1f000130" "04060480"))
    response = session.raw(RopBuffer(slots=2).logon(ALICE_DN).open_folder(fid, 0, 1)
                           .set_props(1, {0x6748001F: "no"}))
    assert response.endswith(bytes.fromhex("0a01" "00000000" "0100" "0000" "1f004867" "1a010480"))  # ecComputed
    answers, _ = session.run(RopBuffer(slots=2).logon(ALICE_DN).open_folder(session.fids[INBOX], 0, 1)
                             .set_props(1, {0x3001001F: "Not the Inbox"}))
    assert by_rop(answers, 0x0A).fields["problems"] == 1 and "Inbox" in folder_rows(session)


def test_ews_hierarchy_sync_reports_folders_deleted_over_rops():
    store = new_store()
    session = in_process_session(store)
    doomed = create(session, "Doomed")
    answers, _ = session.run(RopBuffer(slots=3).logon(ALICE_DN).open_folder(doomed, 0, 1).create_folder(1, 2, "Inner"))
    inner = by_rop(answers, 0x1C).fields["fid"]

    def hierarchy(state: str = ""):
        body = envelope("<m:SyncFolderHierarchy><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape>"
                        + (f"<m:SyncState>{state}</m:SyncState>" if state else "") + "</m:SyncFolderHierarchy>")
        message = etree.fromstring(ews.respond_ews(ORG, store, ALICE.email, body).body).find(
            f".//{{{ews.MESSAGES_NS}}}SyncFolderHierarchyResponseMessage")
        changes = [(etree.QName(change).localname, change[0].get("Id"))
                   for change in message.find(f"{{{ews.MESSAGES_NS}}}Changes")]
        return message.findtext(f"{{{ews.MESSAGES_NS}}}SyncState"), changes
    state, _ = hierarchy()
    answers, _ = session.run(RopBuffer(slots=2).logon(ALICE_DN).open_folder(session.fids[IPM_SUBTREE], 0, 1)
                             .delete_folder(1, doomed, DEL_FOLDERS | DEL_MESSAGES))
    assert by_rop(answers, 0x1D).fields == {"partial": 0}
    owner = store.mailbox(ALICE.email)
    ews_id = lambda fid: ids.folder_id(owner.guid, int.from_bytes(fid[2:], "big"))     # noqa: E731
    _, changes = hierarchy(state)
    assert sorted(changes) == sorted([("Delete", ews_id(doomed)), ("Delete", ews_id(inner))])
    assert hierarchy(hierarchy(state)[0])[1] == []


# ---- move and copy messages ----------------------------------------------------------------------------------------
def test_move_copy_messages_between_folders():
    store = new_store()
    session = in_process_session(store)
    target = create(session, "Archive")
    inbox = contents(session, session.fids[INBOX])
    missing = b"\x01\x00" + (0x7FFFFF).to_bytes(6, "big")
    buffer = (RopBuffer(slots=3).logon(ALICE_DN).open_folder(session.fids[INBOX], 0, 1).open_folder(target, 0, 2)
              .move_copy_messages(1, 2, [inbox[0][1]], copy=True).move_copy_messages(1, 2, [inbox[1][1], missing],
                                                                                     copy=False)
              .move_copy_messages(1, 0, [inbox[2][1]], copy=False))
    answers, _ = session.run(buffer)
    moves = [(a.code, a.fields) for a in answers if a.rop_id == 0x33]
    # the copy, the move with one MID not there (PartialCompletion), a move onto the logon: ecDstNullObject with
    # the destination index and PartialCompletion
    assert moves == [(0, {"partial": 0}), (0, {"partial": 1}), (EC_DST_NULL_OBJECT, {"dest_index": 0, "partial": 0})]
    assert [row[0] for row in contents(session, target)] == [inbox[0][0], inbox[1][0]]
    assert [row[0] for row in contents(session, session.fids[INBOX])] == [inbox[0][0], inbox[2][0]]
    # an empty handle slot as destination
    answers, _ = session.run(RopBuffer(slots=3).logon(ALICE_DN).open_folder(session.fids[INBOX], 0, 1)
                             .move_copy_messages(1, 2, [inbox[0][1]], copy=False))
    assert (by_rop(answers, 0x33).code, by_rop(answers, 0x33).fields) == (EC_DST_NULL_OBJECT,
                                                                          {"dest_index": 2, "partial": 0})


# ---- delete, move and empty folders -------------------------------------------------------------------------------
def test_delete_folder_flags_partial_completion_and_refusals():
    store = new_store()
    session = in_process_session(store)
    full = create(session, "Full")
    answers, _ = session.run(RopBuffer(slots=4).logon(ALICE_DN).open_folder(full, 0, 1).create_folder(1, 2, "Sub")
                             .open_folder(session.fids[INBOX], 0, 3)
                             .move_copy_messages(3, 1, [contents(session, session.fids[INBOX])[0][1]], copy=True))
    assert all(a.code == 0 for a in answers)
    unknown = b"\x01\x00" + (0x7FFFFF).to_bytes(6, "big")
    buffer = (RopBuffer(slots=2).logon(ALICE_DN).open_folder(session.fids[IPM_SUBTREE], 0, 1)
              .delete_folder(1, full, 0).delete_folder(1, full, DEL_MESSAGES).delete_folder(1, session.fids[INBOX],
                                                                                            DEL_MESSAGES | DEL_FOLDERS)
              .delete_folder(1, unknown, 0).delete_folder(0, full, 0)
              .delete_folder(1, full, DEL_MESSAGES | DEL_FOLDERS | DELETE_HARD_DELETE))
    answers, _ = session.run(buffer)
    deletes = [(a.code, a.fields.get("partial")) for a in answers if a.rop_id == 0x1D]
    assert deletes == [(0, 1), (0, 1), (EC_ACCESS_DENIED, None), (EC_NOT_FOUND, None), (EC_NULL_OBJECT, None),
                       (0, 0)]
    assert "Full" not in folder_rows(session)
    owner = store.mailbox(ALICE.email)
    assert not [f for f in owner.folders.values() if f.name in ("Full", "Sub")]


def test_move_folder_renames_and_refuses_built_in_folders():
    store = new_store()
    session = in_process_session(store)
    first, second = create(session, "First"), create(session, "Second")
    buffer = (RopBuffer(slots=3).logon(ALICE_DN).open_folder(session.fids[IPM_SUBTREE], 0, 1)
              .open_folder(second, 0, 2).move_folder(1, 2, first, "Moved").move_folder(1, 2, session.fids[INBOX], "")
              .move_folder(2, 1, first, "Second"))
    answers, _ = session.run(buffer)
    assert [a.code for a in answers if a.rop_id == 0x35] == [0, EC_ACCESS_DENIED, EC_DUPLICATE_NAME]
    assert folder_rows(session, IPM_SUBTREE).get("Moved") is None
    owner = store.mailbox(ALICE.email)
    moved = owner.folders[int.from_bytes(first[2:], "big")]
    assert moved.name == "Moved" and moved.parent.name == "Second"


def test_copy_folder_copies_messages_and_subfolders():
    store = new_store()
    session = in_process_session(store)
    answers, _ = session.run(RopBuffer(slots=3).logon(ALICE_DN).open_folder(session.fids[INBOX], 0, 1)
                             .create_folder(1, 2, "Child"))
    buffer = (RopBuffer(slots=3).logon(ALICE_DN).open_folder(session.fids[IPM_SUBTREE], 0, 1)
              .open_folder(session.fids[IPM_SUBTREE], 0, 2)
              .copy_folder(1, 2, session.fids[INBOX], "Inbox copy").copy_folder(1, 2, session.fids[INBOX], "Flat",
                                                                               recursive=False)
              .copy_folder(1, 2, session.fids[INBOX], "inbox copy").copy_folder(1, 0, session.fids[INBOX], "X"))
    answers, _ = session.run(buffer)
    assert [(a.code, a.fields) for a in answers if a.rop_id == 0x36] == [
        (0, {"partial": 0}), (0, {"partial": 0}), (EC_DUPLICATE_NAME, {}),
        (EC_DST_NULL_OBJECT, {"dest_index": 0, "partial": 0})]
    folders = folder_rows(session)
    inbox = contents(session, session.fids[INBOX])
    copied = contents(session, folders["Inbox copy"])
    assert [row[0] for row in copied] == [row[0] for row in inbox] and {r[1] for r in copied}.isdisjoint(
        {r[1] for r in inbox})                                           # the same messages under new MIDs
    owner = store.mailbox(ALICE.email)
    by_fid = lambda fid: owner.folders[int.from_bytes(fid[2:], "big")]   # noqa: E731
    assert [c.name for c in by_fid(folders["Inbox copy"]).children] == ["Child"]
    assert by_fid(folders["Flat"]).children == [] and len(contents(session, folders["Flat"])) == len(inbox)
    assert by_fid(folders["Inbox copy"]).folder_class == "IPF.Note"


def test_empty_folder_keeps_the_folder_and_built_in_subfolders():
    store = new_store()
    session = in_process_session(store)
    answers, _ = session.run(RopBuffer(slots=3).logon(ALICE_DN).open_folder(session.fids[INBOX], 0, 1)
                             .create_folder(1, 2, "Under inbox").empty_folder(1))
    assert by_rop(answers, 0x58).fields == {"partial": 0}
    assert contents(session, session.fids[INBOX]) == [] and folder_rows(session, INBOX) == {}
    create(session, "Scratch")
    answers, _ = session.run(RopBuffer(slots=2).logon(ALICE_DN).open_folder(session.fids[IPM_SUBTREE], 0, 1)
                             .empty_folder(1, hard=True))
    assert (by_rop(answers, 0x92).code, by_rop(answers, 0x92).fields) == (0, {"partial": 1})
    assert "Scratch" not in folder_rows(session) and "Inbox" in folder_rows(session)


# ---- rules -------------------------------------------------------------------------------------------------------
def tagged_unicode(tag: int, text: str) -> bytes:
    return struct.pack("<L", tag) + text.encode("utf-16-le") + b"\x00\x00"


def rule_values(name: str, condition: bytes, provider: str = "RuleOrganizer") -> list:
    """A move-to-folder-less rule: OP_MARK_AS_READ (0x0B) has no ActionData (MS-OXORULE 2.2.5.1)."""
    action_block = struct.pack("<BLL", 0x0B, 0, 0)                 # ActionType, ActionFlavor, ActionFlags
    actions = struct.pack("<HH", 1, len(action_block)) + action_block
    return [tagged_unicode(TAG_RULE_NAME, name), tagged_unicode(TAG_RULE_PROVIDER, provider),
            struct.pack("<LL", TAG_RULE_STATE, 1), struct.pack("<L", TAG_RULE_CONDITION) + condition,
            struct.pack("<L", TAG_RULE_ACTIONS) + actions]


def rules(session):
    buffer = (RopBuffer(slots=3).logon(ALICE_DN).open_folder(session.fids[INBOX], 0, 1).rules_table(1, 2)
              .set_columns(2, RULE_COLUMNS).query_rows(2, RULE_COLUMNS))
    answers, _ = session.run(buffer)
    return by_rop(answers, 0x02).fields["has_rules"], by_rop(answers, 0x15).fields["rows"]


def test_modify_rules_adds_modifies_removes_and_the_rules_table_lists_them():
    store = new_store()
    session = in_process_session(store)
    condition = content(TAG_SUBJECT, "lunch")
    add = RopBuffer(slots=2).logon(ALICE_DN).open_folder(session.fids[INBOX], 0, 1).modify_rules(
        1, [(ROW_ADD, rule_values("Lunch read", condition)), (ROW_ADD, rule_values("Other", condition))])
    assert by_rop(session.run(add)[0], 0x41).code == 0
    has_rules, rows = rules(in_process_session(store))                 # a later session sees them
    assert has_rules == 1 and len(rows) == 2
    rule_id, sequence, state, name, provider, stored_condition, stored_actions = rows[0]
    assert (sequence, state, name, provider) == (1, 1, "Lunch read", "RuleOrganizer")
    assert stored_condition == condition                                # the restriction bytes as sent
    assert stored_actions[:2] == b"\x01\x00" and rows[1][1] == 2 and rows[1][0] != rule_id
    modify = RopBuffer(slots=2).logon(ALICE_DN).open_folder(session.fids[INBOX], 0, 1).modify_rules(
        1, [(ROW_MODIFY, [struct.pack("<L", TAG_RULE_ID) + rule_id, tagged_unicode(TAG_RULE_NAME, "Renamed")]),
            (ROW_REMOVE, [struct.pack("<L", TAG_RULE_ID) + rows[1][0]])])
    assert by_rop(session.run(modify)[0], 0x41).code == 0
    assert [(row[0], row[3]) for row in rules(session)[1]] == [(rule_id, "Renamed")]
    # Outlook finds its own rules by provider: a restriction on the rules table
    add = RopBuffer(slots=2).logon(ALICE_DN).open_folder(session.fids[INBOX], 0, 1).modify_rules(
        1, [(ROW_ADD, rule_values("Foreign", condition, provider="Other client"))])
    assert by_rop(session.run(add)[0], 0x41).code == 0
    buffer = (RopBuffer(slots=3).logon(ALICE_DN).open_folder(session.fids[INBOX], 0, 1).rules_table(1, 2)
              .set_columns(2, [TAG_RULE_NAME]).restrict(2, content(TAG_RULE_PROVIDER, "ruleorganizer", low=0))
              .query_rows(2, [TAG_RULE_NAME]).query_columns_all(2))
    answers, _ = session.run(buffer)
    assert by_rop(answers, 0x15).fields["rows"] == [["Renamed"]]
    assert TAG_RULE_CONDITION in by_rop(answers, 0x37).fields["tags"]


def test_modify_rules_replace_and_refusals():
    store = new_store()
    session = in_process_session(store)
    condition = content(TAG_SUBJECT, "x")
    gone = struct.pack("<L", TAG_RULE_ID) + b"\x01\x00" + (0x7777).to_bytes(6, "big")
    buffer = (RopBuffer(slots=2).logon(ALICE_DN).open_folder(session.fids[INBOX], 0, 1)
              .modify_rules(1, [(ROW_ADD, rule_values("A", condition))])
              .modify_rules(1, [(ROW_ADD, rule_values("B", condition))], flags=0x01)
              .modify_rules(1, [(ROW_ADD, rule_values("C", condition)[:1])])          # no provider, condition...
              .modify_rules(1, [(ROW_REMOVE, [gone])])
              .modify_rules(1, [(ROW_REMOVE, [gone])], flags=0x01).modify_rules(1, [], flags=0x02)
              .modify_rules(0, [(ROW_ADD, rule_values("D", condition))]))
    answers, _ = session.run(buffer)
    assert [a.code for a in answers if a.rop_id == 0x41] == [0, 0, EC_INVALID_PARAMETER, EC_NOT_FOUND,
                                                             EC_INVALID_PARAMETER, EC_INVALID_PARAMETER,
                                                             EC_NULL_OBJECT]
    assert [row[3] for row in rules(session)[1]] == ["B"]


# ---- logon-level ROPs --------------------------------------------------------------------------------------------
def test_long_term_ids_round_trip_and_per_user_ids_are_empty():
    session = in_process_session(new_store())
    replica = uuid.uuid5(uuid.UUID(ALICE.guid), "replica").bytes_le           # RopLogon's ReplGuid
    inbox = session.fids[INBOX]
    buffer = (RopBuffer().logon(ALICE_DN).long_term_id_from_id(0, inbox)
              .id_from_long_term_id(0, replica + inbox[2:] + b"\x00\x00")
              .id_from_long_term_id(0, bytes(16) + inbox[2:] + b"\x00\x00")
              .long_term_id_from_id(0, b"\x05\x00" + inbox[2:]).per_user_long_term_ids(0, bytes(16)))
    answers, _ = session.run(buffer)
    assert by_rop(answers, 0x43).fields["long_term_id"] == replica + inbox[2:] + b"\x00\x00"
    assert [(a.code, a.fields.get("object_id")) for a in answers if a.rop_id == 0x44] == [(0, inbox),
                                                                                        (EC_NOT_FOUND, None)]
    assert [a.code for a in answers if a.rop_id == 0x43] == [0, EC_NOT_FOUND]
    assert by_rop(answers, 0x60).fields == {"ids": []}


def test_public_folder_logon_without_public_folder_mailboxes():
    session = in_process_session(new_store())
    answers, _ = session.run(RopBuffer().logon(ALICE_DN, logon_flags=0x00, open_flags=0x01000000 | 0x02))
    assert by_rop(answers, 0xFE).code == EC_NOT_FOUND


# ---- the same ROPs over EcDoRpcExt2 ------------------------------------------------------------------------------
def test_folders_and_restrictions_over_ec_do_rpc_ext2():
    store = new_store()
    server = Emsmdb(ORG, clock=lambda: 1700000000.0, store=store)
    ctx = CallContext(org=ORG, mailbox=ALICE, auth_level=6, association={}, record=lambda kind, **fields: None,
                      rng=random.Random(5))
    cxh = E.parse_connect_response(server.call(10, E.build_connect_request(ALICE_DN), ctx)).cxh

    def run(buffer: RopBuffer):
        status, _, payloads = E.parse_rpc_response(server.call(11, E.build_rpc_request(cxh, buffer.payload()), ctx))
        assert status == 0
        return parse_answers(buffer, payloads[0])[0]
    fids = by_rop(run(RopBuffer().logon(ALICE_DN)), 0xFE).fields["fids"]
    answers = run(RopBuffer(slots=3).logon(ALICE_DN).open_folder(fids[IPM_SUBTREE], 0, 1)
                  .create_folder(1, 2, "Over RPC").hierarchy_table(1, 2).set_columns(2, [TAG_DISPLAY_NAME])
                  .restrict(2, content(TAG_DISPLAY_NAME, "over", low=2)).query_rows(2, [TAG_DISPLAY_NAME]))
    assert [a.code for a in answers] == [0] * len(answers)
    assert by_rop(answers, 0x15).fields["rows"] == [["Over RPC"]]


# ---- EWS sees what the ROPs made ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = start_mapi_http_server(tmp_path_factory, "maprops")
    yield server
    server.stop()


def test_a_folder_created_over_rops_is_found_by_exchangelib(served):
    session = https_session(served)
    fid = create(session, "Made over MAPI")
    answers, _ = session.run(RopBuffer(slots=2).logon(ALICE_DN).open_folder(fid, 0, 1)
                             .set_props(1, {0x3613001F: "IPF.Task"}))
    assert by_rop(answers, 0x0A).code == 0
    with exchangelib_accounts(served) as account:
        found = {folder.name: folder for folder in account("alice").msg_folder_root.children}
    assert "Made over MAPI" in found
    assert type(found["Made over MAPI"]).__name__ == "Tasks" and found["Made over MAPI"].folder_class == "IPF.Task"


def test_folder_and_table_rops_over_rpc_over_http(served):
    if served.https_port != 443:
        pytest.skip("impacket's ncacn_http reaches the proxy on :443 only (run as root or in `unshare -rn`)")
    from impacket.uuid import uuidtup_to_bin

    from tests.support.clients import bind_over_http, ncacn_http
    dce = bind_over_http(ncacn_http(served.host, ORG.personal_server(ALICE), 6001),
                         uuidtup_to_bin((E.Emsmdb.uuid, "0.81")), "alice", served.user("alice")["password"])
    dce.call(10, E.build_connect_request(ALICE_DN))
    cxh = E.parse_connect_response(dce.recv()).cxh

    def run(buffer: RopBuffer):
        dce.call(11, E.build_rpc_request(cxh, buffer.payload()))
        status, _, payloads = E.parse_rpc_response(dce.recv())
        assert status == 0
        return parse_answers(buffer, payloads[0])[0]
    fids = by_rop(run(RopBuffer().logon(ALICE_DN)), 0xFE).fields["fids"]
    answers = run(RopBuffer(slots=3).logon(ALICE_DN).open_folder(fids[IPM_SUBTREE], 0, 1)
                  .create_folder(1, 2, "Over RPC/HTTP").hierarchy_table(1, 2).set_columns(2, [TAG_DISPLAY_NAME])
                  .restrict(2, content(TAG_DISPLAY_NAME, "over rpc", low=2)).query_rows(2, [TAG_DISPLAY_NAME]))
    dce.get_rpc_transport().disconnect()
    assert [a.code for a in answers] == [0] * len(answers)
    assert by_rop(answers, 0x15).fields["rows"] == [["Over RPC/HTTP"]]
