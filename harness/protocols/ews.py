"""The smallest EWS surface (/EWS/Exchange.asmx) clients touch right after Autodiscover, sans-IO.

exchangelib probes EWS before anything else: an unauthenticated POST of a dummy ConvertId (answered 401 by the
HTTP layer) and, when Autodiscover gave no schema, an authenticated ConvertId whose reply must carry a
ServerVersionInfo header (an ErrorInvalidIdMalformed response message is what Exchange sends for the dummy id).
Every other operation is answered with a per-operation ErrorInvalidOperation until the mock models mail items.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from lxml import etree

from harness.org import Org
from harness.protocols.autodiscover_answer import XML_CONTENT_TYPE, parse_untrusted_xml, serialize
from harness.protocols.autodiscover_soap import SOAP_NS, version_parts

MESSAGES_NS = "http://schemas.microsoft.com/exchange/services/2006/messages"
TYPES_NS = "http://schemas.microsoft.com/exchange/services/2006/types"


@dataclass(frozen=True)
class EwsAnswer:
    """What /EWS/Exchange.asmx answers; the site sends it as is and records an `ews` transcript line from it."""
    status: int           # HTTP status: 200 for a response message, 500 for a SOAP fault
    body: bytes
    outcome: str          # "error" (a response message with ResponseClass Error) or "fault"
    error_code: str       # the EWS ResponseCode or fault code
    detail: str           # human reason, for the transcript
    content_type: str = XML_CONTENT_TYPE


def _envelope(org: Org) -> Tuple[etree._Element, etree._Element]:
    envelope = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"s": SOAP_NS})
    header = etree.SubElement(envelope, f"{{{SOAP_NS}}}Header")
    major, minor, build, revision = version_parts(org.exchange_version)
    etree.SubElement(header, f"{{{TYPES_NS}}}ServerVersionInfo", nsmap={"h": TYPES_NS},
                     MajorVersion=str(major), MinorVersion=str(minor), MajorBuildNumber=str(build),
                     MinorBuildNumber=str(revision), Version="V2_23")
    body = etree.SubElement(envelope, f"{{{SOAP_NS}}}Body")
    return envelope, body


def _operation(root: etree._Element) -> Optional[str]:
    body = root.find(f"{{{SOAP_NS}}}Body")
    if body is None or len(body) == 0 or not isinstance(body[0].tag, str):
        return None
    name = etree.QName(body[0])
    return name.localname if name.namespace == MESSAGES_NS else None


def fault(org: Org, code: str, message: str) -> EwsAnswer:
    envelope, body = _envelope(org)
    fault_element = etree.SubElement(body, f"{{{SOAP_NS}}}Fault")
    etree.SubElement(fault_element, "faultcode").text = f"a:{code}"
    etree.SubElement(fault_element, "faultstring").text = message
    return EwsAnswer(500, serialize(envelope), "fault", code, message)


def respond_ews(org: Org, body: bytes) -> EwsAnswer:
    root = parse_untrusted_xml(body)
    if root is None or etree.QName(root).namespace != SOAP_NS:
        return fault(org, "ErrorSchemaValidation", "The request failed schema validation: the body is not a SOAP "
                                                   "envelope.")
    operation = _operation(root)
    if operation is None:
        return fault(org, "ErrorSchemaValidation", "The request failed schema validation: no EWS operation.")
    code, text = (("ErrorInvalidIdMalformed", "Id is malformed.") if operation == "ConvertId" else
                  ("ErrorInvalidOperation", f"The mock does not implement {operation}."))
    envelope, soap_body = _envelope(org)
    response = etree.SubElement(soap_body, f"{{{MESSAGES_NS}}}{operation}Response", nsmap={"m": MESSAGES_NS,
                                                                                            "t": TYPES_NS})
    messages = etree.SubElement(response, f"{{{MESSAGES_NS}}}ResponseMessages")
    message = etree.SubElement(messages, f"{{{MESSAGES_NS}}}{operation}ResponseMessage", ResponseClass="Error")
    etree.SubElement(message, f"{{{MESSAGES_NS}}}MessageText").text = text
    etree.SubElement(message, f"{{{MESSAGES_NS}}}ResponseCode").text = code
    etree.SubElement(message, f"{{{MESSAGES_NS}}}DescriptiveLinkKey").text = "0"
    return EwsAnswer(200, serialize(envelope), "error", code, f"EWS {operation}")
