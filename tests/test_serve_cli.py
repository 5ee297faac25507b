"""`mockex serve` as a user runs it: summary, endpoints.json, loopback-only default, clean SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import socket

import pytest

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


@pytest.mark.parametrize("role", ["https", "http", "dns"])
def test_a_port_in_use_is_named_and_leaves_no_state_dir_behind(tmp_path, role):
    kind = socket.SOCK_DGRAM if role == "dns" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            taken.listen(1)
        port = taken.getsockname()[1]
        ports = {"https": "0", "http": "0", "dns": "0", role: str(port)}
        state = tmp_path / "fresh"
        result = run_mockex("serve", "--state-dir", str(state), "--https-port", ports["https"],
                            "--http-port", ports["http"], "--dns-port", ports["dns"], timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"mockex: cannot start: cannot listen on 127.0.0.1:{port} ({role.upper()}): "
                                     "Address already in use")
    assert not state.exists()


def test_a_failed_start_in_an_existing_state_dir_says_why_there_and_drops_the_old_endpoints(tmp_path):
    (tmp_path / "endpoints.json").write_text("{}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        result = run_mockex("serve", "--state-dir", str(tmp_path), "--https-port", str(taken.getsockname()[1]),
                            "--http-port", "0", "--dns-port", "0", timeout=60)
    assert result.returncode == 1
    assert not (tmp_path / "endpoints.json").exists()
    events = [json.loads(line) for line in (tmp_path / "transcript.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events] == ["start", "start_failed"] and "Address already in use" in events[-1]["reason"]
