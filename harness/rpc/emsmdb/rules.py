"""RopModifyRules (MS-OXCROPS 2.2.11.1, MS-OXORULE 2.2.1/3.2.5.2): add, modify and remove rows of a folder's rules
table, stored with the folder in the shared mailbox store, so RopGetRulesTable (messages.py) lists them in every
later session.

A rule is kept as the properties the client sent, its condition (PtypRestriction) and actions (PtypRuleAction) as
their ROP bytes, which the rules table hands back unchanged. The store gives each new rule its PidTagRuleId (replica
id 1 + a 6-byte counter, the FID layout); PidTagRuleSequence defaults to one above the folder's highest,
PidTagRuleState and PidTagRuleLevel to 0. The rules are not run against arriving mail.

Bytes in, bytes out, the ``run_*`` shape of rops.py.
"""
from __future__ import annotations

import struct
from typing import Dict, List, Tuple

from harness.mailbox.store import Rule
from harness.rpc.emsmdb.idl import EC_NONE, EC_NOT_FOUND
from harness.rpc.emsmdb.restrictions import TooComplex, parse, read_value
from harness.rpc.emsmdb.rops import (
    EC_INVALID_PARAMETER,
    EC_NULL_OBJECT,
    PT_RESTRICTION,
    PT_RULE_ACTION,
    FolderObject,
    ObjectMap,
    _fail,
    _need,
)

ROP_MODIFY_RULES = 0x41
MODIFY_RULES_FLAG_REPLACE = 0x01
ROW_ADD, ROW_MODIFY, ROW_REMOVE = 0x01, 0x02, 0x04
RULE_ID, RULE_SEQUENCE, RULE_STATE, RULE_LEVEL = 0x6674, 0x6676, 0x6677, 0x6683
RULE_CONDITION, RULE_ACTIONS, RULE_PROVIDER = 0x6679, 0x6680, 0x6681
_REQUIRED_TO_ADD = (RULE_CONDITION, RULE_ACTIONS, RULE_PROVIDER)


def _rule_action_end(data: bytes, pos: int) -> int:
    """The end of a RuleAction (MS-OXORULE 2.2.5, ROP buffer widths): NoOfActions, then ActionLength-prefixed
    blocks."""
    _need(data, pos, 2, "RuleAction")
    count, pos = struct.unpack_from("<H", data, pos)[0], pos + 2
    for _ in range(count):
        _need(data, pos, 2, "ActionBlock")
        size = struct.unpack_from("<H", data, pos)[0]
        _need(data, pos + 2, size, "ActionBlock")
        pos += 2 + size
    return pos


def _read_rule_value(data: bytes, pos: int) -> Tuple[int, object, int]:
    """(tag, value, next position) of one TaggedPropertyValue of a RuleData; conditions and actions as bytes."""
    _need(data, pos, 4, "TaggedPropertyValue")
    tag = struct.unpack_from("<L", data, pos)[0]
    start = pos + 4
    try:
        if tag & 0xFFFF == PT_RESTRICTION:
            _, end = parse(data, start)
            return tag, data[start:end], end
        if tag & 0xFFFF == PT_RULE_ACTION:
            end = _rule_action_end(data, start)
            return tag, data[start:end], end
        value, end = read_value(tag & 0xFFFF, data, start)
    except TooComplex as error:    # no size field: nothing after it could be read
        raise ValueError(f"RuleData value not modelled: {error}") from error
    return tag, value, end


def _rule_counter(props: Dict[int, object]) -> int:
    value = props.get(RULE_ID)
    if not isinstance(value, int):
        return -1
    raw = (value & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
    return int.from_bytes(raw[2:], "big") if raw[:2] == b"\x01\x00" else -1


def run_modify_rules(rops: bytes, pos: int, handles: List[int], objects: ObjectMap) -> Tuple[bytes, int]:
    _need(rops, pos, 6, "RopModifyRules")
    _, _, in_index, flags, count = struct.unpack_from("<BBBBH", rops, pos)
    at = pos + 6
    rows: List[Tuple[int, Dict[int, object]]] = []
    for _ in range(count):
        _need(rops, at, 3, "RuleData")
        row_flags, value_count = struct.unpack_from("<BH", rops, at)
        at += 3
        props: Dict[int, object] = {}
        for _ in range(value_count):
            tag, value, at = _read_rule_value(rops, at)
            props[tag >> 16] = value
        rows.append((row_flags, props))
    folder = objects.at(handles, in_index)
    if not isinstance(folder, FolderObject):
        return _fail(ROP_MODIFY_RULES, in_index, EC_NULL_OBJECT), at
    if flags & ~MODIFY_RULES_FLAG_REPLACE or any(row_flags not in (ROW_ADD, ROW_MODIFY, ROW_REMOVE)
                                                  for row_flags, _ in rows):
        return _fail(ROP_MODIFY_RULES, in_index, EC_INVALID_PARAMETER), at
    if flags & MODIFY_RULES_FLAG_REPLACE and any(row_flags != ROW_ADD for row_flags, _ in rows):
        return _fail(ROP_MODIFY_RULES, in_index, EC_INVALID_PARAMETER), at
    if any(row_flags == ROW_ADD and any(props.get(prop) is None for prop in _REQUIRED_TO_ADD)
           for row_flags, props in rows):
        return _fail(ROP_MODIFY_RULES, in_index, EC_INVALID_PARAMETER), at
    rules = [] if flags & MODIFY_RULES_FLAG_REPLACE else list(folder.folder.rules)
    by_id = {rule.rule_id: rule for rule in rules}
    if any(row_flags != ROW_ADD and _rule_counter(props) not in by_id for row_flags, props in rows):
        return _fail(ROP_MODIFY_RULES, in_index, EC_NOT_FOUND), at
    owner = folder.folder.owner
    for row_flags, props in rows:            # all checked first: a failing request changes nothing
        if row_flags == ROW_ADD:
            props.pop(RULE_ID, None)             # the store names new rules
            highest = max((int(rule.props.get(RULE_SEQUENCE) or 0) for rule in rules), default=0)  # type: ignore
            defaults = {RULE_SEQUENCE: highest + 1, RULE_STATE: 0, RULE_LEVEL: 0}
            rules.append(Rule(owner.next_rule_id(), {**defaults, **props}))
            continue
        rule = by_id[_rule_counter(props)]
        if row_flags == ROW_REMOVE:
            rules.remove(rule)
        else:
            rule.props.update({prop: value for prop, value in props.items() if prop != RULE_ID})
    folder.folder.rules = rules
    folder.folder.change_number = owner.next_change()
    return struct.pack("<BBL", ROP_MODIFY_RULES, in_index, EC_NONE), at


HANDLERS = {ROP_MODIFY_RULES: run_modify_rules}
