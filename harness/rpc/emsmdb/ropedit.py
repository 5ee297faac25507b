"""The ``rop_answer`` fault hook: a ROP response buffer (MS-OXCROPS 2.2.1) edited after the ROPs ran, before it is
framed in RPC_HEADER_EXT, so the same edit reaches EcDoRpcExt2 (RPC over HTTP) and Execute (MAPI over HTTP).

What an edit can do, each within what a ROP parser still reads unless the edit is about the framing: give one ROP a
ReturnValue of choice (its response becomes the error form, RopId + handle index + ReturnValue, MS-OXCROPS 2.2.2;
ecServerBusy with a back-off becomes a RopBackoff in its place), write another handle index into its response,
change or shorten the server object handle table, change a RopQueryRows answer (its RowCount alone, no rows, each
row twice, the last row gone; cells as errors, absent, other text, empty), cut one ROP's response short, append a
RopPending or a RopNotify nobody registered for, and set or clear RPC_HEADER_EXT Flags without doing what they say.

Bytes in, bytes out: the server (server.py) hands the responses, the handle table and how to find a table's
columns; no session state is kept here.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from harness.hooks import hookspec
from harness.rpc.emsmdb.codec import FLAG_COMPRESSED, FLAG_LAST, FLAG_XOR_MAGIC, HEADER_EXT, ROP_BACKOFF

# The ROPs an edit can name ([MS-OXCROPS] 2.2), by the names the spec gives them.
ROP_IDS: Dict[str, int] = {
    "RopLogon": 0xFE, "RopOpenFolder": 0x02, "RopOpenMessage": 0x03, "RopGetHierarchyTable": 0x04,
    "RopGetContentsTable": 0x05, "RopCreateMessage": 0x06, "RopGetPropertiesSpecific": 0x07,
    "RopGetPropertiesAll": 0x08, "RopGetPropertiesList": 0x09, "RopSetProperties": 0x0A,
    "RopSaveChangesMessage": 0x0C, "RopSetColumns": 0x12, "RopSortTable": 0x13, "RopRestrict": 0x14,
    "RopQueryRows": 0x15, "RopGetStatus": 0x16, "RopQueryPosition": 0x17, "RopSeekRow": 0x18,
    "RopCreateFolder": 0x1C, "RopDeleteFolder": 0x1D, "RopDeleteMessages": 0x1E, "RopGetAttachmentTable": 0x21,
    "RopOpenAttachment": 0x22, "RopRegisterNotification": 0x29, "RopOpenStream": 0x2B, "RopReadStream": 0x2C,
    "RopFindRow": 0x4F, "RopGetRulesTable": 0x3F, "RopModifyRules": 0x41, "RopSubmitMessage": 0x32,
}
# ROPs whose response's second byte is an OutputHandleIndex: failing them leaves that slot without an object.
CREATING = {0xFE, 0x02, 0x03, 0x04, 0x05, 0x06, 0x1C, 0x21, 0x22, 0x29, 0x2B, 0x3F}
ROP_QUERY_ROWS, ROP_NOTIFY, ROP_PENDING = 0x15, 0x2A, 0x6E
HANDLE_NONE = 0xFFFFFFFF
EC_NOT_FOUND = 0x8004010F
ROW_ACTIONS = ("none", "duplicate", "drop-last")
CELL_ACTIONS = ("error", "absent", "text", "empty")
APPENDED = ("pending", "notify")
REST = ("drop", "keep")
HEADER_FLAGS = {"compressed": FLAG_COMPRESSED, "xor-magic": FLAG_XOR_MAGIC, "last": FLAG_LAST}
# PropertyValue sizes of the fixed-size types ([MS-OXCDATA] 2.11.1)
FIXED_SIZES = {0x0002: 2, 0x0003: 4, 0x0004: 4, 0x0005: 8, 0x0006: 8, 0x0007: 8, 0x000A: 4, 0x000B: 1, 0x0014: 8,
               0x0040: 8, 0x0048: 16}
PT_STRING8, PT_UNICODE, PT_BINARY = 0x001E, 0x001F, 0x0102
# Bytes of edited RopQueryRows rows at most, so that RopSize (a u16) still covers the buffer with the other ROPs.
ROWS_BUDGET = 0x8000
MAX_TEXT = 8000          # characters of a cell's text (16 KB in UTF-16, a row still fits the budget)


@dataclass(frozen=True)
class RopResponse:
    rop_id: int
    logon_id: int          # the request's LogonId (a RopBackoff names it)
    data: bytes            # the response, RopId first


@dataclass(frozen=True)
class CellChange:
    action: str            # CELL_ACTIONS
    column: int            # index in the columns RopSetColumns set
    value: object = None  # error: the code (default ecNotFound); text: the text


Cell = Tuple[int, bytes]   # (FlaggedPropertyValue flag: 0 value, 1 absent, 0x0A error; the value's bytes)


@dataclass(frozen=True)
class RopAnswerEdit:
    """One edit of a ROP response buffer; ``rop`` names the ROP (its first response in the buffer) that the
    per-ROP edits change, and without it the buffer edits apply to every buffer."""
    rop: Optional[int] = None
    return_value: Optional[int] = None
    backoff_ms: Optional[int] = None
    rest: str = "drop"
    output_index: Optional[int] = None
    handle_index: Optional[int] = None
    handle_value: int = HANDLE_NONE
    handles_dropped: int = 0
    row_count: Optional[int] = None
    rows: Optional[str] = None
    cells: Tuple[CellChange, ...] = ()
    truncate: Optional[int] = None
    append: Optional[str] = None
    flags_set: int = 0
    flags_clear: int = 0

    def describe(self) -> str:
        name = next((n for n, i in ROP_IDS.items() if i == self.rop), f"0x{self.rop:02x}") if self.rop else "any ROP"
        parts = [f"{k}={v}" for k, v in (("return_value", self.return_value), ("backoff_ms", self.backoff_ms),
                                         ("output_index", self.output_index), ("handle_index", self.handle_index),
                                         ("row_count", self.row_count), ("rows", self.rows),
                                         ("truncate", self.truncate), ("append", self.append)) if v is not None]
        if self.handles_dropped:
            parts.append(f"handles_dropped={self.handles_dropped}")
        if self.cells:
            parts.append("cells=" + ",".join(f"{c.action}@{c.column}" for c in self.cells))
        if self.flags_set or self.flags_clear:
            parts.append(f"header flags +0x{self.flags_set:x} -0x{self.flags_clear:x}")
        return f"{name}: " + (", ".join(parts) or "unchanged")

    def applies(self, rop_ids: Tuple[int, ...]) -> bool:
        return self.rop is None or self.rop in rop_ids

    # ---- the ROP buffer ------------------------------------------------------------------------------------------
    def edit_rops(self, responses: List[RopResponse], handles: List[int],
                  columns_of: Callable[[int], Optional[List[int]]]) -> Tuple[List[RopResponse], List[int]]:
        """The responses and handle table after the edit; ``columns_of(input handle index)``: a table's columns."""
        responses, handles = list(responses), list(handles)
        at = next((i for i, r in enumerate(responses) if r.rop_id == self.rop), None)
        if at is not None:
            responses = self._edit_one(responses, at, handles, columns_of)
        if self.handle_index is not None and self.handle_index < len(handles):
            handles[self.handle_index] = self.handle_value
        if self.handles_dropped:
            handles = handles[:max(0, len(handles) - self.handles_dropped)]
        if self.append == "pending":
            responses.append(RopResponse(ROP_PENDING, 0, struct.pack("<BH", ROP_PENDING, 0)))
        elif self.append == "notify":     # a TableModified / TableChanged on a handle nothing registered on
            target = handles[-1] if handles else HANDLE_NONE
            responses.append(RopResponse(ROP_NOTIFY, 0, struct.pack("<BLBHH", ROP_NOTIFY, target, 0, 0x0100, 1)))
        return responses, handles

    def _edit_one(self, responses: List[RopResponse], at: int, handles: List[int],
                  columns_of: Callable[[int], Optional[List[int]]]) -> List[RopResponse]:
        response = responses[at]
        data = response.data
        if self.backoff_ms is not None:   # MS-OXCROPS 2.2.15.2: this ROP delayed, nothing after it answered
            backoff = (struct.pack("<BBLB", ROP_BACKOFF, response.logon_id, self.backoff_ms, 1)
                       + struct.pack("<BL", response.rop_id, self.backoff_ms) + struct.pack("<H", 0))
            return responses[:at] + [RopResponse(ROP_BACKOFF, response.logon_id, backoff)]
        if self.return_value is not None and len(data) >= 2:
            data = struct.pack("<BBL", response.rop_id, data[1], self.return_value)
            if response.rop_id in CREATING and data[1] < len(handles):
                handles[data[1]] = HANDLE_NONE
            if self.rest == "drop":
                responses = responses[:at + 1]
        elif response.rop_id == ROP_QUERY_ROWS and len(data) >= 9 and data[2:6] == b"\x00" * 4:
            data = self._edit_rows(data, columns_of(data[1]))
        if self.output_index is not None and len(data) >= 2:
            data = data[:1] + bytes([self.output_index]) + data[2:]
        if self.truncate is not None:
            data = data[:self.truncate]
        responses[at] = RopResponse(response.rop_id, response.logon_id, data)
        return responses

    def _edit_rows(self, data: bytes, columns: Optional[List[int]]) -> bytes:
        """A successful RopQueryRows response: RopId, InputHandleIndex, ReturnValue, Origin, RowCount, rows."""
        count = struct.unpack_from("<H", data, 7)[0]
        head, body = data[:7], data[9:]
        if self.rows is not None or self.cells:
            rows = parse_rows(body, count, columns) if columns is not None else None
            if rows is not None:
                rows = [edit_cells(row, columns or [], self.cells) for row in rows] if self.cells else rows
                rows = {"none": [], "duplicate": [r for r in rows for _ in (0, 1)],
                        "drop-last": rows[:-1]}.get(self.rows or "", rows)
                encoded = fitting([encode_row(row) for row in rows], ROWS_BUDGET)
                count, body = len(encoded), b"".join(encoded)
        if self.row_count is not None:
            count = self.row_count
        return head + struct.pack("<H", count & 0xFFFF) + body

    # ---- the framing ---------------------------------------------------------------------------------------------
    def edit_framing(self, rgb_out: bytes) -> bytes:
        """Every RPC_HEADER_EXT's Flags set/cleared, the payloads left as they are."""
        if not (self.flags_set or self.flags_clear):
            return rgb_out
        out, pos = bytearray(rgb_out), 0
        while pos + HEADER_EXT.size <= len(out):
            version, flags, size, actual = HEADER_EXT.unpack_from(out, pos)
            HEADER_EXT.pack_into(out, pos, version, (flags | self.flags_set) & ~self.flags_clear & 0xFFFF, size,
                                 actual)
            pos += HEADER_EXT.size + size
        return bytes(out)


