"""One namespace, one certificate: OWA, the ECP, ActiveSync and the OAB answer on the Outlook Anywhere host names as
Exchange 2013 SP1 does (curl against the real server), and the org's settings reach what curl sees on /rpc and in
Autodiscover; `mockex org show` prints the fixture as the Exchange Management Shell would."""
from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import pytest

from harness.org import DEFAULT_ORG_DIR
from harness.protocols.owa import ACTIVESYNC_COMMANDS
from tests.support.autodiscover import pox_protocols, pox_request
from tests.support.clients import AUTODISCOVER, MAIL, address, curl
from tests.support.servers import server_running

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def schemes(result) -> list:
    return [value.split(" ", 1)[0] for value in result.header("WWW-Authenticate")]


def peer_certificate(served, host: str) -> bytes:
    context = ssl.create_default_context(cafile=served.ca_file)
    port = served.endpoints["https"]["port"]
    with socket.create_connection((address(served, host), port), timeout=20) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            return tls.getpeercert(binary_form=True)


@pytest.mark.parametrize("path, back", [("/owa", "/owa"), ("/owa/", "/owa/"), ("/ecp/", "/ecp/"),
                                        ("/OWA/?ae=Item", "/OWA/?ae=Item")])
def test_owa_and_ecp_redirect_to_the_forms_logon_page(server, path, back):
    result = curl(server, MAIL, path=path)
    assert result.status == 302, result.stderr
    port = server.endpoints["https"]["port"]
    location = urlsplit(result.redirect_url)
    assert (location.netloc, location.path) == (f"{MAIL}:{port}", "/owa/auth/logon.aspx")
    query = parse_qs(location.query)
    assert query == {"url": [f"https://{MAIL}:{port}{back}"], "reason": ["0"]}
    assert "%3a%2f%2f" in result.header("Location")[0]   # ASP.NET's lower-case escapes
    assert result.header("X-FEServer") == ["EX01"] and result.header("Server") == ["Microsoft-IIS/8.5"]
    assert not result.header("X-BEServer")      # the front end answers this itself


def test_the_logon_page_renders_as_outlook_web_app(server):
    result = curl(server, MAIL, "-L", path="/owa/")
    assert result.status == 200 and result.header("Content-Type") == ["text/html; charset=utf-8"]
    assert "<title>Outlook Web App</title>" in result.body
    assert 'action="/owa/auth.owa"' in result.body and 'name="password"' in result.body
    assert f"https://{MAIL}:{server.endpoints['https']['port']}/owa/" in result.body   # the destination it keeps


def test_activesync_options_without_credentials_is_a_basic_challenge(server):
    result = curl(server, MAIL, "-X", "OPTIONS", path="/Microsoft-Server-ActiveSync")
    assert result.status == 401
    assert result.header("WWW-Authenticate") == [f'Basic realm="{MAIL}"']


def test_activesync_options_lists_exchange_2013_versions_and_commands(server):
    alice = server.user("alice")
    result = curl(server, MAIL, "-X", "OPTIONS", "--basic", "-u", f"CONTOSO\\alice:{alice['password']}",
                  path="/Microsoft-Server-ActiveSync")
    assert result.status == 200, result.stderr
    assert result.header("MS-ASProtocolVersions") == ["2.0,2.1,2.5,12.0,12.1,14.0,14.1"]
    assert result.header("MS-ASProtocolCommands") == [ACTIVESYNC_COMMANDS]
    assert "FolderSync" in ACTIVESYNC_COMMANDS.split(",") and result.header("MS-Server-ActiveSync") == ["15.0"]
    assert result.header("Allow") == ["OPTIONS,POST"]


def test_oab_without_credentials_is_refused_with_windows_authentication(server):
    result = curl(server, MAIL, path="/OAB/")
    assert result.status == 401 and schemes(result) == ["Negotiate", "NTLM"]


def test_every_service_of_the_namespace_is_served_with_one_certificate(server):
    """OWA, EAS, Outlook Anywhere and Autodiscover: the same port, the same certificate (no extra port)."""
    assert peer_certificate(server, MAIL) == peer_certificate(server, AUTODISCOVER)
    for path in ("/owa/", "/Microsoft-Server-ActiveSync", "/rpc/rpcproxy.dll", "/OAB/"):
        assert curl(server, MAIL, path=path).status in (302, 401)


