"""Folder operations, CopyItem/SendItem/ConvertId, UpdateItem with conflict resolution and FindItem restrictions:
the EWS cores in-process on a fixed clock, then exchangelib observing each through its own Autodiscover."""
from __future__ import annotations

import base64

import pytest
from lxml import etree

from harness.mailbox import ids, sync
from harness.protocols import ews
from tests.support import REPO
from tests.support.ews import ALICE, BOB, ORG, envelope, new_store, results_of
from tests.support.netns import Check, needs_netns, run_in_netns

M, T = f"{{{ews.MESSAGES_NS}}}", f"{{{ews.TYPES_NS}}}"
CLIENT = f"{REPO}/tests/support/exchangelib_ews_ops.py"


def call(store, body: str, user: str = ALICE):
    answer = ews.respond_ews(ORG, store, user, envelope(body))
    return answer, etree.fromstring(answer.body)


def codes(root) -> list:
    return [e.text for e in root.iter(f"{M}ResponseCode")]


def folder_ref(folder) -> str:
    return f'<t:FolderId Id="{folder.id}"/>'


def create_folder(store, name: str, parent: str = '<t:DistinguishedFolderId Id="inbox"/>', kind: str = "Folder"):
    return call(store, f"<m:CreateFolder><m:ParentFolderId>{parent}</m:ParentFolderId><m:Folders><t:{kind}>"
                       f"<t:DisplayName>{name}</t:DisplayName></t:{kind}></m:Folders></m:CreateFolder>")


# ---- folders ----------------------------------------------------------------------------------------------------
def test_folder_create_rename_delete_show_in_hierarchy_sync():
    store = new_store()
    alice = store.mailbox(ALICE)
    top, inbox = alice.distinguished["msgfolderroot"], alice.distinguished["inbox"]
    since = sync.folder_changes(top, 0, 1000).state
    answer, root = create_folder(store, "Projects")
    assert answer.outcome == "success"
    new_id = root.find(f".//{T}Folder/{T}FolderId").get("Id")
    projects = alice.find(new_id)
    assert projects.name == "Projects" and projects.parent is inbox and projects.folder_class is None
    _, calendar_root = create_folder(store, "Holidays", kind="CalendarFolder")
    assert calendar_root.find(f".//{T}CalendarFolder/{T}FolderId") is not None
    assert codes(create_folder(store, "PROJECTS")[1]) == ["ErrorFolderExists"]
    changes = sync.folder_changes(top, since, 1000)
    assert [(c.kind, c.subject.name) for c in changes.changes] == [("Create", "Projects"), ("Create", "Holidays"),
                                                                   ("Update", "Inbox")]
    answer, root = call(store, f'<m:UpdateFolder><m:FolderChanges><t:FolderChange>{folder_ref(projects)}<t:Updates>'
                               '<t:SetFolderField><t:FieldURI FieldURI="folder:DisplayName"/><t:Folder><t:DisplayName>'
                               'Projects 2024</t:DisplayName></t:Folder></t:SetFolderField></t:Updates>'
                               '</t:FolderChange></m:FolderChanges></m:UpdateFolder>')
    assert answer.outcome == "success" and projects.name == "Projects 2024"
    renamed = sync.folder_changes(top, changes.state, 1000)
    assert [(c.kind, c.subject.name) for c in renamed.changes] == [("Update", "Projects 2024")]
    answer, _ = call(store, f'<m:DeleteFolder DeleteType="HardDelete"><m:FolderIds>{folder_ref(projects)}'
                            '</m:FolderIds></m:DeleteFolder>')
    assert answer.outcome == "success" and projects.key not in alice.folders and projects not in inbox.children
    deleted = sync.folder_changes(top, renamed.state, 1000)
    assert [(c.kind, getattr(c.subject, "key", None)) for c in deleted.changes] == [("Delete", projects.key),
                                                                                    ("Update", inbox.key)]
    # The EWS answer names the deleted folder by its old id.
    state = sync.encode_state(alice, sync.HIERARCHY, top, renamed.state)
    _, root = call(store, "<m:SyncFolderHierarchy><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape>"
                          f"<m:SyncState>{state}</m:SyncState></m:SyncFolderHierarchy>")
    assert root.find(f".//{M}Changes/{T}Delete/{T}FolderId").get("Id") == new_id
    # A folder made and deleted between two syncs never shows.
    temporary = alice.add_folder("Temporary", "IPF.Note", inbox)
    alice.remove_folder(temporary)
    assert "Delete" not in [c.kind for c in sync.folder_changes(top, deleted.state, 1000).changes]


