"""Attachments, contacts, tasks, ResolveNames and ExpandDL: the store and the EWS cores in-process on a fixed clock,
then exchangelib (unmodified, its own Autodiscover) attaching, reading, sending and resolving against `mockex
serve`."""
from __future__ import annotations

import base64
import json
import os
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from lxml import etree

from harness.mailbox import ids
from harness.mailbox.attachments import Attachment
from harness.mailbox.contacts import ContactItem
from harness.mailbox.tasks import TaskItem
from harness.org import load_org
from harness.protocols import ews
from harness.yamlfile import SpecError
from tests.support import REPO
from tests.support.ews import ALICE, BOB, NOW, ORG, envelope, new_store
from tests.support.netns import Check, needs_netns, run_in_netns

M, T = f"{{{ews.MESSAGES_NS}}}", f"{{{ews.TYPES_NS}}}"
ITEMS_CLIENT = os.path.join(REPO, "tests", "support", "exchangelib_ews_items.py")
CSV = b"quarter,revenue\nQ1,100\n"


def call(store, body: str, user: str = ALICE):
    answer = ews.respond_ews(ORG, store, user, envelope(body))
    return answer, etree.fromstring(answer.body)


def draft_with_file(store) -> str:
    """CreateItem SaveOnly of a message carrying report.csv; the answer's AttachmentId."""
    _, root = call(store, (
        '<m:CreateItem MessageDisposition="SaveOnly"><m:Items><t:Message><t:Subject>Figures</t:Subject>'
        '<t:Body BodyType="Text">See attached.</t:Body><t:Attachments><t:FileAttachment><t:Name>report.csv</t:Name>'
        f'<t:ContentType>text/csv</t:ContentType><t:Content>{base64.b64encode(CSV).decode()}</t:Content>'
        '</t:FileAttachment></t:Attachments></t:Message></m:Items></m:CreateItem>'))
    return root.find(f".//{T}Message/{T}Attachments/{T}FileAttachment/{T}AttachmentId").get("Id")


def get_attachment(store, attachment_id: str, user: str = ALICE):
    return call(store, f'<m:GetAttachment><m:AttachmentIds><t:AttachmentId Id="{attachment_id}"/></m:AttachmentIds>'
                       '</m:GetAttachment>', user)


def test_attachment_ids_extend_the_item_id_as_exchanges_do():
    alice = new_store().mailbox(ALICE)
    item = next(iter(alice.distinguished["inbox"].items.values()))
    attachment_id = ids.attachment_id(alice.guid, item.folder.key, item.key, 0x2A)
    raw, item_raw = base64.b64decode(attachment_id), base64.b64decode(item.id)
    assert raw.startswith(item_raw) and "AAABEgAQ" in attachment_id
    assert ids.decode_attachment(attachment_id) == (alice.guid, item.folder.key, item.key, 0x2A)
    assert ids.decode(attachment_id) is None and ids.decode_attachment(item.id) is None
    assert ids.decode_attachment("not an id") is None


def test_create_item_with_a_file_then_get_item_and_get_attachment():
    store = new_store()
    attachment_id = draft_with_file(store)
    draft = next(iter(store.mailbox(ALICE).distinguished["drafts"].items.values()))
    assert draft.has_attachments and draft.attachments[0].content == CSV
    _, root = call(store, '<m:GetItem><m:ItemShape><t:BaseShape>AllProperties</t:BaseShape></m:ItemShape>'
                          f'<m:ItemIds><t:ItemId Id="{draft.id}"/></m:ItemIds></m:GetItem>')
    message = root.find(f".//{T}Message")
    assert message.findtext(f"{T}HasAttachments") == "true"
    listed = message.find(f"{T}Attachments/{T}FileAttachment")
    assert listed.findtext(f"{T}Name") == "report.csv" and listed.find(f"{T}Content") is None
    assert listed.find(f"{T}AttachmentId").get("Id") == attachment_id
    # t:Attachments sits between Body and DateTimeReceived, as in ItemType
    names = [etree.QName(child).localname for child in message]
    assert names.index("Body") < names.index("Attachments") < names.index("DateTimeReceived")
    answer, root = get_attachment(store, attachment_id)
    assert answer.outcome == "success"
    got = root.find(f".//{M}Attachments/{T}FileAttachment")
    assert base64.b64decode(got.findtext(f"{T}Content")) == CSV and got.findtext(f"{T}ContentType") == "text/csv"
    assert got.findtext(f"{T}Size") == str(len(CSV))


