"""NSPI (MS-OXNSPI, address book, port 6004) over the org's address book, sans-IO: request stub in, response stub out.

Name lookups (NspiResolveNames/W, NspiDNToMId) ask the ``mailbox`` fault hook ("resolve") about each entry they
find; a MailboxError leaves that name unresolved, as for an entry hidden from address lists.
"""
from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from impacket.dcerpc.v5 import nspi as ndr
from impacket.dcerpc.v5.dtypes import NULL
from impacket.dcerpc.v5.ndr import NDRPOINTER

import harness.rpc.nspi.wire as wire
from harness.org import Org
from harness.rpc.addressbook import PR_DISPLAY_NAME, AbObject, AddressBook, Container
from harness.rpc.base import (
    NCA_S_FAULT_CONTEXT_MISMATCH,
    CallContext,
    MailboxCall,
    RpcFault,
    RpcInterface,
    decoding,
    is_null,
    mailbox_fault,
    marshal,
    ndr_text,
    new_context_handle,
)
from harness.rpc.nspi.errors import (
    ACCESS_DENIED,
    ERRORS_RETURNED,
    GENERAL_FAILURE,
    INVALID_BOOKMARK,
    INVALID_CODEPAGE,
    INVALID_PARAMETER,
    LOGON_FAILED,
    NOT_FOUND,
    NOT_SUPPORTED,
    SUCCESS,
    TABLE_TOO_BIG,
    UNBIND_SUCCESS,
    NspiError,
    answer,
    answer_with_stat,
)
from harness.rpc.nspi.idl import (
    MAX_ROWS,
    NspiGetMatches,
    NspiGetMatchesResponse,
    NspiGetPropsIdl,
    NspiResortRestriction,
    NspiResortRestrictionResponse,
    NspiSeekEntriesIdl,
    parse_whole,
    tag_array,
    tag_list,
)
from harness.rpc.nspi.restrictions import restriction_matcher, restriction_tree
from harness.rpc.nspi.stat import Stat
from harness.rpc.nspi.values import (
    HIERARCHY_COLUMNS,
    PT_ERROR,
    PT_UNICODE,
    STRING_TYPES,
    Cell,
    RowEncoder,
    RowsEdit,
    client_tag,
    columns_or_default,
    ndr_row,
    ndr_rowset,
    nspi_rows_hook,
)

SORT_TYPES = (ndr.SortTypeDisplayName, ndr.SortTypePhoneticDisplayName, ndr.SortTypeDisplayName_RO,
              ndr.SortTypeDisplayName_W)