# ---- PropertyRows ([MS-OXCDATA] 2.8.1), read back with the table's columns ---------------------------------------
def _value_size(body: bytes, pos: int, prop_type: int) -> Optional[int]:
    if prop_type in FIXED_SIZES:
        return FIXED_SIZES[prop_type]
    if prop_type == PT_UNICODE:
        end = pos
        while end + 2 <= len(body) and body[end:end + 2] != b"\x00\x00":
            end += 2
        return end + 2 - pos
    if prop_type == PT_STRING8:
        end = body.find(b"\x00", pos)
        return None if end < 0 else end + 1 - pos
    if prop_type == PT_BINARY and pos + 2 <= len(body):
        return 2 + struct.unpack_from("<H", body, pos)[0]
    return None


def parse_rows(body: bytes, count: int, columns: List[int]) -> Optional[List[List[Cell]]]:
    """The rows as cells, or None when they cannot be read back (a type whose size this cannot tell)."""
    rows, pos = [], 0
    for _ in range(count):
        if pos >= len(body):
            return None
        flagged = body[pos]
        pos += 1
        cells: List[Cell] = []
        for tag in columns:
            flag = 0
            if flagged:
                flag = body[pos]
                pos += 1
                if flag == 0x01:
                    cells.append((flag, b""))
                    continue
            size = 4 if flag == 0x0A else _value_size(body, pos, tag & 0xFFFF)
            if size is None or pos + size > len(body):
                return None
            cells.append((flag, body[pos:pos + size]))
            pos += size
        rows.append(cells)
    return rows if pos == len(body) else None


