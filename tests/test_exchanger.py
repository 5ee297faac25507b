"""End to end over real sockets: unmodified exchanger.py and impacket's ncacn_http transport against `mockex serve`
on 127.0.0.2:443 (the server443 fixture; impacket's RPC proxy transport only speaks to port 443)."""
import pytest
from impacket.dcerpc.v5 import nspi, oxabref, rpcrt
from impacket.dcerpc.v5.rpcrt import DCERPCException
from impacket.dcerpc.v5.transport import DCERPCTransportFactory

from tests.support.clients import bind_over_http, exchanger, ncacn_http, nspi_handle, requires_exchanger
from tests.support.transcript import TranscriptTail

pytestmark = [pytest.mark.root, requires_exchanger]


# ---- exchanger.py ------------------------------------------------------------------------------------------------
def test_list_tables_with_ntlm(server443):
    tail = TranscriptTail(server443)
    result = exchanger(server443, ["nspi", "list-tables"])
    assert result.returncode == 0, result.stderr
    assert "Default Global Address List" in result.stdout and "All Users" in result.stdout
    tail.wait_for(lambda e: e["kind"] == "rpc_channel_closed")   # recorded after the client has gone
    channels = tail.events("rpc_channel")
    assert [(c["channel"], c["target"], c["port"], c["status"]) for c in channels] == [
        ("in", "EX01", 6004, 100), ("out", "EX01", 6004, 100)]
    handshake = [(e["channel"], e["sent"], e["pdu"]) for e in tail.events("rts")]
    assert handshake == [("out", False, "CONN/A1"), ("out", True, "CONN/A3"), ("in", False, "CONN/B1"),
                         ("out", True, "CONN/C2")]
    (bind,) = tail.events("rpc_bind")
    assert (bind["interface"], bind["auth_level"], bind["result"]) == ("nspi", 6, "accepted")
    (auth,) = tail.events("rpc_auth")
    assert auth["ok"] and auth["mailbox"] == "alice@contoso.test"
    calls = [(c["op"], c["status"]) for c in tail.events("rpc_call")]
    assert calls == [("NspiBind", "0x00000000"), ("NspiGetSpecialTable", "0x00000000"),
                     ("NspiUnbind", "0x00000001")]
    assert not tail.events("rpc_fault", "rpc_proxy_error", "rpc_internal_error")


def test_list_tables_with_counts(server443):
    result = exchanger(server443, ["nspi", "list-tables", "-count"])
    assert result.returncode == 0, result.stderr
    assert "TotalRecs: " in result.stdout and "All Rooms" in result.stdout


def test_dump_tables_of_the_global_address_list(server443):
    tail = TranscriptTail(server443)
    result = exchanger(server443, ["nspi", "dump-tables", "-name", "Global Address List"])
    assert result.returncode == 0, result.stderr
    for user in server443.endpoints["users"]:
        assert f"mail: {user['email']}" in result.stdout
    ops = [c["op"] for c in tail.events("rpc_call")]
    assert "NspiQueryRows" in ops and not tail.events("rpc_fault")


def test_basic_auth_with_the_personal_rpc_server_name(server443):
    tail = TranscriptTail(server443)
    rpc_server = server443.user("alice")["rpc_server"]
    result = exchanger(server443, ["nspi", "list-tables"], options=["-basic", "-rpc-hostname", rpc_server])
    assert result.returncode == 0, result.stderr
    assert "All Address Lists" in result.stdout
    channels = tail.events("rpc_channel")
    assert {(c["target"], c["port"]) for c in channels} == {(rpc_server, 6004)}
    schemes = {a["scheme"] for a in tail.events("auth")}
    assert schemes == {"Basic"}


def test_wrong_password_gets_impacket_s_401_message(server443):
    tail = TranscriptTail(server443)
    result = exchanger(server443, ["nspi", "list-tables"], password="not-the-password")
    output = result.stdout + result.stderr
    assert "NTLM authentication failed in RPC_IN_DATA channel: HTTP/1.1 401 Unauthorized" in output
    assert "Wrong credentials!" in output
    assert not tail.events("rpc_channel")


def test_unknown_rpc_server_name_is_404(server443):
    result = exchanger(server443, ["nspi", "list-tables"], options=["-rpc-hostname", "EX99"])
    assert "RPC_IN_DATA channel: HTTP/1.1 404 Not Found" in result.stdout + result.stderr


# ---- impacket's transport, directly ------------------------------------------------------------------------------
def connect(served, interface, level, port=6004, user="alice"):
    return bind_over_http(ncacn_http(served.host, port=port), interface, user, served.user(user)["password"], level)


@pytest.mark.parametrize("level", [rpcrt.RPC_C_AUTHN_LEVEL_NONE, rpcrt.RPC_C_AUTHN_LEVEL_CONNECT,
                                   rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY])
def test_nspi_at_each_auth_level(server443, socket_timeout, level):
    tail = TranscriptTail(server443)
    dce = connect(server443, nspi.MSRPC_UUID_NSPI, level)
    handle = nspi_handle(dce)
    rows = nspi.simplifyPropertyRowSet(nspi.hNspiGetSpecialTable(dce, handle)["ppRows"])
    assert any(row.get(0x3001001F) == "All Users" for row in rows)
    nspi.hNspiUnbind(dce, handle)
    dce.get_rpc_transport().disconnect()
    (bind,) = tail.events("rpc_bind")
    assert (bind["interface"], bind["auth_level"]) == ("nspi", level)


def test_rfr_on_port_6002(server443, socket_timeout):
    tail = TranscriptTail(server443)
    dce = connect(server443, oxabref.MSRPC_UUID_OXABREF, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY, port=6002)
    answer = oxabref.hRfrGetNewDSA(dce, server443.user("alice")["legacy_dn"])
    assert answer["ppszServer"]
    dce.get_rpc_transport().disconnect()
    channels = tail.events("rpc_channel")
    assert {c["port"] for c in channels} == {6002}
    assert [c["op"] for c in tail.events("rpc_call")] == ["RfrGetNewDSA"]


def test_invalid_port_is_refused_with_impacket_s_constant(server443, socket_timeout):
    transport = DCERPCTransportFactory(f"ncacn_http:EX01[593,RpcProxy={server443.host}:443]")
    transport.set_credentials("alice", server443.user("alice")["password"], "CONTOSO")
    with pytest.raises(DCERPCException, match="Invalid RPC Port"):
        transport.connect()
