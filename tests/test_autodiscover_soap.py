"""SOAP Autodiscover, judged by exchangelib 5.6's own request builder and response parser.

Requests are the exact bytes exchangelib's GetUserSettings service writes; answers go through its parsing code
(GetUserSettings.parse, UserResponse, Version.from_soap_header), and one test runs exchangelib's whole discovery
against respond_soap through an in-process requests adapter standing in for the HTTP layer.
"""
from __future__ import annotations

import base64
from typing import List, Optional

import pytest
import requests
from exchangelib import Configuration, Credentials
from exchangelib.autodiscover import discovery
from exchangelib.autodiscover.cache import AutodiscoverCache, autodiscover_cache
from exchangelib.autodiscover.protocol import AutodiscoverProtocol
from exchangelib.errors import ErrorNonExistentMailbox, ErrorServerBusy, TransportError
from exchangelib.properties import UserResponse
from exchangelib.protocol import BaseProtocol
from exchangelib.services import GetUserSettings
from exchangelib.transport import NOAUTH
from exchangelib.util import DummyResponse
from exchangelib.version import Version
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from harness.org import load_org
from harness.protocols.autodiscover import OUTLOOK_RESPONSE_NS, SiteUrls, respond_pox
from harness.protocols.autodiscover_soap import ANS, KNOWN_USER_SETTINGS, SOAP_NS, XSI_NS, respond_soap, soap_user_error
from tests.support.autodiscover import pox_request
from tests.support.fuzz import mutated_documents, scaled

ORG = load_org()
URLS = SiteUrls.for_org(ORG)
A = f"{{{ANS}}}"
EXCHANGELIB_SETTINGS = sorted(UserResponse.SETTINGS_MAP)
# ews-javascript-api 0.15.3 Enumerations/UserSettingName.js, in enum order
EWS_JS_SETTINGS = """UserDisplayName UserDN UserDeploymentId InternalMailboxServer InternalRpcClientServer
InternalMailboxServerDN InternalEcpUrl InternalEcpVoicemailUrl InternalEcpEmailSubscriptionsUrl
InternalEcpTextMessagingUrl InternalEcpDeliveryReportUrl InternalEcpRetentionPolicyTagsUrl InternalEcpPublishingUrl
InternalEcpPhotoUrl InternalEcpConnectUrl InternalEcpTeamMailboxUrl InternalEcpTeamMailboxCreatingUrl
InternalEcpTeamMailboxEditingUrl InternalEcpTeamMailboxHidingUrl InternalEcpExtensionInstallationUrl InternalEwsUrl
InternalEmwsUrl InternalOABUrl InternalPhotosUrl InternalUMUrl InternalWebClientUrls MailboxDN PublicFolderServer
ActiveDirectoryServer ExternalMailboxServer ExternalMailboxServerRequiresSSL ExternalMailboxServerAuthenticationMethods
EcpVoicemailUrlFragment EcpEmailSubscriptionsUrlFragment EcpTextMessagingUrlFragment EcpDeliveryReportUrlFragment
EcpRetentionPolicyTagsUrlFragment EcpPublishingUrlFragment EcpPhotoUrlFragment EcpConnectUrlFragment
EcpTeamMailboxUrlFragment EcpTeamMailboxCreatingUrlFragment EcpTeamMailboxEditingUrlFragment
EcpExtensionInstallationUrlFragment ExternalEcpUrl ExternalEcpVoicemailUrl ExternalEcpEmailSubscriptionsUrl
ExternalEcpTextMessagingUrl ExternalEcpDeliveryReportUrl ExternalEcpRetentionPolicyTagsUrl ExternalEcpPublishingUrl
ExternalEcpPhotoUrl ExternalEcpConnectUrl ExternalEcpTeamMailboxUrl ExternalEcpTeamMailboxCreatingUrl
ExternalEcpTeamMailboxEditingUrl ExternalEcpTeamMailboxHidingUrl ExternalEcpExtensionInstallationUrl ExternalEwsUrl
ExternalEmwsUrl ExternalOABUrl ExternalPhotosUrl ExternalUMUrl ExternalWebClientUrls CrossOrganizationSharingEnabled
AlternateMailboxes CasVersion EwsSupportedSchemas InternalPop3Connections ExternalPop3Connections
InternalImap4Connections ExternalImap4Connections InternalSmtpConnections ExternalSmtpConnections
InternalServerExclusiveConnect ExternalEwsVersion MobileMailboxPolicy DocumentSharingLocations UserMSOnline
InternalMailboxServerAuthenticationMethods MailboxVersion SPMySiteHostURL SiteMailboxCreationURL InternalRpcHttpServer
InternalRpcHttpConnectivityRequiresSsl InternalRpcHttpAuthenticationMethod ExternalServerExclusiveConnect
ExchangeRpcUrl ShowGalAsDefaultView AutoDiscoverSMTPAddress InteropExternalEwsUrl InteropExternalEwsVersion
PublicFolderInformation RedirectUrl EwsPartnerUrl CertPrincipalName GroupingInformation MapiHttpEnabled
InternalOutlookServiceUrl ExternalOutlookServiceUrl""".split()
NEWER_THAN_2013 = {"InternalOutlookServiceUrl", "ExternalOutlookServiceUrl"}


