"""The org as the Exchange Management Shell shows it, sans-IO: ``Get-OutlookAnywhere | fl`` and
``Get-ExchangeServer | fl`` (property names, value formatting and the ``Format-List`` layout PowerShell prints), so
that an admin reads the fixture in the terms they use on a real server. Volatile properties (RunspaceId, Guid,
WhenChanged) are left out: the same fixture prints the same text."""
from __future__ import annotations

from typing import Iterable, List, Sequence, Tuple, Union

from harness.org import ADMIN_GROUP, Org, OutlookAnywhere, Server

Value = Union[str, bool, Sequence[str], None]
Record = List[Tuple[str, Value]]

VDIR_NAME = "Rpc (Default Web Site)"
# AD object versions as Exchange stamps them: the /rpc directory per version, and every server object
VDIR_EXCHANGE_VERSION = {15: "0.20 (15.0.0.0)", 14: "0.10 (14.0.100.0)", 8: "0.1 (8.0.535.0)"}
SERVER_EXCHANGE_VERSION = "0.1 (8.0.535.0)"
RPC_PATH = {15: r"C:\Program Files\Microsoft\Exchange Server\V15\FrontEnd\HttpProxy\rpc"}
LEGACY_RPC_PATH = r"C:\Windows\System32\RpcProxy"


def format_value(value: Value) -> str:
    """PowerShell's rendering: True/False, ``{a, b}`` for a multi-valued property, nothing for null."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, str):
        return value
    return "{" + ", ".join(value) + "}"


def format_list(records: Iterable[Record]) -> str:
    """``Format-List``: a blank line, then each object's ``Name : Value`` lines, names padded to the longest, and a
    blank line after each object."""
    out = ["", ""]
    for record in records:
        width = max(len(name) for name, _ in record)
        out += [f"{name.ljust(width)} : {format_value(value)}".rstrip() for name, value in record]
        out.append("")
    return "\n".join(out + [""])


def admin_display_version(version: str) -> str:
    """``15.0.1497.2`` -> ``Version 15.0 (Build 1497.2)``."""
    major, minor, *rest = version.split(".")
    return f"Version {major}.{minor} (Build {'.'.join(rest) or '0'})"


def _configuration_dn(org: Org) -> str:
    domain = ",".join(f"DC={part}" for part in org.ad_domain.split("."))
    return (f"CN={ADMIN_GROUP},CN=Administrative Groups,CN={org.name},CN=Microsoft Exchange,CN=Services,"
            f"CN=Configuration,{domain}")


def _server_dn(org: Org, server: Server) -> str:
    return f"CN={server.name},CN=Servers,{_configuration_dn(org)}"


def outlook_anywhere_record(org: Org, oa: OutlookAnywhere) -> Record:
    server = org.server(oa.server)
    head: Record = [("ServerName", server.name), ("SSLOffloading", oa.ssl_offloading),
                    ("ExternalHostname", oa.external_hostname)]
    if server.is_legacy:
        head += [("ClientAuthenticationMethod", oa.external_client_auth)]
    else:
        head += [("InternalHostname", oa.internal_hostname),
                 ("ExternalClientAuthenticationMethod", oa.external_client_auth),
                 ("InternalClientAuthenticationMethod", oa.internal_client_auth)]
    head += [("IISAuthenticationMethods", list(oa.iis_auth)), ("XropUrl", None)]
    if not server.is_legacy:
        head += [("ExternalClientsRequireSsl", oa.external_requires_ssl),
                 ("InternalClientsRequireSsl", oa.internal_requires_ssl)]
    dn = f"CN={VDIR_NAME},CN=HTTP,CN=Protocols,{_server_dn(org, server)}"
    return head + [
        ("MetabasePath", f"IIS://{server.name}.{server.fqdn.partition('.')[2]}/W3SVC/1/ROOT/Rpc"),
        ("Path", RPC_PATH.get(server.major, LEGACY_RPC_PATH)),
        ("ExtendedProtectionTokenChecking", "None"), ("ExtendedProtectionFlags", []),
        ("ExtendedProtectionSPNList", []), ("AdminDisplayVersion", admin_display_version(server.version)),
        ("Server", server.name), ("AdminDisplayName", None),
        ("ExchangeVersion", VDIR_EXCHANGE_VERSION.get(server.major, VDIR_EXCHANGE_VERSION[8])),
        ("Name", VDIR_NAME), ("DistinguishedName", dn), ("Identity", f"{server.name}\\{VDIR_NAME}"),
    ]


def get_outlook_anywhere(org: Org) -> str:
    """Every /rpc directory Exchange would list: each 2013 Client Access server's, and a 2007/2010 server's only
    once Enable-OutlookAnywhere created it."""
    records = [outlook_anywhere_record(org, org.outlook_anywhere_of(s.name)) for s in org.servers
               if s.is_client_access and org.outlook_anywhere_of(s.name).enabled]
    return format_list(records)


def exchange_server_record(org: Org, server: Server) -> Record:
    roles = set(server.roles)
    hub = "HubTransport" in roles or (server.major >= 15 and "Mailbox" in roles)  # 2013's Mailbox role has it
    shown_roles = [r for r in ("Mailbox", "ClientAccess", "UnifiedMessaging", "HubTransport") if r in roles]
    return [
        ("Name", server.name), ("Domain", org.ad_domain), ("Edition", "Enterprise"),
        ("ExchangeLegacyDN", org.backend_server_dn(server)), ("Fqdn", server.fqdn),
        ("IsHubTransportServer", hub), ("IsClientAccessServer", "ClientAccess" in roles),
        ("IsExchange2007OrLater", True), ("IsEdgeServer", False), ("IsMailboxServer", "Mailbox" in roles),
        ("IsE14OrLater", server.major >= 14), ("IsE15OrLater", server.major >= 15),
        ("IsUnifiedMessagingServer", "UnifiedMessaging" in roles),
        ("IsFrontendTransportServer", server.major >= 15 and "ClientAccess" in roles),
        ("OrganizationalUnit", f"{org.ad_domain}/{server.name}"),
        ("AdminDisplayVersion", admin_display_version(server.version)),
        ("Site", f"{org.ad_domain}/Configuration/Sites/{server.site}"),
        ("ServerRole", ", ".join(shown_roles)), ("ExchangeVersion", SERVER_EXCHANGE_VERSION),
        ("DistinguishedName", _server_dn(org, server)), ("Identity", server.name),
    ]


def get_exchange_server(org: Org) -> str:
    return format_list(exchange_server_record(org, s) for s in org.servers)


def get_organization_config(org: Org) -> str:
    """The Get-OrganizationConfig properties the org models."""
    return format_list([[("Name", org.name), ("MapiHttpEnabled", org.mapi_http_enabled)]])


PROMPT = "[PS] C:\\Windows\\system32>"


def org_show(org: Org) -> str:
    """The org as a shell session: the cmdlets an admin runs to see these settings, each with its output."""
    return "".join(f"{PROMPT}{command}\n{output}" for command, output in (
        ("Get-ExchangeServer | fl", get_exchange_server(org)),
        ("Get-OutlookAnywhere | fl", get_outlook_anywhere(org)),
        ("Get-OrganizationConfig | fl Name,MapiHttpEnabled", get_organization_config(org))))
