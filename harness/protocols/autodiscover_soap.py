"""SOAP Autodiscover (MS-OXWSADISC) at /autodiscover/autodiscover.svc, sans-IO: GetUserSettings and
GetDomainSettings.

Clients are strict about names: exchangelib raises KeyError for any returned setting or setting error it did not
request, so an answer only ever names requested settings. Requested names the mock does not know get
``InvalidSetting``; known names it has no value for get ``SettingIsNotAvailable`` (both harmless to clients).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from lxml import etree

from harness.org import Mailbox, Org
from harness.protocols.autodiscover import (
    ECP_FRAGMENTS,
    EXTERNAL_OWA_AUTH,
    INTERNAL_OWA_AUTH,
    POX_ERROR_MESSAGES,
    MailboxSettings,
    served_domains,
)
from harness.protocols.autodiscover_answer import (
    XML_CONTENT_TYPE,
    AutodiscoverAnswer,
    Flavour,
    SettingsEdit,
    child,
    child_text,
    parse_untrusted_xml,
    serialize,
)
from harness.protocols.siteurls import SiteUrls

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
WSA_NS = "http://www.w3.org/2005/08/addressing"
WCF_ADDRESSING_NONE_NS = "http://schemas.microsoft.com/ws/2005/05/addressing/none"
ANS = "http://schemas.microsoft.com/exchange/2010/Autodiscover"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
ACTION_PREFIX = "http://schemas.microsoft.com/exchange/2010/Autodiscover/Autodiscover/"
DEFAULT_SERVER_VERSION = "15.0.1497.2"   # Exchange 2013 CU23

# Oldest build that speaks each EWS schema; EwsSupportedSchemas lists every one up to the server's build.
SCHEMA_BUILDS: Tuple[Tuple[Tuple[int, int, int], str], ...] = (
    ((8, 0, 0), "Exchange2007"),
    ((8, 1, 0), "Exchange2007_SP1"),
    ((14, 0, 0), "Exchange2010"),
    ((14, 1, 0), "Exchange2010_SP1"),
    ((14, 2, 0), "Exchange2010_SP2"),
    ((15, 0, 0), "Exchange2013"),
    ((15, 0, 847), "Exchange2013_SP1"),
    ((15, 1, 0), "Exchange2016"),
)

WebClientUrls = Tuple[Tuple[str, str], ...]     # (authentication methods, url)
SettingValue = Union[str, WebClientUrls, None]  # None: the mock has no value (SettingIsNotAvailable)


def version_parts(version: str) -> Tuple[int, int, int, int]:
    parts = [int(p) for p in version.split(".")[:4]]
    return tuple(parts + [0] * (4 - len(parts)))  # type: ignore[return-value]


def supported_schemas(version: str) -> List[str]:
    build = version_parts(version)[:3]
    return [name for oldest, name in SCHEMA_BUILDS if build >= oldest] or [SCHEMA_BUILDS[0][1]]


def ews_version_string(version: str) -> str:
    """ExternalEwsVersion form: 15.00.1497.002."""
    major, minor, build, revision = version_parts(version)
    return f"{major:02d}.{minor:02d}.{build:04d}.{revision:03d}"


# ---- the user settings the mock answers ---------------------------------------------------------------------
def _web_client_urls(auth: str, settings: MailboxSettings) -> WebClientUrls:
    return ((auth, settings.urls.owa_url),)


def _ecp_settings() -> Dict[str, Callable[[MailboxSettings], SettingValue]]:
    table: Dict[str, Callable[[MailboxSettings], SettingValue]] = {
        "InternalEcpUrl": lambda s: s.urls.ecp_url,
        "ExternalEcpUrl": lambda s: s.urls.ecp_url,
    }

    def fragment(infix: str, s: MailboxSettings) -> str:
        return next(text for _suffix, name, text in s.ecp_fragments() if name == infix)

    def url(infix: str, s: MailboxSettings) -> str:
        return s.urls.ecp_url + fragment(infix, s)

    for _suffix, infix, _template in ECP_FRAGMENTS:
        table[f"Ecp{infix}UrlFragment"] = functools.partial(fragment, infix)
        table[f"InternalEcp{infix}Url"] = functools.partial(url, infix)
        table[f"ExternalEcp{infix}Url"] = functools.partial(url, infix)
    return table


USER_SETTINGS: Dict[str, Callable[[MailboxSettings], SettingValue]] = {
    "UserDisplayName": lambda s: s.mailbox.display_name,
    "UserDN": lambda s: s.legacy_dn,
    "UserDeploymentId": lambda s: s.org.deployment_id,
    "AutoDiscoverSMTPAddress": lambda s: s.mailbox.email,
    "UserMSOnline": lambda s: "False",
    "CasVersion": lambda s: s.org.exchange_version,
    "MailboxVersion": lambda s: s.mailbox_version,
    "EwsSupportedSchemas": lambda s: ", ".join(supported_schemas(s.org.exchange_version)),
    "ExternalEwsVersion": lambda s: ews_version_string(s.org.exchange_version),
    "InternalMailboxServer": lambda s: s.mailbox_server_fqdn,
    "InternalRpcClientServer": lambda s: s.rpc_server,
    "InternalMailboxServerDN": lambda s: s.server_dn,
    "MailboxDN": lambda s: s.mdb_dn,
    "PublicFolderServer": lambda s: s.public_folder_server,
    "InternalEwsUrl": lambda s: s.urls.ews_url,
    "ExternalEwsUrl": lambda s: s.urls.ews_url,
    "InternalEmwsUrl": lambda s: s.urls.ews_url,
    "ExternalEmwsUrl": lambda s: s.urls.ews_url,
    "InternalOABUrl": lambda s: s.urls.oab_url,
    "ExternalOABUrl": lambda s: s.urls.oab_url,
    "InternalUMUrl": lambda s: s.urls.um_url,
    "ExternalUMUrl": lambda s: s.urls.um_url,
    "InternalWebClientUrls": functools.partial(_web_client_urls, INTERNAL_OWA_AUTH),
    "ExternalWebClientUrls": functools.partial(_web_client_urls, EXTERNAL_OWA_AUTH),
    # no ExternalHostname: the external Outlook Anywhere settings are not available
    "ExternalMailboxServer": lambda s: s.external_rpc_host or None,
    "ExternalMailboxServerRequiresSSL": lambda s: str(s.outlook_anywhere.external_requires_ssl)
    if s.external_rpc_host else None,
    "ExternalMailboxServerAuthenticationMethods": lambda s: s.external_auth_package if s.external_rpc_host else None,
    "InternalRpcHttpServer": lambda s: s.internal_rpc_host,
    "InternalRpcHttpConnectivityRequiresSsl": lambda s: str(s.outlook_anywhere.internal_requires_ssl),
    "InternalRpcHttpAuthenticationMethod": lambda s: s.outlook_anywhere.internal_client_auth,
    "CertPrincipalName": lambda s: s.cert_principal_name if s.external_rpc_host else None,
    "InternalServerExclusiveConnect": lambda s: "False",
    "ExternalServerExclusiveConnect": lambda s: "True",
    "CrossOrganizationSharingEnabled": lambda s: "False",
    "ShowGalAsDefaultView": lambda s: "True",
    "MapiHttpEnabled": lambda s: str(s.mapi_http and not s.legacy),
    **_ecp_settings(),
}

# Names Exchange 2013 knows but the mock has nothing behind: no DC in the org model, no POP/IMAP/SMTP service,
# no public folders, SharePoint, hybrid or delegation data.
NOT_AVAILABLE = frozenset({
    "ActiveDirectoryServer", "AlternateMailboxes", "DocumentSharingLocations", "ExchangeRpcUrl", "EwsPartnerUrl",
    "GroupingInformation", "InteropExternalEwsUrl", "InteropExternalEwsVersion",
    "InternalMailboxServerAuthenticationMethods", "InternalPhotosUrl", "ExternalPhotosUrl",
    "InternalEcpConnectUrl", "ExternalEcpConnectUrl", "EcpConnectUrlFragment",
    "InternalEcpTeamMailboxHidingUrl", "ExternalEcpTeamMailboxHidingUrl",
    "InternalPop3Connections", "ExternalPop3Connections", "InternalImap4Connections", "ExternalImap4Connections",
    "InternalSmtpConnections", "ExternalSmtpConnections", "MobileMailboxPolicy", "MobileMailboxPolicyInterop",
    "PublicFolderInformation", "RedirectUrl", "SPMySiteHostURL", "SiteMailboxCreationURL",
})
KNOWN_USER_SETTINGS = frozenset(USER_SETTINGS) | NOT_AVAILABLE
DOMAIN_SETTINGS = ("ExternalEwsUrl", "ExternalEwsVersion")   # the whole DomainSettingName enumeration


# ---- envelopes -------------------------------------------------------------------------------------------------
def _envelope(operation: str, server_version: str) -> Tuple[etree._Element, etree._Element]:
    """s:Envelope with the wsa:Action and ServerVersionInfo headers; returns (envelope, body)."""
    envelope = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"s": SOAP_NS, "a": WSA_NS})
    header = child(envelope, "Header")
    action = etree.SubElement(header, f"{{{WSA_NS}}}Action", {f"{{{SOAP_NS}}}mustUnderstand": "1"})
    action.text = f"{ACTION_PREFIX}{operation}Response"
    info = etree.SubElement(header, f"{{{ANS}}}ServerVersionInfo", nsmap={"h": ANS, "i": XSI_NS})
    tags = ("MajorVersion", "MinorVersion", "MajorBuildNumber", "MinorBuildNumber")
    for tag, number in zip(tags, version_parts(server_version)):
        child(info, tag, str(number))
    child(info, "Version", supported_schemas(server_version)[-1])
    return envelope, child(envelope, "Body")


def _response_message(operation: str, server_version: str) -> Tuple[etree._Element, etree._Element]:
    """<XResponseMessage><Response> with a NoError top-level code; returns (envelope, Response)."""
    envelope, body = _envelope(operation, server_version)
    message = etree.SubElement(body, f"{{{ANS}}}{operation}ResponseMessage", nsmap={None: ANS})
    response = etree.SubElement(message, f"{{{ANS}}}Response", nsmap={"i": XSI_NS})
    child(response, "ErrorCode", "NoError")
    child(response, "ErrorMessage")
    return envelope, response


def _redirect_target(parent: etree._Element, target: Optional[str]) -> None:
    if target is None:
        child(parent, "RedirectTarget", **{f"{{{XSI_NS}}}nil": "true"})
    else:
        child(parent, "RedirectTarget", target)


def _soap_answer(envelope: etree._Element, outcome: str, **fields: Any) -> AutodiscoverAnswer:
    return AutodiscoverAnswer(status=200, body=serialize(envelope), content_type=XML_CONTENT_TYPE,
                              outcome=outcome, flavour=SOAP, **fields)


def soap_fault(faultstring: str, error_code: str = "InvalidRequest") -> AutodiscoverAnswer:
    """A SOAP 1.1 fault with HTTP 500 (ews-javascript-api reads s:Fault only on 500).

    ``ActionNotSupported`` gets WCF's addressing fault code; anything else is an ``s:Client`` fault.
    """
    envelope = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap={"s": SOAP_NS})
    fault = child(child(envelope, "Body"), "Fault")
    if error_code == "ActionNotSupported":
        code = etree.SubElement(fault, "faultcode", nsmap={"a": WCF_ADDRESSING_NONE_NS})
        code.text = "a:ActionNotSupported"
    else:
        code = etree.SubElement(fault, "faultcode")
        code.text = "s:Client"
    text = etree.SubElement(fault, "faultstring", {"{http://www.w3.org/XML/1998/namespace}lang": "en-US"})
    text.text = faultstring
    return AutodiscoverAnswer(status=500, body=serialize(envelope), content_type=XML_CONTENT_TYPE,
                              outcome="fault", error_code=error_code, detail=faultstring, flavour=SOAP)


def _user_response(responses: etree._Element, code: str, message: str,
                   redirect_target: Optional[str] = None) -> etree._Element:
    user = child(responses, "UserResponse")
    child(user, "ErrorCode", code)
    child(user, "ErrorMessage", message)
    _redirect_target(user, redirect_target)
    return user


def _user_error_outcome(code: str) -> str:
    return {"RedirectAddress": "redirectAddr", "RedirectUrl": "redirectUrl"}.get(code, "error")


def soap_user_error(code: str, message: str, redirect_target: Optional[str] = None, *,
                    server_version: str = DEFAULT_SERVER_VERSION) -> AutodiscoverAnswer:
    """A GetUserSettings answer whose single UserResponse carries ``code`` (RedirectAddress, RedirectUrl with
    ``redirect_target``; InvalidUser, ServerBusy, InternalServerError, ...). HTTP 200, as Exchange sends it."""
    envelope, response = _response_message("GetUserSettings", server_version)
    user = _user_response(child(response, "UserResponses"), code, message, redirect_target)
    child(user, "UserSettingErrors")
    child(user, "UserSettings")
    target = f" -> {redirect_target}" if redirect_target else ""
    return _soap_answer(envelope, _user_error_outcome(code), error_code=code, detail=f"{code}: {message}{target}")


def setting_error(errors: etree._Element, element: str, code: str, message: str, name: str) -> None:
    """A UserSettingError / DomainSettingError element (faults that edit answers use it too)."""
    error = child(errors, element)
    child(error, "ErrorCode", code)
    child(error, "ErrorMessage", message)
    child(error, "SettingName", name)


def user_setting(settings_element: etree._Element, name: str, value: SettingValue) -> None:
    """A UserSetting of the type its value calls for (StringSetting or WebClientUrlCollectionSetting)."""
    xsi_type = f"{{{XSI_NS}}}type"
    if isinstance(value, str):
        setting = child(settings_element, "UserSetting", **{xsi_type: "StringSetting"})
        child(setting, "Name", name)
        child(setting, "Value", value)
        return
    setting = child(settings_element, "UserSetting", **{xsi_type: "WebClientUrlCollectionSetting"})
    child(setting, "Name", name)
    urls = child(setting, "WebClientUrls")
    for auth, url in value or ():
        entry = child(urls, "WebClientUrl")
        child(entry, "AuthenticationMethods", auth)
        child(entry, "Url", url)


def _not_available(name: str) -> Tuple[str, str]:
    """(ErrorCode, ErrorMessage) of a UserSettingError for a setting the server has no value for."""
    return "SettingIsNotAvailable", f"User setting '{name}' is not available."


def _settings_user_response(responses: etree._Element, settings: MailboxSettings, requested: List[str]) -> None:
    user = _user_response(responses, "NoError", "No error.")
    errors = child(user, "UserSettingErrors")
    values = child(user, "UserSettings")
    for name in requested:
        if name not in KNOWN_USER_SETTINGS:
            setting_error(errors, "UserSettingError", "InvalidSetting", f"The requested setting '{name}' is "
                           "not valid.", name)
            continue
        value = USER_SETTINGS[name](settings) if name in USER_SETTINGS else None
        if value is None:
            setting_error(errors, "UserSettingError", *_not_available(name), name)
        else:
            user_setting(values, name, value)


# ---- the SOAP flavour: how faults refuse, redirect and edit GetUserSettings answers -------------------------
SOAP_CODE_FOR_POX = {500: "InvalidUser", 501: "InvalidUser", 600: "InvalidRequest", 601: "InvalidRequest",
                     602: "InvalidUser", 603: "InternalServerError"}


def _edit_user_response(user: etree._Element, edit: SettingsEdit) -> bool:
    """The SOAP part of ``edit`` applied to one UserResponse in place; whether anything changed."""
    settings = user.find(f"{{{ANS}}}UserSettings")
    present = {} if settings is None else {s.findtext(f"{{{ANS}}}Name"): s for s in settings}
    failures = [(name, *_not_available(name)) for name in edit.unavailable]
    failures += [(name, code, message) for name, (code, message) in edit.failed.items()]
    changed = False
    for name, code, message in failures:
        if name in present:
            settings.remove(present.pop(name))
            setting_error(user.find(f"{{{ANS}}}UserSettingErrors"), "UserSettingError", code, message, name)
            changed = True
    for name, value in edit.replace.items():
        if name in present:
            present[name].find(f"{{{ANS}}}Value").text = value
            changed = True
    for name, value in edit.add.items():
        if name not in present:
            user_setting(settings, name, value)
            changed = True
    return changed


class SoapFlavour(Flavour):
    """Refusals and redirects are the UserResponse's ErrorCode; edits act on every UserResponse."""
    editable = True

    def refusal(self, pox_code: int) -> AutodiscoverAnswer:
        # the message Exchange gives the same failure in POX; never words of the mock's own
        return soap_user_error(SOAP_CODE_FOR_POX[pox_code], POX_ERROR_MESSAGES[pox_code])

    def redirect(self, action: str, target: str) -> AutodiscoverAnswer:
        code = "RedirectUrl" if action == "redirectUrl" else "RedirectAddress"
        return soap_user_error(code, f"Redirection to {target}.", target)

    def edit_settings(self, document: etree._Element, edit: SettingsEdit) -> bool:
        # Every UserResponse is edited (a list, not any() over a generator, which would stop at the first).
        return any([_edit_user_response(user, edit) for user in document.iter(f"{{{ANS}}}UserResponse")])


