"""The address book over MAPI over HTTP for the probe, from [MS-OXCMAPIHTTP] 2.2.5 and [MS-OXNSPI] alone (nothing of
the server): what Outlook does on the AddressBook URL (/mapi/nspi/?MailboxId=...) right after the mailbox Connect,
as Check Name: Bind, ResolveNames of the user's own address (display name, legacy DN, SMTP address), Unbind.

The bodies are plain little-endian structures: a STAT (MS-OXNSPI 2.2.8), counted tag and string arrays, and in the
answer AddressBookPropertyRows (2.2.1.7) of AddressBookPropertyValues (2.2.1.1: HasValue before a string, binary or
multi-valued value; a flagged row's cells start with a flag, 0xA for an error code). An NSPI ErrorCode becomes the
address book's reason; a body that does not read as the spec says, nspi-response-malformed.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from harness.probe.mapihttp import MapiHttpSession, ResponseBody
from harness.probe.report import StepFailed
from harness.probe.rops import RopMalformed

CP_1252, LCID_EN_US = 1252, 0x0409
PR_DISPLAY_NAME_W, PR_EMAIL_ADDRESS_W, PR_SMTP_ADDRESS_W = 0x3001001F, 0x3003001F, 0x39FE001F
CHECK_NAME_TAGS = (PR_DISPLAY_NAME_W, PR_EMAIL_ADDRESS_W, PR_SMTP_ADDRESS_W)
MID_UNRESOLVED, MID_AMBIGUOUS = 0x0, 0x1
# NSPI return values ([MS-OXNSPI] 2.2.1.2) an answer may carry
ERROR_NAMES = {0x80040111: "MAPI_E_LOGON_FAILED", 0x8004010F: "MAPI_E_NOT_FOUND", 0x8004011E: "MAPI_E_UNKNOWN_CPID",
               0x80004005: "MAPI_E_CALL_FAILED", 0x80070005: "MAPI_E_NO_ACCESS", 0x80040102: "MAPI_E_NO_SUPPORT",
               0x80070057: "MAPI_E_INVALID_PARAMETER", 0x8007000E: "MAPI_E_NOT_ENOUGH_MEMORY",
               0x80040403: "MAPI_E_TABLE_TOO_BIG", 0x80040117: "MAPI_E_TOO_COMPLEX"}
NOT_FOUND = 0x8004010F
AUX_NONE = struct.pack("<L", 0)

# property types ([MS-OXCDATA] 2.11.1) and the sizes of the fixed ones
PT_UNSPECIFIED, PT_ERROR, PT_STRING8, PT_UNICODE, PT_BINARY = 0x0000, 0x000A, 0x001E, 0x001F, 0x0102
PT_MV_STRING8, PT_MV_UNICODE, PT_MV_BINARY = 0x101E, 0x101F, 0x1102
FIXED_SIZES = {0x0002: 2, 0x0003: 4, 0x0004: 4, 0x0005: 8, 0x0006: 8, 0x0007: 8, PT_ERROR: 4, 0x000B: 1, 0x0014: 8,
               0x0040: 8, 0x0048: 16}
FLAG_VALUE, FLAG_NO_VALUE, FLAG_ERROR = 0x0, 0x1, 0xA


def stat() -> bytes:
    """A STAT at the beginning of the GAL, sorted by display name, in Windows-1252 and en-US."""
    # SortType, ContainerID, CurrentRec (MID_BEGINNING_OF_TABLE), Delta, NumPos, TotalRecs, CodePage, locales
    return struct.pack("<LLLlLLLLL", 0, 0, 0, 0, 0, 0, CP_1252, LCID_EN_US, LCID_EN_US)


def bind_body() -> bytes:
    return struct.pack("<LB", 0, 1) + stat() + AUX_NONE                  # Flags, HasState, State


def resolve_names_body(names: Sequence[str], tags: Sequence[int]) -> bytes:
    strings = b"".join(name.encode("utf-16-le") + b"\x00\x00" for name in names)
    return (struct.pack("<LB", 0, 1) + stat()                              # Reserved, HasState, State
            + struct.pack(f"<BL{len(tags)}L", 1, len(tags), *tags)         # HasPropertyTags, PropertyTags
            + struct.pack("<BL", 1, len(names)) + strings + AUX_NONE)      # HasNames, Names


def error_text(code: int) -> str:
    name = ERROR_NAMES.get(code)
    return f"0x{code:08x}" + (f" ({name})" if name else "")


# ---- reading an answer ----------------------------------------------------------------------------------------
def _value(reader: ResponseBody, ptype: int) -> object:
    """An AddressBookPropertyValue of type ``ptype`` (None: HasValue 0)."""
    if ptype in (PT_STRING8, PT_UNICODE, PT_BINARY, PT_MV_STRING8, PT_MV_UNICODE, PT_MV_BINARY) and not reader.u8():
        return None
    if ptype == PT_UNICODE:
        return reader.until(b"\x00\x00", 2).decode("utf-16-le", "replace")
    if ptype == PT_STRING8:
        return reader.until(b"\x00", 1).decode("latin-1")
    if ptype == PT_BINARY:
        return reader.take(reader.u32())
    if ptype in (PT_MV_STRING8, PT_MV_UNICODE, PT_MV_BINARY):
        count = reader.u32()
        if count > len(reader.data):
            raise RopMalformed(f"a multi-valued count of {count}")
        return [_value_of_one(reader, ptype & 0x0FFF) for _ in range(count)]
    if ptype == PT_ERROR:
        return ("error", reader.u32())
    if ptype in FIXED_SIZES:
        return int.from_bytes(reader.take(FIXED_SIZES[ptype]), "little")
    raise RopMalformed(f"property type 0x{ptype:04x} in a row")


def _value_of_one(reader: ResponseBody, ptype: int) -> object:
    """One value of a multi-valued property (no HasValue of its own)."""
    if ptype == PT_UNICODE:
        return reader.until(b"\x00\x00", 2).decode("utf-16-le", "replace")
    if ptype == PT_STRING8:
        return reader.until(b"\x00", 1).decode("latin-1")
    return reader.take(reader.u32())


def read_row(reader: ResponseBody, columns: Sequence[int]) -> Dict[int, object]:
    """An AddressBookPropertyRow under ``columns``: {column tag: value, ("error", code) or None}."""
    flagged = reader.u8()
    if flagged not in (0, 1):
        raise RopMalformed(f"a row's Flags is 0x{flagged:02x}")
    row: Dict[int, object] = {}
    for column in columns:
        ptype = column & 0xFFFF
        if ptype == PT_UNSPECIFIED:
            ptype = struct.unpack("<H", reader.take(2))[0]
        if flagged:
            flag = reader.u8()
            if flag == FLAG_NO_VALUE:
                row[column] = None
                continue
            if flag == FLAG_ERROR:
                row[column] = ("error", reader.u32())
                continue
            if flag != FLAG_VALUE:
                raise RopMalformed(f"a cell's Flag is 0x{flag:02x}")
        row[column] = _value(reader, ptype)
    return row


def _u32_array(reader: ResponseBody) -> List[int]:
    count = reader.u32()
    if 4 * count > len(reader.data):
        raise RopMalformed(f"a count of {count}")
    return list(struct.unpack(f"<{count}L", reader.take(4 * count)))


def _end(reader: ResponseBody) -> None:
    reader.take(reader.u32())                                  # the auxiliary buffer
    if reader.pos != len(reader.data):
        raise RopMalformed(f"{len(reader.data) - reader.pos} bytes after the auxiliary buffer")


@dataclass(frozen=True)
class Resolved:
    """ResolveNames' answer for one name: its MId, and its row when it resolved."""
    code: int
    mid: int
    row: Dict[int, object]


