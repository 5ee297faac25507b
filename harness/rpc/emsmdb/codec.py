"""EMSMDB ROP buffers: RPC_HEADER_EXT framing (MS-OXCRPC 2.2.2.1) with XorMagic and LZ77 undone, the RopSize +
ROPs + server object handle table layout, and the RopLogon / RopBackoff requests and responses (MS-OXCROPS).

Bytes in, bytes out: no session state, no transport.
"""
from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import List, Optional, Sequence, Tuple

from harness.rpc.emsmdb.idl import EC_NONE, EC_NOT_SUPPORTED, EC_WRONG_SERVER

# ---- RPC_HEADER_EXT (MS-OXCRPC 2.2.2.1) ---------------------------------------------------------------------
HEADER_EXT = struct.Struct("<HHHH")          # Version, Flags, Size, SizeActual
FLAG_COMPRESSED, FLAG_XOR_MAGIC, FLAG_LAST = 0x1, 0x2, 0x4
XOR_MAGIC = 0xA5

# ---- RopLogon (MS-OXCROPS 2.2.3.1) --------------------------------------------------------------------------
ROP_LOGON = 0xFE
ROP_BACKOFF = 0xF9
BACKOFF = struct.Struct("<BBLB")             # RopId, LogonId, Duration, BackoffRopCount (MS-OXCROPS 2.2.15.2)
BACKOFF_ROP = struct.Struct("<BL")           # RopIdBackoff, Duration
BACKOFF_MIN_CLIENT_VERSION = (12, 0, 4228, 0)   # clients above it understand RopBackoff (MS-OXCROPS 3.1.5.1.1)
LOGON_PRIVATE = 0x01
OPEN_HOME_LOGON, OPEN_TAKE_OWNERSHIP, OPEN_USE_PER_MDB_REPLID_MAPPING = 0x4, 0x8, 0x01000000
RESPONSE_RESERVED, RESPONSE_OWNER_RIGHT, RESPONSE_SEND_AS_RIGHT = 0x1, 0x2, 0x4
# RopId, LogonId, OutputHandleIndex, LogonFlags, OpenFlags, StoreState, EssdnSize (then the Essdn)
LOGON_REQUEST = struct.Struct("<BBBBLLH")
SPECIAL_FOLDERS = ("Root", "DeferredAction", "SpoolerQueue", "IpmSubtree", "Inbox", "Outbox", "SentItems",
                   "DeletedItems", "CommonViews", "Schedule", "Search", "Views", "Shortcuts")
REPL_ID = 0x0001


# ---- RPC_HEADER_EXT segments --------------------------------------------------------------------------------
def lz77_decompress(data: bytes, size: int) -> bytes:
    """The MS-OXCRPC 3.1.7.2 LZ77 + DIRECT2 decoder (the 'plain LZ77' of MS-XCA 2.4). ValueError on bad input."""
    out = bytearray()
    pos = 0
    flags = flag_count = 0
    shared_nibble = None       # position of the byte whose high nibble the next long match uses
    while len(out) < size:
        if flag_count == 0:
            if pos + 4 > len(data):
                raise ValueError("LZ77: truncated flag word")
            flags = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
            flag_count = 32
        flag_count -= 1
        if not flags & (1 << flag_count):
            if pos >= len(data):
                raise ValueError("LZ77: truncated literal")
            out.append(data[pos])
            pos += 1
            continue
        if pos + 2 > len(data):
            raise ValueError("LZ77: truncated match")
        meta = int.from_bytes(data[pos:pos + 2], "little")
        pos += 2
        offset, length = (meta >> 3) + 1, meta & 7
        if length == 7:
            if shared_nibble is None:
                if pos >= len(data):
                    raise ValueError("LZ77: truncated length")
                length = data[pos] & 0x0F
                shared_nibble = pos
                pos += 1
            else:
                length = data[shared_nibble] >> 4
                shared_nibble = None
            if length == 15:
                if pos >= len(data):
                    raise ValueError("LZ77: truncated length")
                length = data[pos]
                pos += 1
                if length == 255:
                    if pos + 2 > len(data):
                        raise ValueError("LZ77: truncated length")
                    length = int.from_bytes(data[pos:pos + 2], "little")
                    pos += 2
                    if length < 15 + 7:
                        raise ValueError("LZ77: bad long length")
                    length -= 15 + 7
                length += 15
            length += 7
        length += 3
        if offset > len(out):
            raise ValueError("LZ77: match before the start of the output")
        for _ in range(length):
            out.append(out[-offset])
    if len(out) != size:
        raise ValueError("LZ77: output longer than SizeActual")
    return bytes(out)


