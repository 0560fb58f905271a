"""The OpenAI-compatible images gateway: ``POST /v1/images/generations`` queues one
interactive-lane job (the same submit as ``POST /v1/jobs``: tenant limits, idempotency, the walk
rule) and answers once it has ended, with its images as OpenAI's SDKs expect them; failover, the
queue and the breaker stay behind it. ``GET /v1/images/content/{job_id}/{index}`` serves the
images of ``response_format: url``, to the tenant's key or a signed, expiring link.

The call waits up to ``gateway_wait_s`` (or the ``x-imagequeue-wait`` it sends), reading its job
at each snapshot and every ``gateway_poll_s``. A client that goes away before the job started has
it canceled; so does a wait that runs out, or a job parked (every model it may use unavailable)
beyond the wait, both answered 503 with Retry-After. With an ``Idempotency-Key`` the job is kept
instead: the same request with the same key waits for it again.
"""

from __future__ import annotations

import base64
import math
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from api import deps
from api.bodies import JOB_BODY_MAX_BYTES, parse_json_object, read_capped
from api.deps import ServicesDep, TenantDep
from api.gateway import (
    FALLBACK_HEADER,
    WAIT_HEADER,
    dimensions,
    parse_fallback,
    parse_wait,
    resolve,
    validate_request,
)
from api.image_links import ImageLinks
from api.images import REDIRECT_DOC, image_response
from api.openai_errors import GatewayError, OpenAIRoute, documented
from api.openai_schemas import GeneratedImage, ImageGenerationRequest, ImagesResponse
from api.services import Services
from api.snapshots import SnapshotListener
from providers.errors import ErrorClass
from scheduler.errors import Conflict, NotFound
from scheduler.idempotency import check_key, hash_json
from scheduler.ids import possible_id, shown_id
from scheduler.job_spec import JobLimits
from scheduler.notices import notice_of
from scheduler.queue.jobs import JobRequest
from storage.blobs import BlobNotFound
from storage.models import Job, JobStatus, utcnow

router = APIRouter(tags=["openai"], route_class=OpenAIRoute)
JOB_HEADER = "x-imagequeue-job-id"
SERVED_BY_HEADER = "x-imagequeue-served-by"
DEGRADED_HEADER = "x-imagequeue-degraded"
NOTICE_HEADER = "x-imagequeue-notice"
NO_RETRY = {"x-should-retry": "false"}  # the OpenAI SDKs do not retry such an answer
FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/webp": "webp", "image/svg+xml": "svg"}
SDK_RETRY_CAP_S = 60  # the SDKs honour a Retry-After up to this; past it retrying is pointless
GENERATE_OPENAPI: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": ImageGenerationRequest.model_json_schema()}}}}
HEADERS_OF_200 = {
    JOB_HEADER: {"description": "The job behind the answer (`GET /v1/jobs/{id}`).",
                 "schema": {"type": "string"}},
    SERVED_BY_HEADER: {"description": "The model that made the images.",
                       "schema": {"type": "string"}},
    DEGRADED_HEADER: {"description": "`true` when a fallback made them, not the model asked for "
                                     "(or the route's first).", "schema": {"type": "string"}},
    NOTICE_HEADER: {"description": "When degraded: the job's notice, one sentence for the end "
                                   "user (docs/api.md).", "schema": {"type": "string"}},
}
_key_or_link = HTTPBearer(auto_error=False, description="A tenant API key, unless the link is "
                                                        "signed")


def links_of(svc: Services) -> ImageLinks:
    return svc.image_links


@router.post("/v1/images/generations", response_model=ImagesResponse,
             response_model_exclude_none=True, openapi_extra=GENERATE_OPENAPI,
             responses={200: {"headers": HEADERS_OF_200},
                        **documented(400, 401, 404, 409, 413, 429, 503)})
