"""The emulated Exchange organisation: domain, CAS names, servers, mailboxes and the names derived from them.

Everything a protocol renders (POX, SOAP, NTLM target info, NSPI rows, RPC proxy targets) comes from one Org so
the names stay consistent, as Outlook and ExRCA cross-check them (Server GUID vs MailboxId vs RPC proxy target).
"""
from __future__ import annotations

import dataclasses
import os
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from harness.paths import data_dir
from harness.yamlfile import Reader, SpecError, closest, load_file

ADMIN_GROUP = "Exchange Administrative Group (FYDIBOHF23SPDLT)"
DEFAULT_ORG_DIR = os.path.join(data_dir("fixtures"), "contoso.test")
MAILBOX_KINDS = ("user", "room", "equipment", "shared")
SERVER_ROLES = ("Mailbox", "ClientAccess")
KNOWN_ROLES = ("Mailbox", "ClientAccess", "HubTransport", "UnifiedMessaging")   # 2007/2010 had four
# Set-OutlookAnywhere's value sets: the client methods Outlook may be told to use, and the IIS methods of /rpc.
CLIENT_AUTH_METHODS = ("Basic", "Ntlm", "Negotiate")
IIS_AUTH_METHODS = ("Basic", "Ntlm", "Negotiate")
LEGACY_CLIENT_AUTH_METHODS = ("Basic", "Ntlm")   # Exchange 2007/2010's ClientAuthenticationMethod


@dataclass(frozen=True)
class Server:
    name: str          # NetBIOS name, e.g. EX01
    fqdn: str          # ex01.contoso.test
    site: str = "Default-First-Site-Name"
    version: str = "15.0.1497.2"            # AdminDisplayVersion's build: 15.x 2013, 14.x 2010, 8.x 2007
    roles: Tuple[str, ...] = SERVER_ROLES

    @property
    def major(self) -> int:
        return int(self.version.split(".", 1)[0])

    @property
    def is_legacy(self) -> bool:
        """Exchange 2010 or 2007: Outlook Anywhere is off until Enable-OutlookAnywhere, one client method."""
        return self.major < 15

    @property
    def is_client_access(self) -> bool:
        return "ClientAccess" in self.roles

    @property
    def version_parts(self) -> tuple:
        return _version_parts(self.version)


@dataclass(frozen=True)
class OutlookAnywhere:
    """One Client Access server's /rpc virtual directory, in Set-OutlookAnywhere's parameter names.

    The loader's defaults are the answers mockex has always given (see docs/org.md for where a fresh Exchange 2013
    install differs). Exchange 2007/2010 servers use ``enabled`` and ``client_auth`` (ClientAuthenticationMethod)
    for both directions."""
    server: str
    external_hostname: str            # "" ($null): no Outlook Anywhere from outside (Autodiscover has no EXPR)
    internal_hostname: str
    external_client_auth: str = "Negotiate"      # ExternalClientAuthenticationMethod (EXPR AuthPackage)
    internal_client_auth: str = "Ntlm"           # InternalClientAuthenticationMethod
    iis_auth: Tuple[str, ...] = IIS_AUTH_METHODS  # IISAuthenticationMethods: what /rpc offers
    ssl_offloading: bool = False                 # SSLOffloading
    external_requires_ssl: bool = True           # ExternalClientsRequireSsl (EXPR SSL On/Off)
    internal_requires_ssl: bool = True           # InternalClientsRequireSsl
    enabled: bool = True                         # always on in 2013; Enable-OutlookAnywhere on 2007/2010


@dataclass(frozen=True)
class Mailbox:
    username: str              # sAMAccountName
    display_name: str
    email: str                 # primary SMTP address
    password: str
    guid: str                  # mailbox GUID (lower-case, dashed)
    server: str                # NetBIOS name of the home mailbox server
    kind: str = "user"
    title: str = ""
    department: str = ""
    phone: str = ""
    office: str = ""
    aliases: tuple = ()
    locked: bool = False
    password_expired: bool = False
    impersonates: tuple = ()   # addresses it may act as over EWS (ApplicationImpersonation); "*": every mailbox

    @property
    def alias(self) -> str:
        return self.email.split("@", 1)[0]


@dataclass(frozen=True)
class DistributionGroup:
    """A mail-enabled distribution group (ExpandDL, ResolveNames); kept apart from `mailboxes`, so the GAL over NSPI
    and every mailbox count stay as they were."""
    display_name: str
    email: str
    members: Tuple[str, ...]     # member addresses, each a mailbox of the org

    @property
    def alias(self) -> str:
        return self.email.split("@", 1)[0]


