"""The mailbox store, sans-IO: per mailbox its folders and items, Exchange-looking ids, a change counter, in-org
delivery and a reset to the seeded state. Protocol cores (EWS today, ROPs later) read and write it; the edges own
the clock and hand it in, so tests drive time."""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    FrozenSet,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from harness.mailbox import events, ids
from harness.mailbox.folders import FIRST_FOLDER_COUNTER, FIRST_ITEM_COUNTER, WELL_KNOWN
from harness.mailbox.mime import render_mime
from harness.mailbox.oof import OofSettings

if TYPE_CHECKING:
    from harness.mailbox.attachments import Attachment

Address = Tuple[str, str]          # (display name, SMTP address)
Clock = Callable[[], dt.datetime]  # aware UTC datetimes


@dataclass
class Item:
    """A message. `mime` is kept when a client sent MIME; otherwise it is rendered from the fields on demand."""
    key: int
    folder: "Folder"
    subject: str
    body: str
    sender: Address
    to: Tuple[Address, ...]
    received: dt.datetime
    sent: dt.datetime
    message_id: str
    change_number: int             # the last change of any kind
    created: int = 0               # the change that made it (in this folder: a move makes a new item)
    content_change: int = 0        # the last change other than the read flag (sync: Update vs ReadFlagChange)
    is_read: bool = False
    body_type: str = "Text"
    cc: Tuple[Address, ...] = ()
    item_class: str = "IPM.Note"
    is_draft: bool = False
    mime: Optional[bytes] = None
    importance: str = "Normal"     # Low / Normal / High
    sensitivity: str = "Normal"    # Normal / Personal / Private / Confidential
    categories: Tuple[str, ...] = ()
    # The change number of each field's last change, by EWS field URI (UpdateItem's AutoResolve reads it); made
    # on the first update, so a large unchanged folder pays nothing for it.
    field_changes: Optional[Dict[str, int]] = None
    attachments: Tuple["Attachment", ...] = ()     # a tuple: most items have none, and () costs nothing

    @property
    def id(self) -> str:
        return ids.item_id(self.folder.owner.guid, self.folder.key, self.key)

    @property
    def change_key(self) -> str:
        return ids.change_key(self.folder.owner.guid, ids.CHANGE_MESSAGE, self.change_number)

    def mime_content(self) -> bytes:
        return self.mime if self.mime is not None else render_mime(self)

    @property
    def has_attachments(self) -> bool:
        """PR_HASATTACH / EWS HasAttachments: an attachment that is not inline (inline images alone do not count)."""
        return any(not a.is_inline for a in self.attachments)

    @property
    def size(self) -> int:
        attached = sum(a.size for a in self.attachments) if self.attachments else 0
        return len(self.subject) + len(self.body) + 512 + attached   # Exchange's Size counts properties too


@dataclass(frozen=True)
class Tombstone:
    """What sync needs of an item that left a folder (deleted or moved out): its key, when it was made, when it
    left."""
    key: int
    created: int
    removed: int


@dataclass(frozen=True)
class FolderTombstone:
    """A folder that was deleted: its key, when it was made and deleted, and the keys of the folders it was below
    then (a hierarchy sync of any of them reports the delete)."""
    key: int
    created: int
    removed: int
    ancestors: FrozenSet[int]


# Fields a move copies to the new item; the rest (identity and change numbers) are the new item's own.
_OWN_FIELDS = ("key", "folder", "change_number", "created", "content_change", "field_changes")


@dataclass(eq=False)
class Rule:
    """A server-side rule in a folder's rules table (MS-OXORULE): its properties by property id as a client set them
    (conditions and actions kept as their ROP bytes), and the id the store gave it."""
    rule_id: int
    props: Dict[int, object] = field(default_factory=dict)


