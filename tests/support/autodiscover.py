"""Autodiscover documents as clients write and read them: the POX request, the Protocol blocks of an answer."""
from __future__ import annotations

from typing import Dict, Optional, Union

from lxml import etree

from harness.protocols.autodiscover import OUTLOOK_REQUEST_NS, OUTLOOK_RESPONSE_NS


def pox_request(email: Optional[str] = "alice@contoso.test", *, legacy_dn: Optional[str] = None,
                schema: Optional[str] = OUTLOOK_RESPONSE_NS, namespace: str = OUTLOOK_REQUEST_NS) -> bytes:
    """A POX Autodiscover request as Outlook sends it; a field given as None is left out."""
    root = etree.Element(f"{{{namespace}}}Autodiscover", nsmap={None: namespace})
    request = etree.SubElement(root, f"{{{namespace}}}Request")
    for tag, text in (("EMailAddress", email), ("LegacyDN", legacy_dn), ("AcceptableResponseSchema", schema)):
        if text is not None:
            etree.SubElement(request, f"{{{namespace}}}{tag}").text = text
    return etree.tostring(root, xml_declaration=True, encoding="utf-8")


def pox_protocols(body: Union[str, bytes]) -> Dict[str, etree._Element]:
    """The Account's Protocol blocks of an Outlook POX answer, by Type."""
    root = etree.fromstring(body.encode() if isinstance(body, str) else body)
    account = root.find(f".//{{{OUTLOOK_RESPONSE_NS}}}Account")
    return {p.findtext(f"{{{OUTLOOK_RESPONSE_NS}}}Type"): p
            for p in account.findall(f"{{{OUTLOOK_RESPONSE_NS}}}Protocol")}
