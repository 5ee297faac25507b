"""Microsoft's EWS schema: the validator the suite runs every EWS answer through (harness/protocols/ews_schema.py,
harness/services/ews_check.py), where the schema is looked up, and /EWS/ serving the files when configured.

mockex does not ship Microsoft's files. The check's own tests use a small schema written for them
(tests/support/ews_schema_minimal) and always run; those that need Microsoft's (a client compiling it from a served
mockex, every shape of answer validating) run when the session finds it ($MOCKEX_EWS_SCHEMA_DIR, else
../shared/ews-schema beside the checkout) and are skipped otherwise."""
from __future__ import annotations

import base64
import functools
import json
import os
import random
from typing import Iterator, List

import pytest
import requests
from lxml import etree
from twisted.internet import task

from harness.cli import build_parser
from harness.org import load_org
from harness.protocols import ews, ews_schema
from harness.protocols.autodiscover import SiteUrls
from harness.protocols.http import ConnectionInfo, HttpRequest
from harness.services import ews_check
from harness.services.ews_stream import EwsStreamRunner
from harness.services.site import ExchangeSite
from harness.testing import Served, start_server
from harness.transcript import Transcript
from tests.support import ews_schema_check
from tests.support.clients import pin_names
from tests.support.ews import ALICE, BOB, ORG, SOAP, envelope, new_store

MINIMAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support", "ews_schema_minimal")
XS = "{http://www.w3.org/2001/XMLSchema}"
GET_INBOX = ('<m:GetFolder><m:FolderShape><t:BaseShape>AllProperties</t:BaseShape></m:FolderShape><m:FolderIds>'
             '<t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder>')
XML_NAMESPACE = (b'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" '   # what a client brings for xml:lang
                 b'targetNamespace="http://www.w3.org/XML/1998/namespace">'
                 b'<xs:attribute name="lang" type="xs:string"/></xs:schema>')


@pytest.fixture(scope="module")
def official(pytestconfig: pytest.Config) -> str:
    """The directory of Microsoft's schema the session found, or the test is skipped."""
    found = ews_schema_check.schema_directory(pytestconfig)
    if found is None:
        pytest.skip(f"Microsoft's EWS schema not found (set {ews_schema.DIRECTORY_VARIABLE}; docs/ews.md)")
    return found


def _inbox_answer() -> bytes:
    return ews.respond_ews(ORG, new_store(), ALICE, envelope(GET_INBOX)).body


# ---- the check, on a schema written for these tests -------------------------------------------------------------
def test_an_answer_of_the_core_validates():
    assert ews_schema.problems(_inbox_answer(), MINIMAL) == []
    fault = ews.respond_ews(ORG, new_store(), ALICE, envelope("<m:NoSuchOperation/>"))
    assert fault.status == 500 and ews_schema.problems(fault.body, MINIMAL) == []   # the header is checked


def test_answers_that_break_the_schema_are_reported_with_the_element():
    """The check can fail: a wrong ResponseCode, elements out of schema order, a header attribute of the wrong type,
    a Body of no response at all."""
    body = _inbox_answer()
    wrong_code = body.replace(b">NoError<", b">AllGood<")
    assert any("ResponseCode" in p and "AllGood" in p for p in ews_schema.problems(wrong_code, MINIMAL))
    root = etree.fromstring(body)
    folder = root.find(f".//{{{ews.TYPES_NS}}}Folder")
    folder.append(folder.find(f"{{{ews.TYPES_NS}}}DisplayName"))   # DisplayName after UnreadCount
    out_of_order = etree.tostring(root)
    assert any(p.startswith("GetFolderResponse:") and "DisplayName" in p
               for p in ews_schema.problems(out_of_order, MINIMAL))
    bad_header = body.replace(b'MajorVersion="15"', b'MajorVersion="fifteen"')
    assert any(p.startswith("ServerVersionInfo:") for p in ews_schema.problems(bad_header, MINIMAL))
    assert ews_schema.problems(b"<s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'><s:Body>"
                               b"<x/></s:Body></s:Envelope>", MINIMAL)
    assert ews_schema.problems(b"not xml", MINIMAL) and ews_schema.problems(b"<html/>", MINIMAL)