@dataclass(eq=False)  # identity: an org is one running organisation (and hashable, for render caches)
class Org:
    name: str
    domain: str
    netbios_domain: str
    ad_domain: str
    mail_host: str
    autodiscover_host: str
    exchange_version: str
    deployment_id: str
    servers: List[Server]
    mailboxes: List[Mailbox]
    cas_server: str
    outlook_anywhere: Dict[str, OutlookAnywhere] = field(default_factory=dict)   # by server name, every CAS
    mapi_http_enabled: bool = False      # Set-OrganizationConfig -MapiHttpEnabled
    groups: List[DistributionGroup] = field(default_factory=list)
    source: str = ""
    _by_key: Dict[str, Mailbox] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for mailbox in self.mailboxes:
            for key in (mailbox.email, mailbox.username, f"{mailbox.username}@{self.domain}",
                        f"{mailbox.username}@{self.ad_domain}", *mailbox.aliases):
                self._by_key.setdefault(key.lower(), mailbox)

    # ---- lookups -------------------------------------------------------------------------------------------
    def find(self, name: str) -> Optional[Mailbox]:
        """Mailbox by SMTP address, UPN, sAMAccountName, DOMAIN\\user, or legacy DN."""
        if not name:
            return None
        key = name.strip().lower()
        if key.startswith("smtp:"):
            key = key[5:]
        if "\\" in key:
            key = key.split("\\", 1)[1]
        if key.startswith("/o="):
            return next((m for m in self.mailboxes if self.legacy_dn(m).lower() == key), None)
        return self._by_key.get(key)

    def find_by_guid(self, guid: str) -> Optional[Mailbox]:
        guid = guid.lower()
        return next((m for m in self.mailboxes if m.guid == guid), None)

    def server(self, name: str) -> Server:
        return next(s for s in self.servers if s.name.lower() == name.lower())

    @property
    def cas(self) -> Server:
        return self.server(self.cas_server)

    def outlook_anywhere_of(self, server: str) -> OutlookAnywhere:
        """The Outlook Anywhere settings of a Client Access server (the loader's defaults when none were given)."""
        found = self.outlook_anywhere.get(self.server(server).name)
        return found if found is not None else default_outlook_anywhere(self, self.server(server))

    @property
    def cas_outlook_anywhere(self) -> OutlookAnywhere:
        """The settings the site serves: those of the CAS clients reach."""
        return self.outlook_anywhere_of(self.cas_server)

    @property
    def hostnames(self) -> List[str]:
        """Every DNS name the CAS answers for (certificate SANs, DNS A records)."""
        names = [self.domain, self.autodiscover_host, self.mail_host]
        names += [s.fqdn for s in self.servers]
        return list(dict.fromkeys(n.lower() for n in names))

    # ---- Exchange names ------------------------------------------------------------------------------------
    @property
    def org_dn(self) -> str:
        return f"/o={self.name}/ou={ADMIN_GROUP}"

    def legacy_dn(self, mailbox: Mailbox) -> str:
        return f"{self.org_dn}/cn=Recipients/cn={mailbox.guid.replace('-', '')}-{mailbox.alias}"

    def personal_server(self, mailbox: Mailbox) -> str:
        """Exchange 2013's per-mailbox 'server' name: <mailbox GUID>@<primary SMTP domain>."""
        return f"{mailbox.guid}@{mailbox.email.split('@', 1)[1]}"

    def server_dn(self, mailbox: Mailbox) -> str:
        return f"{self.org_dn}/cn=Configuration/cn=Servers/cn={self.personal_server(mailbox)}"

    def mdb_dn(self, mailbox: Mailbox) -> str:
        return f"{self.server_dn(mailbox)}/cn=Microsoft Private MDB"

    def backend_server_dn(self, server: Server) -> str:
        return f"{self.org_dn}/cn=Configuration/cn=Servers/cn={server.name}"

    @property
    def version_parts(self) -> tuple:
        return _version_parts(self.exchange_version)

    @property
    def server_version_hex(self) -> str:
        return server_version_hex(self.version_parts)

    # ---- coexistence with Exchange 2007/2010 ---------------------------------------------------------------
    def home(self, mailbox: Mailbox) -> Server:
        return self.server(mailbox.server)

    def is_legacy_homed(self, mailbox: Mailbox) -> bool:
        """On an Exchange 2007/2010 server: the 2013 CAS proxies its Outlook Anywhere traffic to a legacy CAS."""
        return self.home(mailbox).is_legacy

    def legacy_cas_for(self, server: Server) -> Server:
        """The legacy Client Access server the 2013 CAS proxies to for a mailbox on ``server``: the server itself
        when it has the role, else the first Client Access server of the same major version."""
        if server.is_client_access:
            return server
        return next((s for s in self.servers if s.is_client_access and s.major == server.major), server)

    def legacy_proxy_problem(self, server: Server) -> Optional[str]:
        """Which documented coexistence requirement on the legacy CAS for ``server`` the 2013 CAS's proxying
        runs into: "disabled" (Outlook Anywhere not enabled there), "no-ntlm" (NTLM missing from its
        IISAuthenticationMethods: the 2013 CAS authenticates to it with NTLM), or None."""
        cas = self.legacy_cas_for(server)
        if not cas.is_client_access:
            return "disabled"
        settings = self.outlook_anywhere_of(cas.name)
        if not settings.enabled:
            return "disabled"
        if "Ntlm" not in settings.iis_auth:
            return "no-ntlm"
        return None

    def rpc_target_server(self, name: str) -> Optional[Server]:
        """The server an RPC proxy target names: a server by NetBIOS name or FQDN, or a mailbox's home server."""
        name = name.lower()
        found = next((s for s in self.servers if name in (s.name.lower(), s.fqdn.lower())), None)
        if found is None and "@" in name:
            mailbox = self.find_by_guid(name.partition("@")[0])
            found = self.home(mailbox) if mailbox is not None else None
        return found

    def is_rpc_target(self, name: str) -> bool:
        """Names the RPC proxy accepts as a back end: mailbox GUID@domain, CAS/mailbox server NetBIOS or FQDN."""
        name = name.lower()
        if any(name in (s.name.lower(), s.fqdn.lower()) for s in self.servers):
            return True
        if "@" in name:
            guid, _, domain = name.partition("@")
            mailbox = self.find_by_guid(guid)
            return mailbox is not None and mailbox.email.lower().endswith("@" + domain)
        return False


