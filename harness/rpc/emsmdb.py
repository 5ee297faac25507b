"""EMSMDB (MS-OXCRPC, mailbox store, port 6001): session connect/disconnect and RopLogon, server and client halves.

impacket has no EMSMDB structures, so the NDR calls are defined here with impacket's NDR classes (layouts per the
MS-OXCRPC IDL, cross-checked against Gromox's marshalling). The server answers what a connectivity check needs:
EcDoConnectEx with version and encryption gates, EcDoRpcExt2 carrying RopLogon (private mailboxes: 13 special
folder IDs; a mailbox homed on another back end: ecWrongServer with that server's legacy DN), EcDoDisconnect,
EcDummyRpc; EcRRegisterPushNotification returns ecNotSupported as Exchange 2010 and later do (no UDP push).
Other ROPs get an ecNotSupported ROP response and end the ROP buffer (their request sizes are not modelled).

The ecWrongServer ServerName is the legacy DN of the back-end server (``org.backend_server_dn``), which
RfrGetFQDNFromServerDN resolves to that server's FQDN: the Exchange 2013 per-mailbox server DN would name the
'<mailbox guid>@<domain>' server the client is already using, so it could not redirect anywhere.

The ``mailbox`` fault hook is asked before EcDoConnectEx's own gates ("connect") and before each RopLogon
("logon"). A busy answer (ecServerBusy) is given as MS-OXCROPS 3.2.4.2 prescribes: a RopBackoff response in place
of the RopLogon response for clients newer than 12.0.4228, the RPC_S_SERVER_TOO_BUSY fault for older ones.

Client halves (``build_*_request`` / ``parse_*_response``) produce and read the same stubs, for any transport:
the harness DCE/RPC client, impacket's ``DCERPC_v5.call``/``recv``, or ``InProcessDce``.
"""
from __future__ import annotations

import struct
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Dict, List, Optional, Tuple

from impacket.dcerpc.v5.dtypes import LPSTR, NULL, STR, ULONG, USHORT
from impacket.dcerpc.v5.ndr import NDRCALL, NDRSTRUCT, NDRUniConformantArray, NDRUniConformantVaryingArray
from impacket.dcerpc.v5.nspi import handle_t
from impacket.dcerpc.v5.rpcrt import DCERPCException

from harness.org import Mailbox, Org, Server
from harness.rpc.base import (NCA_S_FAULT_CONTEXT_MISMATCH, RPC_C_AUTHN_LEVEL_PKT_PRIVACY, CallContext, MailboxCall,
                              mailbox_fault,
                              MailboxError, RpcFault, RpcInterface, Version, decoding, is_null, marshal, ndr_text,
                              new_context_handle)

# ---- return values (MS-OXCDATA 2.4) -------------------------------------------------------------------------
EC_NONE = 0x00000000
EC_UNKNOWN_USER = 0x000003EB
EC_LOGIN_PERM = 0x000003F2
EC_WRONG_SERVER = 0x00000478
EC_BUFFER_TOO_SMALL = 0x0000047D
EC_SERVER_BUSY = 0x00000480
EC_RPC_FORMAT = 0x000004B6
EC_CLIENT_VER_DISALLOWED = 0x000004DF
EC_NOT_ENCRYPTED = 0x00000970
EC_NOT_SUPPORTED = 0x80040102
EC_NOT_FOUND = 0x8004010F
EC_LOGIN_FAILURE = 0x80040111
RPC_S_SERVER_TOO_BUSY = 0x000006BB       # the fault that replaces RopBackoff for old clients

# ---- RPC_HEADER_EXT (MS-OXCRPC 2.2.2.1) and EcDoRpcExt2 flags -----------------------------------------------
HEADER_EXT = struct.Struct("<HHHH")          # Version, Flags, Size, SizeActual
FLAG_COMPRESSED, FLAG_XOR_MAGIC, FLAG_LAST = 0x1, 0x2, 0x4
XOR_MAGIC = 0xA5
PUL_NO_COMPRESSION, PUL_NO_XOR_MAGIC = 0x1, 0x2
MAX_OUT = 0x40000
MAX_AUX_OUT = 0x1008

