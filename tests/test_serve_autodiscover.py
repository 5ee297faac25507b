"""Autodiscover through the real server with real clients: curl (NTLM, Basic), Python's ssl, exchangelib."""
from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys

import pytest
from lxml import etree

from tests import netns

POX_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
POX_REQUEST = """<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>{email}</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>"""


def curl(server, *args, data=None, host=None):
    host = host or server.endpoints["hostnames"][1]
    url_host = f"{host}:{server.https_port}"
    cmd = ["curl", "-sS", "--max-time", "20", "--cacert", server.ca_file,
           "--resolve", f"{url_host}:{server.host}", "-o", "-", "-w", "\n%{http_code}", *args]
    if data is not None:
        cmd += ["-H", "Content-Type: text/xml", "--data-binary", data]
    cmd.append(f"https://{url_host}/autodiscover/autodiscover.xml")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    body, _, status = result.stdout.rpartition("\n")
    return int(status or 0), body, result


def protocols(body: str) -> dict:
    root = etree.fromstring(body.encode())
    account = root.find(f".//{{{POX_NS}}}Account")
    return {p.findtext(f"{{{POX_NS}}}Type"): p for p in account.findall(f"{{{POX_NS}}}Protocol")}


@pytest.mark.parametrize("method", ["--ntlm", "--basic"])
def test_curl_gets_expr_settings(server, method):
    alice = server.user("alice")
    status, body, result = curl(server, method, "-u", f"CONTOSO\\alice:{alice['password']}",
                                data=POX_REQUEST.format(email=alice["email"]))
    assert status == 200, result.stderr + body
    found = protocols(body)
    assert found["EXPR"].findtext(f"{{{POX_NS}}}Server") == "mail.contoso.test"
    assert found["EXCH"].findtext(f"{{{POX_NS}}}Server") == alice["rpc_server"]
    events = server.wait_for(lambda e: e["kind"] == "auth" and e["result"] == "success"
                             and e["scheme"].lower() == method[2:])
    assert events, "the transcript records the successful authentication"


@pytest.mark.parametrize("method", ["--ntlm", "--basic"])
def test_curl_wrong_password_gets_401(server, method):
    status, body, _ = curl(server, method, "-u", "CONTOSO\\alice:not-her-password",
                           data=POX_REQUEST.format(email="alice@contoso.test"))
    assert status == 401
    assert server.wait_for(lambda e: e["kind"] == "auth" and e["result"] == "failure"
                           and e["reason"] == "wrong password")


def test_anonymous_401_offers_each_scheme_on_its_own_line(server):
    _, _, result = curl(server, "-D", "/dev/stderr", data=POX_REQUEST.format(email="alice@contoso.test"))
    offered = [line.split(":", 1)[1].strip() for line in result.stderr.splitlines()
               if line.lower().startswith("www-authenticate:")]
    assert [o.split()[0] for o in offered] == ["Negotiate", "NTLM", "Basic"]
    assert "X-SOAP-Enabled: True" in result.stderr


def test_python_ssl_verifies_the_served_chain(server):
    context = ssl.create_default_context(cafile=server.ca_file)
    for name in server.endpoints["hostnames"]:
        with socket.create_connection((server.host, server.https_port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
    assert server.wait_for(lambda e: e["kind"] == "tls" and e["ok"] and e["sni"] == "mail.contoso.test")


@pytest.mark.skipif(not netns.available(), reason="needs root, unshare and ip for a private network namespace")
def test_exchangelib_soap_autodiscover_finds_ews(tmp_path):
    """exchangelib's discover() with only its public knobs: its DNS resolver attributes and the CA bundle.

    The mock runs on :443/:80/:53 of 127.0.0.1 inside a private network namespace whose /etc/resolv.conf points
    at the mock's DNS, so requests resolves contoso.test like any other name.
    """
    script = f"""
{sys.executable} -m harness serve --state-dir "$PWD/state" --listen 127.0.0.1 --https-port 443 --http-port 80 \
    --dns-port 53 --quiet > serve.out 2>&1 &
SERVER=$!
for i in $(seq 100); do [ -f state/endpoints.json ] && break; sleep 0.1; done
CA=$({sys.executable} -c "import json; print(json.load(open('state/endpoints.json'))['ca_file'])")
REQUESTS_CA_BUNDLE="$CA" {sys.executable} {os.path.join(os.path.dirname(__file__), 'clients', 'exchangelib_discover.py')} \
    alice@contoso.test 'P@ssw0rd-alice' 127.0.0.1 53
kill -TERM $SERVER; wait $SERVER; echo "serve-exit=$?"
"""
    result = netns.run_in_namespace(script, str(tmp_path), env={"PYTHONPATH": os.path.dirname(os.path.dirname(__file__))})
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.stdout + result.stderr + (tmp_path / "serve.out").read_text()
    answer = json.loads(lines[-1])
    assert answer.get("ews_url") == "https://mail.contoso.test/EWS/Exchange.asmx", answer
    assert answer["version"] == "Exchange2013_SP1"
    assert "serve-exit=0" in result.stdout