def test_distinguished_folders_cannot_be_deleted_and_move_to_deleted_items_reparents():
    store = new_store()
    alice = store.mailbox(ALICE)
    _, root = call(store, '<m:DeleteFolder DeleteType="HardDelete"><m:FolderIds><t:DistinguishedFolderId Id="inbox"/>'
                          '</m:FolderIds></m:DeleteFolder>')
    assert codes(root) == ["ErrorDeleteDistinguishedFolder"]
    create_folder(store, "Old")
    old = next(f for f in alice.distinguished["inbox"].children if f.name == "Old")
    call(store, f'<m:DeleteFolder DeleteType="MoveToDeletedItems"><m:FolderIds>{folder_ref(old)}</m:FolderIds>'
                '</m:DeleteFolder>')
    assert old.parent is alice.distinguished["deleteditems"] and old.key in alice.folders
    call(store, f'<m:DeleteFolder DeleteType="MoveToDeletedItems"><m:FolderIds>{folder_ref(old)}</m:FolderIds>'
                '</m:DeleteFolder>')
    assert old.key not in alice.folders          # already in Deleted Items: removed
    _, root = call(store, '<m:UpdateFolder><m:FolderChanges><t:FolderChange><t:DistinguishedFolderId Id="inbox"/>'
                          '<t:Updates><t:SetFolderField><t:FieldURI FieldURI="folder:DisplayName"/><t:Folder>'
                          '<t:DisplayName>Post</t:DisplayName></t:Folder></t:SetFolderField></t:Updates>'
                          '</t:FolderChange></m:FolderChanges></m:UpdateFolder>')
    assert codes(root) == ["ErrorAccessDenied"] and alice.distinguished["inbox"].name == "Inbox"
    assert codes(create_folder(store, " ")[1]) == ["ErrorFolderSavePropertyError"]
    assert codes(create_folder(store, "Search", kind="SearchFolder")[1]) == ["ErrorInvalidFolderTypeForOperation"]


def test_empty_folder_keeps_or_deletes_subfolders():
    store = new_store()
    alice = store.mailbox(ALICE)
    inbox = alice.distinguished["inbox"]
    create_folder(store, "Child")
    child = inbox.children[-1]
    create_folder(store, "Grandchild", folder_ref(child))
    empty = '<m:EmptyFolder DeleteType="HardDelete" DeleteSubFolders="{}"><m:FolderIds><t:DistinguishedFolderId ' \
            'Id="inbox"/></m:FolderIds></m:EmptyFolder>'
    answer, _ = call(store, empty.format("false"))
    assert answer.outcome == "success" and not inbox.items and inbox.children == [child]
    answer, _ = call(store, empty.format("true"))
    assert answer.outcome == "success" and inbox.children == [] and child.key not in alice.folders
    assert len(alice.folder_tombstones) == 2     # the grandchild, then the child


