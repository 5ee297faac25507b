"""Hypothesis for mockex's tests: the profiles, and the strategies and settings that several fuzz tests share.

Names used inside a ``@given`` test are kept stable on purpose: with derandomize, the examples are drawn from a
digest of the test's source, so renaming what a test calls would change the examples CI replays.
"""
from __future__ import annotations

import ipaddress
import os
from typing import Callable, List, Optional, Sequence

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from lxml import etree

from harness.org import load_org
from harness.protocols import rts
from harness.protocols.autodiscover import (
    MOBILESYNC_REQUEST_NS,
    MOBILESYNC_RESPONSE_NS,
    OUTLOOK_REQUEST_NS,
    OUTLOOK_RESPONSE_NS,
)
from harness.rpc.base import (
    NCA_S_FAULT_CONTEXT_MISMATCH,
    NCA_S_OP_RNG_ERROR,
    RPC_X_BAD_STUB_DATA,
    CallContext,
    RpcFault,
    RpcInterface,
)


def load_profile() -> None:
    """CI replays the same examples every run (no example database on a clean clone): a red run is reproducible,
    and `HYPOTHESIS_PROFILE=explore pytest ...` searches afresh. `tox -e fuzz` loads "fuzz": fresh examples every
    run, MOCKEX_FUZZ_SCALE times each test's own example count (100 for a test that names none), within
    MOCKEX_FUZZ_SECONDS per test (tests/support/fuzz_budget.py), no deadline, and the example database kept in
    .hypothesis/ when the checkout is writable, so a failure found once is replayed first ever after."""
    # no deadline: a loaded CI machine must not turn a slow example into a failure (speed lives in benchmarks/)
    settings.register_profile("ci", derandomize=True, database=None, deadline=None)
    settings.register_profile("explore")
    settings.register_profile("fuzz", deadline=None, database=_fuzz_database(), max_examples=scaled(100),
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def scaled(examples: int) -> int:
    """A test's example count, times MOCKEX_FUZZ_SCALE under `tox -e fuzz` (1 otherwise)."""
    return examples * max(1, int(os.environ.get("MOCKEX_FUZZ_SCALE", "1")))


def _fuzz_database() -> Optional["DirectoryBasedExampleDatabase"]:
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), ".hypothesis",
                        "examples")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    return DirectoryBasedExampleDatabase(path) if os.access(path, os.W_OK) else None


# ---- RTS PDUs (MS-RPCH 2.2.3), every command type ----------------------------------------------------------
u32 = st.integers(0, rts.U32_MAX)
cookies = st.binary(min_size=16, max_size=16)
addresses = st.one_of(st.builds(ipaddress.IPv4Address, st.integers(0, 2 ** 32 - 1)),
                      st.builds(ipaddress.IPv6Address, st.integers(0, 2 ** 128 - 1)))
rts_commands = st.one_of(
    st.builds(rts.ReceiveWindowSize, u32),
    st.builds(rts.FlowControlAck, u32, u32, cookies),
    st.builds(rts.ConnectionTimeout, u32),
    st.builds(rts.Cookie, cookies),
    st.builds(rts.ChannelLifetime, u32),
    st.builds(rts.ClientKeepalive, u32),
    st.builds(rts.Version, u32),
    st.just(rts.Empty()),
    st.builds(rts.Padding, st.integers(0, 64)),
    st.just(rts.NegativeANCE()),
    st.just(rts.ANCE()),
    st.builds(rts.ClientAddress, addresses),
    st.builds(rts.AssociationGroupId, cookies),
    st.builds(rts.Destination, st.integers(0, 3)),
    st.builds(rts.PingTrafficSentNotify, u32),
)
rts_pdus = st.builds(rts.RtsPdu, st.integers(0, 0xFFFF), st.lists(rts_commands, max_size=12).map(tuple))


