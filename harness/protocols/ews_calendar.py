"""EWS over the store's calendars, sans-IO: FindItem with a CalendarView (the recurring series expanded into its
occurrences), GetItem of an occurrence id, and CreateItem of a CalendarItem with SendMeetingInvitations."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, FrozenSet, List, Optional

from lxml import etree

from harness.mailbox import calendar
from harness.mailbox.calendar import CalendarItem, WeeklyRecurrence
from harness.mailbox.store import Address, Folder
from harness.protocols.ews_xml import EwsError, item_element, item_id_only, m, parse_flag, t

if TYPE_CHECKING:
    from harness.protocols.ews_ops import Call

INVALID_REQUEST = ("ErrorInvalidRequest", "The request is invalid.")
INVITATIONS = ("SendToNone", "SendOnlyToAll", "SendToAllAndSaveCopy")


def parse_time(text: Optional[str]) -> dt.datetime:
    """An xs:dateTime as an aware UTC datetime (no offset: UTC), or ErrorInvalidRequest."""
    try:
        value = dt.datetime.fromisoformat((text or "").strip())
    except ValueError:
        raise EwsError(*INVALID_REQUEST) from None
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def write_calendar_view(view: etree._Element, folder: Folder, fields: FrozenSet[str],
                        message: etree._Element) -> None:
    """A CalendarView: single items and occurrences overlapping [StartDate, EndDate), by start; at most
    MaxEntriesReturned of them (IncludesLastItemInRange false when cut)."""
    start, end = parse_time(view.get("StartDate")), parse_time(view.get("EndDate"))
    if end < start:
        raise EwsError("ErrorCalendarEndDateIsEarlierThanStartDate", "EndDate is earlier than StartDate")
    found = calendar.calendar_view(folder, start, end)
    limit_text = view.get("MaxEntriesReturned")
    try:
        limit = int(limit_text) if limit_text is not None else len(found)
    except ValueError:
        raise EwsError(*INVALID_REQUEST) from None
    page = found[:max(limit, 0)]
    root = etree.SubElement(message, m("RootFolder"), TotalItemsInView=str(len(page)),
                            IncludesLastItemInRange="true" if len(page) == len(found) else "false")
    items = etree.SubElement(root, t("Items"))
    for item in page:
        item_element(items, item, fields)


def find_occurrence(call: "Call", ews_id: str) -> Optional[CalendarItem]:
    return calendar.find_occurrence(call.owner, ews_id)


def _recurrence(element: Optional[etree._Element], start: dt.datetime) -> Optional[WeeklyRecurrence]:
    if element is None:
        return None
    weekly = element.find(t("WeeklyRecurrence"))
    if weekly is None:
        raise EwsError("ErrorInvalidRecurrence", "The recurrence pattern is invalid.")
    names = (weekly.findtext(t("DaysOfWeek")) or "").split()
    try:
        days = tuple(calendar.WEEKDAYS.index(name) for name in names)
        interval = int(weekly.findtext(t("Interval")) or "1")
        first_day = calendar.WEEKDAYS.index(weekly.findtext(t("FirstDayOfWeek")) or "Sunday")
    except ValueError:
        raise EwsError("ErrorInvalidRecurrence", "The recurrence pattern is invalid.") from None
    if not days or interval < 1:
        raise EwsError("ErrorInvalidRecurrence", "The recurrence pattern is invalid.")
    for kind in (calendar.NO_END, calendar.END_DATE, calendar.NUMBERED):
        range_element = element.find(t(kind))
        if range_element is not None:
            break
    else:
        raise EwsError("ErrorInvalidRecurrence", "The recurrence pattern is invalid.")
    first = _date(range_element.findtext(t("StartDate"))) or start.date()
    end = _date(range_element.findtext(t("EndDate")))
    count_text = range_element.findtext(t("NumberOfOccurrences"))
    count = int(count_text) if count_text and count_text.isdigit() else None
    if (kind == calendar.END_DATE and end is None) or (kind == calendar.NUMBERED and not count):
        raise EwsError("ErrorInvalidRecurrence", "The recurrence pattern is invalid.")
    return WeeklyRecurrence(days=days, start=first, interval=interval, first_day_of_week=first_day,
                            range_kind=kind, end=end, count=count)


def _date(text: Optional[str]) -> Optional[dt.date]:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text.strip()[:10])
    except ValueError:
        raise EwsError("ErrorInvalidRecurrence", "The recurrence pattern is invalid.") from None


def create_calendar_item(call: "Call", element: etree._Element, items: etree._Element,
                         folder: Optional[Folder]) -> None:
    """Save a CalendarItem in `folder` (SavedItemFolderId's) or the Calendar; SendOnlyToAll / SendToAllAndSaveCopy also
    invite the in-org attendees (a meeting request in their Inbox, a tentative copy in their Calendar)."""
    invitations = call.request.get("SendMeetingInvitations", "")
    if invitations not in INVITATIONS:
        raise EwsError("ErrorSendMeetingInvitationsRequired", "The SendMeetingInvitations attribute is required for "
                                                              "calendar items.")
    start, end = parse_time(element.findtext(t("Start"))), parse_time(element.findtext(t("End")))
    if end < start:
        raise EwsError("ErrorCalendarEndDateIsEarlierThanStartDate", "EndDate is earlier than StartDate")
    status = element.findtext(t("LegacyFreeBusyStatus")) or calendar.BUSY
    if status not in calendar.FREE_BUSY:
        status = calendar.BUSY
    body = element.find(t("Body"))
    required = attendees(element.find(t("RequiredAttendees")))
    optional = attendees(element.find(t("OptionalAttendees")))
    meeting = calendar.add_event(
        call.owner, subject=element.findtext(t("Subject")) or "", start=start, end=end,
        required=required, optional=optional, location=element.findtext(t("Location")) or "",
        body=(body.text or "") if body is not None else "", is_all_day=bool(parse_flag(
            element.findtext(t("IsAllDayEvent")))), free_busy=status,
        recurrence=_recurrence(element.find(t("Recurrence")), start), created=call.store.clock(), folder=folder)
    if invitations != "SendToNone" and meeting.is_meeting:
        calendar.invite(call.store, meeting)
    item_id_only(items, meeting)


def attendees(element: Optional[etree._Element]) -> List[Address]:
    """(name, address) of each t:Attendee/t:Mailbox."""
    if element is None:
        return []
    return [(mb.findtext(t("Name")) or "", mb.findtext(t("EmailAddress")) or "")
            for mb in element.iterfind(f"{t('Attendee')}/{t('Mailbox')}")]
