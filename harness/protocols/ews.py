"""Exchange Web Services at /EWS/Exchange.asmx, sans-IO: the SOAP envelope, RequestServerVersion, dispatch to the
operations (harness.protocols.ews_ops) and request-level SOAP faults, answering as Exchange 2013 SP1.

exchangelib probes EWS before anything else: an unauthenticated POST of a dummy ConvertId (answered 401 by the
HTTP layer) and, when Autodiscover gave no schema, an authenticated ConvertId whose reply must carry a
ServerVersionInfo header (an ErrorInvalidIdMalformed response message is what Exchange sends for the dummy id).
An operation this mock does not model is answered as Exchange answers an unknown one: an ErrorInvalidRequest fault.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from lxml import etree

from harness.mailbox.store import MailboxContent, MailboxStore
from harness.org import Org
from harness.protocols.autodiscover_answer import XML_CONTENT_TYPE, parse_untrusted_xml, serialize
from harness.protocols.autodiscover_soap import SOAP_NS, version_parts
from harness.protocols.ews_xml import ERRORS_NS, MESSAGES_NS, TYPES_NS, EwsError, error_message, m

__all__ = ["EwsAnswer", "respond_ews", "fault", "MESSAGES_NS", "TYPES_NS"]

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


def fault(org: Org, code: str, message: str) -> EwsAnswer:
    """A request-level failure, as Exchange sends it: HTTP 500 and a SOAP fault whose detail repeats the code."""
    envelope, body = _envelope(org)
    fault_element = etree.SubElement(body, f"{{{SOAP_NS}}}Fault")
    etree.SubElement(fault_element, "faultcode", nsmap={"a": TYPES_NS}).text = f"a:{code}"
    faultstring = etree.SubElement(fault_element, "faultstring")
    faultstring.set("{http://www.w3.org/XML/1998/namespace}lang", "en-US")
    faultstring.text = message
    detail = etree.SubElement(fault_element, "detail")
    etree.SubElement(detail, f"{{{ERRORS_NS}}}ResponseCode", nsmap={"e": ERRORS_NS}).text = code
    etree.SubElement(detail, f"{{{ERRORS_NS}}}Message", nsmap={"e": ERRORS_NS}).text = message
    return EwsAnswer(500, serialize(envelope), "fault", code, message)


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


def _convert_id(request: etree._Element, response_messages: etree._Element) -> None:
    for _ in request.iterfind(f"{m('SourceIds')}/*") if len(request) else []:
        error_message(response_messages, "ConvertId", EwsError("ErrorInvalidIdMalformed", "Id is malformed."))
    if len(response_messages) == 0:
        error_message(response_messages, "ConvertId", EwsError("ErrorInvalidIdMalformed", "Id is malformed."))


def respond_ews(org: Org, store: Optional[MailboxStore], email: Optional[str], body: bytes) -> EwsAnswer:
    """Answer one EWS request from the authenticated mailbox `email` against `store`."""
    from harness.protocols import ews_ops  # the operations: loaded with the first EWS request, not at start-up
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
    handler = ews_ops.OPERATIONS.get(operation)
    if operation != "ConvertId" and handler is None:
        return invalid_request(org)
    owner: Optional[MailboxContent] = store.mailbox(email) if store is not None and email else None
    envelope, soap_body = _envelope(org)
    response = etree.SubElement(soap_body, m(f"{operation}Response"), nsmap={"m": MESSAGES_NS, "t": TYPES_NS})
    messages = etree.SubElement(response, m("ResponseMessages"))
    if handler is None:
        _convert_id(request, messages)
    elif owner is None or store is None:
        error_message(messages, operation, EwsError("ErrorMailboxStoreUnavailable",
                                                    "The mailbox database is temporarily unavailable."))
    else:
        try:
            handler(ews_ops.Call(store, owner, request, messages, operation))
        except EwsError as error:    # a request-wide error: one error message for the whole request
            del messages[:]
            error_message(messages, operation, error)
    codes = [c.text or "" for c in messages.iter(m("ResponseCode")) if c.text != "NoError"]
    return EwsAnswer(200, serialize(envelope), "error" if codes else "success", codes[0] if codes else "",
                     f"EWS {operation}")
