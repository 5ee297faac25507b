"""exchangelib, unmodified, through its own Autodiscover: folder operations, copy/send/convert, updates and
restrictions against the mock's EWS, one JSON line per check.

Usage: exchangelib_ews_ops.py DNS_HOST DNS_PORT EMAIL PASSWORD COLLEAGUE COLLEAGUE_PASSWORD
Certificate trust comes from REQUESTS_CA_BUNDLE (requests' documented variable).
"""
import json
import sys

from exchangelib import EWSDateTime, EWSTimeZone, Folder, FolderCollection, Message, Q
from exchangelib.autodiscover import Autodiscovery
from exchangelib.properties import AlternateId

from tests.support.exchangelib_ews import connect

UTC = EWSTimeZone("UTC")


def emit(check: str, **result) -> None:
    print(json.dumps({"check": check, **result}, default=str), flush=True)


def outcome(action):
    """What an action gave, or the name of what exchangelib raised."""
    try:
        return {"value": action()}
    except Exception as exc:  # the client's own verdict, whatever it is
        return {"error": type(exc).__name__}


def folders(account) -> None:
    hierarchy = account.root
    list(hierarchy.sync_hierarchy())
    state = hierarchy.folder_sync_state
    projects = Folder(parent=account.inbox, name="Projects")
    projects.save()
    archive = Folder(parent=account.inbox, name="Archive")
    archive.save()
    changes = [(kind, getattr(f, "name", None)) for kind, f in hierarchy.sync_hierarchy(sync_state=state)]
    state = hierarchy.folder_sync_state
    emit("created", changes=changes, children=sorted(f.name for f in account.inbox.children),
         duplicate=outcome(lambda: Folder(parent=account.inbox, name="projects").save() and None))
    projects.name = "Projects 2024"
    projects.save()
    archive_id = archive.id
    archive.delete()
    changes = [(kind, getattr(f, "name", None) or getattr(f, "id", None)) for kind, f in
               hierarchy.sync_hierarchy(sync_state=state)]
    emit("renamed-deleted", changes=changes, archive_id=archive_id,
         inbox_delete=outcome(lambda: account.inbox.delete()))
    for message in account.inbox.all()[:2]:
        message.copy(to_folder=projects)
    sub = Folder(parent=projects, name="Sub")
    sub.save()
    projects.refresh()
    before = (projects.total_count, projects.child_folder_count)
    projects.empty()
    projects.refresh()
    kept = (projects.total_count, projects.child_folder_count)
    projects.empty(delete_sub_folders=True)
    projects.refresh()
    emit("emptied", before=before, kept=kept, after=(projects.total_count, projects.child_folder_count),
         inbox=account.inbox.all().count())
    projects.delete(delete_type="MoveToDeletedItems")
    emit("trashed", trash_children=[f.name for f in FolderCollection(account=account,
                                                                     folders=[account.trash]).find_folders()])


def items(account, colleague_account) -> None:
    lunch = account.inbox.get(subject="Lunch on Thursday?")
    copy_id = lunch.copy(to_folder=account.junk)
    emit("copied", junk=[m.subject for m in account.junk.all()], inbox=account.inbox.all().count(),
         new_id=copy_id[0] != lunch.id)
    draft = Message(account=account, folder=account.drafts, subject="Draft for Bob", body="Saved first.",
                    to_recipients=[colleague_account.primary_smtp_address])
    draft.save()
    drafts_before = account.drafts.all().count()
    draft.send()
    emit("sent-draft", drafts_before=drafts_before, drafts_after=account.drafts.all().count(),
         sent=[m.subject for m in account.sent.all()],
         delivered=[m.subject for m in colleague_account.inbox.filter(subject="Draft for Bob")])
    converted = {}
    for target in ("EwsLegacyId", "EntryId", "HexEntryId", "OwaId", "StoreId"):
        alternate = list(account.protocol.convert_ids(
            [AlternateId(id=lunch.id, format="EwsId", mailbox=account.primary_smtp_address)], target))[0]
        back = list(account.protocol.convert_ids(
            [AlternateId(id=alternate.id, format=target, mailbox=account.primary_smtp_address)], "EwsId"))[0]
        converted[target] = {"id": alternate.id, "back": back.id == lunch.id}
    emit("converted", ews_id=lunch.id, formats=converted)


