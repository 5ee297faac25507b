"""`mockex scenarios ...` and `mockex faults ...`: browse the library, validate files."""
from __future__ import annotations

import json
import sys

from harness.catalog_docs import fault_text, scenario_schema
from harness.faults.base import catalog
from harness.scenario import builtin_scenarios, load_scenario, resolve
from harness.yamlfile import SpecError


def scenarios(args, parser) -> int:
    if args.action in (None, "list"):
        layer = getattr(args, "layer", None)
        shown = [s for s in builtin_scenarios() if not layer or layer in s.layers]
        width = max((len(s.name) for s in shown), default=10)
        for scenario in shown:
            print(f"{scenario.name:<{width}}  {','.join(scenario.layers) or '-':<18} {scenario.summary}")
        print(f"{len(shown)} scenarios", file=sys.stderr)
        return 0
    if args.action == "show":
        scenario = resolve(args.scenario)
        print(f"{scenario.name}  ({scenario.source})\n")
        print(scenario.description.strip() + "\n")
        known = catalog()
        for spec in scenario.faults:
            params = ", ".join(f"{k}={v!r}" for k, v in spec.params.items())
            print(f"fault {spec.name}({params})")
            print("\n".join("  " + line for line in fault_text(known[spec.name])[2:]))
        for index, step in enumerate(scenario.steps):
            print(f"step {index}: after {step.after}: apply {[s.name for s in step.apply]} remove {step.remove}")
        if scenario.expect:
            print("expect:", json.dumps(scenario.expect))
        return 0
    if args.action == "validate":
        failed = 0
        for path in args.files:
            try:
                scenario = load_scenario(path)
                print(f"{path}: ok ({scenario.name}, {len(scenario.faults)} faults, {len(scenario.steps)} steps)")
            except SpecError as exc:
                print(f"mockex: {exc}", file=sys.stderr)
                failed += 1
        return 2 if failed else 0
    if args.action == "schema":
        print(json.dumps(scenario_schema(), indent=2))
        return 0
    parser.error(f"unknown scenarios action {args.action}")
    return 2


def faults(args) -> int:
    known = catalog()
    if args.name:
        if args.name not in known:
            from harness.yamlfile import closest
            print(f"mockex: unknown fault {args.name!r} ({closest(args.name, known)})", file=sys.stderr)
            return 2
        print("\n".join(fault_text(known[args.name])))
        return 0
    width = max((len(n) for n in known), default=10)
    for name, cls in known.items():
        print(f"{name:<{width}}  {cls.summary}")
    return 0
