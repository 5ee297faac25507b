"""Meeting responses and cancellations over the store, sans-IO, as Exchange's calendar attendant applies them.

An attendee answers a meeting request (or the meeting's copy in their calendar): Accept and Tentative set their
calendar item's MyResponseType (and free/busy: the organizer's, or Tentative), Decline moves the calendar item to
Deleted Items; a meeting request answered leaves the Inbox for Deleted Items. Sent, the answer reaches the in-org
organizer as a meeting response (IPM.Schedule.Meeting.Resp.Pos / Tent / Neg) and the organizer's calendar item
records the attendee's ResponseType. Saved only, it waits in Drafts and nothing else changes. Answering an occurrence
answers its series.

The organizer cancels a meeting: each in-org attendee gets a cancellation (IPM.Schedule.Meeting.Canceled) and their
calendar item is marked cancelled ("Canceled: " subject, free); the organizer's calendar item moves to Deleted Items.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

from harness.mailbox import events
from harness.mailbox.calendar import BUSY, FREE, TENTATIVE, CalendarItem, MeetingMessage, add_event
from harness.mailbox.store import Address, Folder, Item, MailboxContent, MailboxStore

ACCEPT, TENTATIVE_ACCEPT, DECLINE = "Accept", "Tentative", "Decline"
RESPONSE_CLASSES = {ACCEPT: "IPM.Schedule.Meeting.Resp.Pos", TENTATIVE_ACCEPT: "IPM.Schedule.Meeting.Resp.Tent",
                    DECLINE: "IPM.Schedule.Meeting.Resp.Neg"}
SUBJECT_PREFIXES = {ACCEPT: "Accepted: ", TENTATIVE_ACCEPT: "Tentative: ", DECLINE: "Declined: "}
CANCELED = "IPM.Schedule.Meeting.Canceled"


class NotAMeeting(ValueError):
    """The item is no meeting request and no meeting in a calendar."""


class IsOrganizer(ValueError):
    """An organizer cannot answer their own meeting."""


class NotOrganizer(ValueError):
    """Only the organizer cancels a meeting."""


def _in_calendar(owner: MailboxContent, uid: str) -> Optional[CalendarItem]:
    for item in owner.distinguished["calendar"].items.values():
        if isinstance(item, CalendarItem) and item.uid == uid:
            return item
    return None


def _series(item: CalendarItem) -> CalendarItem:
    """An occurrence's master (the stored item); a stored item itself."""
    stored = item.folder.items.get(item.key)
    return stored if isinstance(stored, CalendarItem) else item


def _organizes(owner: MailboxContent, item: Item) -> bool:
    return item.sender[1].lower() == owner.email.lower()


