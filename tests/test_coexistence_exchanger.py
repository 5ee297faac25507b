"""Coexistence end to end: unmodified exchanger.py lists the address book for mailboxes homed on Exchange 2010
(erin@) and 2007 (frank@) through the 2013 name, naming the RPC server Autodiscover gives them (the legacy
server's FQDN), and gets the 2013 CAS's 503 for them when the legacy CAS has Outlook Anywhere disabled.
(The probe's side is in tests/test_coexistence.py and the coexistence scenarios.)"""
import pytest

from tests.support.clients import exchanger, needs_exchanger, requires_exchanger
from tests.support.servers import scenario_args, start_on_port_443
from tests.support.transcript import TranscriptTail

pytestmark = [pytest.mark.root, requires_exchanger]

LEGACY_HOMES = [("erin", "ex2010.contoso.test"), ("frank", "ex2007.contoso.test")]


@pytest.fixture(scope="module")
def oa_disabled(tmp_path_factory):
    served = start_on_port_443(*scenario_args(tmp_path_factory.mktemp("coexist"), "oa-disabled",
                                              "coexistence-legacy-oa-disabled"))
    yield served
    assert served.stop() == 0


@pytest.mark.parametrize("user, home", LEGACY_HOMES)
def test_exchanger_lists_tables_for_a_legacy_homed_mailbox(server443, user, home):
    needs_exchanger(server443)
    tail = TranscriptTail(server443)
    result = exchanger(server443, ["nspi", "list-tables"], user=user, options=["-rpc-hostname", home])
    assert result.returncode == 0, result.stderr
    assert "Default Global Address List" in result.stdout and "All Users" in result.stdout
    tail.wait_for(lambda e: e["kind"] == "rpc_channel_closed")
    channels = tail.events("rpc_channel")
    assert {(c["channel"], c["target"], c["status"]) for c in channels} == {("in", home, 100), ("out", home, 100)}
    (auth,) = tail.events("rpc_auth")
    assert auth["ok"] and auth["mailbox"] == f"{user}@contoso.test"


def test_exchanger_gets_503_when_legacy_outlook_anywhere_is_disabled(oa_disabled):
    needs_exchanger(oa_disabled)
    result = exchanger(oa_disabled, ["nspi", "list-tables"], user="erin", options=["-rpc-hostname",
                                                                                   "ex2010.contoso.test"])
    assert result.returncode != 0 or "All Users" not in result.stdout
    assert "503" in result.stdout + result.stderr
    # frank's CAS (2007) is untouched by the scenario
    result = exchanger(oa_disabled, ["nspi", "list-tables"], user="frank", options=["-rpc-hostname",
                                                                                    "ex2007.contoso.test"])
    assert result.returncode == 0 and "All Users" in result.stdout, result.stderr
