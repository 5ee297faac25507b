"""NSPI wire forms: the request/response layouts impacket lacks or lays out differently, and small NDR helpers.

The calls wire.py does not pack by hand use impacket's NDR classes (impacket.dcerpc.v5.nspi), so the real
impacket client (exchanger.py) and this server agree by construction; wire.py is checked against them. Where
impacket's request layout differs from the MS-OXNSPI IDL that Outlook follows, both layouts are accepted:
* NspiGetSpecialTable / NspiGetProps: impacket sends ``pStat`` (and ``lpVersion``) as unique pointers with referent
  IDs; the IDL has ``[in] STAT*`` ref pointers (inline). The layout that consumes the whole stub wins.
* NspiSeekEntries: impacket's class lacks the ``[unique]`` pointers on lpETable/pPropTags; only the IDL form is parsed.
* NspiGetMatches / NspiResortRestriction are commented out in impacket and defined here from the IDL.
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Sequence

from impacket.dcerpc.v5 import nspi as ndr
from impacket.dcerpc.v5.dtypes import DWORD, ULONG
from impacket.dcerpc.v5.ndr import NDR, NDRCALL

from harness.rpc.base import RPC_X_BAD_STUB_DATA, RpcFault, is_null

MAX_ROWS = 100000   # the IDL's range() bound on row counts


# ---- IDL forms impacket lacks or lays out differently -------------------------------------------------------
class NspiGetSpecialTableIdl(NDRCALL):
    opnum = 12
    structure = (("hRpc", ndr.handle_t), ("dwFlags", DWORD), ("pStat", ndr.STAT), ("lpVersion", DWORD))


class NspiGetPropsIdl(NDRCALL):
    opnum = 9
    structure = (("hRpc", ndr.handle_t), ("dwFlags", DWORD), ("pStat", ndr.STAT),
                 ("pPropTags", ndr.PPropertyTagArray_r))


class NspiSeekEntriesIdl(NDRCALL):
    opnum = 4
    structure = (("hRpc", ndr.handle_t), ("Reserved", DWORD), ("pStat", ndr.STAT), ("pTarget", ndr.PropertyValue_r),
                 ("lpETable", ndr.PPropertyTagArray_r), ("pPropTags", ndr.PPropertyTagArray_r))


class NspiGetMatches(NDRCALL):
    opnum = 5
    structure = (("hRpc", ndr.handle_t), ("Reserved1", DWORD), ("pStat", ndr.STAT),
                 ("pReserved", ndr.PPropertyTagArray_r), ("Reserved2", DWORD), ("Filter", ndr.PRestriction_r),
                 ("lpPropName", ndr.PPropertyName_r), ("ulRequested", DWORD), ("pPropTags", ndr.PPropertyTagArray_r))


class NspiGetMatchesResponse(NDRCALL):
    structure = (("pStat", ndr.STAT), ("ppOutMIds", ndr.PPropertyTagArray_r), ("ppRows", ndr.PPropertyRowSet_r),
                 ("ErrorCode", ULONG))


class NspiResortRestriction(NDRCALL):
    opnum = 6
    structure = (("hRpc", ndr.handle_t), ("Reserved", DWORD), ("pStat", ndr.STAT),
                 ("pInMIds", ndr.PropertyTagArray_r), ("ppOutMIds", ndr.PPropertyTagArray_r))


class NspiResortRestrictionResponse(NDRCALL):
    structure = (("pStat", ndr.STAT), ("ppOutMIds", ndr.PPropertyTagArray_r), ("ErrorCode", ULONG))


def parse_whole(stub: bytes, layouts: Sequence[type]) -> NDRCALL:
    """Parse with the first layout that consumes the whole stub (see this module's docstring)."""
    for layout in layouts:
        request = layout()
        try:
            used = request.fromString(stub)
        except Exception:  # noqa: BLE001 - a layout that does not fit; the next one may
            continue
        if used == len(stub):
            return request
    raise RpcFault(RPC_X_BAD_STUB_DATA, f"stub fits none of {[c.__name__ for c in layouts]}")


# ---- small NDR helpers --------------------------------------------------------------------------------------
def tag_list(pointer: NDR) -> Optional[List[int]]:
    """The tags of a PropertyTagArray_r pointer, or None for NULL. The array's items count, not cValues
    (impacket's hNspiGetProps sends cValues one too high)."""
    if is_null(pointer):
        return None
    return [item["Data"] for item in pointer["aulPropTag"]][:MAX_ROWS]


def tag_array(tags: Iterable[int]) -> ndr.PropertyTagArray_r:
    """A PropertyTagArray_r holding ``tags`` (also used for lists of MIds, which share the layout)."""
    array = ndr.PropertyTagArray_r()
    tags = list(tags)
    for tag in tags:
        item = DWORD()
        item["Data"] = tag
        array["aulPropTag"].append(item)
    array["cValues"] = len(tags)
    return array
