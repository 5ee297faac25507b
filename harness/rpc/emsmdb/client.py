"""The EMSMDB client halves: ``build_*_request`` / ``parse_*_response`` produce and read the same stubs the server
handles, for any transport: the harness DCE/RPC client, impacket's ``DCERPC_v5.call``/``recv``, or ``InProcessDce``.
"""
from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from harness.rpc.base import is_null, marshal, ndr_text
from harness.rpc.emsmdb.codec import (
    BACKOFF,
    LOGON_PRIVATE,
    ROP_BACKOFF,
    ROP_LOGON,
    SPECIAL_FOLDERS,
    build_rop_logon,
    join_rop_payload,
    split_rop_payload,
    unwrap_rop_buffers,
    wrap_rop_buffers,
)
from harness.rpc.emsmdb.idl import (
    EC_NONE,
    EC_SERVER_BUSY,
    EC_WRONG_SERVER,
    MAX_AUX_OUT,
    MAX_OUT,
    OUTLOOK_2013_VERSION,
    PUL_NO_COMPRESSION,
    PUL_NO_XOR_MAGIC,
    EcDoConnectEx,
    EcDoConnectExResponse,
    EcDoDisconnect,
    EcDoDisconnectResponse,
    EcDoRpcExt2,
    EcDoRpcExt2Response,
    pack_version,
    read_version_words,
    unpack_version,
    write_version_words,
)


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
    write_version_words(request["rgwClientVersion"], pack_version(client_version))
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
                         server_version=unpack_version(read_version_words(response["rgwServerVersion"])),
                         best_version=unpack_version(read_version_words(response["rgwBestVersion"])),
                         timestamp=response["pulTimeStamp"])


def build_rpc_request(cxh: bytes, rop_payload: bytes, *, max_out: int = MAX_OUT) -> bytes:
    """EcDoRpcExt2 around one ROP buffer (RopSize + ROPs + handle table), asking for plain responses."""
    rgb_in = wrap_rop_buffers([rop_payload])
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
