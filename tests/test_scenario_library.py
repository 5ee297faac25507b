"""The built-in library: every scenario loads, validates and starts a server; `mockex scenarios` lists them."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from harness.scenario import builtin_paths, builtin_scenarios
from tests.support.clients import run_mockex
from tests.support.servers import scenario_args, server_running


def test_every_builtin_scenario_starts(tmp_path):
    scenarios = builtin_scenarios()
    assert scenarios, "the library is empty"
    for scenario in scenarios:
        assert os.path.basename(scenario.source) == f"{scenario.name}.yaml"
        assert scenario.summary, f"{scenario.name} needs a description"
        assert scenario.expect.get("analyzer"), f"{scenario.name} needs expect.analyzer"

    def start(scenario):
        with server_running(*scenario_args(tmp_path, scenario.name, scenario.name)) as served:
            return scenario.name, served.endpoints["scenarios"], served.alive()

    with ThreadPoolExecutor(max_workers=4) as pool:
        for name, active, alive in pool.map(start, scenarios):
            assert active == [name] and alive


def test_scenarios_list_shows_the_library():
    result = run_mockex("scenarios", "list")
    assert result.returncode == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert names == [os.path.splitext(os.path.basename(p))[0] for p in builtin_paths()]
    assert names == sorted(names)
    assert f"{len(names)} scenarios" in result.stderr


def test_scenarios_show_explains_faults_and_symptoms():
    result = run_mockex("scenarios", "show", "autodiscover-error-500")
    assert result.returncode == 0
    assert "autodiscover.error-code" in result.stdout and "What clients report" in result.stdout
