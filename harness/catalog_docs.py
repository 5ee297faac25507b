"""Docs generated from the code so they cannot drift: docs/faults.md, docs/scenarios.md and
docs/scenario.schema.json (and the generated parts of docs/architecture.md and docs/conduct.md).
`python -m harness.catalog_docs` rewrites them; a test fails when they are stale."""
from __future__ import annotations

import json
import os
from typing import Dict, List

from harness import conduct, verdicts
from harness.faults.base import LAYERS, Param, catalog, declared_hooks
from harness.hooks import provided_hooks
from harness.scenario import CLIENT_PATTERNS, CREDENTIALS, EXIT_CLASSES, TRIGGERS, builtin_scenarios

DOCS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


def _param_type(param: Param) -> str:
    kinds = param.kind if isinstance(param.kind, tuple) else (param.kind,)
    return " or ".join(k.__name__ for k in kinds)


def _param_default(param: Param) -> str:
    return "required" if param.required else ("—" if param.default is None else f"`{param.default!r}`")


def fault_text(cls) -> List[str]:
    lines = [f"### `{cls.name}`", "", cls.summary, ""]
    if cls.description:
        lines += [cls.description.strip(), ""]
    lines += ["| parameter | type | default | meaning |", "|---|---|---|---|"]
    for name, param in cls.all_params().items():
        choices = f" (one of {', '.join(map(str, param.choices))})" if param.choices else ""
        if param.minimum is not None:
            choices += f" (at least {param.minimum:g})"
        if param.below is not None:
            choices += f" (below {param.below:g})"
        lines.append(f"| `{name}` | {_param_type(param)} | {_param_default(param)} | {param.help}{choices} |")
    lines.append("")
    if cls.symptoms:
        lines += ["What clients report:", ""]
        lines += [f"- **{client}**: {text}" for client, text in cls.symptoms.items()]
        lines.append("")
    if cls.analyzer:
        lines += ["`mockex probe` concludes: " + ", ".join(f"{k} = `{v}`" for k, v in cls.analyzer.items()), ""]
    return lines


def faults_markdown() -> str:
    faults = catalog()
    lines = ["# Fault catalogue", "",
             "Generated from `harness/faults/` by `python -m harness.catalog_docs`; do not edit.",
             "", f"{len(faults)} faults. Every fault also takes `host` and `user` to narrow where it applies.", ""]
    for layer in LAYERS:
        members = [cls for cls in faults.values() if cls.name.split(".", 1)[0] == layer]
        if not members:
            continue
        lines += [f"## {layer}", ""]
        for cls in members:
            lines += fault_text(cls)
    return "\n".join(lines).rstrip() + "\n"


def scenarios_markdown() -> str:
    scenarios = builtin_scenarios()
    lines = ["# Built-in scenarios", "", "Generated from `scenarios/*.yaml` by `python -m harness.catalog_docs`; "
             "do not edit.", "", f"{len(scenarios)} scenarios. Run one with `mockex serve --scenario NAME`.", "",
             "## File format", "",
             "| field | meaning |", "|---|---|",
             "| `name` | lower-case letters, digits and `-` |",
             "| `description` | first line is the summary shown by `mockex scenarios list` |",
             "| `seed` | optional; the run's seed unless `--seed` is given |",
             "| `faults` | list of `layer.fault: {param: value}` (see faults.md) |",
             "| `steps` | optional list of `{after: {...}, apply: [faults], remove: [fault names]}`; `after` takes "
             + ", ".join(f"`{k}`" for k in TRIGGERS) + " |",
             "| `expect.analyzer` | `{fails_at: STEP, reason: REASON, host: NAME}` or `{passes: true}`: what "
             "`mockex probe` must conclude; `user: EMAIL` runs the probe as that mailbox (default alice) |",
             "| `expect.client` | what any client run by `mockex run` must do: `exit` (`success`, `failure`, `any` "
             "or a code), `stdout`/`stderr` (patterns that must be found), `stdout_not`/`stderr_not` (must not), "
             "`credentials` (`never`, `trusted-tls`, `any`), `timeout` (seconds), `conduct` (`{require: [RULE], "
             "waive: [RULE]}`: client-conduct rules beyond the default ones, or not judged here; docs/conduct.md); "
             "by default derived from `expect.analyzer` (docs/runner.md) |",
             "| `expect.clients` | free-form notes on what named clients should do |", "",
             "## Library", "", "| scenario | layers | effect | probe verdict |", "|---|---|---|---|"]
    for scenario in scenarios:
        analyzer = scenario.expect.get("analyzer", {})
        verdict = ("passes" if analyzer.get("passes") else
                   f"fails at `{analyzer.get('fails_at')}`"
                   + (f" ({analyzer['reason']})" if "reason" in analyzer else "")
                   if analyzer else "—")
        lines.append(f"| `{scenario.name}` | {', '.join(scenario.layers) or '—'} | {scenario.summary} | {verdict} |")
    return "\n".join(lines).rstrip() + "\n"


def _param_schema(param: Param) -> Dict:
    kinds = param.kind if isinstance(param.kind, tuple) else (param.kind,)
    types = sorted({JSON_TYPES[k] for k in kinds})
    schema: Dict = {"type": types[0] if len(types) == 1 else types}
    if param.help:
        schema["description"] = param.help
    if param.choices:
        schema["enum"] = list(param.choices)
    if param.minimum is not None:
        schema["minimum"] = param.minimum
    if param.below is not None:
        schema["exclusiveMaximum"] = param.below
    if param.items is not None:
        schema["items"] = {"type": JSON_TYPES[param.items]}
    return schema


