"""exchangelib, unmodified, through its own Autodiscover against the mock's EWS: one JSON line per check.

Usage: exchangelib_ews.py DNS_HOST DNS_PORT EMAIL PASSWORD SCRIPT [COLLEAGUE]
SCRIPT "browse": the folder tree, the newest Inbox messages, GetItem with MIME, send to COLLEAGUE, mark read, move,
delete. SCRIPT "page": page through the whole Inbox 200 at a time and report the newest message.
Certificate trust comes from REQUESTS_CA_BUNDLE (requests' documented variable).
"""
import json
import sys

from exchangelib import Account, Credentials, Message
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


def page(account: Account) -> None:
    account.inbox.refresh()
    subjects, query = [], account.inbox.all().order_by("-datetime_received").only("subject", "datetime_received")
    query.page_size = 200
    for message in query:
        subjects.append(message.subject)
    emit("page", count=len(subjects), total=account.inbox.total_count, first=subjects[:2],
         distinct=len(set(subjects)), last=subjects[-1:])


def main() -> None:
    dns_host, dns_port, email, password, script = sys.argv[1:6]
    Autodiscovery.DNS_RESOLVER_KWARGS = {"configure": False}
    Autodiscovery.DNS_RESOLVER_ATTRS = {"nameservers": [dns_host], "port": int(dns_port), "timeout": 3}
    try:
        account = Account(email, credentials=Credentials(email, password), autodiscover=True)
        browse(account, sys.argv[6]) if script == "browse" else page(account)
    except Exception as exc:  # report the client's own verdict, whatever it is
        emit("error", error=f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
