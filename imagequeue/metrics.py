"""Prometheus metrics: every counter and histogram imagequeue keeps as things happen, and serving
them over HTTP.

The definitions are all here, each with its HELP text; the gauges read at scrape time are the
scheduler's (``scheduler/metrics.py``). A process exposes the families it counts in a registry of
its own (``registry_for``): the API ``API_METRICS`` at its own ``/metrics``; a worker
``WORKER_METRICS`` and the scheduler ``SCHEDULER_METRICS`` on a port of their own
(``serve_metrics``). Every registry also holds the fail-open counter of the breaker and vendor
limits (``imagequeue/failopen.py``) and the process's CPU, memory and garbage collector figures.

One port per process, not prometheus_client's multiprocess mode: a Celery worker here runs its
jobs on a thread pool, so one process holds all of its counters; a host that runs several
workers gives each its own ``IMGQ_WORKER_METRICS_PORT`` (or runs each in its own container), and
Prometheus sums across the targets. docs/operations.md lists every metric.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from imagequeue.failopen import STORE_ERRORS

log = logging.getLogger("imagequeue.metrics")
disable_created_metrics()  # type: ignore[no-untyped-call]  # no ``*_created`` series

WAIT_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600,
                  86400)
RUN_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 240, 600)
HTTP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# --- workers ---------------------------------------------------------------------------------

ATTEMPTS = Counter(
    "imgq_attempts_total",
    "Models tried for jobs, by model and outcome: success, an error class of the vendor's "
    "answer (overloaded, server_error, timeout, quota, auth, invalid_request, content_policy) "
    "or skipped (not called: breaker, vendor limit, or the model cannot serve the request).",
    ["model", "outcome"], registry=None)
JOBS_SERVED = Counter(
    "imgq_jobs_served_total",
    "Jobs that succeeded, by the model that served them and whether it was a fallback (true: "
    "not the model the job asked for; the job's notice says why).",
    ["model", "fallback"], registry=None)
VENDOR_COST = Counter(
    "imgq_vendor_cost_usd_total",
    "US dollars spent on vendor calls, by model (the catalogue price of each image served).",
    ["model"], registry=None)
QUEUE_WAIT = Histogram(
    "imgq_job_queue_wait_seconds",
    "Seconds from a job's submit to the start of the run that ended it (time parked while no "
    "model was available included), by lane; observed when the job ends.",
    ["lane"], buckets=WAIT_BUCKETS_S, registry=None)
RUN_TIME = Histogram(
    "imgq_job_run_seconds",
    "Seconds from the start of the run that ended a job to its end (the route walk and "
    "storing the images), by lane and final status.",
    ["lane", "status"], buckets=RUN_BUCKETS_S, registry=None)

# --- workers and the API ---------------------------------------------------------------------

JOBS_ENDED = Counter(
    "imgq_jobs_ended_total",
    "Jobs that reached a final status, by status and lane, counted by the process that ended "
    "them: a worker (succeeded, failed) or the API (canceled).",
    ["status", "lane"], registry=None)

# --- the API ---------------------------------------------------------------------------------

JOBS_SUBMITTED = Counter(
    "imgq_jobs_submitted_total",
    "Jobs accepted (one per job, a batch's included), by lane; an idempotent retry that returns "
    "the original is not counted again.",
    ["lane"], registry=None)
HTTP_REQUESTS = Counter(
    "imgq_http_requests_total",
    "HTTP requests answered by the API, by method, route template and status code.",
    ["method", "route", "status"], registry=None)
HTTP_DURATION = Histogram(
    "imgq_http_request_duration_seconds",
    "Seconds the API took to answer a request to the end of its body (an event stream lasts "
    "until its job or batch ends), by method and route template.",
    ["method", "route"], buckets=HTTP_BUCKETS_S, registry=None)

# --- the scheduler ---------------------------------------------------------------------------

WEBHOOK_DELIVERIES = Counter(
    "imgq_webhook_deliveries_total",
    "Webhook delivery attempts by outcome: delivered (a 2xx answer), retrying (it failed and "
    "another attempt is scheduled) or failed (it failed and the retry schedule is used up).",
    ["outcome"], registry=None)

WORKER_METRICS: tuple[Collector, ...] = (ATTEMPTS, JOBS_SERVED, VENDOR_COST, QUEUE_WAIT, RUN_TIME,
                                         JOBS_ENDED)
API_METRICS: tuple[Collector, ...] = (JOBS_SUBMITTED, JOBS_ENDED, HTTP_REQUESTS, HTTP_DURATION)
SCHEDULER_METRICS: tuple[Collector, ...] = (WEBHOOK_DELIVERIES,)


def registry_for(collectors: Iterable[Collector]) -> CollectorRegistry:
    """A registry of this process's families: ``collectors``, the fail-open counter, and the
    process's own figures (``process_*``, ``python_gc_*``, ``python_info``)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    for collector in (STORE_ERRORS, *collectors):
        registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """The registry in the format the scraper's ``Accept`` header asks for, and its content
    type: OpenMetrics when asked for, else the Prometheus text format 0.0.4, which every
    Prometheus reads."""
    encode, content_type = choose_encoder(accept or "")
    return encode(registry), content_type


class MetricsServer:
    """``GET /metrics`` and ``GET /healthz`` (liveness: 200 while the process runs) on a port of
    their own, served from a daemon thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        handler = _handler(registry)
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="imgq-metrics",
                                       daemon=True)

    def start(self) -> MetricsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_metrics(registry: CollectorRegistry, host: str, port: int,
                  what: str) -> MetricsServer | None:
    """Serve ``registry`` on ``host:port``; None when ``port`` is 0 (off). A port that cannot be
    bound is logged as an error and the process goes on without metrics: serving jobs matters
    more than counting them."""
    if port == 0:
        return None
    try:
        server = MetricsServer(registry, host, port).start()
    except OSError as exc:
        log.error("%s: cannot serve metrics on %s:%d (%s); running without them", what, host,
                  port, exc)
        return None
    log.info("%s: metrics on http://%s:%d/metrics", what, host, server.port)
    return server


def _handler(registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, *exposition(registry, self.headers.get("Accept")))
            elif path == "/healthz":
                self._answer(200, b'{"status":"ok"}', "application/json")
            else:
                self._error(404, "not_found", f"no such path {path!r}: this port serves "
                                              "GET /metrics and GET /healthz")

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def do_POST(self) -> None:  # noqa: N802
            self._error(405, "method_not_allowed", f"{self.command} is not allowed here: this "
                        "port serves GET /metrics and GET /healthz", {"Allow": "GET, HEAD"})

        do_PUT = do_DELETE = do_PATCH = do_POST  # noqa: N815

        def _error(self, status: int, kind: str, message: str,
                   headers: dict[str, str] | None = None) -> None:
            body = json.dumps({"error": {"type": kind, "message": message, "details": []}})
            self._answer(status, body.encode(), "application/json", headers)

        def _answer(self, status: int, body: bytes, content_type: str,
                    headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            pass

    return Handler
