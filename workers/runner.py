"""Running one dispatched job: load, mark running, route, store images, record the outcome.

Redelivery is normal with ``acks_late``: a job already terminal is acknowledged and skipped.
A job that finds no model (all denied or failing) is parked (see ``workers.parking``) until its
deadline, then fails with ``all_models_unavailable`` and the list of what was tried.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import redis
from sqlalchemy import select, update

from providers import call as call_provider
from providers.base import GenerationRequest, GenerationResult
from providers.catalogue import ModelSpec
from providers.errors import ProviderError
from scheduler import telemetry
from scheduler.rollup import job_finished
from storage.blobs import image_key
from storage.models import TERMINAL_STATUSES, Attempt, Job, JobStatus, utcnow
from workers import parking
from workers.admission import Admission, LimitsConfig
from workers.context import WorkerContext
from workers.router import AttemptHooks, AttemptRecord, CompositeHooks, RouteOutcome, candidates, walk

log = logging.getLogger(__name__)

PARKED = "parked"


def run_job(ctx: WorkerContext, job_id: str, dispatch_token: int | None = None) -> str:
    """Run a job to a terminal state or park it; returns the status it ended in (or why not)."""
    if dispatch_token is not None and not _is_current(ctx, job_id, dispatch_token):
        log.info("job %s: stale dispatch %s (the job was requeued since); ignoring it",
                 job_id, dispatch_token)
        return "stale"
    keeps_place = False
    try:
        job = _load(ctx, job_id)
        if job is None:
            return "skipped"
        waiting_ms = _still_parked_ms(job)
        if waiting_ms is not None:  # dispatched early, e.g. re-indexed after a Redis flush
            ctx.index.park(job_id, waiting_ms)
            keeps_place = True
            return PARKED
        if not _mark_running(ctx, job_id):
            return "skipped"
        outcome, admission = _route(ctx, job)
        now_ms = int(time.time() * 1000)
        deadline_ms = parking.epoch_ms(_deadline(ctx, job))
        if outcome.result is None and not outcome.job_failed and now_ms < deadline_ms:
            not_before_ms = parking.not_before_ms(
                outcome, admission.retry_at_ms, admission.limited, now_ms,
                ctx.settings.park_backoff_s, deadline_ms)
            if _park(ctx, job, outcome, not_before_ms):
                keeps_place = True
                return PARKED
        status = _finish(ctx, job, outcome)
        job_finished(ctx.sessions, job_id, ctx.settings.public_base_url)  # webhooks, batch done
        return status
    finally:
        if not keeps_place:  # a parked job keeps its remembered place in the queue
            ctx.index.finished(job_id)


def _is_current(ctx: WorkerContext, job_id: str, token: int) -> bool:
    try:
        return ctx.index.is_current_dispatch(job_id, token)
    except redis.RedisError as exc:  # without Redis we cannot tell: run it (at least once)
        log.warning("cannot check the dispatch of %s: %s", job_id, exc)
        return True


def _route(ctx: WorkerContext, job: Job) -> tuple[RouteOutcome, Admission]:
    request = GenerationRequest(prompt=job.prompt, width=job.width, height=job.height,
                                n=job.n, quality=job.quality)
    models = candidates(ctx.catalogue, job.route, job.requested_model)

    def call(model: ModelSpec, req: GenerationRequest) -> GenerationResult:
        return call_provider(ctx.http, model, req)

    admission = Admission(ctx.breaker, ctx.limits, job.id, LimitsConfig(
        ctx.settings.vendor_slot_wait_s, ctx.settings.vendor_slot_margin_s,
        ctx.settings.vendor_rate_window_s))
    telemetry_hooks = TelemetryHooks(ctx, job.id, tuple(m.id for m in models))
    outcome = walk(models, request, call, CompositeHooks([admission, telemetry_hooks]))
    telemetry_hooks.walked()
    return outcome, admission


class TelemetryHooks(AttemptHooks):
    """Tells the scheduler which model a running job is trying, how long attempts and the whole
    walk take."""

    def __init__(self, ctx: WorkerContext, job_id: str, route: tuple[str, ...]) -> None:
        self.ctx, self.job_id, self.route = ctx, job_id, route
        self.job_started_s = time.time()
        self.model_index, self.attempt_started_s = 0, self.job_started_s

    def before(self, index: int, model: ModelSpec) -> str | None:
        self.model_index, self.attempt_started_s = index, time.time()
        try:
            telemetry.mark_attempt(self.ctx.redis, self.job_id, self.route, index,
                                   self.job_started_s)
        except redis.RedisError as exc:  # ETAs get worse; the job goes on
            log.warning("cannot record running job %s: %s", self.job_id, exc)
        return None

    def walked(self) -> None:
        """The walk is over: its length (calls and admission waits) tells the slot overhead."""
        try:
            telemetry.record_walk(self.ctx.redis, self.job_id, self.route, self.model_index,
                                  self.job_started_s, self.attempt_started_s)
        except redis.RedisError as exc:
            log.warning("cannot record the route walk of %s: %s", self.job_id, exc)

    def after(self, model: ModelSpec, outcome: str, latency_s: float,
              error: ProviderError | None) -> None:
        if error is not None and error.error_class.is_job_level:
            return  # says nothing about the model's speed
        try:
            telemetry.record_latency(self.ctx.redis, model.id, error is None, latency_s)
        except redis.RedisError as exc:
            log.warning("cannot record latency of %s: %s", model.id, exc)


def _load(ctx: WorkerContext, job_id: str) -> Job | None:
    with ctx.sessions() as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
    if job is None:
        log.warning("job %s does not exist; dropping its task", job_id)
    return job


def _still_parked_ms(job: Job) -> int | None:
    """The job's ``not_before`` if it is queued and that moment is still ahead."""
    if job.status != JobStatus.QUEUED.value or job.not_before is None:
        return None
    not_before_ms = parking.epoch_ms(job.not_before)
    return not_before_ms if not_before_ms > time.time() * 1000 else None


