"""`mockex fuzz` on the Autodiscover layer: each deliberately fragile example client's bug is found within a bounded,
seeded run, shrunk to exactly the misbehaviour that triggers it, saved as a scenario that `mockex run` reproduces;
a careful client gets no finding. Path edits of the POX answer are checked on their own first."""
from __future__ import annotations

import os

import pytest
from lxml import etree

from harness.faults.autodiscover import Mutate
from harness.faults.base import FaultParamError
from harness.fuzz import fuzz_client
from harness.fuzz.oracles import error_site
from harness.protocols.autodiscover_paths import PathError, elements_at, mutate
from tests.support.buggy_clients import client, found_and_reproduced

EXPR_SERVER = "Account/Protocol[Type=EXPR]/Server"
POX = ("<Autodiscover xmlns='http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006'>"
       "<Response xmlns='http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a'><Account>"
       "<Protocol><Type>EXCH</Type><Server>a</Server></Protocol>"
       "<Protocol><Type>EXPR</Type><Server>b</Server></Protocol></Account></Response></Autodiscover>")


def texts(document: etree._Element, path: str) -> list:
    return [e.text for e in elements_at(document, path)]


def test_a_path_names_elements_and_each_action_edits_them() -> None:
    document = etree.fromstring(POX)
    assert texts(document, EXPR_SERVER) == ["b"] and texts(document, "Account/Protocol/Server") == ["a", "b"]
    assert mutate(document, EXPR_SERVER, "duplicate") and texts(document, EXPR_SERVER) == ["b", "b"]
    assert mutate(document, EXPR_SERVER, "set", "c") and texts(document, EXPR_SERVER) == ["c", "c"]
    assert mutate(document, EXPR_SERVER, "drop") and texts(document, EXPR_SERVER) == []
    assert texts(document, "Account/Protocol[Type=EXCH]/Server") == ["a"]
    assert not mutate(document, "Account/Protocol[Type=WEB]", "drop")   # nothing there: nothing changed
    with pytest.raises(PathError):
        elements_at(document, "Account/Protocol[Type")
    with pytest.raises(FaultParamError):
        Mutate(path="Account/[x]")
    with pytest.raises(FaultParamError):
        Mutate(path=EXPR_SERVER, action="set", value="a\x00b")


def test_a_python_traceback_is_told_apart_by_its_innermost_frame() -> None:
    stderr = ('Traceback (most recent call last):\n  File "/x/main.py", line 3, in <module>\n'
              '  File "/x/lib.py", line 9, in f\nKeyError: \'Server\'\n')
    assert error_site(stderr) == "KeyError at lib.py:9"


def test_a_crash_on_a_missing_expr_server_is_found_shrunk_saved_and_reproduced(tmp_path) -> None:
    found_and_reproduced(tmp_path, "crash_on_missing_server",
                         {"fault": "autodiscover.mutate", "params": {"path": EXPR_SERVER, "action": "drop"}},
                         "crash", "should not match /Traceback")


def test_credentials_sent_after_an_http_redirect_are_found_shrunk_saved_and_reproduced(tmp_path) -> None:
    found_and_reproduced(tmp_path, "follows_http_redirect",
                         {"fault": "autodiscover.redirect-url",
                          "params": {"url": "http://mail.contoso.test/autodiscover/autodiscover.xml"}},
                         "conduct", "credentials over plain HTTP")


def test_credentials_sent_over_a_certificate_for_another_host_are_found_shrunk_saved_and_reproduced(tmp_path):
    found_and_reproduced(tmp_path, "ignores_hostname", {"fault": "tls.wrong-host", "params": {}}, "conduct",
                         "should not have trusted", layers=("tls",), max_examples=40)


def test_a_careful_client_has_no_finding_at_the_tls_layer() -> None:
    report = fuzz_client(client("careful"), layers=["tls"], max_examples=25, seed=1, timeout=10)
    assert report.examples == 25 and report.findings == []


def test_a_careful_client_has_no_finding(tmp_path) -> None:
    report = fuzz_client(client("careful"), max_examples=40, seed=1, timeout=10, save_failures=str(tmp_path))
    assert report.examples == 40 and report.findings == []
    assert os.listdir(tmp_path) == []


def test_an_in_process_client_crash_is_found_and_its_documented_error_is_not() -> None:
    class Refused(Exception):
        pass

    def discover(served) -> None:   # fails the documented way whatever is served
        raise Refused(served.email)

    quiet = fuzz_client(discover, max_examples=5, seed=1, expected_errors=(Refused,))
    assert quiet.findings == [] and quiet.examples == 5

    def fragile(served) -> None:
        raise KeyError("Server")

    loud = fuzz_client(fragile, max_examples=20, seed=1, max_findings=1)
    assert [f.verdict.oracle for f in loud.findings] == ["crash"]
    assert len(loud.findings[0].faults) == 1   # shrunk: one fault is the least any example serves
