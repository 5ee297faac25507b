"""The analyzer against the built-in scenario library: for every scenarios/*.yaml with an `expect.analyzer` block,
`mockex serve --scenario` runs that scenario and `mockex probe` must fail at exactly the named step with the named
reason (and host, when given), or pass when `passes: true`. In every scenario, credentials go only over verified
TLS (judged from the mock's transcript)."""
import glob
import os

import pytest
import yaml

from harness.probe.report import render_text
from harness.probe.runner import probe
from harness.testing import start_server
from tests.support import REPO
from tests.support.clients import probe_options
from tests.support.transcript import TranscriptTail, credential_violations

SCENARIOS = sorted(glob.glob(os.path.join(REPO, "scenarios", "*.yaml")))


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
        user = next(u["username"] for u in served.endpoints["users"] if u["email"] == expect.get("user",
                                                                                                 "alice@contoso.test"))
        report = probe(probe_options(served, user=user, step_timeout=2.0, total_timeout=30.0))
        violations = credential_violations(tail.events())
    finally:
        served.stop()
    verdict = report.verdict
    tree = render_text(report, verbose=True)
    if expect.get("passes"):
        assert verdict.passed, tree
    else:
        assert verdict.fails_at == expect["fails_at"], tree
        if "reason" in expect:
            assert verdict.reason == expect["reason"], tree
        if "host" in expect:
            assert verdict.host == expect["host"], tree
    assert not violations, violations
