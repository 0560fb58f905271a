"""Reading a published snapshot: ETAs for a job's position now, from a curve computed earlier."""

from __future__ import annotations

import math
import time

import pytest

from scheduler.eta import EtaCurve
from scheduler.snapshot import Snapshot


def snapshot(age_s: float, dispatch_count: int) -> Snapshot:
    curve = EtaCurve(slots=1, mean_service_s=2.0, start_s=tuple(2.0 * p for p in range(10)),
                     finish_s=tuple(2.0 * p + 2.0 for p in range(10)), queue_depth=10)
    return Snapshot(time.time() - age_s, curve, {"interactive": 10, "bulk": 0},
                    {"dispatch_count": dispatch_count, "models": {}})


def test_a_fresh_snapshot_reads_the_curve_at_the_position() -> None:
    assert snapshot(0.0, 100).eta(3, 100) == (6.0, 8.0)


def test_jobs_dispatched_since_the_snapshot_are_accounted_for() -> None:
    # Two jobs left the queue since the snapshot: the job now at position 1 was at 3 then,
    # and 1.5 s of the 6 s it had to wait then have passed.
    start, finish = snapshot(1.5, 100).eta(1, 102)
    assert start == pytest.approx(4.5, abs=0.05)
    assert finish == pytest.approx(6.5, abs=0.05)


def test_an_eta_never_goes_below_zero_and_no_workers_means_no_eta() -> None:
    assert snapshot(30.0, 0).eta(0, 0) == (0.0, 0.0)
    idle = Snapshot(time.time(), EtaCurve(0, 2.0, (), (), 3), {}, {"models": {}})
    assert idle.eta(2, 0) == (None, None)


def with_models(models: dict[str, dict[str, float]], overhead_s: float = 0.0) -> Snapshot:
    curve = EtaCurve(slots=2, mean_service_s=2.0, start_s=(0.0,), finish_s=(2.0,), queue_depth=0)
    return Snapshot(time.time(), curve, {}, {"models": models, "job_overhead_s": overhead_s})


def fixed(median_s: float, failure_rate: float = 0.0, failure_latency_s: float = 0.0
          ) -> dict[str, float]:
    return {"mu": math.log(median_s), "sigma": 0.0, "failure_rate": failure_rate,
            "failure_latency_s": failure_latency_s}


def test_a_dispatched_job_finishes_after_its_routes_mean_slot_time() -> None:
    snap = with_models({"a": fixed(4.0, failure_rate=0.5, failure_latency_s=1.0),
                        "b": fixed(2.0)}, overhead_s=0.25)
    # Half the jobs fail on a after 1 s and take b (2 s): 0.5 x 4 + 0.5 x 1 + 0.5 x 2 + overhead.
    assert snap.dispatched_finish_s(("a", "b")) == pytest.approx(3.75)
    assert snap.dispatched_finish_s(("b",)) == pytest.approx(2.25)


def test_no_dispatched_eta_for_an_unknown_model_or_without_workers() -> None:
    assert with_models({"a": fixed(4.0)}).dispatched_finish_s(("a", "gone")) is None
    idle = Snapshot(time.time(), EtaCurve(0, 2.0, (), (), 0), {}, {"models": {"a": fixed(1.0)}})
    assert idle.dispatched_finish_s(("a",)) is None


def test_a_dispatched_job_reads_its_forecast_eta_or_starts_now_if_dispatched_since() -> None:
    curve = EtaCurve(slots=1, mean_service_s=2.0, start_s=(5.0,), finish_s=(7.0,),
                     queue_depth=0, dispatched_s=((0.0, 2.0), (2.0, 5.0)))
    snap = Snapshot(time.time(), curve, {}, {"models": {"a": fixed(3.0)},
                                             "dispatched": ["job-1", "job-2"]})
    assert snap.dispatched_eta("job-2", ("a",)) == pytest.approx((2.0, 5.0), abs=0.02)
    assert snap.dispatched_eta("job-3", ("a",)) == (0.0, 3.0)
