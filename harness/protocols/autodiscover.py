"""POX Autodiscover (MS-OXDSCLI / MS-OXDISCO), sans-IO: the Outlook 2006a and the EAS mobilesync answers.

It also holds what the SOAP and JSON flavours share: ``MailboxSettings``, the one description of a mailbox that POX
and SOAP both render, so that EXCH/EXPR and GetUserSettings name the same servers, DNs and URLs (the site URLs live in
``siteurls``, re-exported here).
The answer type and the XML plumbing live in ``autodiscover_answer`` (re-exported here); ``POX`` is this flavour.
"""
from __future__ import annotations

import dataclasses
import datetime
import zlib
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, Iterator, List, Optional, Tuple, Union

from lxml import etree

from harness.org import Mailbox, Org, OutlookAnywhere, Server, server_version_hex

# AutodiscoverAnswer, child_text and parse_untrusted_xml are still imported from here by the site and the probe.
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
from harness.protocols.autodiscover_paths import mutate
from harness.protocols.siteurls import SiteUrls as SiteUrls  # re-exported: the probe and tests import it here

RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
OUTLOOK_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
MOBILESYNC_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006"
MOBILESYNC_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"

# MS-OXDSCLI 2.2.4.1.1.3 codes; the texts are the ones Exchange and Gromox send.
POX_ERROR_MESSAGES = {
    500: "The email address can't be found.",
    501: "Bad Address",
    600: "Invalid Request",
    601: "Provider is not available",
    602: "Bad Address",
    603: "Server Error",
}

# ECP deep links Exchange 2013 appends to EcpUrl: (POX element suffix, SOAP setting infix, fragment).
# The SOAP names are Internal/External + "Ecp" + infix + "Url" and "Ecp" + infix + "UrlFragment".
ECP_FRAGMENTS: Tuple[Tuple[str, str, str], ...] = (
    ("um", "Voicemail", "?rfr=olk&p=customize/voicemail.aspx&exsvurl=1&realm={realm}"),
    ("aggr", "EmailSubscriptions", "?rfr=olk&p=personalsettings/EmailSubscriptions.slab&exsvurl=1&realm={realm}"),
    ("mt", "DeliveryReport", "PersonalSettings/DeliveryReport.aspx?rfr=olk&exsvurl=1&IsOWA=<IsOWA>&MsgID=<MsgID>"
                             "&Mbx=<Mbx>&realm={realm}"),
    ("ret", "RetentionPolicyTags", "?rfr=olk&p=organize/retentionpolicytags.slab&exsvurl=1&realm={realm}"),
    ("sms", "TextMessaging", "?rfr=olk&p=sms/textmessaging.slab&exsvurl=1&realm={realm}"),
    ("publish", "Publishing", "customize/calendarpublishing.slab?rfr=olk&exsvurl=1&FldID=<FldID>&realm={realm}"),
    ("photo", "Photo", "PersonalSettings/EditAccount.aspx?rfr=olk&chgPhoto=1&exsvurl=1&realm={realm}"),
    ("tm", "TeamMailbox", "?rfr=olk&ftr=TeamMailbox&exsvurl=1&realm={realm}"),
    ("tmCreating", "TeamMailboxCreating", "?rfr=olk&ftr=TeamMailboxCreating&SPUrl=<SPUrl>&Title=<Title>"
                                          "&SPTMAppUrl=<SPTMAppUrl>&exsvurl=1&realm={realm}"),
    ("tmEditing", "TeamMailboxEditing", "?rfr=olk&ftr=TeamMailboxEditing&Id=<Id>&exsvurl=1&realm={realm}"),
    ("extinstall", "ExtensionInstallation", "Extension/InstalledExtensions.slab?rfr=olk&exsvurl=1&realm={realm}"),
)

