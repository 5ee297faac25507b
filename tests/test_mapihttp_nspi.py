"""MAPI over HTTP, the address book endpoint (/mapi/nspi/): the sans-IO endpoint in-process with a fixed clock,
compared with NSPI over RPC (impacket's NDR client against harness.rpc.nspi in-process) for the same columns, then
a real `mockex serve` driven by tests/support/mapihttp_nspi.py (a client built from the spec alone)."""
from __future__ import annotations

import random

import pytest
from impacket.dcerpc.v5 import nspi as ndr

from harness.faults.base import catalog
from harness.hooks import FaultSet
from harness.org import load_org, with_config
from harness.rpc import nspi as nspi_core
from harness.rpc.base import CallContext, InProcessDce
from harness.rpc.mapihttp import MapiRequest
from harness.rpc.mapihttp_nspi import MapiHttpNspi
from tests.support.clients import nspi_handle
from tests.support.mapihttp import MapiHttpClient
from tests.support.mapihttp_nspi import (
    bind_body,
    compare_mids_body,
    content_restriction,
    dn_to_mid_body,
    get_matches_body,
    get_props_body,
    or_restriction,
    parse_response,
    prop_list_body,
    property_restriction,
    query_columns_body,
    query_rows_body,
    resolve_names_body,
    resort_body,
    special_table_body,
    unbind_body,
    update_stat_body,
    url_body,
)
from tests.support.servers import start_mapi_http_server

ORG = with_config(load_org(), {"mapi_http": {"Enabled": True}}, "test")
ALICE, BOB = ORG.find("alice"), ORG.find("bob")
NOW = 1700000000.0
PR_DISPLAY_NAME_W, PR_SMTP_W, PR_ENTRYID, PR_DISPLAY_TYPE, PR_TITLE_W = (0x3001001F, 0x39FE001F, 0x0FFF0102,
                                                                         0x39000003, 0x3A17001F)
PR_DISPLAY_NAME_A, PR_EMAIL_ADDRESS_A = 0x3001001E, 0x3003001E
GAL_COLUMNS = [PR_DISPLAY_NAME_W, PR_SMTP_W, PR_ENTRYID, PR_DISPLAY_TYPE, PR_TITLE_W, PR_DISPLAY_NAME_A]
MAPI_BASE = "https://mail.contoso.test/mapi/"


class Endpoint:
    """The sans-IO endpoint with the site's job done by hand: cookies kept, headers given."""

    def __init__(self, *faults):
        self.events = []
        self.mapi = MapiHttpNspi(ORG, MAPI_BASE, random.Random(1), lambda: NOW,
                                 lambda kind, **fields: self.events.append({"kind": kind, **fields}),
                                 faults=FaultSet(faults))
        self.cookies = {}

    def post(self, request_type, body=b"", *, mailbox=ALICE, cookies=None):
        jar = self.cookies if cookies is None else cookies
        headers = {"x-requesttype": request_type, "x-requestid": "{A}:1", "x-clientinfo": "{B}",
                   "cookie": "; ".join(f"{k}={v}" for k, v in jar.items())}
        answer = self.mapi.handle(MapiRequest("POST", headers.get, body, mailbox))
        for name, value in answer.headers:
            if name == "Set-Cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";", 1)[0]
        return answer

    def call(self, request_type, body=b""):
        answer = self.post(request_type, body)
        assert answer.response_code == 0 and answer.chunks[0] == b"PROCESSING\r\n", answer.body
        return parse_response(request_type, answer.chunks[1].partition(b"\r\n\r\n")[2])


def rpc_rows(columns, count=50):
    """NspiQueryRows over the RPC transport (impacket's NDR, in-process) for the GAL, as plain values."""
    ctx = CallContext(org=ORG, mailbox=ALICE, auth_level=6, association={}, record=lambda kind, **f: None,
                      rng=random.Random(7))
    dce = InProcessDce(nspi_core.Nspi(ORG), ctx)
    handle = nspi_handle(dce)
    stat = ndr.STAT()
    stat["CodePage"] = 1252
    response = ndr.hNspiQueryRows(dce, handle, pStat=stat, Count=count, pPropTags=columns)
    rows = []
    for row in response["ppRows"]["aRow"]:
        values = []
        for value in row["lpProps"]:
            ptype, arm = value["ulPropTag"] & 0xFFFF, value["Value"]
            if ptype == 0x000A:
                values.append(("error", arm["err"]))
            elif ptype == 0x001F:
                values.append(arm["lpszW"].rstrip("\x00"))
            elif ptype == 0x001E:
                text = arm["lpszA"]
                values.append((text if isinstance(text, bytes) else text.encode("latin-1")).rstrip(b"\x00"))
            elif ptype == 0x0102:
                values.append(b"".join(b if isinstance(b, bytes) else bytes([b]) for b in arm["bin"]["lpb"]))
            else:
                values.append(arm["l"])
        rows.append(values)
    return response["pStat"]["CurrentRec"], response["pStat"]["TotalRecs"], rows


