"""EMSMDB (MS-OXCRPC, mailbox store, port 6001): session connect/disconnect and RopLogon, server and client halves.

- ``idl``: the NDR calls (impacket NDR classes), return values and version words;
- ``codec``: ROP buffers (RPC_HEADER_EXT framing, XorMagic, LZ77) and RopLogon/RopBackoff encoding;
- ``wire``: EcDoRpcExt2's request and response marshalled by hand (impacket's bytes, without its per-byte cost);
- ``server``: the ``Emsmdb`` RpcInterface;
- ``asyncwait``: the ``AsyncEmsmdb`` RpcInterface (EcDoAsyncWaitEx on the sessions of an ``Emsmdb``);
- ``client``: the ``build_*_request`` / ``parse_*_response`` halves used by the probe and the tests.

This package re-exports the names the rest of the harness and the tests import from ``harness.rpc.emsmdb``.
"""
from harness.rpc.emsmdb.client import (
                                       LogonResult,
                                       build_connect_request,
                                       build_disconnect_request,
                                       build_logon_request,
                                       build_rpc_request,
                                       parse_connect_response,
                                       parse_disconnect_response,
                                       parse_logon_response,
                                       parse_rpc_response,
)
from harness.rpc.emsmdb.codec import (
                                       FLAG_COMPRESSED,
                                       FLAG_LAST,
                                       FLAG_XOR_MAGIC,
                                       HEADER_EXT,
                                       LOGON_PRIVATE,
                                       RESPONSE_OWNER_RIGHT,
                                       ROP_LOGON,
                                       XOR_MAGIC,
                                       build_rop_logon,
                                       join_rop_payload,
                                       lz77_decompress,
                                       split_rop_payload,
)
from harness.rpc.emsmdb.idl import (
                                       DEFAULT_MIN_CLIENT_VERSION,
                                       EC_BUFFER_TOO_SMALL,
                                       EC_CLIENT_VER_DISALLOWED,
                                       EC_LOGIN_FAILURE,
                                       EC_LOGIN_PERM,
                                       EC_NONE,
                                       EC_NOT_ENCRYPTED,
                                       EC_NOT_SUPPORTED,
                                       EC_RPC_FORMAT,
                                       EC_SERVER_BUSY,
                                       EC_UNKNOWN_USER,
                                       EC_WRONG_SERVER,
                                       MAX_AUX_OUT,
                                       OUTLOOK_2013_VERSION,
                                       RPC_S_SERVER_TOO_BUSY,
                                       DCERPCSessionError,
                                       EcDoConnectEx,
                                       EcDoRpcExt2,
                                       EcDoRpcExt2Response,
                                       EcDummyRpcResponse,
                                       EcRRegisterPushNotification,
                                       EcRRegisterPushNotificationResponse,
                                       pack_version,
                                       unpack_version,
                                       version_text,
)
from harness.rpc.emsmdb.server import Emsmdb

__all__ = [
    # idl
    "DEFAULT_MIN_CLIENT_VERSION", "EC_BUFFER_TOO_SMALL", "EC_CLIENT_VER_DISALLOWED", "EC_LOGIN_FAILURE",
    "EC_LOGIN_PERM", "EC_NONE", "EC_NOT_ENCRYPTED", "EC_NOT_SUPPORTED", "EC_RPC_FORMAT", "EC_SERVER_BUSY",
    "EC_UNKNOWN_USER", "EC_WRONG_SERVER", "MAX_AUX_OUT", "OUTLOOK_2013_VERSION", "RPC_S_SERVER_TOO_BUSY",
    "DCERPCSessionError", "EcDoConnectEx", "EcDoRpcExt2", "EcDoRpcExt2Response", "EcDummyRpcResponse",
    "EcRRegisterPushNotification", "EcRRegisterPushNotificationResponse", "pack_version", "unpack_version",
    "version_text",
    # codec
    "FLAG_COMPRESSED", "FLAG_LAST", "FLAG_XOR_MAGIC", "HEADER_EXT", "LOGON_PRIVATE", "RESPONSE_OWNER_RIGHT",
    "ROP_LOGON", "XOR_MAGIC", "build_rop_logon", "join_rop_payload", "lz77_decompress", "split_rop_payload",
    # server
    "Emsmdb",
    # client
    "LogonResult", "build_connect_request", "build_disconnect_request", "build_logon_request", "build_rpc_request",
    "parse_connect_response", "parse_disconnect_response", "parse_logon_response", "parse_rpc_response",
]
