"""Calendar items in the store, sans-IO: single appointments and meetings, a weekly recurring series with its
RecurrenceRange expanded into occurrences, and meeting requests delivered to in-org attendees.

An occurrence is not stored: it is the series master seen at one of its dates (`CalendarItem.instance` set), with
an id of its own that names the master and the occurrence's original start (ids.occurrence_id). A modified occurrence
(an exception) is the master's overrides for that original start; a deleted one is its original start in the
master's deleted list. Times are UTC; a series repeats at the master's UTC time of day (no daylight saving shift).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from harness.mailbox import ids
from harness.mailbox.store import Address, Folder, Item, MailboxContent, MailboxStore

FREE, TENTATIVE, BUSY, OOF = "Free", "Tentative", "Busy", "OOF"
FREE_BUSY = (FREE, TENTATIVE, BUSY, OOF)            # in MergedFreeBusy's digit order (4 is NoData)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
NO_END, END_DATE, NUMBERED = "NoEndRecurrence", "EndDateRecurrence", "NumberedRecurrence"
MAX_OCCURRENCES = 999       # Exchange's limit on a numbered series; bounds every expansion too
MEETING_REQUEST = "IPM.Schedule.Meeting.Request"
EPOCH = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
Overrides = Tuple[Tuple[str, Any], ...]          # an exception's changed attributes, as (name, value) pairs


class OccurrenceCrossing(ValueError):
    """A modified occurrence would move onto or past the day of a neighbouring occurrence."""


@dataclass(frozen=True)
class WeeklyRecurrence:
    """Every `interval` weeks on `days` (0 Monday .. 6 Sunday), from `start`, until the range ends."""
    days: Tuple[int, ...]
    start: dt.date
    interval: int = 1
    first_day_of_week: int = 0
    range_kind: str = NO_END
    end: Optional[dt.date] = None          # EndDateRecurrence: the last date an occurrence may fall on
    count: Optional[int] = None            # NumberedRecurrence: how many occurrences

    def dates(self, not_before: Optional[dt.date] = None) -> Iterator[dt.date]:
        """The occurrence dates in order, from `not_before` on (an endless or dated series skips ahead to it; a
        numbered one walks from its start, as it counts)."""
        week_start = self.start - dt.timedelta(days=(self.start.weekday() - self.first_day_of_week) % 7)
        offsets = sorted((day - self.first_day_of_week) % 7 for day in set(self.days))
        week, produced = 0, 0
        if not_before is not None and self.range_kind != NUMBERED:    # numbered series count from their start
            week = max(0, (not_before - week_start).days // 7 - 1) // self.interval * self.interval
        limit = min(self.count or MAX_OCCURRENCES, MAX_OCCURRENCES) if self.range_kind == NUMBERED else None
        while True:
            for offset in offsets:
                date = week_start + dt.timedelta(days=7 * week + offset)
                if date < self.start:
                    continue
                if self.range_kind == END_DATE and self.end is not None and date > self.end:
                    return
                if not_before is None or date >= not_before:
                    yield date
                produced += 1
                if limit is not None and produced >= limit:
                    return
            week += self.interval


@dataclass(eq=False)
class CalendarItem(Item):
    """An appointment (no attendees) or meeting. `sender` is the organizer, `to`/`cc` the required/optional
    attendees. A master of a series has `recurrence`; an occurrence view also has `instance` (its original
    start)."""
    start: dt.datetime = EPOCH
    end: dt.datetime = EPOCH
    location: str = ""
    is_all_day: bool = False
    free_busy: str = BUSY
    recurrence: Optional[WeeklyRecurrence] = None
    instance: Optional[dt.datetime] = None
    my_response: str = "Organizer"
    uid: str = ""
    # The attendees' responses the organizer received: (lower-cased address, ResponseType) pairs.
    responses: Tuple[Tuple[str, str], ...] = ()
    is_cancelled: bool = False
    # A master's exceptions, by original start, and the original starts of its deleted occurrences. Tuples: a copy
    # of the item shares them safely.
    modified: Tuple[Tuple[dt.datetime, Overrides], ...] = ()
    deleted: Tuple[dt.datetime, ...] = ()

    @property
    def id(self) -> str:
        if self.instance is not None:
            return ids.occurrence_id(self.folder.owner.guid, self.folder.key, self.key, self.instance)
        return super().id

    @property
    def calendar_type(self) -> str:
        if self.recurrence is None:
            return "Single"
        if self.instance is None:
            return "RecurringMaster"
        return "Exception" if self.overrides(self.instance) is not None else "Occurrence"

    def overrides(self, original_start: dt.datetime) -> Optional[Dict[str, Any]]:
        """The attributes the exception at `original_start` changed (None: not modified)."""
        for start, changed in self.modified:
            if start == original_start:
                return dict(changed)
        return None

    def response_of(self, address: str) -> str:
        """An attendee's ResponseType as the organizer knows it (Unknown until they answer)."""
        return dict(self.responses).get(address.lower(), "Unknown")

    @property
    def is_meeting(self) -> bool:
        return bool(self.to or self.cc)

    def occurrence_starts(self, window_start: dt.datetime, window_end: dt.datetime) -> Iterator[dt.datetime]:
        """Starts of the series' occurrences overlapping [window_start, window_end)."""
        assert self.recurrence is not None
        length = self.end - self.start
        for date in self.recurrence.dates(not_before=(window_start - length).date()):
            start = dt.datetime.combine(date, self.start.timetz())
            if start >= window_end:
                return
            if start + length > window_start:
                yield start

    def occurrence(self, start: dt.datetime) -> "CalendarItem":
        """The occurrence originally starting at `start`, with its exception's changes when it has one."""
        seen = replace(self, start=start, end=start + (self.end - self.start), instance=start)
        changed = self.overrides(start)
        return replace(seen, **changed) if changed else seen

    def occurrences(self, window_start: dt.datetime, window_end: dt.datetime) -> List["CalendarItem"]:
        """The series' occurrences overlapping the window: deleted ones left out, exceptions where they are now
        (a moved one may have left or entered the window)."""
        skipped = set(self.deleted) | {start for start, _ in self.modified}
        found = [self.occurrence(start) for start in self.occurrence_starts(window_start, window_end)
                 if start not in skipped]
        for start, _ in self.modified:
            exception = self.occurrence(start)
            if exception.start < window_end and exception.end > window_start:
                found.append(exception)
        return found

    def is_occurrence_start(self, original_start: dt.datetime) -> bool:
        """Whether the series has an occurrence originally starting then (deleted ones do not count)."""
        if original_start in self.deleted:
            return False
        if self.overrides(original_start) is not None:
            return True
        window_end = original_start + dt.timedelta(seconds=1)
        return any(start == original_start for start in self.occurrence_starts(original_start, window_end))


