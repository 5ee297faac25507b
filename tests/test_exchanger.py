"""End to end over real sockets: unmodified exchanger.py and impacket's ncacn_http transport against `mockex serve`
on 127.0.0.2:443 (the server443 fixture; impacket's RPC proxy transport only speaks to port 443)."""
import shutil
import socket
import subprocess
import sys

import pytest
from impacket.dcerpc.v5 import nspi, oxabref, rpcrt
from impacket.dcerpc.v5.rpcrt import DCERPCException
from impacket.dcerpc.v5.transport import DCERPCTransportFactory

EXCHANGER = shutil.which("exchanger.py")
TIMEOUT = 60

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(EXCHANGER is None, reason="impacket's exchanger.py is not installed")]


def exchanger(served, command, options=(), user="alice", password=None):
    """Run exchanger.py to completion (a hang fails the test through the timeout)."""
    password = served.user(user)["password"] if password is None else password
    target = f"{served.endpoints['domain']}/{user}:{password}@{served.host}"
    return subprocess.run([sys.executable, EXCHANGER, *options, target, *command], capture_output=True, text=True,
                          timeout=TIMEOUT)


def events_after(served, mark, *kinds):
    return [e for e in served.transcript(*kinds) if e["seq"] > mark]


def last_seq(served):
    events = served.transcript()
    return events[-1]["seq"] if events else 0


def wait_for_teardown(served, mark):
    """The server records the channel teardown after the client has gone; wait for it before judging."""
    served.wait_for(lambda e: e["seq"] > mark and e["kind"] == "rpc_channel_closed")


# ---- exchanger.py ------------------------------------------------------------------------------------------------
def test_list_tables_with_ntlm(server443):
    mark = last_seq(server443)
    result = exchanger(server443, ["nspi", "list-tables"])
    assert result.returncode == 0, result.stderr
    assert "Default Global Address List" in result.stdout and "All Users" in result.stdout
    wait_for_teardown(server443, mark)
    channels = events_after(server443, mark, "rpc_channel")
    assert [(c["channel"], c["target"], c["port"], c["status"]) for c in channels] == [
        ("in", "EX01", 6004, 100), ("out", "EX01", 6004, 100)]
    handshake = [(e["channel"], e["sent"], e["pdu"]) for e in events_after(server443, mark, "rts")]
    assert handshake == [("out", False, "CONN/A1"), ("out", True, "CONN/A3"), ("in", False, "CONN/B1"),
                         ("out", True, "CONN/C2")]
    (bind,) = events_after(server443, mark, "rpc_bind")
    assert (bind["interface"], bind["auth_level"], bind["result"]) == ("nspi", 6, "accepted")
    (auth,) = events_after(server443, mark, "rpc_auth")
    assert auth["ok"] and auth["mailbox"] == "alice@contoso.test"
    calls = [(c["op"], c["status"]) for c in events_after(server443, mark, "rpc_call")]
    assert calls == [("NspiBind", "0x00000000"), ("NspiGetSpecialTable", "0x00000000"),
                     ("NspiUnbind", "0x00000001")]
    assert not events_after(server443, mark, "rpc_fault", "rpc_proxy_error", "rpc_internal_error")


def test_list_tables_with_counts(server443):
    result = exchanger(server443, ["nspi", "list-tables", "-count"])
    assert result.returncode == 0, result.stderr
    assert "TotalRecs: " in result.stdout and "All Rooms" in result.stdout


def test_dump_tables_of_the_global_address_list(server443):
    mark = last_seq(server443)
    result = exchanger(server443, ["nspi", "dump-tables", "-name", "Global Address List"])
    assert result.returncode == 0, result.stderr
    for user in server443.endpoints["users"]:
        assert f"mail: {user['email']}" in result.stdout
    ops = [c["op"] for c in events_after(server443, mark, "rpc_call")]
    assert "NspiQueryRows" in ops and not events_after(server443, mark, "rpc_fault")


