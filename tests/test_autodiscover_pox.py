"""POX Autodiscover: the Outlook 2006a and mobilesync answers, the error codes, the redirect builders, robustness."""
from __future__ import annotations

import datetime
import re
from typing import List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from harness.org import load_org
from harness.protocols import autodiscover
from harness.protocols.autodiscover import (
    MOBILESYNC_REQUEST_NS,
    MOBILESYNC_RESPONSE_NS,
    OUTLOOK_RESPONSE_NS,
    RESPONSE_NS,
    SiteUrls,
    pox_error,
    pox_redirect_addr,
    pox_redirect_url,
    respond_pox,
)
from tests.support.autodiscover import pox_request
from tests.support.fuzz import mutated_documents, scaled

ORG = load_org()
URLS = SiteUrls.for_org(ORG)
OLK = f"{{{OUTLOOK_RESPONSE_NS}}}"
POX_ERROR_CODES = {"500", "600", "601", "603"}


def parse(answer) -> etree._Element:
    assert answer.content_type == "text/xml; charset=utf-8"
    assert answer.body.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    return etree.fromstring(answer.body)


def texts(element: etree._Element, path: str) -> List[str]:
    return [e.text for e in element.iterfind(path)]


def protocol(account: etree._Element, kind: str) -> etree._Element:
    return next(p for p in account.iterfind(f"{OLK}Protocol") if p.findtext(f"{OLK}Type") == kind)


def settings_account(answer) -> etree._Element:
    root = parse(answer)
    assert answer.status == 200 and answer.outcome == "settings", answer.detail
    assert root.tag == f"{{{RESPONSE_NS}}}Autodiscover"
    return root.find(f"{OLK}Response/{OLK}Account")


def error_of(answer) -> etree._Element:
    root = parse(answer)
    assert answer.status == 200 and answer.outcome == "error"
    error = root.find(f"{{{RESPONSE_NS}}}Response/{{{RESPONSE_NS}}}Error")
    assert error is not None, answer.body
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{7}", error.get("Time"))
    assert error.get("Id").isdigit()
    assert [c.tag.split("}")[1] for c in error] == ["ErrorCode", "Message", "DebugData"]
    assert error.findtext(f"{{{RESPONSE_NS}}}ErrorCode") == answer.error_code
    return error


# ---- settings -------------------------------------------------------------------------------------------------
def test_outlook_settings_shape_and_values():
    alice = ORG.find("alice")
    answer = respond_pox(ORG, pox_request(), alice, URLS)
    root = parse(answer)
    assert answer.mailbox == alice
    response = root.find(f"{OLK}Response")
    assert [c.tag for c in response] == [f"{OLK}User", f"{OLK}Account"]
    user = response.find(f"{OLK}User")
    assert [(c.tag[len(OLK):], c.text) for c in user] == [
        ("DisplayName", "Alice Example"), ("LegacyDN", ORG.legacy_dn(alice)),
        ("AutoDiscoverSMTPAddress", "alice@contoso.test"), ("DeploymentId", ORG.deployment_id)]
    account = settings_account(answer)
    assert [c.tag[len(OLK):] for c in account][:3] == ["AccountType", "Action", "MicrosoftOnline"]
    assert texts(account, f"{OLK}Action") == ["settings"]
    assert texts(account, f"{OLK}Protocol/{OLK}Type") == ["EXCH", "EXPR", "WEB"]   # no mapiHttp unless asked

    exch = protocol(account, "EXCH")
    assert exch.findtext(f"{OLK}Server") == ORG.personal_server(alice) == \
        "8d3e7c1a-5b2f-4e61-9c0a-3f4d2e1b7a01@contoso.test"
    assert exch.findtext(f"{OLK}ServerDN") == ORG.server_dn(alice)
    assert exch.findtext(f"{OLK}ServerVersion") == ORG.server_version_hex
    assert exch.findtext(f"{OLK}MdbDN") == ORG.mdb_dn(alice)
    assert exch.findtext(f"{OLK}EwsUrl") == "https://mail.contoso.test/EWS/Exchange.asmx"
    assert exch.findtext(f"{OLK}OABUrl") == URLS.oab_url
    assert exch.findtext(f"{OLK}EcpUrl-um").endswith("&realm=contoso.test")

    expr = protocol(account, "EXPR")
    assert [(tag, expr.findtext(f"{OLK}{tag}")) for tag in ("Server", "SSL", "AuthPackage", "CertPrincipalName")] == [
        ("Server", "mail.contoso.test"), ("SSL", "On"), ("AuthPackage", "Negotiate"),
        ("CertPrincipalName", "msstd:mail.contoso.test")]
    assert expr.findtext(f"{OLK}EwsUrl") == URLS.ews_url

    web = protocol(account, "WEB")
    owa = web.find(f"{OLK}External/{OLK}OWAUrl")
    assert (owa.text, owa.get("AuthenticationMethod")) == ("https://mail.contoso.test/owa/", "Fba")
    assert web.findtext(f"{OLK}Internal/{OLK}Protocol/{OLK}Type") == "EXCH"


