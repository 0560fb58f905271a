"""The scheduler's gauges, read at scrape time: the figures of the whole cluster.

Each scrape of the scheduler's ``/metrics`` reads, within the scrape: unfinished jobs by status
and lane (one GROUP BY over the database's status index), the waiting index's depth per lane,
parked and in-flight jobs, the live workers and their slots (Redis), the ETA a new job would get
in each lane (the last published snapshot), each model's breaker state and window failure rate,
and the breaker transitions logged since the last scrape (the breaker's event stream in Redis,
counted from the moment this process started). A source that does not answer leaves its families
out of that scrape, and ``imgq_scrape_source_up`` says which.

Every scheduler process (the active one and those standing by) reports the same cluster figures:
aggregate them with ``max``, not ``sum``.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from breaker import BreakerState, BreakerStore, RedisBreakerStore
from imagequeue import keys
from scheduler.eta.snapshot import read_snapshot
from scheduler.outages import RepeatedErrors
from scheduler.queue import heartbeats
from scheduler.queue.index import WaitingIndex
from storage.models import UNFINISHED_STATUSES, Job

log = logging.getLogger(__name__)

SOURCES = ("database", "redis", "breaker")


class SchedulerCollector(Collector):
    """A ``prometheus_client`` collector: every family is built afresh on each ``collect``."""

    def __init__(self, sessions: sessionmaker[Session], client: redis.Redis,
                 breakers: BreakerStore, models: Sequence[str]) -> None:
        self.sessions = sessions
        self.redis = client
        self.index = WaitingIndex(client)
        self.breakers = breakers
        self.models = tuple(models)
        self.errors = RepeatedErrors("metrics scrape", log)
        self._lock = threading.Lock()  # two scrapes at once must not count a transition twice
        self._transitions: Counter[tuple[str, str, str]] = Counter()
        self._after: str | None = None
        self._tail_transitions()  # from now on

    def describe(self) -> Iterable[Metric]:
        """The families without samples: registering must not read the database or Redis."""
        return list(self._families().values())

    def collect(self) -> Iterable[Metric]:
        up: dict[str, bool] = {}
        sections: list[tuple[str, Callable[[], Iterable[Metric]]]] = [
            ("database", self._jobs), ("redis", self._queue), ("breaker", self._breakers)]
        families: list[Metric] = []
        for source, read in sections:
            try:
                families += list(read())
                up[source] = True
            except Exception as exc:  # noqa: BLE001 - a scrape never fails; the gauge says so
                self.errors.error(exc)
                up[source] = False
        source_up = GaugeMetricFamily(
            "imgq_scrape_source_up", "1 if the scrape could read this source (database, redis, "
            "breaker); 0 leaves that source's families out of the scrape.", labels=["source"])
        for source in SOURCES:
            source_up.add_metric([source], 1.0 if up.get(source) else 0.0)
        return [*families, source_up]

    # --- sources ----------------------------------------------------------------------------

    def _jobs(self) -> Iterator[Metric]:
        with self.sessions() as session:
            rows = session.execute(
                select(Job.status, Job.lane, func.count())
                .where(Job.status.in_(UNFINISHED_STATUSES))
                .group_by(Job.status, Job.lane)).all()
        counts = {(str(status), str(lane)): int(count) for status, lane, count in rows}
        jobs = _jobs_family()
        for status in sorted(UNFINISHED_STATUSES):
            for lane in sorted({*keys.LANES, *(lane for _, lane in counts)}):
                jobs.add_metric([status, lane], float(counts.get((status, lane), 0)))
        yield jobs

    def _queue(self) -> Iterator[Metric]:
        depth = {lane: self.index.depth(lane) for lane in keys.LANES}
        parked = int(self.redis.zcard(keys.PARKED))
        in_flight = self.index.inflight_count()
        workers = heartbeats.live_workers(self.redis)
        snap = read_snapshot(self.redis)
        dispatched = self.index.dispatch_count() if snap is not None else None
        families = self._families()
        ahead = 0
        for lane in keys.LANES:  # interactive first: a bulk job waits behind both
            families["imgq_queue_depth"].add_metric([lane], float(depth[lane]))
            ahead += depth[lane]
            start, finish = snap.eta(ahead, dispatched) if snap is not None else (None, None)
            if start is not None and finish is not None:
                families["imgq_new_job_eta_start_seconds"].add_metric([lane], start)
                families["imgq_new_job_eta_finish_seconds"].add_metric([lane], finish)
        families["imgq_queue_parked"].add_metric([], float(parked))
        families["imgq_jobs_in_flight"].add_metric([], float(in_flight))
        families["imgq_workers_alive"].add_metric([], float(len(workers)))
        families["imgq_worker_slots"].add_metric([], float(heartbeats.total_slots(workers)))
        if snap is not None:
            families["imgq_snapshot_age_seconds"].add_metric([], snap.age_s)
        for name in ("imgq_queue_depth", "imgq_new_job_eta_start_seconds",
                     "imgq_new_job_eta_finish_seconds", "imgq_queue_parked",
                     "imgq_jobs_in_flight", "imgq_workers_alive", "imgq_worker_slots",
                     "imgq_snapshot_age_seconds"):
            yield families[name]

    def _breakers(self) -> Iterator[Metric]:
        families = self._families()
        state, rate = families["imgq_breaker_state"], families["imgq_breaker_failure_rate"]
        for model in self.models:
            health = self.breakers.snapshot(model)
            for candidate in BreakerState:
                state.add_metric([model, candidate.value],
                                 1.0 if health.state is candidate else 0.0)
            rate.add_metric([model], health.failure_rate)
        self._tail_transitions()
        transitions = families["imgq_breaker_transitions"]
        with self._lock:
            for (model, from_state, to_state), count in sorted(self._transitions.items()):
                transitions.add_metric([model, from_state, to_state], float(count))
        yield from (state, rate, transitions)

    def _tail_transitions(self) -> None:
        """Count the transitions logged since the last call (the first call only marks where
        counting starts). Raises the store's error if Redis does not answer."""
        if not isinstance(self.breakers, RedisBreakerStore):
            return
        with self._lock:
            try:
                while True:
                    events, after = self.breakers.events_after(self._after)
                    for event in events:
                        self._transitions[(event.model, event.from_state.value,
                                           event.to_state.value)] += 1
                    first, self._after = self._after is None, after
                    if first or len(events) < 1000:
                        return
            except redis.RedisError:
                if self._after is None:
                    return  # not reachable at start: counting starts at the first scrape
                raise

    @staticmethod
    def _families() -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
        """Every family of this collector, empty, by name."""
        return {family.name: family for family in _empty_families()}