def _check_into(monkeypatch: pytest.MonkeyPatch, records: str, schema: str) -> None:
    monkeypatch.setenv(ews_check.ENABLE_VARIABLE, records)
    monkeypatch.setenv(ews_check.SCHEMA_VARIABLE, schema)


def test_the_edge_check_records_invalid_answers_only_when_it_is_on(tmp_path, monkeypatch):
    good = ews.EwsAnswer(200, _inbox_answer(), "success", "", "EWS GetFolder")
    bad = ews.EwsAnswer(200, good.body.replace(b">NoError<", b">AllGood<"), "success", "", "EWS GetFolder")
    _check_into(monkeypatch, "0", MINIMAL)
    ews_check.check(bad)
    monkeypatch.setenv(ews_check.ENABLE_VARIABLE, str(tmp_path))
    monkeypatch.delenv(ews_check.SCHEMA_VARIABLE)
    ews_check.check(bad)
    assert os.listdir(tmp_path) == []
    _check_into(monkeypatch, str(tmp_path), MINIMAL)
    ews_check.check(good)
    assert os.listdir(tmp_path) == []
    ews_check.check(ews.EwsAnswer(200, b"", "success", "", "EWS GetStreamingEvents", chunks=(good.body, bad.body)))
    [name] = os.listdir(tmp_path)
    record = json.loads((tmp_path / name).read_text())
    assert record["detail"] == "EWS GetStreamingEvents" and "AllGood" in record["problems"][0]
    assert "test_the_edge_check_records" in record["test"] and record["body"].startswith("<?xml")
    [line] = ews_schema_check.read(str(tmp_path))
    assert "EWS GetStreamingEvents (HTTP 200)" in line and "AllGood" in line


class _QuietLog:
    def listen(self, listener) -> object:
        return lambda: None


class _BrokenStream:
    """A stream whose keep-alive and closing envelopes break the schema (a GetFolder answer with a wrong code)."""
    timeout_seconds, keep_alive_seconds, subscriptions, log = 60.0, 40.0, (), _QuietLog()

    def __init__(self, envelope: bytes):
        self.envelope = envelope

    def wants(self, event: object) -> bool:
        return False

    def status(self, status: str) -> bytes:
        return self.envelope

    def closing(self) -> List[bytes]:
        return [self.envelope]


class _ClockIO:
    def __init__(self, clock: task.Clock):
        self.call_later, self.written, self.ended = clock.callLater, [], False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def end(self) -> None:
        self.ended = True


def test_what_an_open_stream_sends_later_is_checked_too(tmp_path, monkeypatch):
    """Envelopes a served GetStreamingEvents sends after its answer's head (keep-alives, closing) are validated as
    they go out."""
    bad = _inbox_answer().replace(b">NoError<", b">AllGood<")
    _check_into(monkeypatch, str(tmp_path), MINIMAL)
    clock = task.Clock()
    io = _ClockIO(clock)
    EwsStreamRunner(_BrokenStream(bad), lambda *args, **kwargs: None, 1, ALICE).start(io)
    clock.advance(40)   # a keep-alive
    clock.advance(20)   # ConnectionTimeout: the closing envelope
    assert io.written == [bad, bad] and io.ended
    problems = ews_schema_check.read(str(tmp_path))
    assert len(problems) == 2 and all("EWS GetStreamingEvents (HTTP 200)" in p and "AllGood" in p for p in problems)


