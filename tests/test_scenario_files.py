"""Scenario files: loading, validation errors that name file:line: field, the CLI, and generated docs."""
from __future__ import annotations

import pytest

from harness import catalog_docs
from harness.scenario import load_scenario
from harness.yamlfile import SpecError
from tests.support import REPO
from tests.support.clients import run_mockex

GOOD = """\
name: my-scenario
description: Autodiscover breaks after three requests.
seed: 7
faults:
  - autodiscover.error-code: {code: 603}
steps:
  - after: {requests: 3, path: /autodiscover/autodiscover.xml}
    remove: [autodiscover.error-code]
expect:
  analyzer: {fails_at: autodiscover, reason: autodiscover-error-603}
"""


def write(tmp_path, text: str) -> str:
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    return str(path)


def test_a_good_file_loads(tmp_path):
    scenario = load_scenario(write(tmp_path, GOOD))
    assert scenario.name == "my-scenario" and scenario.seed == 7
    assert [f.name for f in scenario.faults] == ["autodiscover.error-code"]
    assert scenario.steps[0].after == {"requests": 3, "path": "/autodiscover/autodiscover.xml"}
    assert scenario.expect["analyzer"]["reason"] == "autodiscover-error-603"


@pytest.mark.parametrize("old, new, line, field, hint", [
    ("autodiscover.error-code: {code: 603}", "autodiscover.error-cod: {code: 603}", 5, "faults[0]",
     "did you mean 'autodiscover.error-code'?"),
    ("{code: 603}", "{code: 604}", 5, "faults[0].autodiscover.error-code.code", "allowed: 500, 501"),
    ("{code: 603}", "{cod: 603}", 5, "faults[0].autodiscover.error-code.cod", "did you mean 'code'?"),
    ("{code: 603}", "{code: high}", 5, "faults[0].autodiscover.error-code.code", ""),
    ("requests: 3", "request: 3", 7, "steps[0].after.request", "did you mean 'requests'?"),
    ("fails_at: autodiscover", "fails_at: autodiscovery", 10, "expect.analyzer.fails_at", "did you mean"),
    ("seed: 7", "sed: 7", 3, "sed", "did you mean 'seed'?"),
    ("name: my-scenario", "name: My Scenario", 1, "name", "lower-case"),
])
def test_errors_name_line_field_and_hint(tmp_path, old, new, line, field, hint):
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(SpecError) as info:
        load_scenario(path)
    assert (info.value.path, info.value.line, info.value.field) == (path, line, field)
    assert hint in info.value.hint


def test_cli_validate_gives_one_line_and_exit_2(tmp_path):
    path = write(tmp_path, GOOD.replace("error-code:", "eror-code:"))
    result = run_mockex("scenarios", "validate", path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"mockex: {path}:5: faults[0]: unknown fault 'autodiscover.eror-code' "
        f"(hint: did you mean 'autodiscover.error-code'?)"]


def test_serve_with_a_broken_scenario_exits_2_without_traceback(tmp_path):
    path = write(tmp_path, "name: x1\nfaults:\n  - tls.expird\n")
    result = run_mockex("serve", "--state-dir", str(tmp_path / "s"), "--scenario", path)
    assert result.returncode == 2
    assert f"{path}:3: faults[0]: unknown fault 'tls.expird'" in result.stderr
    assert "Traceback" not in result.stderr


def test_generated_docs_are_fresh():
    for name, text in catalog_docs.outputs().items():
        with open(f"{REPO}/docs/{name}", encoding="utf-8") as handle:
            assert handle.read() == text, f"docs/{name} is stale: run `python -m harness.catalog_docs`"


def test_every_builtin_scenario_matches_the_published_schema():
    import json

    import jsonschema
    import yaml

    from harness.scenario import builtin_paths
    with open(f"{REPO}/docs/scenario.schema.json", encoding="utf-8") as handle:
        validator = jsonschema.Draft202012Validator(json.load(handle))
    for path in builtin_paths():
        with open(path, encoding="utf-8") as handle:
            errors = [e.message for e in validator.iter_errors(yaml.safe_load(handle))]
        assert not errors, (path, errors[:3])


