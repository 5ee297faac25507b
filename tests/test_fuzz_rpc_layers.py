"""The Outlook Anywhere fuzz layers (ntlm, rts, dcerpc, nspi): their faults change exactly what they say in the
messages the protocol cores build, refuse parameters that could not be sent, every drawn example loads as a
scenario; a fragile NTLM client is found, shrunk to the one AV pair it cannot do without and reproduced from the
saved scenario, and so are a fragile RPC over HTTP client, shrunk to the CONN/C2 receive window it divides by, and a
fragile DCE/RPC client, shrunk to the bind_ack's secondary address it takes for one of Exchange's ports."""
from __future__ import annotations

import base64
import http.client
import random
import socket
import ssl
import struct

import pytest
from hypothesis import given, settings
from impacket import ntlm
from impacket.uuid import uuidtup_to_bin

from harness.faults.base import FaultParamError, catalog
from harness.fuzz import fuzz_client
from harness.fuzz.cli import FUZZ_LAYERS
from harness.fuzz.engine import FuzzOptions, replay
from harness.fuzz.server import scenario_document
from harness.fuzz.strategies import LAYERS, examples
from harness.org import load_org
from harness.protocols import rts
from harness.protocols.ntlm import NTLMAcceptor, ServerIdentity
from harness.rpc.nspi.values import PT_ERROR, PT_LONG, PT_UNICODE, error_cell
from harness.scenario import inline_scenario
from tests.support.rpchttp import RawChannel, conn_a1, conn_b1, open_virtual_connection

ORG = load_org()
IDENTITY = ServerIdentity.for_org(ORG)
CATALOG = catalog()
NEGOTIATE = ntlm.getNTLMSSPType1("", "", signingRequired=True).getData()
DNS_COMPUTER = 3


def challenge(**params) -> bytes:
    edit = CATALOG["auth.ntlm-challenge"](**params).edit
    return NTLMAcceptor(IDENTITY, lambda user, domain: None, random.Random(1), clock=lambda: 0.0,
                        challenge_edit=edit).challenge(NEGOTIATE)


def av_ids(message: bytes) -> list:
    """The AV pair ids of a CHALLENGE's TargetInfo, in order, up to the end (MsvAvEOL included when there)."""
    length, _max, offset = struct.unpack_from("<HHI", message, 40)
    info, ids, at = message[offset:offset + length], [], 0
    while at + 4 <= len(info):
        av_id, size = struct.unpack_from("<HH", info, at)
        ids.append(av_id)
        at += 4 + size
    return ids


def test_the_layers_the_cli_offers_are_the_layers_with_strategies() -> None:
    assert set(FUZZ_LAYERS) == set(LAYERS)


def test_the_ntlm_challenge_fault_edits_flags_av_pairs_target_name_version_and_timestamp() -> None:
    plain = challenge()
    assert av_ids(plain) == [2, 1, 4, 3, 5, 7, 0]
    edited = challenge(flags_set=ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH, flags_clear=ntlm.NTLMSSP_NEGOTIATE_VERSION,
                       av_pairs=[{"action": "drop", "av": "MsvAvEOL"}, {"action": "first", "av": "MsvAvTimestamp"},
                                 {"action": "duplicate", "av": "MsvAvDnsTreeName"},
                                 {"action": "add", "av": "MsvAvFlags", "value": "02000000"}],
                       target_name="ünï", version="ffffffffffffffff", timestamp=0)
    assert av_ids(edited) == [7, 2, 1, 4, 3, 5, 5, 6]        # no MsvAvEOL: the add goes after the last pair
    parsed = ntlm.NTLMAuthChallenge(edited)
    assert parsed["flags"] & ntlm.NTLMSSP_NEGOTIATE_KEY_EXCH and not parsed["flags"] & ntlm.NTLMSSP_NEGOTIATE_VERSION
    assert parsed["domain_name"] == "ünï".encode("utf-16-le") and edited[48:56] == b"\xff" * 8   # the Version field
    length, _max, offset = struct.unpack_from("<HHI", edited, 40)
    assert edited[offset + 4:offset + 12] == bytes(8)          # MsvAvTimestamp, moved first, is FILETIME 0
    long_name = challenge(av_pairs=[{"action": "set", "av": "MsvAvDnsComputerName", "value": "a" * 300}])
    assert "a" * 300 in ntlm.AV_PAIRS(ntlm.NTLMAuthChallenge(long_name)["TargetInfoFields"])[DNS_COMPUTER][1].decode(
        "utf-16-le")


