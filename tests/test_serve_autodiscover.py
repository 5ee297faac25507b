"""Autodiscover through the real server with real clients: curl (NTLM, Basic), Python's ssl, exchangelib."""
from __future__ import annotations

import socket
import ssl

import pytest

from tests.support.autodiscover import pox_protocols, pox_request
from tests.support.clients import AUTODISCOVER, curl
from tests.support.netns import by_user, exchangelib, needs_netns, run_in_netns

POX_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"


@pytest.mark.parametrize("method", ["--ntlm", "--basic"])
def test_curl_gets_expr_settings(server, method):
    alice = server.user("alice")
    result = curl(server, AUTODISCOVER, method, "-u", f"CONTOSO\\alice:{alice['password']}",
                  data=pox_request(alice["email"]))
    assert result.status == 200, result.stderr + result.body
    found = pox_protocols(result.body)
    assert found["EXPR"].findtext(f"{{{POX_NS}}}Server") == "mail.contoso.test"
    assert found["EXCH"].findtext(f"{{{POX_NS}}}Server") == alice["rpc_server"]
    events = server.wait_for(lambda e: e["kind"] == "auth" and e["result"] == "success"
                             and e["scheme"].lower() == method[2:])
    assert events, "the transcript records the successful authentication"


@pytest.mark.parametrize("method", ["--ntlm", "--basic"])
def test_curl_wrong_password_gets_401(server, method):
    result = curl(server, AUTODISCOVER, method, "-u", "CONTOSO\\alice:not-her-password",
                  data=pox_request("alice@contoso.test"))
    assert result.status == 401
    assert server.wait_for(lambda e: e["kind"] == "auth" and e["result"] == "failure"
                           and e["reason"] == "wrong password")


def test_anonymous_401_offers_each_scheme_on_its_own_line(server):
    result = curl(server, AUTODISCOVER, data=pox_request("alice@contoso.test"))   # curl dumps the headers to stderr
    offered = [line.split(":", 1)[1].strip() for line in result.stderr.splitlines()
               if line.lower().startswith("www-authenticate:")]
    assert [o.split()[0] for o in offered] == ["Negotiate", "NTLM", "Basic"]
    assert "X-SOAP-Enabled: True" in result.stderr


def test_python_ssl_verifies_the_served_chain(server):
    context = ssl.create_default_context(cafile=server.ca_file)
    for name in server.endpoints["hostnames"]:
        with socket.create_connection((server.host, server.https_port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:
                assert tls.version() == "TLSv1.2"   # as Exchange 2013 on Windows Server 2012 R2
    assert server.wait_for(lambda e: e["kind"] == "tls" and e["ok"] and e["sni"] == "mail.contoso.test")


@needs_netns
def test_exchangelib_soap_autodiscover_finds_ews(tmp_path):
    """exchangelib's discover() with only its public knobs: its DNS resolver attributes and the CA bundle.

    The mock runs on :443/:80/:53 of 127.0.0.1 inside a private network namespace whose /etc/resolv.conf points
    at the mock's DNS, so requests resolves contoso.test like any other name; the mock must stop cleanly after.
    """
    out = run_in_netns(str(tmp_path), [([], [exchangelib("discover", ("alice@contoso.test", "P@ssw0rd-alice"))])])
    answer = by_user(out["discover"].output)["alice@contoso.test"]
    assert answer.get("ews_url") == "https://mail.contoso.test/EWS/Exchange.asmx", answer
    assert answer["version"] == "Exchange2013_SP1"
