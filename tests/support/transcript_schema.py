"""Checking transcript files against the schema of harness/events.py (docs/transcript.schema.json).

The suite's session hook (conftest.py) runs ``check_tree`` over the pytest base temp dir after the last test, so
every line any test made a server write is checked. One validator per kind, made once: a line is checked against
its own kind's definition only (the document's if/then chain would try all ~45 kinds per line), and the slower
error walk runs only for a line that is not valid.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Iterator, List, Optional

import jsonschema
import pytest

from harness import events

ENABLE_VARIABLE = "MOCKEX_VALIDATE_TRANSCRIPTS"   # "0" turns the end-of-session check off
PROBLEMS = pytest.StashKey[List[str]]()        # what the session hook found, for the terminal summary
PROBLEMS_SHOWN = 40
_validators: Dict[str, jsonschema.protocols.Validator] = {}


def enabled() -> bool:
    return os.environ.get(ENABLE_VARIABLE, "1") != "0"


def _validator(kind: str) -> Optional[jsonschema.protocols.Validator]:
    if not _validators:
        for name, declared in events.KINDS.items():
            _validators[name] = jsonschema.Draft202012Validator(events.kind_schema(declared))
    return _validators.get(kind)


def line_problems(event: object) -> List[str]:
    """Why one decoded line breaks the schema (empty: it does not)."""
    if not isinstance(event, dict):
        return ["not a JSON object"]
    kind = event.get("kind")
    validator = _validator(kind) if isinstance(kind, str) else None
    if validator is None:
        return [f"kind {kind!r} is not declared in harness/events.py"]
    if validator.is_valid(event):
        return []
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


def transcript_files(root: str) -> Iterator[str]:
    for folder, _, names in os.walk(root):
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