def test_bind_special_table_and_gal_rows_match_nspi_over_rpc():
    endpoint = Endpoint()
    bind = endpoint.call("Bind", bind_body())
    assert (bind.status, bind.code) == (0, 0) and bind.server_guid == endpoint.mapi.nspi.server_guid
    assert set(endpoint.cookies) == {"MapiContext", "MapiSequence"}
    special = endpoint.call("GetSpecialTable", special_table_body())
    names = [dict(values).get(PR_DISPLAY_NAME_W) for values in special.values]
    assert names == [c.obj.display_name for c in endpoint.mapi.nspi.book.containers]
    assert "All Rooms" in names
    rows = endpoint.call("QueryRows", query_rows_body(GAL_COLUMNS))
    assert rows.code == 0 and rows.columns == GAL_COLUMNS
    current, total, expected = rpc_rows(GAL_COLUMNS)
    assert rows.rows == expected and len(expected) == total >= 3
    assert rows.stat[2] == current == ndr.MID_END_OF_TABLE and rows.stat[5] == total
    assert any(row[1] == BOB.email for row in rows.rows)
    titles = {row[4] for row in rows.rows}                # flagged rows (no title) and plain ones
    assert ("error", nspi_core.NOT_FOUND) in titles and "Engineer" in titles


def test_resolve_dn_to_mid_get_props_and_urls():
    endpoint = Endpoint()
    endpoint.call("Bind", bind_body())
    resolved = endpoint.call("ResolveNames", resolve_names_body(["bob", "nobody-here"],
                                                                [PR_DISPLAY_NAME_W, PR_SMTP_W]))
    assert resolved.mids[1] == ndr.MID_UNRESOLVED and resolved.mids[0] not in (ndr.MID_UNRESOLVED, ndr.MID_AMBIGUOUS)
    assert resolved.rows == [[BOB.display_name, BOB.email]]
    assert endpoint.events[-1] == {"kind": "nspi_resolve", "names": ["bob", "nobody-here"], "mids": resolved.mids}
    mids = endpoint.call("DNToMId", dn_to_mid_body([ORG.legacy_dn(BOB), "/o=Nowhere/cn=x"])).mids
    assert mids == [resolved.mids[0], 0]
    props = endpoint.call("GetProps", get_props_body(mids[0], [PR_SMTP_W, 0x6666001F]))   # the second: no value
    assert props.code == nspi_core.ERRORS_RETURNED
    assert props.values == [[(PR_SMTP_W, BOB.email), (0x6666000A, ("error", nspi_core.NOT_FOUND))]]
    mailbox_url = endpoint.call("GetMailboxUrl", url_body(ORG.server_dn(BOB)))
    assert mailbox_url.url == f"{MAPI_BASE}emsmdb/?MailboxId={ORG.personal_server(BOB)}"
    assert endpoint.call("GetMailboxUrl", url_body("/o=Nowhere/cn=Servers/cn=x")).code == nspi_core.NOT_FOUND
    ab_url = endpoint.call("GetAddressBookUrl", url_body(ORG.legacy_dn(ALICE)))
    assert ab_url.url == f"{MAPI_BASE}nspi/?MailboxId={ORG.personal_server(ALICE)}"
    assert endpoint.call("Unbind", unbind_body()).code == nspi_core.UNBIND_SUCCESS
    assert endpoint.cookies["MapiContext"] == ""