@dataclass(eq=False)
class Folder:
    key: int
    owner: "MailboxContent"
    name: str
    folder_class: Optional[str]
    parent: Optional["Folder"]
    distinguished: Optional[str]
    change_number: int             # bumped by its own changes and by any item arriving, leaving or changing
    created: int = 0
    items: Dict[int, Item] = field(default_factory=dict)
    children: List["Folder"] = field(default_factory=list)
    tombstones: List[Tombstone] = field(default_factory=list)   # in removal order, so in change-number order
    rules: List[Rule] = field(default_factory=list)             # in the order they were added
    props: Dict[int, Tuple[int, object]] = field(default_factory=dict)   # other properties a client set:
    #                                                                        property id -> (type, value)
    # Exchange's default view order (newest received first), kept until an item arrives or leaves: paging a large
    # folder then costs a slice per page, not a sort of the whole folder.
    _newest_first: Optional[List[Item]] = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return ids.folder_id(self.owner.guid, self.key)

    @property
    def change_key(self) -> str:
        return ids.change_key(self.owner.guid, ids.CHANGE_FOLDER, self.change_number)

    @property
    def unread(self) -> int:
        return sum(1 for item in self.items.values() if not item.is_read)

    def newest_first(self) -> List[Item]:
        """The items newest received first (ties: the later made first). Shared: callers must not change it."""
        if self._newest_first is None:
            self._newest_first = sorted(self.items.values(), key=lambda i: (i.received, i.key), reverse=True)
        return self._newest_first

    def descendants(self) -> Iterator["Folder"]:
        for child in self.children:
            yield child
            yield from child.descendants()

    def ancestors(self) -> Iterator["Folder"]:
        parent = self.parent
        while parent is not None:
            yield parent
            parent = parent.parent


