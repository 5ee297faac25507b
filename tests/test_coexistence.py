"""Coexistence with Exchange 2010 and 2007 (issue 16 part 2): mailboxes homed on legacy servers, reached through the
2013 CAS. Autodiscover answers as the legacy CAS would (its server names, version and Outlook Anywhere settings),
the 2013 RPC proxy refuses as Exchange does when a documented requirement on the legacy CAS is not met, EMSMDB
connect reports the legacy server's version, and Outlook 2003 is refused for every mailbox while Outlook 2007 SP3
is accepted. The built-in scenarios for each requirement are judged by tests/test_probe_scenarios.py."""
import random

import pytest
import yaml
from lxml import etree

from harness.org import load_org, with_config
from harness.probe.runner import probe
from harness.protocols.autodiscover import OUTLOOK_RESPONSE_NS, SiteUrls, respond_pox
from harness.protocols.rpcchannel import RpcTarget
from harness.protocols.rpcproxy import legacy_refusal
from harness.rpc import emsmdb as E
from harness.rpc.base import CallContext
from tests.support.autodiscover import pox_request
from tests.support.clients import probe_options

ORG = load_org()
URLS = SiteUrls.for_org(ORG)
SERVER = E.Emsmdb(ORG, clock=lambda: 1700000000.0)
OUTLOOK_2003 = (11, 0, 8303, 0)
OUTLOOK_2007_SP3 = (12, 0, 6665, 5000)    # Exchange 2013's floor: 2007 SP3 with the November 2012 update
NS = {"o": OUTLOOK_RESPONSE_NS}


def configured(settings: str):
    return with_config(ORG, yaml.safe_load(settings), "test.yaml")


def protocol(org, email, kind, mapi_http=False):
    body = respond_pox(org, pox_request(email), None, URLS, mapi_http=mapi_http).body
    document = etree.fromstring(body)
    found = [p for p in document.iterfind(".//o:Account/o:Protocol", NS) if p.findtext("o:Type", namespaces=NS) == kind]
    return {child.tag.split("}")[1]: child.text for child in found[0]} if found else None


def test_the_fixture_homes_erin_on_2010_and_frank_on_2007():
    assert (ORG.home(ORG.find("erin")).version, ORG.home(ORG.find("frank")).version) == ("14.3.123.4", "8.3.83.6")
    assert ORG.is_legacy_homed(ORG.find("erin")) and not ORG.is_legacy_homed(ORG.find("alice"))
    assert ORG.legacy_proxy_problem(ORG.server("EX2010")) is None


@pytest.mark.parametrize("email, server, version_hex", [
    ("erin@contoso.test", "EX2010", "7383807B"),     # 0x70008000 | 14<<22 | 3<<16 | 123
    ("frank@contoso.test", "EX2007", "72038053"),    # 0x70008000 | 8<<22 | 3<<16 | 83
])
def test_autodiscover_answers_as_the_legacy_cas(email, server, version_hex):
    exch, expr = protocol(ORG, email, "EXCH"), protocol(ORG, email, "EXPR")
    legacy = ORG.server(server)
    assert exch["Server"] == legacy.fqdn and exch["ServerVersion"] == version_hex
    assert exch["ServerDN"] == ORG.backend_server_dn(legacy)
    assert exch["MdbDN"] == ORG.backend_server_dn(legacy) + "/cn=Microsoft Private MDB"
    # EXPR: the legacy CAS's Outlook Anywhere settings, which point at the 2013 name
    assert (expr["Server"], expr["AuthPackage"], expr["CertPrincipalName"]) == \
        ("mail.contoso.test", "Ntlm", "msstd:mail.contoso.test")
    alice = protocol(ORG, "alice@contoso.test", "EXCH")
    assert alice["Server"] == ORG.personal_server(ORG.find("alice")) and alice["ServerVersion"] == "73C085D9"


def test_legacy_settings_change_only_the_legacy_mailboxes_answer():
    moved = configured("outlook_anywhere: {EX2010: {ExternalHostname: legacy.contoso.test, "
                       "ClientAuthenticationMethod: Basic}}")
    assert (protocol(moved, "erin@contoso.test", "EXPR")["Server"],
            protocol(moved, "erin@contoso.test", "EXPR")["AuthPackage"]) == ("legacy.contoso.test", "Basic")
    assert protocol(moved, "frank@contoso.test", "EXPR")["Server"] == "mail.contoso.test"
    assert protocol(moved, "alice@contoso.test", "EXPR")["AuthPackage"] == "Negotiate"


