"""The server end of one DCE/RPC association, sans-IO: one per connection (for RPC over HTTP, per virtual
connection).

``DceRpcAssociation.feed(bytes)`` takes the client's byte stream and returns the PDUs to send back; transcript
events go to ``record(kind, **fields)``. ``handle_pdu`` takes one whole PDU for callers that frame the stream
themselves (the RPC proxy does, to route RTS PDUs). After ``closed`` becomes true the caller sends what it was
given and closes the connection; nothing more is accepted.

A call whose interface answers later (a ``HeldResponse``: EcDoAsyncWaitEx) sends nothing yet: the association keeps
a ``HeldCall`` token, which the edge collects with ``take_holds()``, waits on with its timers, and turns into the
response PDUs (signed or sealed then, in the order they are sent) with ``complete(token, how)``. Other calls go on
meanwhile. ``drop_holds(reason)`` forgets them all when the connection goes (the edge stops their timers).

Binding is binding.py's, authentication security.py's; this module routes PDUs, reassembles request fragments,
runs the call on its interface and fragments (and signs or seals) the response.
- Faults never carry an auth verifier: impacket raises on a fault before it decrypts, so a sealed fault would
  desynchronise its RC4 stream. Unknown presentation context: nca_s_unk_if + DID_NOT_EXECUTE (connection kept).
  A PDU the association cannot take gets a fault with PFC_DID_NOT_EXECUTE and a close (a ``ProtocolFault``).
- Fault hooks (harness/faults/rpc.py): ``rpc_bind`` (interface name, auth level) may answer a ``BindNak``;
  ``rpc_call`` (interface name, opnum) a ``CallFault`` sent instead of running the call. Scope: host = the RPC
  server name the association was opened for, user = the caller's mailbox (the HTTP one at bind time).
"""
from __future__ import annotations

import random
import struct
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from harness.hooks import FaultSet, Scope, hookspec
from harness.org import Mailbox, Org
from harness.protocols.dcerpc.binding import BindAckEdit, Binding, BindNak, rpc_bind_ack_hook, rpc_bind_hook
from harness.protocols.dcerpc.interface import (
    FAULT_NAMES,
    NCA_S_FAULT_UNSPEC,
    NCA_S_UNK_IF,
    CallContext,
    HeldResponse,
    RpcFault,
    RpcInterface,
)
from harness.protocols.dcerpc.pdus import (
    ALTER_CONTEXT,
    AUTH3,
    AUTHN_WINNT,
    BIND,
    CO_CANCEL,
    COMMON_SIZE,
    LEVEL_NONE,
    MAX_CALL_SIZE,
    ORPHANED,
    PDU_NAMES,
    PFC_FIRST_FRAG,
    PFC_LAST_FRAG,
    PFC_OBJECT_UUID,
    REQUEST,
    REQUEST_FIELDS,
    REQUEST_HEADER_SIZE,
    RESPONSE,
    RESPONSE_FIELDS,
    SEC_TRAILER,
    VERIFIER_SIZE,
    FramingError,
    Header,
    PduError,
    PduFramer,
    ProtocolFault,
    common_header,
    fault_pdu,
    split_auth,
)
from harness.protocols.dcerpc.security import SecurityContext, SecurityContexts
from harness.protocols.logon import ntlm_challenge_hook
from harness.protocols.ntlm import ServerIdentity


@dataclass(frozen=True)
class CallFault:
    """The ``rpc_call`` hook's answer: a fault PDU with ``status`` instead of the call's response."""
    status: int

    def describe(self) -> str:
        name = FAULT_NAMES.get(self.status)
        return f"fault 0x{self.status:08x}" + (f" ({name})" if name else "")


@hookspec(fires_in="protocols/dcerpc/association.py",
          means="answer this call with a DCE/RPC fault instead of running it")
def rpc_call_hook(interface: str, opnum: int) -> CallFault: ...


@dataclass
class PartialCall:
    """A request being reassembled: what its first fragment said, and the stub so far."""
    context_id: int
    opnum: int
    security: Optional[SecurityContext]
    chunks: List[bytes] = field(default_factory=list)
    size: int = 0

    @property
    def level(self) -> int:
        return self.security.level if self.security else LEVEL_NONE


