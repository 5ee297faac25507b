"""The suite-wide EWS schema check (harness/services/ews_check.py): when the session finds Microsoft's EWS schema
(``$MOCKEX_EWS_SCHEMA_DIR``, else the nearest ``shared/ews-schema`` above the checkout; mockex does not ship it), it
owns a directory, named to every server through MOCKEX_VALIDATE_EWS, where servers record each answer that breaks the
schema, and the session fails listing them. No schema: one line in the summary says the check did not run.
``MOCKEX_VALIDATE_EWS=0`` turns it off. Under xdist the controller decides and makes the directory before the
workers start (they inherit it) and reads it once after them."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, List, Optional

import pytest

from harness.protocols import ews, ews_notify, ews_schema
from harness.services import ews_check
from harness.services.ews_check import ENABLE_VARIABLE, SCHEMA_VARIABLE

PROBLEMS = pytest.StashKey[List[str]]()
NOT_RUN = pytest.StashKey[str]()
PROBLEMS_SHOWN = 20
NO_SCHEMA = f"EWS schema check not run: no schema found (set {ews_schema.DIRECTORY_VARIABLE})"


def schema_directory(config: pytest.Config) -> Optional[str]:
    """Microsoft's schema for this checkout, or None; a directory named but lacking a file is a usage error."""
    found = ews_schema.find_directory(str(config.rootpath), os.environ)
    if found is not None and ews_schema.missing(found):
        raise pytest.UsageError(f"EWS schema directory {found} lacks {', '.join(ews_schema.missing(found))} "
                                f"(docs/ews.md: how to fetch them; unset {ews_schema.DIRECTORY_VARIABLE} to skip)")
    return found


def start(config: pytest.Config) -> None:
    """Controller: find the schema, name the session's record directory and the schema to this process and every
    server it starts. Everyone: check the answers tests have the EWS core make in-process too
    (``ews.respond_ews`` and the streams it opens; the site checks its own)."""
    if not hasattr(config, "workerinput") and os.environ.get(ENABLE_VARIABLE) != "0":
        schema = schema_directory(config)
        if schema is None:
            config.stash[NOT_RUN] = NO_SCHEMA
            os.environ[ENABLE_VARIABLE] = "0"   # workers and servers check nothing either
        else:
            os.environ[SCHEMA_VARIABLE] = schema
            os.environ[ENABLE_VARIABLE] = tempfile.mkdtemp(prefix="mockex-ews-schema-")
    if ews_check.directories() is not None:
        _watch_core()


def _watch_core() -> None:
    if getattr(ews.respond_ews, "watched", False):
        return
    original = ews.respond_ews

    def respond_ews(*args: Any, **kwargs: Any) -> ews.EwsAnswer:
        answer = original(*args, **kwargs)
        ews_check.check(answer)
        return answer
    respond_ews.watched = True   # type: ignore[attr-defined]
    ews.respond_ews = respond_ews   # type: ignore[assignment]
    # what an open GetStreamingEvents stream sends later (in-process; a served one's edge checks its own)
    for name in ("notifications", "status"):
        _watch_stream(name)


def _watch_stream(name: str) -> None:
    method = getattr(ews_notify.NotificationStream, name)

    def checked(self: ews_notify.NotificationStream, *args: Any) -> Any:
        envelope = method(self, *args)
        if envelope is not None:
            ews_check.check_envelope(envelope, "EWS GetStreamingEvents", 200)
        return envelope
    setattr(ews_notify.NotificationStream, name, checked)


def collect(config: pytest.Config) -> List[str]:
    """What servers recorded (controller only; the directory is removed)."""
    found = ews_check.directories()
    if hasattr(config, "workerinput") or found is None:
        return []
    problems = read(found[0])
    shutil.rmtree(found[0], ignore_errors=True)
    return problems


def finish(session: pytest.Session) -> None:
    """Fail the session when any EWS answer broke the schema (the terminal summary lists them)."""
    problems = collect(session.config)
    if problems and session.exitstatus != pytest.ExitCode.INTERRUPTED:
        session.config.stash[PROBLEMS] = problems
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def read(where: str) -> List[str]:
    found: List[str] = []
    for name in sorted(os.listdir(where)):
        with open(os.path.join(where, name), encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                found.append(f"{record['test'].rsplit(' (', 1)[0] or '(no test)'}: {record['detail']} "
                             f"(HTTP {record['status']}): " + "; ".join(record["problems"]))
    return found


def summarize(terminalreporter: Any, config: pytest.Config) -> None:
    """The offending answers, or the line saying the check did not run."""
    not_run = config.stash.get(NOT_RUN, "")
    if not_run:
        terminalreporter.write_line(not_run)
    problems = config.stash.get(PROBLEMS, [])
    if problems:
        terminalreporter.section("EWS answers that break Microsoft's EWS schema", red=True)
        for line in summary(problems):
            terminalreporter.write_line(line)


def summary(problems: List[str]) -> List[str]:
    lines = list(dict.fromkeys(problems))
    shown = lines[:PROBLEMS_SHOWN]
    if len(lines) > PROBLEMS_SHOWN:
        shown.append(f"... and {len(lines) - PROBLEMS_SHOWN} more")
    return shown + [f"fix the answer in harness/protocols/ews*.py, or run with {ENABLE_VARIABLE}=0 to skip the check"]
