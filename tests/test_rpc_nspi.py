"""NSPI handlers driven by impacket's own client code: exchanger.py's NSPIAttacks/ExchangerHelper and the hNspi*
helpers run unchanged over InProcessDce, so requests are built and responses parsed exactly as in a real run."""
import argparse
import importlib.util
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from impacket.dcerpc.v5 import nspi
from impacket.dcerpc.v5.dtypes import NULL
from impacket.dcerpc.v5.rpcrt import DCERPCException

from harness.org import load_org
from harness.rpc import nspi as server
from harness.rpc.addressbook import FIRST_RECIPIENT_MID, AddressBook
from harness.rpc.base import (
    NCA_S_FAULT_CONTEXT_MISMATCH,
    NCA_S_OP_RNG_ERROR,
    RPC_X_BAD_STUB_DATA,
    CallContext,
    InProcessDce,
    RpcFault,
)
from tests.support.clients import EXCHANGER, nspi_handle
from tests.support.fuzz import SHARED_SESSION_FUZZ, tolerant_caller

ORG = load_org()
BOOK = AddressBook(ORG)
NSPI = server.Nspi(ORG)
PR_DISPLAY_NAME_W, PR_DISPLAY_NAME_A, PR_SMTP_W = 0x3001001F, 0x3001001E, 0x39FE001F
PR_TITLE_W, PR_ENTRYID = 0x3A17001F, 0x0FFF0102


def make_ctx(user="alice", events=None):
    return CallContext(org=ORG, mailbox=ORG.find(user) if user else None, auth_level=6, association={},
                       record=lambda kind, **fields: (events.append({"kind": kind, **fields})
                                                      if events is not None else None),
                       rng=random.Random(7))


def bound(user="alice", events=None):
    """An in-process impacket DCE/RPC client with an NSPI handle, bound as exchanger binds (CP_TELETEX)."""
    dce = InProcessDce(NSPI, make_ctx(user, events))
    return dce, nspi_handle(dce)


def container_mid(name):
    return next(c.container_id for c in BOOK.containers if c.obj.display_name == name)


# ---- exchanger.py itself ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exchanger():
    if EXCHANGER is None:
        pytest.skip("impacket's exchanger.py is not installed")
    spec = importlib.util.spec_from_file_location("exchanger_under_test", EXCHANGER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def helper(exchanger):
    """exchanger's ExchangerHelper with its NSPIAttacks connected to our handler instead of RPC over HTTP."""
    attacks = exchanger.NSPIAttacks()
    dce, handle = bound()
    attacks._NSPIAttacks__dce = dce
    attacks._NSPIAttacks__handler = handle
    helper = exchanger.ExchangerHelper("contoso", "alice", "unused", "127.0.0.1")
    helper.exch = attacks
    yield helper
    attacks.disconnect()


def options(**values):
    defaults = dict(output_type="hex", lookup_type="MINIMAL", name=None, guid=None, rows_per_request=50,
                    count=False, guid_file=None)
    return argparse.Namespace(**{**defaults, **values})


def test_list_tables_count_prints_the_hierarchy_with_totals(helper, capsys):
    helper.nspi_list_tables(options(count=True))
    out = capsys.readouterr().out
    blocks = [b.strip().splitlines() for b in out.strip().split("\n\n")]
    assert blocks[0] == ["Default Global Address List", "TotalRecs: 8", "Guid: None"]
    by_name = {lines[0].strip(): lines for lines in blocks}
    assert set(by_name) == {"Default Global Address List", "All Address Lists", "All Contacts", "All Groups",
                            "All Rooms", "All Users"}
    assert by_name["All Users"][1].strip() == "TotalRecs: 8"
    assert by_name["All Rooms"][1].strip() == "TotalRecs: 1"
    assert by_name["All Contacts"][1].strip() == "TotalRecs: 0"
    rooms = next(c for c in BOOK.containers if c.obj.display_name == "All Rooms")
    assert by_name["All Rooms"][2].strip() == f"Guid: {rooms.obj.guid}"
    # children are printed under their parent, indented one level
    assert "\n    All Users\n" in out and "\nAll Address Lists\n" in out


def test_dump_gal_minimal_pages_to_the_end(helper, capsys):
    helper.nspi_dump_tables(options(name="GAL", rows_per_request=2))
    out = capsys.readouterr().out
    mails = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("mail: ")]
    assert mails == ["alice@contoso.test", "bob@contoso.test", "carol@contoso.test", "confroom1@contoso.test",
                     "dave@contoso.test", "erin@contoso.test", "frank@contoso.test",
                     "helpdesk@contoso.test"]     # sorted by display name, 4 round trips
    alice = BOOK.by_mailbox(ORG.find("alice"))
    assert f"objectGUID: {alice.guid}" in out
    assert "mailNickname: alice" in out and "whenCreated: 2019-11-04" in out


