"""Live progress over Server-Sent Events (the status stream is ``api/routes/status.py``).

A stream reads its job or batch again each time the scheduler publishes a snapshot (once a
second: positions and ETAs move with it, and a job that ended is seen then), or after
``stream_fallback_poll_s`` without one (``api/snapshots.py``), and sends what changed. The job
streams of a process read their jobs' rows together, once per snapshot (``api.job_feed``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from api import errors
from api.deps import ServicesDep, TenantDep
from api.job_feed import JobFeed, load_jobs
from api.routes.batches import batch_out, batches_of
from api.routes.jobs import ERRORS
from api.services import Services
from api.snapshots import SnapshotListener
from scheduler.errors import NotFound
from scheduler.ids import possible_id, shown_id
from scheduler.queue.jobs import JobView
from storage.models import Job, JobStatus

router = APIRouter(tags=["events"])


def progress_event(view: JobView) -> dict[str, Any]:
    job = view.job
    return {"id": job.id, "status": job.status, "queue_position": view.queue_position,
            "eta_start_seconds": view.eta_start_s, "eta_finish_seconds": view.eta_finish_s,
            "current_model": view.current_model, "waiting_for": view.waiting_for,
            "served_by": job.served_by,
            "degraded": job.degraded, "notice": view.notice,
            "error": {"type": job.error_type, "message": job.error_message} if job.error_type else None}


def error_event(error: BaseException, svc: Services, where: str) -> dict[str, Any]:
    """The last event of a stream cut short: ``event: error`` with the API's error body
    (``unavailable`` while the database or Redis is unreachable); the client reconnects later."""
    body = errors.stream_error(error, svc.settings.retry_after_s, where)
    return {"event": "error", "data": json.dumps(body),
            "retry": svc.settings.retry_after_s * 1000}


class StreamCounter:
    """Open event streams in this API process (a disconnected client must not leak one)."""

    def __init__(self) -> None:
        self.open = 0


def job_feed_of(request: Request) -> JobFeed:
    """The process's shared job feed, made on first use."""
    feed: JobFeed | None = getattr(request.app.state, "job_feed", None)
    if feed is None:
        svc: Services = request.app.state.services
        feed = JobFeed(lambda ids: load_jobs(svc.queue.sessions, ids))
        request.app.state.job_feed = feed
    return feed


async def owned_job(feed: JobFeed, tenant_id: str, job_id: str, heard: int,
                    max_age_s: float) -> Job:
    """The tenant's job from the feed; unknown, or another tenant's, is not found."""
    job = await feed.job(job_id, heard, max_age_s)
    if job is None or job.tenant_id != tenant_id:
        raise NotFound("job", job_id)
    return job


@router.get("/v1/jobs/{job_id}/events", responses=ERRORS,
            response_description="text/event-stream of `job` events; closes when the job ends")
async def job_events(job_id: str, request: Request, tenant: TenantDep,
                     svc: ServicesDep) -> EventSourceResponse:
    """Status, queue position and ETA of a job, pushed as they change, until the job ends."""
    if not possible_id(job_id):  # never sent to SQL (a NUL, say): unknown like any other
        raise NotFound("job", shown_id(job_id))
    feed = job_feed_of(request)
    counter: StreamCounter = request.app.state.streams
    snapshots: SnapshotListener = request.app.state.snapshots
    max_age_s = svc.settings.stream_fallback_poll_s / 2
    wake = snapshots.next_snapshot()
    job = await owned_job(feed, tenant.id, job_id, snapshots.heard, max_age_s)
    first: JobView | None = await run_in_threadpool(svc.queue.view, job)  # 404, 503 before

    async def stream() -> AsyncIterator[dict[str, Any]]:
        nonlocal first, wake
        counter.open += 1
        try:
            with feed.watching(job_id):
                last: dict[str, Any] | None = None
                while True:
                    view, first = first, None
                    try:
                        if view is None:
                            job = await owned_job(feed, tenant.id, job_id, snapshots.heard,
                                                  max_age_s)
                            view = await run_in_threadpool(svc.queue.view, job)
                    except Exception as exc:  # noqa: BLE001 - the stream ends with an error event
                        yield error_event(exc, svc, f"GET /v1/jobs/{job_id}/events")
                        return
                    event = progress_event(view)
                    if event != last:
                        yield {"event": "job", "data": json.dumps(event)}
                        last = event
                    if JobStatus(view.job.status).is_terminal:
                        return
                    await snapshots.wait(wake, svc.settings.stream_fallback_poll_s)
                    wake = snapshots.next_snapshot()
        finally:
            counter.open -= 1

    return EventSourceResponse(stream(), ping=15)


@router.get("/v1/batches/{batch_id}/events", responses=ERRORS,
            response_description="text/event-stream of `batch` events; closes when the batch ends")
async def batch_events(batch_id: str, request: Request, tenant: TenantDep,
                       svc: ServicesDep) -> EventSourceResponse:
    """Status, request counts and the ETA of the batch's last job, pushed as they change."""
    batches = batches_of(svc)
    await run_in_threadpool(batches.get, tenant.id, batch_id)  # 404 before the stream starts
    counter: StreamCounter = request.app.state.streams
    snapshots: SnapshotListener = request.app.state.snapshots

    async def stream() -> AsyncIterator[dict[str, Any]]:
        counter.open += 1
        try:
            last: dict[str, Any] | None = None
            while True:
                wake = snapshots.next_snapshot()
                try:
                    view = await run_in_threadpool(batches.get, tenant.id, batch_id)
                except Exception as exc:  # noqa: BLE001 - the stream ends with an error event
                    yield error_event(exc, svc, f"GET /v1/batches/{batch_id}/events")
                    return
                out = batch_out(view, svc.settings.public_base_url)
                event = {"id": out.id, "status": out.status,
                         "request_counts": out.request_counts.model_dump(),
                         "served_by": out.served_by, "degraded": out.degraded,
                         "notice": out.notice, "eta_last_job_s": out.eta_last_job_s}
                if event != last:
                    yield {"event": "batch", "data": json.dumps(event)}
                    last = event
                if out.status.is_finished:
                    return
                await snapshots.wait(wake, svc.settings.stream_fallback_poll_s)
        finally:
            counter.open -= 1

    return EventSourceResponse(stream(), ping=15)
