"""Sync over the store's change numbers: the sans-IO computation (fake clock), the EWS SyncFolderItems /
SyncFolderHierarchy cores, and exchangelib's sync_items / sync_hierarchy resumed across sessions."""
from __future__ import annotations

import base64
import json

import pytest
from lxml import etree

from harness.mailbox import sync
from harness.protocols import ews
from tests.support.ews import ALICE, BOB, CLIENT, ORG, envelope, new_store
from tests.support.netns import Check, needs_netns, run_in_netns

M, T = f"{{{ews.MESSAGES_NS}}}", f"{{{ews.TYPES_NS}}}"


def kinds(page: sync.SyncPage):
    return [(c.kind, getattr(c.subject, "subject", None)) for c in page.changes]


def test_a_first_sync_creates_everything_then_only_changes_follow():
    store = new_store()
    alice, bob = store.mailbox(ALICE), store.mailbox(BOB)
    inbox = alice.distinguished["inbox"]
    first = sync.item_changes(inbox, 0, 100)
    assert [k for k, _ in kinds(first)] == ["Create"] * 3 and first.includes_last
    assert first.state == alice.change_number
    assert sync.item_changes(inbox, first.state, 100).changes == []
    welcome, planning, lunch = list(inbox.items.values())
    store.set_read(planning, True)
    store.set_subject(lunch, "Lunch on Friday?")
    store.set_read(lunch, True)
    store.delete(welcome, hard=True)
    store.send(bob, subject="new", body="x", to=[("", ALICE)])
    after = sync.item_changes(inbox, first.state, 100)
    assert kinds(after) == [("ReadFlagChange", "Quarterly planning"), ("Update", "Lunch on Friday?"),
                            ("Delete", None), ("Create", "new")]
    assert after.changes[2].subject.key == welcome.key


def test_items_made_and_removed_between_syncs_never_show_and_moves_are_delete_plus_create():
    store = new_store()
    alice, bob = store.mailbox(ALICE), store.mailbox(BOB)
    inbox, junk = alice.distinguished["inbox"], alice.distinguished["junkemail"]
    state = sync.item_changes(inbox, 0, 100).state
    _, [fleeting] = store.send(bob, subject="fleeting", body="x", to=[("", ALICE)])
    store.delete(fleeting, hard=True)
    moved = store.move(next(iter(inbox.items.values())), junk)
    assert kinds(sync.item_changes(inbox, state, 100)) == [("Delete", None)]
    assert kinds(sync.item_changes(junk, 0, 100)) == [("Create", moved.subject)]


def test_paging_by_max_changes_resumes_where_it_stopped():
    store = new_store(alice=25)
    alice = store.mailbox(ALICE)
    inbox = alice.distinguished["inbox"]
    seen, state, pages = [], 0, 0
    while True:
        page = sync.item_changes(inbox, state, 10)
        seen += [c.subject.key for c in page.changes]
        state, pages = page.state, pages + 1
        if page.includes_last:
            break
    assert pages == 3 and sorted(seen) == sorted(inbox.items) and len(seen) == 28
    assert sync.item_changes(inbox, 0, 10).includes_last is False


def test_ignore_leaves_items_out():
    store = new_store()
    alice = store.mailbox(ALICE)
    inbox = alice.distinguished["inbox"]
    first = next(iter(inbox.items.values()))
    ignore = sync.item_keys(alice, [first.id, "garbage"])
    assert ignore == frozenset({first.key})
    assert first not in [c.subject for c in sync.item_changes(inbox, 0, 100, ignore).changes]


def test_hierarchy_sync_reports_new_folders_and_count_changes():
    store = new_store()
    alice, bob = store.mailbox(ALICE), store.mailbox(BOB)
    top = alice.distinguished["msgfolderroot"]
    first = sync.folder_changes(top, 0, 1000)
    assert {c.subject.name for c in first.changes} == {f.name for f in top.children}
    assert {c.kind for c in first.changes} == {"Create"}
    projects = alice.add_folder("Projects", "IPF.Note", alice.distinguished["inbox"])
    store.send(bob, subject="new", body="x", to=[("", ALICE)])
    later = sync.folder_changes(top, first.state, 1000)
    assert [(c.kind, c.subject.name) for c in later.changes] == [("Create", "Projects"), ("Update", "Inbox")]
    assert projects.created > first.state


@pytest.mark.parametrize("mutate", [
    lambda s, a: "not base64!",
    lambda s, a: base64.b64encode(b"\x01I").decode(),                                       # too short
    lambda s, a: sync.encode_state(a, sync.HIERARCHY, a.distinguished["inbox"], 1),         # another kind
    lambda s, a: sync.encode_state(a, sync.ITEMS, a.distinguished["junkemail"], 1),         # another folder
    lambda s, a: sync.encode_state(s.mailbox(BOB), sync.ITEMS, a.distinguished["inbox"], 1),  # another mailbox
    lambda s, a: sync.encode_state(a, sync.ITEMS, a.distinguished["inbox"], a.change_number + 1),  # the future
])
def test_states_not_given_out_for_this_folder_are_invalid(mutate):
    store = new_store()
    alice = store.mailbox(ALICE)
    inbox = alice.distinguished["inbox"]
    good = sync.encode_state(alice, sync.ITEMS, inbox, 5)
    assert sync.decode_state(alice, sync.ITEMS, inbox, good) == 5
    assert sync.decode_state(alice, sync.ITEMS, inbox, None) == 0
    with pytest.raises(sync.InvalidSyncState):
        sync.decode_state(alice, sync.ITEMS, inbox, mutate(store, alice))


