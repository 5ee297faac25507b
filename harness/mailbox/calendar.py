"""Calendar items in the store, sans-IO: single appointments and meetings, a weekly recurring series with its
RecurrenceRange expanded into occurrences, and meeting requests delivered to in-org attendees.

An occurrence is not stored: it is the series master seen at one of its dates (`CalendarItem.instance` set), with
an id of its own that names the master and the occurrence's original start (ids.occurrence_id). Times are UTC; a
series repeats at the master's UTC time of day (no daylight saving shift).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Iterator, List, Optional, Sequence, Tuple

from harness.mailbox import ids
from harness.mailbox.store import Address, Folder, Item, MailboxContent, MailboxStore

FREE, TENTATIVE, BUSY, OOF = "Free", "Tentative", "Busy", "OOF"
FREE_BUSY = (FREE, TENTATIVE, BUSY, OOF)            # in MergedFreeBusy's digit order (4 is NoData)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
NO_END, END_DATE, NUMBERED = "NoEndRecurrence", "EndDateRecurrence", "NumberedRecurrence"
MAX_OCCURRENCES = 999       # Exchange's limit on a numbered series; bounds every expansion too
MEETING_REQUEST = "IPM.Schedule.Meeting.Request"


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
    start: dt.datetime = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    end: dt.datetime = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    location: str = ""
    is_all_day: bool = False
    free_busy: str = BUSY
    recurrence: Optional[WeeklyRecurrence] = None
    instance: Optional[dt.datetime] = None
    my_response: str = "Organizer"
    uid: str = ""

    @property
    def id(self) -> str:
        if self.instance is not None:
            return ids.occurrence_id(self.folder.owner.guid, self.folder.key, self.key, self.instance)
        return super().id

    @property
    def calendar_type(self) -> str:
        if self.recurrence is None:
            return "Single"
        return "Occurrence" if self.instance is not None else "RecurringMaster"

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
        return replace(self, start=start, end=start + (self.end - self.start), instance=start)


def calendar_view(folder: Folder, window_start: dt.datetime, window_end: dt.datetime) -> List[CalendarItem]:
    """The single items and occurrences overlapping the window, by start (a CalendarView)."""
    found: List[CalendarItem] = []
    for item in folder.items.values():
        if not isinstance(item, CalendarItem):
            continue
        if item.recurrence is not None:
            found.extend(item.occurrence(start) for start in item.occurrence_starts(window_start, window_end))
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
    when = decoded[3]
    for start in master.occurrence_starts(when, when + dt.timedelta(seconds=1)):
        if start == when:
            return master.occurrence(start)
    return None


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
                attendee.distinguished["inbox"], subject=meeting.subject, body=meeting.body, sender=organizer.address,
                to=meeting.to, cc=meeting.cc, received=now, sent=now, is_read=False, item_class=MEETING_REQUEST,
                message_id=f"<{organizer.guid[:8]}{organizer.change_number:08x}@{organizer.email.rpartition('@')[2]}>"))
        delivered.append(add_event(
            attendee, subject=meeting.subject, start=meeting.start, end=meeting.end, organizer=organizer.address,
            required=meeting.to, optional=meeting.cc, location=meeting.location, body=meeting.body,
            is_all_day=meeting.is_all_day, free_busy=TENTATIVE if deliver_requests else meeting.free_busy,
            recurrence=meeting.recurrence, my_response="NoResponseReceived" if deliver_requests else "Accept",
            uid=meeting.uid, created=now if deliver_requests else meeting.received))
    return delivered