@pytest.mark.parametrize("name, values, param", [
    ("auth.ntlm-challenge", {"av_pairs": [{"action": "rename", "av": "MsvAvEOL"}]}, "av_pairs"),
    ("auth.ntlm-challenge", {"av_pairs": [{"action": "set", "av": "MsvAvFlags", "value": "xyz"}]}, "av_pairs"),
    ("auth.ntlm-challenge", {"av_pairs": [{"action": "drop", "av": "MsvAvNope"}]}, "av_pairs"),
    ("auth.ntlm-challenge", {"version": "0102"}, "version"),
    ("auth.ntlm-challenge", {"flags_set": 1 << 32}, "flags_set"),
    ("rpc.rts-mutate", {"extra": ["Bogus"]}, "extra"),
    ("rpc.rts-mutate", {"pdu": "CONN/B1"}, "pdu"),
    ("rpc.rts-mutate", {"receive_window": 1 << 32}, "receive_window"),
    ("rpc.bind-ack", {"fragment_size": 4}, "fragment_size"),
    ("rpc.bind-ack", {"extra_results": [70000]}, "extra_results"),
    ("mailbox.nspi-rows", {"cells": [{"action": "type", "column": 0, "value": "float"}]}, "cells"),
    ("mailbox.nspi-rows", {"cells": [{"action": "drop", "column": -1}]}, "cells"),
    ("mailbox.nspi-rows", {"rows": "many"}, "rows"),
])
def test_bad_parameters_are_refused(name, values, param) -> None:
    with pytest.raises(FaultParamError) as refused:
        CATALOG[name](**values)
    assert refused.value.param == param


def test_the_rts_mutation_replaces_conn_c2_with_a_well_formed_pdu() -> None:
    fault = CATALOG["rpc.rts-mutate"](pdu="CONN/C2", drop=["Version"], extra=["Padding", "Cookie"], reverse=True,
                                      receive_window=0, flags=rts.FLAG_ECHO)
    action = fault.on_rts(None, "out", "CONN/C2")
    assert action.kind == "replace" and fault.on_rts(None, "out", "CONN/A3") is None
    [pdu] = action.then
    assert rts.decode(rts.encode(pdu)) == pdu
    assert pdu.flags == rts.FLAG_ECHO and [type(c).__name__ for c in pdu.commands] == [
        "Cookie", "Padding", "ConnectionTimeout", "ReceiveWindowSize"]
    assert pdu.first(rts.ReceiveWindowSize).size == 0


def test_the_nspi_rows_edit_drops_retypes_errors_and_multiplies_rows() -> None:
    name_tag, id_tag = 0x3001001F, 0x0FFE0003
    table = [[(name_tag, "Alice"), (id_tag, 6)], [(name_tag, "Bob"), (id_tag, 6)]]
    edit = CATALOG["mailbox.nspi-rows"](cells=[{"action": "type", "column": 1, "value": "long"},
                                               {"action": "error", "column": 0},
                                               {"action": "drop", "column": 5}], rows="error-row").edit
    edited = edit.apply(table)
    assert edited[0] == [error_cell(name_tag), (id_tag & 0xFFFF0000 | PT_LONG, 0x7FFFFFFF)]
    assert len(edited) == 3 and all(tag & 0xFFFF == PT_ERROR for tag, _value in edited[2])
    text = CATALOG["mailbox.nspi-rows"](cells=[{"action": "text", "column": 1, "value": "\U0001F600"}]).edit
    assert text.apply(table)[1][1] == (id_tag & 0xFFFF0000 | PT_UNICODE, "\U0001F600")
    assert CATALOG["mailbox.nspi-rows"](rows="none").edit.apply(table) == []


@pytest.mark.parametrize("layer", ["ntlm", "rts", "dcerpc", "nspi"])
def test_every_drawn_example_loads_as_a_scenario(layer) -> None:
    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(examples([layer]))
    def loads(faults) -> None:
        inline_scenario("fuzz-example", scenario_document("fuzz-example", faults)["faults"], "<fuzz>")
        for served in faults:
            CATALOG[served["fault"]](**served["params"])
    loads()


