"""A MAPI/HTTP EMSMDB client built from [MS-OXCMAPIHTTP] and [MS-OXCROPS] alone (no harness code): request
bodies, the chunked PROCESSING/DONE response, and the ROPs the tests send (RopLogon, RopOpenFolder,
RopGetContentsTable, RopSetColumns, RopQueryRows) with their response parsers."""
from __future__ import annotations

import base64
import datetime as dt
import http.client
import random
import ssl
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from harness.mailbox.seed import default_seeder
from harness.mailbox.store import MailboxStore, accounts_of
from harness.org import Org, load_org, with_config
from harness.rpc.mapihttp import MapiHttpEmsmdb, MapiRequest
from tests.support.ropclient import property_value

TAG_SUBJECT, TAG_MESSAGE_CLASS, TAG_MID = 0x0037001F, 0x001A001F, 0x674A0014


def connect_body(user_dn: str) -> bytes:
    return user_dn.encode("ascii") + b"\x00" + struct.pack("<LLLLL", 0, 1252, 0x409, 0x409, 0)


def execute_body(rop_buffer: bytes, max_out: int = 0x40000) -> bytes:
    rgb_in = struct.pack("<HHHH", 0, 0x4, len(rop_buffer), len(rop_buffer)) + rop_buffer   # RPC_HEADER_EXT, Last
    return struct.pack("<LL", 0, len(rgb_in)) + rgb_in + struct.pack("<LL", max_out, 0)


def inbox_rop_buffer(user_dn: str, inbox_fid: Optional[bytes], columns: List[int]) -> bytes:
    """RopLogon -> h0; RopOpenFolder(h0, fid) -> h1; RopGetContentsTable(h1) -> h2; RopSetColumns(h2);
    RopQueryRows(h2, 100). Without ``inbox_fid`` only the RopLogon."""
    dn = user_dn.encode("ascii") + b"\x00"
    rops = struct.pack("<BBBBLLH", 0xFE, 0, 0, 0x01, 0x01000000 | 0x4 | 0x8, 0, len(dn)) + dn
    slots = 1
    if inbox_fid is not None:
        rops += struct.pack("<BBBB", 0x02, 0, 0, 1) + inbox_fid + b"\x00"
        rops += struct.pack("<BBBBB", 0x05, 0, 1, 2, 0)
        rops += struct.pack("<BBBBH", 0x12, 0, 2, 0, len(columns)) + struct.pack(f"<{len(columns)}L", *columns)
        rops += struct.pack("<BBBBBH", 0x15, 0, 2, 0, 1, 100)
        slots = 3
    return struct.pack("<H", 2 + len(rops)) + rops + b"\xff\xff\xff\xff" * slots


@dataclass
class Rops:
    inbox_fid: Optional[bytes]
    logon_handle: int
    results: Dict[int, int]             # RopId -> ReturnValue
    row_count: Optional[int]
    rows: List[List[object]]
    handles: List[int]


def parse_rop_response(payload: bytes, columns: List[int]) -> Rops:
    rop_size = struct.unpack_from("<H", payload)[0]
    rops, handle_bytes = payload[2:rop_size], payload[rop_size:]
    handles = list(struct.unpack(f"<{len(handle_bytes) // 4}L", handle_bytes))
    results: Dict[int, int] = {}
    pos, inbox_fid, row_count, rows = 0, None, None, []
    while pos < len(rops):
        rop_id, index, code = struct.unpack_from("<BBL", rops, pos)
        results[rop_id] = code
        pos += 6
        if code:
            continue
        if rop_id == 0xFE:
            pos += 1
            fids = [rops[pos + 8 * i:pos + 8 * i + 8] for i in range(13)]
            inbox_fid = fids[4]
            pos += 8 * 13 + 1 + 16 + 2 + 16 + 8 + 8 + 4
        elif rop_id == 0x02:
            pos += 2                    # HasRules, IsGhosted (not ghosted)
        elif rop_id == 0x05:
            row_count = struct.unpack_from("<L", rops, pos)[0]
            pos += 4
        elif rop_id == 0x12:
            pos += 1
        elif rop_id == 0x15:
            _origin, count = struct.unpack_from("<BH", rops, pos)
            pos += 3
            for _ in range(count):
                flagged, pos = rops[pos], pos + 1
                row: List[object] = []
                for tag in columns:
                    if flagged:
                        flag, pos = rops[pos], pos + 1
                        if flag:
                            row.append(None)
                            pos += 4
                            continue
                    value, pos = property_value(tag, rops, pos)
                    row.append(value)
                rows.append(row)
    return Rops(inbox_fid, handles[0], results, row_count, rows, handles)


