"""How an NSPI call completes: the return values (MS-OXNSPI 2.2.2), NspiError for a failed call, and the response
it then carries (its outputs NULL, its ErrorCode set)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

from impacket.dcerpc.v5.dtypes import NULL
from impacket.dcerpc.v5.ndr import NDRCALL

from harness.rpc.base import marshal

if TYPE_CHECKING:   # stat.py imports this module for NspiError
    from harness.rpc.nspi.stat import Stat

# ---- return values ------------------------------------------------------------------------------------------
SUCCESS = 0x00000000
UNBIND_SUCCESS = 0x00000001
ERRORS_RETURNED = 0x00040380
GENERAL_FAILURE = 0x80004005
NOT_SUPPORTED = 0x80040102
NOT_FOUND = 0x8004010F
LOGON_FAILED = 0x80040111
TOO_COMPLEX = 0x80040117
INVALID_CODEPAGE = 0x8004011E
TABLE_TOO_BIG = 0x80040403
INVALID_BOOKMARK = 0x80040405
ACCESS_DENIED = 0x80070005
INVALID_PARAMETER = 0x80070057


class NspiError(Exception):
    """An NSPI-level failure: the call completes with this return value and empty outputs."""

    def __init__(self, code: int):
        super().__init__(f"NSPI error 0x{code:08x}")
        self.code = code


# ---- completing a call --------------------------------------------------------------------------------------
def answer(response: NDRCALL, build: Callable[[], int], null_on_error: Sequence[str] = ()) -> bytes:
    """Run ``build`` (which fills ``response`` and returns the code); on NspiError the outputs named in
    ``null_on_error`` become NULL and the error code is returned instead."""
    try:
        code = build()
    except NspiError as error:
        code = error.code
        for name in null_on_error:
            response[name] = NULL
    response["ErrorCode"] = code
    return marshal(response)


def answer_with_stat(response: NDRCALL, stat: Stat, build: Callable[[], int],
                     null_on_error: Sequence[str] = ()) -> bytes:
    """Like answer, for responses that echo the STAT: moved by ``build``, or as it came on error."""
    def run() -> int:
        code = build()
        stat.write(response["pStat"])
        return code
    stat.write(response["pStat"])
    return answer(response, run, null_on_error)
