"""A test RPC interface: its answers show what the DCE/RPC server (and the RPC proxy in front) did with the stub
and the caller."""
from __future__ import annotations

import struct

from impacket.uuid import uuidtup_to_bin

from harness.rpc.base import CallContext, RpcFault, RpcInterface


class Echo(RpcInterface):
    name = "ECHO"
    uuid = "12345678-1234-abcd-ef00-0123456789ab"
    version = (1, 2)
    opnums = {0: "echo", 1: "grow", 2: "whoami", 3: "refuse", 4: "explode"}

    def echo(self, stub: bytes, ctx: CallContext) -> bytes:
        return stub + b"\0\0\0\0"

    def grow(self, stub: bytes, ctx: CallContext) -> bytes:
        (size,) = struct.unpack_from("<L", stub)
        return bytes(i % 251 for i in range(size)) + b"\0\0\0\0"

    def whoami(self, stub: bytes, ctx: CallContext) -> bytes:
        who = ctx.mailbox.email if ctx.mailbox else "-"
        ctx.association["calls"] = ctx.association.get("calls", 0) + 1
        return f"{who}|{ctx.auth_level}|{ctx.association['calls']}".encode() + b"\0\0\0\0"

    def refuse(self, stub: bytes, ctx: CallContext) -> bytes:
        raise RpcFault(0x6F7, "bad stub")

    def explode(self, stub: bytes, ctx: CallContext) -> bytes:
        raise ValueError("interface bug")


ECHO = uuidtup_to_bin((Echo.uuid, "1.0"))     # the abstract syntax a client binds to reach Echo