@dataclass(eq=False)
class MeetingMessage(Item):
    """A meeting request, response or cancellation (by item class) naming its meeting by UID, with its time and
    place; a response's `response` is the attendee's ResponseType (Accept, Tentative, Decline)."""
    uid: str = ""
    start: dt.datetime = EPOCH
    end: dt.datetime = EPOCH
    location: str = ""
    response: str = "NoResponseReceived"


def calendar_view(folder: Folder, window_start: dt.datetime, window_end: dt.datetime) -> List[CalendarItem]:
    """The single items and occurrences overlapping the window, by start (a CalendarView)."""
    found: List[CalendarItem] = []
    for item in folder.items.values():
        if not isinstance(item, CalendarItem):
            continue
        if item.recurrence is not None:
            found.extend(item.occurrences(window_start, window_end))
        elif item.start < window_end and item.end > window_start:
            found.append(item)
    return sorted(found, key=lambda i: (i.start, i.end, i.key))


def find_occurrence(owner: MailboxContent, ews_id: str) -> Optional[CalendarItem]:
    """The occurrence an occurrence id names, if its series has one starting then."""
    decoded = ids.decode_occurrence(ews_id)
    if decoded is None or decoded[0] != owner.guid:
        return None
    folder = owner.folders.get(decoded[1])
    master = folder.items.get(decoded[2]) if folder is not None else None
    if not isinstance(master, CalendarItem) or master.recurrence is None:
        return None
    return master.occurrence(decoded[3]) if master.is_occurrence_start(decoded[3]) else None


def _neighbours(master: CalendarItem, original_start: dt.datetime) -> Tuple[Optional[dt.date], Optional[dt.date]]:
    """The days of the occurrences just before and after the one originally at `original_start` (where they are
    now, for exceptions; deleted ones left out)."""
    assert master.recurrence is not None
    period = dt.timedelta(days=7 * master.recurrence.interval + 7)    # reaches back past the previous occurrence
    earlier: Optional[dt.date] = None
    for date in master.recurrence.dates(not_before=(original_start - period).date()):
        start = dt.datetime.combine(date, master.start.timetz())
        if start == original_start or start in master.deleted:
            continue
        day = master.occurrence(start).start.date()
        if start > original_start:
            return earlier, day
        earlier = day
    return earlier, None


