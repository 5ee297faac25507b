"""Autodiscover faults: answers Exchange gives when the service or the directory is unhappy."""
from __future__ import annotations

from harness.faults.base import Fault, Param, register
from harness.protocols import autodiscover as pox
from harness.protocols import autodiscover_soap as soap

POX_CODES = (500, 501, 600, 601, 602, 603)
SOAP_CODE_FOR_POX = {500: "InvalidUser", 501: "InvalidUser", 600: "InvalidRequest", 601: "InvalidRequest",
                     602: "InvalidUser", 603: "InternalServerError"}


def is_soap(request) -> bool:
    return request.path.lower().startswith("/autodiscover/autodiscover.svc")


@register
class ErrorCode(Fault):
    name = "autodiscover.error-code"
    summary = "Autodiscover answers with an ErrorCode (POX 500/501/600/601/602/603, the SOAP equivalent)."
    description = ("The Autodiscover service is reachable and authenticates the user, then refuses to configure "
                   "the address: 500 unknown address, 501/602 bad address, 600 invalid request, 601 provider not "
                   "available, 603 internal error. Sent with HTTP 200, as Exchange does.")
    symptoms = {"outlook": "cannot configure the profile; the next Autodiscover method is not tried for 500",
                "exchangelib": "ErrorNonExistentMailbox (InvalidUser) or AutoDiscoverFailed"}
    params = {"code": Param(int, 500, "the POX ErrorCode", POX_CODES)}
    analyzer = {"fails_at": "autodiscover", "reason": "autodiscover-error-{code}"}

    def on_autodiscover(self, scope, request, answer):
        code = self.values["code"]
        if is_soap(request):
            return soap.soap_user_error(SOAP_CODE_FOR_POX[code], f"mockex fault: POX error {code}")
        return pox.pox_error(code)
