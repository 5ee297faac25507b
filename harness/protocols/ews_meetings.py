"""EWS meeting messages, sans-IO: CreateItem of the response objects t:AcceptItem, t:TentativelyAcceptItem,
t:DeclineItem and t:CancelCalendarItem over harness.mailbox.meetings, and the fields of t:MeetingRequest /
t:MeetingResponse / t:MeetingCancellation (MeetingMessageType's, then Start, End and Location).

Sent (MessageDisposition SendOnly / SendAndSaveCopy) the answer's m:Items is empty, as Exchange's documented answer
to an accepted meeting request; saved (SaveOnly) it names the draft in Drafts or SavedItemFolderId.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from lxml import etree

from harness.mailbox import meetings
from harness.mailbox.calendar import CalendarItem, MeetingMessage
from harness.mailbox.store import Folder, Item
from harness.protocols import ews_writer, ews_xml
from harness.protocols.ews_xml import EwsError, item_id_only, t, timestamp

if TYPE_CHECKING:
    from harness.protocols.ews_ops import Call

RESPONSES = {"AcceptItem": meetings.ACCEPT, "TentativelyAcceptItem": meetings.TENTATIVE_ACCEPT,
             "DeclineItem": meetings.DECLINE}
CANCEL = "CancelCalendarItem"
CREATES = frozenset(RESPONSES) | {CANCEL}
INVALID_REFERENCE = ("ErrorInvalidReferenceItem", "The reference item does not support the requested "
                                                  "operation.")                                   # text guessed
DISPOSITION_REQUIRED = ("ErrorMessageDispositionRequired", "MessageDisposition attribute is required.")  # guessed
IS_ORGANIZER = {  # texts guessed
    meetings.ACCEPT: ("ErrorCalendarIsOrganizerForAccept", "An organizer cannot accept the meeting."),
    meetings.TENTATIVE_ACCEPT: ("ErrorCalendarIsOrganizerForTentative",
                                "An organizer cannot tentatively accept the meeting."),
    meetings.DECLINE: ("ErrorCalendarIsOrganizerForDecline", "An organizer cannot decline the meeting."),
}
NOT_ORGANIZER = ("ErrorCalendarIsNotOrganizer", "Only the organizer can cancel the meeting.")          # guessed


def create(call: "Call", element: etree._Element, reference: Item, items: etree._Element,
           saved_in: Optional[Folder]) -> None:
    """One response object of a CreateItem: answer or cancel the meeting `reference` names."""
    disposition = call.request.get("MessageDisposition")
    if disposition not in ("SaveOnly", "SendOnly", "SendAndSaveCopy"):
        raise EwsError(*DISPOSITION_REQUIRED)
    owner = call.owner
    body = element.findtext(t("Body")) or ""
    send = disposition != "SaveOnly"
    copy_in = (saved_in or owner.distinguished["sentitems"]) if disposition == "SendAndSaveCopy" else None
    name = etree.QName(element).localname
    try:
        if name == CANCEL:
            if not isinstance(reference, CalendarItem):
                raise meetings.NotAMeeting(reference.subject)
            saved = meetings.cancel(call.store, reference, body=body, send=send, copy_in=copy_in, draft_in=saved_in)
        else:
            saved = meetings.respond(call.store, reference, RESPONSES[name], body=body, send=send, copy_in=copy_in,
                                     draft_in=saved_in)
    except meetings.NotAMeeting:
        raise EwsError(*INVALID_REFERENCE) from None
    except meetings.IsOrganizer:
        raise EwsError(*IS_ORGANIZER[RESPONSES[name]]) from None
    except meetings.NotOrganizer:
        raise EwsError(*NOT_ORGANIZER) from None
    if saved is not None:
        item_id_only(items, saved)


def _meeting(write: Callable[[Any, Any], object]) -> ews_xml.ItemWriter:
    return lambda e, i: isinstance(i, MeetingMessage) and write(e, i)


ews_xml.MEETING_FIELDS[:] = [   # MeetingMessageType's fields, then the subtypes' Start, End, Location
    ("meeting:ResponseType", _meeting(lambda e, i: ews_writer.text(e, "ResponseType", i.response))),
    ("calendar:UID", _meeting(lambda e, i: ews_writer.text(e, "UID", i.uid))),
    ("calendar:Start", _meeting(lambda e, i: ews_writer.text(e, "Start", timestamp(i.start)))),
    ("calendar:End", _meeting(lambda e, i: ews_writer.text(e, "End", timestamp(i.end)))),
    ("calendar:Location", _meeting(lambda e, i: ews_writer.text(e, "Location", i.location))),
]
