"""The fixtures test modules share; every helper lives in tests/support (tests/test_layout.py keeps it so)."""
from __future__ import annotations

import os
from typing import Iterator, Optional

import pytest

from harness.testing import Served, start_server
from tests.support import ews_schema_check, fuzz, fuzz_budget, transcript_schema
from tests.support.clients import default_socket_timeout
from tests.support.servers import worker_address


def pytest_configure(config: pytest.Config) -> None:
    fuzz.load_profile()   # before any test module is imported: their @settings build on the loaded profile
    if transcript_schema.enabled():
        transcript_schema.watch_records()
    ews_schema_check.start(config)   # before xdist starts its workers: they and their servers inherit it


@pytest.hookimpl(tryfirst=True)   # before the temp dirs may be cleaned up and the summary is printed
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every transcript line written under the base temp dir, and every event harness code recorded, must match
    docs/transcript.schema.json (off with MOCKEX_VALIDATE_TRANSCRIPTS=0). Under xdist each worker saves what it saw
    recorded and the controller checks once, after the workers: their base temp dirs are inside its own."""
    config = session.config
    ews_schema_check.finish(session)   # every EWS answer must validate, when the schema is found
    factory = getattr(config, "_tmp_path_factory", None)
    if not transcript_schema.enabled() or exitstatus == pytest.ExitCode.INTERRUPTED or factory is None:
        return
    basetemp = str(factory.getbasetemp())
    transcript_schema.save_recorded(basetemp)
    if hasattr(config, "workerinput"):
        return
    problems = transcript_schema.recorded_problems(basetemp) + transcript_schema.check_tree(basetemp)
    if problems:
        config.stash[transcript_schema.PROBLEMS] = problems
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    fuzz_budget.summarize(terminalreporter)
    ews_schema_check.summarize(terminalreporter, config)
    problems = config.stash.get(transcript_schema.PROBLEMS, [])
    if problems:
        terminalreporter.section("transcript lines that break docs/transcript.schema.json", red=True)
        for line in transcript_schema.summary(problems):
            terminalreporter.write_line(line)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Optional[bool]:
    return fuzz_budget.run_in_rounds(pyfuncitem)   # None (called as usual) unless under the fuzz profile


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One mockex for the session, ephemeral ports on 127.0.0.1."""
    state = str(tmp_path_factory.mktemp("mockex-state"))
    served = start_server(state)
    yield served
    served.stop()


@pytest.fixture(scope="session")
def server443(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """mockex on 127.0.0.2:443 for clients hard-wired to :443 (impacket's RPC proxy transport). Needs root."""
    if os.geteuid() != 0:
        pytest.skip("binding :443 needs root (or run the suite inside `unshare -rn`)")
    state = str(tmp_path_factory.mktemp("mockex-443"))
    served = start_server(state, listen=worker_address(), https_port=443)
    yield served
    served.stop()


@pytest.fixture
def socket_timeout() -> Iterator[None]:
    """http.client sockets in impacket have no timeout; a hang must fail the test instead."""
    with default_socket_timeout(20):
        yield
