"""Running one dispatched job: load, mark running, route, store images, record the outcome.

Redelivery is normal with ``acks_late``: a job already terminal is acknowledged and skipped.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

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
from workers.context import WorkerContext
from workers.router import AttemptHooks, RouteOutcome, candidates, walk

log = logging.getLogger(__name__)


def run_job(ctx: WorkerContext, job_id: str) -> str:
    """Run a job to a terminal state; returns the status it ended in (or why it was skipped)."""
    try:
        job = _start(ctx, job_id)
        if job is None:
            return "skipped"
        request = GenerationRequest(prompt=job.prompt, width=job.width, height=job.height,
                                    n=job.n, quality=job.quality)
        models = candidates(ctx.catalogue, job.route, job.requested_model)

        def call(model: ModelSpec, req: GenerationRequest) -> GenerationResult:
            return call_provider(ctx.http, model, req)

        hooks = TelemetryHooks(ctx, job_id, tuple(m.id for m in models))
        outcome = walk(models, request, call, hooks)
        status = _finish(ctx, job, outcome)
        job_finished(ctx.sessions, job_id, ctx.settings.public_base_url)  # webhooks, batch done
        return status
    finally:
        ctx.index.finished(job_id)


class TelemetryHooks(AttemptHooks):
    """Tells the scheduler which model a running job is trying and how long attempts take."""

    def __init__(self, ctx: WorkerContext, job_id: str, route: tuple[str, ...]) -> None:
        self.ctx, self.job_id, self.route = ctx, job_id, route
        self.job_started_s = time.time()

    def before(self, index: int, model: ModelSpec) -> str | None:
        try:
            telemetry.mark_attempt(self.ctx.redis, self.job_id, self.route, index,
                                   self.job_started_s)
        except redis.RedisError as exc:  # ETAs get worse; the job goes on
            log.warning("cannot record running job %s: %s", self.job_id, exc)
        return None

    def after(self, model: ModelSpec, outcome: str, latency_s: float,
              error: ProviderError | None) -> None:
        if error is not None and error.error_class.is_job_level:
            return  # says nothing about the model's speed
        try:
            telemetry.record_latency(self.ctx.redis, model.id, error is None, latency_s)
        except redis.RedisError as exc:
            log.warning("cannot record latency of %s: %s", model.id, exc)


def _start(ctx: WorkerContext, job_id: str) -> Job | None:
    with ctx.sessions.begin() as session:
        changed = session.execute(  # type: ignore[attr-defined]
            update(Job)
            .where(Job.id == job_id, Job.status.in_([JobStatus.QUEUED.value,
                                                     JobStatus.RUNNING.value]))
            .values(status=JobStatus.RUNNING.value, started_at=utcnow())
        ).rowcount
        job = session.scalar(select(Job).where(Job.id == job_id))
    if job is None:
        log.warning("job %s does not exist; dropping its task", job_id)
        return None
    if not changed:
        log.info("job %s is already %s; skipping", job_id, job.status)
        return None
    return job


def _finish(ctx: WorkerContext, job: Job, outcome: RouteOutcome) -> str:
    images: list[dict[str, object]] = []
    if outcome.result is not None:
        for k, image in enumerate(outcome.result.images):
            key = image_key(job.id, k, image.content_type)
            ctx.blobs.put(key, image.data)
            images.append({"key": key, "content_type": image.content_type,
                           "width": image.width, "height": image.height})
    values: dict[str, object] = {"finished_at": utcnow(), "attempts_count": len(outcome.attempts)}
    if outcome.result is not None:
        values |= {
            "status": JobStatus.SUCCEEDED.value, "served_by": outcome.served_by,
            "degraded": outcome.served_by != job.requested_model, "images": images,
            "cost_usd": outcome.result.cost_usd,
        }
    else:
        error = outcome.error
        assert error is not None
        tried = ", ".join(f"{a.model}: {a.outcome}" for a in outcome.attempts)
        if error.error_class.is_job_level:
            values |= {"error_type": error.error_class.value, "error_message": error.message,
                       "error_vendor_status": error.vendor_status}
        else:
            values |= {"error_type": "all_models_unavailable",
                       "error_message": f"every model on the route failed ({tried}); "
                                        f"last error: {error.message}",
                       "error_vendor_status": error.vendor_status}
        values["status"] = JobStatus.FAILED.value
    with ctx.sessions.begin() as session:
        session.add_all(
            Attempt(job_id=job.id, model=a.model,
                    started_at=datetime.fromtimestamp(a.started_at_s, UTC),
                    latency_ms=a.latency_ms, outcome=a.outcome, http_status=a.http_status,
                    vendor_request_id=a.request_id, cost_usd=a.cost_usd, message=a.message)
            for a in outcome.attempts
        )
        session.execute(
            update(Job).where(Job.id == job.id, Job.status.not_in(TERMINAL_STATUSES))
            .values(**values)
        )
    return str(values["status"])


__all__ = ["run_job"]
