"""The outage benchmark's figures, against hand-worked call logs and jobs."""

from __future__ import annotations

import math

import pytest

from benchmarks.outage import figures
from benchmarks.outage.figures import JobRecord
from benchmarks.outage.plan import SCENARIOS


def call(start_s: float, end_s: float | None, status: int | None = 200,
         outcome: str = "ok") -> figures.Call:
    return {"started_at": start_s, "finished_at": end_s, "http_status": status,
            "outcome": outcome}


def test_recovery_is_the_first_second_from_which_every_bucket_is_served_by_the_model() -> None:
    def job(at_s: float, by: str) -> JobRecord:
        return JobRecord(100.0 + at_s, 0.2, True, by)

    jobs = [job(-1.0, "b"),                                  # before recovery: not counted
            job(0.1, "b"), job(0.5, "a"),                    # second 0: half
            job(1.2, "a"), job(1.4, "a"),                    # second 1: all
            job(2.1, "a"), job(2.3, "b"), job(2.6, "a"),    # second 2: 2/3 < 90 %
            job(3.0, "a"), job(4.5, "a")]                    # seconds 3 and 4: all
    assert figures.recovery_s(jobs, 100.0, "a") == 3.0
    assert figures.recovery_s(jobs + [job(5.0, "b")], 100.0, "a") is None


def test_slot_seconds_count_calls_still_open_until_now() -> None:
    assert figures.slot_seconds([call(0.0, 10.0), call(5.0, None)], now_s=12.0) == 17.0


def test_time_to_concurrency_counts_from_the_first_call_and_not_back_to_back_calls() -> None:
    calls = [call(0.0, 1.0), call(0.5, 2.0), call(1.0, 3.0), call(1.5, 3.0)]
    # At 1.0 one call ends as another starts: two in flight; three only at 1.5.
    assert figures.time_to_concurrency(calls, 3) == 1.5
    assert figures.time_to_concurrency(calls, 4) is None
    assert figures.peak_concurrency(calls) == 3


def test_latency_figures_use_only_succeeded_jobs_and_answered_calls() -> None:
    jobs = [JobRecord(0.0, 1.0, True, "a"), JobRecord(0.0, 9.0, False, None),
            JobRecord(0.0, 3.0, True, "b")]
    assert figures.latencies(jobs) == [1.0, 3.0]
    assert math.isnan(figures.percentile([], 0.5))
    assert figures.median_call_s([call(0.0, 0.2), call(0.0, 0.01, 503, "overloaded"),
                                  call(1.0, 1.4)]) == pytest.approx(0.4)
    assert math.isnan(figures.median_call_s([]))


def test_scenario_releases_a_burst_per_process_or_a_steady_rate() -> None:
    assert SCENARIOS["a"].job_offsets(2) == [0.0] * 100
    steady = SCENARIOS["b"].job_offsets(4)
    assert len(steady) == 8 * 45 and steady[1] == pytest.approx(1 / 8)
