"""Checking transcript files against the schema of harness/events.py (docs/transcript.schema.json).

The suite's session hook (conftest.py) runs ``check_tree`` over the pytest base temp dir after the last test, so
every line any test made a server write is checked. Cheap enough to be always on: one validator per kind, made
once (a line is checked against its own kind's definition, not the document's if/then chain over ~45 kinds), and
jsonschema runs once per *shape* of line (its kind, its keys and their JSON types, array item types, the values of
enum fields): everything the schema judges, so lines of one shape share a verdict; the suite writes thousands of
lines of a few hundred shapes.

``watch_records`` also checks every event harness code records while the suite runs, in memory or to a file (unit
tests drive many code paths with an in-memory transcript); events a test records itself are not checked.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, Hashable, Iterator, List, Optional

import jsonschema
import pytest

from harness import events
from harness.transcript import Transcript

ENABLE_VARIABLE = "MOCKEX_VALIDATE_TRANSCRIPTS"   # "0" turns the end-of-session check off
PROBLEMS = pytest.StashKey[List[str]]()        # what the session hook found, for the terminal summary
PROBLEMS_SHOWN = 40
SYNTHETIC_MARK = ".synthetic-transcript-events"   # a file <dir>.synthetic-transcript-events: see synthetic()
_validators: Dict[str, jsonschema.protocols.Validator] = {}


def enabled() -> bool:
    return os.environ.get(ENABLE_VARIABLE, "1") != "0"


def _validator(kind: str) -> Optional[jsonschema.protocols.Validator]:
    if not _validators:
        for name, declared in events.KINDS.items():
            _validators[name] = jsonschema.Draft202012Validator(events.kind_schema(declared))
    return _validators.get(kind)


def _shape(value: Any) -> Hashable:
    """What the schema's types, items and length bounds see of a value."""
    if isinstance(value, str):
        return "s"
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        return "i"
    if isinstance(value, float):
        return "fi" if value.is_integer() else "f"
    if value is None:
        return "n"
    if isinstance(value, (list, tuple)):
        return ("a", len(value) if len(value) <= 4 else -1, frozenset(_shape(item) for item in value))
    if isinstance(value, dict):
        return ("o", tuple(sorted((key, _shape(item)) for key, item in value.items())))
    return "s"   # written with str()


def _line_shape(kind: str, event: dict) -> Hashable:
    enums = _ENUM_FIELDS.get(kind, ())
    return (kind,) + tuple(sorted((key, ("v", value) if key in enums and isinstance(value, str) else _shape(value))
                                  for key, value in event.items()))


_ENUM_FIELDS = {name: frozenset(key for key, field in kind.fields.items() if field.enum)
                for name, kind in events.KINDS.items()}
_valid_shapes: Dict[Hashable, bool] = {}


def line_problems(event: object) -> List[str]:
    """Why one decoded line breaks the schema (empty: it does not)."""
    if not isinstance(event, dict):
        return ["not a JSON object"]
    kind = event.get("kind")
    validator = _validator(kind) if isinstance(kind, str) else None
    if validator is None:
        return [f"kind {kind!r} is not declared in harness/events.py"]
    shape = _line_shape(kind, event)   # type: ignore[arg-type]
    valid = _valid_shapes.get(shape)
    if valid is None:
        event = json.loads(json.dumps(event, default=str))   # as written: tuples are arrays, objects strings
        valid = _valid_shapes[shape] = validator.is_valid(event)
    if valid:
        return []
    event = json.loads(json.dumps(event, default=str))
    return [f"{kind}: {'/'.join(map(str, error.absolute_path)) or '(line)'}: {error.message}"
            for error in sorted(validator.iter_errors(event), key=lambda e: list(map(str, e.absolute_path)))]


def check_file(path: str) -> List[str]:
    """``path:line: problem`` for every line of a transcript file that breaks the schema (a last line without its
    newline is still being written, or was cut by a kill: it is left out, as readers do)."""
    problems = []
    with open(path, "rb") as handle:
        lines = handle.read().split(b"\n")[:-1]
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError as exc:
            problems.append(f"{path}:{number}: not JSON: {exc}")
            continue
        problems += [f"{path}:{number}: {problem}" for problem in line_problems(event)]
    return problems


def synthetic(directory: Any) -> None:
    """Mark ``directory``: the transcripts in it (and below) hold made-up events, as tests of the writer's file
    mechanics record; the session check passes over them."""
    open(str(directory).rstrip(os.sep) + SYNTHETIC_MARK, "w").close()   # beside it: the test lists the dir itself


def transcript_files(root: str) -> Iterator[str]:
    for folder, folders, names in os.walk(root):
        if os.path.exists(folder + SYNTHETIC_MARK):
            folders[:] = []
            continue
        for name in sorted(names):
            if name == "transcript.jsonl" or name.startswith("transcript.jsonl."):
                yield os.path.join(folder, name)


def check_tree(root: str) -> List[str]:
    return [problem for path in transcript_files(root) for problem in check_file(path)]


def summary(problems: List[str]) -> List[str]:
    lines = problems[:PROBLEMS_SHOWN]
    if len(problems) > PROBLEMS_SHOWN:
        lines.append(f"... and {len(problems) - PROBLEMS_SHOWN} more")
    return lines + ["declare the kind or field in harness/events.py and run `python -m harness.catalog_docs`, "
                    "or fix the event"]


RECORDED_FILE = "transcript-schema-recorded.txt"   # in each process's base temp dir: what watch_records found
_recorded_problems: List[str] = []


def watch_records() -> None:
    """Check each event harness code records, as it is recorded (``Transcript.record`` wrapped for the session)."""
    if getattr(Transcript.record, "watched", False):
        return
    original = Transcript.record

    def record(self: Transcript, kind: str, **fields: Any) -> dict:
        event = original(self, kind, **fields)
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller.startswith("harness."):
            for problem in line_problems(event):
                test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
                _recorded_problems.append(f"{test}: recorded by {caller}: {problem}")
        return event
    record.watched = True   # type: ignore[attr-defined]
    Transcript.record = record   # type: ignore[method-assign]


def save_recorded(basetemp: str) -> None:
    if _recorded_problems:
        with open(os.path.join(basetemp, RECORDED_FILE), "w", encoding="utf-8") as handle:
            handle.writelines(line + "\n" for line in dict.fromkeys(_recorded_problems))


def recorded_problems(root: str) -> List[str]:
    """What watch_records found in this process and (under xdist) in the workers, whose base temps are below."""
    found: List[str] = []
    for folder, _, names in os.walk(root):
        if RECORDED_FILE in names:
            with open(os.path.join(folder, RECORDED_FILE), encoding="utf-8") as handle:
                found += handle.read().splitlines()
    return list(dict.fromkeys(found))
