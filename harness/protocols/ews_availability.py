"""EWS availability, sans-IO: GetUserAvailability (free/busy from the org's calendars), Get/SetUserOofSettings
(a mailbox's automatic replies) and GetServerTimeZones (what exchangelib asks before free/busy).

The availability and OOF operations answer outside the usual ResponseMessages list, as Exchange does:
GetUserAvailabilityResponse/FreeBusyResponseArray/FreeBusyResponse and Get/SetUserOofSettingsResponse/
ResponseMessage. Another mailbox's free/busy comes with the default calendar permission (free/busy time only): a
requested Detailed view is answered FreeBusy, DetailedMerged as FreeBusyMerged; one's own calendar in full.
"""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from lxml import etree

from harness.mailbox import calendar
from harness.mailbox.oof import EXTERNAL_AUDIENCES, OOF_STATES
from harness.mailbox.store import MailboxContent
from harness.protocols.ews_calendar import parse_time
from harness.protocols.ews_xml import ACCESS_DENIED, EwsError, EwsFault, error_message, m, success_message, t

if TYPE_CHECKING:
    from harness.protocols.ews_ops import Call

VIEWS = ("MergedOnly", "FreeBusy", "FreeBusyMerged", "Detailed", "DetailedMerged")
WITHOUT_DETAILS = {"Detailed": "FreeBusy", "DetailedMerged": "FreeBusyMerged"}
MAX_WINDOW = dt.timedelta(days=62)
NOT_FOUND = ("ErrorMailRecipientNotFound", "The e-mail address cannot be found.")
INVALID = ("ErrorInvalidRequest", "The request is invalid.")
UTC_ZONE = ("UTC", "(UTC) Coordinated Universal Time")


def _reply(call: "Call", name: str) -> etree._Element:
    """Turn the prepared <op>Response into Exchange's `name` element, without its ResponseMessages list."""
    response = call.messages.getparent()
    assert response is not None
    response.tag = m(name)
    response.remove(call.messages)
    return response


def _text(parent: etree._Element, name: str, value: object) -> etree._Element:
    element = etree.SubElement(parent, t(name))
    element.text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return element


# ---- GetUserAvailability --------------------------------------------------------------------------------------
def _bias(request: etree._Element) -> dt.timedelta:
    """The requester's time zone (UTC = local + Bias minutes); daylight saving is not applied."""
    try:
        return dt.timedelta(minutes=int(request.findtext(f"{t('TimeZone')}/{t('Bias')}") or "0"))
    except ValueError:
        raise EwsFault(*INVALID) from None


def _window_time(text: Optional[str], bias: dt.timedelta) -> dt.datetime:
    naive = text is not None and not text.strip().endswith("Z") and "+" not in text[10:] and "-" not in text[10:]
    try:
        value = parse_time(text)
    except EwsError:
        raise EwsFault(*INVALID) from None
    return value + bias if naive else value


def _local(value: dt.datetime, bias: dt.timedelta) -> str:
    return (value - bias).strftime("%Y-%m-%dT%H:%M:%S")


def merged_free_busy(events: List[calendar.CalendarItem], start: dt.datetime, end: dt.datetime,
                     interval: dt.timedelta) -> str:
    """One digit per interval from `start`: the strongest status of the events overlapping it (0 Free,
    1 Tentative, 2 Busy, 3 OOF)."""
    digits = []
    slot = start
    while slot < end:
        slot_end = slot + interval
        busiest = 0
        for event in events:
            if event.start < slot_end and event.end > slot:
                busiest = max(busiest, calendar.FREE_BUSY.index(event.free_busy))
        digits.append(str(busiest))
        slot = slot_end
    return "".join(digits)


