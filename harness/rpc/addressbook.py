"""The address book an Exchange 2013 NSPI server shows for an Org: containers, recipients, MIds and properties.

Everything is derived from the Org (and its deployment id), so Minimal Entry IDs, GUIDs and SIDs are stable for a
given org file: a test can hard-code "alice is MId 0x1000" and a transcript replays byte for byte.
Property values are kept in their native MAPI type; nspi.py converts them to what a client asks for.
"""
from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional, Sequence, Tuple

from impacket.dcerpc.v5.nspi import GUID_NSPI

from harness.org import Mailbox, Org

# ---- property tags (id << 16 | native type) -----------------------------------------------------------------
PR_ENTRYID = 0x0FFF0102
PR_OBJECT_TYPE = 0x0FFE0003
PR_INSTANCE_KEY = 0x0FF60102
PR_RECORD_KEY = 0x0FF90102
PR_DISPLAY_NAME = 0x3001001F
PR_ADDRTYPE = 0x3002001F
PR_EMAIL_ADDRESS = 0x3003001F
PR_DEPTH = 0x30050003
PR_CREATION_TIME = 0x30070040
PR_LAST_MODIFICATION_TIME = 0x30080040
PR_SEARCH_KEY = 0x300B0102
PR_CONTAINER_FLAGS = 0x36000003
PR_DISPLAY_TYPE = 0x39000003
PR_DISPLAY_TYPE_EX = 0x39050003
PR_SMTP_ADDRESS = 0x39FE001F
PR_EMS_AB_DISPLAY_NAME_PRINTABLE = 0x39FF001F
PR_ACCOUNT = 0x3A00001F
PR_GIVEN_NAME = 0x3A06001F
PR_BUSINESS_TELEPHONE_NUMBER = 0x3A08001F
PR_MHS_COMMON_NAME = 0x3A0F001F
PR_SURNAME = 0x3A11001F
PR_COMPANY_NAME = 0x3A16001F
PR_TITLE = 0x3A17001F
PR_DEPARTMENT_NAME = 0x3A18001F
PR_OFFICE_LOCATION = 0x3A19001F
PR_PRIMARY_TELEPHONE_NUMBER = 0x3A1A001F
PR_TRANSMITABLE_DISPLAY_NAME = 0x3A20001F
PR_SEND_RICH_INFO = 0x3A40000B
PR_EMS_AB_HOME_MDB = 0x8006001E
PR_EMS_AB_HOME_MTA = 0x8007001E
PR_EMS_AB_PROXY_ADDRESSES = 0x800F101F
PR_EMS_AB_OBJECT_SID = 0x80270102
PR_EMS_AB_OBJECT_GUID = 0x8C6D0102
PR_EMS_AB_MAILBOX_GUID = 0x8C730102
PR_EMS_AB_IS_MASTER = 0xFFFB000B
PR_EMS_AB_PARENT_ENTRYID = 0xFFFC0102
PR_EMS_AB_CONTAINERID = 0xFFFD0003
PR_ANR = 0x360C001F

# ---- MAPI object / display types (MS-OXNSPI 2.2.3, MS-OXOABK 2.2.3.11) --------------------------------------
MAPI_ABCONT = 4
MAPI_MAILUSER = 6
DT_MAILUSER = 0x00000000
DT_CONTAINER = 0x00000100
DTE_FLAG_ACL_CAPABLE = 0x40000000
DT_ROOM = 0x00000007
DT_EQUIPMENT = 0x00000008

# Container flags (MS-OXOABK 2.2.2.1)
AB_RECIPIENTS = 0x1
AB_SUBCONTAINERS = 0x2
AB_UNMODIFIABLE = 0x8

GAL_CONTAINER_ID = 0
FIRST_CONTAINER_MID = 0x0F00
FIRST_RECIPIENT_MID = 0x1000
# Recipient MIds stay clear of the reserved positioning values 0-2 (MID_BEGINNING/CURRENT/END_OF_TABLE).

_CREATED = datetime(2019, 11, 4, 9, 30, tzinfo=timezone.utc)   # "whenCreated" of the first fixture object
_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=timezone.utc)

