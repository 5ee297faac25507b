"""Mailbox faults as real clients see them: the harness's EMSMDB client halves (harness/rpc/emsmdb/client.py) and
impacket's
NSPI/RFR helpers over impacket's ncacn_http transport, and exchanger.py's NSPI lookups, against one `mockex serve`
that carries every mailbox fault, each scoped to its own RPC server name or user."""
from __future__ import annotations

import random

import pytest
from impacket.dcerpc.v5 import nspi, oxabref
from impacket.dcerpc.v5.rpcrt import DCERPCException
from impacket.uuid import uuidtup_to_bin

from harness.faults.base import FaultParamError, catalog
from harness.hooks import FaultSet
from harness.org import load_org
from harness.rpc import emsmdb
from harness.rpc.addressbook import AddressBook
from harness.rpc.base import CallContext, InProcessDce
from tests.support.clients import PRIVACY, exchanger, needs_exchanger, nspi_handle, rpc_bind
from tests.support.servers import scenario_args, start_on_port_443

ORG = load_org()
GUID_NAME = {mailbox.username: ORG.personal_server(mailbox) for mailbox in ORG.mailboxes}

EMSMDB = uuidtup_to_bin((emsmdb.Emsmdb.uuid.upper(), "%d.%d" % emsmdb.Emsmdb.version))
OUTLOOK_2016 = (16, 0, 4266, 1001)
EX02_DN = ORG.backend_server_dn(ORG.server("EX02"))

SCENARIO = f"""\
name: mailbox-everything
faults:
  - mailbox.login-failure: {{user: bob@contoso.test}}
  - mailbox.not-encrypted: {{user: carol@contoso.test}}
  - mailbox.client-version: {{host: ex01.contoso.test, min_version: "16.0"}}
  - mailbox.wrong-server: {{host: "{GUID_NAME['alice']}"}}
  - mailbox.server-busy: {{host: ex02.contoso.test, backoff_ms: 5000}}
  - mailbox.name-not-found: {{entry: carol@contoso.test}}
expect:
  analyzer: {{passes: true}}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    one = start_on_port_443(*scenario_args(tmp_path_factory.mktemp("faults"), "mailbox", SCENARIO))
    yield one
    assert one.stop() == 0


def connect(served, target: str, user: str = "alice", version=emsmdb.OUTLOOK_2013_VERSION):
    """EcDoConnectEx over impacket's transport: (the DCERPC_v5, the parsed answer)."""
    dce = rpc_bind(served, target, EMSMDB, port=6001, user=user)
    dce.call(10, emsmdb.build_connect_request(served.user(user)["legacy_dn"], version))
    return dce, emsmdb.parse_connect_response(dce.recv())


def logon(served, target: str) -> emsmdb.LogonResult:
    dce, connected = connect(served, target)
    assert connected.status == emsmdb.EC_NONE
    dce.call(11, emsmdb.build_logon_request(connected.cxh, served.user("alice")["legacy_dn"]))
    result = emsmdb.parse_logon_response(dce.recv())
    dce.get_rpc_transport().disconnect()
    return result


def connect_status(served, target: str, user: str = "alice", version=emsmdb.OUTLOOK_2013_VERSION):
    dce, connected = connect(served, target, user, version)
    dce.get_rpc_transport().disconnect()
    return connected


# ---- EMSMDB ------------------------------------------------------------------------------------------------------
def test_connect_refusals(served):
    assert connect_status(served, "EX01", user="bob").status == emsmdb.EC_LOGIN_FAILURE
    assert connect_status(served, "EX01", user="carol").status == emsmdb.EC_NOT_ENCRYPTED
    refused = connect_status(served, "ex01.contoso.test")
    assert (refused.status, refused.best_version) == (emsmdb.EC_CLIENT_VER_DISALLOWED, (16, 0, 0, 0))
    admitted = connect_status(served, "ex01.contoso.test", version=OUTLOOK_2016)
    assert admitted.status == emsmdb.EC_NONE and admitted.display_name == "Alice Example"
    results = [(e["user_dn"].rsplit("-", 1)[1], e["result"]) for e in served.transcript("emsmdb_connect")]
    assert results == [("bob", "0x80040111"), ("carol", "0x00000970"), ("alice", "0x000004df"),
                       ("alice", "0x00000000")]