def test_rpc_offers_the_iis_authentication_methods_and_mapi_http_follows_the_org(tmp_path):
    org_dir = tmp_path / "org"
    org_dir.mkdir()
    text = open(f"{DEFAULT_ORG_DIR}/org.yaml", encoding="utf-8").read()
    text = text.replace("IISAuthenticationMethods: [Basic, Ntlm, Negotiate]", "IISAuthenticationMethods: [Basic]")
    text = text.replace("ExternalClientAuthenticationMethod: Negotiate", "ExternalClientAuthenticationMethod: Basic")
    text = text.replace("mapi_http: {Enabled: false}", "mapi_http: {Enabled: true}")
    (org_dir / "org.yaml").write_text(text)
    state = tmp_path / "state"
    state.mkdir()
    with server_running(str(state), "--org", str(org_dir)) as served:
        assert schemes(curl(served, MAIL, path="/rpc/rpcproxy.dll")) == ["Basic"]
        assert schemes(curl(served, AUTODISCOVER)) == ["Negotiate", "NTLM", "Basic"]   # other directories keep theirs
        alice = served.user("alice")
        login = ("--basic", "-u", f"CONTOSO\\alice:{alice['password']}")
        plain = curl(served, AUTODISCOVER, *login, data=pox_request())
        assert plain.status == 200 and 'Type="mapiHttp"' not in plain.body   # only for a client that announces it
        asked = curl(served, AUTODISCOVER, *login, "-H", "X-MapiHttpCapability: 1", data=pox_request())
        assert 'Type="mapiHttp"' in asked.body and "/mapi/emsmdb/?MailboxId=" in asked.body
        found = pox_protocols(asked.body)
        assert found["EXPR"].findtext(f"{{{found['EXPR'].nsmap[None]}}}AuthPackage") == "Basic"


def test_mapi_http_is_not_advertised_when_the_org_leaves_it_off(server):
    alice = server.user("alice")
    asked = curl(server, AUTODISCOVER, "--basic", "-u", f"CONTOSO\\alice:{alice['password']}",
                 "-H", "X-MapiHttpCapability: 1", data=pox_request())
    assert asked.status == 200 and set(pox_protocols(asked.body)) == {"EXCH", "EXPR", "WEB"}
    assert "mapiHttp" not in asked.body


def test_org_show_prints_the_fixture_as_the_exchange_shell(tmp_path):
    out = subprocess.run([sys.executable, "-m", "harness", "org", "show"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "Get-OutlookAnywhere | fl" in out and "Get-ExchangeServer | fl" in out
    lines = [line.split(" : ", 1) for line in out.splitlines() if " : " in line]
    values = {}
    for name, value in lines:
        values.setdefault(name.strip(), []).append(value)
    assert values["ExternalHostname"][0] == "mail.contoso.test"
    assert values["IISAuthenticationMethods"][0] == "{Basic, Ntlm, Negotiate}"
    assert values["ExternalClientAuthenticationMethod"][0] == "Negotiate"
    assert values["SSLOffloading"][0] == "False" and values["MapiHttpEnabled"] == ["False"]
    assert values["AdminDisplayVersion"][0] == "Version 15.0 (Build 1497.2)"
    assert values["ServerRole"][0] == "Mailbox, ClientAccess"
    assert "ExternalHostname                   : mail.contoso.test" in out   # Format-List's aligned colons
    # a changed fixture shows changed: the settings round-trip
    org_dir = tmp_path / "org"
    org_dir.mkdir()
    text = open(f"{DEFAULT_ORG_DIR}/org.yaml", encoding="utf-8").read()
    changed_text = text.replace("SSLOffloading: false", "SSLOffloading: true")
    (org_dir / "org.yaml").write_text(changed_text.replace("InternalHostname: mail.contoso.test",
                                                           "InternalHostname: ex01.contoso.test"))
    changed = subprocess.run([sys.executable, "-m", "harness", "org", "show", "--org", str(org_dir)],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    assert "SSLOffloading                      : True" in changed
    assert "InternalHostname                   : ex01.contoso.test" in changed
    broken = org_dir / "org.yaml"
    broken.write_text(text.replace("SSLOffloading: false", "SSLOffloading: sometimes"))
    bad = subprocess.run([sys.executable, "-m", "harness", "org", "show", "--org", str(org_dir)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and f"{broken}:" in bad.stderr and "outlook_anywhere.EX01.SSLOffloading" in bad.stderr