class MailboxContent:
    """One mailbox's folders and items and its change counter."""

    def __init__(self, email: str, display_name: str, guid: str):
        self.email, self.display_name, self.guid = email, display_name, guid
        self.change_number = 0
        self.events = events.EventLog()   # what notification subscriptions read
        self.oof = OofSettings()
        self.folders: Dict[int, Folder] = {}
        self.distinguished: Dict[str, Folder] = {}
        self.folder_tombstones: List[FolderTombstone] = []     # in removal order
        # The store's clock, set once the mailbox is seeded: from then on folder changes are notification events
        # (the folders every mailbox starts with, and seeded ones, are no events).
        self.clock: Optional[Clock] = None
        self._next_folder, self._next_item, self._next_rule = FIRST_FOLDER_COUNTER, FIRST_ITEM_COUNTER, 0
        for distinguished, name, folder_class, parent in WELL_KNOWN:
            self.add_folder(name, folder_class, self.distinguished[parent] if parent else None, distinguished)

    @property
    def address(self) -> Address:
        return (self.display_name, self.email)

    def next_change(self) -> int:
        self.change_number += 1
        return self.change_number

    def add_folder(self, name: str, folder_class: Optional[str], parent: Optional[Folder],
                   distinguished: Optional[str] = None, *, copied_from: Optional[Folder] = None) -> Folder:
        """A new folder under `parent` (a CreatedEvent; a CopiedEvent naming `copied_from` for a copy)."""
        change = self.next_change()
        folder = Folder(self._next_folder, self, name, folder_class, parent, distinguished, change, created=change)
        self._next_folder += 1
        self.folders[folder.key] = folder
        if distinguished:
            self.distinguished[distinguished] = folder
        if parent is not None:
            parent.children.append(folder)
            if copied_from is not None:
                self._folder_event(events.COPIED, folder, parent, old_folder=copied_from,
                                   old_parent=copied_from.parent)
            else:
                self._folder_event(events.CREATED, folder, parent)
        return folder

    def _folder_event(self, kind: str, folder: Folder, parent: Folder, **old: Optional[Folder]) -> None:
        if self.clock is not None:
            self.events.record_folder(kind, self.clock(), folder, parent, **old)

    def folder_changed(self, folder: Folder) -> Folder:
        """Record a change of a folder's own properties (its name, class): a hierarchy Update, a ModifiedEvent."""
        folder.change_number = self.next_change()
        if folder.parent is not None:
            self._folder_event(events.MODIFIED, folder, folder.parent)
        return folder

    def add_item(self, folder: Folder, kind: type = Item, **fields) -> Item:
        """A new item of `kind` (Item, or a subclass such as calendar.CalendarItem) in `folder`."""
        change = self.next_change()
        item = kind(key=self._next_item, folder=folder, change_number=change, created=change, content_change=change,
                    **fields)
        self._next_item += 1
        folder.items[item.key] = item
        folder._newest_first = None
        folder.change_number = self.next_change()
        return item

    def remove_item(self, item: Item) -> Tombstone:
        """Take an item out of its folder, leaving a tombstone for sync."""
        folder = item.folder
        del folder.items[item.key]
        folder._newest_first = None
        tombstone = Tombstone(item.key, item.created, self.next_change())
        folder.tombstones.append(tombstone)
        folder.change_number = self.next_change()
        return tombstone

    def remove_folder(self, folder: Folder) -> None:
        """Take a folder, its subfolders and their items out of the mailbox, leaving folder tombstones for sync
        (subfolders first); the parent's ChildFolderCount changes."""
        for child in list(folder.children):
            self.remove_folder(child)
        for item in list(folder.items.values()):
            self.remove_item(item)
        ancestors = frozenset(f.key for f in folder.ancestors())
        self.folder_tombstones.append(FolderTombstone(folder.key, folder.created, self.next_change(), ancestors))
        del self.folders[folder.key]
        if folder.parent is not None:
            self._folder_event(events.DELETED, folder, folder.parent)
            folder.parent.children.remove(folder)
            folder.parent.change_number = self.next_change()

    def next_rule_id(self) -> int:
        self._next_rule += 1
        return self._next_rule

    def move_folder(self, folder: Folder, target: Folder) -> Folder:
        """Re-parent a folder (its id stays): both parents' ChildFolderCount and the folder's ParentFolderId
        change."""
        assert folder.parent is not None
        old_parent = folder.parent
        old_parent.children.remove(folder)
        old_parent.change_number = self.next_change()
        folder.parent = target
        target.children.append(folder)
        target.change_number = self.next_change()
        folder.change_number = self.next_change()
        self._folder_event(events.MOVED, folder, target, old_folder=folder, old_parent=old_parent)
        return folder

    def touch(self, item: Item, *, read_flag_only: bool = False) -> Item:
        """Record a change of `item` (read flag only, or any other field) and of its folder (its counts)."""
        item.change_number = self.next_change()
        if not read_flag_only:
            item.content_change = item.change_number
        item.folder.change_number = self.next_change()
        return item

    def find(self, ews_id: str) -> Union[Folder, Item, None]:
        """The folder or item an EWS id names, if it is in this mailbox."""
        decoded = ids.decode(ews_id)
        if decoded is None or decoded[0] != self.guid:
            return None
        folder = self.folders.get(decoded[1])
        if folder is None or decoded[2] is None:
            return folder
        return folder.items.get(decoded[2])


# A seeding function fills a fresh store (MailboxStore.reset calls it again, so it must be deterministic).
Seeder = Callable[["MailboxStore"], None]


