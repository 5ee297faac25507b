"""`mockex serve` as a user runs it: summary, endpoints.json, loopback-only default, clean SIGTERM."""
from __future__ import annotations

import os
import signal

from harness.testing import start_server
from tests.support.clients import run_mockex


def test_endpoints_json_has_what_a_client_needs(server):
    endpoints = server.endpoints
    for key in ("https", "http", "dns", "domain", "ca_file", "autodiscover_urls", "rpc_proxy_url", "users"):
        assert key in endpoints
    assert endpoints["domain"] == "contoso.test"
    alice = server.user("alice")
    assert alice["email"] == "alice@contoso.test" and alice["domain"] == "CONTOSO" and alice["password"]
    assert os.path.exists(endpoints["ca_file"])


def test_sigterm_stops_cleanly_with_exit_0(tmp_path):
    served = start_server(str(tmp_path))
    assert served.stop() == 0
    log = (tmp_path / "serve.log").read_text()
    assert "mockex serving contoso.test" in log and "CONTOSO\\alice" in log
    assert served.transcript("stop")


def test_ctrl_c_stops_cleanly_with_exit_0(tmp_path):
    served = start_server(str(tmp_path))
    served.process.send_signal(signal.SIGINT)
    assert served.process.wait(timeout=10) == 0


def test_non_loopback_listen_needs_allow_remote(tmp_path):
    result = run_mockex("serve", "--state-dir", str(tmp_path), "--listen", "0.0.0.0", timeout=30)
    assert result.returncode == 2
    assert "--allow-remote" in result.stderr


def test_broken_org_fixture_names_file_line_and_field(tmp_path):
    org = tmp_path / "org.yaml"
    org.write_text("org:\n  name: X\n  domain: x.test\nservers:\n  - {name: EX01, fqdn: ex01.x.test}\n"
                   "mailboxes:\n  - email: a@x.test\n    display_name: A\n    password: p\n    server: EX09\n")
    result = run_mockex("serve", "--state-dir", str(tmp_path / "s"), "--org", str(org), timeout=30)
    assert result.returncode == 2
    assert f"{org}:10: mailboxes[0].server: 'EX09' is not allowed" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_explains_the_commands():
    result = run_mockex("serve", "--help", timeout=30)
    assert result.returncode == 0
    for option in ("--org", "--state-dir", "--listen", "--allow-remote", "--https-port", "--seed"):
        assert option in result.stdout