# ---- where the schema is found ------------------------------------------------------------------------------------
def test_the_schema_is_the_named_directory_else_the_shared_one_beside_the_checkout(tmp_path):
    checkout = tmp_path / "main"
    checkout.mkdir()
    assert ews_schema.find_directory(str(checkout), {}) is None
    shared = tmp_path / "shared" / "ews-schema"
    shared.mkdir(parents=True)
    assert ews_schema.find_directory(str(checkout), {}) == str(shared)
    assert ews_schema.find_directory(str(checkout), {ews_schema.DIRECTORY_VARIABLE: ""}) == str(shared)
    named = {ews_schema.DIRECTORY_VARIABLE: str(tmp_path / "elsewhere")}
    assert ews_schema.find_directory(str(checkout), named) == str(tmp_path / "elsewhere")
    deeper = tmp_path / "ci" / "clone"   # a clone made further down finds the nearest shared/ above it
    deeper.mkdir(parents=True)
    assert ews_schema.find_directory(str(deeper), {}) == str(shared)
    assert ews_schema.missing(str(shared)) == list(ews_schema.FILE_NAMES)
    assert ews_schema.missing(MINIMAL) == ["Services.wsdl"]


def test_serve_takes_the_schema_directory_from_its_option_or_the_variable_and_never_from_shared(monkeypatch):
    monkeypatch.delenv(ews_schema.DIRECTORY_VARIABLE, raising=False)
    assert build_parser().parse_args(["serve"]).ews_schema_dir is None
    assert build_parser().parse_args(["serve", "--ews-schema-dir", "/x"]).ews_schema_dir == "/x"
    monkeypatch.setenv(ews_schema.DIRECTORY_VARIABLE, "/y")
    assert build_parser().parse_args(["serve"]).ews_schema_dir == "/y"


def test_serve_refuses_a_schema_directory_lacking_a_file_before_it_listens(tmp_path):
    state = tmp_path / "state"
    with pytest.raises(RuntimeError, match=r"cannot start: EWS schema directory .*: no Services\.wsdl there"):
        start_server(str(tmp_path), "--ews-schema-dir", MINIMAL, "--state-dir", str(state))
    assert not state.exists()


# ---- /EWS/ serves the files, when configured ----------------------------------------------------------------------
WSDL = (b'<?xml version="1.0" encoding="utf-8"?>\r\n<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" '
        b'xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"><wsdl:service name="ExchangeServices"><wsdl:port>'
        b'<soap:address location="https://cas01.fabrikam.example/EWS/Exchange.asmx" /></wsdl:port></wsdl:service>'
        b'</wsdl:definitions>\r\n')


@pytest.fixture
def served_files(tmp_path) -> Iterator[str]:
    """A schema directory: the written-for-tests schema and a small WSDL naming another server's endpoint."""
    for name in ("messages.xsd", "types.xsd"):
        with open(os.path.join(MINIMAL, name), "rb") as source:
            (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + source.read())   # as Exchange's types.xsd: with a BOM
    (tmp_path / "Services.wsdl").write_bytes(WSDL)
    yield str(tmp_path)


def _get(site: ExchangeSite, path: str, method: str = "GET", authenticated: bool = True):
    mailbox = load_org().mailboxes[0]
    token = base64.b64encode(f"{mailbox.email}:{mailbox.password}".encode()).decode()
    headers = [("Host", "mail.contoso.test")] + ([("Authorization", f"Basic {token}")] if authenticated else [])
    return site.handle(HttpRequest(method=method, target=path, path=path, query="", headers=headers, body=b"",
                                   scheme="https", conn=ConnectionInfo(peer=("127.0.0.1", 50000),
                                                                       local=("127.0.0.1", 8443), tls=True,
                                                                       conn_id=7)))


