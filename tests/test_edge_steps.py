"""The step runner (services/steps.py) on a task.Clock: time-based steps fire when the clock is advanced and not
before; request- and logon-count steps fire on the transcript events they count; reset re-arms everything."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

from twisted.internet import task

from harness.hooks import FaultSet
from harness.scenario import FaultSpec, Scenario, Step
from harness.services.steps import StepRunner
from harness.transcript import Transcript

LATENCY = FaultSpec("network.latency", {"ms": 10.0}, 1)
SLICER = FaultSpec("network.slicer", {}, 1)


def step(after: Dict[str, Any], apply: Tuple[FaultSpec, ...] = (LATENCY,), remove: Tuple[str, ...] = ()) -> Step:
    return Step(after=after, apply=list(apply), remove=list(remove), line=1)


class Run:
    """A StepRunner over one scenario, with the transcript and clock it runs on."""

    def __init__(self, *steps: Step, initial: Tuple[FaultSpec, ...] = (), seed: int = 0):
        self.scenario = Scenario("steps-test", "", faults=list(initial), steps=list(steps))
        self.clock = task.Clock()
        self.transcript = Transcript()
        self.faults = FaultSet(self.scenario.build_faults(0))
        self.runner = StepRunner([self.scenario], self.faults, self.transcript, self.clock, seed=seed)

    def active(self) -> List[str]:
        return [fault.name for fault in self.faults]

    def fired(self) -> List[Tuple[int, str]]:
        return [(event["step"], event["trigger"]) for event in self.transcript.of_kind("step")]

    def http(self, path: str = "/autodiscover/autodiscover.xml", status: int = 200) -> None:
        self.transcript.record("http", method="POST", path=path, status=status)

    def auth(self, result: str) -> None:
        self.transcript.record("auth", scheme="NTLM", user="alice", result=result)


# ---- time ------------------------------------------------------------------------------------------------------
def test_a_time_step_fires_when_the_clock_reaches_it_and_not_before():
    run = Run(step({"seconds": 30}))
    run.clock.advance(29.999)
    assert run.fired() == [] and run.active() == []
    run.clock.advance(0.001)
    assert run.fired() == [(0, "seconds")] and run.active() == ["network.latency"]
    (event,) = run.transcript.of_kind("step")
    assert event["scenario"] == "steps-test" and event["applied"] == [fault.describe() for fault in run.faults]
    assert run.clock.getDelayedCalls() == []


def test_time_steps_fire_in_clock_order_and_can_remove_what_an_earlier_one_applied():
    run = Run(step({"seconds": 20}, apply=(), remove=("network.latency",)), step({"seconds": 10}))
    run.clock.advance(10)
    assert run.active() == ["network.latency"]
    run.clock.advance(10)
    assert run.active() == [] and run.fired() == [(1, "seconds"), (0, "seconds")]


def test_requests_do_not_advance_a_time_step():
    run = Run(step({"seconds": 5}))
    for _ in range(10):
        run.http()
    assert run.fired() == []


# ---- counts ------------------------------------------------------------------------------------------------------
def test_a_request_step_fires_on_its_nth_matching_request_once():
    run = Run(step({"requests": 3, "path": "/autodiscover/autodiscover.xml"}))
    run.http("/ews/exchange.asmx")
    run.http("/AutoDiscover/AutoDiscover.XML")
    run.http("/autodiscover/autodiscover.xml?x=1")
    assert run.fired() == []
    run.http()
    assert run.fired() == [(0, "3 requests")] and run.active() == ["network.latency"]
    for _ in range(5):
        run.http()
    assert len(run.fired()) == 1


def test_a_request_step_counts_only_its_status():
    run = Run(step({"requests": 2, "status": 401}))
    run.http(status=200)
    run.http(status=401)
    run.http(status=200)
    assert run.fired() == []
    run.http(status=401)
    assert run.fired() == [(0, "2 requests")]


def test_a_request_step_ignores_other_events():
    run = Run(step({"requests": 1}))
    run.transcript.record("connect", conn=1)
    run.auth("success")
    assert run.fired() == []
    run.http("/anything")
    assert run.fired() == [(0, "1 requests")]


def test_a_logon_step_counts_successful_logons_only():
    run = Run(step({"auth_successes": 2}, apply=(SLICER,)))
    run.auth("failure")
    run.auth("success")
    run.auth("continue")
    assert run.fired() == []
    run.auth("success")
    assert run.fired() == [(0, "2 successful logons")] and run.active() == ["network.slicer"]


def test_a_step_removes_an_initial_fault():
    run = Run(step({"requests": 1}, apply=(), remove=("network.latency",)), initial=(LATENCY,))
    assert run.active() == ["network.latency"]
    run.http()
    assert run.active() == []
    assert run.transcript.of_kind("step")[0]["removed"] == ["network.latency"]


# ---- reset -------------------------------------------------------------------------------------------------------
def test_reset_restores_the_initial_faults_and_rearms_every_step():
    run = Run(step({"requests": 1}, apply=(SLICER,), remove=("network.latency",)), step({"seconds": 10}),
              initial=(LATENCY,))
    run.http()
    run.clock.advance(10)
    assert sorted(run.active()) == ["network.latency", "network.slicer"]
    run.runner.reset()
    assert run.active() == ["network.latency"]
    assert run.transcript.of_kind("reset")[0]["faults"] == [fault.describe() for fault in run.faults]
    run.http()
    run.clock.advance(10)
    assert run.fired() == [(0, "1 requests"), (1, "seconds")] * 2


def test_reset_cancels_a_pending_time_step_and_starts_its_wait_over():
    run = Run(step({"seconds": 30}))
    run.clock.advance(20)
    run.runner.reset()
    run.clock.advance(10)
    assert run.fired() == []   # the old timer would have fired here
    run.clock.advance(19.5)
    assert run.fired() == []
    run.clock.advance(0.5)
    assert run.fired() == [(0, "seconds")]
    assert len(run.clock.getDelayedCalls()) == 0


def test_faults_applied_by_a_step_draw_from_the_run_seed():
    def first_draw(seed: int) -> float:
        run = Run(step({"requests": 1}, apply=(FaultSpec("network.latency", {"ms": 10.0, "jitter_ms": 5.0}, 1),)),
                  seed=seed)
        run.http()
        (fault,) = run.faults
        return fault.rng.random()

    assert first_draw(0) == first_draw(0) != first_draw(7)


def test_a_stopped_runner_fires_nothing():
    run = Run(step({"seconds": 10}), step({"requests": 1}))
    run.runner.stop()
    run.clock.advance(10)
    run.http()
    assert run.fired() == [] and run.active() == [] and run.clock.getDelayedCalls() == []
