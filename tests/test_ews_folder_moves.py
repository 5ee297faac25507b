"""MoveFolder and CopyFolder, folder notification events, and UpdateItem's MessageDisposition sending: the EWS cores
in-process on a fixed clock, then exchangelib (unmodified, its own Autodiscover) observing each over loopback."""
from __future__ import annotations

import struct

from lxml import etree

from harness.mailbox import sync
from harness.protocols import ews
from tests.support import REPO
from tests.support.ews import ALICE, BOB, ORG, envelope, new_store, results_of
from tests.support.netns import Check, needs_netns, run_in_netns

M, T = f"{{{ews.MESSAGES_NS}}}", f"{{{ews.TYPES_NS}}}"
CLIENT = f"{REPO}/tests/support/exchangelib_ews_folder_moves.py"
LUNCH = "Lunch on Thursday?"


def call(store, body: str, user: str = ALICE):
    answer = ews.respond_ews(ORG, store, user, envelope(body))
    return answer, etree.fromstring(answer.body)


def codes(root) -> list:
    return [e.text for e in root.iter(f"{M}ResponseCode")]


def ref(folder) -> str:
    return f'<t:FolderId Id="{folder.id}"/>'


def move_or_copy(store, operation: str, target: str, *folders: str):
    return call(store, f"<m:{operation}><m:ToFolderId>{target}</m:ToFolderId><m:FolderIds>{''.join(folders)}"
                       f"</m:FolderIds></m:{operation}>")


def projects_with_a_subfolder_and_a_message(store):
    """Inbox/Projects/Sub, and a copy of the Lunch message in Projects."""
    alice = store.mailbox(ALICE)
    inbox = alice.distinguished["inbox"]
    projects = alice.add_folder("Projects", "IPF.Note", inbox)
    sub = alice.add_folder("Sub", "IPF.Note", projects)
    lunch = next(i for i in inbox.items.values() if i.subject == LUNCH)
    store.copy(lunch, projects)
    return alice, projects, sub


# ---- MoveFolder, CopyFolder -------------------------------------------------------------------------------------
def test_move_folder_reparents_keeping_the_id_and_a_hierarchy_sync_sees_it():
    store = new_store()
    alice, projects, sub = projects_with_a_subfolder_and_a_message(store)
    top, junk, inbox = (alice.distinguished[d] for d in ("msgfolderroot", "junkemail", "inbox"))
    since = sync.folder_changes(top, 0, 1000).state
    answer, root = move_or_copy(store, "MoveFolder", '<t:DistinguishedFolderId Id="junkemail"/>', ref(projects))
    assert answer.outcome == "success"
    answered = root.find(f".//{M}MoveFolderResponseMessage/{M}Folders/{T}Folder/{T}FolderId")
    assert answered.get("Id") == projects.id and answered.get("ChangeKey") == projects.change_key
    assert projects.parent is junk and projects not in inbox.children and sub.parent is projects
    changes = sync.folder_changes(top, since, 1000).changes
    assert sorted(c.subject.name for c in changes) == ["Inbox", "Junk Email", "Projects"]
    assert {c.kind for c in changes} == {"Update"}
    # Distinguished folders stay; a folder into itself or below itself fails; unknown ids fail alone.
    _, root = move_or_copy(store, "MoveFolder", ref(junk), '<t:DistinguishedFolderId Id="inbox"/>', ref(sub))
    assert codes(root) == ["ErrorMoveDistinguishedFolder", "NoError"] and inbox.parent is top
    assert sub.parent is junk
    deep = alice.add_folder("Deep", None, projects)
    _, root = move_or_copy(store, "MoveFolder", ref(deep), ref(projects))
    assert codes(root) == ["ErrorMoveCopyFailed"] and projects.parent is junk
    _, root = move_or_copy(store, "MoveFolder", ref(projects), ref(projects))
    assert codes(root) == ["ErrorMoveCopyFailed"]
    twin = alice.add_folder("Sub", "IPF.Note", inbox)
    _, root = move_or_copy(store, "MoveFolder", ref(inbox), ref(sub))
    assert codes(root) == ["ErrorFolderExists"] and sub.parent is junk and twin.parent is inbox
    answer, _ = move_or_copy(store, "MoveFolder", "", ref(sub))
    assert answer.error_code == "ErrorInvalidRequest"