def sync_items(state: str = "", limit: int = 2) -> bytes:
    state_element = f"<m:SyncState>{state}</m:SyncState>" if state else ""
    return envelope("<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>"
                    '<t:FieldURI FieldURI="item:Subject"/></t:AdditionalProperties></m:ItemShape><m:SyncFolderId>'
                    f'<t:DistinguishedFolderId Id="inbox"/></m:SyncFolderId>{state_element}'
                    f"<m:MaxChangesReturned>{limit}</m:MaxChangesReturned></m:SyncFolderItems>")


def test_sync_folder_items_pages_with_an_opaque_state_and_refuses_a_bad_one():
    store = new_store()
    answer = ews.respond_ews(ORG, store, ALICE, sync_items())
    message = etree.fromstring(answer.body).find(f".//{M}SyncFolderItemsResponseMessage")
    assert message.get("ResponseClass") == "Success"
    assert message.findtext(f"{M}IncludesLastItemInRange") == "false"
    assert [e.findtext(f"{T}Message/{T}Subject") for e in message.find(f"{M}Changes")] == [
        "Welcome to Contoso", "Quarterly planning"]
    assert [etree.QName(e).localname for e in message] == ["ResponseCode", "SyncState", "IncludesLastItemInRange",
                                                           "Changes"]
    rest = ews.respond_ews(ORG, store, ALICE, sync_items(message.findtext(f"{M}SyncState")))
    message = etree.fromstring(rest.body).find(f".//{M}SyncFolderItemsResponseMessage")
    assert message.findtext(f"{M}IncludesLastItemInRange") == "true"
    assert [e.findtext(f"{T}Message/{T}Subject") for e in message.find(f"{M}Changes")] == ["Lunch on Thursday?"]
    bad = ews.respond_ews(ORG, store, ALICE, sync_items("AAAA"))
    assert bad.status == 200 and bad.error_code == "ErrorInvalidSyncStateData"
    message = etree.fromstring(bad.body).find(f".//{M}SyncFolderItemsResponseMessage")
    assert message.get("ResponseClass") == "Error" and message.find(f"{M}SyncState") is not None
    too_many = ews.respond_ews(ORG, store, ALICE, sync_items(limit=513))
    assert too_many.status == 500 and too_many.error_code == "ErrorSchemaValidation"


def test_sync_folder_items_reports_deletes_and_read_flags_in_exchange_form():
    store = new_store()
    alice = store.mailbox(ALICE)
    state = etree.fromstring(ews.respond_ews(ORG, store, ALICE, sync_items(limit=10)).body).findtext(
        f".//{M}SyncState")
    welcome, planning, _ = list(alice.distinguished["inbox"].items.values())
    store.set_read(planning, True)
    store.delete(welcome, hard=False)
    changes = etree.fromstring(ews.respond_ews(ORG, store, ALICE, sync_items(state, 10)).body).find(
        f".//{M}Changes")
    read, delete = changes
    assert etree.QName(read).localname == "ReadFlagChange" and read.findtext(f"{T}IsRead") == "true"
    assert read.find(f"{T}ItemId").get("Id") == planning.id
    assert etree.QName(delete).localname == "Delete" and delete.find(f"{T}ItemId").get("Id") == welcome.id


def test_sync_folder_hierarchy_answers_folders_below_the_root():
    store = new_store()
    answer = ews.respond_ews(ORG, store, ALICE, envelope(
        "<m:SyncFolderHierarchy><m:FolderShape><t:BaseShape>AllProperties</t:BaseShape></m:FolderShape>"
        "</m:SyncFolderHierarchy>"))
    message = etree.fromstring(answer.body).find(f".//{M}SyncFolderHierarchyResponseMessage")
    assert message.findtext(f"{M}IncludesLastFolderInRange") == "true"
    names = {c.findtext(f"*/{T}DisplayName") for c in message.find(f"{M}Changes")}
    assert {"Inbox", "Sent Items", "Calendar"} <= names and "Top of Information Store" not in names


@needs_netns
def test_exchangelib_syncs_items_and_hierarchy_resumed_across_sessions(tmp_path):
    out = run_in_netns(str(tmp_path), [([], [
        Check("sync", f'"$PY" {CLIENT} 127.0.0.1 53 {ALICE} P@ssw0rd-alice sync {BOB} P@ssw0rd-bob')])])
    results = {}
    for line in out["sync"].output.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result.pop("check")] = result
    assert "error" not in results, results.get("error")
    first = results["first"]
    assert sorted(first["changes"]) == sorted([["create", "Welcome to Contoso"], ["create", "Quarterly planning"],
                                               ["create", "Lunch on Thursday?"]])
    assert {"Inbox", "Sent Items", "Deleted Items"} <= {name for _, name in first["folders"]}
    assert results["unchanged"]["changes"] == []
    assert results["resumed"]["changes"] == [["create", "sync me"]]
    assert ["update", "Inbox"] in results["resumed"]["folders"]
    assert results["made-up"]["error"] == "ErrorInvalidSyncStateData"
    details = [e["detail"] for e in out["sync"].kind("ews")]
    assert "EWS SyncFolderItems" in details and "EWS SyncFolderHierarchy" in details
