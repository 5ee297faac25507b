"""The ``emsmdb`` fuzz layer: the mailbox.rop-answer fault changes exactly what it says in the ROP response buffer
(in-process over MAPI/HTTP, read with the probe's own ROP client; over both transports against a real mock), every
drawn example loads as a scenario, the probe survives a seeded fuzz run on both transports (a failed step, never an
exception), and a fragile client that trusts RopQueryRows' RowCount is found, shrunk to that one edit and reproduced
from the saved scenario."""
from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings

from harness import conduct
from harness.faults.base import FaultParamError, catalog
from harness.fuzz import fuzz_client
from harness.fuzz.engine import FuzzOptions, replay
from harness.fuzz.server import scenario_document
from harness.fuzz.strategies import examples
from harness.hooks import FaultSet
from harness.probe import mailbox, rops
from harness.probe.hosts import Connector, ProbeContext
from harness.probe.http import Credentials
from harness.probe.mapihttp import MapiHttpSession, split_meta_tags
from harness.probe.net import Budget, Resolver
from harness.probe.report import StepFailed
from harness.probe.runner import probe
from harness.rpc.mapihttp import MapiHttpEmsmdb, MapiRequest
from harness.scenario import inline_scenario
from tests.support.clients import probe_options
from tests.support.ropsession import ALICE, ALICE_DN, ORG, new_store
from tests.support.servers import mapi_http_org_dir, scenario_servers

CATALOG = catalog()
RopAnswer = CATALOG["mailbox.rop-answer"]
EC_ACCESS_DENIED, EC_NULL_OBJECT = 0x80070005, 0x4B9


