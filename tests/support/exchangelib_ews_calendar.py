"""exchangelib, unmodified, through its own Autodiscover: alice's calendar week, a meeting with a colleague,
free/busy and OOF; one JSON line per check.

Usage: exchangelib_ews_calendar.py DNS_HOST DNS_PORT EMAIL PASSWORD COLLEAGUE
Certificate trust comes from REQUESTS_CA_BUNDLE (requests' documented variable).
"""
import datetime
import json
import sys

from exchangelib import Account, CalendarItem, Credentials, EWSDateTime, EWSTimeZone, OofSettings
from exchangelib.autodiscover import Autodiscovery

UTC = EWSTimeZone("UTC")


def emit(check: str, **result) -> None:
    print(json.dumps({"check": check, **result}, default=str), flush=True)


def at(*parts) -> EWSDateTime:
    return EWSDateTime(*parts, tzinfo=UTC)


def when(value) -> str:
    """A timed item's start in UTC; an all-day item's is a date."""
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime.datetime) else value.isoformat()


def run(account: Account, colleague: str) -> None:
    week = list(account.calendar.view(start=at(2024, 3, 4), end=at(2024, 3, 11)))
    review = [i for i in week if i.subject == "Design review"][0]
    emit("view", items=[[i.subject, when(i.start), i.type] for i in week],
         attendees=[a.mailbox.email_address for a in review.required_attendees or []],
         organizer=review.organizer.email_address)
    CalendarItem(account=account, folder=account.calendar, subject="Planning", start=at(2024, 3, 7, 10),
                 end=at(2024, 3, 7, 11), required_attendees=[colleague]).save(
        send_meeting_invitations="SendToAllAndSaveCopy")
    views = list(account.protocol.get_free_busy_info(
        accounts=[(account, "Organizer", False), (colleague, "Required", False)],
        start=at(2024, 3, 6, 9), end=at(2024, 3, 6, 13)))
    emit("freebusy", views=[{"type": v.view_type, "merged": v.merged,
                             "events": [{"start": e.start, "busy": e.busy_type,
                                         "subject": e.details.subject if e.details else None}
                                        for e in v.calendar_events or []]} for v in views])
    colleague_view = account.protocol.get_free_busy_info(accounts=[(colleague, "Required", False)],
                                                         start=at(2024, 3, 7, 10), end=at(2024, 3, 7, 11))
    emit("created", bob_sees=next(iter(colleague_view)).merged == "11")
    before = account.oof_settings.state
    account.oof_settings = OofSettings(state=OofSettings.ENABLED, external_audience="Known",
                                       internal_reply="Out until Monday", external_reply="Away")
    after = account.oof_settings
    emit("oof", before=before, state=after.state, internal=after.internal_reply, audience=after.external_audience)


def main() -> None:
    dns_host, dns_port, email, password, colleague = sys.argv[1:6]
    Autodiscovery.DNS_RESOLVER_KWARGS = {"configure": False}
    Autodiscovery.DNS_RESOLVER_ATTRS = {"nameservers": [dns_host], "port": int(dns_port), "timeout": 3}
    try:
        credentials = Credentials(email, password)
        run(Account(email, credentials=credentials, autodiscover=True, default_timezone=UTC), colleague)
    except Exception as exc:  # report the client's own verdict, whatever it is
        emit("error", error=f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
