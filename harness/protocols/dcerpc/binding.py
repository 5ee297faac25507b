"""bind and alter_context (C706 12.6.4.3-4): which interface each presentation context calls, the fragment size
and header signing the association agreed on, and the security context a bind starts.

Behaviour follows Windows as Samba's server (tested against Windows) documents it: the first acceptable
presentation context is accepted; an unknown interface gets provider_rejection/abstract_syntax_not_supported, a
known one without NDR 2.0 (or any context after the accepted one) provider_rejection/
proposed_transfer_syntaxes_not_supported; a bind-time feature negotiation context gets negotiate_ack (security
context multiplexing and keep-connection-on-orphan are granted). bind_nak reasons: 4 (protocol_version_not_supported)
for an unsupported version or data representation, an auth_length that does not fit or an empty context list; 8
(authentication_type_not_recognized) for any auth type but NTLM (10); 0 for the rest (unknown association group,
malformed context list, a second bind, an auth level outside 2..6, an NTLM NEGOTIATE that does not parse). An
alter_context that would be refused gets a fault and a close instead. ``rpc_bind`` is recorded per context when the
bind is answered.
"""
from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from harness.hooks import hookspec
from harness.protocols.dcerpc.interface import NCA_S_PROTO_ERROR, RPC_S_ACCESS_DENIED, RpcInterface
from harness.protocols.dcerpc.pdus import (
    ABSTRACT_SYNTAX_NOT_SUPPORTED,
    ACCEPTANCE,
    ALTER_CONTEXT,
    AUTHN_WINNT,
    BIND_TIME_FEATURE_PREFIX,
    COMMON_SIZE,
    FEATURE_KEEP_CONNECTION_ON_ORPHAN,
    FEATURE_SECURITY_CONTEXT_MULTIPLEXING,
    LEVEL_CONNECT,
    LEVEL_NONE,
    LEVEL_PRIVACY,
    MIN_FRAGMENT,
    NAK_AUTH_TYPE,
    NAK_NAMES,
    NAK_NOT_SPECIFIED,
    NAK_PROTOCOL_VERSION,
    NDR_SYNTAX,
    NEGOTIATE_ACK,
    PDU_NAMES,
    PFC_SUPPORT_HEADER_SIGN,
    PROVIDER_REJECTION,
    REASON_NAMES,
    RESULT_NAMES,
    TRANSFER_SYNTAXES_NOT_SUPPORTED,
    TRANSPORT_MAX_FRAGMENT,
    BindBody,
    BindResult,
    ContextItem,
    Header,
    PduError,
    ProtocolFault,
    Trailer,
    bind_ack_pdu,
    bind_nak_pdu,
    split_auth,
)
from harness.protocols.dcerpc.security import SecurityContext, SecurityContexts
from harness.protocols.ntlm import NTLMError


@dataclass(frozen=True)
class BindNak:
    """The ``rpc_bind`` hook's answer: a bind_nak with ``reason`` (an alter_context gets rpc_s_access_denied)."""
    reason: int
    why: str

    def describe(self) -> str:
        return f"bind_nak {NAK_NAMES.get(self.reason, self.reason)}: {self.why}"


@hookspec(fires_in="protocols/dcerpc/association.py", means="refuse the bind of this interface (bind_nak)")
def rpc_bind_hook(interface: str, auth_level: int) -> BindNak: ...


@dataclass(frozen=True)
class BindAckEdit:
    """The ``rpc_bind_ack`` hook's answer: an odd bind_ack, and the shape of the responses on the association.
    max_xmit/max_recv: the fragment sizes announced (the server still reads fragments up to the larger of its own and
    these); secondary_address: the port text announced; extra_results: provider_rejection results with these reasons
    added after (or, ``results_first``, before) the real ones; fragment_size: responses split into fragments of at
    most this many bytes; fault_after: responses cut after this many fragments by a fault PDU with fault_status."""
    max_xmit: Optional[int] = None
    max_recv: Optional[int] = None
    secondary_address: Optional[str] = None
    extra_results: Tuple[int, ...] = ()
    results_first: bool = False
    fragment_size: Optional[int] = None
    fault_after: Optional[int] = None
    fault_status: int = 0x1C000012

    def describe(self) -> str:
        return "bind_ack and response fragments changed"


@hookspec(fires_in="protocols/dcerpc/association.py",
          means="an odd bind_ack (fragment sizes, secondary address, extra results), responses fragmented or faulted")
def rpc_bind_ack_hook(interface: str) -> BindAckEdit: ...


BindVerdict = Callable[[str, int], Optional[BindNak]]   # (interface name, auth level) -> refusal or None
AckEditor = Callable[[str], Optional[BindAckEdit]]      # (interface name) -> the bind_ack's edit or None