def exchangelib_service() -> GetUserSettings:
    protocol = AutodiscoverProtocol(config=Configuration(
        service_endpoint="https://autodiscover.contoso.test/autodiscover/autodiscover.svc",
        credentials=Credentials("alice@contoso.test", "unused"), auth_type=NOAUTH))
    return GetUserSettings(protocol=protocol)


def exchangelib_request(email: str = "alice@contoso.test", names: Optional[List[str]] = None) -> bytes:
    """The bytes exchangelib 5.6 POSTs: every setting it knows, RequestedServerVersion Exchange2016."""
    service = exchangelib_service()
    payload = service.get_payload(users=[email], settings=names or EXCHANGELIB_SETTINGS)
    return service.wrap(content=payload, api_version=Version.all_versions()[0].api_version)


def soap_request(operation: str, request_children: str, action: Optional[str] = "default",
                 envelope_ns: str = SOAP_NS) -> bytes:
    action = f"http://schemas.microsoft.com/exchange/2010/Autodiscover/Autodiscover/{operation}" \
        if action == "default" else action
    header = f"<wsa:Action>{action}</wsa:Action>" if action else ""
    return (f'<s:Envelope xmlns:s="{envelope_ns}" xmlns:a="{ANS}" xmlns:wsa="http://www.w3.org/2005/08/addressing">'
            f"<s:Header><a:RequestedServerVersion>Exchange2013</a:RequestedServerVersion>{header}</s:Header>"
            f"<s:Body><a:{operation}RequestMessage><a:Request>{request_children}</a:Request>"
            f"</a:{operation}RequestMessage></s:Body></s:Envelope>").encode()


def user_settings_request(email: str, names: List[str], action: Optional[str] = "default") -> bytes:
    settings_xml = "".join(f"<a:Setting>{n}</a:Setting>" for n in names)
    return soap_request("GetUserSettings", f"<a:Users><a:User><a:Mailbox>{email}</a:Mailbox></a:User></a:Users>"
                                           f"<a:RequestedSettings>{settings_xml}</a:RequestedSettings>", action)


def user_response(answer) -> etree._Element:
    assert answer.status == 200 and answer.content_type == "text/xml; charset=utf-8"
    root = etree.fromstring(answer.body)
    return root.find(f"{{{SOAP_NS}}}Body/{A}GetUserSettingsResponseMessage/{A}Response/{A}UserResponses/"
                     f"{A}UserResponse")


def setting_errors(user: etree._Element) -> dict:
    return {e.findtext(f"{A}SettingName"): e.findtext(f"{A}ErrorCode")
            for e in user.iterfind(f"{A}UserSettingErrors/{A}UserSettingError")}


def setting_values(user: etree._Element) -> dict:
    return {s.findtext(f"{A}Name"): s for s in user.iterfind(f"{A}UserSettings/{A}UserSetting")}


# ---- exchangelib reads our answers ---------------------------------------------------------------------------
def test_exchangelib_parses_full_settings_answer():
    answer = respond_soap(ORG, exchangelib_request(), ORG.find("alice"), URLS)
    assert (answer.status, answer.outcome, answer.mailbox) == (200, "settings", ORG.find("alice"))
    [result] = list(exchangelib_service().parse(answer.body))
    result.raise_errors()   # only InvalidSetting/SettingIsNotAvailable for known names: harmless to exchangelib
    assert result.ews_url == "https://mail.contoso.test/EWS/Exchange.asmx"
    assert result.version.api_version == "Exchange2013_SP1"
    assert result.autodiscover_smtp_address == "alice@contoso.test"
    assert result.user_settings["internal_rpc_client_server"] == ORG.personal_server(ORG.find("alice"))
    assert result.user_settings["external_mailbox_server_authentication_methods"] == "Negotiate"
    assert result.user_settings["external_ews_version"] == "15.00.1497.002"


