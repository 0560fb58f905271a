"""Publishing the queue snapshot once a second (in the active ``imgq scheduler``).

The ETA curve comes from the model-aware forward simulation in ``scheduler.eta.forecast``: each model's
latency fitted from recent attempts (the catalogue's baseline before any history), its current
failure rate (its last ``RECENT_CALLS`` calls within ``FAILURE_WINDOW_S``, so an outage shows within
a few calls), the running jobs' elapsed times and the routes of the jobs at the head of the queue.

Two things the vendor calls alone do not show are measured too:

* Dispatched jobs not yet in a vendor call (in Celery, or loading in a worker) hold a slot, or are
  next in line when every slot is taken (the dispatch buffer): the forecast puts them in front of
  the waiting jobs and publishes their own ETAs too (``dispatched``, ``curve.dispatched_s``).
* A job holds its slot longer than its route walk (loading, storing images, the hand-over to the
  next job). While every slot is taken, the slot-seconds not spent walking routes per finished
  walk is that overhead (``SlotUsage``); the forecast adds it to every job. Walks, not calls: the
  waits for a vendor's rate budget or concurrency slot are inside a walk and simulated by the
  forecast, so counting them as overhead too would add them twice.

Each model's vendor limits (the catalogue's ``max_concurrency`` and ``requests_per_minute`` over
the workers' rate window, the workers' wait for a slot) go into the forecast with the calls started
in the last window (finished ones from the latency samples, running ones from their attempt
marks): a spent rate budget sends jobs on to the next model of their route, which the forecast
must know to get the mix of models serving a burst right.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imagequeue import keys
from providers.catalogue import DEFAULT_ROUTE, Catalogue, ModelSpec
from scheduler.eta import telemetry
from scheduler.eta.forecast import (
    EtaCurve,
    LatencyModel,
    ModelEstimate,
    RunningJob,
    VendorLimit,
    fit_lognormal,
    forecast,
)
from scheduler.eta.snapshot import read_snapshot
from scheduler.outages import DEPENDENCY_ERRORS, OutageLog, RepeatedErrors
from scheduler.queue import heartbeats
from scheduler.queue.index import WaitingIndex
from storage.models import Job

log = logging.getLogger(__name__)

FAILURE_WINDOW_S = 60.0
RECENT_CALLS = 30
EXACT_POSITIONS = 200
EXACT_MARGIN = 50  # positions simulated past the queue's end: jobs that arrive before the next one
# Simulated jobs (Monte Carlo runs x positions) one snapshot may cost: 64 runs up to 100 positions,
# fewer (never under 24) further down. With more positions each run averages more jobs, so a deep
# curve moves by under 1 % from 24 runs (0.3 % from 64) while a snapshot costs a third.
SIMULATED_JOBS = 6400
MIN_RUNS, MAX_RUNS = 24, 64

Unavailable = Callable[[str], bool]


@dataclass(frozen=True)
class WorkerLimits:
    """How workers apply the catalogue's vendor limits (settings ``vendor_rate_window_s`` and
    ``vendor_slot_wait_s``)."""

    rate_window_s: float = 60.0
    slot_wait_s: float = 2.0


def vendor_limit(spec: ModelSpec, rows: list[telemetry.LatencySample],
                 running: list[telemetry.RunningInfo], now_s: float,
                 config: WorkerLimits) -> VendorLimit:
    """The model's limits and the calls that hold its rate tokens now (started within a window)."""
    starts_s = [r.at_s - r.latency_s for r in rows]
    starts_s += [r.attempt_started_s for r in running if r.model == spec.id]
    recent = tuple(sorted(t - now_s for t in starts_s if 0.0 >= t - now_s > -config.rate_window_s))
    return VendorLimit(calls_per_window=max(1, int(spec.requests_per_minute)),
                       window_s=config.rate_window_s,
                       max_concurrency=max(1, int(spec.max_concurrency)),
                       slot_wait_s=config.slot_wait_s, recent_starts_s=recent)


def model_estimates(catalogue: Catalogue, samples: dict[str, list[telemetry.LatencySample]],
                    now_s: float, unavailable: Unavailable | None = None,
                    running: list[telemetry.RunningInfo] | None = None,
                    limits: WorkerLimits | None = None) -> dict[str, ModelEstimate]:
    """Per model: fitted latency, recent failure rate, and (given ``limits``) vendor limits."""
    estimates = {}
    for model_id, spec in catalogue.models.items():
        rows = samples.get(model_id, [])
        baseline = LatencyModel.from_median(spec.baseline_latency_s)
        success = fit_lognormal([r.latency_s for r in rows if r.ok], fallback=baseline) or baseline
        recent = [r for r in rows if now_s - r.at_s <= FAILURE_WINDOW_S][:RECENT_CALLS]
        failures = [r.latency_s for r in recent if not r.ok]
        failure_rate = len(failures) / len(recent) if len(recent) >= 3 else 0.0
        failure_latency_s = statistics.median(failures) if failures else 0.05 * spec.baseline_latency_s
        if unavailable is not None and unavailable(model_id):
            failure_rate, failure_latency_s = 1.0, 0.0  # the router skips it at once
        limit = (None if limits is None
                 else vendor_limit(spec, rows, running or [], now_s, limits))
        estimates[model_id] = ModelEstimate(model_id, success, failure_rate, failure_latency_s,
                                            limit)
    return estimates


