"""Meeting responses (Accept / TentativelyAccept / Decline, CancelCalendarItem) and modified / deleted occurrences:
the EWS core in-process, and exchangelib (unmodified, its own discovery) answering alice's meetings as bob and
editing one occurrence of her series."""
from __future__ import annotations

import datetime as dt
import json
import os

from lxml import etree

from harness.mailbox import calendar, meetings
from harness.protocols import ews
from tests.support import REPO
from tests.support.ews import ALICE, BOB, ORG, envelope, new_store
from tests.support.netns import Check, needs_netns, run_in_netns

M, T = f"{{{ews.MESSAGES_NS}}}", f"{{{ews.TYPES_NS}}}"
UTC = dt.timezone.utc
MEETINGS_CLIENT = os.path.join(REPO, "tests", "support", "exchangelib_ews_meetings.py")
CAROL = "carol@contoso.test"


def call(store, user, body):
    return ews.respond_ews(ORG, store, user, envelope(body))


def invite(store, subject="Planning", attendees=(BOB,)):
    people = "".join(f"<t:Attendee><t:Mailbox><t:EmailAddress>{a}</t:EmailAddress></t:Mailbox></t:Attendee>"
                     for a in attendees)
    answer = call(store, ALICE, '<m:CreateItem SendMeetingInvitations="SendToAllAndSaveCopy"><m:Items>'
                                f'<t:CalendarItem><t:Subject>{subject}</t:Subject><t:Start>2024-03-07T10:00:00Z'
                                '</t:Start><t:End>2024-03-07T11:00:00Z</t:End><t:LegacyFreeBusyStatus>OOF'
                                f'</t:LegacyFreeBusyStatus><t:RequiredAttendees>{people}</t:RequiredAttendees>'
                                '</t:CalendarItem></m:Items></m:CreateItem>')
    assert answer.outcome == "success", answer.body
    return store.mailbox(ALICE).find(etree.fromstring(answer.body).find(f".//{T}ItemId").get("Id"))


def request_in(store, user, subject="Planning"):
    inbox = store.mailbox(user).distinguished["inbox"]
    return [i for i in inbox.items.values() if i.item_class == calendar.MEETING_REQUEST and i.subject == subject][0]


def in_calendar(store, user, subject="Planning"):
    return [i for i in store.mailbox(user).distinguished["calendar"].items.values() if i.subject == subject]


def answer(store, user, kind, reference_id, disposition="SendAndSaveCopy", body=""):
    attribute = f' MessageDisposition="{disposition}"' if disposition else ""
    return call(store, user, f'<m:CreateItem{attribute}><m:Items><t:{kind}>{body}<t:ReferenceItemId '
                             f'Id="{reference_id}"/></t:{kind}></m:Items></m:CreateItem>')


def test_accepting_a_request_answers_the_organizer_and_books_the_attendee():
    store = new_store()
    meeting = invite(store, attendees=(BOB, CAROL))
    request = request_in(store, BOB)
    sent = answer(store, BOB, "AcceptItem", request.id, body='<t:Body BodyType="Text">See you</t:Body>')
    assert sent.outcome == "success" and etree.fromstring(sent.body).find(f".//{M}Items") is not None
    assert len(etree.fromstring(sent.body).find(f".//{M}Items")) == 0      # sent: no item named
    bob = store.mailbox(BOB)
    assert [(i.my_response, i.free_busy) for i in in_calendar(store, BOB)] == [("Accept", "OOF")]  # the organizer's
    assert request.key not in bob.distinguished["inbox"].items                                  # status
    assert [i.subject for i in bob.distinguished["deleteditems"].items.values()] == ["Planning"]
    assert [i.subject for i in bob.distinguished["sentitems"].items.values()] == ["Accepted: Planning"]
    responses = [i for i in store.mailbox(ALICE).distinguished["inbox"].items.values()
                 if i.item_class.startswith("IPM.Schedule.Meeting.Resp")]
    assert [(r.subject, r.item_class, r.body, r.sender[1]) for r in responses] == [
        ("Accepted: Planning", "IPM.Schedule.Meeting.Resp.Pos", "See you", BOB)]
    got = call(store, ALICE, '<m:GetItem><m:ItemShape><t:BaseShape>AllProperties</t:BaseShape></m:ItemShape>'
                             f'<m:ItemIds><t:ItemId Id="{meeting.id}"/><t:ItemId Id="{responses[0].id}"/>'
                             '</m:ItemIds></m:GetItem>')
    root = etree.fromstring(got.body)
    attendees = root.findall(f".//{T}CalendarItem/{T}RequiredAttendees/{T}Attendee")
    assert [(a.findtext(f"{T}Mailbox/{T}EmailAddress"), a.findtext(f"{T}ResponseType")) for a in attendees] == [
        (BOB, "Accept"), (CAROL, "Unknown")]
    response = root.find(f".//{T}MeetingResponse")
    assert response.findtext(f"{T}ResponseType") == "Accept" and response.findtext(f"{T}UID") == meeting.uid
    assert response.findtext(f"{T}Start") == "2024-03-07T10:00:00Z"


