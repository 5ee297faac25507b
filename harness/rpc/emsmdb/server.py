"""The EMSMDB server (MS-OXCRPC, mailbox store, port 6001): session connect/disconnect and RopLogon.

It answers what a connectivity check needs: EcDoConnectEx with version and encryption gates, EcDoRpcExt2 carrying
RopLogon (private mailboxes: 13 special folder IDs; a mailbox homed on another back end: ecWrongServer with that
server's legacy DN), EcDoDisconnect, EcDummyRpc, EcDoAsyncConnectEx (the ACXH asyncwait.py's EcDoAsyncWaitEx
waits on); EcRRegisterPushNotification returns ecNotSupported as Exchange 2010 and later do (no UDP push). Other ROPs
get an ecNotSupported ROP response and end the ROP buffer (their request sizes are not modelled).

The ecWrongServer ServerName is the legacy DN of the back-end server (``org.backend_server_dn``), which
RfrGetFQDNFromServerDN resolves to that server's FQDN: the Exchange 2013 per-mailbox server DN would name the
'<mailbox guid>@<domain>' server the client is already using, so it could not redirect anywhere.

The ``mailbox`` fault hook is asked before EcDoConnectEx's own gates ("connect") and before each RopLogon
("logon"). A busy answer (ecServerBusy) is given as MS-OXCROPS 3.2.4.2 prescribes: a RopBackoff response in place
of the RopLogon response for clients newer than 12.0.4228, the RPC_S_SERVER_TOO_BUSY fault for older ones.
"""
from __future__ import annotations

import itertools
import time
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, List, MutableMapping, Optional, Tuple

from impacket.dcerpc.v5.dtypes import NULL

import harness.rpc.emsmdb.wire as wire
from harness.mailbox.store import MailboxStore
from harness.org import Mailbox, Org, Server
from harness.rpc.base import (
    NCA_S_FAULT_CONTEXT_MISMATCH,
    RPC_C_AUTHN_LEVEL_PKT_PRIVACY,
    CallContext,
    MailboxCall,
    MailboxError,
    RpcFault,
    RpcInterface,
    Version,
    decoding,
    mailbox_fault,
    marshal,
    ndr_text,
    new_context_handle,
)
from harness.rpc.emsmdb.codec import (
    BACKOFF_MIN_CLIENT_VERSION,
    LOGON_PRIVATE,
    RESPONSE_OWNER_RIGHT,
    RESPONSE_RESERVED,
    RESPONSE_SEND_AS_RIGHT,
    ROP_BACKOFF,
    ROP_LOGON,
    LogonRequest,
    backoff_of,
    join_rop_payload,
    logon_failure,
    logon_redirect,
    logon_success,
    parse_rop_logon,
    rop_backoff,
    rop_not_supported,
    split_rop_payload,
    unwrap_rop_buffers,
    wrap_rop_buffers,
)
from harness.rpc.emsmdb.folderprops import HANDLERS as FOLDER_PROPERTY_HANDLERS
from harness.rpc.emsmdb.folders import HANDLERS as FOLDER_HANDLERS
from harness.rpc.emsmdb.idl import (
    DEFAULT_MIN_CLIENT_VERSION,
    EC_BUFFER_TOO_SMALL,
    EC_CLIENT_VER_DISALLOWED,
    EC_LOGIN_FAILURE,
    EC_LOGIN_PERM,
    EC_NONE,
    EC_NOT_ENCRYPTED,
    EC_NOT_FOUND,
    EC_NOT_SUPPORTED,
    EC_RPC_FORMAT,
    EC_SERVER_BUSY,
    EC_UNKNOWN_USER,
    EC_WRONG_SERVER,
    MAX_AUX_OUT,
    MAX_OUT,
    RPC_S_SERVER_TOO_BUSY,
    EcDoAsyncConnectEx,
    EcDoAsyncConnectExResponse,
    EcDoConnectEx,
    EcDoConnectExResponse,
    EcDoDisconnect,
    EcDoDisconnectResponse,
    EcDummyRpcResponse,
    EcRRegisterPushNotification,
    EcRRegisterPushNotificationResponse,
    pack_version,
    read_version_words,
    unpack_version,
    version_text,
    write_version_words,
)
from harness.rpc.emsmdb.logon import HANDLERS as LOGON_HANDLERS
from harness.rpc.emsmdb.messages import HANDLERS as MESSAGE_HANDLERS
from harness.rpc.emsmdb.notify import HANDLERS as NOTIFY_HANDLERS
from harness.rpc.emsmdb.notify import notify_rops
from harness.rpc.emsmdb.ropedit import RopAnswerEdit, RopResponse, rop_answer_hook
from harness.rpc.emsmdb.rops import HANDLERS as TABLE_HANDLERS
from harness.rpc.emsmdb.rops import ObjectMap, StoreObject, TableObject, special_folder_counters
from harness.rpc.emsmdb.rules import HANDLERS as RULE_HANDLERS
from harness.rpc.emsmdb.tables import HANDLERS as VIEW_HANDLERS

