"""Calendars: recurrence expansion (sans-IO), EWS CalendarView / CreateItem / GetUserAvailability / OOF cores
in-process, and exchangelib (unmodified, its own discovery) viewing alice's week, free/busy and OOF."""
from __future__ import annotations

import datetime as dt
import json
import os

from lxml import etree

from harness.mailbox import calendar, ids
from harness.mailbox.calendar import WeeklyRecurrence
from harness.protocols import ews
from tests.support import REPO
from tests.support.ews import ALICE, BOB, ORG, envelope, new_store
from tests.support.netns import Check, needs_netns, run_in_netns

M, T = f"{{{ews.MESSAGES_NS}}}", f"{{{ews.TYPES_NS}}}"
UTC = dt.timezone.utc
WEEK = (dt.datetime(2024, 3, 4, tzinfo=UTC), dt.datetime(2024, 3, 11, tzinfo=UTC))
CALENDAR_CLIENT = os.path.join(REPO, "tests", "support", "exchangelib_ews_calendar.py")


def test_weekly_ranges_expand_to_the_right_dates():
    # Starting on a Wednesday: the first Monday is skipped (before the start), then every other week.
    every_other = WeeklyRecurrence(days=(0, 2), start=dt.date(2024, 1, 3), interval=2, range_kind=calendar.NUMBERED,
                                   count=4)
    assert list(every_other.dates()) == [dt.date(2024, 1, 3), dt.date(2024, 1, 15), dt.date(2024, 1, 17),
                                         dt.date(2024, 1, 29)]
    until = WeeklyRecurrence(days=(4,), start=dt.date(2024, 1, 1), range_kind=calendar.END_DATE,
                             end=dt.date(2024, 1, 19))
    assert list(until.dates()) == [dt.date(2024, 1, 5), dt.date(2024, 1, 12), dt.date(2024, 1, 19)]
    endless = WeeklyRecurrence(days=(1,), start=dt.date(2024, 1, 2))
    # Skipping ahead lands on the same weeks a walk from the start would.
    from_march = endless.dates(not_before=dt.date(2024, 3, 1))
    assert list(WeeklyRecurrence(days=(1,), start=dt.date(2024, 1, 2), range_kind=calendar.NUMBERED, count=10).dates(
        not_before=dt.date(2024, 3, 1))) == [dt.date(2024, 3, 5)]      # the 10th and last
    assert [next(from_march) for _ in range(2)] == [dt.date(2024, 3, 5), dt.date(2024, 3, 12)]


def test_a_numbered_series_stops_and_every_expansion_is_bounded():
    store = new_store()
    alice = store.mailbox(ALICE)
    series = calendar.add_event(alice, subject="Standup", start=dt.datetime(2024, 3, 4, 8, tzinfo=UTC),
                                end=dt.datetime(2024, 3, 4, 8, 15, tzinfo=UTC),
                                recurrence=WeeklyRecurrence(days=(0, 1, 2, 3, 4), start=dt.date(2024, 3, 4),
                                                            range_kind=calendar.NUMBERED, count=7))
    starts = list(series.occurrence_starts(*WEEK)) + list(series.occurrence_starts(WEEK[1], WEEK[1] + dt.timedelta(7)))
    assert [s.day for s in starts] == [4, 5, 6, 7, 8, 11, 12]
    huge = WeeklyRecurrence(days=tuple(range(7)), start=dt.date(2000, 1, 1), range_kind=calendar.NUMBERED,
                            count=10 ** 6)
    assert sum(1 for _ in huge.dates()) == calendar.MAX_OCCURRENCES


