"""Connection-oriented DCE/RPC PDUs (C706 chapter 12, MS-RPCE 2.2.2): the constants, the framer that cuts a byte
stream into PDUs, the parsers of what a client sends and the builders of what the server answers."""
from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from harness.protocols.dcerpc.interface import NCA_S_PROTO_ERROR

# ---- PDU types and flags (C706 12.6.3.1, MS-RPCE 2.2.2.3) ------------------------------------------------------
REQUEST, RESPONSE, FAULT = 0, 2, 3
BIND, BIND_ACK, BIND_NAK = 11, 12, 13
ALTER_CONTEXT, ALTER_CONTEXT_RESP, AUTH3 = 14, 15, 16
SHUTDOWN, CO_CANCEL, ORPHANED, RTS = 17, 18, 19, 20
PDU_NAMES = {REQUEST: "request", RESPONSE: "response", FAULT: "fault", BIND: "bind", BIND_ACK: "bind_ack",
             BIND_NAK: "bind_nak", ALTER_CONTEXT: "alter_context", ALTER_CONTEXT_RESP: "alter_context_resp",
             AUTH3: "auth3", SHUTDOWN: "shutdown", CO_CANCEL: "co_cancel", ORPHANED: "orphaned", RTS: "rts"}

PFC_FIRST_FRAG = 0x01
PFC_LAST_FRAG = 0x02
PFC_SUPPORT_HEADER_SIGN = 0x04
PFC_DID_NOT_EXECUTE = 0x20
PFC_OBJECT_UUID = 0x80

DREP_LE = b"\x10\x00\x00\x00"
COMMON = struct.Struct("<BBBB4sHHL")            # 16-byte common header
COMMON_SIZE = COMMON.size
REQUEST_FIELDS = struct.Struct("<LHH")           # alloc_hint, p_cont_id, opnum
RESPONSE_FIELDS = struct.Struct("<LHBB")         # alloc_hint, p_cont_id, cancel_count, reserved
SEC_TRAILER = struct.Struct("<BBBBL")            # auth_type, auth_level, auth_pad_length, reserved, context id
REQUEST_HEADER_SIZE = 24

# ---- bind results and reasons (C706 12.6.3.1, MS-RPCE 3.3.1.5.3) ------------------------------------------------
ACCEPTANCE, PROVIDER_REJECTION, NEGOTIATE_ACK = 0, 2, 3
ABSTRACT_SYNTAX_NOT_SUPPORTED, TRANSFER_SYNTAXES_NOT_SUPPORTED = 1, 2
NAK_NOT_SPECIFIED, NAK_PROTOCOL_VERSION, NAK_AUTH_TYPE = 0, 4, 8
RESULT_NAMES = {ACCEPTANCE: "accepted", PROVIDER_REJECTION: "provider_rejection", NEGOTIATE_ACK: "negotiate_ack"}
REASON_NAMES = {0: "reason_not_specified", ABSTRACT_SYNTAX_NOT_SUPPORTED: "abstract_syntax_not_supported",
                TRANSFER_SYNTAXES_NOT_SUPPORTED: "proposed_transfer_syntaxes_not_supported"}
NAK_NAMES = {NAK_NOT_SPECIFIED: "reason_not_specified", 1: "temporary_congestion", 2: "local_limit_exceeded",
             3: "called_paddr_unknown", NAK_PROTOCOL_VERSION: "protocol_version_not_supported",
             5: "default_context_not_supported", 6: "user_data_not_readable", 7: "no_psap_available",
             NAK_AUTH_TYPE: "authentication_type_not_recognized", 9: "invalid_checksum"}

NDR_SYNTAX = uuid.UUID("8a885d04-1ceb-11c9-9fe8-08002b104860").bytes_le + struct.pack("<HH", 2, 0)
BIND_TIME_FEATURE_PREFIX = uuid.UUID("6cb71c2c-9812-4540-0000-000000000000").bytes_le[:8]
FEATURE_SECURITY_CONTEXT_MULTIPLEXING, FEATURE_KEEP_CONNECTION_ON_ORPHAN = 0x1, 0x2

