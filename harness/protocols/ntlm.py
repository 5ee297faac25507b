"""Server side of NTLM (MS-NLMP), sans-IO: the CHALLENGE an Exchange 2013 CAS on Windows Server 2012 R2 sends,
real verification of the AUTHENTICATE against the org's passwords, and the session security (sign/seal) that
DCE/RPC at auth levels 5/6 and SPNEGO's mechListMIC use.

Decisions (documented here because faults and the analyzer rely on them):
- Domains: the AUTHENTICATE's domain must be empty, the NetBIOS domain, the DNS domain or the DNS tree name
  (case-insensitive); anything else is refused with reason "unknown domain". The NTOWFv2 is still computed with
  the domain exactly as the client sent it (user upper-cased), as Windows does.
- UPN users (``alice@contoso.test`` with an empty domain) are looked up as such.
- NTLMv1 (24-byte NT response, with or without extended session security) is verified for real and accepted unless
  ``accept_ntlmv1=False`` (reason "ntlmv1 refused"), matching Server 2012 R2's default LmCompatibilityLevel.
  An LM-only response is always refused ("lm response refused"); LM_KEY and NON_NT_SESSION_KEY are never granted.
- Logon checks in Windows' order: unknown user, account locked, wrong password, bad MIC, password expired.
- The MIC of the AUTHENTICATE is checked whenever the client flags it in its MsvAvFlags.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import random
import struct
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

from Cryptodome.Cipher import ARC4
from Cryptodome.Hash import MD4
from impacket import ntlm

from harness.org import Mailbox
from harness.protocols.logon import SIGNATURE, AvPair, ChallengeEdit, Lookup, ServerIdentity, logon_refusal, org_lookup

NEGOTIATE, CHALLENGE, AUTHENTICATE = 1, 2, 3

# Windows Server 2012 R2: 6.3 build 9600, NTLM revision 15.
SERVER_VERSION = (6, 3, 9600, ntlm.VERSION.NTLMSSP_REVISION_W2K3)

# Client-requested flags the CAS echoes; everything else it decides itself.
_ECHOED_FLAGS = (ntlm.NTLMSSP_NEGOTIATE_SIGN | ntlm.NTLMSSP_NEGOTIATE_SEAL | ntlm.NTLMSSP_NEGOTIATE_ALWAYS_SIGN
                 | ntlm.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY | ntlm.NTLMSSP_NEGOTIATE_128
                 | ntlm.NTLMSSP_NEGOTIATE_56 | ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH)
_ADDED_FLAGS = (ntlm.NTLMSSP_REQUEST_TARGET | ntlm.NTLMSSP_NEGOTIATE_NTLM | ntlm.NTLMSSP_NEGOTIATE_TARGET_INFO
                | ntlm.NTLMSSP_TARGET_TYPE_DOMAIN | ntlm.NTLMSSP_NEGOTIATE_VERSION)

_AUTHENTICATE_HEADER = 64            # fixed part without Version and MIC
_MIC_OFFSET, _MIC_END = 72, 88
_AV_FLAGS_MIC_PRESENT = 0x00000002
_NTLMV2_MIN_RESPONSE = 16 + 28 + 4   # NTProofStr + blob header + MsvAvEOL
_FILETIME_EPOCH = 116444736000000000  # 1601-01-01 to 1970-01-01 in 100 ns


class NTLMError(Exception):
    """A message that cannot be processed (malformed NEGOTIATE, bad signature, unsupported session security)."""


@dataclass
class NTLMResult:
    ok: bool
    reason: str = ""             # "" on success, else e.g. "unknown user", "wrong password", "malformed message"
    user: str = ""               # as the client sent it
    domain: str = ""             # as the client sent it
    workstation: str = ""
    mailbox: Optional[Mailbox] = None
    flags: int = 0               # negotiated: AUTHENTICATE flags masked by the CHALLENGE flags
    session_key: bytes = b""     # ExportedSessionKey (after KEY_EXCH decryption), for NTLMSecurity
    protocol: str = ""           # "NTLMv2" or "NTLMv1" once the NT response was classified


@dataclass
class _Authenticate:
    raw: bytes
    lm: bytes
    nt: bytes
    domain: str
    user: str
    workstation: str
    encrypted_session_key: bytes
    flags: int

    @classmethod
    def parse(cls, data: bytes) -> "_Authenticate":
        """Strict parse; raises ValueError (also UnicodeDecodeError) on anything out of bounds."""
        if len(data) < _AUTHENTICATE_HEADER or data[:8] != SIGNATURE:
            raise ValueError("not an NTLM message")
        if struct.unpack_from("<I", data, 8)[0] != AUTHENTICATE:
            raise ValueError("not an AUTHENTICATE message")
        fields = [_payload(data, 12 + 8 * i) for i in range(6)]
        flags = struct.unpack_from("<I", data, 60)[0]
        codec = "utf-16-le" if flags & ntlm.NTLMSSP_NEGOTIATE_UNICODE else "cp437"
        lm, nt, domain, user, workstation, session_key = fields
        return cls(raw=data, lm=lm, nt=nt, domain=domain.decode(codec), user=user.decode(codec),
                   workstation=workstation.decode(codec), encrypted_session_key=session_key, flags=flags)

    def without_mic(self) -> bytes:
        return self.raw[:_MIC_OFFSET] + bytes(16) + self.raw[_MIC_END:]

    @property
    def mic(self) -> bytes:
        return self.raw[_MIC_OFFSET:_MIC_END]

    @property
    def has_room_for_mic(self) -> bool:
        offsets = [struct.unpack_from("<HHI", self.raw, 12 + 8 * i) for i in range(6)]
        return len(self.raw) >= _MIC_END and all(length == 0 or offset >= _MIC_END for length, _, offset in offsets)


def _payload(data: bytes, field_offset: int) -> bytes:
    length, _max_length, offset = struct.unpack_from("<HHI", data, field_offset)
    if length and (offset < _AUTHENTICATE_HEADER or offset + length > len(data)):
        raise ValueError("security buffer out of bounds")
    return data[offset:offset + length] if length else b""


def _hmac_md5(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "md5")


@functools.lru_cache(maxsize=1024)
def _nt_hash(password: str) -> bytes:
    """NTOWFv1, MD4 of the UTF-16 password; kept per password (the org's passwords are in memory anyway), as each
    logon needs it and MD4 through Cryptodome costs more than the rest of the verification."""
    return bytes(ntlm.compute_nthash(password))


def _filetime(seconds: float) -> bytes:
    return struct.pack("<Q", _FILETIME_EPOCH + int(seconds * 10_000_000))


# The CHALLENGE, packed by hand (the layout of impacket's NTLMAuthChallenge with a Version, byte for byte; impacket's
# Structure costs a fraction of a millisecond per message): fixed fields, Version, TargetName, TargetInfo.
_CHALLENGE_HEAD = struct.Struct("<8sLHHLL8s8sHHL")
_CHALLENGE_SIZE = _CHALLENGE_HEAD.size + 8
_VERSION = struct.pack("<BBH3xB", *SERVER_VERSION)
_AV_TIME = struct.pack("<HH", ntlm.NTLMSSP_AV_TIME, 8)
_AV_EOL = struct.pack("<HH", ntlm.NTLMSSP_AV_EOL, 0)


@functools.lru_cache(maxsize=64)
def _target_names(identity: ServerIdentity) -> bytes:
    """The CHALLENGE's TargetInfo AV pairs up to the timestamp: the server's names, in Windows' order."""
    pairs = ((ntlm.NTLMSSP_AV_DOMAINNAME, identity.netbios_domain),
             (ntlm.NTLMSSP_AV_HOSTNAME, identity.netbios_computer),
             (ntlm.NTLMSSP_AV_DNS_DOMAINNAME, identity.dns_domain),
             (ntlm.NTLMSSP_AV_DNS_HOSTNAME, identity.dns_computer),
             (ntlm.NTLMSSP_AV_DNS_TREENAME, identity.dns_tree))
    return b"".join(struct.pack("<HH", av_id, len(value)) + value
                    for av_id, value in ((av_id, name.encode("utf-16-le")) for av_id, name in pairs))


def _av_pairs(target_info: bytes) -> List[AvPair]:
    """The server's own TargetInfo as (id, value) pairs, MsvAvEOL last."""
    pairs: List[AvPair] = []
    offset = 0
    while offset + 4 <= len(target_info):
        av_id, length = struct.unpack_from("<HH", target_info, offset)
        pairs.append((av_id, target_info[offset + 4:offset + 4 + length]))
        offset += 4 + length
    return pairs


class NTLMAcceptor:
    """One NTLM authentication (per HTTP connection, or per DCE/RPC security context): NEGOTIATE in, CHALLENGE out,
    AUTHENTICATE in, NTLMResult out."""

    def __init__(self, identity: ServerIdentity, lookup: Lookup, rng: random.Random, *,
                 clock: Callable[[], float] = time.time, accept_ntlmv1: bool = True,
                 challenge_edit: Optional[ChallengeEdit] = None) -> None:
        self.identity = identity
        self._edit = challenge_edit
        self._lookup = lookup
        self._rng = rng
        self._clock = clock
        self._accept_ntlmv1 = accept_ntlmv1
        self._negotiate = b""                           # the NEGOTIATE answered, for the MIC
        self._challenge: Optional[bytes] = None
        self._challenge_flags = 0
        self._server_challenge = b""
        self.result: Optional[NTLMResult] = None

    # ---- NEGOTIATE -> CHALLENGE ------------------------------------------------------------------------------
    def challenge(self, negotiate: bytes) -> bytes:
        """Answer a NEGOTIATE (Type 1) with a CHALLENGE (Type 2); NTLMError on a malformed or out-of-order one."""
        if self._challenge is not None:
            raise NTLMError("NEGOTIATE after the CHALLENGE was sent")
        if len(negotiate) < 16 or negotiate[:8] != SIGNATURE:
            raise NTLMError("not an NTLM message")
        if struct.unpack_from("<I", negotiate, 8)[0] != NEGOTIATE:
            raise NTLMError("not a NEGOTIATE message")
        client_flags = struct.unpack_from("<I", negotiate, 12)[0]
        flags = client_flags & _ECHOED_FLAGS | _ADDED_FLAGS
        # UNICODE unless the client can only do OEM.
        unicode = client_flags & ntlm.NTLMSSP_NEGOTIATE_UNICODE or not client_flags & ntlm.NTLM_NEGOTIATE_OEM
        flags |= ntlm.NTLMSSP_NEGOTIATE_UNICODE if unicode else ntlm.NTLM_NEGOTIATE_OEM
        self._server_challenge = self._rng.getrandbits(64).to_bytes(8, "little")
        codec = "utf-16-le" if unicode else "cp437"
        target_name = self.identity.netbios_domain.encode(codec)
        target_info = _target_names(self.identity) + _AV_TIME + _filetime(self._clock()) + _AV_EOL
        version = _VERSION
        if self._edit is not None:    # a fault's CHALLENGE (harness/faults/auth.py auth.ntlm-challenge)
            flags = self._edit.flags(flags)
            if self._edit.target_name is not None:
                target_name = self._edit.target_name.encode(codec, "replace")
            target_info = self._edit.target_info(_av_pairs(target_info))
            version = self._edit.version if self._edit.version is not None else version
        message = (_CHALLENGE_HEAD.pack(SIGNATURE, CHALLENGE, len(target_name), len(target_name), _CHALLENGE_SIZE,
                                        flags, self._server_challenge, bytes(8), len(target_info), len(target_info),
                                        _CHALLENGE_SIZE + len(target_name))
                   + version + target_name + target_info)

        self._negotiate = negotiate
        self._challenge_flags = flags
        self._challenge = message
        return message

    # ---- AUTHENTICATE -> result ------------------------------------------------------------------------------
    def authenticate(self, authenticate: bytes) -> NTLMResult:
        """Verify an AUTHENTICATE (Type 3). Never raises on bad input: ok=False with a reason."""
        self.result = self._authenticate(authenticate)
        return self.result

    def _authenticate(self, data: bytes) -> NTLMResult:
        challenge = self._challenge
        if challenge is None or self.result is not None:
            return NTLMResult(ok=False, reason="unexpected message")
        try:
            message = _Authenticate.parse(data)
        except (ValueError, struct.error):
            return NTLMResult(ok=False, reason="malformed message")
        result = NTLMResult(ok=False, user=message.user, domain=message.domain, workstation=message.workstation,
                            flags=message.flags & self._challenge_flags)
        if not message.user:
            result.reason = "anonymous"
            return result
        if not self.identity.accepts_domain(message.domain):
            result.reason = "unknown domain"
            return result
        result.mailbox = mailbox = self._lookup(message.user, message.domain)
        if mailbox is None:
            result.reason = logon_refusal(None, False)
            return result

        if len(message.nt) >= _NTLMV2_MIN_RESPONSE:
            result.protocol = "NTLMv2"
            key_exchange_key = self._verify_ntlmv2(message, mailbox.password)
        elif len(message.nt) == 24:
            result.protocol = "NTLMv1"
            if not self._accept_ntlmv1:
                result.reason = "ntlmv1 refused"
                return result
            key_exchange_key = self._verify_ntlmv1(message, result.flags, mailbox.password)
        else:
            result.reason = "lm response refused" if not message.nt and message.lm else "malformed message"
            return result

        result.reason = logon_refusal(mailbox, key_exchange_key is not None)
        if key_exchange_key is None or result.reason == "account locked":
            return result
        try:
            session_key = self._exported_session_key(message, result.flags, key_exchange_key)
            mic_ok = self._mic_ok(message, session_key, challenge)
        except ValueError:
            result.reason = "malformed message"
            return result
        if not mic_ok:
            result.reason = "bad MIC"
        elif not result.reason:
            result.ok, result.session_key = True, session_key
        return result

    def _verify_ntlmv2(self, message: _Authenticate, password: str) -> Optional[bytes]:
        # NTOWFv2 (MS-NLMP 3.3.2), as impacket computes it
        response_key = _hmac_md5(_nt_hash(password), (message.user.upper() + message.domain).encode("utf-16-le"))
        proof, blob = message.nt[:16], message.nt[16:]
        if not hmac.compare_digest(_hmac_md5(response_key, self._server_challenge + blob), proof):
            return None
        session_base_key = _hmac_md5(response_key, proof)   # = KeyExchangeKey for NTLMv2
        return session_base_key

    def _verify_ntlmv1(self, message: _Authenticate, flags: int, password: str) -> Optional[bytes]:
        nt_hash = _nt_hash(password)
        ess = flags & ntlm.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY
        if ess and len(message.lm) < 8:
            return None
        challenge = (hashlib.md5(self._server_challenge + message.lm[:8]).digest()[:8] if ess
                     else self._server_challenge)
        if not hmac.compare_digest(ntlm.ntlmssp_DES_encrypt(nt_hash, challenge), message.nt):
            return None
        session_base_key = MD4.new(nt_hash).digest()
        return _hmac_md5(session_base_key, self._server_challenge + message.lm[:8]) if ess else session_base_key

    @staticmethod
    def _exported_session_key(message: _Authenticate, flags: int, key_exchange_key: bytes) -> bytes:
        if not flags & ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH:
            return key_exchange_key
        if len(message.encrypted_session_key) == 16:
            return ARC4.new(key_exchange_key).decrypt(message.encrypted_session_key)
        # pyspnego sends a 1-byte placeholder when neither SIGN nor SEAL was negotiated: the key stays KXKEY.
        if not flags & (ntlm.NTLMSSP_NEGOTIATE_SIGN | ntlm.NTLMSSP_NEGOTIATE_SEAL):
            return key_exchange_key
        raise ValueError("EncryptedRandomSessionKey is not 16 bytes")

    def _mic_ok(self, message: _Authenticate, session_key: bytes, challenge: bytes) -> bool:
        """Check the MIC when the NTLMv2 blob's MsvAvFlags announce one (it is then mandatory)."""
        if len(message.nt) < _NTLMV2_MIN_RESPONSE:
            return True
        try:
            av_pairs = ntlm.AV_PAIRS(message.nt[16 + 28:])
        except (struct.error, IndexError) as exc:
            raise ValueError("bad AV pairs in the NTLMv2 response") from exc
        av_flags = av_pairs[ntlm.NTLMSSP_AV_FLAGS]
        if av_flags is None or len(av_flags[1]) != 4 or not struct.unpack("<I", av_flags[1])[0] & _AV_FLAGS_MIC_PRESENT:
            return True
        if not message.has_room_for_mic:
            return False
        expected = _hmac_md5(session_key, self._negotiate + challenge + message.without_mic())
        return hmac.compare_digest(expected, message.mic)


_SEQUENCE = struct.Struct("<i")              # as impacket packs it into the HMAC
_SIGNATURE_SEQUENCE = struct.Struct("<I")
_SIGNATURE_VERSION = struct.pack("<L", 1)


class NTLMSecurity:
    """Server side of NTLM session security with extended session security (ESS): one continuous RC4 stream per
    direction, per-direction sequence numbers starting at 0 (MS-NLMP 3.4).

    Order of operations matches impacket's rpcrt.py and pyspnego: incoming, decrypt first and then verify the
    signature over the plaintext (consuming 8 more keystream bytes with KEY_EXCH); outgoing, encrypt first and then
    sign the plaintext. Every verify/sign consumes one sequence number, even when the signature is wrong.

    DCE/RPC at level 6: ``sealed, sig = seal_and_sign(header, stub_and_pad, sec_trailer)`` and
    ``stub_and_pad = unseal_and_verify(header, sealed, sec_trailer, sig)`` (the signature covers
    header + plaintext + sec_trailer, as impacket signs the whole PDU with ESS). Level 5: ``sign(pdu)`` /
    ``verify(pdu, sig)``. GSS-style (pyspnego's wrap/unwrap): ``wrap(data)`` / ``unwrap(token)``.
    """

    def __init__(self, result: NTLMResult) -> None:
        if not result.ok:
            raise NTLMError("session security needs a successful authentication")
        if not result.flags & ntlm.NTLMSSP_NEGOTIATE_EXTENDED_SESSIONSECURITY:
            raise NTLMError("sign/seal without extended session security is not supported")
        flags, key = result.flags, result.session_key
        self.flags = flags
        self._in_sign_key = ntlm.SIGNKEY(flags, key, "Client")
        self._out_sign_key = ntlm.SIGNKEY(flags, key, "Server")
        self._in_seal_key = ntlm.SEALKEY(flags, key, "Client")
        self._out_seal_key = ntlm.SEALKEY(flags, key, "Server")
        self._in_rc4 = ARC4.new(self._in_seal_key).encrypt
        self._out_rc4 = ARC4.new(self._out_seal_key).encrypt
        self.in_sequence = 0
        self.out_sequence = 0

    # ---- primitives ------------------------------------------------------------------------------------------
    def unseal(self, data: bytes) -> bytes:
        return self._in_rc4(data)

    def seal(self, data: bytes) -> bytes:
        return self._out_rc4(data)

    def verify(self, message: bytes, signature: bytes) -> bool:
        expected = self._signature(self._in_sign_key, message, self.in_sequence, self._in_rc4)
        self.in_sequence += 1
        return hmac.compare_digest(expected, signature)

    def sign(self, message: bytes) -> bytes:
        signature = self._signature(self._out_sign_key, message, self.out_sequence, self._out_rc4)
        self.out_sequence += 1
        return signature

    def _signature(self, key: bytes, message: bytes, sequence: int, rc4: Callable[[bytes], bytes]) -> bytes:
        """MS-NLMP 3.4.4.2 with ESS: version 1, the first 8 bytes of HMAC_MD5(key, seq + message) (RC4-encrypted with
        KEY_EXCH), seq; what impacket's SIGN gives, without its Structure."""
        checksum = hmac.digest(key, _SEQUENCE.pack(sequence) + message, "md5")[:8]
        if self.flags & ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH:
            checksum = rc4(checksum)
        return _SIGNATURE_VERSION + checksum + _SIGNATURE_SEQUENCE.pack(sequence)

    # ---- combined forms --------------------------------------------------------------------------------------
    def seal_and_sign(self, before: bytes, data: bytes, after: bytes) -> tuple[bytes, bytes]:
        """Encrypt data; sign before + plaintext data + after. Returns (sealed data, 16-byte signature)."""
        if not self.flags & ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH:
            return self.seal(data), self.sign(before + data + after)
        # One RC4 call for the data and then the checksum: the same keystream bytes as seal() followed by sign().
        checksum = hmac.digest(self._out_sign_key, _SEQUENCE.pack(self.out_sequence) + before + data + after,
                               "md5")[:8]
        sealed = self._out_rc4(data + checksum)
        signature = _SIGNATURE_VERSION + sealed[-8:] + _SIGNATURE_SEQUENCE.pack(self.out_sequence)
        self.out_sequence += 1
        return sealed[:-8], signature

    def unseal_and_verify(self, before: bytes, sealed: bytes, after: bytes, signature: bytes) -> bytes:
        """Decrypt sealed; verify the signature over before + plaintext + after. NTLMError on a mismatch."""
        if not self.flags & ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH or len(signature) != 16:
            data = self.unseal(sealed)
            if not self.verify(before + data + after, signature):
                raise NTLMError("signature mismatch")
            return data
        # One RC4 call for the data and then the signature's checksum (unsealed here, compared in the clear): the
        # same keystream bytes as unseal() followed by verify().
        plain = self._in_rc4(sealed + signature[4:12])
        data, checksum = plain[:-8], plain[-8:]
        expected = hmac.digest(self._in_sign_key, _SEQUENCE.pack(self.in_sequence) + before + data + after, "md5")[:8]
        header_ok = signature[:4] == _SIGNATURE_VERSION and signature[12:] == _SIGNATURE_SEQUENCE.pack(self.in_sequence)
        self.in_sequence += 1
        if not (hmac.compare_digest(expected, checksum) and header_ok):
            raise NTLMError("signature mismatch")
        return data

    def wrap(self, data: bytes) -> bytes:
        """GSS_Wrap with confidentiality: signature(16) + sealed data."""
        sealed, signature = self.seal_and_sign(b"", data, b"")
        return signature + sealed

    def unwrap(self, token: bytes) -> bytes:
        if len(token) < 16:
            raise NTLMError("wrapped token shorter than its signature")
        return self.unseal_and_verify(b"", token[16:], b"", token[:16])

    # ---- SPNEGO mechListMIC (MS-SPNG 3.3.5.1: each direction's RC4 restarts after its mechListMIC) -------------
    def verify_mech_list_mic(self, mech_types: bytes, mic: bytes) -> bool:
        ok = self.verify(mech_types, mic)
        self._in_rc4 = ARC4.new(self._in_seal_key).encrypt
        return ok

    def mech_list_mic(self, mech_types: bytes) -> bytes:
        mic = self.sign(mech_types)
        self._out_rc4 = ARC4.new(self._out_seal_key).encrypt
        return mic


__all__ = ["NTLMAcceptor", "NTLMError", "NTLMResult", "NTLMSecurity", "ServerIdentity", "logon_refusal",
           "org_lookup", "SERVER_VERSION"]