# ---- CopyItem, SendItem, ConvertId --------------------------------------------------------------------------------
def test_copy_item_makes_a_new_item_and_send_item_delivers_a_draft():
    store = new_store()
    alice, bob = store.mailbox(ALICE), store.mailbox(BOB)
    lunch = next(i for i in alice.distinguished["inbox"].items.values() if i.subject.startswith("Lunch"))
    _, root = call(store, f'<m:CopyItem><m:ToFolderId><t:DistinguishedFolderId Id="junkemail"/></m:ToFolderId>'
                          f'<m:ItemIds><t:ItemId Id="{lunch.id}"/></m:ItemIds></m:CopyItem>')
    copy = alice.find(root.find(f".//{T}Message/{T}ItemId").get("Id"))
    assert copy.folder is alice.distinguished["junkemail"] and copy.subject == lunch.subject and copy is not lunch
    assert lunch.key in alice.distinguished["inbox"].items
    assert alice.events.events[-1].kind == "CopiedEvent"
    draft = store.save(alice, alice.distinguished["drafts"], subject="Draft", body="b", to=[bob.address])
    stale = ids.change_key(alice.guid, ids.CHANGE_MESSAGE, draft.change_number - 1)
    send = '<m:SendItem SaveItemToFolder="{}"><m:ItemIds><t:ItemId Id="{}" ChangeKey="{}"/></m:ItemIds></m:SendItem>'
    assert codes(call(store, send.format("true", draft.id, stale))[1]) == ["ErrorIrresolvableConflict"]
    answer, _ = call(store, send.format("true", draft.id, draft.change_key))
    assert answer.outcome == "success" and draft.key not in alice.distinguished["drafts"].items
    assert [i.subject for i in alice.distinguished["sentitems"].items.values()] == ["Draft"]
    assert "Draft" in [i.subject for i in bob.distinguished["inbox"].items.values()]
    second = store.save(alice, alice.distinguished["drafts"], subject="No copy", body="b", to=[bob.address])
    call(store, send.format("false", second.id, second.change_key))
    assert [i.subject for i in alice.distinguished["sentitems"].items.values()] == ["Draft"]
    nobody = store.save(alice, alice.distinguished["drafts"], subject="Nobody", body="b")
    assert codes(call(store, send.format("true", nobody.id, nobody.change_key))[1]) == ["ErrorInvalidRecipients"]


def convert(store, source_format: str, source_id: str, target: str, mailbox: str = ALICE):
    return call(store, f'<m:ConvertId DestinationFormat="{target}"><m:SourceIds><t:AlternateId '
                       f'Format="{source_format}" Id="{source_id}" Mailbox="{mailbox}"/></m:SourceIds></m:ConvertId>')


@pytest.mark.parametrize("target", ["EwsLegacyId", "EntryId", "HexEntryId", "OwaId", "StoreId", "EwsId"])
def test_convert_id_round_trips_through_the_entry_ids_the_rops_use(target):
    store = new_store()
    alice = store.mailbox(ALICE)
    inbox = alice.distinguished["inbox"]
    for thing, entry in ((inbox, ids.folder_entry_id(alice.guid, inbox.key)),
                         (next(iter(inbox.items.values())), None)):
        entry = entry or ids.item_entry_id(alice.guid, inbox.key, thing.key)
        answer, root = convert(store, "EwsId", thing.id, target)
        alternate = root.find(f".//{M}AlternateId")
        assert answer.outcome == "success" and alternate.get("Format") == target and alternate.get("Mailbox") == ALICE
        converted = alternate.get("Id")
        if target == "HexEntryId":
            assert converted == entry.hex().upper()
        elif target == "EntryId":
            assert base64.b64decode(converted) == entry
        elif target == "EwsId":
            assert converted == thing.id
        _, back = convert(store, target, converted, "EwsId")
        assert back.find(f".//{M}AlternateId").get("Id") == thing.id


def test_convert_id_refuses_what_does_not_decode():
    store = new_store()
    answer, root = convert(store, "EwsId", "DUMMY", "EwsId", "DUMMY")     # exchangelib's version probe
    assert answer.error_code == "ErrorInvalidIdMalformed" and codes(root) == ["ErrorInvalidIdMalformed"]
    assert convert(store, "HexEntryId", "00ZZ", "EwsId")[0].error_code == "ErrorInvalidIdMalformed"
    assert convert(store, "EwsId", "AAAA", "Bogus")[0].error_code == "ErrorSchemaValidation"