def test_no_mapi_http_for_a_legacy_mailbox():
    enabled = configured("mapi_http: {Enabled: true}")
    body = respond_pox(enabled, pox_request("erin@contoso.test"), None, URLS, mapi_http=True).body
    assert b"mapiHttp" not in body
    assert b"mapiHttp" in respond_pox(enabled, pox_request("alice@contoso.test"), None, URLS, mapi_http=True).body


@pytest.mark.parametrize("settings, target, expected", [
    ("{}", "ex2010.contoso.test", None),
    ("{}", "EX2007", None),
    ("outlook_anywhere: {EX2010: {Enabled: false}}", "ex2010.contoso.test", (503, "Service Unavailable")),
    ("outlook_anywhere: {EX2010: {IISAuthenticationMethods: [Basic]}}", "EX2010", (401, "Unauthorized")),
    ("outlook_anywhere: {EX2010: {IISAuthenticationMethods: [Basic]}}", "ex2007.contoso.test", None),
    # the ExternalHostname requirement is about what Autodiscover tells Outlook, not about the proxying
    ("outlook_anywhere: {EX2010: {ExternalHostname: legacy.contoso.test}}", "EX2010", None),
    ("outlook_anywhere: {EX2010: {Enabled: false}}", "ex01.contoso.test", None),
    ("outlook_anywhere: {EX2007: {Enabled: false}}", "5d6e7f80-91a2-4b3c-84d5-e6f708192a08@contoso.test",
     (503, "Service Unavailable")),
])
def test_the_2013_proxy_refuses_as_the_legacy_cas_requires(settings, target, expected):
    refused = legacy_refusal(RpcTarget(target, 6001), configured(settings))
    assert (None if refused is None else (refused.status, refused.reason)) == expected


def make_ctx(user):
    return CallContext(org=ORG, mailbox=ORG.find(user), auth_level=6, association={}, record=lambda *a, **k: None,
                       rng=random.Random(5))


def connect(user, version):
    ctx = make_ctx(user)
    return ctx, E.parse_connect_response(SERVER.call(10, E.build_connect_request(ORG.legacy_dn(ORG.find(user)),
                                                                                  version), ctx))


@pytest.mark.parametrize("user, version", [("alice", (15, 0, 1497, 2)), ("dave", (15, 0, 1497, 2)),
                                           ("erin", (14, 3, 123, 4)), ("frank", (8, 3, 83, 6))])
def test_emsmdb_connect_reports_the_home_servers_version(user, version):
    ctx, session = connect(user, OUTLOOK_2007_SP3)
    assert session.status == E.EC_NONE and session.server_version == version


@pytest.mark.parametrize("user", [m.username for m in ORG.mailboxes])
def test_outlook_2003_is_refused_and_outlook_2007_accepted_for_every_mailbox(user):
    _, refused = connect(user, OUTLOOK_2003)
    assert refused.status == E.EC_CLIENT_VER_DISALLOWED == 0x000004DF
    assert refused.best_version == E.DEFAULT_MIN_CLIENT_VERSION
    _, accepted = connect(user, OUTLOOK_2007_SP3)
    assert accepted.status == E.EC_NONE
    _, too_old_2007 = connect(user, (12, 0, 6606, 1000))      # 2007 SP3 without the update
    assert too_old_2007.status == E.EC_CLIENT_VER_DISALLOWED


@pytest.mark.parametrize("user", ["erin", "frank"])
def test_a_legacy_mailbox_logs_on_through_the_proxy(user):
    ctx, session = connect(user, OUTLOOK_2007_SP3)
    result = E.parse_logon_response(SERVER.call(11, E.build_logon_request(session.cxh,
                                                                          ORG.legacy_dn(ORG.find(user))), ctx))
    assert (result.status, result.rop_status) == (E.EC_NONE, E.EC_NONE)


@pytest.mark.parametrize("user, rpc_server", [("erin", "ex2010.contoso.test"), ("frank", "ex2007.contoso.test")])
def test_the_probe_passes_for_legacy_mailboxes_through_the_2013_name(server, user, rpc_server):
    report = probe(probe_options(server, user=user))
    assert report.verdict.fails_at is None, report.verdict
    assert rpc_server in str([node.evidence for phase in report.phases for node in phase.children])
