"""Message ROPs for the spec-built MAPI client ([MS-OXCROPS], [MS-OXCDATA]; no harness code): a ROP buffer builder
that remembers what it asked for, and the parser of the matching response buffer."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

TAG_SUBJECT, TAG_BODY, TAG_MESSAGE_CLASS, TAG_MID = 0x0037001F, 0x1000001F, 0x001A001F, 0x674A0014
TAG_NORMALIZED_SUBJECT, TAG_DISPLAY_NAME = 0x0E1D001F, 0x3001001F
PRIVATE_OPEN_FLAGS = 0x01000000 | 0x4 | 0x8     # USE_PER_MDB_REPLID_MAPPING | HOME_LOGON | TAKE_OWNERSHIP


def _utf16z(text: str) -> bytes:
    return text.encode("utf-16-le") + b"\x00\x00"


def _read_utf16z(data: bytes, pos: int) -> Tuple[str, int]:
    end = pos
    while data[end:end + 2] != b"\x00\x00":
        end += 2
    return data[pos:end].decode("utf-16-le"), end + 2


def property_value(tag: int, data: bytes, pos: int) -> Tuple[object, int]:
    """One property value of type ``tag & 0xFFFF`` at ``pos``, and the position after it."""
    kind = tag & 0xFFFF
    if kind == 0x001F:
        return _read_utf16z(data, pos)
    if kind == 0x001E:
        end = data.index(b"\x00", pos)
        return data[pos:end].decode("latin-1"), end + 1
    if kind == 0x0014:
        return data[pos:pos + 8], pos + 8
    if kind in (0x0003, 0x000A):
        return struct.unpack_from("<L", data, pos)[0], pos + 4
    if kind == 0x000B:
        return bool(data[pos]), pos + 1
    if kind == 0x0040:
        return struct.unpack_from("<Q", data, pos)[0], pos + 8
    if kind == 0x0102:
        size = struct.unpack_from("<H", data, pos)[0]
        return data[pos + 2:pos + 2 + size], pos + 2 + size
    if kind == 0x00FD:                                  # PtypRestriction: its bytes
        end = _restriction_end(data, pos)
        return data[pos:end], end
    if kind == 0x00FE:                                  # PtypRuleAction: NoOfActions, ActionLength-prefixed blocks
        count, end = struct.unpack_from("<H", data, pos)[0], pos + 2
        for _ in range(count):
            end += 2 + struct.unpack_from("<H", data, end)[0]
        return data[pos:end], end
    raise AssertionError(f"type {kind:#x} not in this client")


def _restriction_end(data: bytes, pos: int) -> int:
    """Where a Restriction ([MS-OXCDATA] 2.12, 16-bit counts) starting at ``pos`` ends."""
    kind, pos = data[pos], pos + 1
    if kind in (0x00, 0x01):                            # And, Or: RestrictCount, Restricts
        count, pos = struct.unpack_from("<H", data, pos)[0], pos + 2
        for _ in range(count):
            pos = _restriction_end(data, pos)
        return pos
    if kind == 0x02:                                    # Not
        return _restriction_end(data, pos)
    if kind in (0x03, 0x04):                            # Content (FuzzyLevels), Property (RelOp); tag; TaggedValue
        pos += 8 if kind == 0x03 else 5
        tag = struct.unpack_from("<L", data, pos)[0]
        return property_value(tag, data, pos + 4)[1]
    if kind in (0x05, 0x06, 0x07):                      # CompareProps, Bitmask, Size
        return pos + 9
    if kind == 0x08:                                    # Exist
        return pos + 4
    if kind in (0x09, 0x0B):                            # SubObject, Count: 4 bytes then a restriction
        return _restriction_end(data, pos + 4)
    if kind == 0x0A:                                    # Comment: TaggedValuesCount, values, RestrictionPresent
        count, pos = data[pos], pos + 1
        for _ in range(count):
            tag = struct.unpack_from("<L", data, pos)[0]
            pos = property_value(tag, data, pos + 4)[1]
        present, pos = data[pos], pos + 1
        return _restriction_end(data, pos) if present else pos
    raise AssertionError(f"restriction type {kind:#x}")


def property_row(tags: List[int], data: bytes, pos: int) -> Tuple[List[object], int]:
    """A PropertyRow: values (a missing or error value as ('error', code))."""
    flagged, pos = data[pos], pos + 1
    row: List[object] = []
    for tag in tags:
        if flagged:
            flag, pos = data[pos], pos + 1
            if flag == 0x0A:
                row.append(("error", struct.unpack_from("<L", data, pos)[0]))
                pos += 4
                continue
            if flag == 0x01:
                row.append(None)
                continue
        value, pos = property_value(tag, data, pos)
        row.append(value)
    return row, pos


@dataclass
class RopBuffer:
    """ROP requests in order; ``slots`` handle table entries (0xFFFFFFFF each, the logon's output slot 0)."""
    slots: int = 1
    rops: bytes = b""
    asked: List[Tuple[int, object]] = field(default_factory=list)   # (RopId, what the parser needs)

    def _add(self, rop_id: int, body: bytes, need: object = None) -> "RopBuffer":
        self.rops += bytes([rop_id]) + body
        self.asked.append((rop_id, need))
        return self

    def logon(self, essdn: str, out: int = 0, logon_flags: int = 0x01,
              open_flags: int = PRIVATE_OPEN_FLAGS) -> "RopBuffer":
        dn = essdn.encode("ascii") + b"\x00"
        return self._add(0xFE, struct.pack("<BBBLLH", 0, out, logon_flags, open_flags, 0, len(dn)) + dn)

    def open_folder(self, fid: bytes, source: int, out: int) -> "RopBuffer":
        return self._add(0x02, struct.pack("<BBB", 0, source, out) + fid + b"\x00")

    def contents_table(self, folder: int, out: int) -> "RopBuffer":
        return self._add(0x05, struct.pack("<BBBB", 0, folder, out, 0))

    def rules_table(self, folder: int, out: int) -> "RopBuffer":
        return self._add(0x3F, struct.pack("<BBBB", 0, folder, out, 0x40))

    def set_columns(self, table: int, tags: List[int]) -> "RopBuffer":
        return self._add(0x12, struct.pack("<BBBH", 0, table, 0, len(tags)) + struct.pack(f"<{len(tags)}L", *tags))

    def query_rows(self, table: int, tags: List[int], count: int = 100) -> "RopBuffer":
        return self._add(0x15, struct.pack("<BBBBH", 0, table, 0, 1, count), tags)

    def open_message(self, folder: int, out: int, fid: bytes, mid: bytes) -> "RopBuffer":
        return self._add(0x03, struct.pack("<BBBH", 0, folder, out, 0x0FFF) + fid + b"\x00" + mid)

    def get_props(self, obj: int, tags: List[int], size_limit: int = 0) -> "RopBuffer":
        return self._add(0x07, struct.pack("<BBHHH", 0, obj, size_limit, 1, len(tags))
                         + struct.pack(f"<{len(tags)}L", *tags), tags)

    def get_props_all(self, obj: int) -> "RopBuffer":
        return self._add(0x08, struct.pack("<BBHH", 0, obj, 0, 1))

    def open_stream(self, obj: int, out: int, tag: int) -> "RopBuffer":
        return self._add(0x2B, struct.pack("<BBBLB", 0, obj, out, tag, 0))

    def stream_size(self, stream: int) -> "RopBuffer":
        return self._add(0x5E, struct.pack("<BB", 0, stream))

    def read_stream(self, stream: int, count: int = 0xBABE, maximum: int = 0x10000) -> "RopBuffer":
        return self._add(0x2C, struct.pack("<BBH", 0, stream, count)
                         + (struct.pack("<L", maximum) if count == 0xBABE else b""))

    def create_message(self, folder: int, out: int, fid: bytes) -> "RopBuffer":
        return self._add(0x06, struct.pack("<BBBH", 0, folder, out, 0x0FFF) + fid + b"\x00")

    def set_props(self, obj: int, values: Dict[int, str]) -> "RopBuffer":
        packed = b"".join(struct.pack("<L", tag) + _utf16z(text) for tag, text in values.items())
        packed = struct.pack("<H", len(values)) + packed
        return self._add(0x0A, struct.pack("<BBH", 0, obj, len(packed)) + packed)

    def modify_recipients(self, obj: int, recipients: List[Tuple[int, str, str]]) -> "RopBuffer":
        """(RecipientType, display name, SMTP address) each, as SMTP-type RecipientRows with Unicode names."""
        rows = b""
        for row_id, (rtype, name, address) in enumerate(recipients):
            flags = 0x0003 | 0x0008 | 0x0010 | 0x0200       # SMTP type, EmailAddress, DisplayName, Unicode
            row = struct.pack("<H", flags) + _utf16z(address) + _utf16z(name) + struct.pack("<H", 0) + b"\x00"
            rows += struct.pack("<LBH", row_id, rtype, len(row)) + row
        return self._add(0x0E, struct.pack("<BBH", 0, obj, 0) + struct.pack("<H", len(recipients)) + rows)

    def save(self, obj: int) -> "RopBuffer":
        return self._add(0x0C, struct.pack("<BBBB", 0, obj, obj, 0x0C))     # KeepOpenReadWrite

    def submit(self, obj: int) -> "RopBuffer":
        return self._add(0x32, struct.pack("<BBB", 0, obj, 0))

    def delete_messages(self, folder: int, mids: List[bytes]) -> "RopBuffer":
        return self._add(0x1E, struct.pack("<BBBBH", 0, folder, 0, 0, len(mids)) + b"".join(mids))

    def receive_folder(self, message_class: str) -> "RopBuffer":
        return self._add(0x27, struct.pack("<BB", 0, 0) + message_class.encode("ascii") + b"\x00")

    # ---- tables (MS-OXCROPS 2.2.5) ----
    def hierarchy_table(self, folder: int, out: int, flags: int = 0) -> "RopBuffer":
        return self._add(0x04, struct.pack("<BBBB", 0, folder, out, flags))

    def sort_table(self, table: int, orders: List[Tuple[int, int]], categories: int = 0) -> "RopBuffer":
        """(property tag, 0 ascending / 1 descending) each."""
        packed = b"".join(struct.pack("<HHB", tag & 0xFFFF, tag >> 16, order) for tag, order in orders)
        return self._add(0x13, struct.pack("<BBBHHH", 0, table, 0, len(orders), categories, 0) + packed)

    def restrict(self, table: int, restriction: bytes) -> "RopBuffer":
        return self._add(0x14, struct.pack("<BBBH", 0, table, 0, len(restriction)) + restriction)

    def get_status(self, table: int) -> "RopBuffer":
        return self._add(0x16, struct.pack("<BB", 0, table))

    def query_position(self, table: int) -> "RopBuffer":
        return self._add(0x17, struct.pack("<BB", 0, table))

    def seek_row(self, table: int, origin: int, count: int) -> "RopBuffer":
        return self._add(0x18, struct.pack("<BBBlB", 0, table, origin, count, 1))

    def seek_row_fractional(self, table: int, numerator: int, denominator: int) -> "RopBuffer":
        return self._add(0x1A, struct.pack("<BBLL", 0, table, numerator, denominator))

    def find_row(self, table: int, restriction: bytes, tags: List[int], origin: int = 0,
                 backward: bool = False, bookmark: bytes = b"") -> "RopBuffer":
        return self._add(0x4F, struct.pack("<BBBH", 0, table, int(backward), len(restriction)) + restriction
                         + struct.pack("<BH", origin, len(bookmark)) + bookmark, tags)

    def query_columns_all(self, table: int) -> "RopBuffer":
        return self._add(0x37, struct.pack("<BB", 0, table))

    def reset_table(self, table: int) -> "RopBuffer":
        return self._add(0x81, struct.pack("<BB", 0, table))

    def get_props_list(self, obj: int) -> "RopBuffer":
        return self._add(0x09, struct.pack("<BB", 0, obj))

    # ---- folders (MS-OXCROPS 2.2.4) ----
    def create_folder(self, parent: int, out: int, name: str, *, open_existing: bool = False,
                      folder_type: int = 1, comment: str = "") -> "RopBuffer":
        return self._add(0x1C, struct.pack("<BBBBBBB", 0, parent, out, folder_type, 1, int(open_existing), 0)
                         + _utf16z(name) + _utf16z(comment))

    def delete_folder(self, parent: int, fid: bytes, flags: int) -> "RopBuffer":
        return self._add(0x1D, struct.pack("<BBB", 0, parent, flags) + fid)

    def move_copy_messages(self, source: int, dest: int, mids: List[bytes], copy: bool) -> "RopBuffer":
        return self._add(0x33, struct.pack("<BBBH", 0, source, dest, len(mids)) + b"".join(mids)
                         + struct.pack("<BB", 0, int(copy)))

    def move_folder(self, source: int, dest: int, fid: bytes, new_name: str) -> "RopBuffer":
        return self._add(0x35, struct.pack("<BBBBB", 0, source, dest, 0, 1) + fid + _utf16z(new_name))

    def copy_folder(self, source: int, dest: int, fid: bytes, new_name: str, recursive: bool = True) -> "RopBuffer":
        return self._add(0x36, struct.pack("<BBBBBB", 0, source, dest, 0, int(recursive), 1) + fid
                         + _utf16z(new_name))

    def empty_folder(self, folder: int, hard: bool = False) -> "RopBuffer":
        return self._add(0x92 if hard else 0x58, struct.pack("<BBBB", 0, folder, 0, 0))

    # ---- rules and the logon (MS-OXCROPS 2.2.11, 2.2.3) ----
    def modify_rules(self, folder: int, rows: List[Tuple[int, List[bytes]]], flags: int = 0) -> "RopBuffer":
        """(RuleDataFlags, [TaggedPropertyValue bytes]) each."""
        data = b"".join(struct.pack("<BH", row_flags, len(values)) + b"".join(values) for row_flags, values in rows)
        return self._add(0x41, struct.pack("<BBBH", 0, folder, flags, len(rows)) + data)

    def long_term_id_from_id(self, logon: int, object_id: bytes) -> "RopBuffer":
        return self._add(0x43, struct.pack("<BB", 0, logon) + object_id)

    def id_from_long_term_id(self, logon: int, long_term_id: bytes) -> "RopBuffer":
        return self._add(0x44, struct.pack("<BB", 0, logon) + long_term_id)

    def per_user_long_term_ids(self, logon: int, database_guid: bytes) -> "RopBuffer":
        return self._add(0x60, struct.pack("<BB", 0, logon) + database_guid)

    def payload(self) -> bytes:
        return struct.pack("<H", 2 + len(self.rops)) + self.rops + b"\xff\xff\xff\xff" * self.slots


@dataclass
class Answer:
    rop_id: int
    code: int
    fields: Dict[str, object]


def parse_answers(buffer: RopBuffer, payload: bytes) -> Tuple[List[Answer], List[int]]:
    """The responses to ``buffer``'s ROPs (RopRelease has none) and the handle table."""
    rop_size = struct.unpack_from("<H", payload)[0]
    rops, handle_bytes = payload[2:rop_size], payload[rop_size:]
    handles = list(struct.unpack(f"<{len(handle_bytes) // 4}L", handle_bytes))
    answers, pos = [], 0
    for rop_id, need in buffer.asked:
        if pos >= len(rops):
            break
        got, _index, code = struct.unpack_from("<BBL", rops, pos)
        assert got == rop_id, (hex(got), hex(rop_id))
        pos += 6
        fields: Dict[str, object] = {}
        if code == 0x503 and rop_id in (0x33, 0x35, 0x36):     # ecDstNullObject: DestHandleIndex, Partial
            fields["dest_index"], fields["partial"] = struct.unpack_from("<LB", rops, pos)
            pos += 5
            answers.append(Answer(rop_id, code, fields))
            continue
        if not code and rop_id in _PARSERS:
            pos = _PARSERS[rop_id](rops, pos, fields, need)
            answers.append(Answer(rop_id, code, fields))
            continue
        if code and rop_id != 0x2C:
            answers.append(Answer(rop_id, code, fields))
            continue
        if rop_id == 0xFE:
            fields["fids"] = [rops[pos + 1 + 8 * i:pos + 9 + 8 * i] for i in range(13)]
            pos += 1 + 8 * 13 + 1 + 16 + 2 + 16 + 8 + 8 + 4
        elif rop_id in (0x04, 0x05):
            fields["rows"] = struct.unpack_from("<L", rops, pos)[0]
            pos += 4
        elif rop_id == 0x12:
            pos += 1
        elif rop_id == 0x15:
            _origin, count = struct.unpack_from("<BH", rops, pos)
            pos += 3
            rows = []
            for _ in range(count):
                row, pos = property_row(need, rops, pos)     # type: ignore[arg-type]
                rows.append(row)
            fields["rows"] = rows
        elif rop_id == 0x03:
            pos += 1                                          # HasNamedProperties
            for name in ("prefix", "normalized_subject"):
                kind, pos = rops[pos], pos + 1
                fields[name] = "" if kind in (0, 1) else None
                if kind == 0x04:
                    fields[name], pos = _read_utf16z(rops, pos)
                elif kind in (0x02, 0x03):
                    end = rops.index(b"\x00", pos)
                    fields[name], pos = rops[pos:end].decode("latin-1"), end + 1
            fields["recipients"], columns = struct.unpack_from("<HH", rops, pos)
            pos += 4 + 4 * columns
            assert rops[pos] == 0, "this client reads no recipient rows"
            pos += 1
        elif rop_id == 0x07:
            fields["values"], pos = property_row(need, rops, pos)     # type: ignore[arg-type]
        elif rop_id == 0x08:
            count = struct.unpack_from("<H", rops, pos)[0]
            pos += 2
            values = {}
            for _ in range(count):
                tag = struct.unpack_from("<L", rops, pos)[0]
                values[tag], pos = property_value(tag, rops, pos + 4)
            fields["values"] = values
        elif rop_id in (0x2B, 0x5E):
            fields["size"] = struct.unpack_from("<L", rops, pos)[0]
            pos += 4
        elif rop_id == 0x2C:
            size = struct.unpack_from("<H", rops, pos)[0]
            fields["data"] = rops[pos + 2:pos + 2 + size]
            pos += 2 + size
        elif rop_id == 0x06:
            has_mid, pos = rops[pos], pos + 1
            fields["mid"] = rops[pos:pos + 8] if has_mid else None
            pos += 8 if has_mid else 0
        elif rop_id == 0x0A:
            problems = struct.unpack_from("<H", rops, pos)[0]
            fields["problems"] = problems
            pos += 2 + 10 * problems                 # PropertyProblem: Index, PropertyTag, ErrorCode
        elif rop_id == 0x0C:
            fields["mid"] = rops[pos + 1:pos + 9]
            pos += 9
        elif rop_id == 0x1E:
            fields["partial"] = rops[pos]
            pos += 1
        elif rop_id == 0x27:
            fields["fid"] = rops[pos:pos + 8]
            end = rops.index(b"\x00", pos + 8)
            fields["explicit_class"] = rops[pos + 8:end].decode("ascii")
            pos = end + 1
        answers.append(Answer(rop_id, code, fields))
    assert pos == len(rops), "bytes left over in the ROP response"
    return answers, handles


def _table_status(rops: bytes, pos: int, fields: Dict[str, object], need: object) -> int:
    fields["status"] = rops[pos]
    return pos + 1


def _tags(rops: bytes, pos: int, fields: Dict[str, object], need: object) -> int:
    count = struct.unpack_from("<H", rops, pos)[0]
    fields["tags"] = list(struct.unpack_from(f"<{count}L", rops, pos + 2))
    return pos + 2 + 4 * count


def _position(rops: bytes, pos: int, fields: Dict[str, object], need: object) -> int:
    fields["numerator"], fields["denominator"] = struct.unpack_from("<LL", rops, pos)
    return pos + 8


def _seek(rops: bytes, pos: int, fields: Dict[str, object], need: object) -> int:
    fields["sought_less"], fields["sought"] = struct.unpack_from("<Bl", rops, pos)
    return pos + 5


def _find(rops: bytes, pos: int, fields: Dict[str, object], need: object) -> int:
    fields["no_longer_visible"], has_row = struct.unpack_from("<BB", rops, pos)
    pos += 2
    fields["row"] = None
    if has_row:
        fields["row"], pos = property_row(need, rops, pos)     # type: ignore[arg-type]
    return pos


def _create_folder(rops: bytes, pos: int, fields: Dict[str, object], need: object) -> int:
    fields["fid"], fields["existing"] = rops[pos:pos + 8], rops[pos + 8]
    pos += 9
    if fields["existing"]:
        fields["has_rules"], ghosted = rops[pos], rops[pos + 1]
        assert not ghosted, "this client reads no ghosted-folder server lists"
        pos += 2
    return pos


def _partial(rops: bytes, pos: int, fields: Dict[str, object], need: object) -> int:
    fields["partial"] = rops[pos]
    return pos + 1


def _nothing(rops: bytes, pos: int, fields: Dict[str, object], need: object) -> int:
    return pos


def _long_term_id(rops: bytes, pos: int, fields: Dict[str, object], need: object) -> int:
    fields["long_term_id"] = rops[pos:pos + 24]
    return pos + 24


def _object_id(rops: bytes, pos: int, fields: Dict[str, object], need: object) -> int:
    fields["object_id"] = rops[pos:pos + 8]
    return pos + 8


def _long_term_ids(rops: bytes, pos: int, fields: Dict[str, object], need: object) -> int:
    count = struct.unpack_from("<H", rops, pos)[0]
    fields["ids"] = [rops[pos + 2 + 24 * i:pos + 26 + 24 * i] for i in range(count)]
    return pos + 2 + 24 * count


def _open_folder(rops: bytes, pos: int, fields: Dict[str, object], need: object) -> int:
    fields["has_rules"], fields["ghosted"] = rops[pos], rops[pos + 1]
    return pos + 2


# Success-response readers by RopId for the table, folder, rule and logon ROPs: (rops, pos, fields, need) -> pos
_PARSERS = {0x02: _open_folder, 0x13: _table_status, 0x14: _table_status, 0x16: _table_status, 0x17: _position,
            0x18: _seek, 0x1A: _nothing, 0x4F: _find, 0x37: _tags, 0x09: _tags, 0x81: _nothing,
            0x1C: _create_folder, 0x1D: _partial, 0x33: _partial, 0x35: _partial, 0x36: _partial, 0x58: _partial,
            0x92: _partial, 0x41: _nothing, 0x43: _long_term_id, 0x44: _object_id, 0x60: _long_term_ids}


def by_rop(answers: List[Answer], rop_id: int) -> Answer:
    return next(answer for answer in answers if answer.rop_id == rop_id)


def only(answers: List[Answer], rop_id: int) -> Optional[Answer]:
    found = [answer for answer in answers if answer.rop_id == rop_id]
    return found[-1] if found else None
