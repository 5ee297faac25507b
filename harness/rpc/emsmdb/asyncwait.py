"""AsyncEMSMDB (MS-OXCRPC 3.3): EcDoAsyncWaitEx, the call Outlook over RPC/HTTP leaves open to learn that its
session has notifications ([MS-OXCNOTIF] 3.1.5.3), sans-IO.

The client gets an ACXH from EcDoAsyncConnectEx on EMSMDB (harness.rpc.emsmdb.server), binds this interface (on the
EMSMDB endpoint; Outlook on a connection of its own) and calls EcDoAsyncWaitEx(acxh, ulFlagsIn, pulFlagsOut):
- an event is already pending for the session's registrations (harness.rpc.emsmdb.notify): answered at once with
  NotificationPending;
- else the call is held (a ``HeldResponse``: the association sends nothing, the edge waits on the mailbox event
  logs of the registrations) until one has an event (NotificationPending) or for five minutes (0);
- an ACXH it does not know, or one of another user's session: ecRejected with NotificationPending set, at once.
The client then collects the RopNotify responses with EcDoRpcExt2. Exchange counts the five minutes from the
session's last EcDoRpcExt2; this model counts them from the wait.
"""
from __future__ import annotations

from typing import Callable, List, Union

from harness.rpc.base import CallContext, HeldResponse, RpcInterface, decoding, marshal
from harness.rpc.emsmdb.idl import EC_NONE, EcDoAsyncWaitEx, EcDoAsyncWaitExResponse
from harness.rpc.emsmdb.notify import pending, registrations
from harness.rpc.emsmdb.server import Emsmdb

ASYNC_EMSMDB_UUID = "5261574a-4572-206e-b268-6b199213b4e5"
NOTIFICATION_PENDING = 0x00000001     # pulFlagsOut
EC_REJECTED = 0x000007EE
ASYNC_WAIT_MAX_MS = 300000            # no event within 5 minutes: answered without NotificationPending


def wait_response(flags: int, code: int = EC_NONE) -> bytes:
    """EcDoAsyncWaitEx's response stub: pulFlagsOut, then the return value."""
    response = EcDoAsyncWaitExResponse()
    response["pulFlagsOut"] = flags
    response["ErrorCode"] = code
    return marshal(response)


class AsyncEmsmdb(RpcInterface):
    name = "asyncemsmdb"
    uuid = ASYNC_EMSMDB_UUID
    version = (0, 1)
    opnums = {0: "EcDoAsyncWaitEx"}

    def __init__(self, emsmdb: Emsmdb):
        self.emsmdb = emsmdb            # whose EcDoAsyncConnectEx handed out the ACXHs

    def EcDoAsyncWaitEx(self, stub: bytes, ctx: CallContext) -> Union[bytes, HeldResponse]:
        with decoding("EcDoAsyncWaitEx"):
            EcDoAsyncWaitEx(stub)
        handle = stub[:20]
        session = self.emsmdb.async_session(handle)
        if session is None or ctx.mailbox != session.mailbox:
            return wait_response(NOTIFICATION_PENDING, EC_REJECTED)
        objects = session.objects
        if pending(objects):
            return wait_response(NOTIFICATION_PENDING)
        logs = list({id(r.content.events): r.content.events for _, r in registrations(objects)}.values())

        def subscribe(wake: Callable[[], None]) -> Callable[[], None]:
            stops: List[Callable[[], None]] = [log.listen(lambda _event: wake()) for log in logs]

            def stop_all() -> None:
                for stop in stops:
                    stop()
            return stop_all

        return HeldResponse(lambda: pending(objects),
                            lambda: wait_response(NOTIFICATION_PENDING if pending(objects) else 0),
                            ASYNC_WAIT_MAX_MS, subscribe, what="an event for the session's notifications")