def test_server_version_header_is_exchange2013_sp1():
    answer = respond_soap(ORG, exchangelib_request(), None, URLS)
    header, _body = GetUserSettings._get_soap_parts(DummyResponse(content=answer.body))
    version = Version.from_soap_header(requested_api_version="Exchange2016", header=header)
    assert version.api_version == "Exchange2013_SP1"
    assert (version.build.major_version, version.build.minor_version, version.build.major_build,
            version.build.minor_build) == (15, 0, 1497, 2)
    action = header.findtext("{http://www.w3.org/2005/08/addressing}Action")
    assert action == "http://schemas.microsoft.com/exchange/2010/Autodiscover/Autodiscover/GetUserSettingsResponse"


def test_unknown_user_is_invalid_user_for_exchangelib():
    answer = respond_soap(ORG, exchangelib_request("nobody@contoso.test"), ORG.find("alice"), URLS)
    assert (answer.status, answer.outcome, answer.error_code) == (200, "error", "InvalidUser")
    [result] = list(exchangelib_service().parse(answer.body))
    with pytest.raises(ErrorNonExistentMailbox, match="nobody@contoso.test"):
        result.raise_errors()


@pytest.mark.parametrize("code, target, outcome, attribute", [
    ("RedirectAddress", "alice@contoso.mail.onmicrosoft.test", "redirectAddr", "redirect_address"),
    ("RedirectUrl", "https://autodiscover.fabrikam.test/autodiscover/autodiscover.svc", "redirectUrl", "redirect_url"),
])
def test_redirect_builders_read_by_exchangelib(code, target, outcome, attribute):
    answer = soap_user_error(code, "Redirection.", target)
    assert (answer.status, answer.outcome, answer.error_code) == (200, outcome, code)
    [result] = list(exchangelib_service().parse(answer.body))
    assert getattr(result, attribute) == target


def test_server_busy_builder_raises_in_exchangelib():
    with pytest.raises(ErrorServerBusy):
        list(exchangelib_service().parse(soap_user_error("ServerBusy", "The server is too busy.").body))


def test_only_requested_settings_come_back():
    answer = respond_soap(ORG, exchangelib_request(names=["external_ews_url", "ews_supported_schemas"]), None, URLS)
    user = user_response(answer)
    assert sorted(setting_values(user)) == ["EwsSupportedSchemas", "ExternalEwsUrl"]
    assert setting_errors(user) == {}
    [result] = list(exchangelib_service().parse(answer.body))
    assert result.user_settings == {"external_ews_url": URLS.ews_url, "ews_supported_schemas": (
        "Exchange2007, Exchange2007_SP1, Exchange2010, Exchange2010_SP1, Exchange2010_SP2, Exchange2013, "
        "Exchange2013_SP1")}


class InProcessHttp(requests.adapters.BaseAdapter):
    """Stands in for the HTTP layer: Basic challenge without credentials, respond_soap with them."""
    requests_seen: List[requests.PreparedRequest] = []

    def __init__(self, **_pool_options):
        super().__init__()

    def send(self, request, **_kwargs):
        InProcessHttp.requests_seen.append(request)
        response = requests.Response()
        response.request, response.url = request, request.url
        caller = self._caller(request.headers.get("Authorization", ""))
        if caller is None:
            response.status_code, response._content = 401, b""
            response.headers["WWW-Authenticate"] = 'Basic realm="autodiscover.contoso.test"'
        else:
            answer = respond_soap(ORG, request.body, caller, URLS)
            response.status_code, response._content = answer.status, answer.body
            response.headers["Content-Type"] = answer.content_type
        return response

    @staticmethod
    def _caller(authorization: str):
        scheme, _, token = authorization.partition(" ")
        if scheme != "Basic":
            return None
        user, _, password = base64.b64decode(token).decode().partition(":")
        mailbox = ORG.find(user)
        return mailbox if mailbox is not None and mailbox.password == password else None

    def close(self):
        pass