def modify_occurrence(store: MailboxStore, master: CalendarItem, original_start: dt.datetime,
                      changes: Mapping[str, Any], uris: Sequence[str]) -> CalendarItem:
    """Make (or change) the exception at `original_start`: `changes` on top of its earlier ones, as one change of the
    master. A new day must stay strictly between the neighbouring occurrences' days (OccurrenceCrossing)."""
    merged = dict(master.overrides(original_start) or {})
    merged.update(changes)
    start = merged.get("start", original_start)
    if "start" in changes or "end" in changes:
        earlier, later = _neighbours(master, original_start)
        if (earlier is not None and start.date() <= earlier) or (later is not None and start.date() >= later):
            raise OccurrenceCrossing(original_start.isoformat())
    kept = tuple((s, o) for s, o in master.modified if s != original_start)
    store.update(master, {"modified": kept + ((original_start, tuple(sorted(merged.items()))),)},
                 list(uris) + ["calendar:ModifiedOccurrences"])
    return master.occurrence(original_start)


def delete_occurrence(store: MailboxStore, master: CalendarItem, original_start: dt.datetime) -> None:
    """Delete one occurrence of the series (an exception too): a change of the master."""
    store.update(master, {"deleted": tuple(sorted(set(master.deleted) | {original_start})),
                          "modified": tuple((s, o) for s, o in master.modified if s != original_start)},
                 ["calendar:DeletedOccurrences", "calendar:ModifiedOccurrences"])


def add_event(owner: MailboxContent, *, subject: str, start: dt.datetime, end: dt.datetime,
              organizer: Optional[Address] = None, required: Sequence[Address] = (),
              optional: Sequence[Address] = (), location: str = "", body: str = "", is_all_day: bool = False,
              free_busy: str = BUSY, recurrence: Optional[WeeklyRecurrence] = None, my_response: str = "Organizer",
              uid: str = "", created: Optional[dt.datetime] = None,
              folder: Optional[Folder] = None) -> CalendarItem:
    """A calendar item in `folder` (default: the owner's Calendar)."""
    when = created or start
    item = owner.add_item(folder or owner.distinguished["calendar"], kind=CalendarItem, subject=subject, body=body,
                          sender=organizer or owner.address, to=tuple(required), cc=tuple(optional),
                          received=when, sent=when, message_id="", is_read=True, item_class="IPM.Appointment",
                          start=start, end=end, location=location, is_all_day=is_all_day, free_busy=free_busy,
                          recurrence=recurrence, my_response=my_response)
    assert isinstance(item, CalendarItem)
    item.uid = uid or f"040000008200E00074C5B7101A82E008{owner.guid.replace('-', '').upper()}{item.key:08X}"
    return item


def invite(store: MailboxStore, meeting: CalendarItem, *, deliver_requests: bool = True) -> List[Item]:
    """Send a meeting to its in-org attendees: each gets a meeting request in the Inbox (unless
    `deliver_requests` is false) and a tentative copy in the Calendar, as Exchange's calendar attendant does."""
    organizer = meeting.folder.owner
    delivered: List[Item] = []
    seen = {organizer.email.lower()}
    now = store.clock()
    for _, address in list(meeting.to) + list(meeting.cc):
        attendee = store.mailbox(address)
        if attendee is None or attendee.email.lower() in seen:
            continue
        seen.add(attendee.email.lower())
        if deliver_requests:
            delivered.append(attendee.add_item(
                attendee.distinguished["inbox"], kind=MeetingMessage, subject=meeting.subject, body=meeting.body,
                sender=organizer.address, to=meeting.to, cc=meeting.cc, received=now, sent=now, is_read=False,
                item_class=MEETING_REQUEST, uid=meeting.uid, start=meeting.start, end=meeting.end,
                location=meeting.location,
                message_id=f"<{organizer.guid[:8]}{organizer.change_number:08x}@{organizer.email.rpartition('@')[2]}>"))
        delivered.append(add_event(
            attendee, subject=meeting.subject, start=meeting.start, end=meeting.end, organizer=organizer.address,
            required=meeting.to, optional=meeting.cc, location=meeting.location, body=meeting.body,
            is_all_day=meeting.is_all_day, free_busy=TENTATIVE if deliver_requests else meeting.free_busy,
            recurrence=meeting.recurrence, my_response="NoResponseReceived" if deliver_requests else "Accept",
            uid=meeting.uid, created=now if deliver_requests else meeting.received))
    return delivered
