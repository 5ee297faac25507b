"""Mailbox faults: the store (EMSMDB) refusing a connect or a logon, and the address book (NSPI) not finding names.

Scope: `host` is the RPC server name the client asked the proxy for, `user` the caller's mailbox address (the one
that authenticated). EcDoConnectEx is the "connect" operation, RopLogon "logon", NSPI name lookups "resolve".
"""
from __future__ import annotations

import re

from harness.faults.base import FaultParamError, Param, register
from harness.faults.rpc import RpcScopedFault
from harness.rpc.base import MailboxError
from harness.rpc.emsmdb import (
    DEFAULT_MIN_CLIENT_VERSION,
    EC_CLIENT_VER_DISALLOWED,
    EC_LOGIN_FAILURE,
    EC_NOT_ENCRYPTED,
    EC_SERVER_BUSY,
    EC_WRONG_SERVER,
    version_text,
)
from harness.rpc.emsmdb.ropedit import (
    APPENDED,
    CELL_ACTIONS,
    HEADER_FLAGS,
    MAX_TEXT,
    REST,
    ROP_IDS,
    ROW_ACTIONS,
    CellChange,
    RopAnswerEdit,
)
from harness.rpc.nspi import NOT_FOUND
from harness.rpc.nspi.values import CELL_ACTIONS as NSPI_CELL_ACTIONS
from harness.rpc.nspi.values import RETYPED, CellEdit, RowsEdit
from harness.rpc.nspi.values import ROW_ACTIONS as NSPI_ROW_ACTIONS

_VERSION = re.compile(r"^\d+(\.\d+){0,3}$")


def parse_version(name: str, text: str) -> tuple:
    """'12.0.6665.5000' (missing parts are 0) as the 4-tuple EMSMDB compares."""
    if not _VERSION.match(text):
        raise FaultParamError(name, f"{text!r} is not a version", "major.minor.build.revision, e.g. 12.0.6665.5000")
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (4 - len(parts)))


@register
class WrongServer(RpcScopedFault):
    name = "mailbox.wrong-server"
    summary = "RopLogon answers ecWrongServer: the mailbox has moved to another server."
    description = ("A mailbox move finished (or is in flight) while the client still connects to the old server; "
                   "the store redirects the logon to the server that now holds the mailbox (its legacy DN in the "
                   "RopLogon response). Applies to any user unless scoped with `user`.")
    symptoms = {"emsmdb client": "RopLogon ReturnValue 0x00000478 (ecWrongServer) with ServerName "
                                 "/o=Contoso/.../cn=Servers/cn=EX02",
                "outlook": "rediscovers the server through Autodiscover; a loop if Autodiscover keeps answering the "
                           "old one"}
    analyzer = {"fails_at": "mailbox-logon", "reason": "ec-wrong-server"}
    params = {"server": Param(str, None, "the server the mailbox moved to (default: the first other server of the "
                                         "org)")}

    def on_mailbox(self, scope, operation, mailbox, call):
        if operation == "logon":
            return MailboxError(EC_WRONG_SERVER, server=self.values["server"])
        return None


@register
class LoginFailure(RpcScopedFault):
    name = "mailbox.login-failure"
    summary = "EcDoConnectEx answers ecLoginFailure (0x80040111)."
    description = ("The store does not let the user in although HTTP and RPC authentication succeeded: the "
                   "mailbox is disabled or being moved, its database is dismounted, or the account lacks logon "
                   "rights.")
    symptoms = {"emsmdb client": "EcDoConnectEx returns 0x80040111 (MAPI_E_LOGON_FAILED)",
                "outlook": "'Cannot open your default e-mail folders'"}
    analyzer = {"fails_at": "mailbox-logon", "reason": "ec-login-failure"}

    def on_mailbox(self, scope, operation, mailbox, call):
        return MailboxError(EC_LOGIN_FAILURE) if operation == "connect" else None


@register
class ClientVersion(RpcScopedFault):
    name = "mailbox.client-version"
    summary = "EcDoConnectEx refuses clients older than a given version with ecClientVerDisallowed."
    description = ("Set-RpcClientAccess -BlockedClientVersions, or Exchange 2013's own floor (Outlook 2007 SP3 with "
                   "the November 2012 update, 12.0.6665.5000, which already keeps Outlook 2003 out). The "
                   "response's rgwBestVersion names the lowest version allowed.")
    symptoms = {"emsmdb client": "EcDoConnectEx returns 0x000004DF (ecClientVerDisallowed), best version = the floor",
                "outlook": "'Your Exchange Server administrator has blocked the version of Outlook that you are "
                           "using'"}
    analyzer = {"fails_at": "mailbox-logon", "reason": "ec-client-ver-disallowed"}
    params = {"min_version": Param(str, version_text(DEFAULT_MIN_CLIENT_VERSION),
                                   "the lowest client version allowed (major.minor.build.revision)")}

    @classmethod
    def validate(cls, values):
        result = super().validate(values)
        parse_version("min_version", result["min_version"])
        return result

    def __init__(self, rng=None, **values):
        super().__init__(rng, **values)
        self.floor = parse_version("min_version", self.values["min_version"])

    def on_mailbox(self, scope, operation, mailbox, call):
        if operation == "connect" and call.client_version < self.floor:
            return MailboxError(EC_CLIENT_VER_DISALLOWED, best_version=self.floor)
        return None