# ---- UpdateItem ---------------------------------------------------------------------------------------------------
def set_field(uri: str, value: str, kind: str = "Message", verb: str = "SetItemField") -> str:
    if verb == "DeleteItemField":
        return f'<t:DeleteItemField><t:FieldURI FieldURI="{uri}"/></t:DeleteItemField>'
    return f'<t:{verb}><t:FieldURI FieldURI="{uri}"/><t:{kind}>{value}</t:{kind}></t:{verb}>'


def update(store, item, *updates: str, resolution: str = "AutoResolve", change_key=None):
    key = item.change_key if change_key is None else change_key
    return call(store, f'<m:UpdateItem ConflictResolution="{resolution}" MessageDisposition="SaveOnly"><m:ItemChanges>'
                       f'<t:ItemChange><t:ItemId Id="{item.id}" ChangeKey="{key}"/><t:Updates>{"".join(updates)}'
                       '</t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>')


def test_update_item_sets_appends_and_deletes_fields():
    store = new_store()
    alice = store.mailbox(ALICE)
    item = next(iter(alice.distinguished["inbox"].items.values()))
    answer, root = update(store, item,
                          set_field("item:Body", '<t:Body BodyType="HTML">&lt;b&gt;new&lt;/b&gt;</t:Body>'),
                          set_field("item:Importance", "<t:Importance>High</t:Importance>"),
                          set_field("item:Sensitivity", "<t:Sensitivity>Private</t:Sensitivity>"),
                          set_field("item:Categories", "<t:Categories><t:String>Red</t:String></t:Categories>"),
                          set_field("item:Categories", "<t:Categories><t:String>Blue</t:String></t:Categories>",
                                    verb="AppendToItemField"),
                          set_field("message:ToRecipients", "<t:ToRecipients><t:Mailbox><t:EmailAddress>"
                                    "bob@contoso.test</t:EmailAddress></t:Mailbox></t:ToRecipients>"),
                          set_field("message:CcRecipients", "", verb="DeleteItemField"))
    assert answer.outcome == "success", answer.body
    assert (item.body, item.body_type, item.importance, item.sensitivity, item.categories) == (
        "<b>new</b>", "HTML", "High", "Private", ("Red", "Blue"))
    assert item.to == (("", "bob@contoso.test"),) and item.cc == ()
    assert root.find(f".//{T}ItemId").get("ChangeKey") == item.change_key
    _, got = call(store, '<m:GetItem><m:ItemShape><t:BaseShape>AllProperties</t:BaseShape></m:ItemShape><m:ItemIds>'
                         f'<t:ItemId Id="{item.id}"/></m:ItemIds></m:GetItem>')
    message = got.find(f".//{T}Message")
    assert [s.text for s in message.iterfind(f"{T}Categories/{T}String")] == ["Red", "Blue"]
    assert message.findtext(f"{T}Importance") == "High" and message.findtext(f"{T}Sensitivity") == "Private"
    names = [etree.QName(e).localname for e in message]
    assert names.index("Size") < names.index("Categories") < names.index("Importance")     # schema order
    assert codes(update(store, item, set_field("item:Subject", "<t:Subject>x</t:Subject>",
                                               verb="AppendToItemField"))[1]) == ["ErrorInvalidPropertyAppend"]
    assert codes(update(store, item, set_field("item:ReminderIsSet", "<t:ReminderIsSet>true</t:ReminderIsSet>"))[
        1]) == ["ErrorInvalidPropertySet"]
    assert update(store, item, set_field("item:Importance", "<t:Importance>Urgent</t:Importance>"))[0].status == 500


