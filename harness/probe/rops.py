"""The probe's own ROP client, built from [MS-OXCROPS], [MS-OXCDATA] and [MS-OXCRPC] alone (it imports nothing of
the server): ROP request buffers for the mailbox steps (RopLogon, RopOpenFolder, RopGetContentsTable, RopSetColumns,
RopQueryRows, RopOpenMessage, RopGetPropertiesSpecific), the parser of the matching response buffer, the
RPC_HEADER_EXT framing of rgbIn/rgbOut, and EcDoRpcExt2's NDR stub for RPC over HTTP (MAPI over HTTP carries the
same rgbIn/rgbOut in its Execute body). A response the parser cannot read raises ``RopMalformed``."""
from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

NAMES = {0xFE: "RopLogon", 0x02: "RopOpenFolder", 0x05: "RopGetContentsTable", 0x12: "RopSetColumns",
         0x15: "RopQueryRows", 0x03: "RopOpenMessage", 0x07: "RopGetPropertiesSpecific", 0xF9: "RopBackoff"}
ROP_LOGON, ROP_BACKOFF, ROP_PENDING = 0xFE, 0xF9, 0x6E
LOGON_PRIVATE = 0x01
OPEN_FLAGS = 0x01000000 | 0x00000004 | 0x00000008    # USE_PER_MDB_REPLID_MAPPING | HOME_LOGON | TAKE_OWNERSHIP
SPECIAL_FOLDERS = ("Root", "DeferredAction", "SpoolerQueue", "IpmSubtree", "Inbox", "Outbox", "SentItems",
                   "DeletedItems", "CommonViews", "Schedule", "Search", "Views", "Shortcuts")
EC_WRONG_SERVER = 0x478
FLAG_COMPRESSED, FLAG_XOR_MAGIC, FLAG_LAST = 0x1, 0x2, 0x4
NO_COMPRESSION, NO_XOR_MAGIC = 0x1, 0x2      # EcDoRpcExt2 pulFlags / MAPI/HTTP Execute Flags
MAX_OUT = 0x40000
HANDLE_NONE = 0xFFFFFFFF
HEADER_EXT = struct.Struct("<HHHH")
# fixed-size property types ([MS-OXCDATA] 2.11.1): type -> size
FIXED_SIZES = {0x0002: 2, 0x0003: 4, 0x0004: 4, 0x0005: 8, 0x0006: 8, 0x0007: 8, 0x000A: 4, 0x000B: 1, 0x0014: 8,
               0x0040: 8, 0x0048: 16}


class RopMalformed(ValueError):
    """The server's ROP response could not be read as [MS-OXCROPS] says."""


class CallFailed(Exception):
    """EcDoRpcExt2 / Execute itself returned a non-zero ErrorCode (no ROP response to read)."""

    def __init__(self, operation: str, code: int):
        super().__init__(f"{operation} failed with 0x{code:08x}")
        self.operation, self.code = operation, code


@dataclass
class RopAnswer:
    rop_id: int
    code: int                                   # ReturnValue
    fields: Dict[str, object] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return NAMES.get(self.rop_id, f"0x{self.rop_id:02x}")


