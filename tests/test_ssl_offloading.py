"""Set-OutlookAnywhere -SSLOffloading $true: the /rpc virtual directory takes plain HTTP (TLS ends at an offloader
in front of the CAS; the mock's port-80 listener stands for the offloader's back side). impacket's own ncacn_http
transport over http:// binds NSPI there; with SSLOffloading false (the fixture) the same request only gets the
port-80 vhost's 302 to https."""
import pytest
from impacket.dcerpc.v5 import nspi
from impacket.dcerpc.v5.transport import DCERPCTransportFactory

from tests.support.clients import bind_over_http, default_socket_timeout, nspi_handle
from tests.support.servers import scenario_args, start_on_port_443
from tests.support.transcript import TranscriptTail

OFFLOADED = """name: ssl-offloading
description: TLS is offloaded in front of the CAS.
config:
  outlook_anywhere:
    EX01: {SSLOffloading: true}
"""


@pytest.fixture(scope="module")
def offloaded(tmp_path_factory):
    served = start_on_port_443(*scenario_args(tmp_path_factory.mktemp("offload"), "offloaded", OFFLOADED))
    with default_socket_timeout(20):
        yield served
    assert served.stop() == 0


def plain_http_transport(served):
    transport = DCERPCTransportFactory("ncacn_http:EX01[6004]")
    http = served.endpoints["http"]
    transport.set_rpc_proxy_url(f"http://{http['host']}:{http['port']}/rpc/rpcproxy.dll")
    return transport


def test_nspi_binds_over_plain_http_when_ssl_is_offloaded(offloaded):
    tail = TranscriptTail(offloaded)
    dce = bind_over_http(plain_http_transport(offloaded), nspi.MSRPC_UUID_NSPI, "alice",
                         offloaded.user("alice")["password"])
    try:
        assert nspi_handle(dce)
    finally:
        dce.disconnect()
    channels = tail.events("rpc_channel")
    assert {(c["channel"], c["target"], c["status"]) for c in channels} == {("in", "EX01", 100), ("out", "EX01", 100)}
    connects = {e["conn"]: e["listener"] for e in tail.events("connect")}
    assert {connects[c["conn"]] for c in channels} == {"http"}
    assert not [e for e in tail.events("auth") if e.get("result") == "sent in clear"]


def test_without_offloading_plain_http_to_rpc_is_redirected(server):
    tail = TranscriptTail(server)
    with default_socket_timeout(20), pytest.raises(Exception) as refused:
        bind_over_http(plain_http_transport(server), nspi.MSRPC_UUID_NSPI, "alice", server.user("alice")["password"])
    assert "302" in str(refused.value) or "Found" in str(refused.value), refused.value
    assert not tail.events("rpc_channel")
    assert {e["status"] for e in tail.events("http") if e["path"].startswith("/rpc/")} == {302}