def test_copy_folder_duplicates_subfolders_and_items_with_new_ids():
    store = new_store()
    alice, projects, sub = projects_with_a_subfolder_and_a_message(store)
    top, trash = alice.distinguished["msgfolderroot"], alice.distinguished["deleteditems"]
    since = sync.folder_changes(top, 0, 1000).state
    answer, root = move_or_copy(store, "CopyFolder", ref(trash), ref(projects))
    assert answer.outcome == "success"
    copy = alice.find(root.find(f".//{M}CopyFolderResponseMessage/{M}Folders/{T}Folder/{T}FolderId").get("Id"))
    assert copy is not projects and copy.parent is trash and copy.name == "Projects"
    assert [c.name for c in copy.children] == ["Sub"] and copy.children[0] is not sub
    [original], [copied] = projects.items.values(), copy.items.values()
    assert copied.subject == original.subject == LUNCH and copied.id != original.id
    assert projects.parent is alice.distinguished["inbox"] and list(projects.items.values()) == [original]
    changes = sync.folder_changes(top, since, 1000).changes
    assert sorted((c.kind, c.subject.name) for c in changes) == [("Create", "Projects"), ("Create", "Sub"),
                                                                 ("Update", "Deleted Items")]
    # A distinguished folder can be copied (the copy is an ordinary folder); not into itself; not onto a name.
    answer, root = move_or_copy(store, "CopyFolder", ref(projects), '<t:DistinguishedFolderId Id="junkemail"/>')
    junk_copy = alice.find(root.find(f".//{T}FolderId").get("Id"))
    assert answer.outcome == "success" and junk_copy.distinguished is None and junk_copy.parent is projects
    assert codes(move_or_copy(store, "CopyFolder", ref(sub), ref(projects))[1]) == ["ErrorMoveCopyFailed"]
    assert codes(move_or_copy(store, "CopyFolder", ref(trash), ref(projects))[1]) == ["ErrorFolderExists"]


# ---- folder notification events -----------------------------------------------------------------------------
def subscribe_all(store) -> tuple:
    kinds = "".join(f"<t:EventType>{k}Event</t:EventType>" for k in ("Created", "Modified", "Moved", "Copied",
                                                                     "Deleted"))
    _, root = call(store, '<m:Subscribe><m:PullSubscriptionRequest SubscribeToAllFolders="true"><t:EventTypes>'
                          f"{kinds}</t:EventTypes><t:Timeout>10</t:Timeout></m:PullSubscriptionRequest></m:Subscribe>")
    return root.findtext(f".//{M}SubscriptionId"), root.findtext(f".//{M}Watermark")


def folder_events(store, subscription: str, watermark: str) -> list:
    _, root = call(store, f"<m:GetEvents><m:SubscriptionId>{subscription}</m:SubscriptionId><m:Watermark>"
                          f"{watermark}</m:Watermark></m:GetEvents>")
    found = []
    for event in root.find(f".//{M}Notification"):
        if event.find(f"{T}FolderId") is not None:
            assert event.find(f"{T}ItemId") is None
            found.append([etree.QName(event).localname] + [
                event.find(f"{T}{name}").get("Id") if event.find(f"{T}{name}") is not None else None
                for name in ("FolderId", "ParentFolderId", "OldFolderId", "OldParentFolderId")])
    return found


def test_folder_changes_are_notification_events_with_folder_ids():
    store = new_store()
    alice = store.mailbox(ALICE)
    inbox, junk, trash = (alice.distinguished[d] for d in ("inbox", "junkemail", "deleteditems"))
    subscription, watermark = subscribe_all(store)
    _, root = call(store, '<m:CreateFolder><m:ParentFolderId><t:DistinguishedFolderId Id="inbox"/>'
                          '</m:ParentFolderId><m:Folders><t:Folder><t:DisplayName>Projects</t:DisplayName></t:Folder>'
                          '</m:Folders></m:CreateFolder>')
    projects = alice.find(root.find(f".//{T}FolderId").get("Id"))
    call(store, f'<m:UpdateFolder><m:FolderChanges><t:FolderChange>{ref(projects)}<t:Updates><t:SetFolderField>'
                '<t:FieldURI FieldURI="folder:DisplayName"/><t:Folder><t:DisplayName>Projects 2024</t:DisplayName>'
                '</t:Folder></t:SetFolderField></t:Updates></t:FolderChange></m:FolderChanges></m:UpdateFolder>')
    move_or_copy(store, "MoveFolder", ref(junk), ref(projects))
    _, root = move_or_copy(store, "CopyFolder", ref(trash), ref(projects))
    copy = alice.find(root.find(f".//{T}FolderId").get("Id"))
    call(store, f'<m:DeleteFolder DeleteType="HardDelete"><m:FolderIds>{ref(projects)}</m:FolderIds>'
                '</m:DeleteFolder>')
    assert folder_events(store, subscription, watermark) == [
        ["CreatedEvent", projects.id, inbox.id, None, None],
        ["ModifiedEvent", projects.id, inbox.id, None, None],
        ["MovedEvent", projects.id, junk.id, projects.id, inbox.id],
        ["CopiedEvent", copy.id, trash.id, projects.id, junk.id],
        ["DeletedEvent", projects.id, junk.id, None, None],
    ]
    # A subscription to one folder sees what happens to the folders directly in it (their parent is it).
    _, root = call(store, '<m:Subscribe><m:PullSubscriptionRequest><t:FolderIds><t:DistinguishedFolderId '
                          'Id="junkemail"/></t:FolderIds><t:EventTypes><t:EventType>CreatedEvent</t:EventType>'
                          '</t:EventTypes><t:Timeout>10</t:Timeout></m:PullSubscriptionRequest></m:Subscribe>')
    junk_only, junk_mark = root.findtext(f".//{M}SubscriptionId"), root.findtext(f".//{M}Watermark")
    alice.add_folder("Elsewhere", None, inbox)
    here = alice.add_folder("Here", None, junk)
    assert folder_events(store, junk_only, junk_mark) == [["CreatedEvent", here.id, junk.id, None, None]]


