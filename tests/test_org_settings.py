"""Outlook Anywhere and MAPI over HTTP settings in org.yaml: the loader (Set-OutlookAnywhere's names and value sets,
file:line:field errors), the defaults (today's answers), and what each setting changes in the answers clients read."""
from __future__ import annotations

import textwrap

import pytest
from lxml import etree

from harness.org import load_org, with_config
from harness.protocols.autodiscover import OUTLOOK_RESPONSE_NS, SiteUrls, respond_pox
from harness.protocols.autodiscover_soap import ANS, SOAP_NS, respond_soap
from harness.protocols.http import iis_auth_schemes
from harness.yamlfile import SpecError, load_text
from tests.support.autodiscover import pox_request

OLK = f"{{{OUTLOOK_RESPONSE_NS}}}"
HEAD = """\
org: {name: Contoso, domain: contoso.test}
servers:
  - {name: EX01, version: 15.0.1497.2, roles: [Mailbox, ClientAccess]}
  - {name: EX2010, version: 14.3.123.4, roles: [Mailbox, ClientAccess]}
  - {name: MBX, roles: [Mailbox]}
mailboxes:
  - {email: alice@contoso.test, display_name: Alice, password: p, server: EX01}
"""


def org_from(tmp_path, extra: str = ""):
    path = tmp_path / "org.yaml"
    path.write_text(HEAD + textwrap.dedent(extra))
    return load_org(str(path))


def expr_of(org) -> dict:
    answer = respond_pox(org, pox_request(), org.find("alice"), SiteUrls.for_org(org))
    account = etree.fromstring(answer.body).find(f"{OLK}Response/{OLK}Account")
    expr = next(p for p in account.iterfind(f"{OLK}Protocol") if p.findtext(f"{OLK}Type") == "EXPR")
    return {etree.QName(e).localname: e.text for e in expr if "Url" not in etree.QName(e).localname}


def soap_settings(org, *names: str) -> dict:
    """GetUserSettings for alice as the EWS Managed API asks it: the values by name."""
    wanted = "".join(f"<a:Setting>{name}</a:Setting>" for name in names)
    body = (f'<s:Envelope xmlns:s="{SOAP_NS}" xmlns:a="{ANS}" xmlns:wsa="http://www.w3.org/2005/08/addressing">'
            "<s:Header><a:RequestedServerVersion>Exchange2013</a:RequestedServerVersion><wsa:Action>"
            "http://schemas.microsoft.com/exchange/2010/Autodiscover/Autodiscover/GetUserSettings</wsa:Action>"
            "</s:Header><s:Body><a:GetUserSettingsRequestMessage><a:Request><a:Users><a:User><a:Mailbox>"
            f"alice@contoso.test</a:Mailbox></a:User></a:Users><a:RequestedSettings>{wanted}</a:RequestedSettings>"
            "</a:Request></a:GetUserSettingsRequestMessage></s:Body></s:Envelope>").encode()
    answer = respond_soap(org, body, org.find("alice"), SiteUrls.for_org(org))
    return {s.findtext(f"{{{ANS}}}Name"): s.findtext(f"{{{ANS}}}Value")
            for s in etree.fromstring(answer.body).iter(f"{{{ANS}}}UserSetting")}


