"""/v1/batches: upload JSONL, follow progress, download results (JSONL and zip), cancel.
/v1/webhooks: the tenant's signing secret and the recorded delivery attempts."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.batch_schemas import (
    BatchListOut,
    BatchOut,
    DeliveryListOut,
    RejectedLineOut,
    RequestCountsOut,
    WebhookAttemptOut,
    WebhookDeliveryOut,
    WebhookSecretOut,
)
from api.deps import ServicesDep, TenantDep
from api.errors import error_response, stream_error
from api.schemas import ApiErrorResponse
from api.services import Services
from api.uploads import BodyTooLarge, spool_upload
from api.zipstream import zip_stream
from scheduler.batches.jsonl import BatchLimits, LineError, TooManyLines
from scheduler.batches.service import Batches, BatchOptions, BatchView, InvalidBatch, ResultRow
from scheduler.errors import InvalidJob
from scheduler.idempotency import check_key
from scheduler.ids import id_problem
from scheduler.webhooks import outbox
from storage.blobs import EXTENSIONS, BlobNotFound
from storage.models import BatchStatus, WebhookDelivery

router = APIRouter(tags=["batches"])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ApiErrorResponse, "description": "Missing or invalid API key"},
    503: {"model": ApiErrorResponse, "description": "The database or Redis is unreachable "
                                                    "(type `unavailable`); retry after the "
                                                    "`Retry-After` header's seconds"},
    404: {"model": ApiErrorResponse, "description": "No such batch for this tenant"},
}


def query_id(name: str, value: str | None) -> None:
    """A query parameter that filters by id is a 422 naming it if it could never be an id
    (checked before it reaches SQL); a path id is a 404 instead (scheduler/ids.py)."""
    if value is not None and (problem := id_problem(value)):
        raise InvalidJob(name, problem)


def batches_of(svc: Services) -> Batches:
    s = svc.settings
    limits = BatchLimits.from_settings(s)
    return Batches(svc.sessions, svc.queue, limits, public_base_url=s.public_base_url,
                   job_deadline_s=s.batch_job_deadline_s)


def vet_webhook(svc: Services, url: str | None) -> None:
    if url is not None:
        outbox.vet_url(url, outbox.WebhookPolicy.from_settings(svc.settings))


def batch_out(view: BatchView, base_url: str, rejected: list[LineError] | None = None,
              rejected_count: int = 0) -> BatchOut:
    b, p = view.batch, view.progress
    c = p.counts
    return BatchOut(
        id=b.id, status=BatchStatus(b.status), created_at=b.created_at, completed_at=b.completed_at,
        request_counts=RequestCountsOut(total=c.total, queued=c.queued, running=c.running,
                                        succeeded=c.succeeded, failed=c.failed,
                                        canceled=c.canceled),
        served_by=p.served_by, degraded=p.degraded, notice=p.notice, cost_usd=p.cost_usd,
        eta_last_job_s=view.eta_s, route=b.route, webhook_url=b.webhook_url,
        webhook=delivery_out(view.webhook, with_attempts=False) if view.webhook else None,
        metadata=b.metadata_ or {},
        results_url=f"{base_url}/v1/batches/{b.id}/results",
        results_zip_url=f"{base_url}/v1/batches/{b.id}/results.zip",
        rejected=[RejectedLineOut(line=e.line, custom_id=e.custom_id, field=e.field,
                                  message=e.message) for e in rejected or []],
        rejected_count=rejected_count)


def delivery_out(d: WebhookDelivery, with_attempts: bool = True) -> WebhookDeliveryOut:
    return WebhookDeliveryOut(
        id=d.id, event_type=d.event_type, subject_id=d.subject_id, url=d.url,
        status=d.status,  # type: ignore[arg-type]
        attempts_count=d.attempts_count, next_attempt_at=d.next_attempt_at,
        last_response_status=d.last_response_status, last_error=d.last_error,
        created_at=d.created_at, delivered_at=d.delivered_at,
        attempts=[WebhookAttemptOut(attempted_at=a.attempted_at,
                                    response_status=a.response_status,
                                    latency_ms=a.latency_ms, error=a.error)
                  for a in d.attempts] if with_attempts else [])


@router.post("/v1/batches", status_code=202, response_model=BatchOut, responses={
    **ERRORS, 200: {"model": BatchOut, "description": "An idempotent retry: the original batch"},
    409: {"model": ApiErrorResponse, "description": "Idempotency-Key reused with another body"},
    413: {"model": ApiErrorResponse, "description": "Too many bytes or lines"},
    422: {"model": ApiErrorResponse, "description": "Invalid lines, each with its number"}},
    openapi_extra={"requestBody": {"content": {
        "application/jsonl": {"schema": {"type": "string"}},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}}}}}}})
async def create_batch(
    request: Request, tenant: TenantDep, svc: ServicesDep,
    allow_partial: Annotated[bool, Query(description="Queue the valid lines and return the "
                                                     "rejected ones (default: all or nothing)")]
    = False,
    route: Annotated[str | None, Query(description="Route for lines that name none.")] = None,
    model: Annotated[str | None, Query(description="Pin a model for lines that name none.")]
    = None,
    webhook_url: Annotated[str | None, Query(description="POSTed (signed) on completion.")]
    = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Queue one job per JSONL line: `{"custom_id", "prompt", "size"?, "n"?, "model"|"route"?,
    "metadata"?}` (the OpenAI Batch `{"custom_id", "body": {...}}` shape works too)."""
    if idempotency_key is not None:
        check_key(idempotency_key)
    await run_in_threadpool(vet_webhook, svc, webhook_url)
    source, body_hash = await spool_upload(request, svc.settings.max_batch_bytes)
    options = BatchOptions(allow_partial=allow_partial, route=route, model=model,
                           webhook_url=webhook_url)
    request_hash = hashlib.sha256(json.dumps(
        [body_hash, allow_partial, route, model, webhook_url]).encode()).hexdigest()
    batches = batches_of(svc)
    try:
        submitted = await run_in_threadpool(
            batches.submit, tenant.id, source, options,
            idempotency_key=idempotency_key, request_hash=request_hash)
    finally:
        source.close()
    view = await run_in_threadpool(batches.get, tenant.id, submitted.batch.id,
                                   redis_optional=True)  # committed means accepted
    out = batch_out(view, svc.settings.public_base_url, submitted.rejected,
                    submitted.rejected_count)
    return JSONResponse(out.model_dump(mode="json"), status_code=202 if submitted.created else 200)


