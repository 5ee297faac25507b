"""A step that fails because the probe's total time ran out says `time-limit`, whatever error the cut-short wait
produced (a socket timeout, an RTS timeout, an undecodable half answer)."""
from __future__ import annotations

import pytest

from harness.probe.outlook_anywhere import rpc_failures
from harness.probe.report import TIME_SPENT, Step, StepFailed, Timed, TimeLimit


def run_failing_step(spent: bool, error: Exception) -> Step:
    step = Step("nspi", "NSPI", "nspi")
    token = TIME_SPENT.set(lambda: spent)
    try:
        with Timed(step):
            with rpc_failures("nspi-bind-failed"):
                raise error
    except TimeLimit:
        pass
    finally:
        TIME_SPENT.reset(token)
    return step


@pytest.mark.parametrize("error", [StepFailed("rts-timeout", "no answer"), TimeoutError("timed out"),
                                   ValueError("half an NDR answer")])
def test_a_step_cut_short_by_the_total_limit_reports_time_limit(error) -> None:
    assert run_failing_step(True, error).reason == "time-limit"


def test_a_step_failing_with_time_left_keeps_its_own_reason() -> None:
    assert run_failing_step(False, StepFailed("rts-timeout", "no answer")).reason == "rts-timeout"
    assert run_failing_step(False, ValueError("bad")).reason == "nspi-bind-failed"


def test_time_limit_passes_through_the_rpc_error_mapping() -> None:
    with pytest.raises(TimeLimit):
        with rpc_failures("nspi-bind-failed"):
            raise TimeLimit()