# ---- the loader ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, line, field, words", [
    ("outlook_anywhere:\n  EX01: {ExternalHostName: x.contoso.test}\n", 9, "outlook_anywhere.EX01.ExternalHostName",
     "did you mean 'ExternalHostname'"),
    ("outlook_anywhere:\n  EX01:\n    ExternalClientAuthenticationMethod: Kerberos\n", 10,
     "outlook_anywhere.EX01.ExternalClientAuthenticationMethod", "'Kerberos' is not allowed"),
    ("outlook_anywhere:\n  EX01: {IISAuthenticationMethods: [Basic, Digest]}\n", 9,
     "outlook_anywhere.EX01.IISAuthenticationMethods", "'Digest' is not allowed"),
    ("outlook_anywhere:\n  EX01: {SSLOffloading: maybe}\n", 9, "outlook_anywhere.EX01.SSLOffloading",
     "expected true or false"),
    ("outlook_anywhere:\n  EX01: {Enabled: true}\n", 9, "outlook_anywhere.EX01.Enabled",
     "not a Set-OutlookAnywhere parameter of Exchange 2013"),
    ("outlook_anywhere:\n  EX2010: {InternalHostname: a.contoso.test}\n", 9, "outlook_anywhere.EX2010.InternalHostname",
     "not a Set-OutlookAnywhere parameter of Exchange 2007/2010"),
    ("outlook_anywhere:\n  EX03: {}\n", 9, "outlook_anywhere.EX03", "not one of the servers"),
    ("outlook_anywhere:\n  MBX: {}\n", 9, "outlook_anywhere.MBX", "does not have the ClientAccess role"),
    ("outlook_anywhere:\n  EX01: {ExternalHostname: 'not a host'}\n", 9, "outlook_anywhere.EX01.ExternalHostname",
     "is not a host name"),
    ("mapi_http: {Enabled: yes please}\n", 8, "mapi_http.Enabled", "expected true or false"),
    ("mapi_http: {enabled: true}\n", 8, "mapi_http.enabled", "did you mean 'Enabled'"),
])
def test_bad_settings_are_named_with_file_line_and_field(tmp_path, extra, line, field, words):
    with pytest.raises(SpecError) as info:
        org_from(tmp_path, extra)
    assert (info.value.line, info.value.field) == (line, field)
    assert words in str(info.value) and str(tmp_path / "org.yaml") in str(info.value)


def test_bad_server_version_and_role(tmp_path):
    path = tmp_path / "org.yaml"
    for server, field, words in [("{name: EX01, version: fifteen}", "servers[0].version", "dotted build"),
                                 ("{name: EX01, roles: [Mailbox, Frontend]}", "servers[0].roles", "'Frontend'")]:
        path.write_text(HEAD.replace("{name: EX01, version: 15.0.1497.2, roles: [Mailbox, ClientAccess]}", server))
        with pytest.raises(SpecError) as info:
            load_org(str(path))
        assert (info.value.line, info.value.field) == (3, field) and words in str(info.value)


def test_values_are_case_insensitive_as_powershell_and_kept_in_exchanges_spelling(tmp_path):
    org = org_from(tmp_path, "outlook_anywhere:\n  EX01: {ExternalClientAuthenticationMethod: NTLM,"
                             " IISAuthenticationMethods: [negotiate, ntlm]}\n")
    oa = org.cas_outlook_anywhere
    assert oa.external_client_auth == "Ntlm" and oa.iis_auth == ("Negotiate", "Ntlm")


def test_defaults_are_todays_answers_and_servers_get_version_and_roles(tmp_path):
    org = org_from(tmp_path)
    oa = org.cas_outlook_anywhere
    assert (oa.external_hostname, oa.internal_hostname) == ("mail.contoso.test", "mail.contoso.test")
    assert (oa.external_client_auth, oa.internal_client_auth, oa.iis_auth) == ("Negotiate", "Ntlm",
                                                                                ("Basic", "Ntlm", "Negotiate"))
    assert (oa.ssl_offloading, oa.external_requires_ssl, oa.internal_requires_ssl) == (False, True, True)
    assert not org.mapi_http_enabled
    legacy = org.outlook_anywhere_of("EX2010")
    assert not legacy.enabled and legacy.iis_auth == ("Basic",)
    assert org.server("EX2010").is_legacy and org.server("MBX").roles == ("Mailbox",)
    assert org.server("MBX").fqdn == "mbx.contoso.test"   # fqdn defaults to name.ad_domain
    # the shipped fixture writes the defaults out: it answers exactly as an org without the section
    shipped = load_org()
    assert shipped.cas_outlook_anywhere == oa and shipped.mapi_http_enabled is False
    assert expr_of(shipped) == expr_of(org) == {
        "Type": "EXPR", "Server": "mail.contoso.test", "SSL": "On", "AuthPackage": "Negotiate",
        "CertPrincipalName": "msstd:mail.contoso.test", "ServerExclusiveConnect": "on"}


# ---- settings drive the answers ------------------------------------------------------------------------------------
def test_external_settings_drive_the_expr_block(tmp_path):
    org = org_from(tmp_path, """\
        outlook_anywhere:
          EX01: {ExternalHostname: outlook.contoso.test, ExternalClientAuthenticationMethod: Ntlm,
                 ExternalClientsRequireSsl: false}
        """)
    expr = expr_of(org)
    assert (expr["Server"], expr["AuthPackage"], expr["SSL"]) == ("outlook.contoso.test", "Ntlm", "Off")
    assert expr["CertPrincipalName"] == "msstd:outlook.contoso.test"