def test_the_seeded_week_expands_the_team_sync_and_occurrence_ids_find_their_series():
    store = new_store()
    alice = store.mailbox(ALICE)
    view = calendar.calendar_view(alice.distinguished["calendar"], *WEEK)
    assert [(i.subject, i.start.day, i.calendar_type) for i in view] == [
        ("Team sync", 4, "Occurrence"), ("Design review", 5, "Single"), ("Team sync", 6, "Occurrence"),
        ("Dentist", 6, "Single"), ("Customer call", 7, "Single"), ("Release day", 8, "Single")]
    occurrence = view[0]
    assert occurrence.id != view[2].id and occurrence.id.startswith("AAMkA") and ids.decode(occurrence.id) is None
    found = calendar.find_occurrence(alice, occurrence.id)
    assert found is not None and found.start == occurrence.start and found.key == occurrence.key
    # An id for a date the series has no occurrence on names nothing.
    tuesday = ids.occurrence_id(alice.guid, occurrence.folder.key, occurrence.key, occurrence.start + dt.timedelta(1))
    assert calendar.find_occurrence(alice, tuesday) is None
    bob_calendar = store.mailbox(BOB).distinguished["calendar"]
    assert [(i.subject, i.my_response) for i in bob_calendar.items.values()] == [("Design review", "Accept")]


def test_calendar_view_and_get_item_of_an_occurrence_over_ews():
    store = new_store()
    answer = ews.respond_ews(ORG, store, ALICE, envelope(
        '<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>Default</t:BaseShape></m:ItemShape>'
        '<m:CalendarView MaxEntriesReturned="3" StartDate="2024-03-04T00:00:00Z" EndDate="2024-03-11T00:00:00Z"/>'
        '<m:ParentFolderIds><t:DistinguishedFolderId Id="calendar"/></m:ParentFolderIds></m:FindItem>'))
    root = etree.fromstring(answer.body)
    folder = root.find(f".//{M}RootFolder")
    assert answer.outcome == "success" and folder.get("IncludesLastItemInRange") == "false"
    items = folder.findall(f"{T}Items/{T}CalendarItem")
    assert [i.findtext(f"{T}CalendarItemType") for i in items] == ["Occurrence", "Single", "Occurrence"]
    assert items[1].findtext(f"{T}LegacyFreeBusyStatus") == "Busy" and items[1].find(f"{T}RequiredAttendees") is None
    got = ews.respond_ews(ORG, store, ALICE, envelope(
        '<m:GetItem><m:ItemShape><t:BaseShape>AllProperties</t:BaseShape></m:ItemShape><m:ItemIds>'
        f'<t:ItemId Id="{items[2].find(f"{T}ItemId").get("Id")}"/></m:ItemIds></m:GetItem>'))
    item = etree.fromstring(got.body).find(f".//{T}CalendarItem")
    assert got.outcome == "success" and item.findtext(f"{T}Start") == "2024-03-06T09:30:00Z"
    assert item.findtext(f"{T}OriginalStart") == "2024-03-06T09:30:00Z" and item.find(f"{T}Recurrence") is None


def test_create_item_invites_in_org_attendees():
    store = new_store()
    bob = store.mailbox(BOB)
    answer = ews.respond_ews(ORG, store, ALICE, envelope(
        '<m:CreateItem SendMeetingInvitations="SendToAllAndSaveCopy"><m:Items><t:CalendarItem>'
        '<t:Subject>Planning</t:Subject><t:Start>2024-03-07T10:00:00Z</t:Start><t:End>2024-03-07T11:00:00Z</t:End>'
        '<t:Location>Room 3</t:Location><t:RequiredAttendees><t:Attendee><t:Mailbox>'
        f'<t:EmailAddress>{BOB}</t:EmailAddress></t:Mailbox></t:Attendee><t:Attendee><t:Mailbox>'
        '<t:EmailAddress>x@fabrikam.test</t:EmailAddress></t:Mailbox></t:Attendee></t:RequiredAttendees>'
        '</t:CalendarItem></m:Items></m:CreateItem>'))
    assert answer.outcome == "success" and b"<t:CalendarItem><t:ItemId" in answer.body
    requests = [i for i in bob.distinguished["inbox"].items.values() if i.item_class == calendar.MEETING_REQUEST]
    assert [r.subject for r in requests] == ["Planning"]
    copy = [i for i in bob.distinguished["calendar"].items.values() if i.subject == "Planning"]
    assert [(c.free_busy, c.my_response, c.location) for c in copy] == [("Tentative", "NoResponseReceived", "Room 3")]
    quiet = ews.respond_ews(ORG, store, ALICE, envelope(
        '<m:CreateItem><m:Items><t:CalendarItem><t:Subject>x</t:Subject><t:Start>2024-03-07T10:00:00Z</t:Start>'
        '<t:End>2024-03-07T11:00:00Z</t:End></t:CalendarItem></m:Items></m:CreateItem>'))
    assert quiet.error_code == "ErrorSendMeetingInvitationsRequired"