@register
class NotEncrypted(RpcScopedFault):
    name = "mailbox.not-encrypted"
    summary = "EcDoConnectEx answers ecNotEncrypted: the store wants RPC encryption the connection lacks."
    description = ("Set-RpcClientAccess -EncryptionRequired $true against a client that does not seal its RPC "
                   "traffic (Outlook 2003's default). By default every connection is refused, as if the encryption "
                   "the client negotiated were not recognised; `below_level` limits it to lower auth levels.")
    symptoms = {"emsmdb client": "EcDoConnectEx returns 0x00000970 (ecNotEncrypted)",
                "outlook": "cannot connect until 'Encrypt data between Microsoft Outlook and Microsoft Exchange' "
                           "is turned on in the account settings"}
    analyzer = {"fails_at": "mailbox-logon", "reason": "ec-not-encrypted"}
    params = {"below_level": Param(int, 7, "refuse RPC auth levels below this one (7: every level)",
                                   (2, 3, 4, 5, 6, 7))}

    def on_mailbox(self, scope, operation, mailbox, call):
        if operation == "connect" and call.auth_level < self.values["below_level"]:
            return MailboxError(EC_NOT_ENCRYPTED)
        return None


@register
class ServerBusy(RpcScopedFault):
    name = "mailbox.server-busy"
    summary = "RopLogon is answered with a back-off (ecServerBusy): retry after a given time."
    description = ("The store is overloaded or throttled and tells the client to back off: a RopBackoff response "
                   "in place of the RopLogon response (clients newer than 12.0.4228), RPC_S_SERVER_TOO_BUSY "
                   "(0x6BB) for older ones (MS-OXCROPS 3.2.4.2). Combine with a step that removes the fault to "
                   "model the load going away.")
    symptoms = {"emsmdb client": "RopBackoff (0xF9) with the duration instead of a RopLogon response",
                "outlook": "retries the logon after the back-off time"}
    analyzer = {"fails_at": "mailbox-logon", "reason": "ec-server-busy"}
    params = {"backoff_ms": Param(int, 30000, "how long the client must wait before retrying, in milliseconds",
                                  minimum=0)}

    def __init__(self, rng=None, **values):
        super().__init__(rng, **values)
        self.answer = MailboxError(EC_SERVER_BUSY, backoff_ms=self.values["backoff_ms"])

    def on_mailbox(self, scope, operation, mailbox, call):
        return self.answer if operation == "logon" else None


@register
class NameNotFound(RpcScopedFault):
    name = "mailbox.name-not-found"
    summary = "NSPI name lookups (ResolveNames, DNToMId) do not find an entry: the address book does not list it."
    description = ("The recipient is hidden from address lists, or the address book has not caught up with a new "
                   "mailbox: Check Name (NspiResolveNamesW) answers MID_UNRESOLVED and NspiDNToMId MId 0 for it. "
                   "Browsing the address list still shows the entry.")
    symptoms = {"impacket": "hNspiResolveNamesW: ppMIds [0] (MID_UNRESOLVED), no rows",
                "exchanger.py": "nspi guid-known: 'Object with specified GUID not found!'"}
    analyzer = {"fails_at": "nspi", "reason": "name-not-found"}
    params = {"entry": Param(str, None, "the e-mail address of the entry not found (default: every mailbox)")}

    def on_mailbox(self, scope, operation, mailbox, call):
        entry = self.values["entry"]
        if operation != "resolve" or mailbox is None:
            return None
        return MailboxError(NOT_FOUND) if entry is None or entry.lower() == mailbox.email.lower() else None


