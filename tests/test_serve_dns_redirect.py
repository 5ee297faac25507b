"""The DNS and port-80 roles, asked by real clients (dnspython, curl)."""
from __future__ import annotations

import subprocess

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest


def ask(server, name: str, rdtype: str, tcp: bool = False):
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, server.endpoints["dns"]["host"], port=server.endpoints["dns"]["port"], timeout=5)


@pytest.mark.parametrize("tcp", [False, True])
def test_a_records_for_every_cas_name(server, tcp):
    for name in server.endpoints["hostnames"]:
        answer = ask(server, name, "A", tcp=tcp)
        assert answer.rcode() == dns.rcode.NOERROR
        assert [r.address for rrset in answer.answer for r in rrset] == [server.host]


def test_autodiscover_srv_record(server):
    answer = ask(server, "_autodiscover._tcp.contoso.test", "SRV")
    (record,) = [r for rrset in answer.answer for r in rrset]
    assert str(record.target).rstrip(".") == "autodiscover.contoso.test"
    assert record.port == server.https_port


def test_unknown_names(server):
    assert ask(server, "nothere.contoso.test", "A").rcode() == dns.rcode.NXDOMAIN
    assert ask(server, "example.org", "A").rcode() == dns.rcode.REFUSED
    assert server.wait_for(lambda e: e["kind"] == "dns" and e["rcode"] == "NXDOMAIN")


@pytest.mark.parametrize("path", ["/autodiscover/autodiscover.xml", "/autodiscover/autodiscover.svc"])
def test_http_redirect_vhost_302s_to_https(server, path):
    http = server.endpoints["http"]
    result = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                             "--resolve", f"autodiscover.contoso.test:{http['port']}:{http['host']}",
                             f"http://autodiscover.contoso.test:{http['port']}{path}"],
                            capture_output=True, text=True, timeout=20)
    status, location = result.stdout.split(" ", 1)
    assert status == "302"
    assert location == f"https://autodiscover.contoso.test:{server.https_port}{path}"
