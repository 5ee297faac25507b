"""`mockex export har`: a real server's transcript (Basic POX, an NTLM 401 leg, the port-80 redirect) as HAR 1.2,
valid against the spec's schema, with the URLs, statuses, connections and TLS/auth notes of what happened and no
secret; rotated transcript files read oldest first; an unreadable state directory gives exit 2 and one line."""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List

import jsonschema
import pytest

from harness.export.har import har_of, read_events, transcript_files
from tests.support.autodiscover import pox_request
from tests.support.clients import POX_PATH, curl, run_mockex
from tests.support.servers import server_running

SCHEMA = json.loads((Path(__file__).parent / "support" / "har.schema.json").read_text())
AUTODISCOVER = "autodiscover.contoso.test"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    """A server that saw three clients, stopped, then exported: the HAR, its text and the server's endpoints."""
    state = tmp_path_factory.mktemp("har-state")
    with server_running(str(state)) as served:
        alice = served.user("alice")
        credentials = f"{alice['email']}:{alice['password']}"
        basic = curl(served, AUTODISCOVER, "-u", credentials, path=POX_PATH + "?x=1&y=a%20b", data=pox_request())
        ntlm = curl(served, AUTODISCOVER, "--ntlm", "-u", credentials, data=pox_request())
        redirect = curl(served, AUTODISCOVER, scheme="http")
        assert (basic.status, ntlm.status, redirect.status) == (200, 200, 302)
        assert len(served.wait_for(lambda e: e["kind"] == "http" and e["status"] == 302)) == 1
        endpoints = served.endpoints
    out = state / "out.har"
    result = run_mockex("export", "har", str(state), str(out))
    assert (result.returncode, result.stdout) == (0, ""), result.stderr
    assert result.stderr.strip() == f"4 HTTP exchanges written to {out}"
    text = out.read_text()
    yield {"har": json.loads(text), "text": text, "endpoints": endpoints, "credentials": credentials}


def test_the_export_is_valid_har_1_2(exported):
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.validate(exported["har"], SCHEMA, format_checker=jsonschema.FormatChecker())
    assert exported["har"]["log"]["version"] == "1.2"


def test_a_broken_entry_fails_the_schema(exported):
    """The schema can fail: an entry missing a required field or with a field of the wrong type is refused."""
    for breakage in ({"delete": "timings"}, {"set": ("time", "3 ms")}):
        broken = json.loads(exported["text"])
        entry = broken["log"]["entries"][0]
        if "delete" in breakage:
            del entry[breakage["delete"]]
        else:
            entry[breakage["set"][0]] = breakage["set"][1]
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, SCHEMA)


def test_entries_are_the_exchanges_in_order_with_urls_statuses_and_connections(exported):
    endpoints = exported["endpoints"]
    https, http = endpoints["https"]["port"], endpoints["http"]["port"]
    entries: List[dict] = exported["har"]["log"]["entries"]
    pox = f"https://{AUTODISCOVER}:{https}{POX_PATH}"
    assert [(e["request"]["method"], e["request"]["url"], e["response"]["status"], e["response"]["statusText"])
            for e in entries] == [
        ("POST", pox + "?x=1&y=a%20b", 200, "OK"),
        ("POST", pox, 401, "Unauthorized"),          # the NTLM challenge leg
        ("POST", pox, 200, "OK"),
        ("GET", f"http://{AUTODISCOVER}:{http}{POX_PATH}", 302, "Found")]
    basic, challenge, ntlm, redirect = entries
    assert basic["request"]["queryString"] == [{"name": "x", "value": "1"}, {"name": "y", "value": "a b"}]
    assert challenge["connection"] == ntlm["connection"]    # NTLM authenticates the connection
    assert len({basic["connection"], ntlm["connection"], redirect["connection"]}) == 3   # unique across listeners
    assert redirect["response"]["redirectURL"] == f"https://{AUTODISCOVER}:{https}{POX_PATH}"
    assert {e["serverIPAddress"] for e in entries} == {endpoints["https"]["host"]}
    assert basic["request"]["bodySize"] == len(pox_request()) and challenge["request"]["bodySize"] == 0
    assert basic["response"]["content"]["mimeType"].startswith("text/xml")
    assert basic["response"]["content"]["size"] == basic["response"]["bodySize"] > 0
    assert "text" not in basic["response"]["content"]
    for entry in entries:
        assert entry["time"] == entry["timings"]["wait"] >= 0
        assert entry["startedDateTime"].endswith("Z")


