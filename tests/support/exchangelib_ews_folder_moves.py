"""exchangelib, unmodified, through its own Autodiscover: MoveFolder and CopyFolder seen by a hierarchy sync, folder
notification events on a pull subscription, and an updated draft sent by UpdateItem. One JSON line per check.

Usage: exchangelib_ews_folder_moves.py DNS_HOST DNS_PORT EMAIL PASSWORD COLLEAGUE COLLEAGUE_PASSWORD
exchangelib has a MoveFolder service (``folder.move``) but no CopyFolder one: CopyFolder here is exchangelib's own
MoveFolder request under the other operation name (the two requests and answers have the same shape).
Certificate trust comes from REQUESTS_CA_BUNDLE (requests' documented variable).
"""
import json
import sys

from exchangelib import Folder, FolderCollection, Message
from exchangelib.autodiscover import Autodiscovery
from exchangelib.services import MoveFolder, SubscribeToPull

from tests.support.exchangelib_ews import connect

FOLDER_EVENTS = ["CreatedEvent", "ModifiedEvent", "MovedEvent", "CopiedEvent", "DeletedEvent"]


class CopyFolder(MoveFolder):
    SERVICE_NAME = "CopyFolder"


def emit(check: str, **result) -> None:
    print(json.dumps({"check": check, **result}, default=str), flush=True)


def outcome(action):
    """What an action gave, or the name of what exchangelib raised."""
    try:
        return {"value": action()}
    except Exception as exc:  # the client's own verdict, whatever it is
        return {"error": type(exc).__name__}


def names_below(account, folder) -> list:
    return sorted(f.name for f in FolderCollection(account=account, folders=[folder]).find_folders())


def folder_events(notifications, names: dict) -> list:
    """[event, folder, parent folder, old folder, old parent] of each folder event, folders by `names` of their ids
    (an id not in `names` as it is)."""
    def name_of(value):
        ews_id = getattr(value, "id", None)
        return names.get(ews_id, ews_id)
    return [[type(e).__name__, name_of(e.folder_id), name_of(e.parent_folder_id),
             name_of(getattr(e, "old_folder_id", None)), name_of(getattr(e, "old_parent_folder_id", None))]
            for n in notifications for e in n.events if getattr(e, "folder_id", None) is not None]


def moves(account) -> None:
    hierarchy = account.root
    list(hierarchy.sync_hierarchy())
    state = hierarchy.folder_sync_state
    # folders=None: exchangelib's SubscribeToAllFolders
    pull_id, watermark = SubscribeToPull(account=account).get(folders=None, event_types=FOLDER_EVENTS, watermark=None,
                                                             timeout=5)
    projects = Folder(parent=account.inbox, name="Projects")
    projects.save()
    sub = Folder(parent=projects, name="Sub")
    sub.save()
    lunch = account.inbox.get(subject="Lunch on Thursday?")
    lunch.copy(to_folder=projects)
    list(hierarchy.sync_hierarchy(sync_state=state))
    state = hierarchy.folder_sync_state
    projects.move(account.junk)
    moved = [(kind, getattr(f, "name", None), getattr(getattr(f, "parent_folder_id", None), "id", None))
             for kind, f in hierarchy.sync_hierarchy(sync_state=state)]
    state = hierarchy.folder_sync_state
    emit("moved", changes=moved, junk_id=account.junk.id, projects_id=projects.id,
         junk_children=names_below(account, account.junk), inbox_children=names_below(account, account.inbox),
         inbox_move=outcome(lambda: account.inbox.move(account.junk)))
    copy_id = CopyFolder(account=account).get(folders=[projects], to_folder=account.trash)
    copied = [(kind, getattr(f, "name", None)) for kind, f in hierarchy.sync_hierarchy(sync_state=state)]
    account.root.clear_cache()    # exchangelib's folder cache has not seen the copy yet
    copy = account.root.get_folder(copy_id)
    copy_sub = list(copy.children)
    emit("copied", changes=copied, new_id=copy_id.id != projects.id,
         trash_children=names_below(account, account.trash), copy_children=[f.name for f in copy_sub],
         copy_items=[m.subject for m in copy.all()], original_items=[m.subject for m in projects.all()],
         item_ids_differ=[m.id for m in copy.all()] != [m.id for m in projects.all()])
    names = {account.inbox.id: "Inbox", account.junk.id: "Junk", account.trash.id: "Trash", projects.id: "Projects",
             sub.id: "Sub", copy.id: "Copy", copy_sub[0].id: "Copy/Sub"}
    projects.name = "Projects 2024"
    projects.save()
    sub.delete()
    pulled = list(account.root.get_events(pull_id, watermark))
    account.root.unsubscribe(pull_id)
    emit("folder-events", events=folder_events(pulled, names))


def updated_send(account, colleague_account) -> None:
    draft = Message(account=account, folder=account.drafts, subject="First draft", body="Saved first.",
                    to_recipients=[colleague_account.primary_smtp_address])
    draft.save()
    draft.subject = "Final words"
    draft.send_and_save(update_fields=["subject"])
    emit("update-sent", drafts=[m.subject for m in account.drafts.all()], sent=[m.subject for m in account.sent.all()],
         delivered=[m.subject for m in colleague_account.inbox.filter(subject__startswith="F")])


def main() -> None:
    dns_host, dns_port, email, password, colleague, colleague_password = sys.argv[1:7]
    Autodiscovery.DNS_RESOLVER_KWARGS = {"configure": False}
    Autodiscovery.DNS_RESOLVER_ATTRS = {"nameservers": [dns_host], "port": int(dns_port), "timeout": 3}
    try:
        account = connect(email, password)
        moves(account)
        updated_send(account, connect(colleague, colleague_password))
    except Exception as exc:  # report the client's own verdict, whatever it is
        import traceback
        traceback.print_exc()
        emit("error", error=f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
