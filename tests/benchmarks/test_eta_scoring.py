"""The ETA benchmark's scoring: what it counts as an error, a utilisation and a pass."""

from __future__ import annotations

import math

import pytest

from benchmarks import eta_scoring as scoring


def submitted(position: int, eta_start_s: float, eta_finish_s: float, started_s: float,
              finished_s: float) -> scoring.Submitted:
    return scoring.Submitted(f"job{position}", 100.0, position, eta_start_s, eta_finish_s,
                             100.0 + started_s, 100.0 + finished_s)


def test_start_errors_count_only_jobs_that_waited_and_are_relative_to_the_actual_time() -> None:
    jobs = [submitted(0, 0.0, 2.0, 0.2, 2.5),   # started at once: start not scored
            submitted(5, 9.0, 11.0, 10.0, 12.0)]
    found = scoring.errors(jobs, [(j.eta_start_s, j.eta_finish_s) for j in jobs], min_wait_s=1.0)
    assert found.start_abs_s == [pytest.approx(1.0)]
    assert found.start_pct == [pytest.approx(10.0)]
    assert found.finish_pct == [pytest.approx(20.0), pytest.approx(100.0 / 12.0)]


def test_busy_share_is_the_held_slot_time_inside_the_window() -> None:
    served = [scoring.Served(0.0, 10.0),   # holds a slot the whole window
              scoring.Served(5.0, 15.0),   # half of it inside
              scoring.Served(-5.0, 0.0)]   # before the window: nothing
    assert scoring.busy_share(served, 0.0, 10.0, slots=2) == pytest.approx(0.75)
    assert math.isnan(scoring.busy_share(served, 10.0, 10.0, slots=2))


def test_verdicts_name_every_missed_goal_and_every_metric_where_gradio_is_better() -> None:
    def row(name: str, start_med: float, start_p90: float, finish_med: float,
            finish_p90: float) -> scoring.Row:
        return scoring.Row(name, 10, 10, 0.0, start_med, 0.0, start_p90, 0.0, finish_med, 0.0,
                           finish_p90)

    ours = row("model-aware", 5.5, 9.0, 4.0, 8.0)
    gradio = row("gradio", 6.0, 8.0, 5.0, 9.0)
    lines = scoring.verdicts(ours, gradio, scoring.BURST_GOAL)
    assert lines == ["FAIL  start median 5.5 % <= 5 %", "PASS  start p90 9.0 % <= 15 %",
                     "PASS  finish median 4.0 % <= 10 %",
                     "FAIL  worse than Gradio on start p90"]
    assert scoring.verdicts(ours, gradio, scoring.NO_GOAL) == []