def availability(store, *emails, view="DetailedMerged", start="2024-03-06T09:00:00", end="2024-03-06T13:00:00",
                 bias=0):
    data = "".join(f"<t:MailboxData><t:Email><t:Address>{e}</t:Address></t:Email><t:AttendeeType>Required"
                   "</t:AttendeeType></t:MailboxData>" for e in emails)
    return ews.respond_ews(ORG, store, ALICE, envelope(
        f"<m:GetUserAvailabilityRequest><t:TimeZone><t:Bias>{bias}</t:Bias></t:TimeZone>"
        f"<m:MailboxDataArray>{data}</m:MailboxDataArray><t:FreeBusyViewOptions><t:TimeWindow>"
        f"<t:StartTime>{start}</t:StartTime><t:EndTime>{end}</t:EndTime></t:TimeWindow>"
        f"<t:MergedFreeBusyIntervalInMinutes>30</t:MergedFreeBusyIntervalInMinutes>"
        f"<t:RequestedView>{view}</t:RequestedView></t:FreeBusyViewOptions></m:GetUserAvailabilityRequest>"))


def test_free_busy_merges_the_calendar_and_hides_colleagues_details():
    store = new_store()
    answer = availability(store, ALICE, BOB, "nobody@contoso.test")
    root = etree.fromstring(answer.body)
    responses = root.findall(f".//{M}FreeBusyResponseArray/{M}FreeBusyResponse")
    assert [r.find(f"{M}ResponseMessage").get("ResponseClass") for r in responses] == ["Success", "Success", "Error"]
    assert answer.error_code == "ErrorMailRecipientNotFound"
    mine, bobs = (r.find(f"{M}FreeBusyView") for r in responses[:2])
    # 09:00-13:00 in half hours: team sync 09:30-10:00 busy, dentist 11:00-12:00 out of office.
    assert mine.findtext(f"{T}MergedFreeBusy") == "01003300".replace("1", "2")
    assert mine.findtext(f"{T}FreeBusyViewType") == "DetailedMerged"
    assert [e.findtext(f"{T}CalendarEventDetails/{T}Subject") for e in mine.iter(f"{T}CalendarEvent")] == [
        "Team sync", "Dentist"]
    assert bobs.findtext(f"{T}FreeBusyViewType") == "FreeBusyMerged" and bobs.findtext(f"{T}MergedFreeBusy") == "0" * 8
    shifted = etree.fromstring(availability(store, ALICE, bias=-60).body)    # UTC+1: local times an hour later
    assert [e.findtext(f"{T}StartTime") for e in shifted.iter(f"{T}CalendarEvent")] == ["2024-03-06T10:30:00",
                                                                                 "2024-03-06T12:00:00"]
    too_big = availability(store, ALICE, end="2024-06-06T09:00:00")
    assert too_big.status == 500 and too_big.error_code == "ErrorTimeIntervalTooBig"


def oof(store, body, user=ALICE):
    return ews.respond_ews(ORG, store, user, envelope(body))


