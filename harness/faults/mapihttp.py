"""MAPI over HTTP faults: what an Outlook session meets between its Connect and its Disconnect at /mapi/emsmdb/, or
between its Bind and its Unbind at the address book, /mapi/nspi/ (`endpoint: nspi`).

Scope: `host` is the Host the request came to, `user` the authenticated mailbox's address. `request_types` limits a
fault to some X-RequestTypes of its endpoint (default: Execute at emsmdb, every request type but PING at nspi);
`skip` lets the first N matching requests through, `times` then limits it to the next N (default: every one after
the skipped).
"""
from __future__ import annotations

from typing import Optional

from harness.faults.base import Fault, FaultParamError, Param, register
from harness.rpc.mapihttp import ERROR_CODES, PENDING_PERIOD_MS, REQUEST_TYPES, MapiHttpFault
from harness.rpc.mapihttp_nspi import NSPI_REQUEST_TYPES

# each endpoint's request types, and the ones a fault applies to when `request_types` is not given
ENDPOINT_TYPES = {"emsmdb": REQUEST_TYPES, "nspi": NSPI_REQUEST_TYPES}
DEFAULT_TYPES = {"emsmdb": ("Execute",), "nspi": tuple(t for t in NSPI_REQUEST_TYPES if t != "PING")}


class _MapiHttpFault(Fault):
    """Answers matching MAPI/HTTP requests of its endpoint with ``answer()``."""
    params = {
        "endpoint": Param(str, "emsmdb", "the endpoint: emsmdb (/mapi/emsmdb/, the mailbox) or nspi (/mapi/nspi/, "
                                         "the address book)", choices=tuple(ENDPOINT_TYPES)),
        "request_types": Param(list, None, "only these X-RequestTypes of the endpoint (emsmdb: Connect, Execute, "
                                           "Disconnect, NotificationWait, PING; nspi: Bind, Unbind, ResolveNames, "
                                           "DNToMId, GetProps, QueryRows, ... PING); default: Execute at emsmdb, "
                                           "every one but PING at nspi", items=str),
        "skip": Param(int, 0, "let the first N matching requests through", minimum=0),
        "times": Param(int, None, "then only the next N matching requests (default: every one)", minimum=1),
    }

    @classmethod
    def validate(cls, values):
        result = super().validate(values)
        endpoint = result["endpoint"]
        allowed = ENDPOINT_TYPES[endpoint]
        unknown = [t for t in result["request_types"] or () if t not in allowed]
        if unknown:
            raise FaultParamError("request_types", f"{unknown[0]!r} is not a MAPI/HTTP {endpoint} request type",
                                  "allowed: " + ", ".join(allowed))
        return result

    def __init__(self, rng=None, **values):
        super().__init__(rng, **values)
        self.endpoint = self.values["endpoint"]
        self.request_types = frozenset(self.values["request_types"] or DEFAULT_TYPES[self.endpoint])
        self.skipped = 0
        self.remaining: Optional[int] = self.values["times"]

    def answer(self) -> MapiHttpFault:
        raise NotImplementedError

    def on_mapi_http(self, scope, endpoint, request_type, mailbox):
        if endpoint != self.endpoint or request_type not in self.request_types:
            return None
        if self.skipped < self.values["skip"]:
            self.skipped += 1
            return None
        if self.remaining is not None:
            if self.remaining <= 0:
                return None
            self.remaining -= 1
        return self.answer()


@register
class ContextLost(_MapiHttpFault):
    name = "mapihttp.context-lost"
    summary = "The server forgets the session: X-ResponseCode 10 (Context not found) from then on, until a new Connect."
    description = ("The MSExchangeMapiMailboxAppPool was recycled, or the mailbox moved: the MapiContext cookie names "
                   "a session the server no longer has. The request and every later one with that cookie get "
                   "X-ResponseCode 10; a correct client drops its cookies and sends Connect again.")
    symptoms = {"outlook": "reconnects silently (a new Connect); a client that retries with the old cookie loops on 10"}

    def answer(self) -> MapiHttpFault:
        return MapiHttpFault(forget_context=True)


@register
class ResponseCode(_MapiHttpFault):
    name = "mapihttp.response-code"
    summary = "A MAPI/HTTP request answered with the X-ResponseCode of choice (an HTML page, HTTP 200)."
    description = ("The MAPI/HTTP transport refuses the request with a non-zero X-ResponseCode ([MS-OXCMAPIHTTP] "
                   "2.2.3.3.3), as an Exchange front end shutting down (18), one that rejects a header (4), or "
                   "an unknown failure (1). The session is kept.")
    symptoms = {"outlook": "retries, then shows the mailbox disconnected"}
    params = {**_MapiHttpFault.params,
              "code": Param(int, 18, "the X-ResponseCode sent", choices=ERROR_CODES)}

    def answer(self) -> MapiHttpFault:
        return MapiHttpFault(response_code=self.values["code"])


@register
class Unauthorized(_MapiHttpFault):
    name = "mapihttp.unauthorized"
    summary = "HTTP 401 with the site's WWW-Authenticate challenge in the middle of a MAPI/HTTP session."
    description = ("The user's Kerberos ticket or the front end's cached logon expired, or the password was changed: "
                   "a request after Connect is refused with 401 and a fresh challenge. The session itself is kept: "
                   "a correct client authenticates again and repeats the request with its cookies.")
    symptoms = {"outlook": "authenticates again silently (or prompts for the password when it cannot)"}

    def answer(self) -> MapiHttpFault:
        return MapiHttpFault(unauthorized=True)


@register
class SlowPending(_MapiHttpFault):
    name = "mapihttp.slow-pending"
    summary = "A MAPI/HTTP answer held back: PROCESSING, then N PENDING keep-alives, then DONE."
    description = ("The mailbox server is slow (a busy store, a long search): the front end keeps the request alive "
                   "with a PENDING meta-tag every X-PendingPeriod until the answer is DONE. A client must read "
                   "the keep-alives and not time the request out while they come.")
    symptoms = {"outlook": "waits; shows 'Trying to connect' when no PENDING arrives within its period"}
    params = {**_MapiHttpFault.params,
              "periods": Param(int, 4, "PENDING meta-tags sent before DONE", minimum=1),
              "period_ms": Param(int, PENDING_PERIOD_MS, "milliseconds between them (the X-PendingPeriod sent)",
                                 minimum=1)}

    def answer(self) -> MapiHttpFault:
        return MapiHttpFault(pending_periods=self.values["periods"], pending_period_ms=self.values["period_ms"])
