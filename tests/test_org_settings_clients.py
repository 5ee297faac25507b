"""The Outlook Anywhere settings of org.yaml (Set-OutlookAnywhere on the 2013 CAS) reach what real clients read in
Autodiscover: curl POSTs the POX request and the SOAP GetUserSettings request to a running mockex, and the answers
carry each setting -- EXPR Server/SSL/AuthPackage/CertPrincipalName (POX) and ExternalMailboxServer* /
InternalRpcHttp* (SOAP; the external ones read back by exchangelib's own GetUserSettings parser).

Two servers: the default org (the session's) and one copy of fixtures/contoso.test with all six settings changed,
so every assertion on the changed server would fail if the setting were ignored."""
from __future__ import annotations

import shutil
from typing import Dict, Iterator

import pytest
from exchangelib import Configuration, Credentials
from exchangelib.autodiscover.protocol import AutodiscoverProtocol
from exchangelib.services import GetUserSettings
from exchangelib.transport import NOAUTH
from exchangelib.version import Version
from lxml import etree

from harness.org import DEFAULT_ORG_DIR
from harness.protocols.autodiscover import OUTLOOK_RESPONSE_NS
from harness.protocols.autodiscover_soap import ANS, SOAP_NS
from harness.testing import Served
from tests.support.autodiscover import pox_protocols, pox_request
from tests.support.clients import AUTODISCOVER, curl
from tests.support.servers import server_running

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")

SOAP_PATH = "/autodiscover/autodiscover.svc"
# Set-OutlookAnywhere value -> the value each is changed to in the second org; every one differs from the default.
DEFAULTS = {"ExternalHostname": "mail.contoso.test", "InternalHostname": "mail.contoso.test",
            "ExternalClientAuthenticationMethod": "Negotiate", "InternalClientAuthenticationMethod": "Ntlm",
            "ExternalClientsRequireSsl": "true", "InternalClientsRequireSsl": "true"}
CHANGED = {"ExternalHostname": "outlook.contoso.test", "InternalHostname": "ex01.contoso.test",
           "ExternalClientAuthenticationMethod": "Ntlm", "InternalClientAuthenticationMethod": "Negotiate",
           "ExternalClientsRequireSsl": "false", "InternalClientsRequireSsl": "false"}
# The SOAP user settings the six drive (ExternalMailboxServer* for Outlook outside, InternalRpcHttp* inside).
RPC_SETTINGS = ["ExternalMailboxServer", "ExternalMailboxServerRequiresSSL",
                "ExternalMailboxServerAuthenticationMethods", "InternalRpcHttpServer",
                "InternalRpcHttpConnectivityRequiresSsl", "InternalRpcHttpAuthenticationMethod"]
EXCHANGELIB_NAMES = ["external_mailbox_server", "external_mailbox_server_requires_ssl",
                     "external_mailbox_server_authentication_methods"]


@pytest.fixture(scope="module")
def changed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("oa-settings")
    org_dir, state = root / "org", root / "state"
    org_dir.mkdir()
    state.mkdir()
    text = open(f"{DEFAULT_ORG_DIR}/org.yaml", encoding="utf-8").read()
    ex01 = next(line for line in text.splitlines() if line.startswith("  EX01:"))   # the 2013 CAS's entry
    end = text.index("}", text.index(ex01)) + 1
    entry = text[text.index(ex01):end]
    changed_entry = entry
    for name, default in DEFAULTS.items():
        assert f"{name}: {default}" in changed_entry, name   # the fixture still holds the value this test moves
        changed_entry = changed_entry.replace(f"{name}: {default}", f"{name}: {CHANGED[name]}")
    (org_dir / "org.yaml").write_text(text.replace(entry, changed_entry), encoding="utf-8")
    with server_running(str(state), "--org", str(org_dir)) as served:
        yield served


def login(served: Served) -> tuple:
    return ("--basic", "-u", f"CONTOSO\\alice:{served.user('alice')['password']}")


def pox_expr(served: Served) -> Dict[str, str]:
    """The EXPR block of alice's POX answer, as curl receives it: {child tag: text}."""
    answer = curl(served, AUTODISCOVER, *login(served), data=pox_request())
    assert answer.status == 200, answer.stderr
    expr = pox_protocols(answer.body)["EXPR"]
    return {etree.QName(e).localname: e.text for e in expr if etree.QName(e).namespace == OUTLOOK_RESPONSE_NS}


