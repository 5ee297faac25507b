"""RFR handlers driven by impacket's own client helpers (hRfrGetNewDSA, hRfrGetFQDNFromServerDN)."""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from impacket.dcerpc.v5 import oxabref
from impacket.dcerpc.v5.rpcrt import DCERPCException

from harness.org import load_org
from harness.rpc.base import NCA_S_OP_RNG_ERROR, RPC_X_BAD_STUB_DATA, CallContext, InProcessDce, RpcFault
from harness.rpc.rfr import MAPI_E_NOT_FOUND, Rfr
from tests.support.fuzz import scaled

ORG = load_org()
RFR = Rfr(ORG)


def make_dce(events=None):
    ctx = CallContext(org=ORG, mailbox=ORG.find("alice"), auth_level=6, association={},
                      record=lambda kind, **fields: events.append({"kind": kind, **fields}) if events is not None
                      else None, rng=random.Random(1))
    return InProcessDce(RFR, ctx)


def test_get_new_dsa_names_the_cas():
    events = []
    response = oxabref.hRfrGetNewDSA(make_dce(events), ORG.legacy_dn(ORG.find("alice")))
    assert response["ppszServer"] == "ex01.contoso.test"
    assert events[0] == {"kind": "rfr_new_dsa", "user_dn": ORG.legacy_dn(ORG.find("alice")),
                         "server": "ex01.contoso.test"}
    assert events[1]["op"] == "RfrGetNewDSA" and events[1]["status"] == "0x00000000"


@pytest.mark.parametrize("dn, fqdn", [
    (ORG.backend_server_dn(ORG.server("EX02")), "ex02.contoso.test"),
    (ORG.backend_server_dn(ORG.server("EX01")).upper(), "ex01.contoso.test"),
    (ORG.server_dn(ORG.find("alice")), "8d3e7c1a-5b2f-4e61-9c0a-3f4d2e1b7a01@contoso.test"),
    (ORG.mdb_dn(ORG.find("dave")), "7a2b5c8d-3e6f-4901-b2c4-d5e6f7a8b904@contoso.test"),
])
def test_fqdn_from_server_dn(dn, fqdn):
    assert oxabref.hRfrGetFQDNFromServerDN(make_dce(), dn)["ppszServerFQDN"] == fqdn


def test_unknown_server_dn_is_not_found():
    with pytest.raises(DCERPCException) as error:
        oxabref.hRfrGetFQDNFromServerDN(make_dce(), "/o=Contoso/cn=Configuration/cn=Servers/cn=NOPE")
    assert error.value.get_error_code() == MAPI_E_NOT_FOUND


def test_unknown_opnum_faults():
    with pytest.raises(RpcFault) as fault:
        RFR.call(2, b"", make_dce().ctx)
    assert fault.value.status == NCA_S_OP_RNG_ERROR


def valid_stub(opnum):
    if opnum == 0:
        request = oxabref.RfrGetNewDSA()
        request["pUserDN"] = "/o=Contoso\x00"
        request["ppszServer"] = "\x00"
        return request.getData()
    request = oxabref.RfrGetFQDNFromServerDN()
    request["szMailboxServerDN"] = ORG.backend_server_dn(ORG.cas) + "\x00"
    request["cbMailboxServerDN"] = len(ORG.backend_server_dn(ORG.cas)) + 1
    return request.getData()


@settings(max_examples=scaled(150), deadline=None)
@given(opnum=st.sampled_from([0, 1]), data=st.data())
def test_truncated_or_random_stubs_end_in_a_response_or_fault(opnum, data):
    stub = valid_stub(opnum)
    candidate = data.draw(st.one_of(st.integers(0, len(stub)).map(lambda cut: stub[:cut]), st.binary(max_size=120)))
    try:
        assert isinstance(RFR.call(opnum, candidate, make_dce().ctx), bytes)
    except RpcFault as fault:
        assert fault.status == RPC_X_BAD_STUB_DATA