# ---- authentication (MS-RPCE 2.2.1.1.7-8) -----------------------------------------------------------------------
AUTHN_WINNT = 10
LEVEL_NONE, LEVEL_CONNECT, LEVEL_INTEGRITY, LEVEL_PRIVACY = 1, 2, 5, 6
VERIFIER_SIZE = 16

TRANSPORT_MAX_FRAGMENT = 5840     # what Windows offers on TCP (Samba measured 2048..5840 against 2012 R2)
MIN_FRAGMENT = 2048
MAX_CALL_SIZE = 4 * 1024 * 1024   # reassembled request stubs beyond this are refused


class FramingError(ValueError):
    """The byte stream cannot be cut into PDUs any more (frag_length shorter than a header)."""


class PduFramer:
    """Cuts a byte stream into whole connection-oriented PDUs by their frag_length."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> List[bytes]:
        self._buffer += data
        pdus = []
        while len(self._buffer) >= COMMON_SIZE:
            order = "<" if self._buffer[4] & 0x10 else ">"
            (length,) = struct.unpack_from(order + "H", self._buffer, 8)
            if length < COMMON_SIZE:
                raise FramingError(f"frag_length {length} is shorter than the 16-byte common header")
            if len(self._buffer) < length:
                break
            pdus.append(bytes(self._buffer[:length]))
            del self._buffer[:length]
        return pdus


class PduError(Exception):
    """A PDU does not parse; the handler decides whether that earns a fault (and a close) or a bind_nak."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class ProtocolFault(Exception):
    """Raised by a handler: answer with a fault PDU (PFC_DID_NOT_EXECUTE) carrying ``status``, then close."""

    def __init__(self, reason: str, status: int = NCA_S_PROTO_ERROR, context_id: int = 0):
        super().__init__(reason)
        self.reason, self.status, self.context_id = reason, status, context_id


@dataclass(frozen=True)
class Header:
    version: Tuple[int, int]
    ptype: int
    flags: int
    drep: bytes
    frag_length: int
    auth_length: int
    call_id: int

    @classmethod
    def parse(cls, pdu: bytes) -> "Header":
        """The common header; its integers are read in the PDU's own byte order, so that even a big-endian PDU
        can be answered (with a bind_nak or fault)."""
        order = "<" if pdu[4] & 0x10 else ">"
        major, minor, ptype, flags, drep, frag_length, auth_length, call_id = struct.unpack_from(
            order + "BBBB4sHHL", pdu)
        return cls((major, minor), ptype, flags, drep, frag_length, auth_length, call_id)

    @property
    def supported(self) -> bool:
        return self.version in ((5, 0), (5, 1)) and self.drep[0] == DREP_LE[0]


@dataclass(frozen=True)
class Trailer:
    auth_type: int
    level: int
    pad_length: int
    context_id: int
    offset: int                   # where the sec_trailer starts in the PDU

    def pack(self, pad_length: int) -> bytes:
        return SEC_TRAILER.pack(self.auth_type, self.level, pad_length, 0, self.context_id)


def split_auth(pdu: bytes, header: Header, body_start: int) -> Tuple[bytes, Optional[Trailer], bytes]:
    """(body, sec_trailer or None, auth_value) of a PDU."""
    if not header.auth_length:
        return pdu[body_start:], None, b""
    start = header.frag_length - header.auth_length - SEC_TRAILER.size
    if start < body_start:
        raise PduError(f"auth_length {header.auth_length} does not fit a {header.frag_length}-byte PDU")
    auth_type, level, pad_length, _reserved, context_id = SEC_TRAILER.unpack_from(pdu, start)
    return pdu[body_start:start], Trailer(auth_type, level, pad_length, context_id, start), pdu[start + 8:]


def common_header(ptype: int, flags: int, frag_length: int, auth_length: int, call_id: int) -> bytes:
    return COMMON.pack(5, 0, ptype, flags, DREP_LE, frag_length, auth_length, call_id)