# msExchRecipientDisplayType per mailbox kind: only a user mailbox is an (enabled) ACL-capable security principal.
EX_DISPLAY_TYPES_EX = {"user": DTE_FLAG_ACL_CAPABLE | DT_MAILUSER, "shared": DT_MAILUSER,
                       "room": DT_ROOM, "equipment": DT_EQUIPMENT}


def filetime(moment: datetime) -> int:
    return (moment - _FILETIME_EPOCH) // timedelta(microseconds=1) * 10


def permanent_entry_id(display_type: int, dn: str) -> bytes:
    """MS-OXNSPI 2.3.8.3 PermanentEntryID: 0x00, GUID_NSPI, version 1, display type, NUL-terminated DN."""
    return b"\x00\x00\x00\x00" + GUID_NSPI + struct.pack("<LL", 1, display_type) + dn.encode("utf-8") + b"\x00"


def ephemeral_entry_id(server_guid: uuid.UUID, display_type: int, mid: int) -> bytes:
    """MS-OXNSPI 2.3.8.2 EphemeralEntryID: 0x87, the NSPI server's GUID, version 1, display type, MId."""
    return b"\x87\x00\x00\x00" + server_guid.bytes_le + struct.pack("<LLL", 1, display_type, mid)


def guid_dn(guid: uuid.UUID) -> str:
    """The '/guid=<hex>' DN Exchange gives address lists; exchanger reads the GUID back from the text after '='."""
    return "/guid=" + guid.bytes_le.hex().upper()


@dataclass(frozen=True)
class AbObject:
    """One address-book object (a recipient or a container) with its properties in native MAPI types."""
    mid: int
    dn: str
    display_name: str
    display_type: int
    guid: uuid.UUID
    props: Dict[int, object]
    mailbox: Optional[Mailbox] = None

    def value(self, prop_id: int) -> Optional[Tuple[int, object]]:
        """(native tag, value) for a property id (tag >> 16), or None."""
        for tag, value in self.props.items():
            if tag >> 16 == prop_id:
                return tag, value
        return None


@dataclass(frozen=True)
class Container:
    """A row of the address-book hierarchy table plus the MIds it lists, sorted by display name."""
    container_id: int            # PR_EMS_AB_CONTAINERID: 0 for the GAL, else the container object's MId
    obj: AbObject
    flags: int
    depth: int
    parent: Optional[uuid.UUID]
    members: Tuple[int, ...] = field(default=())


# Name of each address list, which mailbox kinds it lists, and its parent (None = top level).
_ADDRESS_LISTS = (
    ("All Address Lists", None, None),
    ("All Contacts", (), "All Address Lists"),
    ("All Groups", (), "All Address Lists"),
    ("All Rooms", ("room", "equipment"), "All Address Lists"),
    ("All Users", ("user", "shared", "room", "equipment"), "All Address Lists"),
)


