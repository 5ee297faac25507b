"""Held MAPI/HTTP NotificationWaits: what N waiting Outlook sessions cost `mockex serve`, and how fast one delivery
wakes them all.

N sessions of alice over MAPI/HTTP (the spec-built client of tests/support/mapihttp.py, each its own TLS connection):
Connect, Execute(RopLogon + RopRegisterNotification for new mail), then a NotificationWait left waiting. Printed:
the server's RSS (VmRSS) and CPU (utime+stime from /proc) before and with the N waits held, then one message bob
sends to alice through EWS: the wall time until the last of the N answers (EventPending set) has been read, and the
server CPU that took. Loopback only; N is bounded by --waits, every wait by the clients' socket timeout.

    unshare -rn sh -c 'ip link set lo up && python benchmarks/mapi_wait.py --waits 200'
"""
from __future__ import annotations

import argparse
import base64
import http.client
import os
import re
import ssl
import struct
import sys
import time
from typing import List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from _common import cpu_seconds, serving_on_443  # noqa: E402 - the benchmarks' shared process helpers

from harness.org import DEFAULT_ORG_DIR, load_org  # noqa: E402
from tests.support.ews import envelope  # noqa: E402
from tests.support.mapihttp import (  # noqa: E402
    NEW_MAIL,
    MapiHttpClient,
    connect_body,
    execute_body,
    register_notification_buffer,
)

ORG = load_org()
ALICE = ORG.find("alice")
ALICE_DN = ORG.legacy_dn(ALICE)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+) kB", status.read()).group(1))  # type: ignore[union-attr]


def waiting_session(endpoints: dict) -> MapiHttpClient:
    alice = next(u for u in endpoints["users"] if u["username"] == "alice")
    client = MapiHttpClient(endpoints["https"]["host"], 443, endpoints["ca_file"], f"{ALICE.guid}@contoso.test",
                            "alice", alice["password"])
    for request_type, body in (("Connect", connect_body(ALICE_DN)),
                               ("Execute", execute_body(register_notification_buffer(ALICE_DN, NEW_MAIL)))):
        answer = client.post(request_type, body)
        if answer.status != 200 or answer.response_code != 0:
            raise SystemExit(f"{request_type}: {answer.status} X-ResponseCode {answer.response_code}")
    client.send("NotificationWait", struct.pack("<LL", 0, 0))
    return client


def send_as_bob(endpoints: dict) -> None:
    bob = next(u for u in endpoints["users"] if u["username"] == "bob")
    context = ssl.create_default_context(cafile=endpoints["ca_file"])
    context.check_hostname = False
    conn = http.client.HTTPSConnection(endpoints["https"]["host"], 443, context=context, timeout=60)
    token = base64.b64encode(f"bob:{bob['password']}".encode()).decode()
    body = envelope('<m:CreateItem MessageDisposition="SendAndSaveCopy"><m:Items><t:Message><t:Subject>wake'
                    '</t:Subject><t:Body BodyType="Text">hi</t:Body><t:ToRecipients><t:Mailbox><t:EmailAddress>'
                    f'{ALICE.email}</t:EmailAddress></t:Mailbox></t:ToRecipients></t:Message></m:Items>'
                    '</m:CreateItem>')
    conn.request("POST", "/EWS/Exchange.asmx", body=body,
                 headers={"Authorization": f"Basic {token}", "Content-Type": "text/xml; charset=utf-8"})
    if b'ResponseClass="Success"' not in conn.getresponse().read():
        raise SystemExit("EWS CreateItem failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.5.2", help="loopback address for the server's :443")
    parser.add_argument("--waits", type=int, default=200, help="NotificationWaits held at once (default 200)")
    args = parser.parse_args()
    with open(os.path.join(DEFAULT_ORG_DIR, "org.yaml")) as source:
        text = source.read().replace("mapi_http: {Enabled: false}", "mapi_http: {Enabled: true}")
    with serving_on_443(args.listen, "mockex-mapi-wait-", org_text=text) as (endpoints, pid):
        rss_before, cpu_before = rss_kib(pid), cpu_seconds(pid)
        clients: List[MapiHttpClient] = [waiting_session(endpoints) for _ in range(args.waits)]
        time.sleep(1.0)   # let the server take the last requests in before it is measured
        rss_held, cpu_held = rss_kib(pid), cpu_seconds(pid)
        started = time.perf_counter()
        send_as_bob(endpoints)
        woken = [client.receive() for client in clients]
        seconds = time.perf_counter() - started
        cpu_woken = cpu_seconds(pid)
        flagged = sum(1 for answer in woken if answer.response_code == 0 and answer.body[8:12] == b"\x01\x00\x00\x00")
        print(f"{args.waits} sessions, each Connect + Execute(register) + a held NotificationWait:")
        print(f"  server CPU {1000 * (cpu_held - cpu_before) / args.waits:.2f} ms per session set up; "
              f"RSS {rss_before} KiB -> {rss_held} KiB ({(rss_held - rss_before) / args.waits:.1f} KiB per held wait)")
        print(f"one EWS delivery to alice woke {flagged}/{args.waits} waits (EventPending) in {1000 * seconds:.1f} ms "
              f"wall; server CPU {1000 * (cpu_woken - cpu_held):.1f} ms for the send and the {args.waits} answers")


if __name__ == "__main__":
    main()
