"""ROP restrictions (harness/rpc/emsmdb/restrictions.py): the parser against the hand-built layouts of
tests/support/restrictions.py, hypothesis round trips of generated trees, arbitrary bytes ending in ValueError or
TooComplex only, compiled predicates over rows; then random ROP buffers of the new ROPs against a session with a
store behind it."""
from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.rpc import emsmdb as E
from harness.rpc.base import CallContext
from harness.rpc.emsmdb.restrictions import (
    TooComplex,
    encode,
    matcher,
    parse,
    parse_whole,
)
from harness.rpc.emsmdb.server import Emsmdb
from tests.support.fuzz import SHARED_SESSION_FUZZ
from tests.support.restrictions import and_, bitmask, content, exist, not_, or_, prop_long
from tests.support.ropclient import RopBuffer, by_rop, parse_answers
from tests.support.ropsession import ALICE, ALICE_DN, ORG, new_store

SUBJECT, SIZE, FLAGS = 0x0037001F, 0x0E080003, 0x0E070003


def test_the_parser_reads_the_spec_layouts():
    tree = parse_whole(and_(content(SUBJECT, "Plan", low=2), not_(or_(exist(SUBJECT), prop_long(4, SIZE, -5))),
                            bitmask(1, FLAGS, 0x8)))
    assert tree == ("and", [("content", SUBJECT, 2 | 1 << 16, "Plan"),
                            ("not", ("or", [("exist", SUBJECT), ("property", SIZE, 4, -5)])),
                            ("bitmask", 1, FLAGS, 0x8)])
    assert encode(tree) == and_(content(SUBJECT, "Plan", low=2), not_(or_(exist(SUBJECT), prop_long(4, SIZE, -5))),
                                bitmask(1, FLAGS, 0x8))


def test_malformed_and_unmodelled_restrictions():
    with pytest.raises(ValueError):
        parse_whole(exist(SUBJECT) + b"\x00")                           # bytes after it
    with pytest.raises(ValueError):
        parse(bytes([0x0C]))                                            # no such restriction type
    with pytest.raises(TooComplex):
        parse(bytes([0x04, 0x04]) + struct.pack("<LL", 0x0E12000D, 0x0E12000D) + bytes(4))  # PtypObject value
    tree = parse_whole(bytes([0x04, 0x04]) + struct.pack("<LLL", 0x0E121003, 0x0E121003, 2) + struct.pack("<ll", 7, -1))
    assert tree == ("property", 0x0E121003, 4, [7, -1])                # multi-valued: 32-bit count
    with pytest.raises(TooComplex):
        matcher(tree, lambda row, tag: None)
    with pytest.raises(TooComplex):
        parse(bytes([0x02]) * 40 + exist(SUBJECT))                      # nested beyond the limit
    with pytest.raises(TooComplex):
        matcher(("count", 1, ("exist", SUBJECT)), lambda row, tag: None)


# ---- generated trees ----------------------------------------------------------------------------------------------
def _values():
    tags = {0x0003: st.integers(-2**31, 2**31 - 1), 0x0002: st.integers(-2**15, 2**15 - 1),
            0x000B: st.booleans(), 0x0014: st.integers(-2**63, 2**63 - 1), 0x0040: st.integers(0, 2**64 - 1),
            0x001F: st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                            max_size=8),
            0x001E: st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=8),
            0x0102: st.binary(max_size=8), 0x0048: st.binary(min_size=16, max_size=16),
            0x0005: st.floats(allow_nan=False), 0x1003: st.lists(st.integers(-2**31, 2**31 - 1), max_size=3),
            0x101F: st.lists(st.text(alphabet="abc", max_size=3), max_size=3),
            0x1102: st.lists(st.binary(max_size=3), max_size=3)}
    return st.sampled_from(sorted(tags)).flatmap(
        lambda kind: st.tuples(st.integers(0, 0xFFFF).map(lambda pid: pid << 16 | kind), tags[kind]))


_TAG = st.integers(0, 2**32 - 1)
_LEAVES = st.one_of(
    _values().flatmap(lambda tv: st.tuples(st.just("property"), st.just(tv[0]), st.integers(0, 255), st.just(tv[1]))),
    _values().flatmap(lambda tv: st.tuples(st.just("content"), st.just(tv[0]), st.integers(0, 2**32 - 1),
                                           st.just(tv[1]))),
    st.tuples(st.sampled_from(["compare", "bitmask", "size"]), st.integers(0, 255), _TAG, _TAG),
    st.tuples(st.just("exist"), _TAG))
