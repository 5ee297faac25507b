"""The hand-packed NSPI stubs (harness/rpc/nspi/wire.py) against impacket's NDR classes, which the real client
(exchanger.py) decodes with: every packer must give the bytes impacket's ``getData()`` gives after
``harness.rpc.base.marshal`` (pad bytes and referent IDs included), and whatever the fast parsers accept they must
read as impacket reads it; what they do not accept goes to impacket, so the server answers the same either way."""
from __future__ import annotations

import random
import struct
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from impacket.dcerpc.v5 import nspi as ndr
from impacket.dcerpc.v5.dtypes import DWORD, NULL

from harness.rpc.base import is_null, marshal
from harness.rpc.nspi import wire
from harness.rpc.nspi.idl import MAX_ROWS, NspiGetSpecialTableIdl, parse_whole, tag_array, tag_list
from harness.rpc.nspi.stat import Stat
from harness.rpc.nspi.values import (
    PT_BINARY,
    PT_BOOLEAN,
    PT_ERROR,
    PT_LONG,
    PT_MV_STRING8,
    PT_MV_UNICODE,
    PT_STRING8,
    PT_SYSTIME,
    PT_UNICODE,
    error_cell,
    ndr_rowset,
    value_cell,
)
from tests.support.fuzz import scaled

u32 = st.integers(0, 2 ** 32 - 1)
prop_ids = st.integers(0, 0xFFFF)
codepages = st.sampled_from([ndr.CP_TELETEX, 1252, 1251, 65001, 437])
# Text a directory holds: any Unicode but unpaired surrogates (which neither side can encode).
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


def _cell(ptype: int, value_strategy):
    return st.builds(lambda prop_id, value, codepage: value_cell(prop_id << 16 | ptype, value, codepage),
                     prop_ids, value_strategy, codepages)


# Every property type the packers take, with the edge cases of each: empty strings, odd lengths (unaligned ends),
# empty binaries and multi-valued lists, extreme integers.
cells = st.one_of(
    _cell(PT_LONG, st.integers(-2 ** 31, 2 ** 31 - 1)),
    _cell(PT_BOOLEAN, st.booleans()),
    _cell(PT_STRING8, texts),
    _cell(PT_UNICODE, texts),
    _cell(PT_BINARY, st.binary(max_size=23)),
    _cell(PT_SYSTIME, st.integers(0, 2 ** 63 - 1)),
    _cell(PT_MV_STRING8, st.lists(texts, max_size=4)),
    _cell(PT_MV_UNICODE, st.lists(texts, max_size=4)),
    st.builds(lambda prop_id, code: error_cell(prop_id << 16, code), prop_ids, u32),
)
rows = st.lists(st.lists(cells, max_size=7), max_size=6)
stats = st.builds(Stat, u32, u32, u32, st.integers(-2 ** 31, 2 ** 31 - 1), u32, u32, u32, u32, u32)
handles = st.binary(min_size=20, max_size=20)


def impacket_stat(stat: Stat) -> ndr.STAT:
    wire_stat = ndr.STAT()
    stat.write(wire_stat)
    return wire_stat


# ---- responses: byte for byte -------------------------------------------------------------------------------
@settings(max_examples=scaled(300))
@given(stat=stats, table=rows, code=u32)
def test_query_rows_response_is_impacket_s_bytes(stat, table, code):
    response = ndr.NspiQueryRowsResponse()
    response["pStat"] = impacket_stat(stat)
    response["ppRows"] = ndr_rowset(table)
    response["ErrorCode"] = code
    assert wire.query_rows_response(stat, [wire.pack_row(cells) for cells in table], code) == marshal(response)


@settings(max_examples=scaled(50))
@given(stat=stats, code=u32)
def test_query_rows_error_response_is_impacket_s_bytes(stat, code):
    response = ndr.NspiQueryRowsResponse()
    response["pStat"] = impacket_stat(stat)
    response["ppRows"] = NULL
    response["ErrorCode"] = code
    assert wire.query_rows_response(stat, None, code) == marshal(response)


