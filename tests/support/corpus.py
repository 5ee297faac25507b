"""The regression corpus: every input a fuzz target ever failed on, kept in tests/corpus/<target>/<name>.json and
replayed by the default run as plain parametrized tests (tests/corpus/README.md says how to add one).

Each file is one JSON object: ``why`` (the bug it found, or where it came from), ``input`` (the target's own
shape, see the README), and optionally ``xfail`` (a reason: the entry is expected to fail, strictly, until a fix
lands). Bytes are written as JSON strings of their Latin-1 characters ("\\r\\n\\u00ff"): readable, and lossless.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List

import pytest

CORPUS = Path(__file__).resolve().parent.parent / "corpus"


def entries(target: str) -> List[Any]:
    """Every kept input of ``target`` as a ``pytest.param`` named after its file."""
    params = []
    for path in sorted((CORPUS / target).glob("*.json")):
        entry = json.loads(path.read_text(encoding="utf-8"))
        assert set(entry) <= {"why", "input", "xfail"} and entry.get("why") and "input" in entry, path
        marks = [pytest.mark.xfail(strict=True, reason=entry["xfail"])] if "xfail" in entry else []
        params.append(pytest.param(entry["input"], id=path.stem, marks=marks))
    assert params, f"tests/corpus/{target}/ holds no input"
    return params


def as_bytes(text: str) -> bytes:
    """A corpus string back to the bytes it stands for."""
    return text.encode("latin-1")
