"""Autodiscover faults as real clients see them, plus stateful steps and runtime reset (SIGHUP)."""
from __future__ import annotations

import signal

from tests.conftest import start_server
from tests.test_serve_autodiscover import POX_REQUEST, curl
from tests.test_serve_robustness import pox_error_code

STEPPED = """\
name: stepped
faults:
  - autodiscover.error-code: {code: 603}
steps:
  - after: {requests: 2, path: /autodiscover/autodiscover.xml, status: 200}
    remove: [autodiscover.error-code]
expect:
  analyzer: {passes: true}
"""


def alice_pox(served):
    alice = served.user("alice")
    return curl(served, "--basic", "-u", f"{alice['upn']}:{alice['password']}",
                data=POX_REQUEST.format(email=alice["email"]))


def error_code(body: str) -> str:
    return pox_error_code(b"HTTP/1.1 200 OK\r\n\r\n" + body.encode())


def test_error_code_fault_is_seen_by_curl(tmp_path):
    served = start_server(str(tmp_path), "--scenario", "autodiscover-error-500")
    try:
        status, body, _ = alice_pox(served)
        assert status == 200 and error_code(body) == "500"
        assert served.wait_for(lambda e: e["kind"] == "fault" and e["fault"] == "autodiscover.error-code")
    finally:
        assert served.stop() == 0


def test_steps_change_faults_and_sighup_resets_them(tmp_path):
    scenario = tmp_path / "stepped.yaml"
    scenario.write_text(STEPPED)
    state = tmp_path / "state"
    state.mkdir()
    served = start_server(str(state), "--scenario", str(scenario))
    try:
        codes = [error_code(alice_pox(served)[1]) for _ in range(3)]
        assert codes == ["603", "603", None]  # the step removed the fault after two answers
        assert served.wait_for(lambda e: e["kind"] == "step" and e["removed"] == ["autodiscover.error-code"])
        served.process.send_signal(signal.SIGHUP)
        assert served.wait_for(lambda e: e["kind"] == "reset")
        assert error_code(alice_pox(served)[1]) == "603"
    finally:
        assert served.stop() == 0
