"""RTS codec: byte-exact against MS-RPCH layouts and impacket's client builders, round trips, and fuzzing."""
import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from impacket.dcerpc.v5 import rpch

from harness.protocols import rts
from tests.support.fuzz import rts_pdus as pdus  # under the name the @given tests below were written with
from tests.support.fuzz import scaled

VC, OUT, IN, GROUP = b"V" * 16, b"O" * 16, b"I" * 16, b"G" * 16

def test_every_command_type_of_ms_rpch_has_a_codec():
    assert sorted(rts.COMMANDS) == list(range(15))


# ---- byte-exact against the client's own builders ----------------------------------------------------------------
def test_conn_a1_from_impacket_is_recognised():
    pdu = rts.decode(rpch.hCONN_A1(VC, OUT, 262144))
    assert pdu.name == "CONN/A1"
    assert rts.as_conn_a1(pdu) == rts.ConnA1(VC, OUT, 262144)
    assert rts.as_conn_b1(pdu) is None


def test_conn_b1_from_impacket_is_recognised():
    data = rpch.hCONN_B1(VC, IN, GROUP)
    assert len(data) == 104
    pdu = rts.decode(data)
    assert rts.as_conn_b1(pdu) == rts.ConnB1(VC, IN, 0x40000000, 300000, GROUP)
    assert rts.encode(pdu) == data


def test_flow_control_ack_with_destination_from_impacket_is_recognised():
    pdu = rts.decode(rpch.hFlowControlAckWithDestination(rpch.FDOutProxy, 140000, 262144, OUT))
    assert rts.as_flow_control_ack_with_destination(pdu) == rts.AckWithDestination(
        rts.FD_OUT_PROXY, rts.FlowControlAck(140000, 262144, OUT))
    assert rts.as_conn_a1(pdu) is None


def test_ping_matches_impacket():
    assert rts.encode(rts.ping()) == rpch.hPing()
    assert rts.decode(rpch.hPing()).name == "Ping"


def test_conn_a3_and_c2_bytes_match_the_recorded_exchange():
    assert rts.encode(rts.conn_a3(120000)).hex() == "05001403100000001c000000000000000000010002000000c0d40100"
    assert rts.encode(rts.conn_c2(65536, 120000)).hex() == (
        "05001403100000002c00000000000000000003000600000001000000000000000000010002000000c0d40100")


def test_impacket_reads_what_the_builders_produce():
    a3 = rpch.CONN_A3_RTS_PDU(rpch.RTSHeader(rts.encode(rts.conn_a3(90000)))["pduData"])
    assert a3["ConnectionTimeout"]["ConnectionTimeout"] == 90000
    c2 = rpch.CONN_C2_RTS_PDU(rpch.RTSHeader(rts.encode(rts.conn_c2(65536, 90000)))["pduData"])
    assert c2["ReceiveWindowSize"]["ReceiveWindowSize"] == 65536
    ack = rpch.FlowControlAckWithDestination_RTS_PDU(rpch.RTSHeader(rts.encode(
        rts.flow_control_ack_with_destination(rts.FD_CLIENT, 5, 6, IN)))["pduData"])
    assert (ack["Destination"]["Destination"], ack["FlowControlAck"]["Ack"]["BytesReceived"]) == (0, 5)


def test_flow_control_ack_pdu_layout():
    data = rts.encode(rts.flow_control_ack(7, 65536, IN))
    assert rts.decode(data).name == "FlowControlAck"
    assert struct.unpack_from("<HH", data, 16) == (rts.FLAG_OTHER_CMD, 1)
    assert data[20:] == struct.pack("<LLL", 1, 7, 65536) + IN


@pytest.mark.parametrize("command, body", [
    (rts.ClientAddress(ipaddress.ip_address("192.0.2.7")), struct.pack("<L", 0) + bytes([192, 0, 2, 7]) + b"\0" * 12),
    (rts.ClientAddress(ipaddress.ip_address("2001:db8::1")),
     struct.pack("<L", 1) + ipaddress.ip_address("2001:db8::1").packed + b"\0" * 12),
    (rts.Padding(3), struct.pack("<L", 3) + b"\0\0\0"),
    (rts.ANCE(), b""),
])
def test_variable_commands_layout(command, body):
    assert command.body() == body
    data = rts.encode(rts.RtsPdu(rts.FLAG_NONE, (command,)))
    assert data[20:] == struct.pack("<L", command.TYPE) + body
    assert rts.decode(data).commands == (command,)


