"""The transcript schema (harness/events.py -> docs/transcript.schema.json): it is a valid JSON Schema, it catches a
kind or field nobody declared, and what a real server writes passes it (the session hook checks every file the
suite writes; this test checks one whatever MOCKEX_VALIDATE_TRANSCRIPTS says)."""
from __future__ import annotations

import ast
import json
import os
import re

import jsonschema
import pytest

from harness import events
from harness.testing import start_server
from harness.transcript import Transcript
from tests.support import REPO, transcript_schema
from tests.support.clients import curl


def test_the_generated_schema_is_a_valid_json_schema_that_picks_the_definition_by_kind():
    schema = events.schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = {"seq": 1, "time": 1.5, "kind": "transcript_gap", "lost": 3}
    assert validator.is_valid(good)
    assert not validator.is_valid({**good, "lost": "3"})
    assert not validator.is_valid({**good, "kind": "no_such_kind"})
    assert not validator.is_valid({**good, "extra": 1})


@pytest.mark.parametrize("event, wanted", [
    ({"seq": 1, "time": 1.0, "kind": "stop"}, []),
    ({"seq": 1, "time": 1.0, "kind": "stop", "why": "x"}, ["Additional properties are not allowed"]),
    ({"seq": 1, "time": 1.0, "kind": "stopped"}, ["kind 'stopped' is not declared"]),
    ({"seq": 1, "time": 1.0, "kind": "transcript_gap"}, ["'lost' is a required property"]),
    ({"seq": 1, "time": 1.0, "kind": "disconnect", "conn": "1", "reason": "closed"}, ["conn: '1' is not of type"]),
    ([1], ["not a JSON object"]),
])
def test_a_line_that_breaks_the_schema_is_named_with_why(event, wanted):
    problems = transcript_schema.line_problems(event)
    assert len(problems) == len(wanted) and all(w in p for w, p in zip(wanted, problems)), problems


def test_a_file_is_checked_line_by_line_and_a_line_still_being_written_is_left_out(tmp_path):
    path = tmp_path / "broken.jsonl"    # not a transcript.jsonl: the session hook must not find it
    path.write_text('{"seq": 1, "time": 1.0, "kind": "stop"}\nnot json\n{"seq": 2, "time": 1.0, "kind": "odd"}\n{"k')
    problems = transcript_schema.check_file(str(path))
    assert [p.split(": ")[0] for p in problems] == [f"{path}:2", f"{path}:3"], problems


def test_the_file_markers_written_on_rotation_and_after_lost_writes_pass(tmp_path):
    path = str(tmp_path / "transcript.jsonl")
    fail = {"now": False}

    def opener(name):
        if fail["now"]:
            raise OSError(28, "No space left on device")
        return os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    transcript = Transcript(path, max_bytes=200, warn=lambda text: None, opener=opener)
    for index in range(6):
        transcript.record("disconnect", conn=index, reason="closed")
    fail["now"] = True
    transcript._close_fd()   # the next write reopens the file: and fails
    transcript.record("stop")
    fail["now"] = False
    transcript.record("stop")
    transcript.close()
    kinds = [json.loads(line)["kind"] for name in transcript_schema.transcript_files(str(tmp_path))
             for line in open(name)]
    assert {"transcript_rotated", "transcript_gap"} <= set(kinds), kinds
    assert transcript_schema.check_tree(str(tmp_path)) == []


def recorded_kinds() -> set:
    """Every kind given literally as the first argument of a ``record(...)`` call in harness/."""
    found = set()
    for folder, _, names in os.walk(os.path.join(REPO, "harness")):
        for name in names:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    tree = ast.parse(handle.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Call) and re.fullmatch(r"_?record", getattr(node.func, "attr", "")) \
                            and node.args and isinstance(node.args[0], ast.Constant) \
                            and isinstance(node.args[0].value, str):
                        found.add(node.args[0].value)
    return found


def test_every_kind_the_code_records_is_declared_and_every_declared_kind_is_recorded():
    recorded = recorded_kinds()
    assert len(recorded) > 30
    file_only = {name for name, kind in events.KINDS.items() if kind.file_only}
    assert recorded - set(events.KINDS) == set()
    assert set(events.KINDS) - file_only - recorded == set()


def test_what_a_served_mockex_writes_passes_the_schema(tmp_path):
    served = start_server(str(tmp_path / "state"))
    try:
        alice = served.user("alice")
        curl(served, "autodiscover.contoso.test", "--basic", "-u", f"CONTOSO\\alice:{alice['password']}",
             path="/autodiscover/autodiscover.xml")
        curl(served, "autodiscover.contoso.test", "--basic", "-u", "CONTOSO\\alice:wrong",
             path="/autodiscover/autodiscover.xml")
        auth = served.wait_for(lambda e: e["kind"] == "auth" and e["result"] == "failure")
    finally:
        served.stop()
    assert (auth[0]["user"], auth[0]["login"]) == ("alice@contoso.test", "CONTOSO\\alice")
    assert transcript_schema.check_file(served.endpoints["transcript"]) == []
    kinds = {json.loads(line)["kind"] for line in open(served.endpoints["transcript"])}
    assert {"start", "listening", "connect", "tls", "http", "auth", "stop"} <= kinds


def test_events_harness_code_records_are_checked_as_they_are_recorded_and_a_tests_own_are_not():
    transcript_schema.watch_records()
    memory = Transcript()
    before = len(transcript_schema._recorded_problems)
    exec("memory.record('stop', why='x')", {"__name__": "harness.example", "memory": memory})
    memory.record("made_up")
    found = transcript_schema._recorded_problems[before:]
    del transcript_schema._recorded_problems[before:]   # planted here: not a problem of the suite
    assert len(found) == 1 and "recorded by harness.example" in found[0] and "'why' was unexpected" in found[0], found
