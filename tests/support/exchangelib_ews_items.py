"""exchangelib, unmodified, through its own Autodiscover: attachments, contacts, tasks and name resolution; one JSON
line per check.

Usage: exchangelib_ews_items.py DNS_HOST DNS_PORT EMAIL PASSWORD COLLEAGUE COLLEAGUE_PASSWORD
alice drafts a message with a file attachment, reads it back (GetItem, GetAttachment, MIME), adds a second file and
an item attachment, removes the file (CreateAttachment, DeleteAttachment), sends a message with an attachment to
COLLEAGUE, who reads the attachment's content; then lists, creates, updates and deletes contacts and tasks, resolves
names and expands a distribution group.
Certificate trust comes from REQUESTS_CA_BUNDLE (requests' documented variable).
"""
import datetime
import json
import sys
from decimal import Decimal

from exchangelib import Account, Contact, Credentials, EWSTimeZone, FileAttachment, ItemAttachment, Message, Task
from exchangelib.autodiscover import Autodiscovery
from exchangelib.errors import ErrorNameResolutionNoResults
from exchangelib.indexed_properties import EmailAddress, PhoneNumber

UTC = EWSTimeZone("UTC")
REPORT = b"quarter,revenue\nQ1,100\nQ2,120\n"


def emit(check: str, **result) -> None:
    print(json.dumps({"check": check, **result}, default=str), flush=True)


def connect(email: str, password: str) -> Account:
    return Account(email, credentials=Credentials(email, password), autodiscover=True, default_timezone=UTC)


def attachments(account: Account, colleague: str, colleague_password: str) -> None:
    draft = Message(account=account, folder=account.drafts, subject="Figures", body="See attached.",
                    to_recipients=[colleague])
    draft.attach(FileAttachment(name="report.csv", content=REPORT, content_type="text/csv"))
    draft.save()
    emit("saved", attachment_ids=[bool(a.attachment_id and a.attachment_id.id) for a in draft.attachments])
    fetched = account.drafts.get(id=draft.id)
    first = fetched.attachments[0]
    emit("read", has_attachments=fetched.has_attachments, names=[a.name for a in fetched.attachments],
         content=first.content.decode(), size=first.size, content_type=first.content_type,
         id_prefix=first.attachment_id.id[:5])
    with_mime = account.drafts.get(id=draft.id)
    mime = with_mime.mime_content.decode("utf-8", "replace")
    emit("mime", has_name="report.csv" in mime, has_part="Content-Disposition: attachment" in mime,
         subject=with_mime.subject)
    fetched.attach(FileAttachment(name="notes.txt", content=b"second file"))
    inner = Message(subject="Original request", body="Please send the figures.")
    fetched.attach(ItemAttachment(name="Original request", item=inner))
    again = account.drafts.get(id=draft.id)
    emit("attached", names=sorted(a.name for a in again.attachments),
         inner=[a.item.subject for a in again.attachments if isinstance(a, ItemAttachment)])
    again.detach([a for a in again.attachments if a.name == "notes.txt"][0])
    after = account.drafts.get(id=draft.id)
    emit("detached", names=sorted(a.name for a in after.attachments))
    outgoing = Message(account=account, folder=account.sent, subject="Figures for you", body="Attached.",
                       to_recipients=[colleague])
    outgoing.attach(FileAttachment(name="figures.csv", content=REPORT))
    outgoing.send_and_save()
    bob = connect(colleague, colleague_password)
    received = [m for m in bob.inbox.all() if m.subject == "Figures for you"][0]
    emit("delivered", has_attachments=received.has_attachments, names=[a.name for a in received.attachments],
         content=received.attachments[0].content.decode())


def contacts_and_tasks(account: Account) -> None:
    listed = sorted((c.display_name, [e.email for e in c.email_addresses or []]) for c in account.contacts.all())
    emit("contacts", listed=listed)
    contact = Contact(account=account, folder=account.contacts, given_name="Gina", surname="Guest",
                      display_name="Gina Guest", company_name="Tailspin", job_title="Buyer",
                      email_addresses=[EmailAddress(email="gina@tailspin.test", label="EmailAddress1")],
                      phone_numbers=[PhoneNumber(label="MobilePhone", phone_number="+1 555 0142")])
    contact.save()
    contact.job_title = "Head Buyer"
    contact.save(update_fields=["job_title"])
    read = account.contacts.get(id=contact.id)
    emit("contact", name=read.display_name, given=read.given_name, surname=read.surname, company=read.company_name,
         title=read.job_title, emails=[e.email for e in read.email_addresses],
         phones=[(p.label, p.phone_number) for p in read.phone_numbers], count=account.contacts.all().count())
    read.delete()
    emit("contact_deleted", count=account.contacts.all().count())
    task = Task(account=account, folder=account.tasks, subject="Book travel", start_date=datetime.date(2024, 3, 11),
                due_date=datetime.date(2024, 3, 15), status="InProgress", percent_complete=Decimal(25))
    task.save()
    task.status = Task.COMPLETED
    task.percent_complete = Decimal(100)
    task.save(update_fields=["status", "percent_complete"])
    done = account.tasks.get(id=task.id)
    emit("task", subject=done.subject, status=done.status, percent=done.percent_complete, due=done.due_date,
         start=done.start_date, complete=done.complete_date is not None,
         listed=sorted((t.subject, t.status, t.percent_complete) for t in account.tasks.all()))


def names(account: Account) -> None:
    single = account.protocol.resolve_names(["ali"], return_full_contact_data=True)
    mailbox, contact = single[0]
    emit("resolve", count=len(single), email=mailbox.email_address, type=mailbox.mailbox_type,
         title=contact.job_title, department=contact.department)
    several = account.protocol.resolve_names(["legacy"])
    emit("ambiguous", emails=[m.email_address for m in several])
    partner = account.protocol.resolve_names(["pat"])
    emit("contact_match", emails=[m.email_address for m in partner], types=[m.mailbox_type for m in partner])
    none = account.protocol.resolve_names(["nobody-here"])
    emit("none", results=[type(r).__name__ for r in none],
         is_no_results=[isinstance(r, ErrorNameResolutionNoResults) for r in none])
    members = list(account.protocol.expand_dl("sales@contoso.test"))
    emit("expand", members=[m.email_address for m in members])


def main() -> None:
    dns_host, dns_port, email, password, colleague, colleague_password = sys.argv[1:7]
    Autodiscovery.DNS_RESOLVER_KWARGS = {"configure": False}
    Autodiscovery.DNS_RESOLVER_ATTRS = {"nameservers": [dns_host], "port": int(dns_port), "timeout": 3}
    try:
        account = connect(email, password)
        attachments(account, colleague, colleague_password)
        contacts_and_tasks(account)
        names(account)
    except Exception as exc:  # report the client's own verdict, whatever it is
        emit("error", error=f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
