"""The control plane: a curl shell script drives a real `mockex serve --control`; `mockex ctl`; the API's rules."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock

from harness.control import openapi
from harness.control.api import ControlApi
from harness.hooks import FaultSet
from harness.protocols.http import HttpRequest
from harness.scenario import load_scenario
from harness.testing import CHECKOUT, start_server
from harness.transcript import Transcript
from harness.yamlfile import SpecError
from tests.support.autodiscover import pox_request

CURL_SCRIPT = r"""
set -u
api() {  # METHOD PATH [BODY]: prints the status, then the body
  curl -sS --max-time 90 -o body.json -w '%{http_code}\n' -X "$1" -H "Authorization: Bearer $TOKEN" \
       -H 'Content-Type: application/json' ${3:+--data "$3"} "$URL$2"; cat body.json; echo
}
pox() {  # the status alice gets for a POX Autodiscover request with her right password
  curl -sS --max-time 30 --cacert "$CA" --resolve "autodiscover.contoso.test:$PORT:127.0.0.1" --basic \
       -u "CONTOSO\\alice:$PASSWORD" -H 'Content-Type: text/xml' --data-binary @request.xml -o /dev/null \
       -w '%{http_code}' "https://autodiscover.contoso.test:$PORT/autodiscover/autodiscover.xml"
}
echo "before=$(pox)"
echo "apply=$(api POST /apply '{"scenario": "auth-wrong-password"}' | head -1)"
SEQ=$(api GET /info | sed -n 's/^ *"last_seq": \([0-9]*\).*/\1/p')
curl -sS --max-time 90 -H "Authorization: Bearer $TOKEN" \
     "$URL/events/wait?after=$SEQ&kind=auth&match.result=failure&timeout=60" > wait.json &
WAITER=$!
echo "applied=$(pox)"
wait $WAITER
echo "waited=$(tr -d '\n' < wait.json)"
echo "clear=$(api POST /clear | head -1)"
echo "cleared=$(pox)"
echo "events=$(api GET '/events?kind=control' | tail -n +2 | tr -d '\n')"
echo "wrong=$(curl -sS -o /dev/null -D headers.txt -w '%{http_code}' -H 'Authorization: Bearer not-the-token' \
     "$URL/info")"
