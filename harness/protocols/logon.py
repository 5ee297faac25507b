"""Who may log on, as Windows decides it whatever the scheme: the names the server answers to, the account lookup
and Windows' logon checks, in its order.

Basic authentication needs only this module; the NTLM and SPNEGO machinery (harness.protocols.ntlm and .spnego, on
impacket and pycryptodomex) is imported when a handshake starts, so a server nobody asks for NTLM never loads it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from harness.org import Mailbox, Org

SIGNATURE = b"NTLMSSP\x00"   # how every NTLM message starts (MS-NLMP 2.2.1)


@dataclass(frozen=True)
class ServerIdentity:
    """The names the CAS puts into its CHALLENGE (impacket uses netbios_computer as the RPC server name)."""
    netbios_domain: str
    netbios_computer: str
    dns_domain: str
    dns_computer: str
    dns_tree: str

    @classmethod
    def for_org(cls, org: Org) -> "ServerIdentity":
        return cls(netbios_domain=org.netbios_domain, netbios_computer=org.cas.name, dns_domain=org.ad_domain,
                   dns_computer=org.cas.fqdn, dns_tree=org.ad_domain)

    def accepts_domain(self, domain: str) -> bool:
        """True for the domain names a logon may carry: empty, NetBIOS, DNS domain or tree (any case)."""
        return domain.lower() in {"", self.netbios_domain.lower(), self.dns_domain.lower(), self.dns_tree.lower()}


Lookup = Callable[[str, str], Optional[Mailbox]]


def org_lookup(org: Org) -> Lookup:
    """lookup(user, domain) over an org: sAMAccountName or UPN; the domain was already checked by the acceptor."""
    return lambda user, domain: org.find(user)


def logon_refusal(mailbox: Optional[Mailbox], password_matches: bool) -> str:
    """Why Windows refuses a logon, in its order of checks; "" when the logon is allowed."""
    if mailbox is None:
        return "unknown user"
    if mailbox.locked:
        return "account locked"
    if not password_matches:
        return "wrong password"
    if mailbox.password_expired:
        return "password expired"
    return ""
