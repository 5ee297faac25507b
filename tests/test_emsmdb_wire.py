"""The hand-packed EcDoRpcExt2 (harness/rpc/emsmdb/wire.py) against impacket's NDR classes: the response byte for
byte as impacket's ``getData()`` after ``marshal``, and the request read as impacket reads it whenever the fast
parser takes it."""
from __future__ import annotations

import random
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.rpc.base import marshal
from harness.rpc.emsmdb import wire
from harness.rpc.emsmdb.idl import EcDoRpcExt2, EcDoRpcExt2Response
from tests.support.fuzz import scaled

u32 = st.integers(0, 2 ** 32 - 1)
handles = st.binary(min_size=20, max_size=20)


@settings(max_examples=scaled(100))
@given(handle=handles, rgb_out=st.binary(max_size=300), code=u32)
def test_rpc_response_is_impacket_s_bytes(handle, rgb_out, code):
    response = EcDoRpcExt2Response()
    response["pcxh"]["context_handle_uuid"] = handle[4:]
    response["pulFlags"] = 0
    response["rgbOut"] = [bytes([b]) for b in rgb_out]
    response["pcbOut"] = len(rgb_out)
    response["rgbAuxOut"] = []
    response["pcbAuxOut"] = 0
    response["pulTransTime"] = 0
    response["ErrorCode"] = code
    assert wire.rpc_response(handle, rgb_out, code) == marshal(response)


@st.composite
def rpc_stubs(draw):
    """EcDoRpcExt2 as the client half (and impacket) builds it; the counts need not match the arrays."""
    handle, flags, rgb_in, max_out = draw(handles), draw(u32), draw(st.binary(max_size=64)), draw(u32)
    aux_in, max_aux_out = draw(st.binary(max_size=16)), draw(u32)
    cb_in = draw(st.one_of(st.just(len(rgb_in)), u32))
    cb_aux_in = draw(st.one_of(st.just(len(aux_in)), u32))
    state = random.getstate()            # impacket draws referent IDs from the global random
    try:
        request = EcDoRpcExt2()
        request["pcxh"].fromString(handle)
        request["pulFlags"] = flags
        request["rgbIn"] = [bytes([b]) for b in rgb_in]
        request["cbIn"] = cb_in
        request["pcbOut"] = max_out
        request["rgbAuxIn"] = [bytes([b]) for b in aux_in]
        request["cbAuxIn"] = cb_aux_in
        request["pcbAuxOut"] = max_aux_out
        return marshal(request)
    finally:
        random.setstate(state)


def impacket_rpc_request(stub: bytes) -> wire.RpcRequest:
    request = EcDoRpcExt2(stub)
    return wire.RpcRequest(request["pulFlags"], b"".join(request["rgbIn"]), request["cbIn"], request["pcbOut"],
                           b"".join(request["rgbAuxIn"]), request["cbAuxIn"], request["pcbAuxOut"])


@settings(max_examples=scaled(200))
@given(stub=rpc_stubs(), data=st.data())
def test_rpc_request_parser_agrees_with_impacket(stub, data):
    assert wire.parse_rpc_request(stub) == impacket_rpc_request(stub)
    how = data.draw(st.sampled_from(["cut", "extend", "overwrite"]))
    if how == "cut":
        stub = stub[:data.draw(st.integers(0, len(stub)))]
    elif how == "extend":
        stub += data.draw(st.binary(min_size=1, max_size=8))
    else:
        at = data.draw(st.integers(0, len(stub) - 4))
        stub = stub[:at] + struct.pack("<L", data.draw(u32)) + stub[at + 4:]
    parsed = wire.parse_rpc_request(stub)
    if parsed is not None:
        assert parsed == impacket_rpc_request(stub)


def test_a_request_with_trailing_bytes_is_left_to_impacket():
    request = EcDoRpcExt2()
    request["pcxh"].fromString(bytes(20))
    request["rgbIn"] = [b"\x01", b"\x02", b"\x03"]
    request["cbIn"] = 3
    request["rgbAuxIn"] = []
    stub = marshal(request) + b"\x00"
    assert wire.parse_rpc_request(stub) is None
    assert wire.rpc_request(stub) == impacket_rpc_request(stub)
