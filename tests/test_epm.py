"""The endpoint mapper (`serve --epm-port`): Exchange 2013 registers no Exchange interface, so impacket's
rpcdump.py lists only Windows' endpoints, ept_map for NSPI/RFR/EMSMDB answers EPT_S_NOT_REGISTERED, and a direct
ncacn_ip_tcp bind to the store finds nothing (Outlook must use RPC over HTTP).

rpcdump.py only speaks to 135: as root the server gets a loopback address of its own with the mapper on 135;
otherwise the mapper is on an ephemeral port and only impacket's own calls run."""
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from impacket.dcerpc.v5 import epm, nspi, oxabref
from impacket.dcerpc.v5.rpcrt import DCERPCException
from impacket.dcerpc.v5.transport import DCERPCTransportFactory

from harness.rpc.epm import EPT_S_NOT_REGISTERED, WINDOWS_ENDPOINTS
from harness.testing import start_server
from tests.support.transcript import TranscriptTail

RPCDUMP = Path(sys.executable).with_name("rpcdump.py")
EXCHANGE_UUIDS = {"f5cc5a18-4264-101a-8c59-08002b2f8426": "NSPI", "1544f5e0-613c-11d1-93df-00c04fd7bd09": "RFR",
                  "a4f1db00-ca47-1067-b31f-00dd010662da": "EMSMDB"}
EMSMDB = epm.uuidtup_to_bin(("A4F1DB00-CA47-1067-B31F-00DD010662DA", "0.81"))


@pytest.fixture(scope="module")
def mapper(tmp_path_factory):
    """(served, address, port)"""
    state = str(tmp_path_factory.mktemp("epm"))
    if os.geteuid() == 0:
        draw = random.Random(f"{os.getpid()}:epm")
        address, port = f"127.{draw.randrange(64, 250)}.{draw.randrange(1, 250)}.{draw.randrange(1, 250)}", 135
    else:
        address, port = "127.0.0.1", 0
    served = start_server(state, "--epm-port", str(port), listen=address)
    yield served, address, served.endpoints["epm"]["port"]
    assert served.stop() == 0


def rpc(address, port, interface=None):
    """A connected DCERPC_v5, bound to ``interface`` if given (hept_lookup/hept_map bind the mapper themselves)."""
    dce = DCERPCTransportFactory(f"ncacn_ip_tcp:{address}[{port}]").get_dce_rpc()
    dce.connect()
    if interface is not None:
        dce.bind(interface)
    return dce


def test_ept_lookup_lists_windows_endpoints_only(mapper):
    served, address, port = mapper
    tail = TranscriptTail(served)
    dce = rpc(address, port)
    try:
        entries = epm.hept_lookup(None, dce=dce)
    finally:
        dce.disconnect()
    listed = [epm.PrintStringBinding(e["tower"]["Floors"]) for e in entries]
    interfaces = {str(e["tower"]["Floors"][0]).split(" ")[0].lower() for e in entries}
    assert interfaces == {uuid for uuid, *_ in WINDOWS_ENDPOINTS}
    assert not interfaces & set(EXCHANGE_UUIDS)
    assert f"ncacn_ip_tcp:{address}[49153]" in listed
    tail.wait_for(lambda e: e["kind"] == "epm_lookup")
    (lookup,) = tail.events("epm_lookup")
    assert lookup["entries"] == len(WINDOWS_ENDPOINTS)


@pytest.mark.parametrize("interface", [nspi.MSRPC_UUID_NSPI, oxabref.MSRPC_UUID_OXABREF, EMSMDB],
                         ids=["nspi", "rfr", "emsmdb"])
def test_ept_map_of_an_exchange_interface_is_not_registered(mapper, interface):
    _, address, port = mapper
    dce = rpc(address, port)
    try:
        with pytest.raises(DCERPCException) as refused:
            epm.hept_map(address, interface, protocol="ncacn_ip_tcp", dce=dce)
    finally:
        dce.disconnect()
    assert refused.value.get_error_code() == EPT_S_NOT_REGISTERED


def test_a_direct_bind_to_the_store_is_refused(mapper):
    _, address, port = mapper
    # on the mapper's own port the store's interface is not there (bind_ack with a provider rejection) ...
    with pytest.raises(DCERPCException, match="abstract_syntax_not_supported|Bind context rejected"):
        rpc(address, port, EMSMDB)
    # ... and nothing listens where a 2007/2010 store would (Exchange 2013 serves it over RPC over HTTP only)
    with pytest.raises((ConnectionRefusedError, DCERPCException, OSError)):
        rpc(address, 6001, EMSMDB)


def test_rpcdump_lists_no_exchange_interface(mapper):
    _, address, port = mapper
    if port != 135:
        pytest.skip("rpcdump.py speaks only to 135 (needs root for an address of its own)")
    result = subprocess.run([sys.executable, str(RPCDUMP), address], capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"Received {len(WINDOWS_ENDPOINTS)} endpoints." in output
    assert "Event log TCPIP" in output and "[MS-SAMR]" in output
    assert not [name for uuid, name in EXCHANGE_UUIDS.items() if uuid.upper() in output.upper()], output


def test_the_mapper_is_off_by_default(server):
    assert server.endpoints["epm"] is None
