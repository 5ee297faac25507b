"""The side files of ``serve --rpc-capture``: the inner PDU byte stream of one RPC over HTTP virtual connection.

``STATE_DIR/rpc/<vc>.bin`` (``<vc>``: the transcript's ``vc`` label, the first 8 hex digits of the virtual
connection cookie) starts with ``MAGIC`` and the full 16-byte cookie, then one record per PDU in the order the proxy
handled them: little-endian float64 Unix time, one byte (1: from the client, 0: from the server), uint32 length, the
PDU. Raw PDUs stay out of the transcript (they would swell it, and sealed stubs are no use to read there);
``mockex export pcap`` turns these files into a pcapng Wireshark dissects.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import List, Tuple

CAPTURE_DIR = "rpc"
SUFFIX = ".bin"
MAGIC = b"mockex-rpc-capture/1\n"
COOKIE_SIZE = 16
RECORD = struct.Struct("<dBI")


class CaptureError(ValueError):
    """A side file that is not a capture, or is torn before its first record."""


@dataclass(frozen=True)
class CapturedPdu:
    time: float
    from_client: bool
    pdu: bytes


def file_header(cookie: bytes) -> bytes:
    return MAGIC + cookie[:COOKIE_SIZE].ljust(COOKIE_SIZE, b"\x00")


def encode_record(time: float, from_client: bool, pdu: bytes) -> bytes:
    return RECORD.pack(time, 1 if from_client else 0, len(pdu)) + pdu


def decode_capture(data: bytes) -> Tuple[bytes, List[CapturedPdu]]:
    """(cookie, PDUs) of one side file. A record torn by a server still writing (or killed) ends the list."""
    start = len(MAGIC) + COOKIE_SIZE
    if not data.startswith(MAGIC) or len(data) < start:
        raise CaptureError("not an RPC capture file")
    cookie, pdus, offset = data[len(MAGIC):start], [], start
    while offset + RECORD.size <= len(data):
        time, from_client, length = RECORD.unpack_from(data, offset)
        end = offset + RECORD.size + length
        if end > len(data):
            break
        pdus.append(CapturedPdu(time, bool(from_client), data[offset + RECORD.size:end]))
        offset = end
    return cookie, pdus