def scenario_schema() -> Dict:
    fault_items = []
    for name, cls in catalog().items():
        spec = cls.all_params()
        params = {"type": "object", "additionalProperties": False,
                  "properties": {k: _param_schema(p) for k, p in spec.items()}}
        required = [k for k, p in spec.items() if p.required]
        if required:
            params["required"] = required
        else:
            params = {"oneOf": [params, {"type": "null"}]}
        fault_items.append({"type": "object", "additionalProperties": False, "required": [name],
                            "properties": {name: params}, "description": cls.summary})
        if not required:
            fault_items.append({"const": name})
    fault = {"oneOf": fault_items}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "mockex scenario",
        "type": "object", "additionalProperties": False, "required": ["name"],
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{1,63}$"},
            "description": {"type": "string"},
            "seed": {"type": "integer"},
            "faults": {"type": "array", "items": {"$ref": "#/$defs/fault"}},
            "steps": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["after"],
                "properties": {
                    "after": {"type": "object", "additionalProperties": False, "properties": {
                        "requests": {"type": "integer"}, "path": {"type": "string"}, "status": {"type": "integer"},
                        "seconds": {"type": "number"}, "auth_successes": {"type": "integer"}}},
                    "apply": {"type": "array", "items": {"$ref": "#/$defs/fault"}},
                    "remove": {"type": "array", "items": {"type": "string", "enum": sorted(catalog())}}}}},
            "expect": {"type": "object", "additionalProperties": False, "properties": {
                "analyzer": {"type": "object", "additionalProperties": False, "properties": {
                    "fails_at": {"enum": list(verdicts.STEPS)},
                    "reason": {"anyOf": [{"enum": sorted(verdicts.REASONS)}, {"pattern": "^http-[1-5][0-9][0-9]$"}]},
                    "host": {"type": "string"}, "user": {"type": "string"}, "passes": {"type": "boolean"},
                    "warns": {"type": "string"}}},
                "client": {"type": "object", "additionalProperties": False, "properties": {
                    "exit": {"anyOf": [{"enum": list(EXIT_CLASSES)},
                                       {"type": "integer", "minimum": 0, "maximum": 255}]},
                    **{key: {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                             "description": "Python regular expressions, each searched in the output"}
                       for key in CLIENT_PATTERNS},
                    "credentials": {"enum": list(CREDENTIALS)},
                    "timeout": {"type": "number", "exclusiveMinimum": 0},
                    "conduct": {"type": "object", "additionalProperties": False, "properties": {
                        key: {"anyOf": [{"enum": list(conduct.RULES)},
                                        {"type": "array", "items": {"enum": list(conduct.RULES)}}]}
                        for key in ("require", "waive")}}}},
                "clients": {"type": "object"}}},
        },
        "$defs": {"fault": fault},
    }


HOOKS_BEGIN = "<!-- hooks:begin (generated by python -m harness.catalog_docs) -->"
HOOKS_END = "<!-- hooks:end -->"


def hooks_markdown() -> str:
    """The hook table of docs/architecture.md: every hook point, its typed arguments, answer, where it fires and
    which faults answer it."""
    answered: Dict[str, List[str]] = {}
    for name, cls in catalog().items():
        for hook in provided_hooks(cls):
            answered.setdefault(hook, []).append(name)
    rows = ["| hook | arguments | answer | declared in | fires in | means | faults |", "|---|---|---|---|---|---|---|"]
    for name, hook in sorted(declared_hooks().items()):
        rows.append(f"| `{name}` | `{hook.signature}` | {hook.answer_text} | `{hook.declared_in}` | {hook.fires_in} "
                    f"| {hook.means} | {len(answered.get(name, []))} |")
    return "\n".join(rows)


def replace_between(text: str, begin_marker: str, end_marker: str, body: str) -> str:
    """``text`` with what stands between the two marker lines replaced by ``body`` (a generated part of a doc)."""
    head, begin, rest = text.partition(begin_marker)
    _old, end, tail = rest.partition(end_marker)
    if not begin or not end:
        raise ValueError(f"the markers {begin_marker!r} and {end_marker!r} are missing")
    return f"{head}{begin_marker}\n{body}\n{end_marker}{tail}"


def with_hook_table(text: str) -> str:
    return replace_between(text, HOOKS_BEGIN, HOOKS_END, hooks_markdown())


def with_conduct_rules(text: str) -> str:
    """docs/conduct.md with its rule reference regenerated from harness/conduct.py's registry."""
    return replace_between(text, conduct.CONDUCT_BEGIN, conduct.CONDUCT_END, conduct.markdown())


def outputs() -> Dict[str, str]:
    """The wholly generated docs; docs/architecture.md only has its hook table generated (``with_hook_table``)."""
    return {"faults.md": faults_markdown(), "scenarios.md": scenarios_markdown(),
            "scenario.schema.json": json.dumps(scenario_schema(), indent=2) + "\n"}


def write() -> List[str]:
    os.makedirs(DOCS_DIR, exist_ok=True)
    written = []
    for name, text in outputs().items():
        path = os.path.join(DOCS_DIR, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        written.append(path)
    for name, regenerate in (("architecture.md", with_hook_table), ("conduct.md", with_conduct_rules)):
        path = os.path.join(DOCS_DIR, name)
        with open(path, encoding="utf-8") as handle:
            text = regenerate(handle.read())
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write():
        print(path)