SOAP = SoapFlavour("soap", redirect_file="autodiscover.svc")


# ---- operations -------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SoapRequest:
    org: Org
    request: etree._Element          # the a:Request element
    caller: Optional[Mailbox]
    urls: SiteUrls
    auth_package: Optional[str]
    mapi_http: bool


def _texts(parent: etree._Element, path: str) -> List[str]:
    """Stripped, de-duplicated texts of the elements at ``path`` (ANS-qualified steps), in order."""
    qualified = "/".join(f"{{{ANS}}}{step}" for step in path.split("/"))
    return list(dict.fromkeys((e.text or "").strip() for e in parent.iterfind(qualified)))


MAX_USERS_PER_REQUEST = 100
TOO_MANY_USERS = f"The maximum number of users per request is {MAX_USERS_PER_REQUEST}."


def _get_user_settings(req: SoapRequest) -> AutodiscoverAnswer:
    users = _texts(req.request, "Users/User/Mailbox")
    requested = [s for s in _texts(req.request, "RequestedSettings/Setting") if s]
    if not users or not requested:
        return soap_fault("GetUserSettings needs at least one Users/User/Mailbox and one RequestedSettings/Setting.")
    envelope, response = _response_message("GetUserSettings", req.org.exchange_version)
    if len(users) > MAX_USERS_PER_REQUEST:
        # Exchange caps a request's users (the EWS Managed API sends at most 100): the whole request is refused
        response.find(f"{{{ANS}}}ErrorCode").text = "InvalidRequest"
        response.find(f"{{{ANS}}}ErrorMessage").text = TOO_MANY_USERS
        child(response, "UserResponses")
        return _soap_answer(envelope, "error", error_code="InvalidRequest", detail=TOO_MANY_USERS)
    responses = child(response, "UserResponses")
    found: List[Mailbox] = []
    for address in users:
        mailbox = req.org.find(address)
        if mailbox is None:
            user = _user_response(responses, "InvalidUser", f"Invalid user: '{address}'")
            child(user, "UserSettingErrors")
            child(user, "UserSettings")
            continue
        found.append(mailbox)
        settings = MailboxSettings(req.org, mailbox, req.urls, auth_package=req.auth_package, mapi_http=req.mapi_http)
        _settings_user_response(responses, settings, requested)
    asker = f" (asked by {req.caller.email})" if req.caller is not None else ""
    if not found:
        return _soap_answer(envelope, "error", error_code="InvalidUser",
                            detail=f"no mailbox for {', '.join(users)}{asker}")
    return _soap_answer(envelope, "settings", mailbox=found[0],
                        detail=f"{len(requested)} settings for {', '.join(m.email for m in found)}{asker}")