# Exchange 2013 defaults: OWA answers Basic + forms inside, forms only outside (RPC/HTTP: the OA settings).
INTERNAL_OWA_AUTH = "Basic, Fba"
EXTERNAL_OWA_AUTH = "Fba"
DEFAULT_CAS_NAME = "EX01"


@dataclass(frozen=True)
class MailboxSettings:
    """What Autodiscover says about one mailbox (POX EXCH/EXPR/WEB blocks and SOAP user settings alike).

    Outlook Anywhere comes from the CAS's Set-OutlookAnywhere settings; ``auth_package`` overrides its
    ExternalClientAuthenticationMethod (None: use it)."""
    org: Org
    mailbox: Mailbox
    urls: SiteUrls
    auth_package: Optional[str] = None
    mapi_http: bool = False

    @property
    def home(self) -> Server:
        return self.org.home(self.mailbox)

    @property
    def legacy(self) -> bool:
        """Homed on Exchange 2007/2010: the 2013 CAS proxies Autodiscover to the legacy CAS, which answers with
        its own server names and version and its own Outlook Anywhere settings (EXPR)."""
        return self.home.is_legacy

    @property
    def outlook_anywhere(self) -> OutlookAnywhere:
        if self.legacy:
            return self.org.outlook_anywhere_of(self.org.legacy_cas_for(self.home).name)
        return self.org.cas_outlook_anywhere

    @property
    def rpc_server(self) -> str:
        """EXCH Server: 2013's per-mailbox name; 2010's RpcClientAccessServer (its CAS's FQDN); 2007's mailbox
        server (Outlook reaches the 2007 store directly)."""
        if not self.legacy:
            return self.personal_server
        return (self.org.legacy_cas_for(self.home) if self.home.major >= 14 else self.home).fqdn

    @property
    def server_version_hex(self) -> str:
        return server_version_hex(self.home.version_parts) if self.legacy else self.org.server_version_hex

    @property
    def mailbox_version(self) -> str:
        return self.home.version if self.legacy else self.org.exchange_version

    @property
    def external_auth_package(self) -> str:
        """EXPR AuthPackage / ExternalMailboxServerAuthenticationMethods."""
        return self.auth_package or self.outlook_anywhere.external_client_auth

    @property
    def external_rpc_host(self) -> str:
        """EXPR Server: a bare name, as Outlook always dials 443 (ExternalHostname)."""
        return self.outlook_anywhere.external_hostname

    @property
    def internal_rpc_host(self) -> str:
        return self.outlook_anywhere.internal_hostname

    @property
    def smtp_domain(self) -> str:
        return self.mailbox.email.split("@", 1)[1]

    @property
    def legacy_dn(self) -> str:
        return self.org.legacy_dn(self.mailbox)

    @property
    def personal_server(self) -> str:
        return self.org.personal_server(self.mailbox)

    @property
    def server_dn(self) -> str:
        return self.org.backend_server_dn(self.home) if self.legacy else self.org.server_dn(self.mailbox)

    @property
    def mdb_dn(self) -> str:
        return f"{self.server_dn}/cn=Microsoft Private MDB" if self.legacy else self.org.mdb_dn(self.mailbox)

    @property
    def mailbox_server_fqdn(self) -> str:
        return self.org.server(self.mailbox.server).fqdn

    @property
    def public_folder_server(self) -> str:
        return self.org.mail_host

    @property
    def cert_principal_name(self) -> str:
        """What Outlook checks the certificate against: the external host, as Exchange derives it."""
        return f"msstd:{self.external_rpc_host}"

    def ecp_fragments(self) -> Iterator[Tuple[str, str, str]]:
        """(POX suffix, SOAP infix, fragment) for every ECP deep link."""
        for suffix, infix, template in ECP_FRAGMENTS:
            yield suffix, infix, template.format(realm=self.smtp_domain)

    def mapi_url(self, endpoint: str) -> str:
        return f"{self.urls.mapi_url}{endpoint}/?MailboxId={self.personal_server}"


