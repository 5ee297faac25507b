"""NSPI (MS-OXNSPI, address book, port 6004) over the org's address book, sans-IO: request stub in, response stub out.

Requests and responses use impacket's NDR classes (impacket.dcerpc.v5.nspi), so the real impacket client
(exchanger.py) and this server agree by construction. Where impacket's request layout differs from the MS-OXNSPI
IDL that Outlook follows, both layouts are accepted:
* NspiGetSpecialTable / NspiGetProps: impacket sends ``pStat`` (and ``lpVersion``) as unique pointers with referent
  IDs; the IDL has ``[in] STAT*`` ref pointers (inline). The layout that consumes the whole stub wins.
* NspiSeekEntries: impacket's class lacks the ``[unique]`` pointers on lpETable/pPropTags; only the IDL form is parsed.
* NspiGetMatches / NspiResortRestriction are commented out in impacket and defined here from the IDL.
Properties a row lacks come back as PtypErrorCode values (MAPI_E_NOT_FOUND), never omitted.
Name lookups (NspiResolveNames/W, NspiDNToMId) ask the ``mailbox`` fault hook ("resolve") about each entry they
find; a MailboxError leaves that name unresolved, as for an entry hidden from address lists.
"""
from __future__ import annotations

import codecs
import struct
import zlib
from dataclasses import dataclass, fields
from typing import Callable, Iterable, List, Optional, Sequence

from impacket.dcerpc.v5 import nspi as ndr
from impacket.dcerpc.v5.dtypes import DWORD, LPSTR, LPWSTR, NULL, ULONG
from impacket.dcerpc.v5.ndr import NDRCALL, NDRPOINTER

from harness.org import Org
from harness.rpc.addressbook import (PR_ANR, PR_CONTAINER_FLAGS, PR_DEPTH, PR_DISPLAY_NAME, PR_EMS_AB_CONTAINERID,
                                     PR_EMS_AB_IS_MASTER, PR_EMS_AB_OBJECT_GUID, PR_EMS_AB_PARENT_ENTRYID,
                                     PR_ENTRYID, AbObject, AddressBook, Container, anr_matches,
                                     ephemeral_entry_id)
from harness.rpc.base import (NCA_S_FAULT_CONTEXT_MISMATCH, RPC_X_BAD_STUB_DATA, CallContext, MailboxCall,
                              RpcFault, RpcInterface, decoding, is_null, marshal, ndr_text, new_context_handle)

# ---- NSPI return values (MS-OXNSPI 2.2.2) -------------------------------------------------------------------
SUCCESS = 0x00000000
UNBIND_SUCCESS = 0x00000001
ERRORS_RETURNED = 0x00040380
GENERAL_FAILURE = 0x80004005
NOT_SUPPORTED = 0x80040102
NOT_FOUND = 0x8004010F
LOGON_FAILED = 0x80040111
TOO_COMPLEX = 0x80040117
INVALID_CODEPAGE = 0x8004011E
TABLE_TOO_BIG = 0x80040403
INVALID_BOOKMARK = 0x80040405
ACCESS_DENIED = 0x80070005
INVALID_PARAMETER = 0x80070057

PT_UNSPECIFIED, PT_ERROR, PT_STRING8, PT_UNICODE = 0x0000, 0x000A, 0x001E, 0x001F
PT_MV_STRING8, PT_MV_UNICODE = 0x101E, 0x101F
STRING_TYPES = (PT_STRING8, PT_UNICODE)
MV_STRING_TYPES = (PT_MV_STRING8, PT_MV_UNICODE)

# Columns used when a client passes no property tag list (MS-OXNSPI 3.1.4.1.8); the string type follows the code page.
DEFAULT_COLUMNS = (0xFFFD0003, 0x0FFE0003, 0x39000003, 0x3001001E, 0x3A1A001E, 0x3A18001E, 0x3A19001E)
HIERARCHY_COLUMNS = (PR_EMS_AB_CONTAINERID, PR_CONTAINER_FLAGS, PR_DEPTH, PR_EMS_AB_IS_MASTER, PR_DISPLAY_NAME,
                     PR_ENTRYID, PR_EMS_AB_PARENT_ENTRYID, PR_EMS_AB_OBJECT_GUID)
SORT_TYPES = (ndr.SortTypeDisplayName, ndr.SortTypePhoneticDisplayName, ndr.SortTypeDisplayName_RO,
              ndr.SortTypeDisplayName_W)
MAX_ROWS = 100000   # the IDL's range() bound on row counts


# ---- IDL forms impacket lacks or lays out differently -------------------------------------------------------
class NspiGetSpecialTableIdl(NDRCALL):
    opnum = 12
    structure = (("hRpc", ndr.handle_t), ("dwFlags", DWORD), ("pStat", ndr.STAT), ("lpVersion", DWORD))


