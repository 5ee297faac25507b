"""Microsoft's EWS schema (Services.wsdl, messages.xsd, types.xsd, as every Exchange 2013+ server serves them under
/EWS/) as files the site serves and as a validator of the answers this mock sends.

mockex does not ship the files: a user fetches them from an Exchange server and names their directory
(docs/ews.md). ``SchemaFiles`` is what /EWS/ serves from such a directory; ``problems(body, directory)`` checks one
SOAP envelope the way a schema-aware client reads it: the element under soap:Body (an m:*Response, or nothing for a
soap:Fault, which the schema does not describe) and each schema element in soap:Header (t:ServerVersionInfo)
against the schema; the envelope itself is SOAP 1.1's, not the schema's. Apart from reading the named directory
this module does no I/O; a schema is compiled once per process and directory, on first use.
"""
from __future__ import annotations

import os
import re
from typing import Dict, List, Mapping, Optional

from lxml import etree

from harness.protocols.autodiscover_soap import SOAP_NS
from harness.protocols.ews_xml import MESSAGES_NS, TYPES_NS

__all__ = ["DIRECTORY_VARIABLE", "FILE_NAMES", "STATIC_CONTENT_TYPE", "SchemaFiles", "find_directory", "missing",
           "problems"]

DIRECTORY_VARIABLE = "MOCKEX_EWS_SCHEMA_DIR"
FILE_NAMES = ("Services.wsdl", "messages.xsd", "types.xsd")
# Where a checkout looks when the variable is unset: shared/ews-schema in the nearest of its parent directories
# that has one - the steering directory beside it, or above a clone made deeper (not for `mockex serve`).
SHARED_DIRECTORY = os.path.join("shared", "ews-schema")
STATIC_CONTENT_TYPE = "text/xml"   # IIS's static-file MIME map for .xsd and .wsdl
# Services.wsdl names the endpoint of the server it was fetched from; the served copy names this site's.
_WSDL_ADDRESS = re.compile(rb'(<(?:[\w.-]+:)?address\b[^>]*?\blocation=")[^"]*(")')
XML_NS = "http://www.w3.org/XML/1998/namespace"

# types.xsd imports the xml: namespace without a schemaLocation (Exchange's clients know it); the few attributes
# the EWS schema refers to (xml:lang on ReplyBody and faults) are declared here so nothing is fetched.
_XML_NAMESPACE_SCHEMA = f"""<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="{XML_NS}">
  <xs:attribute name="lang"><xs:simpleType><xs:union memberTypes="xs:language">
    <xs:simpleType><xs:restriction base="xs:string"><xs:enumeration value=""/></xs:restriction></xs:simpleType>
  </xs:union></xs:simpleType></xs:attribute>
  <xs:attribute name="space"><xs:simpleType><xs:restriction base="xs:NCName">
    <xs:enumeration value="default"/><xs:enumeration value="preserve"/></xs:restriction></xs:simpleType></xs:attribute>
  <xs:attribute name="base" type="xs:anyURI"/>
  <xs:attribute name="id" type="xs:ID"/>
</xs:schema>"""
_XML_NAMESPACE_URL = "mockex-xml-namespace.xsd"
# The document compiled: the xml: namespace first (libxml2 keeps the first import of a namespace), then messages.
_DRIVER = f"""<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">
  <xs:import namespace="{XML_NS}" schemaLocation="{_XML_NAMESPACE_URL}"/>
  <xs:import namespace="{MESSAGES_NS}" schemaLocation="messages.xsd"/>
</xs:schema>"""


def missing(directory: str) -> List[str]:
    """The schema files `directory` lacks (all of them when it is no directory)."""
    return [name for name in FILE_NAMES if not os.path.isfile(os.path.join(directory, name))]