def served_domains(org: Org) -> FrozenSet[str]:
    """SMTP domains the org answers Autodiscover for."""
    return frozenset([org.domain] + [m.email.split("@", 1)[1] for m in org.mailboxes])


# ---- builders ------------------------------------------------------------------------------------------------
def _pox_document(response_ns: Optional[str]) -> Tuple[etree._Element, etree._Element]:
    """<Autodiscover><Response/></Autodiscover>; the Response carries its own namespace when the provider has one."""
    root = etree.Element(f"{{{RESPONSE_NS}}}Autodiscover", nsmap={None: RESPONSE_NS})
    if response_ns is None:
        return root, child(root, "Response")
    return root, etree.SubElement(root, f"{{{response_ns}}}Response", nsmap={None: response_ns})


def _pox_answer(root: etree._Element, outcome: str, **fields: Any) -> AutodiscoverAnswer:
    return AutodiscoverAnswer(status=200, body=serialize(root), content_type=XML_CONTENT_TYPE, outcome=outcome,
                              flavour=POX, **fields)


def pox_error(code: int, message: Optional[str] = None, *, server_name: str = DEFAULT_CAS_NAME,
              when: Optional[datetime.datetime] = None) -> AutodiscoverAnswer:
    """The POX Error answer (always HTTP 200). Id is a hash of the CAS name, Time the server's clock, as Exchange."""
    message = POX_ERROR_MESSAGES.get(code, "Server Error") if message is None else message
    when = when or datetime.datetime.now(datetime.timezone.utc)
    root, response = _pox_document(None)
    error = child(response, "Error", Time=when.strftime("%H:%M:%S.%f") + "0",
                  Id=str(zlib.crc32(server_name.lower().encode()) & 0x7FFFFFFF))
    child(error, "ErrorCode", str(code))
    child(error, "Message", message)
    child(error, "DebugData")
    return _pox_answer(root, "error", error_code=str(code), detail=message)


def _pox_redirect(action: str, element: str, target: str) -> AutodiscoverAnswer:
    root, response = _pox_document(OUTLOOK_RESPONSE_NS)
    account = child(response, "Account")
    child(account, "AccountType", "email")
    child(account, "Action", action)
    child(account, element, target)
    return _pox_answer(root, action, detail=f"{action} to {target}")


def pox_redirect_addr(address: str) -> AutodiscoverAnswer:
    """Outlook 2006a redirectAddr: the client restarts discovery with ``address``."""
    return _pox_redirect("redirectAddr", "RedirectAddr", address)


def pox_redirect_url(url: str) -> AutodiscoverAnswer:
    """Outlook 2006a redirectUrl: the client POSTs the same request to ``url``."""
    return _pox_redirect("redirectUrl", "RedirectUrl", url)


def _service_urls(protocol: etree._Element, settings: MailboxSettings) -> None:
    urls = settings.urls
    for tag in ("ASUrl", "EwsUrl", "EmwsUrl"):
        child(protocol, tag, urls.ews_url)
    child(protocol, "EcpUrl", urls.ecp_url)
    for suffix, _infix, fragment in settings.ecp_fragments():
        child(protocol, f"EcpUrl-{suffix}", fragment)
    child(protocol, "OOFUrl", urls.ews_url)
    child(protocol, "UMUrl", urls.um_url)
    child(protocol, "OABUrl", urls.oab_url)


def _web_endpoint(web: etree._Element, where: str, auth: str, protocol_type: str, urls: SiteUrls) -> None:
    block = child(web, where)
    child(block, "OWAUrl", urls.owa_url, AuthenticationMethod=auth)
    protocol = child(block, "Protocol")
    child(protocol, "Type", protocol_type)
    child(protocol, "ASUrl", urls.ews_url)


