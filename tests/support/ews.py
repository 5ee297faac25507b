"""EWS test helpers: the built-in org, a seeded store on a fixed clock, SOAP envelopes, and the exchangelib client
script (exchangelib_ews.py beside this module)."""
from __future__ import annotations

import base64
import datetime as dt
import http.client
import json
import os
import ssl

from harness.mailbox.seed import default_seeder
from harness.mailbox.store import MailboxStore, accounts_of
from harness.org import load_org
from harness.protocols import ews
from tests.support import REPO

ORG = load_org()
NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
ALICE, BOB = "alice@contoso.test", "bob@contoso.test"
CLIENT = os.path.join(REPO, "tests", "support", "exchangelib_ews.py")
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"


def new_store(**sizes: int) -> MailboxStore:
    """The built-in org's store at NOW; `alice=50` adds 50 generated messages to alice's Inbox."""
    return MailboxStore(accounts_of(ORG.mailboxes), lambda: NOW,
                        default_seeder({f"{k}@contoso.test": v for k, v in sizes.items()}))


def envelope(body: str, version: str = "Exchange2013_SP1") -> bytes:
    return (f'<s:Envelope xmlns:s="{SOAP}" xmlns:m="{ews.MESSAGES_NS}" xmlns:t="{ews.TYPES_NS}"><s:Header>'
            f'<t:RequestServerVersion Version="{version}"/></s:Header><s:Body>{body}</s:Body></s:Envelope>').encode()


def ews_send_as_bob(served, subject: str) -> int:
    """bob sends alice a message through the served EWS (CreateItem, SendAndSaveCopy): the HTTP status."""
    context = ssl.create_default_context(cafile=served.ca_file)
    context.check_hostname = False
    conn = http.client.HTTPSConnection(served.host, served.https_port, context=context, timeout=20)
    token = base64.b64encode(f"bob:{served.user('bob')['password']}".encode()).decode()
    body = envelope('<m:CreateItem MessageDisposition="SendAndSaveCopy"><m:Items><t:Message>'
                    f'<t:Subject>{subject}</t:Subject><t:Body BodyType="Text">hi</t:Body><t:ToRecipients>'
                    f'<t:Mailbox><t:EmailAddress>{ALICE}</t:EmailAddress></t:Mailbox></t:ToRecipients>'
                    '</t:Message></m:Items></m:CreateItem>')
    conn.request("POST", "/EWS/Exchange.asmx", body=body, headers={"Authorization": f"Basic {token}",
                                                                    "Content-Type": "text/xml; charset=utf-8"})
    response = conn.getresponse()
    assert b'ResponseClass="Success"' in response.read()
    return response.status


def results_of(output: str) -> dict:
    """The JSON lines an exchangelib client script printed (its ``emit``), by their "check"."""
    results = {}
    for line in output.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result.pop("check")] = result
    return results