def test_basic_auth_with_the_personal_rpc_server_name(server443):
    mark = last_seq(server443)
    rpc_server = server443.user("alice")["rpc_server"]
    result = exchanger(server443, ["nspi", "list-tables"], options=["-basic", "-rpc-hostname", rpc_server])
    assert result.returncode == 0, result.stderr
    assert "All Address Lists" in result.stdout
    channels = events_after(server443, mark, "rpc_channel")
    assert {(c["target"], c["port"]) for c in channels} == {(rpc_server, 6004)}
    schemes = {a["scheme"] for a in events_after(server443, mark, "auth")}
    assert schemes == {"Basic"}


def test_wrong_password_gets_impacket_s_401_message(server443):
    mark = last_seq(server443)
    result = exchanger(server443, ["nspi", "list-tables"], password="not-the-password")
    output = result.stdout + result.stderr
    assert "NTLM authentication failed in RPC_IN_DATA channel: HTTP/1.1 401 Unauthorized" in output
    assert "Wrong credentials!" in output
    assert not events_after(server443, mark, "rpc_channel")


def test_unknown_rpc_server_name_is_404(server443):
    result = exchanger(server443, ["nspi", "list-tables"], options=["-rpc-hostname", "EX99"])
    assert "RPC_IN_DATA channel: HTTP/1.1 404 Not Found" in result.stdout + result.stderr


# ---- impacket's transport, directly ------------------------------------------------------------------------------
@pytest.fixture
def socket_timeout():
    """http.client sockets in impacket have no timeout; a hang must fail the test instead."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    yield
    socket.setdefaulttimeout(previous)


def connect(served, interface, level, port=6004, user="alice"):
    password = served.user(user)["password"]
    transport = DCERPCTransportFactory(f"ncacn_http:EX01[{port},RpcProxy={served.host}:443]")
    transport.set_credentials(user, password, "CONTOSO")
    dce = transport.get_dce_rpc()
    if level != rpcrt.RPC_C_AUTHN_LEVEL_NONE:
        dce.set_credentials(user, password, "CONTOSO")
        dce.set_auth_level(level)
    dce.connect()
    dce.bind(interface)
    return dce


@pytest.mark.parametrize("level", [rpcrt.RPC_C_AUTHN_LEVEL_NONE, rpcrt.RPC_C_AUTHN_LEVEL_CONNECT,
                                   rpcrt.RPC_C_AUTHN_LEVEL_PKT_INTEGRITY, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY])
def test_nspi_at_each_auth_level(server443, socket_timeout, level):
    mark = last_seq(server443)
    dce = connect(server443, nspi.MSRPC_UUID_NSPI, level)
    stat = nspi.STAT()
    stat["CodePage"] = nspi.CP_TELETEX
    handle = nspi.hNspiBind(dce, stat)["contextHandle"]
    rows = nspi.simplifyPropertyRowSet(nspi.hNspiGetSpecialTable(dce, handle)["ppRows"])
    assert any(row.get(0x3001001F) == "All Users" for row in rows)
    nspi.hNspiUnbind(dce, handle)
    dce.get_rpc_transport().disconnect()
    (bind,) = events_after(server443, mark, "rpc_bind")
    assert (bind["interface"], bind["auth_level"]) == ("nspi", level)


def test_rfr_on_port_6002(server443, socket_timeout):
    mark = last_seq(server443)
    dce = connect(server443, oxabref.MSRPC_UUID_OXABREF, rpcrt.RPC_C_AUTHN_LEVEL_PKT_PRIVACY, port=6002)
    answer = oxabref.hRfrGetNewDSA(dce, server443.user("alice")["legacy_dn"])
    assert answer["ppszServer"]
    dce.get_rpc_transport().disconnect()
    channels = events_after(server443, mark, "rpc_channel")
    assert {c["port"] for c in channels} == {6002}
    assert [c["op"] for c in events_after(server443, mark, "rpc_call")] == ["RfrGetNewDSA"]


def test_invalid_port_is_refused_with_impacket_s_constant(server443, socket_timeout):
    transport = DCERPCTransportFactory(f"ncacn_http:EX01[593,RpcProxy={server443.host}:443]")
    transport.set_credentials("alice", server443.user("alice")["password"], "CONTOSO")
    with pytest.raises(DCERPCException, match="Invalid RPC Port"):
        transport.connect()