@register
class NspiRows(RpcScopedFault):
    name = "mailbox.nspi-rows"
    summary = ("NspiQueryRows / NspiGetMatches / NspiResolveNames rows come back odd: a column missing or twice, a "
               "PT_ERROR, another property type, a string empty, long or non-ASCII; no rows, each row twice, a row "
               "of errors added.")
    description = ("What another address book server (a Samba or OpenChange NSPI, a GAL sync appliance) or a "
                   "directory with odd data may answer: a row that lacks a column the client asked for, "
                   "PtypErrorCode where a value was expected (MAPI_E_NOT_FOUND 0x8004010F, or another code), a "
                   "property in a type the client did not ask for, a display name of 64 KiB or of characters outside "
                   "the BMP. Over RPC/HTTP and MAPI/HTTP (/mapi/nspi/) alike: the answer stays valid NDR "
                   "(MS-OXNSPI 2.2.3) or a valid MAPI/HTTP body (MS-OXCMAPIHTTP 2.2.5: its one column set follows "
                   "the edit, a column whose type changed goes as PtypUnspecified), so it reaches the client's row "
                   "parser; "
                   "the `mockex fuzz --layer nspi` strategy draws these. `cells` edits apply to every row in "
                   "order, by column index in the columns asked for.")
    symptoms = {"exchanger.py": "prints rows by column position; a missing or retyped column may print an error "
                                "value or raise KeyError/IndexError in its printer"}
    params = {"cells": Param(list, None, "edits of every row, in order: {action: drop|error|text|type|duplicate, "
                                         "column: index, value: error code (int), text, or a type: "
                                         + ", ".join(RETYPED) + "}", items=dict),
              "rows": Param(str, None, "then the row set: none, duplicate, error-row", NSPI_ROW_ACTIONS),
              "operation": Param(str, None, "only query-rows, get-matches or resolve-names (default: all)",
                                 ("query-rows", "get-matches", "resolve-names"))}

    @classmethod
    def validate(cls, values):
        result = super().validate(values)
        for edit in result["cells"] or ():
            _check_cell_edit(edit)
        return result

    def __init__(self, rng=None, **values):
        super().__init__(rng, **values)
        self.edit = RowsEdit(tuple(CellEdit(e["action"], e["column"], e.get("value"))
                                   for e in self.values["cells"] or ()), self.values["rows"])

    def on_nspi_rows(self, scope, operation):
        return self.edit if self.values["operation"] in (None, operation) else None


def _check_cell_edit(edit: dict) -> None:
    unknown = set(edit) - {"action", "column", "value"}
    if unknown:
        raise FaultParamError("cells", f"unknown key {sorted(unknown)[0]!r}", "keys: action, column, value")
    action, column, value = edit.get("action"), edit.get("column"), edit.get("value")
    if action not in NSPI_CELL_ACTIONS:
        raise FaultParamError("cells", f"action {action!r} is not allowed", ", ".join(NSPI_CELL_ACTIONS))
    if isinstance(column, bool) or not isinstance(column, int) or column < 0:
        raise FaultParamError("cells", f"column {column!r} is not an index", "0 for the first column asked for")
    if action == "error" and value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                                    or not 0 <= value < 1 << 32):
        raise FaultParamError("cells", f"error code {value!r} is not a u32")
    if action == "text" and value is not None and (not isinstance(value, str) or len(value) > 65535):
        raise FaultParamError("cells", f"text {value!r:.40} is not text of at most 65535 characters")
    if action == "type" and value not in RETYPED:
        raise FaultParamError("cells", f"type {value!r} is not one of " + ", ".join(RETYPED))