# ---- XML requests with a few edits -------------------------------------------------------------------------
_ORG = load_org()
_BOB = _ORG.find("bob")
assert _BOB is not None     # fixtures/ has bob; the dn is one of the texts an edit may put in
POX_WORDS = ["Autodiscover", "Request", "EMailAddress", "LegacyDN", "AcceptableResponseSchema", "Response", "x"]
POX_NAMESPACES = [OUTLOOK_REQUEST_NS, MOBILESYNC_REQUEST_NS, OUTLOOK_RESPONSE_NS, MOBILESYNC_RESPONSE_NS, None]
POX_VALUES = ["alice@contoso.test", "dave@contoso.test", "nobody@contoso.test", "alice", "", " ",
              OUTLOOK_RESPONSE_NS, MOBILESYNC_RESPONSE_NS, _ORG.legacy_dn(_BOB), "\u00e9@\u00e9"]


@st.composite
def mutated_documents(draw: st.DrawFn, original: bytes, words: Sequence[str] = POX_WORDS,
                      namespaces: Sequence[Optional[str]] = POX_NAMESPACES,
                      values: Sequence[str] = POX_VALUES) -> bytes:
    """``original`` with a few byte-level or element-level edits (drop, rename, re-namespace, new text); element
    names, namespaces and texts are drawn from ``words``, ``namespaces`` and ``values`` (POX's by default)."""
    if draw(st.booleans()):
        data = bytearray(original)
        for _ in range(draw(st.integers(1, 6))):
            position = draw(st.integers(0, len(data)))
            edit = draw(st.sampled_from(["delete", "insert", "replace", "truncate"]))
            if edit == "truncate":
                del data[position:]
            elif edit == "insert" or position == len(data):
                data[position:position] = draw(st.binary(min_size=1, max_size=8))
            elif edit == "delete":
                del data[position:position + draw(st.integers(1, 16))]
            else:
                data[position] = draw(st.integers(0, 255))
        return bytes(data)
    root = etree.fromstring(original)
    for _ in range(draw(st.integers(1, 4))):
        elements: List[etree._Element] = list(root.iter())
        element = draw(st.sampled_from(elements))
        edit = draw(st.sampled_from(["drop", "rename", "text", "duplicate"]))
        parent = element.getparent()
        if edit == "drop" and parent is not None:
            parent.remove(element)
        elif edit == "rename":
            namespace = draw(st.sampled_from(namespaces))
            word = draw(st.sampled_from(words))
            element.tag = f"{{{namespace}}}{word}" if namespace else word
        elif edit == "text":
            element.text = draw(st.sampled_from(values) | st.text(max_size=40).filter(_xml_safe))
        elif parent is not None:
            parent.append(etree.fromstring(etree.tostring(element)))
    return etree.tostring(root)


def _xml_safe(text: str) -> bool:
    return all(ch in "\t\n\r" or (" " <= ch <= "\ud7ff") or ("\ue000" <= ch <= "\ufffd") for ch in text)


# ---- RPC interfaces called in process -----------------------------------------------------------------------
# For fuzz tests whose examples share one module-scoped session. A settings object takes what it does not name from
# the profile loaded when it is made, so the profile is loaded before (else these ran on Hypothesis' default one:
# neither derandomized in CI nor given the fuzz profile's database).
load_profile()
SHARED_SESSION_FUZZ = settings(max_examples=scaled(150), deadline=None,
                               suppress_health_check=[HealthCheck.function_scoped_fixture])


def tolerant_caller(interface: RpcInterface) -> Callable[[int, bytes, CallContext], None]:
    """``call(opnum, stub, ctx)`` on ``interface`` that passes on a response or a stub-level fault (bad stub data,
    unknown context handle, opnum out of range) and fails on anything else."""
    def call_tolerantly(opnum: int, stub: bytes, ctx: CallContext) -> None:
        try:
            assert isinstance(interface.call(opnum, stub, ctx), bytes)
        except RpcFault as fault:
            assert fault.status in (RPC_X_BAD_STUB_DATA, NCA_S_FAULT_CONTEXT_MISMATCH, NCA_S_OP_RNG_ERROR)
    return call_tolerantly