def test_tentative_from_the_calendar_and_decline_of_the_request():
    store = new_store()
    meeting = invite(store)
    copy = in_calendar(store, BOB)[0]
    assert answer(store, BOB, "TentativelyAcceptItem", copy.id, disposition="SendOnly").outcome == "success"
    assert (copy.my_response, copy.free_busy) == ("Tentative", "Tentative")
    bob = store.mailbox(BOB)
    assert not bob.distinguished["sentitems"].items                    # SendOnly keeps no copy
    assert request_in(store, BOB).folder is bob.distinguished["inbox"]    # answered from the calendar: it stays
    assert meeting.responses == ((BOB, "Tentative"),)
    assert answer(store, BOB, "DeclineItem", request_in(store, BOB).id).outcome == "success"
    assert in_calendar(store, BOB) == [] and meeting.responses == ((BOB, "Decline"),)
    assert sorted(i.subject for i in bob.distinguished["deleteditems"].items.values()) == ["Planning", "Planning"]
    negative = [i for i in store.mailbox(ALICE).distinguished["inbox"].items.values()
                if i.item_class == "IPM.Schedule.Meeting.Resp.Neg"]
    assert [n.subject for n in negative] == ["Declined: Planning"]


def test_save_only_keeps_a_draft_and_changes_nothing_else():
    store = new_store()
    meeting = invite(store)
    saved = answer(store, BOB, "AcceptItem", request_in(store, BOB).id, disposition="SaveOnly")
    item = etree.fromstring(saved.body).find(f".//{M}Items/{T}MeetingResponse/{T}ItemId")
    assert saved.outcome == "success" and item is not None
    draft = store.mailbox(BOB).find(item.get("Id"))
    assert draft.folder is store.mailbox(BOB).distinguished["drafts"] and draft.subject == "Accepted: Planning"
    assert in_calendar(store, BOB)[0].my_response == "NoResponseReceived" and meeting.responses == ()


def test_refused_answers():
    store = new_store()
    meeting = invite(store)
    own = answer(store, ALICE, "AcceptItem", meeting.id)
    assert own.error_code == "ErrorCalendarIsOrganizerForAccept"
    assert answer(store, ALICE, "DeclineItem", meeting.id).error_code == "ErrorCalendarIsOrganizerForDecline"
    message = next(iter(store.mailbox(BOB).distinguished["inbox"].items.values()))
    assert message.item_class == "IPM.Note"
    assert answer(store, BOB, "AcceptItem", message.id).error_code == "ErrorInvalidReferenceItem"
    missing = answer(store, BOB, "AcceptItem", request_in(store, BOB).id, disposition=None)
    assert missing.error_code == "ErrorMessageDispositionRequired"
    assert answer(store, BOB, "CancelCalendarItem", in_calendar(store, BOB)[0].id).error_code == \
        "ErrorCalendarIsNotOrganizer"
    assert meeting.responses == () and in_calendar(store, BOB)[0].my_response == "NoResponseReceived"