def _get_domain_settings(req: SoapRequest) -> AutodiscoverAnswer:
    domains = [d for d in _texts(req.request, "Domains/Domain") if d]
    requested = [s for s in _texts(req.request, "RequestedSettings/Setting") if s]
    if not domains or not requested:
        return soap_fault("GetDomainSettings needs at least one Domains/Domain and one RequestedSettings/Setting.")
    values = {"ExternalEwsUrl": req.urls.ews_url, "ExternalEwsVersion": ews_version_string(req.org.exchange_version)}
    envelope, response = _response_message("GetDomainSettings", req.org.exchange_version)
    responses = child(response, "DomainResponses")
    served = served_domains(req.org)
    known = [d for d in domains if d.lower() in served]
    for domain in domains:
        entry = child(responses, "DomainResponse")
        if domain.lower() not in served:
            child(entry, "ErrorCode", "InvalidDomain")
            child(entry, "ErrorMessage", f"Invalid domain: '{domain}'")
            child(entry, "DomainSettingErrors")
            child(entry, "DomainSettings")
            _redirect_target(entry, None)
            continue
        child(entry, "ErrorCode", "NoError")
        child(entry, "ErrorMessage", "No error.")
        errors = child(entry, "DomainSettingErrors")
        settings = child(entry, "DomainSettings")
        for name in requested:
            if name not in DOMAIN_SETTINGS:
                setting_error(errors, "DomainSettingError", "InvalidSetting",
                               f"The requested setting '{name}' is not valid.", name)
                continue
            setting = child(settings, "DomainSetting", **{f"{{{XSI_NS}}}type": "DomainStringSetting"})
            child(setting, "Name", name)
            child(setting, "Value", values[name])
        _redirect_target(entry, None)
    if not known:
        return _soap_answer(envelope, "error", error_code="InvalidDomain", detail=f"not served: {', '.join(domains)}")
    return _soap_answer(envelope, "settings", detail=f"domain settings for {', '.join(known)}")


