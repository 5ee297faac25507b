"""Which scenarios a run covers: the selection (all, by layer, by name or file), then this shard's part of it.

Sharding is deterministic: the selection is ordered by scenario name and shard k of n takes every n-th scenario
starting at the k-th, so the n shards of one checkout cover the selection exactly once, with sizes that differ by
at most one, whatever machine runs them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from harness.faults.base import LAYERS
from harness.scenario import Scenario, builtin_scenarios, resolve
from harness.verdicts import TIMEOUT_REASONS
from harness.yamlfile import SpecError

SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> Tuple[int, int]:
    """'k/n' -> (k, n) with 1 <= k <= n."""
    match = SHARD.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a shard: write k/n, e.g. 2/3")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"shard {index}/{count}: k must be 1..n")
    return index, count


def shard(scenarios: Sequence[Scenario], index: int, count: int) -> List[Scenario]:
    ordered = sorted(scenarios, key=lambda s: (s.name, s.source))
    return [scenario for position, scenario in enumerate(ordered) if position % count == index - 1]


def slow_first(scenarios: Sequence[Scenario]) -> List[Scenario]:
    """The order in which to start scenarios on parallel workers: those likely to take long first (network faults
    pace or stall every answer; a timeout verdict is a wait), so no long one starts last and runs on alone.
    Only the start order changes: reports keep the plan's order."""
    def likely_slow(scenario: Scenario) -> bool:
        reason = (scenario.expect.get("analyzer") or {}).get("reason")
        return "network" in scenario.layers or reason in TIMEOUT_REASONS
    return sorted(scenarios, key=lambda s: not likely_slow(s))


@dataclass(frozen=True)
class Selection:
    all: bool = False
    layers: Tuple[str, ...] = ()
    refs: Tuple[str, ...] = ()        # built-in names or scenario files
    exclude: Tuple[str, ...] = ()     # names left out

    def empty(self) -> bool:
        return not (self.all or self.layers or self.refs)


def select(selection: Selection, shard_of: Optional[Tuple[int, int]] = None) -> List[Scenario]:
    """The scenarios of a selection (built-ins for --all/--layer, plus named ones), without duplicates, ordered
    by name; then this shard's part. An unknown layer, name or file raises SpecError."""
    for layer in selection.layers:
        if layer not in LAYERS:
            raise SpecError(layer, None, "--layer", "unknown layer", "allowed: " + ", ".join(LAYERS))
    chosen = {}
    if selection.all or selection.layers:
        for scenario in builtin_scenarios():
            if selection.all or set(selection.layers) & set(scenario.layers):
                chosen[scenario.name] = scenario
    for ref in selection.refs:
        scenario = resolve(ref)
        if scenario.name in chosen and chosen[scenario.name].source != scenario.source:
            raise SpecError(ref, None, "name", f"two scenarios are named {scenario.name!r}",
                            f"{chosen[scenario.name].source} and {scenario.source}")
        chosen[scenario.name] = scenario
    for name in selection.exclude:
        chosen.pop(name, None)
    scenarios = sorted(chosen.values(), key=lambda s: s.name)
    return shard(scenarios, *shard_of) if shard_of else scenarios