def test_cancelling_a_meeting_tells_the_attendees():
    store = new_store()
    meeting = invite(store)
    assert answer(store, ALICE, "CancelCalendarItem", meeting.id).outcome == "success"
    alice, bob = store.mailbox(ALICE), store.mailbox(BOB)
    assert meeting.key not in alice.distinguished["calendar"].items
    assert [i.subject for i in alice.distinguished["deleteditems"].items.values()] == ["Planning"]
    cancellations = [i for i in bob.distinguished["inbox"].items.values() if i.item_class == meetings.CANCELED]
    assert [c.subject for c in cancellations] == ["Canceled: Planning"]
    copy = in_calendar(store, BOB, "Canceled: Planning")[0]
    assert (copy.is_cancelled, copy.free_busy) == (True, "Free")
    got = call(store, BOB, '<m:GetItem><m:ItemShape><t:BaseShape>Default</t:BaseShape></m:ItemShape><m:ItemIds>'
                           f'<t:ItemId Id="{cancellations[0].id}"/><t:ItemId Id="{copy.id}"/></m:ItemIds>'
                           '</m:GetItem>')
    root = etree.fromstring(got.body)
    assert root.find(f".//{T}MeetingCancellation") is not None
    assert root.findtext(f".//{T}CalendarItem/{T}IsCancelled") == "true"


WEEK = '<m:CalendarView StartDate="2024-03-04T00:00:00Z" EndDate="2024-03-11T00:00:00Z"/>'


def week(store):
    answer = call(store, ALICE, '<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>Default</t:BaseShape>'
                                f'</m:ItemShape>{WEEK}<m:ParentFolderIds><t:DistinguishedFolderId Id="calendar"/>'
                                '</m:ParentFolderIds></m:FindItem>')
    items = etree.fromstring(answer.body).findall(f".//{T}Items/{T}CalendarItem")
    return [(i.findtext(f"{T}Subject"), i.findtext(f"{T}Start"), i.findtext(f"{T}CalendarItemType"),
             i.find(f"{T}ItemId").get("Id")) for i in items if i.findtext(f"{T}Subject").startswith("Team sync")]


def update(store, item_id, fields):
    updates = "".join(f'<t:SetItemField><t:FieldURI FieldURI="{uri}"/><t:CalendarItem><t:{uri.split(":")[1]}>'
                      f'{value}</t:{uri.split(":")[1]}></t:CalendarItem></t:SetItemField>' for uri, value in fields)
    return call(store, ALICE, '<m:UpdateItem ConflictResolution="AlwaysOverwrite" '
                              'SendMeetingInvitationsOrCancellations="SendToNone"><m:ItemChanges><t:ItemChange>'
                              f'<t:ItemId Id="{item_id}"/><t:Updates>{updates}</t:Updates></t:ItemChange>'
                              '</m:ItemChanges></m:UpdateItem>')


def test_modifying_and_deleting_occurrences():
    store = new_store()
    monday, wednesday = week(store)
    changed = update(store, wednesday[3], [("item:Subject", "Team sync (moved)"),
                                           ("calendar:Start", "2024-03-06T13:00:00Z"),
                                           ("calendar:End", "2024-03-06T13:45:00Z")])
    assert changed.outcome == "success", changed.body
    assert etree.fromstring(changed.body).find(f".//{T}ItemId").get("Id") == wednesday[3]
    deleted = call(store, ALICE, f'<m:DeleteItem DeleteType="MoveToDeletedItems"><m:ItemIds><t:ItemId '
                                 f'Id="{monday[3]}"/></m:ItemIds></m:DeleteItem>')
    assert deleted.outcome == "success"
    assert [v[:3] for v in week(store)] == [("Team sync (moved)", "2024-03-06T13:00:00Z", "Exception")]
    alice = store.mailbox(ALICE)
    assert not alice.distinguished["deleteditems"].items          # the series stays where it is
    master = [i for i in alice.distinguished["calendar"].items.values() if i.subject == "Team sync"][0]
    got = call(store, ALICE, '<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>'
                             '<t:FieldURI FieldURI="calendar:ModifiedOccurrences"/><t:FieldURI '
                             'FieldURI="calendar:DeletedOccurrences"/></t:AdditionalProperties></m:ItemShape>'
                             f'<m:ItemIds><t:ItemId Id="{master.id}"/><t:ItemId Id="{wednesday[3]}"/>'
                             '</m:ItemIds></m:GetItem>')
    root = etree.fromstring(got.body)
    occurrence = root.find(f".//{T}ModifiedOccurrences/{T}Occurrence")
    assert occurrence.find(f"{T}ItemId").get("Id") == wednesday[3]
    assert [occurrence.findtext(f"{T}{n}") for n in ("Start", "End", "OriginalStart")] == [
        "2024-03-06T13:00:00Z", "2024-03-06T13:45:00Z", "2024-03-06T09:30:00Z"]
    assert [d.text for d in root.iterfind(f".//{T}DeletedOccurrence/{T}Start")] == ["2024-03-04T09:30:00Z"]
    assert len(root.findall(f".//{T}ModifiedOccurrences")) == 1     # the exception itself lists none
    # The deleted occurrence's id is refused; the next week's occurrences are untouched.
    gone = call(store, ALICE, f'<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape><m:ItemIds>'
                              f'<t:ItemId Id="{monday[3]}"/></m:ItemIds></m:GetItem>')
    assert gone.error_code == "ErrorCalendarOccurrenceIsDeletedFromRecurrence"
    later = calendar.calendar_view(alice.distinguished["calendar"], dt.datetime(2024, 3, 11, tzinfo=UTC),
                                   dt.datetime(2024, 3, 14, tzinfo=UTC))
    assert [(i.subject, i.start.day) for i in later if i.subject.startswith("Team")] == [("Team sync", 11),
                                                                                        ("Team sync", 13)]


