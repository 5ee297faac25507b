"""The inner RPC traffic that ``serve --rpc-capture`` recorded, as a pcapng Wireshark dissects by interface and
operation name (NspiBind, NspiQueryRows, EcDoConnectEx, ...).

Each virtual connection becomes one synthetic TCP connection (handshake, then its PDUs cut into MSS-sized segments
with consistent sequence and acknowledgement numbers, so Wireshark reassembles fragments) from 192.0.2.1 (port
49152 + N) to 192.0.2.2 port ``SERVER_PORT``: the RTS PDUs of RPC over HTTP (CONN/A1 ... flow control acks) and the
DCE/RPC PDUs in the order the proxy handled them, timestamped when it did. The frames are raw IPv4
(LINKTYPE_RAW); the first of each connection carries a comment naming the virtual connection as the transcript
does (``vc``).

Port: one port serves all three interfaces, since Wireshark picks the NSPI, RFR or EMSMDB dissector from the
interface UUID of the BIND, not from the port. Exchange's own ports 6001-6004 are X11 in Wireshark's port table, so
they would need ``-d tcp.port==6004,dcerpc``; 135 (the endpoint mapper's port) is handed to DCE/RPC by Wireshark's
TCP heuristics without any option, so that is the port used.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator, List, Tuple

from harness import __version__
from harness.export.har import ExportError
from harness.protocols.rpccapture import CAPTURE_DIR, SUFFIX, CapturedPdu, CaptureError, decode_capture

SERVER_PORT = 135
CLIENT_ADDRESS, SERVER_ADDRESS = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])
FIRST_CLIENT_PORT = 49152
MSS = 1460
LINKTYPE_RAW = 101
SYN, PSH, ACK = 0x02, 0x08, 0x10
CLIENT_ISN, SERVER_ISN = 1000, 5000


@dataclass
class Connection:
    """One virtual connection of the capture."""
    label: str
    pdus: List[CapturedPdu]


def read_captures(state_dir: str) -> List[Connection]:
    """Every virtual connection captured in ``state_dir``, the earliest first."""
    directory = os.path.join(state_dir, CAPTURE_DIR)
    try:
        names = sorted(name for name in os.listdir(directory) if name.endswith(SUFFIX))
    except OSError:
        names = []
    if not names:
        raise ExportError(f"no RPC capture in {directory} (run `mockex serve --rpc-capture`)")
    connections = []
    for name in names:
        path = os.path.join(directory, name)
        with open(path, "rb") as handle:
            try:
                _, pdus = decode_capture(handle.read())
            except CaptureError as exc:
                raise ExportError(f"{path}: {exc}") from exc
        if pdus:
            connections.append(Connection(name[:-len(SUFFIX)], pdus))
    return sorted(connections, key=lambda c: c.pdus[0].time)


# ---- synthetic IPv4/TCP ------------------------------------------------------------------------------------------
def _checksum(data: bytes) -> int:
    data += b"\x00" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ip_tcp_packet(source: Tuple[bytes, int], destination: Tuple[bytes, int], seq: int, ack: int, flags: int,
                  payload: bytes) -> bytes:
    tcp = struct.pack("!HHLLBBHHH", source[1], destination[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags,
                      65535, 0, 0)
    pseudo = source[0] + destination[0] + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp + payload)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 0, 0x4000, 64, 6, 0, source[0],
                     destination[0])
    return ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:] + tcp + payload


def tcp_frames(connection: Connection, client_port: int) -> Iterator[Tuple[float, bytes, str]]:
    """(time, IPv4 packet, comment) of one virtual connection as one TCP connection."""
    client, server = (CLIENT_ADDRESS, client_port), (SERVER_ADDRESS, SERVER_PORT)
    seq = {client: CLIENT_ISN, server: SERVER_ISN}
    start = connection.pdus[0].time
    comment = f"RPC virtual connection {connection.label}"
    yield start, ip_tcp_packet(client, server, CLIENT_ISN - 1, 0, SYN, b""), comment
    yield start, ip_tcp_packet(server, client, SERVER_ISN - 1, CLIENT_ISN, SYN | ACK, b""), ""
    yield start, ip_tcp_packet(client, server, CLIENT_ISN, SERVER_ISN, ACK, b""), ""
    latest = start
    for captured in connection.pdus:
        latest = max(latest, captured.time)       # a clock stepping back must not reorder the stream
        source, destination = (client, server) if captured.from_client else (server, client)
        for offset in range(0, len(captured.pdu), MSS):
            segment = captured.pdu[offset:offset + MSS]
            yield latest, ip_tcp_packet(source, destination, seq[source], seq[destination], PSH | ACK, segment), ""
            seq[source] += len(segment)


# ---- pcapng -----------------------------------------------------------------------------------------------------
def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def _options(*options: Tuple[int, bytes]) -> bytes:
    given = [_option(code, value) for code, value in options if value]
    return b"".join(given) + (struct.pack("<HH", 0, 0) if given else b"")


def _block(kind: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<LL", kind, length) + body + struct.pack("<L", length)


def section_header() -> bytes:
    body = struct.pack("<LHHq", 0x1A2B3C4D, 1, 0, -1) + _options((4, f"mockex {__version__}".encode()))
    return _block(0x0A0D0D0A, body)


def interface_description() -> bytes:
    return _block(1, struct.pack("<HHL", LINKTYPE_RAW, 0, 0) + _options((2, b"mockex RPC over HTTP (inner)")))


def enhanced_packet(time: float, packet: bytes, comment: str = "") -> bytes:
    micros = int(round(time * 1_000_000))
    body = struct.pack("<LLLLL", 0, micros >> 32, micros & 0xFFFFFFFF, len(packet), len(packet))
    return _block(6, body + packet + b"\x00" * (-len(packet) % 4) + _options((1, comment.encode())))


def write_pcapng(handle: BinaryIO, connections: List[Connection]) -> int:
    """Every connection's frames, merged by time (stable: a connection's own order is kept). Returns the frame
    count."""
    frames = []
    for index, connection in enumerate(connections):
        for order, (time, packet, comment) in enumerate(tcp_frames(connection, FIRST_CLIENT_PORT + index)):
            frames.append((time, index, order, packet, comment))
    frames.sort(key=lambda frame: frame[:3])
    handle.write(section_header() + interface_description())
    for time, _, _, packet, comment in frames:
        handle.write(enhanced_packet(time, packet, comment))
    return len(frames)


def export_pcap(state_dir: str, out: str) -> Tuple[int, int]:
    """Write ``state_dir``'s RPC captures to ``out``; (virtual connections, PDUs) written."""
    connections = read_captures(state_dir)
    with open(out, "wb") as handle:
        write_pcapng(handle, connections)
    return len(connections), sum(len(c.pdus) for c in connections)
