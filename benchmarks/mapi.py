"""The mailbox protocol's server cost over MAPI/HTTP and over RPC/HTTP, for the same ROP buffer: RopLogon,
RopOpenFolder(Inbox), RopGetContentsTable, RopSetColumns, RopQueryRows of 50 rows.

Server CPU is utime+stime of the `mockex serve` process (/proc/<pid>/stat), per cycle and per call:
1. MAPI/HTTP (the spec-built client of tests/support/mapihttp.py, Basic auth): per cycle a new TLS connection,
   Connect + Execute + Disconnect; then Execute calls on one session.
2. RPC/HTTP with impacket's ncacn_http (as exchanger.py: NTLM on the HTTP legs, RPC packet privacy): per cycle a
   virtual connection + bind + EcDoConnectEx + EcDoRpcExt2 + EcDoDisconnect; then EcDoRpcExt2 calls on one session.
The client's own CPU (time.process_time of this process) is printed beside it.

impacket's transport speaks to :443 only, so the server listens on <--listen>:443: run as root or in a private
network namespace, e.g.  unshare -rn sh -c 'ip link set lo up && python benchmarks/mapi.py'
Loopback only; every loop is bounded by a count and by --max-seconds.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from typing import Callable, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from _common import cpu_seconds, serving_on_443  # noqa: E402 - the benchmarks' shared process helpers
from impacket.uuid import uuidtup_to_bin  # noqa: E402

from harness.org import DEFAULT_ORG_DIR, load_org  # noqa: E402
from harness.rpc import emsmdb  # noqa: E402
from tests.support.clients import bind_over_http, ncacn_http  # noqa: E402
from tests.support.mapihttp import MapiHttpClient, connect_body, execute_body, execute_rops  # noqa: E402
from tests.support.ropclient import TAG_MESSAGE_CLASS, TAG_MID, TAG_SUBJECT, RopBuffer, by_rop, parse_answers  # noqa

ORG = load_org()
ALICE = ORG.find("alice")
ALICE_DN = ORG.legacy_dn(ALICE)
COLUMNS = [TAG_SUBJECT, TAG_MESSAGE_CLASS, TAG_MID]
ROWS = 50


def serving(listen: str, messages: int):
    """`mockex serve` on <listen>:443 with MAPI/HTTP on and ``messages`` generated messages in alice's Inbox."""
    with open(os.path.join(DEFAULT_ORG_DIR, "org.yaml")) as source:
        text = source.read().replace("mapi_http: {Enabled: false}", "mapi_http: {Enabled: true}")
    return serving_on_443(listen, "mockex-mapi-bench-", [f"--mailbox-size=alice={messages}"], org_text=text)


def inbox_buffer(inbox_fid: bytes) -> RopBuffer:
    return (RopBuffer(slots=3).logon(ALICE_DN).open_folder(inbox_fid, 0, 1).contents_table(1, 2)
            .set_columns(2, COLUMNS).query_rows(2, COLUMNS, ROWS))


def check_rows(buffer: RopBuffer, payload: bytes) -> None:
    answers, _ = parse_answers(buffer, payload)
    if len(by_rop(answers, 0x15).fields["rows"]) != ROWS:
        raise SystemExit(f"RopQueryRows did not return {ROWS} rows")


# ---- MAPI/HTTP ----------------------------------------------------------------------------------------------------
class MapiSession:
    def __init__(self, endpoints: dict):
        alice = next(u for u in endpoints["users"] if u["username"] == "alice")
        self.client = MapiHttpClient(endpoints["https"]["host"], 443, endpoints["ca_file"],
                                     f"{ALICE.guid}@contoso.test", "alice", alice["password"])
        self._ok("Connect", connect_body(ALICE_DN))

    def _ok(self, request_type: str, body: bytes) -> bytes:
        answer = self.client.post(request_type, body)
        if answer.status != 200 or answer.response_code != 0:
            raise SystemExit(f"MAPI/HTTP {request_type}: {answer.status} X-ResponseCode {answer.response_code}")
        return answer.body

    def execute(self, buffer: RopBuffer) -> bytes:
        code, payload = execute_rops(self._ok("Execute", execute_body(buffer.payload())))
        if code:
            raise SystemExit(f"Execute ErrorCode 0x{code:08x}")
        return payload

    def close(self) -> None:
        self._ok("Disconnect", b"\x00\x00\x00\x00")
        self.client.conn.close()


