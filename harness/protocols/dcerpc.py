"""Connection-oriented DCE/RPC, server side (C706 chapter 12, MS-RPCE 2.2.2), sans-IO: one association per
connection (for RPC over HTTP, per virtual connection).

``DceRpcAssociation.feed(bytes)`` takes the client's byte stream and returns the PDUs to send back; transcript
events go to ``record(kind, **fields)``. ``handle_pdu`` takes one whole PDU for callers that frame the stream
themselves (the RPC proxy does, to route RTS PDUs). After ``closed`` becomes true the caller sends what it was
given and closes the connection; nothing more is accepted.

Behaviour follows Windows as Samba's server (tested against Windows) documents it:
- bind/alter_context: the first acceptable presentation context is accepted; an unknown interface gets
  provider_rejection/abstract_syntax_not_supported, a known one without NDR 2.0 (or any context after the accepted
  one) provider_rejection/proposed_transfer_syntaxes_not_supported; a bind-time feature negotiation context gets
  negotiate_ack (security context multiplexing and keep-connection-on-orphan are granted). bind_nak reasons:
  4 (protocol_version_not_supported) for an unsupported version or data representation, an auth_length that does
  not fit or an empty context list; 8 (authentication_type_not_recognized) for any auth type but NTLM (10); 0 for
  the rest (unknown association group, malformed context list, a second bind, an auth level outside 2..6, an NTLM
  NEGOTIATE that does not parse). An alter_context that would be refused gets a fault and a close instead.
  ``rpc_bind`` is recorded per context when the bind is answered; ``rpc_auth`` when AUTH3 arrives.
- Auth levels: none, connect (2; no verifiers after AUTH3), call/packet (3/4, signed and checked like integrity,
  as Samba does), integrity (5) and privacy (6), each security context keyed by its auth_context_id (alter_context
  may add one, as impacket's ``alter_ctx`` does). NTLM must have extended session security for levels >= 3.
- AUTH3 gets no reply. A failed AUTH3 makes the context invalid: the next request on it gets fault
  rpc_s_access_denied (0x5) and a close, the access-denied impacket users report for wrong RPC-level credentials
  (not checked against Windows here; Samba sends nca_s_proto_error instead). A malformed AUTH3 trailer gets
  nca_s_fault_remote_no_memory, which Samba's sources say Windows sends.
- A request whose verifier does not check out gets fault 0x5 (rpc_s_access_denied, "nca_s_fault_access_denied")
  with PFC_DID_NOT_EXECUTE and the connection closes: the RC4 streams are out of step from then on. A trailer whose
  type/level/context id do not match the context gets nca_s_proto_error and a close.
- Faults never carry an auth verifier: impacket raises on a fault before it decrypts, so a sealed fault would
  desynchronise its RC4 stream. Unknown presentation context: nca_s_unk_if + DID_NOT_EXECUTE (connection kept).
- Fault hooks (harness/faults/rpc.py): ``rpc_bind`` (interface name, auth level) may answer a ``BindNak``;
  ``rpc_call`` (interface name, opnum) a ``CallFault`` sent instead of running the call. Scope: host = the RPC
  server name the association was opened for, user = the caller's mailbox (the HTTP one at bind time).
"""
from __future__ import annotations

import random
import struct
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from harness.hooks import FaultSet, Scope, hookspec
from harness.org import Mailbox, Org
from harness.protocols.ntlm import NTLMAcceptor, NTLMError, NTLMResult, NTLMSecurity, ServerIdentity, org_lookup
from harness.rpc.base import CallContext, RpcFault, RpcInterface

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

# ---- fault statuses (C706 appendix E, MS-RPCE 2.2.2.11) ---------------------------------------------------------
RPC_S_ACCESS_DENIED = 0x00000005
NCA_S_FAULT_REMOTE_NO_MEMORY = 0x1C00001B
NCA_S_FAULT_UNSPEC = 0x1C000012
NCA_S_UNK_IF = 0x1C010003
NCA_S_PROTO_ERROR = 0x1C01000B
FAULT_NAMES = {RPC_S_ACCESS_DENIED: "rpc_s_access_denied", NCA_S_FAULT_REMOTE_NO_MEMORY: "nca_s_fault_remote_no_memory",
               NCA_S_FAULT_UNSPEC: "nca_s_fault_unspec", NCA_S_UNK_IF: "nca_s_unk_if",
               NCA_S_PROTO_ERROR: "nca_s_proto_error", 0x1C010002: "nca_s_op_rng_error",
               0x1C00001A: "nca_s_fault_context_mismatch", 0x000006F7: "rpc_x_bad_stub_data"}

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