def _outlook_settings(settings: MailboxSettings) -> etree._Element:
    mailbox, org = settings.mailbox, settings.org
    root, response = _pox_document(OUTLOOK_RESPONSE_NS)
    user = child(response, "User")
    child(user, "DisplayName", mailbox.display_name)
    child(user, "LegacyDN", settings.legacy_dn)
    child(user, "AutoDiscoverSMTPAddress", mailbox.email)
    child(user, "DeploymentId", org.deployment_id)
    account = child(response, "Account")
    child(account, "AccountType", "email")
    child(account, "Action", "settings")
    child(account, "MicrosoftOnline", "False")

    exch = child(account, "Protocol")
    child(exch, "Type", "EXCH")
    child(exch, "Server", settings.rpc_server)
    child(exch, "ServerDN", settings.server_dn)
    child(exch, "ServerVersion", settings.server_version_hex)
    child(exch, "MdbDN", settings.mdb_dn)
    child(exch, "PublicFolderServer", settings.public_folder_server)
    _service_urls(exch, settings)
    child(exch, "ServerExclusiveConnect", "off")

    if settings.external_rpc_host:   # no ExternalHostname: Exchange leaves EXPR out
        expr = child(account, "Protocol")
        child(expr, "Type", "EXPR")
        child(expr, "Server", settings.external_rpc_host)
        child(expr, "SSL", "On" if settings.outlook_anywhere.external_requires_ssl else "Off")
        child(expr, "AuthPackage", settings.external_auth_package)
        child(expr, "CertPrincipalName", settings.cert_principal_name)
        child(expr, "ServerExclusiveConnect", "on")
        _service_urls(expr, settings)

    web = child(account, "Protocol")
    child(web, "Type", "WEB")
    _web_endpoint(web, "Internal", INTERNAL_OWA_AUTH, "EXCH", settings.urls)
    _web_endpoint(web, "External", EXTERNAL_OWA_AUTH, "EXPR", settings.urls)

    if settings.mapi_http and not settings.legacy:   # 2007/2010 have no MAPI over HTTP
        mapi = child(account, "Protocol", Type="mapiHttp", Version="1")
        for block, endpoint in (("MailStore", "emsmdb"), ("AddressBook", "nspi")):
            element = child(mapi, block)
            child(element, "InternalUrl", settings.mapi_url(endpoint))
            child(element, "ExternalUrl", settings.mapi_url(endpoint))
    return root


def _mobilesync_settings(settings: MailboxSettings) -> etree._Element:
    root, response = _pox_document(MOBILESYNC_RESPONSE_NS)
    child(response, "Culture", "en:us")
    user = child(response, "User")
    child(user, "DisplayName", settings.mailbox.display_name)
    child(user, "EMailAddress", settings.mailbox.email)
    server = child(child(child(response, "Action"), "Settings"), "Server")
    child(server, "Type", "MobileSync")
    child(server, "Url", settings.urls.activesync_url)
    child(server, "Name", settings.urls.activesync_url)
    return root


RESPONSE_RENDERERS = {OUTLOOK_RESPONSE_NS: _outlook_settings, MOBILESYNC_RESPONSE_NS: _mobilesync_settings}
REQUEST_NAMESPACES = (OUTLOOK_REQUEST_NS, MOBILESYNC_REQUEST_NS)


# ---- the POX flavour: how faults refuse, redirect and edit POX answers --------------------------------------
# A provider answering in the wrong schema (autodiscover.wrong-schema): each response namespace and the other one.
OTHER_SCHEMA: Dict[str, str] = {OUTLOOK_RESPONSE_NS: MOBILESYNC_RESPONSE_NS,
                                MOBILESYNC_RESPONSE_NS: OUTLOOK_RESPONSE_NS}


def _account_protocols(document: etree._Element, protocol_type: str) -> List[etree._Element]:
    """The Account's Protocol blocks of this Type (EXCH, EXPR, WEB, mapiHttp), not the ones nested in WEB."""
    ns = OUTLOOK_RESPONSE_NS
    return [p for p in document.findall(f"{{{ns}}}Response/{{{ns}}}Account/{{{ns}}}Protocol")
            if (p.get("Type") or child_text(p, ns, "Type")) == protocol_type]


