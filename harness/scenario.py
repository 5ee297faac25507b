"""Scenario files: YAML naming faults (with parameters), optional stateful steps, and what clients should observe.

    name: outlook-anywhere-port-blocked
    description: The firewall drops 443 on mail.contoso.test; autodiscover still works.
    seed: 7
    faults:
      - network.blackhole: {host: mail.contoso.test, port: 443}
    steps:
      - after: {requests: 3, path: /autodiscover/autodiscover.xml}
        apply: [{auth.reject: {user: alice@contoso.test}}]
    expect:
      analyzer: {fails_at: port, reason: connection-timeout, host: mail.contoso.test}

Every error names the file, line and field, with a hint (closest fault name, allowed values).
"""
from __future__ import annotations

import glob
import os
import random
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set

from harness import conduct, verdicts
from harness.faults.base import Fault, FaultParamError, catalog, fault_class
from harness.paths import data_dir
from harness.yamlfile import Collector, Reader, SpecError, closest, load_file

BUILTIN_DIR = data_dir("scenarios")
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,63}$")
HTTP_STATUS_REASON = re.compile(r"^http-[1-5][0-9][0-9]$")   # the probe's id family for unexpected HTTP statuses
TRIGGERS = {"requests": int, "path": str, "seconds": (int, float), "auth_successes": int, "status": int}
# expect.client: what any client run by `mockex run` must do (docs/runner.md)
EXIT_CLASSES = ("success", "failure", "any")
CREDENTIALS = ("never", "trusted-tls", "any")
CLIENT_PATTERNS = ("stdout", "stderr", "stdout_not", "stderr_not")


@dataclass
class FaultSpec:
    name: str
    params: Dict[str, Any]
    line: int

    def build(self, rng: random.Random) -> Fault:
        cls = fault_class(self.name)
        if cls is None:   # a scenario file cannot get here: reading it checked every name
            raise KeyError(self.name)
        return cls(rng=rng, **self.params)


@dataclass
class Step:
    after: Dict[str, Any]
    apply: List[FaultSpec]
    remove: List[str]
    line: int


@dataclass
class Scenario:
    name: str
    description: str
    faults: List[FaultSpec]
    steps: List[Step] = field(default_factory=list)
    expect: Dict[str, Any] = field(default_factory=dict)
    seed: Optional[int] = None
    source: str = ""

    @property
    def layers(self) -> List[str]:
        specs = self.faults + [s for step in self.steps for s in step.apply]
        return sorted({spec.name.split(".", 1)[0] for spec in specs})

    @property
    def summary(self) -> str:
        return self.description.strip().splitlines()[0] if self.description.strip() else ""

    def build_faults(self, seed: int) -> List[Fault]:
        """Fault instances, each with its own rng derived from the run's seed, so runs replay."""
        return [spec.build(random.Random(f"{seed}:{self.name}:{i}:{spec.name}"))
                for i, spec in enumerate(self.faults)]


def _fault_spec(item: Any, path: str, where: str, line: int) -> FaultSpec:
    if isinstance(item, str):
        name, params, item_line = item, {}, line
    elif isinstance(item, dict) and len(item) == 1:
        name, params = next(iter(item.items()))
        item_line = item.line_of(name) if hasattr(item, "line_of") else line
        if params is None:
            params = {}
    else:
        raise SpecError(path, line, where, "a fault is written `layer.name: {param: value}` (one key)",
                        "e.g. - tls.expired: {host: mail.contoso.test}")
    cls = fault_class(name) if isinstance(name, str) else None
    if cls is None:
        raise SpecError(path, item_line, where, f"unknown fault {name!r}", closest(str(name), catalog()))
    if not isinstance(params, dict):
        raise SpecError(path, item_line, f"{where}.{name}", f"parameters must be a mapping, got {params!r}")
    try:
        cls.validate(dict(params))
    except FaultParamError as exc:
        param_line = params.line_of(exc.param) if hasattr(params, "line_of") else item_line
        raise SpecError(path, param_line, f"{where}.{name}.{exc.param}", exc.message, exc.hint) from None
    return FaultSpec(name, dict(params), item_line)


