"""MAPI over HTTP, the address book endpoint (/mapi/nspi/, [MS-OXCMAPIHTTP] 2.2.5), sans-IO, over the same NSPI
core (harness.rpc.nspi.server.Nspi) that serves NspiBind / NspiQueryRows / ... over RPC/HTTP, so both transports
answer the same rows.

Request types: Bind (session created: MapiContext and MapiSequence cookies, path /mapi/nspi), Unbind, GetSpecialTable,
QueryRows, ResolveNames, DNToMId, GetProps, GetMatches, GetPropList, QueryColumns, CompareMIds, ResortRestriction,
UpdateStat, GetMailboxUrl, GetAddressBookUrl, PING (SeekEntries, GetTemplateInfo, ModLinkAtt and the named-property
requests are not served yet: X-ResponseCode 5). Every request after Bind but
PING must present the latest MapiSequence (else X-ResponseCode 15) and gets a new one. The shared plumbing
(headers, cookies, PROCESSING/DONE, error pages, the ``mapi_http`` faults, asked with endpoint "nspi") is
harness.rpc.mapihttp.MapiHttpEndpoint; the bodies are harness.rpc.nspi.httpwire. The ``nspi_rows`` fault edits
QueryRows / ResolveNames / GetMatches rows as over RPC (Nspi.edited_rows).
"""
from __future__ import annotations

import random
from typing import Callable, Dict, List, Optional, Tuple

from impacket.dcerpc.v5 import nspi as ndr

import harness.rpc.nspi.httpwire as httpwire
from harness.hooks import FaultSet
from harness.org import Mailbox, Org
from harness.rpc.base import CallContext
from harness.rpc.mapihttp import MapiHttpAnswer, MapiHttpEndpoint, MapiHttpFault, MapiRequest, MapiSession
from harness.rpc.nspi.errors import NOT_FOUND, SUCCESS, UNBIND_SUCCESS, NspiError
from harness.rpc.nspi.server import Nspi, NspiSession
from harness.rpc.nspi.stat import Stat
from harness.rpc.nspi.values import columns_or_default

NSPI_REQUEST_TYPES = ("Bind", "Unbind", "GetSpecialTable", "QueryRows", "ResolveNames", "DNToMId", "GetProps",
                      "GetMatches", "GetPropList", "QueryColumns", "CompareMIds", "ResortRestriction", "UpdateStat",
                      "GetMailboxUrl", "GetAddressBookUrl", "PING")