def test_dump_table_by_name_and_by_guid(helper, capsys):
    helper.nspi_dump_tables(options(name="All Rooms"))
    by_name = capsys.readouterr().out
    assert "mail: confroom1@contoso.test" in by_name and "alice" not in by_name
    rooms = next(c for c in BOOK.containers if c.obj.display_name == "All Rooms")
    helper.exch.anyExistingContainerID = -1
    helper.nspi_dump_tables(options(guid=str(rooms.obj.guid)))
    assert capsys.readouterr().out == by_name


def test_dump_extended_and_full_use_explicit_tables(helper, capsys):
    helper.nspi_dump_tables(options(name="All Users", lookup_type="EXTENDED"))
    extended = capsys.readouterr().out
    assert "title: Engineer" in extended and "department: Research" in extended
    assert "proxyAddresses: ['SMTP:carol@contoso.test', 'smtp:c.jones@contoso.test']" in extended
    assert f"PR_INSTANCE_KEY: {FIRST_RECIPIENT_MID}" in extended
    helper.nspi_dump_tables(options(name="All Users", lookup_type="FULL"))
    full = capsys.readouterr().out
    assert "homeMDB: " + ORG.mdb_dn(ORG.find("bob")) in full
    assert "PR_EMAIL_ADDRESS: " + ORG.legacy_dn(ORG.find("bob")) in full


def test_guid_known_finds_a_recipient_and_reports_unknown_guids(helper, capsys):
    carol = BOOK.by_mailbox(ORG.find("carol"))
    helper.nspi_guid_known(options(guid=str(carol.guid)))
    out = capsys.readouterr().out
    assert "mail: carol@contoso.test" in out and "bob" not in out
    with pytest.raises(Exception, match="Object with specified GUID not found"):
        helper.nspi_guid_known(options(guid="00112233-4455-6677-8899-aabbccddeeff"))


def test_dnt_lookup_prints_existing_mids_only(helper, capsys):
    helper.nspi_dnt_lookup(options(lookup_type="EXTENDED", start_dnt=0x0EFE, stop_dnt=0x1010, rows_per_request=350))
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "# MIds 3838-4112:"
    assert out.count("mail: ") == 8 and "All Rooms" in out
    helper.nspi_dnt_lookup(options(lookup_type="GUIDS", start_dnt=10, stop_dnt=20, rows_per_request=350))
    assert capsys.readouterr().out == "# MIds 10-20:\n"


# ---- impacket request classes, call by call -----------------------------------------------------------------
def query_rows(dce, handle, tags, container=0, count=50, codepage=nspi.CP_TELETEX, **kwargs):
    stat = nspi.STAT()
    stat["CodePage"] = codepage
    stat["ContainerID"] = container
    return nspi.hNspiQueryRows(dce, handle, pStat=stat, Count=count, pPropTags=tags, **kwargs)


def test_query_rows_answers_both_string_forms_and_error_values():
    dce, handle = bound()
    response = query_rows(dce, handle, [PR_DISPLAY_NAME_W, PR_DISPLAY_NAME_A, 0x30010000, PR_TITLE_W],
                          container=container_mid("All Rooms"))
    assert response["pStat"]["CurrentRec"] == nspi.MID_END_OF_TABLE
    assert response["pStat"]["TotalRecs"] == 1
    values = response["ppRows"]["aRow"][0]["lpProps"]
    assert [v["ulPropTag"] for v in values] == [PR_DISPLAY_NAME_W, PR_DISPLAY_NAME_A, PR_DISPLAY_NAME_A, 0x3A17000A]
    assert values[0]["Value"]["lpszW"] == "Conference Room 1\x00"
    assert values[1]["Value"]["lpszA"] == "Conference Room 1\x00"
    assert values[3]["Value"]["err"] == server.NOT_FOUND
    unicode = query_rows(dce, handle, [0x30010000], codepage=nspi.CP_WINUNICODE)
    assert unicode["ppRows"]["aRow"][0]["lpProps"][0]["ulPropTag"] == PR_DISPLAY_NAME_W