def soap_settings(served: Served) -> Dict[str, str]:
    """The six user settings of alice's SOAP GetUserSettings answer, as curl receives it."""
    names = "".join(f"<a:Setting>{n}</a:Setting>" for n in RPC_SETTINGS)
    body = (f'<s:Envelope xmlns:s="{SOAP_NS}" xmlns:a="{ANS}" xmlns:wsa="http://www.w3.org/2005/08/addressing">'
            "<s:Header><a:RequestedServerVersion>Exchange2013</a:RequestedServerVersion>"
            "<wsa:Action>http://schemas.microsoft.com/exchange/2010/Autodiscover/Autodiscover/GetUserSettings"
            "</wsa:Action></s:Header><s:Body><a:GetUserSettingsRequestMessage><a:Request><a:Users><a:User>"
            "<a:Mailbox>alice@contoso.test</a:Mailbox></a:User></a:Users>"
            f"<a:RequestedSettings>{names}</a:RequestedSettings></a:Request></a:GetUserSettingsRequestMessage>"
            "</s:Body></s:Envelope>")
    answer = curl(served, AUTODISCOVER, *login(served), path=SOAP_PATH, data=body)
    assert answer.status == 200, answer.stderr
    user = etree.fromstring(answer.body.encode()).find(f".//{{{ANS}}}UserResponse")
    assert user.findtext(f"{{{ANS}}}ErrorCode") == "NoError"
    return {s.findtext(f"{{{ANS}}}Name"): s.findtext(f"{{{ANS}}}Value")
            for s in user.iterfind(f"{{{ANS}}}UserSettings/{{{ANS}}}UserSetting")}


def exchangelib_settings(served: Served) -> Dict[str, str]:
    """exchangelib 5.6's own GetUserSettings request for the external settings, POSTed by curl, parsed by it."""
    service = GetUserSettings(protocol=AutodiscoverProtocol(config=Configuration(
        service_endpoint=f"https://{AUTODISCOVER}{SOAP_PATH}", credentials=Credentials("alice@contoso.test", "unused"),
        auth_type=NOAUTH)))
    request = service.wrap(content=service.get_payload(users=["alice@contoso.test"], settings=EXCHANGELIB_NAMES),
                           api_version=Version.all_versions()[0].api_version)
    answer = curl(served, AUTODISCOVER, *login(served), path=SOAP_PATH, data=request)
    assert answer.status == 200, answer.stderr
    [result] = list(service.parse(answer.body.encode()))
    result.raise_errors()
    return result.user_settings


def expected_expr(values: Dict[str, str]) -> Dict[str, str]:
    host = values["ExternalHostname"]
    return {"Server": host, "SSL": "On" if values["ExternalClientsRequireSsl"] == "true" else "Off",
            "AuthPackage": values["ExternalClientAuthenticationMethod"], "CertPrincipalName": f"msstd:{host}"}


def expected_soap(values: Dict[str, str]) -> Dict[str, str]:
    return {"ExternalMailboxServer": values["ExternalHostname"],
            "ExternalMailboxServerRequiresSSL": values["ExternalClientsRequireSsl"].capitalize(),
            "ExternalMailboxServerAuthenticationMethods": values["ExternalClientAuthenticationMethod"],
            "InternalRpcHttpServer": values["InternalHostname"],
            "InternalRpcHttpConnectivityRequiresSsl": values["InternalClientsRequireSsl"].capitalize(),
            "InternalRpcHttpAuthenticationMethod": values["InternalClientAuthenticationMethod"]}


@pytest.fixture(params=["default", "changed"])
def served_with_values(request, server, changed_server):
    return (server, DEFAULTS) if request.param == "default" else (changed_server, CHANGED)


def test_pox_expr_carries_the_external_outlook_anywhere_settings(served_with_values):
    served, values = served_with_values
    expr = pox_expr(served)
    assert {tag: expr.get(tag) for tag in ("Server", "SSL", "AuthPackage", "CertPrincipalName")} == \
        expected_expr(values)


def test_soap_user_settings_carry_all_six_settings(served_with_values):
    served, values = served_with_values
    assert soap_settings(served) == expected_soap(values)


def test_exchangelib_reads_the_external_settings(served_with_values):
    served, values = served_with_values
    assert exchangelib_settings(served) == {
        "external_mailbox_server": values["ExternalHostname"],
        "external_mailbox_server_requires_ssl": values["ExternalClientsRequireSsl"].capitalize(),
        "external_mailbox_server_authentication_methods": values["ExternalClientAuthenticationMethod"]}
