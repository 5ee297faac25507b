"""The EMSMDB NDR calls (MS-OXCRPC 3.1.4), their return values and the version words they carry.

impacket has no EMSMDB structures, so the calls are defined here with impacket's NDR classes (layouts per the
MS-OXCRPC IDL, cross-checked against Gromox's marshalling).
"""
from __future__ import annotations

from typing import Any, Tuple

from impacket.dcerpc.v5.dtypes import LPSTR, STR, ULONG, USHORT
from impacket.dcerpc.v5.ndr import NDRCALL, NDRSTRUCT, NDRUniConformantArray, NDRUniConformantVaryingArray
from impacket.dcerpc.v5.nspi import handle_t
from impacket.dcerpc.v5.rpcrt import DCERPCException

# ---- return values (MS-OXCDATA 2.4) -------------------------------------------------------------------------
EC_NONE = 0x00000000
EC_UNKNOWN_USER = 0x000003EB
EC_LOGIN_PERM = 0x000003F2
EC_WRONG_SERVER = 0x00000478
EC_BUFFER_TOO_SMALL = 0x0000047D
EC_SERVER_BUSY = 0x00000480
EC_RPC_FORMAT = 0x000004B6
EC_CLIENT_VER_DISALLOWED = 0x000004DF
EC_NOT_ENCRYPTED = 0x00000970
EC_NOT_SUPPORTED = 0x80040102
EC_NOT_FOUND = 0x8004010F
EC_LOGIN_FAILURE = 0x80040111
RPC_S_SERVER_TOO_BUSY = 0x000006BB       # the fault that replaces RopBackoff for old clients

# ---- EcDoRpcExt2 / EcDoConnectEx limits and flags -----------------------------------------------------------
PUL_NO_COMPRESSION, PUL_NO_XOR_MAGIC = 0x1, 0x2
MAX_OUT = 0x40000
MAX_AUX_OUT = 0x1008

# Exchange 2013 requires Outlook 2007 SP3 with the November 2012 update or later.
DEFAULT_MIN_CLIENT_VERSION = (12, 0, 6665, 5000)
OUTLOOK_2013_VERSION = (15, 0, 4569, 1506)


class DCERPCSessionError(DCERPCException):
    """Raised by impacket's ``dce.request`` for a non-zero EMSMDB return value. impacket looks it up in the module
    of the request class, so it must stay beside the NDR calls below."""

    def __str__(self) -> str:
        return f"EMSMDB SessionError: code: 0x{self.error_code:x}"


# ---- NDR (MS-OXCRPC 3.1.4) ----------------------------------------------------------------------------------
class ByteArray(NDRUniConformantArray):
    item = "c"


class ByteVaryingArray(NDRUniConformantVaryingArray):
    item = "c"


class VersionWords(NDRSTRUCT):
    """unsigned short[3], as the client/server/best version arrays are marshalled."""
    structure = (("Word0", USHORT), ("Word1", USHORT), ("Word2", USHORT))


class EcDoConnectEx(NDRCALL):
    opnum = 10
    structure = (("szUserDN", STR), ("ulFlags", ULONG), ("ulConMod", ULONG), ("cbLimit", ULONG), ("ulCpid", ULONG),
                 ("ulLcidString", ULONG), ("ulLcidSort", ULONG), ("ulIcxrLink", ULONG),
                 ("usFCanConvertCodePages", USHORT), ("rgwClientVersion", VersionWords), ("pulTimeStamp", ULONG),
                 ("rgbAuxIn", ByteArray), ("cbAuxIn", ULONG), ("pcbAuxOut", ULONG))


class EcDoConnectExResponse(NDRCALL):
    structure = (("pcxh", handle_t), ("pcmsPollsMax", ULONG), ("pcRetry", ULONG), ("pcmsRetryDelay", ULONG),
                 ("picxr", USHORT), ("szDNPrefix", LPSTR), ("szDisplayName", LPSTR),
                 ("rgwServerVersion", VersionWords), ("rgwBestVersion", VersionWords), ("pulTimeStamp", ULONG),
                 ("rgbAuxOut", ByteVaryingArray), ("pcbAuxOut", ULONG), ("ErrorCode", ULONG))