def edit_cells(row: List[Cell], columns: List[int], changes: Tuple[CellChange, ...]) -> List[Cell]:
    row = list(row)
    for change in changes:
        if change.column >= len(row):
            continue
        prop_type = columns[change.column] & 0xFFFF
        if change.action == "error":
            code = change.value if isinstance(change.value, int) else EC_NOT_FOUND
            row[change.column] = (0x0A, struct.pack("<L", code & 0xFFFFFFFF))
        elif change.action == "absent":
            row[change.column] = (0x01, b"")
        elif change.action == "text" and prop_type in (PT_UNICODE, PT_STRING8):
            text = str(change.value or "")
            raw = (text.encode("utf-16-le", "surrogatepass") + b"\x00\x00" if prop_type == PT_UNICODE
                   else text.encode("latin-1", "replace") + b"\x00")
            row[change.column] = (0, raw)
        elif change.action == "empty":
            empty = {PT_UNICODE: b"\x00\x00", PT_STRING8: b"\x00", PT_BINARY: b"\x00\x00"}.get(
                prop_type, b"\x00" * FIXED_SIZES.get(prop_type, 0))
            row[change.column] = (0, empty)
    return row


def fitting(rows: List[bytes], budget: int) -> List[bytes]:
    """The first rows that fit in ``budget`` bytes: a store sends fewer rows than asked when they do not fit."""
    kept, size = [], 0
    for row in rows:
        size += len(row)
        if size > budget:
            break
        kept.append(row)
    return kept


def encode_row(row: List[Cell]) -> bytes:
    """A StandardPropertyRow when every cell is a value, else a FlaggedPropertyRow."""
    if all(flag == 0 for flag, _ in row):
        return b"\x00" + b"".join(value for _, value in row)
    return b"\x01" + b"".join(bytes([flag]) + value for flag, value in row)


@hookspec(fires_in="rpc/emsmdb/server.py",
          means="the ROP response buffer edited (a ROP's ReturnValue, handles, RopQueryRows rows, RopPending/"
                "RopNotify appended, RPC_HEADER_EXT flags) for a buffer holding responses to these RopIds")
def rop_answer_hook(rop_ids: Tuple[int, ...]) -> RopAnswerEdit: ...