@settings(max_examples=scaled(50))
@given(table=rows)
def test_impacket_s_client_reads_the_rows_back(table):
    """What exchanger.py does with the answer: impacket's decoder gives back every row and value."""
    stub = wire.query_rows_response(Stat(), [wire.pack_row(cells) for cells in table], 0)
    decoded = ndr.NspiQueryRowsResponse(stub)
    assert decoded["ppRows"]["cRows"] == len(table)
    assert [[value["ulPropTag"] for value in row["lpProps"]] for row in decoded["ppRows"]["aRow"]] == \
        [[tag for tag, _ in cells] for cells in table]


@settings(max_examples=scaled(50))
@given(guid=st.one_of(st.none(), st.binary(min_size=16, max_size=16)), handle=handles, code=u32)
def test_bind_response_is_impacket_s_bytes(guid, handle, code):
    response = ndr.NspiBindResponse()
    response["pServerGuid"] = guid if guid is not None else NULL
    response["contextHandle"]["context_handle_attributes"] = struct.unpack("<L", handle[:4])[0]
    response["contextHandle"]["context_handle_uuid"] = handle[4:]
    response["ErrorCode"] = code
    assert wire.bind_response(guid, handle, code) == marshal(response)


def test_bind_response_without_a_handle_is_impacket_s_bytes():
    response = ndr.NspiBindResponse()
    response["pServerGuid"] = NULL
    response["ErrorCode"] = 0x80040111
    assert wire.bind_response(None, wire.EMPTY_HANDLE, 0x80040111) == marshal(response)


@settings(max_examples=scaled(20))
@given(code=u32)
def test_unbind_response_is_impacket_s_bytes(code):
    response = ndr.NspiUnbindResponse()
    response["ErrorCode"] = code
    assert wire.unbind_response(code) == marshal(response)


@settings(max_examples=scaled(50))
@given(stat=stats, delta=st.one_of(st.none(), st.integers(-2 ** 31, 2 ** 31 - 1)), code=u32)
def test_update_stat_response_is_impacket_s_bytes(stat, delta, code):
    response = ndr.NspiUpdateStatResponse()
    response["pStat"] = impacket_stat(stat)
    response["plDelta"] = delta if delta is not None else NULL
    response["ErrorCode"] = code
    assert wire.update_stat_response(stat, delta, code) == marshal(response)


tag_lists = st.lists(u32, max_size=10)


@settings(max_examples=scaled(50))
@given(tags=st.one_of(st.none(), tag_lists), code=u32)
def test_tags_responses_are_impacket_s_bytes(tags, code):
    for response_class, field in ((ndr.NspiQueryColumnsResponse, "ppColumns"),
                                  (ndr.NspiDNToMIdResponse, "ppOutMIds"),
                                  (ndr.NspiGetPropListResponse, "ppOutMIds")):
        response = response_class()
        response[field] = tag_array(tags) if tags is not None else NULL
        response["ErrorCode"] = code
        assert wire.tags_response(tags, code) == marshal(response)


@settings(max_examples=scaled(100))
@given(version=u32, table=rows, code=u32)
def test_special_table_response_is_impacket_s_bytes(version, table, code):
    response = ndr.NspiGetSpecialTableResponse()
    response["lpVersion"] = version
    response["ppRows"] = ndr_rowset(table)
    response["ErrorCode"] = code
    packed = [wire.pack_row(cells) for cells in table]
    assert wire.special_table_response(version, packed, code) == marshal(response)


@settings(max_examples=scaled(100))
@given(mids=tag_lists, table=rows, code=u32, wide=st.booleans())
def test_resolve_names_response_is_impacket_s_bytes(mids, table, code, wide):
    response = ndr.NspiResolveNamesWResponse() if wide else ndr.NspiResolveNamesResponse()
    response["ppMIds"] = tag_array(mids)
    response["ppRows"] = ndr_rowset(table)
    response["ErrorCode"] = code
    packed = [wire.pack_row(cells) for cells in table]
    assert wire.resolve_names_response(mids, packed, code) == marshal(response)


# ---- requests: impacket-built stubs, and mangled ones ---------------------------------------------------------
@contextmanager
def impacket_randomness():
    """impacket draws referent IDs from the global ``random``; a strategy must leave its state as it found it."""
    state = random.getstate()
    try:
        yield
    finally:
        random.setstate(state)


def _handle(request_handle, handle: bytes) -> None:
    request_handle["context_handle_attributes"] = struct.unpack("<L", handle[:4])[0]
    request_handle["context_handle_uuid"] = handle[4:]