def _free_busy_view(parent: etree._Element, owner: MailboxContent, view: str, start: dt.datetime,
                    end: dt.datetime, interval: dt.timedelta, bias: dt.timedelta) -> None:
    events = calendar.calendar_view(owner.distinguished["calendar"], start, end)
    element = etree.SubElement(parent, m("FreeBusyView"))
    _text(element, "FreeBusyViewType", view)
    if "Merged" in view:
        _text(element, "MergedFreeBusy", merged_free_busy(events, start, end, interval))
    if view != "MergedOnly":
        array = etree.SubElement(element, t("CalendarEventArray"))
        for event in events:
            item = etree.SubElement(array, t("CalendarEvent"))
            _text(item, "StartTime", _local(event.start, bias))
            _text(item, "EndTime", _local(event.end, bias))
            _text(item, "BusyType", event.free_busy)
            if view.startswith("Detailed"):
                details = etree.SubElement(item, t("CalendarEventDetails"))
                _text(details, "ID", event.id)
                _text(details, "Subject", event.subject)
                _text(details, "Location", event.location)
                _text(details, "IsMeeting", event.is_meeting)
                _text(details, "IsRecurring", event.recurrence is not None)
                _text(details, "IsException", False)
                _text(details, "IsReminderSet", False)
                _text(details, "IsPrivate", False)
    hours = etree.SubElement(element, t("WorkingHours"))
    zone = etree.SubElement(hours, t("TimeZone"))
    _text(zone, "Bias", 0)
    for name, month in (("StandardTime", 1), ("DaylightTime", 12)):
        part = etree.SubElement(zone, t(name))
        for field, value in (("Bias", 0), ("Time", "00:00:00"), ("DayOrder", 1 if month == 1 else 5),
                             ("Month", month), ("DayOfWeek", "Sunday")):
            _text(part, field, value)
    period = etree.SubElement(etree.SubElement(hours, t("WorkingPeriodArray")), t("WorkingPeriod"))
    _text(period, "DayOfWeek", "Monday Tuesday Wednesday Thursday Friday")
    _text(period, "StartTimeInMinutes", 480)
    _text(period, "EndTimeInMinutes", 1020)


def get_user_availability(call: "Call") -> None:
    request = call.request
    options = request.find(t("FreeBusyViewOptions"))
    if options is None:
        raise EwsFault(*INVALID)
    bias = _bias(request)
    start = _window_time(options.findtext(f"{t('TimeWindow')}/{t('StartTime')}"), bias)
    end = _window_time(options.findtext(f"{t('TimeWindow')}/{t('EndTime')}"), bias)
    try:
        minutes = int(options.findtext(t("MergedFreeBusyIntervalInMinutes")) or "30")
    except ValueError:
        raise EwsFault(*INVALID) from None
    requested = options.findtext(t("RequestedView")) or "DetailedMerged"
    if not 5 <= minutes <= 1440 or requested not in VIEWS or end <= start:
        raise EwsFault(*INVALID)
    if end - start > MAX_WINDOW:
        raise EwsFault("ErrorTimeIntervalTooBig", "The time window specified is larger than the maximum allowed "
                                                  "(62 days).")
    array = etree.SubElement(_reply(call, "GetUserAvailabilityResponse"), m("FreeBusyResponseArray"))
    for data in request.iterfind(f"{m('MailboxDataArray')}/{t('MailboxData')}"):
        response = etree.SubElement(array, m("FreeBusyResponse"))
        owner = call.store.mailbox(data.findtext(f"{t('Email')}/{t('Address')}") or "")
        if owner is None:
            error_message(response, "", EwsError(*NOT_FOUND)).tag = m("ResponseMessage")
            etree.SubElement(etree.SubElement(response, m("FreeBusyView")), t("FreeBusyViewType")).text = "None"
            continue
        success_message(response, "").tag = m("ResponseMessage")
        view = requested if owner is call.owner else WITHOUT_DETAILS.get(requested, requested)
        _free_busy_view(response, owner, view, start, end, dt.timedelta(minutes=minutes), bias)


# ---- Get/SetUserOofSettings -----------------------------------------------------------------------------------
def _oof_mailbox(call: "Call") -> MailboxContent:
    address = call.request.findtext(f"{t('Mailbox')}/{t('Address')}") or ""
    owner = call.store.mailbox(address)
    if owner is None:
        raise EwsError(*NOT_FOUND)
    if owner is not call.owner:
        raise EwsError(*ACCESS_DENIED)
    return owner


def _oof_response(call: "Call", name: str) -> Tuple[etree._Element, Optional[MailboxContent]]:
    """The response element with its ResponseMessage, and the caller's own mailbox (None after an error)."""
    response = _reply(call, name)
    try:
        owner = _oof_mailbox(call)
    except EwsError as error:
        error_message(response, "", error).tag = m("ResponseMessage")
        return response, None
    success_message(response, "").tag = m("ResponseMessage")
    return response, owner


