"""The RPC_OUT_DATA framing personas end to end: exchange2013 (the default: `Transfer-Encoding: chunked`, one PDU per
chunk, as Exchange 2013's front end streams it) and legacy (the IIS rpcproxy of 2007/2010: `Content-Length:
1073741824`, raw PDUs), read by raw sockets (exact bytes), impacket's ncacn_http transport, unmodified
exchanger.py and the probe. The :443 tests need root (run them in a private network namespace)."""
from __future__ import annotations

import random
from typing import Iterator

import pytest
from impacket.dcerpc.v5 import nspi

from harness.probe.report import render_text
from harness.probe.runner import probe
from harness.protocols import rts
from harness.protocols.rpcout import OUT_CHANNEL_HEADS
from harness.protocols.rpcproxy import CONNECTION_TIMEOUT_MS
from harness.testing import Served, start_server
from tests.support.clients import exchanger, needs_exchanger, nspi_handle, probe_options, rpc_bind
from tests.support.rpchttp import RawChannel, conn_a1
from tests.support.servers import scenario_args, start_on_port_443

A3 = rts.encode(rts.conn_a3(CONNECTION_TIMEOUT_MS))
FRAMED_A3 = {"exchange2013": b"%x\r\n" % len(A3) + A3 + b"\r\n", "legacy": A3}


@pytest.fixture(scope="module")
def legacy443(tmp_path_factory) -> Iterator[Served]:
    served = start_on_port_443(str(tmp_path_factory.mktemp("legacy443")), "--rpc-out-framing", "legacy")
    yield served
    served.stop()


@pytest.fixture(params=["exchange2013", "legacy"])
def persona(request):
    """(persona, server): the session's default server443, or one started with --rpc-out-framing legacy."""
    if request.param == "exchange2013":
        return request.param, request.getfixturevalue("server443")
    return request.param, request.getfixturevalue("legacy443")


def out_events(served: Served) -> list:
    return [e for e in served.transcript("rpc_channel") if e["channel"] == "out" and e.get("status") == 100]


def test_the_out_channel_head_and_first_pdu_are_framed_per_persona(persona):
    name, served = persona
    if served.https_port != 443:
        pytest.skip("needs :443 (root)")
    alice = served.user("alice")
    out = RawChannel(served.host, served.ca_file, "RPC_OUT_DATA", "alice", alice["password"])
    try:
        out.send(conn_a1(random.Random(1).randbytes(16), random.Random(2).randbytes(16)))
        expected = OUT_CHANNEL_HEADS[name] + FRAMED_A3[name]
        raw = b""
        while len(raw) < len(expected):
            data = out.sock.recv(65536)
            assert data, f"the OUT channel closed after {raw!r}"
            raw += data
        assert raw == expected
    finally:
        out.close()
    assert out_events(served)[-1]["framing"] == name


def test_impacket_reads_both_personas(persona):
    name, served = persona
    dce = rpc_bind(served, "EX01")
    handle = nspi_handle(dce)
    rows = nspi.simplifyPropertyRowSet(nspi.hNspiGetSpecialTable(dce, handle)["ppRows"])
    nspi.hNspiUnbind(dce, handle)
    assert dce.get_rpc_transport()._RPCProxyClient__serverChunked == (name == "exchange2013")
    dce.get_rpc_transport().disconnect()
    assert "All Users" in [row.get(0x3001001F) for row in rows]


def test_exchanger_reads_both_personas(persona):
    name, served = persona
    needs_exchanger(served)
    result = exchanger(served, ["nspi", "list-tables"])
    assert result.returncode == 0, result.stderr
    assert "Global Address List" in result.stdout
    assert out_events(served)[-1]["framing"] == name


@pytest.mark.parametrize("args", [(), ("--rpc-out-framing", "legacy")], ids=["exchange2013", "legacy"])
def test_the_probe_reads_both_personas(tmp_path, args):
    served = start_server(str(tmp_path), *args)
    try:
        report = probe(probe_options(served))
        assert report.verdict.passed, render_text(report, verbose=True)
        assert {e["framing"] for e in out_events(served)} == {"legacy" if args else "exchange2013"}
    finally:
        assert served.stop() == 0


def test_the_legacy_framing_fault_switches_only_its_host(tmp_path):
    served = start_server(*scenario_args(tmp_path, "legacy", "rpc-legacy-out-framing"))
    try:
        report = probe(probe_options(served))
        assert report.verdict.passed, render_text(report, verbose=True)
        assert {e["framing"] for e in out_events(served)} == {"legacy"}
        assert any(e["fault"] == "rpc.legacy-out-framing" for e in served.transcript("fault"))
    finally:
        assert served.stop() == 0
