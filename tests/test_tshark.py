"""Wireshark's dissectors (an independent reading of MS-RPCH, C706, NTLMSSP and NSPI) judge the server's bytes.

tshark cannot follow RPC inside the 1 GiB RPC_IN_DATA / RPC_OUT_DATA bodies, and the TLS around them hides them
anyway. So a TLS-terminating relay on 127.0.3.x:443 sits between the client and `mockex serve` (server443) and
records the plaintext of both connections; the bodies are then re-wrapped as one synthetic DCE/RPC-over-TCP
conversation (CONN/A1 from the OUT request body, then the IN body client to server, the OUT response body server to
client, PDUs interleaved in the order they were recorded) by `mockex export pcap`'s pcapng writer and dissected
without options. The relay, not the server's own --rpc-capture, records the bytes: this judges what went over the
wire (tests/test_export_pcap.py judges the capture).

Two sessions: unmodified exchanger.py (NTLM at privacy: every header, RTS PDU, NTLMSSP message and fragment is
checked, the stubs stay sealed) and impacket's ncacn_http without RPC authentication for the NSPI calls whose NDR
Wireshark's Exchange 5.5-era NSPI dissector models (NspiBind, NspiQueryRows, NspiUnbind), so the stubs are checked too.
"""
from __future__ import annotations

import select
import shutil
import socket
import ssl
import struct
import subprocess
import threading
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import pytest
from impacket.dcerpc.v5 import nspi, rpcrt

from harness import pki
from harness.export.pcap import Connection, write_pcapng
from harness.org import load_org
from harness.protocols.rpccapture import CapturedPdu
from tests.support.clients import (
    bind_over_http,
    default_socket_timeout,
    exchanger,
    ncacn_http,
    requires_exchanger,
    teletex_stat,
)
from tests.support.servers import worker_address

TSHARK = shutil.which("tshark")
# Clear of the servers' 127.0.0.<2 + worker>; one relay address per pytest-xdist worker too.
RELAY_ADDRESS = worker_address(network="127.0.3")
TIMEOUT = 60
ORG = load_org()

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(TSHARK is None, reason="tshark is not installed (Debian: apt-get install tshark)")]


@dataclass(frozen=True)
class Chunk:
    """One recv() of plaintext on a relayed connection."""
    connection: int
    from_client: bool
    data: bytes