@pytest.mark.parametrize("fault, line", [("network.bandwidth: {bytes_per_second: 0}", "must be at least 1"),
                                         ("mailbox.server-busy: {backoff_ms: -1}", "must be at least 0"),
                                         ("rpc.invalid-port: {ports: [6001, six]}", "'six' is not an integer"),
                                         ("rpc.proxy-error: {code: xyz}", "is not a hex status"),
                                         ("mailbox.client-version: {min_version: twelve}", "is not a version"),
                                         ("network.refused: {user: alice@contoso.test}", "before any user is known")])
def test_parameter_bounds_and_scopes_are_checked_at_load(tmp_path, fault, line):
    path = write(tmp_path, f"name: bounds\nfaults:\n  - {fault}\n")
    with pytest.raises(SpecError) as info:
        load_scenario(path)
    assert info.value.line == 3 and line in str(info.value)


# ---- config: org settings a scenario changes ------------------------------------------------------------------------
CONFIGURED = """\
name: iis-basic
config:
  outlook_anywhere:
    EX01: {IISAuthenticationMethods: [Basic], SSLOffloading: true}
  mapi_http: {Enabled: true}
"""


def test_config_is_laid_over_the_org_when_the_server_starts_with_it(tmp_path):
    from harness.org import load_org
    from harness.scenario import configured_org
    org = load_org()
    changed = configured_org(org, [load_scenario(write(tmp_path, CONFIGURED))])
    oa = changed.cas_outlook_anywhere
    assert (oa.iis_auth, oa.ssl_offloading, changed.mapi_http_enabled) == (("Basic",), True, True)
    assert oa.external_client_auth == org.cas_outlook_anywhere.external_client_auth   # untouched settings stay
    assert configured_org(org, [load_scenario(write(tmp_path, GOOD))]) is org   # no config: the org itself


@pytest.mark.parametrize("old, new, line, field, words", [
    ("[Basic]", "[Basic, Kerberos]", 4, "config.outlook_anywhere.EX01.IISAuthenticationMethods", "'Kerberos'"),
    ("SSLOffloading: true", "SSLOffloading: maybe", 4, "config.outlook_anywhere.EX01.SSLOffloading",
     "true or false"),
    ("SSLOffloading: true", "SSLOffload: true", 4, "config.outlook_anywhere.EX01.SSLOffload", "unknown field"),
    ("SSLOffloading: true", "InternalHostname: ex01.contoso.test, Enabled: true", 4,
     "config.outlook_anywhere.EX01.InternalHostname",
     "mixes Exchange 2013 parameters"),
    ("mapi_http", "mapihttp", 5, "config.mapihttp", "unknown field"),
])
def test_config_errors_name_line_and_field_at_load(tmp_path, old, new, line, field, words):
    path = write(tmp_path, CONFIGURED.replace(old, new))
    with pytest.raises(SpecError) as info:
        load_scenario(path)
    assert (info.value.path, info.value.line, info.value.field) == (path, line, field)
    assert words in str(info.value)


def test_a_server_the_org_lacks_is_named_when_the_server_starts(tmp_path):
    from harness.org import load_org
    from harness.scenario import configured_org
    path = write(tmp_path, CONFIGURED.replace("EX01:", "EX09:"))
    scenario = load_scenario(path)   # the file alone cannot know the org's servers
    with pytest.raises(SpecError) as info:
        configured_org(load_org(), [scenario])
    assert (info.value.path, info.value.line, info.value.field) == (path, 4, "config.outlook_anywhere.EX09")
    result = run_mockex("serve", "--scenario", path, "--state-dir", str(tmp_path / "state"), timeout=60)
    assert result.returncode == 2 and "EX09" in result.stderr and "Traceback" not in result.stderr
