"""The scheduler process, assembled from the settings: its composition root.

Like the API's (``api/services.py``) and the worker's (``workers/context.py``), this is the one
place that builds the process's parts. Three duties run in it, one thread each: the dispatcher
(the main loop; one active per cluster, the others stand by), the snapshot publisher (queue
positions and the ETA curve, published by the active dispatcher only) and the background loop
(webhook deliveries and the open-batch sweep). See docs/architecture.md.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import redis

from breaker import BreakerStore, unavailable
from breaker.factory import make_breaker_store
from imagequeue.failopen import fail_open_redis
from imagequeue.metrics import SCHEDULER_METRICS, MetricsServer, registry_for, serve_metrics
from imagequeue.settings import Settings
from providers.catalogue import Catalogue
from scheduler.batches.rollup import periodic_sweep
from scheduler.dispatcher import Dispatcher, make_sender
from scheduler.eta.publisher import SnapshotPublisher, WorkerLimits
from scheduler.metrics import SchedulerCollector
from scheduler.tenants.quotas import LimitDefaults
from scheduler.webhooks import outbox
from scheduler.webhooks.outbox import WebhookSender
from storage.db import make_engine, make_sessionmaker
from throttle import VendorLimits

BATCH_SWEEP_EVERY_S = 10.0


@dataclass
class SchedulerProcess:
    settings: Settings
    breakers: BreakerStore
    dispatcher: Dispatcher
    publisher: SnapshotPublisher
    webhooks: WebhookSender
    stopping: threading.Event
    metrics: SchedulerCollector | None = None  # the gauges read at scrape time
    metrics_server: MetricsServer | None = None

    @classmethod
    def build(cls, settings: Settings, catalogue: Catalogue) -> SchedulerProcess:
        sessions = make_sessionmaker(make_engine(settings.database_url, settings))
        breakers = make_breaker_store(settings, catalogue.models)
        dispatcher = Dispatcher(
            redis.Redis.from_url(settings.redis_url), sessions, make_sender(settings),
            buffer=settings.dispatch_buffer, interval_s=settings.dispatch_interval_s,
            reconcile_every_s=settings.reconcile_interval_s,
            reconcile_lookback_s=settings.reconcile_lookback_s,
            reconcile_full_every_s=settings.reconcile_full_interval_s,
            stale_s=settings.dispatch_stale_s,
            job_lease_ms=int(settings.lease_s * 1000),
            limits=VendorLimits(fail_open_redis(settings.redis_url)), models=tuple(catalogue.models),
            breakers=breakers,
            tenant_defaults=LimitDefaults.from_settings(settings),
            limits_refresh_s=settings.tenant_limits_refresh_s,
            scan_limit=settings.dispatch_scan_limit)
        publisher = SnapshotPublisher(
            redis.Redis.from_url(settings.redis_url), sessions, catalogue,
            leader=lambda: dispatcher.leader,
            unavailable=lambda model: unavailable(breakers, model),
            period_s=settings.snapshot_interval_s,
            limits=WorkerLimits(settings.vendor_rate_window_s, settings.vendor_slot_wait_s))
        metrics = SchedulerCollector(sessions, fail_open_redis(settings.redis_url), breakers,
                                     tuple(catalogue.models))
        return cls(settings, breakers, dispatcher, publisher, outbox.make_sender(settings, sessions),
                   threading.Event(), metrics)

    def run(self) -> None:
        """Run until ``stop``: the publisher and the background loop in daemon threads, the
        dispatcher in this one. Every loop rides out Redis and database outages by itself.
        Metrics are served on ``IMGQ_SCHEDULER_METRICS_PORT`` (0: off)."""
        sessions = self.dispatcher.sessions
        extra = (self.metrics,) if self.metrics is not None else ()
        self.metrics_server = serve_metrics(
            registry_for((*SCHEDULER_METRICS, *extra)), self.settings.metrics_host,
            self.settings.scheduler_metrics_port, "scheduler")
        sweep = periodic_sweep(sessions, self.settings.public_base_url, BATCH_SWEEP_EVERY_S)
        threading.Thread(target=self.publisher.run, name="imgq-snapshots", daemon=True).start()
        threading.Thread(
            target=self.webhooks.run,
            args=(self.stopping, self.settings.webhook_poll_interval_s, sweep),
            name="imgq-webhooks", daemon=True).start()
        self.dispatcher.run()

    def stop(self) -> None:
        self.stopping.set()
        self.publisher.stop()
        self.dispatcher.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