# ---- a fragile NTLM client ---------------------------------------------------------------------------------------
def fragile_ntlm(served) -> None:
    """Starts an NTLM logon on the EWS URL and reads the server's DNS name from the CHALLENGE's TargetInfo as if
    MsvAvDnsComputerName were always there (MS-NLMP lets a server leave it out): a KeyError when it is not."""
    context = ssl.create_default_context(cafile=served.ca_file)
    host = f"mail.{served.domain}"
    connection = http.client.HTTPSConnection(host, int(served.https_port), context=context, timeout=5)
    connection.sock = context.wrap_socket(socket.create_connection((served.host, int(served.https_port)), 5),
                                          server_hostname=host)
    connection.request("POST", "/EWS/Exchange.asmx", b"", {
        "Authorization": "NTLM " + base64.b64encode(NEGOTIATE).decode(), "Content-Type": "text/xml"})
    response = connection.getresponse()
    response.read()
    connection.close()
    token = next((v.split(" ", 1)[1] for v in response.headers.get_all("WWW-Authenticate") or []
                  if v.startswith("NTLM ")), None)
    if token is None:
        raise ValueError(f"no NTLM challenge ({response.status})")
    message = base64.b64decode(token)
    length, _max, offset = struct.unpack_from("<HHI", message, 40)
    info, pairs, at = message[offset:offset + length], {}, 0
    while at + 4 <= len(info):
        av_id, size = struct.unpack_from("<HH", info, at)
        if av_id == 0:
            break
        pairs[av_id] = info[at + 4:at + 4 + size]
        at += 4 + size
    pairs[DNS_COMPUTER].decode("utf-16-le", "replace")    # BUG: an optional pair taken for granted


def test_a_fragile_ntlm_client_is_found_shrunk_to_the_missing_pair_and_reproduced(tmp_path) -> None:
    expected = {"fault": "auth.ntlm-challenge", "params": {"av_pairs": [{"action": "drop",
                                                                         "av": "MsvAvDnsComputerName"}]}}
    clean = (OSError, http.client.HTTPException, ValueError, struct.error)
    report = fuzz_client(fragile_ntlm, layers=["ntlm"], max_examples=80, seed=1, timeout=10, max_findings=1,
                         expected_errors=clean, save_failures=str(tmp_path))
    assert len(report.findings) == 1, [f.describe() for f in report.findings]
    finding = report.findings[0]
    assert finding.verdict.oracle == "crash" and "KeyError" in finding.verdict.signature
    assert finding.faults == [expected]
    verdict, _run = replay(finding.path, fragile_ntlm, FuzzOptions(expected_errors=clean))
    assert verdict is not None and verdict.signature == finding.verdict.signature


# ---- a fragile RPC over HTTP client (the rts layer) ---------------------------------------------------------------
STUB_SIZE = 4096   # the request the fragile client means to send, split by the IN channel's window


