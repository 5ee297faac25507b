"""`mockex fuzz` results and scale: JUnit (validated against the junit-10 XSD) and JSON reports with the org's
passwords masked, the progress line, the plan of layers x seeds that `-j N` runs in parallel with the same findings
as `-j 1` and that `--shard K/N` partitions, and a shared example database keyed by layer."""
from __future__ import annotations

import io
import json
import os
import shlex
import sys

from lxml import etree

from harness.fuzz import fuzz_client
from harness.fuzz.engine import FuzzOptions
from harness.fuzz.parallel import fuzz_plan, plan, shard
from harness.fuzz.report import FuzzProgress
from tests.support import REPO
from tests.support.buggy_clients import client as buggy_client
from tests.support.clients import run_mockex

XSD = os.path.join(REPO, "tests", "support", "junit-10.xsd")
ALICE_PASSWORD = "P@ssw0rd-alice"   # the org fixture's (tests/test_runner.py checks reports the same way)
# prints the password it was given, then dies of an uncaught exception: whatever is served, a crash
ECHOING_CRASH = " ".join([sys.executable, "-c", shlex.quote("import sys; print(sys.argv[1], file=sys.stderr); "
                                                            "raise KeyError('Server')"), "{password}"])


def validate_junit(path) -> etree._ElementTree:
    document = etree.parse(str(path))
    etree.XMLSchema(etree.parse(XSD)).assertValid(document)
    return document


def test_the_plan_is_layers_by_seeds_and_shards_partition_it() -> None:
    runs = plan(["autodiscover", "tls"], seed=7, seeds=3)
    assert [(r.layers, r.seed) for r in runs] == [
        (("autodiscover",), 7), (("tls",), 7), (("autodiscover",), 8), (("tls",), 8), (("autodiscover",), 9),
        (("tls",), 9)]
    for count in (1, 2, 4, 6, 7):
        parts = [shard(runs, k, count) for k in range(1, count + 1)]
        assert sorted(r.index for part in parts for r in part) == list(range(len(runs)))   # each run exactly once
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert [(r.layers, r.seed) for r in plan(["tls", "autodiscover"], None, 1, mix=True)] == [
        (("tls", "autodiscover"), None)]                                     # plain `mockex fuzz`: derandomized
    assert [r.seed for r in plan(["tls"], None, 2)] == [0, 1]


def test_junit_and_json_report_each_finding_and_a_summary_with_passwords_masked(tmp_path) -> None:
    junit, report = tmp_path / "fuzz.xml", tmp_path / "fuzz.json"
    done = run_mockex("fuzz", "--client", ECHOING_CRASH, "--seed", "3", "--seeds", "2", "-j", "2",
                      "--max-examples", "5", "--max-findings", "1", "--junit", str(junit), "--json", str(report),
                      timeout=180)
    assert done.returncode == 1, done.stdout + done.stderr
    document = json.loads(report.read_text())
    assert document["format"] == "mockex-fuzz/1" and document["exit_status"] == 1
    assert [(r["layers"], r["seed"], r["findings"]) for r in document["runs"]] == [
        (["autodiscover"], 3, 1), (["autodiscover"], 4, 1)]
    assert document["summary"]["examples"] == sum(r["examples"] for r in document["runs"])
    assert len(document["findings"]) == 1   # the same crash in both runs: one finding
    finding = document["findings"][0]
    assert finding["oracle"] == "crash" and finding["signature"].startswith("crash:KeyError")
    assert len(finding["faults"]) == 1 and "********" in finding["stderr"]
    cases = validate_junit(junit).getroot().findall(".//testcase")
    assert [c.get("name") for c in cases] == [finding["name"], "fuzz summary"]
    assert cases[0].find("failure") is not None and cases[1].find("failure") is None
    assert cases[0].get("classname") == "mockex.autodiscover"
    assert ALICE_PASSWORD not in junit.read_text() + report.read_text() + done.stdout + done.stderr


def test_two_workers_find_what_one_finds(tmp_path) -> None:
    client = buggy_client("crash_on_missing_server")
    options = FuzzOptions(max_examples=12, timeout=10, max_findings=2)
    runs = plan(["autodiscover"], seed=1, seeds=2)
    found = {}
    for jobs in (1, 2):
        report = fuzz_plan(client, options, runs, jobs)
        assert [r["seed"] for r in report.runs] == [1, 2]
        found[jobs] = sorted((f.verdict.signature, repr(f.faults)) for f in report.findings)
    assert found[1] and found[1] == found[2], found


def test_a_seeded_run_saves_to_a_shared_database_keyed_by_layer(tmp_path) -> None:
    def fragile(served) -> None:
        raise KeyError("Server")

    database = tmp_path / "db"
    saved = []
    for layer in ("autodiscover", "tls"):
        report = fuzz_client(fragile, layers=[layer], max_examples=10, seed=1, max_findings=1, database=str(database))
        assert len(report.findings) == 1
        saved.append({key: sorted(os.listdir(database / key)) for key in os.listdir(database)
                      if not key.startswith(".")})
    assert saved[0], "a seeded run saved nothing"   # @hypothesis.seed alone would turn the database off
    assert set(saved[1]) > set(saved[0])            # the tls run has keys of its own ...
    assert all(set(saved[1][key]) >= set(files) for key, files in saved[0].items())   # ... and kept the others


def test_the_progress_line_is_redrawn_on_a_terminal_and_plain_elsewhere() -> None:
    plain = io.StringIO()
    progress = FuzzProgress(plain, tty=False)
    for examples in range(1, 251):
        progress.update(examples, 1 if examples >= 120 else 0, examples / 50)
    assert plain.getvalue().splitlines() == ["100 examples, 50.0/s, 0 findings", "120 examples, 50.0/s, 1 findings",
                                             "200 examples, 50.0/s, 1 findings"]
    terminal = io.StringIO()
    progress = FuzzProgress(terminal, tty=True)
    progress.update(3, 0, 1.0)
    progress.update(4, 1, 2.0)   # a new finding is drawn at once
    progress.close()
    assert terminal.getvalue() == ("\r\x1b[K3 examples, 3.0/s, 0 findings\r\x1b[K4 examples, 2.0/s, 1 findings"
                                   "\r\x1b[K")