def parse_fault(name: str, params: Any, source: str) -> FaultSpec:
    """One fault given outside a file (the control API): checked as a scenario's ``faults`` item is, with the same
    messages; ``source`` stands for the file name in them."""
    return _fault_spec({name: params}, source, "faults[0]", 0)


def _expect(reader: Reader) -> Dict[str, Any]:
    reader.only(["analyzer", "client", "clients"])
    result: Dict[str, Any] = {}
    if "analyzer" in reader.mapping:
        analyzer = reader.sub("analyzer")
        analyzer.only(["fails_at", "reason", "host", "user", "passes", "warns"])
        block = {}
        if "passes" in analyzer.mapping:
            block["passes"] = analyzer.get("passes", bool)
        else:
            block["fails_at"] = analyzer.get("fails_at", str, choices=verdicts.STEPS)
        if "reason" in analyzer.mapping:
            reason = analyzer.get("reason", str)
            if reason not in verdicts.REASONS and not HTTP_STATUS_REASON.match(reason):
                raise analyzer.error("reason", f"{reason!r} is not allowed",
                                     closest(reason, list(verdicts.REASONS) + ["http-<status>"]))
            block["reason"] = reason
        for key in ("host", "user", "warns"):
            if key in analyzer.mapping:
                block[key] = analyzer.get(key, str)
        result["analyzer"] = block
    if "client" in reader.mapping:
        result["client"] = _client_expect(reader.sub("client"))
    if "clients" in reader.mapping:
        result["clients"] = dict(reader.get("clients", dict))
    return result


def _client_expect(client: Reader) -> Dict[str, Any]:
    """expect.client: exit class or code, output patterns (Python regular expressions, searched), where credentials
    may go, the scenario's client timeout."""
    client.only(["exit", *CLIENT_PATTERNS, "credentials", "timeout", "conduct"])
    block: Dict[str, Any] = {}
    if "exit" in client.mapping:
        code = client.get("exit", (str, int))
        if isinstance(code, int) and not 0 <= code <= 255:
            raise client.error("exit", f"exit code {code} is not 0..255")
        if isinstance(code, str) and code not in EXIT_CLASSES:
            raise client.error("exit", f"{code!r} is not allowed", closest(code, EXIT_CLASSES) + " or a code 0..255")
        block["exit"] = code
    for key in CLIENT_PATTERNS:
        if key in client.mapping:
            value = client.get(key, (str, list))
            patterns = [value] if isinstance(value, str) else list(value)
            for pattern in patterns:
                if not isinstance(pattern, str):
                    raise client.error(key, f"expected a pattern (text), got {pattern!r}")
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise client.error(key, f"{pattern!r} is not a regular expression: {exc}") from None
            block[key] = patterns
    if "credentials" in client.mapping:
        block["credentials"] = client.get("credentials", str, choices=CREDENTIALS)
    if "timeout" in client.mapping:
        timeout = client.get("timeout", (int, float))
        if timeout <= 0:
            raise client.error("timeout", "the timeout must be > 0 seconds")
        block["timeout"] = float(timeout)
    if "conduct" in client.mapping:
        block["conduct"] = _conduct(client.sub("conduct"))
    return block


def _conduct(reader: Reader) -> Dict[str, List[str]]:
    """expect.client.conduct: rules of harness/conduct.py to judge beyond the default ones (require) or not to
    judge here (waive)."""
    reader.only(["require", "waive"])
    block: Dict[str, List[str]] = {}
    for key in ("require", "waive"):
        if key in reader.mapping:
            value = reader.get(key, (str, list))
            names = [value] if isinstance(value, str) else list(value)
            for name in names:
                if name not in conduct.RULES:
                    raise reader.error(key, f"{name!r} is not a conduct rule", closest(str(name), conduct.RULES))
            block[key] = names
    both = set(block.get("require", ())) & set(block.get("waive", ()))
    if both:
        raise reader.error("waive", f"{', '.join(sorted(both))}: both required and waived")
    return block