class NspiGetPropsIdl(NDRCALL):
    opnum = 9
    structure = (("hRpc", ndr.handle_t), ("dwFlags", DWORD), ("pStat", ndr.STAT),
                 ("pPropTags", ndr.PPropertyTagArray_r))


class NspiSeekEntriesIdl(NDRCALL):
    opnum = 4
    structure = (("hRpc", ndr.handle_t), ("Reserved", DWORD), ("pStat", ndr.STAT), ("pTarget", ndr.PropertyValue_r),
                 ("lpETable", ndr.PPropertyTagArray_r), ("pPropTags", ndr.PPropertyTagArray_r))


class NspiGetMatches(NDRCALL):
    opnum = 5
    structure = (("hRpc", ndr.handle_t), ("Reserved1", DWORD), ("pStat", ndr.STAT),
                 ("pReserved", ndr.PPropertyTagArray_r), ("Reserved2", DWORD), ("Filter", ndr.PRestriction_r),
                 ("lpPropName", ndr.PPropertyName_r), ("ulRequested", DWORD), ("pPropTags", ndr.PPropertyTagArray_r))


class NspiGetMatchesResponse(NDRCALL):
    structure = (("pStat", ndr.STAT), ("ppOutMIds", ndr.PPropertyTagArray_r), ("ppRows", ndr.PPropertyRowSet_r),
                 ("ErrorCode", ULONG))


class NspiResortRestriction(NDRCALL):
    opnum = 6
    structure = (("hRpc", ndr.handle_t), ("Reserved", DWORD), ("pStat", ndr.STAT),
                 ("pInMIds", ndr.PropertyTagArray_r), ("ppOutMIds", ndr.PPropertyTagArray_r))


class NspiResortRestrictionResponse(NDRCALL):
    structure = (("pStat", ndr.STAT), ("ppOutMIds", ndr.PPropertyTagArray_r), ("ErrorCode", ULONG))


# ---- plain-Python views of the wire structures --------------------------------------------------------------
@dataclass
class Stat:
    SortType: int = 0
    ContainerID: int = 0
    CurrentRec: int = 0
    Delta: int = 0
    NumPos: int = 0
    TotalRecs: int = 0
    CodePage: int = 0
    TemplateLocale: int = 0
    SortLocale: int = 0

    @classmethod
    def read(cls, stat) -> "Stat":
        return cls(**{f.name: stat[f.name] for f in fields(cls)})

    def write(self, stat) -> None:
        for f in fields(self):
            stat[f.name] = getattr(self, f.name)


@dataclass
class NspiSession:
    codepage: int        # from NspiBind's STAT: the 8-bit code page when a call's own STAT names none


class NspiError(Exception):
    """An NSPI-level failure: the call completes with this return value and empty outputs."""

    def __init__(self, code: int):
        super().__init__(f"NSPI error 0x{code:08x}")
        self.code = code


def _tag_list(pointer) -> Optional[List[int]]:
    """The tags of a PropertyTagArray_r pointer, or None for NULL. The array's items count, not cValues
    (impacket's hNspiGetProps sends cValues one too high)."""
    if is_null(pointer):
        return None
    return [item["Data"] for item in pointer["aulPropTag"]][:MAX_ROWS]


def _encoding(codepage: int) -> str:
    try:
        return codecs.lookup(f"cp{codepage}").name
    except LookupError:
        return "ascii"   # e.g. CP_TELETEX 20261, which Python lacks; directory names here are ASCII anyway


def _string8(text: str, codepage: int) -> bytes:
    return text.encode(_encoding(codepage), errors="replace") + b"\x00"


def _tag_array(tags: Iterable[int]):
    array = ndr.PropertyTagArray_r()
    tags = list(tags)
    for tag in tags:
        item = DWORD()
        item["Data"] = tag
        array["aulPropTag"].append(item)
    array["cValues"] = len(tags)
    return array


def _put_handle(handle_field, handle: bytes) -> None:
    handle_field["context_handle_attributes"] = struct.unpack("<L", handle[:4])[0]
    handle_field["context_handle_uuid"] = handle[4:20]


# ---- property values ----------------------------------------------------------------------------------------
def _value(tag: int, arm: str, data):
    value = ndr.PropertyValue_r()
    value["ulPropTag"] = tag
    value["ulReserved"] = 0
    value["Value"]["tag"] = tag & 0xFFFF
    value["Value"][arm] = data
    return value


def _binary(data: bytes):
    binary = ndr.Binary_r()
    binary["cValues"] = len(data)
    binary["lpb"] = [bytes([b]) for b in data]
    return binary