class SlotUsage:
    """Per-job slot overhead: slot-seconds not spent walking a route, per walk that ended.

    A walk is a job's admission waits and vendor calls, which the forecast simulates; what else
    a job holds its slot for (loading, storing images, the hand-over to the next job) it does not,
    so it is measured here and added to every job. Measured over the last ``walks_per_slot x
    slots`` walks of an unbroken busy stretch (every slot holds a job, or jobs wait: an idle slot
    is not overhead, a slot between jobs while jobs wait is), once at least half that many have
    ended in it: a window counted in jobs, not seconds, holds as many walks whether a call takes
    0.5 s or 50 s. Walks are clipped to the window and walks under way counted up to now. The
    last figure is kept in between.
    """

    def __init__(self, walks_per_slot: int = 4) -> None:
        self.walks_per_slot = walks_per_slot
        self.overhead_s = 0.0
        self._busy_since_s: float | None = None

    def observe(self, now_s: float, slots: int, busy: bool,
                walks: list[telemetry.RouteWalk],
                walking: list[telemetry.RunningInfo]) -> float:
        """``busy``: every slot holds a job or jobs wait for one; ``walking``: the running jobs
        still walking their routes."""
        if not (slots > 0 and busy):
            self._busy_since_s = None
            return self.overhead_s
        if self._busy_since_s is None:
            self._busy_since_s = now_s
        # Newest first. A walk that ended after ``now_s`` (read a moment later) may also be in
        # ``walking``: counting it twice made the overhead negative now and then.
        in_stretch = [w for w in walks if self._busy_since_s < w.at_s <= now_s]
        wanted = min(self.walks_per_slot * slots, telemetry.WALK_SAMPLES)
        if 2 * len(in_stretch) < wanted:
            return self.overhead_s
        since_s = in_stretch[wanted - 1].at_s if len(in_stretch) > wanted else self._busy_since_s
        if len(walks) >= telemetry.WALK_SAMPLES:
            # Telemetry keeps the last WALK_SAMPLES walks, so older ones may be gone: the window
            # must not reach back past the oldest walk still listed (many slots, few walks each).
            since_s = max(since_s, walks[-1].at_s)
        ended = [w for w in in_stretch if w.at_s > since_s]
        walking_s = math.fsum(min(w.duration_s, w.at_s - since_s) for w in ended)
        walking_s += math.fsum(now_s - max(r.job_started_s, since_s) for r in walking)
        self.overhead_s = max(0.0, (slots * (now_s - since_s) - walking_s) / len(ended))
        return self.overhead_s


def last_overhead_s(client: redis.Redis) -> float:
    """The slot overhead of the last snapshot published, if there is one (0 otherwise)."""
    try:
        snapshot = read_snapshot(client)
        return float(snapshot.data.get("job_overhead_s", 0.0)) if snapshot else 0.0
    except (redis.RedisError, ValueError, KeyError, TypeError):
        return 0.0