# ---- requests ----------------------------------------------------------------------------------------------------
@dataclass
class RopBuffer:
    """ROP requests in order and the handle table sent with them (``handles``: server object handles, with
    0xFFFFFFFF for each output slot)."""
    handles: List[int]
    rops: bytes = b""
    asked: List[Tuple[int, List[int]]] = field(default_factory=list)    # (RopId, the columns its rows carry)

    def _add(self, rop_id: int, body: bytes, columns: Optional[List[int]] = None) -> "RopBuffer":
        self.rops += bytes([rop_id]) + body
        self.asked.append((rop_id, columns or []))
        return self

    def logon(self, essdn: str, out: int) -> "RopBuffer":
        dn = essdn.encode("ascii") + b"\x00"
        return self._add(ROP_LOGON, struct.pack("<BBBLLH", 0, out, LOGON_PRIVATE, OPEN_FLAGS, 0, len(dn)) + dn)

    def open_folder(self, into: int, out: int, fid: bytes) -> "RopBuffer":
        return self._add(0x02, struct.pack("<BBB", 0, into, out) + fid + b"\x00")        # OpenModeFlags 0

    def contents_table(self, folder: int, out: int) -> "RopBuffer":
        return self._add(0x05, struct.pack("<BBBB", 0, folder, out, 0))

    def set_columns(self, table: int, columns: List[int]) -> "RopBuffer":
        return self._add(0x12, struct.pack("<BBBH", 0, table, 0, len(columns))
                         + struct.pack(f"<{len(columns)}L", *columns))

    def query_rows(self, table: int, columns: List[int], count: int) -> "RopBuffer":
        return self._add(0x15, struct.pack("<BBBBH", 0, table, 0, 1, count), columns)   # forward, advance

    def open_message(self, folder: int, out: int, fid: bytes, mid: bytes) -> "RopBuffer":
        return self._add(0x03, struct.pack("<BBBH", 0, folder, out, 0x0FFF) + fid + b"\x00" + mid)   # read-only

    def get_properties(self, obj: int, tags: List[int]) -> "RopBuffer":
        return self._add(0x07, struct.pack("<BBHHH", 0, obj, 0, 1, len(tags))
                         + struct.pack(f"<{len(tags)}L", *tags), tags)                    # no size limit, Unicode

    def payload(self) -> bytes:
        """RopSize, the ROPs, the handle table ([MS-OXCROPS] 2.2.1)."""
        return (struct.pack("<H", 2 + len(self.rops)) + self.rops
                + struct.pack(f"<{len(self.handles)}L", *self.handles))


def wrap(payload: bytes) -> bytes:
    """One RPC_HEADER_EXT segment (Version 0, Last, not compressed or obfuscated) around a ROP buffer."""
    return HEADER_EXT.pack(0, FLAG_LAST, len(payload), len(payload)) + payload


def unwrap(data: bytes) -> List[bytes]:
    """The ROP buffers of an rgbOut ([MS-OXCRPC] 3.1.4.2.1): XorMagic undone; the probe asked for no compression."""
    payloads, pos = [], 0
    while True:
        if pos + HEADER_EXT.size > len(data):
            raise RopMalformed("the RPC_HEADER_EXT is cut short")
        version, flags, size, actual = HEADER_EXT.unpack_from(data, pos)
        pos += HEADER_EXT.size
        if version != 0 or pos + size > len(data):
            raise RopMalformed(f"a bad RPC_HEADER_EXT (version {version}, size {size})")
        payload = data[pos:pos + size]
        pos += size
        if flags & FLAG_COMPRESSED:
            raise RopMalformed("the server compressed its answer although the client asked it not to")
        if flags & FLAG_XOR_MAGIC:
            payload = bytes(b ^ 0xA5 for b in payload)
        payloads.append(payload)
        if flags & FLAG_LAST:
            return payloads


# ---- responses --------------------------------------------------------------------------------------------------
class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise RopMalformed(f"the ROP response ends early (at byte {self.pos} of {len(self.data)})")
        self.pos += size
        return self.data[self.pos - size:self.pos]

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def u8(self) -> int:
        return self.take(1)[0]

    def utf16z(self) -> str:
        end = self.pos
        while self.data[end:end + 2] != b"\x00\x00":
            if end + 2 > len(self.data):
                raise RopMalformed("an unterminated UTF-16 string")
            end += 2
        return self.take(end + 2 - self.pos)[:-2].decode("utf-16-le", "replace")

    def asciiz(self) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise RopMalformed("an unterminated string")
        return self.take(end + 1 - self.pos)[:-1].decode("latin-1")