# ---- RPC/HTTP -----------------------------------------------------------------------------------------------------
class RpcSession:
    def __init__(self, endpoints: dict):
        alice = next(u for u in endpoints["users"] if u["username"] == "alice")
        self.dce = bind_over_http(ncacn_http(endpoints["https"]["host"], ORG.personal_server(ALICE), 6001),
                                  uuidtup_to_bin((emsmdb.Emsmdb.uuid, "0.81")), "alice", alice["password"])
        self.dce.call(10, emsmdb.build_connect_request(ALICE_DN))
        self.cxh = emsmdb.parse_connect_response(self.dce.recv()).cxh

    def execute(self, buffer: RopBuffer) -> bytes:
        self.dce.call(11, emsmdb.build_rpc_request(self.cxh, buffer.payload()))
        code, self.cxh, payloads = emsmdb.parse_rpc_response(self.dce.recv())
        if code:
            raise SystemExit(f"EcDoRpcExt2 0x{code:08x}")
        return payloads[0]

    def close(self) -> None:
        self.dce.call(1, emsmdb.build_disconnect_request(self.cxh))
        self.dce.recv()
        self.dce.get_rpc_transport().disconnect()


def measure(pid: int, count: int, max_seconds: float, step: Callable[[], None]) -> Tuple[int, float, float]:
    """(steps done, server CPU per step in ms, client CPU per step in ms)."""
    step()                                           # warm-up
    cpu0, client0, done, started = cpu_seconds(pid), time.process_time(), 0, time.perf_counter()
    while done < count and time.perf_counter() - started < max_seconds:
        step()
        done += 1
    cpu, client = cpu_seconds(pid) - cpu0, time.process_time() - client0
    return done, cpu * 1e3 / max(done, 1), client * 1e3 / max(done, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default="127.0.5.1", help="loopback address for the server's :443")
    parser.add_argument("--cycles", type=int, default=50, help="connect+execute+disconnect cycles (default 50)")
    parser.add_argument("--calls", type=int, default=300, help="Execute calls on one session (default 300)")
    parser.add_argument("--max-seconds", type=float, default=60, help="time bound of each loop (default 60)")
    args = parser.parse_args()
    if socket.inet_aton(args.listen)[0] != 127:
        raise SystemExit("--listen must be a loopback address")
    with serving(args.listen, ROWS + 10) as (endpoints, pid):
        first = MapiSession(endpoints)
        logon = RopBuffer().logon(ALICE_DN)
        inbox_fid = by_rop(parse_answers(logon, first.execute(logon))[0], 0xFE).fields["fids"][4]
        first.close()
        buffer = inbox_buffer(inbox_fid)
        print(f"ROP buffer: RopLogon, RopOpenFolder(Inbox), RopGetContentsTable, RopSetColumns, RopQueryRows "
              f"({ROWS} rows of {len(COLUMNS)} columns); server on {args.listen}:443")
        for name, session_class in (("MAPI/HTTP", MapiSession), ("RPC/HTTP ", RpcSession)):
            def cycle(session_class=session_class) -> None:
                session = session_class(endpoints)
                check_rows(buffer, session.execute(buffer))
                session.close()
            done, server, client = measure(pid, args.cycles, args.max_seconds, cycle)
            print(f"{name} connect + execute + disconnect: {done} cycles, server CPU {server:.2f} ms per cycle, "
                  f"client CPU {client:.2f} ms per cycle")
            session = session_class(endpoints)
            done, server, client = measure(pid, args.calls, args.max_seconds,
                                           lambda session=session: check_rows(buffer, session.execute(buffer)))
            session.close()
            print(f"{name} execute on one session: {done} calls, server CPU {server:.3f} ms per call, "
                  f"client CPU {client:.3f} ms per call")


if __name__ == "__main__":
    main()