def test_create_and_delete_attachment_change_the_item_and_unknown_ids_are_exchange_errors():
    store = new_store()
    attachment_id = draft_with_file(store)
    draft = next(iter(store.mailbox(ALICE).distinguished["drafts"].items.values()))
    before = draft.change_key
    answer, root = call(store, (
        f'<m:CreateAttachment><m:ParentItemId Id="{draft.id}"/><m:Attachments><t:FileAttachment><t:Name>b.txt'
        '</t:Name><t:Content>Ynl0ZXM=</t:Content></t:FileAttachment><t:ItemAttachment><t:Name>fwd</t:Name>'
        '<t:Message><t:Subject>inner</t:Subject><t:Body BodyType="Text">inner body</t:Body></t:Message>'
        '</t:ItemAttachment></m:Attachments></m:CreateAttachment>'))
    messages = root.findall(f".//{M}CreateAttachmentResponseMessage")
    assert answer.outcome == "success" and len(messages) == 2
    new_id = messages[1].find(f".//{T}AttachmentId")
    assert new_id.get("RootItemId") == draft.id and new_id.get("RootItemChangeKey") == draft.change_key != before
    _, root = get_attachment(store, new_id.get("Id"))
    assert root.findtext(f".//{T}ItemAttachment/{T}Message/{T}Subject") == "inner"
    assert b"Subject: inner" in draft.mime_content() and b'filename="b.txt"' in draft.mime_content()
    answer, root = call(store, f'<m:DeleteAttachment><m:AttachmentIds><t:AttachmentId Id="{attachment_id}"/>'
                               '</m:AttachmentIds></m:DeleteAttachment>')
    assert root.find(f".//{M}RootItemId").get("RootItemChangeKey") == draft.change_key
    assert [a.name for a in draft.attachments] == ["b.txt", "fwd"]
    answer, root = get_attachment(store, attachment_id)
    assert answer.error_code == "ErrorItemNotFound"
    assert root.findtext(f".//{M}MessageText") == "The specified object was not found in the store."
    assert get_attachment(store, "garbage")[0].error_code == "ErrorInvalidIdMalformed"
    assert get_attachment(store, new_id.get("Id"), user=BOB)[0].error_code == "ErrorAccessDenied"
    answer, _ = call(store, f'<m:CreateAttachment><m:ParentItemId Id="{draft.id}"/><m:Attachments><t:FileAttachment>'
                            '<t:Name>bad</t:Name><t:Content>not base64!</t:Content></t:FileAttachment>'
                            '</m:Attachments></m:CreateAttachment>')
    assert (answer.status, answer.error_code) == (500, "ErrorSchemaValidation") and len(draft.attachments) == 2


def test_client_mime_attachments_are_kept_and_delivered_with_the_mail():
    store = new_store()
    mime = EmailMessage()
    mime["Subject"], mime["To"] = "MIME with a file", BOB
    mime.set_content("body")
    mime.add_attachment(CSV, maintype="text", subtype="csv", filename="q.csv")
    answer, _ = call(store, (
        '<m:CreateItem MessageDisposition="SendAndSaveCopy"><m:Items><t:Message><t:MimeContent CharacterSet="UTF-8">'
        f'{base64.b64encode(mime.as_bytes()).decode()}</t:MimeContent></t:Message></m:Items></m:CreateItem>'))
    assert answer.outcome == "success"
    received = [i for i in store.mailbox(BOB).distinguished["inbox"].items.values() if i.subject == "MIME with a file"]
    assert [(a.name, a.content) for a in received[0].attachments] == [("q.csv", CSV)]
    sent = next(iter(store.mailbox(ALICE).distinguished["sentitems"].items.values()))
    # each mailbox numbers its own attachments: bob's copy has an id of his mailbox
    assert ids.decode_attachment(received[0].attachments[0].id_in(received[0]))[0] == store.mailbox(BOB).guid
    assert sent.has_attachments and sent.mime_content() == mime.as_bytes()