def test_internal_settings_drive_the_soap_internal_rpc_http_settings(tmp_path):
    org = org_from(tmp_path, """\
        outlook_anywhere:
          EX01: {InternalHostname: ex01.contoso.test, InternalClientAuthenticationMethod: Negotiate,
                 InternalClientsRequireSsl: false, ExternalClientAuthenticationMethod: Basic}
        """)
    got = soap_settings(org, "InternalRpcHttpServer", "InternalRpcHttpAuthenticationMethod",
                        "InternalRpcHttpConnectivityRequiresSsl", "ExternalMailboxServerAuthenticationMethods",
                        "ExternalMailboxServer")
    assert got == {"InternalRpcHttpServer": "ex01.contoso.test", "InternalRpcHttpAuthenticationMethod": "Negotiate",
                   "InternalRpcHttpConnectivityRequiresSsl": "False",
                   "ExternalMailboxServerAuthenticationMethods": "Basic", "ExternalMailboxServer": "mail.contoso.test"}


def test_mapi_http_is_advertised_only_when_the_org_enables_it(tmp_path):
    assert soap_settings(org_from(tmp_path), "MapiHttpEnabled") == {"MapiHttpEnabled": "False"}
    enabled = org_from(tmp_path, "mapi_http: {Enabled: true}\n")
    assert enabled.mapi_http_enabled
    assert soap_settings(enabled, "MapiHttpEnabled") == {"MapiHttpEnabled": "True"}


def test_iis_authentication_methods_become_the_schemes_rpc_offers():
    assert iis_auth_schemes(("Basic", "Ntlm", "Negotiate")) == ("Negotiate", "NTLM", "Basic")
    assert iis_auth_schemes(("Basic",)) == ("Basic",)
    assert iis_auth_schemes(("Ntlm", "Basic")) == ("NTLM", "Basic")


# ---- the scenario seam: config laid over the org, same errors -----------------------------------------------------
def test_config_overrides_lay_over_the_org(tmp_path):
    org = org_from(tmp_path)
    config = load_text("outlook_anywhere:\n  EX01: {SSLOffloading: true, ExternalClientAuthenticationMethod: Basic}\n"
                       "mapi_http: {Enabled: true}\n", "scenario.yaml")
    changed = with_config(org, config, "scenario.yaml")
    oa = changed.cas_outlook_anywhere
    assert oa.ssl_offloading and oa.external_client_auth == "Basic"
    assert oa.internal_client_auth == "Ntlm"   # unchanged values stay
    assert changed.mapi_http_enabled and not org.mapi_http_enabled and not org.cas_outlook_anywhere.ssl_offloading
    assert changed.find("alice") is not None and expr_of(changed)["AuthPackage"] == "Basic"
    with pytest.raises(SpecError) as info:
        with_config(org, load_text("outlook_anywhere:\n  EX01: {SSLOffload: true}\n", "s.yaml"), "s.yaml")
    where = (info.value.path, info.value.line, info.value.field)
    assert where == ("s.yaml", 2, "config.outlook_anywhere.EX01.SSLOffload")


def test_no_external_hostname_leaves_expr_out_and_the_external_settings_unavailable(tmp_path):
    org = org_from(tmp_path, "outlook_anywhere:\n  EX01: {ExternalHostname: null}\n")
    assert org.cas_outlook_anywhere.external_hostname == ""
    answer = respond_pox(org, pox_request(), org.find("alice"), SiteUrls.for_org(org))
    account = etree.fromstring(answer.body).find(f"{OLK}Response/{OLK}Account")
    types = [p.findtext(f"{OLK}Type") for p in account.iterfind(f"{OLK}Protocol")]
    assert "EXPR" not in types and "EXCH" in types
    got = soap_settings(org, "ExternalMailboxServer", "ExternalMailboxServerAuthenticationMethods",
                        "CertPrincipalName", "InternalRpcHttpServer")
    assert got == {"InternalRpcHttpServer": "mail.contoso.test"}   # the rest: SettingIsNotAvailable
    with pytest.raises(SpecError):   # only 2013 has $null there; a legacy server's ExternalHostname is its name
        org_from(tmp_path, "outlook_anywhere:\n  EX2010: {ExternalHostname: null}\n")