def test_streaming_subscriptions_carry_folder_events():
    store = new_store()
    alice = store.mailbox(ALICE)
    _, root = call(store, '<m:Subscribe><m:StreamingSubscriptionRequest SubscribeToAllFolders="true"><t:EventTypes>'
                          "<t:EventType>CreatedEvent</t:EventType></t:EventTypes></m:StreamingSubscriptionRequest>"
                          "</m:Subscribe>")
    subscription = root.findtext(f".//{M}SubscriptionId")
    made = alice.add_folder("Streamed", None, alice.distinguished["inbox"])
    answer = ews.respond_ews(ORG, store, ALICE, envelope(
        f"<m:GetStreamingEvents><m:SubscriptionIds><t:SubscriptionId>{subscription}</t:SubscriptionId>"
        "</m:SubscriptionIds><m:ConnectionTimeout>1</m:ConnectionTimeout></m:GetStreamingEvents>"))
    event = etree.fromstring(answer.chunks[1]).find(f".//{T}Notification/{T}CreatedEvent")
    assert event.find(f"{T}FolderId").get("Id") == made.id and event.find(f"{T}ItemId") is None


def test_seeded_and_initial_folders_are_no_events():
    store = new_store()
    assert all(not e.is_folder for e in store.mailbox(ALICE).events.events)


# ---- UpdateItem MessageDisposition ---------------------------------------------------------------------------
def update_subject(item, subject: str, disposition: str, saved_in: str = "") -> str:
    return (f'<m:UpdateItem MessageDisposition="{disposition}" ConflictResolution="AutoResolve">{saved_in}'
            f'<m:ItemChanges><t:ItemChange><t:ItemId Id="{item.id}" ChangeKey="{item.change_key}"/><t:Updates>'
            '<t:SetItemField><t:FieldURI FieldURI="item:Subject"/><t:Message><t:Subject>'
            f'{subject}</t:Subject></t:Message></t:SetItemField></t:Updates></t:ItemChange></m:ItemChanges>'
            '</m:UpdateItem>')


def subjects(folder) -> list:
    return sorted(i.subject for i in folder.items.values())


def test_update_item_send_and_save_copy_sends_the_updated_draft():
    store = new_store()
    alice, bob = store.mailbox(ALICE), store.mailbox(BOB)
    drafts, sent, junk = (alice.distinguished[d] for d in ("drafts", "sentitems", "junkemail"))
    draft = store.save(alice, drafts, subject="First draft", body="b", to=[bob.address])
    answer, root = call(store, update_subject(draft, "Final words", "SendAndSaveCopy"))
    assert answer.outcome == "success" and len(root.find(f".//{M}Items")) == 0
    assert subjects(drafts) == [] and subjects(sent) == ["Final words"]
    assert "Final words" in subjects(bob.distinguished["inbox"])
    # SendOnly keeps no copy; SavedItemFolderId names where a SendAndSaveCopy copy goes.
    second = store.save(alice, drafts, subject="Second", body="b", to=[bob.address])
    call(store, update_subject(second, "Second, sent", "SendOnly"))
    assert subjects(sent) == ["Final words"] and "Second, sent" in subjects(bob.distinguished["inbox"])
    third = store.save(alice, drafts, subject="Third", body="b", cc=[bob.address])
    call(store, update_subject(third, "Third, kept", "SendAndSaveCopy",
                               '<m:SavedItemFolderId><t:DistinguishedFolderId Id="junkemail"/></m:SavedItemFolderId>'))
    assert subjects(junk) == ["Third, kept"] and subjects(drafts) == []
    # SaveOnly saves; nobody to send to: the update is saved, the send refused; a bad disposition is a fault.
    fourth = store.save(alice, drafts, subject="Fourth", body="b")
    answer, root = call(store, update_subject(fourth, "Fourth, saved", "SaveOnly"))
    assert root.find(f".//{T}ItemId").get("Id") == fourth.id and subjects(drafts) == ["Fourth, saved"]
    _, root = call(store, update_subject(fourth, "Fourth, nobody", "SendOnly"))
    assert codes(root) == ["ErrorInvalidRecipients"] and subjects(drafts) == ["Fourth, nobody"]
    assert call(store, update_subject(fourth, "x", "Later"))[0].error_code == "ErrorSchemaValidation"


