"""RPC over HTTP faults as real clients see them: impacket's ncacn_http transport (RPCProxyClient under DCERPC_v5)
and unmodified exchanger.py, against one `mockex serve` that carries every rpc fault, each scoped to its own RPC
server name or user, so one server start serves every check."""
from __future__ import annotations

import logging
import random
import ssl
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from impacket.dcerpc.v5 import nspi, oxabref, rpch, rpcrt
from impacket.dcerpc.v5.rpch import RPCProxyClientException
from impacket.dcerpc.v5.rpcrt import DCERPCException

from harness.faults.base import FaultParamError, catalog
from harness.hooks import FaultSet, Scope
from harness.org import load_org
from harness.protocols import rts
from harness.protocols.rpcchannel import Close, Send
from harness.protocols.rpcout import OUT_CHANNEL_HEADS
from harness.protocols.rpcproxy import CONNECTION_TIMEOUT_MS, IN_RECEIVE_WINDOW, RpcProxy, rpc_channel_hook
from harness.transcript import Transcript
from tests.support.clients import (
    PRIVACY,
    default_socket_timeout,
    exchanger,
    needs_exchanger,
    nspi_handle,
    rpc_bind,
    rpc_transport,
)
from tests.support.servers import scenario_args, start_on_port_443
from tests.support.transcript import fault_fired

ORG = load_org()
GUID_NAME = {mailbox.username: ORG.personal_server(mailbox) for mailbox in ORG.mailboxes}
INTEGRITY = rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY

SCENARIO = f"""\
name: rpc-everything
faults:
  - rpc.proxy-error: {{host: ex02, code: "6BA"}}
  - rpc.invalid-port: {{ports: [6002]}}
  - rpc.invalid-port: {{names: [ex01.contoso.test]}}
  - rpc.unknown-server: {{host: ex02.contoso.test}}
  - rpc.no-conn-a3: {{host: "{GUID_NAME['alice']}"}}
  - rpc.no-conn-c2: {{host: "{GUID_NAME['bob']}"}}
  - rpc.out-channel-drop: {{host: "{GUID_NAME['carol']}"}}
  - rpc.in-channel-reset: {{host: "{GUID_NAME['dave']}"}}
  - rpc.server-ping: {{host: "{GUID_NAME['confroom1']}", count: 2}}
  - rpc.channel-recycle: {{host: "{GUID_NAME['helpdesk']}"}}
  - rpc.bind-nak: {{interface: rfr}}
  - rpc.auth-level-refused: {{interface: nspi, user: bob@contoso.test}}
  - rpc.call-fault: {{interface: nspi, opnum: 12, user: carol@contoso.test}}
expect:
  analyzer: {{passes: true}}
"""


# ---- what impacket got, what the server recorded --------------------------------------------------------------------
def address_lists(dce) -> list:
    handle = nspi_handle(dce)
    rows = nspi.simplifyPropertyRowSet(nspi.hNspiGetSpecialTable(dce, handle)["ppRows"])
    nspi.hNspiUnbind(dce, handle)
    dce.get_rpc_transport().disconnect()
    return [row.get(0x3001001F) for row in rows]


def rts_of(served, target: str) -> list:
    """(channel, sent, pdu) of every RTS PDU on the channels opened for ``target``."""
    conns = {e["conn"] for e in served.transcript("rpc_channel") if e.get("target") == target}
    return [(e["channel"], e["sent"], e["pdu"]) for e in served.transcript("rts") if e["conn"] in conns]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    one = start_on_port_443(*scenario_args(tmp_path_factory.mktemp("faults"), "rpc", SCENARIO))
    with default_socket_timeout(5):
        yield one
    assert one.stop() == 0


# ---- the proxy refusing channels ---------------------------------------------------------------------------------
def test_proxy_refusals_reach_impacket(served):
    with pytest.raises(RPCProxyClientException) as refused:
        rpc_bind(served, "EX02")
    assert refused.value.get_error_code() == 0x6BA
    assert str(refused.value).startswith("RPC Proxy CONN/A1 request failed, code: 0x6ba - RPC_S_SERVER_UNAVAILABLE")
    with pytest.raises(RPCProxyClientException, match="RPC_IN_DATA channel: HTTP/1.1 503 Invalid RPC Port"):
        rpc_bind(served, "EX01", oxabref.MSRPC_UUID_OXABREF, port=6002)
    with pytest.raises(RPCProxyClientException, match="RPC_IN_DATA channel: HTTP/1.1 503 Invalid RPC Port"):
        rpc_bind(served, "ex01.contoso.test")
    with pytest.raises(RPCProxyClientException, match="RPC_IN_DATA channel: HTTP/1.1 404 Not Found"):
        rpc_bind(served, "ex02.contoso.test")
    assert "All Users" in address_lists(rpc_bind(served, "EX01", port=6001))    # other names and ports still work
    assert fault_fired(served, "rpc.proxy-error") and fault_fired(served, "rpc.unknown-server")
    assert {e["host"] for e in fault_fired(served, "rpc.invalid-port")} == {"EX01", "ex01.contoso.test"}