TREES = st.recursive(_LEAVES, lambda inner: st.one_of(
    st.tuples(st.sampled_from(["and", "or"]), st.lists(inner, max_size=3)),
    st.tuples(st.just("not"), inner),
    st.tuples(st.sampled_from(["subobject", "count"]), _TAG, inner),
    st.tuples(st.just("comment"), st.lists(_values(), max_size=2), st.none() | inner)), max_leaves=8)


def _same(a, b) -> bool:
    """Trees equal, value types included (True is not 1); lists and tuples alike."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b and type(a) is type(b)


@given(tree=TREES)
def test_generated_trees_round_trip(tree):
    data = encode(tree)
    back = parse_whole(data)
    assert _same(back, tree)
    assert encode(back) == data


@given(data=st.binary(max_size=80))
def test_arbitrary_bytes_parse_or_raise_value_error_or_too_complex(data):
    try:
        tree, end = parse(data)
    except (ValueError, TooComplex):
        return
    assert 0 < end <= len(data)
    # the bytes may say a thing several ways (a Boolean of 2, UTF-16 that does not decode): what parse made
    # encodes in the one canonical way and reads back
    assert encode(parse_whole(encode(tree))) == encode(tree)


ROWS = [{SUBJECT >> 16: "Quarterly planning", SIZE >> 16: 600, FLAGS >> 16: 1}, {SUBJECT >> 16: "Lunch"}, {}]


def _value_of(row, tag):
    return row.get(tag >> 16)


@given(tree=TREES)
def test_compiled_trees_answer_a_boolean_or_refuse(tree):
    try:
        keep = matcher(tree, _value_of)
    except TooComplex:
        return
    assert all(isinstance(keep(row), bool) for row in ROWS)


def test_predicates_over_rows():
    def rows(data):
        keep = matcher(parse_whole(data), _value_of)
        return [row.get(SUBJECT >> 16) for row in ROWS if keep(row)]
    assert rows(content(SUBJECT, "PLAN")) == ["Quarterly planning"]
    assert rows(content(SUBJECT, "PLAN", high=0)) == []                 # FL_IGNORECASE off
    assert rows(not_(exist(SIZE))) == ["Lunch", None]
    assert rows(prop_long(2, SIZE, 100)) == ["Quarterly planning"]     # RELOP_GT; no value matches nothing
    assert rows(bitmask(0, FLAGS, 1)) == []                            # BMR_EQZ on a missing value: no match


# ---- random ROP buffers of the new ROPs against a store ------------------------------------------------------------
NEW_ROPS = [0x07, 0x08, 0x09, 0x0A, 0x13, 0x14, 0x16, 0x17, 0x18, 0x1A, 0x1C, 0x1D, 0x33, 0x35, 0x36, 0x37, 0x41, 0x43,
            0x44, 0x4F, 0x58, 0x60, 0x81, 0x92]


@pytest.fixture(scope="module")
def store_session():
    server = Emsmdb(ORG, clock=lambda: 1700000000.0, store=new_store())
    ctx = CallContext(org=ORG, mailbox=ALICE, auth_level=6, association={}, record=lambda kind, **fields: None,
                      rng=random.Random(5))
    cxh = E.parse_connect_response(server.call(10, E.build_connect_request(ALICE_DN), ctx)).cxh
    buffer = RopBuffer(slots=1).logon(ALICE_DN)
    payloads = E.parse_rpc_response(server.call(11, E.build_rpc_request(cxh, buffer.payload()), ctx))[2]
    inbox = by_rop(parse_answers(buffer, payloads[0])[0], 0xFE).fields["fids"][4]
    opener = (RopBuffer(slots=4).logon(ALICE_DN).open_folder(inbox, 0, 1).contents_table(1, 2)
              .set_columns(2, [SUBJECT]))
    return server, ctx, cxh, opener


@SHARED_SESSION_FUZZ
@given(rop_id=st.sampled_from(NEW_ROPS), tail=st.binary(max_size=60))
def test_random_new_rop_requests_end_in_a_response_or_ec_rpc_format(store_session, rop_id, tail):
    server, ctx, cxh, opener = store_session
    rops = opener.rops + bytes([rop_id, 0]) + tail
    payload = struct.pack("<H", 2 + len(rops)) + rops + b"\xff\xff\xff\xff" * 4
    status, _, _ = E.parse_rpc_response(server.call(11, E.build_rpc_request(cxh, payload), ctx))
    assert status in (E.EC_NONE, E.EC_RPC_FORMAT)