def test_exchangelib_discovery_end_to_end(monkeypatch, tmp_path):
    """exchangelib's whole Autodiscovery (auth probe, GetUserSettings, version pick) against respond_soap."""
    monkeypatch.setattr(BaseProtocol, "HTTP_ADAPTER_CLS", InProcessHttp)
    monkeypatch.setattr(discovery.Autodiscovery, "_ensure_valid_hostname", lambda self, url: None)  # no DNS
    monkeypatch.setattr(AutodiscoverCache, "_storage_file", property(lambda self: tmp_path / "autodiscover-cache"))
    monkeypatch.setattr(autodiscover_cache, "_protocols", {})
    monkeypatch.setattr(InProcessHttp, "requests_seen", [])
    dave = ORG.find("dave")
    ad_response, protocol = discovery.discover("dave@contoso.test", Credentials("dave@contoso.test", dave.password))
    assert protocol.service_endpoint == "https://mail.contoso.test/EWS/Exchange.asmx"
    assert protocol.version.api_version == "Exchange2013_SP1"
    assert ad_response.autodiscover_smtp_address == "dave@contoso.test"
    assert ad_response.user_settings["internal_mailbox_server"] == "ex02.contoso.test"
    first, second = InProcessHttp.requests_seen[:2]
    assert first.url == second.url == "https://contoso.test/autodiscover/autodiscover.svc"
    assert "Authorization" not in first.headers and second.headers["Authorization"].startswith("Basic ")


# ---- settings coverage and types -------------------------------------------------------------------------------
def test_every_client_setting_name_is_known():
    wanted = set(UserResponse.SETTINGS_MAP.values()) | set(EWS_JS_SETTINGS)
    user = user_response(respond_soap(ORG, user_settings_request("bob@contoso.test", sorted(wanted)), None, URLS))
    errors, values = setting_errors(user), setting_values(user)
    assert set(errors) | set(values) == wanted and not set(errors) & set(values)
    assert {name for name, code in errors.items() if code == "InvalidSetting"} == NEWER_THAN_2013
    assert set(errors.values()) == {"InvalidSetting", "SettingIsNotAvailable"}
    assert KNOWN_USER_SETTINGS >= wanted - NEWER_THAN_2013


def test_setting_types_and_unknown_names():
    names = ["ExternalWebClientUrls", "InternalWebClientUrls", "ExternalEwsUrl", "NoSuchSetting"]
    user = user_response(respond_soap(ORG, user_settings_request("alice@contoso.test", names), None, URLS))
    values = setting_values(user)
    xsi_type = f"{{{XSI_NS}}}type"
    assert {name: element.get(xsi_type) for name, element in values.items()} == {
        "ExternalWebClientUrls": "WebClientUrlCollectionSetting",
        "InternalWebClientUrls": "WebClientUrlCollectionSetting", "ExternalEwsUrl": "StringSetting"}
    external = values["ExternalWebClientUrls"].find(f"{A}WebClientUrls/{A}WebClientUrl")
    assert [(c.tag[len(A):], c.text) for c in external] == [("AuthenticationMethods", "Fba"),
                                                             ("Url", "https://mail.contoso.test/owa/")]
    assert values["InternalWebClientUrls"].findtext(f"{A}WebClientUrls/{A}WebClientUrl/{A}AuthenticationMethods") == \
        "Basic, Fba"
    assert setting_errors(user) == {"NoSuchSetting": "InvalidSetting"}
    assert user.find(f"{A}RedirectTarget").get(f"{{{XSI_NS}}}nil") == "true"


def test_soap_and_pox_describe_the_same_mailbox():
    olk = f"{{{OUTLOOK_RESPONSE_NS}}}"
    dave = ORG.find("dave")
    pox = etree.fromstring(respond_pox(ORG, pox_request("dave@contoso.test"), None, URLS).body)
    account = pox.find(f"{olk}Response/{olk}Account")
    exch, expr = account.findall(f"{olk}Protocol")[:2]
    [result] = list(exchangelib_service().parse(respond_soap(ORG, exchangelib_request("dave@contoso.test"), None,
                                                             URLS).body))
    soap = result.user_settings
    assert soap["internal_rpc_client_server"] == exch.findtext(f"{olk}Server") == ORG.personal_server(dave)
    assert soap["internal_mailbox_server_dn"] == exch.findtext(f"{olk}ServerDN")
    assert soap["mailbox_dn"] == exch.findtext(f"{olk}MdbDN")
    assert soap["external_mailbox_server"] == expr.findtext(f"{olk}Server")
    assert soap["external_mailbox_server_authentication_methods"] == expr.findtext(f"{olk}AuthPackage")
    assert soap["user_dn"] == pox.findtext(f"{olk}Response/{olk}User/{olk}LegacyDN")
    assert soap["external_ecp_voicemail_url"] == exch.findtext(f"{olk}EcpUrl") + exch.findtext(f"{olk}EcpUrl-um")