def updates(account) -> None:
    planning = account.inbox.get(subject="Quarterly planning")
    planning.body = "Priorities due Monday."
    planning.importance = "High"
    planning.sensitivity = "Private"
    planning.categories = ["Red", "Planning"]
    planning.save(update_fields=["body", "importance", "sensitivity", "categories"])
    again = account.inbox.get(id=planning.id)
    emit("updated", body=again.body, importance=again.importance, sensitivity=again.sensitivity,
         categories=again.categories)
    draft = Message(account=account, folder=account.drafts, subject="Recipients", body="x",
                    to_recipients=["carol@contoso.test"])
    draft.save()
    draft.to_recipients = ["bob@contoso.test", "dave@contoso.test"]
    draft.cc_recipients = ["erin@contoso.test"]
    draft.save(update_fields=["to_recipients", "cc_recipients"])
    again = account.drafts.get(id=draft.id)
    emit("recipients", to=[r.email_address for r in again.to_recipients],
         cc=[r.email_address for r in again.cc_recipients or []])
    dentist = account.calendar.get(subject="Dentist")
    dentist.start = EWSDateTime(2024, 3, 6, 13, 0, tzinfo=UTC)
    dentist.end = EWSDateTime(2024, 3, 6, 14, 30, tzinfo=UTC)
    dentist.location = "Main St 5"
    dentist.save(update_fields=["start", "end", "location"])
    again = account.calendar.get(id=dentist.id)
    emit("calendar", start=again.start.isoformat(), end=again.end.isoformat(), location=again.location)
    first, second = account.inbox.get(id=planning.id), account.inbox.get(id=planning.id)
    first.subject = "Quarterly planning (v2)"
    first.save(update_fields=["subject"])
    second.subject = "Quarterly planning (mine)"
    same_field = outcome(lambda: second.save(update_fields=["subject"]) and None)
    second.is_read = True
    other_field = outcome(lambda: second.save(update_fields=["is_read"]) and None)
    third = account.inbox.get(id=planning.id)
    first.importance = "Low"
    never = outcome(lambda: first.save(update_fields=["importance"], conflict_resolution="NeverOverwrite") and None)
    always = outcome(lambda: first.save(update_fields=["importance"], conflict_resolution="AlwaysOverwrite")
                     and None)
    final = account.inbox.get(id=planning.id)
    emit("conflicts", same_field=same_field, other_field=other_field, never=never, always=always,
         subject=final.subject, importance=final.importance, read_after_auto=third.is_read)


def filters(account) -> None:
    inbox = account.inbox
    since = EWSDateTime(2024, 3, 4, 9, 30, tzinfo=UTC)

    def subjects(query):
        return sorted(m.subject for m in query)
    emit("filtered",
         contains=subjects(inbox.filter(subject__contains="planning")),
         icontains=subjects(inbox.filter(subject__icontains="LUNCH")),
         unread=subjects(inbox.filter(is_read=False)),
         received_after=subjects(inbox.filter(datetime_received__gt=since)),
         received_until=subjects(inbox.filter(datetime_received__lte=since)),
         unread_and_after=subjects(inbox.filter(is_read=False, datetime_received__gt=since)),
         high=subjects(inbox.filter(importance="High")),
         red=subjects(inbox.filter(categories__contains=["Red"])),
         has_categories=subjects(inbox.filter(categories__exists=True)),
         from_dave=subjects(inbox.filter(author="dave@contoso.test")),
         either=subjects(inbox.filter(Q(subject__startswith="Welcome") | Q(importance="High"))),
         not_read=subjects(inbox.filter(~Q(is_read=True))),
         attachments=subjects(inbox.filter(has_attachments=True)),
         count=inbox.filter(subject__contains="o").count(),
         unsupported=outcome(lambda: subjects(inbox.filter(reminder_is_set=True))))


def main() -> None:
    dns_host, dns_port, email, password, colleague, colleague_password = sys.argv[1:7]
    Autodiscovery.DNS_RESOLVER_KWARGS = {"configure": False}
    Autodiscovery.DNS_RESOLVER_ATTRS = {"nameservers": [dns_host], "port": int(dns_port), "timeout": 3}
    try:
        account = connect(email, password)
        folders(account)
        items(account, connect(colleague, colleague_password))
        updates(account)
        filters(account)
    except Exception as exc:  # report the client's own verdict, whatever it is
        import traceback
        traceback.print_exc()
        emit("error", error=f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