class InProcessSession(MapiHttpSession):
    """The probe's MAPI/HTTP session, its requests handled in-process by the MAPI/HTTP core with these faults."""

    def __init__(self, *faults, record=lambda kind, **fields: None):
        self.cookies, self.requests, self.server_application, self._conn = {}, 0, "", None
        self.mapi = MapiHttpEmsmdb(ORG, new_store(), random.Random(1), lambda: 1700000000.0, record,
                                   faults=FaultSet(faults))

    def post(self, request_type: str, body: bytes) -> bytes:
        headers = {"x-requesttype": request_type, "x-requestid": "{A}:1", "x-clientinfo": "{B}",
                   "cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        answer = self.mapi.handle(MapiRequest("POST", headers.get, body, ALICE))
        for name, value in answer.headers:
            if name == "Set-Cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";", 1)[0]
        assert answer.response_code == 0
        return split_meta_tags(b"".join(answer.chunks))[1]

    def read_inbox(self):
        """The probe's mailbox checks: (message, evidence) of the Inbox step, or its StepFailed."""
        assert self.connect(ALICE_DN).error_code == 0
        logged_on = mailbox.logon(self.execute, ALICE_DN)
        return mailbox.read_inbox(self.execute, logged_on.handle, logged_on.folders["Inbox"])


def inbox_failure(**params) -> StepFailed:
    with pytest.raises(StepFailed) as failed:
        InProcessSession(RopAnswer(**params)).read_inbox()
    return failed.value


def test_a_return_value_or_a_back_off_on_one_rop() -> None:
    denied = inbox_failure(rop="RopOpenFolder", return_value=EC_ACCESS_DENIED)
    assert (denied.reason, denied.evidence["status"]) == ("inbox-open-failed", "0x80070005")
    assert denied.evidence["rops"] == [{"rop": "RopOpenFolder", "return_value": "0x80070005"}]
    stopped = inbox_failure(rop="RopOpenFolder", return_value=EC_ACCESS_DENIED, append="pending")
    assert stopped.reason == "inbox-open-failed"       # the RopPending after the failed ROP read over
    busy = inbox_failure(rop="RopOpenFolder", backoff_ms=30000)
    assert (busy.reason, busy.evidence["backoff_ms"]) == ("ec-server-busy", 30000)
    table = inbox_failure(rop="RopGetContentsTable", return_value=0x8004010F, rest="keep")
    assert table.reason == "inbox-list-failed" and table.evidence["rops"][-1]["return_value"] == "0x8004010f"


class Recorder:
    """Transcript events as the transcript numbers and stamps them, on a clock the test moves."""

    def __init__(self) -> None:
        self.events, self.time = [], 1700000000.0

    def __call__(self, kind, **fields) -> None:
        self.events.append({"seq": len(self.events) + 1, "time": self.time, "kind": kind, **fields})


@pytest.mark.parametrize("waited, caught", [(0.5, True), (2.5, False)])
def test_a_retry_inside_a_rop_backoff_on_any_rop_breaks_the_backoff_rule(waited, caught) -> None:
    recorder = Recorder()
    session = InProcessSession(RopAnswer(rop="RopOpenFolder", backoff_ms=2000), record=recorder)
    assert session.connect(ALICE_DN).error_code == 0
    logged_on = mailbox.logon(session.execute, ALICE_DN)
    open_inbox = rops.RopBuffer([logged_on.handle, rops.HANDLE_NONE]).open_folder(
        0, 1, logged_on.folders["Inbox"]).payload()
    assert session.execute(open_inbox)[2] == 0xF9          # a RopBackoff in place of RopOpenFolder
    recorder.time += waited
    session.execute(open_inbox)
    busy, retry = [e for e in recorder.events if e["kind"] == "emsmdb_execute"][1:]
    assert (busy["backoff_ms"], busy["backoff_rops"], busy["rops"]) == (2000, [0x02], [0x02])
    assert retry["session"] == busy["session"] == "mapi-1"
    found = conduct.backoff(recorder.events, conduct.namespace("contoso.test", []))
    assert [(v.message, v.seq) for v in found] == ([(
        f"it retried {waited:.2f} s after RopBackoff 2000 ms (RopId 0x02), before the wait was over",
        retry["seq"])] if caught else [])


def test_query_rows_row_count_rows_and_cells() -> None:
    _message, plain = InProcessSession().read_inbox()
    listed = plain["rops"][3]["rows"]
    assert len(listed) == plain["row_count"] == 3
    lying = inbox_failure(rop="RopQueryRows", row_count=10)
    assert lying.reason == "rop-response-malformed" and "ends early" in lying.message
    message, none = InProcessSession(RopAnswer(rop="RopQueryRows", rows="none")).read_inbox()
    assert "empty" in message and none["rops"][3]["rows"] == [] and none["row_count"] == 3
    _message, twice = InProcessSession(RopAnswer(rop="RopQueryRows", rows="duplicate")).read_inbox()
    assert twice["rops"][3]["rows"] == [row for row in listed for _ in (0, 1)]
    _message, cells = InProcessSession(RopAnswer(rop="RopQueryRows", cells=[
        {"action": "error", "column": 0}, {"action": "text", "column": 1, "value": "\U0001F600"}])).read_inbox()
    assert [(row["subject"], row["message_class"]) for row in cells["rops"][3]["rows"]] == [(None, "\U0001F600")] * 3
    no_mid = inbox_failure(rop="RopQueryRows", cells=[{"action": "absent", "column": 2}])
    assert no_mid.reason == "inbox-list-failed" and "PidTagMid" in no_mid.message
    # rows that no longer fit the buffer's u16 RopSize are left out, RowCount following (6 rows of 32 KB asked for)
    big = [{"action": "text", "column": column, "value": "x" * 8000} for column in (0, 1)]
    _message, fitting = InProcessSession(RopAnswer(rop="RopQueryRows", rows="duplicate", cells=big)).read_inbox()
    assert len(fitting["rops"][3]["rows"]) == 1 and fitting["rops"][3]["rows"][0]["subject"] == "x" * 8000


def test_handles_truncation_appended_rops_and_header_flags() -> None:
    # the Inbox's handle replaced: RopOpenMessage names no object
    wrong = inbox_failure(handle_index=1, handle_value=0xDEADBEEF, rop="RopQueryRows")
    assert (wrong.reason, wrong.evidence["status"]) == ("message-read-failed", f"0x{EC_NULL_OBJECT:08x}")
    short = inbox_failure(rop="RopOpenFolder", handles_dropped=2)
    assert short.reason == "rop-response-malformed" and "handle table" in short.message
    cut = inbox_failure(rop="RopSetColumns", truncate=6)
    assert cut.reason == "rop-response-malformed"
    # a RopPending after the answers is read over (notifications wait); a RopNotify nobody registered for is not
    _message, pending = InProcessSession(RopAnswer(rop="RopQueryRows", append="pending")).read_inbox()
    assert len(pending["rops"][3]["rows"]) == 3
    assert inbox_failure(rop="RopQueryRows", append="notify").reason == "rop-response-malformed"
    compressed = inbox_failure(flags_set=["compressed"])
    assert "compressed" in compressed.message
    session = InProcessSession(RopAnswer(flags_set=["xor-magic"]))
    assert session.connect(ALICE_DN).error_code == 0
    buffer = rops.RopBuffer([rops.HANDLE_NONE]).logon(ALICE_DN, 0)
    body = session.post("Execute", struct.pack("<LL", 3, len(rops.wrap(buffer.payload()))) + rops.wrap(
        buffer.payload()) + struct.pack("<LL", rops.MAX_OUT, 0))
    assert struct.unpack_from("<HH", body, 16) == (0, 0x4 | 0x2)        # Last | XorMagic, the payload left plain


def test_parameters_that_could_not_be_sent_are_refused() -> None:
    for params in ({"return_value": 5}, {"rop": "RopNothing"}, {"flags_set": ["zipped"]},
                   {"rop": "RopQueryRows", "cells": [{"action": "text", "column": 0, "value": "x" * 8001}]},
                   {"rop": "RopQueryRows", "cells": [{"action": "drop", "column": 0}]},
                   {"rop": "RopQueryRows", "row_count": 1 << 16}):
        with pytest.raises(FaultParamError):
            RopAnswer(**params)


def test_every_drawn_example_loads_as_a_scenario() -> None:
    @settings(max_examples=80, deadline=None, derandomize=True)
    @given(examples(["emsmdb"]))
    def loads(faults) -> None:
        inline_scenario("fuzz-example", scenario_document("fuzz-example", faults)["faults"], "<fuzz>")
        for served in faults:
            CATALOG[served["fault"]](**served["params"])
    loads()


# ---- against a real mock: both transports --------------------------------------------------------------------------
MAPI_ON = "name: {name}\nconfig:\n  mapi_http: {{Enabled: true}}\nfaults:\n  - {fault}\n"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    scenarios = {"denied": MAPI_ON.format(name="denied", fault="mailbox.rop-answer: {rop: RopOpenFolder, "
                                                                 "return_value: 0x80070005}")}
    with scenario_servers(tmp_path_factory.mktemp("rop-answer"), scenarios) as started:
        yield started


@pytest.mark.parametrize("transport, phase", [("mapi-http", "mapi-http"), ("rpc-http", "outlook-anywhere")])
def test_the_edit_reaches_both_transports(servers, transport, phase) -> None:
    report = probe(probe_options(servers["denied"], transport=transport))
    step = next(node for p in report.phases for node in p.walk() if node.id == f"{phase}.mailbox")
    assert (step.status, step.reason, step.evidence["status"]) == ("fail", "inbox-open-failed", "0x80070005")


# ---- the probe as a careful client ---------------------------------------------------------------------------------
def probe_client(transport: str):
    def run(served) -> None:
        options = probe_options(served, user=served.username, transport=transport, step_timeout=5.0,
                                total_timeout=30.0)
        report = probe(options)      # an exception here is a crash finding; a failed step is what it should give
        assert report.phases
    return run


@pytest.mark.parametrize("transport", ["mapi-http", "rpc-http"])
def test_the_probe_survives_the_emsmdb_layer(tmp_path_factory, transport) -> None:
    report = fuzz_client(probe_client(transport), layers=["emsmdb"], max_examples=25, seed=3, timeout=60,
                         org=mapi_http_org_dir(tmp_path_factory))
    assert report.examples == 25
    assert not report.findings, [f.describe() for f in report.findings]


# ---- a fragile client ----------------------------------------------------------------------------------------------
class Refused(Exception):
    """A ROP failed, said cleanly."""


def list_inbox_trusting_row_count(served) -> list:
    """Logs on over MAPI/HTTP with the probe's session, lists the Inbox, reads each row it was sent with a careful
    parser, then takes RopQueryRows' RowCount for how many rows there are: an IndexError when it says more."""
    user = served.user(served.username)
    context = ProbeContext(served.email, Credentials.parse(served.email, served.password), Resolver(None),
                           Budget(5.0, 30.0), ca_file=served.ca_file, https_port=int(served.https_port))
    connector = Connector(context, f"mail.{served.domain}", (served.host,), int(served.https_port), True)
    session = MapiHttpSession(connector, f"/mapi/emsmdb/?MailboxId={user['rpc_server']}", context.credentials, None,
                              random.Random(1))
    try:
        dn = user["legacy_dn"]
        assert session.connect(dn).error_code == 0
        logged_on = mailbox.logon(session.execute, dn)
        buffer = (rops.RopBuffer([logged_on.handle, rops.HANDLE_NONE, rops.HANDLE_NONE])
                  .open_folder(0, 1, logged_on.folders["Inbox"]).contents_table(1, 2)
                  .set_columns(2, mailbox.COLUMNS).query_rows(2, mailbox.COLUMNS, 50))
        payload = session.execute(buffer.payload())
    finally:
        session.disconnect()
    reader = rops._Reader(payload[2:struct.unpack_from("<H", payload)[0]])
    for rop_id, fixed in ((0x02, 2), (0x05, 4), (0x12, 1)):
        got, _index, code = reader.unpack("BBL")
        if got != rop_id or code:
            raise Refused(f"0x{got:02x}: 0x{code:08x}")
        reader.take(fixed)
    got, _index, code = reader.unpack("BBL")
    if got != 0x15 or code:
        raise Refused(f"0x{got:02x}: 0x{code:08x}")
    _origin, count = reader.unpack("BH")
    rows = []
    while reader.pos < len(reader.data):
        rows.append(rops._row(reader, mailbox.COLUMNS))
    return [rows[index][0] for index in range(count)]      # BUG: RowCount taken for the rows sent


def test_a_fragile_client_is_found_shrunk_to_the_row_count_and_reproduced(tmp_path_factory) -> None:
    clean = (StepFailed, rops.RopMalformed, rops.CallFailed, Refused)
    org = mapi_http_org_dir(tmp_path_factory)
    saved = tmp_path_factory.mktemp("found")
    report = fuzz_client(list_inbox_trusting_row_count, layers=["emsmdb"], max_examples=150, seed=1, timeout=20,
                         max_findings=1, expected_errors=clean, save_failures=str(saved), org=org)
    assert len(report.findings) == 1, [f.describe() for f in report.findings]
    finding = report.findings[0]
    assert finding.verdict.oracle == "crash" and "IndexError" in finding.verdict.signature
    assert finding.faults == [{"fault": "mailbox.rop-answer", "params": {"rop": "RopQueryRows", "row_count": 10}}]
    verdict, _run = replay(finding.path, list_inbox_trusting_row_count, FuzzOptions(expected_errors=clean, org=org))
    assert verdict is not None and verdict.signature == finding.verdict.signature
