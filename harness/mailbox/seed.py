"""The seeded content of a fresh store: a few messages in each Inbox, and generated messages for paging at scale.
Deterministic (a fixed base time and a seeded Random), so a reset gives back the same items and ids."""
from __future__ import annotations

import datetime as dt
import random
from typing import Callable, Mapping

from harness.mailbox.store import MailboxContent, MailboxStore, Seeder

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


def default_seeder(sizes: Mapping[str, int], seed: int = 0) -> Seeder:
    """Welcome messages everywhere, plus `sizes[email]` generated Inbox messages (emails lower-cased)."""
    def seeder(store: MailboxStore) -> None:
        for email, owner in store.mailboxes.items():
            if sizes.get(email):
                generate(store, owner, sizes[email], seed)
            add_welcome(store, owner)
    return seeder


def utc_now() -> Callable[[], dt.datetime]:
    return lambda: dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