def _mark_running(ctx: WorkerContext, job_id: str) -> bool:
    with ctx.sessions.begin() as session:
        changed = session.execute(  # type: ignore[attr-defined]
            update(Job)
            .where(Job.id == job_id, Job.status.in_([JobStatus.QUEUED.value,
                                                     JobStatus.RUNNING.value]))
            .values(status=JobStatus.RUNNING.value, started_at=utcnow())
        ).rowcount
    if not changed:
        log.info("job %s is already terminal; skipping", job_id)
    return bool(changed)


def _deadline(ctx: WorkerContext, job: Job) -> datetime:
    if job.deadline_at is not None:
        return job.deadline_at
    created = job.created_at if job.created_at.tzinfo else job.created_at.replace(tzinfo=UTC)
    return created + timedelta(seconds=ctx.settings.job_deadline_s)


def _attempt_rows(job_id: str, attempts: list[AttemptRecord]) -> list[Attempt]:
    return [Attempt(job_id=job_id, model=a.model,
                    started_at=datetime.fromtimestamp(a.started_at_s, UTC),
                    latency_ms=a.latency_ms, outcome=a.outcome, http_status=a.http_status,
                    vendor_request_id=a.request_id, cost_usd=a.cost_usd, message=a.message)
            for a in attempts]


def _park(ctx: WorkerContext, job: Job, outcome: RouteOutcome, not_before_ms: int) -> bool:
    """Database first (the source of truth), then the index; False if the job was canceled or
    finished meanwhile."""
    with ctx.sessions.begin() as session:
        session.add_all(_attempt_rows(job.id, outcome.attempts))
        parked = parking.park_in_database(session, job.id, not_before_ms, len(outcome.attempts))
    if parked:
        ctx.index.park(job.id, not_before_ms)
        log.info("job %s parked until %s: no model available (%s)", job.id,
                 parking.from_epoch_ms(not_before_ms).isoformat(), _tried(outcome))
    return parked


def _tried(outcome: RouteOutcome) -> str:
    return ", ".join(f"{a.model}: {a.message or a.outcome}" if a.outcome != "success"
                     else f"{a.model}: success" for a in outcome.attempts)


def _finish(ctx: WorkerContext, job: Job, outcome: RouteOutcome) -> str:
    images: list[dict[str, object]] = []
    if outcome.result is not None:
        for k, image in enumerate(outcome.result.images):
            key = image_key(job.id, k, image.content_type)
            ctx.blobs.put(key, image.data)
            images.append({"key": key, "content_type": image.content_type,
                           "width": image.width, "height": image.height})
    values: dict[str, object] = {"finished_at": utcnow(),
                                 "attempts_count": Job.attempts_count + len(outcome.attempts)}
    if outcome.result is not None:
        values |= {
            "status": JobStatus.SUCCEEDED.value, "served_by": outcome.served_by,
            "degraded": outcome.served_by != job.requested_model, "images": images,
            "cost_usd": outcome.result.cost_usd,
        }
    elif outcome.job_failed:
        error = outcome.error
        assert error is not None
        values |= {"status": JobStatus.FAILED.value, "error_type": error.error_class.value,
                   "error_message": error.message, "error_vendor_status": error.vendor_status}
    else:
        last = outcome.last_failure
        values |= {"status": JobStatus.FAILED.value, "error_type": "all_models_unavailable",
                   "error_message": f"no model on the route served the job before its deadline "
                                    f"(tried {_tried(outcome)})"
                                    + (f"; last error: {last.message}" if last else ""),
                   "error_vendor_status": last.vendor_status if last else None}
    with ctx.sessions.begin() as session:
        session.add_all(_attempt_rows(job.id, outcome.attempts))
        session.execute(
            update(Job).where(Job.id == job.id, Job.status.not_in(TERMINAL_STATUSES))
            .values(**values)
        )
    return str(values["status"])


__all__ = ["run_job"]