@dataclass
class NspiSession:
    codepage: int        # from NspiBind's STAT: the 8-bit code page when a call's own STAT names none


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
        self.rows = RowEncoder(self.book.server_guid)
        self.server_guid = self.book.server_guid.bytes_le
        self._packed_row = functools.lru_cache(maxsize=4096)(self._pack_row)

    # ---- sessions -----------------------------------------------------------------------------------------
    def _session(self, ctx: CallContext, stub: bytes) -> NspiSession:
        session = ctx.association.get(("nspi", stub[:20]))
        if session is None:
            raise RpcFault(NCA_S_FAULT_CONTEXT_MISMATCH, "unknown NSPI context handle")
        return session

    # ---- tables -------------------------------------------------------------------------------------------
    def _table(self, stat: Stat) -> Container:
        container = self.book.container(stat.ContainerID)
        if container is None:
            raise NspiError(INVALID_BOOKMARK)
        return container

    # ==== operations =======================================================================================
    def NspiBind(self, stub: bytes, ctx: CallContext) -> bytes:
        request = wire.bind_request(stub)
        handle = wire.EMPTY_HANDLE
        code = self.bind_code(ctx, request.stat.CodePage)
        if code == SUCCESS:
            handle = new_context_handle(ctx)
            ctx.association[("nspi", handle)] = NspiSession(request.stat.CodePage)
        return wire.bind_response(self.server_guid if request.wants_guid else None, handle, code)

    def bind_code(self, ctx: CallContext, codepage: int) -> int:
        """NspiBind's verdict for the caller and the STAT's code page (either transport)."""
        if ctx.mailbox is None:
            code = LOGON_FAILED
        elif codepage == ndr.CP_WINUNICODE:
            code = INVALID_CODEPAGE
        else:
            code = SUCCESS
        ctx.record("nspi_bind", user=ctx.mailbox.username if ctx.mailbox else None, codepage=codepage,
                   result=f"0x{code:08x}")
        return code

    def NspiUnbind(self, stub: bytes, ctx: CallContext) -> bytes:
        wire.unbind_request(stub)
        self._session(ctx, stub)
        del ctx.association[("nspi", stub[:20])]
        return wire.unbind_response(UNBIND_SUCCESS)

    def NspiUpdateStat(self, stub: bytes, ctx: CallContext) -> bytes:
        request = wire.update_stat_request(stub)
        self._session(ctx, stub)
        stat = request.stat
        try:
            delta = self.update_stat(stat)
        except NspiError as error:
            return wire.update_stat_response(stat, None, error.code)
        return wire.update_stat_response(stat, delta if request.wants_delta else None, SUCCESS)

    def update_stat(self, stat: Stat) -> int:
        """NspiUpdateStat: apply the STAT's Delta to its position; the rows actually moved."""
        members = self._table(stat).members
        start = stat.start_row(members)
        position = max(0, min(len(members), start + stat.Delta))
        stat.move(members, position)
        return position - start

    def NspiQueryRows(self, stub: bytes, ctx: CallContext) -> bytes:
        request = wire.query_rows_request(stub)
        self._session(ctx, stub)
        stat = request.stat
        columns = columns_or_default(request.tags, stat.CodePage)
        ephemeral = bool(request.flags & ndr.fEphID)
        try:
            mids = self.select_rows(stat, request.explicit, request.count)
        except NspiError as error:
            return wire.query_rows_response(stat, None, error.code)
        key = tuple(columns)
        known = self.book.get
        edit = self._rows_edit(ctx, "query-rows")
        if edit is not None:
            table = self.rows.table((known(mid) for mid in mids), key, stat.CodePage, ephemeral)
            return wire.query_rows_response(stat, [wire.pack_row(cells) for cells in edit.apply(table)], SUCCESS)
        rows = [self._packed_row(mid if known(mid) else None, key, stat.CodePage, ephemeral) for mid in mids]
        return wire.query_rows_response(stat, rows, SUCCESS)

    @staticmethod
    def _rows_edit(ctx: CallContext, operation: str) -> Optional[RowsEdit]:
        """The ``nspi_rows`` hook's edit of this call's rows (scope: the RPC server name, the caller's mailbox)."""
        faults = ctx.faults
        if faults is None or not ctx.concerns(nspi_rows_hook):
            return None
        edit: Optional[RowsEdit] = faults.first(nspi_rows_hook, ctx.scope(), operation)
        return edit

    def edited_rows(self, ctx: CallContext, operation: str, columns: Sequence[int],
                    rows: List[List[Cell]]) -> Tuple[Sequence[int], List[List[Cell]]]:
        """(columns, rows) after the ``nspi_rows`` hook's edit, for MAPI/HTTP's one column set for every row."""
        edit = self._rows_edit(ctx, operation)
        return (columns, rows) if edit is None else edit.one_column_set(columns, edit.apply(rows))

    def select_rows(self, stat: Stat, explicit: Optional[List[int]], count: int) -> List[int]:
        """The MIds NspiQueryRows answers (the explicit table, or ``count`` rows of the STAT's table from its
        position, which then moves past them); NspiError when the STAT names no table or row."""
        if explicit is not None:
            return explicit
        if count == 0:
            raise NspiError(INVALID_PARAMETER)
        members = self._table(stat).members
        position = max(0, min(len(members), stat.start_row(members) + stat.Delta))
        mids = members[position:position + min(count, MAX_ROWS)]
        stat.move(members, position + len(mids))
        return mids

    def row_cells(self, mid: int, columns: Sequence[int], codepage: int, ephemeral: bool) -> List[Cell]:
        """The row of MId ``mid`` as cells (an MId the book lacks: a row of errors)."""
        return self.rows.cells(self.book.get(mid), columns, codepage, ephemeral)

    def _pack_row(self, mid: Optional[int], columns: Tuple[int, ...], codepage: int,
                  ephemeral: bool) -> wire.PackedRow:
        """The row of MId ``mid`` (None: an MId the book lacks, a row of errors). Cached per Nspi (``_packed_row``):
        the address book does not change while served, and paging clients ask for the same rows again
        (exchanger's dnt-lookup asks for each MId twice, and walks ranges of MIds that mostly do not exist)."""
        return wire.pack_row(self.rows.cells(None if mid is None else self.book.get(mid), columns, codepage,
                                             ephemeral))

    def NspiSeekEntries(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiSeekEntries"):
            request = NspiSeekEntriesIdl(stub)
            stat = Stat.read(request["pStat"])
            target_tag = request["pTarget"]["ulPropTag"]
            target = request["pTarget"]["Value"]
            target = ndr_text(target["lpszW"] if target_tag & 0xFFFF == PT_UNICODE else target["lpszA"]) \
                if target_tag & 0xFFFF in STRING_TYPES else None
            explicit = tag_list(request.fields["lpETable"])
            tags = tag_list(request.fields["pPropTags"])
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
            stat.move(members, position)
            if tags is None:
                response["ppRows"] = NULL
            else:
                objects = [self.book.get(mid) for mid in members[position:]]
                response["ppRows"] = self.rows.rowset(objects, tags, stat.CodePage)
            return SUCCESS

        return answer_with_stat(response, stat, build, ["ppRows"])

    def NspiGetMatches(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiGetMatches"):
            request = NspiGetMatches(stub)
            stat = Stat.read(request["pStat"])
            tree = None if is_null(request.fields["Filter"]) else restriction_tree(request["Filter"])
            requested = request["ulRequested"]
            tags = tag_list(request.fields["pPropTags"])
        self._session(ctx, stub)
        response = NspiGetMatchesResponse()

        def build() -> int:
            found = self.matches(stat, tree, requested)
            response["ppOutMIds"] = tag_array(found)
            if tags is None:
                response["ppRows"] = NULL
            else:
                table = self.rows.table((self.book.get(mid) for mid in found), tags, stat.CodePage)
                edit = self._rows_edit(ctx, "get-matches")
                response["ppRows"] = ndr_rowset(edit.apply(table) if edit is not None else table)
            return SUCCESS

        return answer_with_stat(response, stat, build, ["ppOutMIds", "ppRows"])

    def matches(self, stat: Stat, tree: Optional[tuple], requested: int) -> List[int]:
        """NspiGetMatches: the MIds of the STAT's table that match the restriction tree (restrictions.py); the
        STAT then points at the first. TABLE_TOO_BIG when more than ``requested`` match."""
        members = self._table(stat).members
        # A NULL filter asks for an object's link attribute (e.g. group members); no object here has links.
        matcher = restriction_matcher(tree) if tree is not None else None
        found = [] if matcher is None else [mid for mid in members if matcher(self.book.get(mid))]
        if len(found) > requested:
            raise NspiError(TABLE_TOO_BIG)
        stat.move(found, 0)
        return found

    def NspiResortRestriction(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiResortRestriction"):
            request = NspiResortRestriction(stub)
            stat = Stat.read(request["pStat"])
            mids = [item["Data"] for item in request["pInMIds"]["aulPropTag"]][:MAX_ROWS]
        self._session(ctx, stub)
        response = NspiResortRestrictionResponse()

        def build() -> int:
            response["ppOutMIds"] = tag_array(self.resort(stat, mids))
            return SUCCESS

        return answer_with_stat(response, stat, build, ["ppOutMIds"])

    def resort(self, stat: Stat, mids: Sequence[int]) -> List[int]:
        """NspiResortRestriction: the known MIds by display name; the STAT keeps its current row if listed."""
        objects = sorted({mid: self.book.get(mid) for mid in mids if self.book.get(mid)}.values(),
                         key=lambda o: (o.display_name.lower(), o.mid))
        resorted = [o.mid for o in objects]
        stat.move(resorted, resorted.index(stat.CurrentRec) if stat.CurrentRec in resorted else 0)
        return resorted

    def NspiDNToMId(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiDNToMId"):
            request = ndr.NspiDNToMId(stub)
            names = [ndr_text(item["Data"]) for item in request["pNames"]["Strings"]][:MAX_ROWS]
        self._session(ctx, stub)
        return wire.tags_response(self.dn_to_mids(names, ctx), SUCCESS)

    def dn_to_mids(self, names: Sequence[str], ctx: CallContext) -> List[int]:
        mids = []
        for name in names:
            obj = self.book.by_dn(name)
            mids.append(obj.mid if obj and not self._hidden(obj, name, ctx) else ndr.MID_UNRESOLVED)
        return mids

    def NspiGetPropList(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiGetPropList"):
            request = ndr.NspiGetPropList(stub)
            mid, codepage = request["dwMId"], request["CodePage"]
        self._session(ctx, stub)
        tags = self.prop_list(mid, codepage)
        return wire.tags_response(tags, SUCCESS if tags is not None else NOT_FOUND)

    def prop_list(self, mid: int, codepage: int) -> Optional[List[int]]:
        """NspiGetPropList: the tags the object has (None: no such MId)."""
        obj = self.book.get(mid)
        return None if obj is None else [client_tag(t, codepage == ndr.CP_WINUNICODE) for t in obj.props]

    def NspiGetProps(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiGetProps"):
            request = parse_whole(stub, (NspiGetPropsIdl, ndr.NspiGetProps))
            flags = request["dwFlags"]
            stat = None if is_null(request.fields["pStat"]) else Stat.read(request["pStat"])
            tags = tag_list(request.fields["pPropTags"])
        session = self._session(ctx, stub)
        response = ndr.NspiGetPropsResponse()

        def build() -> int:
            code, cells = self.props_cells(stat, flags, tags, session.codepage)
            response["ppRows"] = ndr_row(cells)
            return code

        return answer(response, build, ["ppRows"])

    def props_cells(self, stat: Optional[Stat], flags: int, tags: Optional[List[int]],
                    session_codepage: int) -> Tuple[int, List[Cell]]:
        """NspiGetProps: (SUCCESS or ERRORS_RETURNED, the cells of the STAT's current object); NspiError else."""
        if stat is None:
            raise NspiError(INVALID_PARAMETER)
        obj = self.book.get(stat.CurrentRec)
        if obj is None and tags is None:
            raise NspiError(NOT_FOUND)
        codepage = stat.CodePage or session_codepage
        columns = tags if tags is not None else [client_tag(t, codepage == ndr.CP_WINUNICODE) for t in obj.props]
        cells = self.rows.cells(obj, columns, codepage, bool(flags & ndr.fEphID))
        errors = any(tag & 0xFFFF == PT_ERROR for tag, _value in cells)
        return (ERRORS_RETURNED if errors else SUCCESS), cells

    def NspiCompareMIds(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("NspiCompareMIds"):
            request = ndr.NspiCompareMIds(stub)
            stat = Stat.read(request["pStat"])
            first, second = request["MId1"], request["MId2"]
        self._session(ctx, stub)
        response = ndr.NspiCompareMIdsResponse()

        def build() -> int:
            response["plResult"] = self.compare_mids(stat, first, second)
            return SUCCESS

        return answer(response, build)

    def compare_mids(self, stat: Stat, first: int, second: int) -> int:
        """NspiCompareMIds: the difference of the two rows' positions in the STAT's table."""
        members = self._table(stat).members
        if first not in members or second not in members:
            raise NspiError(GENERAL_FAILURE)
        return members.index(first) - members.index(second)

    def NspiGetSpecialTable(self, stub: bytes, ctx: CallContext) -> bytes:
        flags, codepage = wire.special_table_request(stub)
        session = self._session(ctx, stub)
        rows = [wire.pack_row(cells) for cells in self.special_table(flags, codepage or session.codepage)]
        return wire.special_table_response(self.hierarchy_version, rows, SUCCESS)

    def special_table(self, flags: int, codepage: int) -> List[List[Cell]]:
        """NspiGetSpecialTable's rows: the address book hierarchy (the org defines no address creation templates)."""
        unicode = bool(flags & ndr.NspiUnicodeStrings)
        rows = []
        if not flags & ndr.NspiAddressCreationTemplates:
            for container in self.book.containers:
                columns = [client_tag(t, unicode) for t in HIERARCHY_COLUMNS if container.obj.value(t >> 16)]
                rows.append(self.rows.cells(container.obj, columns, codepage, False))
        return rows

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
        return wire.tags_response(self.query_columns(unicode), SUCCESS)

    def query_columns(self, unicode: bool) -> List[int]:
        return [client_tag(t, unicode) for t in self.book.columns()]

    def NspiGetNamesFromIDs(self, stub: bytes, ctx: CallContext) -> bytes:
        # the address book has no named properties
        return self._refuse(stub, ctx, ndr.NspiGetNamesFromIDs, ndr.NspiGetNamesFromIDsResponse, NOT_SUPPORTED)

    def NspiGetIDsFromNames(self, stub: bytes, ctx: CallContext) -> bytes:
        return self._refuse(stub, ctx, ndr.NspiGetIDsFromNames, ndr.NspiGetIDsFromNamesResponse, NOT_SUPPORTED)

    def NspiResolveNames(self, stub: bytes, ctx: CallContext) -> bytes:
        return self._resolve(stub, ctx, ndr.NspiResolveNames)

    def NspiResolveNamesW(self, stub: bytes, ctx: CallContext) -> bytes:
        return self._resolve(stub, ctx, ndr.NspiResolveNamesW)

    def _resolve(self, stub: bytes, ctx: CallContext, request_class) -> bytes:
        with decoding(request_class.__name__):
            request = request_class(stub)
            stat = Stat.read(request["pStat"])
            tags = tag_list(request.fields["pPropTags"])
            names = [ndr_text(item["Data"]) for item in request["paStr"]["Strings"]][:MAX_ROWS]
        self._session(ctx, stub)
        mids, resolved = self.resolve_names(stat, names, ctx)
        columns = tuple(columns_or_default(tags, stat.CodePage))
        edit = self._rows_edit(ctx, "resolve-names")
        if edit is not None:
            table = self.rows.table(resolved, columns, stat.CodePage)
            return wire.resolve_names_response(mids, [wire.pack_row(cells) for cells in edit.apply(table)], SUCCESS)
        rows = [self._packed_row(obj.mid, columns, stat.CodePage, False) for obj in resolved]
        return wire.resolve_names_response(mids, rows, SUCCESS)

    def resolve_names(self, stat: Stat, names: Sequence[str], ctx: CallContext) -> Tuple[List[int], List[AbObject]]:
        """NspiResolveNames: an MId per name (MID_AMBIGUOUS / MID_UNRESOLVED when not exactly one entry of the
        STAT's container matches) and the resolved objects, in order."""
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
        ctx.record("nspi_resolve", names=list(names), mids=mids)
        return mids, resolved

    @staticmethod
    def _hidden(obj: AbObject, name: str, ctx: CallContext) -> bool:
        """True when a fault keeps this entry from being found by ``name``."""
        return mailbox_fault(ctx, "resolve", obj.mailbox, MailboxCall(name, None, ctx.auth_level)) is not None
