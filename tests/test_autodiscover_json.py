"""Autodiscover v2 (JSON): both URL forms, case-insensitive matching, Exchange Online error bodies, robustness."""
from __future__ import annotations

import json
from urllib.parse import parse_qs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.org import load_org
from harness.protocols.autodiscover import SiteUrls
from harness.protocols.autodiscover_json import json_error, respond_json
from tests.support.fuzz import scaled

ORG = load_org()
URLS = SiteUrls.for_org(ORG, 8443)


def answer_json(answer) -> dict:
    assert answer.content_type == "application/json; charset=utf-8"
    return json.loads(answer.body)


@pytest.mark.parametrize("path, query, expected", [
    ("/autodiscover/autodiscover.json/v1.0/alice@contoso.test", "Protocol=Ews",
     {"Protocol": "Ews", "Url": "https://mail.contoso.test:8443/EWS/Exchange.asmx"}),
    ("/AutoDiscover/AutoDiscover.JSON/V1.0/Alice@Contoso.Test", "protocol=ews",
     {"Protocol": "Ews", "Url": "https://mail.contoso.test:8443/EWS/Exchange.asmx"}),
    ("/autodiscover/autodiscover.json/v1.0/alice%40contoso.test", "Protocol=AutodiscoverV1",
     {"Protocol": "AutodiscoverV1", "Url": "https://autodiscover.contoso.test:8443/autodiscover/autodiscover.xml"}),
    ("/autodiscover/autodiscover.json", "Email=c.jones@contoso.test&Protocol=ActiveSync",
     {"Protocol": "ActiveSync", "Url": "https://mail.contoso.test:8443/Microsoft-Server-ActiveSync"}),
    ("/Autodiscover/Autodiscover.json/?email=bob@contoso.test&PROTOCOL=Ews",
     "", {"Protocol": "Ews", "Url": "https://mail.contoso.test:8443/EWS/Exchange.asmx"}),
])
def test_settings(path, query, expected):
    query = query or path.partition("?")[2]
    answer = respond_json(ORG, path, parse_qs(query), URLS)
    assert (answer.status, answer.outcome) == (200, "settings")
    assert answer_json(answer) == expected
    assert answer.mailbox is not None and answer.mailbox.email in answer.detail


@pytest.mark.parametrize("path, query, status, code, message", [
    ("/autodiscover/autodiscover.json/v1.0/alice@contoso.test", "", 400, "MissingProtocol",
     "A valid value must be provided for the query parameter 'Protocol'."),
    ("/autodiscover/autodiscover.json/v1.0/alice@contoso.test", "Protocol=Rest", 400, "ProtocolNotSupported",
     "Protocol: The protocol 'Rest' is not supported. Supported protocols are: 'ActiveSync,AutodiscoverV1,Ews'."),
    ("/autodiscover/autodiscover.json", "Protocol=Ews", 400, "MandatoryParameterMissing",
     "The get request sent does not match the valid format."),
    ("/autodiscover/autodiscover.json/v2.0/alice@contoso.test", "Protocol=Ews", 400, "MandatoryParameterMissing",
     "The get request sent does not match the valid format."),
    ("/autodiscover/autodiscover.json/v1.0/alice", "Protocol=Ews", 400, "MandatoryParameterMissing",
     "The get request sent does not match the valid format."),
    ("/autodiscover/autodiscover.json/v1.0/nobody@contoso.test", "Protocol=Ews", 404, "UserNotFound",
     "The user 'nobody@contoso.test' was not found."),
    ("/autodiscover/autodiscover.xml", "Protocol=Ews", 404, "NotFound",
     "'/autodiscover/autodiscover.xml' is not the Autodiscover v2 endpoint."),
])
def test_errors(path, query, status, code, message):
    answer = respond_json(ORG, path, parse_qs(query), URLS)
    assert (answer.status, answer.outcome, answer.error_code, answer.detail) == (status, "error", code, message)
    assert answer_json(answer) == {"ErrorCode": code, "ErrorMessage": message}
    assert answer.mailbox is None


def test_error_builder():
    answer = json_error(503, "ServerBusy", "Try later.")
    assert (answer.status, answer.outcome, answer.error_code) == (503, "error", "ServerBusy")
    assert answer_json(answer) == {"ErrorCode": "ServerBusy", "ErrorMessage": "Try later."}


@settings(max_examples=scaled(200), deadline=None)
@given(path=st.sampled_from(["/autodiscover/autodiscover.json", "/autodiscover/autodiscover.json/v1.0/",
                             "/AUTODISCOVER/autodiscover.json/V1.0/", ""]).flatmap(
           lambda prefix: st.text(max_size=60).map(lambda rest: prefix + rest)),
       query=st.dictionaries(st.sampled_from(["Protocol", "protocol", "Email", "email", "x"]) | st.text(max_size=8),
                             st.lists(st.sampled_from(["Ews", "ews", "ActiveSync", "alice@contoso.test", ""])
                                      | st.text(max_size=20), max_size=3), max_size=4))
def test_arbitrary_requests_get_documented_answers(path, query):
    answer = respond_json(ORG, path, query, URLS)
    document = answer_json(answer)
    if answer.status == 200:
        assert answer.outcome == "settings" and set(document) == {"Protocol", "Url"}
        assert document["Url"] in (URLS.ews_url, URLS.autodiscover_url, URLS.activesync_url)
    else:
        assert answer.status in (400, 404) and answer.outcome == "error"
        assert document == {"ErrorCode": answer.error_code, "ErrorMessage": answer.detail}