def test_mapi_http_flag_and_auth_package_pass_through():
    names = ["MapiHttpEnabled", "ExternalMailboxServerAuthenticationMethods"]
    answer = respond_soap(ORG, user_settings_request("alice@contoso.test", names), None, URLS, auth_package="Basic",
                          mapi_http=True)
    values = setting_values(user_response(answer))
    assert {n: e.findtext(f"{A}Value") for n, e in values.items()} == {
        "MapiHttpEnabled": "True", "ExternalMailboxServerAuthenticationMethods": "Basic"}


# What ews-javascript-api 0.15.3 AutodiscoverService.GetUserSettings POSTed (captured against respond_soap on
# loopback; that client then read ExternalEwsUrl and the two setting errors from the answer).
EWS_JS_REQUEST = (
    b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
    b'xmlns:a="http://schemas.microsoft.com/exchange/2010/Autodiscover" '
    b'xmlns:wsa="http://www.w3.org/2005/08/addressing" '
    b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soap:Header><a:RequestedServerVersion>Exchange2013'
    b'</a:RequestedServerVersion><wsa:Action>http://schemas.microsoft.com/exchange/2010/Autodiscover/Autodiscover/'
    b'GetUserSettings</wsa:Action><wsa:To>http://127.0.0.1:18766/autodiscover/autodiscover.svc</wsa:To></soap:Header>'
    b'<soap:Body><a:GetUserSettingsRequestMessage xmlns:a="http://schemas.microsoft.com/exchange/2010/Autodiscover">'
    b'<a:Request><a:Users><a:User><a:Mailbox>bob@contoso.test</a:Mailbox></a:User></a:Users><a:RequestedSettings>'
    b'<a:Setting>ExternalEwsUrl</a:Setting><a:Setting>AlternateMailboxes</a:Setting><a:Setting>'
    b'InternalOutlookServiceUrl</a:Setting></a:RequestedSettings></a:Request></a:GetUserSettingsRequestMessage>'
    b'</soap:Body></soap:Envelope>')


def test_ews_javascript_api_request():
    answer = respond_soap(ORG, EWS_JS_REQUEST, ORG.find("alice"), URLS)
    user = user_response(answer)
    assert answer.mailbox == ORG.find("bob")
    assert {n: e.findtext(f"{A}Value") for n, e in setting_values(user).items()} == {"ExternalEwsUrl": URLS.ews_url}
    assert setting_errors(user) == {"AlternateMailboxes": "SettingIsNotAvailable",
                                    "InternalOutlookServiceUrl": "InvalidSetting"}


def test_operation_chosen_from_the_body_when_no_action_header():
    answer = respond_soap(ORG, user_settings_request("carol@contoso.test", ["UserDisplayName"], action=None), None,
                          URLS)
    assert setting_values(user_response(answer))["UserDisplayName"].findtext(f"{A}Value") == "Carol Jones"


# ---- GetDomainSettings -------------------------------------------------------------------------------------------
def domain_settings_request(domains: List[str], names: List[str]) -> bytes:
    return soap_request("GetDomainSettings",
                        "<a:Domains>" + "".join(f"<a:Domain>{d}</a:Domain>" for d in domains) + "</a:Domains>"
                        "<a:RequestedSettings>" + "".join(f"<a:Setting>{n}</a:Setting>" for n in names) +
                        "</a:RequestedSettings><a:RequestedVersion>Exchange2013</a:RequestedVersion>")


def test_get_domain_settings():
    answer = respond_soap(ORG, domain_settings_request(["contoso.test", "fabrikam.test"],
                                                       ["ExternalEwsUrl", "ExternalEwsVersion", "Bogus"]), None, URLS)
    assert (answer.status, answer.outcome) == (200, "settings")
    root = etree.fromstring(answer.body)
    known, unknown = root.iterfind(f".//{A}DomainResponse")
    settings_found = {s.findtext(f"{A}Name"): (s.get(f"{{{XSI_NS}}}type"), s.findtext(f"{A}Value"))
                      for s in known.iterfind(f"{A}DomainSettings/{A}DomainSetting")}
    assert settings_found == {"ExternalEwsUrl": ("DomainStringSetting", URLS.ews_url),
                              "ExternalEwsVersion": ("DomainStringSetting", "15.00.1497.002")}
    assert known.findtext(f"{A}DomainSettingErrors/{A}DomainSettingError/{A}SettingName") == "Bogus"
    assert unknown.findtext(f"{A}ErrorCode") == "InvalidDomain"
    only_unknown = respond_soap(ORG, domain_settings_request(["fabrikam.test"], ["ExternalEwsUrl"]), None, URLS)
    assert (only_unknown.outcome, only_unknown.error_code) == ("error", "InvalidDomain")