@dataclass(eq=False)
class HeldCall:
    """A call whose response waits (``HeldResponse``); the edge completes it with ``DceRpcAssociation.complete``."""
    call_id: int
    context_id: int
    security: Optional[SecurityContext]
    interface: str
    opnum: int
    response: HeldResponse
    done: bool = False


class Reassembly:
    """Request fragments gathered per call_id, from PFC_FIRST_FRAG to PFC_LAST_FRAG, up to MAX_CALL_SIZE."""

    def __init__(self) -> None:
        self._calls: Dict[int, PartialCall] = {}

    def add(self, header: Header, context_id: int, opnum: int, security: Optional[SecurityContext],
            stub: bytes) -> Optional[PartialCall]:
        """The whole call once its last fragment is in, else None; a ProtocolFault for a stray fragment."""
        partial = self._calls.get(header.call_id)
        if header.flags & PFC_FIRST_FRAG:
            if partial is not None:
                raise ProtocolFault(f"call {header.call_id} started twice", context_id=context_id)
            partial = PartialCall(context_id, opnum, security)
        elif partial is None:
            raise ProtocolFault(f"fragment of unknown call {header.call_id}", context_id=context_id)
        partial.chunks.append(stub)
        partial.size += len(stub)
        if partial.size > MAX_CALL_SIZE:
            self._calls.pop(header.call_id, None)
            raise ProtocolFault(f"call {header.call_id} exceeds {MAX_CALL_SIZE} bytes", context_id=context_id)
        if not header.flags & PFC_LAST_FRAG:
            self._calls[header.call_id] = partial
            return None
        self._calls.pop(header.call_id, None)
        return partial


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
        self.state: Dict[str, Any] = {}           # CallContext.association: context handles and the like
        self._framer = PduFramer()
        self._security = SecurityContexts(org, self.identity, rng, record)
        self._security.challenge_edit = lambda: self.faults.first(ntlm_challenge_hook, self._scope(self.http_mailbox),
                                                                  "rpc")
        self._binding = Binding(self.interfaces, self._security, record, self._bind_verdict, ack_editor=self._ack_edit,
                                association_group=self.association_group, secondary_address=secondary_address)
        self._reassembly = Reassembly()
        self._holds: List[HeldCall] = []          # held calls not answered yet
        self._new_holds: List[HeldCall] = []      # ... of which the edge has not been told
        self._last_context: Optional[CallContext] = None

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
            return self._close(f"PDU of {len(pdu)} bytes is shorter than the common header")
        header = Header.parse(pdu)
        if header.frag_length != len(pdu):
            return self._close(f"frag_length {header.frag_length} does not match the {len(pdu)}-byte PDU")
        try:
            return self._route(pdu, header)
        except ProtocolFault as fault:
            answer = self._fault(header.call_id, fault.context_id, fault.status, fault.reason,
                                 did_not_execute=True, close=True)
            return [answer] + self._close(fault.reason)

    def _route(self, pdu: bytes, header: Header) -> List[bytes]:
        if header.ptype in (BIND, ALTER_CONTEXT):
            return self._binding.on_bind(pdu, header)
        if not header.supported:
            raise ProtocolFault(f"unsupported version {header.version} or data representation {header.drep.hex()}")
        if header.ptype == REQUEST:
            return self._on_request(pdu, header)
        if header.ptype == AUTH3:
            self._security.on_auth3(pdu, header)      # AUTH3 gets no reply
            return []
        if header.ptype in (CO_CANCEL, ORPHANED):
            self.record("rpc_pdu_ignored", pdu=PDU_NAMES[header.ptype], call_id=header.call_id)
            return []
        raise ProtocolFault(f"a client does not send {PDU_NAMES.get(header.ptype, header.ptype)} PDUs")

    def _fault(self, call_id: int, context_id: int, status: int, reason: str, *, did_not_execute: bool,
               close: bool, call: Optional[Dict[str, Any]] = None, **detail: Any) -> bytes:
        """Record an ``rpc_fault`` line and build the fault PDU; ``call`` names the interface and opnum."""
        self.record("rpc_fault", call_id=call_id, **(call or {}), status=f"0x{status:08x}",
                    name=FAULT_NAMES.get(status), reason=reason, **detail, close=close)
        return fault_pdu(call_id, context_id, status, did_not_execute=did_not_execute)

    # ---- fault hooks ----------------------------------------------------------------------------------------
    def _scope(self, mailbox: Optional[Mailbox]) -> Scope:
        return Scope(self.host, mailbox.email if mailbox else None)

    def _bind_verdict(self, interface: str, level: int) -> Optional[BindNak]:
        """The ``rpc_bind`` hook: may refuse binding ``interface`` at auth ``level``."""
        nak: Optional[BindNak] = self.faults.first(rpc_bind_hook, self._scope(self.http_mailbox), interface, level)
        return nak

    def _ack_edit(self, interface: str) -> Optional[BindAckEdit]:
        """The ``rpc_bind_ack`` hook: an odd bind_ack for ``interface``, and the shape of its responses."""
        if not self.faults.has(rpc_bind_ack_hook):
            return None
        edit: Optional[BindAckEdit] = self.faults.first(rpc_bind_ack_hook, self._scope(self.http_mailbox), interface)
        return edit

    # ---- request --------------------------------------------------------------------------------------------
    def _on_request(self, pdu: bytes, header: Header) -> List[bytes]:
        if not self._binding.bound:
            raise ProtocolFault("request before bind")
        if header.frag_length > self._binding.max_read:
            raise ProtocolFault(f"fragment of {header.frag_length} bytes exceeds max_recv_frag "
                                f"{self._binding.max_read}")
        body_start = REQUEST_HEADER_SIZE + (16 if header.flags & PFC_OBJECT_UUID else 0)
        if len(pdu) < body_start:
            raise ProtocolFault("request shorter than its header")
        _alloc_hint, context_id, opnum = REQUEST_FIELDS.unpack_from(pdu, COMMON_SIZE)
        try:
            body, trailer, verifier = split_auth(pdu, header, body_start)
        except PduError as exc:
            raise ProtocolFault(exc.reason, context_id=context_id) from exc
        security = self._security.for_request(trailer, context_id)
        stub = body
        if trailer is not None and security is not None:      # for_request finds a context for every trailer
            stub = security.unprotect(pdu, body_start, body, trailer, verifier, context_id)
        call = self._reassembly.add(header, context_id, opnum, security, stub)
        return [] if call is None else self._invoke(header.call_id, call, b"".join(call.chunks))

    def _invoke(self, call_id: int, call: PartialCall, stub: bytes) -> List[bytes]:
        interface = self._binding.interface(call.context_id)
        if interface is None:
            return [self._fault(call_id, call.context_id, NCA_S_UNK_IF,
                                f"presentation context {call.context_id} is not bound",
                                did_not_execute=True, close=False)]
        security = call.security
        mailbox = security.result.mailbox if security and security.result else self.http_mailbox
        faults = self.faults
        # most calls meet no rpc_call fault: asked from the remembered lookup, without building a Scope
        injected = faults.first(rpc_call_hook, self._scope(mailbox), interface.name, call.opnum) \
            if faults.concern(rpc_call_hook, self.host, mailbox.email if mailbox else None) else None
        named = {"interface": interface.name, "opnum": call.opnum}
        if injected is not None:
            return [self._fault(call_id, call.context_id, injected.status, "injected by a fault", call=named,
                                did_not_execute=False, close=False)]
        context = self._context(mailbox, call.level)
        try:
            response = interface.call(call.opnum, stub, context)
        except RpcFault as fault:
            return [self._fault(call_id, call.context_id, fault.status, fault.message, call=named,
                                did_not_execute=False, close=False)]
        except Exception as exc:  # noqa: BLE001 - an interface bug becomes a fault, as a server stub exception would
            return [self._fault(call_id, call.context_id, NCA_S_FAULT_UNSPEC, repr(exc), call=named,
                                where=traceback.format_exc(limit=-3), did_not_execute=False, close=False)]
        if isinstance(response, HeldResponse):
            held = HeldCall(call_id, call.context_id, security, interface.name, call.opnum, response)
            self._holds.append(held)
            self._new_holds.append(held)
            self.record("rpc_call_held", call_id=call_id, **named, until=response.describe())
            return []
        return self._response_pdus(call_id, call.context_id, response, security)

    def _context(self, mailbox: Optional[Mailbox], level: int) -> CallContext:
        """The CallContext of a call by ``mailbox`` at ``level``: the last one again when they are the same (a
        connection's calls all are; nothing changes a context), else a new one."""
        context = self._last_context
        if context is None or context.mailbox is not mailbox or context.auth_level != level:
            context = self._last_context = CallContext(org=self.org, mailbox=mailbox, auth_level=level,
                                                       association=self.state, record=self.record, rng=self.rng,
                                                       faults=self.faults, host=self.host)
        return context

    # ---- held calls -----------------------------------------------------------------------------------------
    def take_holds(self) -> List[HeldCall]:
        """The calls held since the last time the edge asked: it starts their timers."""
        new, self._new_holds = self._new_holds, []
        return new

    def complete(self, held: HeldCall, how: str) -> List[bytes]:
        """The response PDUs of a held call whose wait ended (``how``: "event", "max-wait"...); nothing if it was
        answered or dropped already or the association is closed."""
        if held.done or self.closed:
            return []
        held.done = True
        self._holds.remove(held)
        stub = held.response.answer()
        (status,) = struct.unpack_from("<L", stub, len(stub) - 4)
        self.record("rpc_call_completed", call_id=held.call_id, interface=held.interface, opnum=held.opnum,
                    how=how, status=f"0x{status:08x}")
        return self._response_pdus(held.call_id, held.context_id, stub, held.security)

    def drop_holds(self, reason: str) -> List[HeldCall]:
        """Forget every held call (the connection is gone): the ones the edge must stop waiting for."""
        dropped, self._holds, self._new_holds = self._holds, [], []
        for held in dropped:
            held.done = True
            self.record("rpc_call_completed", call_id=held.call_id, interface=held.interface, opnum=held.opnum,
                        how="dropped", status=None, reason=reason)
        return dropped

    # ---- responses ------------------------------------------------------------------------------------------
    def _response_pdus(self, call_id: int, context_id: int, stub: bytes,
                       security: Optional[SecurityContext]) -> List[bytes]:
        """The response, fragmented to the client's max_recv_frag; each fragment signed/sealed on its own."""
        protected = security is not None and security.verifies
        overhead = REQUEST_HEADER_SIZE + (SEC_TRAILER.size + VERIFIER_SIZE if protected else 0)
        edit = self._binding.edit
        chunk = (self._binding.max_fragment - overhead) & ~7
        if edit is not None and edit.fragment_size is not None:
            chunk = max(8, min(chunk, edit.fragment_size & ~7))
        pieces = [stub[offset:offset + chunk] for offset in range(0, len(stub), chunk)] or [b""]
        if edit is not None and edit.fault_after is not None and edit.fault_after < len(pieces):
            cut = self._response_fragments(call_id, context_id, stub, security, pieces[:edit.fault_after], False)
            return cut + [self._fault(call_id, context_id, edit.fault_status, "injected by a fault mid-response",
                                      did_not_execute=False, close=False)]
        return self._response_fragments(call_id, context_id, stub, security, pieces, True)

    def _response_fragments(self, call_id: int, context_id: int, stub: bytes, security: Optional[SecurityContext],
                            pieces: List[bytes], complete: bool) -> List[bytes]:
        """The response PDUs carrying ``pieces``, the last flagged last unless the response is cut short."""
        protected = security is not None and security.verifies
        pdus, remaining = [], len(stub)
        for index, piece in enumerate(pieces):
            last = complete and index == len(pieces) - 1
            flags = (PFC_FIRST_FRAG if index == 0 else 0) | (PFC_LAST_FRAG if last else 0)
            fields = RESPONSE_FIELDS.pack(remaining, context_id, 0, 0)
            remaining -= len(piece)
            if security is None or not protected:
                pdus.append(common_header(RESPONSE, flags, REQUEST_HEADER_SIZE + len(piece), 0, call_id)
                            + fields + piece)
                continue
            pad = -(REQUEST_HEADER_SIZE + len(piece)) % 4
            length = REQUEST_HEADER_SIZE + len(piece) + pad + SEC_TRAILER.size + VERIFIER_SIZE
            head = common_header(RESPONSE, flags, length, VERIFIER_SIZE, call_id) + fields
            trailer = SEC_TRAILER.pack(AUTHN_WINNT, security.level, pad, 0, security.context_id)
            data, verifier = security.protect(head, piece + bytes(pad), trailer)
            pdus.append(head + data + trailer + verifier)
        return pdus