def test_logon_redirect_is_followed_to_the_new_server(served):
    moved = logon(served, GUID_NAME["alice"])
    assert (moved.rop_status, moved.server_dn) == (emsmdb.EC_WRONG_SERVER, EX02_DN)
    dce = rpc_bind(served, GUID_NAME["alice"], oxabref.MSRPC_UUID_OXABREF, port=6002)
    fqdn = oxabref.hRfrGetFQDNFromServerDN(dce, moved.server_dn)["ppszServerFQDN"]
    assert fqdn.rstrip("\x00") == "ex02.contoso.test"
    assert logon(served, "EX01").rop_status == emsmdb.EC_NONE      # the same user, another server name


def test_busy_store_asks_for_a_back_off(served):
    busy = logon(served, "ex02.contoso.test")
    assert (busy.rop_status, busy.backoff_ms, busy.logon_handle) == (emsmdb.EC_SERVER_BUSY, 5000, None)
    (event,) = served.wait_for(lambda e: e["kind"] == "emsmdb_logon" and e.get("backoff_ms"))
    assert event["result"] == "0x00000480"


def test_old_clients_get_server_too_busy_instead_of_a_back_off():
    """MS-OXCROPS 3.2.4.2: clients up to 12.0.4228 do not understand RopBackoff (the default version floor keeps
    them out, so the store runs with a lower one here)."""
    faults = FaultSet([catalog()["mailbox.server-busy"](backoff_ms=1000)])
    alice = ORG.find("alice")
    ctx = CallContext(org=ORG, mailbox=alice, auth_level=PRIVACY, association={}, record=lambda *a, **k: None,
                      rng=random.Random(1), faults=faults, host="EX01")
    dce = InProcessDce(emsmdb.Emsmdb(ORG, min_client_version=(11, 0, 0, 0)), ctx)
    dn = ORG.legacy_dn(alice)
    dce.call(10, emsmdb.build_connect_request(dn, (12, 0, 4000, 0)))
    connected = emsmdb.parse_connect_response(dce.recv())
    with pytest.raises(DCERPCException) as busy:
        dce.call(11, emsmdb.build_logon_request(connected.cxh, dn))
    assert busy.value.get_error_code() == emsmdb.RPC_S_SERVER_TOO_BUSY


# ---- NSPI --------------------------------------------------------------------------------------------------------
def test_hidden_entry_is_not_found_by_name(served):
    dce = rpc_bind(served, "EX01")
    handle = nspi_handle(dce)
    resolved = nspi.hNspiResolveNamesW(dce, handle, paStr=["carol@contoso.test", "bob@contoso.test"])
    mids = [item["Data"] for item in resolved["ppMIds"]["aulPropTag"]]
    assert mids[0] == nspi.MID_UNRESOLVED and mids[1] > nspi.MID_END_OF_TABLE
    dns = [served.user(name)["legacy_dn"] for name in ("carol", "bob")]
    found = nspi.hNspiDNToMId(dce, handle, dns)
    assert [item["Data"] for item in found["ppOutMIds"]["aulPropTag"]] == [nspi.MID_UNRESOLVED, mids[1]]
    nspi.hNspiUnbind(dce, handle)
    dce.get_rpc_transport().disconnect()
    assert {e["fault"] for e in served.transcript("fault")} >= {"mailbox.name-not-found"}


def test_exchanger_does_not_find_the_hidden_entry(served):
    needs_exchanger(served)
    book = AddressBook(ORG)
    guid = {name: str(book.by_mailbox(ORG.find(name)).guid) for name in ("carol", "bob")}
    hidden = exchanger(served, ["nspi", "guid-known", "-guid", guid["carol"]])
    assert "Object with specified GUID not found!" in hidden.stdout + hidden.stderr
    listed = exchanger(served, ["nspi", "guid-known", "-guid", guid["bob"]])
    assert listed.returncode == 0 and "mail: bob@contoso.test" in listed.stdout


@pytest.mark.parametrize("name, values, param", [
    ("mailbox.client-version", {"min_version": "twelve"}, "min_version"),
    ("mailbox.server-busy", {"backoff_ms": -5}, "backoff_ms"),
    ("mailbox.not-encrypted", {"below_level": 9}, "below_level"),
])
def test_bad_parameters_are_refused(name, values, param):
    with pytest.raises(FaultParamError) as refused:
        catalog()[name](**values)
    assert refused.value.param == param
