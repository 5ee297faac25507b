"""The fixtures test modules share; every helper lives in tests/support (tests/test_layout.py keeps it so)."""
from __future__ import annotations

import os
from typing import Iterator, Optional

import pytest

from harness.testing import Served, start_server
from tests.support import fuzz, fuzz_budget
from tests.support.clients import default_socket_timeout
from tests.support.servers import worker_address


def pytest_configure(config: pytest.Config) -> None:
    fuzz.load_profile()   # before any test module is imported: their @settings build on the loaded profile


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Optional[bool]:
    return fuzz_budget.run_in_rounds(pyfuncitem)   # None (called as usual) unless under the fuzz profile


def pytest_terminal_summary(terminalreporter) -> None:
    fuzz_budget.summarize(terminalreporter)


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
