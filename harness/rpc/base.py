"""What every RPC interface behind the proxy shares: the call context, the fault exception and opnum dispatch.

The DCE/RPC connection-oriented server (harness/protocols) owns PDUs, binding and sealing; it hands each request
stub to ``RpcInterface.call`` and turns an ``RpcFault`` into a fault PDU. Interfaces only see NDR stubs.

The ``mailbox`` fault hook (harness/faults/mailbox.py) is asked through ``CallContext.mailbox_fault(operation,
mailbox, call)`` at EMSMDB connect ("connect") and RopLogon ("logon") and at NSPI name lookups ("resolve"); a
``MailboxError`` answer makes that operation fail with its code. Scope: host = the RPC server name the client
asked for, user = the caller's mailbox.
"""
from __future__ import annotations

import random
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from impacket.dcerpc.v5.ndr import NDR, NDRPOINTER, NDRPOINTERNULL
from impacket.dcerpc.v5.rpcrt import DCERPC, DCERPCException

from harness.hooks import FaultSet, Scope, hookspec
from harness.org import Mailbox, Org

# DCE/RPC fault statuses (C706 appendix E, MS-RPCE 2.2.2.11)
NCA_S_OP_RNG_ERROR = 0x1C010002        # opnum out of range
NCA_S_FAULT_CONTEXT_MISMATCH = 0x1C00001A  # unknown or stale context handle
RPC_X_BAD_STUB_DATA = 0x000006F7       # the stub does not unmarshal

RPC_C_AUTHN_LEVEL_PKT_PRIVACY = 6


class RpcFault(Exception):
    """The DCE/RPC layer turns it into a fault PDU with this status."""

    def __init__(self, status: int, message: str = ""):
        super().__init__(f"RPC fault 0x{status:08x}" + (f": {message}" if message else ""))
        self.status = status
        self.message = message


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


@dataclass
class CallContext:
    org: Org
    mailbox: Optional[Mailbox]          # the authenticated user (HTTP or RPC-level auth), None if anonymous
    auth_level: int                     # 1 none .. 6 privacy (RPC_C_AUTHN_LEVEL_*)
    association: dict                   # lives as long as the DCE/RPC association (context handles...)
    record: Callable[..., None]         # transcript hook: record(kind, **fields)
    rng: random.Random
    faults: Optional[FaultSet] = None   # the server's active faults (the mailbox hook)
    host: Optional[str] = None          # the RPC server name the client asked the proxy for

    def mailbox_fault(self, operation: str, mailbox: Optional[Mailbox], call: MailboxCall) -> Optional[MailboxError]:
        if self.faults is None:
            return None
        scope = Scope(self.host, self.mailbox.email if self.mailbox else None)
        return self.faults.first(mailbox_hook, scope, operation, mailbox, call)


class RpcInterface:
    """Base class; subclasses set the class attributes and define one method per name in ``opnums``.

    Each method takes ``(stub, ctx)`` and returns the NDR response stub, whose last 4 bytes are the operation's
    return value (true of every NSPI, RFR and EMSMDB operation); that value is recorded as the call's status.
    """
    name: str
    uuid: str
    version: Tuple[int, int]
    opnums: Dict[int, str]

    def call(self, opnum: int, stub: bytes, ctx: CallContext) -> bytes:
        op = self.opnums.get(opnum)
        if op is None:
            ctx.record("rpc_call", interface=self.name, opnum=opnum, op=None, status=f"0x{NCA_S_OP_RNG_ERROR:08x}")
            raise RpcFault(NCA_S_OP_RNG_ERROR, f"{self.name} has no opnum {opnum}")
        try:
            response = getattr(self, op)(stub, ctx)
        except RpcFault as fault:
            ctx.record("rpc_call", interface=self.name, opnum=opnum, op=op, status=f"0x{fault.status:08x}",
                       fault=fault.message)
            raise
        (status,) = struct.unpack_from("<L", response, len(response) - 4)
        ctx.record("rpc_call", interface=self.name, opnum=opnum, op=op, status=f"0x{status:08x}")
        return response


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
    sockets. Faults surface as impacket's DCERPCException, as from a fault PDU."""

    def __init__(self, interface: RpcInterface, ctx: CallContext):
        super().__init__(None)
        self.interface = interface
        self.ctx = ctx
        self._answer = b""

    def call(self, function, body, uuid=None):
        stub = body if isinstance(body, bytes) else body.getData()
        try:
            self._answer = self.interface.call(function, stub, self.ctx)
        except RpcFault as fault:
            raise DCERPCException(error_code=fault.status) from fault

    def recv(self):
        return self._answer

    def disconnect(self):
        """Nothing to close: the association (ctx.association) lives as long as the caller keeps it."""


def interfaces_for(org: Org) -> list:
    """NSPI, RFR and EMSMDB instances over ``org``: the registry the DCE/RPC server uses."""
    # Imported here because those modules import this one for RpcInterface.
    from harness.rpc.emsmdb import Emsmdb
    from harness.rpc.nspi import Nspi
    from harness.rpc.rfr import Rfr
    return [Nspi(org), Rfr(org), Emsmdb(org)]


@hookspec(fires_in="rpc/emsmdb.py, rpc/nspi.py",
          means="fail EMSMDB connect (\"connect\"), RopLogon (\"logon\") or an NSPI name lookup (\"resolve\")")
def mailbox_hook(operation: str, mailbox: Optional[Mailbox], call: MailboxCall) -> MailboxError: ...