class RecordingRelay:
    """TLS in (any certificate is fine for impacket), TLS out to the server, every plaintext chunk recorded in the
    order the relay saw it. Threads and sockets are bounded by timeouts; ``stop`` joins them."""

    def __init__(self, upstream: Tuple[str, int], listen: str, certificate: pki.Credential):
        self.upstream = upstream
        self.accepting = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.accepting.load_cert_chain(certificate.cert_file, certificate.key_file)
        self.connecting = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.connecting.check_hostname = False
        self.connecting.verify_mode = ssl.CERT_NONE
        self.listener = socket.create_server((listen, 443))
        self.listener.settimeout(0.2)
        self.chunks: List[Chunk] = []
        self._lock = threading.Lock()
        self._running = True
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        connection = 0
        while self._running:
            try:
                sock, _ = self.listener.accept()
            except socket.timeout:
                continue
            connection += 1
            thread = threading.Thread(target=self._relay, args=(sock, connection), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _relay(self, sock: socket.socket, connection: int) -> None:
        """Both directions of one connection in one thread: an SSL socket must not be read and written from two
        threads at once."""
        sock.settimeout(TIMEOUT)
        ends = []
        try:
            client = self.accepting.wrap_socket(sock, server_side=True)
            ends.append(client)
            server = self.connecting.wrap_socket(socket.create_connection(self.upstream, timeout=TIMEOUT))
            ends.append(server)
            peers = {client: server, server: client}
            while True:
                ready = [end for end in ends if end.pending()] or select.select(ends, [], [], TIMEOUT)[0]
                if not ready:
                    return
                for end in ready:
                    data = end.recv(65536)
                    if not data:
                        return
                    with self._lock:
                        self.chunks.append(Chunk(connection, end is client, data))
                    peers[end].sendall(data)
        except OSError:
            return
        finally:
            for end in ends or [sock]:
                end.close()

    def stop(self) -> None:
        self._running = False
        for thread in self._threads:
            thread.join(TIMEOUT)
        self.listener.close()


# ---- re-wrapping the tunnel bodies as DCE/RPC over TCP ----------------------------------------------------------
def body_pdus(chunks: Sequence[Chunk], connection: int, from_client: bool, head: bytes) -> List[Tuple[int, bytes]]:
    """(index of the chunk holding its first byte, PDU) for each PDU of the body after the HTTP head starting with
    ``head`` on one direction of one connection."""
    mine = [(index, c.data) for index, c in enumerate(chunks)
            if c.connection == connection and c.from_client == from_client]
    stream = b"".join(data for _, data in mine)
    start = stream.index(b"\r\n\r\n", stream.index(head)) + 4
    owners = [index for index, data in mine for _ in data]      # the chunk each byte arrived in
    pdus, offset = [], start
    while offset < len(stream):
        (length,) = struct.unpack_from("<H", stream, offset + 8)
        assert length >= 16 and offset + length <= len(stream), f"torn PDU at {offset} of {len(stream)}"
        pdus.append((owners[offset], stream[offset:offset + length]))
        offset += length
    return pdus


def tunnel_conversation(chunks: Sequence[Chunk]) -> List[Tuple[bool, bytes]]:
    """(from_client, PDU) in recorded order: CONN/A1 (OUT request body), the IN body, the OUT response body."""
    connections: Dict[str, int] = {}
    for chunk in chunks:
        if chunk.from_client and chunk.data.startswith((b"RPC_IN_DATA ", b"RPC_OUT_DATA ")):
            connections[chunk.data.split(b" ", 1)[0].decode()] = chunk.connection
    client = (body_pdus(chunks, connections["RPC_OUT_DATA"], True, b"RPC_OUT_DATA /rpc/rpcproxy.dll?")
              + body_pdus(chunks, connections["RPC_IN_DATA"], True, b"RPC_IN_DATA /rpc/rpcproxy.dll?"))
    server = body_pdus(chunks, connections["RPC_OUT_DATA"], False, b"HTTP/1.1 200 ")
    # The client's order is fixed (A1 goes out before B1), but the relay may record the two connections the other
    # way round; a running maximum keeps it while still placing every server PDU after the PDUs that caused it.
    keyed, latest = [], 0
    for index, pdu in client:
        latest = max(latest, index)
        keyed.append((latest, 0, True, pdu))
    ordered = sorted(keyed + [(index, 1, False, pdu) for index, pdu in server], key=lambda item: item[:2])
    return [(from_client, pdu) for _, _, from_client, pdu in ordered]


def write_pcap(path, conversation: Sequence[Tuple[bool, bytes]]) -> None:
    """``conversation`` as one TCP connection of a pcapng, written by the product's `mockex export pcap` writer."""
    pdus = [CapturedPdu(float(number), from_client, pdu) for number, (from_client, pdu) in enumerate(conversation)]
    with open(path, "wb") as handle:
        write_pcapng(handle, [Connection("relayed", pdus)])


def tshark(pcap, *args: str) -> str:
    result = subprocess.run([TSHARK, "-n", "-r", str(pcap), *args],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def problems(pcap) -> List[str]:
    """Frames tshark calls malformed or flags with an expert warning or error."""
    return tshark(pcap, "-Y", "_ws.malformed || _ws.expert.severity >= warning").splitlines()


def summaries(pcap) -> List[str]:
    """The Info column of every frame that carries a PDU (TCP-only frames left out)."""
    lines = tshark(pcap, "-T", "fields", "-e", "_ws.col.Protocol", "-e", "_ws.col.Info").splitlines()
    return [line.split("\t", 1)[1] for line in lines if not line.startswith("TCP\t")]


# ---- the sessions -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def relay_certificate(tmp_path_factory) -> pki.Credential:
    return pki.PKI(str(tmp_path_factory.mktemp("relay-pki"))).issue([ORG.mail_host], ips=[RELAY_ADDRESS])


def recorded(server443, certificate, client) -> List[Chunk]:
    relay = RecordingRelay((server443.host, 443), RELAY_ADDRESS, certificate)
    try:
        client()
    finally:
        relay.stop()
    return relay.chunks


@requires_exchanger
def test_exchanger_session_dissects_cleanly(server443, relay_certificate, tmp_path):
    def dump_all_users():
        result = exchanger(server443, ["nspi", "dump-tables", "-name", "All Users", "-lookup-type", "FULL"],
                           host=RELAY_ADDRESS)
        assert result.returncode == 0 and "mail: alice@contoso.test" in result.stdout, result.stderr

    pcap = tmp_path / "exchanger.pcap"
    write_pcap(pcap, tunnel_conversation(recorded(server443, relay_certificate, dump_all_users)))
    assert problems(pcap) == []
    info = summaries(pcap)
    # A3 answers A1 and C2 answers B1; whether A3 or B1 comes first is a race between the two connections.
    assert info[0] == "CONN/A1, " and sorted(info[1:3]) == ["CONN/A3, ", "CONN/B1, "]
    assert info[3] == "CONN/C1,CONN/C2, "
    assert info[4].startswith("Bind: call_id: 1, Fragment: Single, 1 context items: NSPI V56.0 (32bit NDR), "
                              "NTLMSSP_NEGOTIATE")
    assert info[5].startswith("Bind_ack: call_id: 1, Fragment: Single, max_xmit: 4280 max_recv: 4280, "
                              "1 results: Acceptance, NTLMSSP_CHALLENGE")
    assert info[6].startswith("AUTH3: call_id: 1, Fragment: Single, NTLMSSP_AUTH, User: contoso.test\\alice")
    calls = [line for line in info[7:] if line.startswith("Nspi")]
    assert calls == ["NspiBind request", "NspiBind response", "NspiGetHierarchyInfo request",
                     "NspiGetHierarchyInfo response", "NspiUpdateStat request", "NspiUpdateStat response",
                     "NspiUpdateStat request", "NspiUpdateStat response", "NspiQueryColumns request",
                     "NspiQueryColumns response", "NspiQueryRows request", "NspiQueryRows response",
                     "NspiQueryRows request", "NspiUnbind request", "NspiUnbind response"]
    # The FULL rows exceed max_recv_frag: the last QueryRows answer comes in fragments, reassembled by tshark.
    fragments = [line.split(", Fragment: ")[1].split(",")[0] for line in info if line.startswith("Response: ")]
    assert fragments[0] == "1st" and fragments[-1] == "Last" and set(fragments[1:-1]) <= {"Mid"}
    signed = tshark(pcap, "-Y", "dcerpc.pkt_type == 2", "-T", "fields", "-e", "dcerpc.auth_level").split()
    assert signed and set(signed) == {"6"}


def test_unauthenticated_nspi_stubs_dissect_to_the_fixture(server443, relay_certificate, tmp_path):
    """Without RPC-level sealing tshark decodes NDR; the QueryRows rows it shows are the org's recipients."""
    alice = server443.user("alice")
    tags = [0x3001001F, 0x39FE001F]                   # PR_DISPLAY_NAME, PR_SMTP_ADDRESS (Unicode)

    def query_rows():
        with default_socket_timeout(TIMEOUT):
            dce = bind_over_http(ncacn_http(RELAY_ADDRESS), nspi.MSRPC_UUID_NSPI, "alice", alice["password"],
                                 rpcrt.RPC_C_AUTHN_LEVEL_NONE)
            stat = teletex_stat()
            handle = nspi.hNspiBind(dce, stat)["contextHandle"]
            nspi.hNspiQueryRows(dce, handle, pStat=stat, Count=50, pPropTags=tags)
            nspi.hNspiUnbind(dce, handle)
            dce.get_rpc_transport().disconnect()

    pcap = tmp_path / "plain.pcap"
    write_pcap(pcap, tunnel_conversation(recorded(server443, relay_certificate, query_rows)))
    assert problems(pcap) == []
    assert [line for line in summaries(pcap) if line.startswith("Nspi")] == [
        "NspiBind request", "NspiBind response", "NspiQueryRows request", "NspiQueryRows response",
        "NspiUnbind request", "NspiUnbind response, Status: Unknown MAPISTATUS error 0x00000001"]
    (rows,) = [line for line in tshark(pcap, "-Y", "nspi.opnum == 3 && dcerpc.pkt_type == 2", "-T", "fields",
                                       "-e", "nspi.SRowSet.cRows", "-e", "nspi.SPropValue_CTR.lpszW").splitlines()]
    count, strings = rows.split("\t")
    people = sorted(ORG.mailboxes, key=lambda m: m.display_name.lower())
    assert int(count) == len(people)
    assert strings.split(",") == [text for m in people for text in (m.display_name, m.email)]