def test_mapi_http_block_only_when_the_client_announces_it():
    alice = ORG.find("alice")
    account = settings_account(respond_pox(ORG, pox_request(), alice, URLS, mapi_http=True))
    mapi = account.findall(f"{OLK}Protocol")[-1]
    assert (mapi.get("Type"), mapi.get("Version")) == ("mapiHttp", "1")
    mailbox_id = ORG.personal_server(alice)
    assert texts(mapi, f"{OLK}MailStore/{OLK}ExternalUrl") == [
        f"https://mail.contoso.test/mapi/emsmdb/?MailboxId={mailbox_id}"]
    assert texts(mapi, f"{OLK}AddressBook/{OLK}InternalUrl") == [
        f"https://mail.contoso.test/mapi/nspi/?MailboxId={mailbox_id}"]


def test_mailbox_on_another_server_gets_its_own_personal_server():
    dave, alice = ORG.find("dave"), ORG.find("alice")
    assert dave.server == "EX02"
    exch = protocol(settings_account(respond_pox(ORG, pox_request("dave@contoso.test"), alice, URLS)), "EXCH")
    assert exch.findtext(f"{OLK}Server") == ORG.personal_server(dave) != ORG.personal_server(alice)
    assert exch.findtext(f"{OLK}ServerDN") == ORG.server_dn(dave)
    assert exch.findtext(f"{OLK}MdbDN").startswith(ORG.server_dn(dave) + "/cn=")
    assert ORG.is_rpc_target(exch.findtext(f"{OLK}Server"))


def test_ports_auth_package_and_answer_bookkeeping():
    urls = SiteUrls.for_org(ORG, 8443)
    bob = ORG.find("bob")
    answer = respond_pox(ORG, pox_request("carol@contoso.test"), bob, urls, auth_package="Basic")
    expr = protocol(settings_account(answer), "EXPR")
    assert expr.findtext(f"{OLK}AuthPackage") == "Basic"
    assert expr.findtext(f"{OLK}Server") == "mail.contoso.test"          # a host name: Outlook dials 443
    assert expr.findtext(f"{OLK}CertPrincipalName") == "msstd:mail.contoso.test"
    assert expr.findtext(f"{OLK}EwsUrl") == "https://mail.contoso.test:8443/EWS/Exchange.asmx"
    assert answer.mailbox == ORG.find("carol")
    assert "asked by bob@contoso.test" in answer.detail
    assert urls.autodiscover_url == "https://autodiscover.contoso.test:8443/autodiscover/autodiscover.xml"


@pytest.mark.parametrize("email, legacy_dn, expected", [
    ("c.jones@contoso.test", None, "carol@contoso.test"),             # a proxy address
    ("ALICE@CONTOSO.TEST", None, "alice@contoso.test"),
    (None, ORG.legacy_dn(ORG.find("bob")), "bob@contoso.test"),       # Outlook's LegacyDN form
    ("", ORG.legacy_dn(ORG.find("bob")), "bob@contoso.test"),
])
def test_address_forms(email, legacy_dn, expected):
    answer = respond_pox(ORG, pox_request(email, legacy_dn=legacy_dn), None, URLS)
    root = parse(answer)
    assert root.findtext(f"{OLK}Response/{OLK}User/{OLK}AutoDiscoverSMTPAddress") == expected
    assert answer.mailbox.email == expected