def test_display_types_follow_the_mailbox_kind():
    dce, handle = bound()
    response = query_rows(dce, handle, [0x0FFE0003, 0x39000003, 0x39050003, 0x3A00001F])
    kinds = {row[0x3A00001F]: (row[0x0FFE0003], row[0x39000003], row[0x39050003])
             for row in nspi.simplifyPropertyRowSet(response["ppRows"])}
    assert kinds["alice"] == (6, 0, 0x40000000)
    assert kinds["helpdesk"] == (6, 0, 0) and kinds["confroom1"] == (6, 0, 7)


def test_query_rows_walks_with_current_rec_and_delta():
    dce, handle = bound()
    first = query_rows(dce, handle, [PR_SMTP_W], count=2)
    assert first["pStat"]["NumPos"] == 2 and first["pStat"]["CurrentRec"] == BOOK.by_mailbox(ORG.find("carol")).mid
    stat = first["pStat"]
    stat["Delta"] = 1
    rest = nspi.hNspiQueryRows(dce, handle, pStat=stat, Count=50, pPropTags=[PR_SMTP_W])
    smtp = [row["lpProps"][0]["Value"]["lpszW"] for row in rest["ppRows"]["aRow"]]
    assert smtp == ["confroom1@contoso.test\x00", "dave@contoso.test\x00", "erin@contoso.test\x00",
                    "frank@contoso.test\x00", "helpdesk@contoso.test\x00"]
    assert rest["pStat"]["CurrentRec"] == nspi.MID_END_OF_TABLE and rest["pStat"]["NumPos"] == 8


def test_explicit_table_rows_and_ephemeral_entry_ids():
    dce, handle = bound()
    alice = BOOK.by_mailbox(ORG.find("alice"))
    response = query_rows(dce, handle, [PR_ENTRYID, PR_DISPLAY_NAME_W], lpETable=[alice.mid, 0x7777],
                          dwFlags=nspi.fEphID)
    rows = nspi.simplifyPropertyRowSet(response["ppRows"])
    assert isinstance(rows[0][PR_ENTRYID], nspi.EphemeralEntryID)
    assert rows[0][PR_ENTRYID]["MId"] == alice.mid
    assert rows[0][PR_ENTRYID]["ProviderUID"] == BOOK.server_guid.bytes_le
    assert rows[1] == {0x0FFF000A: server.NOT_FOUND, 0x3001000A: server.NOT_FOUND}
    permanent = nspi.simplifyPropertyRowSet(query_rows(dce, handle, [PR_ENTRYID], lpETable=[alice.mid])["ppRows"])
    assert str(permanent[0][PR_ENTRYID]) == ORG.legacy_dn(ORG.find("alice"))


def test_get_props_in_impacket_and_idl_layouts():
    dce, handle = bound()
    bob = BOOK.by_mailbox(ORG.find("bob"))
    via_impacket = nspi.hNspiGetProps(dce, handle, CurrentRec=bob.mid, pPropTags=[PR_DISPLAY_NAME_W, PR_TITLE_W])
    props = nspi.simplifyPropertyRow(via_impacket["ppRows"])
    assert props == {PR_DISPLAY_NAME_W: "Bob Builder", PR_TITLE_W: "Site Manager"}
    request = server.NspiGetPropsIdl()
    request["hRpc"] = handle
    request["dwFlags"] = 0
    request["pStat"]["CurrentRec"] = bob.mid
    request["pStat"]["CodePage"] = nspi.CP_TELETEX
    request["pPropTags"] = NULL
    stub = NSPI.call(9, request.getData(), dce.ctx)
    everything = nspi.simplifyPropertyRow(nspi.NspiGetPropsResponse(stub)["ppRows"])
    assert everything[0x39FE001E] == "bob@contoso.test"        # 8-bit strings when the code page is not Unicode
    assert everything[0x8C6D0102] == str(bob.guid)
    with pytest.raises(DCERPCException) as missing:           # ErrorsReturned: a row with error values
        nspi.hNspiGetProps(dce, handle, CurrentRec=bob.mid, pPropTags=[0x3A08001F])
    assert missing.value.get_error_code() == server.ERRORS_RETURNED


