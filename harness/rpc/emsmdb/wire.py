"""Hand-packed NDR for EcDoRpcExt2, the call Outlook repeats for every ROP buffer: impacket marshals its byte arrays
one Python object per byte (milliseconds for a few KiB), this module with a slice.

``rpc_response`` gives the bytes impacket's EcDoRpcExt2Response gives after ``harness.rpc.base.marshal``;
``parse_rpc_request`` takes only the plain layout that consumes the whole stub and reads it as impacket does, else
``rpc_request`` parses with impacket (tests/test_emsmdb_wire.py checks both with hypothesis).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Optional

from harness.rpc.base import decoding
from harness.rpc.emsmdb.idl import EcDoRpcExt2

_U32 = struct.Struct("<L")
_TWO = struct.Struct("<LL")
_CALL_PAD = b"\xbf"                  # impacket's filler before a call-level integer


@dataclass
class RpcRequest:
    flags: int
    rgb_in: bytes
    cb_in: int
    max_out: int
    aux_in: bytes
    cb_aux_in: int
    max_aux_out: int


def parse_rpc_request(stub: bytes) -> Optional[RpcRequest]:
    """pcxh, pulFlags, rgbIn (conformant byte array), cbIn, pcbOut, rgbAuxIn, cbAuxIn, pcbAuxOut."""
    size = len(stub)
    if size < 48:
        return None
    flags, length = _TWO.unpack_from(stub, 20)
    end = 28 + length
    after = end + (-end & 3)
    if size < after + 12:
        return None
    cb_in, max_out, aux_length = struct.unpack_from("<LLL", stub, after)
    aux_end = after + 12 + aux_length
    tail = aux_end + (-aux_end & 3)
    if tail + 8 != size:
        return None
    cb_aux_in, max_aux_out = _TWO.unpack_from(stub, tail)
    return RpcRequest(flags, stub[28:end], cb_in, max_out, stub[after + 12:aux_end], cb_aux_in, max_aux_out)


def rpc_request(stub: bytes) -> RpcRequest:
    """EcDoRpcExt2's request, hand-parsed or, for any other layout, by impacket (a bad stub faults)."""
    parsed = parse_rpc_request(stub)
    if parsed is not None:
        return parsed
    with decoding("EcDoRpcExt2"):
        request = EcDoRpcExt2(stub)
        return RpcRequest(request["pulFlags"], b"".join(request["rgbIn"]), request["cbIn"], request["pcbOut"],
                          b"".join(request["rgbAuxIn"]), request["cbAuxIn"], request["pcbAuxOut"])


def rpc_response(handle: bytes, rgb_out: bytes, code: int) -> bytes:
    """pcxh (attributes 0, the handle's UUID), pulFlags 0, rgbOut, pcbOut, an empty rgbAuxOut, pcbAuxOut 0,
    pulTransTime 0, ErrorCode."""
    out = bytearray(b"\x00\x00\x00\x00" + handle[4:20])
    out += struct.pack("<LLLL", 0, len(rgb_out), 0, len(rgb_out))
    out += rgb_out
    misaligned = len(out) & 3
    if misaligned:
        out += _CALL_PAD * (4 - misaligned)
    out += struct.pack("<7L", len(rgb_out), 0, 0, 0, 0, 0, code)
    return bytes(out)