def test_an_updated_mime_draft_is_sent_as_updated():
    store = new_store()
    alice, bob = store.mailbox(ALICE), store.mailbox(BOB)
    mime = b"Subject: Old subject\r\nTo: bob@contoso.test\r\n\r\nBody.\r\n"
    draft = store.save(alice, alice.distinguished["drafts"], subject="Old subject", body="Body.", to=[bob.address],
                       mime=mime)
    call(store, update_subject(draft, "New subject", "SendOnly"))
    [delivered] = [i for i in bob.distinguished["inbox"].items.values() if i.subject == "New subject"]
    assert b"Subject: New subject" in delivered.mime_content() and b"Old subject" not in delivered.mime_content()


# ---- exchangelib ------------------------------------------------------------------------------------------------
@needs_netns
def test_exchangelib_moves_and_copies_folders_sees_folder_events_and_sends_an_updated_draft(tmp_path):
    out = run_in_netns(str(tmp_path), [([], [
        Check("moves", f'"$PY" {CLIENT} 127.0.0.1 53 {ALICE} P@ssw0rd-alice {BOB} P@ssw0rd-bob')])])
    output = out["moves"].output
    results = results_of(output)
    assert "error" not in results, output

    moved = results["moved"]
    assert sorted(moved["changes"]) == [["update", "Inbox", moved["changes"][0][2]],
                                        ["update", "Junk Email", moved["changes"][0][2]],
                                        ["update", "Projects", moved["junk_id"]]]
    assert moved["junk_children"] == ["Projects", "Sub"] and moved["inbox_children"] == []
    assert moved["inbox_move"] == {"error": "ErrorMoveDistinguishedFolder"}
    copied = results["copied"]
    assert sorted(copied["changes"]) == [["create", "Projects"], ["create", "Sub"], ["update", "Deleted Items"]]
    assert copied["new_id"] and copied["item_ids_differ"] and copied["copy_children"] == ["Sub"]
    assert copied["trash_children"] == ["Projects", "Sub"]
    assert copied["copy_items"] == copied["original_items"] == [LUNCH]
    assert results["folder-events"]["events"] == [
        ["CreatedEvent", "Projects", "Inbox", None, None],
        ["CreatedEvent", "Sub", "Projects", None, None],
        ["MovedEvent", "Projects", "Junk", "Projects", "Inbox"],
        ["CopiedEvent", "Copy", "Trash", "Projects", "Junk"],
        ["CopiedEvent", "Copy/Sub", "Copy", "Sub", "Projects"],
        ["ModifiedEvent", "Projects", "Junk", None, None],
        ["DeletedEvent", "Sub", "Projects", None, None],
    ]
    assert results["update-sent"] == {"drafts": [], "sent": ["Final words"], "delivered": ["Final words"]}
    details = {e["detail"] for e in out["moves"].kind("ews")}
    assert {"EWS MoveFolder", "EWS CopyFolder", "EWS GetEvents", "EWS UpdateItem"} <= details


def test_rop_notifications_of_folder_events_have_no_message_bit_and_name_the_parents():
    from harness.rpc.emsmdb import notify
    from harness.rpc.emsmdb.rops import fid
    store = new_store()
    alice = store.mailbox(ALICE)
    inbox, junk = alice.distinguished["inbox"], alice.distinguished["junkemail"]
    start = alice.events.last
    made = alice.add_folder("Made", None, inbox)
    alice.move_folder(made, junk)
    created, moved = alice.events.after(start)
    assert notify.notification_data(alice, created) == struct.pack("<H", 0x0004) + fid(made.key) + fid(
        inbox.key) + struct.pack("<H", 0)
    assert notify.notification_data(alice, moved) == struct.pack("<H", 0x0020) + fid(made.key) + fid(
        junk.key) + fid(made.key) + fid(inbox.key)