@st.composite
def query_rows_stubs(draw):
    """NspiQueryRows as impacket's hNspiQueryRows builds it (MaximumCount one too high, as it sends), or with the
    tag array's maximum equal to its count, as MIDL would; cValues may be off, as impacket's hNspiGetProps sends it
    (the tags are the array's, not cValues' count)."""
    handle, flags, stat, count = draw(handles), draw(u32), draw(stats), draw(u32)
    tags = draw(st.one_of(st.none(), st.lists(u32, max_size=8)))
    one_too_high, c_values_off = draw(st.booleans()), draw(st.sampled_from([0, 0, 1, 3]))
    explicit = draw(st.one_of(st.none(), st.lists(u32, max_size=8)))
    with impacket_randomness():
        request = ndr.NspiQueryRows()
        _handle(request["hRpc"], handle)
        request["dwFlags"] = flags
        request["pStat"] = impacket_stat(stat)
        request["Count"] = count
        if tags is None:
            request["pPropTags"] = NULL
        else:
            for tag in tags:
                item = DWORD()
                item["Data"] = tag
                request["pPropTags"]["aulPropTag"].append(item)
            request["pPropTags"]["cValues"] = len(tags) + c_values_off
            if one_too_high:
                request.fields["pPropTags"].fields["Data"].fields["aulPropTag"].fields["MaximumCount"] = len(tags) + 1
        if explicit is None:
            request["lpETable"] = NULL
            request["dwETableCount"] = 0
        else:
            for mid in explicit:
                item = DWORD()
                item["Data"] = mid
                request["lpETable"].append(item)
            request["dwETableCount"] = len(explicit)
        return marshal(request)


def impacket_query_rows(stub: bytes) -> wire.QueryRowsRequest:
    request = ndr.NspiQueryRows(stub)
    explicit = None if is_null(request.fields["lpETable"]) else \
        [item["Data"] for item in request["lpETable"]][:MAX_ROWS]
    return wire.QueryRowsRequest(request["dwFlags"], Stat.read(request["pStat"]), explicit, request["Count"],
                                 tag_list(request.fields["pPropTags"]))


def mangled(data, stub: bytes) -> bytes:
    """The stub cut short, extended, or with a few bytes overwritten."""
    how = data.draw(st.sampled_from(["cut", "extend", "overwrite"]))
    if how == "cut":
        return stub[:data.draw(st.integers(0, len(stub)))]
    if how == "extend":
        return stub + data.draw(st.binary(min_size=1, max_size=12))
    at = data.draw(st.integers(0, len(stub) - 1))
    patch = data.draw(st.binary(min_size=1, max_size=4))
    return stub[:at] + patch + stub[at + len(patch):]


@settings(max_examples=scaled(200))
@given(stub=query_rows_stubs())
def test_query_rows_parser_reads_impacket_s_stubs_as_impacket(stub):
    assert wire.parse_query_rows(stub) == impacket_query_rows(stub)


@settings(max_examples=scaled(300))
@given(stub=query_rows_stubs(), data=st.data())
def test_query_rows_parser_agrees_with_impacket_or_leaves_the_stub_to_it(stub, data):
    stub = mangled(data, stub)
    parsed = wire.parse_query_rows(stub)
    if parsed is not None:
        assert parsed == impacket_query_rows(stub)


@st.composite
def bind_stubs(draw):
    flags, stat = draw(u32), draw(stats)
    guid = draw(st.one_of(st.none(), st.binary(min_size=16, max_size=16)))
    with impacket_randomness():
        request = ndr.NspiBind()
        request["dwFlags"] = flags
        request["pStat"] = impacket_stat(stat)
        request["pServerGuid"] = guid if guid is not None else NULL
        return marshal(request)


def impacket_bind(stub: bytes) -> wire.BindRequest:
    request = ndr.NspiBind(stub)
    return wire.BindRequest(request["dwFlags"], Stat.read(request["pStat"]), not is_null(request.fields["pServerGuid"]))


@settings(max_examples=scaled(200))
@given(stub=bind_stubs(), data=st.data())
def test_bind_parser_agrees_with_impacket(stub, data):
    assert wire.parse_bind(stub) == impacket_bind(stub)
    stub = mangled(data, stub)
    parsed = wire.parse_bind(stub)
    if parsed is not None:
        assert parsed == impacket_bind(stub)


