"""Publishing the queue snapshot once a second (in the active ``imgq scheduler``).

The ETA curve comes from the model-aware forward simulation in ``scheduler.eta``: each model's
latency fitted from recent attempts (the catalogue's baseline before any history), its current
failure rate, the running jobs' elapsed times and the routes of the jobs at the head of the queue.
"""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from providers.catalogue import Catalogue
from scheduler import capacity, keys, telemetry
from scheduler.eta import LatencyModel, ModelEstimate, RunningJob, fit_lognormal, forecast
from scheduler.index import WaitingIndex
from scheduler.queue import PINNED_ROUTE
from scheduler.snapshot import SNAPSHOT_CHANNEL
from storage.models import Job

log = logging.getLogger(__name__)

FAILURE_WINDOW_S = 60.0
EXACT_POSITIONS = 200

Unavailable = Callable[[str], bool]


def model_estimates(catalogue: Catalogue, samples: dict[str, list[telemetry.LatencySample]],
                    now_s: float, unavailable: Unavailable | None = None) -> dict[str, ModelEstimate]:
    estimates = {}
    for model_id, spec in catalogue.models.items():
        rows = samples.get(model_id, [])
        baseline = LatencyModel.from_median(spec.baseline_latency_s)
        success = fit_lognormal([r.latency_s for r in rows if r.ok], fallback=baseline) or baseline
        recent = [r for r in rows if now_s - r.at_s <= FAILURE_WINDOW_S]
        failures = [r.latency_s for r in recent if not r.ok]
        failure_rate = len(failures) / len(recent) if len(recent) >= 3 else 0.0
        failure_latency_s = statistics.median(failures) if failures else 0.05 * spec.baseline_latency_s
        if unavailable is not None and unavailable(model_id):
            failure_rate, failure_latency_s = 1.0, 0.0  # the router skips it at once
        estimates[model_id] = ModelEstimate(model_id, success, failure_rate, failure_latency_s)
    return estimates


class SnapshotPublisher:
    def __init__(self, client: redis.Redis, sessions: sessionmaker[Session], catalogue: Catalogue,
                 *, unavailable: Unavailable | None = None, period_s: float = 1.0,
                 leader: Callable[[], bool] = lambda: True) -> None:
        self.redis = client
        self.index = WaitingIndex(client)
        self.sessions = sessions
        self.catalogue = catalogue
        self.unavailable = unavailable
        self.period_s = period_s
        self.leader = leader
        self.stopping = threading.Event()

    def route_models(self, route: str, requested_model: str | None) -> tuple[str, ...]:
        if route == PINNED_ROUTE or route not in self.catalogue.routes:
            return (requested_model,) if requested_model else self.catalogue.routes["default"].models
        chain = self.catalogue.routes[route]
        return chain.models if chain.allow_fallback else chain.models[:1]

    def build(self) -> dict[str, Any]:
        now_s = time.time()
        workers = capacity.live_workers(self.redis)
        slots = sum(workers.values())
        running = telemetry.running_jobs(self.redis)
        samples = telemetry.latency_samples(self.redis, list(self.catalogue.models))
        models = model_estimates(self.catalogue, samples, now_s, self.unavailable)
        head = self.index.head(EXACT_POSITIONS)
        routes: list[tuple[str, ...]] = []
        if head:
            with self.sessions() as session:
                rows = {r.id: r for r in session.execute(
                    select(Job.id, Job.route, Job.requested_model).where(Job.id.in_(head)))}
            routes = [self.route_models(rows[j].route, rows[j].requested_model)
                      for j in head if j in rows]
        depth = {lane: self.index.depth(lane) for lane in keys.LANES}
        default_route = self.catalogue.routes["default"].models
        curve = forecast(
            slots,
            [RunningJob(max(0.0, now_s - r.attempt_started_s), r.route, r.model_index)
             for r in running if all(m in models for m in r.route)],
            routes or default_route, models, exact_positions=EXACT_POSITIONS,
            queue_depth=sum(depth.values()))
        return {
            "as_of_s": now_s,
            "depth": depth,
            "slots": slots,
            "workers": workers,
            "running": [{"job_id": r.job_id, "model": r.model,
                         "elapsed_s": round(now_s - r.job_started_s, 2)} for r in running],
            "models": {m: {"mu": e.success_latency.mu, "sigma": e.success_latency.sigma,
                           "median_s": round(e.success_latency.median_s, 3),
                           "failure_rate": round(e.failure_rate, 3)} for m, e in models.items()},
            "curve": curve.to_dict(),
        }

    def publish_once(self) -> dict[str, Any]:
        snapshot = self.build()
        payload = json.dumps(snapshot)
        pipe = self.redis.pipeline()
        pipe.set(keys.SNAPSHOT, payload, ex=60)
        pipe.publish(SNAPSHOT_CHANNEL, str(snapshot["as_of_s"]))
        pipe.execute()
        return snapshot

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                if self.leader():
                    self.publish_once()
            except Exception as exc:  # noqa: BLE001 - a bad second must not stop publishing
                log.warning("snapshot failed: %s", exc)
            self.stopping.wait(max(0.05, self.period_s - (time.monotonic() - started)))

    def stop(self) -> None:
        self.stopping.set()