@dataclass(frozen=True)
class BindNak:
    """The ``rpc_bind`` hook's answer: a bind_nak with ``reason`` (an alter_context gets rpc_s_access_denied)."""
    reason: int
    why: str

    def describe(self) -> str:
        return f"bind_nak {NAK_NAMES.get(self.reason, self.reason)}: {self.why}"


@dataclass(frozen=True)
class CallFault:
    """The ``rpc_call`` hook's answer: a fault PDU with ``status`` instead of the call's response."""
    status: int

    def describe(self) -> str:
        name = FAULT_NAMES.get(self.status)
        return f"fault 0x{self.status:08x}" + (f" ({name})" if name else "")


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


class _ProtocolError(Exception):
    """Raised while parsing; the handler answers with a fault (and closes) or a bind_nak."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Header:
    version: Tuple[int, int]
    ptype: int
    flags: int
    drep: bytes
    frag_length: int
    auth_length: int
    call_id: int

    @classmethod
    def parse(cls, pdu: bytes) -> "_Header":
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
class _Trailer:
    auth_type: int
    level: int
    pad_length: int
    context_id: int
    offset: int                   # where the sec_trailer starts in the PDU

    def pack(self, pad_length: int) -> bytes:
        return SEC_TRAILER.pack(self.auth_type, self.level, pad_length, 0, self.context_id)


def _split_auth(pdu: bytes, header: _Header, body_start: int) -> Tuple[bytes, Optional[_Trailer], bytes]:
    """(body, sec_trailer or None, auth_value) of a PDU."""
    if not header.auth_length:
        return pdu[body_start:], None, b""
    start = header.frag_length - header.auth_length - SEC_TRAILER.size
    if start < body_start:
        raise _ProtocolError(f"auth_length {header.auth_length} does not fit a {header.frag_length}-byte PDU")
    auth_type, level, pad_length, _reserved, context_id = SEC_TRAILER.unpack_from(pdu, start)
    return pdu[body_start:start], _Trailer(auth_type, level, pad_length, context_id, start), pdu[start + 8:]


def _common(ptype: int, flags: int, frag_length: int, auth_length: int, call_id: int) -> bytes:
    return COMMON.pack(5, 0, ptype, flags, DREP_LE, frag_length, auth_length, call_id)


@dataclass(frozen=True)
class _ContextItem:
    context_id: int
    abstract: bytes               # 16-byte UUID (wire order) + u16 major + u16 minor
    transfers: Tuple[bytes, ...]  # 20 bytes each

    @property
    def interface_uuid(self) -> bytes:
        return self.abstract[:16]

    @property
    def interface_version(self) -> Tuple[int, int]:
        return struct.unpack_from("<HH", self.abstract, 16)

    @property
    def label(self) -> str:
        major, minor = self.interface_version
        return f"{uuid.UUID(bytes_le=self.interface_uuid)} v{major}.{minor}"


@dataclass(frozen=True)
class _BindBody:
    max_xmit: int
    max_recv: int
    association_group: int
    items: Tuple[_ContextItem, ...]

    @classmethod
    def parse(cls, body: bytes) -> "_BindBody":
        if len(body) < 12:
            raise _ProtocolError("bind body shorter than 12 bytes")
        max_xmit, max_recv, group, count = struct.unpack_from("<HHLB", body)
        items, offset = [], 12
        for index in range(count):
            if offset + 24 > len(body):
                raise _ProtocolError(f"presentation context {index} is truncated")
            context_id, n_transfers = struct.unpack_from("<HB", body, offset)
            abstract = body[offset + 4:offset + 24]
            transfers = body[offset + 24:offset + 24 + 20 * n_transfers]
            if len(transfers) != 20 * n_transfers:
                raise _ProtocolError(f"transfer syntaxes of presentation context {index} are truncated")
            if not n_transfers:
                raise _ProtocolError(f"presentation context {index} proposes no transfer syntax")
            syntaxes = tuple(transfers[i:i + 20] for i in range(0, len(transfers), 20))
            items.append(_ContextItem(context_id, abstract, syntaxes))
            offset += 24 + 20 * n_transfers
        return cls(max_xmit, max_recv, group, tuple(items))


_Result = Tuple[int, int, bytes]      # a bind_ack result: result, reason, transfer syntax


@dataclass
class _Presentation:
    interface: RpcInterface
    abstract: bytes


@dataclass
class _SecurityContext:
    """One NTLM security context (MS-RPCE 3.3.1.5.2), keyed by its auth_context_id."""
    context_id: int
    level: int
    acceptor: NTLMAcceptor
    state: str = "challenged"             # challenged -> established | failed
    result: Optional[NTLMResult] = None
    security: Optional[NTLMSecurity] = None

    @property
    def verifies(self) -> bool:
        return self.level > LEVEL_CONNECT


@dataclass
class _PartialCall:
    context_id: int
    opnum: int
    security: Optional[_SecurityContext]
    level: int
    chunks: List[bytes] = field(default_factory=list)
    size: int = 0


class _BindRefusal(Exception):
    """A bind that gets a bind_nak with ``reason``; an alter_context instead gets a fault with ``alter_status``."""

    def __init__(self, reason: int, text: str, alter_status: int = NCA_S_PROTO_ERROR):
        super().__init__(text)
        self.reason, self.text, self.alter_status = reason, text, alter_status


class _Close(Exception):
    """Raised by a handler: send ``pdus`` (maybe a last fault) and close the connection."""

    def __init__(self, reason: str, pdus: Sequence[bytes] = ()):
        super().__init__(reason)
        self.reason, self.pdus = reason, list(pdus)


class DceRpcAssociation:
    """The server end of one DCE/RPC association over a byte stream."""

    def __init__(self, org: Org, interfaces: Sequence[RpcInterface], record: Callable[..., object],
                 rng: random.Random, *, secondary_address: str = "", http_mailbox: Optional[Mailbox] = None,
                 association_group: Optional[int] = None, identity: Optional[ServerIdentity] = None,
                 faults: Optional[FaultSet] = None, host: Optional[str] = None) -> None:
        self.org = org
        self.faults = faults if faults is not None else FaultSet()
        self.host = host                          # the RPC server name the client asked for (fault scope)
        self.interfaces = list(interfaces)
        self.record = record
        self.rng = rng
        self.secondary_address = secondary_address
        self.http_mailbox = http_mailbox
        self.association_group = association_group or 0x10000 + rng.randrange(0xEFFF0)
        self.identity = identity or ServerIdentity.for_org(org)
        self.closed = False
        self.state: dict = {}                     # CallContext.association: context handles and the like
        self._framer = PduFramer()
        self._bound = False
        self._max_xmit = self._max_recv = TRANSPORT_MAX_FRAGMENT
        self._header_signing = False
        self._contexts: Dict[int, _Presentation] = {}
        self._security: Dict[int, _SecurityContext] = {}
        self._default_security: Optional[_SecurityContext] = None
        self._calls: Dict[int, _PartialCall] = {}

    # ---- entry points ---------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> List[bytes]:
        if self.closed:
            return []
        try:
            pdus = self._framer.feed(data)
        except FramingError as exc:
            return self._close(str(exc))
        out: List[bytes] = []
        for pdu in pdus:
            out += self.handle_pdu(pdu)
            if self.closed:
                break
        return out

    def handle_pdu(self, pdu: bytes) -> List[bytes]:
        """One whole PDU in, the PDUs to send back out. Never raises."""
        if self.closed:
            return []
        try:
            return self._dispatch(pdu)
        except _Close as close:
            return close.pdus + self._close(close.reason)
        except Exception as exc:  # noqa: BLE001 - a bug must cost the connection, not the server
            self.record("rpc_internal_error", error=repr(exc), where=traceback.format_exc(limit=-3))
            return self._close(f"internal error: {exc!r}")

    def _close(self, reason: str) -> List[bytes]:
        self.closed = True
        self.record("rpc_close", reason=reason)
        return []

    # ---- dispatch -------------------------------------------------------------------------------------------
    def _dispatch(self, pdu: bytes) -> List[bytes]:
        if len(pdu) < COMMON_SIZE:
            raise _Close(f"PDU of {len(pdu)} bytes is shorter than the common header")
        header = _Header.parse(pdu)
        if header.frag_length != len(pdu):
            raise _Close(f"frag_length {header.frag_length} does not match the {len(pdu)}-byte PDU")
        if header.ptype in (BIND, ALTER_CONTEXT):
            return self._on_bind(pdu, header)
        if not header.supported:
            self._protocol_fault(header, f"unsupported version {header.version} or data representation "
                                         f"{header.drep.hex()}")
        if header.ptype == REQUEST:
            return self._on_request(pdu, header)
        if header.ptype == AUTH3:
            return self._on_auth3(pdu, header)
        if header.ptype in (CO_CANCEL, ORPHANED):
            self.record("rpc_pdu_ignored", pdu=PDU_NAMES[header.ptype], call_id=header.call_id)
            return []
        self._protocol_fault(header, f"a client does not send {PDU_NAMES.get(header.ptype, header.ptype)} PDUs")

    def _protocol_fault(self, header: _Header, reason: str, status: int = NCA_S_PROTO_ERROR, context_id: int = 0):
        """Answer with a fault (PFC_DID_NOT_EXECUTE) and close the connection."""
        self.record("rpc_fault", call_id=header.call_id, status=f"0x{status:08x}", name=FAULT_NAMES.get(status),
                    reason=reason, close=True)
        raise _Close(reason, [self._fault_pdu(header.call_id, context_id, status, did_not_execute=True)])

    # ---- bind / alter_context -------------------------------------------------------------------------------
    def _on_bind(self, pdu: bytes, header: _Header) -> List[bytes]:
        alter = header.ptype == ALTER_CONTEXT
        if alter and not self._bound:
            self._protocol_fault(header, "alter_context before bind")
        try:
            return self._bind(pdu, header, alter)
        except _BindRefusal as refusal:
            if alter:
                self._protocol_fault(header, refusal.text, refusal.alter_status)
            self.record("rpc_bind", pdu="bind", call_id=header.call_id,
                        result=f"nak: {NAK_NAMES.get(refusal.reason, refusal.reason)}", reason=refusal.text)
            return [self._bind_nak(header.call_id, refusal.reason)]

    def _bind(self, pdu: bytes, header: _Header, alter: bool) -> List[bytes]:
        if not header.supported:
            raise _BindRefusal(NAK_PROTOCOL_VERSION, f"version {header.version}, data representation "
                                                     f"{header.drep.hex()}")
        if not alter and self._bound:
            raise _BindRefusal(NAK_NOT_SPECIFIED, "a second bind on the association")
        try:
            body, trailer, token = _split_auth(pdu, header, COMMON_SIZE)
        except _ProtocolError as exc:
            raise _BindRefusal(NAK_PROTOCOL_VERSION, exc.reason) from exc
        try:
            bind = _BindBody.parse(body)
        except _ProtocolError as exc:
            raise _BindRefusal(NAK_NOT_SPECIFIED, exc.reason) from exc
        if not bind.items:
            raise _BindRefusal(NAK_PROTOCOL_VERSION, "no presentation context")
        if not alter and bind.association_group not in (0, self.association_group):
            raise _BindRefusal(NAK_NOT_SPECIFIED, f"unknown association group 0x{bind.association_group:08x}")
        results, accepted = self._negotiate(bind.items)
        self._bind_fault(accepted, trailer)
        security, challenge = self._start_security(trailer, token) if trailer is not None else (None, b"")

        self._contexts.update(accepted)
        if security is not None:
            self._security[security.context_id] = security
        if not alter:
            self._bound = True
            requested = min(bind.max_xmit, bind.max_recv)
            self._max_xmit = self._max_recv = min(max(MIN_FRAGMENT, requested), TRANSPORT_MAX_FRAGMENT) & 0xFFF8
            self._header_signing = bool(header.flags & PFC_SUPPORT_HEADER_SIGN)
            self._default_security = security
        effective = security or self._default_security
        level = effective.level if effective else LEVEL_NONE
        for item, (result, reason, _syntax) in zip(bind.items, results):
            outcome = REASON_NAMES.get(reason, reason) if result == PROVIDER_REJECTION else RESULT_NAMES[result]
            self.record("rpc_bind", pdu=PDU_NAMES[header.ptype], call_id=header.call_id, context_id=item.context_id,
                        interface=self._interface_label(item), auth_level=level, result=outcome)
        return [self._bind_ack(header, alter, results, trailer, challenge)]

    def _negotiate(self, items: Sequence[_ContextItem]) -> Tuple[List[_Result], Dict[int, _Presentation]]:
        """(result, reason, transfer syntax) per presentation context, and the contexts to bind, as Samba and
        Windows choose them: only the first acceptable context is accepted."""
        results: List[_Result] = []
        accepted: Dict[int, _Presentation] = {}
        seen_feature = False
        for item in items:
            if item.transfers[0][:8] == BIND_TIME_FEATURE_PREFIX:
                if seen_feature:
                    raise _BindRefusal(NAK_NOT_SPECIFIED, "two bind-time feature negotiation contexts")
                seen_feature = True
                (requested,) = struct.unpack_from("<Q", item.transfers[0], 8)
                granted = requested & (FEATURE_SECURITY_CONTEXT_MULTIPLEXING | FEATURE_KEEP_CONNECTION_ON_ORPHAN)
                results.append((NEGOTIATE_ACK, granted, bytes(20)))
                continue
            interface = self._find_interface(item)
            if interface is None:
                results.append((PROVIDER_REJECTION, ABSTRACT_SYNTAX_NOT_SUPPORTED, bytes(20)))
                continue
            existing = self._contexts.get(item.context_id)
            if existing is not None and existing.abstract != item.abstract:
                raise _BindRefusal(NAK_NOT_SPECIFIED,
                                   f"presentation context {item.context_id} is bound to another interface")
            if accepted or NDR_SYNTAX not in item.transfers:
                results.append((PROVIDER_REJECTION, TRANSFER_SYNTAXES_NOT_SUPPORTED, bytes(20)))
                continue
            accepted[item.context_id] = _Presentation(interface, item.abstract)
            results.append((ACCEPTANCE, 0, NDR_SYNTAX))
        return results, accepted

    def _bind_fault(self, accepted: Dict[int, _Presentation], trailer: Optional[_Trailer]) -> None:
        """Ask the ``rpc_bind`` hook about the interface being bound; a BindNak refuses the bind."""
        interface = next((p.interface.name for p in accepted.values()), None)
        if interface is None:
            return
        current = self._default_security
        level = trailer.level if trailer is not None else current.level if current else LEVEL_NONE
        nak = self.faults.first(rpc_bind_hook, self._scope(self.http_mailbox), interface, level)
        if nak is not None:
            raise _BindRefusal(nak.reason, nak.why, RPC_S_ACCESS_DENIED)

    def _scope(self, mailbox: Optional[Mailbox]) -> Scope:
        return Scope(self.host, mailbox.email if mailbox else None)

    def _find_interface(self, item: _ContextItem) -> Optional[RpcInterface]:
        major, minor = item.interface_version
        for interface in self.interfaces:
            if (uuid.UUID(interface.uuid).bytes_le == item.interface_uuid and interface.version[0] == major
                    and minor <= interface.version[1]):
                return interface
        return None

    def _interface_label(self, item: _ContextItem) -> str:
        interface = self._find_interface(item)
        return interface.name if interface else item.label

    def _start_security(self, trailer: _Trailer, token: bytes) -> Tuple[_SecurityContext, bytes]:
        """A new NTLM context for the trailer's auth_context_id, and the CHALLENGE to send back."""
        if not LEVEL_CONNECT <= trailer.level <= LEVEL_PRIVACY:
            raise _BindRefusal(NAK_NOT_SPECIFIED, f"auth level {trailer.level}", RPC_S_ACCESS_DENIED)
        if trailer.auth_type != AUTHN_WINNT:
            raise _BindRefusal(NAK_AUTH_TYPE, f"auth type {trailer.auth_type} (only NTLM, 10)", RPC_S_ACCESS_DENIED)
        if trailer.context_id in self._security:
            raise _BindRefusal(NAK_NOT_SPECIFIED, f"auth context {trailer.context_id} is already in use",
                               RPC_S_ACCESS_DENIED)
        acceptor = NTLMAcceptor(self.identity, org_lookup(self.org), self.rng)
        try:
            challenge = acceptor.challenge(token)
        except NTLMError as exc:
            raise _BindRefusal(NAK_NOT_SPECIFIED, f"NTLM NEGOTIATE refused: {exc}", RPC_S_ACCESS_DENIED) from exc
        return _SecurityContext(trailer.context_id, trailer.level, acceptor), challenge

    @staticmethod
    def _bind_nak(call_id: int, reason: int) -> bytes:
        body = struct.pack("<HBBB", reason, 1, 5, 0)      # reason, p_rt_versions_supported: one, 5.0
        body += bytes(-(COMMON_SIZE + len(body)) % 4)
        return _common(BIND_NAK, PFC_FIRST_FRAG | PFC_LAST_FRAG, COMMON_SIZE + len(body), 0, call_id) + body

    def _bind_ack(self, header: _Header, alter: bool, results: Sequence[_Result],
                  trailer: Optional[_Trailer], challenge: bytes) -> bytes:
        """bind_ack / alter_context_resp, laid out by hand (C706 12.6.4.4): the secondary address length counts
        its NUL, padding to 4 is relative to the PDU start, and the sec_trailer lands 4-aligned."""
        address = b"" if alter else self.secondary_address.encode("ascii") + b"\x00"
        body = struct.pack("<HHLH", self._max_xmit, self._max_recv, self.association_group, len(address)) + address
        body += bytes(-(COMMON_SIZE + len(body)) % 4)
        body += struct.pack("<BBH", len(results), 0, 0)
        body += b"".join(struct.pack("<HH", result, reason) + syntax for result, reason, syntax in results)
        auth = b""
        if trailer is not None:
            pad = -(COMMON_SIZE + len(body)) % 4
            auth = bytes(pad) + SEC_TRAILER.pack(trailer.auth_type, trailer.level, pad, 0, trailer.context_id)
            auth += challenge
        flags = PFC_FIRST_FRAG | PFC_LAST_FRAG | (PFC_SUPPORT_HEADER_SIGN if self._header_signing else 0)
        length = COMMON_SIZE + len(body) + len(auth)
        return _common(ALTER_CONTEXT_RESP if alter else BIND_ACK, flags, length, len(challenge) if trailer else 0,
                       header.call_id) + body + auth

    # ---- AUTH3 ----------------------------------------------------------------------------------------------
    def _on_auth3(self, pdu: bytes, header: _Header) -> List[bytes]:
        try:
            _body, trailer, token = _split_auth(pdu, header, COMMON_SIZE)
        except _ProtocolError as exc:
            self._protocol_fault(header, exc.reason, NCA_S_FAULT_REMOTE_NO_MEMORY)
        if trailer is None:
            self._protocol_fault(header, "AUTH3 without an auth trailer")
        context = self._security.get(trailer.context_id)
        if context is None or context.state != "challenged":
            self._protocol_fault(header, f"AUTH3 for auth context {trailer.context_id}, which awaits none")
        if (trailer.auth_type, trailer.level) != (AUTHN_WINNT, context.level):
            context.state = "failed"
            context.result = NTLMResult(ok=False, reason="AUTH3 trailer does not match the bind")
            self._record_auth(context, context.result)
            return []
        result = context.acceptor.authenticate(token)
        context.result = result
        if result.ok and context.verifies:
            try:
                context.security = NTLMSecurity(result)
            except NTLMError as exc:
                result = NTLMResult(ok=False, reason=str(exc), user=result.user, domain=result.domain)
                context.result = result
        context.state = "established" if result.ok else "failed"
        self._record_auth(context, result)
        return []

    def _record_auth(self, context: _SecurityContext, result: NTLMResult) -> None:
        self.record("rpc_auth", auth_context=context.context_id, auth_level=context.level, ok=result.ok,
                    user=result.user, domain=result.domain, reason=result.reason,
                    mailbox=result.mailbox.email if result.mailbox else None)

    # ---- request --------------------------------------------------------------------------------------------
    def _on_request(self, pdu: bytes, header: _Header) -> List[bytes]:
        if not self._bound:
            self._protocol_fault(header, "request before bind")
        if header.frag_length > self._max_recv:
            self._protocol_fault(header, f"fragment of {header.frag_length} bytes exceeds max_recv_frag "
                                         f"{self._max_recv}")
        body_start = REQUEST_HEADER_SIZE + (16 if header.flags & PFC_OBJECT_UUID else 0)
        if len(pdu) < body_start:
            self._protocol_fault(header, "request shorter than its header")
        _alloc_hint, context_id, opnum = REQUEST_FIELDS.unpack_from(pdu, COMMON_SIZE)
        try:
            body, trailer, verifier = _split_auth(pdu, header, body_start)
        except _ProtocolError as exc:
            self._protocol_fault(header, exc.reason, context_id=context_id)
        security = self._security_for(header, trailer, context_id)
        stub = self._unprotect(pdu, header, body_start, body, trailer, verifier, security, context_id)

        partial = self._calls.get(header.call_id)
        if header.flags & PFC_FIRST_FRAG:
            if partial is not None:
                self._protocol_fault(header, f"call {header.call_id} started twice", context_id=context_id)
            level = security.level if security else LEVEL_NONE
            partial = _PartialCall(context_id, opnum, security, level)
        elif partial is None:
            self._protocol_fault(header, f"fragment of unknown call {header.call_id}", context_id=context_id)
        partial.chunks.append(stub)
        partial.size += len(stub)
        if partial.size > MAX_CALL_SIZE:
            self._calls.pop(header.call_id, None)
            self._protocol_fault(header, f"call {header.call_id} exceeds {MAX_CALL_SIZE} bytes", context_id=context_id)
        if not header.flags & PFC_LAST_FRAG:
            self._calls[header.call_id] = partial
            return []
        self._calls.pop(header.call_id, None)
        return self._invoke(header.call_id, partial, b"".join(partial.chunks))

    def _security_for(self, header: _Header, trailer: Optional[_Trailer],
                      context_id: int) -> Optional[_SecurityContext]:
        """The security context a request runs under; faults (and closes) when it may not run at all."""
        if trailer is None:
            security = self._default_security
        else:
            security = self._security.get(trailer.context_id)
            if security is None:
                self._protocol_fault(header, f"unknown auth context {trailer.context_id}", context_id=context_id)
            if (trailer.auth_type, trailer.level) != (AUTHN_WINNT, security.level):
                self._protocol_fault(header, f"auth trailer type {trailer.auth_type} level {trailer.level} does not "
                                             f"match the context's level {security.level}", context_id=context_id)
        if security is None:
            return None
        if security.state == "challenged":
            self._protocol_fault(header, "request before AUTH3", context_id=context_id)
        if security.state == "failed":
            self._protocol_fault(header, f"authentication failed: {security.result.reason if security.result else ''}",
                                 RPC_S_ACCESS_DENIED, context_id)
        if security.verifies and trailer is None:
            self._protocol_fault(header, f"auth level {security.level} needs a verifier", RPC_S_ACCESS_DENIED,
                                 context_id)
        return security

    def _unprotect(self, pdu: bytes, header: _Header, body_start: int, body: bytes, trailer: Optional[_Trailer],
                   verifier: bytes, security: Optional[_SecurityContext], context_id: int) -> bytes:
        """The plaintext stub of one request fragment: unsealed, verified and stripped of auth padding."""
        if trailer is None:
            return body
        if trailer.pad_length > len(body):
            self._protocol_fault(header, f"auth_pad_length {trailer.pad_length} exceeds the stub",
                                 context_id=context_id)
        if security.verifies:
            if len(verifier) != VERIFIER_SIZE:
                self._protocol_fault(header, f"verifier of {len(verifier)} bytes", RPC_S_ACCESS_DENIED, context_id)
            before, after = pdu[:body_start], pdu[trailer.offset:trailer.offset + SEC_TRAILER.size]
            if security.level == LEVEL_PRIVACY:
                try:
                    body = security.security.unseal_and_verify(before, body, after, verifier)
                except NTLMError:
                    self._protocol_fault(header, "request verifier does not match (sealed)", RPC_S_ACCESS_DENIED,
                                         context_id)
            elif not security.security.verify(before + body + after, verifier):
                self._protocol_fault(header, "request verifier does not match (signed)", RPC_S_ACCESS_DENIED,
                                     context_id)
        return body[:len(body) - trailer.pad_length]

    def _invoke(self, call_id: int, call: _PartialCall, stub: bytes) -> List[bytes]:
        presentation = self._contexts.get(call.context_id)
        if presentation is None:
            self.record("rpc_fault", call_id=call_id, status=f"0x{NCA_S_UNK_IF:08x}", name="nca_s_unk_if",
                        reason=f"presentation context {call.context_id} is not bound", close=False)
            return [self._fault_pdu(call_id, call.context_id, NCA_S_UNK_IF, did_not_execute=True)]
        interface = presentation.interface
        security = call.security
        mailbox = security.result.mailbox if security and security.result else self.http_mailbox
        injected = self.faults.first(rpc_call_hook, self._scope(mailbox), interface.name, call.opnum)
        if injected is not None:
            self.record("rpc_fault", call_id=call_id, interface=interface.name, opnum=call.opnum,
                        status=f"0x{injected.status:08x}", name=FAULT_NAMES.get(injected.status),
                        reason="injected by a fault", close=False)
            return [self._fault_pdu(call_id, call.context_id, injected.status, did_not_execute=False)]
        context = CallContext(org=self.org, mailbox=mailbox, auth_level=call.level, association=self.state,
                              record=self.record, rng=self.rng, faults=self.faults, host=self.host)
        try:
            response = interface.call(call.opnum, stub, context)
        except RpcFault as fault:
            self.record("rpc_fault", call_id=call_id, interface=interface.name, opnum=call.opnum,
                        status=f"0x{fault.status:08x}", name=FAULT_NAMES.get(fault.status), reason=fault.message,
                        close=False)
            return [self._fault_pdu(call_id, call.context_id, fault.status, did_not_execute=False)]
        except Exception as exc:  # noqa: BLE001 - an interface bug becomes a fault, as a server stub exception would
            self.record("rpc_fault", call_id=call_id, interface=interface.name, opnum=call.opnum,
                        status=f"0x{NCA_S_FAULT_UNSPEC:08x}", name="nca_s_fault_unspec", reason=repr(exc),
                        where=traceback.format_exc(limit=-3), close=False)
            return [self._fault_pdu(call_id, call.context_id, NCA_S_FAULT_UNSPEC, did_not_execute=False)]
        return self._response_pdus(call_id, call.context_id, response, security)

    # ---- responses ------------------------------------------------------------------------------------------
    def _response_pdus(self, call_id: int, context_id: int, stub: bytes,
                       security: Optional[_SecurityContext]) -> List[bytes]:
        """The response, fragmented to the client's max_recv_frag; each fragment signed/sealed on its own."""
        protected = security is not None and security.verifies
        overhead = REQUEST_HEADER_SIZE + (SEC_TRAILER.size + VERIFIER_SIZE if protected else 0)
        chunk = (self._max_xmit - overhead) & ~7
        pieces = [stub[offset:offset + chunk] for offset in range(0, len(stub), chunk)] or [b""]
        pdus, remaining = [], len(stub)
        for index, piece in enumerate(pieces):
            flags = (PFC_FIRST_FRAG if index == 0 else 0) | (PFC_LAST_FRAG if index == len(pieces) - 1 else 0)
            fields = RESPONSE_FIELDS.pack(remaining, context_id, 0, 0)
            remaining -= len(piece)
            if not protected:
                pdus.append(_common(RESPONSE, flags, REQUEST_HEADER_SIZE + len(piece), 0, call_id) + fields + piece)
                continue
            pad = -(REQUEST_HEADER_SIZE + len(piece)) % 4
            data = piece + bytes(pad)
            length = REQUEST_HEADER_SIZE + len(data) + SEC_TRAILER.size + VERIFIER_SIZE
            head = _common(RESPONSE, flags, length, VERIFIER_SIZE, call_id) + fields
            trailer = SEC_TRAILER.pack(AUTHN_WINNT, security.level, pad, 0, security.context_id)
            if security.level == LEVEL_PRIVACY:
                data, signature = security.security.seal_and_sign(head, data, trailer)
            else:
                signature = security.security.sign(head + data + trailer)
            pdus.append(head + data + trailer + signature)
        return pdus

    @staticmethod
    def _fault_pdu(call_id: int, context_id: int, status: int, *, did_not_execute: bool) -> bytes:
        flags = PFC_FIRST_FRAG | PFC_LAST_FRAG | (PFC_DID_NOT_EXECUTE if did_not_execute else 0)
        body = RESPONSE_FIELDS.pack(32, context_id, 0, 0) + struct.pack("<LL", status, 0)
        return _common(FAULT, flags, COMMON_SIZE + len(body), 0, call_id) + body


@hookspec(fires_in="protocols/dcerpc.py", means="refuse the bind of this interface (bind_nak)")
def rpc_bind_hook(interface: str, auth_level: int) -> BindNak: ...


@hookspec(fires_in="protocols/dcerpc.py", means="answer this call with a DCE/RPC fault instead of running it")
def rpc_call_hook(interface: str, opnum: int) -> CallFault: ...