class MapiHttpNspi(MapiHttpEndpoint):
    """The /mapi/nspi/ endpoint: sessions by MapiContext, each with its NSPI session (the Bind's code page).
    ``mapi_url`` is the site's MAPI base (https://<host>/mapi/), as Autodiscover's mapiHttp block gives it."""
    path = "/mapi/nspi"
    name = "nspi"
    request_types = NSPI_REQUEST_TYPES
    opening = "Bind"

    def __init__(self, org: Org, mapi_url: str, rng: random.Random, clock: Callable[[], float],
                 record: Callable[..., object], faults: Optional[FaultSet] = None, nspi: Optional[Nspi] = None):
        super().__init__(org, rng, clock, record, faults)
        self.mapi_url = mapi_url
        self.nspi = nspi or Nspi(org)

    def _answer(self, request: MapiRequest, kind: str, start: float, fault: Optional[MapiHttpFault]) -> MapiHttpAnswer:
        parsed = httpwire.parse_request(kind, request.body) if kind != "PING" else None
        if kind == "Bind":
            return self._bind(request, parsed, start)  # type: ignore[arg-type]
        refused, context, session = self._find_session(request, check_sequence=kind != "PING")
        if refused is not None or session is None:
            return refused  # type: ignore[return-value]
        if fault is not None and fault.forget_context:
            return self._forget(request, context)
        if kind == "PING":
            return self._done(request, start, b"", [])
        if kind == "Unbind":
            return self._done(request, start, httpwire.code_response(UNBIND_SUCCESS), self._close_cookies(context))
        body, code = self._call(kind, parsed, session, self._ctx(request, session.association))  # type: ignore
        return self._done(request, start, body, self._next_sequence(session), code)

    def _bind(self, request: MapiRequest, parsed: httpwire.AbRequest, start: float) -> MapiHttpAnswer:
        codepage = parsed.stat.CodePage if parsed.stat is not None else ndr.CP_TELETEX
        association: Dict = {}
        code = self.nspi.bind_code(self._ctx(request, association), codepage)
        headers: List[Tuple[str, str]] = []
        if code == SUCCESS:
            _context, headers = self._open_cookies(
                MapiSession(request.mailbox.email.lower(), NspiSession(codepage), self._opaque(), association))
        guid = self.nspi.server_guid if code == SUCCESS else bytes(16)
        return self._done(request, start, httpwire.bind_response(code, guid), headers, code)

    def _call(self, kind: str, parsed: httpwire.AbRequest, session: MapiSession,
              ctx: CallContext) -> Tuple[bytes, int]:
        nspi, state = self.nspi, session.state
        assert isinstance(state, NspiSession)
        stat = parsed.stat or Stat(CodePage=state.codepage)
        codepage = stat.CodePage or state.codepage
        try:
            if kind == "GetSpecialTable":
                rows = nspi.special_table(parsed.flags, codepage)
                return httpwire.special_table_response(SUCCESS, codepage, nspi.hierarchy_version, rows), SUCCESS
            if kind == "QueryRows":
                columns = columns_or_default(parsed.tags, codepage)
                try:
                    mids = nspi.select_rows(stat, parsed.explicit, parsed.count)
                except NspiError as error:
                    return httpwire.query_rows_response(error.code, stat, columns, None), error.code
                ephemeral = bool(parsed.flags & ndr.fEphID)
                rows = [nspi.row_cells(mid, columns, codepage, ephemeral) for mid in mids]
                columns, rows = nspi.edited_rows(ctx, "query-rows", columns, rows)
                return httpwire.query_rows_response(SUCCESS, stat, columns, rows), SUCCESS
            if kind == "ResolveNames":
                mids, resolved = nspi.resolve_names(stat, parsed.names or [], ctx)
                columns = columns_or_default(parsed.tags, codepage)
                rows = [nspi.row_cells(obj.mid, columns, codepage, False) for obj in resolved]
                columns, rows = nspi.edited_rows(ctx, "resolve-names", columns, rows)
                return httpwire.resolve_names_response(SUCCESS, codepage, mids, columns, rows), SUCCESS
            if kind == "DNToMId":
                return httpwire.dn_to_mid_response(SUCCESS, nspi.dn_to_mids(parsed.names or [], ctx)), SUCCESS
            if kind == "GetProps":
                code, cells = nspi.props_cells(parsed.stat, parsed.flags, parsed.tags, state.codepage)
                return httpwire.get_props_response(code, codepage, cells), code
            if kind == "GetMatches":
                try:
                    found = nspi.matches(stat, parsed.restriction, parsed.count)
                except NspiError as error:
                    return httpwire.get_matches_response(error.code, stat, None, [], None), error.code
                if parsed.tags is None:
                    return httpwire.get_matches_response(SUCCESS, stat, found, [], None), SUCCESS
                matched_columns, matched = nspi.edited_rows(ctx, "get-matches", parsed.tags, [
                    nspi.row_cells(mid, parsed.tags, codepage, False) for mid in found])
                return httpwire.get_matches_response(SUCCESS, stat, found, matched_columns, matched), SUCCESS
            if kind == "GetPropList":
                tags = nspi.prop_list(parsed.mid, parsed.codepage)
                code = SUCCESS if tags is not None else NOT_FOUND
                return httpwire.tags_response(code, tags), code
            if kind == "QueryColumns":
                return httpwire.tags_response(SUCCESS, nspi.query_columns(
                    bool(parsed.flags & ndr.NspiUnicodeProptypes))), SUCCESS
            if kind == "CompareMIds":
                first, second = parsed.mids  # type: ignore[misc]
                return httpwire.compare_mids_response(SUCCESS, nspi.compare_mids(stat, first, second)), SUCCESS
            if kind == "ResortRestriction":
                return httpwire.resort_response(SUCCESS, stat, nspi.resort(stat, parsed.mids or [])), SUCCESS
            if kind == "UpdateStat":
                try:
                    delta = nspi.update_stat(stat)
                except NspiError as error:
                    return httpwire.update_stat_response(error.code, stat, None), error.code
                return httpwire.update_stat_response(SUCCESS, stat, delta if parsed.wants_delta else None), SUCCESS
            if kind == "GetMailboxUrl":
                mailbox = self._by_server_dn(parsed.dn)
                if mailbox is None:
                    return httpwire.url_response(NOT_FOUND, ""), NOT_FOUND
                return httpwire.url_response(SUCCESS, self.url("emsmdb", mailbox)), SUCCESS
            # GetAddressBookUrl: the address book endpoint of the user the DN names (else of the caller)
            named = nspi.book.by_dn(parsed.dn)
            mailbox = named.mailbox if named is not None and named.mailbox is not None else ctx.mailbox
            if mailbox is None:
                return httpwire.url_response(NOT_FOUND, ""), NOT_FOUND
            return httpwire.url_response(SUCCESS, self.url("nspi", mailbox)), SUCCESS
        except NspiError as error:
            if kind == "GetProps":
                return httpwire.get_props_response(error.code, codepage, None), error.code
            if kind == "CompareMIds":
                return httpwire.compare_mids_response(error.code, 0), error.code
            return httpwire.resort_response(error.code, stat, None), error.code     # ResortRestriction

    def url(self, endpoint: str, mailbox: Mailbox) -> str:
        """The URL Autodiscover's mapiHttp block gives for ``mailbox`` (harness.protocols.autodiscover)."""
        return f"{self.mapi_url}{endpoint}/?MailboxId={self.org.personal_server(mailbox)}"

    def _by_server_dn(self, dn: str) -> Optional[Mailbox]:
        """The mailbox whose (personal) server DN, or its mailbox database's DN, is ``dn``."""
        wanted = dn.lower()
        return next((m for m in self.org.mailboxes
                     if wanted in (self.org.server_dn(m).lower(), self.org.mdb_dn(m).lower())), None)