class SnapshotPublisher:
    def __init__(self, client: redis.Redis, sessions: sessionmaker[Session], catalogue: Catalogue,
                 *, unavailable: Unavailable | None = None, period_s: float = 1.0,
                 leader: Callable[[], bool] = lambda: True,
                 limits: WorkerLimits | None = None) -> None:
        self.redis = client
        self.index = WaitingIndex(client)
        self.sessions = sessions
        self.catalogue = catalogue
        self.unavailable = unavailable
        self.period_s = period_s
        self.leader = leader
        self.stopping = threading.Event()
        self.slot_usage = SlotUsage()
        self.slot_usage.overhead_s = last_overhead_s(client)  # a standby taking over keeps it
        self.limits = limits or WorkerLimits()
        self._read_database = False  # whether the pass under way has queried the database
        self.outages = OutageLog("snapshot publisher", log, backoff_s=max(period_s, 1.0))

    def inflight(self) -> list[str]:
        """Dispatched jobs, oldest first."""
        return [j.decode() if isinstance(j, bytes) else str(j)
                for j in self.redis.zrange(keys.INFLIGHT, 0, -1)]

    def walk_of(self, route: str, requested_model: str | None) -> tuple[str, ...]:
        """The models a job on ``route`` walks, as the workers walk them (``models_for``)."""
        return tuple(m.id for m in self.catalogue.models_for(route, requested_model))

    def routes_of(self, job_ids: list[str]) -> dict[str, tuple[str, ...]]:
        """The walk of each job found; empty for a job pinned to a model since removed (its
        walk fails it at once, so it holds no slot)."""
        if not job_ids:
            return {}
        self._read_database = True
        with self.sessions() as session:
            rows = session.execute(select(Job.id, Job.route, Job.requested_model)
                                   .where(Job.id.in_(job_ids))).all()
        return {r.id: self.walk_of(r.route, r.requested_model) for r in rows}

    def build(self) -> dict[str, Any]:
        now_s = time.time()
        dispatch_count = self.index.dispatch_count()  # before the head is read
        workers = heartbeats.live_workers(self.redis)
        slots = heartbeats.total_slots(workers)
        running_as_of_s = time.time()
        running = telemetry.running_jobs(self.redis)
        walks = telemetry.route_walks(self.redis)
        walking = [r for r in running if r.walking]  # the others only store their images
        samples = telemetry.latency_samples(self.redis, list(self.catalogue.models))
        models = model_estimates(self.catalogue, samples, now_s, self.unavailable, walking,
                                 self.limits)
        started = {r.job_id for r in running}
        pending = [j for j in self.inflight() if j not in started]
        head = self.index.head(EXACT_POSITIONS)
        known = self.routes_of([*pending, *head])
        default_route = self.walk_of(DEFAULT_ROUTE, None)
        pending_routes = [known.get(j, default_route) for j in pending]
        routes = [known[j] for j in head if known.get(j)]
        depth = {lane: self.index.depth(lane) for lane in keys.LANES}
        waiting = sum(depth.values())
        # Jobs waiting while a slot is between jobs: that gap is overhead too, not idleness.
        busy = len(running) + len(pending) >= slots or waiting > 0
        overhead_s = self.slot_usage.observe(running_as_of_s, slots, busy, walks, walking)
        in_calls = [RunningJob(max(0.0, now_s - r.attempt_started_s), r.route, r.model_index)
                for r in walking if all(m in models for m in r.route)]
        dispatched = [(j, route) for j, route in zip(pending, pending_routes, strict=True)
                      if route and all(m in models for m in route)]
        positions = min(EXACT_POSITIONS, waiting + EXACT_MARGIN)
        curve = forecast(
            slots, in_calls, routes or default_route, models, exact_positions=positions,
            runs=max(MIN_RUNS, min(MAX_RUNS, SIMULATED_JOBS // (positions + len(dispatched)))),
            queue_depth=waiting, job_overhead_s=overhead_s,
            dispatched=[route for _, route in dispatched])
        return {
            "as_of_s": now_s,
            "dispatch_count": dispatch_count,
            "depth": depth,
            "slots": slots,
            "workers": {name: beat.slots for name, beat in workers.items()},
            "job_overhead_s": round(overhead_s, 3),
            "dispatched": [j for j, _ in dispatched],  # in the order of curve.dispatched_s
            "running": [{"job_id": r.job_id, "model": r.model,
                         "elapsed_s": round(now_s - r.job_started_s, 2)} for r in running],
            "models": {m: {"mu": e.success_latency.mu, "sigma": e.success_latency.sigma,
                           "median_s": round(e.success_latency.median_s, 3),
                           "failure_rate": round(e.failure_rate, 3),
                           "failure_latency_s": round(e.failure_latency_s, 3)}
                       for m, e in models.items()},
            "curve": curve.to_dict(),
        }

    def build_curve(self) -> EtaCurve:
        return EtaCurve.from_dict(self.build()["curve"])

    def publish_once(self) -> dict[str, Any]:
        snapshot = self.build()
        payload = json.dumps(snapshot)
        pipe = self.redis.pipeline()
        pipe.set(keys.SNAPSHOT, payload, ex=60)
        pipe.publish(keys.SNAPSHOT_CHANNEL, str(snapshot["as_of_s"]))
        pipe.execute()
        return snapshot

    def publish_if_leader(self) -> tuple[str, ...]:
        """One pass: publish if this process is the active scheduler; returns the dependencies
        the pass used (the database only when there were jobs to look up)."""
        if not self.leader():
            return ()
        self._read_database = False
        self.publish_once()
        return ("redis", "database") if self._read_database else ("redis",)

    def run(self) -> None:
        """Publish every ``period_s`` until stopped. A Redis or database outage is logged when it
        starts and when it ends (``self.outages``) and retried every ``max(period_s, 1 s)``
        meanwhile; any other failure is logged (each distinct one once a minute at most) and the
        next period tried again."""
        outages = self.outages
        errors = RepeatedErrors("snapshot publisher", log)
        while not self.stopping.is_set():
            started = time.monotonic()
            period_s = self.period_s
            try:
                used = self.publish_if_leader()
            except DEPENDENCY_ERRORS as exc:
                outages.failed(exc)
                period_s = outages.backoff_s
            except Exception as exc:  # noqa: BLE001 - a bad second must not stop publishing
                errors.error(exc)
            else:
                outages.succeeded(used)
            self.stopping.wait(max(0.05, period_s - (time.monotonic() - started)))

    def stop(self) -> None:
        self.stopping.set()