class EcDoRpcExt2(NDRCALL):
    opnum = 11
    structure = (("pcxh", handle_t), ("pulFlags", ULONG), ("rgbIn", ByteArray), ("cbIn", ULONG), ("pcbOut", ULONG),
                 ("rgbAuxIn", ByteArray), ("cbAuxIn", ULONG), ("pcbAuxOut", ULONG))


class EcDoRpcExt2Response(NDRCALL):
    structure = (("pcxh", handle_t), ("pulFlags", ULONG), ("rgbOut", ByteVaryingArray), ("pcbOut", ULONG),
                 ("rgbAuxOut", ByteVaryingArray), ("pcbAuxOut", ULONG), ("pulTransTime", ULONG), ("ErrorCode", ULONG))


class EcDoDisconnect(NDRCALL):
    opnum = 1
    structure = (("pcxh", handle_t),)


class EcDoDisconnectResponse(NDRCALL):
    structure = (("pcxh", handle_t), ("ErrorCode", ULONG))


class EcRRegisterPushNotification(NDRCALL):
    opnum = 4
    structure = (("pcxh", handle_t), ("iRpc", ULONG), ("rgbContext", ByteArray), ("cbContext", USHORT),
                 ("grbitAdviseBits", ULONG), ("rgbCallbackAddress", ByteArray), ("cbCallbackAddress", USHORT))


class EcRRegisterPushNotificationResponse(NDRCALL):
    structure = (("pcxh", handle_t), ("hNotification", ULONG), ("ErrorCode", ULONG))


class EcDummyRpc(NDRCALL):
    opnum = 6
    structure = ()


class EcDummyRpcResponse(NDRCALL):
    structure = (("ErrorCode", ULONG),)


class EcDoAsyncConnectEx(NDRCALL):
    opnum = 14
    structure = (("cxh", handle_t),)


class EcDoAsyncConnectExResponse(NDRCALL):
    structure = (("pacxh", handle_t), ("ErrorCode", ULONG))


class EcDoAsyncWaitEx(NDRCALL):
    """AsyncEMSMDB opnum 0 (MS-OXCRPC 3.3.4.1)."""
    opnum = 0
    structure = (("acxh", handle_t), ("ulFlagsIn", ULONG))


class EcDoAsyncWaitExResponse(NDRCALL):
    structure = (("pulFlagsOut", ULONG), ("ErrorCode", ULONG))


# ---- versions -----------------------------------------------------------------------------------------------
def pack_version(version: Tuple[int, int, int, int]) -> Tuple[int, int, int]:
    """Major.minor.build.revision in the 3-word form with the 'new format' bit (MS-OXCRPC 3.1.4.1.3)."""
    major, minor, build, revision = version
    return (major & 0xFF) << 8 | (minor & 0xFF), 0x8000 | (build & 0x7FFF), revision & 0xFFFF


def unpack_version(words: Tuple[int, int, int]) -> Tuple[int, int, int, int]:
    """The normalised 4-part version; old-format words (no 0x8000 bit) carry no minor number."""
    first, second, third = words
    if second & 0x8000:
        return first >> 8, first & 0xFF, second & 0x7FFF, third
    return first, 0, second, third


def write_version_words(target: Any, words: Tuple[int, int, int]) -> None:
    """Fill a ``VersionWords`` field of a request or response."""
    for index, word in enumerate(words):
        target[f"Word{index}"] = word


def read_version_words(source: Any) -> Tuple[int, int, int]:
    """The three words of a decoded ``VersionWords`` field."""
    return source["Word0"], source["Word1"], source["Word2"]


def version_text(version: Tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)