def test_special_table_in_the_idl_layout_outlook_sends():
    dce, handle = bound()
    request = server.NspiGetSpecialTableIdl()
    request["hRpc"] = handle
    request["dwFlags"] = 0                     # 8-bit display names this time
    request["pStat"]["CodePage"] = 1252
    request["lpVersion"] = 0
    stub = request.getData()
    assert len(stub) == 64
    response = nspi.NspiGetSpecialTableResponse(NSPI.call(12, stub, dce.ctx))
    rows = nspi.simplifyPropertyRowSet(response["ppRows"])
    assert [row[PR_DISPLAY_NAME_A] for row in rows][:2] == ["Default Global Address List", "All Address Lists"]
    assert response["lpVersion"] == NSPI.hierarchy_version


def test_dn_to_mid_prop_list_and_columns():
    dce, handle = bound()
    dave = BOOK.by_mailbox(ORG.find("dave"))
    mids = nspi.hNspiDNToMId(dce, handle, [ORG.legacy_dn(ORG.find("dave")), "/o=Nowhere/cn=x"])
    assert [m["Data"] for m in mids["ppOutMIds"]["aulPropTag"]] == [dave.mid, nspi.MID_UNRESOLVED]
    tags = [t["Data"] for t in nspi.hNspiGetPropList(dce, handle, dwMId=dave.mid)["ppOutMIds"]["aulPropTag"]]
    assert 0x3001001E in tags and 0x800F101E in tags and PR_TITLE_W & 0xFFFF0000 | 0x1E not in tags
    columns = [t["Data"] for t in nspi.hNspiQueryColumns(dce, handle)["ppColumns"]["aulPropTag"]]
    assert PR_SMTP_W in columns and 0x3A17001F in columns and not [c for c in columns if c & 0xFFFF == 0x1E]


def test_resolve_names_ambiguous_unresolved_and_guid_forms():
    dce, handle = bound()
    alice = BOOK.by_mailbox(ORG.find("alice"))
    response = nspi.hNspiResolveNamesW(dce, handle, pPropTags=[PR_SMTP_W],
                                       paStr=["ali", "c", "nobody", "c.jones@contoso.test",
                                              "/guid=" + alice.guid.bytes_le.hex()])
    mids = [m["Data"] for m in response["ppMIds"]["aulPropTag"]]
    carol = BOOK.by_mailbox(ORG.find("carol")).mid
    assert mids == [alice.mid, nspi.MID_AMBIGUOUS, nspi.MID_UNRESOLVED, carol, alice.mid]
    smtp = [r[PR_SMTP_W] for r in nspi.simplifyPropertyRowSet(response["ppRows"])]
    assert smtp == ["alice@contoso.test", "carol@contoso.test", "alice@contoso.test"]
    eight_bit = nspi.hNspiResolveNames(dce, handle, pPropTags=[0x39FE001E], paStr=["helpdesk"])
    assert nspi.simplifyPropertyRowSet(eight_bit["ppRows"]) == [{0x39FE001E: "helpdesk@contoso.test"}]


def test_seek_entries_positions_on_the_first_name_at_or_after_the_target():
    dce, handle = bound()
    request = server.NspiSeekEntriesIdl()
    request["hRpc"] = handle
    request["pStat"]["CodePage"] = nspi.CP_TELETEX
    request["pTarget"]["ulPropTag"] = PR_DISPLAY_NAME_W
    request["pTarget"]["Value"]["tag"] = 0x1F
    request["pTarget"]["Value"]["lpszW"] = "D\x00"
    request["lpETable"] = NULL
    request["pPropTags"] = server._tag_array([PR_SMTP_W])
    response = nspi.NspiSeekEntriesResponse(NSPI.call(4, request.getData(), dce.ctx))
    assert response["ErrorCode"] == 0
    assert response["pStat"]["CurrentRec"] == BOOK.by_mailbox(ORG.find("dave")).mid
    assert response["pStat"]["NumPos"] == 4
    smtp = [r[PR_SMTP_W] for r in nspi.simplifyPropertyRowSet(response["ppRows"])]
    assert smtp == ["dave@contoso.test", "erin@contoso.test", "frank@contoso.test", "helpdesk@contoso.test"]