def test_rendered_mime_and_inline_parts():
    store = new_store()
    alice = store.mailbox(ALICE)
    logo = Attachment(key=0, name="logo.png", last_modified=NOW, content_type="image/png", content=b"\x89PNG",
                      content_id="logo@contoso", is_inline=True)
    item = store.save(alice, alice.distinguished["drafts"], subject="inline only", body="<img src='cid:logo'>",
                      body_type="HTML", attachments=[logo])
    assert not item.has_attachments          # an inline image alone is no attachment for HasAttachments
    parsed = message_from_bytes(item.mime_content(), policy=policy.default)
    part = next(p for p in parsed.walk() if p.get_content_type() == "image/png")
    assert part["Content-ID"] == "<logo@contoso>" and part.get_content_disposition() == "inline"


def test_seeded_contacts_and_tasks_and_their_xml():
    store = new_store()
    alice = store.mailbox(ALICE)
    contacts = [i for i in alice.distinguished["contacts"].items.values() if isinstance(i, ContactItem)]
    assert [c.display_name for c in contacts] == ["Bob Builder", "Carol Jones", "Dave Moved", "Pat Partner"]
    assert contacts[0].subject == "Builder, Bob" and contacts[3].phones == (("BusinessPhone", "+1 555 0199"),)
    tasks = [i for i in alice.distinguished["tasks"].items.values() if isinstance(i, TaskItem)]
    assert [(k.subject, k.status, k.percent_complete) for k in tasks] == [
        ("Submit expense report", "NotStarted", 0.0), ("Review storage design", "InProgress", 50.0)]
    assert not store.mailbox(BOB).distinguished["contacts"].items
    _, root = call(store, '<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>AllProperties</t:BaseShape>'
                          '</m:ItemShape><m:ParentFolderIds><t:DistinguishedFolderId Id="contacts"/>'
                          '</m:ParentFolderIds></m:FindItem>')
    pat = [c for c in root.iter(f"{T}Contact") if c.findtext(f"{T}DisplayName") == "Pat Partner"][0]
    assert pat.find(f"{T}EmailAddresses/{T}Entry").get("Key") == "EmailAddress1"
    assert pat.findtext(f"{T}JobTitle") == "Account Manager" and pat.find(f"{T}ToRecipients") is None
    names = [etree.QName(child).localname for child in pat]
    assert names.index("FileAs") < names.index("CompanyName") < names.index("PhoneNumbers") < names.index("Surname")


def test_create_and_update_contacts_and_tasks():
    store = new_store()
    answer, root = call(store, (
        '<m:CreateItem><m:SavedItemFolderId><t:DistinguishedFolderId Id="contacts"/></m:SavedItemFolderId>'
        '<m:Items><t:Contact><t:GivenName>Gina</t:GivenName><t:EmailAddresses><t:Entry Key="EmailAddress1">'
        'gina@tailspin.test</t:Entry></t:EmailAddresses><t:Surname>Guest</t:Surname></t:Contact></m:Items>'
        '</m:CreateItem>'))
    contact_id = root.find(f".//{T}Contact/{T}ItemId")
    contact = store.mailbox(ALICE).find(contact_id.get("Id"))
    assert isinstance(contact, ContactItem) and contact.display_name == "Gina Guest"
    answer, root = call(store, (
        f'<m:UpdateItem ConflictResolution="AutoResolve"><m:ItemChanges><t:ItemChange><t:ItemId Id="{contact.id}"/>'
        '<t:Updates><t:SetItemField><t:FieldURI FieldURI="contacts:JobTitle"/><t:Contact><t:JobTitle>Buyer'
        '</t:JobTitle></t:Contact></t:SetItemField><t:SetItemField><t:IndexedFieldURI FieldURI="contacts:PhoneNumber"'
        ' FieldIndex="MobilePhone"/><t:Contact><t:PhoneNumbers><t:Entry Key="MobilePhone">+1 555 0142</t:Entry>'
        '</t:PhoneNumbers></t:Contact></t:SetItemField><t:DeleteItemField><t:IndexedFieldURI '
        'FieldURI="contacts:EmailAddress" FieldIndex="EmailAddress1"/></t:DeleteItemField><t:SetItemField>'
        '<t:FieldURI FieldURI="item:Categories"/><t:Contact><t:Categories><t:String>x</t:String></t:Categories>'
        '</t:Contact></t:SetItemField></t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>'))
    assert answer.outcome == "success", answer.body
    assert (contact.job_title, contact.phones, contact.emails) == ("Buyer", (("MobilePhone", "+1 555 0142"),), ())
    answer, root = call(store, (
        '<m:CreateItem><m:Items><t:Task><t:Subject>Book travel</t:Subject><t:DueDate>2024-03-15T00:00:00Z'
        '</t:DueDate><t:PercentComplete>25</t:PercentComplete></t:Task></m:Items></m:CreateItem>'))
    task = store.mailbox(ALICE).find(root.find(f".//{T}Task/{T}ItemId").get("Id"))
    assert isinstance(task, TaskItem) and task.status == "InProgress" and task.folder.name == "Tasks"
    call(store, f'<m:UpdateItem ConflictResolution="AutoResolve"><m:ItemChanges><t:ItemChange><t:ItemId '
                f'Id="{task.id}"/><t:Updates><t:SetItemField><t:FieldURI FieldURI="task:Status"/><t:Task><t:Status>'
                'Completed</t:Status></t:Task></t:SetItemField></t:Updates></t:ItemChange></m:ItemChanges>'
                '</m:UpdateItem>')
    assert (task.status, task.percent_complete, task.complete_date) == ("Completed", 100.0, NOW)
    answer, root = call(store, '<m:CreateItem><m:Items><t:Task><t:Subject>x</t:Subject><t:PercentComplete>120'
                               '</t:PercentComplete></t:Task></m:Items></m:CreateItem>')
    assert answer.error_code == "ErrorInvalidPercentCompleteValue"
    answer, _ = call(store, '<m:CreateItem><m:Items><t:Task><t:Subject>x</t:Subject><t:Status>Done</t:Status>'
                            '</t:Task></m:Items></m:CreateItem>')
    assert (answer.status, answer.error_code) == (500, "ErrorSchemaValidation")
    assert [t.subject for t in store.mailbox(ALICE).distinguished["tasks"].items.values()][-1] == "Book travel"