def test_missing_handshake_pdus_leave_impacket_waiting(served):
    with default_socket_timeout(1), ThreadPoolExecutor(2) as pool:
        waits = [pool.submit(rpc_transport(served, GUID_NAME[user]).connect) for user in ("alice", "bob")]
        for wait in waits:
            with pytest.raises(TimeoutError, match="timed out"):
                wait.result()
    assert [p for p in rts_of(served, GUID_NAME["alice"]) if p[1]] == []                       # no CONN/A3
    assert [p for p in rts_of(served, GUID_NAME["bob"]) if p[1]] == [("out", True, "CONN/A3")]  # no CONN/C2


def test_channel_resets_cut_the_virtual_connection(served):
    transport = rpc_transport(served, GUID_NAME["carol"])
    with pytest.raises(ssl.SSLEOFError):
        transport.connect()
    assert transport._RPCProxyClient__serverConnectionTimeout == 120000    # CONN/A3 came, CONN/C2 did not
    transport = rpc_transport(served, GUID_NAME["dave"])
    transport.connect()                                                    # the handshake passes
    dce = transport.get_dce_rpc()
    dce.set_credentials("alice", served.user("alice")["password"], "CONTOSO")
    dce.set_auth_level(PRIVACY)
    with pytest.raises(ssl.SSLEOFError):
        dce.bind(nspi.MSRPC_UUID_NSPI)
    reasons = [e["reason"] for e in served.wait_for(lambda e: e["kind"] == "rpc_vc_closed" and "fault" in e["reason"])]
    assert "OUT channel reset after 28 counted bytes (fault)" in reasons
    assert "IN channel reset after 0 counted bytes (fault)" in reasons


def test_a_cut_inside_a_pdu_sends_its_first_bytes_then_resets_both_channels():
    faults = FaultSet([catalog()["rpc.out-channel-drop"](after_bytes=30)])
    proxy = RpcProxy(ORG, Transcript().record, random.Random(1), [], faults=faults, out_framing="legacy")
    alice, peer = ORG.find("alice"), ("127.0.0.1", 50000)
    cut = faults.first(rpc_channel_hook, Scope("EX01"), SimpleNamespace(method="RPC_OUT_DATA"), "EX01", 6004)
    in_channel, _ = proxy.open_channel("RPC_IN_DATA", "EX01:6004", alice, peer)
    out_channel, _ = proxy.open_channel("RPC_OUT_DATA", "EX01:6004", alice, peer, cut=cut)
    vc, cookie = b"V" * 16, b"C" * 16
    assert proxy.data_received(out_channel, rpch.hCONN_A1(vc, cookie, 262144)) == [
        Send(out_channel, OUT_CHANNEL_HEADS["legacy"] + rts.encode(rts.conn_a3(CONNECTION_TIMEOUT_MS)))]
    c2 = rts.encode(rts.conn_c2(IN_RECEIVE_WINDOW, CONNECTION_TIMEOUT_MS))
    reason = "OUT channel reset after 30 counted bytes (fault)"
    assert proxy.data_received(in_channel, rpch.hCONN_B1(vc, cookie, cookie)) == [
        Send(out_channel, c2[:2]), Close(in_channel, reason, reset=True), Close(out_channel, reason, reset=True)]


# ---- RTS PDUs a client must cope with --------------------------------------------------------------------------------
def test_pings_are_skipped_and_answered(served, caplog):
    target = GUID_NAME["confroom1"]
    dce = rpc_bind(served, target)
    assert dce.get_rpc_transport().rts_ping_received
    assert "All Users" in address_lists(dce)
    assert any("Ping RTS PDU packet received" in record.getMessage() for record in caplog.records
               if record.levelno == logging.ERROR)
    assert served.wait_for(lambda e: e["kind"] == "rts" and e["pdu"] == "Ping" and not e["sent"])
    pings = [p for p in rts_of(served, target) if p[2] == "Ping"]
    assert pings.count(("out", True, "Ping")) == 2 and pings.count(("in", False, "Ping")) == 4   # two back per ping