def execute_rops(body: bytes) -> Tuple[int, bytes]:
    """(ErrorCode, the ROP payload) of an Execute response body."""
    status, code, _flags, size = struct.unpack_from("<LLLL", body)
    assert status == 0
    rgb_out = body[16:16 + size]
    if not rgb_out:
        return code, b""
    _version, flags, seg, actual = struct.unpack_from("<HHHH", rgb_out)
    assert flags & 0x4 and seg == actual == len(rgb_out) - 8
    return code, rgb_out[8:]


@dataclass
class MapiResponse:
    status: int
    headers: http.client.HTTPMessage
    raw_chunks: bytes                    # the whole decoded body
    body: bytes                          # after DONE and its header block ("" when not a success)
    done_headers: Dict[str, str]
    pending: int = 0                     # PENDING meta-tags before DONE

    @property
    def response_code(self) -> int:
        return int(self.headers["X-ResponseCode"])


class MapiHttpClient:
    """POSTs to /mapi/<endpoint>/ (emsmdb, nspi) with Basic auth, keeping the MapiContext/MapiSequence cookies
    the server sets."""

    def __init__(self, host: str, port: int, ca_file: str, mailbox_id: str, user: Optional[str], password: str = "",
                 endpoint: str = "emsmdb"):
        context = ssl.create_default_context(cafile=ca_file)
        context.check_hostname = False
        self.conn = http.client.HTTPSConnection(host, port, context=context, timeout=20)
        self.path = f"/mapi/{endpoint}/?MailboxId={mailbox_id}"
        self.auth = None if user is None else "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.cookies: Dict[str, str] = {}
        self.request_number = 0

    def post(self, request_type: str, body: bytes) -> MapiResponse:
        self.send(request_type, body)
        return self.receive()

    def send(self, request_type: str, body: bytes) -> None:
        """The request alone (``receive`` reads its answer): a NotificationWait can be left waiting."""
        self.request_number += 1
        headers = {"Content-Type": "application/mapi-http", "X-RequestType": request_type,
                   "X-RequestId": f"{{0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0}}:{self.request_number}",
                   "X-ClientInfo": "{11111111-2222-3333-4444-555555555555}-1",
                   "X-ClientApplication": "Outlook/15.0.4569.1506"}
        if self.auth:
            headers["Authorization"] = self.auth
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        self.conn.request("POST", self.path, body=body, headers=headers)

    def receive(self) -> MapiResponse:
        response = self.conn.getresponse()
        data = response.read()
        for value in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        body_out, done, pending = b"", {}, 0
        if response.headers.get("X-ResponseCode") == "0":
            assert data.startswith(b"PROCESSING\r\n")
            rest = data[len(b"PROCESSING\r\n"):]
            while rest.startswith(b"PENDING\r\n"):      # keep-alives while the server works (2.2.7)
                rest, pending = rest[len(b"PENDING\r\n"):], pending + 1
            head, _, body_out = rest.partition(b"\r\n\r\n")
            lines = head.decode("ascii").split("\r\n")
            assert lines[0] == "DONE"
            done = dict(line.split(": ", 1) for line in lines[1:])
        return MapiResponse(response.status, response.headers, data, body_out, done, pending)


