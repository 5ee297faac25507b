"""The seeded content of a fresh store: a few messages in each Inbox, and generated messages for paging at scale.
Deterministic (a fixed base time and a seeded Random), so a reset gives back the same items and ids."""
from __future__ import annotations

import datetime as dt
import random
from typing import Callable, Mapping

from harness.mailbox.calendar import FREE, OOF, TENTATIVE, WeeklyRecurrence, add_event, invite
from harness.mailbox.contacts import add_contact
from harness.mailbox.store import MailboxContent, MailboxStore, Seeder
from harness.mailbox.tasks import IN_PROGRESS, add_task

SEED_TIME = dt.datetime(2024, 3, 4, 9, 0, tzinfo=dt.timezone.utc)
WELCOME = (
    ("Welcome to Contoso", "Your mailbox is ready. Reach the help desk at extension 4357."),
    ("Quarterly planning", "Please send your team's priorities for next quarter by Friday."),
    ("Lunch on Thursday?", "The new place on 5th opens this week. Shall we try it?"),
)
_TOPICS = ("Status report", "Invoice", "Meeting notes", "Build results", "Travel plans", "Re: question",
           "Customer feedback", "Weekly digest", "Action items", "Reminder")


def add_welcome(store: MailboxStore, owner: MailboxContent) -> None:
    """Three messages from the org's other mailboxes (from the owner itself when alone), an hour apart, the oldest
    read."""
    others = [m for m in store.mailboxes.values() if m is not owner] or [owner]
    inbox = owner.distinguished["inbox"]
    for index, (subject, body) in enumerate(WELCOME):
        sender = others[index % len(others)]
        when = SEED_TIME + dt.timedelta(hours=index)
        owner.add_item(inbox, subject=subject, body=body, sender=sender.address, to=(owner.address,),
                       received=when, sent=when - dt.timedelta(seconds=2), is_read=index == 0,
                       message_id=f"<seed{index}.{owner.guid[:8]}@{owner.email.rpartition('@')[2]}>")


def generate(store: MailboxStore, owner: MailboxContent, count: int, seed: int = 0, folder: str = "inbox") -> None:
    """`count` generated messages in the distinguished folder, one a minute before the seeded ones, about a third
    unread; bodies are short so a large folder stays small in memory."""
    rng = random.Random(f"{seed}:{owner.email}")
    target = owner.distinguished[folder]
    senders = [m.address for m in store.mailboxes.values()] + [("Contoso Notifications", "noreply@contoso.test")]
    domain = owner.email.rpartition("@")[2]
    for number in range(count):
        when = SEED_TIME - dt.timedelta(minutes=count - number)
        subject = f"{rng.choice(_TOPICS)} #{number + 1}"
        owner.add_item(target, subject=subject, body=f"Generated message {number + 1} of {count}.",
                       sender=rng.choice(senders), to=(owner.address,), received=when, sent=when,
                       is_read=rng.random() > 0.33, message_id=f"<gen{number}.{owner.guid[:8]}@{domain}>")


def _at(days: int, hour: int, minute: int = 0) -> dt.datetime:
    return SEED_TIME.replace(hour=hour, minute=minute) + dt.timedelta(days=days)


def seed_calendar(store: MailboxStore) -> None:
    """The first mailbox's week of SEED_TIME (Monday 2024-03-04): a design review with the second mailbox (already
    accepted: in both calendars, no request in the Inbox), a dentist appointment (OOF), a tentative customer call,
    an all-day free release day, and a weekly team sync on Mondays and Wednesdays since 2024-01-01 with no end."""
    mailboxes = list(store.mailboxes.values())
    if not mailboxes:
        return
    owner = mailboxes[0]
    colleagues = tuple(m.address for m in mailboxes[1:2])
    review = add_event(owner, subject="Design review", start=_at(1, 14), end=_at(1, 15), required=colleagues,
                       location="Conference Room 1", body="Walk through the new storage design.",
                       created=SEED_TIME - dt.timedelta(days=7))
    invite(store, review, deliver_requests=False)
    add_event(owner, subject="Dentist", start=_at(2, 11), end=_at(2, 12), free_busy=OOF)
    add_event(owner, subject="Customer call", start=_at(3, 16), end=_at(3, 17), free_busy=TENTATIVE,
              location="Teams")
    add_event(owner, subject="Release day", start=_at(4, 0), end=_at(5, 0), is_all_day=True, free_busy=FREE)
    add_event(owner, subject="Team sync", start=SEED_TIME.replace(month=1, day=1, hour=9, minute=30),
              end=SEED_TIME.replace(month=1, day=1, hour=10), location="Conference Room 2",
              recurrence=WeeklyRecurrence(days=(0, 2), start=dt.date(2024, 1, 1)))


# A contact outside the org: ResolveNames finds it in alice's Contacts only.
PARTNER = ("Pat", "Partner", "pat.partner@fabrikam.test", "Fabrikam", "Account Manager", "+1 555 0199")


def seed_contacts_and_tasks(store: MailboxStore) -> None:
    """The first mailbox's Contacts: its next three colleagues (name split at the first space, the org's company)
    and one partner outside the org; its Tasks: one not started, one half done."""
    mailboxes = list(store.mailboxes.values())
    if not mailboxes:
        return
    owner = mailboxes[0]
    for colleague in mailboxes[1:4]:
        given, _, surname = colleague.display_name.partition(" ")
        add_contact(owner, given_name=given, surname=surname, emails=[colleague.email], company_name="Contoso",
                    when=SEED_TIME - dt.timedelta(days=30))
    given, surname, email, company, title, phone = PARTNER
    add_contact(owner, given_name=given, surname=surname, emails=[email], company_name=company, job_title=title,
                phones=(("BusinessPhone", phone),), when=SEED_TIME - dt.timedelta(days=20))
    add_task(owner, subject="Submit expense report", when=SEED_TIME - dt.timedelta(days=2),
             due_date=_at(4, 0))
    add_task(owner, subject="Review storage design", when=SEED_TIME - dt.timedelta(days=7),
             start_date=_at(-7, 0), due_date=_at(1, 0), status=IN_PROGRESS, percent_complete=50.0)


def default_seeder(sizes: Mapping[str, int], seed: int = 0) -> Seeder:
    """Welcome messages everywhere, plus `sizes[email]` generated Inbox messages (emails lower-cased)."""
    def seeder(store: MailboxStore) -> None:
        for email, owner in store.mailboxes.items():
            if sizes.get(email):
                generate(store, owner, sizes[email], seed)
            add_welcome(store, owner)
        seed_calendar(store)
        seed_contacts_and_tasks(store)
    return seeder


def utc_now() -> Callable[[], dt.datetime]:
    return lambda: dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
