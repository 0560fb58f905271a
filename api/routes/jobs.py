"""/v1/jobs: create, read, cancel a job and fetch its images."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from starlette.concurrency import run_in_threadpool

from api import deps
from api.bodies import JOB_BODY_OPENAPI, JobBody
from api.deps import ServicesDep, TenantDep
from api.images import REDIRECT_DOC, image_response
from api.schemas import ApiErrorResponse, AttemptOut, ErrorBody, ImageOut, JobOut
from scheduler.idempotency import check_key, hash_json
from scheduler.queue.jobs import JobRequest, JobView
from scheduler.tenants.quotas import TenantLimits
from scheduler.webhooks.outbox import WebhookPolicy, vet_url
from storage.models import JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ApiErrorResponse, "description": "Missing or invalid API key"},
    503: {"model": ApiErrorResponse, "description": "The database or Redis is unreachable "
                                                    "(type `unavailable`); retry after the "
                                                    "`Retry-After` header's seconds"},
    404: {"model": ApiErrorResponse, "description": "No such job for this tenant"},
}


def job_out(view: JobView, base_url: str) -> JobOut:
    job = view.job
    error = (ErrorBody(type=job.error_type, message=job.error_message or "",
                       vendor_status=job.error_vendor_status) if job.error_type else None)
    return JobOut(
        id=job.id, status=JobStatus(job.status), prompt=job.prompt, size=f"{job.width}x{job.height}",
        n=job.n, route=job.route, requested_model=job.requested_model, served_by=job.served_by,
        degraded=job.degraded, notice=view.notice, queue_position=view.queue_position,
        eta_start_seconds=view.eta_start_s, eta_finish_seconds=view.eta_finish_s,
        current_model=view.current_model, expected_remaining_seconds=view.expected_remaining_s,
        waiting_for=view.waiting_for, priority=job.priority,
        lane=job.lane, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at, cost_usd=job.cost_usd, error=error,
        images=[ImageOut(index=k, url=f"{base_url}/v1/jobs/{job.id}/images/{k}",
                         content_type=i["content_type"], width=i["width"], height=i["height"])
                for k, i in enumerate(job.images or [])],
        attempts=[AttemptOut(model=a.model, started_at=a.started_at, latency_ms=a.latency_ms,
                             outcome=a.outcome, http_status=a.http_status,
                             vendor_request_id=a.vendor_request_id, cost_usd=a.cost_usd,
                             message=a.message, worker=a.worker) for a in job.attempts],
        metadata=job.metadata_ or {},
    )


@router.post("", status_code=202, response_model=JobOut, openapi_extra=JOB_BODY_OPENAPI,
             responses={**ERRORS, 422: {"model": ApiErrorResponse, "description": "Invalid job"},
                        400: {"model": ApiErrorResponse, "description": "Not JSON"},
                        413: {"model": ApiErrorResponse, "description": "Body over 1 MiB"},
                        409: {"model": ApiErrorResponse,
                              "description": "Idempotency-Key reused with another body"},
                        415: {"model": ApiErrorResponse, "description": "Not application/json"}})
def create_job(body: JobBody, tenant: TenantDep, svc: ServicesDep,
               idempotency_key: Annotated[str | None, Header()] = None) -> JobOut:
    """Queue one image job. Returns at once with the job and its place in the queue.

    A retry with the same `Idempotency-Key` and body returns the same job; another body is a 409.
    A 503 means nothing was stored; a 202 means the job exists and will run (while Redis is
    unreachable its `queue_position` is null until it is indexed again).
    """
    key = None if idempotency_key is None else check_key(idempotency_key)  # "" is refused
    width, height = body.dimensions  # the body is valid (api/bodies.py, scheduler/job_spec.py)
    if body.webhook_url is not None:
        vet_url(body.webhook_url, WebhookPolicy.from_settings(svc.settings))
    job = svc.queue.submit(tenant.id, JobRequest(
        prompt=body.prompt, width=width, height=height, n=body.n, quality=body.quality,
        model=body.model, route=body.route, priority=body.priority, metadata=body.metadata,
        webhook_url=body.webhook_url),
        idempotency_key=key, request_hash=hash_json(body.model_dump(mode="json")),
        limits=TenantLimits.resolve(tenant, svc.limit_defaults))  # the tenant as authenticated
    # Committed means accepted: with Redis down the job has no position yet (reconcile indexes it).
    return job_out(svc.queue.get(tenant.id, job.id, redis_optional=True),
                   svc.settings.public_base_url)


@router.get("/{job_id}", response_model=JobOut, responses=ERRORS)
async def get_job(job_id: str, request: Request, svc: ServicesDep,
                  credentials: Annotated[HTTPAuthorizationCredentials | None,
                                         Depends(deps.bearer)]) -> JobOut:
    """A job's status, queue position, the model that served it and every attempt."""

    def read() -> JobOut:
        tenant = deps.tenant(request, credentials)
        return job_out(svc.queue.get(tenant.id, job_id), svc.settings.public_base_url)

    # The poll's blocking reads in one worker thread: a sync dependency and a sync endpoint
    # would take a thread each, and the response's validation a third.
    return await run_in_threadpool(read)


@router.delete("/{job_id}", response_model=JobOut,
               responses={**ERRORS, 409: {"model": ApiErrorResponse,
                                          "description": "The job has already started"}})
def cancel_job(job_id: str, tenant: TenantDep, svc: ServicesDep) -> JobOut:
    """Cancel a job that is still queued; it will never reach a provider."""
    svc.queue.cancel(tenant.id, job_id)
    return job_out(svc.queue.get(tenant.id, job_id), svc.settings.public_base_url)


@router.get("/{job_id}/images/{index}", response_class=Response, responses={
    **ERRORS, **REDIRECT_DOC, 200: {"content": {"image/png": {}, "image/jpeg": {}, "image/svg+xml": {}}}})
def get_image(job_id: str, index: int, tenant: TenantDep, svc: ServicesDep) -> Response:
    """The bytes of one image of a finished job, with its content type (or a 307 to them)."""
    job = svc.queue.get(tenant.id, job_id).job
    return image_response(svc, job, index, "private, max-age=86400")
