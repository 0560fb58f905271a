"""The Celery app: Redis or RabbitMQ broker, late acks, prefetch 1, a thread pool sized by a setting.

Tasks are thin, like web views: they load the per-process context and call the runner. Celery
signals build that context when the worker starts, advertise the worker's capacity, and on
SIGTERM drain it (``workers.shutdown``: no new job, a grace for the running ones, then whatever
is left goes back to the queue at once).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from celery import Celery, signals

from imagequeue import keys
from imagequeue.broker import broker_config
from imagequeue.metrics import WORKER_METRICS, MetricsServer, registry_for, serve_metrics
from imagequeue.settings import Settings
from scheduler.queue.heartbeats import WorkerIdentity
from workers.context import WorkerContext
from workers.heartbeat import Heartbeat
from workers.runner import HANDED_BACK, run_job
from workers.shutdown import Drain

log = logging.getLogger(__name__)
# httpx logs every request at INFO: a third line per job beside Celery's two, and the attempt
# rows record each vendor call already.
logging.getLogger("httpx").setLevel(logging.WARNING)


class _State:
    context: WorkerContext | None = None
    settings: Settings | None = None
    heartbeat: Heartbeat | None = None
    drain: Drain | None = None
    metrics: MetricsServer | None = None


def make_celery(settings: Settings) -> Celery:
    app = Celery("imagequeue")
    app.conf.update(
        **broker_config(settings),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency,
        worker_pool="threads",
        task_default_queue=keys.GENERATE_QUEUE,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    _State.settings = settings

    @app.task(name=keys.GENERATE_TASK)
    def generate(job_id: str, dispatch_token: int | None = None) -> str:
        if _State.drain is not None and _State.drain.refuse(job_id):
            return HANDED_BACK
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
    # The pool's real size (``-c`` on the command line wins over the setting).
    slots = int(getattr(getattr(sender, "controller", None), "concurrency", None)
                or ctx.settings.worker_concurrency)
    _State.heartbeat = Heartbeat(ctx.redis, name, slots, ctx.settings.worker_heartbeat_s,
                                 WorkerIdentity.of_this_process(ctx.leases.worker_id))
    _State.drain = Drain(ctx.leases, ctx.settings.worker_shutdown_grace_s,
                         draining=_State.heartbeat.drain, leave=_leave,
                         release_calls=lambda: ctx.calls.release_all(ctx.breaker))
    _State.heartbeat.start()
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


@signals.worker_shutting_down.connect
def _begin_drain(how: str = "Warm", **_: Any) -> None:
    """Sent from Celery's signal handler, before its own shutdown starts."""
    if _State.drain is not None:
        _State.drain.begin(cold=how == "Cold")


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    if _State.drain is not None:
        _State.drain.end()
    else:
        _leave()


def _leave() -> None:
    """This worker's heartbeat entry and metrics port go (once, whoever asks first)."""
    heartbeat, _State.heartbeat = _State.heartbeat, None
    if heartbeat is not None:
        heartbeat.stop()
    metrics, _State.metrics = _State.metrics, None
    if metrics is not None:
        metrics.stop()