def test_ews_serves_the_schema_files_to_an_authenticated_get_as_iis_serves_static_xml(served_files):
    urls = SiteUrls.for_org(ORG, 8443)
    site = ExchangeSite(ORG, Transcript(), random.Random(1), urls,
                        ews_schema_files=ews_schema.SchemaFiles(served_files))
    assert _get(site, "/EWS/messages.xsd", authenticated=False).status == 401
    for path, file_name in (("/EWS/messages.xsd", "messages.xsd"), ("/ews/TYPES.XSD", "types.xsd")):
        response = _get(site, path)
        assert response.status == 200 and ("Content-Type", "text/xml") in response.headers
        with open(os.path.join(served_files, file_name), "rb") as handle:
            assert response.body == handle.read()
    wsdl = _get(site, "/EWS/Services.wsdl")
    assert wsdl.status == 200 and wsdl.body == WSDL.replace(b"https://cas01.fabrikam.example/EWS/Exchange.asmx",
                                                             urls.ews_url.encode())
    assert _get(site, "/EWS/Services.wsdl", method="POST").status == 405
    assert _get(site, "/EWS/other.xsd").status == 404 and _get(site, "/EWS/x/types.xsd").status == 404


def test_without_a_schema_directory_the_files_are_not_found_as_before():
    site = ExchangeSite(ORG, Transcript(), random.Random(1), SiteUrls.for_org(ORG, 8443))
    for path in ("/EWS/Services.wsdl", "/EWS/messages.xsd", "/ews/types.xsd"):
        assert _get(site, path).status == 404 and _get(site, path, authenticated=False).status == 404


def test_a_schema_directory_lacking_a_file_is_refused(tmp_path):
    (tmp_path / "messages.xsd").write_bytes(b"<x/>")
    with pytest.raises(ValueError, match="no Services.wsdl, types.xsd there"):
        ews_schema.SchemaFiles(str(tmp_path))


# ---- Microsoft's schema, when found -------------------------------------------------------------------------------
def test_the_schema_found_is_microsofts_and_knows_exchange_2013_sp1(official):
    types = etree.parse(os.path.join(official, "types.xsd"))
    versions = types.find(f"{XS}simpleType[@name='ExchangeVersionType']/{XS}restriction")
    assert {"Exchange2013", "Exchange2013_SP1"} <= {e.get("value") for e in versions}
    messages = etree.parse(os.path.join(official, "messages.xsd")).getroot()
    assert messages.get("targetNamespace") == ews.MESSAGES_NS
    wsdl = etree.parse(os.path.join(official, "Services.wsdl")).getroot()
    assert wsdl.get("targetNamespace") == ews.MESSAGES_NS