def _elements_at(document: etree._Element, path: str) -> List[etree._Element]:
    """What a SettingsEdit ``drop`` path names: "EXPR" the EXPR Protocol blocks, "EXPR/EwsUrl" their EwsUrls."""
    protocol_type, _, name = path.partition("/")
    protocols = _account_protocols(document, protocol_type)
    return protocols if not name else [e for p in protocols for e in p if etree.QName(e).localname == name]


class PoxFlavour(Flavour):
    """Refusals are Error answers, redirects Account Action answers; edits act on the Outlook Account."""
    editable = True

    def refusal(self, pox_code: int) -> AutodiscoverAnswer:
        return pox_error(pox_code)

    def redirect(self, action: str, target: str) -> AutodiscoverAnswer:
        return pox_redirect_url(target) if action == "redirectUrl" else pox_redirect_addr(target)

    def edit_settings(self, document: etree._Element, edit: SettingsEdit) -> bool:
        doomed = [element for path in edit.drop for element in _elements_at(document, path)]
        for element in doomed:
            element.getparent().remove(element)
        mutated = [mutate(document, path, action, value) for path, action, value in edit.mutate]
        return bool(doomed) or any(mutated)

    def swap_schema(self, document: etree._Element) -> Optional[str]:
        response = next((e for e in document if etree.QName(e).namespace in OTHER_SCHEMA), None)
        if response is None:
            return None
        other = OTHER_SCHEMA[etree.QName(response).namespace]
        for element in response.iter():
            element.tag = f"{{{other}}}{etree.QName(element).localname}"
        etree.cleanup_namespaces(document, top_nsmap={None: RESPONSE_NS})
        return other


POX = PoxFlavour("pox")


# ---- the POX endpoint -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoxRequest:
    """What a well-formed POX request asks: the request schema's namespace, the address or legacy DN (stripped;
    "" when absent) and the AcceptableResponseSchema, one of RESPONSE_RENDERERS."""
    namespace: str
    email: str
    legacy_dn: str
    schema: str


PoxRefusal = Tuple[int, str]   # (POX ErrorCode, why): a request body respond_pox refuses whoever sends it

# Parsed request bodies by their bytes: a client asks the same few questions over and over, and parsing one
# costs more than the rest of the answer. Bounded (bodies come from clients): the oldest entry makes room.
_REQUESTS: Dict[bytes, Union[PoxRequest, PoxRefusal]] = {}
MAX_REMEMBERED_REQUESTS = 256
MAX_REMEMBERED_BODY = 4096


def read_pox_request(body: bytes) -> Union[PoxRequest, PoxRefusal]:
    """The request a POX body makes, or why it is refused (the same bytes always read the same)."""
    if type(body) is not bytes:   # only bytes are remembered (hashable, immutable)
        return _read_pox_request(body)
    known = _REQUESTS.get(body)
    if known is not None:
        return known
    read = _read_pox_request(body)
    if len(body) <= MAX_REMEMBERED_BODY:
        _remember(_REQUESTS, body, read, MAX_REMEMBERED_REQUESTS)
    return read


def _remember(memo: Dict[Any, Any], key: Any, value: Any, limit: int) -> None:
    """memo[key] = value, the oldest entry dropped first when the memo is full."""
    if len(memo) >= limit:
        try:
            memo.pop(next(iter(memo)), None)
        except (StopIteration, RuntimeError):   # emptied or changed meanwhile by another thread: nothing to drop
            pass
    memo[key] = value


