"""ROP restrictions ([MS-OXCDATA] 2.12, the ROP-buffer layout with 16-bit counts) built by hand for the spec-built
client: no harness code, so the server's parser is checked against the spec's layout, not against itself."""
from __future__ import annotations

import struct


def _utf16z(text: str) -> bytes:
    return text.encode("utf-16-le") + b"\x00\x00"


def content(tag: int, text: str, low: int = 1, high: int = 1) -> bytes:
    """ContentRestriction: FuzzyLevelLow (1 substring, 2 prefix), FuzzyLevelHigh (1 ignore case), the tag, then
    the TaggedPropertyValue."""
    return bytes([0x03]) + struct.pack("<HHLL", low, high, tag, tag) + _utf16z(text)


def prop_long(relop: int, tag: int, value: int) -> bytes:
    return bytes([0x04]) + struct.pack("<BLLl", relop, tag, tag, value)


def and_(*parts: bytes) -> bytes:
    return bytes([0x00]) + struct.pack("<H", len(parts)) + b"".join(parts)


def or_(*parts: bytes) -> bytes:
    return bytes([0x01]) + struct.pack("<H", len(parts)) + b"".join(parts)


def not_(part: bytes) -> bytes:
    return bytes([0x02]) + part


def exist(tag: int) -> bytes:
    return bytes([0x08]) + struct.pack("<L", tag)


def bitmask(relop: int, tag: int, mask: int) -> bytes:
    return bytes([0x06]) + struct.pack("<BLL", relop, tag, mask)