@pytest.fixture(scope="module")
def schema_server(official: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = start_server(str(tmp_path_factory.mktemp("mockex-ews-schema")), "--ews-schema-dir", official)
    yield served
    served.stop()


def test_a_served_mockex_hands_out_a_schema_lxml_compiles_and_its_own_answer_validates_against(
        official, schema_server, monkeypatch):
    """Over HTTPS with Basic auth, as a schema-aware client loads it: messages.xsd, with types.xsd fetched from the
    URL it imports it by (relative to /EWS/), compiles; an EWS answer of the same server validates against it."""
    server = schema_server
    pin_names(monkeypatch, server)
    alice = server.user("alice")
    base = f"https://mail.contoso.test:{server.https_port}/EWS/"
    credentials = dict(auth=(alice["email"], alice["password"]), verify=server.ca_file, timeout=10)
    fetched = []

    class FromServer(etree.Resolver):
        def resolve(self, url, public_id, context):
            if url.endswith("/xml.xsd"):   # the xml: namespace, which Exchange does not serve
                return self.resolve_string(XML_NAMESPACE, context)
            assert url.startswith(base)
            fetched.append(url[len(base):])
            return self.resolve_string(requests.get(url, **credentials).content, context, base_url=url)

    parser = etree.XMLParser(no_network=True)
    parser.resolvers.add(FromServer())
    driver = etree.fromstring(
        f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"><xs:import schemaLocation="xml.xsd" '
        f'namespace="http://www.w3.org/XML/1998/namespace"/><xs:import namespace="{ews.MESSAGES_NS}" '
        f'schemaLocation="messages.xsd"/></xs:schema>'.encode(), parser, base_url=base + "driver.xsd")
    schema = etree.XMLSchema(etree.ElementTree(driver))
    assert fetched == ["messages.xsd", "types.xsd"]
    for name in fetched:
        with open(os.path.join(official, name), "rb") as handle:
            assert requests.get(base + name, **credentials).content == handle.read()   # byte for byte
    answer = requests.post(base + "Exchange.asmx", data=envelope(GET_INBOX),
                           headers={"Content-Type": "text/xml; charset=utf-8"}, **credentials)
    assert answer.status_code == 200
    response = etree.fromstring(answer.content).find(f"{{{SOAP}}}Body")[0]
    assert etree.QName(response).localname == "GetFolderResponse"
    assert schema.validate(response), schema.error_log
    assert not schema.validate(etree.fromstring(etree.tostring(response).replace(b">NoError<", b">AllGood<")))
    wsdl = etree.fromstring(requests.get(base + "Services.wsdl", **credentials).content)
    address = wsdl.find(".//{http://schemas.xmlsoap.org/wsdl/soap/}address")
    assert address.get("location").lower() == f"https://mail.contoso.test:{server.https_port}/ews/exchange.asmx"


# ---- every shape of answer the core writes ------------------------------------------------------------------------
SHAPES = ("IdOnly", "Default", "AllProperties")
EVERY_ITEM_FIELD = "".join(f'<t:FieldURI FieldURI="{uri}"/>' for uri in (
    "item:Body", "item:Culture", "item:LastModifiedTime", "message:ToRecipients", "message:CcRecipients",
    "message:IsDeliveryReceiptRequested", "calendar:Recurrence", "calendar:RequiredAttendees"))
MEETING = ('<m:CreateItem SendMeetingInvitations="SendToAllAndSaveCopy"><m:Items><t:CalendarItem>'
           '<t:Subject>Planning &amp; &lt;review&gt;</t:Subject><t:Start>2024-03-07T10:00:00Z</t:Start>'
           '<t:End>2024-03-07T11:00:00Z</t:End><t:Location>Room 3</t:Location><t:Recurrence><t:WeeklyRecurrence>'
           '<t:Interval>1</t:Interval><t:DaysOfWeek>Thursday</t:DaysOfWeek></t:WeeklyRecurrence>'
           '<t:NumberedRecurrence><t:StartDate>2024-03-07</t:StartDate><t:NumberOfOccurrences>3'
           '</t:NumberOfOccurrences></t:NumberedRecurrence></t:Recurrence><t:RequiredAttendees><t:Attendee>'
           f'<t:Mailbox><t:EmailAddress>{BOB}</t:EmailAddress></t:Mailbox></t:Attendee></t:RequiredAttendees>'
           '<t:OptionalAttendees><t:Attendee><t:Mailbox><t:EmailAddress>x@fabrikam.test</t:EmailAddress></t:Mailbox>'
           '</t:Attendee></t:OptionalAttendees></t:CalendarItem></m:Items></m:CreateItem>')


def _valid_against(schema: str, store, who: str, body: str) -> etree._Element:
    answer = ews.respond_ews(ORG, store, who, envelope(body))
    for chunk in answer.chunks or (answer.body,):
        assert ews_schema.problems(chunk, schema) == [], body
    return etree.fromstring(answer.chunks[-1] if answer.chunks else answer.body)


def _item_shape(base: str, extra: str = "", mime: bool = False) -> str:
    return (f"<m:ItemShape><t:BaseShape>{base}</t:BaseShape>"
            + ("<t:IncludeMimeContent>true</t:IncludeMimeContent>" if mime else "")
            + (f"<t:AdditionalProperties>{extra}</t:AdditionalProperties>" if extra else "") + "</m:ItemShape>")


def test_every_folder_item_and_shape_the_core_writes_validates(official):
    """Each well-known folder of both mailboxes in every FolderShape; every item (messages, a meeting request with
    markup in its subject, calendar items, a recurring master and its occurrences) in every ItemShape, with MIME and
    every additional field; FindItem pages and calendar views; both syncs."""
    _valid = functools.partial(_valid_against, official)
    store = new_store(alice=5)
    _valid(store, ALICE, MEETING)
    for who in (ALICE, BOB):
        folders = "".join(f'<t:DistinguishedFolderId Id="{name}"/>' for name in store.mailbox(who).distinguished)
        for base in SHAPES:
            _valid(store, who, f'<m:GetFolder><m:FolderShape><t:BaseShape>{base}</t:BaseShape></m:FolderShape>'
                               f'<m:FolderIds>{folders}</m:FolderIds></m:GetFolder>')
            _valid(store, who, f'<m:FindFolder Traversal="Deep"><m:FolderShape><t:BaseShape>{base}</t:BaseShape>'
                               '</m:FolderShape><m:IndexedPageFolderView MaxEntriesReturned="5" Offset="1" '
                               'BasePoint="Beginning"/><m:ParentFolderIds><t:DistinguishedFolderId Id="root"/>'
                               '</m:ParentFolderIds></m:FindFolder>')
            _valid(store, who, f'<m:SyncFolderHierarchy><m:FolderShape><t:BaseShape>{base}</t:BaseShape>'
                               '</m:FolderShape></m:SyncFolderHierarchy>')
        ids = []
        for name in ("inbox", "calendar", "sentitems", "drafts"):
            for base, extra in (("IdOnly", ""), ("Default", ""), ("AllProperties", EVERY_ITEM_FIELD)):
                root = _valid(store, who, f'<m:FindItem Traversal="Shallow">{_item_shape(base, extra)}'
                                          '<m:IndexedPageItemView MaxEntriesReturned="50" Offset="0" '
                                          f'BasePoint="Beginning"/><m:ParentFolderIds><t:DistinguishedFolderId '
                                          f'Id="{name}"/></m:ParentFolderIds></m:FindItem>')
            ids += [e.get("Id") for e in root.iter(f"{{{ews.TYPES_NS}}}ItemId")]
            _valid(store, who, f'<m:SyncFolderItems>{_item_shape("AllProperties")}<m:SyncFolderId>'
                               f'<t:DistinguishedFolderId Id="{name}"/></m:SyncFolderId><m:MaxChangesReturned>512'
                               '</m:MaxChangesReturned></m:SyncFolderItems>')
        root = _valid(store, who, f'<m:FindItem Traversal="Shallow">{_item_shape("AllProperties")}<m:CalendarView '
                                  'StartDate="2024-03-01T00:00:00Z" EndDate="2024-03-31T00:00:00Z"/>'
                                  '<m:ParentFolderIds><t:DistinguishedFolderId Id="calendar"/></m:ParentFolderIds>'
                                  '</m:FindItem>')
        ids += [e.get("Id") for e in root.iter(f"{{{ews.TYPES_NS}}}ItemId")]
        item_ids = "".join(f'<t:ItemId Id="{item_id}"/>' for item_id in ids)
        for base, extra, mime in (("IdOnly", "", True), ("Default", "", False),
                                  ("AllProperties", EVERY_ITEM_FIELD, True)):
            root = _valid(store, who, f"<m:GetItem>{_item_shape(base, extra, mime)}<m:ItemIds>{item_ids}"
                                      "</m:ItemIds></m:GetItem>")
        kinds = {etree.QName(e).localname for e in root.iterfind(f".//{{{ews.MESSAGES_NS}}}Items/*")}
        assert kinds == {"Message", "CalendarItem"} | ({"MeetingRequest"} if who == BOB else set())
        assert root.find(f".//{{{ews.TYPES_NS}}}Recurrence") is not None   # a series master, all fields
        assert root.find(f".//{{{ews.TYPES_NS}}}OriginalStart") is not None   # an occurrence
