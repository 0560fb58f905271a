"""Submitting, reading and canceling jobs: the queue as producers and the API see it.

Submit writes the rows in one transaction, commits, then indexes the job in Redis. A crash between
the two, or Redis unreachable for the push, is healed by ``reconcile`` (the database is the source
of truth): once committed, a submit has succeeded and the job will run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import redis
from sqlalchemy import select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload, sessionmaker

from imagequeue import metrics
from providers.catalogue import DEFAULT_ROUTE, PINNED_ROUTE, PREFERRED_ROUTE, Catalogue
from providers.types import GenerationRequest
from scheduler.errors import Conflict, InvalidJob, NotFound
from scheduler.eta import telemetry
from scheduler.eta.snapshot import Snapshot, read_snapshot
from scheduler.idempotency import find_previous
from scheduler.ids import possible_id, shown_id
from scheduler.notices import notice_of
from scheduler.queue.index import IndexEntry, WaitingIndex
from scheduler.tenants.quotas import Reservation, TenantCounters, TenantLimits, limits_of
from storage.models import Batch, Job, JobStatus, utcnow

log = logging.getLogger("scheduler.queue.jobs")
# A job with its attempts in one statement, built once (a poll reads it many times a second).
WITH_ATTEMPTS = select(Job).options(joinedload(Job.attempts))


@dataclass(frozen=True)
class JobRequest:
    prompt: str
    width: int = 1024
    height: int = 1024
    n: int = 1
    quality: str | None = None
    model: str | None = None
    route: str | None = None
    # With ``model``: False pins it (that model only); True walks it first, then the default
    # route's other models (``PREFERRED_ROUTE``).
    model_fallback: bool = False
    priority: int = 0
    lane: str = "interactive"
    metadata: dict[str, Any] = field(default_factory=dict)
    webhook_url: str | None = None


@dataclass(frozen=True)
class JobView:
    """A job as its owner sees it, with its place in the queue while it waits."""

    job: Job
    queue_position: int | None
    eta_start_s: float | None = None
    eta_finish_s: float | None = None
    current_model: str | None = None
    expected_remaining_s: float | None = None
    notice: str | None = None  # for the end user, when the job was not served as asked
    waiting_for: str | None = None  # running, but waiting before its call (a slow-start gate)


class JobQueue:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        index: WaitingIndex,
        catalogue: Catalogue,
        *,
        job_deadline_s: float = 3600.0,
        counters: TenantCounters | None = None,
        snapshots: Callable[[], Snapshot | None] | None = None,
        reads: sessionmaker[Session] | None = None,
    ) -> None:
        self.sessions = sessions
        # ``get``'s sessions: one statement each, so they may run without a transaction (an API
        # process's are AUTOCOMMIT: no BEGIN and ROLLBACK round trips around a poll).
        self.reads = reads or sessions
        self.index = index
        self.catalogue = catalogue
        self.job_deadline_s = job_deadline_s
        self.counters = counters  # None: no tenant limits (``scheduler.tenants.quotas``)
        # The published snapshot; an API process reads it once per publication (SnapshotCache).
        self.snapshot = snapshots or (lambda: read_snapshot(index.redis))

    def resolve_route(self, request: JobRequest) -> tuple[str, str]:
        """(route name, requested model) for a request; raises InvalidJob for unknown names."""
        if request.model is not None:
            if request.model not in self.catalogue.models:
                known = ", ".join(sorted(self.catalogue.models))
                raise InvalidJob("model", f"unknown model {request.model!r}; known models: {known}")
            return (PREFERRED_ROUTE if request.model_fallback else PINNED_ROUTE), request.model
        route_name = request.route or DEFAULT_ROUTE
        if route_name not in self.catalogue.routes:
            known = ", ".join(sorted(self.catalogue.routes))
            raise InvalidJob("route", f"unknown route {route_name!r}; known routes: {known}")
        return route_name, self.catalogue.routes[route_name].models[0]

    def check_servable(self, route: str, requested_model: str, request: JobRequest) -> None:
        """Refuse at once a job that none of the models it would walk could serve (say, an odd
        size): the models of ``Catalogue.models_for``, as the workers walk them."""
        models = self.catalogue.models_for(route, requested_model)
        wanted = GenerationRequest(prompt=request.prompt, width=request.width,
                                   height=request.height, n=request.n, quality=request.quality)
        reasons = [model.can_serve(wanted) for model in models]
        if all(reasons):
            raise InvalidJob("size", "; ".join(r for r in reasons if r) or "no model to walk")

    def build_job(self, tenant_id: str, request: JobRequest) -> Job:
        route, requested_model = self.resolve_route(request)
        self.check_servable(route, requested_model, request)
        now = utcnow()
        return Job(
            tenant_id=tenant_id,
            prompt=request.prompt,
            width=request.width,
            height=request.height,
            n=request.n,
            quality=request.quality,
            route=route,
            requested_model=requested_model,
            lane=request.lane,
            priority=request.priority,
            metadata_=dict(request.metadata),
            webhook_url=request.webhook_url,
            status=JobStatus.QUEUED.value,
            created_at=now,
            deadline_at=now + timedelta(seconds=self.job_deadline_s),
            images=[],
            estimated_cost_usd=self.estimate_usd(requested_model, request.n),
        )

    def estimate_usd(self, requested_model: str | None, n: int) -> float:
        """What a job is reserved at against its tenant's budget: the list price of the route's
        first model (or the pinned one) for ``n`` images."""
        model = self.catalogue.models.get(requested_model or "")
        return model.price_per_image_usd * n if model is not None else 0.0

    def admit(self, tenant_id: str, jobs: int, cost_usd: float, created_at: datetime,
              limits: TenantLimits | None = None) -> Reservation | None:
        """Count jobs about to be committed against the tenant's max_queued and budget; raises
        LimitExceeded (a 429). None when there is nothing to count, or Redis is unreachable:
        limits are not enforced then, and the next rebuild counts what was committed.
        ``limits``: the tenant's, if the caller holds them (read from the database if not)."""
        if self.counters is None:
            return None
        if limits is None:
            with self.sessions() as session:
                limits = limits_of(session, tenant_id, self.counters.defaults)
        try:
            return self.counters.admit(tenant_id, limits, jobs, cost_usd, created_at)
        except redis.RedisError as exc:
            log.warning("tenant %s: limits not enforced for %d job(s), Redis is unreachable "
                        "(%s: %s)", tenant_id, jobs, type(exc).__name__, exc)
            return None

    def release(self, reservation: Reservation | None) -> None:
        """Give back what ``admit`` counted for a submit that was not committed after all."""
        if reservation is None or self.counters is None:
            return
        try:
            self.counters.release(reservation)
        except redis.RedisError as exc:  # the rebuild corrects the counters
            log.warning("tenant %s: cannot give back %d uncommitted job(s) yet (%s)",
                        reservation.tenant_id, reservation.jobs, exc)

    def settle(self, tenant_id: str, created_at: datetime, jobs: int, estimated_usd: float,
               cost_usd: float) -> None:
        """Jobs ended (canceled, finished): out of the tenant's counts, their reservation
        replaced by their real cost."""
        if self.counters is None or jobs == 0:
            return
        try:
            self.counters.settle(tenant_id, created_at, jobs, estimated_usd, cost_usd)
        except redis.RedisError as exc:  # the rebuild corrects the counters
            log.warning("tenant %s: cannot count out %d ended job(s) yet (%s)", tenant_id, jobs,
                        exc)

    def submit(self, tenant_id: str, request: JobRequest, *, idempotency_key: str | None = None,
               request_hash: str | None = None, limits: TenantLimits | None = None) -> Job:
        """Queue a job; with an idempotency key, a retried submit returns the original job.
        ``limits``: the tenant's, as ``admit`` takes them."""
        if idempotency_key is not None:
            previous = self._previous(tenant_id, idempotency_key, request_hash)
            if previous is not None:
                return previous
        job = self.build_job(tenant_id, request)
        job.idempotency_key, job.request_hash = idempotency_key, request_hash
        reservation = self.admit(tenant_id, 1, job.estimated_cost_usd, job.created_at, limits)
        try:
            with self.sessions.begin() as session:
                session.add(job)
        except IntegrityError:
            self.release(reservation)
            raced = idempotency_key and self._previous(tenant_id, idempotency_key, request_hash)
            if not raced:
                raise
            return raced
        except BaseException:
            self.release(reservation)
            raise
        metrics.JOBS_SUBMITTED.labels(lane=job.lane).inc()
        try:
            self.index.push([IndexEntry(job.id, job.lane, job.tenant_id, job.priority)])
        except redis.RedisError as exc:  # committed: the job exists, reconcile indexes it
            log.warning("job %s is stored but not yet in the waiting index (Redis: %s: %s); "
                        "reconcile will index it", job.id, type(exc).__name__, exc)
        return job

    def _previous(self, tenant_id: str, key: str, request_hash: str | None) -> Job | None:
        with self.sessions() as session:
            return find_previous(session, Job, tenant_id, key, request_hash or "")

    def get(self, tenant_id: str, job_id: str, *, redis_optional: bool = False) -> JobView:
        """A job and where it stands; ``redis_optional`` (the answer to a submit) gives no
        position instead of raising while Redis is unreachable."""
        if not possible_id(job_id):  # never sent to SQL (a NUL, say): unknown like any other
            raise NotFound("job", shown_id(job_id))
        with self.reads() as session:  # one statement: the job and its attempts
            job = session.execute(
                WITH_ATTEMPTS.where(Job.id == job_id, Job.tenant_id == tenant_id)
            ).unique().scalar_one_or_none()
            if job is None:
                raise NotFound("job", job_id)
        if redis_optional:
            try:
                return self.view(job)
            except redis.RedisError:
                return JobView(job, None, notice=notice_of(job, self.catalogue.shown_name))
        return self.view(job)

    def view(self, job: Job) -> JobView:
        """A job read with its attempts, as its owner sees it: ``progress`` and its notice."""
        return replace(self.progress(job), notice=notice_of(job, self.catalogue.shown_name))

    def progress(self, job: Job) -> JobView:
        """Where a job stands: its position and ETA while it waits (or, handed to a worker, is
        about to start), its model while it runs."""
        if job.status == JobStatus.QUEUED:
            position, dispatched, dispatch_count = self.index.standing(job.id)
            snap = self.snapshot()
            if snap is None:
                return JobView(job, position)
            if position is None:
                if not dispatched:
                    return JobView(job, None)  # parked until a model is back
                start, finish = snap.dispatched_eta(job.id, dispatch_count)
                return JobView(job, None, start, finish)
            start, finish = snap.eta(position, dispatch_count)
            return JobView(job, position, start, finish)
        if job.status == JobStatus.RUNNING:
            running = telemetry.running_job(self.index.redis, job.id)
            snap = self.snapshot()
            if running is None:
                return JobView(job, None)
            remaining = (snap.model_remaining_s(running.model, time.time() - running.attempt_started_s)
                         if snap else None)
            return JobView(job, None, 0.0, remaining, running.model, remaining,
                           waiting_for=running.waiting_for)
        return JobView(job, None)

    def cancel(self, tenant_id: str, job_id: str) -> Job:
        """Cancel a job that has not started; a running or finished job cannot be canceled."""
        if not possible_id(job_id):
            raise NotFound("job", shown_id(job_id))
        with self.sessions.begin() as session:
            changed = session.execute(  # type: ignore[attr-defined]
                update(Job)
                .where(Job.id == job_id, Job.tenant_id == tenant_id,
                       Job.status == JobStatus.QUEUED.value)
                .values(status=JobStatus.CANCELED.value, finished_at=utcnow())
            ).rowcount
            job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))
            if job is None:
                raise NotFound("job", job_id)
        if not changed:
            raise Conflict(f"job {job_id} is {job.status}; only queued jobs can be canceled")
        if job.batch_id is not None:
            # Counted on its batch (``Batch.ended_jobs``) once the cancel is committed: a batch
            # cancel locks the batch row before its jobs, so no transaction takes the two the
            # other way round. A crash in between leaves the count short; the sweep completes it.
            with self.sessions.begin() as session:
                session.execute(update(Batch).where(Batch.id == job.batch_id)
                                .values(ended_jobs=Batch.ended_jobs + 1))
        self.settle(tenant_id, job.created_at, 1, job.estimated_cost_usd, job.cost_usd)
        metrics.JOBS_ENDED.labels(status=JobStatus.CANCELED.value, lane=job.lane).inc()
        self.index.remove(job_id)
        return job