# ---- notifications ([MS-OXCROPS] 2.2.14, [MS-OXCNOTIF] 2.2.1.4.1.2) ------------------------------------------
NEW_MAIL, OBJECT_CREATED, MESSAGE_BIT = 0x0002, 0x0004, 0x8000


def register_notification_buffer(user_dn: str, types: int = NEW_MAIL | OBJECT_CREATED) -> bytes:
    """RopLogon -> h0; RopRegisterNotification(h0, whole store, ``types``) -> h1."""
    logon = inbox_rop_buffer(user_dn, None, [])
    rops = logon[2:struct.unpack_from("<H", logon)[0]] + struct.pack("<7B", 0x29, 0, 0, 1, types, 0, 1)
    return struct.pack("<H", 2 + len(rops)) + rops + b"\xff\xff\xff\xff" * 2


def no_rops_buffer(handles: List[int]) -> bytes:
    """A ROP buffer with no ROPs: its response carries only what the server adds (RopNotify, RopPending)."""
    return struct.pack("<H", 2) + struct.pack(f"<{len(handles)}L", *handles)


def parse_notifies(rops: bytes) -> Tuple[List[Tuple[int, int, bytes, bytes]], bool]:
    """([(NotificationHandle, NotificationFlags, FolderId, MessageId)], whether a RopPending ends them) of ROP
    response bytes that hold only RopNotify/RopPending responses (message notifications: new mail, created)."""
    found, pos = [], 0
    while pos < len(rops):
        if rops[pos] == 0x6E:                                   # RopPending: SessionIndex
            return found, True
        assert rops[pos] == 0x2A
        handle, _logon_id, flags = struct.unpack_from("<LBH", rops, pos + 1)
        fid, mid = rops[pos + 8:pos + 16], rops[pos + 16:pos + 24]
        pos += 24
        if flags & 0x0FFF == NEW_MAIL:                          # MessageFlags, UnicodeFlag, MessageClass (UTF-16)
            pos += 5
            while rops[pos:pos + 2] != b"\x00\x00":
                pos += 2
            pos += 2
        elif flags & 0x0FFF in (OBJECT_CREATED, 0x0010):        # TagCount (then its tags)
            pos += 2 + 4 * struct.unpack_from("<H", rops, pos)[0]
        found.append((handle, flags, fid, mid))
    return found, False


# ---- the EMSMDB endpoint in process ------------------------------------------------------------------------------
MAPI_ORG = with_config(load_org(), {"mapi_http": {"Enabled": True}}, "test")   # the built-in org, MAPI/HTTP on
IN_PROCESS_NOW = 1700000000.0   # the endpoint's clock: X-StartTime Tue, 14 Nov 2023 22:13:20 GMT


def new_store(org: Org = MAPI_ORG) -> MailboxStore:
    return MailboxStore(accounts_of(org.mailboxes), lambda: dt.datetime(2025, 1, 2, tzinfo=dt.timezone.utc),
                        default_seeder({}))


class Endpoint:
    """The sans-IO endpoint with the site's job done by hand: cookies kept, headers given."""

    def __init__(self, org: Org = MAPI_ORG, store: Optional[MailboxStore] = None):
        self.org = org
        self.store = store or new_store(org)
        self.mapi = MapiHttpEmsmdb(org, self.store, random.Random(1), lambda: IN_PROCESS_NOW,
                                   lambda kind, **f: None)
        self.cookies: Dict[str, str] = {}

    def post(self, request_type: str, body: bytes = b"", *, mailbox=None, cookies=None, method: str = "POST"):
        jar = self.cookies if cookies is None else cookies
        headers = {"x-requesttype": request_type, "x-requestid": "{A}:1", "x-clientinfo": "{B}",
                   "cookie": "; ".join(f"{k}={v}" for k, v in jar.items())}
        answer = self.mapi.handle(MapiRequest(method, headers.get, body, mailbox or self.org.find("alice")))
        for name, value in answer.headers:
            if name == "Set-Cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";", 1)[0]
        return answer