async def generate_images(
    request: Request, tenant: TenantDep, svc: ServicesDep,
    fallback: Annotated[str | None, Header(
        alias=FALLBACK_HEADER, description="`none`: the named model only (or a route's first "
                                           "model); `default` (when omitted): fall back along "
                                           "the default route.")] = None,
    wait: Annotated[str | None, Header(
        alias=WAIT_HEADER, description="Seconds to wait at most (capped at "
                                       "IMGQ_GATEWAY_WAIT_S).")] = None,
    idempotency_key: Annotated[str | None, Header(
        description="Keeps the job past a disconnect or the wait; a retry with the same key "
                    "and request waits for the same job.")] = None,
) -> Response:
    """OpenAI's `images.generate`: queue one job and answer with its images once it ends.

    `model`: a catalogue model id or its vendor's id (that model first, then the default
    route's others), a route name, or `auto`. Errors are in OpenAI's shape.
    """
    settings = svc.settings
    allow_fallback = parse_fallback(fallback)
    wait_s = parse_wait(wait, settings.gateway_wait_s)
    key = None if idempotency_key is None else check_key(idempotency_key)
    body = parse_json_object(await read_capped(request, JOB_BODY_MAX_BYTES), "the request")
    params = validate_request(body, JobLimits.from_settings(settings))
    target = resolve(svc.catalogue, params.model, allow_fallback)
    width, height = dimensions(params)
    user = params.safety_identifier or params.user
    job_request = JobRequest(prompt=params.prompt, width=width, height=height, n=params.n or 1,
                             quality=params.quality, metadata={"user": user} if user else {},
                             **target.job_fields())
    request_hash = hash_json({"images.generations": params.model_dump(mode="json"),
                              "target": target.job_fields()})
    job = await run_in_threadpool(svc.queue.submit, tenant.id, job_request,
                                  idempotency_key=key, request_hash=request_hash)
    ended = await wait_for(request, svc, tenant.id, job.id, wait_s, keep=key is not None)
    if ended is None:  # the client went away: nobody reads an answer
        return Response(status_code=499)
    return await run_in_threadpool(answer, svc, ended, params)


def read_job(svc: Services, job_id: str) -> Job:
    with svc.sessions() as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        if job is None:  # pragma: no cover - just submitted; jobs are never deleted
            raise NotFound("job", job_id)
        _ = job.attempts  # load while the session is open
        return job


async def wait_for(request: Request, svc: Services, tenant_id: str, job_id: str, wait_s: float,
                   *, keep: bool) -> Job | None:
    """The job once it has ended; None if the client went away first (the job canceled unless
    ``keep`` or started). A wait that runs out, or a park beyond it, raises the 503."""
    snapshots: SnapshotListener = request.app.state.snapshots
    deadline = time.monotonic() + wait_s
    while True:
        wake = snapshots.next_snapshot()
        job = await run_in_threadpool(read_job, svc, job_id)
        if JobStatus(job.status).is_terminal:
            return job
        if await request.is_disconnected():
            if not keep:
                await run_in_threadpool(cancel_quietly, svc, tenant_id, job_id)
            return None
        left_s = deadline - time.monotonic()
        parked_s = ((job.not_before - utcnow()).total_seconds()
                    if job.status == JobStatus.QUEUED and job.not_before is not None else 0.0)
        if parked_s > max(left_s, 0.0) or left_s <= 0:
            canceled = not keep and await run_in_threadpool(cancel_quietly, svc, tenant_id, job_id)
            if not keep and not canceled:  # it started meanwhile, or has just ended
                job = await run_in_threadpool(read_job, svc, job_id)
                if JobStatus(job.status).is_terminal:
                    return job
            raise not_ready(svc, job, wait_s, parked_s, canceled)
        await snapshots.wait(wake, min(svc.settings.gateway_poll_s, left_s))


def cancel_quietly(svc: Services, tenant_id: str, job_id: str) -> bool:
    """Cancel the job if it has not started; False if it has (it then runs to its end)."""
    try:
        svc.queue.cancel(tenant_id, job_id)
    except Conflict:
        return False
    return True


def tried(job: Job) -> str:
    attempts = [f"{a.model}: {a.message or a.outcome}" for a in job.attempts]
    return f" Tried: {'; '.join(attempts)}." if attempts else ""


def not_ready(svc: Services, job: Job, wait_s: float, parked_s: float,
              canceled: bool) -> GatewayError:
    """The 503 of a job that did not end within the wait."""
    headers = {JOB_HEADER: job.id}
    after = (f" The job {job.id} was canceled." if canceled else
             f" The job {job.id} is kept: send the same request with the same Idempotency-Key "
             f"to wait for it again, or read it with GET /v1/jobs/{job.id}.")
    if job.status == JobStatus.RUNNING and not canceled:
        after = (f" The job {job.id} has started and will finish: read it with "
                 f"GET /v1/jobs/{job.id}.")
        headers |= NO_RETRY  # another call would pay for the same image again
    if parked_s > 0:
        retry_s = max(1, math.ceil(parked_s))
        message = (f"Every model this request may use is unavailable for the next {retry_s} s, "
                   f"longer than this call waits ({wait_s:g} s).{after}{tried(job)}")
        code = "all_models_unavailable"
    else:
        retry_s = svc.settings.retry_after_s
        message = (f"The image was not ready within {wait_s:g} s (the job is {job.status})."
                   f"{after}{tried(job)}")
        code = "timeout"
    headers["Retry-After"] = str(retry_s)
    if retry_s > SDK_RETRY_CAP_S:
        headers |= NO_RETRY
    return GatewayError(503, message, code=code, headers=headers)


