"""The test suite's check that every EWS answer validates against Microsoft's schema (harness/protocols/ews_schema).

Off unless the environment names a directory in MOCKEX_VALIDATE_EWS and the schema's directory in
MOCKEX_VALIDATE_EWS_SCHEMA (the suite's conftest sets both when it finds the schema; servers it starts inherit
them): then each envelope is validated as it is sent and any that breaks the schema is appended, one JSON line
each, to ``ews-schema-<pid>.jsonl`` there, for the session's end to report. Production never sets them, so the
schema is never loaded there (serving the files, `serve --ews-schema-dir`, is another matter and checks nothing).
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Optional, Tuple

if TYPE_CHECKING:   # the schema code (lxml) loads only when the check is on: `mockex serve` starts without it
    from harness.protocols.ews import EwsAnswer

ENABLE_VARIABLE = "MOCKEX_VALIDATE_EWS"           # where invalid answers are recorded; "0": off
SCHEMA_VARIABLE = "MOCKEX_VALIDATE_EWS_SCHEMA"    # the schema directory they are checked against
BODY_SHOWN = 2000   # of an invalid envelope, kept in the report


def directories() -> Optional[Tuple[str, str]]:
    """(record directory, schema directory) when the check is on, else None."""
    where, schema = os.environ.get(ENABLE_VARIABLE, ""), os.environ.get(SCHEMA_VARIABLE, "")
    if where in ("", "0") or not schema or not os.path.isdir(where):
        return None
    return where, schema


def check(answer: EwsAnswer) -> None:
    """Validate one answer (each envelope of a chunked one) when the check is on; record what breaks the schema."""
    for envelope in answer.chunks or (answer.body,):
        check_envelope(envelope, answer.detail, answer.status)


def check_envelope(envelope: bytes, detail: str, status: int) -> None:
    """One envelope, also one a GetStreamingEvents stream sends after the answer's head."""
    found = directories()
    if found is None:
        return
    where, schema = found
    from harness.protocols import ews_schema
    problems = ews_schema.problems(envelope, schema)
    if problems:
        line = json.dumps({"detail": detail, "status": status, "problems": problems,
                           "test": os.environ.get("PYTEST_CURRENT_TEST", ""),
                           "body": envelope[:BODY_SHOWN].decode("utf-8", "replace")})
        with open(os.path.join(where, f"ews-schema-{os.getpid()}.jsonl"), "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
