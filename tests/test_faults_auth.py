"""Authentication faults as curl, requests(-ntlm) and exchangelib see them."""
from __future__ import annotations

import pytest
import requests
from requests_ntlm import HttpNtlmAuth

from tests.support.autodiscover import pox_request
from tests.support.clients import POX_PATH, curl, pin_names
from tests.support.netns import by_user, exchangelib, needs_netns, run_in_netns
from tests.support.servers import scenario_args, server_running

SCENARIO = """\
name: auth-everything
faults:
  - auth.wrong-password: {user: alice@contoso.test}
  - auth.account-locked: {user: bob@contoso.test}
  - auth.password-expired: {user: carol@contoso.test}
  - auth.401-loop: {user: dave@contoso.test}
  - auth.basic-only: {host: mail.contoso.test}
  - auth.ntlm-only: {host: ex01.contoso.test}
  - auth.negotiate-only: {host: ex02.contoso.test}
  - auth.combined-challenge: {host: contoso.test}
expect:
  analyzer: {fails_at: autodiscover, reason: http-401}
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with server_running(*scenario_args(tmp_path_factory.mktemp("auth-faults"), "auth", SCENARIO)) as server:
        yield server


def logon(served, user: str, method: str, host: str = "autodiscover.contoso.test", path: str = POX_PATH):
    account = served.user(user)
    return curl(served, host, method, "-u", f"CONTOSO\\{user}:{account['password']}", path=path,
                data=pox_request(account["email"]))


@pytest.mark.parametrize("user, reason", [("alice", "wrong password"), ("bob", "account locked"),
                                          ("carol", "password expired"), ("dave", "refused by auth.401-loop")])
@pytest.mark.parametrize("method", ["--ntlm", "--basic"])
def test_refused_logons_get_401_with_the_right_password(served, user, reason, method):
    result = logon(served, user, method)
    assert result.status == 401 and result.exit_code == 0, result.stderr
    assert [v.split()[0] for v in result.header("WWW-Authenticate")] == ["Negotiate", "NTLM", "Basic"]
    assert served.wait_for(lambda e: e["kind"] == "auth" and e["user"] == f"{user}@contoso.test"
                           and e["login"].lower().endswith(user) and e["reason"] == reason
                           and e["scheme"].lower() == method[2:])


def ntlm_post(served, monkeypatch, host: str, user: str) -> requests.Response:
    """requests with requests-ntlm, the NTLM client exchangelib uses."""
    pin_names(monkeypatch, served)
    account = served.user(user)
    return requests.post(f"https://{host}:{served.https_port}{POX_PATH}", timeout=10, verify=served.ca_file,
                         data=pox_request(account["email"]),
                         auth=HttpNtlmAuth(f"CONTOSO\\{user}", account["password"]))


def test_other_users_still_log_on(served):
    assert logon(served, "helpdesk", "--ntlm").status == 200
    assert logon(served, "helpdesk", "--basic").status == 200


def test_requests_ntlm_gets_401_after_the_whole_handshake(served, monkeypatch):
    response = ntlm_post(served, monkeypatch, "autodiscover.contoso.test", "alice")
    assert response.status_code == 401
    assert [r.status_code for r in response.history] == [401, 401]  # anonymous, then the CHALLENGE leg


@pytest.mark.parametrize("host, offered, refused, accepted", [
    ("mail.contoso.test", ["Basic"], "--ntlm", "--basic"),
    ("ex01.contoso.test", ["NTLM"], "--basic", "--ntlm"),
    ("ex02.contoso.test", ["Negotiate"], "--ntlm", None),
])
def test_only_the_configured_scheme_is_offered(served, host, offered, refused, accepted):
    anonymous = curl(served, host, data=pox_request("helpdesk@contoso.test"))
    assert [v.split()[0] for v in anonymous.header("WWW-Authenticate")] == offered
    assert logon(served, "helpdesk", refused, host=host).status == 401
    if accepted:
        assert logon(served, "helpdesk", accepted, host=host).status == 200


def test_negotiate_only_still_admits_ntlm_inside_spnego(served, monkeypatch):
    response = ntlm_post(served, monkeypatch, "ex02.contoso.test", "helpdesk")
    assert response.status_code == 200  # requests-ntlm falls back to 'Negotiate' with an NTLM token
    assert served.wait_for(lambda e: e["kind"] == "auth" and e["scheme"] == "Negotiate" and e["result"] == "success")


def test_combined_challenge_breaks_curl_but_not_requests_ntlm(served, monkeypatch):
    result = logon(served, "helpdesk", "--ntlm", host="contoso.test")
    challenge = [v for v in result.header("WWW-Authenticate") if v.startswith("NTLM ")]
    assert challenge and challenge[0].endswith(", Negotiate"), result.stderr
    assert result.status == 401  # curl never sends the AUTHENTICATE message after that line
    response = ntlm_post(served, monkeypatch, "contoso.test", "helpdesk")
    assert response.status_code == 200
    assert response.history[-1].headers["WWW-Authenticate"].endswith(", Negotiate")


def test_basic_over_http_challenges_then_records_the_leaked_password(tmp_path):
    with server_running(str(tmp_path), "--scenario", "auth-basic-over-http") as served:
        anonymous = curl(served, "autodiscover.contoso.test", scheme="http")
        assert anonymous.status == 401 and not anonymous.header("Location")
        assert anonymous.header("WWW-Authenticate") == ['Basic realm="autodiscover.contoso.test"']
        alice = served.user("alice")
        leaked = curl(served, "autodiscover.contoso.test", "--basic", "-u", f"alice:{alice['password']}",
                      scheme="http")
        assert leaked.status == 302 and leaked.header("Location")[0].startswith("https://autodiscover.contoso.test")
        events = served.wait_for(lambda e: e["kind"] == "auth" and e["result"] == "sent in clear")
        assert (events[0]["user"], events[0]["login"]) == ("alice@contoso.test", "alice")
        assert events[0]["password_valid"] is True and events[0]["tls"] is False


def test_password_changed_during_session_refuses_after_the_first_logon(tmp_path):
    with server_running(str(tmp_path), "--scenario", "password-changed-during-session") as served:
        assert [logon(served, "alice", "--ntlm").status for _ in range(2)] == [200, 401]
        assert logon(served, "bob", "--basic").status == 200
        assert served.wait_for(lambda e: e["kind"] == "step" and e["trigger"] == "1 successful logons")


@needs_netns
def test_exchangelib_sees_each_auth_fault(tmp_path):
    """The every-fault scenario above (user-scoped refusals; contoso.test, exchangelib's first URL, sends the
    combined challenge), then auth-negotiate-only, each in the private namespace."""
    (tmp_path / "auth.yaml").write_text(SCENARIO)
    users = {name: (f"{name}@contoso.test", f"P@ssw0rd-{name}")
             for name in ("alice", "bob", "carol", "dave", "helpdesk")}
    out = run_in_netns(str(tmp_path), [
        (["--scenario", str(tmp_path / "auth.yaml")], [exchangelib("refusals", *users.values())]),
        (["--scenario", "auth-negotiate-only"], [exchangelib("negotiate", users["alice"])]),
    ])
    refusals = by_user(out["refusals"].output)
    for name in ("alice", "bob", "carol", "dave"):
        assert refusals[f"{name}@contoso.test"]["error"] == "UnauthorizedError: Invalid credentials for " \
                                                          "https://contoso.test/autodiscover/autodiscover.svc", name
    assert refusals["helpdesk@contoso.test"]["ews_url"] == "https://mail.contoso.test/EWS/Exchange.asmx"
    assert {(e["user"], e["reason"]) for e in out["refusals"].kind("auth") if e["result"] == "failure"} >= {
        ("alice@contoso.test", "wrong password"), ("bob@contoso.test", "account locked"),
        ("carol@contoso.test", "password expired"), ("dave@contoso.test", "refused by auth.401-loop")}
    assert by_user(out["negotiate"].output)["alice@contoso.test"]["error"].startswith("AutoDiscoverFailed: All steps")
