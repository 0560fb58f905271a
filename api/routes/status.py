"""The queue's status for the people waiting: ``GET /v1/status``, its event stream
``GET /v1/status/stream`` and the live page ``/status`` (plain HTML and a small script,
``api/static/``, no build step).

All three show the one document ``api.status.status_document`` builds. They answer anyone while
``IMGQ_STATUS_PAGE_PUBLIC`` is true (the default); otherwise the JSON and the stream want a
tenant's API key (``Authorization: Bearer``) and the page asks for one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from fastapi.security import HTTPAuthorizationCredentials
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from api import deps
from api.deps import ServicesDep
from api.routes.events import StreamCounter, error_event
from api.routes.jobs import ERRORS
from api.services import Services
from api.snapshots import SnapshotListener
from api.status import StatusFeed, status_document

router = APIRouter(tags=["status"])
STATIC = Path(__file__).resolve().parents[1] / "static"
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    # The page loads only its own script and style and talks only to this API.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
}
STATUS_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {**ERRORS[401], "description": "Missing or invalid API key (only while "
                                        "IMGQ_STATUS_PAGE_PUBLIC is false)"},
    503: ERRORS[503],
}


def status_access(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(deps.bearer)],
) -> None:
    """Anyone while the status is public; else a tenant's API key, as every tenant endpoint."""
    if not deps.services(request).settings.status_page_public:
        deps.tenant(request, credentials)


StatusAccess = Depends(status_access)


def feed_of(request: Request) -> StatusFeed:
    """The process's shared feed, made on first use."""
    feed: StatusFeed | None = getattr(request.app.state, "status_feed", None)
    if feed is None:
        svc: Services = request.app.state.services
        counter: StreamCounter = request.app.state.streams
        feed = StatusFeed(lambda: status_document(svc, counter.open))
        request.app.state.status_feed = feed
    return feed


@router.get("/v1/status", responses=STATUS_ERRORS, dependencies=[StatusAccess])
async def status(request: Request, svc: ServicesDep) -> dict[str, Any]:
    """Each model's badge (colour and reason), breaker window, p50 latency against its
    baseline, next probe and last transitions; each lane's depth and the ETA a new job would
    get; jobs running, workers alive, jobs served per minute and recent failovers."""
    return await run_in_threadpool(status_document, svc, request.app.state.streams.open)


@router.get("/v1/status/stream", responses=STATUS_ERRORS, dependencies=[StatusAccess],
            response_description="text/event-stream of `status` events, each the whole "
                                 "document of `GET /v1/status`; it does not end by itself")
async def status_stream(request: Request, svc: ServicesDep) -> EventSourceResponse:
    """The status document, pushed each time the scheduler publishes a snapshot (once a
    second), or every `IMGQ_STREAM_FALLBACK_POLL_S` while none comes."""
    feed = feed_of(request)
    snapshots: SnapshotListener = request.app.state.snapshots
    counter: StreamCounter = request.app.state.streams
    max_age_s = svc.settings.stream_fallback_poll_s / 2
    first: str | None = await feed.document(snapshots.heard, max_age_s)  # a 503 before the stream

    async def stream() -> AsyncIterator[dict[str, Any]]:
        nonlocal first
        counter.open += 1
        try:
            last = None
            while True:
                wake = snapshots.next_snapshot()
                text, first = first, None
                if text is None:
                    try:
                        text = await feed.document(snapshots.heard, max_age_s)
                    except Exception as exc:  # noqa: BLE001 - the stream ends with an error event
                        yield error_event(exc, svc, "GET /v1/status/stream")
                        return
                if text != last:
                    yield {"event": "status", "data": text}
                    last = text
                await snapshots.wait(wake, svc.settings.stream_fallback_poll_s)
        finally:
            counter.open -= 1

    return EventSourceResponse(stream(), ping=5)


def _static(name: str, media_type: str) -> FileResponse:
    return FileResponse(STATIC / name, media_type=media_type, headers=PAGE_HEADERS)


@router.get("/status", include_in_schema=False)
def status_page() -> FileResponse:
    return _static("status.html", "text/html; charset=utf-8")


@router.get("/status/status.js", include_in_schema=False)
def status_script() -> FileResponse:
    return _static("status.js", "text/javascript; charset=utf-8")


@router.get("/status/status.css", include_in_schema=False)
def status_style() -> FileResponse:
    return _static("status.css", "text/css; charset=utf-8")
