"""The fuzz oracles judge the conduct rule `backoff`: a client that comes back before the Retry-After of a drawn
HTTP 503 is over is a (conduct) finding, shrunk to the busy answer; one that waits as asked has none."""
from __future__ import annotations

import base64
import http.client
import socket
import ssl
import time

from harness.fuzz import fuzz_client
from harness.fuzz.oracles import backoff_verdict

CLEAN_ERRORS = (OSError, http.client.HTTPException)   # a cut, reset or refused answer: the client gives up cleanly


def post(served) -> http.client.HTTPResponse:
    """One POX Autodiscover request with the user's Basic credentials, on a connection of its own."""
    context = ssl.create_default_context(cafile=served.ca_file)
    connection = http.client.HTTPSConnection(served.host, int(served.https_port), context=context, timeout=5)
    connection.sock = context.wrap_socket(socket.create_connection((served.host, int(served.https_port)), 5),
                                          server_hostname=f"autodiscover.{served.domain}")
    login = base64.b64encode(f"{served.email}:{served.password}".encode()).decode()
    connection.request("POST", "/autodiscover/autodiscover.xml", b"<x/>",
                       {"Host": f"autodiscover.{served.domain}", "Authorization": "Basic " + login,
                        "Content-Type": "text/xml"})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def impatient(served) -> None:
    """Retries a busy answer at once, whatever Retry-After says."""
    if post(served).status in (429, 503):
        post(served)


def patient(served) -> None:
    """Retries a busy answer once, after the Retry-After it was given (when short enough to wait for in a test)."""
    response = post(served)
    wait = response.headers.get("Retry-After")
    if response.status in (429, 503) and wait is not None and wait.isdigit() and int(wait) <= 1:
        time.sleep(int(wait))
        post(served)


def test_a_retry_before_retry_after_is_a_conduct_finding_shrunk_to_the_busy_answer() -> None:
    report = fuzz_client(impatient, layers=["http"], max_examples=60, seed=1, timeout=10, max_findings=1,
                         expected_errors=CLEAN_ERRORS)
    assert len(report.findings) == 1, [f.describe() for f in report.findings]
    finding = report.findings[0]
    assert finding.verdict.oracle == "conduct" and finding.verdict.signature.startswith("conduct:backoff:HTTP ")
    [served] = finding.faults
    assert served["fault"] == "autodiscover.http-error", finding.describe()
    assert served["params"]["status"] in (429, 503) and served["params"]["retry_after"] > 0, finding.describe()


def test_the_backoff_verdict_reads_retry_after_from_the_transcript() -> None:
    host = "autodiscover.contoso.test"
    busy = {"kind": "http", "seq": 1, "time": 10.0, "host": host, "status": 503, "response_headers": [
        ["Retry-After", "120"]]}
    again = {"kind": "http", "seq": 2, "time": 10.5, "host": host, "status": 200}
    verdict = backoff_verdict([busy, again], "contoso.test", [host])
    assert verdict is not None and verdict.signature == "conduct:backoff:HTTP 503", verdict
    assert backoff_verdict([busy, dict(again, time=130.0)], "contoso.test", [host]) is None
    assert backoff_verdict([busy], "contoso.test", [host]) is None          # gave up: no retry, no finding


def test_a_client_that_waits_as_asked_is_not_judged() -> None:
    report = fuzz_client(patient, layers=["http"], max_examples=30, seed=1, timeout=10,
                         expected_errors=CLEAN_ERRORS)
    backoffs = [f for f in report.findings if "backoff" in f.verdict.signature]
    assert backoffs == [], [f.describe() for f in backoffs]
