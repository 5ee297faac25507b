"""RPC over HTTP v2 RTS PDUs (MS-RPCH 2.2.3 and 2.2.4): every command, the PDU codec, and the named PDUs the mock
sends (CONN/A3, CONN/C2, Ping, flow-control acknowledgements) or recognises (CONN/A1, CONN/B1,
FlowControlAckWithDestination).

An RTS PDU is a 20-byte header (the connection-oriented DCE/RPC common header with PTYPE 20 plus Flags and
NumberOfCommands) followed by commands, each a u32 CommandType and a fixed or counted body. Everything is
little-endian. ``decode`` is strict about structure (one whole PDU, every command complete, no trailing bytes) and
lenient about the header fields MS-RPCH says a receiver ignores (pfc_flags, call_id).
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import Field, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Dict, List, Optional, Tuple, Type, TypeVar, Union

RTS_PTYPE = 20
HEADER = struct.Struct("<BBBB4sHHLHH")
HEADER_SIZE = HEADER.size                 # 20
DREP_LITTLE_ENDIAN = b"\x10\x00\x00\x00"
PFC_FIRST_AND_LAST = 0x03
U32_MAX = 0xFFFFFFFF

# 2.2.3.6.1 RTS header flags
FLAG_NONE = 0x0000
FLAG_PING = 0x0001
FLAG_OTHER_CMD = 0x0002
FLAG_RECYCLE_CHANNEL = 0x0004
FLAG_IN_CHANNEL = 0x0008
FLAG_OUT_CHANNEL = 0x0010
FLAG_EOF = 0x0020
FLAG_ECHO = 0x0040

# 2.2.3.3 forward destinations
FD_CLIENT, FD_IN_PROXY, FD_SERVER, FD_OUT_PROXY = 0, 1, 2, 3

# 2.2.3.2 client address types
ADDRESS_IPV4, ADDRESS_IPV6 = 0, 1


class RtsError(ValueError):
    """Malformed RTS bytes; ``reason`` says what was wrong (it goes to the transcript)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _check_u32(owner: object, name: str, value: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= U32_MAX:
        raise ValueError(f"{type(owner).__name__}.{name} must be a u32, got {value!r}")


def _check_cookie(owner: object, name: str, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != 16:
        raise ValueError(f"{type(owner).__name__}.{name} must be 16 bytes")


def _take(data: bytes, offset: int, size: int, what: str) -> bytes:
    if offset + size > len(data):
        raise RtsError(f"{what} truncated: needs {size} bytes at offset {offset}, PDU has {len(data)}")
    return data[offset:offset + size]


def _u32(data: bytes, offset: int, what: str) -> int:
    value: int = struct.unpack("<L", _take(data, offset, 4, what))[0]
    return value


# ---- commands (2.2.3.5) ---------------------------------------------------------------------------------------
_U32Command = TypeVar("_U32Command", bound="_U32Body")
_CookieCommand = TypeVar("_CookieCommand", bound="_CookieBody")
_EmptyCommand = TypeVar("_EmptyCommand", bound="_EmptyBody")


class _U32Body:
    """A command whose body is its single u32 field."""

    if TYPE_CHECKING:
        # What @dataclass gives each subclass (one u32 field), spelled out so the shared methods type-check.
        __dataclass_fields__: ClassVar[Dict[str, Field[Any]]]

        def __init__(self, value: int, /) -> None: ...

    def __post_init__(self) -> None:
        name = fields(self)[0].name
        _check_u32(self, name, getattr(self, name))

    def body(self) -> bytes:
        return struct.pack("<L", getattr(self, fields(self)[0].name))

    @classmethod
    def parse(cls: Type[_U32Command], data: bytes, offset: int) -> Tuple[_U32Command, int]:
        return cls(_u32(data, offset, cls.__name__)), offset + 4


class _CookieBody:
    """A command whose body is a 16-byte RTS cookie (2.2.3.1)."""

    if TYPE_CHECKING:
        # What @dataclass gives each subclass (one 16-byte field), spelled out so the shared methods type-check.
        __dataclass_fields__: ClassVar[Dict[str, Field[Any]]]

        def __init__(self, value: bytes, /) -> None: ...

    def __post_init__(self) -> None:
        name = fields(self)[0].name
        _check_cookie(self, name, getattr(self, name))

    def body(self) -> bytes:
        cookie: bytes = getattr(self, fields(self)[0].name)
        return cookie

    @classmethod
    def parse(cls: Type[_CookieCommand], data: bytes, offset: int) -> Tuple[_CookieCommand, int]:
        return cls(_take(data, offset, 16, cls.__name__)), offset + 16


class _EmptyBody:
    def body(self) -> bytes:
        return b""

    @classmethod
    def parse(cls: Type[_EmptyCommand], data: bytes, offset: int) -> Tuple[_EmptyCommand, int]:
        return cls(), offset


@dataclass(frozen=True)
class ReceiveWindowSize(_U32Body):
    TYPE: ClassVar[int] = 0
    size: int


@dataclass(frozen=True)
class FlowControlAck:
    """2.2.3.5.2 with the 2.2.3.4 acknowledgement: bytes received, window left, and the acknowledged channel."""
    TYPE: ClassVar[int] = 1
    bytes_received: int
    available_window: int
    channel_cookie: bytes

    def __post_init__(self) -> None:
        _check_u32(self, "bytes_received", self.bytes_received)
        _check_u32(self, "available_window", self.available_window)
        _check_cookie(self, "channel_cookie", self.channel_cookie)

    def body(self) -> bytes:
        return struct.pack("<LL", self.bytes_received, self.available_window) + self.channel_cookie

    @classmethod
    def parse(cls, data: bytes, offset: int) -> Tuple[FlowControlAck, int]:
        received, window = struct.unpack("<LL", _take(data, offset, 8, "FlowControlAck"))
        return cls(received, window, _take(data, offset + 8, 16, "FlowControlAck cookie")), offset + 24


@dataclass(frozen=True)
class ConnectionTimeout(_U32Body):
    TYPE: ClassVar[int] = 2
    timeout_ms: int


@dataclass(frozen=True)
class Cookie(_CookieBody):
    TYPE: ClassVar[int] = 3
    cookie: bytes


@dataclass(frozen=True)
class ChannelLifetime(_U32Body):
    TYPE: ClassVar[int] = 4
    lifetime: int


@dataclass(frozen=True)
class ClientKeepalive(_U32Body):
    TYPE: ClassVar[int] = 5
    interval_ms: int


@dataclass(frozen=True)
class Version(_U32Body):
    TYPE: ClassVar[int] = 6
    version: int


@dataclass(frozen=True)
class Empty(_EmptyBody):
    TYPE: ClassVar[int] = 7


@dataclass(frozen=True)
class Padding:
    """2.2.3.5.9: a conformance count and that many bytes, which a receiver ignores (only the count is kept)."""
    TYPE: ClassVar[int] = 8
    length: int

    def __post_init__(self) -> None:
        _check_u32(self, "length", self.length)

    def body(self) -> bytes:
        return struct.pack("<L", self.length) + b"\x00" * self.length

    @classmethod
    def parse(cls, data: bytes, offset: int) -> Tuple[Padding, int]:
        length = _u32(data, offset, "Padding count")
        _take(data, offset + 4, length, "Padding")
        return cls(length), offset + 4 + length


@dataclass(frozen=True)
class NegativeANCE(_EmptyBody):
    TYPE: ClassVar[int] = 9


@dataclass(frozen=True)
class ANCE(_EmptyBody):
    TYPE: ClassVar[int] = 10


@dataclass(frozen=True)
class ClientAddress:
    """2.2.3.5.12 with the 2.2.3.2 encoding: address type, 4 or 16 address bytes, 12 bytes of padding."""
    TYPE: ClassVar[int] = 11
    address: Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

    def __post_init__(self) -> None:
        if not isinstance(self.address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            raise ValueError("ClientAddress.address must be an ipaddress.IPv4Address or IPv6Address")

    def body(self) -> bytes:
        kind = ADDRESS_IPV4 if self.address.version == 4 else ADDRESS_IPV6
        return struct.pack("<L", kind) + self.address.packed + b"\x00" * 12

    @classmethod
    def parse(cls, data: bytes, offset: int) -> Tuple[ClientAddress, int]:
        kind = _u32(data, offset, "ClientAddress type")
        if kind not in (ADDRESS_IPV4, ADDRESS_IPV6):
            raise RtsError(f"ClientAddress type {kind} is neither IPv4 (0) nor IPv6 (1)")
        size = 4 if kind == ADDRESS_IPV4 else 16
        raw = _take(data, offset + 4, size + 12, "ClientAddress")
        return cls(ipaddress.ip_address(raw[:size])), offset + 4 + size + 12


@dataclass(frozen=True)
class AssociationGroupId(_CookieBody):
    TYPE: ClassVar[int] = 12
    group_id: bytes


@dataclass(frozen=True)
class Destination(_U32Body):
    TYPE: ClassVar[int] = 13
    destination: int

    def __post_init__(self) -> None:
        if self.destination not in (FD_CLIENT, FD_IN_PROXY, FD_SERVER, FD_OUT_PROXY):
            raise ValueError(f"Destination must be 0..3 (FDClient..FDOutProxy), got {self.destination!r}")


@dataclass(frozen=True)
class PingTrafficSentNotify(_U32Body):
    TYPE: ClassVar[int] = 14
    bytes_sent: int


Command = Union[ReceiveWindowSize, FlowControlAck, ConnectionTimeout, Cookie, ChannelLifetime, ClientKeepalive,
                Version, Empty, Padding, NegativeANCE, ANCE, ClientAddress, AssociationGroupId, Destination,
                PingTrafficSentNotify]
_COMMAND_CLASSES: Tuple[Type[Command], ...] = (
    ReceiveWindowSize, FlowControlAck, ConnectionTimeout, Cookie, ChannelLifetime, ClientKeepalive, Version, Empty,
    Padding, NegativeANCE, ANCE, ClientAddress, AssociationGroupId, Destination, PingTrafficSentNotify)
COMMANDS: Dict[int, Type[Command]] = {cls.TYPE: cls for cls in _COMMAND_CLASSES}
_Command = TypeVar("_Command", bound=Command)


# ---- PDUs (2.2.3.6, 2.2.4) ------------------------------------------------------------------------------------
_NAMES: Dict[Tuple[int, Tuple[Type[Command], ...]], str] = {
    (FLAG_NONE, (Version, Cookie, Cookie, ReceiveWindowSize)): "CONN/A1",
    (FLAG_NONE, (ConnectionTimeout,)): "CONN/A3",
    (FLAG_NONE, (Version, Cookie, Cookie, ChannelLifetime, ClientKeepalive, AssociationGroupId)): "CONN/B1",
    (FLAG_NONE, (Version, ReceiveWindowSize, ConnectionTimeout)): "CONN/C2",
    (FLAG_PING, ()): "Ping",
    (FLAG_ECHO, ()): "Echo",
    (FLAG_OTHER_CMD, (FlowControlAck,)): "FlowControlAck",
    (FLAG_OTHER_CMD, (Destination, FlowControlAck)): "FlowControlAckWithDestination",
    (FLAG_OTHER_CMD, (ClientKeepalive,)): "Keep-Alive",
    (FLAG_OTHER_CMD, (PingTrafficSentNotify,)): "PingTrafficSentNotify",
}


@dataclass(frozen=True)
class RtsPdu:
    flags: int
    commands: Tuple[Command, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.flags, int) or not 0 <= self.flags <= 0xFFFF:
            raise ValueError(f"RtsPdu.flags must be a u16, got {self.flags!r}")
        if len(self.commands) > 0xFFFF:
            raise ValueError("an RTS PDU holds at most 65535 commands")

    @property
    def name(self) -> str:
        """The MS-RPCH 2.2.4 name of the PDU ("CONN/A1", "Ping", ...) or a generic description."""
        types = tuple(type(command) for command in self.commands)
        known = _NAMES.get((self.flags, types))
        if known:
            return known
        return f"RTS(flags=0x{self.flags:04x}: {', '.join(type(c).__name__ for c in self.commands) or 'no commands'})"

    def first(self, kind: Type[_Command]) -> Optional[_Command]:
        """The first command of type ``kind``, typed as that command."""
        return next((c for c in self.commands if isinstance(c, kind)), None)


def encode(pdu: RtsPdu) -> bytes:
    body = b"".join(struct.pack("<L", command.TYPE) + command.body() for command in pdu.commands)
    length = HEADER_SIZE + len(body)
    if length > 0xFFFF:
        raise ValueError(f"RTS PDU of {length} bytes does not fit frag_length")
    return HEADER.pack(5, 0, RTS_PTYPE, PFC_FIRST_AND_LAST, DREP_LITTLE_ENDIAN, length, 0, 0,
                       pdu.flags, len(pdu.commands)) + body


def decode(data: bytes) -> RtsPdu:
    """One whole RTS PDU; anything malformed raises RtsError."""
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise RtsError(f"RTS PDU of {len(data)} bytes is shorter than the 20-byte header")
    major, minor, ptype, _pfc, drep, frag_length, auth_length, _call_id, flags, count = HEADER.unpack_from(data)
    if (major, minor) != (5, 0):
        raise RtsError(f"RPC version {major}.{minor} is not 5.0")
    if ptype != RTS_PTYPE:
        raise RtsError(f"PTYPE {ptype} is not RTS (20)")
    if drep[0] != DREP_LITTLE_ENDIAN[0]:
        raise RtsError(f"data representation {drep.hex()} is not little-endian ASCII")
    if frag_length != len(data):
        raise RtsError(f"frag_length {frag_length} does not match the {len(data)} bytes given")
    if auth_length:
        raise RtsError(f"RTS PDU carries auth_length {auth_length}")
    commands: List[Command] = []
    offset = HEADER_SIZE
    for index in range(count):
        kind = _u32(data, offset, f"command {index} type")
        cls = COMMANDS.get(kind)
        if cls is None:
            raise RtsError(f"command {index} has unknown type {kind}")
        try:
            command, offset = cls.parse(data, offset + 4)
        except ValueError as exc:
            if isinstance(exc, RtsError):
                raise
            raise RtsError(f"command {index} ({cls.__name__}): {exc}") from exc
        commands.append(command)
    if offset != len(data):
        raise RtsError(f"{len(data) - offset} bytes follow the {count} commands")
    return RtsPdu(flags, tuple(commands))


# ---- what the mock sends ----------------------------------------------------------------------------------------
def conn_a3(connection_timeout_ms: int) -> RtsPdu:
    return RtsPdu(FLAG_NONE, (ConnectionTimeout(connection_timeout_ms),))


def conn_c2(receive_window: int, connection_timeout_ms: int) -> RtsPdu:
    return RtsPdu(FLAG_NONE, (Version(1), ReceiveWindowSize(receive_window), ConnectionTimeout(connection_timeout_ms)))


def ping() -> RtsPdu:
    return RtsPdu(FLAG_PING)


def flow_control_ack(bytes_received: int, available_window: int, channel_cookie: bytes) -> RtsPdu:
    return RtsPdu(FLAG_OTHER_CMD, (FlowControlAck(bytes_received, available_window, channel_cookie),))


def flow_control_ack_with_destination(destination: int, bytes_received: int, available_window: int,
                                      channel_cookie: bytes) -> RtsPdu:
    return RtsPdu(FLAG_OTHER_CMD, (Destination(destination),
                                   FlowControlAck(bytes_received, available_window, channel_cookie)))


# ---- what clients send ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConnA1:
    virtual_connection_cookie: bytes
    out_channel_cookie: bytes
    receive_window_size: int


@dataclass(frozen=True)
class ConnB1:
    virtual_connection_cookie: bytes
    in_channel_cookie: bytes
    channel_lifetime: int
    client_keepalive: int
    association_group_id: bytes


@dataclass(frozen=True)
class AckWithDestination:
    destination: int
    ack: FlowControlAck


def as_conn_a1(pdu: RtsPdu) -> Optional[ConnA1]:
    if pdu.name != "CONN/A1":
        return None
    match pdu.commands:     # the name fixed these types already; the match lets a type checker see them
        case (Version(), Cookie(cookie=vc), Cookie(cookie=out), ReceiveWindowSize(size=window)):
            return ConnA1(vc, out, window)
    return None


def as_conn_b1(pdu: RtsPdu) -> Optional[ConnB1]:
    if pdu.name != "CONN/B1":
        return None
    match pdu.commands:
        case (Version(), Cookie(cookie=vc), Cookie(cookie=in_cookie), ChannelLifetime(lifetime=lifetime),
              ClientKeepalive(interval_ms=keepalive), AssociationGroupId(group_id=group)):
            return ConnB1(vc, in_cookie, lifetime, keepalive, group)
    return None


def as_flow_control_ack_with_destination(pdu: RtsPdu) -> Optional[AckWithDestination]:
    if pdu.name != "FlowControlAckWithDestination":
        return None
    match pdu.commands:
        case (Destination(destination=destination), FlowControlAck() as ack):
            return AckWithDestination(destination, ack)
    return None