echo "challenge=$(grep -i '^www-authenticate:' headers.txt | tr -d '\r')"
echo "missing=$(curl -sS -o /dev/null -w '%{http_code}' "$URL/info")"
"""


@pytest.fixture(scope="module")
def controlled(tmp_path_factory):
    served = start_server(str(tmp_path_factory.mktemp("control")), "--control")
    yield served
    served.stop()


def test_a_curl_script_applies_sees_clears_and_reads_events(controlled, tmp_path):
    (tmp_path / "request.xml").write_bytes(pox_request("alice@contoso.test"))
    control = controlled.endpoints["control"]
    env = dict(os.environ, URL=control["url"], TOKEN=control["token"], CA=controlled.ca_file,
               PORT=str(controlled.https_port), PASSWORD=controlled.user("alice")["password"])
    done = subprocess.run(["bash", "-c", CURL_SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    seen = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert seen["before"] == "200", done.stdout
    assert seen["apply"] == "200"
    assert seen["applied"] == "401", "the applied scenario refuses alice's right password"
    waited = json.loads(seen["waited"])["event"]
    assert waited["kind"] == "auth" and waited["result"] == "failure"
    assert seen["clear"] == "200"
    assert seen["cleared"] == "200", "cleared: alice logs on again"
    actions = [e["action"] for e in json.loads(seen["events"])["events"]]
    assert actions[-2:] == ["apply", "clear"]
    assert seen["wrong"] == "401" and seen["missing"] == "401"
    assert seen["challenge"].lower().startswith("www-authenticate: bearer")
    with open(controlled.endpoints["transcript"], encoding="utf-8") as handle:
        assert control["token"] not in handle.read(), "the token never reaches the transcript"


def test_endpoints_json_is_private_and_the_listener_is_loopback_only(controlled):
    path = os.path.join(controlled.state_dir, "endpoints.json")
    assert os.stat(path).st_mode & 0o077 == 0
    port = controlled.endpoints["control"]["port"]
    with open("/proc/net/tcp", encoding="ascii") as handle:   # state 0A = LISTEN
        listening = [row.split()[1] for row in handle.readlines()[1:]
                     if row.split()[3] == "0A" and int(row.split()[1].split(":")[1], 16) == port]
    assert listening == [f"0100007F:{port:04X}"], "bound to 127.0.0.1 only, not a wildcard or another address"


@pytest.mark.parametrize("extra", [["--control-listen", "0.0.0.0"], ["--control-listen", "10.1.2.3",
                                                                     "--allow-remote"]])
def test_a_non_loopback_control_address_is_refused(tmp_path, extra):
    done = subprocess.run([sys.executable, "-m", "harness", "serve", "--control", "--state-dir", str(tmp_path),
                           "--https-port", "0", "--http-port", "0", "--dns-port", "0", *extra],
                          cwd=CHECKOUT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "loopback only" in done.stderr
    assert not (tmp_path / "endpoints.json").exists()


def ctl(served, *args):
    return subprocess.run([sys.executable, "-m", "harness", "ctl", "--state-dir", served.state_dir, *args],
                          cwd=CHECKOUT, capture_output=True, text=True, timeout=120)


def test_ctl_round_trip_of_a_fault_with_parameters(controlled):
    done = ctl(controlled, "apply", "--fault", "mailbox.server-busy", "backoff_ms=2000", "--user",
               "alice@contoso.test")
    assert done.returncode == 0, done.stderr
    wanted = "mailbox.server-busy(backoff_ms=2000, user='alice@contoso.test')"
    assert json.loads(done.stdout)["faults"] == [wanted]
    assert json.loads(ctl(controlled, "info").stdout)["faults"] == [wanted]
    assert json.loads(ctl(controlled, "clear", "mailbox.server-busy").stdout)["faults"] == []
    found = ctl(controlled, "wait", "--kind", "control", "--match", "action=clear", "--timeout", "30")
    assert found.returncode == 0 and json.loads(found.stdout)["action"] == "clear"
    nothing = ctl(controlled, "wait", "--new", "--kind", "no-such-kind", "--timeout", "0")
    assert nothing.returncode == 1


def test_invalid_fault_parameters_get_the_message_a_file_gets(controlled, tmp_path):
    scenario = tmp_path / "busy.yaml"
    scenario.write_text("name: busy\nfaults:\n  - mailbox.server-busy: {backoff_ms: soon}\n")
    with pytest.raises(SpecError) as from_file:
        load_scenario(str(scenario))
    done = ctl(controlled, "apply", "--fault", "mailbox.server-busy", "backoff_ms=soon")
    assert done.returncode == 2
    expected = f"{from_file.value.field}: {from_file.value.message}"
    assert expected in done.stderr, (expected, done.stderr)
    assert done.stderr.startswith("mockex ctl: 400: ")


def test_a_scenario_file_with_errors_is_refused_with_every_error(controlled, tmp_path):
    scenario = tmp_path / "broken.yaml"
    scenario.write_text("name: broken\nfaults:\n  - tls.expird: {}\n  - auth.wrong-password: {usr: x}\n")
    done = ctl(controlled, "apply", str(scenario))
    assert done.returncode == 2
    assert f"{scenario}:3: faults[0]: unknown fault 'tls.expird'" in done.stderr
    assert f"{scenario}:4: faults[1].auth.wrong-password.usr: unknown parameter" in done.stderr


def test_the_committed_openapi_document_is_fresh():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the checkout, not the installed package
    with open(os.path.join(repo, "docs", "control.openapi.json"), encoding="utf-8") as handle:
        committed = handle.read()
    assert committed == openapi.render(), "regenerate: python -m harness.control.openapi > docs/control.openapi.json"


# ---- in process, fake clock ------------------------------------------------------------------------------------

def fake_server():
    transcript = Transcript()
    return SimpleNamespace(transcript=transcript, faults=FaultSet(record=transcript.record), scenarios=[],
                           options=SimpleNamespace(seed=1), org=SimpleNamespace(domain="contoso.test"),
                           plan=SimpleNamespace(dedicated={}),
                           steps=SimpleNamespace(reset=lambda: transcript.record("reset", faults=[])))


def call(api, method, path, body=b"", token="t0ken"):
    target, _, query = path.partition("?")
    request = HttpRequest(method, path, target, query, [("Authorization", f"Bearer {token}")], body)
    return api.handle(request)


def test_a_wait_answers_null_at_its_timeout_and_the_event_when_it_comes():
    server, clock = fake_server(), Clock()
    api = ControlApi(server, "t0ken", clock)
    timing_out, answers = call(api, "GET", "/events/wait?kind=auth&timeout=5"), []
    timing_out.addCallback(answers.append)
    clock.advance(4.9)
    assert answers == []
    clock.advance(0.2)
    assert answers[0].status == 200 and json.loads(answers[0].body)["event"] is None
    waiting = call(api, "GET", "/events/wait?kind=auth&match.result=failure&timeout=5")
    waiting.addCallback(answers.append)
    server.transcript.record("auth", result="success")
    assert len(answers) == 1, "a success does not match"
    server.transcript.record("auth", result="failure")
    assert json.loads(answers[1].body)["event"]["result"] == "failure"
    assert clock.getDelayedCalls() == [], "the answered wait's timer is cancelled"


def test_apply_is_whole_or_nothing_and_reset_forgets_it():
    server = fake_server()
    api = ControlApi(server, "t0ken", Clock())
    bad = call(api, "POST", "/apply", json.dumps({"fault": "mailbox.server-busy", "params": {"backoff_ms": -1}}))
    assert bad.status == 400 and list(server.faults) == []
    assert json.loads(bad.body)["errors"][0]["field"] == "faults[0].mailbox.server-busy.backoff_ms"
    good = call(api, "POST", "/apply", json.dumps({"scenario": "auth-wrong-password"}).encode())
    assert good.status == 200 and len(server.faults) == 1
    again = call(api, "POST", "/apply", json.dumps({"scenario": "auth-wrong-password"}).encode())
    assert again.status == 200 and len(server.faults) == 1, "applying again replaces"
    assert call(api, "POST", "/clear", b'{"name": "nothing-like-it"}').status == 404
    call(api, "POST", "/reset")
    assert api.applied == []
    assert call(api, "GET", "/info", token="wrong").status == 401


def test_an_inline_scenario_applies_replaces_by_name_and_is_checked_as_a_file_is():
    server = fake_server()
    api = ControlApi(server, "t0ken", Clock())
    inline = {"name": "example", "faults": ["auth.wrong-password", {"mailbox.server-busy": {"backoff_ms": 10}}]}
    done = call(api, "POST", "/apply", json.dumps(inline).encode())
    assert done.status == 200 and json.loads(done.body)["applied"]["id"] == "scenario:example"
    assert len(server.faults) == 2
    inline["faults"] = [{"mailbox.server-busy": {"backoff_ms": 20}}]
    assert call(api, "POST", "/apply", json.dumps(inline).encode()).status == 200
    assert [f.describe() for f in server.faults] == ["mailbox.server-busy(backoff_ms=20)"], "same name: replaced"
    bad = call(api, "POST", "/apply", json.dumps({"name": "example", "faults": [{"tls.expird": {}}]}).encode())
    assert bad.status == 400 and json.loads(bad.body)["errors"][0]["field"] == "faults[0]"
    assert len(server.faults) == 1, "a refused apply changes nothing"
    mixed = call(api, "POST", "/apply", json.dumps({"scenario": "x", "faults": []}).encode())
    assert mixed.status == 400


def test_inline_faults_are_checked_once_but_built_anew_and_a_wrong_one_is_refused_every_time(monkeypatch):
    import harness.scenario as scenario_module
    checked = []
    real_check = scenario_module._fault_spec
    monkeypatch.setattr(scenario_module, "_fault_spec", lambda item, *rest: checked.append(item) or
                        real_check(item, *rest))
    server = fake_server()
    api = ControlApi(server, "t0ken", Clock())
    busy = {"mailbox.server-busy": {"backoff_ms": 10}}
    assert call(api, "POST", "/apply", json.dumps({"name": "example", "faults": [busy]}).encode()).status == 200
    first = list(server.faults)
    assert call(api, "POST", "/apply", json.dumps({"name": "example", "faults": [busy]}).encode()).status == 200
    assert checked == [busy], "the second apply of the same fault is not checked again"
    assert [f.describe() for f in server.faults] == ["mailbox.server-busy(backoff_ms=10)"]
    assert server.faults._providers[0] is not first[0], "each apply builds its own fault (a fault keeps state)"
    for body, field in (({"name": "", "faults": [busy]}, "name"),
                        ({"name": "example", "faults": [busy, {"mailbox.server-busy": {"backoff_ms": -1}}]},
                         "faults[1].mailbox.server-busy.backoff_ms")):
        for _ in range(2):
            refused = call(api, "POST", "/apply", json.dumps(body).encode())
            assert refused.status == 400 and json.loads(refused.body)["errors"][0]["field"] == field
    info = json.loads(call(api, "GET", "/info").body)
    assert info["faults"] == ["mailbox.server-busy(backoff_ms=10)"] == info["applied"][0]["faults"]
