"""`mockex fuzz --layer http` / `--layer auth`: a client that cannot read a WWW-Authenticate line naming a scheme it
does not know is found within a bounded, seeded run, shrunk to the single challenge that breaks it, saved as a
scenario that `mockex run` reproduces; the careful client gets no finding from a bounded http-layer run."""
from __future__ import annotations

import base64
import http.client
import socket
import ssl

import pytest

from harness.faults import load_families
from harness.faults.base import CATALOG, FaultParamError
from harness.fuzz import fuzz_client
from harness.fuzz.engine import FuzzOptions, Judge
from harness.fuzz.server import FuzzServer
from harness.fuzz.strategies import CHALLENGE_LINES
from tests.support.buggy_clients import client, found_and_reproduced

BEARER = CHALLENGE_LINES[3]


def test_the_challenge_fault_takes_header_values_only() -> None:
    load_families()
    challenge = CATALOG["auth.challenge"]
    assert challenge.validate({"schemes": ["NTLM", BEARER], "combined": True})["schemes"] == ["NTLM", BEARER]
    with pytest.raises(FaultParamError):
        challenge.validate({"schemes": ["NTLM\r\nSet-Cookie: a=b"]})
    with pytest.raises(FaultParamError):
        challenge.validate({"schemes": "NTLM"})


def challenges(values: dict, host: str, header: str = "WWW-Authenticate", user: str = "alice:x") -> tuple:
    """(status, the ``header`` lines) of a POST with Basic credentials to https://host/autodiscover/..."""
    context = ssl.create_default_context(cafile=values["ca_file"])
    raw = socket.create_connection((values["host"], int(values["https_port"])), 10)
    connection = http.client.HTTPSConnection(host, context=context, timeout=10)
    connection.sock = context.wrap_socket(raw, server_hostname=host)
    connection.request("POST", "/autodiscover/autodiscover.xml", b"<x/>",
                       {"Authorization": "Basic " + base64.b64encode(user.encode()).decode(),
                        "Content-Type": "text/xml"})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status, response.headers.get_all(header) or []


def test_the_challenge_fault_sends_its_lines_in_order_or_on_one_line_whatever_is_sent() -> None:
    with FuzzServer() as server:
        values = Judge(server, "true", FuzzOptions()).values
        host = "autodiscover.contoso.test"
        server.apply([{"fault": "auth.challenge", "params": {"schemes": [BEARER, 'Basic realm="{host}"']}}])
        assert challenges(values, host) == (401, [BEARER, f'Basic realm="{host}"'])
        server.apply([{"fault": "auth.challenge", "params": {"schemes": ["NTLM", "Negotiate"], "combined": True}}])
        assert challenges(values, host) == (401, ["NTLM, Negotiate"])
        server.apply([{"fault": "auth.challenge", "params": {"schemes": ["NTLM"], "path": "/ews/"}}])
        # other paths: the site's own challenge for the refused password
        assert challenges(values, host) == (401, ["Negotiate", "NTLM", f'Basic realm="{host}"'])
        user = f"{values['email']}:{values['password']}"
        server.apply([{"fault": "autodiscover.http-error", "params": {"status": 503, "retry_after": 120}}])
        assert challenges(values, host, "Retry-After", user) == (503, ["120"])
        server.apply([{"fault": "autodiscover.http-error", "params": {"status": 503}}])
        assert challenges(values, host, "Retry-After", user) == (503, [])


def test_a_crash_on_an_unknown_scheme_is_found_shrunk_saved_and_reproduced(tmp_path) -> None:
    found_and_reproduced(tmp_path, "crash_on_unknown_scheme",
                         {"fault": "auth.challenge", "params": {"schemes": [BEARER]}},
                         "crash", "should not match /Traceback", layers=("http",), max_examples=60)


def test_a_careful_client_has_no_finding_at_the_http_layer() -> None:
    report = fuzz_client(client("careful"), layers=["http"], max_examples=80, seed=1, timeout=10)
    assert report.examples == 80 and report.findings == [], [f.describe() for f in report.findings]
