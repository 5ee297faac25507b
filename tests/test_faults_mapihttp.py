"""MAPI/HTTP faults: their answers on the sans-IO endpoints (a lost context, an X-ResponseCode of choice, a 401, a DONE
held for N PENDING periods; scoping by endpoint, request type and count), then the spec-built client of
tests/support/mapihttp.py observing each built-in scenario against a real `mockex serve` with MAPI/HTTP enabled."""
from __future__ import annotations

import datetime as dt
import random
import struct
from pathlib import Path

import pytest

from harness.faults.base import FaultParamError
from harness.faults.mapihttp import ContextLost, ResponseCode, SlowPending, Unauthorized
from harness.hooks import FaultSet
from harness.mailbox.seed import default_seeder
from harness.mailbox.store import MailboxStore, accounts_of
from harness.org import load_org, with_config
from harness.rpc.mapihttp import MapiHttpEmsmdb, MapiRequest
from harness.rpc.mapihttp_nspi import MapiHttpNspi
from harness.scenario import load_scenario
from tests.support import REPO
from tests.support.mapihttp import MapiHttpClient, connect_body, execute_body, execute_rops, inbox_rop_buffer
from tests.support.mapihttp_nspi import bind_body, parse_response, resolve_names_body, unbind_body
from tests.support.servers import mapi_http_org_dir, servers_running

ORG = with_config(load_org(), {"mapi_http": {"Enabled": True}}, "test")
ALICE = ORG.find("alice")
ALICE_DN = ORG.legacy_dn(ALICE)
LOGON = execute_body(inbox_rop_buffer(ALICE_DN, None, []))


