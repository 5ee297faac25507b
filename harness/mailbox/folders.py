"""The folders every Exchange 2013 mailbox has, as its store creates them."""
from __future__ import annotations

from typing import Optional, Tuple

# (distinguished id or None, display name, FolderClass or None, parent distinguished id)
WELL_KNOWN: Tuple[Tuple[Optional[str], str, Optional[str], Optional[str]], ...] = (
    ("root", "", None, None),                                   # the non-IPM subtree root
    ("msgfolderroot", "Top of Information Store", None, "root"),
    ("inbox", "Inbox", "IPF.Note", "msgfolderroot"),
    ("drafts", "Drafts", "IPF.Note", "msgfolderroot"),
    ("sentitems", "Sent Items", "IPF.Note", "msgfolderroot"),
    ("deleteditems", "Deleted Items", "IPF.Note", "msgfolderroot"),
    ("outbox", "Outbox", "IPF.Note", "msgfolderroot"),
    ("calendar", "Calendar", "IPF.Appointment", "msgfolderroot"),
    ("contacts", "Contacts", "IPF.Contact", "msgfolderroot"),
    ("tasks", "Tasks", "IPF.Task", "msgfolderroot"),
    ("notes", "Notes", "IPF.StickyNote", "msgfolderroot"),
    ("journal", "Journal", "IPF.Journal", "msgfolderroot"),
    ("junkemail", "Junk Email", "IPF.Note", "msgfolderroot"),
    (None, "Common Views", None, "root"),
    (None, "Deferred Action", None, "root"),
    ("searchfolders", "Finder", None, "root"),
    (None, "Schedule", None, "root"),
    (None, "Views", None, "root"),
    ("recoverableitemsroot", "Recoverable Items", None, "root"),
    ("recoverableitemsdeletions", "Deletions", None, "recoverableitemsroot"),
    ("recoverableitemsversions", "Versions", None, "recoverableitemsroot"),
    ("recoverableitemspurges", "Purges", None, "recoverableitemsroot"),
)

# The first folder counter: Exchange's global counters for the first folders of a new mailbox start low.
FIRST_FOLDER_COUNTER = 0x000001
FIRST_ITEM_COUNTER = 0x000100