def test_mobilesync_answer():
    request = pox_request("bob@contoso.test", schema=MOBILESYNC_RESPONSE_NS, namespace=MOBILESYNC_REQUEST_NS)
    answer = respond_pox(ORG, request, None, URLS)
    ms = f"{{{MOBILESYNC_RESPONSE_NS}}}"
    root = parse(answer)
    response = root.find(f"{ms}Response")
    assert answer.outcome == "settings" and response is not None
    assert response.findtext(f"{ms}Culture") == "en:us"
    assert response.findtext(f"{ms}User/{ms}EMailAddress") == "bob@contoso.test"
    server = response.find(f"{ms}Action/{ms}Settings/{ms}Server")
    assert [(c.tag[len(ms):], c.text) for c in server] == [
        ("Type", "MobileSync"), ("Url", "https://mail.contoso.test/Microsoft-Server-ActiveSync"),
        ("Name", "https://mail.contoso.test/Microsoft-Server-ActiveSync")]


# ---- errors ---------------------------------------------------------------------------------------------------
BILLION_LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                  + b"".join(b'<!ENTITY lol%d "%s">' % (i + 1, (b"&lol%d;" % i if i else b"&lol;") * 10)
                             for i in range(9))
                  + b"]><lolz>&lol9;</lolz>")


@pytest.mark.parametrize("body, method, code", [
    (pox_request(), "GET", "600"),
    (b"", "POST", "600"),
    (b"EMailAddress=alice@contoso.test", "POST", "600"),
    (b"<html><body>Welcome to Contoso</body></html>", "POST", "600"),
    (BILLION_LAUGHS, "POST", "600"),
    (b'<!DOCTYPE a SYSTEM "http://127.0.0.1:9/x.dtd">' + etree.tostring(etree.fromstring(pox_request())), "POST",
     "600"),
    (pox_request()[:-20], "POST", "600"),                                        # truncated
    (pox_request(namespace="urn:not-autodiscover"), "POST", "600"),
    (pox_request(None), "POST", "600"),                                         # no EMailAddress
    (pox_request("alice"), "POST", "600"),                                      # not an address
    (pox_request(schema=None), "POST", "601"),
    (pox_request(schema="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006"), "POST",
     "601"),
    (pox_request("nobody@contoso.test"), "POST", "500"),
    (pox_request("alice@fabrikam.test"), "POST", "500"),
    (pox_request(None, legacy_dn="/o=Contoso/cn=Recipients/cn=nobody"), "POST", "500"),
])
def test_error_codes(body, method, code):
    answer = respond_pox(ORG, body, ORG.find("alice"), URLS, method=method)
    error = error_of(answer)
    assert answer.error_code == code
    assert error.findtext(f"{{{RESPONSE_NS}}}Message") == autodiscover.POX_ERROR_MESSAGES[int(code)]
    assert answer.detail and answer.mailbox is None


def test_internal_failure_is_603(monkeypatch):
    def broken(settings):
        raise RuntimeError("database unmounted")
    monkeypatch.setitem(autodiscover.RESPONSE_RENDERERS, OUTLOOK_RESPONSE_NS, broken)
    answer = respond_pox(ORG, pox_request(), None, URLS)
    error_of(answer)
    assert answer.error_code == "603" and "database unmounted" in answer.detail
    assert answer.mailbox == ORG.find("alice")


def test_pox_error_builder_time_and_id():
    when = datetime.datetime(2024, 5, 1, 16, 56, 32, 616402)
    first, again = pox_error(600, when=when), pox_error(600, when=when)
    other = pox_error(603, "Backend down", server_name="EX02", when=when)
    assert first.body == again.body
    assert error_of(first).get("Time") == "16:56:32.6164020"
    assert error_of(other).get("Id") != error_of(first).get("Id")
    assert (other.error_code, other.detail) == ("603", "Backend down")


@pytest.mark.parametrize("answer, action, element, target", [
    (pox_redirect_addr("alice@contoso.mail.onmicrosoft.test"), "redirectAddr", "RedirectAddr",
     "alice@contoso.mail.onmicrosoft.test"),
    (pox_redirect_url("https://autodiscover.fabrikam.test/autodiscover/autodiscover.xml"), "redirectUrl",
     "RedirectUrl", "https://autodiscover.fabrikam.test/autodiscover/autodiscover.xml"),
])
def test_redirect_builders(answer, action, element, target):
    root = parse(answer)
    response = root.find(f"{OLK}Response")
    assert [c.tag for c in response] == [f"{OLK}Account"]       # no User block, as Exchange and Gromox
    account = response.find(f"{OLK}Account")
    assert [(c.tag[len(OLK):], c.text) for c in account] == [("AccountType", "email"), ("Action", action),
                                                              (element, target)]
    assert (answer.status, answer.outcome) == (200, action)


