"""Per-process resources of a worker, built once from the settings when the process starts.

The breaker and the vendor limits use their own Redis client with short timeouts, so that when
Redis is unreachable they fail open within a fraction of a second instead of stalling calls.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

import httpx
import redis
from sqlalchemy.orm import Session, sessionmaker

from breaker import BreakerStore
from breaker.factory import make_breaker_store
from imagequeue.failopen import fail_open_redis
from imagequeue.settings import Settings
from providers.catalogue import Catalogue, load_catalogue
from scheduler.queue.index import WaitingIndex
from scheduler.queue.leases import Leases
from scheduler.tenants.quotas import TenantCounters
from storage.blobs import BlobStore
from storage.db import make_engine, make_sessionmaker
from storage.factory import make_blob_store
from throttle import VendorLimits
from workers.admission import CallsInFlight
from workers.leases import LeaseKeeper


@dataclass
class WorkerContext:
    settings: Settings
    sessions: sessionmaker[Session]
    redis: redis.Redis
    index: WaitingIndex
    http: httpx.Client
    catalogue: Catalogue
    blobs: BlobStore
    breaker: BreakerStore
    limits: VendorLimits
    leases: LeaseKeeper
    counters: TenantCounters  # the tenants' queued and budget levels, settled as jobs end
    calls: CallsInFlight = field(default_factory=CallsInFlight)  # given back as the worker leaves

    @classmethod
    def build(cls, settings: Settings) -> WorkerContext:
        client = redis.Redis.from_url(settings.redis_url)
        catalogue = load_catalogue(settings.catalogue_path)
        return cls(
            settings=settings,
            sessions=make_sessionmaker(make_engine(settings.database_url, settings)),
            redis=client,
            index=WaitingIndex(client),
            http=httpx.Client(
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
                follow_redirects=False,
            ),
            catalogue=catalogue,
            blobs=make_blob_store(settings),
            breaker=make_breaker_store(settings, catalogue.models),
            limits=VendorLimits(fail_open_redis(settings.redis_url)),
            leases=LeaseKeeper(Leases(client, int(settings.lease_s * 1000)),
                               f"{socket.gethostname()}:{os.getpid()}",
                               settings.worker_heartbeat_s),
            counters=TenantCounters(client),
        )

    def close(self) -> None:
        self.leases.stop()
        self.http.close()
        self.redis.close()