def _version_parts(version: str) -> tuple:
    parts = [int(p) for p in version.split(".")]
    return tuple(parts + [0] * (4 - len(parts)))[:4]


def server_version_hex(parts: tuple) -> str:
    """POX ServerVersion: 0x70008000 | major<<22 | minor<<16 | build (as Exchange and Gromox pack it)."""
    major, minor, build, _ = parts
    return "%08X" % (0x70008000 | (major & 0x3F) << 22 | (minor & 0x3F) << 16 | (build & 0x7FFF))


# ---- loading ------------------------------------------------------------------------------------------------
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_NETBIOS = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,14}$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+(\.\d+)?$")


def _check(reader: Reader, key: str, pattern: re.Pattern, what: str, value: str) -> str:
    if not pattern.match(value):
        raise reader.error(key, f"{value!r} is not {what}")
    return value


def load_org(path: str = DEFAULT_ORG_DIR) -> Org:
    """Load an org from a directory holding org.yaml (or from the file itself)."""
    file = os.path.join(path, "org.yaml") if os.path.isdir(path) else path
    data = load_file(file)
    top = Reader(data, file)
    top.only(["org", "servers", "outlook_anywhere", "mapi_http", "mailboxes", "distribution_groups"])
    org_r = top.sub("org")
    org_r.only(["name", "domain", "netbios_domain", "ad_domain", "mail_host", "autodiscover_host",
                "exchange_version", "deployment_id", "cas_server"])
    domain = _check(org_r, "domain", _HOST, "a DNS domain name", org_r.get("domain", str).lower())
    values = dict(
        name=org_r.get("name", str),
        domain=domain,
        netbios_domain=_check(org_r, "netbios_domain", _NETBIOS, "a NetBIOS name (A-Z, 0-9, -, ≤15)",
                              org_r.get("netbios_domain", str, domain.split(".")[0].upper())),
        ad_domain=org_r.get("ad_domain", str, domain).lower(),
        mail_host=_check(org_r, "mail_host", _HOST, "a host name",
                         org_r.get("mail_host", str, f"mail.{domain}").lower()),
        autodiscover_host=_check(org_r, "autodiscover_host", _HOST, "a host name",
                                 org_r.get("autodiscover_host", str, f"autodiscover.{domain}").lower()),
        exchange_version=_check(org_r, "exchange_version", _VERSION, "a dotted build like 15.0.1497.2",
                                str(org_r.get("exchange_version", str, "15.0.1497.2"))),
        deployment_id=_check(org_r, "deployment_id", _GUID, "a lower-case GUID",
                             org_r.get("deployment_id", str, str(uuid.uuid5(uuid.NAMESPACE_DNS, domain)))),
    )
    servers = []
    for item, name, line in top.items("servers"):
        srv = Reader(item, file, name, line)
        srv.only(["name", "fqdn", "site", "version", "roles"])
        server_name = _check(srv, "name", _NETBIOS, "a NetBIOS name", srv.get("name", str))
        roles = [str(role) for role in srv.get("roles", list, list(SERVER_ROLES))]
        for role in roles:
            if role not in KNOWN_ROLES:
                raise srv.error("roles", f"{role!r} is not a server role", closest(role, KNOWN_ROLES))
        servers.append(Server(name=server_name,
                              fqdn=_check(srv, "fqdn", _HOST, "a host name",
                                          srv.get("fqdn", str, f"{server_name}.{values['ad_domain']}").lower()),
                              site=srv.get("site", str, "Default-First-Site-Name"),
                              version=_check(srv, "version", _VERSION, "a dotted build like 15.0.1497.2",
                                             str(srv.get("version", str, values["exchange_version"]))),
                              roles=tuple(dict.fromkeys(roles))))
    if not servers:
        raise top.error("servers", "at least one server is required")
    server_names = [s.name for s in servers]
    cas_server = org_r.get("cas_server", str, servers[0].name)
    if cas_server not in server_names:
        raise org_r.error("cas_server", f"{cas_server!r} is not one of the servers",
                          "allowed: " + ", ".join(server_names))
    by_name = {s.name: s for s in servers}
    if not by_name[cas_server].is_client_access:
        raise org_r.error("cas_server", f"{cas_server!r} does not have the ClientAccess role")
    outlook_anywhere = _load_outlook_anywhere(top, by_name, lambda server: _default_oa(server, values["mail_host"]))
    mapi_http_enabled = _load_mapi_http(top, False)

    mailboxes: List[Mailbox] = []
    grants: List[Reader] = []
    seen: Dict[str, str] = {}
    for item, name, line in top.items("mailboxes"):
        mb = Reader(item, file, name, line)
        mb.only(["username", "display_name", "email", "password", "guid", "server", "kind", "title", "department",
                 "phone", "office", "aliases", "locked", "password_expired", "impersonates"])
        email = mb.get("email", str).lower()
        if "@" not in email:
            raise mb.error("email", f"{email!r} is not an e-mail address")
        username = mb.get("username", str, email.split("@")[0])
        for key in (email, username.lower()):
            if key in seen:
                raise mb.error("email", f"{key!r} is used twice (also in {seen[key]})")
            seen[key] = name
        mailbox = Mailbox(
            username=username, display_name=mb.get("display_name", str), email=email,
            password=str(mb.get("password", (str, int))),
            guid=_check(mb, "guid", _GUID, "a lower-case GUID",
                        mb.get("guid", str, str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailbox:{email}")))),
            server=mb.get("server", str, servers[0].name, choices=server_names),
            kind=mb.get("kind", str, "user", choices=MAILBOX_KINDS),
            title=mb.get("title", str, ""), department=mb.get("department", str, ""),
            phone=str(mb.get("phone", (str, int), "")), office=mb.get("office", str, ""),
            aliases=tuple(a.lower() for a in mb.get("aliases", list, [])),
            locked=mb.get("locked", bool, False), password_expired=mb.get("password_expired", bool, False),
            impersonates=tuple(str(a).lower() for a in mb.get("impersonates", list, [])),
        )
        mailboxes.append(mailbox)
        grants.append(mb)
    if not mailboxes:
        raise top.error("mailboxes", "at least one mailbox is required")
    emails = [m.email for m in mailboxes]
    for mailbox, mb in zip(mailboxes, grants):
        for address in mailbox.impersonates:
            if address != "*" and address not in emails:
                raise mb.error("impersonates", f"{address!r} is not a mailbox of the org", closest(address, emails))
    return Org(servers=servers, mailboxes=mailboxes, cas_server=cas_server, outlook_anywhere=outlook_anywhere,
               mapi_http_enabled=mapi_http_enabled, groups=_load_groups(top, file, emails), source=file, **values)


def _load_groups(top: Reader, file: str, emails: List[str]) -> List[DistributionGroup]:
    groups: List[DistributionGroup] = []
    for item, name, line in top.items("distribution_groups", []):
        group = Reader(item, file, name, line)
        group.only(["display_name", "email", "members"])
        email = group.get("email", str).lower()
        if "@" not in email or email in emails or email in (g.email for g in groups):
            raise group.error("email", f"{email!r} is not a new e-mail address of the org")
        members = tuple(str(m).lower() for m in group.get("members", list, []))
        for member in members:
            if member not in emails:
                raise group.error("members", f"{member!r} is not a mailbox of the org", closest(member, emails))
        groups.append(DistributionGroup(group.get("display_name", str, email.split("@")[0]), email, members))
    return groups


# Set-OutlookAnywhere's parameters per version; a parameter of the other version is named as such.
OA_2013_FIELDS = ("ExternalHostname", "InternalHostname", "ExternalClientAuthenticationMethod",
                  "InternalClientAuthenticationMethod", "IISAuthenticationMethods", "SSLOffloading",
                  "ExternalClientsRequireSsl", "InternalClientsRequireSsl")
OA_LEGACY_FIELDS = ("Enabled", "ExternalHostname", "ClientAuthenticationMethod", "IISAuthenticationMethods",
                    "SSLOffloading")


def default_outlook_anywhere(org: "Org", server: Server) -> OutlookAnywhere:
    return _default_oa(server, org.mail_host)


def _default_oa(server: Server, mail_host: str) -> OutlookAnywhere:
    if server.is_legacy:   # 2007/2010: off until enabled, Basic as Enable-OutlookAnywhere's usual choice
        return OutlookAnywhere(server.name, mail_host, mail_host, "Basic", "Basic", ("Basic",), enabled=False)
    return OutlookAnywhere(server.name, mail_host, mail_host)


def _method(reader: Reader, key: str, allowed: tuple, default: str) -> str:
    """An AuthenticationMethod value: case-insensitive as PowerShell's enum parsing, kept in Exchange's spelling."""
    value = reader.get(key, str, default)
    match = next((m for m in allowed if m.lower() == value.lower()), None)
    if match is None:
        raise reader.error(key, f"{value!r} is not allowed", closest(value, allowed))
    return match


def with_config(org: Org, data: Any, path: str, field: str = "config") -> Org:
    """The org with ``outlook_anywhere`` / ``mapi_http`` settings of ``data`` (a YAML mapping, as in org.yaml)
    laid over its own: the seam for a scenario's ``config:``. Errors name ``path``, the line and the field."""
    config = Reader(data, path, field, getattr(data, "line", 0))
    config.only(["outlook_anywhere", "mapi_http"])
    servers = {s.name: s for s in org.servers}
    changed = _load_outlook_anywhere(config, servers, lambda server: org.outlook_anywhere_of(server.name))
    return dataclasses.replace(org, outlook_anywhere={**org.outlook_anywhere, **changed},
                               mapi_http_enabled=_load_mapi_http(config, org.mapi_http_enabled), _by_key={})


LEGACY_ONLY_FIELDS = tuple(f for f in OA_LEGACY_FIELDS if f not in OA_2013_FIELDS)


def check_config(data: Any, path: str, field: str = "config") -> None:
    """Check ``data`` as ``with_config`` would, before any org is known (a scenario file read on its own): each
    server it names stands in as a Client Access server of the version its parameters belong to. What depends on
    the org (is the server there, is it a CAS of that version) is checked when the settings are laid over it."""
    config = Reader(data, path, field, getattr(data, "line", 0))
    config.only(["outlook_anywhere", "mapi_http"])
    section = config.sub("outlook_anywhere", {})
    servers = []
    for name in section.mapping:
        oa = section.sub(str(name))
        keys = [str(key) for key in oa.mapping]
        legacy = [key for key in keys if key in LEGACY_ONLY_FIELDS]
        modern = [key for key in keys if key in OA_2013_FIELDS and key not in OA_LEGACY_FIELDS]
        if legacy and modern:
            raise oa.error(modern[0], f"mixes Exchange 2013 parameters ({', '.join(modern)}) with Exchange "
                                      f"2007/2010 ones ({', '.join(legacy)})")
        servers.append(Server(str(name), f"{str(name).lower()}.stand-in.test",
                              version="14.3.123.4" if legacy else "15.0.1497.2"))
    stand_in = Org(name="stand-in", domain="stand-in.test", netbios_domain="STAND-IN", ad_domain="stand-in.test",
                   mail_host="mail.stand-in.test", autodiscover_host="autodiscover.stand-in.test",
                   exchange_version="15.0.1497.2", deployment_id=str(uuid.UUID(int=0)), servers=servers,
                   mailboxes=[], cas_server=servers[0].name if servers else "")
    with_config(stand_in, data, path, field)


def _load_mapi_http(top: Reader, default: bool) -> bool:
    section = top.sub("mapi_http", {})
    section.only(["Enabled"])
    return section.get("Enabled", bool, default)


def _load_outlook_anywhere(top: Reader, servers: Dict[str, Server],
                           base_of: Callable[[Server], OutlookAnywhere]) -> Dict[str, OutlookAnywhere]:
    section = top.sub("outlook_anywhere", {})
    result: Dict[str, OutlookAnywhere] = {}
    for name in section.mapping:
        server = servers.get(str(name))
        if server is None:
            raise section.error(str(name), "not one of the servers", closest(str(name), servers))
        if not server.is_client_access:
            raise section.error(str(name), f"{name} does not have the ClientAccess role (Outlook Anywhere is a "
                                           f"Client Access setting)")
        oa = section.sub(str(name))
        fields, other = (OA_LEGACY_FIELDS, OA_2013_FIELDS) if server.is_legacy else (OA_2013_FIELDS, OA_LEGACY_FIELDS)
        for key in oa.mapping:
            if key not in fields:
                version = f"Exchange {'2013' if not server.is_legacy else '2007/2010'} ({server.version})"
                why = (f"not a Set-OutlookAnywhere parameter of {version}" if key in other else "unknown field")
                raise oa.error(str(key), why, closest(str(key), fields))
        base = base_of(server)

        def host(key: str, default: str, oa: Reader = oa, server: Server = server) -> str:
            if key == "ExternalHostname" and not server.is_legacy and oa.mapping.get(key, default) in (None, ""):
                return ""   # $null, as a fresh 2013 install has it: Autodiscover then publishes no EXPR
            return _check(oa, key, _HOST, "a host name", oa.get(key, str, default).lower())
        iis = [str(m) for m in oa.get("IISAuthenticationMethods", list, list(base.iis_auth))]
        canonical = []
        for method in iis:
            match = next((m for m in IIS_AUTH_METHODS if m.lower() == method.lower()), None)
            if match is None:
                raise oa.error("IISAuthenticationMethods", f"{method!r} is not allowed",
                               closest(method, IIS_AUTH_METHODS))
            canonical.append(match)
        if not canonical:
            raise oa.error("IISAuthenticationMethods", "at least one method is required",
                           "allowed: " + ", ".join(IIS_AUTH_METHODS))
        if server.is_legacy:
            method = _method(oa, "ClientAuthenticationMethod", LEGACY_CLIENT_AUTH_METHODS, base.external_client_auth)
            external_auth = internal_auth = method
            internal_host = external_host = host("ExternalHostname", base.external_hostname)
            external_ssl = internal_ssl = True
            enabled = oa.get("Enabled", bool, base.enabled)
        else:
            external_host = host("ExternalHostname", base.external_hostname)
            internal_host = host("InternalHostname", base.internal_hostname)
            external_auth = _method(oa, "ExternalClientAuthenticationMethod", CLIENT_AUTH_METHODS,
                                    base.external_client_auth)
            internal_auth = _method(oa, "InternalClientAuthenticationMethod", CLIENT_AUTH_METHODS,
                                    base.internal_client_auth)
            external_ssl = oa.get("ExternalClientsRequireSsl", bool, base.external_requires_ssl)
            internal_ssl = oa.get("InternalClientsRequireSsl", bool, base.internal_requires_ssl)
            enabled = True
        result[server.name] = OutlookAnywhere(
            server.name, external_host, internal_host, external_auth, internal_auth, tuple(dict.fromkeys(canonical)),
            ssl_offloading=oa.get("SSLOffloading", bool, base.ssl_offloading), external_requires_ssl=external_ssl,
            internal_requires_ssl=internal_ssl, enabled=enabled)
    return result


__all__ = ["Org", "Mailbox", "Server", "OutlookAnywhere", "load_org", "with_config", "check_config", "SpecError",
           "DEFAULT_ORG_DIR"]