@st.composite
def update_stat_stubs(draw):
    handle, reserved, stat = draw(handles), draw(u32), draw(stats)
    delta = draw(st.one_of(st.none(), st.integers(-2 ** 31, 2 ** 31 - 1)))
    with impacket_randomness():
        request = ndr.NspiUpdateStat()
        _handle(request["hRpc"], handle)
        request["Reserved"] = reserved
        request["pStat"] = impacket_stat(stat)
        request["plDelta"] = delta if delta is not None else NULL
        return marshal(request)


def impacket_update_stat(stub: bytes) -> wire.UpdateStatRequest:
    request = ndr.NspiUpdateStat(stub)
    return wire.UpdateStatRequest(Stat.read(request["pStat"]), not is_null(request.fields["plDelta"]))


@settings(max_examples=scaled(200))
@given(stub=update_stat_stubs(), data=st.data())
def test_update_stat_parser_agrees_with_impacket(stub, data):
    assert wire.parse_update_stat(stub) == impacket_update_stat(stub)
    stub = mangled(data, stub)
    parsed = wire.parse_update_stat(stub)
    if parsed is not None:
        assert parsed == impacket_update_stat(stub)


@settings(max_examples=scaled(50))
@given(handle=handles, reserved=u32, data=st.data())
def test_unbind_parser_takes_exactly_what_impacket_reads(handle, reserved, data):
    request = ndr.NspiUnbind()
    _handle(request["contextHandle"], handle)
    request["Reserved"] = reserved
    stub = request.getData()
    assert wire.parse_unbind(stub)
    stub = mangled(data, stub)
    if wire.parse_unbind(stub):
        ndr.NspiUnbind(stub)          # impacket reads it too


@st.composite
def special_table_stubs(draw):
    """NspiGetSpecialTable as Outlook lays it out (the IDL's inline STAT and lpVersion) or as impacket does."""
    handle, flags, stat, version = draw(handles), draw(u32), draw(stats), draw(st.one_of(st.none(), u32))
    with impacket_randomness():
        if draw(st.booleans()):
            request = NspiGetSpecialTableIdl()
            request["pStat"] = impacket_stat(stat)
            request["lpVersion"] = version or 0
        else:
            request = ndr.NspiGetSpecialTable()
            request["pStat"] = impacket_stat(stat) if draw(st.booleans()) else NULL
            request["lpVersion"] = version if version is not None else NULL
        _handle(request["hRpc"], handle)
        request["dwFlags"] = flags
        return marshal(request)


def impacket_special_table(stub: bytes):
    request = parse_whole(stub, (NspiGetSpecialTableIdl, ndr.NspiGetSpecialTable))
    return request["dwFlags"], ndr.CP_TELETEX if is_null(request.fields["pStat"]) else request["pStat"]["CodePage"]


@settings(max_examples=scaled(200))
@given(stub=special_table_stubs(), data=st.data())
def test_special_table_parser_agrees_with_the_layout_impacket_picks(stub, data):
    assert wire.parse_special_table(stub) == impacket_special_table(stub)
    stub = mangled(data, stub)
    parsed = wire.parse_special_table(stub)
    if parsed is not None:
        assert parsed == impacket_special_table(stub)


# ---- the fallback -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tail", [b"\x00", b"\x00" * 8])
def test_a_stub_the_fast_parser_leaves_is_read_by_impacket(tail):
    """impacket ignores trailing bytes; the fast parser does not take such a stub, so impacket reads it."""
    request = ndr.NspiQueryRows()
    request["pStat"]["ContainerID"] = 7
    request["Count"] = 5
    request["lpETable"] = NULL
    request["pPropTags"] = NULL
    stub = request.getData() + tail
    assert wire.parse_query_rows(stub) is None
    assert wire.query_rows_request(stub) == impacket_query_rows(stub)


def test_unsupported_property_types_are_refused_as_by_impacket_s_path():
    with pytest.raises(ValueError):
        value_cell(0x30010048, b"\x00" * 16, 0)          # PT_CLSID: neither encoder has it
    with pytest.raises(ValueError):
        wire.pack_row([(0x30010048, b"\x00" * 16)])


def test_error_cells_keep_the_property_id():
    assert error_cell(0x3001001F) == (0x3001000A, 0x8004010F)
    assert error_cell(0x3001001F)[0] & 0xFFFF == PT_ERROR
