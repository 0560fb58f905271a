"""The snapshot publisher: slot overhead measured while every slot is busy, and dispatched jobs
that hold a slot before their first vendor call."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from imagequeue import keys
from providers.catalogue import load_catalogue
from scheduler.eta import telemetry
from scheduler.eta.publisher import SlotUsage, SnapshotPublisher
from scheduler.eta.telemetry import WALK_SAMPLES, LatencySample, RouteWalk, RunningInfo
from scheduler.queue import heartbeats


def walks(duration_end_s: list[tuple[float, float]]) -> list[RouteWalk]:
    """Route walks as (duration_s, ended_at_s), newest first as telemetry returns them."""
    rows = [RouteWalk(duration_s, at_s) for duration_s, at_s in duration_end_s]
    return sorted(rows, key=lambda r: r.at_s, reverse=True)


def test_overhead_is_busy_slot_time_outside_route_walks_per_walk() -> None:
    usage = SlotUsage(walks_per_slot=5)
    usage.observe(100.0, slots=2, busy=True, walks=[], walking=[])
    # 2 slots busy for 10 s = 20 slot-seconds; 9 walks of 1.5 s = 13.5 s walking.
    ended = walks([(1.5, 101.5 + k) for k in range(9)])
    overhead_s = usage.observe(110.0, slots=2, busy=True, walks=ended, walking=[])
    assert overhead_s == pytest.approx((20.0 - 13.5) / 9)


def test_the_window_holds_the_last_walks_clipped_to_it_and_walks_under_way() -> None:
    usage = SlotUsage(walks_per_slot=2)
    usage.observe(100.0, slots=2, busy=True, walks=[], walking=[])
    # Window: after the 4th newest walk ended (104.0). In it: a 3 s walk that ended at 105.0
    # walked 1 s of it, two 1 s walks, and one job has walked for 2 s, up to now (110.0).
    ended = walks([(1.0, 101.0), (1.0, 102.0), (1.0, 104.0), (3.0, 105.0), (1.0, 107.0),
                   (1.0, 109.0)])
    running = [RunningInfo("j", ("a",), 0, job_started_s=108.0, attempt_started_s=108.5)]
    overhead_s = usage.observe(110.0, slots=2, busy=True, walks=ended, walking=running)
    assert overhead_s == pytest.approx((2 * 6.0 - (1.0 + 1.0 + 1.0 + 2.0)) / 3)


def test_the_window_is_counted_in_jobs_so_slow_calls_are_measured_too() -> None:
    usage = SlotUsage(walks_per_slot=4)
    usage.observe(0.0, slots=1, busy=True, walks=[], walking=[])
    # 50 s calls, each after 2 s of overhead: four walks in 210 s leave 10 s of overhead.
    ended = walks([(50.0, 52.0 * k + 52.0) for k in range(4)])
    assert usage.observe(210.0, 1, True, ended, []) == pytest.approx((210.0 - 200.0) / 4)


def test_with_more_slots_than_walks_kept_the_window_starts_at_the_oldest_walk_kept() -> None:
    usage = SlotUsage(walks_per_slot=4)
    slots = 400  # 4 x 400 walks wanted, telemetry keeps the last WALK_SAMPLES
    usage.observe(0.0, slots=slots, busy=True, walks=[], walking=[])
    # Every slot: a 9.5 s walk after 0.5 s of overhead, ending at 10, 20, ... s (two rounds,
    # staggered). Only the last WALK_SAMPLES walks are listed; the older ones are gone.
    every = [(9.5, 10.0 * (k // slots + 1) + 0.001 * (k % slots)) for k in range(3 * slots)]
    listed = walks(every)[:WALK_SAMPLES]
    overhead_s = usage.observe(30.4, slots, True, listed, [])
    assert overhead_s == pytest.approx(0.5, abs=0.05)


def test_idle_slots_are_not_overhead_and_the_last_figure_is_kept() -> None:
    usage = SlotUsage(walks_per_slot=5)
    usage.observe(100.0, slots=2, busy=True, walks=[], walking=[])
    ended = walks([(1.5, 100.0 + k + 1.0) for k in range(10)])
    measured = usage.observe(110.0, 2, True, ended, [])
    # Now one slot idles and nothing waits: no walk for 10 s would look like huge overhead if it were counted.
    kept = usage.observe(120.0, slots=2, busy=False, walks=[], walking=[])
    assert measured > 0.0
    assert kept == measured


def test_no_figure_before_enough_walks_have_ended_in_the_busy_stretch() -> None:
    usage = SlotUsage(walks_per_slot=4)
    usage.observe(100.0, slots=2, busy=True, walks=[], walking=[])
    before = walks([(0.4, 90.0 + k) for k in range(10)])  # ended before the stretch began
    early = usage.observe(103.0, 2, True, before + walks([(0.4, 101.0), (0.4, 102.0)]), [])
    assert early == 0.0


def test_admission_waits_inside_walks_are_not_overhead() -> None:
    """Waits for a vendor's rate budget are in the walk (the forecast simulates them)."""
    usage = SlotUsage(walks_per_slot=4)
    usage.observe(100.0, slots=1, busy=True, walks=[], walking=[])
    # Each 2 s walk is 0.5 s of call and 1.5 s of waiting for a rate token; 0.5 s between walks.
    ended = walks([(2.0, 100.0 + 2.5 * k + 2.0) for k in range(4)])
    overhead_s = usage.observe(110.0, slots=1, busy=True, walks=ended, walking=[])
    assert overhead_s == pytest.approx((10.0 - 8.0) / 4)


