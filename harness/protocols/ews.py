"""Exchange Web Services at /EWS/Exchange.asmx, sans-IO: the SOAP envelope, RequestServerVersion, dispatch to the
operations (harness.protocols.ews_ops and the ews_* modules beside it, each with an OPERATIONS table) and
request-level SOAP faults, answering as Exchange 2013 SP1.

exchangelib probes EWS before anything else: an unauthenticated POST of a dummy ConvertId (answered 401 by the
HTTP layer) and, when Autodiscover gave no schema, an authenticated ConvertId whose reply must carry a
ServerVersionInfo header (an ErrorInvalidIdMalformed response message is what Exchange sends for the dummy id).
An operation this mock does not model is answered as Exchange answers an unknown one: an ErrorInvalidRequest fault.

Fault hook ``ews``: asked with the parsed request (its operation and mailbox) before the operation runs, so a
throttled CreateItem sends nothing; an EwsAnswer (built with the request's ``server_busy``/``fault``/``error``) is
sent instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Tuple, Union

from lxml import etree

from harness.hooks import hookspec
from harness.mailbox.store import MailboxContent, MailboxStore
from harness.org import Org
from harness.protocols.autodiscover_answer import XML_CONTENT_TYPE, parse_untrusted_xml, serialize
from harness.protocols.autodiscover_soap import SOAP_NS, version_parts
from harness.protocols.ews_xml import (
    ERRORS_NS,
    MESSAGES_NS,
    SYNC_LAST_IN_RANGE,
    TYPES_NS,
    EwsError,
    EwsFault,
    error_message,
    m,
)

__all__ = ["EwsAnswer", "EwsRequest", "respond_ews", "parse_ews", "execute_ews", "fault", "ews_hook", "MESSAGES_NS",
           "TYPES_NS"]

# RequestServerVersion values an Exchange 2013 SP1 server accepts (the types schema's ExchangeVersionType then).
SERVER_VERSIONS = ("Exchange2007", "Exchange2007_SP1", "Exchange2010", "Exchange2010_SP1", "Exchange2010_SP2",
                   "Exchange2013", "Exchange2013_SP1")


@dataclass(frozen=True)
class EwsAnswer:
    """What /EWS/Exchange.asmx answers; the site sends it as is and records an `ews` transcript line from it."""
    status: int           # HTTP status: 200 for response messages, 500 for a SOAP fault
    body: bytes
    outcome: str          # "success", "error" (some response message has ResponseClass Error) or "fault"
    error_code: str       # the first error ResponseCode or the fault code ("" on success)
    detail: str           # the operation, for the transcript
    content_type: str = XML_CONTENT_TYPE
    back_off_ms: Optional[int] = None   # ErrorServerBusy's BackOffMilliseconds, for the transcript
    chunks: Tuple[bytes, ...] = ()      # non-empty: sent chunked, one envelope a chunk (body unused)
    stream: Any = None                  # GetStreamingEvents: the ews_notify.NotificationStream the chunks open
    push: Any = None                    # Subscribe: a new push subscription (events.Subscription) to serve


def schema_version(build: int) -> str:
    """ServerVersionInfo's Version: Exchange 2013 SP1 (build 847) says V2_8, later CUs higher (CU23: V2_23)."""
    return "V2_23" if build >= 1497 else "V2_8"


def _envelope(org: Org) -> Tuple[etree._Element, etree._Element]:
    envelope = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"s": SOAP_NS})
    header = etree.SubElement(envelope, f"{{{SOAP_NS}}}Header")
    major, minor, build, revision = version_parts(org.exchange_version)
    etree.SubElement(header, f"{{{TYPES_NS}}}ServerVersionInfo", nsmap={"h": TYPES_NS},
                     MajorVersion=str(major), MinorVersion=str(minor), MajorBuildNumber=str(build),
                     MinorBuildNumber=str(revision), Version=schema_version(build))
    body = etree.SubElement(envelope, f"{{{SOAP_NS}}}Body")
    return envelope, body


SERVER_BUSY = "The server cannot service this request right now. Try again later."