@dataclass(frozen=True)
class ContextItem:
    context_id: int
    abstract: bytes               # 16-byte UUID (wire order) + u16 major + u16 minor
    transfers: Tuple[bytes, ...]  # 20 bytes each

    @property
    def interface_uuid(self) -> bytes:
        return self.abstract[:16]

    @property
    def interface_version(self) -> Tuple[int, int]:
        major, minor = struct.unpack_from("<HH", self.abstract, 16)
        return major, minor

    @property
    def label(self) -> str:
        major, minor = self.interface_version
        return f"{uuid.UUID(bytes_le=self.interface_uuid)} v{major}.{minor}"


@dataclass(frozen=True)
class BindBody:
    max_xmit: int
    max_recv: int
    association_group: int
    items: Tuple[ContextItem, ...]

    @classmethod
    def parse(cls, body: bytes) -> "BindBody":
        if len(body) < 12:
            raise PduError("bind body shorter than 12 bytes")
        max_xmit, max_recv, group, count = struct.unpack_from("<HHLB", body)
        items, offset = [], 12
        for index in range(count):
            if offset + 24 > len(body):
                raise PduError(f"presentation context {index} is truncated")
            context_id, n_transfers = struct.unpack_from("<HB", body, offset)
            abstract = body[offset + 4:offset + 24]
            transfers = body[offset + 24:offset + 24 + 20 * n_transfers]
            if len(transfers) != 20 * n_transfers:
                raise PduError(f"transfer syntaxes of presentation context {index} are truncated")
            if not n_transfers:
                raise PduError(f"presentation context {index} proposes no transfer syntax")
            syntaxes = tuple(transfers[i:i + 20] for i in range(0, len(transfers), 20))
            items.append(ContextItem(context_id, abstract, syntaxes))
            offset += 24 + 20 * n_transfers
        return cls(max_xmit, max_recv, group, tuple(items))


BindResult = Tuple[int, int, bytes]      # a bind_ack result: result, reason, transfer syntax


def bind_nak_pdu(call_id: int, reason: int) -> bytes:
    body = struct.pack("<HBBB", reason, 1, 5, 0)      # reason, p_rt_versions_supported: one, 5.0
    body += bytes(-(COMMON_SIZE + len(body)) % 4)
    return common_header(BIND_NAK, PFC_FIRST_FRAG | PFC_LAST_FRAG, COMMON_SIZE + len(body), 0, call_id) + body


def bind_ack_pdu(call_id: int, alter: bool, results: Sequence[BindResult], *, max_fragment: int, group: int,
                 secondary_address: str, header_signing: bool, trailer: Optional[Trailer], challenge: bytes,
                 max_recv: Optional[int] = None) -> bytes:
    """bind_ack / alter_context_resp, laid out by hand (C706 12.6.4.4): the secondary address length counts
    its NUL, padding to 4 is relative to the PDU start, and the sec_trailer lands 4-aligned. ``max_recv``: another
    max_recv_frag than ``max_fragment`` (a fault's)."""
    address = b"" if alter else secondary_address.encode("utf-8") + b"\x00"
    recv = max_fragment if max_recv is None else max_recv
    body = struct.pack("<HHLH", max_fragment, recv, group, len(address)) + address
    body += bytes(-(COMMON_SIZE + len(body)) % 4)
    body += struct.pack("<BBH", len(results), 0, 0)
    body += b"".join(struct.pack("<HH", result, reason) + syntax for result, reason, syntax in results)
    auth = b""
    if trailer is not None:
        pad = -(COMMON_SIZE + len(body)) % 4
        auth = bytes(pad) + trailer.pack(pad) + challenge
    flags = PFC_FIRST_FRAG | PFC_LAST_FRAG | (PFC_SUPPORT_HEADER_SIGN if header_signing else 0)
    length = COMMON_SIZE + len(body) + len(auth)
    return common_header(ALTER_CONTEXT_RESP if alter else BIND_ACK, flags, length,
                         len(challenge) if trailer else 0, call_id) + body + auth


def fault_pdu(call_id: int, context_id: int, status: int, *, did_not_execute: bool) -> bytes:
    flags = PFC_FIRST_FRAG | PFC_LAST_FRAG | (PFC_DID_NOT_EXECUTE if did_not_execute else 0)
    body = RESPONSE_FIELDS.pack(32, context_id, 0, 0) + struct.pack("<LL", status, 0)
    return common_header(FAULT, flags, COMMON_SIZE + len(body), 0, call_id) + body
