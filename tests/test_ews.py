"""The mailbox store (sans-IO, fake clock) and EWS: its cores in-process, and exchangelib, unmodified and through its
own Autodiscover, against a real `mockex serve`."""
from __future__ import annotations

import json

from lxml import etree

from harness.mailbox import ids
from harness.protocols import ews
from tests.support.ews import ALICE, BOB, CLIENT, NOW, ORG, SOAP, envelope, new_store
from tests.support.netns import Check, needs_netns, run_in_netns


def test_every_mailbox_has_the_well_known_folders_and_alice_a_few_messages():
    alice = new_store().mailbox(ALICE)
    top = alice.distinguished["msgfolderroot"]
    assert top.name == "Top of Information Store" and top.parent is alice.distinguished["root"]
    assert {f.name for f in top.children} == {"Inbox", "Drafts", "Sent Items", "Deleted Items", "Outbox", "Calendar",
                                              "Contacts", "Tasks", "Notes", "Journal", "Junk Email"}
    inbox = alice.distinguished["inbox"]
    assert [i.subject for i in inbox.items.values()][0] == "Welcome to Contoso" and len(inbox.items) == 3
    assert inbox.unread == 2


def test_ids_look_like_exchange_and_decode_back():
    alice = new_store().mailbox(ALICE)
    item = next(iter(alice.distinguished["inbox"].items.values()))
    assert item.id.startswith("AAMkA") and alice.distinguished["inbox"].id.startswith("AAMkA")
    assert ids.decode(item.id) == (alice.guid, item.folder.key, item.key)
    assert alice.find(item.id) is item and alice.find(alice.distinguished["inbox"].id) is alice.distinguished["inbox"]
    assert ids.decode("not an id") is None and ids.decode("AAAA") is None
    assert item.change_key.startswith("CQAAABYAAA")


def test_send_delivers_in_org_and_keeps_a_copy():
    store = new_store()
    alice, bob = store.mailbox(ALICE), store.mailbox(BOB)
    before = alice.change_number
    copy, delivered = store.send(alice, subject="hi", body="x", to=[("", "BOB@contoso.test"), ("", "x@fabrikam.test")],
                                 save_copy_in=alice.distinguished["sentitems"])
    assert copy is not None and copy.folder is alice.distinguished["sentitems"] and copy.is_read
    assert [d.folder for d in delivered] == [bob.distinguished["inbox"]] and not delivered[0].is_read
    assert delivered[0].received == NOW and delivered[0].sender == (alice.display_name, ALICE)
    assert alice.change_number > before
    assert b"Subject: hi" in delivered[0].mime_content()


def test_move_delete_and_reset():
    store = new_store(alice=50)
    alice = store.mailbox(ALICE)
    inbox, junk = alice.distinguished["inbox"], alice.distinguished["junkemail"]
    first_ids = [i.id for i in inbox.items.values()]
    assert len(first_ids) == 53
    item = next(iter(inbox.items.values()))
    moved = store.move(item, junk)
    assert moved.id != item.id and moved.folder is junk and alice.find(item.id) is None
    trashed = store.delete(moved, hard=False)
    assert trashed is not None and trashed.folder is alice.distinguished["deleteditems"]
    assert store.delete(trashed, hard=False) is None and not alice.distinguished["deleteditems"].items
    store.reset()
    assert [i.id for i in store.mailbox(ALICE).distinguished["inbox"].items.values()] == first_ids


def test_unknown_operation_and_bad_version_are_exchange_faults():
    store = new_store()
    unknown = ews.respond_ews(ORG, store, ALICE, envelope("<m:FrobnicateItem/>"))
    assert unknown.status == 500 and unknown.error_code == "ErrorInvalidRequest"
    assert b"The request is invalid." in unknown.body and b"mock" not in unknown.body.lower()
    bad = ews.respond_ews(ORG, store, ALICE, envelope("<m:GetFolder/>", version="Exchange2099"))
    assert bad.status == 500 and bad.error_code == "ErrorInvalidServerVersion"


def test_get_folder_answers_each_id_with_its_own_response_class():
    store = new_store()
    answer = ews.respond_ews(ORG, store, ALICE, envelope(
        "<m:GetFolder><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape><m:FolderIds>"
        '<t:DistinguishedFolderId Id="inbox"/><t:DistinguishedFolderId Id="archiveroot"/>'
        '<t:FolderId Id="garbage"/></m:FolderIds></m:GetFolder>'))
    root = etree.fromstring(answer.body)
    info = root.find(f"{{{SOAP}}}Header/{{{ews.TYPES_NS}}}ServerVersionInfo")
    assert (info.get("MajorVersion"), info.get("MinorVersion")) == ("15", "0")
    messages = root.findall(f".//{{{ews.MESSAGES_NS}}}GetFolderResponseMessage")
    assert [m.get("ResponseClass") for m in messages] == ["Success", "Error", "Error"]
    assert [m.findtext(f"{{{ews.MESSAGES_NS}}}ResponseCode") for m in messages] == [
        "NoError", "ErrorFolderNotFound", "ErrorInvalidIdMalformed"]
    assert messages[0].findtext(f".//{{{ews.TYPES_NS}}}DisplayName") == "Inbox"
    assert messages[0].findtext(f".//{{{ews.TYPES_NS}}}UnreadCount") == "2"


