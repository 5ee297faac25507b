"""A ROP session for the spec-built MAPI client (tests/support/ropclient.py): Connect, then one Execute per ROP
buffer, in-process (MapiHttpEmsmdb.handle on a fixed clock) or over HTTPS against a served store; and exchangelib
accounts on that served store's EWS, for tests that look at the same mailboxes from both sides."""
from __future__ import annotations

import contextlib
import datetime as dt
import random
import struct
import warnings
from typing import Callable, Iterator

from harness.mailbox.seed import default_seeder
from harness.mailbox.store import MailboxStore, accounts_of
from harness.org import load_org, with_config
from harness.rpc.mapihttp import MapiHttpEmsmdb, MapiRequest
from tests.support.mapihttp import MapiHttpClient, connect_body, execute_body, execute_rops
from tests.support.ropclient import TAG_BODY, TAG_MESSAGE_CLASS, TAG_MID, TAG_SUBJECT, RopBuffer, by_rop, parse_answers

ORG = with_config(load_org(), {"mapi_http": {"Enabled": True}}, "test")
ALICE, BOB = ORG.find("alice"), ORG.find("bob")
ALICE_DN = ORG.legacy_dn(ALICE)
NOW = dt.datetime(2025, 1, 2, tzinfo=dt.timezone.utc)
INBOX, SENT, DRAFTS = 4, 6, None         # RopLogon special folder slots (MS-OXCSTOR 2.2.1.1.3)
ROWS = [TAG_SUBJECT, TAG_MID]


class Session:
    """Connect, then one Execute per ROP buffer; ``post`` is the transport (in-process or HTTPS)."""

    def __init__(self, post):
        self.post = post
        assert post("Connect", connect_body(ALICE_DN)) is not None
        answers, _ = self.run(RopBuffer().logon(ALICE_DN))
        self.fids = by_rop(answers, 0xFE).fields["fids"]

    def run(self, buffer: RopBuffer):
        code, payload = execute_rops(self.post("Execute", execute_body(buffer.payload())))
        assert code == 0
        return parse_answers(buffer, payload)

    def raw(self, buffer: RopBuffer) -> bytes:
        """The ROP response bytes of one Execute: RopSize stripped, the handle table cut off."""
        code, payload = execute_rops(self.post("Execute", execute_body(buffer.payload())))
        assert code == 0
        return payload[2:struct.unpack_from("<H", payload)[0]]

    def inbox_rows(self, fid_slot: int = INBOX):
        buffer = (RopBuffer(slots=3).logon(ALICE_DN).open_folder(self.fids[fid_slot], 0, 1).contents_table(1, 2)
                  .set_columns(2, ROWS).query_rows(2, ROWS))
        return by_rop(self.run(buffer)[0], 0x15).fields["rows"]

    def read_message(self, mid: bytes, fid_slot: int = INBOX):
        buffer = (RopBuffer(slots=4).logon(ALICE_DN).open_folder(self.fids[fid_slot], 0, 1)
                  .open_message(1, 2, self.fids[fid_slot], mid).get_props(2, [TAG_SUBJECT, TAG_MESSAGE_CLASS])
                  .open_stream(2, 3, TAG_BODY).stream_size(3).read_stream(3))
        answers, _ = self.run(buffer)
        body = by_rop(answers, 0x2C).fields["data"]
        assert body.endswith(b"\x00\x00") and len(body) == by_rop(answers, 0x5E).fields["size"]
        return answers, body[:-2].decode("utf-16-le")

    def send(self, to, subject: str, body: str, *, submit: bool = True):
        buffer = (RopBuffer(slots=3).logon(ALICE_DN).open_folder(self.fids[INBOX], 0, 1)
                  .create_message(1, 2, self.fids[INBOX]).modify_recipients(2, to)
                  .set_props(2, {TAG_SUBJECT: subject, TAG_BODY: body}).save(2))
        if submit:
            buffer.submit(2)
        return self.run(buffer)


def in_process_session(store: MailboxStore) -> Session:
    mapi = MapiHttpEmsmdb(ORG, store, random.Random(1), lambda: 1700000000.0, lambda kind, **f: None)
    cookies: dict = {}

    def post(request_type, body):
        headers = {"x-requesttype": request_type, "x-requestid": "{A}:1", "x-clientinfo": "{B}",
                   "cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
        answer = mapi.handle(MapiRequest("POST", headers.get, body, ALICE))
        for name, value in answer.headers:
            if name == "Set-Cookie":
                key, _, rest = value.partition("=")
                cookies[key] = rest.split(";", 1)[0]
        assert answer.response_code == 0
        return answer.chunks[1].partition(b"\r\n\r\n")[2]
    return Session(post)


def new_store() -> MailboxStore:
    return MailboxStore(accounts_of(ORG.mailboxes), lambda: NOW, default_seeder({}))


def https_session(served) -> Session:
    client = MapiHttpClient(served.host, served.https_port, served.ca_file, f"{ALICE.guid}@contoso.test", "alice",
                            served.user("alice")["password"])

    def post(request_type, body):
        answer = client.post(request_type, body)
        assert answer.status == 200 and answer.response_code == 0
        return answer.body
    return Session(post)


@contextlib.contextmanager
def exchangelib_accounts(served) -> Iterator[Callable]:
    """A factory of exchangelib Accounts on the served EWS URL (no Autodiscover: the address is a loopback one),
    Basic auth; exchangelib's adapter without certificate checks (the name in the URL is an address)."""
    from exchangelib import BASIC, Account, Configuration, Credentials
    from exchangelib.protocol import BaseProtocol, NoVerifyHTTPAdapter
    from exchangelib.version import EXCHANGE_2013_SP1, Version
    saved, BaseProtocol.HTTP_ADAPTER_CLS = BaseProtocol.HTTP_ADAPTER_CLS, NoVerifyHTTPAdapter
    url = f"https://{served.host}:{served.https_port}/EWS/Exchange.asmx"

    def account(name: str):
        who = served.user(name)
        config = Configuration(service_endpoint=url, credentials=Credentials(who["upn"], who["password"]),
                               auth_type=BASIC, version=Version(EXCHANGE_2013_SP1))
        return Account(f"{name}@contoso.test", config=config, autodiscover=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield account
    finally:
        BaseProtocol.HTTP_ADAPTER_CLS = saved
