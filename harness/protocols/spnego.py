"""Negotiate (SPNEGO, RFC 4178 / MS-SPNG) acceptor carrying NTLM, sans-IO.

Accepts a GSS-wrapped NegTokenInit whose mech list contains NTLM, answers NegTokenResp(accept-incomplete, NTLM,
CHALLENGE), then NegTokenResp(accept-completed) with the server's mechListMIC when the client sent one. Raw NTLM
tokens sent under the Negotiate name (curl, some libraries) are answered with raw NTLM. Kerberos is not offered:
a NegTokenInit without NTLM fails with reason "kerberos not supported".

Parsing is as strict as Windows': bytes after a token or inside one, non-DER lengths and unknown, repeated or
mistyped fields are malformed; a client NegTokenResp must say accept-incomplete (or nothing) and carry a token; a
present-but-empty mechListMIC is an error, not "absent"; and when the NTLM AUTHENTICATE carries a MIC the
mechListMIC must be present and verify. Every such rejection is a failure step (401), never an exception.

The DER reader is our own: impacket.spnego's parser drops a mechToken that follows reqFlags, mis-decodes 3-byte
lengths, and its NegTokenResp encoder cannot carry negState together with a mechListMIC.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from impacket.ntlm import AV_PAIRS, NTLMSSP_AV_FLAGS
from impacket.spnego import MechTypes, TypesMech

from harness.protocols.logon import SIGNATURE
from harness.protocols.ntlm import NEGOTIATE, NTLMAcceptor, NTLMError, NTLMResult, NTLMSecurity

SPNEGO_OID = bytes.fromhex("2b0601050502")
NTLM_MECH = TypesMech["NTLMSSP - Microsoft NTLM Security Support Provider"]
KERBEROS_MECHS = {oid for oid, name in MechTypes.items() if "Kerberos" in name}

ACCEPT_COMPLETED, ACCEPT_INCOMPLETE, REJECT, REQUEST_MIC = 0, 1, 2, 3
_NTLMV2_AV_PAIRS_OFFSET = 16 + 28       # NTProofStr, then the NTLMv2_CLIENT_CHALLENGE header before its AvPairs
_AV_FLAGS_MIC_PRESENT = 0x00000002


# ---- strict DER ----------------------------------------------------------------------------------------------
# Strict as Windows' SPNEGO: one element fills exactly the bytes it is given (nothing trailing, inside or after),
# lengths are minimal definite DER, the fields of a SEQUENCE are known, ascending and of their declared type.
_SEQUENCE, _OID, _OCTET_STRING, _BIT_STRING, _ENUMERATED = 0x30, 0x06, 0x04, 0x03, 0x0A
_TYPE_NAMES = {_SEQUENCE: "SEQUENCE", _OID: "OID", _OCTET_STRING: "OCTET STRING", _BIT_STRING: "BIT STRING",
               _ENUMERATED: "ENUMERATED"}
_INIT_FIELD_TYPES = {0: _SEQUENCE, 1: _BIT_STRING, 2: _OCTET_STRING, 3: _OCTET_STRING}   # RFC 4178 4.2.1
_RESP_FIELD_TYPES = {0: _ENUMERATED, 1: _OID, 2: _OCTET_STRING, 3: _OCTET_STRING}        # RFC 4178 4.2.2
NEG_STATE_NAMES = {ACCEPT_COMPLETED: "accept-completed", ACCEPT_INCOMPLETE: "accept-incomplete",
                   REJECT: "reject", REQUEST_MIC: "request-mic"}


def _read_tlv(data: bytes, pos: int, end: int) -> Tuple[int, int, int]:
    """(tag, value start, value end) of the element at pos; ValueError when it does not fit before end or is
    not DER (a high tag number, an indefinite or non-minimal length)."""
    if pos + 2 > end:
        raise ValueError("truncated DER element")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("high tag number")
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or pos + count > end:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        if data[pos] == 0 or length < 0x80:
            raise ValueError("non-minimal DER length")
        pos += count
    if pos + length > end:
        raise ValueError("DER element longer than its container")
    return tag, pos, pos + length


def _only(data: bytes, start: int, end: int, tag: int, what: str) -> Tuple[int, int]:
    """(value start, value end) of the single element with ``tag`` that fills data[start:end] exactly."""
    found, value_start, value_end = _read_tlv(data, start, end)
    if found != tag:
        raise ValueError(f"{what} expected")
    if value_end != end:
        raise ValueError(f"{end - value_end} trailing byte(s) after {what}")
    return value_start, value_end


def _children(data: bytes, start: int, end: int) -> List[Tuple[int, int, int]]:
    items = []
    while start < end:
        item = _read_tlv(data, start, end)
        items.append(item)
        start = item[2]
    return items


def _context_fields(data: bytes, start: int, end: int, types: Dict[int, int]) -> Dict[int, Tuple[int, int]]:
    """The [n] fields of the SEQUENCE filling data[start:end]: n -> (start, end) of the whole typed element
    inside each context tag, which it must fill exactly."""
    start, end = _only(data, start, end, _SEQUENCE, "SEQUENCE")
    fields: Dict[int, Tuple[int, int]] = {}
    for tag, value_start, value_end in _children(data, start, end):
        number = tag & 0x1F
        if tag & 0xE0 != 0xA0 or number not in types:
            raise ValueError(f"unexpected field tag 0x{tag:02x}")
        if fields and number <= max(fields):
            raise ValueError(f"field [{number}] repeated or out of order")
        _only(data, value_start, value_end, types[number], f"{_TYPE_NAMES[types[number]]} in field [{number}]")
        fields[number] = (value_start, value_end)
    return fields


def _value(data: bytes, field: Tuple[int, int]) -> bytes:
    """The contents of the typed element that fills ``field`` (already checked by _context_fields)."""
    _, start, end = _read_tlv(data, *field)
    return data[start:end]


def _tlv(tag: int, value: bytes) -> bytes:
    length = len(value)
    if length < 0x80:
        return bytes([tag, length]) + value
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big") + value


def neg_token_resp(state: int, *, mech: bytes = b"", token: bytes = b"", mic: bytes = b"") -> bytes:
    fields = _tlv(0xA0, _tlv(_ENUMERATED, bytes([state])))
    if mech:
        fields += _tlv(0xA1, _tlv(_OID, mech))
    if token:
        fields += _tlv(0xA2, _tlv(_OCTET_STRING, token))
    if mic:
        fields += _tlv(0xA3, _tlv(_OCTET_STRING, mic))
    return _tlv(0xA1, _tlv(_SEQUENCE, fields))


@dataclass
class _InitToken:
    mech_types: List[bytes]
    mech_type_list: bytes        # the DER MechTypeList exactly as received: what mechListMICs cover
    mech_token: bytes


@dataclass
class _RespToken:
    neg_state: Optional[int]     # None when absent
    supported_mech: Optional[bytes]
    response_token: bytes
    mech_list_mic: Optional[bytes]   # None when absent; b"" when present but empty (an error, never "absent")


def _parse_init(data: bytes) -> _InitToken:
    start, end = _only(data, 0, len(data), 0x60, "GSS InitialContextToken")
    tag, oid_start, oid_end = _read_tlv(data, start, end)
    if tag != _OID or data[oid_start:oid_end] != SPNEGO_OID:
        raise ValueError("not an SPNEGO token")
    start, end = _only(data, oid_end, end, 0xA0, "NegTokenInit")
    fields = _context_fields(data, start, end, _INIT_FIELD_TYPES)
    if 0 not in fields:
        raise ValueError("NegTokenInit without mechTypes")
    _, list_start, list_end = _read_tlv(data, *fields[0])
    mech_types = []
    for tag, start, end in _children(data, list_start, list_end):
        if tag != _OID:
            raise ValueError("mechTypes holds a non-OID")
        mech_types.append(data[start:end])
    return _InitToken(mech_types=mech_types, mech_type_list=data[fields[0][0]:fields[0][1]],
                      mech_token=_value(data, fields[2]) if 2 in fields else b"")


def _parse_resp(data: bytes) -> _RespToken:
    """A client NegTokenResp, whole: nothing may follow it."""
    start, end = _only(data, 0, len(data), 0xA1, "NegTokenResp")
    fields = _context_fields(data, start, end, _RESP_FIELD_TYPES)
    neg_state = None
    if 0 in fields:
        state = _value(data, fields[0])
        if len(state) != 1 or state[0] not in NEG_STATE_NAMES:
            raise ValueError("negState out of range")
        neg_state = state[0]
    return _RespToken(neg_state=neg_state,
                      supported_mech=_value(data, fields[1]) if 1 in fields else None,
                      response_token=_value(data, fields[2]) if 2 in fields else b"",
                      mech_list_mic=_value(data, fields[3]) if 3 in fields else None)


def _is_ntlm(token: bytes, message_type: int) -> bool:
    return token[:8] == SIGNATURE and len(token) >= 12 and struct.unpack_from("<I", token, 8)[0] == message_type


def _announces_mic(authenticate: bytes) -> bool:
    """Whether an AUTHENTICATE's NTLMv2 response announces a MIC in its MsvAvFlags (MS-NLMP 2.2.2.1), read as
    the NTLM acceptor reads it. Only asked of an AUTHENTICATE the acceptor has already parsed and verified."""
    length, _, offset = struct.unpack_from("<HHI", authenticate, 20)     # NtChallengeResponseFields
    nt_response = authenticate[offset:offset + length]
    if len(nt_response) < _NTLMV2_AV_PAIRS_OFFSET:
        return False
    av_flags = AV_PAIRS(nt_response[_NTLMV2_AV_PAIRS_OFFSET:])[NTLMSSP_AV_FLAGS]
    return bool(av_flags and len(av_flags[1]) == 4 and struct.unpack("<I", av_flags[1])[0] & _AV_FLAGS_MIC_PRESENT)


# ---- acceptor ------------------------------------------------------------------------------------------------
@dataclass
class NegotiateStep:
    state: str                                 # "continue", "success" or "failure"
    token: bytes = b""                         # to send back (may be empty on success/failure)
    reason: str = ""
    result: Optional[NTLMResult] = None        # the NTLM result once the AUTHENTICATE was processed
    security: Optional[NTLMSecurity] = None    # on success with ESS: ready for wrap/seal (mechListMIC already done)


class NegotiateAcceptor:
    """One Negotiate authentication: feed each client token to step(); it never raises on bad input."""

    def __init__(self, ntlm: NTLMAcceptor) -> None:
        self._ntlm = ntlm
        self._expect = "first"          # first | negotiate | authenticate | done
        self._spnego = False
        self._mech_type_list = b""
        self._mic_required = False

    @property
    def started(self) -> bool:
        return self._expect != "first"

    def step(self, token: bytes) -> NegotiateStep:
        try:
            return self._step(token)
        except (ValueError, IndexError, struct.error, NTLMError) as exc:
            return self._fail(f"malformed token: {exc}")

    def _step(self, token: bytes) -> NegotiateStep:
        if self._expect == "first":
            if _is_ntlm(token, NEGOTIATE):
                return self._challenge(token)
            if token[:8] == SIGNATURE:
                return self._fail("unexpected NTLM message")
            init = _parse_init(token)
            self._spnego = True
            self._mech_type_list = init.mech_type_list
            if NTLM_MECH not in init.mech_types:
                offered = KERBEROS_MECHS.intersection(init.mech_types)
                return self._fail("kerberos not supported" if offered else "no common mechanism")
            if init.mech_types[0] == NTLM_MECH and init.mech_token:
                return self._challenge(init.mech_token)
            # The optimistic token (if any) belongs to another mech: pick NTLM and ask for its NEGOTIATE.
            self._mic_required = init.mech_types[0] != NTLM_MECH
            self._expect = "negotiate"
            state = REQUEST_MIC if self._mic_required else ACCEPT_INCOMPLETE
            return NegotiateStep("continue", neg_token_resp(state, mech=NTLM_MECH))
        if self._expect == "done":
            return self._fail("unexpected token")
        if not self._spnego:
            return self._challenge(token) if self._expect == "negotiate" else self._authenticate(token, None)
        resp = _parse_resp(token)
        problem = self._resp_problem(resp)
        if problem:
            return self._fail(problem)
        if self._expect == "negotiate":
            return self._challenge(resp.response_token)
        return self._authenticate(resp.response_token, resp.mech_list_mic)

    def _resp_problem(self, resp: _RespToken) -> str:
        """Why a client NegTokenResp cannot carry the next NTLM token (MS-SPNG 3.2.5.2), or ""."""
        if resp.neg_state is not None and resp.neg_state != ACCEPT_INCOMPLETE:
            return f"negState {NEG_STATE_NAMES[resp.neg_state]} where a client token was expected"
        if resp.supported_mech not in (None, NTLM_MECH):
            return "supportedMech is not NTLM"
        if not resp.response_token:
            return "responseToken missing"
        if resp.mech_list_mic is not None and not resp.mech_list_mic:
            return "empty mechListMIC"            # present but empty is never "absent"
        if resp.mech_list_mic is not None and self._expect == "negotiate":
            return "mechListMIC before the NTLM exchange completed"
        return ""

    def _challenge(self, negotiate: bytes) -> NegotiateStep:
        try:
            challenge = self._ntlm.challenge(negotiate)
        except NTLMError as exc:
            return self._fail(f"malformed token: {exc}")
        first_reply = self._expect == "first"
        self._expect = "authenticate"
        if not self._spnego:
            return NegotiateStep("continue", challenge)
        return NegotiateStep("continue", neg_token_resp(ACCEPT_INCOMPLETE, mech=NTLM_MECH if first_reply else b"",
                                                        token=challenge))

    def _authenticate(self, authenticate: bytes, mic: Optional[bytes]) -> NegotiateStep:
        result = self._ntlm.authenticate(authenticate)
        if not result.ok:
            return self._fail(result.reason, result)
        try:
            security: Optional[NTLMSecurity] = NTLMSecurity(result)
        except NTLMError:
            security = None
        if not self._spnego:
            self._expect = "done"
            return NegotiateStep("success", result=result, security=security)
        if mic is None:
            # An AUTHENTICATE with a MIC binds the exchange only if SPNEGO binds the mech list too (MS-SPNG 3.3.5.1):
            # without the mechListMIC, a downgraded or altered list would go unnoticed.
            if self._mic_required or _announces_mic(authenticate):
                return self._fail("mechListMIC missing", result)
            self._expect = "done"
            return NegotiateStep("success", neg_token_resp(ACCEPT_COMPLETED), result=result, security=security)
        if security is None:
            return self._fail("mechListMIC needs extended session security", result)
        if not security.verify_mech_list_mic(self._mech_type_list, mic):
            return self._fail("bad mechListMIC", result)
        self._expect = "done"
        final = neg_token_resp(ACCEPT_COMPLETED, mic=security.mech_list_mic(self._mech_type_list))
        return NegotiateStep("success", final, result=result, security=security)

    def _fail(self, reason: str, result: Optional[NTLMResult] = None) -> NegotiateStep:
        self._expect = "done"
        return NegotiateStep("failure", neg_token_resp(REJECT) if self._spnego else b"", reason, result)


__all__ = ["NegotiateAcceptor", "NegotiateStep", "neg_token_resp", "NTLM_MECH", "SPNEGO_OID",
           "ACCEPT_COMPLETED", "ACCEPT_INCOMPLETE", "REJECT", "REQUEST_MIC", "NEG_STATE_NAMES"]