def load_scenario(path: str) -> Scenario:
    """A scenario file, checked in full: every problem is reported at once, each as ``file:line: field: message``."""
    top = Reader(load_file(path), path)
    found = Collector()
    found.check(top.only, ["name", "description", "seed", "faults", "steps", "expect"])
    name = found.check(_scenario_name, top, default="")
    faults = [spec for item, where, line in found.check(top.items, "faults", [], default=[])
              if (spec := found.check(_fault_spec, item, path, where, line)) is not None]
    steps = []
    # the faults a step may remove; unknown when one failed to load (no cascade of errors from one typo)
    active: Optional[Set[str]] = None if found.errors else {spec.name for spec in faults}
    for item, where, line in found.check(top.items, "steps", [], default=[]):
        step = found.check(_step, item, path, where, line, active)
        if step is not None:
            steps.append(step)
            active = active | {spec.name for spec in step.apply} if active is not None else None
        else:
            active = None
    expect = found.check(lambda: _expect(top.sub("expect")) if "expect" in top.mapping else {}, default={})
    description = found.check(top.get, "description", str, "", default="")
    seed = found.check(top.get, "seed", int, None)
    found.done()
    return Scenario(name=name, description=description, faults=faults, steps=steps, expect=expect, seed=seed,
                    source=path)


def _scenario_name(top: Reader) -> str:
    name = top.get("name", str)
    if not NAME.match(name):
        raise top.error("name", f"{name!r} is not a scenario name", "lower-case letters, digits and '-'")
    return name


def _step(item: Any, path: str, where: str, line: int, active: Optional[Set[str]]) -> Step:
    """One step; ``remove`` may name only faults the scenario has by then (its own or applied by earlier steps)."""
    step = Reader(item, path, where, line)
    found = Collector()
    found.check(step.only, ["after", "apply", "remove"])
    trigger = found.check(_trigger, step, default={})
    apply = [spec for f, w, ln in found.check(step.items, "apply", [], default=[])
             if (spec := found.check(_fault_spec, f, path, w, ln)) is not None]
    remove = []
    for value, w, ln in found.check(step.items, "remove", [], default=[]):
        if not isinstance(value, str) or fault_class(value) is None:
            found.errors.append(SpecError(path, ln, w, f"unknown fault {value!r}", closest(str(value), catalog())))
        elif active is not None and value not in active:
            found.errors.append(SpecError(path, ln, w, f"{value!r} is not active when this step runs",
                                          "active: " + (", ".join(sorted(active)) or "no fault")))
        remove.append(str(value))
    if not found.errors and not apply and not remove:
        found.errors.append(step.error("after", "a step must `apply` or `remove` something"))
    found.done()
    return Step(trigger, apply, remove, line)


def _trigger(step: Reader) -> Dict[str, Any]:
    after = step.sub("after")
    after.only(TRIGGERS)
    trigger = {key: after.get(key, kind) for key, kind in TRIGGERS.items() if key in after.mapping}
    if not {"requests", "seconds", "auth_successes"} & set(trigger):
        raise step.error("after", "a step needs `requests`, `seconds` or `auth_successes`")
    return trigger


def builtin_paths() -> List[str]:
    """Sorted by scenario name (so `network-stall` comes before `network-stall-response`)."""
    return sorted(glob.glob(os.path.join(BUILTIN_DIR, "*.yaml")), key=lambda p: os.path.basename(p)[:-5])


def builtin_scenarios() -> List[Scenario]:
    return [load_scenario(path) for path in builtin_paths()]


def resolve(ref: str) -> Scenario:
    """A scenario by built-in name or by file path."""
    if os.path.sep in ref or ref.endswith((".yaml", ".yml")) or os.path.exists(ref):
        return load_scenario(ref)
    path = os.path.join(BUILTIN_DIR, f"{ref}.yaml")
    if os.path.exists(path):
        return load_scenario(path)
    names = [os.path.splitext(os.path.basename(p))[0] for p in builtin_paths()]
    raise SpecError(ref, None, "", "no such built-in scenario or file", closest(ref, names) if names else "")
