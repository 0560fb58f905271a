"""``GET /metrics`` on the API's own port, and the count of every request it answers.

The API's families (``imagequeue.metrics.API_METRICS``): requests by method, route template and
status, their duration, jobs accepted and jobs canceled; plus the fail-open counter of its
breaker reads. The cluster's queue, breaker and ETA gauges are the scheduler's to serve
(docs/operations.md). Off with ``IMGQ_API_METRICS=false``.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagequeue import metrics

router = APIRouter(tags=["ops"])
UNMATCHED = "unmatched"  # the route label of a request no route matched (a 404 or 405)


@router.get("/metrics", response_class=Response, responses={
    200: {"content": {"text/plain": {}, "application/openmetrics-text": {}},
          "description": "This API process's metrics in the Prometheus text format (OpenMetrics "
                         "when the `Accept` header asks for it)"}})
def prometheus_metrics(request: Request) -> Response:
    """Prometheus metrics of this API process (see docs/operations.md for every family)."""
    registry: CollectorRegistry = request.app.state.metrics
    body, content_type = metrics.exposition(registry, request.headers.get("accept"))
    return Response(body, headers={"Content-Type": content_type})


class RequestMetrics:
    """Counts each HTTP request by method, route template (``/v1/jobs/{job_id}``, never the
    path itself, so the label set stays small) and status, and times it to the end of its body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = str(scope.get("method", ""))
            metrics.HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
            metrics.HTTP_DURATION.labels(method=method, route=route).observe(
                time.perf_counter() - started)


def install(app: FastAPI, enabled: bool) -> None:
    """The registry of this app, and (``enabled``) the ``/metrics`` route and request counts."""
    app.state.metrics = metrics.registry_for(metrics.API_METRICS)
    if enabled:
        app.include_router(router)
        app.add_middleware(RequestMetrics)
