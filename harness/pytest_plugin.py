"""pytest fixtures for testing your own Exchange client against mockex (installed with the package; no conftest
needed):

    def test_my_client_refuses_an_expired_certificate(mockex):
        served = mockex("tls-expired")                     # built-in scenario names or YAML paths
        result = my_client.connect(port=served.https_port, ca_file=served.ca_file)
        assert result.error == "certificate has expired"
        assert not served.transcript("auth")               # and it sent no credentials

    def test_my_client_logs_on(mockex_server):             # one clean contoso.test for the whole session
        ...

Each server is a real `mockex serve` process on 127.0.0.1 with ephemeral ports (see harness.testing.Served), stopped
when the test (or the session) ends.
"""
from __future__ import annotations

from typing import Callable, List

import pytest

from harness.testing import Served, start_server


@pytest.fixture
def mockex(tmp_path_factory) -> Callable[..., Served]:
    """A factory: ``mockex(*scenarios, seed=None, extra_args=())`` starts a server with those scenarios active."""
    started: List[Served] = []

    def start(*scenarios: str, seed=None, extra_args=()) -> Served:
        args = [arg for scenario in scenarios for arg in ("--scenario", scenario)]
        if seed is not None:
            args += ["--seed", str(seed)]
        served = start_server(str(tmp_path_factory.mktemp("mockex")), *args, *extra_args)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


@pytest.fixture(scope="session")
def mockex_server(tmp_path_factory) -> Served:
    """One server with the clean built-in org for the whole session."""
    served = start_server(str(tmp_path_factory.mktemp("mockex-session")))
    yield served
    served.stop()
