"""The table ROPs' cost on a large folder, in process (MapiHttpEmsmdb.handle, no sockets): an Inbox of --items
generated messages, then per Execute
1. RopLogon, RopOpenFolder, RopGetContentsTable, RopSetColumns, RopQueryRows of 50 rows (no view);
2. the same with RopRestrict (subject contains "#1") + RopSortTable (subject, descending) + RopSeekRow before the
   rows: a new restricted, sorted view each time;
3. RopQueryRows of 50 rows on one open restricted, sorted table (paging through the view).
Prints milliseconds of wall time and of this process's CPU per Execute. Every loop is bounded by --executes.

    python benchmarks/rop_tables.py [--items 10000] [--executes 50]
"""
from __future__ import annotations

import argparse
import os
import struct
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from harness.mailbox.seed import generate  # noqa: E402
from tests.support.mapihttp import execute_body, execute_rops  # noqa: E402
from tests.support.restrictions import content  # noqa: E402
from tests.support.ropclient import TAG_MID, TAG_SUBJECT, RopBuffer  # noqa: E402
from tests.support.ropsession import ALICE, ALICE_DN, INBOX, in_process_session, new_store  # noqa: E402

ROWS = [TAG_SUBJECT, TAG_MID]


def timed(label: str, executes: int, run) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(executes):
        run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"  {label}: {wall / executes * 1000:.1f} ms wall, {cpu / executes * 1000:.1f} ms CPU per Execute")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--executes", type=int, default=50)
    args = parser.parse_args()
    store = new_store()
    generate(store, store.mailbox(ALICE.email), args.items)
    session = in_process_session(store)

    def table() -> RopBuffer:
        return (RopBuffer(slots=3).logon(ALICE_DN).open_folder(session.fids[INBOX], 0, 1).contents_table(1, 2)
                .set_columns(2, ROWS))
    view = table().restrict(2, content(TAG_SUBJECT, "#1")).sort_table(2, [(TAG_SUBJECT, 1)])
    answers, handles = session.run(view)
    assert all(answer.code == 0 for answer in answers)
    page = RopBuffer().query_rows(2, ROWS, 50).rops
    paging = struct.pack("<H", 2 + len(page)) + page + struct.pack(f"<{len(handles)}L", *handles)

    def next_page() -> None:
        code, _ = execute_rops(session.post("Execute", execute_body(paging)))
        assert code == 0
    print(f"Inbox of {args.items + 3} messages, {args.executes} Executes each:")
    timed("plain table, 50 rows", args.executes, lambda: session.run(table().query_rows(2, ROWS, 50)))
    timed("new restricted+sorted view, seek, 50 rows", args.executes,
          lambda: session.run(table().restrict(2, content(TAG_SUBJECT, "#1")).sort_table(2, [(TAG_SUBJECT, 1)])
                              .seek_row(2, 0, 100).query_rows(2, ROWS, 50)))
    timed("paging the open view, 50 rows", args.executes, next_page)


if __name__ == "__main__":
    main()