def test_update_item_moves_a_calendar_item_and_refuses_end_before_start():
    store = new_store()
    alice = store.mailbox(ALICE)
    dentist = next(i for i in alice.distinguished["calendar"].items.values() if i.subject == "Dentist")
    answer, _ = update(store, dentist, set_field("calendar:Start", "<t:Start>2024-03-06T13:00:00Z</t:Start>",
                                                 "CalendarItem"),
                       set_field("calendar:End", "<t:End>2024-03-06T14:30:00Z</t:End>", "CalendarItem"),
                       set_field("calendar:Location", "<t:Location>Main St 5</t:Location>", "CalendarItem"))
    assert answer.outcome == "success"
    assert (dentist.start.hour, dentist.end.minute, dentist.location) == (13, 30, "Main St 5")
    bad = update(store, dentist, set_field("calendar:End", "<t:End>2024-03-06T12:00:00Z</t:End>", "CalendarItem"))
    assert bad[0].error_code == "ErrorCalendarEndDateIsEarlierThanStartDate" and dentist.end.hour == 14
    series = next(i for i in alice.distinguished["calendar"].items.values() if i.subject == "Team sync")
    occurrence = series.occurrence(series.start)
    # An occurrence becomes an exception of its series (tests/test_ews_meetings.py has more).
    assert update(store, occurrence, set_field("calendar:Location", "<t:Location>x</t:Location>", "CalendarItem"))[
        0].outcome == "success"
    assert series.location != "x" and series.occurrence(series.start).location == "x"
    message = next(iter(alice.distinguished["inbox"].items.values()))
    assert update(store, message, set_field("calendar:Location", "<t:Location>x</t:Location>",
                                            "CalendarItem"))[0].error_code == "ErrorInvalidPropertySet"


def test_conflict_resolution_reads_the_change_key():
    store = new_store()
    alice = store.mailbox(ALICE)
    item = next(iter(alice.distinguished["inbox"].items.values()))
    seen = item.change_key
    update(store, item, set_field("item:Subject", "<t:Subject>theirs</t:Subject>"))
    subject = set_field("item:Subject", "<t:Subject>mine</t:Subject>")
    importance = set_field("item:Importance", "<t:Importance>Low</t:Importance>")
    assert update(store, item, subject, change_key=seen)[0].error_code == "ErrorIrresolvableConflict"
    assert update(store, item, importance, resolution="NeverOverwrite", change_key=seen)[0].error_code == \
        "ErrorIrresolvableConflict"
    assert item.subject == "theirs" and item.importance == "Normal"
    assert update(store, item, importance, change_key=seen)[0].outcome == "success"      # another field: merged
    assert update(store, item, subject, resolution="AlwaysOverwrite", change_key=seen)[0].outcome == "success"
    assert (item.subject, item.importance) == ("mine", "Low")
    assert update(store, item, subject, change_key="bm90IGEga2V5")[0].error_code == "ErrorInvalidChangeKey"


# ---- FindItem restrictions --------------------------------------------------------------------------------------
def find(store, restriction: str):
    answer, root = call(store, '<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>'
                               '<t:AdditionalProperties><t:FieldURI FieldURI="item:Subject"/></t:AdditionalProperties>'
                               f'</m:ItemShape><m:Restriction>{restriction}</m:Restriction><m:ParentFolderIds>'
                               '<t:DistinguishedFolderId Id="inbox"/></m:ParentFolderIds></m:FindItem>')
    if answer.outcome != "success":
        return answer.error_code
    total = root.find(f".//{M}RootFolder").get("TotalItemsInView")
    found = sorted(e.text for e in root.iter(f"{T}Subject"))
    assert int(total) == len(found)
    return found


def leaf(op: str, uri: str, value: str) -> str:
    return (f'<t:{op}><t:FieldURI FieldURI="{uri}"/><t:FieldURIOrConstant><t:Constant Value="{value}"/>'
            f'</t:FieldURIOrConstant></t:{op}>')


