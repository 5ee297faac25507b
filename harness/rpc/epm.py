"""The endpoint mapper (C706 chapter 14 ept_lookup/ept_map, MS-RPCE 2.2.1.2; TCP 135) as an Exchange 2013 server
shows it to a client: Windows' own endpoints only. Exchange 2013 dropped direct RPC (MAPI over TCP): RPC Client
Access and the Address Book listen for the RPC proxy alone, so no NSPI, RFR or EMSMDB interface is registered and
`ept_map` for one answers EPT_S_NOT_REGISTERED, as it does for any interface not in the table.

Sans-IO over impacket's epm NDR classes; the Twisted listener is harness/services/epm.py.
"""
from __future__ import annotations

import socket
import struct
import uuid
from typing import List, Sequence, Tuple

from impacket.dcerpc.v5 import epm
from impacket.dcerpc.v5.dtypes import NULL

from harness.rpc.base import CallContext, RpcInterface, decoding, marshal

EPT_S_NOT_REGISTERED = 0x16C9A0D6
EPMAPPER_UUID = "e1af8308-5d1f-11c9-91a4-08002b14a0fa"
NDR_TRANSFER_SYNTAX = ("8a885d04-1ceb-11c9-9fe8-08002b104860", 2, 0)

# (interface UUID, major, minor, TCP port, annotation): what Windows Server 2012 R2 registers on ncacn_ip_tcp in
# its dynamic port range (wininit, the event log, the scheduler, LSA/SAM, services.exe, spooler). None is
# Exchange's: 2013 serves NSPI (f5cc5a18-...), RFR (1544f5e0-...) and EMSMDB (a4f1db00-...) over RPC over HTTP only.
WINDOWS_ENDPOINTS: Tuple[Tuple[str, int, int, int, str], ...] = (
    ("d95afe70-a6d5-4259-822e-2c84da1ddb0d", 1, 0, 49152, ""),
    ("f6beaff7-1e19-4fbb-9f8f-b89e2018337c", 1, 0, 49153, "Event log TCPIP"),
    ("86d35949-83c9-4044-b424-db363231fd0c", 1, 0, 49154, ""),
    ("12345778-1234-abcd-ef00-0123456789ac", 1, 0, 49155, ""),
    ("367abb81-9844-35f1-ad32-98f038001003", 2, 0, 49156, ""),
    ("12345678-1234-abcd-ef00-0123456789ab", 1, 0, 49157, ""),
)


def tcp_tower(interface: str, major: int, minor: int, port: int, address: str) -> bytes:
    """The five-floor ncacn_ip_tcp tower (C706 appendix L): interface, NDR, RPC v5, TCP port, IPv4 address."""
    floors = epm.EPMRPCInterface()
    floors["InterfaceUUID"] = uuid.UUID(interface).bytes_le
    floors["MajorVersion"], floors["MinorVersion"] = major, minor
    syntax = epm.EPMRPCDataRepresentation()
    syntax["DataRepUuid"] = uuid.UUID(NDR_TRANSFER_SYNTAX[0]).bytes_le
    syntax["MajorVersion"], syntax["MinorVersion"] = NDR_TRANSFER_SYNTAX[1:]
    protocol = epm.EPMProtocolIdentifier()
    protocol["ProtIdentifier"] = epm.FLOOR_RPCV5_IDENTIFIER
    tcp = epm.EPMPortAddr()
    tcp["IpPort"] = port
    host = epm.EPMHostAddr()
    host["Ip4addr"] = socket.inet_aton(address)
    body = floors.getData() + syntax.getData() + protocol.getData() + tcp.getData() + host.getData()
    return struct.pack("<H", 5) + body


class EndpointMapper(RpcInterface):
    name = "epm"
    uuid = EPMAPPER_UUID
    version = (3, 0)
    opnums = {2: "ept_lookup", 3: "ept_map"}

    def __init__(self, address: str, endpoints: Sequence[Tuple[str, int, int, int, str]] = WINDOWS_ENDPOINTS):
        self.address = address              # the host address the towers name (the listener's own)
        self.endpoints = list(endpoints)

    def registered(self) -> List[str]:
        return [entry[0] for entry in self.endpoints]

    def ept_lookup(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("ept_lookup"):
            request = epm.ept_lookup(stub)
            inquiry = request["inquiry_type"]
        # Every entry fits in one answer (max_ents is 500 from impacket, 1 from Windows' rpcdump-likes: honoured)
        wanted = self.endpoints[:max(0, request["max_ents"])] if inquiry == epm.RPC_C_EP_ALL_ELTS else []
        response = epm.ept_lookupResponse()
        response["entry_handle"] = epm.ept_lookup_handle_t()
        response["num_ents"] = len(wanted)
        entries = []
        for interface, major, minor, port, annotation in wanted:
            entry = epm.ept_entry_t()
            entry["object"] = b"\x00" * 16
            tower = tcp_tower(interface, major, minor, port, self.address)
            entry["tower"]["tower_length"] = len(tower)
            entry["tower"]["tower_octet_string"] = list(tower)
            entry["annotation"] = list((annotation + "\x00").encode())
            entries.append(entry)
        response["entries"] = entries
        response["status"] = 0 if wanted else EPT_S_NOT_REGISTERED
        ctx.record("epm_lookup", inquiry_type=inquiry, entries=len(wanted))
        return marshal(response)

    def ept_map(self, stub: bytes, ctx: CallContext) -> bytes:
        with decoding("ept_map"):
            request = epm.ept_map(stub)
            tower = b"".join(request["map_tower"]["tower_octet_string"]) if request["map_tower"] != NULL else b""
        wanted = str(uuid.UUID(bytes_le=tower[5:21])) if len(tower) >= 21 else ""
        found = [entry for entry in self.endpoints if entry[0] == wanted]
        response = epm.ept_mapResponse()
        response["entry_handle"] = epm.ept_lookup_handle_t()
        response["num_towers"] = len(found)
        towers = []
        for interface, major, minor, port, _ in found:
            pointer = epm.twr_p_t()
            mapped = tcp_tower(interface, major, minor, port, self.address)
            pointer["tower_length"] = len(mapped)
            pointer["tower_octet_string"] = list(mapped)
            towers.append(pointer)
        response["ITowers"] = towers
        response["status"] = 0 if found else EPT_S_NOT_REGISTERED
        ctx.record("epm_map", interface=wanted, found=bool(found))
        return marshal(response)