def wrap_rop_buffers(payloads: List[bytes]) -> bytes:
    """Uncompressed, unobfuscated RPC_HEADER_EXT segments, the last one marked Last (what the server always
    sends); no payloads give no bytes."""
    return b"".join(HEADER_EXT.pack(0, FLAG_LAST if index == len(payloads) - 1 else 0, len(payload), len(payload))
                    + payload for index, payload in enumerate(payloads))


def unwrap_rop_buffers(data: bytes) -> List[bytes]:
    """The payloads of the RPC_HEADER_EXT segments in rgbIn/rgbOut, XorMagic and LZ77 undone. ValueError on
    malformed input."""
    payloads = []
    pos = 0
    while True:
        if pos + HEADER_EXT.size > len(data):
            raise ValueError("truncated RPC_HEADER_EXT")
        version, flags, size, actual = HEADER_EXT.unpack_from(data, pos)
        pos += HEADER_EXT.size
        if version != 0 or pos + size > len(data):
            raise ValueError("bad RPC_HEADER_EXT")
        payload = data[pos:pos + size]
        pos += size
        if flags & FLAG_XOR_MAGIC:
            payload = bytes(b ^ XOR_MAGIC for b in payload)
        if flags & FLAG_COMPRESSED:
            payload = lz77_decompress(payload, actual)
        elif actual != size:
            raise ValueError("SizeActual differs from Size in an uncompressed segment")
        payloads.append(payload)
        if flags & FLAG_LAST:
            return payloads


# ---- one ROP buffer: RopSize, ROPs, handle table ------------------------------------------------------------
def split_rop_payload(payload: bytes) -> Tuple[bytes, List[int]]:
    """(ROP bytes, server object handle table) of one ROP request/response buffer."""
    if len(payload) < 2:
        raise ValueError("ROP buffer shorter than RopSize")
    rop_size = struct.unpack_from("<H", payload)[0]
    if rop_size < 2 or rop_size > len(payload) or (len(payload) - rop_size) % 4:
        raise ValueError("bad RopSize")
    handles = list(struct.unpack_from(f"<{(len(payload) - rop_size) // 4}L", payload, rop_size))
    return payload[2:rop_size], handles


def join_rop_payload(rops: bytes, handles: List[int]) -> bytes:
    return struct.pack("<H", 2 + len(rops)) + rops + struct.pack(f"<{len(handles)}L", *handles)


# ---- ROP requests -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogonRequest:
    logon_id: int
    output_handle_index: int
    logon_flags: int
    open_flags: int
    store_state: int
    essdn: str


def build_rop_logon(essdn: str, *, logon_id: int = 0, output_handle_index: int = 0,
                    logon_flags: int = LOGON_PRIVATE,
                    open_flags: int = OPEN_USE_PER_MDB_REPLID_MAPPING | OPEN_HOME_LOGON | OPEN_TAKE_OWNERSHIP) -> bytes:
    dn = essdn.encode("ascii") + b"\x00"
    return LOGON_REQUEST.pack(ROP_LOGON, logon_id, output_handle_index, logon_flags, open_flags, 0, len(dn)) + dn


