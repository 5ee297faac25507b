"""AutodiscoverAnswer knows its flavour: faults refuse, redirect and edit answers through it without asking which
flavour they hold, and v2 JSON answers are left alone."""
from __future__ import annotations

from lxml import etree

from harness.org import load_org
from harness.protocols import ews
from harness.protocols.autodiscover import OUTLOOK_REQUEST_NS, OUTLOOK_RESPONSE_NS, POX, SiteUrls, respond_pox
from harness.protocols.autodiscover_answer import SettingsEdit, requested_address
from harness.protocols.autodiscover_json import JSON, respond_json
from harness.protocols.autodiscover_soap import ANS, SOAP, SOAP_NS, respond_soap
from harness.protocols.http import HttpRequest

ORG = load_org()
URLS = SiteUrls.for_org(ORG)
POX_BODY = (f'<Autodiscover xmlns="{OUTLOOK_REQUEST_NS}"><Request><EMailAddress>C.Jones@contoso.test</EMailAddress>'
            f"<AcceptableResponseSchema>{OUTLOOK_RESPONSE_NS}</AcceptableResponseSchema></Request>"
            f"</Autodiscover>").encode()
SOAP_BODY = (f'<s:Envelope xmlns:s="{SOAP_NS}" xmlns:a="{ANS}"><s:Body><a:GetUserSettingsRequestMessage><a:Request>'
             f"<a:Users><a:User><a:Mailbox>alice@contoso.test</a:Mailbox></a:User></a:Users><a:RequestedSettings>"
             f"<a:Setting>ExternalEwsUrl</a:Setting><a:Setting>UserDisplayName</a:Setting></a:RequestedSettings>"
             f"</a:Request></a:GetUserSettingsRequestMessage></s:Body></s:Envelope>").encode()


def answers():
    return (respond_pox(ORG, POX_BODY, None, URLS), respond_soap(ORG, SOAP_BODY, None, URLS),
            respond_json(ORG, "/autodiscover/autodiscover.json/v1.0/alice@contoso.test", {"Protocol": ["Ews"]}, URLS))


def test_every_answer_carries_the_flavour_that_built_it_outside_its_repr():
    assert [answer.flavour for answer in answers()] == [POX, SOAP, JSON]
    assert all(answer.outcome == "settings" and "flavour" not in repr(answer) for answer in answers())
    assert ews.respond_ews(ORG, None, None, b"<bad").__class__ is ews.EwsAnswer


def test_refusals_and_redirects_in_each_flavour():
    pox, soap, json = answers()
    assert (pox.refusal(600).error_code, soap.refusal(600).error_code, json.refusal(600)) == ("600", "InvalidRequest",
                                                                                             None)
    assert pox.redirect_to_address("bob@contoso.test").outcome == "redirectAddr"
    assert soap.redirect_to_url("https://x.test/autodiscover/autodiscover.svc").error_code == "RedirectUrl"
    assert json.redirect_to_address("bob@contoso.test") is None and json.redirect_to_url("https://x.test/") is None
    assert [a.refusal(500).flavour for a in (pox, soap)] == [POX, SOAP]


def test_redirect_location_takes_the_flavours_file_and_the_clients_port():
    request = HttpRequest("POST", "/autodiscover/autodiscover.svc", "/autodiscover/autodiscover.svc", "",
                          [("Host", "autodiscover.contoso.test:8443")])
    pox, soap, _json = answers()
    assert soap.redirect_location(request, "/autodiscover/hop1/autodiscover.xml") == \
        "https://autodiscover.contoso.test:8443/autodiscover/hop1/autodiscover.svc"
    assert pox.redirect_location(request, "http://mail.contoso.test/autodiscover/autodiscover.svc") == \
        "http://mail.contoso.test/autodiscover/autodiscover.xml"


def test_settings_edits_apply_the_part_of_their_flavour_and_say_when_nothing_changed():
    pox, soap, json = answers()
    no_expr = SettingsEdit(drop=("EXPR",), unavailable=("ExternalEwsUrl",))
    edited = pox.edited(no_expr, by="test")
    assert edited.detail.endswith("; edited by test") and b"<AuthPackage>" not in edited.body  # EXPR's own
    assert b"<AuthPackage>" in pox.body
    user = etree.fromstring(soap.edited(no_expr, by="test").body).find(f".//{{{ANS}}}UserResponse")
    assert user.findtext(f".//{{{ANS}}}UserSettingError/{{{ANS}}}SettingName") == "ExternalEwsUrl"
    assert [s.findtext(f"{{{ANS}}}Name") for s in user.find(f"{{{ANS}}}UserSettings")] == ["UserDisplayName"]
    assert soap.edited(SettingsEdit(add={"UserDisplayName": "x"}), by="test") is None  # already there
    assert pox.edited(SettingsEdit(unavailable=("ExternalEwsUrl",)), by="test") is None  # no POX part
    assert json.edited(no_expr, by="test") is None and json.in_other_schema() is None
    assert soap.in_other_schema() is None and pox.in_other_schema().outcome == "wrong-schema"


def test_requested_address_reads_pox_and_soap_requests():
    assert [requested_address(b) for b in (POX_BODY, SOAP_BODY, b"", b"<x/>")] == \
        ["c.jones@contoso.test", "alice@contoso.test", "", ""]