def contains(uri: str, value: str, mode: str = "Substring", comparison: str = "IgnoreCase") -> str:
    return (f'<t:Contains ContainmentMode="{mode}" ContainmentComparison="{comparison}"><t:FieldURI FieldURI="{uri}"/>'
            f'<t:Constant Value="{value}"/></t:Contains>')


WELCOME, PLANNING, LUNCH = "Welcome to Contoso", "Quarterly planning", "Lunch on Thursday?"


@pytest.mark.parametrize("restriction, expected", [
    (leaf("IsEqualTo", "message:IsRead", "false"), [LUNCH, PLANNING]),
    (leaf("IsNotEqualTo", "message:IsRead", "false"), [WELCOME]),
    (leaf("IsEqualTo", "item:Subject", "quarterly PLANNING"), [PLANNING]),
    (leaf("IsGreaterThan", "item:DateTimeReceived", "2024-03-04T10:00:00Z"), [LUNCH]),
    (leaf("IsGreaterThanOrEqualTo", "item:DateTimeReceived", "2024-03-04T10:00:00Z"), [LUNCH, PLANNING]),
    (leaf("IsLessThan", "item:DateTimeReceived", "2024-03-04T10:00:00Z"), [WELCOME]),
    (leaf("IsLessThanOrEqualTo", "item:DateTimeReceived", "2024-03-04T10:00:00Z"), [PLANNING, WELCOME]),
    (leaf("IsGreaterThan", "item:Importance", "Normal"), [PLANNING]),
    (leaf("IsEqualTo", "message:From", "DAVE@contoso.test"), [LUNCH]),
    (leaf("IsEqualTo", "item:Categories", "red"), [PLANNING]),
    (leaf("IsEqualTo", "item:HasAttachments", "false"), [LUNCH, PLANNING, WELCOME]),
    (contains("item:Subject", "plan"), [PLANNING]),
    (contains("item:Subject", "plan", comparison="Exact"), [PLANNING]),
    (contains("item:Subject", "Plan", comparison="Exact"), []),
    (contains("item:Subject", "quarterly", mode="Prefixed"), [PLANNING]),
    (contains("item:Subject", "planning", mode="Prefixed"), []),
    (contains("item:Subject", "thu", mode="PrefixOnWords"), [LUNCH]),
    (contains("item:Subject", "welcome to contoso", mode="FullString"), [WELCOME]),
    (contains("item:Body", "HELP DESK"), [WELCOME]),
    (contains("message:From", "carol"), [PLANNING]),
    ('<t:Exists><t:FieldURI FieldURI="item:Categories"/></t:Exists>', [PLANNING]),
    (f'<t:And>{leaf("IsEqualTo", "message:IsRead", "false")}{contains("item:Subject", "lunch")}</t:And>', [LUNCH]),
    (f'<t:Or>{contains("item:Subject", "lunch")}{contains("item:Subject", "welcome")}</t:Or>', [LUNCH, WELCOME]),
    (f'<t:Not>{leaf("IsEqualTo", "message:IsRead", "true")}</t:Not>', [LUNCH, PLANNING]),
    (leaf("IsEqualTo", "message:ToRecipients", "x"), "ErrorUnsupportedPathForQuery"),
    ('<t:Exists><t:ExtendedFieldURI PropertyTag="0x1000" PropertyType="String"/></t:Exists>',
     "ErrorUnsupportedPathForQuery"),
    (leaf("IsEqualTo", "item:DateTimeReceived", "yesterday"), "ErrorInvalidValueForProperty"),
])
def test_restrictions(restriction, expected):
    store = new_store()
    alice = store.mailbox(ALICE)
    planning = next(i for i in alice.distinguished["inbox"].items.values() if i.subject == PLANNING)
    store.update(planning, {"importance": "High", "categories": ("Red",)}, ["item:Importance", "item:Categories"])
    assert find(store, restriction) == expected