def _empty_families() -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    yield _jobs_family()
    yield GaugeMetricFamily(
        "imgq_queue_depth", "Jobs in the waiting index by lane: queued and not handed to a "
        "worker (parked ones not included).", labels=["lane"])
    yield GaugeMetricFamily(
        "imgq_new_job_eta_start_seconds", "Seconds until a job submitted now to this lane "
        "would start, from the last ETA snapshot (absent while no worker is alive).",
        labels=["lane"])
    yield GaugeMetricFamily(
        "imgq_new_job_eta_finish_seconds", "Seconds until a job submitted now to this lane "
        "would have its image, from the last ETA snapshot.", labels=["lane"])
    yield GaugeMetricFamily(
        "imgq_queue_parked", "Jobs parked: every model of their route was unavailable; "
        "they come back at their place when one may be again.")
    yield GaugeMetricFamily(
        "imgq_jobs_in_flight", "Jobs handed to the workers and not yet finished or parked.")
    yield GaugeMetricFamily("imgq_workers_alive", "Workers whose heartbeat is current.")
    yield GaugeMetricFamily("imgq_worker_slots",
                            "Job slots (threads) of the live workers, none from one shutting down.")
    yield GaugeMetricFamily(
        "imgq_snapshot_age_seconds", "Age of the last published ETA snapshot (published "
        "every IMGQ_SNAPSHOT_INTERVAL_S by the active scheduler).")
    yield GaugeMetricFamily(
        "imgq_breaker_state", "Each model's breaker state: 1 for the state it is in "
        "(closed, open, half_open, forced_open, disabled), 0 for the others.",
        labels=["model", "state"])
    yield GaugeMetricFamily(
        "imgq_breaker_failure_rate", "Share of failed calls in each model's breaker window.",
        labels=["model"])
    yield CounterMetricFamily(
        "imgq_breaker_transitions", "Breaker transitions of each model since this process "
        "started, from its event stream (the start of a quota cooldown or a "
        "misconfiguration counts with from_state equal to to_state).",
        labels=["model", "from_state", "to_state"])


def _jobs_family() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "imgq_jobs", "Jobs not yet finished, by status (queued: waiting or parked; running) and "
        "lane, counted in the database at scrape time. Finished jobs are counted as they end: "
        "imgq_jobs_ended_total.", labels=["status", "lane"])