def _read_pox_request(body: bytes) -> Union[PoxRequest, PoxRefusal]:
    root = parse_untrusted_xml(body)
    if root is None:
        return 600, "the body is not one well-formed XML document without a DTD"
    name = etree.QName(root)
    if name.localname != "Autodiscover" or name.namespace not in REQUEST_NAMESPACES:
        return 600, f"the root element {root.tag} is not an Autodiscover request"
    request = root.find(f"{{{name.namespace}}}Request")
    if request is None:
        return 600, "no Request element"
    email = child_text(request, name.namespace, "EMailAddress")
    legacy_dn = child_text(request, name.namespace, "LegacyDN")
    if email and "@" not in email:
        return 600, f"EMailAddress {email!r} is not an e-mail address"
    if not (email or legacy_dn):
        return 600, "neither EMailAddress nor LegacyDN was given"
    schema = child_text(request, name.namespace, "AcceptableResponseSchema")
    if schema not in RESPONSE_RENDERERS:
        return 601, f"no provider for AcceptableResponseSchema {schema!r}"
    return PoxRequest(name.namespace, email, legacy_dn, schema)


def respond_pox(org: Org, body: bytes, caller: Optional[Mailbox], urls: SiteUrls, *, mapi_http: bool = False,
                auth_package: Optional[str] = None, method: str = "POST") -> AutodiscoverAnswer:
    """Answer one POST to /autodiscover/autodiscover.xml. Never raises: every failure is a POX Error (HTTP 200).

    ``mapi_http`` is set when the client sent X-MapiHttpCapability and the org has MAPI over HTTP enabled
    (Exchange 2013 SP1 then adds the mapiHttp block). ``auth_package`` None: the CAS's
    ExternalClientAuthenticationMethod. Any authenticated caller may ask about any mailbox, as Outlook does for
    additional mailboxes.
    """
    def fail(code: int, why: str) -> AutodiscoverAnswer:
        return dataclasses.replace(pox_error(code, server_name=org.cas.name), detail=why)

    if method != "POST" and method.upper() != "POST":
        return fail(600, f"{method} is not an Autodiscover request (POST only)")
    request = read_pox_request(body)
    if not isinstance(request, PoxRequest):
        return fail(*request)
    wanted = request.email or request.legacy_dn
    mailbox = org.find(wanted)
    if mailbox is None:
        return fail(500, f"{wanted!r} is not a mailbox of {org.domain}")
    try:
        body = _settings_body(request.schema, org, mailbox, urls, auth_package, mapi_http)
    except Exception as exc:  # an internal fault becomes Exchange's 603, never a dropped connection
        return dataclasses.replace(fail(603, f"rendering settings failed: {exc!r}"), mailbox=mailbox)
    asker = f" (asked by {caller.email})" if caller is not None and caller is not mailbox and caller != mailbox \
        else ""
    return AutodiscoverAnswer(200, body, XML_CONTENT_TYPE, "settings", "", f"settings for {mailbox.email}{asker}",
                              mailbox, flavour=POX)


# Rendered settings documents: one mailbox's is the same bytes every time (Outlook asks often). Keyed by what the
# document depends on (the org by identity, its mailboxes immutable); an entry holds its mailbox, so the id in its
# key names that very object.
_SETTINGS: Dict[Tuple[Any, ...], Tuple[Mailbox, bytes]] = {}
MAX_REMEMBERED_SETTINGS = 1024


def _settings_body(schema: str, org: Org, mailbox: Mailbox, urls: SiteUrls, auth_package: Optional[str],
                   mapi_http: bool) -> bytes:
    renderer = RESPONSE_RENDERERS[schema]
    key = (renderer, org, id(mailbox), urls, auth_package, mapi_http)
    known = _SETTINGS.get(key)
    if known is not None and known[0] is mailbox:
        return known[1]
    settings = MailboxSettings(org, mailbox, urls, auth_package=auth_package, mapi_http=mapi_http)
    body = serialize(renderer(settings))
    _remember(_SETTINGS, key, (mailbox, body), MAX_REMEMBERED_SETTINGS)
    return body