def fault(org: Org, code: str, message: str, back_off_ms: Optional[int] = None, detail: str = "") -> EwsAnswer:
    """A request-level failure, as Exchange sends it: HTTP 500 and a SOAP fault whose detail repeats the code; a
    throttling fault (ErrorServerBusy) names the wait in MessageXml's BackOffMilliseconds value."""
    envelope, body = _envelope(org)
    fault_element = etree.SubElement(body, f"{{{SOAP_NS}}}Fault")
    etree.SubElement(fault_element, "faultcode", nsmap={"a": TYPES_NS}).text = f"a:{code}"
    faultstring = etree.SubElement(fault_element, "faultstring")
    faultstring.set("{http://www.w3.org/XML/1998/namespace}lang", "en-US")
    faultstring.text = message
    detail_element = etree.SubElement(fault_element, "detail")
    etree.SubElement(detail_element, f"{{{ERRORS_NS}}}ResponseCode", nsmap={"e": ERRORS_NS}).text = code
    etree.SubElement(detail_element, f"{{{ERRORS_NS}}}Message", nsmap={"e": ERRORS_NS}).text = message
    if back_off_ms is not None:
        message_xml = etree.SubElement(detail_element, f"{{{TYPES_NS}}}MessageXml", nsmap={"t": TYPES_NS})
        etree.SubElement(message_xml, f"{{{TYPES_NS}}}Value", Name="BackOffMilliseconds").text = str(back_off_ms)
    return EwsAnswer(500, serialize(envelope), "fault", code, detail or message, back_off_ms=back_off_ms)


def invalid_request(org: Org) -> EwsAnswer:
    return fault(org, "ErrorInvalidRequest", "The request is invalid.")


def _operation(root: etree._Element) -> Optional[etree._Element]:
    body = root.find(f"{{{SOAP_NS}}}Body")
    if body is None or len(body) == 0 or not isinstance(body[0].tag, str):
        return None
    request = body[0]
    return request if etree.QName(request).namespace == MESSAGES_NS else None


def _requested_version(root: etree._Element) -> Optional[str]:
    element = root.find(f"{{{SOAP_NS}}}Header/{{{TYPES_NS}}}RequestServerVersion")
    return None if element is None else element.get("Version", "")


@dataclass(frozen=True)
class EwsRequest:
    """A parsed EWS request: what the ``ews`` hook sees, and what ``execute_ews`` runs."""
    org: Org
    operation: str          # the element under soap:Body, e.g. "FindItem"
    root: etree._Element    # the whole envelope

    def server_busy(self, back_off_ms: int) -> EwsAnswer:
        """Exchange's throttling answer: an ErrorServerBusy SOAP fault with BackOffMilliseconds."""
        return fault(self.org, "ErrorServerBusy", SERVER_BUSY, back_off_ms, detail=f"EWS {self.operation}")

    def fault(self, code: str, message: str) -> EwsAnswer:
        return fault(self.org, code, message, detail=f"EWS {self.operation}")

    def error(self, code: str, text: str, values: Optional[Mapping[str, str]] = None) -> EwsAnswer:
        """HTTP 200 with one error response message for the whole request (ResponseClass Error); `values` become
        its MessageXml (t:Value Name=...), as Exchange's throttling errors name their policy."""
        envelope, messages = _response(self.org, self.operation)
        message = _request_error(messages, self.operation, EwsError(code, text))
        if values:
            message_xml = etree.Element(m("MessageXml"))
            for name, value in values.items():
                etree.SubElement(message_xml, f"{{{TYPES_NS}}}Value", Name=name).text = value
            message.find(m("DescriptiveLinkKey")).addnext(message_xml)
        return EwsAnswer(200, serialize(envelope), "error", code, f"EWS {self.operation}")


def _response(org: Org, operation: str) -> Tuple[etree._Element, etree._Element]:
    envelope, soap_body = _envelope(org)
    response = etree.SubElement(soap_body, m(f"{operation}Response"), nsmap={"m": MESSAGES_NS, "t": TYPES_NS})
    return envelope, etree.SubElement(response, m("ResponseMessages"))


def _request_error(messages: etree._Element, operation: str, error: EwsError) -> etree._Element:
    message = error_message(messages, operation, error)
    if operation in SYNC_LAST_IN_RANGE:   # exchangelib reads these before the ResponseCode; Exchange sends them
        etree.SubElement(message, m("SyncState"))
        etree.SubElement(message, m(SYNC_LAST_IN_RANGE[operation])).text = "true"
    return message


@hookspec(fires_in="services/site.py", means="the EWS answer sent instead of running the operation (before the "
                                             "store changes): throttling, store outages, moves")
def ews_hook(request: EwsRequest) -> EwsAnswer: ...