def test_prop_list_columns_compare_resort_and_update_stat_answer_as_the_rpc_core():
    endpoint = Endpoint()
    endpoint.call("Bind", bind_body())
    core = endpoint.mapi.nspi
    gal = endpoint.call("QueryRows", query_rows_body([PR_DISPLAY_NAME_W]))
    mids = [core.book.by_mailbox(BOB).mid, core.book.by_mailbox(ALICE).mid]
    assert endpoint.call("GetPropList", prop_list_body(mids[0])).columns == core.prop_list(mids[0], 1252)
    assert endpoint.call("GetPropList", prop_list_body(0x7FFFFFF0)).code == nspi_core.NOT_FOUND
    columns = endpoint.call("QueryColumns", query_columns_body()).columns
    assert columns == core.query_columns(True) and PR_DISPLAY_NAME_W in columns
    members = core.book.container(0).members
    compared = endpoint.call("CompareMIds", compare_mids_body(*mids))
    assert compared.result == members.index(mids[0]) - members.index(mids[1]) != 0
    assert endpoint.call("CompareMIds", compare_mids_body(mids[0], 0x7FFFFFF0)).code == nspi_core.server.GENERAL_FAILURE
    resorted = endpoint.call("ResortRestriction", resort_body([mids[0], mids[1], 0x7FFFFFF0], current=mids[0]))
    assert resorted.mids == sorted(mids, key=lambda m: core.book.get(m).display_name.lower())
    assert resorted.stat[2] == mids[0]                              # CurrentRec kept
    moved = endpoint.call("UpdateStat", update_stat_body(2))
    assert moved.result == 2 and moved.stat[2] == members[2] and moved.stat[4] == 2 and len(gal.rows) > 2


def test_get_matches_with_anr_or_content_restriction():
    endpoint = Endpoint()
    endpoint.call("Bind", bind_body())
    # PidTagAnr = "bo" OR PidTagSmtpAddress contains "ROOM" (FL_SUBSTRING | FL_IGNORECASE), as the RPC test asks
    filter_ = or_restriction(property_restriction(4, 0x360C001F, "bo"), content_restriction(1, 1, PR_SMTP_W, "ROOM"))
    matches = endpoint.call("GetMatches", get_matches_body(filter_, 10, [PR_DISPLAY_NAME_W]))
    assert matches.code == 0 and [row[0] for row in matches.rows] == ["Bob Builder", "Conference Room 1"]
    assert matches.mids == [endpoint.mapi.nspi.book.by_mailbox(BOB).mid, matches.mids[1]]
    assert matches.stat[2] == matches.mids[0]                       # the STAT points at the first match
    too_many = endpoint.call("GetMatches", get_matches_body(filter_, 1, [PR_DISPLAY_NAME_W]))
    assert too_many.code == nspi_core.TABLE_TOO_BIG and too_many.mids is None
    assert endpoint.post("GetMatches", get_matches_body(b"\x63", 10, None)).response_code == 12   # no such type


def test_the_nspi_rows_fault_edits_the_rows_over_mapi_http_as_over_rpc():
    rows_fault = catalog()["mailbox.nspi-rows"]
    plain = Endpoint()
    plain.call("Bind", bind_body())
    gal = plain.call("QueryRows", query_rows_body([PR_DISPLAY_NAME_W, PR_SMTP_W, PR_DISPLAY_TYPE])).rows
    # SMTP dropped, PR_DISPLAY_TYPE retyped (the column then goes as PtypUnspecified), names other text, a row of
    # errors added: each as the spec-built client reads it
    edited = Endpoint(rows_fault(cells=[{"action": "drop", "column": 1}, {"action": "type", "column": 1,
                                                                          "value": "binary"},
                                        {"action": "text", "column": 0, "value": "\U0001F600"}], rows="error-row"))
    edited.call("Bind", bind_body())
    rows = edited.call("QueryRows", query_rows_body([PR_DISPLAY_NAME_W, PR_SMTP_W, PR_DISPLAY_TYPE]))
    assert rows.code == 0 and rows.columns == [PR_DISPLAY_NAME_W, PR_DISPLAY_TYPE & 0xFFFF0000]
    assert rows.rows == [["\U0001F600", b""]] * len(gal) + [[("error", nspi_core.NOT_FOUND)] * 2] and len(gal) >= 3
    # an operation of its own: ResolveNames rows twice, GetMatches cells as errors, QueryRows left alone
    twice = Endpoint(rows_fault(rows="duplicate", operation="resolve-names"),
                     rows_fault(cells=[{"action": "error", "column": 0, "value": 0x80004005}],
                                operation="get-matches"))
    twice.call("Bind", bind_body())
    resolved = twice.call("ResolveNames", resolve_names_body(["bob"], [PR_DISPLAY_NAME_W, PR_SMTP_W]))
    assert resolved.rows == [[BOB.display_name, BOB.email]] * 2
    matches = twice.call("GetMatches", get_matches_body(property_restriction(4, 0x360C001F, "bo"), 10,
                                                        [PR_DISPLAY_NAME_W]))
    assert matches.columns == [PR_DISPLAY_NAME_W] and matches.rows == [[("error", 0x80004005)]]
    assert twice.call("QueryRows", query_rows_body([PR_DISPLAY_NAME_W, PR_SMTP_W, PR_DISPLAY_TYPE])).rows == gal


