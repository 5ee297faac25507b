"""Hypothesis strategies for the layers under Outlook Anywhere: the NTLM CHALLENGE (``ntlm``), the RTS answers of the
RPC proxy (``rts``), DCE/RPC binds, faults and fragments (``dcerpc``) and NSPI rows (``nspi``).

Each draws parameters of one fault the protocol cores build from (auth.ntlm-challenge, rpc.rts-mutate, rpc.bind-nak,
rpc.call-fault, rpc.bind-ack, mailbox.nspi-rows), so an example is always a well-formed message a parser reads, and
the saved scenario replays it. Tables list the plainest value first (Hypothesis shrinks towards it). The values are
written out here rather than imported: the fault modules bring impacket, which a fuzz run's strategies never need.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

from hypothesis import strategies as st

Example = list


def fault(name: str, **params: Any) -> Dict[str, Any]:
    return {"fault": name, "params": params}


def _some(optional: Dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Dict[str, Any]]:
    """One to all of the optional parameters (Hypothesis shrinks the others away)."""
    return st.fixed_dictionaries({}, optional=optional).filter(bool)


# ---- ntlm: the CHALLENGE (MS-NLMP 2.2.1.2) ----------------------------------------------------------------------
# NEGOTIATE_* flags one at a time: UNICODE, OEM, REQUEST_TARGET, SIGN, SEAL, NTLM, ALWAYS_SIGN, TARGET_TYPE_DOMAIN,
# TARGET_TYPE_SERVER, EXTENDED_SESSIONSECURITY, TARGET_INFO, VERSION, 128, KEY_EXCH, 56, and every bit.
NTLM_FLAGS = (0x00000001, 0x00000002, 0x00000004, 0x00000010, 0x00000020, 0x00000200, 0x00008000, 0x00010000,
              0x00020000, 0x00080000, 0x00800000, 0x02000000, 0x20000000, 0x40000000, 0x80000000, 0xFFFFFFFF)
AV_NAMES = ("MsvAvDnsComputerName", "MsvAvNbComputerName", "MsvAvNbDomainName", "MsvAvDnsDomainName",
            "MsvAvDnsTreeName", "MsvAvTimestamp", "MsvAvEOL", "MsvAvFlags", "MsvAvSingleHost", "MsvAvTargetName",
            "MsvAvChannelBindings")
TEXT_AV_NAMES = {"MsvAvNbComputerName", "MsvAvNbDomainName", "MsvAvDnsComputerName", "MsvAvDnsDomainName",
                 "MsvAvDnsTreeName", "MsvAvTargetName"}
AV_TEXTS = ("", "EX01", "A" * 300, "ünïcødé", "\U0001F600.contoso.test", "a\x00b", "x" * 4096)
AV_HEX = ("", "00", "02000000", "ffffffff", "0000000000000000", "ffffffffffffffff", "00" * 3, "00" * 48)
TARGET_NAMES = ("", "CONTOSO", "A" * 300, "ünïcødé", "\U0001F600")
VERSIONS = ("0000000000000000", "ffffffffffffffff", "0a00614a0000000f", "0603802500000000")
TIMESTAMPS = (0, 1, 0xFFFFFFFFFFFFFFFF, 0x7FFFFFFFFFFFFFFF)


@st.composite
def av_edit(draw: Any) -> Dict[str, Any]:
    action = draw(st.sampled_from(("drop", "duplicate", "first", "set", "add")))
    av = draw(st.sampled_from(AV_NAMES))
    if action not in ("set", "add"):
        return {"action": action, "av": av}
    value = draw(st.sampled_from(AV_TEXTS if av in TEXT_AV_NAMES else AV_HEX))
    return {"action": action, "av": av, "value": value}


def ntlm_challenge() -> st.SearchStrategy[Dict[str, Any]]:
    return _some({"av_pairs": st.lists(av_edit(), min_size=1, max_size=3),
                  "flags_clear": st.sampled_from(NTLM_FLAGS), "flags_set": st.sampled_from(NTLM_FLAGS),
                  "target_name": st.sampled_from(TARGET_NAMES), "version": st.sampled_from(VERSIONS),
                  "timestamp": st.sampled_from(TIMESTAMPS), "where": st.sampled_from(("rpc", "http"))}
                 ).map(lambda params: fault("auth.ntlm-challenge", **params))


def ntlm_examples(max_faults: int = 3, hostnames: Sequence[str] = ()) -> st.SearchStrategy[Example]:
    """CHALLENGE mutations, at the HTTP 401 handshake, the DCE/RPC bind or both (the first fault applies)."""
    return st.lists(ntlm_challenge(), min_size=1, max_size=max_faults)


# ---- rts: CONN/A3 and CONN/C2 (MS-RPCH 2.2.4) -------------------------------------------------------------------
RTS_FLAGS = (0x0001, 0x0002, 0x0004, 0x0008, 0x0010, 0x0020, 0x0040, 0xFFFF)
U32_VALUES = (0, 1, 8, 0xFFFFFFFF, 0x7FFFFFFF)
RTS_COMMANDS = ("Version", "ReceiveWindowSize", "ConnectionTimeout")
EXTRA_RTS_COMMANDS = ("Empty", "Padding", "Version", "ConnectionTimeout", "ReceiveWindowSize", "Cookie",
                      "ChannelLifetime", "ClientKeepalive", "NegativeANCE", "ANCE", "ClientAddress",
                      "AssociationGroupId", "Destination", "PingTrafficSentNotify")


def rts_mutation() -> st.SearchStrategy[Dict[str, Any]]:
    def build(pdu: str, params: Dict[str, Any]) -> Dict[str, Any]:
        return fault("rpc.rts-mutate", pdu=pdu, **params)
    return st.builds(build, st.sampled_from(("CONN/C2", "CONN/A3")), _some({
        "drop": st.lists(st.sampled_from(RTS_COMMANDS), min_size=1, max_size=2, unique=True),
        "extra": st.lists(st.sampled_from(EXTRA_RTS_COMMANDS), min_size=1, max_size=3),
        "version": st.sampled_from((0, 2, 0xFFFFFFFF)), "receive_window": st.sampled_from(U32_VALUES),
        "connection_timeout": st.sampled_from(U32_VALUES), "flags": st.sampled_from(RTS_FLAGS),
        "reverse": st.just(True)}))


def rts_fault() -> st.SearchStrategy[Dict[str, Any]]:
    """CONN/A3 and CONN/C2 with other fields or commands; pings and a recycling request after CONN/C2 (the
    faults that stall the handshake, rpc.no-conn-a3/c2, are left out: a client can only wait for its timeout)."""
    return st.one_of(rts_mutation(),
                     st.builds(lambda count: fault("rpc.server-ping", count=count), st.integers(1, 3)),
                     st.just(fault("rpc.channel-recycle")), st.just(fault("rpc.legacy-out-framing")))


def rts_examples(max_faults: int = 3, hostnames: Sequence[str] = ()) -> st.SearchStrategy[Example]:
    return st.lists(rts_fault(), min_size=1, max_size=max_faults)


# ---- dcerpc: binds, faults, fragments (C706 12.6) ---------------------------------------------------------------
INTERFACES = ("nspi", "rfr", "emsmdb")
NAK_REASONS = tuple(range(10))          # reason_not_specified .. invalid_checksum
# RPC_S_SERVER_UNAVAILABLE, access denied, nca_s_fault_unspec, op_rng_error, context_mismatch, RPC_S_CALL_FAILED,
# rpc_x_bad_stub_data, E_FAIL, and a status nobody names
FAULT_STATUSES = (0x000006BA, 0x00000005, 0x1C000012, 0x1C010002, 0x1C00001A, 0x000006BE, 0x000006F7, 0x80004005,
                  0xFFFFFFFF)
NSPI_OPNUMS = (None, 0, 3, 5, 12)      # NspiBind, NspiQueryRows, NspiGetMatches, NspiGetSpecialTable
FRAGMENT_SIZES = (16, 8, 64, 256, 1024)
MAX_FRAGS = (0, 16, 1432, 4280, 65535)
SECONDARY_ADDRESSES = ("", "6004", "6001", "A" * 300, "ünï", "\\PIPE\\lsass")


def bind_ack() -> st.SearchStrategy[Dict[str, Any]]:
    return _some({"fragment_size": st.sampled_from(FRAGMENT_SIZES), "fault_after": st.integers(0, 3),
                  "fault_status": st.sampled_from(FAULT_STATUSES), "max_xmit": st.sampled_from(MAX_FRAGS),
                  "max_recv": st.sampled_from(MAX_FRAGS), "secondary_address": st.sampled_from(SECONDARY_ADDRESSES),
                  "extra_results": st.lists(st.integers(0, 3), min_size=1, max_size=3),
                  "results_first": st.just(True), "interface": st.sampled_from(INTERFACES)}
                 ).map(lambda params: fault("rpc.bind-ack", **params))


def dcerpc_fault() -> st.SearchStrategy[Dict[str, Any]]:
    """A fault PDU for a call (any or one opnum), bind_nak with each reason, odd bind_acks and fragment shapes."""
    return st.one_of(
        st.builds(lambda status, opnum: fault("rpc.call-fault", interface="nspi", status=status,
                                              **({} if opnum is None else {"opnum": opnum})),
                  st.sampled_from(FAULT_STATUSES), st.sampled_from(NSPI_OPNUMS)),
        st.builds(lambda reason: fault("rpc.bind-nak", reason=reason), st.sampled_from(NAK_REASONS)),
        bind_ack())


def dcerpc_examples(max_faults: int = 3, hostnames: Sequence[str] = ()) -> st.SearchStrategy[Example]:
    return st.lists(dcerpc_fault(), min_size=1, max_size=max_faults)


# ---- nspi: rows of NspiQueryRows / NspiGetMatches (MS-OXNSPI 2.2) -----------------------------------------------
COLUMNS = 8                     # edits name a column index among the first few asked for
ERROR_CODES = (0x8004010F, 0x80040102, 0x8007000E, 0, 0xFFFFFFFF)   # NOT_FOUND, NO_SUPPORT, E_OUTOFMEMORY
CELL_TEXTS = ("", "A" * 4096, "ünïcødé", "\U0001F600", "a\x00b", "=?utf-8?", "x" * 65535)
CELL_TYPES = ("long", "boolean", "binary", "systime", "unicode", "string8", "mv-unicode", "unspecified-error")


@st.composite
def cell_edit(draw: Any) -> Dict[str, Any]:
    action = draw(st.sampled_from(("drop", "error", "text", "type", "duplicate")))
    edit: Dict[str, Any] = {"action": action, "column": draw(st.integers(0, COLUMNS - 1))}
    value = {"error": st.sampled_from(ERROR_CODES), "text": st.sampled_from(CELL_TEXTS),
             "type": st.sampled_from(CELL_TYPES)}.get(action)
    if value is not None:
        edit["value"] = draw(value)
    return edit


def nspi_rows() -> st.SearchStrategy[Dict[str, Any]]:
    return _some({"cells": st.lists(cell_edit(), min_size=1, max_size=3),
                  "rows": st.sampled_from(("none", "duplicate", "error-row")),
                  "operation": st.sampled_from(("query-rows", "get-matches", "resolve-names"))}
                 ).map(lambda params: fault("mailbox.nspi-rows", **params))


def nspi_examples(max_faults: int = 3, hostnames: Sequence[str] = ()) -> st.SearchStrategy[Example]:
    return st.lists(nspi_rows(), min_size=1, max_size=max_faults)


RPC_LAYERS = {"ntlm": ntlm_examples, "rts": rts_examples, "dcerpc": dcerpc_examples, "nspi": nspi_examples}