# ---- RopLogon (MS-OXCROPS 2.2.3.1) --------------------------------------------------------------------------
ROP_LOGON = 0xFE
ROP_BACKOFF = 0xF9
BACKOFF = struct.Struct("<BBLB")             # RopId, LogonId, Duration, BackoffRopCount (MS-OXCROPS 2.2.15.2)
BACKOFF_ROP = struct.Struct("<BL")           # RopIdBackoff, Duration
BACKOFF_MIN_CLIENT_VERSION = (12, 0, 4228, 0)   # clients above it understand RopBackoff (MS-OXCROPS 3.1.5.1.1)
LOGON_PRIVATE = 0x01
OPEN_HOME_LOGON, OPEN_TAKE_OWNERSHIP, OPEN_USE_PER_MDB_REPLID_MAPPING = 0x4, 0x8, 0x01000000
RESPONSE_RESERVED, RESPONSE_OWNER_RIGHT, RESPONSE_SEND_AS_RIGHT = 0x1, 0x2, 0x4
# RopId, LogonId, OutputHandleIndex, LogonFlags, OpenFlags, StoreState, EssdnSize (then the Essdn)
LOGON_REQUEST = struct.Struct("<BBBBLLH")
SPECIAL_FOLDERS = ("Root", "DeferredAction", "SpoolerQueue", "IpmSubtree", "Inbox", "Outbox", "SentItems",
                   "DeletedItems", "CommonViews", "Schedule", "Search", "Views", "Shortcuts")
REPL_ID = 0x0001

# Exchange 2013 requires Outlook 2007 SP3 with the November 2012 update or later.
DEFAULT_MIN_CLIENT_VERSION = (12, 0, 6665, 5000)
OUTLOOK_2013_VERSION = (15, 0, 4569, 1506)


class DCERPCSessionError(DCERPCException):
    """Raised by impacket's ``dce.request`` for a non-zero EMSMDB return value."""

    def __str__(self):
        return f"EMSMDB SessionError: code: 0x{self.error_code:x}"


# ---- NDR (MS-OXCRPC 3.1.4) ----------------------------------------------------------------------------------
class ByteArray(NDRUniConformantArray):
    item = "c"


class ByteVaryingArray(NDRUniConformantVaryingArray):
    item = "c"


class VersionWords(NDRSTRUCT):
    """unsigned short[3], as the client/server/best version arrays are marshalled."""
    structure = (("Word0", USHORT), ("Word1", USHORT), ("Word2", USHORT))


class EcDoConnectEx(NDRCALL):
    opnum = 10
    structure = (("szUserDN", STR), ("ulFlags", ULONG), ("ulConMod", ULONG), ("cbLimit", ULONG), ("ulCpid", ULONG),
                 ("ulLcidString", ULONG), ("ulLcidSort", ULONG), ("ulIcxrLink", ULONG),
                 ("usFCanConvertCodePages", USHORT), ("rgwClientVersion", VersionWords), ("pulTimeStamp", ULONG),
                 ("rgbAuxIn", ByteArray), ("cbAuxIn", ULONG), ("pcbAuxOut", ULONG))


class EcDoConnectExResponse(NDRCALL):
    structure = (("pcxh", handle_t), ("pcmsPollsMax", ULONG), ("pcRetry", ULONG), ("pcmsRetryDelay", ULONG),
                 ("picxr", USHORT), ("szDNPrefix", LPSTR), ("szDisplayName", LPSTR),
                 ("rgwServerVersion", VersionWords), ("rgwBestVersion", VersionWords), ("pulTimeStamp", ULONG),
                 ("rgbAuxOut", ByteVaryingArray), ("pcbAuxOut", ULONG), ("ErrorCode", ULONG))


class EcDoRpcExt2(NDRCALL):
    opnum = 11
    structure = (("pcxh", handle_t), ("pulFlags", ULONG), ("rgbIn", ByteArray), ("cbIn", ULONG), ("pcbOut", ULONG),
                 ("rgbAuxIn", ByteArray), ("cbAuxIn", ULONG), ("pcbAuxOut", ULONG))