class AddressBook:
    """The org's address book: hierarchy table, recipient objects and their lookups."""

    def __init__(self, org: Org):
        self.org = org
        self._namespace = uuid.UUID(org.deployment_id)
        self.server_guid = uuid.uuid5(self._namespace, f"nspi-server:{org.cas.fqdn}")
        self.recipients: List[AbObject] = [self._recipient(i, mb) for i, mb in enumerate(org.mailboxes)]
        self.containers: List[Container] = self._hierarchy()
        self._by_mid: Dict[int, AbObject] = {o.mid: o for o in self.recipients}
        self._by_mid.update({c.obj.mid: c.obj for c in self.containers if c.container_id != GAL_CONTAINER_ID})
        self._by_dn = {o.dn.lower(): o for o in self._by_mid.values()}
        self._by_guid = {o.guid.bytes_le: o for o in self._by_mid.values()}
        self._containers = {c.container_id: c for c in self.containers}

    # ---- lookups ------------------------------------------------------------------------------------------
    def get(self, mid: int) -> Optional[AbObject]:
        return self._by_mid.get(mid)

    def container(self, container_id: int) -> Optional[Container]:
        return self._containers.get(container_id)

    def by_dn(self, dn: str) -> Optional[AbObject]:
        return self._by_dn.get(dn.lower())

    def by_guid(self, guid_bytes_le: bytes) -> Optional[AbObject]:
        return self._by_guid.get(guid_bytes_le)

    def by_mailbox(self, mailbox: Mailbox) -> AbObject:
        return next(o for o in self.recipients if o.mailbox == mailbox)

    def resolve(self, text: str) -> List[AbObject]:
        """Ambiguous name resolution as Outlook's 'Check Names' expects: exact names first, then prefixes."""
        text = text.strip()
        if not text:
            return []
        if text.lower().startswith("/guid="):
            found = self.by_guid(_hex_bytes(text[6:]))
            return [found] if found else []
        if text.startswith("/"):
            found = self.by_dn(text)
            return [found] if found else []
        exact = text[1:] if text.startswith("=") else text
        mailbox = self.org.find(exact)
        if mailbox is not None:
            return [self.by_mailbox(mailbox)]
        if text.startswith("="):
            return [o for o in self.recipients if o.display_name.lower() == exact.lower()]
        return [o for o in self.recipients if anr_matches(o, text)]

    def columns(self) -> List[int]:
        """Every property tag some object carries, in native type (NspiQueryColumns)."""
        tags = {tag for obj in self._by_mid.values() for tag in obj.props}
        return sorted(tags)

    # ---- building -----------------------------------------------------------------------------------------
    def _recipient(self, index: int, mailbox: Mailbox) -> AbObject:
        org = self.org
        dn = org.legacy_dn(mailbox)
        mid = FIRST_RECIPIENT_MID + index
        guid = uuid.uuid5(self._namespace, f"ad-object:{mailbox.guid}")
        created = filetime(_CREATED + timedelta(days=index))
        entry_id = permanent_entry_id(DT_MAILUSER, dn)
        server = org.server(mailbox.server)
        props: Dict[int, object] = {
            PR_ENTRYID: entry_id,
            PR_RECORD_KEY: entry_id,
            PR_SEARCH_KEY: b"EX:" + dn.upper().encode("utf-8") + b"\x00",
            PR_INSTANCE_KEY: struct.pack("<L", mid),
            PR_OBJECT_TYPE: MAPI_MAILUSER,
            PR_DISPLAY_TYPE: DT_MAILUSER,
            PR_DISPLAY_TYPE_EX: EX_DISPLAY_TYPES_EX[mailbox.kind],
            PR_DISPLAY_NAME: mailbox.display_name,
            PR_TRANSMITABLE_DISPLAY_NAME: mailbox.display_name,
            PR_EMS_AB_DISPLAY_NAME_PRINTABLE: mailbox.alias,
            PR_ADDRTYPE: "EX",
            PR_EMAIL_ADDRESS: dn,
            PR_SMTP_ADDRESS: mailbox.email,
            PR_ACCOUNT: mailbox.alias,
            PR_MHS_COMMON_NAME: mailbox.alias,
            PR_COMPANY_NAME: org.name,
            PR_EMS_AB_PROXY_ADDRESSES: [f"SMTP:{mailbox.email}"] + [f"smtp:{a}" for a in mailbox.aliases],
            PR_EMS_AB_OBJECT_GUID: guid.bytes_le,
            PR_EMS_AB_MAILBOX_GUID: uuid.UUID(mailbox.guid).bytes_le,
            PR_EMS_AB_OBJECT_SID: self._sid(1100 + index),
            PR_EMS_AB_HOME_MDB: org.mdb_dn(mailbox),
            PR_EMS_AB_HOME_MTA: f"{org.backend_server_dn(server)}/cn=Microsoft MTA",
            PR_CREATION_TIME: created,
            PR_LAST_MODIFICATION_TIME: created,
            PR_SEND_RICH_INFO: True,
        }
        if mailbox.kind == "user" and " " in mailbox.display_name:
            props[PR_GIVEN_NAME], props[PR_SURNAME] = mailbox.display_name.split(" ", 1)
        for tag, value in ((PR_TITLE, mailbox.title), (PR_DEPARTMENT_NAME, mailbox.department),
                           (PR_BUSINESS_TELEPHONE_NUMBER, mailbox.phone), (PR_PRIMARY_TELEPHONE_NUMBER, mailbox.phone),
                           (PR_OFFICE_LOCATION, mailbox.office)):
            if value:
                props[tag] = value
        return AbObject(mid=mid, dn=dn, display_name=mailbox.display_name, display_type=DT_MAILUSER, guid=guid,
                        props=props, mailbox=mailbox)

    def _sid(self, rid: int) -> bytes:
        """S-1-5-21-<three sub-authorities from the deployment id>-<rid>, in binary form."""
        domain = struct.unpack("<3L", self._namespace.bytes[:12])
        return struct.pack("<BB6s5L", 1, 5, b"\x00\x00\x00\x00\x00\x05", 21, *domain, rid)

    def _sorted_mids(self, objects: Sequence[AbObject]) -> Tuple[int, ...]:
        return tuple(o.mid for o in sorted(objects, key=lambda o: (o.display_name.lower(), o.mid)))

    def _container_object(self, mid: int, name: str, guid: uuid.UUID, flags: int, depth: int,
                          parent: Optional[uuid.UUID]) -> AbObject:
        dn = guid_dn(guid) if mid != GAL_CONTAINER_ID else "/"
        props: Dict[int, object] = {
            PR_EMS_AB_CONTAINERID: mid,
            PR_CONTAINER_FLAGS: flags,
            PR_DEPTH: depth,
            PR_DISPLAY_NAME: name,
            PR_ENTRYID: permanent_entry_id(DT_CONTAINER, dn),
            PR_INSTANCE_KEY: struct.pack("<L", mid),
            PR_OBJECT_TYPE: MAPI_ABCONT,
            PR_DISPLAY_TYPE: DT_CONTAINER,
            PR_EMS_AB_OBJECT_GUID: guid.bytes_le,
            PR_EMS_AB_IS_MASTER: False,
        }
        if parent is not None:
            props[PR_EMS_AB_PARENT_ENTRYID] = permanent_entry_id(DT_CONTAINER, guid_dn(parent))
        return AbObject(mid=mid, dn=dn, display_name=name, display_type=DT_CONTAINER, guid=guid, props=props)

    def _hierarchy(self) -> List[Container]:
        gal_guid = uuid.uuid5(self._namespace, "address-list:Default Global Address List")
        rows = [Container(GAL_CONTAINER_ID,
                          self._container_object(GAL_CONTAINER_ID, "Default Global Address List", gal_guid,
                                                 AB_RECIPIENTS | AB_UNMODIFIABLE, 0, None),
                          AB_RECIPIENTS | AB_UNMODIFIABLE, 0, None, self._sorted_mids(self.recipients))]
        guids: Dict[str, uuid.UUID] = {}
        for index, (name, kinds, parent_name) in enumerate(_ADDRESS_LISTS):
            guid = guids[name] = uuid.uuid5(self._namespace, f"address-list:{name}")
            parent = guids[parent_name] if parent_name else None
            depth = 0 if parent is None else 1
            if kinds is None:
                flags, members = AB_SUBCONTAINERS | AB_UNMODIFIABLE, ()
            else:
                flags = AB_RECIPIENTS | AB_UNMODIFIABLE
                members = self._sorted_mids([o for o in self.recipients if o.mailbox.kind in kinds])
            mid = FIRST_CONTAINER_MID + index
            rows.append(Container(mid, self._container_object(mid, name, guid, flags, depth, parent),
                                  flags, depth, parent, members))
        return rows


def anr_matches(obj: AbObject, text: str) -> bool:
    """Outlook ANR: the text is a prefix of the display name, a word of it, the alias or the SMTP address."""
    text = text.lower()
    mailbox = obj.mailbox
    words = obj.display_name.lower().split()
    names = [obj.display_name.lower(), *words]
    if mailbox is not None:
        names += [mailbox.alias.lower(), mailbox.email.lower(), mailbox.username.lower()]
    return any(name.startswith(text) for name in names)


def _hex_bytes(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""
