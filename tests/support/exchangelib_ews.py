"""exchangelib, unmodified, through its own Autodiscover against the mock's EWS: one JSON line per check.

Usage: exchangelib_ews.py DNS_HOST DNS_PORT EMAIL PASSWORD SCRIPT [ARGS...]
SCRIPT "browse" COLLEAGUE: the folder tree, the newest Inbox messages, GetItem with MIME, send to COLLEAGUE, mark
read, move, delete. SCRIPT "page" [PAGE_SIZE]: page through the whole Inbox (200 at a time unless told) and report
the newest message.
SCRIPT "sync" COLLEAGUE COLLEAGUE_PASSWORD: sync_items (10 changes a call) and sync_hierarchy; the colleague sends a
message; a new Account resumes both from the saved states; a made-up state is refused.
SCRIPT "throttled" POLICY [MAX_WAIT]: list the Inbox with FailFast or FaultTolerance(max_wait) and report what
exchangelib raised (and its back-off) or what it listed.
Certificate trust comes from REQUESTS_CA_BUNDLE (requests' documented variable).
"""
import json
import sys

from exchangelib import Account, Configuration, Credentials, FailFast, FaultTolerance, Message
from exchangelib.autodiscover import Autodiscovery


def emit(check: str, **result) -> None:
    print(json.dumps({"check": check, **result}, default=str), flush=True)


def browse(account: Account, colleague: str) -> None:
    emit("tree", text=account.root.tree())
    newest = list(account.inbox.all().order_by("-datetime_received")[:10])
    emit("newest", subjects=[m.subject for m in newest], senders=[m.sender.email_address for m in newest],
         is_read=[m.is_read for m in newest])
    first = newest[0]
    with_mime = account.inbox.get(id=first.id, changekey=first.changekey)
    emit("mime", subject=with_mime.subject, mime=with_mime.mime_content.decode("utf-8", "replace"))
    Message(account=account, subject="hi from alice", body="See you at 10.",
            to_recipients=[colleague]).send_and_save()
    sent = list(account.sent.all().order_by("-datetime_received")[:1])
    emit("sent", subjects=[m.subject for m in sent])
    unread = [m for m in account.inbox.all() if not m.is_read][0]
    unread.is_read = True
    unread.save(update_fields=["is_read"])
    account.inbox.refresh()
    emit("read", subject=unread.subject, now=account.inbox.get(id=unread.id).is_read,
         unread_count=account.inbox.unread_count)
    moved = unread.move(account.junk)
    emit("moved", junk=[m.subject for m in account.junk.all()], inbox=[m.subject for m in account.inbox.all()],
         moved_id=unread.id)
    target = account.junk.all()[0]
    target.move_to_trash()
    emit("trashed", junk=account.junk.all().count(), trash=[m.subject for m in account.trash.all()])
    account.trash.all()[0].delete()
    emit("deleted", trash=account.trash.all().count())
    del moved


def page(account: Account, page_size: int = 200) -> None:
    account.inbox.refresh()
    subjects, query = [], account.inbox.all().order_by("-datetime_received").only("subject", "datetime_received")
    query.page_size = page_size
    for message in query:
        subjects.append(message.subject)
    emit("page", count=len(subjects), total=account.inbox.total_count, first=subjects[:2],
         distinct=len(set(subjects)), last=subjects[-1:])


def connect(email: str, password: str, policy=None) -> Account:
    credentials = Credentials(email, password)
    config = Configuration(credentials=credentials, retry_policy=policy) if policy is not None else None
    return Account(email, credentials=credentials, autodiscover=True, config=config)


def sync(account: Account, email: str, password: str, colleague: str, colleague_password: str) -> None:
    changes = [(kind, getattr(item, "subject", None)) for kind, item in account.inbox.sync_items(
        only_fields=["subject", "is_read"], max_changes_returned=10)]
    folders = [(kind, folder.name) for kind, folder in account.root.sync_hierarchy()]
    items_state, folders_state = account.inbox.item_sync_state, account.root.folder_sync_state
    emit("first", changes=changes, folders=folders)
    again = [kind for kind, _ in account.inbox.sync_items(sync_state=items_state, only_fields=["subject"])]
    emit("unchanged", changes=again)
    Message(account=connect(colleague, colleague_password), subject="sync me", body="New since your last sync.",
            to_recipients=[email]).send()
    later = connect(email, password)     # a new session: only the saved states carry over
    changes = [(kind, getattr(item, "subject", None)) for kind, item in later.inbox.sync_items(
        sync_state=items_state, only_fields=["subject", "is_read"])]
    folders = [(kind, folder.name) for kind, folder in later.root.sync_hierarchy(sync_state=folders_state)]
    emit("resumed", changes=changes, folders=folders)
    try:
        list(later.inbox.sync_items(sync_state="bm90IGEgc3RhdGU="))
        emit("made-up", error=None)
    except Exception as exc:
        emit("made-up", error=type(exc).__name__)


def throttled(email: str, password: str, policy_name: str, max_wait: float) -> None:
    policy = FailFast() if policy_name == "failfast" else FaultTolerance(max_wait=max_wait)
    account = connect(email, password, policy)
    try:
        emit("listed", subjects=[m.subject for m in account.inbox.all().order_by("-datetime_received")[:3]])
    except Exception as exc:
        emit("raised", error=type(exc).__name__, back_off=getattr(exc, "back_off", None),
             wait=getattr(exc, "wait", None))


def main() -> None:
    dns_host, dns_port, email, password, script = sys.argv[1:6]
    Autodiscovery.DNS_RESOLVER_KWARGS = {"configure": False}
    Autodiscovery.DNS_RESOLVER_ATTRS = {"nameservers": [dns_host], "port": int(dns_port), "timeout": 3}
    try:
        if script == "throttled":
            throttled(email, password, sys.argv[6], float(sys.argv[7]) if len(sys.argv) > 7 else 3600)
            return
        account = connect(email, password)
        if script == "browse":
            browse(account, sys.argv[6])
        elif script == "sync":
            sync(account, email, password, sys.argv[6], sys.argv[7])
        else:
            page(account, int(sys.argv[6]) if len(sys.argv) > 6 else 200)
    except Exception as exc:  # report the client's own verdict, whatever it is
        emit("error", error=f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