def reconcile(sessions: sessionmaker[Session], index: WaitingIndex, chunk: int = 5000, *,
              since: datetime | None = None) -> int:
    """Index every queued job the database holds but Redis does not (after a flush or a crash);
    with ``since``, only those created after it. Chunks are range reads of
    ``ix_jobs_status_created`` in arrival order, so a pass costs what it reads, not a sort of
    every queued row per chunk."""
    healed = 0
    after: tuple[datetime, str] | None = None
    while True:
        query = select(Job.id, Job.created_at, Job.lane, Job.tenant_id, Job.priority).where(
            Job.status == JobStatus.QUEUED.value)
        if since is not None:
            query = query.where(Job.created_at > since)
        if after is not None:
            query = query.where(tuple_(Job.created_at, Job.id) > after)
        with sessions() as session:
            rows = session.execute(query.order_by(Job.created_at, Job.id).limit(chunk)).all()
        if not rows:
            return healed
        missing = index.missing([(r.id, r.lane, r.priority) for r in rows])
        if missing:
            index.push([IndexEntry(r.id, r.lane, r.tenant_id, r.priority)
                        for r in rows if r.id in missing])
            healed += len(missing)
        # Indexed jobs whose tenant Redis lost (the push records it for the others).
        index.remember_tenants({r.id: r.tenant_id for r in rows if r.id not in missing})
        after = (rows[-1].created_at, rows[-1].id)