def restriction(kind, **arms):
    res = nspi.Restriction_r()
    res["rt"] = kind
    res["res"]["tag"] = kind
    for name, value in arms.items():
        res["res"][name] = value
    return res


def string_value(tag, text):
    value = nspi.PropertyValue_r()
    value["ulPropTag"] = tag
    value["Value"]["tag"] = tag & 0xFFFF
    value["Value"]["lpszW"] = text + "\x00"
    return value


def test_get_matches_with_anr_and_content_restrictions():
    dce, handle = bound()
    anr = nspi.PropertyRestriction_r()
    anr["relop"] = server.RELOP_EQ
    anr["ulPropTag"] = 0x360C001F
    anr["lpProp"] = string_value(0x360C001F, "bo")
    content = nspi.ContentRestriction_r()
    content["ulFuzzyLevel"] = server.FL_SUBSTRING
    content["ulPropTag"] = PR_SMTP_W
    content["lpProp"] = string_value(PR_SMTP_W, "ROOM")
    either = nspi.OrRestriction_r()
    either["lpRes"].append(restriction(4, resProperty=anr))
    either["lpRes"].append(restriction(3, resContent=content))
    either["cRes"] = 2
    request = server.NspiGetMatches()
    request["hRpc"] = handle
    request["pStat"]["CodePage"] = nspi.CP_TELETEX
    request["pReserved"] = NULL
    request["Filter"] = restriction(1, resOr=either)
    request["lpPropName"] = NULL
    request["ulRequested"] = 10
    request["pPropTags"] = server._tag_array([PR_DISPLAY_NAME_W])
    response = server.NspiGetMatchesResponse(NSPI.call(5, request.getData(), dce.ctx))
    assert response["ErrorCode"] == 0
    names = [r[PR_DISPLAY_NAME_W] for r in nspi.simplifyPropertyRowSet(response["ppRows"])]
    assert names == ["Bob Builder", "Conference Room 1"]
    request["ulRequested"] = 1
    too_many = server.NspiGetMatchesResponse(NSPI.call(5, request.getData(), dce.ctx))
    assert too_many["ErrorCode"] == server.TABLE_TOO_BIG


def test_resort_restriction_and_compare_mids():
    dce, handle = bound()
    helpdesk, alice = (BOOK.by_mailbox(ORG.find(n)).mid for n in ("helpdesk", "alice"))
    request = server.NspiResortRestriction()
    request["hRpc"] = handle
    request["pStat"]["CodePage"] = nspi.CP_TELETEX
    request["pInMIds"] = server._tag_array([helpdesk, 0x9999, alice])
    request["ppOutMIds"] = NULL
    response = server.NspiResortRestrictionResponse(NSPI.call(6, request.getData(), dce.ctx))
    assert [m["Data"] for m in response["ppOutMIds"]["aulPropTag"]] == [alice, helpdesk]
    compare = nspi.NspiCompareMIds()
    compare["hRpc"] = handle
    compare["MId1"], compare["MId2"] = helpdesk, alice
    assert nspi.NspiCompareMIdsResponse(NSPI.call(10, compare.getData(), dce.ctx))["plResult"] == 7


def test_bind_requires_a_user_and_unbind_ends_the_handle():
    events = []
    with pytest.raises(DCERPCException) as anonymous:
        bound(user=None)
    assert anonymous.value.get_error_code() == server.LOGON_FAILED
    dce, handle = bound(events=events)
    assert nspi.hNspiUnbind(dce, handle)["ErrorCode"] == server.UNBIND_SUCCESS
    with pytest.raises(DCERPCException) as stale:
        nspi.hNspiQueryColumns(dce, handle)
    assert stale.value.get_error_code() == NCA_S_FAULT_CONTEXT_MISMATCH
    assert {"kind": "rpc_call", "interface": "nspi", "opnum": 1, "op": "NspiUnbind", "status": "0x00000001"} \
        in events
    assert events[0]["kind"] == "nspi_bind" and events[0]["user"] == "alice"