def find_directory(checkout: str, environ: Mapping[str, str]) -> Optional[str]:
    """Where a checkout's tests find the schema: $MOCKEX_EWS_SCHEMA_DIR when set, else ``shared/ews-schema`` in the
    nearest parent directory of the checkout that has one (``<checkout>/../shared/ews-schema`` first), else None.
    The caller reports what a directory found lacks."""
    named = environ.get(DIRECTORY_VARIABLE, "")
    if named:
        return os.path.abspath(named)
    parent = os.path.dirname(os.path.abspath(checkout))
    while True:
        shared = os.path.join(parent, SHARED_DIRECTORY)
        if os.path.isdir(shared):
            return shared
        if os.path.dirname(parent) == parent:
            return None
        parent = os.path.dirname(parent)


class SchemaFiles:
    """The three files of one directory, read once, as /EWS/ serves them (URL names match case-insensitively, as
    IIS does)."""

    def __init__(self, directory: str):
        lacking = missing(directory)
        if lacking:
            raise ValueError(f"EWS schema directory {directory}: no {', '.join(lacking)} there "
                             "(docs/ews.md says how to fetch them from an Exchange server)")
        self.directory = directory
        self._content: Dict[str, bytes] = {}
        for name in FILE_NAMES:
            with open(os.path.join(directory, name), "rb") as handle:
                self._content[name.lower()] = handle.read()

    def file(self, url_name: str, ews_url: str) -> Optional[bytes]:
        """A served file by its URL name, or None when /EWS/ has no such file; Services.wsdl's soap:address is
        `ews_url`."""
        content = self._content.get(url_name.lower())
        if content is not None and url_name.lower() == "services.wsdl":
            address = ews_url.replace("&", "&amp;").replace('"', "&quot;").encode()
            content = _WSDL_ADDRESS.sub(lambda found: found.group(1) + address + found.group(2), content)
        return content


class _LocalOnly(etree.Resolver):   # type: ignore[misc]  # lxml's stubs are not installed
    """Answers the xml: namespace schema from memory; every other reference resolves beside messages.xsd."""

    def resolve(self, system_url: str, public_id: str, context: object) -> Optional[object]:
        if system_url.endswith(_XML_NAMESPACE_URL):
            resolved: object = self.resolve_string(_XML_NAMESPACE_SCHEMA, context)
            return resolved
        return None


_compiled: Dict[str, etree.XMLSchema] = {}


def _schema(directory: str) -> etree.XMLSchema:
    if directory not in _compiled:
        parser = etree.XMLParser(no_network=True, resolve_entities=False)
        parser.resolvers.add(_LocalOnly())
        driver = etree.fromstring(_DRIVER.encode(), parser, base_url=os.path.join(directory, "mockex-driver.xsd"))
        _compiled[directory] = etree.XMLSchema(etree.ElementTree(driver))
    return _compiled[directory]


def _short(message: str, limit: int = 300) -> str:
    """libxml2 lists a whole enumeration (ResponseCodeType has hundreds of values) in its message."""
    return message if len(message) <= limit else message[:limit] + "..."


_ENVELOPE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


def problems(body: bytes, directory: str) -> List[str]:
    """Why one SOAP envelope breaks the schema in `directory`, as ``element: line N: message`` (empty: it does
    not)."""
    try:
        root = etree.fromstring(body, _ENVELOPE_PARSER)
    except etree.XMLSyntaxError as exc:
        return [f"not XML: {exc}"]
    if root.tag != f"{{{SOAP_NS}}}Envelope":
        return [f"root is {root.tag}, not a SOAP 1.1 Envelope"]
    soap_body = root.find(f"{{{SOAP_NS}}}Body")
    if soap_body is None or len(soap_body) != 1:
        return ["soap:Body does not hold exactly one element"]
    checked = [element for element in root.iterfind(f"{{{SOAP_NS}}}Header/*")
               if etree.QName(element).namespace in (TYPES_NS, MESSAGES_NS)]
    content = soap_body[0]
    if content.tag != f"{{{SOAP_NS}}}Fault":
        checked.append(content)
    schema = _schema(directory)
    found = []
    for element in checked:
        if not schema.validate(element):
            name = etree.QName(element).localname
            found += [f"{name}: line {error.line}: {_short(error.message)}" for error in schema.error_log]
    return found