# FOLDER_PROPERTY_HANDLERS last: the property ROPs on a folder; they hand a message's back to messages.py.
HANDLERS = {**TABLE_HANDLERS, **MESSAGE_HANDLERS, **NOTIFY_HANDLERS, **VIEW_HANDLERS, **FOLDER_HANDLERS,
            **RULE_HANDLERS, **LOGON_HANDLERS, **FOLDER_PROPERTY_HANDLERS}


# ---- server -------------------------------------------------------------------------------------------------
@dataclass
class _Seen:
    """What one EcDoRpcExt2 / Execute asked and what RopBackoff its answer carries, for the transcript."""
    rops: List[int] = field(default_factory=list)          # the RopIds run, in order
    backoff_ms: int = 0                                       # the longest RopBackoff Duration answered
    backoff_rops: List[int] = field(default_factory=list)   # the RopIds a RopBackoff delays

    def saw_backoffs(self, responses: List[RopResponse]) -> None:
        for response in responses:
            found = backoff_of(response.data) if response.rop_id == ROP_BACKOFF else None
            if found is not None:
                self.backoff_ms = max(self.backoff_ms, found[0])
                self.backoff_rops += [rop for rop in found[1] if rop not in self.backoff_rops]


def _columns(session: "EmsmdbSession", handles: List[int], index: int) -> Optional[List[int]]:
    """The columns RopSetColumns set on the table at this handle table index (None: no such table)."""
    table = session.objects.at(handles, index)
    return table.columns if isinstance(table, TableObject) else None


@dataclass
class EmsmdbSession:
    mailbox: Mailbox                 # the connected user
    client_version: Version          # what EcDoConnectEx announced
    objects: ObjectMap = field(default_factory=ObjectMap)   # server objects by handle (rops.py)
    async_handle: Optional[bytes] = None                     # its ACXH once EcDoAsyncConnectEx gave one
    label: str = ""                  # names the session in the transcript (emsmdb_execute events)