def read_resolve_names(body: bytes) -> Resolved:
    reader = ResponseBody(body)
    _status, code = reader.u32(), reader.u32()
    reader.u32()                                               # CodePage
    mids = _u32_array(reader) if reader.u8() else []
    rows: List[Dict[int, object]] = []
    if reader.u8():                                            # HasRowsAndColumns
        columns = _u32_array(reader)
        count = reader.u32()
        if count > len(reader.data):
            raise RopMalformed(f"a row count of {count}")
        rows = [read_row(reader, columns) for _ in range(count)]
    _end(reader)
    mid = mids[0] if mids else MID_UNRESOLVED
    if code == 0 and not mids:
        raise RopMalformed("no MinimalIds for the name")
    resolved = code == 0 and mid not in (MID_UNRESOLVED, MID_AMBIGUOUS)
    if resolved and not rows:
        raise RopMalformed(f"MId 0x{mid:x} resolved but no row came back")
    return Resolved(code, mid, rows[0] if resolved else {})


# ---- the step ---------------------------------------------------------------------------------------------------
def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class CheckName:
    server_guid: str
    mid: int
    display_name: str
    legacy_dn: str
    smtp_address: str


def check_name(session: MapiHttpSession, email: str) -> CheckName:
    """Bind, ResolveNames of ``email``, Unbind; a StepFailed with the address book's reason otherwise."""
    try:
        reader = ResponseBody(session.post("Bind", bind_body()))
        _status, code = reader.u32(), reader.u32()
        guid = reader.take(16)
        _end(reader)
    except RopMalformed as exc:
        raise StepFailed("nspi-response-malformed", f"the Bind response could not be read: {exc}")
    if code:
        raise StepFailed("mapi-nspi-bind-failed", f"Bind answered ErrorCode {error_text(code)}", status=f"0x{code:08x}")
    try:
        resolved = read_resolve_names(session.post("ResolveNames", resolve_names_body([email], CHECK_NAME_TAGS)))
    except RopMalformed as exc:
        raise StepFailed("nspi-response-malformed", f"the ResolveNames response could not be read: {exc}")
    if resolved.code:
        reason = "name-not-found" if resolved.code == NOT_FOUND else "nspi-error"
        raise StepFailed(reason, f"ResolveNames answered ErrorCode {error_text(resolved.code)}",
                         status=f"0x{resolved.code:08x}")
    if resolved.mid == MID_UNRESOLVED:
        raise StepFailed("name-not-found", f"Check Name found no entry for {email}", mids=[resolved.mid])
    if resolved.mid == MID_AMBIGUOUS:
        raise StepFailed("name-not-found", f"Check Name found several entries for {email}", mids=[resolved.mid])
    row = resolved.row
    session.disconnect("Unbind")
    return CheckName(guid_text(guid), resolved.mid, _text(row.get(PR_DISPLAY_NAME_W)),
                     _text(row.get(PR_EMAIL_ADDRESS_W)), _text(row.get(PR_SMTP_ADDRESS_W)))


def guid_text(raw: bytes) -> str:
    """A GUID in its little-endian wire form as text."""
    first, second, third = struct.unpack("<LHH", raw[:8])
    rest = raw[8:].hex()
    return f"{first:08x}-{second:04x}-{third:04x}-{rest[:4]}-{rest[4:]}"


def address_book_url(mailstore_url: str, given: Optional[str]) -> str:
    """The AddressBook URL Autodiscover gave, else the one Exchange 2013 SP1 gives next to the MailStore URL."""
    if given:
        return given
    return mailstore_url.replace("/mapi/emsmdb/", "/mapi/nspi/", 1)