def test_oof_settings_are_stored_per_mailbox_and_reset():
    store = new_store()
    set_answer = oof(store, f"<m:SetUserOofSettingsRequest><t:Mailbox><t:Address>{ALICE}</t:Address></t:Mailbox>"
                            "<t:UserOofSettings><t:OofState>Scheduled</t:OofState><t:ExternalAudience>Known"
                            "</t:ExternalAudience><t:Duration><t:StartTime>2025-01-03T00:00:00Z</t:StartTime>"
                            "<t:EndTime>2025-01-10T00:00:00Z</t:EndTime></t:Duration><t:InternalReply><t:Message>"
                            "Back on the 10th</t:Message></t:InternalReply><t:ExternalReply><t:Message>Away"
                            "</t:Message></t:ExternalReply></t:UserOofSettings></m:SetUserOofSettingsRequest>")
    assert set_answer.outcome == "success" and b"<m:SetUserOofSettingsResponse" in set_answer.body
    alice = store.mailbox(ALICE)
    assert alice.oof.state == "Scheduled" and not alice.oof.active(dt.datetime(2025, 1, 2, tzinfo=UTC))
    assert alice.oof.active(dt.datetime(2025, 1, 5, tzinfo=UTC))
    got = etree.fromstring(oof(store, f"<m:GetUserOofSettingsRequest><t:Mailbox><t:Address>{ALICE}</t:Address>"
                                      "</t:Mailbox></m:GetUserOofSettingsRequest>").body)
    settings = got.find(f".//{T}OofSettings")
    assert settings.findtext(f"{T}OofState") == "Scheduled" and settings.findtext(f"{T}ExternalAudience") == "Known"
    assert settings.findtext(f"{T}InternalReply/{T}Message") == "Back on the 10th"
    assert settings.findtext(f"{T}Duration/{T}EndTime") == "2025-01-10T00:00:00Z"
    bobs = oof(store, f"<m:GetUserOofSettingsRequest><t:Mailbox><t:Address>{BOB}</t:Address>"
                      "</t:Mailbox></m:GetUserOofSettingsRequest>")
    assert bobs.error_code == "ErrorAccessDenied"
    assert store.mailbox(BOB).oof.state == "Disabled"
    store.reset()
    assert store.mailbox(ALICE).oof.state == "Disabled"


@needs_netns
def test_exchangelib_views_the_week_reads_free_busy_and_sets_oof(tmp_path):
    out = run_in_netns(str(tmp_path), [([], [
        Check("calendar", f'"$PY" {CALENDAR_CLIENT} 127.0.0.1 53 {ALICE} P@ssw0rd-alice {BOB}')])])
    results = {}
    for line in out["calendar"].output.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result.pop("check")] = result
    assert "error" not in results, results.get("error") or out["calendar"].output
    assert results["view"]["items"] == [
        ["Team sync", "2024-03-04T09:30:00+00:00", "Occurrence"],
        ["Design review", "2024-03-05T14:00:00+00:00", "Single"],
        ["Team sync", "2024-03-06T09:30:00+00:00", "Occurrence"],
        ["Dentist", "2024-03-06T11:00:00+00:00", "Single"],
        ["Customer call", "2024-03-07T16:00:00+00:00", "Single"],
        ["Release day", "2024-03-08", "Single"]]
    assert results["view"]["attendees"] == [BOB] and results["view"]["organizer"] == ALICE
    assert results["created"]["bob_sees"] is True
    views = results["freebusy"]["views"]
    assert views[0]["merged"] == "02003300" and views[0]["type"] == "DetailedMerged"
    assert [e["subject"] for e in views[0]["events"]] == ["Team sync", "Dentist"]
    assert views[1]["type"] == "FreeBusyMerged"
    assert results["oof"] == {"before": "Disabled", "state": "Enabled", "internal": "Out until Monday",
                              "audience": "Known"}
    details = {e["detail"] for e in out["calendar"].kind("ews")}
    assert {"EWS FindItem", "EWS GetUserAvailabilityRequest", "EWS SetUserOofSettingsRequest",
            "EWS GetUserOofSettingsRequest"} <= details
