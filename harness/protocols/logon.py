"""Who may log on, as Windows decides it whatever the scheme: the names the server answers to, the account lookup
and Windows' logon checks, in its order.

Basic authentication needs only this module; the NTLM and SPNEGO machinery (harness.protocols.ntlm and .spnego, on
impacket and pycryptodomex) is imported when a handshake starts, so a server nobody asks for NTLM never loads it.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from harness.hooks import hookspec
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


# MS-NLMP 2.2.2.1 AV_PAIR ids by name; values of the names are UTF-16LE text, the others raw bytes.
AV_IDS = {"MsvAvEOL": 0, "MsvAvNbComputerName": 1, "MsvAvNbDomainName": 2, "MsvAvDnsComputerName": 3,
          "MsvAvDnsDomainName": 4, "MsvAvDnsTreeName": 5, "MsvAvFlags": 6, "MsvAvTimestamp": 7, "MsvAvSingleHost": 8,
          "MsvAvTargetName": 9, "MsvAvChannelBindings": 10}
TEXT_AVS = {1, 2, 3, 4, 5, 9}
AV_ACTIONS = ("drop", "duplicate", "first", "set", "add")
AvPair = Tuple[int, bytes]


@dataclass(frozen=True)
class AvEdit:
    """One edit of the CHALLENGE's TargetInfo: drop, duplicate, move first or set the pair ``av``, or add one."""
    action: str
    av: str
    value: Optional[str] = None    # set/add: text for the name pairs, hex for the others

    def encoded(self) -> bytes:
        value = self.value or ""
        return value.encode("utf-16-le") if AV_IDS[self.av] in TEXT_AVS else bytes.fromhex(value)

    def apply(self, pairs: List[AvPair]) -> List[AvPair]:
        av_id = AV_IDS[self.av]
        if self.action == "add":     # before MsvAvEOL when the list still ends with it
            end = len(pairs) - 1 if pairs and pairs[-1][0] == AV_IDS["MsvAvEOL"] else len(pairs)
            return pairs[:end] + [(av_id, self.encoded())] + pairs[end:]
        index = next((i for i, (pair_id, _value) in enumerate(pairs) if pair_id == av_id), None)
        if index is None:
            return pairs
        if self.action == "drop":
            return pairs[:index] + pairs[index + 1:]
        if self.action == "duplicate":
            return pairs[:index + 1] + [pairs[index]] + pairs[index + 1:]
        if self.action == "first":
            return [pairs[index]] + pairs[:index] + pairs[index + 1:]
        return pairs[:index] + [(av_id, self.encoded())] + pairs[index + 1:]


@dataclass(frozen=True)
class ChallengeEdit:
    """How a fault changes the NTLM CHALLENGE the server sends (MS-NLMP 2.2.1.2): negotiate flags set and cleared,
    TargetInfo AV pairs edited in order, another TargetName, Version (8 bytes) or timestamp (FILETIME)."""
    flags_set: int = 0
    flags_clear: int = 0
    av_edits: Tuple[AvEdit, ...] = ()
    target_name: Optional[str] = None
    version: Optional[bytes] = None
    timestamp: Optional[int] = None

    def flags(self, flags: int) -> int:
        return (flags | self.flags_set) & ~self.flags_clear & 0xFFFFFFFF

    def target_info(self, pairs: List[AvPair]) -> bytes:
        """The TargetInfo of ``pairs`` (the server's, ending with MsvAvEOL) after the edits."""
        if self.timestamp is not None:
            stamp = struct.pack("<Q", self.timestamp)
            pairs = [(av_id, stamp if av_id == AV_IDS["MsvAvTimestamp"] else value) for av_id, value in pairs]
        for edit in self.av_edits:
            pairs = edit.apply(pairs)
        return b"".join(struct.pack("<HH", av_id, len(value)) + value for av_id, value in pairs)

    def describe(self) -> str:
        return "NTLM CHALLENGE changed"


@hookspec(fires_in="protocols/httpauth.py, protocols/dcerpc/security.py",
          means="the NTLM CHALLENGE's flags, AV pairs, target name, version or timestamp changed (where: http, rpc)")
def ntlm_challenge_hook(where: str) -> ChallengeEdit: ...