class MailboxStore:
    """Every mailbox of the org, keyed by lower-cased SMTP address."""

    def __init__(self, mailboxes: Sequence[Tuple[str, str, str]], clock: Clock,
                 seeder: Optional[Seeder] = None):
        """`mailboxes`: (email, display name, mailbox GUID) each; `clock` gives the time of new deliveries."""
        self._accounts = tuple(mailboxes)
        self.clock, self.seeder = clock, seeder
        self.mailboxes: Dict[str, MailboxContent] = {}
        self.reset()

    def reset(self) -> None:
        """Back to the seeded state: the same folders, items, ids and change numbers as at start."""
        self.mailboxes = {email.lower(): MailboxContent(email, name, guid) for email, name, guid in self._accounts}
        self.subscriptions = events.Subscriptions()
        if self.seeder is not None:
            self.seeder(self)
        for content in self.mailboxes.values():
            content.clock = self.clock

    def mailbox(self, email: str) -> Optional[MailboxContent]:
        return self.mailboxes.get(email.lower())

    # ---- changes ----------------------------------------------------------------------------------------------
    def save(self, owner: MailboxContent, folder: Folder, *, subject: str, body: str, to: Sequence[Address] = (),
             cc: Sequence[Address] = (), body_type: str = "Text", is_read: bool = True,
             mime: Optional[bytes] = None, attachments: Sequence["Attachment"] = ()) -> Item:
        """SaveOnly: a draft from the owner in `folder`."""
        now = self.clock()
        item = owner.add_item(folder, subject=subject, body=body, body_type=body_type, sender=owner.address,
                              to=tuple(to), cc=tuple(cc), received=now, sent=now, is_read=is_read, is_draft=True,
                              message_id=self._message_id(owner), mime=mime,
                              attachments=_keyed(owner, attachments))
        owner.events.record(events.CREATED, now, item)
        return item

    def send(self, owner: MailboxContent, *, subject: str, body: str, to: Sequence[Address] = (),
             cc: Sequence[Address] = (), body_type: str = "Text", save_copy_in: Optional[Folder] = None,
             mime: Optional[bytes] = None, attachments: Sequence["Attachment"] = (), kind: type = Item,
             **extra: Any) -> Tuple[Optional[Item], List[Item]]:
        """SendOnly / SendAndSaveCopy: deliver to every in-org recipient's Inbox (once each), keep a read copy in
        `save_copy_in`. Returns (the copy, the delivered items); recipients outside the org are dropped. `kind` and
        `extra` make another kind of message (a meeting response: calendar.MeetingMessage and its fields)."""
        now = self.clock()
        message_id = self._message_id(owner)
        fields: Dict[str, Any] = dict(subject=subject, body=body, body_type=body_type, sender=owner.address,
                                         to=tuple(to), cc=tuple(cc), received=now, sent=now, message_id=message_id,
                                         mime=mime, kind=kind, **extra)
        copy = owner.add_item(save_copy_in, is_read=True, attachments=_keyed(owner, attachments),
                              **fields) if save_copy_in is not None else None
        if copy is not None:
            owner.events.record(events.CREATED, now, copy)
        delivered, seen = [], set()
        for _, address in list(to) + list(cc):
            recipient = self.mailbox(address)
            if recipient is not None and recipient.email.lower() not in seen:
                seen.add(recipient.email.lower())
                delivered.append(recipient.add_item(recipient.distinguished["inbox"], is_read=False,
                                                    attachments=_keyed(recipient, attachments), **fields))
                recipient.events.record(events.NEW_MAIL, now, delivered[-1])
                recipient.events.record(events.CREATED, now, delivered[-1])
        return copy, delivered

    def set_read(self, item: Item, is_read: bool) -> Item:
        return self.update(item, {"is_read": is_read}, ["message:IsRead"])

    def set_subject(self, item: Item, subject: str) -> Item:
        return self.update(item, {"subject": subject}, ["item:Subject"])

    def update(self, item: Item, changes: Mapping[str, object], uris: Sequence[str]) -> Item:
        """Set item attributes (`changes`, attribute name to value) as one change, recording it against each EWS
        field URI in `uris`; a change of the read flag alone is a read-flag change for sync."""
        for name, value in changes.items():
            setattr(item, name, value)
        if set(changes) - {"is_read"}:
            item.mime = None        # a client's MIME no longer says what the item holds: rendered from now on
        owner = item.folder.owner
        owner.touch(item, read_flag_only=set(changes) <= {"is_read"})
        if item.field_changes is None:
            item.field_changes = {}
        for uri in uris:
            item.field_changes[uri] = item.change_number
        return self._modified(item)

    def copy(self, item: Item, target: Folder) -> Item:
        """A new item in `target` with the same content (and a CopiedEvent)."""
        owner = target.owner
        fields = {name: getattr(item, name) for name in type(item).__dataclass_fields__ if name not in _OWN_FIELDS}
        copied = owner.add_item(target, kind=type(item), **fields)
        owner.events.record(events.COPIED, self.clock(), copied, old_item=item)
        return copied

    def copy_folder(self, folder: Folder, target: Folder, name: Optional[str] = None, *,
                    recursive: bool = True) -> Folder:
        """A new folder under `target` (of the same mailbox) with `folder`'s class, properties and items (copies with
        new ids), and when `recursive` its subfolders likewise; a copy is never distinguished. `target` must not be
        `folder` or below it."""
        owner = target.owner
        children, contents = list(folder.children), list(folder.items.values())
        copy = owner.add_folder(name or folder.name, folder.folder_class, target, copied_from=folder)
        target.change_number = owner.next_change()      # its ChildFolderCount changed
        copy.props = dict(folder.props)
        for item in contents:
            self.copy(item, copy)
        if recursive:
            for child in children:
                self.copy_folder(child, copy)
        return copy

    def changed(self, item: Item) -> Item:
        """Record a change of `item` made in place (its attachments, a contact's or task's fields)."""
        return self._modified(item.folder.owner.touch(item))

    def _modified(self, item: Item) -> Item:
        item.folder.owner.events.record(events.MODIFIED, self.clock(), item)
        return item

    def move(self, item: Item, target: Folder) -> Item:
        """Moving gives the item a new id in its new folder, as Exchange does."""
        owner = item.folder.owner
        owner.remove_item(item)
        fields = {name: getattr(item, name) for name in type(item).__dataclass_fields__ if name not in _OWN_FIELDS}
        moved = owner.add_item(target, kind=type(item), **fields)
        owner.events.record(events.MOVED, self.clock(), moved, old_item=item)
        return moved

    def delete(self, item: Item, *, hard: bool) -> Optional[Item]:
        """HardDelete removes the item; otherwise it moves to Deleted Items (already there: removed)."""
        deleted_items = item.folder.owner.distinguished["deleteditems"]
        if hard or item.folder is deleted_items:
            item.folder.owner.remove_item(item)
            item.folder.owner.events.record(events.DELETED, self.clock(), item)
            return None
        return self.move(item, deleted_items)

    def _message_id(self, owner: MailboxContent) -> str:
        domain = owner.email.rpartition("@")[2]
        return f"<{owner.guid[:8]}{owner.change_number:08x}@{domain}>"


def _keyed(owner: MailboxContent, attachments: Sequence["Attachment"]) -> Tuple["Attachment", ...]:
    """Copies of `attachments` with keys of `owner`'s (each mailbox numbers its own)."""
    return tuple(dataclasses.replace(a, key=owner.next_change()) for a in attachments)


def accounts_of(mailboxes: Sequence) -> List[Tuple[str, str, str]]:
    """(email, display name, GUID) of org mailboxes (harness.org.Mailbox or anything with those attributes)."""
    return [(m.email, m.display_name, m.guid) for m in mailboxes]


def sizes_by_email(sizes: Mapping[str, int], mailboxes: Sequence) -> Dict[str, int]:
    """`--mailbox-size` keys may name a mailbox by user name or address; answer by lower-cased address."""
    by_key = {}
    for m in mailboxes:
        for key in (m.email, m.username):
            by_key[key.lower()] = m.email.lower()
    unknown = [key for key in sizes if key.lower() not in by_key]
    if unknown:
        raise ValueError(f"no such mailbox: {', '.join(unknown)}")
    return {by_key[key.lower()]: count for key, count in sizes.items()}