def get_user_oof_settings(call: "Call") -> None:
    response, owner = _oof_response(call, "GetUserOofSettingsResponse")
    if owner is None:
        return
    oof, now = owner.oof, call.store.clock()
    element = etree.SubElement(response, t("OofSettings"))
    _text(element, "OofState", oof.state)
    _text(element, "ExternalAudience", oof.external_audience)
    duration = etree.SubElement(element, t("Duration"))
    start = oof.start or now.replace(minute=0, second=0)    # never scheduled: Exchange shows the coming day
    _text(duration, "StartTime", _utc(start))
    _text(duration, "EndTime", _utc(oof.end or start + dt.timedelta(days=1)))
    _text(etree.SubElement(element, t("InternalReply")), "Message", oof.internal_reply)
    _text(etree.SubElement(element, t("ExternalReply")), "Message", oof.external_reply)
    etree.SubElement(response, m("AllowExternalOof")).text = "All"


def _utc(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_user_oof_settings(call: "Call") -> None:
    settings = call.request.find(t("UserOofSettings"))
    state = settings.findtext(t("OofState")) if settings is not None else None
    audience = (settings.findtext(t("ExternalAudience")) if settings is not None else None) or "All"
    response, owner = _oof_response(call, "SetUserOofSettingsResponse")
    if owner is None:
        return
    try:
        if settings is None or state not in OOF_STATES or audience not in EXTERNAL_AUDIENCES:
            raise EwsError(*INVALID)
        start_text = settings.findtext(f"{t('Duration')}/{t('StartTime')}")
        end_text = settings.findtext(f"{t('Duration')}/{t('EndTime')}")
        start = parse_time(start_text) if start_text else None
        end = parse_time(end_text) if end_text else None
        if state == "Scheduled" and (start is None or end is None or end <= start):
            raise EwsError(*INVALID)
    except EwsError as error:
        del response[:]
        error_message(response, "", error)
        return
    oof = owner.oof
    oof.state, oof.external_audience = state, audience
    if start is not None and end is not None:
        oof.start, oof.end = start, end
    oof.internal_reply = settings.findtext(f"{t('InternalReply')}/{t('Message')}") or ""
    oof.external_reply = settings.findtext(f"{t('ExternalReply')}/{t('Message')}") or ""


# ---- GetServerTimeZones ---------------------------------------------------------------------------------------
def _utc_definition(parent: etree._Element) -> None:
    zone_id, name = UTC_ZONE
    definition = etree.SubElement(parent, t("TimeZoneDefinition"), Id=zone_id, Name=name)
    period_id = "trule:Microsoft/Registry/UTC/1-Standard"
    etree.SubElement(etree.SubElement(definition, t("Periods")), t("Period"), Bias="PT0M", Name="Standard",
                     Id=period_id)
    group = etree.SubElement(etree.SubElement(definition, t("TransitionsGroups")), t("TransitionsGroup"), Id="0")
    _text(etree.SubElement(group, t("Transition")), "To", period_id).set("Kind", "Period")
    transitions = etree.SubElement(definition, t("Transitions"))
    _text(etree.SubElement(transitions, t("Transition")), "To", "0").set("Kind", "Group")


def get_server_time_zones(call: "Call") -> None:
    """The definitions asked for (all when no Ids) among those modelled: UTC only; other ids are left out."""
    wanted = [e.text or "" for e in call.request.iterfind(f"{m('Ids')}/{t('Id')}")]
    message = success_message(call.messages, call.operation)
    definitions = etree.SubElement(message, m("TimeZoneDefinitions"))
    if not wanted or UTC_ZONE[0] in wanted:
        _utc_definition(definitions)


OPERATIONS: Dict[str, Callable[["Call"], None]] = {
    "GetUserAvailabilityRequest": get_user_availability,
    "GetUserOofSettingsRequest": get_user_oof_settings,
    "SetUserOofSettingsRequest": set_user_oof_settings,
    "GetServerTimeZones": get_server_time_zones,
}