def failure(svc: Services, job: Job) -> GatewayError:
    """The error answer of a job that ended without images."""
    headers = {JOB_HEADER: job.id}
    if job.status == JobStatus.CANCELED:
        return GatewayError(409, f"The job {job.id} was canceled before it made an image.",
                            code="job_canceled", headers=headers)
    message = job.error_message or "the job failed"
    if job.error_type == ErrorClass.CONTENT_POLICY:
        return GatewayError(400, f"Your request was rejected by the model's content policy: "
                                 f"{message}", code="content_policy_violation", param="prompt",
                            headers=headers)
    if job.error_type == ErrorClass.INVALID_REQUEST:
        return GatewayError(400, message, code="invalid_request", headers=headers)
    headers["Retry-After"] = str(svc.settings.retry_after_s)
    return GatewayError(503, message, code=job.error_type or "failed", headers=headers)


def answer(svc: Services, job: Job, params: ImageGenerationRequest) -> Response:
    if job.status != JobStatus.SUCCEEDED:
        raise failure(svc, job)
    images = list(job.images or [])
    data = []
    for k, image in enumerate(images):
        if params.response_format == "url":
            data.append(GeneratedImage(url=links_of(svc).url(svc.settings.public_base_url,
                                                             job.id, k)))
            continue
        try:
            raw = svc.blobs.get(image["key"])
        except BlobNotFound:  # pragma: no cover - a result is stored before the job succeeds
            raise GatewayError(503, f"The image {k} of job {job.id} cannot be read.",
                               code="image_missing", headers={JOB_HEADER: job.id}) from None
        data.append(GeneratedImage(b64_json=base64.b64encode(raw).decode("ascii")))
    first = images[0] if images else {}
    body = ImagesResponse(
        created=int(job.created_at.timestamp()), data=data,
        size=f"{first['width']}x{first['height']}" if first else None, quality=params.quality,
        output_format=FORMATS.get(first.get("content_type", "")) if first else None)
    headers = {JOB_HEADER: job.id, SERVED_BY_HEADER: job.served_by or "",
               DEGRADED_HEADER: "true" if job.degraded else "false", "Cache-Control": "no-store"}
    notice = notice_of(job, svc.catalogue.shown_name)
    if notice is not None:  # a header holds latin-1 only
        headers[NOTICE_HEADER] = notice.encode("latin-1", "replace").decode("latin-1")
    return JSONResponse(body.model_dump(mode="json", exclude_none=True), headers=headers)


@router.get("/v1/images/content/{job_id}/{index}", response_class=Response, responses={
    200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}, "image/svg+xml": {}},
          "description": "The image bytes."},
    **REDIRECT_DOC, **documented(400, 401, 403, 404, 429, 503)})
def image_content(
    job_id: str, index: int, request: Request, svc: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_key_or_link)],
    expires: Annotated[int | None, Query(description="Unix time the signed link expires.")] = None,
    signature: Annotated[str | None, Query(max_length=200,
                                           description="The link's signature.")] = None,
) -> Response:
    """One image of a gateway answer (`response_format: url`): with the tenant's API key, or
    with the link's `expires` and `signature` and no key until it expires (403 once it has, or
    if the link was altered)."""
    if credentials is not None:
        owner = deps.tenant(request, credentials)
        job = svc.queue.get(owner.id, job_id).job
    elif expires is not None or signature is not None:
        if expires is None or signature is None:
            raise GatewayError(403, "This image link is incomplete: it needs both `expires` "
                                    "and `signature`.", code="invalid_signature")
        links_of(svc).check(job_id, index, expires, signature)
        if not possible_id(job_id):
            raise NotFound("job", shown_id(job_id))
        with svc.sessions() as session:
            found = session.scalar(select(Job).where(Job.id == job_id))
        if found is None:
            raise NotFound("job", job_id)
        job = found
    else:
        raise GatewayError(401, "Missing API key: send `Authorization: Bearer <key>`, or open "
                                "the signed link the images answer gave.", code="missing_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
    cache = "private, max-age=86400" if credentials is not None else "private, no-store"
    return image_response(svc, job, index, cache)
