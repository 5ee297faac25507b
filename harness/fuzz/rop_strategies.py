"""Hypothesis strategies for the ``emsmdb`` layer: the ROP answers of the mailbox store, over RPC over HTTP
(EcDoRpcExt2) and MAPI over HTTP (Execute) alike, as parameters of the ``mailbox.rop-answer`` fault
(harness/rpc/emsmdb/ropedit.py): a ReturnValue on one ROP, a RopBackoff, RopQueryRows' RowCount and rows, handle
indexes and the handle table, a response cut short, a RopPending or RopNotify appended, RPC_HEADER_EXT flags.

Tables list the plainest value first (Hypothesis shrinks towards it), and the branches go from what a real store
answers (an error ReturnValue) to what only a broken one would (flags that lie about the payload). The values are
written out here rather than imported, as in rpc_strategies.py: the fault modules bring impacket.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

from hypothesis import strategies as st

from harness.fuzz.rpc_strategies import Example, _some, fault

FAULT = "mailbox.rop-answer"
# The ROPs a mailbox client sends first (logon, a folder, its table, a message); RopQueryRows first: the most parsing.
ROPS = ("RopQueryRows", "RopOpenFolder", "RopGetContentsTable", "RopSetColumns", "RopLogon", "RopOpenMessage",
        "RopGetPropertiesSpecific")
# ecNotFound, ecAccessDenied, ecNullObject, ecNotSupported, ecError (MAPI_E_CALL_FAILED), ecServerBusy without a
# back-off, ecInvalidParameter, ecLoginFailure, ecWrongServer's value on another ROP, a code nobody names
RETURN_VALUES = (0x8004010F, 0x80070005, 0x000004B9, 0x80040102, 0x80004005, 0x00000480, 0x80070057, 0x80040111,
                 0x00000478, 0xFFFFFFFF)
BACKOFF_MS = (0, 1000, 30000, 0xFFFFFFFF)
ROW_COUNTS = (0, 1, 2, 10, 0xFFFF)
ROW_ACTIONS = ("none", "duplicate", "drop-last")
COLUMNS = 4                                  # cell edits name one of the first few columns asked for
CELL_ERRORS = (0x8004010F, 0x80040102, 0x8007000E, 0, 0xFFFFFFFF)   # NOT_FOUND, NO_SUPPORT, E_OUTOFMEMORY
CELL_TEXTS = ("", "A" * 4096, "ünïcødé", "\U0001F600", "a\x00b", "x" * 8000)
HANDLE_VALUES = (0xFFFFFFFF, 0, 1, 0x7FFFFFFF, 0xDEADBEEF)
INDEXES = (0, 1, 2, 3, 0xFF)
TRUNCATIONS = (0, 1, 2, 5, 6, 8)
HEADER_FLAGS = ("compressed", "xor-magic", "last")


@st.composite
def cell_edit(draw: Any) -> Dict[str, Any]:
    action = draw(st.sampled_from(("error", "absent", "text", "empty")))
    edit: Dict[str, Any] = {"action": action, "column": draw(st.integers(0, COLUMNS - 1))}
    value = {"error": st.sampled_from(CELL_ERRORS), "text": st.sampled_from(CELL_TEXTS)}.get(action)
    if value is not None:
        edit["value"] = draw(value)
    return edit


def return_value() -> st.SearchStrategy[Dict[str, Any]]:
    """One ROP fails with a ReturnValue; the later responses dropped (the store stopped there) or kept."""
    def build(rop: str, code: int, keep: bool) -> Dict[str, Any]:
        return fault(FAULT, rop=rop, return_value=code, **({"rest": "keep"} if keep else {}))
    return st.builds(build, st.sampled_from(ROPS), st.sampled_from(RETURN_VALUES), st.booleans())


def backoff() -> st.SearchStrategy[Dict[str, Any]]:
    """ecServerBusy as MS-OXCROPS 3.2.4.2 gives it: a RopBackoff in place of one ROP's response."""
    return st.builds(lambda rop, ms: fault(FAULT, rop=rop, backoff_ms=ms), st.sampled_from(ROPS),
                     st.sampled_from(BACKOFF_MS))


def rows() -> st.SearchStrategy[Dict[str, Any]]:
    """RopQueryRows: a RowCount that does not match the rows sent (alone: a finding then names only it), or the
    rows themselves changed with a RowCount that matches (none, twice, one fewer; cells as errors, absent, text)."""
    return st.one_of(
        st.builds(lambda count: fault(FAULT, rop="RopQueryRows", row_count=count), st.sampled_from(ROW_COUNTS)),
        _some({"rows": st.sampled_from(ROW_ACTIONS), "cells": st.lists(cell_edit(), min_size=1, max_size=3)}
              ).map(lambda params: fault(FAULT, rop="RopQueryRows", **params)))


def handles() -> st.SearchStrategy[Dict[str, Any]]:
    """The handle table: one slot's handle changed, the last handles gone; an output handle index changed."""
    return st.one_of(
        st.builds(lambda index, value: fault(FAULT, handle_index=index, handle_value=value),
                  st.sampled_from(INDEXES[:4]), st.sampled_from(HANDLE_VALUES)),
        st.builds(lambda count: fault(FAULT, handles_dropped=count), st.integers(1, 3)),
        st.builds(lambda rop, index: fault(FAULT, rop=rop, output_index=index), st.sampled_from(ROPS),
                  st.sampled_from(INDEXES)))


def framing() -> st.SearchStrategy[Dict[str, Any]]:
    """A response cut, a RopPending or RopNotify appended, RPC_HEADER_EXT flags that do not match the payload."""
    return st.one_of(
        st.builds(lambda rop, keep: fault(FAULT, rop=rop, truncate=keep), st.sampled_from(ROPS),
                  st.sampled_from(TRUNCATIONS)),
        st.sampled_from(("pending", "notify")).map(lambda what: fault(FAULT, append=what)),
        st.lists(st.sampled_from(HEADER_FLAGS[:2]), min_size=1, max_size=2, unique=True).map(
            lambda flags: fault(FAULT, flags_set=flags)),
        st.just(fault(FAULT, flags_clear=["last"])))


def rop_answer() -> st.SearchStrategy[Dict[str, Any]]:
    return st.one_of(return_value(), backoff(), rows(), handles(), framing())


def emsmdb_examples(max_faults: int = 3, hostnames: Sequence[str] = ()) -> st.SearchStrategy[Example]:
    """ROP answer edits; each applies to the buffers holding its ROP's response (the first one that fits wins)."""
    return st.lists(rop_answer(), min_size=1, max_size=max_faults)


ROP_LAYERS = {"emsmdb": emsmdb_examples}