@router.get("/v1/batches", response_model=BatchListOut, responses=ERRORS)
def list_batches(tenant: TenantDep, svc: ServicesDep,
                 limit: Annotated[int, Query(ge=1, le=100)] = 20,
                 after: Annotated[str | None, Query(description="last_id of the previous page")]
                 = None) -> BatchListOut:
    """The tenant's batches, newest first."""
    query_id("after", after)
    views, has_more = batches_of(svc).list(tenant.id, limit, after)
    data = [batch_out(v, svc.settings.public_base_url) for v in views]
    return BatchListOut(data=data, has_more=has_more, first_id=data[0].id if data else None,
                        last_id=data[-1].id if data else None)


@router.get("/v1/batches/{batch_id}", response_model=BatchOut, responses=ERRORS)
def get_batch(batch_id: str, tenant: TenantDep, svc: ServicesDep) -> BatchOut:
    """Status, request counts, models used, degraded count, cost so far, webhook delivery."""
    return batch_out(batches_of(svc).get(tenant.id, batch_id), svc.settings.public_base_url)


@router.delete("/v1/batches/{batch_id}", response_model=BatchOut, responses=ERRORS)
def cancel_batch(batch_id: str, tenant: TenantDep, svc: ServicesDep) -> BatchOut:
    """Cancel every job not yet started; running jobs finish, then the batch is `canceled`."""
    return batch_out(batches_of(svc).cancel(tenant.id, batch_id), svc.settings.public_base_url)


def result_line(row: ResultRow, base_url: str) -> bytes:
    error = {"type": row.error_type, "message": row.error_message} if row.error_type else None
    return json.dumps({
        "line": row.line, "custom_id": row.custom_id, "job_id": row.job_id, "status": row.status,
        "served_by": row.served_by, "degraded": row.degraded, "notice": row.notice,
        "cost_usd": row.cost_usd,
        "images": [f"{base_url}/v1/jobs/{row.job_id}/images/{k}" for k in range(len(row.images))],
        "error": error, "metadata": row.metadata}, ensure_ascii=False).encode() + b"\n"


@router.get("/v1/batches/{batch_id}/results", response_class=StreamingResponse, responses={
    **ERRORS, 200: {"content": {"application/jsonl": {}}}})
def batch_results(batch_id: str, tenant: TenantDep, svc: ServicesDep) -> StreamingResponse:
    """One JSON line per job, in input order, streamed (the file is never built in memory).
    Cut short (the database became unreachable), it ends with an `{"error": {...}}` line."""
    rows = batches_of(svc).results(tenant.id, batch_id)
    first = next(rows, None)  # raises NotFound (or a 503) now, before the response starts
    base_url = svc.settings.public_base_url

    def lines() -> Iterator[bytes]:
        if first is not None:
            yield result_line(first, base_url)
        try:
            for row in rows:
                yield result_line(row, base_url)
        except Exception as exc:  # noqa: BLE001 - the status is sent: end with an error line
            yield json.dumps(stream_error(exc, svc.settings.retry_after_s,
                                          f"GET /v1/batches/{batch_id}/results")).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/jsonl", headers={
        "Content-Disposition": f'attachment; filename="{batch_id}-results.jsonl"'})


UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def image_entries(rows: Iterator[ResultRow], load: Callable[[str], bytes]
                  ) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """Zip entries named by custom_id (``-k`` added when a job has several images)."""
    used: set[str] = set()
    for row in rows:
        stem = UNSAFE_NAME_CHARS.sub("_", row.custom_id or row.job_id).lstrip(".") or row.job_id
        if stem in used:
            stem = f"{stem}~{row.line}"
        used.add(stem)
        for k, image in enumerate(row.images):
            suffix = f"-{k}" if len(row.images) > 1 else ""
            name = f"{stem}{suffix}.{EXTENSIONS.get(image['content_type'], 'bin')}"
            yield name, _loader(load, image["key"])


def _loader(load: Callable[[str], bytes], key: str) -> Callable[[], bytes]:
    return lambda: load(key)


@router.get("/v1/batches/{batch_id}/results.zip", response_class=StreamingResponse, responses={
    **ERRORS, 200: {"content": {"application/zip": {}}}})
def batch_results_zip(batch_id: str, tenant: TenantDep, svc: ServicesDep) -> StreamingResponse:
    """Every image of the batch, named by custom_id, as a zip streamed entry by entry. Cut short
    (the database became unreachable), the archive is closed properly with a last entry,
    `ERROR.json`, holding the error."""
    rows = batches_of(svc).results(tenant.id, batch_id)
    first = next(rows, None)  # raises NotFound (or a 503) now, before the response starts
    failure: list[bytes] = []

    def all_rows() -> Iterator[ResultRow]:
        if first is not None:
            yield first
        try:
            yield from rows
        except Exception as exc:  # noqa: BLE001 - the status is sent: end with an error entry
            failure.append(json.dumps(stream_error(exc, svc.settings.retry_after_s,
                                                   f"GET /v1/batches/{batch_id}/results.zip"),
                                      indent=2).encode())

    def load(key: str) -> bytes:
        try:
            return svc.blobs.get(key)
        except BlobNotFound:
            return b""

    def entries() -> Iterator[tuple[str, Callable[[], bytes]]]:
        yield from image_entries(all_rows(), load)
        if failure:
            yield "ERROR.json", lambda: failure[0]

    return StreamingResponse(zip_stream(entries()),
                             media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{batch_id}-images.zip"'})


@router.get("/v1/webhooks/deliveries", response_model=DeliveryListOut, tags=["webhooks"],
            responses=ERRORS)
def list_deliveries(subject_id: Annotated[str, Query(description="A job or batch id.")],
                    tenant: TenantDep, svc: ServicesDep) -> DeliveryListOut:
    """Every webhook delivery for a job or batch, with each attempt's response or error."""
    query_id("subject_id", subject_id)
    with svc.sessions() as session:
        found = outbox.deliveries_for(session, tenant.id, subject_id)
    return DeliveryListOut(data=[delivery_out(d) for d in found])


@router.get("/v1/webhooks/secret", response_model=WebhookSecretOut, tags=["webhooks"],
            responses=ERRORS)
def webhook_secret(tenant: TenantDep) -> WebhookSecretOut:
    """The secret that signs this tenant's webhooks (Standard Webhooks `whsec_...`)."""
    return WebhookSecretOut(secret=tenant.webhook_secret)


def install(app: FastAPI) -> None:
    """The router, and the HTTP form of the batch errors (same body shape as api/errors.py)."""
    app.include_router(router)

    def lines(errors: list[LineError]) -> list[dict[str, Any]]:
        return [{"field": f"line {e.line}" + (f": {e.field}" if e.field else ""),
                 "message": e.message} for e in errors]

    @app.exception_handler(InvalidBatch)
    async def _invalid(_: Request, exc: InvalidBatch) -> JSONResponse:
        return error_response(422, "invalid_batch", str(exc), lines(exc.errors))

    @app.exception_handler(TooManyLines)
    async def _too_many(_: Request, exc: TooManyLines) -> JSONResponse:
        return error_response(413, "batch_too_large", str(exc),
                              [{"field": f"line {exc.line}", "message": str(exc)}])

    @app.exception_handler(BodyTooLarge)
    async def _too_big(_: Request, exc: BodyTooLarge) -> JSONResponse:
        field = (f"line {exc.line}" if exc.line is not None
                 else "Content-Length" if exc.declared is not None else None)
        return error_response(413, "batch_too_large", str(exc),
                              [{"field": field, "message": str(exc)}])

    @app.exception_handler(outbox.WebhookRefused)
    async def _refused(_: Request, exc: outbox.WebhookRefused) -> JSONResponse:
        return error_response(422, "invalid_request", str(exc),
                              [{"field": "webhook_url", "message": str(exc)}])
