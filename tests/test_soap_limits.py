"""SOAP GetUserSettings answers at most 100 users per request, as Exchange does, so one request cannot make the
server build megabytes of answer (a 943 KB request naming 18,000 users once took 3.3 MB and 843 ms)."""
from __future__ import annotations

import pytest
from exchangelib import Configuration, Credentials
from exchangelib.autodiscover.protocol import AutodiscoverProtocol
from exchangelib.services import GetUserSettings
from exchangelib.transport import NOAUTH
from exchangelib.version import Version
from lxml import etree

from harness.org import load_org
from harness.protocols.autodiscover import SiteUrls
from harness.protocols.autodiscover_soap import ANS, MAX_USERS_PER_REQUEST, respond_soap

ORG = load_org()
URLS = SiteUrls.for_org(ORG)


def request_for(users: int) -> bytes:
    service = GetUserSettings(protocol=AutodiscoverProtocol(config=Configuration(
        service_endpoint="https://autodiscover.contoso.test/autodiscover/autodiscover.svc",
        credentials=Credentials("alice@contoso.test", "unused"), auth_type=NOAUTH)))
    addresses = [f"user{i}@contoso.test" for i in range(users - 1)] + ["alice@contoso.test"]
    payload = service.get_payload(users=addresses, settings=["user_display_name"])
    return service.wrap(content=payload, api_version=Version.all_versions()[0].api_version)


def top_level_error(body: bytes) -> tuple:
    response = etree.fromstring(body).find(f".//{{{ANS}}}Response")
    return response.findtext(f"{{{ANS}}}ErrorCode"), response.findtext(f"{{{ANS}}}ErrorMessage")


def test_a_hundred_users_are_answered_one_by_one() -> None:
    answer = respond_soap(ORG, request_for(MAX_USERS_PER_REQUEST), ORG.find("alice"), URLS)
    assert top_level_error(answer.body)[0] == "NoError"
    assert len(etree.fromstring(answer.body).findall(f".//{{{ANS}}}UserResponse")) == MAX_USERS_PER_REQUEST


@pytest.mark.parametrize("users", [MAX_USERS_PER_REQUEST + 1, 18_000])
def test_more_users_are_one_invalid_request_answer(users: int) -> None:
    answer = respond_soap(ORG, request_for(users), ORG.find("alice"), URLS)
    assert (answer.status, answer.error_code) == (200, "InvalidRequest")
    assert top_level_error(answer.body) == ("InvalidRequest", "The maximum number of users per request is 100.")
    assert len(answer.body) < 2000