# ---- faults ------------------------------------------------------------------------------------------------------
def fault_of(answer) -> etree._Element:
    assert (answer.status, answer.outcome) == (500, "fault")
    fault = etree.fromstring(answer.body).find(f"{{{SOAP_NS}}}Body/{{{SOAP_NS}}}Fault")
    assert fault is not None and fault.findtext("faultstring")
    return fault


@pytest.mark.parametrize("body, faultcode", [
    (b"", "s:Client"),
    (b"<html>IIS</html>", "s:Client"),
    (pox_request(), "s:Client"),
    (soap_request("GetUserSettings", "", envelope_ns="http://www.w3.org/2003/05/soap-envelope"), "s:Client"),
    (soap_request("GetUserSettings", "<a:Users/>"), "s:Client"),                      # nothing requested
    (soap_request("GetDomainSettings", "<a:Domains/>"), "s:Client"),
    (soap_request("GetFederationInformation", "<a:Domain>contoso.test</a:Domain>"), "a:ActionNotSupported"),
    (soap_request("GetFederationInformation", "", action=None), "a:ActionNotSupported"),
    (soap_request("GetUserSettings", "", action="urn:something-else"), "a:ActionNotSupported"),
    (soap_request("GetUserSettings", "", action=None).replace(b"a:GetUserSettingsRequestMessage", b"a:Other"),
     "s:Client"),
    (user_settings_request("alice@contoso.test", ["UserDN"]).replace(b"<a:Request>", b"<a:Req>").replace(
        b"</a:Request>", b"</a:Req>"), "s:Client"),
])
def test_faults(body, faultcode):
    answer = respond_soap(ORG, body, ORG.find("alice"), URLS)
    assert fault_of(answer).findtext("faultcode") == faultcode
    with pytest.raises(TransportError):    # exchangelib: SOAPError, so discovery moves on to the next URL
        list(exchangelib_service().parse(answer.body))


# ---- robustness ----------------------------------------------------------------------------------------------
def assert_documented(answer, body: bytes) -> None:
    """HTTP 500 faults, or HTTP 200 answers that name only requested settings."""
    if answer.status == 500:
        fault_of(answer)
        return
    assert answer.status == 200 and answer.outcome in {"settings", "error"}
    root = etree.fromstring(answer.body)
    requested = {(e.text or "").strip() for e in etree.fromstring(body).iter(f"{A}Setting")}
    returned = {e.text for e in root.iter(f"{A}SettingName")} | {e.findtext(f"{A}Name") for e in root.iter(
        f"{A}UserSetting", f"{A}DomainSetting")}
    assert returned <= requested


SOAP_WORDS = ["Envelope", "Header", "Body", "Action", "GetUserSettingsRequestMessage",
              "GetDomainSettingsRequestMessage", "Request", "Users", "User", "Mailbox", "RequestedSettings", "Setting",
              "Domains", "Domain"]
SOAP_NAMESPACES = [SOAP_NS, ANS, "http://www.w3.org/2005/08/addressing", None]
SOAP_VALUES = ["alice@contoso.test", "nobody@contoso.test", "ExternalEwsUrl", "Bogus", "contoso.test", "",
               "http://schemas.microsoft.com/exchange/2010/Autodiscover/Autodiscover/GetDomainSettings"]


@settings(max_examples=scaled(150), deadline=None)
@given(body=st.binary(max_size=400))
def test_arbitrary_bytes_are_faults(body):
    fault_of(respond_soap(ORG, body, None, URLS))


@settings(max_examples=scaled(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=mutated_documents(exchangelib_request(names=["external_ews_url", "user_dn", "alternate_mailboxes"]),
                              words=SOAP_WORDS, namespaces=SOAP_NAMESPACES, values=SOAP_VALUES)
       | mutated_documents(domain_settings_request(["contoso.test"], ["ExternalEwsUrl"]), words=SOAP_WORDS,
                           namespaces=SOAP_NAMESPACES, values=SOAP_VALUES))
def test_mutated_requests_get_documented_answers(body):
    assert_documented(respond_soap(ORG, body, ORG.find("alice"), URLS), body)