class BindRefusal(Exception):
    """A bind that gets a bind_nak with ``reason``; an alter_context instead gets a fault with ``alter_status``."""

    def __init__(self, reason: int, text: str, alter_status: int = NCA_S_PROTO_ERROR):
        super().__init__(text)
        self.reason, self.text, self.alter_status = reason, text, alter_status


@dataclass
class Presentation:
    interface: RpcInterface
    abstract: bytes


class Binding:
    """Answers bind and alter_context PDUs and keeps what they agreed on."""

    def __init__(self, interfaces: Sequence[RpcInterface], security: SecurityContexts,
                 record: Callable[..., object], verdict: BindVerdict, *, association_group: int,
                 secondary_address: str, ack_editor: Optional[AckEditor] = None) -> None:
        self._interfaces = interfaces
        self._security = security
        self._record = record
        self._verdict = verdict              # the rpc_bind fault hook, asked by the association
        self._association_group = association_group
        self._secondary_address = secondary_address
        self._contexts: Dict[int, Presentation] = {}
        self.bound = False
        self.max_fragment = TRANSPORT_MAX_FRAGMENT   # max_xmit_frag and max_recv_frag alike
        self.header_signing = False
        self._ack_editor = ack_editor
        self.edit: Optional[BindAckEdit] = None      # the bind's edit (a fault's), which shapes responses too
        self.max_read = self.max_fragment            # the largest fragment read: max_fragment, or an edit's larger

    def interface(self, context_id: int) -> Optional[RpcInterface]:
        """The interface a bound presentation context calls, None if it is not bound."""
        presentation = self._contexts.get(context_id)
        return presentation.interface if presentation else None

    def on_bind(self, pdu: bytes, header: Header) -> List[bytes]:
        """bind_ack / alter_context_resp or bind_nak; a ProtocolFault for an alter_context that is refused."""
        alter = header.ptype == ALTER_CONTEXT
        if alter and not self.bound:
            raise ProtocolFault("alter_context before bind")
        try:
            return self._bind(pdu, header, alter)
        except BindRefusal as refusal:
            if alter:
                raise ProtocolFault(refusal.text, refusal.alter_status) from refusal
            self._record("rpc_bind", pdu="bind", call_id=header.call_id,
                         result=f"nak: {NAK_NAMES.get(refusal.reason, refusal.reason)}", reason=refusal.text)
            return [bind_nak_pdu(header.call_id, refusal.reason)]

    def _bind(self, pdu: bytes, header: Header, alter: bool) -> List[bytes]:
        if not header.supported:
            raise BindRefusal(NAK_PROTOCOL_VERSION, f"version {header.version}, data representation "
                                                    f"{header.drep.hex()}")
        if not alter and self.bound:
            raise BindRefusal(NAK_NOT_SPECIFIED, "a second bind on the association")
        try:
            body, trailer, token = split_auth(pdu, header, COMMON_SIZE)
        except PduError as exc:
            raise BindRefusal(NAK_PROTOCOL_VERSION, exc.reason) from exc
        try:
            bind = BindBody.parse(body)
        except PduError as exc:
            raise BindRefusal(NAK_NOT_SPECIFIED, exc.reason) from exc
        if not bind.items:
            raise BindRefusal(NAK_PROTOCOL_VERSION, "no presentation context")
        if not alter and bind.association_group not in (0, self._association_group):
            raise BindRefusal(NAK_NOT_SPECIFIED, f"unknown association group 0x{bind.association_group:08x}")
        results, accepted = self._negotiate(bind.items)
        self._ask_verdict(accepted, trailer)
        security, challenge = self._start_security(trailer, token) if trailer is not None else (None, b"")

        self._contexts.update(accepted)
        if not alter:
            self.bound = True
            requested = min(bind.max_xmit, bind.max_recv)
            self.max_fragment = min(max(MIN_FRAGMENT, requested), TRANSPORT_MAX_FRAGMENT) & 0xFFF8
            self.header_signing = bool(header.flags & PFC_SUPPORT_HEADER_SIGN)
            self._security.default = security
        effective = security or self._security.default
        level = effective.level if effective else LEVEL_NONE
        for item, (result, reason, _syntax) in zip(bind.items, results):
            outcome = REASON_NAMES.get(reason, reason) if result == PROVIDER_REJECTION else RESULT_NAMES[result]
            self._record("rpc_bind", pdu=PDU_NAMES[header.ptype], call_id=header.call_id, context_id=item.context_id,
                         interface=self._interface_label(item), auth_level=level, result=outcome)
        edit = self._edit(accepted) if not alter else None
        if edit is None:
            self.max_read = self.max_fragment
            return [bind_ack_pdu(header.call_id, alter, results, max_fragment=self.max_fragment,
                                 group=self._association_group, secondary_address=self._secondary_address,
                                 header_signing=self.header_signing, trailer=trailer, challenge=challenge)]
        self.edit = edit
        xmit = self.max_fragment if edit.max_xmit is None else edit.max_xmit
        recv = self.max_fragment if edit.max_recv is None else edit.max_recv
        self.max_read = max(self.max_fragment, xmit, recv)
        extra = [(PROVIDER_REJECTION, reason, bytes(20)) for reason in edit.extra_results]
        results = extra + results if edit.results_first else results + extra
        address = self._secondary_address if edit.secondary_address is None else edit.secondary_address
        return [bind_ack_pdu(header.call_id, alter, results, max_fragment=xmit, max_recv=recv,
                             group=self._association_group, secondary_address=address,
                             header_signing=self.header_signing, trailer=trailer, challenge=challenge)]

    def _edit(self, accepted: Dict[int, Presentation]) -> Optional[BindAckEdit]:
        interface = next((p.interface.name for p in accepted.values()), None)
        if interface is None or self._ack_editor is None:
            return None
        return self._ack_editor(interface)

    def _negotiate(self, items: Sequence[ContextItem]) -> Tuple[List[BindResult], Dict[int, Presentation]]:
        """(result, reason, transfer syntax) per presentation context, and the contexts to bind, as Samba and
        Windows choose them: only the first acceptable context is accepted."""
        results: List[BindResult] = []
        accepted: Dict[int, Presentation] = {}
        seen_feature = False
        for item in items:
            if item.transfers[0][:8] == BIND_TIME_FEATURE_PREFIX:
                if seen_feature:
                    raise BindRefusal(NAK_NOT_SPECIFIED, "two bind-time feature negotiation contexts")
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
                raise BindRefusal(NAK_NOT_SPECIFIED,
                                  f"presentation context {item.context_id} is bound to another interface")
            if accepted or NDR_SYNTAX not in item.transfers:
                results.append((PROVIDER_REJECTION, TRANSFER_SYNTAXES_NOT_SUPPORTED, bytes(20)))
                continue
            accepted[item.context_id] = Presentation(interface, item.abstract)
            results.append((ACCEPTANCE, 0, NDR_SYNTAX))
        return results, accepted

    def _ask_verdict(self, accepted: Dict[int, Presentation], trailer: Optional[Trailer]) -> None:
        """Ask the ``rpc_bind`` hook about the interface being bound; a BindNak refuses the bind."""
        interface = next((p.interface.name for p in accepted.values()), None)
        if interface is None:
            return
        current = self._security.default
        level = trailer.level if trailer is not None else current.level if current else LEVEL_NONE
        nak = self._verdict(interface, level)
        if nak is not None:
            raise BindRefusal(nak.reason, nak.why, RPC_S_ACCESS_DENIED)

    def _find_interface(self, item: ContextItem) -> Optional[RpcInterface]:
        major, minor = item.interface_version
        for interface in self._interfaces:
            if (uuid.UUID(interface.uuid).bytes_le == item.interface_uuid and interface.version[0] == major
                    and minor <= interface.version[1]):
                return interface
        return None

    def _interface_label(self, item: ContextItem) -> str:
        interface = self._find_interface(item)
        return interface.name if interface else item.label

    def _start_security(self, trailer: Trailer, token: bytes) -> Tuple[SecurityContext, bytes]:
        """A new NTLM context for the trailer's auth_context_id, and the CHALLENGE to send back."""
        if not LEVEL_CONNECT <= trailer.level <= LEVEL_PRIVACY:
            raise BindRefusal(NAK_NOT_SPECIFIED, f"auth level {trailer.level}", RPC_S_ACCESS_DENIED)
        if trailer.auth_type != AUTHN_WINNT:
            raise BindRefusal(NAK_AUTH_TYPE, f"auth type {trailer.auth_type} (only NTLM, 10)", RPC_S_ACCESS_DENIED)
        if trailer.context_id in self._security:
            raise BindRefusal(NAK_NOT_SPECIFIED, f"auth context {trailer.context_id} is already in use",
                              RPC_S_ACCESS_DENIED)
        try:
            return self._security.start(trailer.context_id, trailer.level, token)
        except NTLMError as exc:
            raise BindRefusal(NAK_NOT_SPECIFIED, f"NTLM NEGOTIATE refused: {exc}", RPC_S_ACCESS_DENIED) from exc