def parse_rop_logon(rops: bytes, pos: int) -> Tuple[LogonRequest, int]:
    if pos + LOGON_REQUEST.size > len(rops):
        raise ValueError("truncated RopLogon")
    _, logon_id, index, logon_flags, open_flags, store_state, size = LOGON_REQUEST.unpack_from(rops, pos)
    start = pos + LOGON_REQUEST.size
    if start + size > len(rops):
        raise ValueError("truncated RopLogon Essdn")
    essdn = rops[start:start + size].split(b"\x00", 1)[0].decode("latin-1")
    return LogonRequest(logon_id, index, logon_flags, open_flags, store_state, essdn), start + size


# ---- ROP responses ------------------------------------------------------------------------------------------
def folder_id(counter: int) -> bytes:
    """A FID: 2-byte replica id (little-endian) + 6-byte global counter (big-endian)."""
    return struct.pack("<H", REPL_ID) + counter.to_bytes(6, "big")


def logon_time(moment: datetime) -> bytes:
    day_of_week = (moment.weekday() + 1) % 7        # MS-OXCROPS counts from Sunday = 0
    return struct.pack("<BBBBBBH", moment.second, moment.minute, moment.hour, day_of_week, moment.day,
                       moment.month, moment.year)


def rop_not_supported(rop_id: int, input_index: int) -> bytes:
    """The generic error response a ROP this model does not implement gets."""
    return struct.pack("<BBL", rop_id, input_index, EC_NOT_SUPPORTED)


def rop_backoff(logon_id: int, duration_ms: int) -> bytes:
    """RopBackoff in place of the RopLogon response: retry that one ROP after ``duration_ms``."""
    return (BACKOFF.pack(ROP_BACKOFF, logon_id, duration_ms, 1) + BACKOFF_ROP.pack(ROP_LOGON, duration_ms)
            + struct.pack("<H", 0))


def backoff_of(response: bytes) -> Optional[Tuple[int, List[int]]]:
    """A RopBackoff response read back: (its Duration in ms, the RopIds it delays), or None when it is cut short."""
    if len(response) < BACKOFF.size:
        return None
    _rop, _logon, duration, count = BACKOFF.unpack_from(response)
    delayed = [response[BACKOFF.size + i * BACKOFF_ROP.size] for i in range(count)
               if BACKOFF.size + (i + 1) * BACKOFF_ROP.size <= len(response)]
    return duration, delayed


def _logon_head(output_handle_index: int) -> bytes:
    return struct.pack("<BB", ROP_LOGON, output_handle_index)


def logon_redirect(output_handle_index: int, logon_flags: int, server_dn: str) -> bytes:
    """The ecWrongServer RopLogon response naming the server the mailbox lives on."""
    name = server_dn.encode("ascii") + b"\x00"
    return (_logon_head(output_handle_index)
            + struct.pack("<LBB", EC_WRONG_SERVER, logon_flags, len(name)) + name)


def logon_failure(output_handle_index: int, code: int) -> bytes:
    return _logon_head(output_handle_index) + struct.pack("<L", code)


def logon_success(output_handle_index: int, logon_flags: int, rights: int, mailbox_guid: uuid.UUID,
                  replica_guid: uuid.UUID, now: datetime, counters: Sequence[int] = ()) -> bytes:
    """A private-mailbox RopLogon response: the special folder IDs (``counters``, default 1..13), rights,
    mailbox and replica GUIDs, time."""
    counters = counters or range(1, len(SPECIAL_FOLDERS) + 1)
    return (_logon_head(output_handle_index) + struct.pack("<LB", EC_NONE, logon_flags)
            + b"".join(folder_id(counter) for counter in counters)
            + struct.pack("<B", rights) + mailbox_guid.bytes_le + struct.pack("<H", REPL_ID)
            + replica_guid.bytes_le + logon_time(now) + struct.pack("<QL", 0, 0))