def respond(store: MailboxStore, reference: Item, response: str, *, body: str = "", send: bool = True,
            copy_in: Optional[Folder] = None, draft_in: Optional[Folder] = None) -> Optional[Item]:
    """Answer the meeting `reference` names (a request or a calendar item) with ACCEPT, TENTATIVE_ACCEPT or DECLINE.
    Returns the saved draft when not sent."""
    owner = reference.folder.owner
    if isinstance(reference, CalendarItem):
        meeting: Optional[CalendarItem] = _series(reference)
        if not reference.is_meeting:
            raise NotAMeeting(reference.subject)
    elif isinstance(reference, MeetingMessage) and reference.item_class == "IPM.Schedule.Meeting.Request":
        meeting = _in_calendar(owner, reference.uid)
    else:
        raise NotAMeeting(reference.subject)
    about = meeting if meeting is not None else reference
    if _organizes(owner, about) or (meeting is not None and meeting.my_response == "Organizer"):
        raise IsOrganizer(about.subject)
    organizer = store.mailbox(about.sender[1])
    organizer_item = _in_calendar(organizer, _uid(about)) if organizer is not None else None
    fields = _message_fields(about, RESPONSE_CLASSES[response], SUBJECT_PREFIXES[response], response)
    if not send:
        return _draft(store, owner, draft_in or owner.distinguished["drafts"], body, (about.sender,), fields)
    if meeting is None and response != DECLINE and isinstance(reference, MeetingMessage):
        meeting = add_event(owner, subject=reference.subject, start=reference.start, end=reference.end,
                            organizer=reference.sender, required=reference.to, optional=reference.cc,
                            location=reference.location, body=reference.body, uid=reference.uid,
                            created=store.clock())
    if meeting is not None:
        if response == DECLINE:
            store.update(meeting, {"my_response": DECLINE}, ["calendar:MyResponseType"])
            store.delete(meeting, hard=False)
        else:
            busy = TENTATIVE if response == TENTATIVE_ACCEPT else (
                organizer_item.free_busy if organizer_item is not None else BUSY)
            store.update(meeting, {"my_response": response, "free_busy": busy},
                         ["calendar:MyResponseType", "calendar:LegacyFreeBusyStatus"])
    if isinstance(reference, MeetingMessage) and reference.folder is not owner.distinguished["deleteditems"]:
        store.delete(reference, hard=False)
    store.send(owner, body=body, to=(about.sender,), save_copy_in=copy_in, **fields)
    if organizer_item is not None:
        answered = dict(organizer_item.responses)
        answered[owner.email.lower()] = response
        store.update(organizer_item, {"responses": tuple(sorted(answered.items()))},
                     ["calendar:RequiredAttendees", "calendar:OptionalAttendees"])
    return None


def cancel(store: MailboxStore, item: CalendarItem, *, body: str = "", send: bool = True,
           copy_in: Optional[Folder] = None, draft_in: Optional[Folder] = None) -> Optional[Item]:
    """The organizer cancels the meeting `item` (an occurrence: its series). Returns the saved draft when not sent."""
    owner = item.folder.owner
    meeting = _series(item)
    if not meeting.is_meeting or meeting.my_response != "Organizer":
        raise NotOrganizer(meeting.subject)
    fields = _message_fields(meeting, CANCELED, "Canceled: ", "Organizer")
    recipients = list(meeting.to) + list(meeting.cc)
    if not send:
        return _draft(store, owner, draft_in or owner.distinguished["drafts"], body, tuple(recipients), fields)
    store.send(owner, body=body, to=meeting.to, cc=meeting.cc, save_copy_in=copy_in, **fields)
    for _, address in recipients:
        attendee = store.mailbox(address)
        copy = _in_calendar(attendee, meeting.uid) if attendee is not None else None
        if copy is not None and not copy.is_cancelled:
            store.update(copy, {"is_cancelled": True, "subject": fields["subject"], "free_busy": FREE},
                         ["calendar:IsCancelled", "item:Subject", "calendar:LegacyFreeBusyStatus"])
    store.delete(meeting, hard=False)
    return None


def _uid(item: Item) -> str:
    return item.uid if isinstance(item, (CalendarItem, MeetingMessage)) else ""


def _message_fields(about: Item, item_class: str, prefix: str, response: str) -> dict:
    start = about.start if isinstance(about, (CalendarItem, MeetingMessage)) else None
    end = about.end if isinstance(about, (CalendarItem, MeetingMessage)) else None
    fields: dict = dict(kind=MeetingMessage, item_class=item_class, subject=prefix + about.subject, uid=_uid(about),
                        location=getattr(about, "location", ""), response=response)
    if start is not None and end is not None:
        fields.update(start=start, end=end)
    return fields


def _draft(store: MailboxStore, owner: MailboxContent, folder: Folder, body: str, to: Tuple[Address, ...],
           fields: dict) -> Item:
    now = store.clock()
    extra: dict[str, Any] = dict(fields)
    kind = extra.pop("kind")
    draft = owner.add_item(folder, kind=kind, body=body, sender=owner.address, to=to, received=now, sent=now,
                           is_read=True, is_draft=True, message_id="", **extra)
    owner.events.record(events.CREATED, now, draft)
    return draft