def test_recycling_request_stops_impacket(served):
    with pytest.raises(RPCProxyClientException, match="requested recycling of a virtual OUT channel, but this "
                                                       "function is not supported"):
        rpc_bind(served, GUID_NAME["helpdesk"])
    assert ("out", True, "RTS(flags=0x0004: Destination)") in rts_of(served, GUID_NAME["helpdesk"])


# ---- the DCE/RPC server ------------------------------------------------------------------------------------------
def test_bind_refusals(served):
    with pytest.raises(DCERPCException, match="Bind context rejected: reason_not_specified"):
        rpc_bind(served, "EX01", oxabref.MSRPC_UUID_OXABREF, port=6001)
    with pytest.raises(DCERPCException, match="Bind context rejected: reason_not_specified"):
        rpc_bind(served, "EX01", user="bob", level=INTEGRITY)
    assert "All Users" in address_lists(rpc_bind(served, "EX01", user="bob", level=PRIVACY))
    naks = [e for e in served.transcript("rpc_bind") if e["result"].startswith("nak")]
    assert [e["reason"] for e in naks] == ["rfr refused by a fault", "auth level 5 is below 6"]


def test_call_fault_hits_one_opnum_and_the_association_survives(served):
    dce = rpc_bind(served, "EX01", user="carol")
    handle = nspi_handle(dce)
    with pytest.raises(DCERPCException, match="Unknown DCE RPC fault status code: 000006ba"):
        nspi.hNspiGetSpecialTable(dce, handle)
    nspi.hNspiUnbind(dce, handle)            # the next call goes through: sealing stayed in step
    dce.get_rpc_transport().disconnect()
    (event,) = fault_fired(served, "rpc.call-fault")
    assert event["user"] == "carol@contoso.test"


# ---- exchanger.py --------------------------------------------------------------------------------------------------
def test_exchanger_reports_each_fault(served):
    needs_exchanger(served)
    runs = {"proxy-error": ("alice", ["-rpc-hostname", "EX02"]),
            "invalid-port": ("alice", ["-rpc-hostname", "ex01.contoso.test"]),
            "unknown-server": ("alice", ["-rpc-hostname", "ex02.contoso.test"]),
            "recycle": ("alice", ["-rpc-hostname", GUID_NAME["helpdesk"]]),
            "ping": ("alice", ["-rpc-hostname", GUID_NAME["confroom1"]]),
            "call-fault": ("carol", [])}
    with ThreadPoolExecutor(len(runs)) as pool:
        futures = {name: pool.submit(exchanger, served, ["nspi", "list-tables"], options, user)
                   for name, (user, options) in runs.items()}
        results = {name: future.result() for name, future in futures.items()}
    output = {name: result.stdout + result.stderr for name, result in results.items()}
    assert "RPC Proxy CONN/A1 request failed, code: 0x6ba" in output["proxy-error"]
    assert "the target has no ACL to connect to this endpoint using RPC Proxy" in output["proxy-error"]
    assert "RPC_IN_DATA channel: HTTP/1.1 503 Invalid RPC Port" in output["invalid-port"]
    assert "RPC_IN_DATA channel: HTTP/1.1 404 Not Found" in output["unknown-server"]
    assert "requested recycling of a virtual OUT channel" in output["recycle"]
    assert results["ping"].returncode == 0 and "All Users" in results["ping"].stdout
    assert "Ping RTS PDU packet received. Is the RPC Server alive?" in output["ping"]
    assert "Unknown DCE RPC fault status code: 000006ba" in output["call-fault"]


# ---- parameters ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, values, param", [
    ("rpc.proxy-error", {"code": "6BAZ"}, "code"),
    ("rpc.invalid-port", {"ports": ["6001"]}, "ports"),
    ("rpc.unknown-server", {"names": [1]}, "names"),
    ("rpc.out-channel-drop", {"after_bytes": -1}, "after_bytes"),
    ("rpc.server-ping", {"count": 0}, "count"),
    ("rpc.bind-nak", {"interface": "samr"}, "interface"),
])
def test_bad_parameters_are_refused(name, values, param):
    with pytest.raises(FaultParamError) as refused:
        catalog()[name](**values)
    assert refused.value.param == param