def test_an_occurrence_may_not_cross_its_neighbours():
    store = new_store()
    _, wednesday = week(store)
    for day in ("04", "11", "12"):    # onto the previous occurrence's day, the next one's, and past it
        crossing = update(store, wednesday[3], [("calendar:Start", f"2024-03-{day}T09:30:00Z"),
                                                ("calendar:End", f"2024-03-{day}T10:00:00Z")])
        assert crossing.error_code == "ErrorOccurrenceCrossingBoundary", day
    assert update(store, wednesday[3], [("calendar:Start", "2024-03-05T09:30:00Z"),
                                        ("calendar:End", "2024-03-05T10:00:00Z")]).outcome == "success"
    backwards = update(store, wednesday[3], [("calendar:End", "2024-03-05T09:00:00Z")])
    assert backwards.error_code == "ErrorCalendarEndDateIsEarlierThanStartDate"


@needs_netns
def test_exchangelib_answers_meetings_and_edits_an_occurrence(tmp_path):
    out = run_in_netns(str(tmp_path), [([], [
        Check("meetings", f'"$PY" {MEETINGS_CLIENT} 127.0.0.1 53 {ALICE} P@ssw0rd-alice {BOB} P@ssw0rd-bob')])])
    results = {}
    for line in out["meetings"].output.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result.pop("check")] = result
    assert "error" not in results, results.get("error") or out["meetings"].output
    assert results["requests"]["subjects"] == ["Lunch", "Offsite", "Planning", "Retro"]
    attendee = results["attendee"]
    assert attendee["calendar"] == {"Planning": ["Accept", "Busy"], "Offsite": ["Tentative", "Tentative"]}
    assert attendee["requests_left"] == ["Lunch", "Offsite"]
    assert attendee["deleted"] == ["Planning", "Retro", "Retro"]
    assert attendee["sent"] == ["Accepted: Planning", "Declined: Retro", "Tentative: Offsite"]
    organizer = results["organizer"]
    assert organizer["inbox"] == [["MeetingResponse", "Accepted: Planning", "IPM.Schedule.Meeting.Resp.Pos"],
                                  ["MeetingResponse", "Declined: Retro", "IPM.Schedule.Meeting.Resp.Neg"],
                                  ["MeetingResponse", "Tentative: Offsite", "IPM.Schedule.Meeting.Resp.Tent"]]
    assert organizer["attendees"] == {"Planning": [[BOB, "Accept"]], "Offsite": [[BOB, "Tentative"]],
                                      "Retro": [[BOB, "Decline"]]}
    assert results["cancelled"] == {"inbox": ["Canceled: Lunch"], "attendee_item": ["Canceled: Lunch", True],
                                    "organizer_left": 0}
    occurrences = results["occurrences"]
    assert occurrences["view"] == [["Team sync (moved)", "2024-03-06T13:00:00+00:00", "Exception"]]
    assert occurrences["modified"] == [["2024-03-06T13:00:00+00:00", "2024-03-06T13:45:00+00:00",
                                        "2024-03-06T09:30:00+00:00"]]
    assert occurrences["deleted"] == ["2024-03-04T09:30:00+00:00"]
    details = [e["detail"] for e in out["meetings"].kind("ews")]
    assert "EWS CreateItem" in details and "EWS UpdateItem" in details and "EWS DeleteItem" in details