def test_names_of_unlisted_pdus_describe_their_commands():
    assert rts.RtsPdu(rts.FLAG_RECYCLE_CHANNEL, (rts.Destination(0),)).name == "RTS(flags=0x0004: Destination)"
    assert rts.RtsPdu(rts.FLAG_OTHER_CMD, (rts.ClientKeepalive(300000),)).name == "Keep-Alive"


# ---- malformed input ---------------------------------------------------------------------------------------------
A1 = rpch.hCONN_A1(VC, OUT, 262144)


@pytest.mark.parametrize("data, reason", [
    (A1[:19], "shorter than the 20-byte header"),
    (b"\x04" + A1[1:], "RPC version 4.0"),
    (A1[:2] + b"\x0b" + A1[3:], "PTYPE 11"),
    (A1[:4] + b"\x00" + A1[5:], "little-endian"),
    (A1[:-1], "frag_length 76 does not match the 75"),
    (A1[:10] + b"\x10\x00" + A1[12:], "auth_length 16"),
    (A1[:18] + b"\x05\x00" + A1[20:], "command 4 type truncated"),
    (A1[:8] + b"\x50\x00" + A1[10:18] + b"\x03\x00" + A1[20:] + b"\0" * 4, "12 bytes follow the 3 commands"),
    (A1[:20] + b"\x63" + A1[21:], "unknown type 99"),
], ids=["short", "version", "ptype", "drep", "length", "auth", "truncated", "trailing", "unknown-command"])
def test_malformed_pdus_raise_rts_error_with_a_reason(data, reason):
    with pytest.raises(rts.RtsError) as info:
        rts.decode(data)
    assert reason in info.value.reason


def test_out_of_range_values_are_rts_errors():
    bad_destination = rts.encode(rts.RtsPdu(rts.FLAG_OTHER_CMD, (rts.Destination(3),)))[:-4] + struct.pack("<L", 9)
    with pytest.raises(rts.RtsError, match="Destination"):
        rts.decode(bad_destination)
    bad_address = rts.encode(rts.RtsPdu(0, (rts.ClientAddress(ipaddress.ip_address("10.0.0.1")),)))
    bad_address = bad_address[:24] + struct.pack("<L", 2) + bad_address[28:]
    with pytest.raises(rts.RtsError, match="neither IPv4"):
        rts.decode(bad_address)
    huge_padding = rts.encode(rts.RtsPdu(0, (rts.Padding(0),)))[:-4] + struct.pack("<L", 1000)
    with pytest.raises(rts.RtsError, match="Padding truncated"):
        rts.decode(huge_padding)


def test_builders_refuse_values_that_do_not_fit():
    with pytest.raises(ValueError):
        rts.ReceiveWindowSize(-1)
    with pytest.raises(ValueError):
        rts.Cookie(b"short")
    with pytest.raises(ValueError):
        rts.Destination(4)
    with pytest.raises(ValueError):
        rts.encode(rts.RtsPdu(0, (rts.Padding(70000),)))


# ---- properties --------------------------------------------------------------------------------------------------
@settings(max_examples=scaled(300))
@given(pdus)
def test_decode_inverts_encode(pdu):
    assert rts.decode(rts.encode(pdu)) == pdu


@settings(max_examples=scaled(300))
@given(st.binary(max_size=200))
def test_random_bytes_only_ever_raise_rts_error(data):
    try:
        pdu = rts.decode(data)
    except rts.RtsError:
        return
    assert rts.decode(rts.encode(pdu)) == pdu


@settings(max_examples=scaled(300))
@given(pdus, st.data())
def test_mutated_pdus_only_ever_raise_rts_error(pdu, data):
    raw = bytearray(rts.encode(pdu))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        rts.decode(bytes(raw))
    except rts.RtsError:
        pass


@pytest.mark.slow
@settings(max_examples=scaled(20000))
@given(st.binary(min_size=20, max_size=400))
def test_long_fuzz_with_valid_headers(data):
    raw = rts.HEADER.pack(5, 0, 20, 3, rts.DREP_LITTLE_ENDIAN, 20 + len(data), 0, 0, 0,
                          struct.unpack_from("<H", data)[0] % 20) + data
    try:
        rts.decode(raw)
    except rts.RtsError:
        pass