@needs_netns
def test_exchangelib_observes_folder_item_update_and_restriction_operations(tmp_path):
    out = run_in_netns(str(tmp_path), [([], [
        Check("ops", f'"$PY" {CLIENT} 127.0.0.1 53 {ALICE} P@ssw0rd-alice {BOB} P@ssw0rd-bob')])])
    output = out["ops"].output
    results = results_of(output)
    assert "error" not in results, output

    created = results["created"]
    assert sorted(created["changes"]) == [["create", "Archive"], ["create", "Projects"], ["update", "Inbox"]]
    assert created["children"] == ["Archive", "Projects"]
    assert created["duplicate"] == {"error": "ErrorFolderExists"}
    renamed = results["renamed-deleted"]
    assert ["update", "Projects 2024"] in renamed["changes"] and ["delete", renamed["archive_id"]] in renamed["changes"]
    assert renamed["inbox_delete"] == {"error": "ErrorDeleteDistinguishedFolder"}
    assert results["emptied"] == {"before": [2, 1], "kept": [0, 1], "after": [0, 0], "inbox": 3}
    assert results["trashed"]["trash_children"] == ["Projects 2024"]

    assert results["copied"] == {"junk": [LUNCH], "inbox": 3, "new_id": True}
    assert results["sent-draft"] == {"drafts_before": 1, "drafts_after": 0, "sent": ["Draft for Bob"],
                                     "delivered": ["Draft for Bob"]}
    converted = results["converted"]
    assert all(f["back"] for f in converted["formats"].values()), converted
    entry = ids.entry_of_ews_id(converted["ews_id"])
    assert converted["formats"]["HexEntryId"]["id"] == entry.hex().upper()
    guid, folder_key, item_key = ids.decode(converted["ews_id"])
    assert entry == ids.item_entry_id(guid, folder_key, item_key)

    assert results["updated"] == {"body": "Priorities due Monday.", "importance": "High", "sensitivity": "Private",
                                  "categories": ["Red", "Planning"]}
    assert results["recipients"] == {"to": ["bob@contoso.test", "dave@contoso.test"], "cc": ["erin@contoso.test"]}
    assert results["calendar"] == {"start": "2024-03-06T13:00:00+00:00", "end": "2024-03-06T14:30:00+00:00",
                                   "location": "Main St 5"}
    conflicts = results["conflicts"]
    assert conflicts["same_field"] == {"error": "ErrorIrresolvableConflict"}
    assert conflicts["other_field"] == {"value": None} and conflicts["read_after_auto"] is True
    assert conflicts["never"] == {"error": "ErrorIrresolvableConflict"} and conflicts["always"] == {"value": None}
    assert conflicts["subject"] == "Quarterly planning (v2)" and conflicts["importance"] == "Low"

    planning = "Quarterly planning (v2)"
    filtered = results["filtered"]
    assert filtered["contains"] == [planning] and filtered["icontains"] == [LUNCH]
    assert filtered["unread"] == [LUNCH]     # planning was read by the AutoResolve update above
    assert filtered["received_after"] == [LUNCH, planning] and filtered["received_until"] == [WELCOME]
    assert filtered["unread_and_after"] == [LUNCH]
    assert filtered["high"] == [] and filtered["red"] == [planning] and filtered["has_categories"] == [planning]
    assert filtered["from_dave"] == [LUNCH] and filtered["either"] == [WELCOME]
    assert filtered["not_read"] == [LUNCH] and filtered["attachments"] == []
    assert filtered["count"] == 2       # Contains is Exact by default: "Quarterly planning (v2)" has no "o"
    assert filtered["unsupported"] == {"error": "ErrorUnsupportedPathForQuery"}
    details = {e["detail"] for e in out["ops"].kind("ews")}
    assert {"EWS CreateFolder", "EWS UpdateFolder", "EWS DeleteFolder", "EWS EmptyFolder", "EWS CopyItem",
            "EWS SendItem", "EWS ConvertId", "EWS UpdateItem", "EWS FindItem"} <= details