@pytest.fixture()
def publisher(clean_redis: str, tmp_path: Path) -> SnapshotPublisher:
    from storage.db import make_engine, make_sessionmaker, migrate

    url = f"sqlite:///{tmp_path / 'imgq.db'}"
    migrate(url)
    client = redis.Redis.from_url(clean_redis)
    return SnapshotPublisher(client, make_sessionmaker(make_engine(url)), load_catalogue())


def test_dispatched_jobs_not_yet_calling_hold_the_slots(publisher: SnapshotPublisher) -> None:
    heartbeats.heartbeat(publisher.redis, "w1", 2, ttl_s=30)
    idle_start_s, _ = publisher.build_curve().at(0)
    now_ms = int(time.time() * 1000)
    publisher.redis.zadd(keys.INFLIGHT, {"job-1": now_ms, "job-2": now_ms})
    busy_start_s, _ = publisher.build_curve().at(0)
    assert idle_start_s == 0.0
    assert busy_start_s > 0.0


def test_a_job_in_a_vendor_call_is_not_counted_twice(publisher: SnapshotPublisher) -> None:
    heartbeats.heartbeat(publisher.redis, "w1", 2, ttl_s=30)
    route = load_catalogue().routes["default"].models
    publisher.redis.zadd(keys.INFLIGHT, {"job-1": int(time.time() * 1000)})
    telemetry.mark_attempt(publisher.redis, "job-1", route, 0, time.time())
    snapshot = publisher.build()
    # One job in a call on two slots: the next waiting job starts at once.
    assert snapshot["curve"]["start_ms"][0] == 0
    assert [r["job_id"] for r in snapshot["running"]] == ["job-1"]
    assert json.loads(json.dumps(snapshot)) == snapshot


def test_vendor_limits_carry_the_calls_started_within_the_rate_window() -> None:
    from scheduler.eta.publisher import WorkerLimits, model_estimates

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


def test_a_job_handed_to_a_worker_reads_as_starting_now_with_its_finish_eta(
        publisher: SnapshotPublisher) -> None:
    from scheduler.queue.jobs import JobQueue, JobRequest
    from storage.tenants import create_tenant

    with publisher.sessions.begin() as session:
        tenant, _ = create_tenant(session, "t")
        tenant_id = tenant.id
    queue = JobQueue(publisher.sessions, publisher.index, publisher.catalogue)
    job = queue.submit(tenant_id, JobRequest(prompt="a kite"))
    heartbeats.heartbeat(publisher.redis, "w1", 2, ttl_s=30)
    publisher.publish_once()
    waiting = queue.get(tenant_id, job.id)
    assert (waiting.queue_position, waiting.eta_start_s) == (0, 0.0)

    assert publisher.index.take(1)[0] == [job.id]
    publisher.publish_once()
    handed = queue.get(tenant_id, job.id)
    assert handed.job.status == "queued"
    assert (handed.queue_position, handed.eta_start_s) == (None, 0.0)
    # Nothing measured yet: the default route's first model at its catalogue baseline.
    first = publisher.catalogue.models[publisher.catalogue.routes["default"].models[0]]
    assert handed.eta_finish_s == pytest.approx(first.baseline_latency_s, rel=0.2)

    publisher.index.park(job.id, int(time.time() * 1000) + 60_000)
    assert queue.get(tenant_id, job.id).eta_finish_s is None  # parked: no ETA to give


def test_a_job_past_its_walk_holds_no_call_and_is_not_dispatched_again(
        publisher: SnapshotPublisher) -> None:
    heartbeats.heartbeat(publisher.redis, "w1", 1, ttl_s=30)
    route = load_catalogue().routes["default"].models
    publisher.redis.zadd(keys.INFLIGHT, {"job-1": int(time.time() * 1000)})
    telemetry.mark_attempt(publisher.redis, "job-1", route, 0, time.time() - 1.0)
    telemetry.record_walk(publisher.redis, "job-1", route, 0, time.time() - 1.0, time.time() - 0.5)

    (info,) = telemetry.running_jobs(publisher.redis)
    assert not info.walking and info.walk_ended_s is not None
    assert telemetry.route_walks(publisher.redis)[0].duration_s == pytest.approx(1.0, abs=0.1)
    snapshot = publisher.build()
    # Storing its images, it frees the one slot in a moment: not a fresh job ahead of the queue.
    assert snapshot["dispatched"] == []
    assert snapshot["curve"]["start_ms"][0] == 0


def test_a_walk_that_ended_after_the_moment_measured_is_not_counted_twice() -> None:
    usage = SlotUsage(walks_per_slot=4)
    usage.observe(100.0, slots=1, busy=True, walks=[], walking=[])
    ended = walks([(0.9, 101.0 + k) for k in range(4)])
    # Still walking when the running jobs were read (at 105.0); its walk ended at 105.2.
    late = walks([(1.0, 105.2)])
    walking = [RunningInfo("j", ("a",), 0, job_started_s=104.2, attempt_started_s=104.2)]
    overhead_s = usage.observe(105.0, 1, True, late + ended, walking)
    assert overhead_s == pytest.approx((5.0 - 4 * 0.9 - 0.8) / 4)


def test_a_new_publisher_starts_from_the_last_published_overhead(
        publisher: SnapshotPublisher) -> None:
    heartbeats.heartbeat(publisher.redis, "w1", 2, ttl_s=30)
    publisher.slot_usage.overhead_s = 0.042
    publisher.publish_once()
    standby = SnapshotPublisher(publisher.redis, publisher.sessions, publisher.catalogue)
    assert standby.slot_usage.overhead_s == pytest.approx(0.042)