OPERATIONS: Dict[str, Callable[[SoapRequest], AutodiscoverAnswer]] = {
    "GetUserSettings": _get_user_settings,
    "GetDomainSettings": _get_domain_settings,
}


def _action_not_supported(action: str) -> AutodiscoverAnswer:
    return soap_fault(
        f"The message with Action '{action}' cannot be processed at the receiver, due to a ContractFilter mismatch "
        "at the EndpointDispatcher. This may be because of either a contract mismatch (mismatched Actions between "
        "sender and receiver) or a binding/security mismatch between the sender and the receiver.  Check that "
        "sender and receiver have the same contract and the same binding (including security requirements, e.g. "
        "Message, Transport, None).", error_code="ActionNotSupported")


def respond_soap(org: Org, body: bytes, caller: Optional[Mailbox], urls: SiteUrls, *,
                 auth_package: Optional[str] = None, mapi_http: Optional[bool] = None) -> AutodiscoverAnswer:
    """Answer one POST to /autodiscover/autodiscover.svc. Never raises.

    ``auth_package`` and ``mapi_http`` None: the CAS's ExternalClientAuthenticationMethod and the org's
    MapiHttpEnabled (Set-OutlookAnywhere, Set-OrganizationConfig).

    The operation comes from the wsa:Action header (WCF dispatches on it), else from the body element. A document
    that is not a SOAP 1.1 envelope with one of the two operations is an HTTP 500 fault.
    """
    root = parse_untrusted_xml(body)
    if root is None or root.tag != f"{{{SOAP_NS}}}Envelope":
        return soap_fault("The request is not a well-formed SOAP 1.1 envelope.")
    body_element = root.find(f"{{{SOAP_NS}}}Body")
    payload = next((e for e in body_element if isinstance(e.tag, str)), None) if body_element is not None else None
    header = root.find(f"{{{SOAP_NS}}}Header")
    action = child_text(header, WSA_NS, "Action") if header is not None else ""
    if action:
        if not action.startswith(ACTION_PREFIX) or action[len(ACTION_PREFIX):] not in OPERATIONS:
            return _action_not_supported(action)
        operation = action[len(ACTION_PREFIX):]
    elif payload is not None and payload.tag.startswith(f"{{{ANS}}}") and payload.tag.endswith("RequestMessage"):
        operation = etree.QName(payload).localname[:-len("RequestMessage")]
        if operation not in OPERATIONS:
            return _action_not_supported(ACTION_PREFIX + operation)
    else:
        return soap_fault("The SOAP body holds no Autodiscover request message.")
    if payload is None or payload.tag != f"{{{ANS}}}{operation}RequestMessage":
        return soap_fault(f"The SOAP body does not hold a {operation}RequestMessage.")
    request = payload.find(f"{{{ANS}}}Request")
    if request is None:
        return soap_fault(f"{operation}RequestMessage has no Request element.")
    try:
        mapi = org.mapi_http_enabled if mapi_http is None else mapi_http
        return OPERATIONS[operation](SoapRequest(org, request, caller, urls, auth_package, mapi))
    except Exception as exc:  # an internal fault is answered, never a dropped connection
        return soap_fault(f"The server failed to process the request: {exc!r}", error_code="InternalServerError")