class EcDoRpcExt2Response(NDRCALL):
    structure = (("pcxh", handle_t), ("pulFlags", ULONG), ("rgbOut", ByteVaryingArray), ("pcbOut", ULONG),
                 ("rgbAuxOut", ByteVaryingArray), ("pcbAuxOut", ULONG), ("pulTransTime", ULONG), ("ErrorCode", ULONG))


class EcDoDisconnect(NDRCALL):
    opnum = 1
    structure = (("pcxh", handle_t),)


class EcDoDisconnectResponse(NDRCALL):
    structure = (("pcxh", handle_t), ("ErrorCode", ULONG))


class EcRRegisterPushNotification(NDRCALL):
    opnum = 4
    structure = (("pcxh", handle_t), ("iRpc", ULONG), ("rgbContext", ByteArray), ("cbContext", USHORT),
                 ("grbitAdviseBits", ULONG), ("rgbCallbackAddress", ByteArray), ("cbCallbackAddress", USHORT))


class EcRRegisterPushNotificationResponse(NDRCALL):
    structure = (("pcxh", handle_t), ("hNotification", ULONG), ("ErrorCode", ULONG))


class EcDummyRpc(NDRCALL):
    opnum = 6
    structure = ()


class EcDummyRpcResponse(NDRCALL):
    structure = (("ErrorCode", ULONG),)


# ---- versions -----------------------------------------------------------------------------------------------
def pack_version(version: Tuple[int, int, int, int]) -> Tuple[int, int, int]:
    """Major.minor.build.revision in the 3-word form with the 'new format' bit (MS-OXCRPC 3.1.4.1.3)."""
    major, minor, build, revision = version
    return (major & 0xFF) << 8 | (minor & 0xFF), 0x8000 | (build & 0x7FFF), revision & 0xFFFF


def unpack_version(words: Tuple[int, int, int]) -> Tuple[int, int, int, int]:
    """The normalised 4-part version; old-format words (no 0x8000 bit) carry no minor number."""
    first, second, third = words
    if second & 0x8000:
        return first >> 8, first & 0xFF, second & 0x7FFF, third
    return first, 0, second, third


def _put_words(target, words: Tuple[int, int, int]) -> None:
    for index, word in enumerate(words):
        target[f"Word{index}"] = word


def _words(source) -> Tuple[int, int, int]:
    return source["Word0"], source["Word1"], source["Word2"]


def version_text(version: Tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)


# ---- ROP buffers --------------------------------------------------------------------------------------------
def lz77_decompress(data: bytes, size: int) -> bytes:
    """The MS-OXCRPC 3.1.7.2 LZ77 + DIRECT2 decoder (the 'plain LZ77' of MS-XCA 2.4). ValueError on bad input."""
    out = bytearray()
    pos = 0
    flags = flag_count = 0
    shared_nibble = None       # position of the byte whose high nibble the next long match uses
    while len(out) < size:
        if flag_count == 0:
            if pos + 4 > len(data):
                raise ValueError("LZ77: truncated flag word")
            flags = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
            flag_count = 32
        flag_count -= 1
        if not flags & (1 << flag_count):
            if pos >= len(data):
                raise ValueError("LZ77: truncated literal")
            out.append(data[pos])
            pos += 1
            continue
        if pos + 2 > len(data):
            raise ValueError("LZ77: truncated match")
        meta = int.from_bytes(data[pos:pos + 2], "little")
        pos += 2
        offset, length = (meta >> 3) + 1, meta & 7
        if length == 7:
            if shared_nibble is None:
                if pos >= len(data):
                    raise ValueError("LZ77: truncated length")
                length = data[pos] & 0x0F
                shared_nibble = pos
                pos += 1
            else:
                length = data[shared_nibble] >> 4
                shared_nibble = None
            if length == 15:
                if pos >= len(data):
                    raise ValueError("LZ77: truncated length")
                length = data[pos]
                pos += 1
                if length == 255:
                    if pos + 2 > len(data):
                        raise ValueError("LZ77: truncated length")
                    length = int.from_bytes(data[pos:pos + 2], "little")
                    pos += 2
                    if length < 15 + 7:
                        raise ValueError("LZ77: bad long length")
                    length -= 15 + 7
                length += 15
            length += 7
        length += 3
        if offset > len(out):
            raise ValueError("LZ77: match before the start of the output")
        for _ in range(length):
            out.append(out[-offset])
    if len(out) != size:
        raise ValueError("LZ77: output longer than SizeActual")
    return bytes(out)


