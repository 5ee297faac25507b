"""EWS server cost at scale, in-process (the sans-IO core harness.protocols.ews.respond_ews, no sockets):
1. store memory per generated item: VmRSS (/proc/self/status) before and after seeding --items messages in alice's
   Inbox, divided by the count, before any body or MIME is read;
2. FindItem, IndexedPageItemView of 100 (Default shape, newest first) at offsets across that folder: CPU per call;
3. SyncFolderItems of --sync-items messages in bob's Inbox, 512 changes a call (exchangelib's maximum) from the
   start to the end: CPU per call and for the whole sync;
4. GetItem with IncludeMimeContent of one generated message: CPU per call;
5. FindItem with a Restriction (unread And subject contains "invoice", ignoring case: exchangelib's
   filter(is_read=False, subject__icontains="invoice")), first page of 100: CPU per call (every item is tested).
CPU is time.process_time of this process. Targets (issue 14): FindItem page <= 5 ms, <= 2 KB of RSS per item.
Every loop is bounded by a count and by --max-seconds.

  PYTHONPATH=. python benchmarks/ews.py [--items 100000] [--sync-items 20000] [--calls 200]
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import re
import sys
import time
from typing import Callable, Dict, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from harness.mailbox.seed import default_seeder  # noqa: E402
from harness.mailbox.store import MailboxStore, accounts_of  # noqa: E402
from harness.org import load_org  # noqa: E402
from harness.protocols import ews  # noqa: E402

ORG = load_org()
ALICE, BOB = "alice@contoso.test", "bob@contoso.test"
NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"


def envelope(body: str) -> bytes:
    return (f'<s:Envelope xmlns:s="{SOAP}" xmlns:m="{ews.MESSAGES_NS}" xmlns:t="{ews.TYPES_NS}"><s:Header>'
            f'<t:RequestServerVersion Version="Exchange2013_SP1"/></s:Header><s:Body>{body}</s:Body>'
            f'</s:Envelope>').encode()


def find_item(offset: int) -> bytes:
    return envelope('<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>Default</t:BaseShape></m:ItemShape>'
                    f'<m:IndexedPageItemView MaxEntriesReturned="100" Offset="{offset}" BasePoint="Beginning"/>'
                    '<m:ParentFolderIds><t:DistinguishedFolderId Id="inbox"/></m:ParentFolderIds></m:FindItem>')


UNREAD_INVOICES = ('<t:And><t:IsEqualTo><t:FieldURI FieldURI="message:IsRead"/><t:FieldURIOrConstant>'
                   '<t:Constant Value="false"/></t:FieldURIOrConstant></t:IsEqualTo><t:Contains '
                   'ContainmentMode="Substring" ContainmentComparison="IgnoreCase">'
                   '<t:FieldURI FieldURI="item:Subject"/><t:Constant Value="invoice"/></t:Contains></t:And>')


def find_restricted() -> bytes:
    return envelope('<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>Default</t:BaseShape></m:ItemShape>'
                    '<m:IndexedPageItemView MaxEntriesReturned="100" Offset="0" BasePoint="Beginning"/>'
                    f'<m:Restriction>{UNREAD_INVOICES}</m:Restriction>'
                    '<m:ParentFolderIds><t:DistinguishedFolderId Id="inbox"/></m:ParentFolderIds></m:FindItem>')


def sync_items(state: str) -> bytes:
    state_element = f"<m:SyncState>{state}</m:SyncState>" if state else ""
    return envelope('<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>'
                    '<m:SyncFolderId><t:DistinguishedFolderId Id="inbox"/></m:SyncFolderId>'
                    f'{state_element}<m:MaxChangesReturned>512</m:MaxChangesReturned></m:SyncFolderItems>')


def get_item_mime(item_id: str) -> bytes:
    return envelope('<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>'
                    '<t:IncludeMimeContent>true</t:IncludeMimeContent></m:ItemShape>'
                    f'<m:ItemIds><t:ItemId Id="{item_id}"/></m:ItemIds></m:GetItem>')


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+) kB", status.read()).group(1))


def call(store: MailboxStore, email: str, body: bytes) -> bytes:
    answer = ews.respond_ews(ORG, store, email, body)
    if answer.status != 200 or answer.outcome != "success":
        raise SystemExit(f"EWS answered {answer.status} {answer.error_code}: {answer.body[:300]!r}")
    return answer.body


def timed(calls: int, deadline: float, step: Callable[[int], None]) -> Tuple[int, float]:
    """(calls made, CPU seconds) of up to `calls` steps, stopping at the wall-clock deadline."""
    start, made = time.process_time(), 0
    while made < calls and time.monotonic() < deadline:
        step(made)
        made += 1
    return made, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000, help="generated messages in alice's Inbox")
    parser.add_argument("--sync-items", type=int, default=20_000, help="generated messages in bob's Inbox")
    parser.add_argument("--calls", type=int, default=200, help="FindItem and GetItem calls measured")
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()
    deadline = time.monotonic() + args.max_seconds
    figures: Dict[str, object] = {}

    gc.collect()
    before = rss_kib()
    store = MailboxStore(accounts_of(ORG.mailboxes), lambda: NOW,
                         default_seeder({ALICE: args.items, BOB: args.sync_items}))
    gc.collect()
    grown = rss_kib() - before
    generated = args.items + args.sync_items
    figures["store_rss_bytes_per_item"] = round(grown * 1024 / generated)

    inbox = store.mailbox(ALICE).distinguished["inbox"]
    total = len(inbox.items)
    first_cpu = time.process_time()
    call(store, ALICE, find_item(0))              # the first page sorts the folder once
    figures["finditem_first_page_ms"] = round((time.process_time() - first_cpu) * 1000, 2)
    stride = max((total - 100) // max(args.calls, 1), 1)
    made, cpu = timed(args.calls, deadline, lambda n: call(store, ALICE, find_item((n * stride) % (total - 100))))
    figures["finditem_page100_ms"] = round(cpu / max(made, 1) * 1000, 3)
    figures["finditem_calls"] = made

    state, sync_calls, sync_changes = "", 0, 0
    sync_start = time.process_time()
    while sync_calls < args.sync_items // 512 + 5 and time.monotonic() < deadline:
        body = call(store, BOB, sync_items(state)).decode()
        state = re.search(r"<m:SyncState>([^<]*)</m:SyncState>", body).group(1)
        sync_calls += 1
        sync_changes += body.count("<t:Create>")
        if "<m:IncludesLastItemInRange>true</m:IncludesLastItemInRange>" in body:
            break
    sync_cpu = time.process_time() - sync_start
    figures.update(sync_calls=sync_calls, sync_changes=sync_changes, sync_total_s=round(sync_cpu, 3),
                   sync_call_ms=round(sync_cpu / max(sync_calls, 1) * 1000, 2))

    items = inbox.newest_first()
    made, cpu = timed(args.calls, deadline,
                      lambda n: call(store, ALICE, get_item_mime(items[(n * 997) % len(items)].id)))
    figures["getitem_mime_ms"] = round(cpu / max(made, 1) * 1000, 3)
    figures["getitem_calls"] = made
    made, cpu = timed(max(args.calls // 10, 1), deadline, lambda n: call(store, ALICE, find_restricted()))
    figures["finditem_restricted_ms"] = round(cpu / max(made, 1) * 1000, 2)
    figures["finditem_restricted_calls"] = made
    figures.update(items=args.items, sync_items=args.sync_items)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
