"""Reading a published snapshot: ETAs for a job's position now, from a curve computed earlier."""

from __future__ import annotations

import time

import pytest

from scheduler.eta.forecast import EtaCurve
from scheduler.eta.snapshot import Snapshot


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


def test_a_dispatched_job_reads_its_forecast_eta() -> None:
    curve = EtaCurve(slots=1, mean_service_s=2.0, start_s=(5.0,), finish_s=(7.0,),
                     queue_depth=0, dispatched_s=((0.0, 2.0), (2.0, 5.0)))
    snap = Snapshot(time.time(), curve, {}, {"models": {}, "dispatched": ["job-1", "job-2"],
                                             "dispatch_count": 40})
    assert snap.dispatched_eta("job-2", 40) == pytest.approx((2.0, 5.0), abs=0.02)


def test_a_job_dispatched_since_the_snapshot_reads_the_curve_where_it_stood() -> None:
    # The curve's position 0 is what the forecast gives the next job (the vendor limits' mix of
    # models included): 1.3 s of service on a free slot, not the first model's 2.6 s.
    curve = EtaCurve(slots=2, mean_service_s=1.3, start_s=(0.0, 0.0, 1.3, 1.3),
                     finish_s=(1.3, 1.3, 2.6, 2.6), queue_depth=0)
    snap = Snapshot(time.time(), curve, {}, {"models": {}, "dispatched": [],
                                             "dispatch_count": 40})
    assert snap.dispatched_eta("job-new", 41) == pytest.approx((0.0, 1.3), abs=0.02)
    # Three dispatched since, taken as the last of them: it stood at position 2.
    assert snap.dispatched_eta("job-new", 43) == pytest.approx((1.3, 2.6), abs=0.02)
    # Nothing counted since (the count read first): the head of the curve.
    assert snap.dispatched_eta("job-new", 40) == pytest.approx((0.0, 1.3), abs=0.02)


def test_no_dispatched_eta_without_workers() -> None:
    idle = Snapshot(time.time(), EtaCurve(0, 2.0, (), (), 0), {}, {"models": {}})
    assert idle.dispatched_eta("job-1", 3) == (None, None)
