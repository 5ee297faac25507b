"""EWS faults: throttling and mailbox-store failures at /EWS/Exchange.asmx, answered before the operation runs.

Scope: `host` is the Host the request came to, `user` the authenticated mailbox's address. `operations` limits a
fault to some EWS operations (e.g. [FindItem, SyncFolderItems]); `times` to the first N matching requests.
"""
from __future__ import annotations

from typing import Optional

from harness.faults.base import Fault, Param, register
from harness.protocols.ews import EwsAnswer, EwsRequest


class _EwsFault(Fault):
    """Answers matching EWS requests (all, or `operations`; every time, or the first `times`) with ``answer``."""
    params = {
        "operations": Param(list, None, "only these EWS operations (e.g. [FindItem, SyncFolderItems]); default: all",
                            items=str),
        "times": Param(int, None, "only the first N matching requests (default: every one)", minimum=1),
    }

    def __init__(self, rng=None, **values):
        super().__init__(rng, **values)
        self.operations = frozenset(self.values["operations"] or ())
        self.remaining: Optional[int] = self.values["times"]

    def answer(self, request: EwsRequest) -> EwsAnswer:
        raise NotImplementedError

    def on_ews(self, scope, request):
        if self.operations and request.operation not in self.operations:
            return None
        if self.remaining is not None:
            if self.remaining <= 0:
                return None
            self.remaining -= 1
        return self.answer(request)


@register
class ServerBusy(_EwsFault):
    name = "ews.server-busy"
    summary = "EWS throttling: an ErrorServerBusy SOAP fault with BackOffMilliseconds, as Exchange's throttling policy."
    description = ("The user's EWS throttling budget (EWSMaxConcurrency, EwsCutoffBalance, ...) is spent: Exchange "
                   "answers HTTP 500 with a SOAP fault ErrorServerBusy whose MessageXml carries BackOffMilliseconds, "
                   "the time the client must wait before its next request. Clients that retry sooner keep the "
                   "budget exhausted.")
    symptoms = {"exchangelib": "ErrorServerBusy with back_off = BackOffMilliseconds / 1000 (FailFast raises it; "
                               "FaultTolerance waits that long, or raises RateLimitError past max_wait)"}
    params = {**_EwsFault.params,
              "back_off_ms": Param(int, 30000, "BackOffMilliseconds: how long the client must wait, in milliseconds",
                                   minimum=0)}

    def answer(self, request: EwsRequest) -> EwsAnswer:
        return request.server_busy(self.values["back_off_ms"])


@register
class MailboxStoreUnavailable(_EwsFault):
    name = "ews.mailbox-store-unavailable"
    summary = "EWS operations answer ErrorMailboxStoreUnavailable: the mailbox database is dismounted or failing over."
    description = ("The mailbox's database copy is dismounted, failing over in a DAG, or its server is down: the "
                   "CAS authenticates the user but every operation's response message is an error "
                   "(ResponseClass Error, ResponseCode ErrorMailboxStoreUnavailable).")
    symptoms = {"exchangelib": "raises ErrorMailboxStoreUnavailable (one of the errors it re-runs Autodiscover for)"}

    def answer(self, request: EwsRequest) -> EwsAnswer:
        return request.error("ErrorMailboxStoreUnavailable", "The mailbox database is temporarily unavailable.")


@register
class MailboxMoveInProgress(_EwsFault):
    name = "ews.mailbox-move-in-progress"
    summary = "EWS operations answer ErrorMailboxMoveInProgress: the mailbox is being moved to another database."
    description = ("A move request is in its final (locked) phase: the mailbox cannot be opened until the move "
                   "completes, and clients should rediscover its server afterwards.")
    symptoms = {"exchangelib": "raises ErrorMailboxMoveInProgress (one of the errors it re-runs Autodiscover for)"}

    def answer(self, request: EwsRequest) -> EwsAnswer:
        return request.error("ErrorMailboxMoveInProgress", "Mailbox move in progress. Try again later.")


# Exchange's MessageText (as clients report it, two spaces included).
EXCEEDED_CONNECTION_COUNT = ("You have exceeded the available concurrent connections for your account.  Try again "
                             "once your other requests have completed.")
TIMEOUT_EXPIRED = "The operation has timed out."     # guess: no Exchange capture of this text seen


@register
class ConnectionCountExceeded(_EwsFault):
    name = "ews.connection-count-exceeded"
    summary = "EWS answers ErrorExceededConnectionCount: more concurrent requests than the user's policy allows."
    description = ("The user's throttling policy caps concurrent EWS connections (EwsMaxConcurrency, 27 by default "
                   "in Exchange 2013; HangingConnectionLimit for streaming notifications): a request beyond the cap "
                   "is refused with HTTP 200 and a ResponseClass Error message ErrorExceededConnectionCount whose "
                   "MessageXml names the policy (Policy MaxConcurrency, MaxConcurrencyLimit). Nothing runs; clients "
                   "should use fewer connections.")
    symptoms = {"exchangelib": "shrinks its session pool and retries at once; with one session left it raises "
                               "ErrorExceededConnectionCount"}
    params = {**_EwsFault.params,
              "limit": Param(int, 27, "MaxConcurrencyLimit: the concurrency the policy allows", minimum=0)}

    def answer(self, request: EwsRequest) -> EwsAnswer:
        return request.error("ErrorExceededConnectionCount", EXCEEDED_CONNECTION_COUNT,
                             {"Policy": "MaxConcurrency", "MaxConcurrencyLimit": str(self.values["limit"])})


@register
class TimeoutExpired(_EwsFault):
    name = "ews.timeout-expired"
    summary = "EWS answers ErrorTimeoutExpired: the mailbox server did not finish the operation in time."
    description = ("A busy mailbox server, or a request too large for it (a big FindItem page, a long search), "
                   "runs past the CAS's time limit: the response message is ResponseClass Error, ErrorTimeoutExpired, "
                   "and nothing is returned. Smaller batches and later retries succeed. The answer comes at once "
                   "(the time a real timeout takes is not waited).")
    symptoms = {"exchangelib": "with more than one session, backs off and retries with fewer; with one session it "
                               "raises ErrorTimeoutExpired"}

    def answer(self, request: EwsRequest) -> EwsAnswer:
        return request.error("ErrorTimeoutExpired", TIMEOUT_EXPIRED)
