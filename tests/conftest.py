"""Shared fixtures: a real `mockex serve` process on loopback (harness.testing), hypothesis profiles."""
from __future__ import annotations

import os

import pytest
from hypothesis import settings

# CI replays the same examples every run (no example database on a clean clone): a red run is reproducible, and
# `HYPOTHESIS_PROFILE=explore pytest ...` searches afresh.
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from harness.testing import Served, start_server  # noqa: E402  (re-exported for the test modules)


def worker_address(base: int = 2) -> str:
    """A loopback address of this pytest-xdist worker's own (127.0.0.2 for gw0 or no xdist, 127.0.0.3 for gw1, ...),
    so parallel workers can each hold :443."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return f"127.0.0.{base + int(worker[2:] or 0)}"


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Served:
    """One mockex for the session, ephemeral ports on 127.0.0.1."""
    state = str(tmp_path_factory.mktemp("mockex-state"))
    served = start_server(state)
    yield served
    served.stop()


@pytest.fixture(scope="session")
def server443(tmp_path_factory) -> Served:
    """mockex on 127.0.0.2:443 for clients hard-wired to :443 (impacket's RPC proxy transport). Needs root."""
    if os.geteuid() != 0:
        pytest.skip("binding :443 needs root (or run the suite inside `unshare -rn`)")
    state = str(tmp_path_factory.mktemp("mockex-443"))
    served = start_server(state, listen=worker_address(), https_port=443)
    yield served
    served.stop()


@pytest.fixture
def socket_timeout():
    """http.client sockets in impacket have no timeout; a hang must fail the test instead."""
    from tests.support.clients import default_socket_timeout
    with default_socket_timeout(20):
        yield