def fragile_rts(served) -> None:
    """Opens a virtual connection as impacket orders it (OUT channel and CONN/A1, IN channel and CONN/B1, CONN/A3 and
    CONN/C2 back on OUT), reads CONN/C2's commands by type (so a missing, extra or reordered one is a clean error),
    then splits its first request into fragments of a quarter of the IN channel's receive window as if the window
    were never below 4 bytes (MS-RPCH sets no lower bound): a ZeroDivisionError when it is."""
    vc, out_cookie, in_cookie, group = (random.Random(1).randbytes(16) for _ in range(4))
    channels: list = []
    try:
        login = (served.host, served.ca_file)
        out = RawChannel(*login, "RPC_OUT_DATA", served.username, served.password, port=int(served.https_port))
        channels.append(out)
        out.send(conn_a1(vc, out_cookie))
        head = out.head()
        if not head.startswith(b"HTTP/1.1 200 "):
            raise ValueError(f"the OUT channel was refused: {head[:40]!r}")
        rts.decode(out.read_pdu())   # CONN/A3: nothing in it is needed
        inbound = RawChannel(*login, "RPC_IN_DATA", served.username, served.password, port=int(served.https_port))
        channels.append(inbound)
        inbound.send(conn_b1(vc, in_cookie, group))
        c2 = rts.decode(out.read_pdu())
    except AssertionError as exc:   # RawChannel's word for a connection that ended or answered otherwise
        raise ValueError(str(exc)) from None
    finally:
        for channel in channels:
            channel.close()
    window = c2.first(rts.ReceiveWindowSize)
    if window is None:
        raise ValueError(f"{c2.name} without a ReceiveWindowSize")
    fragments = -(-STUB_SIZE // (window.size // 4))   # BUG: a window under 4 bytes divides by zero
    assert fragments >= 1


def test_a_fragile_rts_client_is_found_shrunk_to_the_receive_window_and_reproduced(tmp_path) -> None:
    expected = {"fault": "rpc.rts-mutate", "params": {"pdu": "CONN/C2", "receive_window": 0}}
    clean = (OSError, ValueError)
    report = fuzz_client(fragile_rts, layers=["rts"], max_examples=60, seed=1, timeout=10, max_findings=1,
                         expected_errors=clean, save_failures=str(tmp_path))
    assert len(report.findings) == 1, [f.describe() for f in report.findings]
    finding = report.findings[0]
    assert finding.verdict.oracle == "crash" and "ZeroDivisionError" in finding.verdict.signature
    assert finding.faults == [expected]
    verdict, _run = replay(finding.path, fragile_rts, FuzzOptions(expected_errors=clean))
    assert verdict is not None and verdict.signature == finding.verdict.signature


# ---- a fragile DCE/RPC client (the dcerpc layer) -------------------------------------------------------------------
NSPI_SYNTAX = uuidtup_to_bin(("F5CC5A18-4264-101A-8C59-08002B2F8426", "56.0"))
NDR_SYNTAX = uuidtup_to_bin(("8A885D04-1CEB-11C9-9FE8-08002B104860", "2.0"))
BIND, BIND_ACK, BIND_NAK = 11, 12, 13
EXCHANGE_PORTS = {"6001": "emsmdb", "6002": "rfr", "6004": "nspi"}    # where Exchange 2013's RPC services listen


def nspi_bind() -> bytes:
    """A bind of NSPI over NDR 2.0, no auth trailer (C706 12.6.4.3): max_xmit/max_recv 4280, a new association."""
    body = struct.pack("<HHLBBH", 4280, 4280, 0, 1, 0, 0) + struct.pack("<HBB", 0, 1, 0) + NSPI_SYNTAX + NDR_SYNTAX
    return struct.pack("<BBBB4sHHL", 5, 0, BIND, 3, b"\x10\0\0\0", 16 + len(body), 0, 1) + body


def fragile_dcerpc(served) -> str:
    """Opens a virtual connection to the NSPI port, binds NSPI and reads the bind_ack (C706 12.6.4.4) with care: a
    bind_nak, another PDU, a short body or no accepted context is a clean error. Then it names the service it reached
    by the secondary address as if that were always one of Exchange's ports (a server may announce any port text, or
    none): a KeyError when it is not."""
    try:
        vc = open_virtual_connection(served.host, served.ca_file, served.username, served.password,
                                     random.Random(1), port=int(served.https_port))
        try:
            vc.in_channel.send(nspi_bind())
            ack = vc.out_channel.read_pdu()
        finally:
            vc.close()
    except AssertionError as exc:   # RawChannel's word for a connection that ended or answered otherwise
        raise ValueError(str(exc)) from None
    if ack[2] != BIND_ACK:
        raise ValueError(f"PDU type {ack[2]} instead of bind_ack" + (" (bind_nak)" if ack[2] == BIND_NAK else ""))
    (length,) = struct.unpack_from("<H", ack, 24)
    address = ack[26:26 + length]
    at = 26 + length + (-(26 + length) % 4)
    results = [struct.unpack_from("<HH", ack, at + 4 + 24 * index) for index in range(ack[at])]
    if not any(result == 0 for result, _reason in results):
        raise ValueError(f"no presentation context accepted: {results}")
    return EXCHANGE_PORTS[address.rstrip(b"\x00").decode("ascii")]   # BUG: any other port text is possible


def test_a_fragile_dcerpc_client_is_found_shrunk_to_the_secondary_address_and_reproduced(tmp_path) -> None:
    expected = {"fault": "rpc.bind-ack", "params": {"secondary_address": ""}}
    clean = (OSError, ValueError, struct.error)
    report = fuzz_client(fragile_dcerpc, layers=["dcerpc"], seed=1, timeout=10, max_findings=1,
                         expected_errors=clean, save_failures=str(tmp_path))     # the default 100 examples at most
    assert len(report.findings) == 1, [f.describe() for f in report.findings]
    finding = report.findings[0]
    assert finding.verdict.oracle == "crash" and "KeyError" in finding.verdict.signature
    assert finding.faults == [expected]
    verdict, _run = replay(finding.path, fragile_dcerpc, FuzzOptions(expected_errors=clean))
    assert verdict is not None and verdict.signature == finding.verdict.signature


def test_the_cli_offers_the_new_layers_and_refuses_a_fixed_port_for_several_jobs() -> None:
    from tests.support.clients import run_mockex
    helped = run_mockex("fuzz", "--help", timeout=60)
    assert all(layer in helped.stdout for layer in ("ntlm", "rts", "dcerpc", "nspi", "--https-port", "--listen"))
    refused = run_mockex("fuzz", "--client", "true", "--layer", "rts", "--https-port", "443", "-j", "2", timeout=60)
    assert refused.returncode == 2 and "--https-port with -j" in refused.stderr, refused.stderr