def resolve(store, entry: str, scope: str = "ActiveDirectoryContacts"):
    return call(store, f'<m:ResolveNames ReturnFullContactData="true" SearchScope="{scope}"><m:UnresolvedEntry>'
                       f'{entry}</m:UnresolvedEntry></m:ResolveNames>')


def test_resolve_names_finds_the_directory_and_contacts_and_says_how_sure_it_is():
    store = new_store()
    _, root = resolve(store, "ali")
    message = root.find(f".//{M}ResolveNamesResponseMessage")
    assert message.get("ResponseClass") == "Success"
    assert [r.findtext(f"{T}Mailbox/{T}EmailAddress") for r in root.iter(f"{T}Resolution")] == [ALICE]
    contact = root.find(f".//{T}Resolution/{T}Contact")
    assert contact.findtext(f"{T}JobTitle") == "Engineer" and contact.findtext(f"{T}ContactSource") == "ActiveDirectory"
    answer, root = resolve(store, "legacy")
    message = root.find(f".//{M}ResolveNamesResponseMessage")
    assert message.get("ResponseClass") == "Warning" and answer.error_code == "ErrorNameResolutionMultipleResults"
    assert message.findtext(f"{M}MessageText") == "Multiple results were found."
    assert [r.findtext(f"{T}Mailbox/{T}Name") for r in root.iter(f"{T}Resolution")] == ["Erin Legacy", "Frank Legacy"]
    _, root = resolve(store, "pat")
    assert root.findtext(f".//{T}Mailbox/{T}MailboxType") == "Contact"
    assert root.find(f".//{T}Mailbox/{T}ItemId") is not None
    assert resolve(store, "pat", scope="ActiveDirectory")[0].error_code == "ErrorNameResolutionNoResults"
    # bob is both a directory entry and one of alice's contacts: given once, as the directory entry
    _, root = resolve(store, "bob")
    assert [r.findtext(f"{T}Mailbox/{T}MailboxType") for r in root.iter(f"{T}Resolution")] == ["Mailbox"]
    assert root.findtext(f".//{T}Mailbox/{T}MailboxType") == "Mailbox"
    assert resolve(store, "SMTP:sales@contoso.test")[1].findtext(f".//{T}MailboxType") == "PublicDL"
    answer, root = resolve(store, "nobody")
    assert answer.error_code == "ErrorNameResolutionNoResults"
    assert root.findtext(f".//{M}MessageText") == "No results were found."