@needs_netns
def test_exchangelib_browses_reads_sends_and_pages(tmp_path):
    """exchangelib's Account(autodiscover=True) as is: its folder tree, the newest Inbox messages, MIME, a message to
    bob, mark read, move, trash, delete; then bob pages through 2,500 generated messages and finds alice's first."""
    out = run_in_netns(str(tmp_path), [(["--mailbox-size", "bob=2500"], [
        Check("browse", f'"$PY" {CLIENT} 127.0.0.1 53 {ALICE} P@ssw0rd-alice browse {BOB}'),
        Check("page", f'"$PY" {CLIENT} 127.0.0.1 53 {BOB} P@ssw0rd-bob page')])])
    results = {}
    for label in ("browse", "page"):
        for line in out[label].output.splitlines():
            if line.startswith("{"):
                result = json.loads(line)
                results[result.pop("check")] = result
    assert "error" not in results, results.get("error")
    tree = results["tree"]["text"]
    for name in ("Top of Information Store", "Inbox", "Sent Items", "Deleted Items", "Calendar", "Junk Email"):
        assert name in tree
    assert results["newest"]["subjects"] == ["Lunch on Thursday?", "Quarterly planning", "Welcome to Contoso"]
    assert "Subject: Lunch on Thursday?" in results["mime"]["mime"]
    assert results["sent"]["subjects"] == ["hi from alice"]
    assert results["read"]["now"] is True and results["read"]["unread_count"] == 1
    assert results["moved"]["junk"] == [results["read"]["subject"]]
    assert results["trashed"] == {"junk": 0, "trash": [results["read"]["subject"]]}
    assert results["deleted"] == {"trash": 0}
    assert results["page"]["count"] == results["page"]["total"] == results["page"]["distinct"] == 2504
    assert results["page"]["first"][0] == "hi from alice"
    events = out["browse"].kind("ews")
    assert {e["detail"] for e in events} >= {"EWS GetFolder", "EWS FindFolder", "EWS FindItem", "EWS GetItem",
                                            "EWS CreateItem", "EWS UpdateItem", "EWS MoveItem", "EWS DeleteItem"}


def test_a_folder_keeps_its_newest_first_order_across_arrivals_moves_and_deletes():
    """The cached view order follows every change: a delivery comes first, a moved or deleted item leaves it."""
    store = new_store(alice=50)
    alice = store.mailbox(ALICE)
    inbox = alice.distinguished["inbox"]
    before = list(inbox.newest_first())
    assert [i.received for i in before] == sorted((i.received for i in before), reverse=True)
    _, (delivered,) = store.send(store.mailbox(BOB), subject="fresh", body="x", to=[alice.address])
    assert inbox.newest_first()[0] is delivered and inbox.newest_first()[1:] == before
    store.move(before[0], alice.distinguished["junkemail"])
    store.delete(before[-1], hard=True)
    assert inbox.newest_first() == [delivered] + before[1:-1]


def test_find_item_pages_carry_markup_characters_and_match_get_item():
    """A FindItem page is written as text and parsed once: markup characters in a subject and a sender's name come
    back as sent, and each item's fields equal what GetItem (element by element) writes for the same shape."""
    store = new_store()
    alice = store.mailbox(ALICE)
    tricky = 'R&D <draft> "quoted" \'one\'\r\nnext line'
    store.send(store.mailbox(BOB), subject=tricky, body="x", to=[alice.address])
    shape = "<m:ItemShape><t:BaseShape>AllProperties</t:BaseShape></m:ItemShape>"
    found = etree.fromstring(ews.respond_ews(ORG, store, ALICE, envelope(
        f'<m:FindItem Traversal="Shallow">{shape}<m:IndexedPageItemView MaxEntriesReturned="2" Offset="0" '
        'BasePoint="Beginning"/><m:ParentFolderIds><t:DistinguishedFolderId Id="inbox"/></m:ParentFolderIds>'
        '</m:FindItem>')).body)
    items = found.findall(f".//{{{ews.TYPES_NS}}}Items/{{{ews.TYPES_NS}}}Message")
    assert [i.findtext(f"{{{ews.TYPES_NS}}}Subject") for i in items] == [tricky, "Lunch on Thursday?"]
    for item in items:
        item_id = item.find(f"{{{ews.TYPES_NS}}}ItemId").get("Id")
        got = etree.fromstring(ews.respond_ews(ORG, store, ALICE, envelope(
            f'<m:GetItem>{shape}<m:ItemIds><t:ItemId Id="{item_id}"/></m:ItemIds></m:GetItem>')).body)
        single = got.find(f".//{{{ews.TYPES_NS}}}Message")
        in_find = {(e.tag, e.text or "") for e in item.iter() if e is not item}
        assert in_find <= {(e.tag, e.text or "") for e in single.iter() if e is not single}


@needs_netns
def test_exchangelib_pages_through_a_20000_item_generated_folder(tmp_path):
    """`--mailbox-size bob=20000`: exchangelib lists the whole Inbox newest first, 1,000 a FindItem page, and gets
    every message once (the folder keeps its order, so a page is a slice, not a sort)."""
    out = run_in_netns(str(tmp_path), [(["--mailbox-size", "bob=20000"], [
        Check("page", f'"$PY" {CLIENT} 127.0.0.1 53 {BOB} P@ssw0rd-bob page 1000')])])
    results = {}
    for line in out["page"].output.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result.pop("check")] = result
    assert "error" not in results, results.get("error")
    assert results["page"]["count"] == results["page"]["total"] == results["page"]["distinct"] == 20003
    assert results["page"]["first"] == ["Lunch on Thursday?", "Quarterly planning"]
    assert results["page"]["last"][0].endswith(" #1")      # the oldest generated message comes last
    finds = [e for e in out["page"].kind("ews") if e["detail"] == "EWS FindItem"]
    assert len(finds) == 21     # 20 full pages of 1,000 and the last 3
