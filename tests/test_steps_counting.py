"""What a step's `requests` trigger counts: answered requests, not the 401 legs of an authentication handshake."""
from __future__ import annotations

from twisted.internet.task import Clock

from harness.hooks import FaultSet
from harness.scenario import load_scenario
from harness.services.steps import StepRunner
from harness.transcript import Transcript

FLAPS = """\
name: autodiscover-flaps
seed: 7
faults:
  - autodiscover.error-code: {code: 603}
steps:
  - after: {requests: 2, path: /autodiscover/autodiscover.xml}
    remove: [autodiscover.error-code]
"""


def runner(tmp_path, text: str):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    scenario = load_scenario(str(path))
    transcript = Transcript()
    faults = FaultSet(scenario.build_faults(7), record=transcript.record)
    return StepRunner([scenario], faults, transcript, Clock(), 7), transcript, faults


def answered(transcript: Transcript, status: int) -> None:
    transcript.record("http", path="/autodiscover/autodiscover.xml", status=status)


def test_ntlm_handshake_legs_do_not_count_as_requests(tmp_path) -> None:
    _, transcript, faults = runner(tmp_path, FLAPS)
    for _ in range(2):          # one NTLM-authenticated request: 401 (anonymous), 401 (challenge), then the answer
        answered(transcript, 401)
        answered(transcript, 401)
        assert len(faults) == 1
        answered(transcript, 200)
    assert len(faults) == 0 and transcript.of_kind("step")[0]["trigger"] == "2 requests"


def test_a_trigger_naming_status_401_counts_exactly_those(tmp_path) -> None:
    _, transcript, faults = runner(tmp_path, FLAPS.replace("path: /autodiscover/autodiscover.xml",
                                                           "status: 401"))
    answered(transcript, 200)
    answered(transcript, 401)
    assert len(faults) == 1
    answered(transcript, 401)
    assert len(faults) == 0