def test_expand_dl_lists_the_group_and_unknown_groups_are_no_results():
    store = new_store()
    _, root = call(store, '<m:ExpandDL><m:Mailbox><t:EmailAddress>Sales</t:EmailAddress></m:Mailbox></m:ExpandDL>')
    expansion = root.find(f".//{M}DLExpansion")
    assert expansion.get("TotalItemsInView") == "2" and expansion.get("IncludesLastItemInRange") == "true"
    assert [e.text for e in expansion.iter(f"{T}EmailAddress")] == [ALICE, BOB]
    answer, _ = call(store, '<m:ExpandDL><m:Mailbox><t:EmailAddress>alice@contoso.test</t:EmailAddress></m:Mailbox>'
                            '</m:ExpandDL>')
    assert answer.error_code == "ErrorNameResolutionNoResults"


def test_distribution_groups_load_apart_from_mailboxes(tmp_path):
    org = load_org()
    assert [(g.email, g.members) for g in org.groups] == [("sales@contoso.test", (ALICE, BOB))]
    assert org.find("sales@contoso.test") is None and len(org.mailboxes) == 8
    text = open(os.path.join(REPO, "fixtures", "contoso.test", "org.yaml"), encoding="utf-8").read()
    (tmp_path / "org.yaml").write_text(text.replace("members: [alice@contoso.test", "members: [alicia@contoso.test"),
                                       encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_org(str(tmp_path))
    assert "'alicia@contoso.test' is not a mailbox of the org" in str(info.value)


@needs_netns
def test_exchangelib_attaches_reads_sends_keeps_contacts_and_tasks_and_resolves(tmp_path):
    out = run_in_netns(str(tmp_path), [([], [
        Check("items", f'"$PY" {ITEMS_CLIENT} 127.0.0.1 53 {ALICE} P@ssw0rd-alice {BOB} P@ssw0rd-bob')])])
    results = {}
    for line in out["items"].output.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result.pop("check")] = result
    assert "error" not in results, results.get("error") or out["items"].output
    assert results["saved"] == {"attachment_ids": [True]}
    assert results["read"] == {"has_attachments": True, "names": ["report.csv"], "content": "quarter,revenue\n"
                               "Q1,100\nQ2,120\n", "size": 30, "content_type": "text/csv", "id_prefix": "AAMkA"}
    assert results["mime"]["has_name"] and results["mime"]["has_part"]
    assert results["attached"] == {"names": ["Original request", "notes.txt", "report.csv"],
                                   "inner": ["Original request"]}
    assert results["detached"] == {"names": ["Original request", "report.csv"]}
    assert results["delivered"] == {"has_attachments": True, "names": ["figures.csv"],
                                    "content": "quarter,revenue\nQ1,100\nQ2,120\n"}
    assert results["contacts"]["listed"][0] == ["Bob Builder", [BOB]] and len(results["contacts"]["listed"]) == 4
    assert results["contact"] == {"name": "Gina Guest", "given": "Gina", "surname": "Guest", "company": "Tailspin",
                                  "title": "Head Buyer", "emails": ["gina@tailspin.test"],
                                  "phones": [["MobilePhone", "+1 555 0142"]], "count": 5}
    assert results["contact_deleted"] == {"count": 4}
    task = results["task"]
    assert (task["status"], task["percent"], task["due"], task["start"], task["complete"]) == (
        "Completed", "100", "2024-03-15", "2024-03-11", True)
    assert ["Review storage design", "InProgress", "50"] in task["listed"]
    assert results["resolve"] == {"count": 1, "email": ALICE, "type": "Mailbox", "title": "Engineer",
                                  "department": "Research"}
    assert results["ambiguous"] == {"emails": ["erin@contoso.test", "frank@contoso.test"]}
    assert results["contact_match"] == {"emails": ["pat.partner@fabrikam.test"], "types": ["Contact"]}
    assert results["none"] == {"results": ["ErrorNameResolutionNoResults"], "is_no_results": [True]}
    assert results["expand"] == {"members": [ALICE, BOB]}
    details = {e["detail"] for e in out["items"].kind("ews")}
    assert {"EWS CreateAttachment", "EWS GetAttachment", "EWS DeleteAttachment", "EWS ResolveNames",
            "EWS ExpandDL"} <= details