@register
class RopAnswer(RpcScopedFault):
    name = "mailbox.rop-answer"
    summary = ("A ROP response buffer comes back odd: one ROP's ReturnValue (or a RopBackoff), a handle index or "
               "the handle table changed, RopQueryRows' RowCount or rows edited, a response cut, a RopPending or "
               "RopNotify appended, RPC_HEADER_EXT flags that do not match the payload.")
    description = ("What a store under load, a proxy in between or another EMSMDB server (OpenChange, gromox) may "
                   "answer: RopOpenFolder failing with ecNotFound, ecAccessDenied or ecServerBusy and a RopBackoff, "
                   "an OutputHandleIndex or handle the request did not ask for, a handle table shorter than the "
                   "request's, a RowCount that does not match the rows, PtypErrorCode or absent values in rows, a "
                   "notification nobody registered for, the Compressed or XorMagic flag on a plain payload. The edit "
                   "is made on the ROP buffer both EcDoRpcExt2 (RPC over HTTP) and Execute (MAPI over HTTP) carry "
                   "(MS-OXCROPS 2.2.1, MS-OXCRPC 2.2.2.1), so the buffer still reaches the client's ROP parser unless "
                   "the edit is about the framing (`truncate`, `flags_set`, `flags_clear`). The per-ROP edits change "
                   "the first response to `rop` in a buffer; without `rop` the buffer edits apply to every buffer. "
                   "The `mockex fuzz --layer emsmdb` strategy draws these.")
    symptoms = {"mockex probe": "the mailbox step fails (inbox-open-failed, inbox-list-failed, ec-server-busy, "
                                "rop-response-malformed) naming the ROP",
                "outlook": "a folder that will not open, an empty or cut view, a retry after the back-off"}
    params = {
        "rop": Param(str, None, "the ROP whose response is edited: " + ", ".join(ROP_IDS), tuple(ROP_IDS)),
        "return_value": Param(int, None, "that ROP's ReturnValue instead (its error form: RopId, handle index, "
                                         "ReturnValue), e.g. 0x8004010F ecNotFound, 0x80070005 ecAccessDenied",
                              minimum=1, below=1 << 32),
        "backoff_ms": Param(int, None, "a RopBackoff with this duration in place of that ROP's response; nothing "
                                       "after it is answered (MS-OXCROPS 2.2.15.2)", minimum=0, below=1 << 32),
        "rest": Param(str, "drop", "after a ReturnValue: drop the later responses (the server stopped) or keep "
                                   "them", REST),
        "output_index": Param(int, None, "the handle index byte written into that ROP's response", minimum=0,
                              below=256),
        "handle_index": Param(int, None, "the handle table slot set to `handle_value`", minimum=0, below=256),
        "handle_value": Param(int, 0xFFFFFFFF, "the handle written there", minimum=0, below=1 << 32),
        "handles_dropped": Param(int, 0, "handles removed from the end of the handle table", minimum=0),
        "row_count": Param(int, None, "RopQueryRows: the RowCount sent, whatever rows follow", minimum=0,
                           below=1 << 16),
        "rows": Param(str, None, "RopQueryRows: the rows: none, duplicate (each twice), drop-last", ROW_ACTIONS),
        "cells": Param(list, None, "RopQueryRows: edits of every row: {action: " + "|".join(CELL_ACTIONS)
                                   + ", column: index, value: error code or text}", items=dict),
        "truncate": Param(int, None, "bytes of that ROP's response kept (RopSize follows)", minimum=0),
        "append": Param(str, None, "a ROP response appended: " + ", ".join(APPENDED), APPENDED),
        "flags_set": Param(list, None, "RPC_HEADER_EXT flags set without doing what they say: "
                                       + ", ".join(HEADER_FLAGS), items=str),
        "flags_clear": Param(list, None, "RPC_HEADER_EXT flags cleared: " + ", ".join(HEADER_FLAGS), items=str)}

    @classmethod
    def validate(cls, values):
        result = super().validate(values)
        for key in ("flags_set", "flags_clear"):
            for flag in result[key] or ():
                if flag not in HEADER_FLAGS:
                    raise FaultParamError(key, f"{flag!r} is not a flag", ", ".join(HEADER_FLAGS))
        for edit in result["cells"] or ():
            unknown = set(edit) - {"action", "column", "value"}
            if unknown or edit.get("action") not in CELL_ACTIONS or isinstance(edit.get("column"), bool) \
                    or not isinstance(edit.get("column"), int) or edit["column"] < 0:
                raise FaultParamError("cells", f"{edit!r:.60} is not a cell edit",
                                      "{action: " + "|".join(CELL_ACTIONS) + ", column: index, value: ...}")
            value = edit.get("value")
            if edit["action"] == "text" and value is not None and (not isinstance(value, str)
                                                                    or len(value) > MAX_TEXT):
                raise FaultParamError("cells", f"text {value!r:.40} is not text of at most {MAX_TEXT} characters")
            if edit["action"] == "error" and value is not None and (isinstance(value, bool) or not isinstance(
                    value, int) or not 0 <= value < 1 << 32):
                raise FaultParamError("cells", f"error code {value!r} is not a u32")
        per_rop = ("return_value", "backoff_ms", "output_index", "row_count", "rows", "cells", "truncate")
        if result["rop"] is None and any(result[key] for key in per_rop if result[key] is not None):
            raise FaultParamError("rop", "the ROP whose response is edited is missing", ", ".join(ROP_IDS))
        return result

    def __init__(self, rng=None, **values):
        super().__init__(rng, **values)
        v = self.values
        cells = tuple(CellChange(e["action"], e["column"], e.get("value")) for e in v["cells"] or ())

        def flags(names):
            return sum(HEADER_FLAGS[name] for name in set(names or ()))
        self.edit = RopAnswerEdit(ROP_IDS.get(v["rop"]) if v["rop"] else None, v["return_value"], v["backoff_ms"],
                                  v["rest"], v["output_index"], v["handle_index"], v["handle_value"],
                                  v["handles_dropped"], v["row_count"], v["rows"], cells, v["truncate"], v["append"],
                                  flags(v["flags_set"]), flags(v["flags_clear"]))

    def on_rop_answer(self, scope, rop_ids):
        return self.edit if self.edit.applies(rop_ids) else None