def _value(reader: _Reader, tag: int) -> object:
    kind = tag & 0xFFFF
    if kind == 0x001F:
        return reader.utf16z()
    if kind == 0x001E:
        return reader.asciiz()
    if kind == 0x0102:
        return reader.take(reader.unpack("H")[0]).hex()
    if kind in FIXED_SIZES:
        raw = reader.take(FIXED_SIZES[kind])
        if kind in (0x0002, 0x0003, 0x0004, 0x000A, 0x000B, 0x0040):
            return int.from_bytes(raw, "little")
        return raw.hex()
    raise RopMalformed(f"property type 0x{kind:04x} is not one this client asked for")


def _row(reader: _Reader, tags: List[int]) -> List[object]:
    """A PropertyRow ([MS-OXCDATA] 2.8.1): standard, or flagged (a missing value None, an error ('error', code))."""
    flagged = reader.u8()
    if flagged not in (0, 1):
        raise RopMalformed(f"a PropertyRow flag of {flagged}")
    values: List[object] = []
    for tag in tags:
        if flagged:
            flag = reader.u8()
            if flag == 0x01:
                values.append(None)
                continue
            if flag == 0x0A:
                values.append(("error", reader.unpack("L")[0]))
                continue
            if flag != 0x00:
                raise RopMalformed(f"a FlaggedPropertyValue flag of {flag}")
        values.append(_value(reader, tag))
    return values


def _typed_string(reader: _Reader) -> str:
    kind = reader.u8()
    if kind in (0x00, 0x01):
        return ""
    if kind == 0x04:
        return reader.utf16z()
    if kind in (0x02, 0x03):
        return reader.asciiz()
    raise RopMalformed(f"a TypedString of type {kind}")


def _logon(reader: _Reader, answer: RopAnswer) -> None:
    if answer.code == EC_WRONG_SERVER:
        reader.u8()                                      # LogonFlags
        answer.fields["server_dn"] = reader.take(reader.u8()).split(b"\x00", 1)[0].decode("latin-1")
        return
    if answer.code:
        return
    reader.u8()                                          # LogonFlags
    answer.fields["folders"] = {name: reader.take(8) for name in SPECIAL_FOLDERS}
    reader.u8()                                          # ResponseFlags
    answer.fields["mailbox_guid"] = str(uuid.UUID(bytes_le=reader.take(16)))
    reader.take(2 + 16 + 8 + 8 + 4)                      # ReplId, ReplGuid, LogonTime, GwartTime, StoreState


def _open_message(reader: _Reader, answer: RopAnswer) -> None:
    reader.u8()                                          # HasNamedProperties
    answer.fields["subject_prefix"] = _typed_string(reader)
    answer.fields["normalized_subject"] = _typed_string(reader)
    recipients, columns = reader.unpack("HH")
    reader.take(4 * columns)
    rows = reader.u8()
    for _ in range(rows):                                # OpenRecipientRows: type, code page, reserved, sized row
        reader.take(5)
        reader.take(reader.unpack("H")[0])
    answer.fields["recipient_count"] = recipients


