"""The snapshot publisher: slot overhead measured while every slot is busy, and dispatched jobs
that hold a slot before their first vendor call."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from providers.catalogue import load_catalogue
from scheduler import capacity, keys, telemetry
from scheduler.publisher import SlotUsage, SnapshotPublisher
from scheduler.telemetry import LatencySample


def calls(model_ok_s: list[tuple[float, float]]) -> dict[str, list[LatencySample]]:
    """Successful calls as (latency_s, ended_at_s), newest first as telemetry returns them."""
    rows = [LatencySample(True, latency_s, at_s) for latency_s, at_s in model_ok_s]
    return {"a": sorted(rows, key=lambda r: r.at_s, reverse=True)}


def test_overhead_is_busy_slot_time_outside_calls_per_finished_job() -> None:
    usage = SlotUsage(window_s=10.0, min_window_s=5.0)
    usage.observe(100.0, slots=2, jobs_in_slots=2, samples={})
    # 2 slots busy for 10 s = 20 slot-seconds; 10 finished calls of 1.5 s = 15 s in calls.
    finished = calls([(1.5, 100.0 + k + 0.5) for k in range(10)])
    overhead_s = usage.observe(110.0, slots=2, jobs_in_slots=2, samples=finished)
    assert overhead_s == pytest.approx((20.0 - 15.0) / 10)


def test_idle_slots_are_not_overhead_and_the_last_figure_is_kept() -> None:
    usage = SlotUsage(window_s=10.0, min_window_s=5.0)
    usage.observe(100.0, slots=2, jobs_in_slots=2, samples={})
    measured = usage.observe(110.0, 2, 2, calls([(1.5, 100.0 + k + 0.5) for k in range(10)]))
    # Now one slot idles: no call for 10 s would look like huge overhead if it were counted.
    kept = usage.observe(120.0, slots=2, jobs_in_slots=1, samples=calls([]))
    assert measured > 0.0
    assert kept == measured


def test_no_figure_before_the_slots_have_been_busy_long_enough() -> None:
    usage = SlotUsage(window_s=10.0, min_window_s=5.0)
    usage.observe(100.0, slots=2, jobs_in_slots=2, samples={})
    early = usage.observe(103.0, 2, 2, calls([(0.5, 100.0 + k * 0.5) for k in range(6)]))
    assert early == 0.0


@pytest.fixture()
def publisher(clean_redis: str, tmp_path: Path) -> SnapshotPublisher:
    from storage.db import make_engine, make_sessionmaker, migrate

    url = f"sqlite:///{tmp_path / 'imgq.db'}"
    migrate(url)
    client = redis.Redis.from_url(clean_redis)
    return SnapshotPublisher(client, make_sessionmaker(make_engine(url)), load_catalogue())


def test_dispatched_jobs_not_yet_calling_hold_the_slots(publisher: SnapshotPublisher) -> None:
    capacity.heartbeat(publisher.redis, "w1", 2, ttl_s=30)
    idle_start_s, _ = publisher.build_curve().at(0)
    now_ms = int(time.time() * 1000)
    publisher.redis.zadd(keys.INFLIGHT, {"job-1": now_ms, "job-2": now_ms})
    busy_start_s, _ = publisher.build_curve().at(0)
    assert idle_start_s == 0.0
    assert busy_start_s > 0.0


def test_a_job_in_a_vendor_call_is_not_counted_twice(publisher: SnapshotPublisher) -> None:
    capacity.heartbeat(publisher.redis, "w1", 2, ttl_s=30)
    route = load_catalogue().routes["default"].models
    publisher.redis.zadd(keys.INFLIGHT, {"job-1": int(time.time() * 1000)})
    telemetry.mark_attempt(publisher.redis, "job-1", route, 0, time.time())
    snapshot = publisher.build()
    # One job in a call on two slots: the next waiting job starts at once.
    assert snapshot["curve"]["start_ms"][0] == 0
    assert [r["job_id"] for r in snapshot["running"]] == ["job-1"]
    assert json.loads(json.dumps(snapshot)) == snapshot


def test_vendor_limits_carry_the_calls_started_within_the_rate_window() -> None:
    from scheduler.publisher import WorkerLimits, model_estimates

    catalogue = load_catalogue()
    model = catalogue.routes["default"].models[0]
    spec = catalogue.models[model]
    now_s = 1000.0
    # Calls that ended 1 s and 3 s ago after 0.5 s; one that started 20 s ago is out of the window.
    rows = [LatencySample(True, 0.5, now_s - 1.0), LatencySample(False, 0.5, now_s - 3.0),
            LatencySample(True, 0.5, now_s - 19.5)]
    running = [telemetry.RunningInfo("job-1", (model,), 0, now_s - 2.0, now_s - 0.25)]
    estimates = model_estimates(catalogue, {model: rows}, now_s, running=running,
                                limits=WorkerLimits(rate_window_s=6.0, slot_wait_s=0.2))
    limit = estimates[model].limit
    assert limit is not None
    assert limit.recent_starts_s == pytest.approx((-3.5, -1.5, -0.25))
    assert (limit.calls_per_window, limit.max_concurrency) == (
        spec.requests_per_minute, spec.max_concurrency)
    assert (limit.window_s, limit.slot_wait_s) == (6.0, 0.2)
