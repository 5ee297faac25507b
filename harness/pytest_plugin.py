"""pytest fixtures for testing your own Exchange client against mockex (installed with the package; no conftest
needed):

    def test_my_client_refuses_an_expired_certificate(mockex):
        served = mockex("tls-expired")                     # built-in scenario names or YAML paths
        result = my_client.connect(port=served.https_port, ca_file=served.ca_file)
        assert result.error == "certificate has expired"
        assert not served.transcript("auth")               # and it sent no credentials

    def test_my_client_logs_on(mockex_fresh):              # the session's server, reset for this test
        ...
        assert mockex_fresh.transcript("auth")             # only this test's events

Each server is a real `mockex serve` process on 127.0.0.1 with ephemeral ports (see harness.testing.Served), stopped
when the test (or the session) ends. Every server of a session starts from one CA and set of keys, made once, so no
start generates a key and a client trusts one ``ca_file`` for the whole session.
"""
from __future__ import annotations

from typing import Callable, List

import pytest

from harness.testing import Served, start_server


@pytest.fixture(scope="session")
def mockex_pki(tmp_path_factory) -> str:
    """A state dir holding the session's CA and keys (made in-process, once), which every server here starts from."""
    from harness.pki import PKI
    state_dir = str(tmp_path_factory.mktemp("mockex-pki"))
    PKI(state_dir)
    return state_dir


@pytest.fixture
def mockex(tmp_path_factory, mockex_pki) -> Callable[..., Served]:
    """A factory: ``mockex(*scenarios, seed=None, extra_args=())`` starts a server with those scenarios active."""
    started: List[Served] = []

    def start(*scenarios: str, seed=None, extra_args=()) -> Served:
        args = [arg for scenario in scenarios for arg in ("--scenario", scenario)]
        if seed is not None:
            args += ["--seed", str(seed)]
        served = start_server(str(tmp_path_factory.mktemp("mockex")), *args, *extra_args, pki_from=mockex_pki)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


@pytest.fixture(scope="session")
def mockex_server(tmp_path_factory, mockex_pki) -> Served:
    """One server with the clean built-in org for the whole session."""
    served = start_server(str(tmp_path_factory.mktemp("mockex-session")), pki_from=mockex_pki)
    yield served
    served.stop()


@pytest.fixture
def mockex_fresh(mockex_server) -> Served:
    """The session's server as if new for this test, in about a millisecond: its scenario state reset and a
    ``transcript()`` that starts now (``Served.fresh``). A connection your client kept open from an earlier test
    stays open, with its logon."""
    return mockex_server.fresh()