def wrap_rop_buffer(payload: bytes) -> bytes:
    """One uncompressed, unobfuscated RPC_HEADER_EXT segment marked Last (what the server always sends)."""
    return HEADER_EXT.pack(0, FLAG_LAST, len(payload), len(payload)) + payload


def unwrap_rop_buffers(data: bytes) -> List[bytes]:
    """The payloads of the RPC_HEADER_EXT segments in rgbIn/rgbOut, XorMagic and LZ77 undone. ValueError on
    malformed input."""
    payloads = []
    pos = 0
    while True:
        if pos + HEADER_EXT.size > len(data):
            raise ValueError("truncated RPC_HEADER_EXT")
        version, flags, size, actual = HEADER_EXT.unpack_from(data, pos)
        pos += HEADER_EXT.size
        if version != 0 or pos + size > len(data):
            raise ValueError("bad RPC_HEADER_EXT")
        payload = data[pos:pos + size]
        pos += size
        if flags & FLAG_XOR_MAGIC:
            payload = bytes(b ^ XOR_MAGIC for b in payload)
        if flags & FLAG_COMPRESSED:
            payload = lz77_decompress(payload, actual)
        elif actual != size:
            raise ValueError("SizeActual differs from Size in an uncompressed segment")
        payloads.append(payload)
        if flags & FLAG_LAST:
            return payloads


def split_rop_payload(payload: bytes) -> Tuple[bytes, List[int]]:
    """(ROP bytes, server object handle table) of one ROP request/response buffer."""
    if len(payload) < 2:
        raise ValueError("ROP buffer shorter than RopSize")
    rop_size = struct.unpack_from("<H", payload)[0]
    if rop_size < 2 or rop_size > len(payload) or (len(payload) - rop_size) % 4:
        raise ValueError("bad RopSize")
    handles = list(struct.unpack_from(f"<{(len(payload) - rop_size) // 4}L", payload, rop_size))
    return payload[2:rop_size], handles


def join_rop_payload(rops: bytes, handles: List[int]) -> bytes:
    return struct.pack("<H", 2 + len(rops)) + rops + struct.pack(f"<{len(handles)}L", *handles)


@dataclass(frozen=True)
class LogonRequest:
    logon_id: int
    output_handle_index: int
    logon_flags: int
    open_flags: int
    store_state: int
    essdn: str


def build_rop_logon(essdn: str, *, logon_id: int = 0, output_handle_index: int = 0,
                    logon_flags: int = LOGON_PRIVATE,
                    open_flags: int = OPEN_USE_PER_MDB_REPLID_MAPPING | OPEN_HOME_LOGON | OPEN_TAKE_OWNERSHIP) -> bytes:
    dn = essdn.encode("ascii") + b"\x00"
    return LOGON_REQUEST.pack(ROP_LOGON, logon_id, output_handle_index, logon_flags, open_flags, 0, len(dn)) + dn


def parse_rop_logon(rops: bytes, pos: int) -> Tuple[LogonRequest, int]:
    if pos + LOGON_REQUEST.size > len(rops):
        raise ValueError("truncated RopLogon")
    _, logon_id, index, logon_flags, open_flags, store_state, size = LOGON_REQUEST.unpack_from(rops, pos)
    start = pos + LOGON_REQUEST.size
    if start + size > len(rops):
        raise ValueError("truncated RopLogon Essdn")
    essdn = rops[start:start + size].split(b"\x00", 1)[0].decode("latin-1")
    return LogonRequest(logon_id, index, logon_flags, open_flags, store_state, essdn), start + size


def folder_id(counter: int) -> bytes:
    """A FID: 2-byte replica id (little-endian) + 6-byte global counter (big-endian)."""
    return struct.pack("<H", REPL_ID) + counter.to_bytes(6, "big")