def _handler(operation: str) -> Optional[Callable[..., None]]:
    """The function running `operation`, from the operation modules (loaded with the first request)."""
    from harness.protocols import (
        ews_attachments,
        ews_availability,
        ews_copy_send,
        ews_folders,
        ews_names,
        ews_notify,
        ews_ops,
        ews_sync,
        ews_update,
    )
    for module in (ews_ops, ews_sync, ews_notify, ews_availability, ews_folders, ews_update, ews_copy_send,
                   ews_attachments, ews_names):
        handler: Optional[Callable[..., None]] = module.OPERATIONS.get(operation)
        if handler is not None:
            return handler
    return None


def parse_ews(org: Org, body: bytes) -> Union[EwsRequest, EwsAnswer]:
    """The request, or the SOAP fault Exchange answers a body that is no EWS request it serves."""
    root = parse_untrusted_xml(body)
    if root is None or etree.QName(root).namespace != SOAP_NS:
        return invalid_request(org)
    request = _operation(root)
    if request is None:
        return invalid_request(org)
    version = _requested_version(root)
    if version is not None and version not in SERVER_VERSIONS:
        return fault(org, "ErrorInvalidServerVersion", "The specified server version is invalid.")
    operation = etree.QName(request).localname
    if operation != "ConvertId" and _handler(operation) is None:
        return invalid_request(org)
    return EwsRequest(org, operation, root)


def execute_ews(parsed: EwsRequest, store: Optional[MailboxStore], email: Optional[str]) -> EwsAnswer:
    """Run one parsed request for the authenticated mailbox `email` against `store`."""
    from harness.protocols import ews_convert, ews_impersonation, ews_notify, ews_ops
    org, operation = parsed.org, parsed.operation
    request = _operation(parsed.root)
    assert request is not None    # parse_ews checked
    handler = _handler(operation)
    try:
        email = ews_impersonation.acting_mailbox(org, parsed.root, email)
    except EwsFault as error:
        return fault(org, error.code, error.text, detail=f"EWS {operation}")
    owner: Optional[MailboxContent] = store.mailbox(email) if store is not None and email else None
    envelope, messages = _response(org, operation)
    call: Optional[ews_ops.Call] = None
    if handler is None:       # ConvertId: needs no mailbox (exchangelib's version probe sends a dummy id)
        try:
            ews_convert.convert_id(request, messages)
        except EwsFault as error:
            return fault(org, error.code, error.text, detail=f"EWS {operation}")
    elif owner is None or store is None:
        _request_error(messages, operation, EwsError("ErrorMailboxStoreUnavailable",
                                                     "The mailbox database is temporarily unavailable."))
    else:
        call = ews_ops.Call(store, owner, request, messages, operation, org=org)
        try:
            handler(call)
        except EwsFault as error:
            return fault(org, error.code, error.text, detail=f"EWS {operation}")
        except EwsError as error:    # a request-wide error: one error message for the whole request
            del messages[:]
            _request_error(messages, operation, error)
            call.stream = call.push = None
    # The whole envelope: availability and OOF answers keep their ResponseMessage outside ResponseMessages.
    codes = [c.text or "" for c in envelope.iter(m("ResponseCode")) if c.text != "NoError"]
    outcome, code, detail = "error" if codes else "success", codes[0] if codes else "", f"EWS {operation}"
    if call is not None and call.stream is not None:
        stream = ews_notify.NotificationStream(call.store, call.owner, call.stream, lambda more: serialize(
            _envelope_of(org, operation, more)))
        pending = stream.notifications()   # the events already waiting go out at once, after ConnectionStatus OK
        return EwsAnswer(200, b"", outcome, code, detail, chunks=(serialize(envelope), *([pending] if pending else [])),
                         stream=stream)
    return EwsAnswer(200, serialize(envelope), outcome, code, detail, push=call.push if call is not None else None)


def _envelope_of(org: Org, operation: str, messages: etree._Element) -> etree._Element:
    envelope, empty = _response(org, operation)
    empty.getparent().replace(empty, messages)
    return envelope


def respond_ews(org: Org, store: Optional[MailboxStore], email: Optional[str], body: bytes) -> EwsAnswer:
    """Answer one EWS request from the authenticated mailbox `email` against `store` (no faults)."""
    parsed = parse_ews(org, body)
    return parsed if isinstance(parsed, EwsAnswer) else execute_ews(parsed, store, email)