# ---- robustness ----------------------------------------------------------------------------------------------
def assert_documented(answer) -> None:
    """Any POX answer: HTTP 200, well-formed, and either settings or a documented error code."""
    root = parse(answer)
    assert answer.status == 200
    if answer.outcome == "settings":
        assert answer.mailbox is not None
        assert root.find(f"{OLK}Response/{OLK}Account/{OLK}Protocol") is not None or \
            root.find(f"{{{MOBILESYNC_RESPONSE_NS}}}Response/{{{MOBILESYNC_RESPONSE_NS}}}Action") is not None
    else:
        assert answer.outcome == "error" and answer.error_code in POX_ERROR_CODES
        error_of(answer)


@settings(max_examples=scaled(150), deadline=None)
@given(body=st.binary(max_size=400), method=st.sampled_from(["POST", "GET", "post", "PROPFIND"]))
def test_arbitrary_bytes_never_raise(body, method):
    answer = respond_pox(ORG, body, None, URLS, method=method)
    assert_documented(answer)
    assert answer.outcome == "error"


@settings(max_examples=scaled(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=mutated_documents(pox_request()) | mutated_documents(pox_request(
    "helpdesk@contoso.test", schema=MOBILESYNC_RESPONSE_NS, namespace=MOBILESYNC_REQUEST_NS)),
    mapi_http=st.booleans())
def test_mutated_requests_get_documented_answers(body, mapi_http):
    assert_documented(respond_pox(ORG, body, ORG.find("alice"), URLS, mapi_http=mapi_http))


# ---- remembered request bodies and settings documents ---------------------------------------------------------
def test_a_remembered_request_answers_as_a_fresh_one_for_every_caller():
    body = pox_request("bob@contoso.test")
    alice, bob = ORG.find("alice"), ORG.find("bob")
    first = respond_pox(ORG, body, alice, URLS)
    again = respond_pox(ORG, bytes(bytearray(body)), bob, URLS)   # equal bytes, another object
    assert first.body == again.body and first.mailbox is again.mailbox is bob
    assert first.detail == "settings for bob@contoso.test (asked by alice@contoso.test)"
    assert again.detail == "settings for bob@contoso.test"
    assert respond_pox(ORG, body, alice, URLS, mapi_http=True).body != first.body   # mapiHttp is part of the key
    refused = pox_request("not-an-address")
    assert [respond_pox(ORG, refused, alice, URLS).error_code for _ in range(2)] == ["600", "600"]


def test_remembered_requests_are_bounded_and_equal_to_a_fresh_reading(monkeypatch):
    monkeypatch.setattr(autodiscover, "_REQUESTS", {})
    bodies = [pox_request(f"user{index}@contoso.test") for index in range(autodiscover.MAX_REMEMBERED_REQUESTS + 5)]
    for body in bodies:
        assert autodiscover.read_pox_request(body) == autodiscover._read_pox_request(body)
    assert len(autodiscover._REQUESTS) == autodiscover.MAX_REMEMBERED_REQUESTS
    assert bodies[0] not in autodiscover._REQUESTS and bodies[-1] in autodiscover._REQUESTS   # the oldest went
    padding = b" " * autodiscover.MAX_REMEMBERED_BODY
    big = pox_request("alice@contoso.test").replace(b"<Request>", b"<Request>" + padding)
    assert isinstance(autodiscover.read_pox_request(big), autodiscover.PoxRequest)
    assert big not in autodiscover._REQUESTS
    assert autodiscover.read_pox_request(bytearray(bodies[0])) == autodiscover._read_pox_request(bodies[0])


def test_a_remembered_settings_document_is_the_one_rendering_would_give(monkeypatch):
    monkeypatch.setattr(autodiscover, "_SETTINGS", {})
    alice = ORG.find("alice")
    remembered = respond_pox(ORG, pox_request(), alice, URLS).body
    monkeypatch.setattr(autodiscover, "_SETTINGS", {})
    assert respond_pox(ORG, pox_request(), alice, URLS).body == remembered
    assert len(autodiscover._SETTINGS) == 1
    other = SiteUrls.for_org(ORG, 8443)
    assert b":8443/" in respond_pox(ORG, pox_request(), alice, other).body   # the URLs are part of the key