class Endpoint:
    """The sans-IO endpoint with ``faults`` active; the site's cookie keeping done by hand."""

    def __init__(self, *faults, address_book: bool = False) -> None:
        store = MailboxStore(accounts_of(ORG.mailboxes), lambda: dt.datetime(2025, 1, 2, tzinfo=dt.timezone.utc),
                             default_seeder({}))
        self.mapi = (MapiHttpNspi(ORG, "https://mail.contoso.test/mapi/", random.Random(1), lambda: 1700000000.0,
                                  lambda kind, **f: None, FaultSet(faults)) if address_book else
                     MapiHttpEmsmdb(ORG, store, random.Random(1), lambda: 1700000000.0, lambda kind, **f: None,
                                    FaultSet(faults)))
        self.cookies: dict = {}

    def post(self, request_type: str, body: bytes = b""):
        headers = {"x-requesttype": request_type, "x-requestid": "{A}:1", "x-clientinfo": "{B}",
                   "host": "mail.contoso.test", "cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        answer = self.mapi.handle(MapiRequest("POST", headers.get, body, ALICE))
        for name, value in answer.headers:
            if name == "Set-Cookie":
                key, _, rest = value.partition("=")
                self.cookies[key] = rest.split(";", 1)[0]
        return answer


def test_a_lost_context_answers_10_now_and_for_every_later_request_until_connect():
    endpoint = Endpoint(ContextLost(skip=1, times=1))
    endpoint.post("Connect", connect_body(ALICE_DN))
    assert endpoint.post("Execute", LOGON).response_code == 0
    lost = endpoint.post("Execute", LOGON)
    assert lost.response_code == 10 and b"Context not found." in lost.body and lost.content_type == "text/html"
    assert endpoint.post("Execute", LOGON).response_code == 10                 # the server has no such session
    assert endpoint.post("Connect", connect_body(ALICE_DN)).response_code == 0
    assert endpoint.post("Execute", LOGON).response_code == 0


def test_a_response_code_of_choice_keeps_the_session():
    endpoint = Endpoint(ResponseCode(code=18, times=1))
    endpoint.post("Connect", connect_body(ALICE_DN))
    refused = endpoint.post("Execute", LOGON)
    assert refused.response_code == 18 and ("X-ResponseCode", "18") in refused.headers
    assert b"Endpoint shutting down." in refused.body and refused.chunks == ()
    assert endpoint.post("Execute", LOGON).response_code == 0                  # same cookies: the session is kept


def test_request_types_and_codes_are_checked_when_the_fault_is_made():
    with pytest.raises(FaultParamError, match="request_types"):
        ResponseCode(request_types=["Bind"])
    with pytest.raises(FaultParamError, match="code"):
        ResponseCode(code=14)                                                   # reserved in 2.2.3.3.3
    only_pings = Endpoint(ResponseCode(code=1, request_types=["PING"]))
    only_pings.post("Connect", connect_body(ALICE_DN))
    assert only_pings.post("Execute", LOGON).response_code == 0
    assert only_pings.post("PING").response_code == 1


def test_at_the_address_book_endpoint_the_faults_answer_its_request_types():
    """`endpoint: nspi` moves a fault to /mapi/nspi/: by default every request type there but PING, and never an
    EMSMDB request; an EMSMDB fault leaves the address book alone."""
    with pytest.raises(FaultParamError, match="request_types"):
        ResponseCode(endpoint="nspi", request_types=["Execute"])
    with pytest.raises(FaultParamError, match="endpoint"):
        ResponseCode(endpoint="emsmdb2")
    refused_bind = Endpoint(ResponseCode(code=1, endpoint="nspi", request_types=["Bind"], times=1),
                            address_book=True)
    answer = refused_bind.post("Bind", bind_body())
    assert answer.response_code == 1 and b"Unknown failure." in answer.body and not refused_bind.cookies
    assert parse_response("Bind", refused_bind.post("Bind", bind_body()).chunks[1].partition(b"\r\n\r\n")[2]
                          ).code == 0                                            # times: 1
    lost = Endpoint(ContextLost(endpoint="nspi"), address_book=True)
    assert lost.post("Bind", bind_body()).response_code == 0                     # no context to lose yet
    assert lost.post("ResolveNames", resolve_names_body(["bob"], [0x39FE001F])).response_code == 10
    assert lost.post("Unbind", unbind_body()).response_code == 10                # the session is gone
    assert lost.post("PING").response_code == 10                                 # not a fault: no such context
    slow = Endpoint(SlowPending(periods=2, period_ms=100, endpoint="nspi"), address_book=True)
    held = slow.post("Bind", bind_body())
    assert held.chunks == (b"PROCESSING\r\n",) and held.held.periods == 2
    assert parse_response("Bind", held.held.finish().partition(b"\r\n\r\n")[2]).code == 0
    untouched = Endpoint(ResponseCode(code=1, request_types=["Connect", "Execute", "Disconnect", "PING"]),
                         address_book=True)
    assert [untouched.post(kind, body).response_code for kind, body in
            (("Bind", bind_body()), ("PING", b""), ("Unbind", unbind_body()))] == [0, 0, 0]


def test_unauthorized_is_a_401_for_the_site_to_challenge():
    endpoint = Endpoint(Unauthorized(skip=1, times=1))
    endpoint.post("Connect", connect_body(ALICE_DN))
    assert endpoint.post("Execute", LOGON).http_status == 200
    assert endpoint.post("Execute", LOGON).http_status == 401
    assert endpoint.post("Execute", LOGON).http_status == 200


def test_slow_pending_holds_the_done_for_its_periods():
    endpoint = Endpoint(SlowPending(periods=3, period_ms=250))
    endpoint.post("Connect", connect_body(ALICE_DN))
    slow = endpoint.post("Execute", LOGON)
    assert slow.chunks == (b"PROCESSING\r\n",) and (slow.held.periods, slow.held.period_ms) == (3, 250)
    assert ("X-PendingPeriod", "250") in slow.headers
    code, payload = execute_rops(slow.held.finish().partition(b"\r\n\r\n")[2])
    assert code == 0 and payload[2] == 0xFE                                      # the RopLogon response
    assert endpoint.post("PING").held is None                                   # Execute only, by default


def test_every_built_in_mapihttp_scenario_loads_with_an_expectation():
    """Over RPC/HTTP (MAPI/HTTP off in the built-in org) the analyzer passes; a scenario that turns MAPI/HTTP on
    expects the MAPI/HTTP probe to fail at the step its fault breaks."""
    found = {}
    for path in sorted(Path(REPO, "scenarios").glob("mapihttp-*.yaml")):
        scenario = load_scenario(str(path))
        assert scenario.faults and all(f.name.startswith("mapihttp.") for f in scenario.faults)
        mapi_on = ((scenario.config or {}).get("mapi_http") or {}).get("Enabled") is True
        found[scenario.name] = mapi_on
        assert (scenario.expect["analyzer"] == {"passes": True}) is not mapi_on, scenario.name
    assert found["mapihttp-address-book-unavailable"] is True


# ---- observed by a client against real servers ----------------------------------------------------------------
SLOW = """name: mapihttp-slow-pending-short
description: test
faults:
  - mapihttp.slow-pending: {periods: 3, period_ms: 20}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    org_dir = mapi_http_org_dir(tmp_path_factory)
    slow = tmp_path_factory.mktemp("slow") / "slow.yaml"
    slow.write_text(SLOW)
    scenarios = {"context": "scenarios/mapihttp-context-lost.yaml",
                 "shutting": "scenarios/mapihttp-endpoint-shutting-down.yaml",
                 "unauthorized": "scenarios/mapihttp-unauthorized.yaml", "slow": str(slow)}
    args = [(str(tmp_path_factory.mktemp(name)), "--org", org_dir, "--scenario",
             path if path.startswith("/") else str(Path(REPO, path))) for name, path in scenarios.items()]
    with servers_running(*args) as started:
        yield dict(zip(scenarios, started))


def client(served) -> MapiHttpClient:
    mapi = MapiHttpClient(served.host, served.https_port, served.ca_file, f"{ALICE.guid}@contoso.test", "alice",
                          served.user("alice")["password"])
    assert mapi.post("Connect", connect_body(ALICE_DN)).response_code == 0
    return mapi


def test_the_client_sees_context_not_found_and_recovers_with_a_new_connect(served):
    mapi = client(served["context"])
    assert mapi.post("Execute", LOGON).response_code == 0
    lost = mapi.post("Execute", LOGON)
    assert (lost.status, lost.response_code, lost.headers["Content-Type"]) == (200, 10, "text/html")
    assert lost.headers["X-ServerApplication"].startswith("Exchange/15.00.")
    assert mapi.post("Execute", LOGON).response_code == 10
    assert mapi.post("Connect", connect_body(ALICE_DN)).response_code == 0
    assert mapi.post("Execute", LOGON).response_code == 0
    fired = [e for e in served["context"].transcript("fault") if e["fault"] == "mapihttp.context-lost"]
    assert len(fired) == 1 and fired[0]["hook"] == "mapi_http"


def test_the_client_sees_endpoint_shutting_down_twice_then_goes_on(served):
    mapi = client(served["shutting"])
    codes = [mapi.post("Execute", LOGON).response_code for _ in range(3)]
    assert codes == [18, 18, 0]


def test_the_client_gets_a_401_challenge_mid_session_and_goes_on_after_authenticating_again(served):
    mapi = client(served["unauthorized"])
    assert mapi.post("Execute", LOGON).response_code == 0
    refused = mapi.post("Execute", LOGON)
    assert refused.status == 401 and refused.headers.get("X-ResponseCode") is None
    assert refused.headers.get_all("WWW-Authenticate")
    again = mapi.post("Execute", LOGON)                  # Basic again, the same cookies
    assert again.status == 200 and again.response_code == 0
    events = served["unauthorized"].transcript("mapi_http")
    assert [e.get("http_status") for e in events if e["request_type"] == "Execute"] == [None, 401, None]


def test_the_client_reads_n_pending_keep_alives_before_done(served):
    mapi = client(served["slow"])
    slow = mapi.post("Execute", LOGON)
    assert slow.response_code == 0 and slow.pending == 3 and slow.headers["X-PendingPeriod"] == "20"
    assert slow.raw_chunks.startswith(b"PROCESSING\r\nPENDING\r\nPENDING\r\nPENDING\r\nDONE\r\n")
    assert struct.unpack_from("<L", slow.body, 4)[0] == 0
    assert [(e["ended"], e["pending"]) for e in served["slow"].transcript("mapi_http_done")] == [("periods", 3)]
