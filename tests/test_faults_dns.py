"""DNS faults as dnspython, Python's socket and ssl see them; one server carries every fault on its own name."""
from __future__ import annotations

import socket
import ssl

import dns.resolver
import pytest

from harness.faults.base import FaultParamError, catalog
from tests.support.servers import scenario_args, servers_running

SCENARIO = """\
name: dns-everything
faults:
  - dns.nxdomain: {host: autodiscover.contoso.test}
  - dns.servfail: {host: ex01.contoso.test}
  - dns.timeout: {host: ex02.contoso.test}
  - dns.no-address: {host: contoso.test}
  - dns.wrong-address: {host: mail.contoso.test}
  - dns.aaaa-only: {host: v6.contoso.test}
  - dns.extra-host: {host: legacy.contoso.test}
  - dns.srv:
      records:
        - {target: mail.contoso.test, priority: 0, port: 443}
        - {target: legacy.contoso.test, priority: 10}
expect:
  analyzer: {fails_at: dns, reason: nxdomain}
"""


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """The every-fault server and a dns-no-srv one, started in parallel."""
    root = tmp_path_factory.mktemp("dns-faults")
    with servers_running(scenario_args(root, "everything", SCENARIO),
                         scenario_args(root, "no-srv", "dns-no-srv")) as both:
        yield both


def resolver(served, lifetime: float = 3.0) -> dns.resolver.Resolver:
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [served.endpoints["dns"]["host"]]
    res.port = served.endpoints["dns"]["port"]
    res.timeout = res.lifetime = lifetime
    return res


def test_dnspython_sees_each_rcode(servers):
    served = servers[0]
    res = resolver(served)
    with pytest.raises(dns.resolver.NXDOMAIN):
        res.resolve("autodiscover.contoso.test", "A")
    with pytest.raises(dns.resolver.NoNameservers, match="SERVFAIL"):
        res.resolve("ex01.contoso.test", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        res.resolve("contoso.test", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        res.resolve("v6.contoso.test", "A")
    assert [r.address for r in res.resolve("v6.contoso.test", "AAAA")] == ["::1"]
    assert served.wait_for(lambda e: e["kind"] == "fault" and e["fault"] == "dns.servfail")


def test_dnspython_times_out_when_no_reply_comes(servers):
    served = servers[0]
    with pytest.raises(dns.resolver.LifetimeTimeout):
        resolver(served, lifetime=0.5).resolve("ex02.contoso.test", "A")
    assert served.wait_for(lambda e: e["kind"] == "dns" and e["rcode"] == "NO-REPLY"
                           and e["name"] == "ex02.contoso.test")


def test_wrong_address_is_refused(servers):
    served = servers[0]
    (address,) = [r.address for r in resolver(served).resolve("mail.contoso.test", "A")]
    assert address == "127.0.0.254"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, served.https_port), timeout=3).close()


def test_srv_records_and_the_extra_host_certificate_mismatch(servers):
    served = servers[0]
    res = resolver(served)
    records = sorted((r.priority, r.port, str(r.target)) for r in res.resolve("_autodiscover._tcp.contoso.test", "SRV"))
    assert records == [(0, 443, "mail.contoso.test."), (10, served.https_port, "legacy.contoso.test.")]
    (address,) = [r.address for r in res.resolve("legacy.contoso.test", "A")]
    assert address == served.host
    context = ssl.create_default_context(cafile=served.ca_file)
    with socket.create_connection((address, served.https_port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            context.wrap_socket(raw, server_hostname="legacy.contoso.test")


def test_no_srv_leaves_the_rest_of_the_zone_alone(servers):
    res = resolver(servers[1])
    with pytest.raises(dns.resolver.NXDOMAIN):
        res.resolve("_autodiscover._tcp.contoso.test", "SRV")
    assert [r.address for r in res.resolve("autodiscover.contoso.test", "A")] == [servers[1].host]


@pytest.mark.parametrize("fault, params, bad", [
    ("dns.wrong-address", {"host": "mail.contoso.test", "address": "192.0.2.1"}, "address"),
    ("dns.aaaa-only", {"host": "mail.contoso.test", "address": "127.0.0.1"}, "address"),
    ("dns.srv", {"records": [{"target": "mail.contoso.test", "prio": 1}]}, "records[0]"),
    ("dns.srv", {"records": [{"target": "mail.contoso.test", "port": 70000}]}, "records[0].port"),
    ("dns.srv", {"records": [{"target": "a..contoso.test"}]}, "records[0].target"),      # no wire could carry it
    ("dns.srv", {"records": [{"target": "x" * 64 + ".contoso.test"}]}, "records[0].target"),
])
def test_bad_parameters_are_refused_before_serving(fault, params, bad):
    with pytest.raises(FaultParamError) as info:
        catalog()[fault].validate(params)
    assert info.value.param == bad


def test_dns_listener_retries_when_tcp_cannot_take_the_udp_port_number():
    """Port 0: UDP picks a number that another program may hold over TCP; listen_dns then tries a new one."""
    from twisted.internet.error import CannotListenError

    from harness.org import load_org
    from harness.services.dns import listen_dns
    from harness.transcript import Transcript

    class Port:
        def __init__(self, number):
            self.number, self.stopped = number, False

        def getHost(self):
            return type("Address", (), {"port": self.number})()

        def stopListening(self):
            self.stopped = True

    class Reactor:
        def __init__(self):
            self.udp, self.tcp_tries = [], []

        def listenUDP(self, port, protocol, interface):
            self.udp.append(Port(40000 + len(self.udp)))
            return self.udp[-1]

        def listenTCP(self, port, factory, interface):
            self.tcp_tries.append(port)
            if len(self.tcp_tries) == 1:
                raise CannotListenError(interface, port, OSError(98, "Address already in use"))
            return Port(port)

    reactor = Reactor()
    udp, tcp = listen_dns(reactor, load_org(), "127.0.0.1", 0, 443, Transcript())
    assert reactor.tcp_tries == [40000, 40001] and reactor.udp[0].stopped
    assert (udp.getHost().port, tcp.getHost().port) == (40001, 40001)