class Emsmdb(RpcInterface):
    name = "emsmdb"
    uuid = "a4f1db00-ca47-1067-b31f-00dd010662da"
    version = (0, 81)
    opnums = {1: "EcDoDisconnect", 4: "EcRRegisterPushNotification", 6: "EcDummyRpc", 10: "EcDoConnectEx",
              11: "EcDoRpcExt2", 14: "EcDoAsyncConnectEx"}

    POLLS_MAX_MS = 60000
    RETRY_COUNT = 6
    RETRY_DELAY_MS = 10000

    def __init__(self, org: Org, *, min_client_version: Tuple[int, int, int, int] = DEFAULT_MIN_CLIENT_VERSION,
                 encryption_required: bool = True, serving_server: Optional[Server] = None,
                 clock: Callable[[], float] = time.time, store: Optional[MailboxStore] = None,
                 transport: str = "rpc"):
        self.org = org
        self.store = store          # the folders and messages behind the ROPs (None: logon only)
        self.min_client_version = min_client_version
        self.encryption_required = encryption_required     # Set-RpcClientAccess -EncryptionRequired (default on)
        self.serving_server = serving_server or org.cas
        self.clock = clock
        self.transport = transport  # rpc or mapi: the prefix of session labels
        self._sessions_opened = itertools.count(1)
        self.server_version = pack_version(org.version_parts)
        # ACXH -> session, for every association: Outlook waits on AsyncEMSMDB over a connection of its own. Weak: a
        # session goes with its association (or EcDoDisconnect), its ACXH with it.
        self.async_sessions: MutableMapping[bytes, EmsmdbSession] = weakref.WeakValueDictionary()

    def _session(self, ctx: CallContext, handle: bytes) -> EmsmdbSession:
        session = ctx.association.get(("emsmdb", handle))
        if session is None:
            raise RpcFault(NCA_S_FAULT_CONTEXT_MISMATCH, "unknown EMSMDB session context handle")
        return session

    # ---- EcDoConnectEx --------------------------------------------------------------------------------------
    def EcDoConnectEx(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("EcDoConnectEx"):
            request = EcDoConnectEx(stub)
            user_dn = ndr_text(request["szUserDN"])
            client_version = unpack_version(read_version_words(request["rgwClientVersion"]))
            timestamp = request["pulTimeStamp"]
            if request["cbAuxIn"] != len(request["rgbAuxIn"]) or request["pcbAuxOut"] > MAX_AUX_OUT:
                raise ValueError("cbAuxIn/pcbAuxOut out of range")
        code, session, best = self.connect(user_dn, client_version, ctx)
        response = EcDoConnectExResponse()
        response["pcmsPollsMax"] = self.POLLS_MAX_MS
        response["pcRetry"] = self.RETRY_COUNT
        response["pcmsRetryDelay"] = self.RETRY_DELAY_MS
        write_version_words(response["rgwServerVersion"], self.server_version_for(user_dn))
        write_version_words(response["rgwBestVersion"], pack_version(best))
        response["pulTimeStamp"] = timestamp
        response["rgbAuxOut"] = []
        response["pcbAuxOut"] = 0
        if session is not None:
            handle = new_context_handle(ctx)
            ctx.association[("emsmdb", handle)] = session
            response["pcxh"]["context_handle_uuid"] = handle[4:]
            response["picxr"] = ctx.rng.randint(1, 0x7FFF)
            response["szDNPrefix"] = self.dn_prefix() + "\x00"
            response["szDisplayName"] = session.mailbox.display_name + "\x00"
        else:
            response["szDNPrefix"] = NULL
            response["szDisplayName"] = NULL
        response["ErrorCode"] = code
        return marshal(response)

    def server_version_for(self, user_dn: str) -> Tuple[int, int, int]:
        """rgwServerVersion: a mailbox on Exchange 2007/2010 is served by its own server (the 2013 CAS only
        proxies), which answers with its version; everyone else gets this server's."""
        mailbox = self.org.find(user_dn)
        if mailbox is not None and self.org.is_legacy_homed(mailbox):
            return pack_version(self.org.home(mailbox).version_parts)
        return self.server_version

    def _serves(self, mailbox: Mailbox) -> bool:
        """This server's mailboxes, and those of 2007/2010 servers it stands in for behind the 2013 proxy."""
        return mailbox.server.lower() == self.serving_server.name.lower() or self.org.is_legacy_homed(mailbox)

    def dn_prefix(self) -> str:
        return f"{self.org.org_dn}/cn=Recipients/"

    def connect(self, user_dn: str, client_version: Version,
                ctx: CallContext) -> Tuple[int, Optional[EmsmdbSession], Version]:
        """The transport-neutral half of EcDoConnectEx / MAPI/HTTP Connect: (return value, the new session or
        None, rgwBestVersion)."""
        code, mailbox, best = self._admit(user_dn, client_version, ctx)
        session = None
        if code == EC_NONE and mailbox:
            session = EmsmdbSession(mailbox, client_version, label=f"{self.transport}-{next(self._sessions_opened)}")
        ctx.record("emsmdb_connect", user_dn=user_dn, client_version=version_text(client_version),
                   result=f"0x{code:08x}", session=session.label if session else None)
        return code, session, best

    def _admit(self, user_dn: str, client_version: Version,
               ctx: CallContext) -> Tuple[int, Optional[Mailbox], Version]:
        """(return value, the mailbox, rgwBestVersion): a fault's answer first, then the EcDoConnectEx gates in
        Exchange's order: client version, RPC encryption, user, identity."""
        mailbox = self.org.find(user_dn)
        refusal = mailbox_fault(ctx, "connect", mailbox, MailboxCall(user_dn, client_version, ctx.auth_level))
        if refusal is not None:
            return refusal.code, None, refusal.best_version or client_version
        if client_version < self.min_client_version:
            return EC_CLIENT_VER_DISALLOWED, None, self.min_client_version
        if self.encryption_required and ctx.auth_level < RPC_C_AUTHN_LEVEL_PKT_PRIVACY:
            return EC_NOT_ENCRYPTED, None, client_version
        if mailbox is None:
            return EC_UNKNOWN_USER, None, client_version
        if ctx.mailbox is None or ctx.mailbox != mailbox:
            return EC_LOGIN_FAILURE, None, client_version
        return EC_NONE, mailbox, client_version

    # ---- EcDoRpcExt2 ----------------------------------------------------------------------------------------
    def EcDoRpcExt2(self, stub: bytes, ctx: CallContext) -> bytes:
        request = wire.rpc_request(stub)
        handle = stub[:20]
        rgb_in, max_out = request.rgb_in, request.max_out
        with decoding("EcDoRpcExt2"):
            if request.cb_in != len(rgb_in) or request.cb_aux_in != len(request.aux_in) \
                    or max_out > MAX_OUT or request.max_aux_out > MAX_AUX_OUT:
                raise ValueError("cbIn/cbAuxIn/pcbOut/pcbAuxOut out of range")
        session = self._session(ctx, handle)
        code, rgb_out = self.execute(session, rgb_in, max_out, ctx)
        return wire.rpc_response(handle, rgb_out, code)

    def execute(self, session: EmsmdbSession, rgb_in: bytes, max_out: int, ctx: CallContext) -> Tuple[int, bytes]:
        """The transport-neutral half of EcDoRpcExt2 / MAPI/HTTP Execute: (return value, rgbOut)."""
        edits: List[RopAnswerEdit] = []
        seen = _Seen()
        try:
            payloads = unwrap_rop_buffers(rgb_in)
            answers = [self._run_rops(payload, session, ctx, edits, seen) for payload in payloads]
        except ValueError as error:
            ctx.record("emsmdb_rop_format", error=str(error))
            answers, code = [], EC_RPC_FORMAT
        else:
            code = EC_NONE
        # what the conduct rule ``backoff`` judges a retry by: the session, the ROPs asked, a RopBackoff answered
        backoff = {"backoff_ms": seen.backoff_ms, "backoff_rops": seen.backoff_rops} if seen.backoff_rops else {}
        ctx.record("emsmdb_execute", session=session.label, mailbox=session.mailbox.username, rops=seen.rops,
                   result=f"0x{code:08x}", **backoff)
        rgb_out = wrap_rop_buffers(answers)
        for edit in edits:
            rgb_out = edit.edit_framing(rgb_out)
        if len(rgb_out) > max_out:
            rgb_out, code = b"", EC_BUFFER_TOO_SMALL
        return code, rgb_out

    def _run_rops(self, payload: bytes, session: EmsmdbSession, ctx: CallContext,
                  edits: Optional[List[RopAnswerEdit]] = None, seen: Optional["_Seen"] = None) -> bytes:
        rops, handles = split_rop_payload(payload)
        responses: List[RopResponse] = []
        seen = seen if seen is not None else _Seen()
        pos = 0
        while pos < len(rops):
            rop_id, logon_id = rops[pos], rops[pos + 1] if pos + 1 < len(rops) else 0
            seen.rops.append(rop_id)
            handler = HANDLERS.get(rop_id)
            if handler is not None:
                response, pos = handler(rops, pos, handles, session.objects)
                if response:             # RopRelease answers nothing
                    responses.append(RopResponse(rop_id, logon_id, response))
                continue
            if rop_id != ROP_LOGON:   # its request size is not modelled: nothing after it can be read
                input_index = rops[pos + 2] if pos + 2 < len(rops) else 0
                responses.append(RopResponse(rop_id, logon_id, rop_not_supported(rop_id, input_index)))
                break
            logon, pos = parse_rop_logon(rops, pos)
            if logon.output_handle_index >= len(handles):
                raise ValueError("RopLogon OutputHandleIndex outside the handle table")
            target = self.org.find(logon.essdn)
            refusal = mailbox_fault(ctx, "logon", target, MailboxCall(logon.essdn, session.client_version,
                                                                     ctx.auth_level))
            if refusal is not None and refusal.code == EC_SERVER_BUSY:
                responses.append(RopResponse(ROP_BACKOFF, logon.logon_id,
                                             self._backoff(logon, refusal.backoff_ms, session, ctx)))
                break                    # the delayed ROP and all after it get no response
            responses.append(RopResponse(ROP_LOGON, logon.logon_id,
                                         self._logon(logon, target, handles, session, ctx, refusal)))
        edit = self._rop_answer_edit(responses, ctx)
        if edit is not None:
            responses, handles = edit.edit_rops(responses, handles, lambda index: _columns(session, handles, index))
            if edits is not None:
                edits.append(edit)
        seen.saw_backoffs(responses)
        answer = b"".join(response.data for response in responses)
        # what the session's registrations have pending rides on the response (RopNotify, RopPending)
        return join_rop_payload(answer + notify_rops(session.objects), handles)

    @staticmethod
    def _rop_answer_edit(responses: List[RopResponse], ctx: CallContext) -> Optional[RopAnswerEdit]:
        """The ``rop_answer`` hook's edit of this buffer (scope: the RPC server name, the caller's mailbox)."""
        faults = ctx.faults
        if faults is None or not ctx.concerns(rop_answer_hook):
            return None
        return faults.first(rop_answer_hook, ctx.scope(), tuple(r.rop_id for r in responses))

    @staticmethod
    def _backoff(logon: LogonRequest, duration_ms: int, session: EmsmdbSession, ctx: CallContext) -> bytes:
        ctx.record("emsmdb_logon", essdn=logon.essdn, mailbox=None, result=f"0x{EC_SERVER_BUSY:08x}",
                   backoff_ms=duration_ms)
        if session.client_version <= BACKOFF_MIN_CLIENT_VERSION:
            raise RpcFault(RPC_S_SERVER_TOO_BUSY, "the server is busy; the client is too old for RopBackoff")
        return rop_backoff(logon.logon_id, duration_ms)

    def _logon(self, logon: LogonRequest, target: Optional[Mailbox], handles: List[int], session: EmsmdbSession,
               ctx: CallContext, refusal: Optional[MailboxError]) -> bytes:
        redirect = None
        if refusal is not None:
            code = refusal.code
            if code == EC_WRONG_SERVER:
                redirect = self.org.backend_server_dn(self._other_server(refusal.server))
        elif not logon.logon_flags & LOGON_PRIVATE:
            code = EC_NOT_FOUND          # the org has no public folder mailboxes
        elif target is None:
            code = EC_UNKNOWN_USER
        elif not self._serves(target):
            code = EC_WRONG_SERVER
            redirect = self.org.backend_server_dn(self.org.server(target.server))
        elif target != session.mailbox and target.kind == "user":
            code = EC_LOGIN_PERM         # no delegate rights on another person's mailbox in this model
        else:
            code = EC_NONE
        ctx.record("emsmdb_logon", essdn=logon.essdn, mailbox=target.username if target else None,
                   result=f"0x{code:08x}", server_dn=redirect)
        if redirect is not None:         # set exactly when code is ecWrongServer
            return logon_redirect(logon.output_handle_index, logon.logon_flags, redirect)
        if code != EC_NONE:
            return logon_failure(logon.output_handle_index, code)
        content = self.store.mailbox(target.email) if self.store is not None else None
        handles[logon.output_handle_index] = session.objects.add(StoreObject(content, self.store))
        own = target == session.mailbox
        rights = RESPONSE_RESERVED | RESPONSE_SEND_AS_RIGHT | (RESPONSE_OWNER_RIGHT if own else 0)
        mailbox_guid = uuid.UUID(target.guid)
        replica_guid = uuid.uuid5(mailbox_guid, "replica")
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        return logon_success(logon.output_handle_index, logon.logon_flags, rights, mailbox_guid, replica_guid, now,
                             special_folder_counters(content))

    def _other_server(self, name: Optional[str]) -> Server:
        """The server a 'moved' mailbox now lives on: ``name`` (an org server, or a name the org does not know)
        or, without one, the first server that is not this one."""
        if name is None:
            return next((s for s in self.org.servers if s != self.serving_server), self.serving_server)
        return next((s for s in self.org.servers if s.name.lower() == name.lower()), Server(name, name))

    # ---- EcDoAsyncConnectEx (MS-OXCRPC 3.1.4.1): the ACXH that AsyncEMSMDB's EcDoAsyncWaitEx waits on -------
    def EcDoAsyncConnectEx(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("EcDoAsyncConnectEx"):
            EcDoAsyncConnectEx(stub)
        session = self._session(ctx, stub[:20])
        if session.async_handle is None:
            session.async_handle = new_context_handle(ctx)
            self.async_sessions[session.async_handle] = session
        response = EcDoAsyncConnectExResponse()
        response["pacxh"]["context_handle_uuid"] = session.async_handle[4:]
        response["ErrorCode"] = EC_NONE
        return marshal(response)

    def async_session(self, handle: bytes) -> Optional[EmsmdbSession]:
        """The session an ACXH belongs to (None: unknown, or its session is gone)."""
        return self.async_sessions.get(handle)

    # ---- the rest -------------------------------------------------------------------------------------------
    def EcDoDisconnect(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("EcDoDisconnect"):
            EcDoDisconnect(stub)
        session = self._session(ctx, stub[:20])
        del ctx.association[("emsmdb", stub[:20])]
        if session.async_handle is not None:
            self.async_sessions.pop(session.async_handle, None)
        response = EcDoDisconnectResponse()
        response["ErrorCode"] = EC_NONE
        return marshal(response)

    def EcRRegisterPushNotification(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("EcRRegisterPushNotification"):
            EcRRegisterPushNotification(stub)
        self._session(ctx, stub[:20])
        response = EcRRegisterPushNotificationResponse()
        response["pcxh"]["context_handle_uuid"] = stub[4:20]
        response["hNotification"] = 0
        response["ErrorCode"] = EC_NOT_SUPPORTED
        return marshal(response)

    def EcDummyRpc(self, stub: bytes, ctx: CallContext) -> bytes:
        response = EcDummyRpcResponse()
        response["ErrorCode"] = EC_NONE
        return marshal(response)
