"""The analyzer against the built-in scenario library and every scenario example in README.md and docs/: for each
with an `expect.analyzer` block, `mockex serve --scenario` runs that scenario and `mockex probe` must fail at exactly
the named step with the named reason (and host, when given), or pass when `passes: true`. In every scenario,
credentials go only over verified TLS (judged from the mock's transcript).

The probe's options and the judging are harness.probe.expectation's, which `mockex run --client probe` uses too.
No verdict depends on wall-clock headroom: a short step timeout is used only where a timeout is the expected
verdict (a slow machine only makes it come sooner); elsewhere steps get a long one, and the total limit is only a
runaway bound."""
import glob
import os
import re

import pytest
import yaml

from harness.probe.expectation import mismatches, options_for_expectation
from harness.probe.report import render_text
from harness.probe.runner import probe
from harness.testing import start_server
from harness.transcript import credential_violations
from tests.support import REPO
from tests.support.transcript import TranscriptTail

SCENARIOS = sorted(glob.glob(os.path.join(REPO, "scenarios", "*.yaml")))
YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.S)


def documented_examples():
    """(id, text) of every YAML block in README.md and docs/*.md that is a scenario with an analyzer expectation."""
    found = []
    for path in [os.path.join(REPO, "README.md"), *sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))]:
        with open(path, encoding="utf-8") as handle:
            for block in YAML_BLOCK.findall(handle.read()):
                document = yaml.safe_load(block)
                if isinstance(document, dict) and "name" in document and (document.get("expect") or {}).get(
                        "analyzer"):
                    found.append((f"{os.path.basename(path)}:{document['name']}", block))
    return found


EXAMPLES = documented_examples()


def test_the_readme_example_scenario_is_among_the_checked_ones():
    assert "README.md:autodiscover-flaps" in [name for name, _ in EXAMPLES]


@pytest.mark.parametrize("name, text", EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_documented_examples_do_what_their_expect_says(name, text, tmp_path):
    path = tmp_path / "example.yaml"
    path.write_text(text)
    test_probe_concludes_what_the_scenario_expects(str(path), tmp_path / "state")


def analyzer_expectation(path):
    with open(path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle) or {}
    return (document.get("expect") or {}).get("analyzer")


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: os.path.basename(p)[:-5])
def test_probe_concludes_what_the_scenario_expects(path, tmp_path):
    expect = analyzer_expectation(path)
    if not expect:
        pytest.skip("the scenario has no expect.analyzer block")
    served = start_server(str(tmp_path), "--scenario", path)
    try:
        tail = TranscriptTail(served)
        report = probe(options_for_expectation(served.endpoints, expect))
        violations = credential_violations(tail.events(), served.endpoints["hostnames"])
    finally:
        served.stop()
    assert not mismatches(expect, report.verdict), render_text(report, verbose=True)
    assert not violations, violations
