"""Stateful scenario steps: after N requests / N seconds / N successful logons, apply or remove faults.

``requests`` counts answered HTTP requests except 401 answers (authentication round trips), unless the trigger
itself names ``status``.

Triggers are counted from transcript events, so a step sees exactly what the transcript shows. Everything runs
on the reactor thread; `reset()` puts the initial faults back and re-arms every step without a restart.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, List

from harness.hooks import FaultSet

if TYPE_CHECKING:   # annotations only: a server without scenarios never loads the scenario reader
    from harness.scenario import Scenario, Step


class StepRunner:
    def __init__(self, scenarios: List[Scenario], faults: FaultSet, transcript, clock, seed: int):
        self.scenarios, self.faults, self.transcript, self.clock, self.seed = scenarios, faults, transcript, clock, seed
        self._initial = list(faults)
        self._pending: List[tuple] = []
        self._timers: list = []
        transcript.listeners.append(self._on_event)
        self._arm()

    def _arm(self) -> None:
        self._pending = [(scenario, index, step, {"count": 0})
                         for scenario in self.scenarios for index, step in enumerate(scenario.steps)]
        for scenario, index, step, _state in self._pending:
            if "seconds" in step.after:
                self._timers.append(self.clock.callLater(float(step.after["seconds"]), self._fire, scenario, index,
                                                         step, "seconds"))

    def _on_event(self, event: dict) -> None:
        for entry in list(self._pending):
            scenario, index, step, state = entry
            after = step.after
            if "requests" in after and event["kind"] == "http" and self._matches(after, event):
                state["count"] += 1
                if state["count"] >= after["requests"]:
                    self._fire(scenario, index, step, f"{after['requests']} requests")
            elif "auth_successes" in after and event["kind"] == "auth" and event.get("result") == "success":
                state["count"] += 1
                if state["count"] >= after["auth_successes"]:
                    self._fire(scenario, index, step, f"{after['auth_successes']} successful logons")

    @staticmethod
    def _matches(after: dict, event: dict) -> bool:
        """Whether an ``http`` event counts toward ``after: {requests: N}``. A 401 does not count unless the
        trigger names ``status: 401``: it is a leg of an NTLM/Negotiate handshake (or a refused logon), so a
        client's one logical request counts once however many round trips its authentication takes."""
        if "status" not in after and event.get("status") == 401:
            return False
        if "path" in after and event.get("path", "").split("?", 1)[0].lower() != after["path"].lower():
            return False
        return "status" not in after or event.get("status") == after["status"]

    def _fire(self, scenario: Scenario, index: int, step: Step, why: str) -> None:
        self._pending = [p for p in self._pending if not (p[0] is scenario and p[1] == index)]
        for name in step.remove:
            self.faults.remove(name)
        added = [spec.build(random.Random(f"{self.seed}:{scenario.name}:step{index}:{spec.name}"))
                 for spec in step.apply]
        for fault in added:
            self.faults.add(fault)
        self.transcript.record("step", scenario=scenario.name, step=index, trigger=why,
                               applied=[f.describe() for f in added], removed=list(step.remove))

    def reset(self) -> None:
        self._cancel_timers()
        self.faults.replace(self._initial)
        self._arm()
        self.transcript.record("reset", faults=[f.describe() for f in self._initial])

    def stop(self) -> None:
        """No step fires any more: the server is going away, and a late step would bind its listeners again."""
        self._cancel_timers()
        self._pending = []
        if self._on_event in self.transcript.listeners:
            self.transcript.listeners.remove(self._on_event)

    def _cancel_timers(self) -> None:
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers = []
