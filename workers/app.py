"""The Celery app: Redis broker, late acks, prefetch 1, a thread pool sized by a setting.

Tasks are thin, like web views: they load the per-process context and call the runner. Celery
signals build that context when the worker starts and advertise the worker's capacity.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from typing import Any

from celery import Celery, signals

from imagequeue import keys
from imagequeue.metrics import WORKER_METRICS, MetricsServer, registry_for, serve_metrics
from imagequeue.settings import Settings
from scheduler.queue import heartbeats
from workers.context import WorkerContext
from workers.runner import run_job

log = logging.getLogger(__name__)


class _State:
    context: WorkerContext | None = None
    settings: Settings | None = None
    heartbeat_stop = threading.Event()
    metrics: MetricsServer | None = None


def make_celery(settings: Settings) -> Celery:
    app = Celery("imagequeue", broker=settings.redis_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency,
        worker_pool="threads",
        task_default_queue=keys.GENERATE_QUEUE,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # Never what recovers a job (leases do); a redelivered message is recognised and ignored.
        broker_transport_options={"visibility_timeout": settings.broker_visibility_timeout_s},
    )
    _State.settings = settings

    @app.task(name=keys.GENERATE_TASK)
    def generate(job_id: str, dispatch_token: int | None = None) -> str:
        return run_job(context(), job_id, dispatch_token)

    return app


def context() -> WorkerContext:
    if _State.context is None:
        assert _State.settings is not None, "make_celery() builds the settings first"
        _State.context = WorkerContext.build(_State.settings)
    return _State.context


@signals.worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    ctx = context()
    name = getattr(sender, "hostname", None) or f"worker@{socket.gethostname()}"
    period_s = ctx.settings.worker_heartbeat_s
    # The pool's real size (``-c`` on the command line wins over the setting).
    slots = int(getattr(getattr(sender, "controller", None), "concurrency", None)
                or ctx.settings.worker_concurrency)

    def beat() -> None:
        from scheduler.outages import DEPENDENCY_ERRORS, OutageLog, RepeatedErrors

        # A Redis outage is logged when it starts and when it ends, not on every beat.
        outages = OutageLog("worker heartbeat", log, backoff_s=period_s)
        errors = RepeatedErrors("worker heartbeat", log)
        while not _State.heartbeat_stop.is_set():
            try:
                heartbeats.heartbeat(ctx.redis, name, slots, period_s * 3)
            except DEPENDENCY_ERRORS as exc:
                outages.failed(exc)
            except Exception as exc:  # noqa: BLE001 - a missed beat must not kill the worker
                errors.error(exc)
            else:
                outages.succeeded(("redis",))
            _State.heartbeat_stop.wait(period_s)
        with contextlib.suppress(Exception):
            heartbeats.forget(ctx.redis, name)

    threading.Thread(target=beat, name="imgq-heartbeat", daemon=True).start()
    ctx.leases.start()
    ctx.index.wake()


@signals.worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    """``GET /metrics`` and ``GET /healthz`` on ``IMGQ_WORKER_METRICS_PORT`` (0: off)."""
    settings = context().settings
    _State.metrics = serve_metrics(registry_for(WORKER_METRICS), settings.metrics_host,
                                   settings.worker_metrics_port, "worker")


@signals.task_received.connect
def _hold_received(request: Any = None, **_: Any) -> None:
    """A message reserved by this worker is leased to it at once, before a thread runs it: if
    the worker dies with it reserved, the lease runs out and the job goes back to the queue."""
    args: tuple[Any, ...] = tuple(getattr(request, "args", None) or ())
    if getattr(request, "name", None) != keys.GENERATE_TASK or len(args) < 2 or args[1] is None:
        return
    ctx = context()
    ctx.leases.start()
    ctx.leases.hold(str(args[0]), int(args[1]))


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    _State.heartbeat_stop.set()
    if _State.metrics is not None:
        _State.metrics.stop()