def test_transport_errors_answer_with_their_x_response_code():
    endpoint = Endpoint()
    assert endpoint.post("QueryRows", query_rows_body(GAL_COLUMNS)).response_code == 13      # no MapiContext
    endpoint.call("Bind", bind_body())
    stale = dict(endpoint.cookies)
    endpoint.call("GetSpecialTable", special_table_body())
    wrong = endpoint.post("QueryRows", query_rows_body(GAL_COLUMNS), cookies=stale)
    assert wrong.response_code == 15 and wrong.chunks == () and b"Invalid sequence" in wrong.body
    assert endpoint.post("QueryRows", query_rows_body(GAL_COLUMNS) + b"\x00").response_code == 12
    assert endpoint.post("SeekEntries").response_code == 5
    assert endpoint.post("GetProps", get_props_body(1, [PR_SMTP_W]), mailbox=BOB).response_code == 11
    refused = Endpoint().call("Bind", bind_body(codepage=ndr.CP_WINUNICODE))
    assert refused.code == nspi_core.server.INVALID_CODEPAGE


# ---- against a real server ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = start_mapi_http_server(tmp_path_factory, "mapinspi")
    yield server
    server.stop()


def client(served, user="alice"):
    password = served.user(user)["password"] if user else ""
    return MapiHttpClient(served.host, served.https_port, served.ca_file, f"{ALICE.guid}@contoso.test",
                          user, password, endpoint="nspi")


def test_address_book_end_to_end_against_a_real_server(served):
    mapi = client(served)
    bind = mapi.post("Bind", bind_body())
    assert bind.status == 200 and bind.response_code == 0 and bind.headers["Transfer-Encoding"] == "chunked"
    assert parse_response("Bind", bind.body).code == 0 and set(mapi.cookies) == {"MapiContext", "MapiSequence"}
    special = parse_response("GetSpecialTable", mapi.post("GetSpecialTable", special_table_body()).body)
    assert special.code == 0 and special.values
    stale = mapi.cookies["MapiSequence"]
    rows = parse_response("QueryRows", mapi.post("QueryRows", query_rows_body(GAL_COLUMNS)).body)
    assert rows.code == 0 and rows.rows == rpc_rows(GAL_COLUMNS)[2]
    resolved = parse_response("ResolveNames", mapi.post("ResolveNames", resolve_names_body(
        ["bob"], [PR_SMTP_W])).body)
    assert resolved.rows == [[BOB.email]]
    url = parse_response("GetMailboxUrl", mapi.post("GetMailboxUrl", url_body(ORG.server_dn(ALICE))).body).url
    port = "" if served.https_port == 443 else f":{served.https_port}"
    assert url == f"https://{ORG.mail_host}{port}/mapi/emsmdb/?MailboxId={ORG.personal_server(ALICE)}"
    mapi.cookies["MapiSequence"] = stale
    wrong = mapi.post("QueryRows", query_rows_body(GAL_COLUMNS))
    assert (wrong.status, wrong.response_code) == (200, 15)


def test_address_book_without_credentials_is_challenged(served):
    anonymous = client(served, None).post("Bind", bind_body())
    assert anonymous.status == 401 and "Basic" in " ".join(anonymous.headers.get_all("WWW-Authenticate"))


def test_every_truncated_request_body_is_an_invalid_request_body():
    endpoint = Endpoint()
    endpoint.call("Bind", bind_body())
    filter_ = or_restriction(property_restriction(4, 0x360C001F, "bo"), content_restriction(1, 1, PR_SMTP_W, "x"))
    bodies = {"QueryRows": query_rows_body(GAL_COLUMNS, explicit=[1, 2]), "GetSpecialTable": special_table_body(),
              "ResolveNames": resolve_names_body(["bob"], [PR_SMTP_W]), "DNToMId": dn_to_mid_body(["/o=x"]),
              "GetProps": get_props_body(1, [PR_SMTP_W]), "GetMatches": get_matches_body(filter_, 5, [PR_SMTP_W]),
              "GetPropList": prop_list_body(1), "QueryColumns": query_columns_body(),
              "CompareMIds": compare_mids_body(1, 2), "ResortRestriction": resort_body([1, 2]),
              "UpdateStat": update_stat_body(1), "GetMailboxUrl": url_body("/o=x"), "Unbind": unbind_body()}
    for kind, body in bodies.items():
        for size in range(len(body)):           # each proper prefix: cut inside some field
            answer = endpoint.post(kind, body[:size])
            assert answer.response_code == 12, (kind, size)
        assert endpoint.post(kind, body + b"\x00").response_code == 12, kind      # trailing bytes
