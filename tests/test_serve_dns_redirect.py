"""The DNS and port-80 roles, asked by real clients (dnspython, curl)."""
from __future__ import annotations

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from tests.support.clients import curl, dns_query


@pytest.mark.parametrize("tcp", [False, True])
def test_a_records_for_every_cas_name(server, tcp):
    for name in server.endpoints["hostnames"]:
        answer = dns_query(server, name, "A", tcp=tcp)
        assert answer.rcode() == dns.rcode.NOERROR
        assert [r.address for rrset in answer.answer for r in rrset] == [server.host]


def test_autodiscover_srv_record(server):
    answer = dns_query(server, "_autodiscover._tcp.contoso.test", "SRV")
    (record,) = [r for rrset in answer.answer for r in rrset]
    assert str(record.target).rstrip(".") == "autodiscover.contoso.test"
    assert record.port == server.https_port


def test_unknown_names(server):
    assert dns_query(server, "nothere.contoso.test", "A").rcode() == dns.rcode.NXDOMAIN
    assert dns_query(server, "example.org", "A").rcode() == dns.rcode.REFUSED
    assert server.wait_for(lambda e: e["kind"] == "dns" and e["rcode"] == "NXDOMAIN")


@pytest.mark.parametrize("path", ["/autodiscover/autodiscover.xml", "/autodiscover/autodiscover.svc"])
def test_http_redirect_vhost_302s_to_https(server, path):
    result = curl(server, "autodiscover.contoso.test", path=path, scheme="http")
    assert result.status == 302
    assert result.redirect_url == f"https://autodiscover.contoso.test:{server.https_port}{path}"


@pytest.mark.parametrize("garbage", [b"\x12\x34\x01\x00" + b"\xff" * 28,   # 65535 questions claimed, none readable
                                     b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07trunc"])  # name cut off
def test_malformed_query_gets_formerr_and_a_transcript_line(server, garbage):
    import socket
    dns_addr = (server.endpoints["dns"]["host"], server.endpoints["dns"]["port"])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(garbage, dns_addr)
        reply = dns.message.from_wire(sock.recv(512))
    assert reply.id == int.from_bytes(garbage[:2], "big") and reply.rcode() == dns.rcode.FORMERR
    assert server.wait_for(lambda e: e["kind"] == "dns_error" and e["bytes"] == len(garbage))
    assert dns_query(server, "mail.contoso.test", "A").rcode() == dns.rcode.NOERROR  # still serving