def logon_time(moment: datetime) -> bytes:
    day_of_week = (moment.weekday() + 1) % 7        # MS-OXCROPS counts from Sunday = 0
    return struct.pack("<BBBBBBH", moment.second, moment.minute, moment.hour, day_of_week, moment.day,
                       moment.month, moment.year)


# ---- server -------------------------------------------------------------------------------------------------
@dataclass
class EmsmdbSession:
    mailbox: Mailbox                 # the connected user
    client_version: Version          # what EcDoConnectEx announced
    next_object_handle: int = 1      # server object handles handed out by RopLogon


class Emsmdb(RpcInterface):
    name = "emsmdb"
    uuid = "a4f1db00-ca47-1067-b31f-00dd010662da"
    version = (0, 81)
    opnums = {1: "EcDoDisconnect", 4: "EcRRegisterPushNotification", 6: "EcDummyRpc", 10: "EcDoConnectEx",
              11: "EcDoRpcExt2"}

    POLLS_MAX_MS = 60000
    RETRY_COUNT = 6
    RETRY_DELAY_MS = 10000

    def __init__(self, org: Org, *, min_client_version: Tuple[int, int, int, int] = DEFAULT_MIN_CLIENT_VERSION,
                 encryption_required: bool = True, serving_server: Optional[Server] = None,
                 clock: Callable[[], float] = time.time):
        self.org = org
        self.min_client_version = min_client_version
        self.encryption_required = encryption_required     # Set-RpcClientAccess -EncryptionRequired (default on)
        self.serving_server = serving_server or org.cas
        self.clock = clock
        self.server_version = pack_version(org.version_parts)

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
            client_version = unpack_version(_words(request["rgwClientVersion"]))
            timestamp = request["pulTimeStamp"]
            if request["cbAuxIn"] != len(request["rgbAuxIn"]) or request["pcbAuxOut"] > MAX_AUX_OUT:
                raise ValueError("cbAuxIn/pcbAuxOut out of range")
        code, mailbox, best = self._admit(user_dn, client_version, ctx)
        response = EcDoConnectExResponse()
        response["pcmsPollsMax"] = self.POLLS_MAX_MS
        response["pcRetry"] = self.RETRY_COUNT
        response["pcmsRetryDelay"] = self.RETRY_DELAY_MS
        _put_words(response["rgwServerVersion"], self.server_version)
        _put_words(response["rgwBestVersion"], pack_version(best))
        response["pulTimeStamp"] = timestamp
        response["rgbAuxOut"] = []
        response["pcbAuxOut"] = 0
        if code == EC_NONE:
            handle = new_context_handle(ctx)
            ctx.association[("emsmdb", handle)] = EmsmdbSession(mailbox, client_version)
            response["pcxh"]["context_handle_uuid"] = handle[4:]
            response["picxr"] = ctx.rng.randint(1, 0x7FFF)
            response["szDNPrefix"] = f"{self.org.org_dn}/cn=Recipients/\x00"
            response["szDisplayName"] = mailbox.display_name + "\x00"
        else:
            response["szDNPrefix"] = NULL
            response["szDisplayName"] = NULL
        response["ErrorCode"] = code
        ctx.record("emsmdb_connect", user_dn=user_dn, client_version=version_text(client_version),
                   result=f"0x{code:08x}")
        return marshal(response)

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
        with decoding("EcDoRpcExt2"):
            request = EcDoRpcExt2(stub)
            handle = stub[:20]
            rgb_in = b"".join(request["rgbIn"])
            max_out = request["pcbOut"]
            if request["cbIn"] != len(rgb_in) or request["cbAuxIn"] != len(request["rgbAuxIn"]) \
                    or max_out > MAX_OUT or request["pcbAuxOut"] > MAX_AUX_OUT:
                raise ValueError("cbIn/cbAuxIn/pcbOut/pcbAuxOut out of range")
        session = self._session(ctx, handle)
        try:
            payloads = unwrap_rop_buffers(rgb_in)
            answers = [self._run_rops(payload, session, ctx) for payload in payloads]
        except ValueError as error:
            ctx.record("emsmdb_rop_format", error=str(error))
            answers, code = [], EC_RPC_FORMAT
        else:
            code = EC_NONE
        rgb_out = b"".join(HEADER_EXT.pack(0, FLAG_LAST if i == len(answers) - 1 else 0, len(a), len(a)) + a
                           for i, a in enumerate(answers))
        if len(rgb_out) > max_out:
            rgb_out, code = b"", EC_BUFFER_TOO_SMALL
        response = EcDoRpcExt2Response()
        response["pcxh"]["context_handle_uuid"] = handle[4:]
        response["pulFlags"] = 0
        response["rgbOut"] = [bytes([b]) for b in rgb_out]
        response["pcbOut"] = len(rgb_out)
        response["rgbAuxOut"] = []
        response["pcbAuxOut"] = 0
        response["pulTransTime"] = 0
        response["ErrorCode"] = code
        return marshal(response)

    def _run_rops(self, payload: bytes, session: EmsmdbSession, ctx: CallContext) -> bytes:
        rops, handles = split_rop_payload(payload)
        answer = b""
        pos = 0
        while pos < len(rops):
            if rops[pos] != ROP_LOGON:
                input_index = rops[pos + 2] if pos + 2 < len(rops) else 0
                answer += struct.pack("<BBL", rops[pos], input_index, EC_NOT_SUPPORTED)
                break
            logon, pos = parse_rop_logon(rops, pos)
            if logon.output_handle_index >= len(handles):
                raise ValueError("RopLogon OutputHandleIndex outside the handle table")
            target = self.org.find(logon.essdn)
            refusal = mailbox_fault(ctx, "logon", target, MailboxCall(logon.essdn, session.client_version,
                                                                     ctx.auth_level))
            if refusal is not None and refusal.code == EC_SERVER_BUSY:
                answer += self._backoff(logon, refusal.backoff_ms, session, ctx)
                break                    # the delayed ROP and all after it get no response
            answer += self._logon(logon, target, handles, session, ctx, refusal)
        return join_rop_payload(answer, handles)

    @staticmethod
    def _backoff(logon: LogonRequest, duration_ms: int, session: EmsmdbSession, ctx: CallContext) -> bytes:
        ctx.record("emsmdb_logon", essdn=logon.essdn, mailbox=None, result=f"0x{EC_SERVER_BUSY:08x}",
                   backoff_ms=duration_ms)
        if session.client_version <= BACKOFF_MIN_CLIENT_VERSION:
            raise RpcFault(RPC_S_SERVER_TOO_BUSY, "the server is busy; the client is too old for RopBackoff")
        return (BACKOFF.pack(ROP_BACKOFF, logon.logon_id, duration_ms, 1) + BACKOFF_ROP.pack(ROP_LOGON, duration_ms)
                + struct.pack("<H", 0))

    def _logon(self, logon: LogonRequest, target: Optional[Mailbox], handles: List[int], session: EmsmdbSession,
               ctx: CallContext, refusal: Optional[MailboxError]) -> bytes:
        head = struct.pack("<BB", ROP_LOGON, logon.output_handle_index)
        redirect = None
        if refusal is not None:
            code = refusal.code
            if code == EC_WRONG_SERVER:
                redirect = self.org.backend_server_dn(self._other_server(refusal.server))
        elif not logon.logon_flags & LOGON_PRIVATE:
            code = EC_NOT_FOUND          # the org has no public folder mailboxes
        elif target is None:
            code = EC_UNKNOWN_USER
        elif target.server.lower() != self.serving_server.name.lower():
            code = EC_WRONG_SERVER
            redirect = self.org.backend_server_dn(self.org.server(target.server))
        elif target != session.mailbox and target.kind == "user":
            code = EC_LOGIN_PERM         # no delegate rights on another person's mailbox in this model
        else:
            code = EC_NONE
        ctx.record("emsmdb_logon", essdn=logon.essdn, mailbox=target.username if target else None,
                   result=f"0x{code:08x}", server_dn=redirect)
        if code == EC_WRONG_SERVER:
            name = redirect.encode("ascii") + b"\x00"
            return head + struct.pack("<LBB", code, logon.logon_flags, len(name)) + name
        if code != EC_NONE:
            return head + struct.pack("<L", code)
        object_handle = session.next_object_handle
        session.next_object_handle += 1
        handles[logon.output_handle_index] = object_handle
        own = target == session.mailbox
        rights = RESPONSE_RESERVED | RESPONSE_SEND_AS_RIGHT | (RESPONSE_OWNER_RIGHT if own else 0)
        mailbox_guid = uuid.UUID(target.guid)
        replica_guid = uuid.uuid5(mailbox_guid, "replica")
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        return (head + struct.pack("<LB", code, logon.logon_flags)
                + b"".join(folder_id(counter) for counter in range(1, len(SPECIAL_FOLDERS) + 1))
                + struct.pack("<B", rights) + mailbox_guid.bytes_le + struct.pack("<H", REPL_ID)
                + replica_guid.bytes_le + logon_time(now) + struct.pack("<QL", 0, 0))

    def _other_server(self, name: Optional[str]) -> Server:
        """The server a 'moved' mailbox now lives on: ``name`` (an org server, or a name the org does not know)
        or, without one, the first server that is not this one."""
        if name is None:
            return next((s for s in self.org.servers if s != self.serving_server), self.serving_server)
        return next((s for s in self.org.servers if s.name.lower() == name.lower()), Server(name, name))

    # ---- the rest -------------------------------------------------------------------------------------------
    def EcDoDisconnect(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("EcDoDisconnect"):
            EcDoDisconnect(stub)
        self._session(ctx, stub[:20])
        del ctx.association[("emsmdb", stub[:20])]
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


# ---- client halves ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConnectResult:
    status: int
    cxh: bytes
    polls_max_ms: int
    retry_count: int
    retry_delay_ms: int
    icxr: int
    dn_prefix: Optional[str]
    display_name: Optional[str]
    server_version: Tuple[int, int, int, int]
    best_version: Tuple[int, int, int, int]
    timestamp: int


@dataclass(frozen=True)
class LogonResult:
    status: int                       # EcDoRpcExt2's return value
    rop_status: Optional[int]         # RopLogon's ReturnValue (None when no RopLogon response came back;
                                      # ecServerBusy when a RopBackoff came in its place)
    cxh: bytes
    logon_flags: int = 0
    folder_ids: Tuple[bytes, ...] = ()
    response_flags: int = 0
    mailbox_guid: Optional[uuid.UUID] = None
    logon_handle: Optional[int] = None
    server_dn: Optional[str] = None   # the right server's DN with ecWrongServer
    backoff_ms: Optional[int] = None  # a RopBackoff came instead: retry the logon after this long

    @property
    def folders(self) -> Dict[str, bytes]:
        return dict(zip(SPECIAL_FOLDERS, self.folder_ids))


def build_connect_request(user_dn: str, client_version: Tuple[int, int, int, int] = OUTLOOK_2013_VERSION, *,
                          flags: int = 0, codepage: int = 1252, lcid: int = 0x409) -> bytes:
    request = EcDoConnectEx()
    request["szUserDN"] = user_dn + "\x00"
    request["ulFlags"] = flags
    request["ulConMod"] = 0
    request["cbLimit"] = 0
    request["ulCpid"] = codepage
    request["ulLcidString"] = lcid
    request["ulLcidSort"] = lcid
    request["ulIcxrLink"] = 0xFFFFFFFF
    request["usFCanConvertCodePages"] = 1
    _put_words(request["rgwClientVersion"], pack_version(client_version))
    request["pulTimeStamp"] = 0
    request["rgbAuxIn"] = []
    request["cbAuxIn"] = 0
    request["pcbAuxOut"] = MAX_AUX_OUT
    return marshal(request)


def parse_connect_response(stub: bytes) -> ConnectResult:
    response = EcDoConnectExResponse(stub)
    text = {name: None if is_null(response.fields[name]) else ndr_text(response[name])
            for name in ("szDNPrefix", "szDisplayName")}
    return ConnectResult(status=response["ErrorCode"], cxh=response["pcxh"].getData(),
                         polls_max_ms=response["pcmsPollsMax"], retry_count=response["pcRetry"],
                         retry_delay_ms=response["pcmsRetryDelay"], icxr=response["picxr"],
                         dn_prefix=text["szDNPrefix"], display_name=text["szDisplayName"],
                         server_version=unpack_version(_words(response["rgwServerVersion"])),
                         best_version=unpack_version(_words(response["rgwBestVersion"])),
                         timestamp=response["pulTimeStamp"])


def build_rpc_request(cxh: bytes, rop_payload: bytes, *, max_out: int = MAX_OUT) -> bytes:
    """EcDoRpcExt2 around one ROP buffer (RopSize + ROPs + handle table), asking for plain responses."""
    rgb_in = wrap_rop_buffer(rop_payload)
    request = EcDoRpcExt2()
    request["pcxh"].fromString(cxh)
    request["pulFlags"] = PUL_NO_COMPRESSION | PUL_NO_XOR_MAGIC
    request["rgbIn"] = [bytes([b]) for b in rgb_in]
    request["cbIn"] = len(rgb_in)
    request["pcbOut"] = max_out
    request["rgbAuxIn"] = []
    request["cbAuxIn"] = 0
    request["pcbAuxOut"] = MAX_AUX_OUT
    return marshal(request)


def build_logon_request(cxh: bytes, user_dn: str, *, logon_flags: int = LOGON_PRIVATE) -> bytes:
    """EcDoRpcExt2 carrying RopLogon for ``user_dn`` into a one-slot handle table."""
    rop = build_rop_logon(user_dn, logon_flags=logon_flags)
    return build_rpc_request(cxh, join_rop_payload(rop, [0xFFFFFFFF]))


def parse_rpc_response(stub: bytes) -> Tuple[int, bytes, List[bytes]]:
    """(return value, session handle, ROP response payloads) of an EcDoRpcExt2 response."""
    response = EcDoRpcExt2Response(stub)
    rgb_out = b"".join(response["rgbOut"])
    payloads = unwrap_rop_buffers(rgb_out) if rgb_out else []
    return response["ErrorCode"], response["pcxh"].getData(), payloads


def parse_logon_response(stub: bytes) -> LogonResult:
    status, cxh, payloads = parse_rpc_response(stub)
    if not payloads:
        return LogonResult(status=status, rop_status=None, cxh=cxh)
    rops, handles = split_rop_payload(payloads[0])
    if len(rops) >= BACKOFF.size and rops[0] == ROP_BACKOFF:
        return LogonResult(status=status, rop_status=EC_SERVER_BUSY, cxh=cxh, backoff_ms=BACKOFF.unpack_from(rops)[2])
    if len(rops) < 6 or rops[0] != ROP_LOGON:
        return LogonResult(status=status, rop_status=None, cxh=cxh)
    index, rop_status = struct.unpack_from("<BL", rops, 1)
    if rop_status == EC_WRONG_SERVER:
        logon_flags, size = struct.unpack_from("<BB", rops, 6)
        server_dn = rops[8:8 + size].split(b"\x00", 1)[0].decode("latin-1")
        return LogonResult(status=status, rop_status=rop_status, cxh=cxh, logon_flags=logon_flags,
                           server_dn=server_dn)
    if rop_status != EC_NONE:
        return LogonResult(status=status, rop_status=rop_status, cxh=cxh)
    logon_flags = rops[6]
    folder_ids = tuple(rops[7 + 8 * i:15 + 8 * i] for i in range(len(SPECIAL_FOLDERS)))
    pos = 7 + 8 * len(SPECIAL_FOLDERS)
    response_flags = rops[pos]
    mailbox_guid = uuid.UUID(bytes_le=rops[pos + 1:pos + 17])
    return LogonResult(status=status, rop_status=rop_status, cxh=cxh, logon_flags=logon_flags,
                       folder_ids=folder_ids, response_flags=response_flags, mailbox_guid=mailbox_guid,
                       logon_handle=handles[index] if index < len(handles) else None)


def build_disconnect_request(cxh: bytes) -> bytes:
    request = EcDoDisconnect()
    request["pcxh"].fromString(cxh)
    return marshal(request)


def parse_disconnect_response(stub: bytes) -> Tuple[int, bytes]:
    response = EcDoDisconnectResponse(stub)
    return response["ErrorCode"], response["pcxh"].getData()