def test_unknown_opnum_and_unparseable_stub_fault():
    ctx = make_ctx()
    with pytest.raises(RpcFault) as unknown:
        NSPI.call(15, b"", ctx)
    assert unknown.value.status == NCA_S_OP_RNG_ERROR
    with pytest.raises(RpcFault) as garbage:
        NSPI.call(3, b"\x01\x02", ctx)
    assert garbage.value.status == RPC_X_BAD_STUB_DATA


# ---- robustness ---------------------------------------------------------------------------------------------
def valid_stubs(handle):
    """One well-formed request stub per opnum, built with the request classes' defaults."""
    stubs = {}
    requests = [request_class() for opnum, (request_class, _) in nspi.OPNUMS.items() if opnum != 4]
    seek = server.NspiSeekEntriesIdl()
    seek["pTarget"]["ulPropTag"] = PR_DISPLAY_NAME_W
    seek["pTarget"]["Value"]["tag"] = 0x1F
    seek["pTarget"]["Value"]["lpszW"] = "b\x00"
    matches = server.NspiGetMatches()
    matches["Filter"] = restriction(8, resExist=nspi.ExistRestriction_r())
    matches["lpPropName"] = NULL
    for request in requests + [seek, matches, server.NspiResortRestriction()]:
        for name in ("hRpc", "contextHandle"):
            if name in request.fields and request.opnum != 0:
                request[name] = handle
        stubs[request.opnum] = request.getData()
    return stubs


@pytest.fixture(scope="module")
def fuzz_session():
    """A bound session shared by the fuzz examples: (ctx, handle bytes, a valid stub per opnum)."""
    ctx = make_ctx()
    handle = nspi_handle(InProcessDce(NSPI, ctx))
    stubs = valid_stubs(handle)
    del stubs[1]            # unbinding would end the shared session
    return ctx, handle.getData(), stubs


call_tolerantly = tolerant_caller(NSPI)
FUZZ = SHARED_SESSION_FUZZ


@FUZZ
@given(opnum=st.sampled_from(sorted(NSPI.opnums)), tail=st.binary(max_size=300))
def test_random_stubs_with_a_live_handle_end_in_a_response_or_fault(fuzz_session, opnum, tail):
    ctx, handle, _ = fuzz_session
    if opnum == 1:
        return          # unbinding would end the shared session
    call_tolerantly(opnum, handle + tail if opnum != 0 else tail, ctx)


@FUZZ
@given(data=st.data())
def test_truncated_valid_stubs_end_in_a_response_or_fault(fuzz_session, data):
    ctx, _, stubs = fuzz_session
    opnum = data.draw(st.sampled_from(sorted(stubs)))
    stub = stubs[opnum]
    cut = data.draw(st.integers(min_value=0, max_value=len(stub)))
    call_tolerantly(opnum, stub[:cut], ctx)


def mutate_and_call(fuzz_session, data):
    ctx, _, stubs = fuzz_session
    opnum = data.draw(st.sampled_from(sorted(stubs)))
    stub = bytearray(stubs[opnum])
    start = 0 if opnum == 0 else 20          # keep the context handle so the parsing goes deep
    for _ in range(data.draw(st.integers(1, 4))):
        stub[data.draw(st.integers(start, len(stub) - 1))] = data.draw(st.integers(0, 255))
    call_tolerantly(opnum, bytes(stub), ctx)


@FUZZ
@given(data=st.data())
def test_mutated_valid_stubs_end_in_a_response_or_fault(fuzz_session, data):
    mutate_and_call(fuzz_session, data)


@pytest.mark.slow
@settings(FUZZ, max_examples=5000)
@given(data=st.data())
def test_mutated_valid_stubs_soak(fuzz_session, data):
    mutate_and_call(fuzz_session, data)


@FUZZ
@given(opnum=st.integers(min_value=0, max_value=25), stub=st.binary(max_size=200))
def test_random_stubs_without_a_session_fault(opnum, stub):
    call_tolerantly(opnum, stub, make_ctx())


def test_mids_are_stable_per_org():
    again = AddressBook(load_org())
    assert [(o.mid, o.guid, o.dn) for o in again.recipients] == [(o.mid, o.guid, o.dn) for o in BOOK.recipients]
    assert struct.unpack("<L", BOOK.by_mailbox(ORG.find("alice")).props[0x0FF60102])[0] == FIRST_RECIPIENT_MID
