"""The contract between the DCE/RPC server and the interfaces behind it (NSPI, RFR, EMSMDB in harness/rpc): the
call context, the fault exception, the fault statuses and opnum dispatch.

The association owns PDUs, binding and sealing; it hands each request stub to ``RpcInterface.call`` and turns an
``RpcFault`` into a fault PDU. Interfaces only see NDR stubs. This module lives here, below harness/rpc, so that the
server never imports the layer that implements the interfaces.

Hooks asked during a call use ``CallContext.scope()``; the ``mailbox`` hook (harness/rpc/base.py) is asked at EMSMDB
connect ("connect") and RopLogon ("logon") and at NSPI name lookups ("resolve"); a
``MailboxError`` answer makes that operation fail with its code. Scope: host = the RPC server name the client
asked for, user = the caller's mailbox.
"""
from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, Union

from harness.hooks import FaultSet, Hook, Scope
from harness.org import Mailbox, Org

# ---- fault statuses (C706 appendix E, MS-RPCE 2.2.2.11) ---------------------------------------------------------
RPC_S_ACCESS_DENIED = 0x00000005
NCA_S_FAULT_REMOTE_NO_MEMORY = 0x1C00001B
NCA_S_FAULT_UNSPEC = 0x1C000012
NCA_S_UNK_IF = 0x1C010003
NCA_S_PROTO_ERROR = 0x1C01000B
NCA_S_OP_RNG_ERROR = 0x1C010002            # opnum out of range
NCA_S_FAULT_CONTEXT_MISMATCH = 0x1C00001A  # unknown or stale context handle
RPC_X_BAD_STUB_DATA = 0x000006F7           # the stub does not unmarshal
FAULT_NAMES = {RPC_S_ACCESS_DENIED: "rpc_s_access_denied", NCA_S_FAULT_REMOTE_NO_MEMORY: "nca_s_fault_remote_no_memory",
               NCA_S_FAULT_UNSPEC: "nca_s_fault_unspec", NCA_S_UNK_IF: "nca_s_unk_if",
               NCA_S_PROTO_ERROR: "nca_s_proto_error", NCA_S_OP_RNG_ERROR: "nca_s_op_rng_error",
               NCA_S_FAULT_CONTEXT_MISMATCH: "nca_s_fault_context_mismatch", RPC_X_BAD_STUB_DATA: "rpc_x_bad_stub_data"}


class RpcFault(Exception):
    """The DCE/RPC layer turns it into a fault PDU with this status."""

    def __init__(self, status: int, message: str = ""):
        super().__init__(f"RPC fault 0x{status:08x}" + (f": {message}" if message else ""))
        self.status = status
        self.message = message


@dataclass
class CallContext:
    org: Org
    mailbox: Optional[Mailbox]          # the authenticated user (HTTP or RPC-level auth), None if anonymous
    auth_level: int                     # 1 none .. 6 privacy (RPC_C_AUTHN_LEVEL_*)
    association: Dict[str, Any]         # lives as long as the DCE/RPC association (context handles...)
    record: Callable[..., object]       # transcript hook: record(kind, **fields)
    rng: random.Random
    faults: Optional[FaultSet] = None   # the server's active faults (the mailbox hook)
    host: Optional[str] = None          # the RPC server name the client asked the proxy for

    def scope(self) -> Scope:
        """Who a hook asked during this call is about: the RPC server name asked for, the caller's mailbox."""
        return Scope(self.host, self.mailbox.email if self.mailbox else None)

    def concerns(self, hook: Hook[Any, Any]) -> bool:
        """Whether some active fault may answer ``hook`` during this call; when none does (most calls), the caller
        builds no Scope and no hook arguments (``first`` would answer None)."""
        faults = self.faults
        return faults is not None and faults.concern(hook, self.host, self.mailbox.email if self.mailbox else None)


@dataclass(frozen=True)
class HeldResponse:
    """What an operation returns instead of its response stub when the answer must wait (EcDoAsyncWaitEx): the
    association sends no response PDU yet and hands the edge a held call, which completes it when ``ready()`` (asked
    again each time a ``subscribe``d wake-up fires) or after ``max_wait_ms``, with the stub ``answer()`` builds then."""
    ready: Callable[[], bool]
    answer: Callable[[], bytes]
    max_wait_ms: int
    subscribe: Callable[[Callable[[], None]], Callable[[], None]] = lambda wake: lambda: None   # returns: stop
    what: str = ""                      # for the transcript: what the call waits for

    def describe(self) -> str:
        return f"{self.what or 'an answer'} or {self.max_wait_ms} ms"


Answer = Union[bytes, HeldResponse]


class RpcInterface:
    """Base class; subclasses set the class attributes and define one method per name in ``opnums``.

    Each method takes ``(stub, ctx)`` and returns the NDR response stub, whose last 4 bytes are the operation's
    return value (true of every NSPI, RFR and EMSMDB operation); that value is recorded as the call's status. A
    method may return a ``HeldResponse`` instead: the association records the call when it is answered.
    """
    name: str
    uuid: str
    version: Tuple[int, int]
    opnums: Dict[int, str]

    def call(self, opnum: int, stub: bytes, ctx: CallContext) -> Answer:
        op = self.opnums.get(opnum)
        if op is None:
            ctx.record("rpc_call", interface=self.name, opnum=opnum, op=None, status=f"0x{NCA_S_OP_RNG_ERROR:08x}")
            raise RpcFault(NCA_S_OP_RNG_ERROR, f"{self.name} has no opnum {opnum}")
        try:
            response: Answer = getattr(self, op)(stub, ctx)
        except RpcFault as fault:
            ctx.record("rpc_call", interface=self.name, opnum=opnum, op=op, status=f"0x{fault.status:08x}",
                       fault=fault.message)
            raise
        if isinstance(response, HeldResponse):
            return response
        (status,) = struct.unpack_from("<L", response, len(response) - 4)
        ctx.record("rpc_call", interface=self.name, opnum=opnum, op=op, status=f"0x{status:08x}")
        return response
