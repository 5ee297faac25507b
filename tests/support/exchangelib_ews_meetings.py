"""exchangelib, unmodified, through its own Autodiscover: meeting responses between two mailboxes (accept,
tentatively accept, decline, cancel) and one occurrence of a series modified and another deleted; one JSON line per
check.

Usage: exchangelib_ews_meetings.py DNS_HOST DNS_PORT ORGANIZER PASSWORD ATTENDEE PASSWORD
Certificate trust comes from REQUESTS_CA_BUNDLE (requests' documented variable).
"""
import json
import sys

from exchangelib import Account, CalendarItem, Credentials, EWSDateTime, EWSTimeZone
from exchangelib.autodiscover import Autodiscovery
from exchangelib.items import MeetingCancellation, MeetingRequest, MeetingResponse

UTC = EWSTimeZone("UTC")


def emit(check: str, **result) -> None:
    print(json.dumps({"check": check, **result}, default=str), flush=True)


def at(*parts) -> EWSDateTime:
    return EWSDateTime(*parts, tzinfo=UTC)


def invite(organizer: Account, subject: str, day: int, attendee: str) -> CalendarItem:
    item = CalendarItem(account=organizer, folder=organizer.calendar, subject=subject, start=at(2024, 3, day, 10),
                        end=at(2024, 3, day, 11), required_attendees=[attendee])
    item.save(send_meeting_invitations="SendToAllAndSaveCopy")
    return item


def responses(organizer: Account) -> None:
    by_subject = {i.subject: i for i in organizer.calendar.filter(subject__in=["Planning", "Offsite", "Retro"])}
    emit("organizer", inbox=sorted([type(i).__name__, i.subject, i.item_class] for i in organizer.inbox.all()
                                   if isinstance(i, MeetingResponse)),
         attendees={s: [[a.mailbox.email_address, a.response_type] for a in i.required_attendees]
                    for s, i in by_subject.items()})


def run(organizer: Account, attendee: Account) -> None:
    address = attendee.primary_smtp_address
    for subject, day in (("Planning", 11), ("Offsite", 12), ("Retro", 13), ("Lunch", 14)):
        invite(organizer, subject, day, address)
    requests = {i.subject: i for i in attendee.inbox.all() if isinstance(i, MeetingRequest)}
    emit("requests", subjects=sorted(requests))
    requests["Planning"].accept(body="See you there")
    attendee.calendar.get(subject="Offsite").tentatively_accept()
    requests["Retro"].decline()
    mine = {i.subject: [i.my_response_type, i.legacy_free_busy_status]
            for i in attendee.calendar.filter(subject__in=["Planning", "Offsite", "Retro"])}
    emit("attendee", calendar=mine, requests_left=sorted(i.subject for i in attendee.inbox.all()
                                                         if isinstance(i, MeetingRequest)),
         deleted=sorted(i.subject for i in attendee.trash.all()), sent=sorted(i.subject for i in attendee.sent.all()))
    responses(organizer)
    organizer.calendar.get(subject="Lunch").cancel()
    lunch = attendee.calendar.get(subject="Canceled: Lunch")
    emit("cancelled", inbox=sorted(i.subject for i in attendee.inbox.all() if isinstance(i, MeetingCancellation)),
         attendee_item=[lunch.subject, lunch.is_cancelled] if lunch else None,
         organizer_left=organizer.calendar.filter(subject="Lunch").count())
    week = list(organizer.calendar.view(start=at(2024, 3, 4), end=at(2024, 3, 11)))
    monday, wednesday = [i for i in week if i.subject == "Team sync"]
    wednesday.subject = "Team sync (moved)"
    wednesday.start, wednesday.end = at(2024, 3, 6, 13), at(2024, 3, 6, 13, 45)
    wednesday.save()
    monday.delete()
    week = list(organizer.calendar.view(start=at(2024, 3, 4), end=at(2024, 3, 11)))
    master = organizer.calendar.get(subject="Team sync")
    emit("occurrences", view=[[i.subject, i.start.astimezone(UTC).isoformat(), i.type] for i in week
                              if i.subject.startswith("Team sync")],
         modified=[[o.start.isoformat(), o.end.isoformat(), o.original_start.isoformat()]
                   for o in master.modified_occurrences or []],
         deleted=[o.start.isoformat() for o in master.deleted_occurrences or []])


def main() -> None:
    dns_host, dns_port, organizer, organizer_password, attendee, attendee_password = sys.argv[1:7]
    Autodiscovery.DNS_RESOLVER_KWARGS = {"configure": False}
    Autodiscovery.DNS_RESOLVER_ATTRS = {"nameservers": [dns_host], "port": int(dns_port), "timeout": 3}
    try:
        accounts = [Account(email, credentials=Credentials(email, password), autodiscover=True,
                            default_timezone=UTC)
                    for email, password in ((organizer, organizer_password), (attendee, attendee_password))]
        run(*accounts)
    except Exception as exc:  # report the client's own verdict, whatever it is
        import traceback
        emit("error", error=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc()[-2000:])


if __name__ == "__main__":
    main()
