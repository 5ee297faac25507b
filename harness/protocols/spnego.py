"""Negotiate (SPNEGO, RFC 4178 / MS-SPNG) acceptor carrying NTLM, sans-IO.

Accepts a GSS-wrapped NegTokenInit whose mech list contains NTLM, answers NegTokenResp(accept-incomplete, NTLM,
CHALLENGE), then NegTokenResp(accept-completed) with the server's mechListMIC when the client sent one. Raw NTLM
tokens sent under the Negotiate name (curl, some libraries) are answered with raw NTLM. Kerberos is not offered:
a NegTokenInit without NTLM fails with reason "kerberos not supported".

The DER reader is our own: impacket.spnego's parser drops a mechToken that follows reqFlags, mis-decodes 3-byte
lengths, and its NegTokenResp encoder cannot carry negState together with a mechListMIC.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from impacket.spnego import MechTypes, TypesMech

from harness.protocols.ntlm import (NEGOTIATE, SIGNATURE, NTLMAcceptor, NTLMError, NTLMResult, NTLMSecurity)

SPNEGO_OID = bytes.fromhex("2b0601050502")
NTLM_MECH = TypesMech["NTLMSSP - Microsoft NTLM Security Support Provider"]
KERBEROS_MECHS = {oid for oid, name in MechTypes.items() if "Kerberos" in name}

ACCEPT_COMPLETED, ACCEPT_INCOMPLETE, REJECT, REQUEST_MIC = 0, 1, 2, 3


# ---- minimal DER ---------------------------------------------------------------------------------------------
def _read_tlv(data: bytes, pos: int, end: int) -> Tuple[int, int, int]:
    """(tag, value start, value end) of the element at pos; ValueError when it does not fit before end."""
    if pos + 2 > end:
        raise ValueError("truncated DER element")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or pos + count > end:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > end:
        raise ValueError("DER element longer than its container")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> List[Tuple[int, int, int]]:
    items = []
    while start < end:
        item = _read_tlv(data, start, end)
        items.append(item)
        start = item[2]
    return items


def _context_fields(data: bytes, start: int, end: int) -> Dict[int, Tuple[int, int]]:
    """The [n] fields of a SEQUENCE: n -> (start, end) of the element inside each context tag."""
    tag, start, end = _read_tlv(data, start, end)
    if tag != 0x30:
        raise ValueError("SEQUENCE expected")
    fields = {}
    for tag, value_start, value_end in _children(data, start, end):
        if tag & 0xE0 != 0xA0:
            raise ValueError("context-specific tag expected")
        fields[tag & 0x1F] = (value_start, value_end)
    return fields


def _octets(data: bytes, field: Tuple[int, int]) -> bytes:
    tag, start, end = _read_tlv(data, *field)
    if tag != 0x04:
        raise ValueError("OCTET STRING expected")
    return data[start:end]


def _tlv(tag: int, value: bytes) -> bytes:
    length = len(value)
    if length < 0x80:
        return bytes([tag, length]) + value
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big") + value


def neg_token_resp(state: int, *, mech: bytes = b"", token: bytes = b"", mic: bytes = b"") -> bytes:
    fields = _tlv(0xA0, _tlv(0x0A, bytes([state])))
    if mech:
        fields += _tlv(0xA1, _tlv(0x06, mech))
    if token:
        fields += _tlv(0xA2, _tlv(0x04, token))
    if mic:
        fields += _tlv(0xA3, _tlv(0x04, mic))
    return _tlv(0xA1, _tlv(0x30, fields))


@dataclass
class _InitToken:
    mech_types: List[bytes]
    mech_type_list: bytes        # the DER MechTypeList exactly as received: what mechListMICs cover
    mech_token: bytes


def _parse_init(data: bytes) -> _InitToken:
    tag, start, end = _read_tlv(data, 0, len(data))
    if tag != 0x60:
        raise ValueError("GSS InitialContextToken expected")
    tag, oid_start, oid_end = _read_tlv(data, start, end)
    if tag != 0x06 or data[oid_start:oid_end] != SPNEGO_OID:
        raise ValueError("not an SPNEGO token")
    tag, start, end = _read_tlv(data, oid_end, end)
    if tag != 0xA0:
        raise ValueError("NegTokenInit expected")
    fields = _context_fields(data, start, end)
    if 0 not in fields:
        raise ValueError("NegTokenInit without mechTypes")
    tag, list_start, list_end = _read_tlv(data, *fields[0])
    if tag != 0x30:
        raise ValueError("mechTypes is not a SEQUENCE")
    mech_types = []
    for tag, start, end in _children(data, list_start, list_end):
        if tag != 0x06:
            raise ValueError("mechTypes holds a non-OID")
        mech_types.append(data[start:end])
    return _InitToken(mech_types=mech_types, mech_type_list=data[fields[0][0]:list_end],
                      mech_token=_octets(data, fields[2]) if 2 in fields else b"")


def _parse_resp(data: bytes) -> Tuple[bytes, bytes]:
    """(responseToken, mechListMIC) of a client NegTokenResp."""
    tag, start, end = _read_tlv(data, 0, len(data))
    if tag != 0xA1:
        raise ValueError("NegTokenResp expected")
    fields = _context_fields(data, start, end)
    token = _octets(data, fields[2]) if 2 in fields else b""
    mic = _octets(data, fields[3]) if 3 in fields else b""
    return token, mic


def _is_ntlm(token: bytes, message_type: int) -> bool:
    return token[:8] == SIGNATURE and len(token) >= 12 and struct.unpack_from("<I", token, 8)[0] == message_type


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
        except ValueError as exc:
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
        if self._spnego:
            inner, mic = _parse_resp(token)
        else:
            inner, mic = token, b""
        if self._expect == "negotiate":
            return self._challenge(inner)
        return self._authenticate(inner, mic)

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

    def _authenticate(self, authenticate: bytes, mic: bytes) -> NegotiateStep:
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
        if not mic:
            if self._mic_required:
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
           "ACCEPT_COMPLETED", "ACCEPT_INCOMPLETE", "REJECT", "REQUEST_MIC"]