def parse_response(buffer: RopBuffer, payload: bytes) -> Tuple[List[RopAnswer], List[int]]:
    """The answers to ``buffer``'s ROPs, in order, and the handle table; a RopBackoff ends the list."""
    if len(payload) < 2:
        raise RopMalformed("the ROP response is shorter than its RopSize")
    rop_size = struct.unpack_from("<H", payload)[0]
    if rop_size < 2 or rop_size > len(payload) or (len(payload) - rop_size) % 4:
        raise RopMalformed(f"RopSize {rop_size} does not fit a response of {len(payload)} bytes")
    handles = list(struct.unpack_from(f"<{(len(payload) - rop_size) // 4}L", payload, rop_size))
    if len(handles) != len(buffer.handles):             # [MS-OXCROPS] 2.2.1: the request's table, slots filled in
        raise RopMalformed(f"the handle table came back with {len(handles)} handles for {len(buffer.handles)} sent")
    reader = _Reader(payload[2:rop_size])
    answers: List[RopAnswer] = []
    for rop_id, columns in buffer.asked:
        if reader.pos == len(reader.data) or reader.data[reader.pos] == ROP_PENDING:
            break                                        # the server stopped after a failed ROP
        got = reader.u8()
        if got == ROP_BACKOFF:                           # [MS-OXCROPS] 2.2.15.2: the server is busy, nothing else
            _logon_id, duration, count = reader.unpack("BLB")
            reader.take(5 * count)                       # BackoffRopData
            reader.take(reader.unpack("H")[0])           # AdditionalData
            answers.append(RopAnswer(got, 0, {"duration_ms": duration}))
            return answers, handles
        if got != rop_id:
            raise RopMalformed(f"a response to 0x{got:02x} where {NAMES.get(rop_id)} was asked")
        _index, code = reader.unpack("BL")
        answer = RopAnswer(rop_id, code)
        answers.append(answer)
        if rop_id == ROP_LOGON:
            _logon(reader, answer)
        elif code:
            continue
        elif rop_id == 0x02:
            _rules, ghosted = reader.unpack("BB")
            if ghosted:
                answer.fields["ghosted"] = True
                _count, _cheap = reader.unpack("HH")
                for _ in range(_count):
                    reader.asciiz()
        elif rop_id == 0x05:
            answer.fields["row_count"] = reader.unpack("L")[0]
        elif rop_id == 0x12:
            answer.fields["table_status"] = reader.u8()
        elif rop_id == 0x15:
            _origin, count = reader.unpack("BH")
            answer.fields["rows"] = [_row(reader, columns) for _ in range(count)]
        elif rop_id == 0x03:
            _open_message(reader, answer)
        elif rop_id == 0x07:
            answer.fields["values"] = _row(reader, columns)
    while reader.data[reader.pos:reader.pos + 1] == bytes([ROP_PENDING]) and reader.pos + 3 <= len(reader.data):
        reader.take(3)                                   # [MS-OXCROPS] 2.2.14.3: notifications wait (SessionIndex)
    if reader.pos != len(reader.data):
        raise RopMalformed(f"{len(reader.data) - reader.pos} bytes left over in the ROP response")
    return answers, handles


# ---- EcDoRpcExt2 over RPC ([MS-OXCRPC] 3.1.4.2), NDR by hand ----------------------------------------------------
def ec_do_rpc_ext2_request(cxh: bytes, rgb_in: bytes) -> bytes:
    """pcxh, pulFlags (no compression, no XorMagic), rgbIn (conformant), cbIn, pcbOut, an empty rgbAuxIn, cbAuxIn,
    pcbAuxOut."""
    pad = b"\x00" * (-len(rgb_in) & 3)
    return (cxh + struct.pack("<LL", NO_COMPRESSION | NO_XOR_MAGIC, len(rgb_in)) + rgb_in + pad
            + struct.pack("<LLLLL", len(rgb_in), MAX_OUT, 0, 0, 0x1008))


def ec_do_rpc_ext2_response(stub: bytes) -> Tuple[int, bytes, bytes]:
    """(return value, pcxh, rgbOut): pcxh, pulFlags, rgbOut (conformant varying), pcbOut, rgbAuxOut, pcbAuxOut,
    pulTransTime, the return value."""
    reader = _Reader(stub)
    cxh = reader.take(20)
    _flags, _maximum, offset, actual = reader.unpack("LLLL")
    if offset:
        raise RopMalformed(f"rgbOut at offset {offset}")
    rgb_out = reader.take(actual)
    if len(stub) < reader.pos + 4:
        raise RopMalformed("EcDoRpcExt2's answer is cut short")
    return struct.unpack_from("<L", stub, len(stub) - 4)[0], cxh, rgb_out