def _string_array(strings: Sequence[str], wide: bool, codepage: int):
    array = ndr.WStringArray_r() if wide else ndr.StringArray_r()
    for text in strings:
        item = LPWSTR() if wide else LPSTR()
        item["Data"] = text + "\x00" if wide else _string8(text, codepage)
        array["lppszW" if wide else "lppszA"].append(item)
    array["cValues"] = len(strings)
    return array


def error_value(tag: int, code: int = NOT_FOUND):
    return _value((tag & 0xFFFF0000) | PT_ERROR, "err", code)


def encode_value(tag: int, value, codepage: int):
    """A PropertyValue_r for a value already converted to the tag's type."""
    ptype = tag & 0xFFFF
    if ptype == 0x0003:
        return _value(tag, "l", value)
    if ptype == 0x000B:
        return _value(tag, "b", int(bool(value)))
    if ptype == PT_UNICODE:
        return _value(tag, "lpszW", value + "\x00")
    if ptype == PT_STRING8:
        return _value(tag, "lpszA", _string8(value, codepage))
    if ptype == 0x0102:
        return _value(tag, "bin", _binary(value))
    if ptype == 0x0040:
        filetime = ndr.FILETIME()
        filetime["dwLowDateTime"] = value & 0xFFFFFFFF
        filetime["dwHighDateTime"] = value >> 32
        return _value(tag, "ft", filetime)
    if ptype in MV_STRING_TYPES:
        arm = "MVszW" if ptype == PT_MV_UNICODE else "MVszA"
        return _value(tag, arm, _string_array(value, ptype == PT_MV_UNICODE, codepage))
    raise ValueError(f"no encoder for property type 0x{ptype:04x}")


def convert(native_tag: int, requested_type: int, unicode_default: bool) -> Optional[int]:
    """The tag to answer with when a client asks for ``requested_type`` of a property held as ``native_tag``;
    None when the types cannot be converted (the client then gets an error value)."""
    native_type = native_tag & 0xFFFF
    prop_id = native_tag & 0xFFFF0000
    if requested_type == PT_UNSPECIFIED:
        if native_type in STRING_TYPES:
            return prop_id | (PT_UNICODE if unicode_default else PT_STRING8)
        if native_type in MV_STRING_TYPES:
            return prop_id | (PT_MV_UNICODE if unicode_default else PT_MV_STRING8)
        return native_tag
    for group in (STRING_TYPES, MV_STRING_TYPES):
        if native_type in group and requested_type in group:
            return prop_id | requested_type
    return native_tag if requested_type == native_type else None


def client_tag(native_tag: int, unicode: bool) -> int:
    """A native tag as listed to a client: string types in the client's flavour (Unicode or 8-bit)."""
    return convert(native_tag, PT_UNSPECIFIED, unicode)