def test_comments_say_tls_sni_and_the_auth_outcome_of_each_request(exported):
    basic, challenge, ntlm, redirect = (e["comment"] for e in exported["har"]["log"]["entries"])
    assert basic.startswith("TLS TLSv1.2,") and f"SNI {AUTODISCOVER}" in basic
    assert "auth Basic user alice@contoso.test: success" in basic
    assert "auth NTLM" in challenge and ": continue" in challenge and "success" not in challenge
    assert "auth NTLM user alice@contoso.test: success" in ntlm
    assert redirect.startswith("plain HTTP") and "auth" not in redirect
    assert all("bodies are not kept" in c for c in (basic, challenge, ntlm, redirect))


def test_no_password_or_authorization_token_is_in_the_file(exported):
    text, credentials = exported["text"], exported["credentials"]
    password = credentials.split(":", 1)[1]
    assert password not in text and base64.b64encode(credentials.encode()).decode() not in text
    for user in exported["endpoints"]["users"]:
        assert user["password"] not in text
    authorizations = [h["value"] for e in exported["har"]["log"]["entries"] for h in e["request"]["headers"]
                      if h["name"].lower() == "authorization"]
    assert len(authorizations) == 3
    assert all(value.split(" ", 1)[1].startswith("***(") for value in authorizations)


# ---- reading transcripts (files written here: the order and shape of events, no server) --------------------------
def write_events(path: Path, events: List[dict]) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


# Whole events, as a server writes them (the suite checks every transcript file against the schema).
START = {"seq": 1, "time": 1_800_000_000.0, "kind": "start", "seed": None, "org": "contoso.test", "listen": "127.0.0.1",
         "scenarios": []}


def connect_event(listener: str, local: str) -> dict:
    return {"seq": 2, "time": 1_800_000_000.0, "kind": "connect", "listener": listener, "conn": 1,
            "peer": "127.0.0.1:50000", "local": local}


def http_event(conn: int, path: str, time: float = 1_800_000_000.0) -> dict:
    return {"seq": 3, "kind": "http", "conn": conn, "time": time, "method": "GET", "path": path,
            "host": "mail.contoso.test", "status": 404, "request_headers": [], "response_headers": [],
            "request_bytes": 0, "response_bytes": 0, "sni": None, "ms": 1.5}


def test_rotated_transcripts_are_read_oldest_first(tmp_path):
    connect = connect_event("https", "127.0.0.1:443")
    write_events(tmp_path / "transcript.jsonl.10", [START, connect, http_event(1, "/a")])
    write_events(tmp_path / "transcript.jsonl.2", [http_event(1, "/b")])
    write_events(tmp_path / "transcript.jsonl.1", [http_event(1, "/c")])
    (tmp_path / "transcript.jsonl").write_text(json.dumps(http_event(1, "/d")) + '\n{"kind": "ht')   # cut short
    assert [os.path.basename(p) for p in transcript_files(str(tmp_path))] == [
        "transcript.jsonl.10", "transcript.jsonl.2", "transcript.jsonl.1", "transcript.jsonl"]
    entries = har_of(read_events(transcript_files(str(tmp_path))))["log"]["entries"]
    assert [e["request"]["url"] for e in entries] == [f"https://mail.contoso.test/{p}" for p in "abcd"]
    assert entries[0]["startedDateTime"] == "2027-01-15T07:59:59.998Z"   # the event's time less its 1.5 ms


def test_connections_of_a_later_run_in_the_same_state_dir_are_named_apart(tmp_path):
    connect = connect_event("http", "127.0.0.1:8080")
    write_events(tmp_path / "transcript.jsonl", [START, connect, http_event(1, "/x"),
                                                 START, connect, http_event(1, "/y")])
    entries = har_of(read_events(transcript_files(str(tmp_path))))["log"]["entries"]
    assert [(e["connection"], e["request"]["url"]) for e in entries] == [
        ("1", "http://mail.contoso.test:8080/x"), ("2.1", "http://mail.contoso.test:8080/y")]


@pytest.mark.parametrize("make", ["missing", "no transcript"])
def test_an_unreadable_state_dir_gives_exit_2_and_one_line(tmp_path, make):
    state = tmp_path / "state"
    if make == "no transcript":
        state.mkdir()
    result = run_mockex("export", "har", str(state), str(tmp_path / "out.har"))
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("mockex export: ")
    assert str(state) in result.stderr and not (tmp_path / "out.har").exists()


def test_help_explains_export_har():
    result = run_mockex("export", "har", "--help")
    assert result.returncode == 0
    for words in ("HAR 1.2", "STATE_DIR", "transcript.jsonl.N", "masked", "exit status"):
        assert words in result.stdout
