"""What a new user meets on bad input: every scenario error at once in YAML words, exit 2 with one line for an
unusable file, no traceback when a pipe closes early, only real layer names."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.scenario import load_scenario
from harness.yamlfile import SpecError, SpecErrors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def mockex(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=ENV,
                          input=stdin, timeout=120)


SIX_MISTAKES = """\
name: Bad_Name
descripton: x
faults:
  - tls.expird
  - network.latency: {ms: "x"}
steps:
  - after: {request: 2}
    apply: [auth.wrong-password]
seed: seven
"""


def test_every_mistake_of_a_scenario_file_is_reported_at_once(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(SIX_MISTAKES)
    with pytest.raises(SpecErrors) as info:
        load_scenario(str(path))
    lines = str(info.value).splitlines()
    assert [line.split(": ", 2)[0:2] for line in lines] == [
        [f"{path}:1", "name"], [f"{path}:2", "descripton"], [f"{path}:4", "faults[0]"],
        [f"{path}:5", "faults[1].network.latency.ms"], [f"{path}:7", "steps[0].after.request"], [f"{path}:9", "seed"]]
    assert "expected a number, got text 'x'" in lines[3]
    assert "unknown field (hint: did you mean 'requests'?)" in lines[4]
    assert "expected an integer, got text 'seven'" in lines[5]


@pytest.mark.parametrize("text, message", [("", "expected a mapping, got nothing (the value is empty)"),
                                           ("- a\n", "expected a mapping, got a list"),
                                           ("name: x1\nfaults: {a: 1}\n", "expected a list, got a mapping")])
def test_type_errors_speak_yaml_not_python(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_scenario(str(path))
    assert message in str(info.value)
    assert "NoneType" not in str(info.value) and "YList" not in str(info.value) and "YMap" not in str(info.value)


def test_a_step_may_remove_only_a_fault_active_by_then(tmp_path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: flap\nsteps:\n  - after: {requests: 1}\n    apply: [auth.wrong-password]\n"
                    "  - after: {requests: 3}\n    remove: [auth.wrong-password]\n")
    assert [step.remove for step in load_scenario(str(path)).steps] == [[], ["auth.wrong-password"]]
    path.write_text("name: flap\nsteps:\n  - after: {requests: 3}\n    remove: [auth.wrong-password]\n")
    with pytest.raises(SpecError, match=r"s.yaml:4: steps\[0\].remove\[0\]: 'auth.wrong-password' is not active "
                                        r"when this step runs \(hint: active: no fault\)"):
        load_scenario(str(path))


def test_an_unknown_layer_is_a_usage_error() -> None:
    done = mockex("scenarios", "list", "--layer", "bogus")
    assert done.returncode == 2 and "invalid choice: 'bogus'" in done.stderr


@pytest.mark.parametrize("args", [["scenarios", "list"], ["faults"], ["scenarios", "show", "tls-expired"],
                                  ["scenarios", "schema"]])
def test_a_reader_that_leaves_early_gets_no_traceback(args) -> None:
    command = " ".join([sys.executable, "-m", "harness", *args]) + " | head -c 10"
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=ENV, timeout=120)
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr
    assert len(done.stdout) == 10


@pytest.mark.parametrize("content, message", [(b"-----BEGIN PRIVATE KEY-----\nMII=\n-----END PRIVATE KEY-----\n",
                                               "no PEM certificate in it"),
                                              (b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
                                               "not a usable PEM certificate file")])
def test_an_unusable_ca_file_is_one_line_and_exit_2(tmp_path, content: bytes, message: str) -> None:
    path = tmp_path / "ca.pem"
    path.write_bytes(content)
    done = mockex("probe", "alice@contoso.test", "--password", "x", "--ca-file", str(path))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and message in done.stderr and "Traceback" not in done.stderr
