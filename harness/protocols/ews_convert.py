"""EWS ConvertId, sans-IO: a folder or item id between the formats Exchange 2013 converts, over the store's ids.

Every format carries the same MAPI entry id the ROPs use (harness.mailbox.ids: folder_entry_id / item_entry_id):
EwsId (type 3, the mailbox GUID), EwsLegacyId (Exchange 2007's: type 0, the mailbox's SMTP address), EntryId (the
entry id in base64), HexEntryId (in hexadecimal), OwaId and StoreId (a store object id: the entry id behind its
length byte, then the object type, base64). Conversion needs no store: the entry id names its mailbox. An id that
does not decode in its stated format is ErrorInvalidIdMalformed (what exchangelib's version probe expects for its
dummy id). The answer echoes the source's Mailbox.
"""
from __future__ import annotations

import base64
import binascii
from typing import Optional

from lxml import etree

from harness.mailbox import ids
from harness.protocols.ews_xml import ID_MALFORMED, EwsError, EwsFault, error_message, m, success_message

FORMATS = ("EwsLegacyId", "EwsId", "EntryId", "HexEntryId", "StoreId", "OwaId")
XSI = "http://www.w3.org/2001/XMLSchema-instance"


def _schema_error(name: str) -> EwsFault:
    return EwsFault("ErrorSchemaValidation", f"The request failed schema validation: The '{name}' attribute is "
                                             "invalid - The value is invalid according to its datatype.")


def _base64(text: str) -> Optional[bytes]:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def entry_of(source_format: str, text: str) -> Optional[bytes]:
    """The entry id an id in `source_format` holds, or None when it does not decode."""
    if source_format == "EwsId":
        return ids.entry_of_ews_id(text)
    if source_format == "EwsLegacyId":
        return ids.entry_of_legacy_id(text)
    if source_format == "HexEntryId":
        try:
            raw: Optional[bytes] = bytes.fromhex(text)
        except ValueError:
            return None
    elif source_format == "EntryId":
        raw = _base64(text)
    else:                                    # StoreId / OwaId
        raw = _base64(text)
        return ids.entry_of_store_id(raw) if raw is not None else None
    return raw if raw is not None and ids.entry_mailbox(raw) is not None else None


def as_format(target_format: str, entry: bytes, mailbox: str) -> str:
    if target_format == "EwsId":
        converted = ids.ews_id_of_entry(entry)
        assert converted is not None     # entry_of checked the entry
        return converted
    if target_format == "EwsLegacyId":
        return ids.legacy_id(mailbox, entry)
    if target_format == "HexEntryId":
        return entry.hex().upper()
    if target_format == "EntryId":
        return base64.b64encode(entry).decode("ascii")
    return base64.b64encode(ids.store_id(entry)).decode("ascii")


def convert_id(request: etree._Element, messages: etree._Element) -> None:
    """One ConvertIdResponseMessage per source id (AlternatePublicFolderId ones are not in this store)."""
    target = request.get("DestinationFormat", "")
    if target not in FORMATS:
        raise _schema_error("DestinationFormat")
    sources = [e for e in request.iterfind(f"{m('SourceIds')}/*") if isinstance(e.tag, str)]
    if not sources:
        error_message(messages, "ConvertId", EwsError(*ID_MALFORMED))
    for source in sources:
        source_format = source.get("Format", "")
        if source_format not in FORMATS:
            raise _schema_error("Format")
        entry = entry_of(source_format, source.get("Id", "")) if etree.QName(source).localname == "AlternateId" \
            else None
        if entry is None:
            error_message(messages, "ConvertId", EwsError(*ID_MALFORMED))
            continue
        mailbox = source.get("Mailbox", "")
        message = success_message(messages, "ConvertId")
        etree.SubElement(message, m("AlternateId"), {f"{{{XSI}}}type": "t:AlternateIdType"}, nsmap={"xsi": XSI},
                         Format=target, Id=as_format(target, entry, mailbox), Mailbox=mailbox)
