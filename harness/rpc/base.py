"""What the RPC interfaces behind the proxy share besides the server contract: NDR helpers (stub decoding,
reproducible marshalling, context handles), the ``mailbox`` fault hook's argument and answer types, and an
in-process impacket client.

The contract with the DCE/RPC server — ``RpcInterface`` (opnum dispatch), ``CallContext``, ``RpcFault`` and the
fault statuses — lives below this layer in harness/protocols/dcerpc/interface.py and is re-exported here, so the
interfaces keep importing everything from this module. The ``mailbox`` hook is declared here, beside its answer
type: ``mailbox_fault(ctx, operation, mailbox, call)`` asks it with a ``MailboxCall`` and gets a ``MailboxError`` or
None, at EMSMDB connect ("connect") and RopLogon ("logon") and at NSPI name lookups ("resolve").
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional, Tuple

from impacket.dcerpc.v5.ndr import NDR, NDRPOINTER, NDRPOINTERNULL
from impacket.dcerpc.v5.rpcrt import DCERPC, DCERPCException

from harness.hooks import hookspec
from harness.org import Mailbox
from harness.protocols.dcerpc.interface import (
    NCA_S_FAULT_CONTEXT_MISMATCH,
    NCA_S_OP_RNG_ERROR,
    RPC_X_BAD_STUB_DATA,
    CallContext,
    HeldResponse,
    RpcFault,
    RpcInterface,
)

__all__ = ["NCA_S_FAULT_CONTEXT_MISMATCH", "NCA_S_OP_RNG_ERROR", "RPC_X_BAD_STUB_DATA", "RPC_C_AUTHN_LEVEL_PKT_PRIVACY",
           "CallContext", "HeldResponse", "RpcFault", "RpcInterface", "Version", "MailboxCall", "MailboxError",
           "decoding", "marshal", "is_null", "ndr_text", "new_context_handle", "InProcessDce", "mailbox_fault",
           "mailbox_hook"]

RPC_C_AUTHN_LEVEL_PKT_PRIVACY = 6

Version = Tuple[int, int, int, int]


@dataclass(frozen=True)
class MailboxCall:
    """What a ``mailbox`` fault may judge besides the mailbox: the name the client gave (user DN, ESSDN or
    address book name), the client version EcDoConnectEx announced (None for NSPI) and the RPC auth level."""
    name: str
    client_version: Optional[Version]
    auth_level: int


@dataclass(frozen=True)
class MailboxError:
    """The ``mailbox`` hook's answer: the operation fails with ``code`` (MS-OXCDATA), plus what that code carries:
    ecWrongServer the server to go to (None: another server of the org), ecClientVerDisallowed the lowest
    version allowed, ecServerBusy the back-off time."""
    code: int
    server: Optional[str] = None
    best_version: Optional[Version] = None
    backoff_ms: int = 0

    def describe(self) -> str:
        extra = {"server": self.server, "best_version": self.best_version, "backoff_ms": self.backoff_ms or None}
        details = "".join(f", {key}={value}" for key, value in extra.items() if value is not None)
        return f"error 0x{self.code:08x}{details}"


@hookspec(fires_in="rpc/emsmdb, rpc/nspi",
          means="fail EMSMDB connect (\"connect\"), RopLogon (\"logon\") or an NSPI name lookup (\"resolve\")")
def mailbox_hook(operation: str, mailbox: Optional[Mailbox], call: MailboxCall) -> MailboxError: ...


def mailbox_fault(ctx: CallContext, operation: str, mailbox: Optional[Mailbox],
                  call: MailboxCall) -> Optional[MailboxError]:
    """The ``mailbox`` hook's answer for this call (scope: the RPC server name asked for, the caller's mailbox)."""
    faults = ctx.faults
    if faults is None or not ctx.concerns(mailbox_hook):
        return None
    return faults.first(mailbox_hook, ctx.scope(), operation, mailbox, call)


@contextmanager
def decoding(what: str):
    """Wrap the unmarshalling of a request stub: whatever fails in there is a bad-stub fault, not our bug.

    impacket's NDR decoder (and reading its fields, e.g. UTF-16 text) signals malformed input with whatever
    exception the failing step raises (struct.error, IndexError, KeyError, UnicodeDecodeError, plain Exception...).
    """
    try:
        yield
    except RpcFault:
        raise
    except Exception as exc:  # noqa: BLE001 - see docstring
        raise RpcFault(RPC_X_BAD_STUB_DATA, f"{what}: {exc!r}") from exc


def marshal(call: NDR) -> bytes:
    """Encode an impacket NDR call with referent IDs numbered 0x00020000, 0x00020004... as MIDL does.

    impacket draws referent IDs from the global ``random`` module; renumbering keeps stubs reproducible.
    """
    counter = iter(range(0x00020000, 0x7FFFFFFF, 4))
    _renumber(call, counter, set())
    return call.getData()


def _renumber(value, counter, seen: set) -> None:
    if isinstance(value, list):
        for item in value:
            _renumber(item, counter, seen)
        return
    if not isinstance(value, NDR) or id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, NDRPOINTER) and value.fields.get("ReferentID"):
        value.fields["ReferentID"] = next(counter)
    for item in value.fields.values():
        _renumber(item, counter, seen)


def is_null(field) -> bool:
    """True for a NULL unique pointer as parsed or set by impacket; False for anything else (an inline struct
    where one request layout has a pointer and another a ref pointer, such as NSPI's pStat)."""
    if isinstance(field, NDRPOINTERNULL):
        return True
    return isinstance(field, NDRPOINTER) and field.fields.get("ReferentID") == 0


def ndr_text(value) -> str:
    """An NDR string field as text without its NUL: impacket yields str for UTF-8 bytes, else the raw bytes."""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value.rstrip("\x00")


def new_context_handle(ctx: CallContext) -> bytes:
    """A 20-byte NDR context handle: attributes 0 + a UUID drawn from the run's seeded RNG."""
    return b"\x00\x00\x00\x00" + bytes(ctx.rng.getrandbits(8) for _ in range(16))


class InProcessDce(DCERPC):
    """An impacket DCE/RPC client whose calls run in-process against one RpcInterface, so impacket's own client
    code (``dce.request``, the ``hNspi*``/``hRfr*`` helpers, exchanger's NSPIAttacks) drives a handler without
    sockets. Faults surface as impacket's DCERPCException, as from a fault PDU. A held answer (EcDoAsyncWaitEx) is
    kept in ``held`` and answered at once, as if its wait were over."""

    def __init__(self, interface: RpcInterface, ctx: CallContext):
        super().__init__(None)
        self.interface = interface
        self.ctx = ctx
        self._answer = b""
        self.held: Optional[HeldResponse] = None

    def call(self, function, body, uuid=None):
        stub = body if isinstance(body, bytes) else body.getData()
        try:
            answer = self.interface.call(function, stub, self.ctx)
        except RpcFault as fault:
            raise DCERPCException(error_code=fault.status) from fault
        self.held = answer if isinstance(answer, HeldResponse) else None
        self._answer = answer.answer() if isinstance(answer, HeldResponse) else answer

    def recv(self):
        return self._answer

    def disconnect(self):
        """Nothing to close: the association (ctx.association) lives as long as the caller keeps it."""