class Nspi(RpcInterface):
    name = "nspi"
    uuid = "f5cc5a18-4264-101a-8c59-08002b2f8426"
    version = (56, 0)
    opnums = {0: "NspiBind", 1: "NspiUnbind", 2: "NspiUpdateStat", 3: "NspiQueryRows", 4: "NspiSeekEntries",
              5: "NspiGetMatches", 6: "NspiResortRestriction", 7: "NspiDNToMId", 8: "NspiGetPropList",
              9: "NspiGetProps", 10: "NspiCompareMIds", 12: "NspiGetSpecialTable", 13: "NspiGetTemplateInfo",
              14: "NspiModLinkAtt", 16: "NspiQueryColumns", 17: "NspiGetNamesFromIDs", 18: "NspiGetIDsFromNames",
              19: "NspiResolveNames", 20: "NspiResolveNamesW"}

    def __init__(self, org: Org):
        self.org = org
        self.book = AddressBook(org)
        names = "|".join(c.obj.display_name for c in self.book.containers)
        self.hierarchy_version = zlib.crc32(names.encode("utf-8"))

    # ---- sessions -----------------------------------------------------------------------------------------
    def _session(self, ctx: CallContext, stub: bytes) -> NspiSession:
        session = ctx.association.get(("nspi", stub[:20]))
        if session is None:
            raise RpcFault(NCA_S_FAULT_CONTEXT_MISMATCH, "unknown NSPI context handle")
        return session

    # ---- rows ---------------------------------------------------------------------------------------------
    def _render(self, obj: Optional[AbObject], tag: int, codepage: int, ephemeral: bool):
        found = obj.value(tag >> 16) if obj is not None else None
        if found is None:
            return error_value(tag)
        native_tag, value = found
        answer_tag = convert(native_tag, tag & 0xFFFF, codepage == ndr.CP_WINUNICODE)
        if answer_tag is None:
            return error_value(tag)
        if native_tag == PR_ENTRYID and ephemeral:
            value = ephemeral_entry_id(self.book.server_guid, obj.display_type, obj.mid)
        return encode_value(answer_tag, value, codepage)

    def _row(self, obj: Optional[AbObject], tags: Sequence[int], codepage: int, ephemeral: bool):
        row = ndr.PropertyRow_r()
        row["Reserved"] = 0
        for tag in tags:
            row["lpProps"].append(self._render(obj, tag, codepage, ephemeral))
        row["cValues"] = len(tags)
        return row

    def _rowset(self, objects: Iterable[Optional[AbObject]], tags: Sequence[int], codepage: int,
                ephemeral: bool = False):
        rowset = ndr.PropertyRowSet_r()
        count = 0
        for obj in objects:
            rowset["aRow"].append(self._row(obj, tags, codepage, ephemeral))
            count += 1
        rowset["cRows"] = count
        return rowset

    @staticmethod
    def _columns(tags: Optional[List[int]], codepage: int) -> List[int]:
        if tags is not None:
            return tags
        return [client_tag(tag, codepage == ndr.CP_WINUNICODE) for tag in DEFAULT_COLUMNS]

    # ---- tables and positions -----------------------------------------------------------------------------
    def _table(self, stat: Stat) -> Container:
        container = self.book.container(stat.ContainerID)
        if container is None:
            raise NspiError(INVALID_BOOKMARK)
        return container

    @staticmethod
    def _start(stat: Stat, members: Sequence[int]) -> int:
        """The row the STAT points at before Delta is applied (MS-OXNSPI 3.1.4.4.1)."""
        if stat.CurrentRec == ndr.MID_BEGINNING_OF_TABLE:
            return 0
        if stat.CurrentRec == ndr.MID_END_OF_TABLE:
            return len(members)
        if stat.CurrentRec == ndr.MID_CURRENT:   # fractional position NumPos/TotalRecs
            return min(len(members), stat.NumPos * len(members) // stat.TotalRecs) if stat.TotalRecs else 0
        if stat.CurrentRec not in members:
            raise NspiError(NOT_FOUND)
        return members.index(stat.CurrentRec)

    @staticmethod
    def _move(stat: Stat, members: Sequence[int], position: int) -> None:
        stat.CurrentRec = members[position] if position < len(members) else ndr.MID_END_OF_TABLE
        stat.NumPos = position
        stat.TotalRecs = len(members)
        stat.Delta = 0

    # ---- error plumbing -----------------------------------------------------------------------------------
    @staticmethod
    def _answer(response: NDRCALL, build: Callable[[], int], null_on_error: Sequence[str] = ()) -> bytes:
        """Run ``build`` (which fills ``response`` and returns the code); on NspiError the outputs named in
        ``null_on_error`` become NULL and the error code is returned instead."""
        try:
            code = build()
        except NspiError as error:
            code = error.code
            for name in null_on_error:
                response[name] = NULL
        response["ErrorCode"] = code
        return marshal(response)

    def _answer_stat(self, response: NDRCALL, stat: Stat, build: Callable[[], int],
                     null_on_error: Sequence[str] = ()) -> bytes:
        """Like _answer, for responses that echo the STAT: moved by ``build``, or as it came on error."""
        def run() -> int:
            code = build()
            stat.write(response["pStat"])
            return code
        stat.write(response["pStat"])
        return self._answer(response, run, null_on_error)

    # ==== operations =======================================================================================
    def NspiBind(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiBind"):
            request = ndr.NspiBind(stub)
            stat = Stat.read(request["pStat"])
            wants_guid = not is_null(request.fields["pServerGuid"])
        response = ndr.NspiBindResponse()
        response["pServerGuid"] = self.book.server_guid.bytes_le if wants_guid else NULL
        if ctx.mailbox is None:
            code = LOGON_FAILED
        elif stat.CodePage == ndr.CP_WINUNICODE:
            code = INVALID_CODEPAGE
        else:
            code = SUCCESS
            handle = new_context_handle(ctx)
            ctx.association[("nspi", handle)] = NspiSession(stat.CodePage)
            _put_handle(response["contextHandle"], handle)
        ctx.record("nspi_bind", user=ctx.mailbox.username if ctx.mailbox else None, codepage=stat.CodePage,
                   result=f"0x{code:08x}")
        response["ErrorCode"] = code
        return marshal(response)

    def NspiUnbind(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiUnbind"):
            ndr.NspiUnbind(stub)
        self._session(ctx, stub)
        del ctx.association[("nspi", stub[:20])]
        response = ndr.NspiUnbindResponse()
        response["ErrorCode"] = UNBIND_SUCCESS
        return marshal(response)

    def NspiUpdateStat(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiUpdateStat"):
            request = ndr.NspiUpdateStat(stub)
            stat = Stat.read(request["pStat"])
            wants_delta = not is_null(request.fields["plDelta"])
        self._session(ctx, stub)
        response = ndr.NspiUpdateStatResponse()

        def build() -> int:
            members = self._table(stat).members
            start = self._start(stat, members)
            position = max(0, min(len(members), start + stat.Delta))
            self._move(stat, members, position)
            response["plDelta"] = position - start if wants_delta else NULL
            return SUCCESS

        return self._answer_stat(response, stat, build, ["plDelta"])

    def NspiQueryRows(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiQueryRows"):
            request = ndr.NspiQueryRows(stub)
            stat = Stat.read(request["pStat"])
            flags = request["dwFlags"]
            explicit = None if is_null(request.fields["lpETable"]) else \
                [item["Data"] for item in request["lpETable"]][:MAX_ROWS]
            count = request["Count"]
            tags = _tag_list(request.fields["pPropTags"])
        self._session(ctx, stub)
        response = ndr.NspiQueryRowsResponse()
        columns = self._columns(tags, stat.CodePage)
        ephemeral = bool(flags & ndr.fEphID)

        def build() -> int:
            if explicit is not None:
                objects = [self.book.get(mid) for mid in explicit]
            else:
                if count == 0:
                    raise NspiError(INVALID_PARAMETER)
                members = self._table(stat).members
                position = max(0, min(len(members), self._start(stat, members) + stat.Delta))
                window = members[position:position + min(count, MAX_ROWS)]
                self._move(stat, members, position + len(window))
                objects = [self.book.get(mid) for mid in window]
            response["ppRows"] = self._rowset(objects, columns, stat.CodePage, ephemeral)
            return SUCCESS

        return self._answer_stat(response, stat, build, ["ppRows"])

    def NspiSeekEntries(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiSeekEntries"):
            request = NspiSeekEntriesIdl(stub)
            stat = Stat.read(request["pStat"])
            target_tag = request["pTarget"]["ulPropTag"]
            target = request["pTarget"]["Value"]
            target = ndr_text(target["lpszW"] if target_tag & 0xFFFF == PT_UNICODE else target["lpszA"]) \
                if target_tag & 0xFFFF in STRING_TYPES else None
            explicit = _tag_list(request.fields["lpETable"])
            tags = _tag_list(request.fields["pPropTags"])
        self._session(ctx, stub)
        response = ndr.NspiSeekEntriesResponse()

        def build() -> int:
            if stat.SortType not in SORT_TYPES or target_tag >> 16 != PR_DISPLAY_NAME >> 16 or target is None:
                raise NspiError(GENERAL_FAILURE)
            members = explicit if explicit is not None else self._table(stat).members
            names = [(self.book.get(mid).display_name.lower() if self.book.get(mid) else "") for mid in members]
            position = next((i for i, name in enumerate(names) if name >= target.lower()), None)
            if position is None:
                raise NspiError(NOT_FOUND)
            self._move(stat, members, position)
            if tags is None:
                response["ppRows"] = NULL
            else:
                objects = [self.book.get(mid) for mid in members[position:]]
                response["ppRows"] = self._rowset(objects, tags, stat.CodePage)
            return SUCCESS

        return self._answer_stat(response, stat, build, ["ppRows"])

    def NspiGetMatches(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiGetMatches"):
            request = NspiGetMatches(stub)
            stat = Stat.read(request["pStat"])
            tree = None if is_null(request.fields["Filter"]) else restriction_tree(request["Filter"])
            requested = request["ulRequested"]
            tags = _tag_list(request.fields["pPropTags"])
        self._session(ctx, stub)
        response = NspiGetMatchesResponse()

        def build() -> int:
            members = self._table(stat).members
            # A NULL filter asks for an object's link attribute (e.g. group members); no object here has links.
            matcher = restriction_matcher(tree) if tree is not None else None
            found = [] if matcher is None else [mid for mid in members if matcher(self.book.get(mid))]
            if len(found) > requested:
                raise NspiError(TABLE_TOO_BIG)
            response["ppOutMIds"] = _tag_array(found)
            if tags is None:
                response["ppRows"] = NULL
            else:
                response["ppRows"] = self._rowset((self.book.get(mid) for mid in found), tags, stat.CodePage)
            self._move(stat, found, 0)
            return SUCCESS

        return self._answer_stat(response, stat, build, ["ppOutMIds", "ppRows"])

    def NspiResortRestriction(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiResortRestriction"):
            request = NspiResortRestriction(stub)
            stat = Stat.read(request["pStat"])
            mids = [item["Data"] for item in request["pInMIds"]["aulPropTag"]][:MAX_ROWS]
        self._session(ctx, stub)
        response = NspiResortRestrictionResponse()

        def build() -> int:
            objects = sorted({mid: self.book.get(mid) for mid in mids if self.book.get(mid)}.values(),
                             key=lambda o: (o.display_name.lower(), o.mid))
            resorted = [o.mid for o in objects]
            response["ppOutMIds"] = _tag_array(resorted)
            current = stat.CurrentRec
            self._move(stat, resorted, resorted.index(current) if current in resorted else 0)
            return SUCCESS

        return self._answer_stat(response, stat, build, ["ppOutMIds"])

    def NspiDNToMId(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiDNToMId"):
            request = ndr.NspiDNToMId(stub)
            names = [ndr_text(item["Data"]) for item in request["pNames"]["Strings"]][:MAX_ROWS]
        self._session(ctx, stub)
        response = ndr.NspiDNToMIdResponse()
        mids = []
        for name in names:
            obj = self.book.by_dn(name)
            mids.append(obj.mid if obj and not self._hidden(obj, name, ctx) else ndr.MID_UNRESOLVED)
        response["ppOutMIds"] = _tag_array(mids)
        response["ErrorCode"] = SUCCESS
        return marshal(response)

    def NspiGetPropList(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiGetPropList"):
            request = ndr.NspiGetPropList(stub)
            mid, codepage = request["dwMId"], request["CodePage"]
        self._session(ctx, stub)
        response = ndr.NspiGetPropListResponse()

        def build() -> int:
            obj = self.book.get(mid)
            if obj is None:
                raise NspiError(NOT_FOUND)
            response["ppOutMIds"] = _tag_array((client_tag(t, codepage == ndr.CP_WINUNICODE) for t in obj.props))
            return SUCCESS

        return self._answer(response, build, ["ppOutMIds"])

    def NspiGetProps(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiGetProps"):
            request = _parse_whole(stub, (NspiGetPropsIdl, ndr.NspiGetProps))
            flags = request["dwFlags"]
            stat = None if is_null(request.fields["pStat"]) else Stat.read(request["pStat"])
            tags = _tag_list(request.fields["pPropTags"])
        session = self._session(ctx, stub)
        response = ndr.NspiGetPropsResponse()

        def build() -> int:
            if stat is None:
                raise NspiError(INVALID_PARAMETER)
            obj = self.book.get(stat.CurrentRec)
            if obj is None and tags is None:
                raise NspiError(NOT_FOUND)
            codepage = stat.CodePage or session.codepage
            columns = tags if tags is not None else [client_tag(t, codepage == ndr.CP_WINUNICODE) for t in obj.props]
            row = self._row(obj, columns, codepage, bool(flags & ndr.fEphID))
            response["ppRows"] = row
            errors = any(value["ulPropTag"] & 0xFFFF == PT_ERROR for value in row["lpProps"])
            return ERRORS_RETURNED if errors else SUCCESS

        return self._answer(response, build, ["ppRows"])

    def NspiCompareMIds(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiCompareMIds"):
            request = ndr.NspiCompareMIds(stub)
            stat = Stat.read(request["pStat"])
            first, second = request["MId1"], request["MId2"]
        self._session(ctx, stub)
        response = ndr.NspiCompareMIdsResponse()

        def build() -> int:
            members = self._table(stat).members
            if first not in members or second not in members:
                raise NspiError(GENERAL_FAILURE)
            response["plResult"] = members.index(first) - members.index(second)
            return SUCCESS

        return self._answer(response, build)

    def NspiGetSpecialTable(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiGetSpecialTable"):
            request = _parse_whole(stub, (NspiGetSpecialTableIdl, ndr.NspiGetSpecialTable))
            flags = request["dwFlags"]
            codepage = ndr.CP_TELETEX if is_null(request.fields["pStat"]) else request["pStat"]["CodePage"]
        session = self._session(ctx, stub)
        response = ndr.NspiGetSpecialTableResponse()
        response["lpVersion"] = self.hierarchy_version
        unicode = bool(flags & ndr.NspiUnicodeStrings)
        codepage = codepage or session.codepage
        if flags & ndr.NspiAddressCreationTemplates:
            rowset = self._rowset((), (), codepage)   # the org defines no address creation templates
        else:
            rowset = ndr.PropertyRowSet_r()
            for container in self.book.containers:
                columns = [client_tag(t, unicode) for t in HIERARCHY_COLUMNS if container.obj.value(t >> 16)]
                rowset["aRow"].append(self._row(container.obj, columns, codepage, False))
            rowset["cRows"] = len(self.book.containers)
        response["ppRows"] = rowset
        response["ErrorCode"] = SUCCESS
        return marshal(response)

    def _refuse(self, stub: bytes, ctx: CallContext, request_class, response_class, code: int) -> bytes:
        """Validate the request and the handle, then answer ``code`` with every output pointer NULL."""
        with decoding(request_class.__name__):
            request_class(stub)
        self._session(ctx, stub)
        response = response_class()
        for name, value in list(response.fields.items()):
            if isinstance(value, NDRPOINTER):
                response[name] = NULL
        response["ErrorCode"] = code
        return marshal(response)

    def NspiGetTemplateInfo(self, stub: bytes, ctx: CallContext) -> bytes:
        # the org model has no display or address creation templates
        return self._refuse(stub, ctx, ndr.NspiGetTemplateInfo, ndr.NspiGetTemplateInfoResponse, NOT_FOUND)

    def NspiModLinkAtt(self, stub: bytes, ctx: CallContext) -> bytes:
        # the directory is read-only to clients
        return self._refuse(stub, ctx, ndr.NspiModLinkAtt, ndr.NspiModLinkAttResponse, ACCESS_DENIED)

    def NspiQueryColumns(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiQueryColumns"):
            request = ndr.NspiQueryColumns(stub)
            unicode = bool(request["dwFlags"] & ndr.NspiUnicodeProptypes)
        self._session(ctx, stub)
        response = ndr.NspiQueryColumnsResponse()
        response["ppColumns"] = _tag_array((client_tag(t, unicode) for t in self.book.columns()))
        response["ErrorCode"] = SUCCESS
        return marshal(response)

    def NspiGetNamesFromIDs(self, stub: bytes, ctx: CallContext) -> bytes:
        # the address book has no named properties
        return self._refuse(stub, ctx, ndr.NspiGetNamesFromIDs, ndr.NspiGetNamesFromIDsResponse, NOT_SUPPORTED)

    def NspiGetIDsFromNames(self, stub: bytes, ctx: CallContext) -> bytes:
        return self._refuse(stub, ctx, ndr.NspiGetIDsFromNames, ndr.NspiGetIDsFromNamesResponse, NOT_SUPPORTED)

    def NspiResolveNames(self, stub: bytes, ctx: CallContext) -> bytes:
        return self._resolve(stub, ctx, ndr.NspiResolveNames, ndr.NspiResolveNamesResponse)

    def NspiResolveNamesW(self, stub: bytes, ctx: CallContext) -> bytes:
        return self._resolve(stub, ctx, ndr.NspiResolveNamesW, ndr.NspiResolveNamesWResponse)

    def _resolve(self, stub: bytes, ctx: CallContext, request_class, response_class) -> bytes:
        with decoding(request_class.__name__):
            request = request_class(stub)
            stat = Stat.read(request["pStat"])
            tags = _tag_list(request.fields["pPropTags"])
            names = [ndr_text(item["Data"]) for item in request["paStr"]["Strings"]][:MAX_ROWS]
        self._session(ctx, stub)
        response = response_class()
        container = self.book.container(stat.ContainerID)
        scope = set(container.members) if container is not None else None
        mids, resolved = [], []
        for name in names:
            matches = [o for o in self.book.resolve(name)
                       if (scope is None or o.mid in scope) and not self._hidden(o, name, ctx)]
            if len(matches) == 1:
                mids.append(matches[0].mid)
                resolved.append(matches[0])
            else:
                mids.append(ndr.MID_AMBIGUOUS if matches else ndr.MID_UNRESOLVED)
        ctx.record("nspi_resolve", names=names, mids=mids)
        response["ppMIds"] = _tag_array(mids)
        response["ppRows"] = self._rowset(resolved, self._columns(tags, stat.CodePage), stat.CodePage)
        response["ErrorCode"] = SUCCESS
        return marshal(response)

    @staticmethod
    def _hidden(obj: AbObject, name: str, ctx: CallContext) -> bool:
        """True when a fault keeps this entry from being found by ``name``."""
        return ctx.mailbox_fault("resolve", obj.mailbox, MailboxCall(name, None, ctx.auth_level)) is not None


def _parse_whole(stub: bytes, layouts: Sequence[type]) -> NDRCALL:
    """Parse with the first layout that consumes the whole stub (see the module docstring)."""
    for layout in layouts:
        request = layout()
        try:
            used = request.fromString(stub)
        except Exception:  # noqa: BLE001 - a layout that does not fit; the next one may
            continue
        if used == len(stub):
            return request
    raise RpcFault(RPC_X_BAD_STUB_DATA, f"stub fits none of {[c.__name__ for c in layouts]}")


# ---- restrictions (MS-OXNSPI 2.3.4) -------------------------------------------------------------------------
RELOP_LT, RELOP_LE, RELOP_GT, RELOP_GE, RELOP_EQ, RELOP_NE = range(6)
FL_SUBSTRING, FL_PREFIX = 0x1, 0x2
_RELOPS = {RELOP_LT: lambda a, b: a < b, RELOP_LE: lambda a, b: a <= b, RELOP_GT: lambda a, b: a > b,
           RELOP_GE: lambda a, b: a >= b, RELOP_EQ: lambda a, b: a == b, RELOP_NE: lambda a, b: a != b}


def _restriction_value(pointer):
    """The Python value of a restriction's PropertyValue_r, or None for NULL/unsupported types."""
    if is_null(pointer):
        return None
    union = pointer["Value"]
    ptype = pointer["ulPropTag"] & 0xFFFF
    if ptype == PT_UNICODE:
        return ndr_text(union["lpszW"])
    if ptype == PT_STRING8:
        return ndr_text(union["lpszA"])
    if ptype in (0x0003, 0x000B):
        return union["l" if ptype == 0x0003 else "b"]
    if ptype == 0x0102:
        return b"".join(union["bin"]["lpb"])
    return None


def restriction_tree(restriction) -> tuple:
    """A parsed Restriction_r as plain tuples: ("and"|"or", [trees]), ("not", tree),
    ("content", tag, fuzzy, value), ("property", tag, relop, value), ("exist", tag) or ("unsupported", kind)."""
    kind = restriction["rt"]
    arm = restriction["res"]
    if kind in (0, 1):
        name = "and" if kind == 0 else "or"
        return name, [restriction_tree(r) for r in arm["resAnd" if kind == 0 else "resOr"]["lpRes"]]
    if kind == 2:
        return "not", restriction_tree(arm["resNot"]["lpRes"])
    if kind == 3:
        content = arm["resContent"]
        return "content", content["ulPropTag"], content["ulFuzzyLevel"], _restriction_value(content["lpProp"])
    if kind == 4:
        prop = arm["resProperty"]
        return "property", prop["ulPropTag"], prop["relop"], _restriction_value(prop["lpProp"])
    if kind == 8:
        return "exist", arm["resExist"]["ulPropTag"]
    return "unsupported", kind


def _comparable(obj: Optional[AbObject], tag: int):
    found = obj.value(tag >> 16) if obj is not None else None
    if found is None:
        return None
    value = found[1]
    return value.lower() if isinstance(value, str) else value


def restriction_matcher(tree: tuple) -> Callable[[Optional[AbObject]], bool]:
    """Compile a restriction tree into a predicate over address-book objects. Kinds it cannot evaluate raise
    NspiError(TOO_COMPLEX), as Exchange answers for restrictions it does not support."""
    kind = tree[0]
    if kind in ("and", "or"):
        parts = [restriction_matcher(sub) for sub in tree[1]]
        combine = all if kind == "and" else any
        return lambda obj: combine(part(obj) for part in parts)
    if kind == "not":
        inner = restriction_matcher(tree[1])
        return lambda obj: not inner(obj)
    if kind == "content":
        return _content_matcher(*tree[1:])
    if kind == "property":
        return _property_matcher(*tree[1:])
    if kind == "exist":
        return lambda obj: obj is not None and obj.value(tree[1] >> 16) is not None
    raise NspiError(TOO_COMPLEX)


def _content_matcher(tag: int, fuzzy: int, wanted) -> Callable[[Optional[AbObject]], bool]:
    if not isinstance(wanted, str):
        raise NspiError(TOO_COMPLEX)
    wanted = wanted.lower()   # directory string compares are case-insensitive whatever FL_IGNORECASE says

    def match(obj: Optional[AbObject]) -> bool:
        value = _comparable(obj, tag)
        if not isinstance(value, str):
            return False
        if fuzzy & FL_SUBSTRING:
            return wanted in value
        if fuzzy & FL_PREFIX:
            return value.startswith(wanted)
        return value == wanted
    return match


def _property_matcher(tag: int, relop: int, wanted) -> Callable[[Optional[AbObject]], bool]:
    if relop not in _RELOPS or wanted is None:
        raise NspiError(TOO_COMPLEX)
    if tag >> 16 == PR_ANR >> 16:
        if not isinstance(wanted, str):
            raise NspiError(TOO_COMPLEX)
        return lambda obj: obj is not None and anr_matches(obj, wanted)
    wanted = wanted.lower() if isinstance(wanted, str) else wanted
    compare = _RELOPS[relop]

    def match(obj: Optional[AbObject]) -> bool:
        value = _comparable(obj, tag)
        if value is None or type(value) is not type(wanted):
            return False
        return compare(value, wanted)
    return match


__all__ = ["Nspi", "NspiGetMatches", "NspiGetMatchesResponse", "NspiResortRestriction",
           "NspiResortRestrictionResponse", "NspiSeekEntriesIdl", "NspiGetPropsIdl", "NspiGetSpecialTableIdl",
           "Stat", "encode_value", "error_value", "convert", "client_tag", "restriction_tree", "restriction_matcher"]
